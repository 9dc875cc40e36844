/* test_exactly_once.c - a QoS 2 route answers every request exactly once
 * across a broker restart (README, "Delivery guarantees"): a persistent
 * mosquitto, mqforkd with a persistent session (clean_session false,
 * session_expiry_s), and a client with a persistent session of its own that
 * publishes requests at QoS 2 before, during and after the broker's clean
 * stop and restart. Every request must get exactly one reply, and the daemon
 * must reconnect once and stay connected.
 *
 *   test_exactly_once MQFORKD */
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test/broker.h"
#include "test/t.h"

enum { REQUESTS = 600, BEFORE_STOP = 200, DURING_STOP = 350 };

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* The requester: one thread owns its libmosquitto object, publishes request
 * i as soon as i < to_send and it is connected, and reconnects by itself. */
struct requester {
    struct mosquitto *mosq;
    pthread_t thread;
    pthread_mutex_t lock;
    int to_send, sent;
    int replies[REQUESTS];
    int reconnects;
    bool stop;
};

static void on_reply(struct mosquitto *m, void *ctx, const struct mosquitto_message *msg,
                     const mosquitto_property *props)
{
    struct requester *r = ctx;
    int n;
    char text[32] = {0};
    memcpy(text, msg->payload, msg->payloadlen < 31 ? (size_t)msg->payloadlen : 31);
    if (sscanf(text, "r%d", &n) != 1 || n < 0 || n >= REQUESTS)
        return;
    pthread_mutex_lock(&r->lock);
    r->replies[n]++;
    pthread_mutex_unlock(&r->lock);
}

static void on_connected(struct mosquitto *m, void *ctx, int rc, int flags,
                         const mosquitto_property *props)
{
    if (rc == 0)
        mosquitto_subscribe_v5(m, NULL, "x2/+/out", 2, 0, NULL);
}

static bool publish_next(struct requester *r)
{
    pthread_mutex_lock(&r->lock);
    int i = r->sent < r->to_send ? r->sent : -1;
    pthread_mutex_unlock(&r->lock);
    if (i < 0)
        return false;
    char payload[32];
    int len = snprintf(payload, sizeof(payload), "r%d", i);
    if (mosquitto_publish_v5(r->mosq, NULL, "x2/dev/in", len, payload, 2, false, NULL) !=
        MOSQ_ERR_SUCCESS)
        return false; /* not connected: the same request again later */
    pthread_mutex_lock(&r->lock);
    r->sent++;
    pthread_mutex_unlock(&r->lock);
    return true;
}

static void *requester_run(void *arg)
{
    struct requester *r = arg;
    double next = 0;
    while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
        if (mosquitto_loop(r->mosq, 5, 1) != MOSQ_ERR_SUCCESS) {
            usleep(100 * 1000);
            if (mosquitto_reconnect(r->mosq) == MOSQ_ERR_SUCCESS)
                r->reconnects++;
            continue;
        }
        if (now_s() >= next && publish_next(r))
            next = now_s() + 0.002; /* 500 requests a second */
    }
    return NULL;
}

static void requester_start(struct requester *r, int port)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->lock, NULL);
    r->mosq = mosquitto_new("x2-requester", false, r);
    T_REQUIRE(r->mosq, "mosquitto_new");
    mosquitto_int_option(r->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    /* libmosquitto 2.0 counts the QoS 2 messages it keeps over a reconnect
     * against its receive quota twice (see supervisor/mqtt.c). */
    mosquitto_int_option(r->mosq, MOSQ_OPT_RECEIVE_MAXIMUM, 65535);
    mosquitto_message_v5_callback_set(r->mosq, on_reply);
    mosquitto_connect_v5_callback_set(r->mosq, on_connected);
    mosquitto_property *props = NULL;
    mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL, 3600);
    int rc = mosquitto_connect_bind_v5(r->mosq, "127.0.0.1", port, 10, NULL, props);
    mosquitto_property_free_all(&props);
    T_REQUIRE(rc == MOSQ_ERR_SUCCESS, "the requester connects: %s", mosquitto_strerror(rc));
    T_REQUIRE(pthread_create(&r->thread, NULL, requester_run, r) == 0, "requester thread");
}

static void requester_stop(struct requester *r)
{
    __atomic_store_n(&r->stop, true, __ATOMIC_RELEASE);
    pthread_join(r->thread, NULL);
    mosquitto_disconnect(r->mosq);
    mosquitto_destroy(r->mosq);
}

static void allow(struct requester *r, int n)
{
    pthread_mutex_lock(&r->lock);
    r->to_send = n;
    pthread_mutex_unlock(&r->lock);
}

/* Requests [0, n) answered at least once each. */
static bool answered(struct requester *r, int n)
{
    pthread_mutex_lock(&r->lock);
    int got = 0;
    for (int i = 0; i < n; i++)
        got += r->replies[i] > 0;
    pthread_mutex_unlock(&r->lock);
    return got == n;
}

static bool wait_answered(struct requester *r, int n, double limit_s)
{
    double end = now_s() + limit_s;
    while (!answered(r, n) && now_s() < end)
        usleep(20 * 1000);
    return answered(r, n);
}

