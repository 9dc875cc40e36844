/* test_p2p.c - tests mqfork_p2p.so in a real mosquitto: devices that
 * subscribe to nothing get what is published on devices/p2p/<their id>
 * (payload, QoS, v5 properties intact, never retained), nobody else does,
 * malformed ids deliver to nobody and leave the broker running, the prefix
 * option works and a bad one stops the broker, and conf/mosquitto/acl.example
 * lets devices publish only on their own uplink and only mqfork on p2p.
 * "Nobody else got it" is proven by order, never by waiting: a later marker
 * from the same publisher must be the next thing a client receives.
 * Usage: test_p2p PATH/mqfork_p2p.so PATH/acl.example */
#include "broker.h"
#include "t.h"

#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#define WAIT_MS   5000
#define QUEUE_MAX 8
#define TOPIC_MAX 600
#define BODY_MAX  1024
#define ID_MAX    256 /* P2P_ID_MAX in broker/mqfork_p2p.c */

struct msg {
    char topic[TOPIC_MAX];
    unsigned char body[BODY_MAX];
    int len, qos;
    bool retain;
    char content_type[64]; /* v5 property, "" when absent */
};

/* One MQTT client with its network thread; callbacks fill the fields under
 * lock and signal cond, the test waits on cond with a deadline. */
struct client {
    struct mosquitto *m;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int connack; /* -1 until CONNACK */
    int suback;  /* -1 until SUBACK: granted QoS or reason code */
    int ack_mid; /* last acknowledged publish and its reason code */
    int ack_reason;
    struct msg queue[QUEUE_MAX];
    int head, count;
};

struct setup {
    const char *plugin;
    const char *acl;
};

/* ---- the client ---------------------------------------------------------- */

