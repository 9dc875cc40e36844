/* mqfork-load.h - the load generator's shared types: its options, the
 * payloads, the bookkeeping of requests, the MQTT session both modes share,
 * and what each of its files offers the others (tools/mqfork-load*.c). */
#ifndef MQFORK_TOOLS_LOAD_H
#define MQFORK_TOOLS_LOAD_H

#include <mosquitto.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EXIT_CONN       1
#define EXIT_USAGE      2
#define TOPIC_MAX       1024
#define NS              1000000000ull
#define CONNECT_WAIT_NS (5 * NS)
#define MISC_EVERY_NS   (NS / 2)
#define BURST_MAX       256 /* publishes per loop turn, so replies are still read */
#define READS_PER_WAKE  512 /* packets read per wake-up before publishing again */
#define CORR_LEN        8

struct opts {
    const char *host;
    int port;
    const char *user, *pass;
    const char *cafile, *cert, *key;
    int version;                /* MQTT_PROTOCOL_V5 or MQTT_PROTOCOL_V311 */
    const char *topic;          /* request topic (template), or the echo server's filter */
    const char *reply;          /* reply filter */
    const char *errors;         /* errors topic filter, optional */
    const char *response_topic; /* v5 response topic (template), optional */
    double rate;                /* messages/s, 0 = window-limited */
    long window;
    uint64_t count; /* 0 = until duration */
    double duration;
    const char *file;
    bool raw;
    long size;
    const char *message;
    int qos;
    long devices;
    double interval, timeout;
    bool json, echo;
    int keepalive;
};

/* The request payloads, cycled through in order. */
struct payloads {
    unsigned char *buf;
    size_t *off, *len;
    size_t n;
};

/* Per-request bookkeeping. sent_ns[seq] is the publish time, 0 once the
 * request has its outcome, so a second reply is recognised as a duplicate. */
struct track {
    uint64_t *sent_ns;
    size_t cap;
    uint64_t sent, answered, errors, errors_matched, dups, unmatched;
    uint64_t fifo_next; /* oldest request not yet answered, for 3.1.1 */
    uint64_t *lat_ns;
    size_t lat_len, lat_cap;
    uint64_t t_last_send, t_first_answer, t_last_answer, t_progress;
};

/* The MQTT session, shared by both modes; app is the mode's own state. */
struct conn {
    const struct opts *o;
    struct mosquitto *m;
    bool connacked, lost;
    int connack_rc;
    int subacks_wanted;
    bool sub_refused;
    int sigfd;
    bool stop;
    uint64_t last_misc;
    void *app;
};

struct load {
    struct conn *c;
    const struct opts *o;
    struct payloads pl;
    struct track tr;
    bool fifo;
    uint64_t t0;
};

struct echo {
    const struct opts *o;
    uint64_t answered, skipped;
};

struct report {
    uint64_t sent, answered, lost, errors, dups, unmatched;
    double elapsed, send_rate, answer_rate, p50, p99, max;
    const char *error;
};

/* ---- options, usage, main (mqfork-load.c) */

/* One line to stderr, prefixed "mqfork-load: ". */
void load_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Replace every %d in tmpl by the device index (or by text when it is not
 * NULL); false when it does not fit in out. */
bool expand(const char *tmpl, long dev, const char *text, char *out, size_t size);

/* ---- the MQTT session (mqfork-load-conn.c) */

/* A client for o, its callbacks set (conn c is theirs); false on failure. */
bool conn_setup(struct conn *c, const struct opts *o);
/* Connect, and subscribe to FILTERS before anything is published. */
bool conn_open(struct conn *c, const char *const filters[], int nfilters);
/* One turn of the loop, waiting at most until DEADLINE (0: none); false
 * once the connection is gone. */
bool conn_step(struct conn *c, uint64_t deadline);

/* ---- the load mode (mqfork-load-run.c) */

int main_load(const struct opts *o);
/* Requests sent and not yet given an outcome. */
uint64_t track_outstanding(const struct track *t);

/* ---- the report (mqfork-load-report.c) */

/* Interim line: totals so far, and rates and latency over the last interval. */
struct interim {
    uint64_t next, last_t, last_sent, last_answered;
    size_t last_lat;
};

void make_report(struct load *l, struct report *r, uint64_t end);
void print_json(const struct load *l, const struct report *r);
void print_text(const struct load *l, const struct report *r);
void print_interim(struct load *l, struct interim *iv, uint64_t now);

/* ---- the echo server (mqfork-load-echo.c) */

int main_echo(const struct opts *o);

#endif