static int sent(struct requester *r)
{
    pthread_mutex_lock(&r->lock);
    int n = r->sent;
    pthread_mutex_unlock(&r->lock);
    return n;
}

/* mqforkd with a persistent session and one QoS 2 echo route. */
static void daemon_start(struct proc *p, const struct broker *b, char *dir, size_t dirlen)
{
    snprintf(dir, dirlen, "/tmp/exactly-once-XXXXXX");
    T_REQUIRE(mkdtemp(dir), "temp dir");
    char conf[512];
    snprintf(conf, sizeof(conf), "%s/d.yaml", dir);
    FILE *f = fopen(conf, "w");
    T_REQUIRE(f, "write %s", conf);
    fprintf(f,
            "instance: x2-%d\n"
            "broker:\n  host: 127.0.0.1\n  port: %d\n  client_id: x2-daemon-%d\n"
            "  clean_session: false\n  session_expiry_s: 3600\n"
            "  reconnect_min_s: 1\n  reconnect_max_s: 1\n"
            "workers:\n  min: 2\n  max: 2\n"
            "errors:\n  topic: x2/errors\n"
            "routes:\n  - name: echo\n    subscribe: x2/+/in\n    job: test.echo\n"
            "    reply: x2/{1}/out\n    qos: 2\n",
            (int)getpid(), b->port, (int)getpid());
    fclose(f);
    char cmd[640];
    snprintf(cmd, sizeof(cmd), "exec %s -c %s 2>&1", getenv("MQFORKD"), conf);
    char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    T_REQUIRE(proc_spawn(p, argv, true) == 0, "daemon started");
}

/* Read the daemon's log until a line holding WHAT, for LIMIT seconds. */
static bool daemon_says(struct proc *p, const char *what, double limit_s)
{
    char line[1024];
    double end = now_s() + limit_s;
    while (now_s() < end)
        if (proc_line(p, line, sizeof(line), 100) >= 0 && strstr(line, what))
            return true;
    return false;
}

/* Read what the daemon logged so far (it must not block on a full pipe),
 * counting reconnections and protocol errors. */
static void read_log(struct proc *p, int *reconnected, int *protocol_errors)
{
    char line[1024];
    while (proc_line(p, line, sizeof(line), 50) >= 0) {
        if (strstr(line, "(reconnected)"))
            (*reconnected)++;
        if (strstr(line, "protocol error"))
            (*protocol_errors)++;
        if (strstr(line, "error") || strstr(line, "reconnect"))
            fprintf(stderr, "daemon: %s\n", line);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_exactly_once MQFORKD\n");
        return 2;
    }
    setenv("MQFORKD", argv[1], 1);
    signal(SIGPIPE, SIG_IGN);
    mosquitto_lib_init();
    struct broker b;
    struct broker_opts o = {.persistent = true};
    T_REQUIRE(broker_start(&b, &o) == 0, "persistent mosquitto started");
    struct proc daemon;
    char dir[64];
    daemon_start(&daemon, &b, dir, sizeof(dir));
    T_REQUIRE(daemon_says(&daemon, "subscribed to x2/+/in", 30), "the daemon subscribed");
    struct requester r;
    requester_start(&r, b.port);
    allow(&r, 1);
    T_REQUIRE(wait_answered(&r, 1, 30), "the daemon answers a first request");
    allow(&r, DURING_STOP);
    while (sent(&r) < BEFORE_STOP)
        usleep(2000);
    /* The broker stops cleanly with requests and replies in flight, and
     * comes back from its database while requests keep coming. */
    broker_terminate(&b);
    T_REQUIRE(broker_restart_same_port(&b) == 0, "mosquitto restarted from its database");
    allow(&r, REQUESTS);
    T_CHECK(wait_answered(&r, REQUESTS, 30), "all %d requests answered (%d sent)", REQUESTS,
            sent(&r));
    /* A late duplicate would come right behind: one more round trip. */
    usleep(300 * 1000);

    int missing = 0, twice = 0;
    pthread_mutex_lock(&r.lock);
    for (int i = 0; i < REQUESTS; i++) {
        missing += r.replies[i] == 0;
        twice += r.replies[i] > 1;
        if (r.replies[i] != 1 && missing + twice < 10)
            fprintf(stderr, "request r%d answered %d times\n", i, r.replies[i]);
    }
    pthread_mutex_unlock(&r.lock);
    T_CHECK(missing == 0, "%d requests never answered", missing);
    T_CHECK(twice == 0, "%d requests answered more than once", twice);

    int reconnected = 0, protocol_errors = 0;
    read_log(&daemon, &reconnected, &protocol_errors);
    T_CHECK(protocol_errors == 0, "the daemon was disconnected %d times for a protocol error",
            protocol_errors);
    T_CHECK(reconnected == 1, "the daemon reconnected %d times (once expected)", reconnected);
    fprintf(stderr, "%d requests, %d missing, %d twice; daemon reconnected %d times\n", REQUESTS,
            missing, twice, reconnected);

    requester_stop(&r);
    proc_stop(&daemon, SIGTERM);
    broker_stop(&b);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    T_CHECK(system(cmd) == 0, "temp dir removed");
    mosquitto_lib_cleanup();
    T_DONE();
}
