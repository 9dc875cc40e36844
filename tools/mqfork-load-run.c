/* mqfork-load-run.c - the load mode: the payloads, publishing requests at
 * the clock's pace or as a window allows, matching each reply (or error
 * report) to its request, and the run from first send to last straggler. */
#include <errno.h>
#include <inttypes.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "shm/clock.h"
#include "tools/mqfork-load.h"
#include "tools/sigfd.h"

static unsigned char *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    size_t cap = 0, len = 0;
    if (!f) {
        load_warn("cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 65536;
            unsigned char *nb = realloc(buf, cap);
            if (!nb)
                break;
            buf = nb;
        }
        size_t r = fread(buf + len, 1, cap - len, f);
        len += r;
        if (r == 0)
            break;
    }
    bool bad = ferror(f) || len < cap;
    fclose(f);
    if (bad && len == cap) {
        load_warn("cannot read %s", path);
        free(buf);
        return NULL;
    }
    *size = len;
    return buf;
}

static bool payloads_alloc(struct payloads *pl, size_t n)
{
    pl->off = calloc(n, sizeof(*pl->off));
    pl->len = calloc(n, sizeof(*pl->len));
    pl->n = n;
    return pl->off && pl->len;
}

/* Split a file of length-prefixed packets (what opus.encode outputs). */
static bool payloads_framed(struct payloads *pl, const char *path, size_t size)
{
    size_t n = 0, pos;
    for (pos = 0; pos + 2 <= size; n++)
        pos += 2 + ((size_t)pl->buf[pos] << 8 | pl->buf[pos + 1]);
    if (pos != size || n == 0) {
        load_warn("%s: not a sequence of 2-byte big-endian length + packet (%s)", path,
                  n ? "last packet truncated" : "no packet");
        return false;
    }
    if (!payloads_alloc(pl, n))
        return false;
    pos = 0;
    for (size_t i = 0; i < n; i++) {
        pl->len[i] = (size_t)pl->buf[pos] << 8 | pl->buf[pos + 1];
        pl->off[i] = pos + 2;
        pos += 2 + pl->len[i];
    }
    return true;
}

static bool payloads_load(struct payloads *pl, const struct opts *o)
{
    size_t size;
    memset(pl, 0, sizeof(*pl));
    if (o->file) {
        pl->buf = read_file(o->file, &size);
        if (!pl->buf)
            return false;
        if (!o->raw)
            return payloads_framed(pl, o->file, size);
    } else if (o->message) {
        size = strlen(o->message);
        pl->buf = (unsigned char *)strdup(o->message);
    } else {
        size = o->size >= 0 ? (size_t)o->size : 64;
        pl->buf = malloc(size ? size : 1);
        if (pl->buf && size && getrandom(pl->buf, size, 0) != (ssize_t)size)
            memset(pl->buf, 0xa5, size); /* entropy is not the point here */
    }
    if (!pl->buf || !payloads_alloc(pl, 1))
        return false;
    pl->len[0] = size;
    return true;
}

static void payloads_free(struct payloads *pl)
{
    free(pl->buf);
    free(pl->off);
    free(pl->len);
}

static bool track_grow(struct track *t, uint64_t seq)
{
    if (seq < t->cap)
        return true;
    size_t cap = t->cap ? t->cap * 2 : 65536;
    uint64_t *n = realloc(t->sent_ns, cap * sizeof(*n));
    if (!n)
        return false;
    memset(n + t->cap, 0, (cap - t->cap) * sizeof(*n));
    t->sent_ns = n;
    t->cap = cap;
    return true;
}

static void track_latency(struct track *t, uint64_t lat)
{
    if (t->lat_len == t->lat_cap) {
        size_t cap = t->lat_cap ? t->lat_cap * 2 : 65536;
        uint64_t *n = realloc(t->lat_ns, cap * sizeof(*n));
        if (!n)
            return; /* the answer still counts; only its latency is not kept */
        t->lat_ns = n;
        t->lat_cap = cap;
    }
    t->lat_ns[t->lat_len++] = lat;
}

/* Request seq got its reply at now. */
static void track_answer(struct track *t, uint64_t seq, uint64_t now)
{
    if (seq >= t->sent) {
        t->unmatched++;
        return;
    }
    if (t->sent_ns[seq] == 0) {
        t->dups++;
        return;
    }
    track_latency(t, now - t->sent_ns[seq]);
    t->sent_ns[seq] = 0;
    if (!t->answered++)
        t->t_first_answer = now;
    t->t_last_answer = now;
    t->t_progress = now;
}

uint64_t track_outstanding(const struct track *t)
{
    return t->sent - t->answered - t->errors_matched;
}

static uint64_t corr_decode(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < CORR_LEN; i++)
        v = v << 8 | p[i];
    return v;
}

