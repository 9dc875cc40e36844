/* test_cache.c - routes with cache: (README, "Result cache"), through a real
 * mosquitto and a real mqforkd: a repeated request is answered without a
 * job; 100 equal requests sent together run one job and each gets its
 * reply on its own response topic with its own correlation data; a result
 * expires after ttl_s; max_mb evicts the least recently used result; a
 * failure is reported to each requester and not kept. Jobs are counted by
 * mqforkstat (kind.<route>.received), the cache by its block "cache".
 *
 *   test_cache MQFORKD MQFORKSTAT */
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
#include "test/run.h"
#include "test/t.h"

#define MAX_MSGS 1024
#define JOINERS  100
#define BIG      200000 /* key and result: two fit in max_mb 1, three do not */
#define SPIN_US  "1000000"
#define WAIT_S   30

struct msg {
    char topic[128];
    char corr[32];
    size_t len;
    char head[16]; /* the payload's first bytes */
};

struct client {
    struct mosquitto *mosq;
    pthread_mutex_t mu;
    struct msg msgs[MAX_MSGS];
    int count;
};

static const char *stat_bin, *instance;
static struct proc mqforkd; /* its log is read as it comes: a full pipe would stop it */

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void on_message(struct mosquitto *m, void *ctx, const struct mosquitto_message *in,
                       const mosquitto_property *props)
{
    struct client *c = ctx;
    struct msg got = {.len = (size_t)in->payloadlen};
    snprintf(got.topic, sizeof(got.topic), "%s", in->topic);
    if (got.len) /* an empty payload may come as NULL */
        memcpy(got.head, in->payload,
               got.len < sizeof(got.head) - 1 ? got.len : sizeof(got.head) - 1);
    void *corr = NULL;
    uint16_t corr_len = 0;
    if (mosquitto_property_read_binary(props, MQTT_PROP_CORRELATION_DATA, &corr, &corr_len,
                                       false) &&
        corr_len < sizeof(got.corr))
        memcpy(got.corr, corr, corr_len);
    free(corr);
    pthread_mutex_lock(&c->mu);
    if (c->count < MAX_MSGS)
        c->msgs[c->count++] = got;
    pthread_mutex_unlock(&c->mu);
}

