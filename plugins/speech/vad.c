/* vad.c - speech.vad: where in a stretch of PCM (16 kHz mono s16le) someone
 * speaks, by pocketsphinx's own voice-activity detector (the front end of
 * Debian's libsphinxbase3, the one speech.transcribe decodes with):
 *
 *   {"speech_ms": [[120, 2180], [2900, 3400]], "open": false, "audio_ms": 3600}
 *
 * Each pair is a stretch of speech in milliseconds from the start of the
 * input; "open": the input ends in speech. Params:
 *   threshold   the detector's -vad_threshold: log-ratio of signal to
 *               noise above which a frame is speech (default 2.0, its own)
 *
 * Why this detector: Debian 12 has no libfvad (WebRTC's), speexdsp's VAD
 * is a loudness gate, and pocketsphinx's front end tracks the noise floor
 * per mel band and is already loaded with the recognizer. Its state cannot
 * leave a worker, so the job is stateless: the caller sends a window of
 * recent audio each time, led by a second or so the detector needs to learn
 * the noise (it takes the start of any input for speech for up to a
 * second), and keeps what it learns from the answers itself
 * (supervisor/voice_stt.c). A worker that dies mid-job costs a replay of
 * the same window, with the same answer. */
#include "speech.h"

#include <sphinxbase/ckd_alloc.h>
#include <sphinxbase/fe.h>

#define SAMPLE_RATE  16000
#define FRAME        160 /* samples: the front end's 10 ms frame shift */
#define START_FRAMES 10  /* speech frames that start a stretch (its default) */
#define POST_FRAMES  10  /* silent frames that end one: short, the caller judges pauses */
#define CEP_FRAMES   64  /* room for the pre-speech frames it hands back at once */
#define MAX_IN       (30 * SAMPLE_RATE * 2)

enum { C_JOBS, C_AUDIO_MS, C_SPEECH_MS, C_SEARCH_US, NCOUNTERS };

static const struct mqfork_counter counters[NCOUNTERS] = {
    [C_JOBS] = {.name = "windows", .help = "Windows of audio searched for speech."},
    [C_AUDIO_MS] = {.name = "audio_ms", .help = "Milliseconds of audio searched."},
    [C_SPEECH_MS] = {.name = "speech_ms", .help = "Milliseconds of it found to be speech."},
    [C_SEARCH_US] = {.name = "search_us", .help = "Microseconds spent searching it."},
};

static const char *const known[] = {"threshold", NULL};

struct vad {
    fe_t *fe;
    mfcc_t **cep;
    uint64_t *counters;
};

static void vad_check(const struct mqfork_params *p, struct mqfork_check *c)
{
    mqfork_params_known(p, known, "speech.vad", c);
    const struct mqfork_param *t = mqfork_param_find(p, "threshold");
    char *end;
    if (t) {
        double v = strtod(t->value, &end);
        if (end == t->value || *end || !(v > 0 && v <= 20))
            c->problem(c, t, "threshold: %s: not a number in (0, 20]", t->value);
    }
}

/* Segments need START_FRAMES + POST_FRAMES frames each: about 16 bytes of
 * answer for 6400 of input; one output byte per 256 input bytes is ample. */
static void vad_bound(const struct mqfork_params *p, struct mqfork_out_bound *b)
{
    *b = (struct mqfork_out_bound){.fixed = 256, .per_in_q16 = 65536 / 256, .max_in = MAX_IN};
}

static void *vad_init(const struct mqfork_init *in)
{
    const struct mqfork_param *t = mqfork_param_find(in->params, "threshold");
    struct vad *v = calloc(1, sizeof(*v));
    if (!v)
        return NULL;
    char start[16], post[16];
    snprintf(start, sizeof(start), "%d", START_FRAMES);
    snprintf(post, sizeof(post), "%d", POST_FRAMES);
    cmd_ln_t *config =
        cmd_ln_init(NULL, fe_get_args(), TRUE, "-samprate", "16000", "-vad_threshold",
                    t ? t->value : "2.0", "-vad_startspeech", start, "-vad_postspeech", post, NULL);
    if (config) {
        v->fe = fe_init_auto_r(config); /* it holds the config from here */
        cmd_ln_free_r(config);
    }
    if (v->fe)
        v->cep =
            (mfcc_t **)ckd_calloc_2d(CEP_FRAMES, (size_t)fe_get_output_size(v->fe), sizeof(mfcc_t));
    if (!v->fe || !v->cep) {
        fprintf(stderr, "speech.vad: pocketsphinx's front end cannot start\n");
        if (v->fe)
            fe_free(v->fe);
        free(v);
        return NULL;
    }
    v->counters = in->counters;
    return v;
}

