/* voice_json.c - see voice_json.h. Parsed with cJSON; nothing is kept of
 * the parse tree but the checked fields, copied into bounded buffers. */
#include "proto/voice_json.h"

#include <cJSON.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

struct word {
    const char *name;
    int value;
};

static const struct word msg_types[] = {
    {"hello", VOICE_MSG_HELLO},     {"listen", VOICE_MSG_LISTEN}, {"abort", VOICE_MSG_ABORT},
    {"goodbye", VOICE_MSG_GOODBYE}, {"mcp", VOICE_MSG_MCP},       {NULL, 0},
};
static const struct word listen_states[] = {
    {"start", VOICE_LISTEN_START},
    {"stop", VOICE_LISTEN_STOP},
    {"detect", VOICE_LISTEN_DETECT},
    {NULL, 0},
};
static const struct word listen_modes[] = {
    {"auto", VOICE_MODE_AUTO},
    {"manual", VOICE_MODE_MANUAL},
    {"realtime", VOICE_MODE_REALTIME},
    {NULL, 0},
};

static int find_word(const struct word *w, const char *s)
{
    for (; w->name; w++)
        if (strcmp(w->name, s) == 0)
            return w->value;
    return -1;
}

static const char *word_name(const struct word *w, int value)
{
    for (; w->name; w++)
        if (w->value == value)
            return w->name;
    return "?";
}

const char *voice_listen_state_name(enum voice_listen_state s)
{
    return word_name(listen_states, (int)s);
}

const char *voice_listen_mode_name(enum voice_listen_mode m)
{
    return word_name(listen_modes, (int)m);
}

static int refuse(char *why, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int refuse(char *why, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, len, fmt, ap);
    va_end(ap);
    return -1;
}

/* Copy string field KEY of O into OUT (LEN bytes with the NUL); absent is
 * "", anything but a string short enough is refused. */
static int copy_string(const cJSON *o, const char *key, char *out, size_t len, char *why,
                       size_t whylen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    out[0] = '\0';
    if (!v)
        return 0;
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= len)
        return refuse(why, whylen, "'%s' is not a string of at most %zu bytes", key, len - 1);
    memcpy(out, v->valuestring, strlen(v->valuestring) + 1);
    return 0;
}

/* An integer field in [MIN, MAX] (JSON numbers are doubles: a fraction or
 * a value out of range is refused, not truncated). */
static int get_int(const cJSON *o, const char *key, int min, int max, int *out, char *why,
                   size_t whylen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v) || v->valuedouble < min || v->valuedouble > max ||
        v->valuedouble != (double)(int)v->valuedouble)
        return refuse(why, whylen, "'%s' must be an integer in %d..%d", key, min, max);
    *out = (int)v->valuedouble;
    return 0;
}

static bool opus_rate(int hz)
{
    return hz == 8000 || hz == 12000 || hz == 16000 || hz == 24000 || hz == 48000;
}

static int parse_audio(const cJSON *o, struct voice_audio *a, char *why, size_t whylen)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "audio_params");
    const cJSON *format = cJSON_GetObjectItemCaseSensitive(p, "format");
    if (!cJSON_IsObject(p))
        return refuse(why, whylen, "hello has no audio_params object");
    if (!cJSON_IsString(format) || strcmp(format->valuestring, "opus") != 0)
        return refuse(why, whylen, "audio_params.format must be \"opus\"");
    if (get_int(p, "sample_rate", 8000, 48000, &a->sample_rate, why, whylen) < 0 ||
        get_int(p, "channels", 1, 2, &a->channels, why, whylen) < 0 ||
        get_int(p, "frame_duration", 10, 120, &a->frame_ms, why, whylen) < 0)
        return -1;
    if (!opus_rate(a->sample_rate))
        return refuse(why, whylen, "audio_params.sample_rate %d is not an Opus rate",
                      a->sample_rate);
    if (a->frame_ms != 10 && a->frame_ms % 20 != 0)
        return refuse(why, whylen, "audio_params.frame_duration %d ms is not an Opus frame length",
                      a->frame_ms);
    return 0;
}

