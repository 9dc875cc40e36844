/* mqtt.c - libmosquitto in the supervisor's event loop (see mqtt.h): the
 * connection, its socket and timers, the subscriptions, the figures and the
 * hand-over of everything before exit. What it sends is mqtt_out.c's.
 *
 * The loop watches the client's socket: readable -> mosquitto_loop_read
 * until the socket is drained (libmosquitto reads one QoS 0 packet per
 * call), then a new one-shot watch for readability; want_write ->
 * a one-shot watch for writability. What the replies of a round left to
 * write is flushed by a before-sleep hook; keepalive and reconnecting run
 * on the loop's timers. Nothing here waits. */
#include "supervisor/mqtt.h"

#include <errno.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <openssl/x509.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/log.h"
#include "proto/topic.h"
#include "shm/clock.h"
#include "shm/segment.h"
#include "shm/statblock.h"
#include "supervisor/loop.h"
#include "supervisor/mqtt_impl.h"

#define READS_PER_WAKEUP 1024 /* then let the rest of the loop run */

#define FIG(kind, member, name, help) STATS_FIELD(kind, struct mqtt_figures, member, name, help)

/* The names, types and help texts mqforkstat has always shown for them. */
static const struct stats_field_desc mqtt_fields[] = {
    FIG(STATS_GAUGE, connected, "mqtt_connected", "1 while connected to the MQTT broker."),
    FIG(STATS_GAUGE, queue, "mqtt_queue", "Results waiting to be published."),
    FIG(STATS_COUNTER, reconnects, "mqtt_reconnects", "Broker connections made after the first."),
    FIG(STATS_COUNTER, msgs_in, "mqtt_messages_in", "MQTT messages received."),
    FIG(STATS_COUNTER, bytes_in, "mqtt_bytes_in", "MQTT payload bytes received."),
    FIG(STATS_COUNTER, msgs_out, "mqtt_messages_out", "MQTT messages published."),
    FIG(STATS_COUNTER, bytes_out, "mqtt_bytes_out", "MQTT payload bytes published."),
    FIG(STATS_COUNTER, dropped, "mqtt_dropped",
        "Results dropped: outbound queue full, or a topic no broker would take."),
};

/* libmosquitto sends PINGREQ once keepalive_s (>= 5) passed without
 * traffic: asked every second, it is at most a second late. */
#define KEEPALIVE_CHECK_NS NS_PER_S

static void status_json(const struct mqtt *m, const char *status, char *buf, size_t len)
{
    snprintf(buf, len, "{\"status\":\"%s\",\"instance\":\"%s\",\"pid\":%d,\"version\":\"%s\"}",
             status, m->conf->instance, (int)getpid(), MQFORK_VERSION);
}

/* ---- the socket in the loop ------------------------------------------- */

static void on_readable(void *ctx, int events);
static void on_writable(void *ctx, int events);

static void unwatch(struct mqtt *m)
{
    loop_cancel(m->loop, m->rwatch);
    loop_cancel(m->loop, m->wwatch);
    m->rwatch = m->wwatch = NULL;
    m->fd = -1;
}

static void schedule_reconnect(struct mqtt *m)
{
    const struct conf_broker *b = &m->conf->broker;
    m->state = MQTT_IDLE;
    loop_timer_arm(m->loop, &m->retry, loop_now_ns(m->loop) + (uint64_t)(m->backoff_s * 1e9));
    m->backoff_s = m->backoff_s * 2 < b->reconnect_max_s ? m->backoff_s * 2 : b->reconnect_max_s;
    m->changed = true;
}

/* libmosquitto reports a lost connection from inside loop_read/loop_write
 * through on_disconnect; an error it returns without one lands here. */
