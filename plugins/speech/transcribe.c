/* transcribe.c - speech.transcribe: one whole utterance of PCM (16 kHz mono
 * s16le) in, its transcript out as JSON
 *
 *   {"text": "go forward ten meters", "audio_s": 2.860, "decode_s": 0.412,
 *    "ends_ms": [610, 1130, 1490, 2210]}
 *
 * (empty text for noise only). ends_ms: where each word of the text ends,
 * which is where a caller that recognizes an utterance in parts while it
 * is still being spoken may cut it: at a word the recognizer has heard
 * whole (supervisor/voice_stt.c). The recognizer is pocketsphinx (Debian's
 * libpocketsphinx3, 0.8+5prealpha). Params:
 *   hmm    acoustic model directory   (default: pocketsphinx-en-us's)
 *   dict   pronunciation dictionary   (default: pocketsphinx-en-us's)
 *   lm     language model             (default: pocketsphinx-en-us's)
 *   log    where pocketsphinx logs    (default: /dev/null)
 *
 * The decoder is made once per route in preload, by the supervisor before it
 * forks: every worker uses its own copy-on-write copy of it, so the models
 * (tens of MiB) stay shared and a worker owns only the pages a decode
 * writes. A worker that dies mid-utterance takes only its copy with it; the
 * engine replays the job on another worker. */
#include "speech.h"

#include <inttypes.h>
#include <unistd.h>

#include <pocketsphinx.h>

#define DEFAULT_HMM  SPEECH_DEFAULT_HMM
#define DEFAULT_DICT SPEECH_DEFAULT_DICT
#define DEFAULT_LM   SPEECH_DEFAULT_LM

#define SAMPLE_RATE 16000
/* The JSON answer at most: a transcript longer than this is cut at a word
 * and marked "truncated": true. */
#define OUT_FIXED 4096

enum { C_UTTERANCES, C_EMPTY, C_AUDIO_MS, C_DECODE_MS, NCOUNTERS };

static const struct mqfork_counter counters[NCOUNTERS] = {
    [C_UTTERANCES] = {.name = "utterances", .help = "Utterances recognized."},
    [C_EMPTY] = {.name = "empty", .help = "Utterances with no words (noise only)."},
    [C_AUDIO_MS] = {.name = "audio_ms", .help = "Milliseconds of audio recognized."},
    [C_DECODE_MS] = {.name = "decode_ms", .help = "Milliseconds spent recognizing."},
};

enum { H_RECOGNITION, H_PER_AUDIO_S, NHISTOGRAMS };

static const struct mqfork_histogram histograms[NHISTOGRAMS] = {
    [H_RECOGNITION] = {.name = "recognition", .help = "Time to recognize one utterance."},
    [H_PER_AUDIO_S] = {.name = "per_audio_second",
                       .help = "Time to recognize one second of audio: the real-time factor "
                               "(0.25 s: four times faster than real time)."},
};

static const char *const known[] = {"hmm", "dict", "lm", "log", NULL};

struct preload {
    cmd_ln_t *config;
    ps_decoder_t *ps;
};

struct transcribe {
    ps_decoder_t *ps;
    uint64_t *counters;
    struct mqfork_histograms histograms;
};

static const char *param_or(const struct mqfork_params *p, const char *key, const char *fallback)
{
    const struct mqfork_param *param = mqfork_param_find(p, key);
    return param ? param->value : fallback;
}

static void transcribe_check(const struct mqfork_params *p, struct mqfork_check *c)
{
    mqfork_params_known(p, known, "speech.transcribe", c);
    if (speech_check_path(p, "hmm", DEFAULT_HMM, 1, c) == 0) {
        /* A directory, but a model? Its mdef says so first. */
        const char *hmm = param_or(p, "hmm", DEFAULT_HMM);
        char mdef[4096];
        snprintf(mdef, sizeof(mdef), "%s/mdef", hmm);
        if (access(mdef, R_OK) < 0)
            c->problem(c, mqfork_param_find(p, "hmm"),
                       "hmm: %s: not an acoustic model (no readable mdef: %s)", hmm,
                       strerror(errno));
    }
    speech_check_path(p, "dict", DEFAULT_DICT, 0, c);
    speech_check_path(p, "lm", DEFAULT_LM, 0, c);
}

