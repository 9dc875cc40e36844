/* fuzz_voice_json.c - libFuzzer harness for the voice devices' control
 * messages (proto/voice_json.c): any bytes (not NUL-terminated) through
 * voice_msg_parse, which must refuse with a sentence or fill a message
 * whose every field is within its bounds and documented values; then the
 * parsed strings through the server's replies (hello, goodbye, alert, stt,
 * tts), which must be JSON that reads back to the same values; a server
 * hello must parse as a hello with the audio it announced, and the device
 * side (voice_server_hello_parse) must read back all it says. The same
 * bytes also go to the device side as a server hello.
 *
 * Input: the control message. */
#include <cJSON.h>

#include "fuzz.h"
#include "proto/voice_json.h"

static bool bounded(const char *s, size_t cap)
{
    return memchr(s, '\0', cap + 1) != NULL;
}

static bool opus_audio(const struct voice_audio *a)
{
    bool rate = a->sample_rate == 8000 || a->sample_rate == 12000 || a->sample_rate == 16000 ||
                a->sample_rate == 24000 || a->sample_rate == 48000;
    bool frame =
        a->frame_ms == 10 || (a->frame_ms % 20 == 0 && a->frame_ms >= 20 && a->frame_ms <= 120);
    return rate && (a->channels == 1 || a->channels == 2) && frame;
}

static void check_msg(const struct voice_msg *m)
{
    FUZZ_CHECK(m->type >= VOICE_MSG_HELLO && m->type <= VOICE_MSG_OTHER);
    FUZZ_CHECK(bounded(m->session_id, VOICE_SESSION_LEN) && bounded(m->text, VOICE_TEXT_LEN));
    if (m->type == VOICE_MSG_HELLO)
        FUZZ_CHECK(opus_audio(&m->audio));
    if (m->type == VOICE_MSG_LISTEN)
        FUZZ_CHECK(strcmp(voice_listen_state_name(m->listen), "?") &&
                   strcmp(voice_listen_mode_name(m->mode), "?"));
}

/* A reply's JSON text (freed) read back: it must be an object. */
static cJSON *reply(char *json)
{
    FUZZ_CHECK(json != NULL);
    cJSON *o = cJSON_Parse(json);
    FUZZ_CHECK(cJSON_IsObject(o));
    free(json);
    return o;
}

/* O's string KEY is WANT. */
static void check_string(const cJSON *o, const char *key, const char *want)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    FUZZ_CHECK(cJSON_IsString(v) && !strcmp(v->valuestring, want));
}

static void check_replies(const struct voice_msg *m)
{
    cJSON *o = reply(voice_stt_json(m->session_id, m->text));
    check_string(o, "type", "stt");
    check_string(o, "session_id", m->session_id);
    check_string(o, "text", m->text);
    cJSON_Delete(o);
    o = reply(voice_tts_json(m->session_id, "sentence_start", m->text));
    check_string(o, "state", "sentence_start");
    check_string(o, "text", m->text);
    cJSON_Delete(o);
    o = reply(voice_goodbye_json(m->session_id));
    check_string(o, "session_id", m->session_id);
    cJSON_Delete(o);
    o = reply(voice_alert_json(m->text));
    check_string(o, "message", m->text);
    cJSON_Delete(o);
}

/* The device's read of a server hello: every field as sent (a server name
 * that does not fit or is empty is refused). */
static void check_device_reads(const char *json, const struct voice_hello_reply *r)
{
    struct voice_server_hello h;
    char why[256];
    size_t n = strlen(r->server);
    int rc = voice_server_hello_parse(json, strlen(json), &h, why, sizeof(why));
    FUZZ_CHECK((rc == 0) == (n > 0 && n < sizeof(h.server)));
    if (rc < 0)
        return;
    FUZZ_CHECK(!strcmp(h.session_id, r->session_id) && !strcmp(h.server, r->server));
    FUZZ_CHECK(h.port == r->port && !memcmp(h.key, r->key, VOICE_KEY_LEN));
    FUZZ_CHECK(!memcmp(h.nonce, r->nonce, VOICE_HDR_LEN));
    FUZZ_CHECK(!memcmp(&h.downlink, &r->downlink, sizeof(h.downlink)));
}

/* Any bytes as a server hello the device reads: refused with a sentence, or
 * every field within its bounds. */
static void check_server_hello(const char *json, size_t len)
{
    struct voice_server_hello h;
    char why[256];
    if (voice_server_hello_parse(json, len, &h, why, sizeof(why)) < 0) {
        FUZZ_CHECK(bounded(why, sizeof(why) - 1) && why[0] != '\0');
        return;
    }
    FUZZ_CHECK(bounded(h.session_id, VOICE_SESSION_LEN) && bounded(h.server, sizeof(h.server) - 1));
    FUZZ_CHECK(h.server[0] && h.port >= 1 && opus_audio(&h.downlink));
}

/* The server's hello to a device's: as the device reads it, with the
 * session, the key and nonce in hex, and the audio announced. */
static void check_hello(const struct voice_msg *m, const uint8_t *raw, size_t len)
{
    struct voice_hello_reply r = {
        .session_id = m->session_id, .server = m->text, .port = 8884, .downlink = m->audio};
    for (size_t i = 0; len && i < VOICE_HDR_LEN; i++) {
        r.key[i] = raw[i % len];
        r.nonce[i] = raw[(i + VOICE_KEY_LEN) % len];
    }
    char *json = voice_hello_json(&r), why[256], hex[2 * VOICE_HDR_LEN + 1];
    struct voice_msg back;
    FUZZ_CHECK(json && voice_msg_parse(json, strlen(json), &back, why, sizeof(why)) == 0);
    FUZZ_CHECK(back.type == VOICE_MSG_HELLO && !strcmp(back.session_id, m->session_id));
    FUZZ_CHECK(!memcmp(&back.audio, &m->audio, sizeof(m->audio)));
    check_device_reads(json, &r);
    cJSON *o = reply(json);
    const cJSON *udp = cJSON_GetObjectItemCaseSensitive(o, "udp");
    check_string(udp, "server", m->text);
    voice_hex(r.key, VOICE_KEY_LEN, hex);
    check_string(udp, "key", hex);
    voice_hex(r.nonce, VOICE_HDR_LEN, hex);
    check_string(udp, "nonce", hex);
    cJSON_Delete(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *json = fuzz_xmalloc(size), why[256];
    memcpy(json, data, size);
    memset(why, 0x7f, sizeof(why));
    struct voice_msg m;
    int rc = voice_msg_parse(json, size, &m, why, sizeof(why));
    FUZZ_CHECK(rc == 0 || rc == -1);
    if (rc < 0) {
        FUZZ_CHECK(bounded(why, sizeof(why) - 1) && why[0] != '\0');
    } else {
        check_msg(&m);
        check_replies(&m);
        if (m.type == VOICE_MSG_HELLO)
            check_hello(&m, data, size);
    }
    check_server_hello(json, size);
    free(json);
    return 0;
}