static void corr_encode(uint64_t v, unsigned char *p)
{
    for (int i = CORR_LEN - 1; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

/* The request's sequence number from its reply's correlation data, or -1. */
static int64_t reply_seq(const mosquitto_property *props)
{
    void *data = NULL;
    uint16_t len = 0;
    int64_t seq = -1;
    if (mosquitto_property_read_binary(props, MQTT_PROP_CORRELATION_DATA, &data, &len, false) &&
        len == CORR_LEN)
        seq = (int64_t)corr_decode(data);
    free(data);
    return seq;
}

static bool topic_matches(const char *filter, const char *topic)
{
    bool match = false;
    return filter && mosquitto_topic_matches_sub(filter, topic, &match) == MOSQ_ERR_SUCCESS &&
           match;
}

static void on_error_report(struct load *l, const mosquitto_property *props)
{
    struct track *t = &l->tr;
    int64_t seq = l->fifo ? -1 : reply_seq(props);
    t->errors++;
    /* An error report carrying the request's correlation data is that
     * request's outcome: not lost, just not answered. */
    if (seq >= 0 && (uint64_t)seq < t->sent && t->sent_ns[seq]) {
        t->sent_ns[seq] = 0;
        t->errors_matched++;
        t->t_progress = mono_ns();
    }
}

static void on_reply(struct mosquitto *m, void *obj, const struct mosquitto_message *msg,
                     const mosquitto_property *props)
{
    struct conn *c = obj;
    struct load *l = c->app;
    struct track *t = &l->tr;
    uint64_t now = mono_ns();

    if (topic_matches(l->o->errors, msg->topic)) {
        on_error_report(l, props);
        return;
    }
    if (!l->fifo) {
        int64_t seq = reply_seq(props);
        if (seq < 0)
            t->unmatched++;
        else
            track_answer(t, (uint64_t)seq, now);
        return;
    }
    /* 3.1.1 has no correlation data: the oldest unanswered request is the
     * one this reply belongs to, which holds while the responder keeps order. */
    while (t->fifo_next < t->sent && t->sent_ns[t->fifo_next] == 0)
        t->fifo_next++;
    track_answer(t, t->fifo_next, now);
}

/* Publish request number seq now. */
static bool send_one(struct load *l, uint64_t seq)
{
    const struct opts *o = l->o;
    long dev = (long)(seq % (uint64_t)o->devices);
    size_t pkt = (size_t)(seq / (uint64_t)o->devices % l->pl.n);
    char topic[TOPIC_MAX], rtopic[TOPIC_MAX];
    unsigned char corr[CORR_LEN];
    mosquitto_property *props = NULL;

    if (!expand(o->topic, dev, NULL, topic, sizeof(topic)) || !track_grow(&l->tr, seq))
        return false;
    if (!l->fifo) {
        corr_encode(seq, corr);
        mosquitto_property_add_binary(&props, MQTT_PROP_CORRELATION_DATA, corr, CORR_LEN);
    }
    if (o->response_topic && expand(o->response_topic, dev, NULL, rtopic, sizeof(rtopic)))
        mosquitto_property_add_string(&props, MQTT_PROP_RESPONSE_TOPIC, rtopic);
    uint64_t now = mono_ns();
    l->tr.sent_ns[seq] = now;
    int rc = mosquitto_publish_v5(l->c->m, NULL, topic, (int)l->pl.len[pkt],
                                  l->pl.buf + l->pl.off[pkt], o->qos, false, props);
    mosquitto_property_free_all(&props);
    if (rc != MOSQ_ERR_SUCCESS) {
        l->tr.sent_ns[seq] = 0;
        if (rc != MOSQ_ERR_NO_CONN && rc != MOSQ_ERR_CONN_LOST)
            load_warn("publish to %s: %s", topic, mosquitto_strerror(rc));
        l->c->lost = true;
        return false;
    }
    l->tr.sent++;
    l->tr.t_last_send = now;
    return true;
}

/* How many requests should have been published by now: request k is due at
 * t0 + k/rate, so the pace follows the clock, not the loop's speed. */
static uint64_t due_count(const struct load *l, uint64_t now)
{
    const struct opts *o = l->o;
    uint64_t due = UINT64_MAX;
    if (o->rate > 0)
        due = (uint64_t)((double)(now - l->t0) * o->rate / (double)NS) + 1;
    if (o->window > 0) {
        uint64_t cap = track_outstanding(&l->tr) >= (uint64_t)o->window
                           ? l->tr.sent
                           : l->tr.sent + ((uint64_t)o->window - track_outstanding(&l->tr));
        if (cap < due)
            due = cap;
    }
    if (o->count && o->count < due)
        due = o->count;
    return due;
}

static uint64_t due_time(const struct load *l, uint64_t k)
{
    return l->t0 + (uint64_t)((double)k * (double)NS / l->o->rate);
}

/* Publish what is due; false when the connection failed. */
static bool send_due(struct load *l, uint64_t now)
{
    uint64_t due = due_count(l, now);
    for (int i = 0; i < BURST_MAX && l->tr.sent < due; i++)
        if (!send_one(l, l->tr.sent))
            return false;
    return true;
}

/* Sending is over: count reached, duration passed, stopped, or (window mode)
 * nothing answered for a whole timeout while the window is full. */
static bool sending_done(const struct load *l, uint64_t now)
{
    const struct opts *o = l->o;
    if (o->count && l->tr.sent >= o->count)
        return true;
    if (o->duration > 0 && o->rate <= 0 && now - l->t0 >= (uint64_t)(o->duration * (double)NS))
        return true;
    if (o->window > 0 && o->rate <= 0 && track_outstanding(&l->tr) >= (uint64_t)o->window &&
        now - l->tr.t_progress >= (uint64_t)(o->timeout * (double)NS)) {
        load_warn("no answers for %.1f s with %ld requests outstanding; giving up", o->timeout,
                  o->window);
        return true;
    }
    return false;
}

static uint64_t min_nonzero(uint64_t a, uint64_t b)
{
    if (!a)
        return b;
    if (!b)
        return a;
    return a < b ? a : b;
}

/* When the sending phase next has something to do. */
static uint64_t send_wake(const struct load *l)
{
    const struct opts *o = l->o;
    uint64_t wake = 0;
    if (o->duration > 0 && o->rate <= 0)
        wake = l->t0 + (uint64_t)(o->duration * (double)NS);
    if (o->rate > 0 && (!o->count || l->tr.sent < o->count))
        wake = min_nonzero(wake, due_time(l, l->tr.sent));
    if (o->window > 0 && o->rate <= 0)
        wake = min_nonzero(wake, l->tr.t_progress + (uint64_t)(o->timeout * (double)NS));
    return wake;
}

/* The load run proper: send while sending is not done, then wait for the
 * stragglers until all are answered or the timeout passes. */
static const char *run_load(struct load *l)
{
    const struct opts *o = l->o;
    struct conn *c = l->c;
    struct interim iv = {0};
    uint64_t straggle_end = 0;

    l->t0 = l->tr.t_progress = mono_ns();
    iv.next = o->interval > 0 ? l->t0 + (uint64_t)(o->interval * (double)NS) : 0;
    iv.last_t = l->t0;
    for (;;) {
        uint64_t now = mono_ns();
        if (!straggle_end && (c->stop || sending_done(l, now)))
            straggle_end = now + (uint64_t)(o->timeout * (double)NS);
        if (!straggle_end && !send_due(l, now))
            return "connection to the broker lost";
        if (straggle_end && (track_outstanding(&l->tr) == 0 || now >= straggle_end || c->stop))
            return NULL;
        if (iv.next && now >= iv.next)
            print_interim(l, &iv, now);
        uint64_t wake = min_nonzero(straggle_end ? straggle_end : send_wake(l), iv.next);
        /* In window mode with room left, publish again without sleeping. */
        if (!straggle_end && o->rate <= 0 && l->tr.sent < due_count(l, now))
            wake = now;
        if (!conn_step(c, wake))
            return "connection to the broker lost";
    }
}

int main_load(const struct opts *o)
{
    struct conn c = {.o = o, .sigfd = signals_fd()};
    struct load l = {.c = &c, .o = o, .fifo = o->version != MQTT_PROTOCOL_V5};
    const char *filters[2] = {o->reply, o->errors};
    char reply[TOPIC_MAX];
    struct report r;
    int status = 0;

    c.app = &l;
    if (!expand(o->reply, 0, "+", reply, sizeof(reply)) || !payloads_load(&l.pl, o))
        return EXIT_USAGE;
    filters[0] = reply;
    if (!conn_setup(&c, o))
        return EXIT_CONN;
    mosquitto_message_v5_callback_set(c.m, on_reply);
    if (!conn_open(&c, filters, o->errors ? 2 : 1)) {
        status = EXIT_CONN;
    } else {
        const char *err = run_load(&l);
        make_report(&l, &r, mono_ns());
        r.error = err;
        if (err) {
            load_warn("%s after %" PRIu64 " sent, %" PRIu64 " answered", err, r.sent, r.answered);
            status = EXIT_CONN;
        }
        o->json ? print_json(&l, &r) : print_text(&l, &r);
        mosquitto_disconnect(c.m);
    }
    mosquitto_destroy(c.m);
    payloads_free(&l.pl);
    free(l.tr.sent_ns);
    free(l.tr.lat_ns);
    return status;
}