static int parse_hello(const cJSON *o, struct voice_msg *m, char *why, size_t whylen)
{
    const cJSON *transport = cJSON_GetObjectItemCaseSensitive(o, "transport");
    int version;
    if (get_int(o, "version", 0, 1000, &version, why, whylen) < 0)
        return -1;
    if (version != 3)
        return refuse(why, whylen, "protocol version %d is not supported (only 3)", version);
    if (!cJSON_IsString(transport) || strcmp(transport->valuestring, "udp") != 0)
        return refuse(why, whylen, "transport must be \"udp\"");
    return parse_audio(o, &m->audio, why, whylen);
}

static int parse_listen(const cJSON *o, struct voice_msg *m, char *why, size_t whylen)
{
    const cJSON *state = cJSON_GetObjectItemCaseSensitive(o, "state");
    const cJSON *mode = cJSON_GetObjectItemCaseSensitive(o, "mode");
    int s = cJSON_IsString(state) ? find_word(listen_states, state->valuestring) : -1;
    int md = cJSON_IsString(mode) ? find_word(listen_modes, mode->valuestring) : VOICE_MODE_AUTO;
    if (s < 0)
        return refuse(why, whylen, "listen.state must be start, stop or detect");
    if (md < 0)
        return refuse(why, whylen, "listen.mode must be auto, manual or realtime");
    m->listen = (enum voice_listen_state)s;
    m->mode = (enum voice_listen_mode)md;
    return copy_string(o, "text", m->text, sizeof(m->text), why, whylen);
}

static int parse_object(const cJSON *o, struct voice_msg *m, char *why, size_t whylen)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
    if (!cJSON_IsObject(o))
        return refuse(why, whylen, "not a JSON object");
    if (!cJSON_IsString(type))
        return refuse(why, whylen, "no \"type\" string");
    int t = find_word(msg_types, type->valuestring);
    m->type = t < 0 ? VOICE_MSG_OTHER : (enum voice_msg_type)t;
    if (copy_string(o, "session_id", m->session_id, sizeof(m->session_id), why, whylen) < 0)
        return -1;
    switch (m->type) {
    case VOICE_MSG_HELLO:
        return parse_hello(o, m, why, whylen);
    case VOICE_MSG_LISTEN:
        return parse_listen(o, m, why, whylen);
    case VOICE_MSG_ABORT:
        return copy_string(o, "reason", m->text, sizeof(m->text), why, whylen);
    default:
        return 0;
    }
}

int voice_msg_parse(const char *json, size_t len, struct voice_msg *m, char *why, size_t whylen)
{
    memset(m, 0, sizeof(*m));
    if (len > VOICE_JSON_MAX)
        return refuse(why, whylen, "%zu bytes is longer than %d", len, VOICE_JSON_MAX);
    cJSON *o = cJSON_ParseWithLength(json, len);
    if (!o)
        return refuse(why, whylen, "not valid JSON");
    int rc = parse_object(o, m, why, whylen);
    cJSON_Delete(o);
    return rc;
}

/* ---- what the server sends ---------------------------------------------- */

/* Print O (consumed) without spaces; NULL when O is (allocation failed). */
static char *print(cJSON *o)
{
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return s;
}

static cJSON *typed(const char *type, const char *session_id)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", type);
    if (session_id)
        cJSON_AddStringToObject(o, "session_id", session_id);
    return o;
}

static void add_audio(cJSON *o, const struct voice_audio *a)
{
    cJSON *p = cJSON_AddObjectToObject(o, "audio_params");
    cJSON_AddStringToObject(p, "format", "opus");
    cJSON_AddNumberToObject(p, "sample_rate", a->sample_rate);
    cJSON_AddNumberToObject(p, "channels", a->channels);
    cJSON_AddNumberToObject(p, "frame_duration", a->frame_ms);
}

char *voice_hello_json(const struct voice_hello_reply *r)
{
    char key[2 * VOICE_KEY_LEN + 1], nonce[2 * VOICE_HDR_LEN + 1];
    voice_hex(r->key, VOICE_KEY_LEN, key);
    voice_hex(r->nonce, VOICE_HDR_LEN, nonce);
    cJSON *o = typed("hello", NULL);
    cJSON_AddNumberToObject(o, "version", 3);
    cJSON_AddStringToObject(o, "session_id", r->session_id);
    cJSON_AddStringToObject(o, "transport", "udp");
    cJSON *udp = cJSON_AddObjectToObject(o, "udp");
    cJSON_AddStringToObject(udp, "server", r->server);
    cJSON_AddNumberToObject(udp, "port", r->port);
    cJSON_AddStringToObject(udp, "encryption", "aes-128-ctr");
    cJSON_AddStringToObject(udp, "key", key);
    cJSON_AddStringToObject(udp, "nonce", nonce);
    add_audio(o, &r->downlink);
    return print(o);
}