static void transcribe_bound(const struct mqfork_params *p, struct mqfork_out_bound *b)
{
    *b = (struct mqfork_out_bound){.fixed = OUT_FIXED};
}

static void *transcribe_preload(const struct mqfork_params *p)
{
    struct preload *pl = calloc(1, sizeof(*pl));
    if (!pl)
        return NULL;
    pl->config =
        cmd_ln_init(NULL, ps_args(), TRUE, "-hmm", param_or(p, "hmm", DEFAULT_HMM), "-dict",
                    param_or(p, "dict", DEFAULT_DICT), "-lm", param_or(p, "lm", DEFAULT_LM),
                    "-logfn", param_or(p, "log", "/dev/null"), NULL);
    if (pl->config)
        pl->ps = ps_init(pl->config);
    if (!pl->ps) {
        fprintf(stderr, "speech.transcribe: pocketsphinx cannot load the model (hmm %s)\n",
                param_or(p, "hmm", DEFAULT_HMM));
        if (pl->config)
            cmd_ln_free_r(pl->config);
        free(pl);
        return NULL;
    }
    return pl;
}

static void transcribe_unload(void *preloaded)
{
    struct preload *pl = preloaded;
    ps_free(pl->ps);
    cmd_ln_free_r(pl->config);
    free(pl);
}

/* What one decode found. */
struct transcript {
    const char *text;
    uint32_t ends[OUT_FIXED / 2]; /* where each word ends, ms */
    size_t nends;
    double audio_s, decode_s;
};

static void *transcribe_init(const struct mqfork_init *in)
{
    struct preload *pl = in->preloaded;
    if (!pl)
        return NULL;
    struct transcribe *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->ps = pl->ps;
    t->counters = in->counters;
    t->histograms = in->histograms;
    return t;
}

static void transcribe_fini(void *ctx)
{
    free(ctx);
}

/* Where each word of the hypothesis ends, in ms, at most MAX; 0 when the
 * words cannot be told apart from the fillers (<sil>, [NOISE], ...) that
 * the hypothesis leaves out. */
static size_t word_ends(ps_decoder_t *ps, uint32_t *ends, size_t max)
{
    size_t n = 0;
    for (ps_seg_t *seg = ps_seg_iter(ps); seg; seg = ps_seg_next(seg)) {
        const char *w = ps_seg_word(seg);
        if (!w || w[0] == '<' || w[0] == '[' || w[0] == '+')
            continue;
        if (n == max) {
            ps_seg_free(seg);
            return 0;
        }
        int sf, ef;
        ps_seg_frames(seg, &sf, &ef);
        ends[n++] = ef >= 0 ? (uint32_t)(ef + 1) * 10 : 0;
    }
    return n;
}

static size_t count_words(const char *text, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += text[i] != ' ' && (i == 0 || text[i - 1] == ' ');
    return n;
}

/* The answer's tail after the text: the figures and the first WORDS ends;
 * false when it does not fit in CAP. */
static bool format_tail(char *tail, size_t cap, const struct transcript *tr, size_t words,
                        bool truncated)
{
    int n = snprintf(tail, cap, "\", \"audio_s\": %.3f, \"decode_s\": %.3f%s, \"ends_ms\": [",
                     tr->audio_s, tr->decode_s, truncated ? ", \"truncated\": true" : "");
    size_t pos = n > 0 ? (size_t)n : cap;
    for (size_t i = 0; i < words && pos < cap; i++) {
        n = snprintf(tail + pos, cap - pos, "%s%" PRIu32, i ? "," : "", tr->ends[i]);
        pos = n > 0 ? pos + (size_t)n : cap;
    }
    if (pos < cap)
        n = snprintf(tail + pos, cap - pos, "]}");
    return pos < cap && n > 0 && (size_t)n < cap - pos;
}

/* The answer, within OUT_FIXED bytes: the transcript cut at a word if need
 * be. */
