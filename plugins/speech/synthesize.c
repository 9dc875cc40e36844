/* synthesize.c - speech.synthesize: text in, speech out as PCM s16le mono at
 * the route's sample_rate.
 *
 * Input: UTF-8 text, or JSON {"text": "...", "voice": "..."} (voice
 * optional). Params:
 *   voice        rms, awb, slt, kal (flite: natural English), or
 *                espeak:<name> (espeak-ng: its many languages, e.g.
 *                espeak:cmn for Mandarin, espeak:en); default rms
 *   sample_rate  the output's rate, 8000..48000 (default 16000)
 *   max_chars    longer text is refused (1..10000, default 1000)
 *   bound_ms_per_byte
 *                the speech one input byte may make at most, in ms
 *                (10..1000, default 125; see below)
 *
 * flite's voices speak at 8 kHz (kal) or 16 kHz, espeak-ng at 22050 Hz; the
 * speech is resampled with libsoxr (high quality) when its rate is not the
 * route's. flite's voices are registered in preload (shared read-only by the
 * workers); espeak-ng keeps process-global state, so each worker
 * initializes it itself, in init when the route's voice is an espeak one,
 * otherwise at the first job that asks for one.
 *
 * The output is bounded by the input's length: OUT_FIXED_S seconds plus
 * bound_ms_per_byte per input byte. Ordinary speech takes about half the
 * default (English ~70 ms a character, Mandarin ~80 ms a UTF-8 byte); runs
 * of digits can take more, and speech that would be longer than the bound
 * fails with a sentence saying so. The longest input taken (max_in) is
 * max_chars x 4 + 256 bytes: longer ones are refused as too_large, and the
 * supervisor sizes its slab for that input's bound, not limits.max_payload's. */
#include "speech.h"

#include <ctype.h>
#include <math.h>

#include <cjson/cJSON.h>
#include <espeak-ng/espeak_ng.h>
#include <flite/flite.h>
#include <soxr.h>

cst_voice *register_cmu_us_rms(const char *voxdir);
cst_voice *register_cmu_us_awb(const char *voxdir);
cst_voice *register_cmu_us_slt(const char *voxdir);
cst_voice *register_cmu_us_kal(const char *voxdir);

#define DEFAULT_VOICE       "rms"
#define DEFAULT_RATE        16000
#define DEFAULT_CHARS       1000
#define OUT_FIXED_S         3
#define DEFAULT_MS_PER_BYTE 125

enum { C_REQUESTS, C_CHARACTERS, C_AUDIO_MS, C_SYNTH_MS, NCOUNTERS };

static const struct mqfork_counter counters[NCOUNTERS] = {
    [C_REQUESTS] = {.name = "requests", .help = "Texts spoken."},
    [C_CHARACTERS] = {.name = "characters", .help = "Characters of text spoken."},
    [C_AUDIO_MS] = {.name = "audio_ms", .help = "Milliseconds of speech made."},
    [C_SYNTH_MS] = {.name = "synth_ms", .help = "Milliseconds spent making speech."},
};

enum { H_SYNTHESIS, NHISTOGRAMS };

static const struct mqfork_histogram histograms[NHISTOGRAMS] = {
    [H_SYNTHESIS] = {.name = "synthesis", .help = "Time to speak one text."},
};

static const char *const known[] = {"voice", "sample_rate", "max_chars", "bound_ms_per_byte", NULL};

static const struct flite_voice {
    const char *name;
    cst_voice *(*reg)(const char *voxdir);
} flite_voices[] = {
    {"rms", register_cmu_us_rms},
    {"awb", register_cmu_us_awb},
    {"slt", register_cmu_us_slt},
    {"kal", register_cmu_us_kal},
};
#define NFLITE (sizeof(flite_voices) / sizeof(flite_voices[0]))

struct preload {
    cst_voice *flite[NFLITE];
};

struct synth {
    struct preload *pl;
    const char *voice; /* the route's */
    long rate;
    long max_chars;
    uint64_t *counters;
    struct mqfork_histograms histograms;
};

/* A voice name: the index of a flite voice, NFLITE for espeak:<name>, -1
 * when it is neither. */
static int voice_kind(const char *v)
{
    for (size_t i = 0; i < NFLITE; i++)
        if (strcmp(v, flite_voices[i].name) == 0)
            return (int)i;
    if (strncmp(v, "espeak:", 7) == 0 && v[7]) {
        for (const char *s = v + 7; *s; s++)
            if (!isalnum((unsigned char)*s) && !strchr("-_+", *s))
                return -1;
        return NFLITE;
    }
    return -1;
}