static void vad_fini(void *ctx)
{
    struct vad *v = ctx;
    ckd_free_2d(v->cep);
    fe_free(v->fe);
    free(v);
}

/* Append ",[start,end]" (ms) to OUT; false when it does not fit. */
static bool add_segment(char *out, size_t cap, size_t *pos, long start, long end)
{
    int n = snprintf(out + *pos, cap - *pos, "%s[%ld,%ld]", *pos && out[*pos - 1] != '[' ? "," : "",
                     start * 10, end * 10);
    if (n < 0 || (size_t)n >= cap - *pos)
        return false;
    *pos += (size_t)n;
    return true;
}

/* Feed the front end a frame at a time and note where its speech state
 * turns: it enters speech START_FRAMES frames after speech began, and
 * leaves it POST_FRAMES after it ended. */
static enum mqfork_status search(struct vad *v, struct mqfork_job *job, const int16_t *pcm,
                                 size_t samples)
{
    char *out = (char *)job->out;
    size_t cap = job->out_cap, pos = 0;
    long frames = (long)(samples / FRAME), start = -1, voiced = 0;
    pos = (size_t)snprintf(out, cap, "{\"speech_ms\": [");
    fe_start_stream(v->fe);
    fe_start_utt(v->fe);
    for (long f = 0; f < frames; f++) {
        const int16 *p = pcm + f * FRAME;
        size_t left = FRAME;
        int32 nframes = CEP_FRAMES;
        fe_process_frames(v->fe, &p, &left, v->cep, &nframes, NULL);
        bool in = fe_get_vad_state(v->fe);
        if (in && start < 0) {
            start = f + 1 - START_FRAMES > 0 ? f + 1 - START_FRAMES : 0;
        } else if (!in && start >= 0) {
            long end = f + 1 - POST_FRAMES > start ? f + 1 - POST_FRAMES : start + 1;
            voiced += end - start;
            if (!add_segment(out, cap, &pos, start, end))
                goto full;
            start = -1;
        }
    }
    if (start >= 0) {
        voiced += frames - start;
        if (!add_segment(out, cap, &pos, start, frames))
            goto full;
    }
    int n = snprintf(out + pos, cap - pos, "], \"open\": %s, \"audio_ms\": %ld}",
                     start >= 0 ? "true" : "false", frames * 10);
    if (n < 0 || (size_t)n >= cap - pos)
        goto full;
    job->out_len = pos + (size_t)n;
    mqfork_count(v->counters, C_SPEECH_MS, (uint64_t)voiced * 10);
    return MQFORK_OK;
full: /* cannot happen: out_bound leaves room for a stretch every 2 frames */
    mqfork_job_error(job, "speech.vad: no room for the answer");
    return MQFORK_FAILED;
}

static enum mqfork_status vad_run(void *ctx, struct mqfork_job *job)
{
    struct vad *v = ctx;
    if (job->in_len % 2) {
        mqfork_job_error(job, "speech.vad: %zu bytes is not whole s16le samples", job->in_len);
        return MQFORK_BAD_INPUT;
    }
    size_t samples = job->in_len / 2;
    /* host-order int16, aligned: the input may be neither */
    int16_t *pcm = malloc(samples ? samples * sizeof(*pcm) : 1);
    if (!pcm) {
        mqfork_job_error(job, "speech.vad: out of memory");
        return MQFORK_FAILED;
    }
    for (size_t i = 0; i < samples; i++)
        pcm[i] = (int16_t)(job->in[2 * i] | job->in[2 * i + 1] << 8);
    uint64_t t0 = speech_now_ns();
    enum mqfork_status st = search(v, job, pcm, samples);
    mqfork_count(v->counters, C_SEARCH_US, (speech_now_ns() - t0) / 1000);
    free(pcm);
    mqfork_count(v->counters, C_JOBS, 1);
    mqfork_count(v->counters, C_AUDIO_MS, samples * 1000 / SAMPLE_RATE);
    return st;
}

const struct mqfork_handler speech_vad = {
    .abi = MQFORK_HANDLER_ABI,
    .name = "speech.vad",
    .check = vad_check,
    .out_bound = vad_bound,
    .init = vad_init,
    .fini = vad_fini,
    .run = vad_run,
    .counters = counters,
    .ncounters = NCOUNTERS,
};
