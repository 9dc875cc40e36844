/* mqfork-voice-limit.h - what the modes of mqfork-voice-limit share: its
 * options, the sessions it makes up or gets by hello, and an MQTT client
 * driven by poll without libmosquitto's thread (mqfork-voice-limit-mq.c). */
#ifndef MQFORK_TOOLS_VOICE_LIMIT_H
#define MQFORK_TOOLS_VOICE_LIMIT_H

#include <mosquitto.h>
#include <stdbool.h>
#include <stdint.h>

#include "proto/voice_udp.h"
#include "tools/mqfork-device.h"

#define NS 1000000000ull

struct lopts {
    const char *mode, *host, *audio, *prefix, *topic, *filter;
    long port, udp_port, sessions, window;
    double seconds;
    bool bare;
};

struct session {
    char id[DEV_ID_MAX];
    uint8_t nonce[VOICE_HDR_LEN];
    struct voice_cipher cipher;
    uint32_t ssrc, seq, checked; /* seq: last sent or accepted; checked: relayed seen */
    char topic[DEV_TOPIC_MAX];   /* relay: where its packets go */
    bool ready;
};

struct mq {
    struct mosquitto *m;
    bool connected, lost;
    int subacks;
};

extern int sigfd; /* SIGINT and SIGTERM, once signals_fd() ran */
extern bool stopping;

_Noreturn void die(const char *what);
uint64_t splitmix(uint64_t *x);
/* Session I of the bare relay, the same in the relay and in blast --bare. */
void bench_session(struct session *s, long i);
/* Wait up to TIMEOUT_MS for the client's socket, a signal or FD (-1: none),
 * then read, write and keep alive. FD's revents. */
short mq_step(struct mq *q, int timeout_ms, int fd);
void mq_subscribe(struct mq *q, const char *filter);
void mq_open(struct mq *q, const struct lopts *o, const char *filter);
/* "<prefix><n>" somewhere in TOPIC as a whole level: session n - 1, or -1. */
long session_of(const char *topic, const char *prefix, long n);
void topic_of(char *out, size_t len, const char *tmpl, const char *device);
/* Mode answer (mqfork-voice-limit-answer.c). */
int run_answer(const struct lopts *o);

#endif
