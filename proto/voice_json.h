/* voice_json.h - the JSON control messages of xiaozhi voice devices
 * (doc/VOICE.md): what a device sends, checked field by field, and what the
 * server sends back. Every input is hostile: a message that does not fit is
 * refused with a sentence saying why, never half-read. */
#ifndef MQFORK_PROTO_VOICE_JSON_H
#define MQFORK_PROTO_VOICE_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "proto/voice_udp.h"

#define VOICE_JSON_MAX    65536 /* a control message longer than this is refused */
#define VOICE_SESSION_LEN 40    /* session ids are at most this long */
#define VOICE_TEXT_LEN    512

enum voice_msg_type {
    VOICE_MSG_HELLO,
    VOICE_MSG_LISTEN,
    VOICE_MSG_ABORT,
    VOICE_MSG_GOODBYE,
    VOICE_MSG_MCP,
    VOICE_MSG_OTHER, /* any other type: passed through to the backend */
};

enum voice_listen_state { VOICE_LISTEN_START, VOICE_LISTEN_STOP, VOICE_LISTEN_DETECT };
enum voice_listen_mode { VOICE_MODE_AUTO, VOICE_MODE_MANUAL, VOICE_MODE_REALTIME };

struct voice_audio {
    int sample_rate; /* Hz */
    int channels;
    int frame_ms;
};

struct voice_msg {
    enum voice_msg_type type;
    char session_id[VOICE_SESSION_LEN + 1]; /* "" when the message has none */
    struct voice_audio audio;               /* hello: the uplink format */
    enum voice_listen_state listen;
    enum voice_listen_mode mode;
    char text[VOICE_TEXT_LEN + 1]; /* listen detect: the wake word; abort: the reason */
};

/* Parse LEN bytes of JSON into *M. 0, or -1 with a sentence in WHY. */
int voice_msg_parse(const char *json, size_t len, struct voice_msg *m, char *why, size_t whylen);

const char *voice_listen_state_name(enum voice_listen_state s);
const char *voice_listen_mode_name(enum voice_listen_mode m);

/* What the hello reply tells the device. */
struct voice_hello_reply {
    const char *session_id;
    const char *server; /* the public UDP address devices reach */
    uint16_t port;
    uint8_t key[VOICE_KEY_LEN];
    uint8_t nonce[VOICE_HDR_LEN];
    struct voice_audio downlink;
};

/* Each returns a malloc'd NUL-terminated JSON text, or NULL (out of memory). */
char *voice_hello_json(const struct voice_hello_reply *r);
char *voice_goodbye_json(const char *session_id);
/* An alert the device shows on its screen (a refused hello, say). */
char *voice_alert_json(const char *message);
/* stt (what the device heard) and tts (STATE start, sentence_start, stop). */
char *voice_stt_json(const char *session_id, const char *text);
char *voice_tts_json(const char *session_id, const char *state, const char *text);

/* ---- the device side: the server's hello reply as the firmware reads it
 * (ParseServerHello): transport "udp"; udp.server a string, udp.port in
 * 1..65535, udp.key and udp.nonce 32 hex digits each; session_id optional;
 * audio_params optional (the downlink format, 24000 Hz 60 ms when absent). */
struct voice_server_hello {
    char session_id[VOICE_SESSION_LEN + 1]; /* "" when the reply has none */
    char server[256];
    uint16_t port;
    uint8_t key[VOICE_KEY_LEN];
    uint8_t nonce[VOICE_HDR_LEN];
    struct voice_audio downlink;
};

/* Parse LEN bytes of JSON, a message of type "hello", into *H. 0, or -1
 * with a sentence in WHY. */
int voice_server_hello_parse(const char *json, size_t len, struct voice_server_hello *h, char *why,
                             size_t whylen);

#endif