static void synth_check(const struct mqfork_params *p, struct mqfork_check *c)
{
    long v;
    mqfork_params_known(p, known, "speech.synthesize", c);
    mqfork_param_long(p, "sample_rate", 8000, 48000, &v, c);
    mqfork_param_long(p, "max_chars", 1, 10000, &v, c);
    mqfork_param_long(p, "bound_ms_per_byte", 10, 1000, &v, c);
    const struct mqfork_param *voice = mqfork_param_find(p, "voice");
    if (voice && voice_kind(voice->value) < 0)
        c->problem(c, voice, "voice: unknown voice '%s' (rms, awb, slt, kal, or espeak:<name>)",
                   voice->value);
}

static long rate_of(const struct mqfork_params *p)
{
    long rate = DEFAULT_RATE;
    mqfork_param_long(p, "sample_rate", 8000, 48000, &rate, NULL);
    return rate;
}

static void synth_bound(const struct mqfork_params *p, struct mqfork_out_bound *b)
{
    uint64_t bytes_per_s = (uint64_t)rate_of(p) * 2;
    long ms = DEFAULT_MS_PER_BYTE;
    mqfork_param_long(p, "bound_ms_per_byte", 10, 1000, &ms, NULL);
    /* 48 kHz at 1000 ms a byte would not fit 32 bits: capped. */
    uint64_t q16 = bytes_per_s * (uint64_t)ms * 65536 / 1000;
    long chars = DEFAULT_CHARS;
    mqfork_param_long(p, "max_chars", 1, 10000, &chars, NULL);
    *b = (struct mqfork_out_bound){
        .fixed = (uint32_t)(bytes_per_s * OUT_FIXED_S),
        .per_in_q16 = q16 > UINT32_MAX ? UINT32_MAX : (uint32_t)q16,
        /* max_chars of 4-byte UTF-8, in JSON with a voice */
        .max_in = (uint32_t)chars * 4 + 256,
    };
}

static void *synth_preload(const struct mqfork_params *p)
{
    struct preload *pl = calloc(1, sizeof(*pl));
    if (!pl)
        return NULL;
    flite_init();
    for (size_t i = 0; i < NFLITE; i++)
        if (!(pl->flite[i] = flite_voices[i].reg(NULL))) {
            fprintf(stderr, "speech.synthesize: flite cannot register voice %s\n",
                    flite_voices[i].name);
            free(pl);
            return NULL;
        }
    return pl;
}

static void synth_unload(void *preloaded)
{
    /* flite's voices live as long as the process: unregistering one while
     * another route holds it would pull it from under it. */
    free(preloaded);
}

/* espeak-ng, initialized once per process (a worker), on first use. */
static int espeak_state; /* 0: not yet, 1: ready, -1: failed */
static char espeak_voice[64];

static int espeak_ready(void)
{
    if (espeak_state == 0) {
        espeak_ng_InitializePath(NULL);
        espeak_ng_ERROR_CONTEXT ctx = NULL;
        espeak_state =
            espeak_ng_Initialize(&ctx) == ENS_OK &&
                    espeak_ng_InitializeOutput(ENOUTPUT_MODE_SYNCHRONOUS, 0, NULL) == ENS_OK
                ? 1
                : -1;
        if (ctx)
            espeak_ng_ClearErrorContext(&ctx);
    }
    return espeak_state == 1;
}

static void *synth_init(const struct mqfork_init *in)
{
    struct synth *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->pl = in->preloaded;
    const struct mqfork_param *voice = mqfork_param_find(in->params, "voice");
    s->voice = voice ? voice->value : DEFAULT_VOICE;
    s->rate = rate_of(in->params);
    s->max_chars = DEFAULT_CHARS;
    mqfork_param_long(in->params, "max_chars", 1, 10000, &s->max_chars, NULL);
    s->counters = in->counters;
    s->histograms = in->histograms;
    if (!s->pl || (voice_kind(s->voice) == (int)NFLITE && !espeak_ready())) {
        free(s);
        return NULL;
    }
    return s;
}

static void synth_fini(void *ctx)
{
    free(ctx);
}

/* Speech as made by an engine: samples at a rate. */
struct pcm {
    int16_t *s;
    size_t n, cap;
    int rate;
    size_t limit; /* samples at most (at rate) */
    int too_long;
};