static struct timespec deadline_in(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static void on_connect(struct mosquitto *m, void *ctx, int rc, int flags,
                       const mosquitto_property *props)
{
    struct client *c = ctx;
    pthread_mutex_lock(&c->lock);
    c->connack = rc;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static void on_subscribe(struct mosquitto *m, void *ctx, int mid, int count, const int *granted,
                         const mosquitto_property *props)
{
    struct client *c = ctx;
    pthread_mutex_lock(&c->lock);
    c->suback = granted[0];
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static void on_publish(struct mosquitto *m, void *ctx, int mid, int reason,
                       const mosquitto_property *props)
{
    struct client *c = ctx;
    pthread_mutex_lock(&c->lock);
    c->ack_mid = mid;
    c->ack_reason = reason;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static void keep_message(struct msg *q, const struct mosquitto_message *msg,
                         const mosquitto_property *props)
{
    char *type = NULL;
    snprintf(q->topic, sizeof(q->topic), "%s", msg->topic);
    q->len = msg->payloadlen < BODY_MAX ? msg->payloadlen : BODY_MAX;
    memcpy(q->body, msg->payload, (size_t)q->len);
    q->qos = msg->qos;
    q->retain = msg->retain;
    q->content_type[0] = '\0';
    if (mosquitto_property_read_string(props, MQTT_PROP_CONTENT_TYPE, &type, false)) {
        snprintf(q->content_type, sizeof(q->content_type), "%s", type);
        free(type);
    }
}

static void on_message(struct mosquitto *m, void *ctx, const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
    struct client *c = ctx;
    pthread_mutex_lock(&c->lock);
    if (c->count < QUEUE_MAX) {
        keep_message(&c->queue[(c->head + c->count) % QUEUE_MAX], msg, props);
        c->count++;
    }
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

/* Wait under c->lock until *field differs from -1 (or the deadline). */
static int wait_field(struct client *c, const int *field)
{
    struct timespec until = deadline_in(WAIT_MS);
    pthread_mutex_lock(&c->lock);
    while (*field == -1 && pthread_cond_timedwait(&c->cond, &c->lock, &until) == 0) {
    }
    int v = *field;
    pthread_mutex_unlock(&c->lock);
    return v;
}

/* Connect with client id id (user may be NULL) and MQTT version 4 (3.1.1)
 * or 5; NULL when the broker does not accept it within WAIT_MS. */
static struct client *client_connect(const struct broker *b, const char *id, const char *user,
                                     int version)
{
    struct client *c = calloc(1, sizeof(*c));
    T_REQUIRE(c, "out of memory");
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    c->connack = c->suback = c->ack_mid = -1;
    c->m = mosquitto_new(id, true, c);
    T_REQUIRE(c->m, "mosquitto_new %s", id);
    mosquitto_int_option(c->m, MOSQ_OPT_PROTOCOL_VERSION,
                         version == 5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
    if (user)
        mosquitto_username_pw_set(c->m, user, "secret");
    mosquitto_connect_v5_callback_set(c->m, on_connect);
    mosquitto_subscribe_v5_callback_set(c->m, on_subscribe);
    mosquitto_publish_v5_callback_set(c->m, on_publish);
    mosquitto_message_v5_callback_set(c->m, on_message);
    T_REQUIRE(mosquitto_connect(c->m, "127.0.0.1", b->port, 30) == MOSQ_ERR_SUCCESS &&
                  mosquitto_loop_start(c->m) == MOSQ_ERR_SUCCESS,
              "%s cannot connect", id);
    int rc = wait_field(c, &c->connack);
    T_REQUIRE(rc == 0, "%s: CONNACK %d", id, rc);
    return c;
}

static void client_close(struct client *c)
{
    mosquitto_disconnect(c->m);
    mosquitto_loop_stop(c->m, false);
    mosquitto_destroy(c->m);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static void client_subscribe(struct client *c, const char *filter)
{
    c->suback = -1;
    T_REQUIRE(mosquitto_subscribe(c->m, NULL, filter, 1) == MOSQ_ERR_SUCCESS, "subscribe");
    int granted = wait_field(c, &c->suback);
    T_REQUIRE(granted == 1, "SUBACK for %s: %d", filter, granted);
}

/* Publish and wait for the broker's acknowledgement (for QoS 0: the write).
 * Returns its reason code (v5; 0 under 3.1.1), or -1 when none came. */
static int publish_props(struct client *c, const char *topic, const void *body, int len, int qos,
                         bool retain, const mosquitto_property *props)
{
    int mid;
    struct timespec until = deadline_in(WAIT_MS);

    pthread_mutex_lock(&c->lock);
    c->ack_mid = -1;
    pthread_mutex_unlock(&c->lock);
    if (mosquitto_publish_v5(c->m, &mid, topic, len, body, qos, retain, props) != MOSQ_ERR_SUCCESS)
        return -1;
    pthread_mutex_lock(&c->lock);
    while (c->ack_mid != mid && pthread_cond_timedwait(&c->cond, &c->lock, &until) == 0) {
    }
    int reason = c->ack_mid == mid ? c->ack_reason : -1;
    pthread_mutex_unlock(&c->lock);
    return reason;
}

static int publish(struct client *c, const char *topic, const char *text, int qos)
{
    return publish_props(c, topic, text, (int)strlen(text), qos, false, NULL);
}

/* The next message c received, waiting up to WAIT_MS. False when none. */
static bool next_message(struct client *c, struct msg *out)
{
    struct timespec until = deadline_in(WAIT_MS);
    pthread_mutex_lock(&c->lock);
    while (c->count == 0 && pthread_cond_timedwait(&c->cond, &c->lock, &until) == 0) {
    }
    bool got = c->count > 0;
    if (got) {
        *out = c->queue[c->head];
        c->head = (c->head + 1) % QUEUE_MAX;
        c->count--;
    }
    pthread_mutex_unlock(&c->lock);
    return got;
}

/* The next message c receives must be text on topic. */
static void expect_next(struct client *c, const char *who, const char *topic, const char *text)
{
    struct msg m;
    if (!next_message(c, &m)) {
        T_CHECK(false, "%s received nothing, expected '%s' on %s", who, text, topic);
        return;
    }
    T_CHECK(!strcmp(m.topic, topic) && m.len == (int)strlen(text) && !memcmp(m.body, text, m.len),
            "%s: got '%.*s' on %s, expected '%s' on %s", who, m.len, (char *)m.body, m.topic, text,
            topic);
}

static bool broker_alive(const struct broker *b)
{
    int status;
    return b->pid > 0 && waitpid(b->pid, &status, WNOHANG) == 0;
}

/* Lines of the broker's log that contain what. The plugin logs while the
 * PUBLISH is handled, before the broker acknowledges it, so after the
 * PUBACK the line is there. */
static int log_lines(const struct broker *b, const char *what)
{
    char line[2048];
    int n = 0;
    FILE *f = fopen(b->log, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        n += strstr(line, what) != NULL;
    fclose(f);
    return n;
}

/* ---- the plugin alone (default prefix, anonymous) ------------------------ */

/* dev-1 (3.1.1, like the firmware) gets a binary payload at QoS 1 exactly,
 * and each QoS as published; dev-2 gets none of it. */
static void test_delivery(struct client *pub, struct client *dev1, struct client *dev2)
{
    unsigned char body[512];
    struct msg m;
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (unsigned char)(i * 7 + 3);

    int reason = publish_props(pub, "devices/p2p/dev-1", body, sizeof(body), 1, false, NULL);
    T_CHECK(reason >= 0 && reason < 0x80, "publisher's PUBACK: reason %d", reason);
    T_REQUIRE(next_message(dev1, &m), "dev-1, subscribed to nothing, received nothing");
    T_CHECK(!strcmp(m.topic, "devices/p2p/dev-1"), "topic %s", m.topic);
    T_CHECK(m.len == (int)sizeof(body) && !memcmp(m.body, body, sizeof(body)),
            "payload changed (%d bytes)", m.len);
    T_CHECK(m.qos == 1 && !m.retain, "qos %d retain %d, want 1 and 0", m.qos, m.retain);

    for (int qos = 0; qos <= 2; qos++) {
        publish(pub, "devices/p2p/dev-1", "q", qos);
        T_CHECK(next_message(dev1, &m) && m.qos == qos, "published at QoS %d, got %d", qos, m.qos);
    }
    publish(pub, "devices/p2p/dev-2", "marker", 1);
    expect_next(dev2, "dev-2", "devices/p2p/dev-2", "marker");
}

/* Empty, nested and over-long ids go to nobody (not even to "a" for a/b):
 * the plugin says so in the log for each, the marker after them is the next
 * thing "a" and dev-1 get, and the broker carries on. An id of exactly
 * ID_MAX bytes is delivered. */
static void test_bad_ids(const struct broker *b, struct client *pub, struct client *dev1)
{
    char topic[TOPIC_MAX], id[ID_MAX + 2];
    struct client *a = client_connect(b, "a", NULL, 4);

    memset(id, 'x', ID_MAX + 1);
    id[ID_MAX + 1] = '\0';
    struct client *longest_plus_one = client_connect(b, id, NULL, 4);
    id[ID_MAX] = '\0';
    struct client *longest = client_connect(b, id, NULL, 4);

    int before = log_lines(b, "names no client id");
    publish(pub, "devices/p2p/", "empty", 1);
    publish(pub, "devices/p2p/a/b", "nested", 1);
    publish(pub, "devices/p2p/dev-1/", "trailing", 1);
    snprintf(topic, sizeof(topic), "devices/p2p/%sx", id);
    publish(pub, topic, "too long", 1);
    int refused = log_lines(b, "names no client id") - before;
    T_CHECK(refused == 4, "the plugin refused %d of the 4 malformed ids", refused);
    snprintf(topic, sizeof(topic), "devices/p2p/%s", id);
    publish(pub, topic, "longest", 1);
    expect_next(longest, "id of ID_MAX bytes", topic, "longest");
    T_CHECK(broker_alive(b), "mosquitto died on a malformed p2p topic");

    publish(pub, "devices/p2p/a", "marker", 1);
    publish(pub, "devices/p2p/dev-1", "marker", 1);
    expect_next(a, "a", "devices/p2p/a", "marker");
    expect_next(dev1, "dev-1", "devices/p2p/dev-1", "marker");
    pthread_mutex_lock(&longest_plus_one->lock);
    T_CHECK(longest_plus_one->count == 0, "a client with a %d-byte id got %d messages", ID_MAX + 1,
            longest_plus_one->count);
    pthread_mutex_unlock(&longest_plus_one->lock);
    client_close(longest_plus_one);
    client_close(longest);
    client_close(a);
}

/* The original publish is not retained (a later subscriber of the topic gets
 * nothing stored), and a subscriber of the topic still sees it once. */
static void test_not_retained(const struct broker *b, struct client *pub, struct client *dev1)
{
    struct msg m;
    publish_props(pub, "devices/p2p/dev-1", "r", 1, 1, true, NULL);
    T_CHECK(next_message(dev1, &m) && !m.retain, "p2p copy delivered with retain set");

    struct client *monitor = client_connect(b, "monitor", NULL, 5);
    client_subscribe(monitor, "devices/p2p/#");
    publish(pub, "devices/p2p/nobody", "live", 1);
    expect_next(monitor, "a new subscriber of devices/p2p/#", "devices/p2p/nobody", "live");
    client_close(monitor);
}

/* v5 properties of the publish reach a v5 device. */
static void test_properties(struct client *pub, struct client *dev2)
{
    mosquitto_property *props = NULL;
    struct msg m;
    mosquitto_property_add_string(&props, MQTT_PROP_CONTENT_TYPE, "application/json");
    publish_props(pub, "devices/p2p/dev-2", "{}", 2, 1, false, props);
    mosquitto_property_free_all(&props);
    T_CHECK(next_message(dev2, &m) && !strcmp(m.content_type, "application/json"),
            "content type '%s', want application/json", m.content_type);
}

static void test_plugin_alone(const struct setup *s)
{
    char conf[512];
    struct broker b;
    snprintf(conf, sizeof(conf), "plugin %s\n", s->plugin); /* default prefix */
    struct broker_opts o = {.extra_conf = conf};
    T_REQUIRE(broker_start(&b, &o) == 0, "mosquitto with the plugin did not start");

    struct client *pub = client_connect(&b, "mqforkd-test", NULL, 5);
    struct client *dev1 = client_connect(&b, "dev-1", NULL, 4);
    struct client *dev2 = client_connect(&b, "dev-2", NULL, 5);
    test_delivery(pub, dev1, dev2);
    test_bad_ids(&b, pub, dev1);
    test_not_retained(&b, pub, dev1);
    test_properties(pub, dev2);
    T_CHECK(broker_alive(&b), "mosquitto died");
    client_close(dev2);
    client_close(dev1);
    client_close(pub);
    broker_stop(&b);
}

/* ---- options ---------------------------------------------------------------- */

/* plugin_opt_prefix moves the p2p topics; the default ones are then plain. */
static void test_prefix(const struct setup *s)
{
    char conf[512];
    struct broker b;
    snprintf(conf, sizeof(conf), "plugin %s\nplugin_opt_prefix to/dev/\n", s->plugin);
    struct broker_opts o = {.extra_conf = conf};
    T_REQUIRE(broker_start(&b, &o) == 0, "mosquitto with plugin_opt_prefix did not start");

    struct client *pub = client_connect(&b, "mqforkd-test", NULL, 5);
    struct client *dev1 = client_connect(&b, "dev-1", NULL, 4);
    publish(pub, "devices/p2p/dev-1", "old prefix", 1);
    publish(pub, "to/dev/dev-1", "new prefix", 1);
    expect_next(dev1, "dev-1", "to/dev/dev-1", "new prefix");
    client_close(dev1);
    client_close(pub);
    broker_stop(&b);
}

/* A prefix with a wildcard or without its final '/', or an unknown option,
 * keeps mosquitto from starting (the plugin's init fails). */
static void test_bad_options(const struct setup *s)
{
    static const char *const bad[] = {"plugin_opt_prefix devices/+/\n",
                                      "plugin_opt_prefix devices/p2p\n", "plugin_opt_prefx a/\n"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char conf[512];
        struct broker b;
        snprintf(conf, sizeof(conf), "plugin %s\n%s", s->plugin, bad[i]);
        struct broker_opts o = {.extra_conf = conf};
        fprintf(stderr, "expecting mosquitto to refuse: %s", bad[i]);
        bool started = broker_start(&b, &o) == 0;
        T_CHECK(!started, "mosquitto started with %s", bad[i]);
        if (started)
            broker_stop(&b);
    }
}

/* ---- with conf/mosquitto/acl.example ------------------------------------- */

/* Devices publish only on xiaozhi/<own id>/up and never on devices/p2p/#,
 * mqfork does, and p2p delivery needs no read rule for the device. */
static void test_acl(const struct setup *s)
{
    static const char *const users[] = {"device", "secret", NULL};
    char conf[1024];
    struct broker b;
    snprintf(conf, sizeof(conf), "plugin %s\nplugin_opt_prefix devices/p2p/\nacl_file %s\n",
             s->plugin, s->acl);
    struct broker_opts o = {
        .username = "mqfork", .password = "secret", .more_users = users, .extra_conf = conf};
    T_REQUIRE(broker_start(&b, &o) == 0, "mosquitto with the ACL example did not start");

    struct client *mq = client_connect(&b, "mqforkd-voice", "mqfork", 5);
    struct client *dev1 = client_connect(&b, "dev-1", "device", 4);
    struct client *dev2 = client_connect(&b, "dev-2", "device", 5);
    client_subscribe(mq, "xiaozhi/+/up");

    int r = publish(mq, "devices/p2p/dev-1", "{\"type\":\"hello\"}", 1);
    T_CHECK(r >= 0 && r < 0x80, "mqfork's p2p publish refused: reason %d", r);
    expect_next(dev1, "dev-1", "devices/p2p/dev-1", "{\"type\":\"hello\"}");

    r = publish(dev2, "devices/p2p/dev-1", "forged", 1);
    T_CHECK(r == MQTT_RC_NOT_AUTHORIZED, "device's p2p publish: reason %d, want 0x87", r);
    r = publish(dev2, "xiaozhi/dev-1/up", "impostor", 1);
    T_CHECK(r == MQTT_RC_NOT_AUTHORIZED, "publish on another's uplink: reason %d, want 0x87", r);
    r = publish(dev2, "xiaozhi/dev-2/up", "own", 1);
    T_CHECK(r == 0, "publish on own uplink: reason %d, want 0", r);
    expect_next(mq, "mqfork", "xiaozhi/dev-2/up", "own");

    publish(dev1, "xiaozhi/dev-2/up", "impostor", 1); /* 3.1.1: refused silently */
    publish(dev1, "xiaozhi/dev-1/up", "own", 1);
    expect_next(mq, "mqfork", "xiaozhi/dev-1/up", "own");
    publish(mq, "devices/p2p/dev-1", "marker", 1);
    expect_next(dev1, "dev-1", "devices/p2p/dev-1", "marker");

    client_close(dev2);
    client_close(dev1);
    client_close(mq);
    broker_stop(&b);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s PATH/mqfork_p2p.so PATH/acl.example\n", argv[0]);
        return 2;
    }
    struct setup s = {.plugin = argv[1], .acl = argv[2]};
    signal(SIGPIPE, SIG_IGN);
    mosquitto_lib_init();
    test_plugin_alone(&s);
    test_prefix(&s);
    test_bad_options(&s);
    test_acl(&s);
    mosquitto_lib_cleanup();
    T_DONE();
}