char *voice_goodbye_json(const char *session_id)
{
    return print(typed("goodbye", session_id));
}

char *voice_alert_json(const char *message)
{
    cJSON *o = typed("alert", NULL);
    cJSON_AddStringToObject(o, "status", "error");
    cJSON_AddStringToObject(o, "message", message);
    cJSON_AddStringToObject(o, "emotion", "sad");
    return print(o);
}

char *voice_stt_json(const char *session_id, const char *text)
{
    cJSON *o = typed("stt", session_id);
    cJSON_AddStringToObject(o, "text", text);
    return print(o);
}

char *voice_tts_json(const char *session_id, const char *state, const char *text)
{
    cJSON *o = typed("tts", session_id);
    cJSON_AddStringToObject(o, "state", state);
    if (text)
        cJSON_AddStringToObject(o, "text", text);
    return print(o);
}

/* ---- the device side: the server's hello reply ---------------------------- */

static int parse_udp(const cJSON *udp, struct voice_server_hello *h, char *why, size_t whylen)
{
    const cJSON *key = cJSON_GetObjectItemCaseSensitive(udp, "key");
    const cJSON *nonce = cJSON_GetObjectItemCaseSensitive(udp, "nonce");
    int port;
    if (!cJSON_IsObject(udp))
        return refuse(why, whylen, "hello reply has no udp object");
    if (copy_string(udp, "server", h->server, sizeof(h->server), why, whylen) < 0)
        return -1;
    if (!h->server[0])
        return refuse(why, whylen, "udp.server is missing or empty");
    if (get_int(udp, "port", 1, 65535, &port, why, whylen) < 0)
        return -1;
    h->port = (uint16_t)port;
    if (!cJSON_IsString(key) || voice_unhex(key->valuestring, h->key, VOICE_KEY_LEN) < 0)
        return refuse(why, whylen, "udp.key is not %d hex digits", 2 * VOICE_KEY_LEN);
    if (!cJSON_IsString(nonce) || voice_unhex(nonce->valuestring, h->nonce, VOICE_HDR_LEN) < 0)
        return refuse(why, whylen, "udp.nonce is not %d hex digits", 2 * VOICE_HDR_LEN);
    return 0;
}

static int parse_server_hello(const cJSON *o, struct voice_server_hello *h, char *why,
                              size_t whylen)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
    const cJSON *transport = cJSON_GetObjectItemCaseSensitive(o, "transport");
    if (!cJSON_IsObject(o))
        return refuse(why, whylen, "not a JSON object");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "hello") != 0)
        return refuse(why, whylen, "not a message of type \"hello\"");
    if (!cJSON_IsString(transport) || strcmp(transport->valuestring, "udp") != 0)
        return refuse(why, whylen, "transport must be \"udp\"");
    if (copy_string(o, "session_id", h->session_id, sizeof(h->session_id), why, whylen) < 0)
        return -1;
    h->downlink = (struct voice_audio){.sample_rate = 24000, .channels = 1, .frame_ms = 60};
    if (cJSON_GetObjectItemCaseSensitive(o, "audio_params") &&
        parse_audio(o, &h->downlink, why, whylen) < 0)
        return -1;
    return parse_udp(cJSON_GetObjectItemCaseSensitive(o, "udp"), h, why, whylen);
}

int voice_server_hello_parse(const char *json, size_t len, struct voice_server_hello *h, char *why,
                             size_t whylen)
{
    memset(h, 0, sizeof(*h));
    if (len > VOICE_JSON_MAX)
        return refuse(why, whylen, "%zu bytes is longer than %d", len, VOICE_JSON_MAX);
    cJSON *o = cJSON_ParseWithLength(json, len);
    if (!o)
        return refuse(why, whylen, "not valid JSON");
    int rc = parse_server_hello(o, h, why, whylen);
    cJSON_Delete(o);
    return rc;
}