static void connection_failed(struct mqtt *m, int rc)
{
    if (m->state == MQTT_IDLE)
        return;
    log_warn("mqtt: connection to %s:%d lost: %s", m->conf->broker.host, m->conf->broker.port,
             rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
    unwatch(m);
    schedule_reconnect(m);
}

static void want_write(struct mqtt *m)
{
    if (m->fd >= 0 && !m->wwatch && mosquitto_want_write(m->mosq))
        m->wwatch = loop_watch(m->loop, m->fd, POLLOUT, false, on_writable, m);
}

static void flush_writes(struct mqtt *m)
{
    for (int i = 0; i < READS_PER_WAKEUP && m->fd >= 0 && mosquitto_want_write(m->mosq); i++) {
        errno = 0;
        int rc = mosquitto_loop_write(m->mosq, 1);
        if (rc != MOSQ_ERR_SUCCESS) {
            connection_failed(m, rc);
            return;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
    }
    want_write(m);
}

/* The read watch is one-shot, armed again only once the socket is drained.
 * A watch that stays armed while we read makes every packet the broker
 * sends run io_uring's wake-up under the socket's lock, which our own reads
 * then spin on: a third of the supervisor's time under load. */
static void want_read(struct mqtt *m)
{
    if (m->fd >= 0 && !m->rwatch && !m->more_to_read)
        m->rwatch = loop_watch(m->loop, m->fd, POLLIN, false, on_readable, m);
}

static void read_all(struct mqtt *m)
{
    m->more_to_read = false;
    for (int i = 0; m->fd >= 0; i++) {
        if (i == READS_PER_WAKEUP) {
            m->more_to_read = true; /* the rest next round: let jobs move too */
            break;
        }
        errno = 0;
        int rc = mosquitto_loop_read(m->mosq, 1);
        if (rc != MOSQ_ERR_SUCCESS) {
            connection_failed(m, rc);
            return;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
    }
    want_read(m);
}

static void on_readable(void *ctx, int events)
{
    struct mqtt *m = ctx;
    (void)events;     /* a poll error shows in the read that follows */
    m->rwatch = NULL; /* one-shot: gone once fired */
    if (m->fd >= 0) {
        read_all(m);
        flush_writes(m);
    }
}

static void on_writable(void *ctx, int events)
{
    struct mqtt *m = ctx;
    m->wwatch = NULL; /* one-shot: gone once fired */
    if (m->fd >= 0)
        flush_writes(m);
}

/* ---- connecting ------------------------------------------------------- */

static void try_connect(struct mqtt *m)
{
    const struct conf_broker *b = &m->conf->broker;
    int rc;
    if (!m->ever_connected && m->v5 && !b->clean_session && b->session_expiry_s) {
        /* libmosquitto takes CONNECT properties only in its blocking
         * connect; later reconnects reuse them without blocking. */
        mosquitto_property *props = NULL;
        mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL,
                                     b->session_expiry_s);
        rc = mosquitto_connect_bind_v5(m->mosq, b->host, b->port, (int)b->keepalive_s, NULL, props);
        mosquitto_property_free_all(&props);
    } else if (!m->connect_called) {
        rc = mosquitto_connect_async(m->mosq, b->host, b->port, (int)b->keepalive_s);
    } else {
        rc = mosquitto_reconnect_async(m->mosq);
    }
    /* Once libmosquitto knows host and port, reconnect_async is the way in. */
    m->connect_called |= rc == MOSQ_ERR_SUCCESS || m->ever_connected;
    if (rc != MOSQ_ERR_SUCCESS) {
        log_warn("mqtt: cannot connect to %s:%d: %s; retrying in %.1f s", b->host, b->port,
                 rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc), m->backoff_s);
        schedule_reconnect(m);
        return;
    }
    m->state = MQTT_CONNECTING;
    m->fd = mosquitto_socket(m->mosq);
    want_read(m);
    flush_writes(m);
}

static void send_subscribe(struct mqtt *m, struct subscription *s)
{
    /* No-local: a reply topic that matches our own filter must not loop.
     * (Not on a shared subscription: MQTT v5 forbids it there, and
     * mosquitto then hands the group's messages to one member only.) */
    bool shared = s->match != s->filter;
    int opts = m->v5 && !shared ? MQTT_SUB_OPT_NO_LOCAL : 0;
    int rc = mosquitto_subscribe_v5(m->mosq, &s->mid, s->filter, s->qos, opts, NULL);
    if (rc != MOSQ_ERR_SUCCESS)
        log_warn("mqtt: subscribe %s: %s", s->filter, mosquitto_strerror(rc));
}

static void subscribe_all(struct mqtt *m)
{
    for (size_t i = 0; i < m->nsubs; i++)
        send_subscribe(m, &m->subs[i]);
}

static void on_subscribe(struct mosquitto *mosq, void *ctx, int mid, int count, const int *granted,
                         const mosquitto_property *props)
{
    struct mqtt *m = ctx;
    for (size_t i = 0; i < m->nsubs; i++) {
        if (m->subs[i].mid != mid)
            continue;
        if (count >= 1 && granted[0] >= 0x80)
            log_error("mqtt: the broker refused the subscription to %s: %s", m->subs[i].filter,
                      mosquitto_reason_string(granted[0]));
        else
            log_info("mqtt: subscribed to %s", m->subs[i].filter);
    }
}

static void on_connect(struct mosquitto *mosq, void *ctx, int rc, int flags,
                       const mosquitto_property *props)
{
    struct mqtt *m = ctx;
    const struct conf_broker *b = &m->conf->broker;
    if (rc != 0) {
        log_error("mqtt: %s:%d refused the connection: %s", b->host, b->port,
                  m->v5 ? mosquitto_reason_string(rc) : mosquitto_connack_string(rc));
        return; /* libmosquitto disconnects next; on_disconnect schedules the retry */
    }
    if (m->ever_connected)
        m->n.reconnects++;
    log_info("mqtt: connected to %s:%d as %s%s", b->host, b->port, m->client_id,
             m->ever_connected ? " (reconnected)" : "");
    m->ever_connected = true;
    m->state = MQTT_CONNECTED;
    /* libmosquitto sends the QoS 1 and 2 messages still unacknowledged
     * again, whatever the session: they stay awaited. The QoS 0 ones it
     * had not written are gone, and counted. */
    if (m->in_library > m->unacked) {
        m->n.dropped += m->in_library - m->unacked;
        m->in_library = m->unacked;
    }
    m->backoff_s = b->reconnect_min_s;
    m->changed = true;
    subscribe_all(m);
    char status[256];
    status_json(m, "online", status, sizeof(status));
    mqtt_publish_now(m, m->status_topic, status, strlen(status), 1, true, NULL, 0);
    mqtt_flush_queue(m);
}

static void on_disconnect(struct mosquitto *mosq, void *ctx, int rc,
                          const mosquitto_property *props)
{
    struct mqtt *m = ctx;
    if (m->state == MQTT_IDLE || m->stopping)
        return;
    if (m->state == MQTT_CONNECTED)
        log_warn("mqtt: disconnected from %s:%d: %s; reconnecting", m->conf->broker.host,
                 m->conf->broker.port, mosquitto_strerror(rc));
    unwatch(m);
    schedule_reconnect(m);
}

/* To each sink whose subscription matches, once. With one sink (the routes
 * alone, as before the voice gateway), no topic is matched twice. */
static void deliver(struct mqtt *m, const struct mqtt_message *msg)
{
    if (m->only_sink) {
        m->only_sink->fn(m->only_sink->ctx, msg);
        return;
    }
    uint64_t seq = ++m->msg_seq;
    for (size_t i = 0; i < m->nsubs; i++) {
        struct mqtt_sink *k = m->subs[i].sink;
        bool match = false;
        if (k->last_msg == seq ||
            mosquitto_topic_matches_sub(m->subs[i].match, msg->topic, &match) != 0 || !match)
            continue;
        k->last_msg = seq;
        k->fn(k->ctx, msg);
    }
}

static void on_mosq_message(struct mosquitto *mosq, void *ctx, const struct mosquitto_message *msg,
                            const mosquitto_property *props)
{
    struct mqtt *m = ctx;
    struct mqtt_message out = {
        .topic = msg->topic, .payload = msg->payload, .len = (size_t)msg->payloadlen};
    char *response = NULL;
    void *corr = NULL;
    uint16_t corr_len = 0;
    if (props) {
        mosquitto_property_read_string(props, MQTT_PROP_RESPONSE_TOPIC, &response, false);
        mosquitto_property_read_binary(props, MQTT_PROP_CORRELATION_DATA, &corr, &corr_len, false);
    }
    out.response_topic = response;
    out.correlation = corr;
    out.correlation_len = corr_len;
    m->n.msgs_in++;
    m->n.bytes_in += out.len;
    m->changed = true;
    deliver(m, &out);
    free(response);
    free(corr);
}

static void publish_figures(struct mqtt *m)
{
    m->n.connected = m->state == MQTT_CONNECTED;
    m->n.queue = (uint32_t)(m->qlen + m->in_library);
    if (m->stats)
        stats_block_publish(m->stats, &m->n, sizeof(m->n));
    m->changed = false;
}

/* ---- in the loop: the round's flush and the timers ---------------------- */

/* Before the loop sleeps: what the round's replies left unwritten goes out,
 * reading goes on where a wake-up cut it short (work: no sleep yet), and
 * the figures are published if they changed. */
static bool before_sleep(void *ctx)
{
    struct mqtt *m = ctx;
    bool reading = m->more_to_read;
    if (reading)
        read_all(m);
    if (m->fd >= 0)
        flush_writes(m);
    if (m->changed)
        publish_figures(m);
    return reading;
}

static void on_retry(void *ctx)
{
    struct mqtt *m = ctx;
    if (m->state == MQTT_IDLE)
        try_connect(m);
}

static void on_keepalive(void *ctx)
{
    struct mqtt *m = ctx;
    loop_timer_arm(m->loop, &m->keepalive, loop_now_ns(m->loop) + KEEPALIVE_CHECK_NS);
    if (m->state == MQTT_IDLE || m->fd < 0)
        return;
    int rc = mosquitto_loop_misc(m->mosq);
    if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN) {
        connection_failed(m, rc);
        return;
    }
    flush_writes(m);
}

