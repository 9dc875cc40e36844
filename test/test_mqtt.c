/* test_mqtt.c - mqforkd end to end through a real mosquitto: echo round
 * trip, order within a stream, error reports for bad input, reply
 * templates with $share, two daemons sharing a route, v5 response topic and
 * correlation data, the broker killed and restarted under load, TLS, and a
 * wrong password. The daemon is the real binary; the client is libmosquitto.
 *
 *   test_mqtt MQFORKD */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <opus.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conf/config.h"
#include "proto/job.h"
#include "shm/segment.h"
#include "shm/statread.h"
#include "test/broker.h"
#include "test/t.h"

static const char *mqforkd;

/* ---- a test client: everything it receives, with a condition to wait on - */

#define MAX_MSGS 20000

struct msg {
    char topic[128];
    char payload[2048]; /* one 60 ms frame of 16 kHz mono PCM is 1920 bytes */
    size_t len;
    char corr[64];
    size_t corr_len;
};

struct client {
    struct mosquitto *mosq;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct msg *msgs;
    size_t count;
    bool connected;
};

static void on_message(struct mosquitto *m, void *ctx, const struct mosquitto_message *mm,
                       const mosquitto_property *props)
{
    struct client *c = ctx;
    pthread_mutex_lock(&c->lock);
    if (c->count < MAX_MSGS) {
        struct msg *x = &c->msgs[c->count++];
        snprintf(x->topic, sizeof(x->topic), "%s", mm->topic);
        x->len = (size_t)mm->payloadlen < sizeof(x->payload) - 1 ? (size_t)mm->payloadlen
                                                                 : sizeof(x->payload) - 1;
        if (x->len)
            memcpy(x->payload, mm->payload, x->len);
        x->payload[x->len] = '\0';
        void *corr = NULL;
        uint16_t clen = 0;
        x->corr_len = 0;
        if (mosquitto_property_read_binary(props, MQTT_PROP_CORRELATION_DATA, &corr, &clen,
                                           false) &&
            clen < sizeof(x->corr)) {
            memcpy(x->corr, corr, clen);
            x->corr_len = clen;
        }
        free(corr);
    }
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static void on_connect(struct mosquitto *m, void *ctx, int rc, int flags,
                       const mosquitto_property *p)
{
    struct client *c = ctx;
    pthread_mutex_lock(&c->lock);
    c->connected = rc == 0;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static void client_open(struct client *c, const struct broker *b, const char *id)
{
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    c->msgs = calloc(MAX_MSGS, sizeof(*c->msgs));
    c->mosq = mosquitto_new(id, true, c);
    mosquitto_int_option(c->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_int_option(c->mosq, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_message_v5_callback_set(c->mosq, on_message);
    mosquitto_connect_v5_callback_set(c->mosq, on_connect);
    int rc = mosquitto_connect(c->mosq, "127.0.0.1", b->port, 30);
    T_REQUIRE(rc == MOSQ_ERR_SUCCESS, "test client connects to port %d: %s", b->port,
              rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
    mosquitto_loop_start(c->mosq);
}

static void client_close(struct client *c)
{
    mosquitto_disconnect(c->mosq);
    mosquitto_loop_stop(c->mosq, true);
    mosquitto_destroy(c->mosq);
    free(c->msgs);
}

static void sub(struct client *c, const char *filter)
{
    /* SUBACK is not waited for: each test first waits for the daemon's
     * retained "online" status on a subscription made before it. */
    mosquitto_subscribe(c->mosq, NULL, filter, 1);
}

static void pub(struct client *c, const char *topic, const void *p, size_t len)
{
    mosquitto_publish(c->mosq, NULL, topic, (int)len, p, 0, false);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Messages on TOPIC (NULL = any) received so far. */
static size_t count_on(struct client *c, const char *topic, const char *contains)
{
    size_t n = 0;
    for (size_t i = 0; i < c->count; i++)
        n += (!topic || strcmp(c->msgs[i].topic, topic) == 0) &&
             (!contains || strstr(c->msgs[i].payload, contains));
    return n;
}

/* Wait until PRED holds, woken by each arriving message. */
static bool client_wait(struct client *c, bool (*pred)(struct client *, void *), void *arg,
                        double limit_s)
{
    double end = now_s() + limit_s;
    pthread_mutex_lock(&c->lock);
    while (!pred(c, arg)) {
        double left = end - now_s();
        if (left <= 0)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double t = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 + (left < 0.1 ? left : 0.1);
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&c->cond, &c->lock, &ts);
    }
    bool ok = pred(c, arg);
    pthread_mutex_unlock(&c->lock);
    return ok;
}

struct want {
    const char *topic_prefix;
    const char *contains;
    size_t n;
};

static bool have(struct client *c, void *arg)
{
    struct want *w = arg;
    size_t n = 0;
    for (size_t i = 0; i < c->count; i++)
        n += strncmp(c->msgs[i].topic, w->topic_prefix, strlen(w->topic_prefix)) == 0 &&
             (!w->contains || strstr(c->msgs[i].payload, w->contains));
    return n >= w->n;
}

static bool wait_for(struct client *c, const char *prefix, const char *contains, size_t n,
                     double limit_s)
{
    struct want w = {prefix, contains, n};
    return client_wait(c, have, &w, limit_s);
}

/* ---- the daemon ---------------------------------------------------------- */

struct daemon {
    int workers; /* 0 = 2 */
    int slab_mb; /* 0 = 8 */
    struct proc p;
    char dir[64], conf[96], instance[48];
};

static void daemon_start(struct daemon *d, const struct broker *b, const char *name,
                         const char *extra_broker, const char *routes)
{
    d->workers = d->workers ? d->workers : 2;
    d->slab_mb = d->slab_mb ? d->slab_mb : 8;
    snprintf(d->dir, sizeof(d->dir), "/tmp/mqtt-test-XXXXXX");
    T_REQUIRE(mkdtemp(d->dir), "temp dir");
    snprintf(d->conf, sizeof(d->conf), "%s/d.yaml", d->dir);
    snprintf(d->instance, sizeof(d->instance), "%s-%d", name, (int)getpid());
    FILE *f = fopen(d->conf, "w");
    fprintf(f,
            "instance: %s\nbroker:\n  host: 127.0.0.1\n  port: %d\n  client_id: %s\n%s"
            "workers:\n  min: %d\n  max: %d\n  inflight: %d\nlimits:\n  max_payload: 1024\n"
            "  slab_mb: %d\n"
            "errors:\n  topic: err/%s\nroutes:\n%s",
            d->instance, b->port, d->instance,
            extra_broker ? extra_broker : "  reconnect_min_s: 0.2\n  reconnect_max_s: 1\n",
            d->workers, d->workers, d->workers == 1 ? 1 : 32, d->slab_mb, d->instance, routes);
    fclose(f);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "exec %s -c %s 2>&1", mqforkd, d->conf);
    char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    T_REQUIRE(proc_spawn(&d->p, argv, true) == 0, "daemon started");
}

static bool daemon_alive(struct daemon *d)
{
    int st;
    return proc_wait(&d->p, 0, &st) < 0;
}

/* Read the daemon's log until a line containing WHAT, or LIMIT passes. */
static bool daemon_says(struct daemon *d, const char *what, int limit_ms)
{
    char line[1024];
    double end = now_s() + limit_ms / 1000.0;
    while (now_s() < end) {
        if (proc_line(&d->p, line, sizeof(line), 100) < 0)
            continue;
        if (strstr(line, what))
            return true;
    }
    return false;
}

/* Read the daemon's log until a line containing both A and B. */
static bool daemon_says_both(struct daemon *d, const char *a, const char *b, int limit_ms)
{
    char line[1024];
    double end = now_s() + limit_ms / 1000.0;
    while (now_s() < end) {
        if (proc_line(&d->p, line, sizeof(line), 100) < 0)
            continue;
        if (strstr(line, a) && strstr(line, b))
            return true;
    }
    return false;
}

/* The daemon's figures these tests look at, from the engine's block and
 * the MQTT client's, by the names mqforkstat prints. */
struct daemon_figures {
    uint64_t accepted, completed;
    uint64_t refused[JOB_STATUS_COUNT]; /* jobs_refused.<status> */
    uint64_t mqtt_dropped, mqtt_msgs_out, mqtt_reconnects;
    uint32_t mqtt_queue;
};

/* The daemon's figures, read from its segment (zeros if absent). */
static struct daemon_figures daemon_stats(const struct daemon *d)
{
    struct segment seg;
    struct daemon_figures g = {0};
    uint64_t queue = 0;
    if (seg_attach(&seg, d->instance, NULL) == 0) {
        stats_value(&seg, "engine", "jobs_accepted", &g.accepted);
        stats_value(&seg, "engine", "jobs_completed", &g.completed);
        for (unsigned st = 0; st < JOB_STATUS_COUNT; st++) {
            char name[64];
            snprintf(name, sizeof(name), "jobs_refused.%s", job_status_name(st));
            stats_value(&seg, "engine", name, &g.refused[st]);
        }
        stats_value(&seg, "mqtt", "mqtt_reconnects", &g.mqtt_reconnects);
        stats_value(&seg, "mqtt", "mqtt_dropped", &g.mqtt_dropped);
        stats_value(&seg, "mqtt", "mqtt_messages_out", &g.mqtt_msgs_out);
        stats_value(&seg, "mqtt", "mqtt_queue", &queue);
        g.mqtt_queue = (uint32_t)queue;
        seg_close(&seg, false);
    }
    return g;
}

static uint64_t daemon_accepted(const struct daemon *d)
{
    return daemon_stats(d).accepted;
}

static uint64_t daemon_completed(const struct daemon *d)
{
    return daemon_stats(d).completed;
}

/* Poll the daemon's statistics until COUNT(d) reaches N. */
static bool wait_count(const struct daemon *d, uint64_t (*count)(const struct daemon *), uint64_t n,
                       double limit_s)
{
    double end = now_s() + limit_s;
    while (count(d) < n)
        if (now_s() > end)
            return false;
        else
            usleep(5000);
    return true;
}

static bool wait_accepted(const struct daemon *d, uint64_t n, double limit_s)
{
    return wait_count(d, daemon_accepted, n, limit_s);
}

static void daemon_stop(struct daemon *d)
{
    proc_stop(&d->p, SIGTERM);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", d->dir);
    T_CHECK(system(cmd) == 0, "cleanup");
}

static bool daemon_online(struct client *c, struct daemon *d)
{
    char topic[96];
    snprintf(topic, sizeof(topic), "mqfork/%s/status", d->instance);
    return wait_for(c, topic, "online", 1, 10);
}

static const char echo_routes[] = "  - name: echo\n"
                                  "    subscribe: e/+/in\n"
                                  "    job: test.echo\n"
                                  "    reply: e/{1}/out\n"
                                  "    reply_allow: my/#\n"
                                  "  - name: ordered\n"
                                  "    subscribe: o/+/in\n"
                                  "    job: test.echo\n"
                                  "    stream: '{1}'\n"
                                  "    reply: o/{1}/out\n"
                                  "  - name: spin\n"
                                  "    subscribe: s/+/in\n"
                                  "    job: test.spin\n"
                                  "    reply: s/{1}/out\n"
                                  "    retries: 5\n"
                                  "  - name: shared\n"
                                  "    subscribe: $share/grp/sh/+/in\n"
                                  "    job: test.echo\n"
                                  "    reply: sh/{1}/out\n";

/* ---- tests ----------------------------------------------------------------- */

static void test_echo_order_errors(struct broker *b)
{
    struct client c;
    struct daemon d = {0};
    client_open(&c, b, "t-echo");
    sub(&c, "#");
    daemon_start(&d, b, "echo", NULL, echo_routes);
    T_REQUIRE(daemon_online(&c, &d), "daemon online");

    enum { N = 300 };
    for (int i = 0; i < N; i++) {
        char topic[32], payload[32];
        snprintf(topic, sizeof(topic), "e/d%d/in", i % 10);
        snprintf(payload, sizeof(payload), "msg-%d", i);
        pub(&c, topic, payload, strlen(payload));
    }
    T_CHECK(wait_for(&c, "e/", "msg-", 2 * N, 10), "every echo came back");
    pthread_mutex_lock(&c.lock);
    size_t replies = 0, mismatched = 0;
    for (size_t i = 0; i < c.count; i++) {
        const struct msg *m = &c.msgs[i];
        int dev, n;
        if (sscanf(m->topic, "e/d%d/", &dev) == 1 && strstr(m->topic, "/out")) {
            replies++;
            mismatched += sscanf(m->payload, "msg-%d", &n) != 1 || n % 10 != dev;
        }
    }
    pthread_mutex_unlock(&c.lock);
    T_CHECK(replies == N && mismatched == 0, "%zu replies (want %d), %zu on the wrong topic",
            replies, N, mismatched);

    /* order within a stream: replies of each stream come in arrival order */
    enum { PER = 50, STREAMS = 4 };
    for (int i = 0; i < PER * STREAMS; i++) {
        char topic[32], payload[16];
        snprintf(topic, sizeof(topic), "o/s%d/in", i % STREAMS);
        snprintf(payload, sizeof(payload), "%d", i / STREAMS);
        pub(&c, topic, payload, strlen(payload));
    }
    T_CHECK(wait_for(&c, "o/", NULL, 2 * PER * STREAMS, 10), "stream jobs answered");
    pthread_mutex_lock(&c.lock);
    int last[STREAMS] = {-1, -1, -1, -1}, disorder = 0;
    for (size_t i = 0; i < c.count; i++) {
        int s, n;
        if (sscanf(c.msgs[i].topic, "o/s%d/", &s) == 1 && strstr(c.msgs[i].topic, "/out") &&
            s >= 0 && s < STREAMS && sscanf(c.msgs[i].payload, "%d", &n) == 1) {
            disorder += n != last[s] + 1;
            last[s] = n;
        }
    }
    pthread_mutex_unlock(&c.lock);
    T_CHECK(disorder == 0, "%d replies out of their stream's order", disorder);

    /* bad input: each gets its error report and the daemon stays up */
    char big[2000];
    memset(big, 'x', sizeof(big));
    char err_topic[96];
    snprintf(err_topic, sizeof(err_topic), "err/%s", d.instance);
    pub(&c, "e/big/in", big, sizeof(big));
    pub(&c, "s/bad/in", "not-a-number", 12);
    pub(&c, "s/empty/in", "", 0);
    T_CHECK(wait_for(&c, err_topic, "\"error\":\"too_large\"", 1, 5), "too_large reported");
    T_CHECK(wait_for(&c, err_topic, "\"error\":\"bad_input\"", 2, 5), "bad_input reported twice");
    T_CHECK(wait_for(&c, err_topic, "\"route\":\"spin\"", 2, 5), "reports name the route");
    char long_topic[256] = "o/";
    memset(long_topic + 2, 'k', 200); /* a stream key of 200 bytes: over the 128 allowed */
    strcpy(long_topic + 202, "/in");
    pub(&c, long_topic, "x", 1);
    T_CHECK(wait_for(&c, err_topic, "stream key made from the topic is too long", 1, 5),
            "a too long stream key is reported");
    pub(&c, "e/after/in", "still-here", 10);
    T_CHECK(wait_for(&c, "e/after/out", "still-here", 1, 5), "daemon answers after bad input");
    T_CHECK(daemon_alive(&d), "daemon alive");
    daemon_stop(&d);
    T_CHECK(wait_for(&c, "mqfork/", "offline", 1, 5), "offline status on a clean stop");
    client_close(&c);
}

/* A crash, a timeout and a quarantine are each logged with the job's id,
 * its route and the topic it came on: what an operator greps for. */
static void test_crash_lines(struct broker *b)
{
    struct client c;
    struct daemon d = {0};
    client_open(&c, b, "t-crash");
    sub(&c, "mqfork/#");
    daemon_start(&d, b, "crash", NULL,
                 "  - name: boom\n    subscribe: b/+/in\n    job: test.crash\n    retries: 0\n"
                 "  - name: stuck\n    subscribe: h/+/in\n    job: test.hang\n    retries: 0\n"
                 "    timeout_ms: 300\n");
    T_REQUIRE(daemon_online(&c, &d), "daemon online");
    pub(&c, "b/x1/in", "segv", 4);
    T_CHECK(daemon_says_both(&d, "crashed: signal 11 running job ", "(route boom, topic b/x1/in)",
                             15000),
            "the crash line names the job, its route and topic");
    T_CHECK(daemon_says_both(&d, "(route boom, topic b/x1/in) quarantined: crashed: signal 11",
                             "job ", 15000),
            "the quarantine line names the job, its route and topic");
    pub(&c, "h/x2/in", "wait", 4);
    T_CHECK(daemon_says_both(&d, "(route stuck, topic h/x2/in) ran past its 300 ms timeout",
                             ": job ", 15000),
            "the timeout line names the job, its route and topic");
    T_CHECK(daemon_alive(&d), "daemon alive");
    daemon_stop(&d);
    client_close(&c);
}

/* Whether a message on TOPIC came with correlation data CORR. */
static bool corr_on(struct client *c, const char *topic, const char *corr)
{
    size_t len = strlen(corr);
    bool found = false;
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->count && !found; i++)
        found = strcmp(c->msgs[i].topic, topic) == 0 && c->msgs[i].corr_len == len &&
                memcmp(c->msgs[i].corr, corr, len) == 0;
    pthread_mutex_unlock(&c->lock);
    return found;
}

/* MQTT v5: a response topic the route allows (reply_allow) overrides its
 * reply; correlation data comes back with the reply. */
static void test_response_topic(struct broker *b)
{
    struct client c;
    struct daemon d = {0};
    client_open(&c, b, "t-v5");
    sub(&c, "#");
    daemon_start(&d, b, "v5", NULL, echo_routes);
    T_REQUIRE(daemon_online(&c, &d), "daemon online");
    mosquitto_property *props = NULL;
    mosquitto_property_add_string(&props, MQTT_PROP_RESPONSE_TOPIC, "my/answers");
    mosquitto_property_add_binary(&props, MQTT_PROP_CORRELATION_DATA, "corr-42", 7);
    mosquitto_publish_v5(c.mosq, NULL, "e/x/in", 5, "hello", 0, false, props);
    mosquitto_property_free_all(&props);
    T_CHECK(wait_for(&c, "my/answers", "hello", 1, 5), "reply on the response topic");
    T_CHECK(corr_on(&c, "my/answers", "corr-42"), "correlation data copied to the reply");
    T_CHECK(count_on(&c, "e/x/out", NULL) == 0, "nothing on the route's own reply topic");
    daemon_stop(&d);
    client_close(&c);
}

/* Publish with an MQTT v5 response topic (NULL: none) and correlation data. */
static void pub_v5(struct client *c, const char *topic, const char *payload, int qos,
                   const char *response_topic, const char *corr)
{
    mosquitto_property *props = NULL;
    if (response_topic)
        mosquitto_property_add_string(&props, MQTT_PROP_RESPONSE_TOPIC, response_topic);
    if (corr)
        mosquitto_property_add_binary(&props, MQTT_PROP_CORRELATION_DATA, corr,
                                      (uint16_t)strlen(corr));
    int rc = mosquitto_publish_v5(c->mosq, NULL, topic, (int)strlen(payload), payload, qos, false,
                                  props);
    T_CHECK(rc == MOSQ_ERR_SUCCESS, "publish on %.40s: %s", topic, mosquitto_strerror(rc));
    mosquitto_property_free_all(&props);
}

/* "x/x/.../x" with N levels after PREFIX, malloc'd. */
static char *deep_topic(const char *prefix, size_t n)
{
    size_t plen = strlen(prefix);
    char *s = malloc(plen + 2 * n + 1);
    T_REQUIRE(s, "malloc");
    memcpy(s, prefix, plen);
    for (size_t i = 0; i < n; i++)
        memcpy(s + plen + 2 * i, "x/", 2);
    s[plen + 2 * n - 1] = '\0';
    return s;
}

/* Messages the daemon's routes refused as bad_input. */
static uint64_t daemon_refused_bad_input(const struct daemon *d)
{
    return daemon_stats(d).refused[JOB_E_BAD_INPUT];
}

static const char topic_routes[] = "  - name: echo\n"
                                   "    subscribe: e/+/in\n"
                                   "    qos: 1\n"
                                   "    job: test.echo\n"
                                   "    reply: e/{1}/out\n"
                                   "    reply_allow: '#'\n"
                                   "  - name: deep\n"
                                   "    subscribe: deep/#\n"
                                   "    qos: 1\n"
                                   "    job: test.echo\n"
                                   "    reply: deep-out/x/{1}\n";

/* Topics the broker would refuse (issue #9): a response topic of 251
 * levels, response topics with wildcards, and a '#' route whose reply has
 * more levels than the broker takes. Each is refused as bad_input with a
 * report and never published: a broker answers such a PUBLISH by closing
 * the connection, and libmosquitto re-sends a QoS 1 one after every
 * reconnect. Later requests are answered and the daemon never reconnected. */
static void test_bad_reply_topics(struct broker *b)
{
    struct client c;
    struct daemon d = {0};
    client_open(&c, b, "t-topics");
    sub(&c, "#");
    daemon_start(&d, b, "topics", NULL, topic_routes);
    T_REQUIRE(daemon_online(&c, &d), "daemon online");
    char err_topic[96];
    snprintf(err_topic, sizeof(err_topic), "err/%s", d.instance);

    char *deep = deep_topic("", 251); /* "x/x/.../x": 250 '/', mosquitto allows 200 */
    pub_v5(&c, "e/a/in", "to-251-levels", 1, deep, "c-251");
    free(deep);
    T_CHECK(wait_for(&c, err_topic, "has more than 128 levels", 1, 5),
            "a response topic of 251 levels is reported");
    pub_v5(&c, "e/a/in", "to-plus", 1, "r/+/x", "c-plus");
    pub_v5(&c, "e/a/in", "to-hash", 1, "r/#", "c-hash");
    T_CHECK(wait_for(&c, err_topic, "contains the wildcard", 2, 5),
            "response topics with '+' and '#' are reported");
    /* 201 levels reach the daemon; its reply would have 202 */
    deep = deep_topic("deep/", 200);
    pub_v5(&c, deep, "deep-reply", 1, NULL, NULL);
    free(deep);
    T_CHECK(wait_for(&c, err_topic, "\"route\":\"deep\"", 1, 5),
            "a '#' reply with too many levels is reported");
    T_CHECK(count_on(&c, err_topic, "\"error\":\"bad_input\"") == 4,
            "all 4 reported as bad_input (%zu)", count_on(&c, err_topic, "bad_input"));

    enum { AFTER = 20 };
    for (int i = 0; i < AFTER; i++)
        pub_v5(&c, "e/after/in", "after", 1, NULL, NULL);
    T_CHECK(wait_for(&c, "e/after/out", "after", AFTER, 10), "later requests are answered (%zu)",
            count_on(&c, "e/after/out", NULL));
    T_CHECK(wait_count(&d, daemon_refused_bad_input, 4, 2) && daemon_refused_bad_input(&d) == 4,
            "4 refusals counted (%lu)", (unsigned long)daemon_refused_bad_input(&d));
    T_CHECK(daemon_stats(&d).mqtt_reconnects == 0, "never disconnected (%lu reconnects)",
            (unsigned long)daemon_stats(&d).mqtt_reconnects);
    T_CHECK(count_on(&c, "deep-out/", NULL) == 0 && count_on(&c, "r/", NULL) == 0,
            "nothing published to the refused topics");
    T_CHECK(daemon_alive(&d), "daemon alive");
    daemon_stop(&d);
    client_close(&c);
}

static const char allow_routes[] = "  - name: open\n"
                                   "    subscribe: open/+/in\n"
                                   "    job: test.echo\n"
                                   "    reply: open/{1}/out\n"
                                   "  - name: bound\n"
                                   "    subscribe: dev/+/req\n"
                                   "    job: test.echo\n"
                                   "    reply: dev/{1}/res\n"
                                   "    reply_allow: ['resp/{1}/#', shared/answers]\n";

/* The response topic as a confused deputy (issue #9, finding 2): the broker
 * may forbid a client to publish on victim/#, but not the daemon. A route
 * without reply_allow ignores response topics and answers on its reply
 * topic; a route with it uses a response topic only when one of its
 * filters, {1} filled from the request topic, matches; any other is refused
 * as bad_input and nothing is published there. */
static void test_reply_allow(struct broker *b)
{
    struct client c;
    struct daemon d = {0};
    client_open(&c, b, "t-allow");
    sub(&c, "#");
    daemon_start(&d, b, "allow", NULL, allow_routes);
    T_REQUIRE(daemon_online(&c, &d), "daemon online");
    char err_topic[96];
    snprintf(err_topic, sizeof(err_topic), "err/%s", d.instance);

    pub_v5(&c, "open/a/in", "ignored", 1, "victim/cmd", "c-open");
    T_CHECK(wait_for(&c, "open/a/out", "ignored", 1, 5), "no reply_allow: the route's reply");
    T_CHECK(corr_on(&c, "open/a/out", "c-open"), "with the correlation data");
    pub_v5(&c, "dev/alice/req", "mine", 1, "resp/alice/x", "c-mine");
    T_CHECK(wait_for(&c, "resp/alice/x", "mine", 1, 5), "a response topic under resp/{1}/#");
    T_CHECK(corr_on(&c, "resp/alice/x", "c-mine"), "with the correlation data");
    pub_v5(&c, "dev/alice/req", "listed", 1, "shared/answers", NULL);
    T_CHECK(wait_for(&c, "shared/answers", "listed", 1, 5), "a response topic listed as is");

    pub_v5(&c, "dev/alice/req", "theirs", 1, "resp/bob/x", "c-theirs");
    pub_v5(&c, "dev/alice/req", "victim", 1, "victim/cmd", NULL);
    T_CHECK(wait_for(&c, err_topic, "is not allowed by reply_allow", 2, 5),
            "both refused with a report (%zu)", count_on(&c, err_topic, NULL));
    T_CHECK(wait_for(&c, err_topic, "\"correlation_data\":\"Yy10aGVpcnM=\"", 1, 5),
            "the report carries the correlation data");
    pub_v5(&c, "dev/alice/req", "plain", 1, NULL, NULL);
    T_CHECK(wait_for(&c, "dev/alice/res", "plain", 1, 5), "no response topic: the route's reply");
    T_CHECK(count_on(&c, "victim/cmd", NULL) == 0, "nothing published on victim/cmd");
    T_CHECK(count_on(&c, "resp/bob/x", NULL) == 0, "nothing on another device's topic");
    T_CHECK(wait_count(&d, daemon_refused_bad_input, 2, 2) && daemon_refused_bad_input(&d) == 2,
            "2 refusals counted (%lu)", (unsigned long)daemon_refused_bad_input(&d));
    daemon_stop(&d);
    client_close(&c);
}

/* Two daemons share a $share route: every message answered exactly once. */
static void test_shared(struct broker *b)
{
    struct client c;
    struct daemon d1 = {0}, d2 = {0};
    client_open(&c, b, "t-share");
    sub(&c, "#");
    daemon_start(&d1, b, "sh1", NULL, echo_routes);
    daemon_start(&d2, b, "sh2", NULL, echo_routes);
    T_REQUIRE(daemon_online(&c, &d1) && daemon_online(&c, &d2), "both daemons online");
    enum { N = 400 };
    for (int i = 0; i < N; i++) {
        char payload[32];
        snprintf(payload, sizeof(payload), "sh-%d", i);
        pub(&c, "sh/dev/in", payload, strlen(payload));
    }
    T_CHECK(wait_for(&c, "sh/dev/out", NULL, N, 10), "all shared messages answered");
    pthread_mutex_lock(&c.lock);
    int *seen = calloc(N, sizeof(int));
    for (size_t i = 0; i < c.count; i++) {
        int n;
        if (strcmp(c.msgs[i].topic, "sh/dev/out") == 0 &&
            sscanf(c.msgs[i].payload, "sh-%d", &n) == 1 && n >= 0 && n < N)
            seen[n]++;
    }
    pthread_mutex_unlock(&c.lock);
    int once = 0;
    for (int i = 0; i < N; i++)
        once += seen[i] == 1;
    free(seen);
    T_CHECK(once == N, "%d of %d answered exactly once", once, N);
    daemon_stop(&d1);
    daemon_stop(&d2);
    client_close(&c);
}

/* Start the killed broker again and connect C to it, subscribed to
 * everything, while the daemon is stopped: the results it has queued go
 * out as soon as it reconnects, and would be lost to a subscription the
 * broker has not made yet. C's own message coming back proves it made. */
static void restart_broker_for(struct client *c, struct broker *b, struct daemon *d, const char *id)
{
    kill(d->p.pid, SIGSTOP);
    T_REQUIRE(broker_restart_same_port(b) == 0, "broker restarted");
    client_open(c, b, id);
    sub(c, "#");
    pub(c, "t/probe", id, strlen(id));
    T_REQUIRE(wait_for(c, "t/probe", id, 1, 10), "the test client is subscribed");
    kill(d->p.pid, SIGCONT);
}

/* Kill the broker with jobs in flight: the daemon reconnects, resubscribes,
 * never exits, and answers the jobs once the broker is back. The jobs run
 * long enough to outlast the kill on a busy machine, and the broker comes
 * back only once they are done, so their results must have waited. */
static void test_broker_restart(struct broker *b)
{
    struct client c;
    struct daemon d = {0};
    client_open(&c, b, "t-restart");
    sub(&c, "#");
    daemon_start(&d, b, "restart", "  reconnect_min_s: 1\n  reconnect_max_s: 2\n", echo_routes);
    T_REQUIRE(daemon_online(&c, &d), "daemon online");
    for (int i = 0; i < 4; i++) /* 4 x 1 s on 2 workers: in flight while the broker is away */
        pub(&c, "s/slow/in", "1000000", 7);
    T_REQUIRE(wait_accepted(&d, 4, 5), "the daemon accepted the slow jobs");
    client_close(&c);
    broker_kill(b);
    T_REQUIRE(daemon_completed(&d) < 4, "jobs still running when the broker died");
    T_REQUIRE(wait_count(&d, daemon_completed, 4, 20), "the jobs done while the broker is away");
    restart_broker_for(&c, b, &d, "t-restart2");
    T_CHECK(daemon_online(&c, &d), "daemon reconnected (online status again)");
    T_CHECK(wait_for(&c, "s/slow/out", NULL, 4, 10), "jobs in flight answered after the restart");
    pub(&c, "e/again/in", "again", 5);
    T_CHECK(wait_for(&c, "e/again/out", "again", 1, 5), "subscriptions restored");
    T_CHECK(daemon_alive(&d), "daemon never exited");
    daemon_stop(&d);
    client_close(&c);
}

/* SIGHUP with a new route and one removed: the new one is subscribed and
 * answered, the kept one keeps working, the removed one is gone. The new
 * route's name is as long as names go (64): the routes find their kind by
 * it after the reload, and the stats block keeps only 47 bytes of it. */
static void test_reload_routes(struct broker *b)
{
    struct client c;
    struct daemon d = {0};
    client_open(&c, b, "t-reload");
    sub(&c, "#");
    daemon_start(&d, b, "reload", NULL, echo_routes);
    T_REQUIRE(daemon_online(&c, &d), "daemon online");
    FILE *f = fopen(d.conf, "a");
    static const char name[] = "added-route-whose-name-is-as-long-as-the-configuration-allows-it";
    _Static_assert(sizeof(name) - 1 == CONF_ROUTE_NAME_MAX, "the longest route name");
    fprintf(f, "  - name: %s\n    subscribe: n/+/in\n    job: test.echo\n    reply: n/{1}/out\n",
            name);
    fclose(f);
    kill(d.p.pid, SIGHUP);
    T_CHECK(daemon_says(&d, "subscribed to n/+/in", 5000), "the new route's filter subscribed");
    pub(&c, "n/x/in", "new-route", 9);
    T_CHECK(wait_for(&c, "n/x/out", "new-route", 1, 5), "the added route answers");
    pub(&c, "e/x/in", "kept-route", 10);
    T_CHECK(wait_for(&c, "e/x/out", "kept-route", 1, 5), "the kept route answers");
    T_CHECK(daemon_alive(&d), "daemon alive");
    daemon_stop(&d);
    client_close(&c);
}

/* Write LEN bytes of TEXT into the FIFO PATH once a reader has it open
 * (the daemon's load, which may not have reached its open yet), then
 * close it: the reader sees the end of the file. */
static bool feed_fifo(const char *path, const char *text, size_t len)
{
    double end = now_s() + 10;
    int fd;
    while ((fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC)) < 0) {
        if (errno != ENXIO || now_s() > end)
            return false;
        usleep(1000); /* no reader yet */
    }
    fcntl(fd, F_SETFL, 0);
    size_t off = 0;
    for (ssize_t w; off < len && (w = write(fd, text + off, len - off)) > 0;)
        off += (size_t)w;
    close(fd);
    return off == len;
}

/* Each of N lines made by FMT from its index, in one malloc'd string. */
static char *lines_of(const char *head, const char *fmt, size_t n, size_t *len)
{
    size_t cap = strlen(head) + n * 64 + 1;
    char *s = malloc(cap);
    T_REQUIRE(s, "malloc");
    size_t o = (size_t)snprintf(s, cap, "%s", head);
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(s + o, cap - o, fmt, i);
    *len = o;
    return s;
}

/* SIGHUP loads the file off the loop. The file is a FIFO here, so a load
 * lasts until the test writes it: requests are answered all along, a
 * second SIGHUP waits its turn, hostile files (100,000 nested sequences,
 * 80,000 unknown keys) are refused with their diagnostics in the log, and
 * SIGTERM during a load exits 0 once the load is over. */
static void test_reload_off_loop(struct broker *b)
{
    struct client c;
    struct daemon d = {0};
    client_open(&c, b, "t-reload-off-loop");
    sub(&c, "#");
    daemon_start(&d, b, "offloop", NULL, echo_routes);
    T_REQUIRE(daemon_online(&c, &d), "daemon online");
    char good[128];
    snprintf(good, sizeof(good), "%s.good", d.conf);
    T_REQUIRE(rename(d.conf, good) == 0 && mkfifo(d.conf, 0600) == 0, "the file is a FIFO");

    kill(d.p.pid, SIGHUP);
    T_CHECK(daemon_says(&d, "SIGHUP: loading", 5000), "the load started");
    enum { N = 50 };
    for (int i = 0; i < N; i++)
        pub(&c, "e/during/in", "during-load", 11);
    T_CHECK(wait_for(&c, "e/during/out", "during-load", N, 10), "answered while loading");
    kill(d.p.pid, SIGHUP);
    T_CHECK(daemon_says(&d, "loading it again after", 5000), "a second SIGHUP waits its turn");

    size_t len;
    char *text = lines_of("workers: ", "[", 100000, &len), where[256];
    T_CHECK(feed_fifo(d.conf, text, len), "the deep file written");
    free(text);
    snprintf(where, sizeof(where), "%s:1:%d: yaml: nested more than %d levels deep", d.conf,
             9 + CONF_MAX_DEPTH, CONF_MAX_DEPTH);
    T_CHECK(daemon_says(&d, where, 5000), "the depth refused where it is");
    T_CHECK(daemon_says(&d, "has 1 problem; keeping the current configuration", 5000),
            "the deep file changes nothing");

    T_CHECK(daemon_says(&d, "SIGHUP: loading", 5000), "the second SIGHUP's load started");
    text = lines_of("", "k%06zu: 1\n", 80000, &len);
    T_CHECK(feed_fifo(d.conf, text, len), "the file of unknown keys written");
    free(text);
    T_CHECK(daemon_says(&d, "79900 more problems not shown (80000 in all)", 5000),
            "100 problems logged, the rest counted");
    T_CHECK(daemon_says(&d, "has 80000 problems; keeping the current configuration", 5000),
            "the unknown keys change nothing");
    pub(&c, "e/after/in", "after-load", 10);
    T_CHECK(wait_for(&c, "e/after/out", "after-load", 1, 5), "answered after the loads");

    kill(d.p.pid, SIGHUP);
    T_CHECK(daemon_says(&d, "SIGHUP: loading", 5000), "a third load started");
    kill(d.p.pid, SIGTERM);
    T_CHECK(daemon_says(&d, "SIGTERM: draining", 5000), "the drain started");
    FILE *f = fopen(good, "r");
    char conf[4096];
    len = f ? fread(conf, 1, sizeof(conf), f) : 0;
    if (f)
        fclose(f);
    T_CHECK(feed_fifo(d.conf, conf, len), "the good file written");
    int st = -1;
    T_CHECK(proc_wait(&d.p, 10000, &st) == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
            "exit 0 after the load it waited for (status %d)", st);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", d.dir);
    T_CHECK(system(cmd) == 0, "cleanup");
    client_close(&c);
}

/* SIGTERM with jobs queued: every one is answered, then exit 0. */
static void test_drain(struct broker *b)
{
    struct client c;
    struct daemon d = {0};
    client_open(&c, b, "t-drain");
    sub(&c, "#");
    daemon_start(&d, b, "drain", NULL, echo_routes);
    T_REQUIRE(daemon_online(&c, &d), "daemon online");
    enum { N = 200 };
    for (int i = 0; i < N; i++)
        pub(&c, "s/d/in", "2000", 4);
    T_REQUIRE(wait_accepted(&d, N, 5), "all accepted");
    kill(d.p.pid, SIGTERM);
    int st = -1;
    T_CHECK(proc_wait(&d.p, 20000, &st) == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
            "exit 0 after the drain (status %d)", st);
    T_CHECK(wait_for(&c, "s/d/out", NULL, N, 5), "all %d answered before the exit", N);
    T_CHECK(wait_for(&c, "mqfork/", "offline", 1, 5), "offline status published");
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", d.dir);
    T_CHECK(system(cmd) == 0, "cleanup");
    client_close(&c);
}

/* opus.decode through the broker: one device's packets, decoded on a
 * stream across the pool, give exactly what a direct libopus decoder fed
 * the same packets in the same order gives. Keepalives get no reply; a
 * random packet gets a bad_input report. */
static void test_opus_decode(struct broker *b)
{
    enum { RATE = 16000, FRAME = RATE * 60 / 1000, FRAMES = 40 };
    static const char routes[] = "  - name: decode\n"
                                 "    subscribe: v/+/in\n"
                                 "    job: opus.decode\n"
                                 "    reply: v/{1}/out\n"
                                 "    stream: '{1}'\n";
    struct client c;
    struct daemon d = {0};
    client_open(&c, b, "t-opus");
    sub(&c, "#");
    daemon_start(&d, b, "opus", NULL, routes);
    T_REQUIRE(daemon_online(&c, &d), "daemon online");

    int err;
    OpusEncoder *enc = opus_encoder_create(RATE, 1, OPUS_APPLICATION_VOIP, &err);
    OpusDecoder *dec = opus_decoder_create(RATE, 1, &err);
    T_REQUIRE(enc && dec, "libopus");
    static opus_int16 want[FRAMES][FRAME];
    for (int f = 0; f < FRAMES; f++) {
        opus_int16 pcm[FRAME];
        for (int i = 0; i < FRAME; i++) { /* a gliding tone with a little noise */
            double t = (double)(f * FRAME + i) / RATE;
            pcm[i] = (opus_int16)(8000 * sin(2 * M_PI * (200 + 300 * t) * t) + (rand() % 200));
        }
        unsigned char pkt[1500];
        int n = opus_encode(enc, pcm, FRAME, pkt, sizeof(pkt));
        T_REQUIRE(n > 0, "encode");
        T_REQUIRE(opus_decode(dec, pkt, n, want[f], FRAME, 0) == FRAME, "reference decode");
        pub(&c, "v/dev1/in", pkt, (size_t)n);
        if (f == FRAMES / 2)
            pub(&c, "v/dev1/in", "keepalive", 9);
    }
    /* code 3 packet (several frames) that says it holds none: invalid */
    static const unsigned char junk[] = {0x0b, 0x00};
    pub(&c, "v/dev2/in", junk, sizeof(junk));
    T_CHECK(wait_for(&c, "v/dev1/out", NULL, FRAMES, 10), "every packet decoded");
    char err_topic[96];
    snprintf(err_topic, sizeof(err_topic), "err/%s", d.instance);
    T_CHECK(wait_for(&c, err_topic, "\"error\":\"bad_input\"", 1, 5), "bad packet reported");
    pthread_mutex_lock(&c.lock);
    int frame = 0, differ = 0;
    for (size_t i = 0; i < c.count && frame < FRAMES; i++) {
        if (strcmp(c.msgs[i].topic, "v/dev1/out") != 0)
            continue;
        differ += c.msgs[i].len != sizeof(want[frame]) ||
                  memcmp(c.msgs[i].payload, want[frame], sizeof(want[frame])) != 0;
        frame++;
    }
    size_t replies = count_on(&c, "v/dev1/out", NULL);
    pthread_mutex_unlock(&c.lock);
    T_CHECK(frame == FRAMES && differ == 0, "%d of %d frames differ from direct libopus", differ,
            frame);
    T_CHECK(replies == FRAMES, "the keepalive got no reply (%zu replies)", replies);
    opus_encoder_destroy(enc);
    opus_decoder_destroy(dec);
    daemon_stop(&d);
    client_close(&c);
}

/* While the broker is away results wait in a queue bounded by
 * broker.max_outbound; past it they are dropped and counted. As above, the
 * broker comes back only once every job is done. */
static void test_outbound_bound(struct broker *b)
{
    struct client c;
    struct daemon d = {0};
    client_open(&c, b, "t-bound");
    sub(&c, "#");
    daemon_start(&d, b, "bound", "  reconnect_min_s: 1\n  reconnect_max_s: 2\n  max_outbound: 2\n",
                 echo_routes);
    T_REQUIRE(daemon_online(&c, &d), "daemon online");
    for (int i = 0; i < 4; i++)
        pub(&c, "s/bound/in", "1000000", 7);
    T_REQUIRE(wait_accepted(&d, 4, 5), "the daemon accepted the jobs");
    client_close(&c);
    broker_kill(b);
    T_REQUIRE(daemon_completed(&d) < 4, "jobs still running when the broker died");
    T_REQUIRE(wait_count(&d, daemon_completed, 4, 20), "the jobs done while the broker is away");
    restart_broker_for(&c, b, &d, "t-bound2");
    T_CHECK(daemon_online(&c, &d), "daemon reconnected");
    T_CHECK(wait_for(&c, "s/bound/out", NULL, 2, 10), "the 2 queued results delivered");
    struct daemon_figures g = daemon_stats(&d);
    T_CHECK(g.mqtt_dropped == 2, "2 results dropped and counted (%lu)",
            (unsigned long)g.mqtt_dropped);
    T_CHECK(count_on(&c, "s/bound/out", NULL) == 2, "no more than the bound delivered");
    daemon_stop(&d);
    client_close(&c);
}

/* The bound also holds what libmosquitto has not written yet; with a broker
 * that reads, that drains to nothing after each message, so even a small
 * bound drops nothing and the queue gauge ends at zero. */
static void test_outbound_accounting(struct broker *b)
{
    struct client c;
    struct daemon d = {0};
    client_open(&c, b, "t-account");
    sub(&c, "#");
    daemon_start(&d, b, "account", "  reconnect_min_s: 0.2\n  max_outbound: 10\n", echo_routes);
    T_REQUIRE(daemon_online(&c, &d), "daemon online");
    enum { N = 2000 };
    for (int i = 0; i < N; i++)
        pub(&c, "e/acc/in", "x", 1);
    T_CHECK(wait_for(&c, "e/acc/out", NULL, N, 10), "all %d answered", N);
    pub(&c, "s/acc/in", "bad", 3); /* one QoS 1 error report, acknowledged by the broker */
    T_CHECK(wait_for(&c, "err/", "bad_input", 1, 5), "the report arrived");
    struct daemon_figures g = {0};
    for (int i = 0; i < 200; i++) { /* the gauge is published with the next round */
        g = daemon_stats(&d);
        if (g.mqtt_queue == 0 && g.mqtt_msgs_out >= N + 1)
            break;
        usleep(10000);
    }
    T_CHECK(g.mqtt_dropped == 0, "nothing dropped (%lu)", (unsigned long)g.mqtt_dropped);
    T_CHECK(g.mqtt_queue == 0, "nothing left waiting (%u)", g.mqtt_queue);
    daemon_stop(&d);
    client_close(&c);
}

/* A broker that is connected but stops reading: the results pile up in the
 * daemon only up to broker.max_outbound; the rest are dropped and counted,
 * and delivery resumes when the broker does. */
static void test_stalled_broker(struct broker *b)
{
    struct client c;
    struct daemon d = {.workers = 1, .slab_mb = 64};
    client_open(&c, b, "t-stall");
    sub(&c, "g/#");
    sub(&c, "mqfork/#");
    daemon_start(&d, b, "stall", "  reconnect_min_s: 0.2\n  max_outbound: 50\n", echo_routes);
    T_REQUIRE(daemon_online(&c, &d), "daemon online");
    enum { N = 12000 };
    static char big[1000];
    memset(big, 'b', sizeof(big));
    pub(&c, "s/gate/in", "700000", 6); /* holds the only worker for 0.7 s */
    for (int i = 0; i < N; i++)
        pub(&c, "e/stall/in", big, sizeof(big));
    T_REQUIRE(wait_accepted(&d, N + 1, 10), "all accepted while the worker is held");
    kill(b->pid, SIGSTOP);
    /* 12 MB of replies against a stopped reader: more than the socket holds */
    bool dropped = false;
    struct daemon_figures g = {0};
    /* every job answered (12,000 through one worker: seconds on a busy
     * machine), some of the answers dropped */
    for (int i = 0; i < 3000 && !dropped; i++) {
        g = daemon_stats(&d);
        dropped = g.mqtt_dropped > 0 && g.completed >= N + 1;
        usleep(10000);
    }
    kill(b->pid, SIGCONT);
    T_CHECK(dropped, "results dropped while the broker stalled (%lu dropped, %lu completed)",
            (unsigned long)g.mqtt_dropped, (unsigned long)g.completed);
    T_CHECK(g.mqtt_queue <= 50, "no more than max_outbound held (%u)", g.mqtt_queue);
    T_CHECK(daemon_alive(&d), "daemon alive");
    /* The backlog drains first: a request answered while the bound is still
     * full would (rightly) be dropped. */
    for (int i = 0; i < 1000 && daemon_stats(&d).mqtt_queue > 0; i++)
        usleep(10000);
    sub(&c, "e/after-stall/out"); /* before the publish: the broker keeps their order */
    pub(&c, "e/after-stall/in", "again", 5);
    T_CHECK(wait_for(&c, "e/after-stall/out", "again", 1, 10), "delivery resumes after the stall");
    daemon_stop(&d);
    client_close(&c);
}

/* A drain that runs out of shutdown_timeout_s reports what it abandons. */
static void test_drain_timeout(struct broker *b)
{
    struct client c;
    struct daemon d = {0};
    client_open(&c, b, "t-abandon");
    sub(&c, "#");
    daemon_start(&d, b, "abandon", NULL, echo_routes);
    FILE *f = fopen(d.conf, "a");
    fclose(f);
    T_REQUIRE(daemon_online(&c, &d), "daemon online");
    proc_stop(&d.p, SIGTERM); /* restart it with a short drain budget */
    f = fopen(d.conf, "r+");
    char text[4096];
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    text[n] = '\0';
    rewind(f);
    fprintf(f, "shutdown_timeout_s: 0.3\n%s", text);
    fclose(f);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "exec %s -c %s 2>&1", mqforkd, d.conf);
    char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    T_REQUIRE(proc_spawn(&d.p, argv, true) == 0, "daemon restarted");
    T_REQUIRE(daemon_says(&d, "subscribed to s/+/in", 5000), "subscribed");
    for (int i = 0; i < 6; i++)
        pub(&c, "s/long/in", "2000000", 7); /* 2 s each: cannot finish in 0.3 s */
    T_REQUIRE(wait_accepted(&d, 6, 5), "accepted");
    kill(d.p.pid, SIGTERM);
    int st = -1;
    T_CHECK(proc_wait(&d.p, 10000, &st) == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
            "exit 0 after the drain ran out (status %d)", st);
    char err_topic[96];
    snprintf(err_topic, sizeof(err_topic), "err/%s", d.instance);
    T_CHECK(wait_for(&c, err_topic, "\"error\":\"shutdown\"", 6, 5),
            "every abandoned job reported (%zu reports)", count_on(&c, err_topic, "shutdown"));
    snprintf(cmd, sizeof(cmd), "rm -rf %s", d.dir);
    T_CHECK(system(cmd) == 0, "cleanup");
    client_close(&c);
}

/* The daemon's log, until it says "abandoned N jobs": N, or 0. */
static size_t abandoned_in_log(struct daemon *d, int limit_ms)
{
    char line[1024];
    size_t n = 0;
    double end = now_s() + limit_ms / 1000.0;
    while (now_s() < end) {
        const char *at;
        if (proc_line(&d->p, line, sizeof(line), 100) >= 0 && (at = strstr(line, "abandoned ")) &&
            sscanf(at, "abandoned %zu jobs", &n) == 1)
            return n;
    }
    return 0;
}

/* SIGTERM with a backlog that outlasts shutdown_timeout_s: every job the
 * log says was abandoned has its shutdown report on errors.topic before the
 * daemon exits. */
static void test_shutdown_reports(struct broker *b)
{
    enum { N = 600 };
    struct client c;
    struct daemon d = {0};
    client_open(&c, b, "t-drain");
    sub(&c, "#");
    char routes[sizeof(echo_routes) + 64];
    snprintf(routes, sizeof(routes), "%sshutdown_timeout_s: 0.2\n", echo_routes);
    daemon_start(&d, b, "drain", NULL, routes);
    T_REQUIRE(daemon_online(&c, &d), "daemon online");
    for (int i = 0; i < N; i++)
        pub(&c, "s/d/in", "100000", 6);
    T_REQUIRE(wait_accepted(&d, N, 10), "the daemon accepted the backlog");
    kill(d.p.pid, SIGTERM);
    size_t abandoned = abandoned_in_log(&d, 10000);
    int st;
    T_CHECK(proc_wait(&d.p, 20000, &st) == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
            "the daemon exited 0");
    T_CHECK(abandoned > N / 2, "most of the backlog abandoned (%zu)", abandoned);
    char err[96];
    snprintf(err, sizeof(err), "err/%s", d.instance);
    wait_for(&c, err, "\"shutdown\"", abandoned, 10);
    size_t reports = count_on(&c, err, "\"shutdown\"");
    T_CHECK(reports == abandoned, "%zu of %zu abandoned jobs reported", reports, abandoned);
    daemon_stop(&d);
    client_close(&c);
}

static void test_tls(void)
{
    struct broker tb;
    struct broker_opts o = {.tls = true};
    T_REQUIRE(broker_start(&tb, &o) == 0, "TLS broker started");
    struct client c;
    client_open(&c, &tb, "t-tls");
    sub(&c, "#");
    char extra[1024];
    snprintf(extra, sizeof(extra), "  reconnect_min_s: 0.2\n  tls:\n    ca_file: %s\n", tb.ca_file);
    struct daemon d = {0};
    struct broker via_tls = tb;
    via_tls.port = tb.tls_port;
    daemon_start(&d, &via_tls, "tls", extra, echo_routes);
    T_CHECK(daemon_online(&c, &d), "daemon online over TLS");
    pub(&c, "e/t/in", "secret", 6);
    T_CHECK(wait_for(&c, "e/t/out", "secret", 1, 5), "echo through TLS");
    daemon_stop(&d);

    /* An empty tls: trusts the system's store. The test's CA goes into a
     * store of its own, which OpenSSL takes for the system's through
     * SSL_CERT_DIR, so the machine's own store is left alone. */
    char store[64] = "/tmp/mqfork-ca-XXXXXX", cmd[512];
    T_REQUIRE(mkdtemp(store), "CA store");
    snprintf(cmd, sizeof(cmd), "cp %s %s/test-ca.pem && openssl rehash %s", tb.ca_file, store,
             store);
    T_REQUIRE(system(cmd) == 0, "the test CA installed in the store");
    setenv("SSL_CERT_DIR", store, 1);
    struct daemon sys = {0};
    daemon_start(&sys, &via_tls, "tls-system", "  reconnect_min_s: 0.2\n  tls:\n", echo_routes);
    T_CHECK(daemon_online(&c, &sys), "daemon online over TLS with the system's CAs");
    pub(&c, "e/s/in", "system", 6);
    T_CHECK(wait_for(&c, "e/s/out", "system", 1, 5), "echo through TLS with the system's CAs");
    daemon_stop(&sys);
    unsetenv("SSL_CERT_DIR");
    snprintf(cmd, sizeof(cmd), "rm -rf %s", store);
    T_CHECK(system(cmd) == 0, "CA store removed");
    client_close(&c);
    broker_stop(&tb);
}

static void test_wrong_password(void)
{
    struct broker pb;
    struct broker_opts o = {.username = "dev", .password = "right"};
    T_REQUIRE(broker_start(&pb, &o) == 0, "broker with a password started");
    struct daemon d = {0};
    daemon_start(&d, &pb, "pw", "  reconnect_min_s: 0.2\n  username: dev\n  password: wrong\n",
                 echo_routes);
    T_CHECK(daemon_says(&d, "refused the connection", 5000), "a clear log line");
    T_CHECK(daemon_says(&d, "refused the connection", 5000), "and it keeps trying (backoff)");
    T_CHECK(daemon_alive(&d), "no crash");
    daemon_stop(&d);
    broker_stop(&pb);
}

int main(int argc, char **argv)
{
    T_REQUIRE(argc == 2, "usage: test_mqtt MQFORKD");
    mqforkd = argv[1];
    mosquitto_lib_init();
    struct broker b;
    T_REQUIRE(broker_start(&b, NULL) == 0, "broker started");
    fprintf(stderr, "-- test_echo_order_errors\n");
    test_echo_order_errors(&b);
    fprintf(stderr, "-- test_crash_lines\n");
    test_crash_lines(&b);
    fprintf(stderr, "-- test_response_topic\n");
    test_response_topic(&b);
    fprintf(stderr, "-- test_bad_reply_topics\n");
    test_bad_reply_topics(&b);
    fprintf(stderr, "-- test_reply_allow\n");
    test_reply_allow(&b);
    fprintf(stderr, "-- test_shared\n");
    test_shared(&b);
    fprintf(stderr, "-- test_reload_routes\n");
    test_reload_routes(&b);
    fprintf(stderr, "-- test_reload_off_loop\n");
    test_reload_off_loop(&b);
    fprintf(stderr, "-- test_drain\n");
    test_drain(&b);
    fprintf(stderr, "-- test_opus_decode\n");
    test_opus_decode(&b);
    fprintf(stderr, "-- test_outbound_accounting\n");
    test_outbound_accounting(&b);
    fprintf(stderr, "-- test_stalled_broker\n");
    test_stalled_broker(&b);
    fprintf(stderr, "-- test_drain_timeout\n");
    test_drain_timeout(&b);
    fprintf(stderr, "-- test_shutdown_reports\n");
    test_shutdown_reports(&b);
    fprintf(stderr, "-- test_broker_restart\n");
    test_broker_restart(&b);
    fprintf(stderr, "-- test_outbound_bound\n");
    test_outbound_bound(&b);
    broker_stop(&b);
    fprintf(stderr, "-- test_tls\n");
    test_tls();
    fprintf(stderr, "-- test_wrong_password\n");
    test_wrong_password();
    mosquitto_lib_cleanup();
    T_DONE();
}
