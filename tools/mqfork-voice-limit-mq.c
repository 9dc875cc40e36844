/* mqfork-voice-limit-mq.c - the sessions mqfork-voice-limit makes up for
 * the bare relay, and its MQTT client: libmosquitto driven by poll in the
 * mode's own loop, so a mode waits on its socket, a signal and the client
 * at once. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "shm/clock.h"
#include "tools/mqfork-voice-limit.h"

_Noreturn void die(const char *what)
{
    fprintf(stderr, "mqfork-voice-limit: %s\n", what);
    exit(1);
}

/* ---- sessions ------------------------------------------------------------- */

uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Session I of the bare relay, the same in the relay and in blast --bare:
 * key and nonce from its index (ssrc I + 1: unique). */
void bench_session(struct session *s, long i)
{
    uint64_t x = (uint64_t)i * 7919u + 1, w;
    uint8_t key[VOICE_KEY_LEN];
    for (int j = 0; j < VOICE_KEY_LEN; j += 8) {
        w = splitmix(&x);
        memcpy(key + j, &w, 8);
        w = splitmix(&x);
        memcpy(s->nonce + j, &w, 8);
    }
    s->ssrc = (uint32_t)i + 1;
    s->nonce[0] = VOICE_TYPE;
    s->nonce[1] = 0;
    for (int j = 0; j < 4; j++)
        s->nonce[4 + j] = (uint8_t)(s->ssrc >> (24 - 8 * j));
    if (voice_cipher_init(&s->cipher, key) < 0)
        die("AES-128-CTR");
    s->ready = true;
}

/* ---- MQTT, without libmosquitto's thread ----------------------------------- */

static void on_connect(struct mosquitto *m, void *obj, int rc)
{
    struct mq *q = obj;
    q->connected = rc == 0;
    q->lost = rc != 0;
}

static void on_disconnect(struct mosquitto *m, void *obj, int rc)
{
    ((struct mq *)obj)->lost = true;
}

static void on_subscribe(struct mosquitto *m, void *obj, int mid, int n, const int *granted)
{
    ((struct mq *)obj)->subacks--;
}

int sigfd = -1; /* SIGINT and SIGTERM, once signals() ran */
bool stopping;

/* Wait up to TIMEOUT_MS for the socket, a signal or FD (if not -1: the
 * caller reads it), then let libmosquitto read what came (FIONREAD bounds
 * it: one loop_read may take one packet), write and keep alive. Returns
 * FD's revents. */
short mq_step(struct mq *q, int timeout_ms, int fd)
{
    int s = mosquitto_socket(q->m), rc = MOSQ_ERR_SUCCESS, avail = 0;
    struct pollfd p[3] = {{.fd = s, .events = POLLIN | (mosquitto_want_write(q->m) ? POLLOUT : 0)},
                          {.fd = fd, .events = POLLIN},
                          {.fd = sigfd, .events = POLLIN}};
    if (s < 0) {
        q->lost = true;
        return 0;
    }
    if (poll(p, 3, timeout_ms) < 0 && errno != EINTR)
        die("poll");
    if (p[2].revents & POLLIN)
        stopping = true;
    if (p[0].revents & (POLLIN | POLLERR | POLLHUP))
        for (int i = 0; i < 4096 && rc == MOSQ_ERR_SUCCESS; i++) {
            rc = mosquitto_loop_read(q->m, 1);
            if (ioctl(s, FIONREAD, &avail) < 0 || avail <= 0)
                break;
        }
    if (rc == MOSQ_ERR_SUCCESS && mosquitto_want_write(q->m))
        rc = mosquitto_loop_write(q->m, 64);
    if (rc == MOSQ_ERR_SUCCESS)
        rc = mosquitto_loop_misc(q->m);
    if (rc != MOSQ_ERR_SUCCESS)
        q->lost = true;
    return fd >= 0 ? p[1].revents : 0;
}

void mq_subscribe(struct mq *q, const char *filter)
{
    uint64_t until = mono_ns() + 10 * NS;
    q->subacks = 1;
    mosquitto_subscribe(q->m, NULL, filter, 0);
    while (q->subacks > 0 && !q->lost && mono_ns() < until)
        mq_step(q, 10, -1);
    if (q->subacks > 0)
        die("no SUBACK from the broker");
}

void mq_open(struct mq *q, const struct lopts *o, const char *filter)
{
    if (!(q->m = mosquitto_new(NULL, true, q)))
        die("mosquitto_new");
    mosquitto_int_option(q->m, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_connect_callback_set(q->m, on_connect);
    mosquitto_disconnect_callback_set(q->m, on_disconnect);
    mosquitto_subscribe_callback_set(q->m, on_subscribe);
    if (mosquitto_connect(q->m, o->host, (int)o->port, 60) != MOSQ_ERR_SUCCESS)
        die("cannot connect to the broker");
    uint64_t until = mono_ns() + 10 * NS;
    while (!q->connected && !q->lost && mono_ns() < until)
        mq_step(q, 10, -1);
    if (!q->connected)
        die("no CONNACK from the broker");
    if (filter)
        mq_subscribe(q, filter);
}

/* "<prefix><n>" somewhere in TOPIC as a whole level: session n - 1, or -1. */
long session_of(const char *topic, const char *prefix, long n)
{
    size_t pl = strlen(prefix);
    for (const char *t = topic; t; t = strchr(t, '/') ? strchr(t, '/') + 1 : NULL) {
        if (strncmp(t, prefix, pl) != 0)
            continue;
        char *end;
        long i = strtol(t + pl, &end, 10);
        if (end != t + pl && (*end == '/' || !*end) && i >= 1 && i <= n)
            return i - 1;
    }
    return -1;
}

void topic_of(char *out, size_t len, const char *tmpl, const char *device)
{
    const char *at = strstr(tmpl, "{device}");
    if (!at)
        die("a topic template needs {device}");
    snprintf(out, len, "%.*s%s%s", (int)(at - tmpl), tmpl, device, at + 8);
}