static int pcm_add(struct pcm *pcm, const int16_t *s, size_t n)
{
    if (pcm->n + n > pcm->limit) {
        pcm->too_long = 1;
        return -1;
    }
    if (pcm->n + n > pcm->cap) {
        size_t cap = pcm->cap ? pcm->cap * 2 : 16384;
        while (cap < pcm->n + n)
            cap *= 2;
        int16_t *grown = realloc(pcm->s, cap * sizeof(*grown));
        if (!grown)
            return -1;
        pcm->s = grown;
        pcm->cap = cap;
    }
    memcpy(pcm->s + pcm->n, s, n * sizeof(*s));
    pcm->n += n;
    return 0;
}

static int espeak_cb(short *wav, int n, espeak_EVENT *ev)
{
    struct pcm *pcm = ev ? ev->user_data : NULL;
    if (!pcm || !wav || n <= 0)
        return 0;
    return pcm_add(pcm, wav, (size_t)n) < 0 ? 1 : 0;
}

/* Speak TEXT with VOICE into PCM; an error sentence in ERR on failure. */
static int speak(struct synth *s, const char *voice, const char *text, struct pcm *pcm,
                 size_t out_samples, char *err, size_t errlen)
{
    int kind = voice_kind(voice);
    if (kind < 0) {
        snprintf(err, errlen, "unknown voice '%.64s' (rms, awb, slt, kal, or espeak:<name>)",
                 voice);
        return MQFORK_BAD_INPUT;
    }
    if (kind < (int)NFLITE) {
        cst_wave *w = flite_text_to_wave(text, s->pl->flite[kind]);
        if (!w) {
            snprintf(err, errlen, "flite could not speak the text");
            return MQFORK_FAILED;
        }
        pcm->rate = w->sample_rate;
        pcm->limit = (size_t)((double)out_samples * w->sample_rate / s->rate);
        int rc = w->num_channels == 1 ? pcm_add(pcm, w->samples, (size_t)w->num_samples) : -1;
        delete_wave(w);
        if (rc < 0 && !pcm->too_long) {
            snprintf(err, errlen, "flite's speech could not be kept");
            return MQFORK_FAILED;
        }
        return MQFORK_OK;
    }
    if (!espeak_ready()) {
        snprintf(err, errlen, "espeak-ng cannot start (is espeak-ng-data installed?)");
        return MQFORK_FAILED;
    }
    if (strcmp(espeak_voice, voice + 7) != 0) {
        if (espeak_ng_SetVoiceByName(voice + 7) != ENS_OK) {
            espeak_voice[0] = '\0';
            snprintf(err, errlen, "espeak-ng has no voice '%.64s'", voice + 7);
            return MQFORK_BAD_INPUT;
        }
        snprintf(espeak_voice, sizeof(espeak_voice), "%s", voice + 7);
    }
    pcm->rate = espeak_ng_GetSampleRate();
    pcm->limit = (size_t)((double)out_samples * pcm->rate / s->rate);
    espeak_SetSynthCallback(espeak_cb);
    espeak_ng_STATUS st = espeak_ng_Synthesize(text, strlen(text) + 1, 0, POS_CHARACTER, 0,
                                               espeakCHARS_UTF8, NULL, pcm);
    if (st != ENS_OK && !pcm->too_long) {
        char msg[128];
        espeak_ng_GetStatusCodeMessage(st, msg, sizeof(msg));
        snprintf(err, errlen, "espeak-ng could not speak the text: %s", msg);
        return MQFORK_FAILED;
    }
    return MQFORK_OK;
}

/* The text and voice of a job: TEXT is malloc'd; *VOICE points into JSON's
 * tree or is the route's. */
static enum mqfork_status parse_input(struct synth *s, struct mqfork_job *job, char **text,
                                      char **voice)
{
    size_t i = 0;
    while (i < job->in_len && isspace(job->in[i]))
        i++;
    *voice = NULL;
    if (i < job->in_len && job->in[i] == '{') {
        cJSON *root = cJSON_ParseWithLength((const char *)job->in, job->in_len);
        cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "text");
        cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "voice");
        if (!root || !cJSON_IsString(t) || (v && !cJSON_IsString(v))) {
            cJSON_Delete(root);
            mqfork_job_error(job, "speech.synthesize: expected text, or JSON with a string "
                                  "\"text\" and an optional string \"voice\"");
            return MQFORK_BAD_INPUT;
        }
        *text = strdup(t->valuestring);
        *voice = v ? strdup(v->valuestring) : NULL;
        cJSON_Delete(root);
    } else {
        *text = strndup((const char *)job->in, job->in_len);
        if (*text && strlen(*text) != job->in_len) {
            free(*text);
            mqfork_job_error(job, "speech.synthesize: the text holds a NUL byte");
            return MQFORK_BAD_INPUT;
        }
    }
    if (!*text) {
        free(*voice);
        mqfork_job_error(job, "speech.synthesize: out of memory");
        return MQFORK_FAILED;
    }
    return MQFORK_OK;
}

