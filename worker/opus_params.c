/* opus_params.c - the Opus handlers' params: each one checked, with a
 * sentence naming what is accepted, and parsed into struct opus_params. */
#include "worker/opus_params.h"

#include <opus.h>
#include <stdio.h>
#include <string.h>

#include "worker/handler.h"

/* A param whose value must be one of NAMES; VALUES[i] goes with NAMES[i]. */
struct choice {
    const char *key;
    const char *const *names;
    const int *values;
    size_t n;
};

static const char *const rate_names[] = {"8000", "12000", "16000", "24000", "48000"};
static const int rate_values[] = {8000, 12000, 16000, 24000, 48000};
static const char *const channel_names[] = {"1", "2"};
static const int channel_values[] = {1, 2};
static const char *const bool_names[] = {"true", "false", "yes", "no", "on", "off"};
static const int bool_values[] = {1, 0, 1, 0, 1, 0};
static const char *const fallback_names[] = {"none", "pcm"};
static const int fallback_values[] = {0, 1};
static const char *const frame_names[] = {"2.5", "5", "10", "20", "40", "60"};
const int opus_frame_us[OPUS_FRAME_SIZES] = {2500, 5000, 10000, 20000, 40000, 60000};
static const char *const app_names[] = {"voip", "audio", "lowdelay"};
static const int app_values[] = {OPUS_APPLICATION_VOIP, OPUS_APPLICATION_AUDIO,
                                 OPUS_APPLICATION_RESTRICTED_LOWDELAY};

#define CHOICE(k, stem)                                                                            \
    {                                                                                              \
        k, stem##_names, stem##_values, sizeof(stem##_values) / sizeof(int)                        \
    }

static const struct choice c_rate = CHOICE("sample_rate", rate);
static const struct choice c_channels = CHOICE("channels", channel);
static const struct choice c_fec = CHOICE("fec", bool);
static const struct choice c_fallback = CHOICE("fallback", fallback);
static const struct choice c_frame = {"frame_ms", frame_names, opus_frame_us, OPUS_FRAME_SIZES};
static const struct choice c_app = CHOICE("application", app);

static const char *const decode_keys[] = {"sample_rate", "channels", "fec", "fallback",
                                          "conceal",     "sequence", NULL};
static const char *const encode_keys[] = {"sample_rate", "channels",    "frame_ms", "bitrate",
                                          "complexity",  "application", NULL};

/* "a, b or c" into buf: the accepted values, for messages. */
static void list_names(const char *const *names, size_t n, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && used < len; i++) {
        const char *sep = i == 0 ? "" : i + 1 == n ? " or " : ", ";
        int w = snprintf(buf + used, len - used, "%s%s", sep, names[i]);
        if (w < 0)
            break;
        used += (size_t)w;
    }
}

/* Set *OUT from param C->key when present and one of its names; report
 * it to CHECK (when not NULL) otherwise. */
static void param_choice(const struct mqfork_params *p, const struct choice *c, int *out,
                         struct mqfork_check *check)
{
    const struct mqfork_param *param = mqfork_param_find(p, c->key);
    if (!param)
        return;
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(param->value, c->names[i]) == 0) {
            *out = c->values[i];
            return;
        }
    char names[128];
    list_names(c->names, c->n, names, sizeof(names));
    if (check)
        check->problem(check, param, "%s: '%s' is not one of %s", c->key, param->value, names);
}

static void param_bitrate(const struct mqfork_params *p, int *out, struct mqfork_check *check)
{
    const struct mqfork_param *param = mqfork_param_find(p, "bitrate");
    long v = 0;
    if (!param)
        return;
    if (strcmp(param->value, "auto") == 0)
        *out = OPUS_AUTO;
    else if (param->value[0] < '0' || param->value[0] > '9') {
        if (check)
            check->problem(check, param,
                           "bitrate: expected 'auto' or bits per second (500..512000), got '%s'",
                           param->value);
    } else if (mqfork_param_long(p, "bitrate", 500, 512000, &v, check) == 0)
        *out = (int)v;
}

/* Parse P into *O, defaults first; every problem goes to CHECK when it is
 * not NULL (a bad value then leaves its default in place). */
void opus_parse_params(const struct mqfork_params *p, bool encode, struct opus_params *o,
                       struct mqfork_check *check)
{
    *o = (struct opus_params){
        .rate = 16000,
        .channels = 1,
        .frame_us = 60000,
        .bitrate = OPUS_AUTO,
        .complexity = 5,
        .application = OPUS_APPLICATION_VOIP,
    };
    int fec = 0, fallback = 0;
    long complexity = o->complexity;
    if (check)
        mqfork_params_known(p, encode ? encode_keys : decode_keys,
                            encode ? "opus.encode" : "opus.decode", check);
    param_choice(p, &c_rate, &o->rate, check);
    param_choice(p, &c_channels, &o->channels, check);
    if (!encode) {
        long conceal = 0, sequence = 0;
        mqfork_param_long(p, "conceal", 0, OPUS_CONCEAL_MAX, &conceal, check);
        mqfork_param_long(p, "sequence", 0, OPUS_SEQUENCE_MAX, &sequence, check);
        o->conceal = (int)conceal;
        o->sequence = (int)sequence;
        param_choice(p, &c_fec, &fec, check);
        param_choice(p, &c_fallback, &fallback, check);
        o->fec = fec;
        o->fallback_pcm = fallback;
        return;
    }
    param_choice(p, &c_frame, &o->frame_us, check);
    param_bitrate(p, &o->bitrate, check);
    mqfork_param_long(p, "complexity", 0, 10, &complexity, check);
    param_choice(p, &c_app, &o->application, check);
    o->complexity = (int)complexity;
}

/* Params that passed check() (the engine refuses a kind otherwise); should
 * they not, the defaults stand in for the bad values rather than garbage. */
struct opus_params opus_params_of(const struct mqfork_params *p, bool encode)
{
    struct opus_params o;
    opus_parse_params(p, encode, &o, NULL);
    return o;
}