static void client_start(struct client *c, int port)
{
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
    c->mosq = mosquitto_new(NULL, true, c);
    T_REQUIRE(c->mosq, "mosquitto_new");
    mosquitto_int_option(c->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_message_v5_callback_set(c->mosq, on_message);
    T_REQUIRE(mosquitto_connect_bind_v5(c->mosq, "127.0.0.1", port, 30, NULL, NULL) ==
                  MOSQ_ERR_SUCCESS,
              "the client connects");
    /* Answers only: the requests carry correlation data too. */
    char *const answers[] = {"ch/+/out", "ch/join/resp/+", "ch/errors"};
    T_REQUIRE(mosquitto_subscribe_multiple(c->mosq, NULL, 3, answers, 1, 0, NULL) ==
                  MOSQ_ERR_SUCCESS,
              "the client subscribes");
    T_REQUIRE(mosquitto_loop_start(c->mosq) == MOSQ_ERR_SUCCESS, "the client's thread");
}

/* Publish PAYLOAD to TOPIC with correlation data CORR and, when not NULL,
 * the response topic RESPONSE. */
static void request(struct client *c, const char *topic, const void *payload, size_t len,
                    const char *corr, const char *response)
{
    mosquitto_property *props = NULL;
    mosquitto_property_add_binary(&props, MQTT_PROP_CORRELATION_DATA, corr, (uint16_t)strlen(corr));
    if (response)
        mosquitto_property_add_string(&props, MQTT_PROP_RESPONSE_TOPIC, response);
    int rc = mosquitto_publish_v5(c->mosq, NULL, topic, (int)len, payload, 1, false, props);
    mosquitto_property_free_all(&props);
    T_CHECK(rc == MOSQ_ERR_SUCCESS, "publish to %s: %s", topic, mosquitto_strerror(rc));
}

/* The message that carries correlation data CORR, waited for. */
static bool reply_of(struct client *c, const char *corr, struct msg *out)
{
    for (double end = now_s() + WAIT_S; now_s() < end; usleep(5000)) {
        pthread_mutex_lock(&c->mu);
        for (int i = 0; i < c->count; i++)
            if (strcmp(c->msgs[i].corr, corr) == 0) {
                *out = c->msgs[i];
                pthread_mutex_unlock(&c->mu);
                return true;
            }
        pthread_mutex_unlock(&c->mu);
    }
    return false;
}

static void drain_log(void)
{
    char line[1024];
    while (proc_line(&mqforkd, line, sizeof(line), 0) >= 0)
        if (getenv("SHOWLOG") || strstr(line, "error") || strstr(line, "warn"))
            fprintf(stderr, "daemon: %s\n", line);
}

static long stat_of(const char *name)
{
    drain_log();
    return run_figure(stat_bin, instance, name);
}

/* Ask on ROUTE's topic for PAYLOAD and wait for the answer. */
static struct msg ask(struct client *c, const char *route, const char *payload, size_t len,
                      const char *corr)
{
    char topic[64];
    snprintf(topic, sizeof(topic), "ch/%s/in", route);
    request(c, topic, payload, len, corr, NULL);
    struct msg m = {0};
    T_CHECK(reply_of(c, corr, &m), "an answer with correlation data %s", corr);
    return m;
}

static void test_hit(struct client *c)
{
    struct msg first = ask(c, "hit", "hello", 5, "hit-1");
    long hits = stat_of("cache.hits");
    struct msg second = ask(c, "hit", "hello", 5, "hit-2");
    T_CHECK(strcmp(second.topic, "ch/hit/out") == 0 && strcmp(second.head, "hello") == 0,
            "the second answer is the first's: %s '%s' (first '%s')", second.topic, second.head,
            first.head);
    T_CHECK(stat_of("kind.hit.received") == 1, "one job for two equal requests, %ld",
            stat_of("kind.hit.received"));
    T_CHECK(stat_of("cache.hits") == hits + 1, "a hit counted");
    ask(c, "hit", "other", 5, "hit-3");
    T_CHECK(stat_of("kind.hit.received") == 2, "another payload is another job");
}

/* JOINERS equal requests while the first one's job runs: one job, and each
 * answered on its own response topic with its own correlation data. */
static void test_coalesce(struct client *c)
{
    char corr[32], resp[64];
    for (int i = 0; i < JOINERS; i++) {
        snprintf(corr, sizeof(corr), "join-%d", i);
        snprintf(resp, sizeof(resp), "ch/join/resp/%d", i);
        request(c, "ch/join/in", SPIN_US, strlen(SPIN_US), corr, resp);
    }
    int right = 0;
    for (int i = 0; i < JOINERS; i++) {
        struct msg m;
        snprintf(corr, sizeof(corr), "join-%d", i);
        snprintf(resp, sizeof(resp), "ch/join/resp/%d", i);
        if (!reply_of(c, corr, &m))
            T_CHECK(false, "request %d answered", i);
        else if (strcmp(m.topic, resp) != 0)
            T_CHECK(false, "request %d answered on %s, not %s", i, m.topic, resp);
        else
            right++;
    }
    T_CHECK(right == JOINERS, "%d of %d answered on their own topic", right, JOINERS);
    T_CHECK(stat_of("kind.join.received") == 1, "%d equal requests ran %ld jobs (1 expected)",
            JOINERS, stat_of("kind.join.received"));
    T_CHECK(stat_of("cache.coalesced") + stat_of("cache.hits") >= JOINERS - 1,
            "the others coalesced or hit: coalesced %ld", stat_of("cache.coalesced"));
}

/* The same request after ttl_s runs a job again; before it, none. */
static void test_ttl(struct client *c)
{
    double start = now_s();
    ask(c, "ttl", "tick", 4, "ttl-0");
    char corr[32];
    int n = 1;
    double again = 0;
    for (double end = now_s() + WAIT_S; now_s() < end && !again; n++) {
        double sent = now_s();
        snprintf(corr, sizeof(corr), "ttl-%d", n);
        ask(c, "ttl", "tick", 4, corr);
        if (stat_of("kind.ttl.received") == 2)
            again = sent;
        usleep(100 * 1000);
    }
    T_CHECK(again > 0, "the request ran a job again after ttl_s");
    T_CHECK(again - start >= 1.0, "not before ttl_s (1 s): after %.3f s", again - start);
    T_CHECK(n > 2, "answered from the cache meanwhile (%d requests)", n);
    T_CHECK(stat_of("cache.expired") >= 1, "an expiry counted");
}

/* Two BIG results fit max_mb 1, a third evicts the least recently used. */
static void test_lru(struct client *c)
{
    char *big[3];
    for (int i = 0; i < 3; i++) {
        big[i] = malloc(BIG);
        T_REQUIRE(big[i], "memory");
        memset(big[i], 'a' + i, BIG);
    }
    long evicted = stat_of("cache.evicted");
    ask(c, "lru", big[0], BIG, "lru-a1");
    ask(c, "lru", big[1], BIG, "lru-b1");
    ask(c, "lru", big[0], BIG, "lru-a2"); /* hit: a is now the most recent */
    ask(c, "lru", big[2], BIG, "lru-c1"); /* evicts b */
    T_CHECK(stat_of("kind.lru.received") == 3, "a answered from the cache");
    ask(c, "lru", big[0], BIG, "lru-a3");
    T_CHECK(stat_of("kind.lru.received") == 3, "a kept: it was used after b");
    struct msg m = ask(c, "lru", big[1], BIG, "lru-b2");
    T_CHECK(m.len == BIG && m.head[0] == 'b', "b answered in full");
    T_CHECK(stat_of("kind.lru.received") == 4, "b evicted: it ran again");
    T_CHECK(stat_of("cache.evicted") >= evicted + 1, "an eviction counted");
    long bytes = stat_of("cache.bytes");
    T_CHECK(bytes > 2 * BIG && bytes <= 6L << 20, "bytes %ld within the routes' max_mb", bytes);
    for (int i = 0; i < 3; i++)
        free(big[i]);
}

/* A failure is reported to its requester, with its correlation data, and
 * not kept: the same request runs again. */
static void test_failure(struct client *c)
{
    struct msg m = ask(c, "fail", "bad", 3, "fail-1");
    T_CHECK(strcmp(m.topic, "ch/errors") == 0, "error report on ch/errors, got %s", m.topic);
    m = ask(c, "fail", "bad", 3, "fail-2");
    T_CHECK(strcmp(m.topic, "ch/errors") == 0, "error report on ch/errors, got %s", m.topic);
    T_CHECK(stat_of("kind.fail.received") == 2, "a failure is not kept: %ld jobs",
            stat_of("kind.fail.received"));
}

/* The daemon's configuration; RELOADED: without the route join. */
static void write_conf(const char *conf, int port, bool reloaded)
{
    FILE *f = fopen(conf, "w");
    T_REQUIRE(f, "write %s", conf);
    fprintf(f,
            "instance: %s\nbroker: {host: 127.0.0.1, port: %d}\n"
            "workers: {min: 2, max: 2}\nscaling: {enabled: false}\n"
            "limits: {max_payload: 1000000}\nerrors: {topic: ch/errors}\n"
            "routes:\n"
            "  - {name: hit, subscribe: ch/hit/in, job: test.echo, reply: ch/hit/out,\n"
            "     cache: {ttl_s: 3600, max_mb: 2}}\n"
            "%s"
            "  - {name: ttl, subscribe: ch/ttl/in, job: test.echo, reply: ch/ttl/out,\n"
            "     cache: {ttl_s: 1, max_mb: 1}}\n"
            "  - {name: lru, subscribe: ch/lru/in, job: test.echo, reply: ch/lru/out,\n"
            "     cache: {ttl_s: 3600, max_mb: 1}}\n"
            "  - {name: fail, subscribe: ch/fail/in, job: test.spin, reply: ch/fail/out,\n"
            "     cache: {ttl_s: 3600, max_mb: 1}}\n",
            instance, port,
            reloaded ? ""
                     : "  - {name: join, subscribe: ch/join/in, job: test.spin,\n"
                       "     reply_allow: 'ch/join/resp/+', cache: {ttl_s: 3600, max_mb: 1}}\n");
    fclose(f);
}

static void daemon_start(struct proc *p, const struct broker *b, char *conf, size_t size)
{
    snprintf(conf, size, "/tmp/test-cache-%d.yaml", (int)getpid());
    write_conf(conf, b->port, false);
    char cmd[640];
    snprintf(cmd, sizeof(cmd), "exec %s -c %s 2>&1", getenv("MQFORKD"), conf);
    char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    T_REQUIRE(proc_spawn(p, argv, true) == 0, "daemon started");
    char line[1024];
    bool ready = false;
    for (double end = now_s() + WAIT_S; now_s() < end && !ready;)
        ready = proc_line(p, line, sizeof(line), 100) >= 0 && strstr(line, "subscribed to ch/fail");
    T_REQUIRE(ready, "the daemon subscribed");
}

/* A reload keeps the caches of the routes it keeps, and drops the results
 * of the route it removes. */
static void test_reload(struct client *c, const char *conf, int port)
{
    long entries = stat_of("cache.entries");
    write_conf(conf, port, true);
    kill(mqforkd.pid, SIGHUP);
    char line[1024];
    bool reloaded = false;
    for (double end = now_s() + WAIT_S; now_s() < end && !reloaded;)
        reloaded =
            proc_line(&mqforkd, line, sizeof(line), 100) >= 0 && strstr(line, "reload: routes");
    T_REQUIRE(reloaded, "the daemon reloaded");
    T_CHECK(stat_of("cache.entries") == entries - 1, "join's result dropped: %ld entries of %ld",
            stat_of("cache.entries"), entries);
    struct msg m = ask(c, "hit", "hello", 5, "hit-4");
    T_CHECK(strcmp(m.head, "hello") == 0, "answered after the reload");
    T_CHECK(stat_of("kind.hit.received") == 2, "from the kept cache: %ld jobs",
            stat_of("kind.hit.received"));
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: test_cache MQFORKD MQFORKSTAT\n");
        return 2;
    }
    setenv("MQFORKD", argv[1], 1);
    stat_bin = argv[2];
    char name[64];
    snprintf(name, sizeof(name), "cache-test-%d", (int)getpid());
    instance = name;
    signal(SIGPIPE, SIG_IGN);
    mosquitto_lib_init();
    struct broker b;
    T_REQUIRE(broker_start(&b, NULL) == 0, "mosquitto started");
    char conf[128];
    daemon_start(&mqforkd, &b, conf, sizeof(conf));
    struct client c;
    client_start(&c, b.port);
    test_hit(&c);
    test_coalesce(&c);
    test_ttl(&c);
    test_lru(&c);
    test_failure(&c);
    test_reload(&c, conf, b.port);
    mosquitto_disconnect(c.mosq);
    mosquitto_loop_stop(c.mosq, false);
    mosquitto_destroy(c.mosq);
    proc_stop(&mqforkd, SIGTERM);
    broker_stop(&b);
    unlink(conf);
    mosquitto_lib_cleanup();
    T_DONE();
}