static enum mqfork_status synth_run(void *ctx, struct mqfork_job *job)
{
    struct synth *s = ctx;
    char *text, *voice;
    enum mqfork_status rc = parse_input(s, job, &text, &voice);
    if (rc != MQFORK_OK)
        return rc;
    size_t chars = 0;
    if (!speech_utf8_valid((const uint8_t *)text, strlen(text), &chars)) {
        mqfork_job_error(job, "speech.synthesize: the text is not UTF-8");
        rc = MQFORK_BAD_INPUT;
        goto out;
    }
    if ((long)chars > s->max_chars) {
        mqfork_job_error(job,
                         "speech.synthesize: the text has %zu characters, more than max_chars "
                         "(%ld): split it",
                         chars, s->max_chars);
        rc = MQFORK_BAD_INPUT;
        goto out;
    }
    uint64_t t0 = speech_now_ns();
    size_t out_samples = job->out_cap / 2;
    struct pcm pcm = {0};
    char err[200];
    rc = speak(s, voice ? voice : s->voice, text, &pcm, out_samples, err, sizeof(err));
    if (rc == MQFORK_OK && pcm.too_long) {
        mqfork_job_error(job,
                         "speech.synthesize: the speech of %zu characters is longer than the "
                         "%.1f s this %zu-byte input may make",
                         chars, (double)out_samples / (double)s->rate, job->in_len);
        rc = MQFORK_FAILED;
    } else if (rc != MQFORK_OK) {
        mqfork_job_error(job, "speech.synthesize: %s", err);
    } else if (pcm.n == 0) {
        job->out_len = 0;
    } else if (pcm.rate == s->rate) {
        memcpy(job->out, pcm.s, pcm.n * 2);
        job->out_len = pcm.n * 2;
    } else {
        size_t done = 0;
        soxr_io_spec_t io = soxr_io_spec(SOXR_INT16_I, SOXR_INT16_I);
        soxr_quality_spec_t q = soxr_quality_spec(SOXR_HQ, 0);
        /* The output buffer may be unaligned for int16_t: resample into an
         * aligned one. */
        size_t want = (size_t)ceil((double)pcm.n * s->rate / pcm.rate) + 16;
        if (want > out_samples)
            want = out_samples;
        int16_t *res = malloc(want * sizeof(*res));
        soxr_error_t e = res ? soxr_oneshot(pcm.rate, s->rate, 1, pcm.s, pcm.n, NULL, res, want,
                                            &done, &io, &q, NULL)
                             : "out of memory";
        if (e) {
            mqfork_job_error(job, "speech.synthesize: resampling %d Hz to %ld Hz: %s", pcm.rate,
                             s->rate, e);
            rc = MQFORK_FAILED;
        } else {
            memcpy(job->out, res, done * 2);
            job->out_len = done * 2;
        }
        free(res);
    }
    free(pcm.s);
    if (rc == MQFORK_OK) {
        mqfork_count(s->counters, C_REQUESTS, 1);
        mqfork_count(s->counters, C_CHARACTERS, chars);
        mqfork_count(s->counters, C_AUDIO_MS, job->out_len / 2 * 1000 / (uint64_t)s->rate);
        uint64_t took_ns = speech_now_ns() - t0;
        mqfork_count(s->counters, C_SYNTH_MS, took_ns / 1000000);
        mqfork_observe_ns(&s->histograms, H_SYNTHESIS, took_ns);
    }
out:
    free(text);
    free(voice);
    return rc;
}

const struct mqfork_handler speech_synthesize = {
    .abi = MQFORK_HANDLER_ABI,
    .name = "speech.synthesize",
    .check = synth_check,
    .out_bound = synth_bound,
    .preload = synth_preload,
    .unload = synth_unload,
    .init = synth_init,
    .fini = synth_fini,
    .run = synth_run,
    .counters = counters,
    .ncounters = NCOUNTERS,
    .histograms = histograms,
    .nhistograms = NHISTOGRAMS,
};