/* ---- public ------------------------------------------------------------ */

static int configure(struct mqtt *m)
{
    const struct conf_broker *b = &m->conf->broker;
    struct mosquitto *q = m->mosq;
    mosquitto_int_option(q, MOSQ_OPT_PROTOCOL_VERSION,
                         m->v5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
    mosquitto_int_option(q, MOSQ_OPT_TCP_NODELAY, 1);
    /* libmosquitto (2.0.11 to 2.0.x) keeps the QoS 2 messages it received
     * and has not been released over a reconnect, and charges them to its
     * receive quota again when the broker sends them again. With the
     * default quota of 20, one reconnect with QoS 2 in flight ends in a
     * "protocol error" at each later connection: cut off for good
     * (test_exactly_once). The quota only counts handshakes in progress
     * (every message is acknowledged as it arrives), so its largest value
     * costs nothing. */
    mosquitto_int_option(q, MOSQ_OPT_RECEIVE_MAXIMUM, 65535);
    if ((b->username || b->password) &&
        mosquitto_username_pw_set(q, b->username, b->password) != MOSQ_ERR_SUCCESS)
        return -1;
    if (b->tls_enabled) {
        /* Without ca_file, the system's store: what OpenSSL's default paths
         * name (SSL_CERT_DIR and SSL_CERT_FILE included); libmosquitto
         * wants a CA file or directory all the same. */
        const char *capath = NULL;
        if (!b->tls.ca_file) {
            mosquitto_int_option(q, MOSQ_OPT_TLS_USE_OS_CERTS, 1);
            capath = getenv(X509_get_default_cert_dir_env());
            if (!capath)
                capath = X509_get_default_cert_dir();
        }
        int rc =
            mosquitto_tls_set(q, b->tls.ca_file, capath, b->tls.cert_file, b->tls.key_file, NULL);
        if (rc == MOSQ_ERR_SUCCESS)
            rc = mosquitto_tls_opts_set(q, b->tls.verify ? 1 : 0, NULL, NULL);
        if (rc == MOSQ_ERR_SUCCESS && !b->tls.verify)
            rc = mosquitto_tls_insecure_set(q, true);
        if (rc != MOSQ_ERR_SUCCESS) {
            log_error("mqtt: TLS set-up failed: %s", mosquitto_strerror(rc));
            return -1;
        }
    }
    char offline[256];
    status_json(m, "offline", offline, sizeof(offline));
    mosquitto_will_set_v5(q, m->status_topic, (int)strlen(offline), offline, 1, true, NULL);
    mosquitto_connect_v5_callback_set(q, on_connect);
    mosquitto_disconnect_v5_callback_set(q, on_disconnect);
    mosquitto_message_v5_callback_set(q, on_mosq_message);
    mosquitto_subscribe_v5_callback_set(q, on_subscribe);
    mosquitto_publish_v5_callback_set(q, mqtt_on_publish);
    return 0;
}

static int add_block(struct mqtt *m, struct segment *seg)
{
    struct stats_block_spec spec = {
        .name = "mqtt",
        .flags = STATS_BLOCK_GLOBAL, /* its names predate blocks */
        .fields = mqtt_fields,
        .nfields = sizeof(mqtt_fields) / sizeof(mqtt_fields[0]),
        .size = sizeof(struct mqtt_figures),
    };
    if (!seg)
        return 0;
    m->stats = stats_block_add(seg, &spec);
    if (!m->stats)
        log_error("mqtt: cannot add the statistics block: %s", strerror(errno));
    return m->stats ? 0 : -1;
}

/* A client without libmosquitto's wake-up socket pair. The library makes
 * one in mosquitto_new() for mosquitto_loop_start()'s thread, and writes a
 * byte to it for every packet it queues; only mosquitto_loop() reads it
 * back. Our own loop never does, so after the first few hundred publishes
 * the pair is full and each publish made one more syscall that failed
 * (EAGAIN): half of the supervisor's writes, a syscall per published
 * result on the MQTT path, dear in a VM. Refusing the pair (no descriptor
 * may be opened for that moment: the supervisor is single-threaded, and
 * mosquitto_new opens nothing else) is the one way the library offers: it
 * then skips the write; publishes still go out at once. */
static struct mosquitto *client_new(const char *id, bool clean_session, void *obj)
{
    struct rlimit old, none = {0, 0};
    bool limited = getrlimit(RLIMIT_NOFILE, &old) == 0;
    if (limited) {
        none.rlim_max = old.rlim_max;
        limited = setrlimit(RLIMIT_NOFILE, &none) == 0;
    }
    struct mosquitto *mosq = mosquitto_new(id, clean_session, obj);
    int err = errno;
    if (limited && setrlimit(RLIMIT_NOFILE, &old) < 0)
        log_error("mqtt: cannot restore the descriptor limit: %s", strerror(errno));
    errno = err;
    return mosq;
}

struct mqtt *mqtt_new(const struct conf *c, struct loop *loop, struct segment *seg)
{
    mosquitto_lib_init();
    struct mqtt *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->conf = c;
    m->loop = loop;
    m->fd = -1;
    m->v5 = strcmp(c->broker.protocol, "3.1.1") != 0;
    m->backoff_s = c->broker.reconnect_min_s;
    snprintf(m->client_id, sizeof(m->client_id), "%s",
             c->broker.client_id ? c->broker.client_id : "");
    if (!c->broker.client_id)
        snprintf(m->client_id, sizeof(m->client_id), "mqforkd-%s", c->instance);
    if (c->broker.status_topic)
        m->status_topic = strdup(c->broker.status_topic);
    else if (asprintf(&m->status_topic, "mqfork/%s/status", c->instance) < 0)
        m->status_topic = NULL;
    if (add_block(m, seg) < 0) {
        mqtt_free(m);
        return NULL;
    }
    m->hook = (struct loop_hook){.before_sleep = before_sleep, .ctx = m};
    if (m->status_topic)
        m->mosq = client_new(m->client_id, c->broker.clean_session, m);
    if (!m->mosq || configure(m) < 0) {
        log_error("mqtt: cannot set up the client: %s", strerror(errno));
        mqtt_free(m);
        return NULL;
    }
    return m;
}

static struct subscription *find_sub(struct mqtt *m, const char *filter,
                                     const struct mqtt_sink *sink)
{
    for (size_t i = 0; i < m->nsubs; i++)
        if (strcmp(m->subs[i].filter, filter) == 0 && (!sink || m->subs[i].sink == sink))
            return &m->subs[i];
    return NULL;
}

static void find_only_sink(struct mqtt *m)
{
    m->only_sink = m->nsubs ? m->subs[0].sink : NULL;
    for (size_t i = 1; i < m->nsubs && m->only_sink; i++)
        if (m->subs[i].sink != m->only_sink)
            m->only_sink = NULL;
}

int mqtt_subscribe(struct mqtt *m, const char *filter, int qos, struct mqtt_sink *sink)
{
    struct subscription *s = find_sub(m, filter, sink);
    if (s && s->qos == qos)
        return 0; /* already there: no gap, no duplicate */
    if (!s) {
        s = realloc(m->subs, (m->nsubs + 1) * sizeof(*s));
        if (!s)
            return -1;
        m->subs = s;
        s = &m->subs[m->nsubs];
        if (!(s->filter = strdup(filter)))
            return -1;
        s->match = topic_filter_base(s->filter); /* what a topic is matched against */
        s->sink = sink;
        m->nsubs++;
        find_only_sink(m);
    }
    s->qos = qos;
    s->mid = 0;
    if (m->state == MQTT_CONNECTED)
        send_subscribe(m, s);
    return 0;
}

void mqtt_unsubscribe(struct mqtt *m, const char *filter, struct mqtt_sink *sink)
{
    struct subscription *s = find_sub(m, filter, sink);
    if (!s)
        return;
    free(s->filter);
    *s = m->subs[--m->nsubs];
    find_only_sink(m);
    if (m->state == MQTT_CONNECTED && !find_sub(m, filter, NULL))
        mosquitto_unsubscribe_v5(m->mosq, NULL, filter, NULL);
}

static void forget_subscriptions(struct mqtt *m)
{
    for (size_t i = 0; i < m->nsubs; i++)
        free(m->subs[i].filter);
    free(m->subs);
    m->subs = NULL;
    m->nsubs = 0;
    m->only_sink = NULL;
}

int mqtt_start(struct mqtt *m)
{
    if (loop_timer_init(m->loop, &m->retry, on_retry, m) < 0 ||
        loop_timer_init(m->loop, &m->keepalive, on_keepalive, m) < 0) {
        log_error("mqtt: cannot set up the client's timers: %s", strerror(errno));
        return -1;
    }
    loop_hook_add(m->loop, &m->hook);
    m->in_loop = true;
    loop_timer_arm(m->loop, &m->keepalive, loop_now_ns(m->loop) + KEEPALIVE_CHECK_NS);
    try_connect(m);
    return 0;
}

/* Before we disconnect, everything waiting must be written and every QoS 1
 * message (error reports, the offline status) must have its PUBACK read:
 * libmosquitto closes the socket right after DISCONNECT, and closing with
 * unread data makes the kernel send a reset, on which the broker drops what
 * it had not read yet. Until DEADLINE_NS: we are exiting. */
static void deliver_all(struct mqtt *m, uint64_t deadline_ns)
{
    uint64_t now;
    while (m->state == MQTT_CONNECTED && m->fd >= 0 && (m->q_head || m->in_library) &&
           (now = mono_ns()) < deadline_ns) {
        mqtt_flush_queue(m);
        struct pollfd p = {.fd = m->fd,
                           .events = POLLIN | (mosquitto_want_write(m->mosq) ? POLLOUT : 0)};
        uint64_t left_ms = (deadline_ns - now) / 1000000;
        if (poll(&p, 1, left_ms < 10 ? (int)left_ms + 1 : 10) < 0)
            return;
        if ((p.revents & POLLOUT) && mosquitto_loop_write(m->mosq, 1) != MOSQ_ERR_SUCCESS)
            return;
        if (p.revents & POLLIN)
            read_all(m);
    }
}

size_t mqtt_flush(struct mqtt *m, uint64_t deadline_ns)
{
    if (!m)
        return 0;
    deliver_all(m, deadline_ns);
    size_t left = m->qlen + m->in_library;
    if (left)
        log_error("mqtt: %zu messages (results and error reports) could not be delivered "
                  "before exit",
                  left);
    return left;
}

void mqtt_free(struct mqtt *m)
{
    if (!m)
        return;
    if (m->state == MQTT_CONNECTED) {
        char offline[256];
        status_json(m, "offline", offline, sizeof(offline));
        mqtt_publish_now(m, m->status_topic, offline, strlen(offline), 1, true, NULL, 0);
        m->stopping = true;
        deliver_all(m, mono_ns() + NS_PER_S);
        mosquitto_disconnect_v5(m->mosq, 0, NULL);
    }
    m->state = MQTT_IDLE;
    unwatch(m);
    if (m->in_loop) {
        loop_hook_remove(m->loop, &m->hook);
        loop_timer_fini(m->loop, &m->retry);
        loop_timer_fini(m->loop, &m->keepalive);
    }
    forget_subscriptions(m);
    mqtt_drop_queue(m);
    if (m->mosq)
        mosquitto_destroy(m->mosq);
    free(m->status_topic);
    free(m);
    mosquitto_lib_cleanup();
}
