/* mqfork-load-conn.c - the MQTT session both modes share: the client and its
 * callbacks, connecting and subscribing before anything is published, and
 * one turn of the loop (socket, signals, keepalive) under a deadline. */
#include <errno.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <poll.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "shm/clock.h"
#include "tools/mqfork-load.h"

static void on_connect(struct mosquitto *m, void *obj, int rc, int flags,
                       const mosquitto_property *props)
{
    struct conn *c = obj;
    c->connacked = true;
    c->connack_rc = rc;
}

static void on_disconnect(struct mosquitto *m, void *obj, int rc, const mosquitto_property *props)
{
    struct conn *c = obj;
    c->lost = true;
}

static void on_subscribe(struct mosquitto *m, void *obj, int mid, int n, const int *granted,
                         const mosquitto_property *props)
{
    struct conn *c = obj;
    for (int i = 0; i < n; i++)
        if (granted[i] >= 128)
            c->sub_refused = true;
    c->subacks_wanted--;
}

/* Let libmosquitto read what arrived. FIONREAD bounds the loop: loop_read
 * does not say whether it found anything, and under load one wake-up should
 * take everything that is there. */
static int conn_read(struct conn *c, int fd)
{
    for (int i = 0; i < READS_PER_WAKE; i++) {
        int avail = 0;
        int rc = mosquitto_loop_read(c->m, 1);
        if (rc != MOSQ_ERR_SUCCESS)
            return rc;
        if (ioctl(fd, FIONREAD, &avail) < 0 || avail <= 0)
            break;
    }
    return MOSQ_ERR_SUCCESS;
}

/* Wait for the socket, a signal or the deadline (absolute monotonic ns, 0 for
 * none), then let libmosquitto do its reading, writing and keepalive. Returns
 * false once the connection is gone. */
bool conn_step(struct conn *c, uint64_t deadline)
{
    int fd = mosquitto_socket(c->m);
    uint64_t now = mono_ns();
    uint64_t until = c->last_misc + MISC_EVERY_NS;
    int rc = MOSQ_ERR_SUCCESS;

    if (fd < 0 || c->lost)
        return false;
    if (deadline && deadline < until)
        until = deadline;
    uint64_t wait = until > now ? until - now : 0;
    struct timespec ts = {(time_t)(wait / NS), (long)(wait % NS)};
    struct pollfd pfd[2] = {
        {.fd = fd, .events = POLLIN | (mosquitto_want_write(c->m) ? POLLOUT : 0)},
        {.fd = c->sigfd, .events = POLLIN},
    };
    if (ppoll(pfd, 2, &ts, NULL) < 0 && errno != EINTR)
        return false;
    if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR))
        rc = conn_read(c, fd);
    if (rc == MOSQ_ERR_SUCCESS && mosquitto_want_write(c->m))
        rc = mosquitto_loop_write(c->m, 1);
    now = mono_ns();
    if (rc == MOSQ_ERR_SUCCESS && now - c->last_misc >= MISC_EVERY_NS) {
        c->last_misc = now;
        rc = mosquitto_loop_misc(c->m);
    }
    if (pfd[1].revents & POLLIN) {
        struct signalfd_siginfo si;
        while (read(c->sigfd, &si, sizeof(si)) == sizeof(si))
            c->stop = true;
    }
    if (rc != MOSQ_ERR_SUCCESS)
        c->lost = true;
    return !c->lost;
}

bool conn_setup(struct conn *c, const struct opts *o)
{
    struct mosquitto *m = mosquitto_new(NULL, true, c);
    if (!m)
        return false;
    c->m = m;
    mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, o->version);
    /* Without it every small reply waits for the previous one's ACK. */
    mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
    if (o->version == MQTT_PROTOCOL_V5) {
        mosquitto_int_option(m, MOSQ_OPT_RECEIVE_MAXIMUM, 65535);
        mosquitto_int_option(m, MOSQ_OPT_SEND_MAXIMUM, 65535);
    }
    if (o->user && mosquitto_username_pw_set(m, o->user, o->pass) != MOSQ_ERR_SUCCESS)
        return false;
    if (o->cafile) {
        int rc = mosquitto_tls_set(m, o->cafile, NULL, o->cert, o->key, NULL);
        if (rc != MOSQ_ERR_SUCCESS) {
            load_warn("TLS setup: %s",
                      rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
            return false;
        }
    }
    mosquitto_connect_v5_callback_set(m, on_connect);
    mosquitto_disconnect_v5_callback_set(m, on_disconnect);
    mosquitto_subscribe_v5_callback_set(m, on_subscribe);
    return true;
}

static const char *connack_text(const struct conn *c)
{
    if (c->o->version == MQTT_PROTOCOL_V5)
        return mosquitto_reason_string(c->connack_rc);
    return mosquitto_connack_string(c->connack_rc);
}

/* Run the loop until done() or the deadline; whether done() came true (the
 * broker may answer and close in one go, as with a refused CONNACK). */
static bool conn_wait(struct conn *c, bool (*done)(const struct conn *), uint64_t deadline)
{
    while (!done(c) && !c->stop && mono_ns() < deadline && conn_step(c, deadline)) {
    }
    return done(c);
}

static bool connacked(const struct conn *c)
{
    return c->connacked;
}

static bool subscribed(const struct conn *c)
{
    return c->subacks_wanted <= 0;
}

/* Connect, wait for CONNACK, subscribe to filters and wait for the SUBACKs,
 * so that not a single reply can be published before we listen. */
bool conn_open(struct conn *c, const char *const filters[], int nfilters)
{
    const struct opts *o = c->o;
    int rc = mosquitto_connect(c->m, o->host, o->port, o->keepalive);
    if (rc != MOSQ_ERR_SUCCESS) {
        int err = errno;
        bool refused = rc == MOSQ_ERR_ERRNO && err == ECONNREFUSED;
        load_warn("cannot connect to %s:%d: %s%s", o->host, o->port,
                  rc == MOSQ_ERR_ERRNO ? strerror(err) : mosquitto_strerror(rc),
                  o->cafile && !refused
                      ? " (TLS handshake failed? check --cafile, --cert, --key and -h)"
                      : "");
        return false;
    }
    c->last_misc = mono_ns();
    if (!conn_wait(c, connacked, mono_ns() + CONNECT_WAIT_NS)) {
        load_warn("no CONNACK from %s:%d%s", o->host, o->port,
                  c->lost ? ": connection closed (TLS or protocol mismatch?)" : " within 5 s");
        return false;
    }
    if (c->connack_rc != 0) {
        load_warn("%s:%d refused the connection: %s", o->host, o->port, connack_text(c));
        return false;
    }
    for (int i = 0; i < nfilters; i++) {
        if (mosquitto_subscribe(c->m, NULL, filters[i], o->qos) != MOSQ_ERR_SUCCESS) {
            load_warn("cannot subscribe to %s", filters[i]);
            return false;
        }
        c->subacks_wanted++;
    }
    if (!conn_wait(c, subscribed, mono_ns() + CONNECT_WAIT_NS) || c->sub_refused || c->lost) {
        load_warn("subscription to %s refused or unanswered", filters[0]);
        return false;
    }
    return true;
}