static void answer(struct mqfork_job *job, const struct transcript *tr)
{
    char tail[OUT_FIXED];
    size_t cap = job->out_cap < OUT_FIXED ? job->out_cap : OUT_FIXED;
    char *out = (char *)job->out;
    const char *hyp = tr->text;
    size_t len = strlen(hyp), all = count_words(hyp, len);
    if (cap < 256) { /* cannot happen: out_bound asks for OUT_FIXED */
        mqfork_job_error(job, "speech.transcribe: no room for the answer");
        return;
    }
    for (;;) {
        size_t words = tr->nends == all ? count_words(hyp, len) : 0;
        const char *head = "{\"text\": \"";
        size_t pos = strlen(head);
        memcpy(out, head, pos);
        if (format_tail(tail, cap - pos, tr, words, len < strlen(hyp)) &&
            speech_json_escape(out, cap - strlen(tail), &pos, hyp, len) == 0) {
            memcpy(out + pos, tail, strlen(tail));
            job->out_len = pos + strlen(tail);
            return;
        }
        /* Too long: drop the last word and try again. */
        while (len > 0 && hyp[len - 1] != ' ')
            len--;
        while (len > 0 && hyp[len - 1] == ' ')
            len--;
    }
}

static enum mqfork_status transcribe_run(void *ctx, struct mqfork_job *job)
{
    struct transcribe *t = ctx;
    if (job->in_len % 2) {
        mqfork_job_error(job, "speech.transcribe: %zu bytes is not whole s16le samples",
                         job->in_len);
        return MQFORK_BAD_INPUT;
    }
    size_t samples = job->in_len / 2;
    uint64_t t0 = speech_now_ns();
    struct transcript *tr = calloc(1, sizeof(*tr));
    int16_t *pcm = samples ? malloc(samples * sizeof(*pcm)) : NULL;
    if (!tr || (samples && !pcm)) {
        free(tr);
        free(pcm);
        mqfork_job_error(job, "speech.transcribe: out of memory");
        return MQFORK_FAILED;
    }
    if (samples > 0) {
        /* pocketsphinx reads host-order int16: copy, since the input may be
         * unaligned (and so the decoder never reads shared memory twice). */
        for (size_t i = 0; i < samples; i++)
            pcm[i] = (int16_t)(job->in[2 * i] | job->in[2 * i + 1] << 8);
        int rc = ps_start_utt(t->ps);
        if (rc >= 0)
            rc = ps_process_raw(t->ps, pcm, samples, FALSE, TRUE) < 0 ? -1 : 0;
        if (ps_end_utt(t->ps) < 0 || rc < 0) {
            free(pcm);
            free(tr);
            mqfork_job_error(job, "speech.transcribe: pocketsphinx failed to decode");
            return MQFORK_FAILED;
        }
        int32 score;
        tr->text = ps_get_hyp(t->ps, &score);
        if (tr->text)
            tr->nends = word_ends(t->ps, tr->ends, sizeof(tr->ends) / sizeof(tr->ends[0]));
    }
    free(pcm);
    uint64_t decode_ns = speech_now_ns() - t0;
    const char *hyp = tr->text ? tr->text : "";
    tr->text = hyp;
    tr->audio_s = (double)samples / SAMPLE_RATE;
    tr->decode_s = (double)decode_ns / 1e9;
    answer(job, tr);
    free(tr);
    mqfork_count(t->counters, C_UTTERANCES, 1);
    if (!*hyp)
        mqfork_count(t->counters, C_EMPTY, 1);
    mqfork_count(t->counters, C_AUDIO_MS, samples * 1000 / SAMPLE_RATE);
    mqfork_count(t->counters, C_DECODE_MS, decode_ns / 1000000);
    mqfork_observe_ns(&t->histograms, H_RECOGNITION, decode_ns);
    if (samples >= SAMPLE_RATE / 10) /* a tenth of a second, or the ratio means little */
        mqfork_observe_ns(&t->histograms, H_PER_AUDIO_S,
                          (uint64_t)((double)decode_ns * SAMPLE_RATE / (double)samples));
    return MQFORK_OK;
}

const struct mqfork_handler speech_transcribe = {
    .abi = MQFORK_HANDLER_ABI,
    .name = "speech.transcribe",
    .check = transcribe_check,
    .out_bound = transcribe_bound,
    .preload = transcribe_preload,
    .unload = transcribe_unload,
    .init = transcribe_init,
    .fini = transcribe_fini,
    .run = transcribe_run,
    .counters = counters,
    .ncounters = NCOUNTERS,
    .histograms = histograms,
    .nhistograms = NHISTOGRAMS,
};
