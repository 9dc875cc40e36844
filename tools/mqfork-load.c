/* mqfork-load.c - the operator's MQTT load generator: publishes requests at a
 * clock-paced rate (or as fast as a window of unanswered requests allows),
 * matches each reply to its request (MQTT v5 correlation data, or arrival
 * order under 3.1.1) and reports sent, answered, lost and latency. With
 * --echo-server it is instead "the limit": a bare client that answers each
 * request from its message callback, which benchmarks compare mqforkd with. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "shm/clock.h"
#include "tools/numarg.h"
#include "tools/sigfd.h"

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

/* One write per message, so that lines from several tools sharing a
 * terminal or test log do not interleave. */
static void warn(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    fprintf(stderr, "mqfork-load: %s\n", buf);
}

static void usage(FILE *f)
{
    fputs("usage: mqfork-load [options] -t TOPIC [-T REPLY_FILTER]\n"
          "       mqfork-load --echo-server [options] -t REQUEST_FILTER\n"
          "load (publish requests, match replies, report):\n"
          "  -t TOPIC          request topic; %d is replaced by the device index\n"
          "  -T FILTER         reply filter (default: TOPIC with %d->+ and last level in->out)\n"
          "  -D DEVICES        devices %d cycles over (default 1)\n"
          "  -r RATE           messages/s paced by the clock; 0 = as fast as the window allows\n"
          "  -w WINDOW         at most this many unanswered requests (default 1000 with -r 0;\n"
          "                    a paced run ignores answers unless -w is given)\n"
          "  -n COUNT          messages to send (default 1000 unless -d)\n"
          "  -d SECONDS        send for this long\n"
          "  -W, --timeout S   wait this long for stragglers after the last send (default 2)\n"
          "  -f FILE           payloads: 2-byte big-endian length + bytes, repeated\n"
          "      --raw         with -f: the whole file is one payload\n"
          "  -s SIZE           payload of SIZE random bytes (default 64)\n"
          "  -m TEXT           payload TEXT\n"
          "  -q QOS            publish and subscribe QoS (default 0)\n"
          "  -e FILTER         count error reports published on FILTER\n"
          "      --response-topic TOPIC  set the v5 response topic (%d allowed)\n"
          "  -i SECONDS        interim report every SECONDS\n"
          "  -j                final report as one JSON line\n"
          "connection:\n"
          "  -h HOST (127.0.0.1)  -p PORT (1883, 8883 with TLS)  -u USER  -P PASSWORD\n"
          "  -V 5|311          MQTT version (default 5; 3.1.1 matches replies in order)\n"
          "  --cafile FILE  --cert FILE  --key FILE   TLS\n"
          "echo server (the limit): answers each request on its v5 response topic, or\n"
          "  on the request topic with its last level in->out, copying correlation data.\n",
          f);
}

enum {
    OPT_RAW = 256,
    OPT_CAFILE,
    OPT_CERT,
    OPT_KEY,
    OPT_RESPONSE_TOPIC,
    OPT_ECHO,
    OPT_HELP,
};

static const struct option long_opts[] = {
    {"raw", no_argument, NULL, OPT_RAW},
    {"cafile", required_argument, NULL, OPT_CAFILE},
    {"cert", required_argument, NULL, OPT_CERT},
    {"key", required_argument, NULL, OPT_KEY},
    {"response-topic", required_argument, NULL, OPT_RESPONSE_TOPIC},
    {"echo-server", no_argument, NULL, OPT_ECHO},
    {"timeout", required_argument, NULL, 'W'},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

/* Options whose argument is kept as it is. */
static const char **string_opt(struct opts *o, int ch)
{
    switch (ch) {
    case 'h':
        return &o->host;
    case 'u':
        return &o->user;
    case 'P':
        return &o->pass;
    case 't':
        return &o->topic;
    case 'T':
        return &o->reply;
    case 'e':
        return &o->errors;
    case 'f':
        return &o->file;
    case 'm':
        return &o->message;
    case OPT_CAFILE:
        return &o->cafile;
    case OPT_CERT:
        return &o->cert;
    case OPT_KEY:
        return &o->key;
    case OPT_RESPONSE_TOPIC:
        return &o->response_topic;
    default:
        return NULL;
    }
}

static bool set_version(struct opts *o, const char *arg)
{
    if (!strcmp(arg, "5") || !strcmp(arg, "mqttv5"))
        o->version = MQTT_PROTOCOL_V5;
    else if (!strcmp(arg, "311") || !strcmp(arg, "mqttv311"))
        o->version = MQTT_PROTOCOL_V311;
    else
        return false;
    return true;
}

/* One option into o; false when its argument is bad. */
static bool set_opt(struct opts *o, int ch, const char *arg, bool *window_set)
{
    const char **str = string_opt(o, ch);
    long v;

    if (str) {
        *str = arg;
        return true;
    }
    switch (ch) {
    case 'p':
        return parse_long(arg, 1, 65535, &v) && (o->port = (int)v, true);
    case 'V':
        return set_version(o, arg);
    case 'D':
        return parse_long(arg, 1, 1000000000L, &o->devices);
    case 'r':
        return parse_double(arg, 0, &o->rate);
    case 'w':
        *window_set = true;
        return parse_long(arg, 1, 100000000L, &o->window);
    case 'n':
        return parse_long(arg, 1, 2000000000L, &v) && (o->count = (uint64_t)v, true);
    case 'd':
        return parse_double(arg, 0.001, &o->duration);
    case 'W':
        return parse_double(arg, 0, &o->timeout);
    case 's':
        return parse_long(arg, 0, 256L << 20, &o->size);
    case 'q':
        return parse_long(arg, 0, 2, &v) && (o->qos = (int)v, true);
    case 'i':
        return parse_double(arg, 0.01, &o->interval);
    case 'j':
        return o->json = true;
    case OPT_RAW:
        return o->raw = true;
    case OPT_ECHO:
        return o->echo = true;
    default:
        return false;
    }
}

/* Combinations that cannot work; NULL when the options make sense. */
static const char *check_opts(const struct opts *o)
{
    int sources = !!o->file + (o->size >= 0) + !!o->message;
    if (!o->topic)
        return "-t is required";
    if (sources > 1)
        return "-f, -s and -m are alternatives";
    if (o->raw && !o->file)
        return "--raw goes with -f";
    if (!o->cert != !o->key)
        return "--cert and --key go together";
    if ((o->cert || o->key) && !o->cafile)
        return "--cert/--key need --cafile";
    if (!o->user && o->pass)
        return "-P needs -u";
    if (o->response_topic && o->version != MQTT_PROTOCOL_V5)
        return "--response-topic needs MQTT v5";
    if (!o->echo && !o->reply)
        return "no reply filter: give -T (TOPIC does not end in /in)";
    return NULL;
}

/* Replace every %d in tmpl by the device index (or by text when it is not
 * NULL, for turning a topic template into a filter). */
static bool expand(const char *tmpl, long dev, const char *text, char *out, size_t size)
{
    size_t n = 0;
    for (const char *p = tmpl; *p; p++) {
        int w;
        if (p[0] == '%' && p[1] == 'd') {
            w = text ? snprintf(out + n, size - n, "%s", text)
                     : snprintf(out + n, size - n, "%ld", dev);
            p++;
        } else {
            w = snprintf(out + n, size - n, "%c", *p);
        }
        if (w < 0 || (size_t)w >= size - n)
            return false;
        n += (size_t)w;
    }
    return true;
}

/* The usual request/reply pair: dev/%d/in answered on dev/+/out. */
static char *default_reply(const char *topic)
{
    static const char in[] = "/in";
    char buf[TOPIC_MAX];
    size_t len = strlen(topic);
    if (len < sizeof(in) || strcmp(topic + len - (sizeof(in) - 1), in) != 0)
        return NULL;
    if (!expand(topic, 0, "+", buf, sizeof(buf) - 1))
        return NULL;
    strcpy(buf + strlen(buf) - 2, "out");
    return strdup(buf);
}

/* Fill o from argv; exits 2 with a clear message on a usage error. The reply
 * filter it may derive is returned in *owned for the caller to free. */
static void parse_args(struct opts *o, int argc, char **argv, char **owned)
{
    bool window_set = false;
    int ch;

    *o = (struct opts){.host = "127.0.0.1",
                       .version = MQTT_PROTOCOL_V5,
                       .size = -1,
                       .window = 1000,
                       .devices = 1,
                       .timeout = 2.0,
                       .keepalive = 30};
    *owned = NULL;
    while ((ch = getopt_long(argc, argv, "h:p:u:P:V:t:T:e:D:r:w:n:d:W:f:s:m:q:i:j", long_opts,
                             NULL)) != -1) {
        if (ch == OPT_HELP) {
            usage(stdout);
            exit(0);
        }
        if (ch == '?' || !set_opt(o, ch, optarg, &window_set)) {
            if (ch != '?')
                warn("bad value for -%c: %s", ch < 256 ? ch : '-', optarg);
            fputs("try mqfork-load --help\n", stderr);
            exit(EXIT_USAGE);
        }
    }
    if (optind < argc) {
        warn("unexpected argument: %s", argv[optind]);
        exit(EXIT_USAGE);
    }
    if (!o->reply && o->topic && !o->echo)
        o->reply = *owned = default_reply(o->topic);
    if (!o->count && !o->duration)
        o->count = 1000;
    /* A paced run for a duration is a count: the last request due inside it
     * goes out even if the loop wakes a little after the duration ends. */
    if (o->rate > 0 && o->duration > 0) {
        uint64_t n = (uint64_t)ceil(o->duration * o->rate);
        if (!o->count || n < o->count)
            o->count = n;
    }
    if (!o->port)
        o->port = o->cafile ? 8883 : 1883;
    /* A paced run offers load whatever the answers do; the window only bounds
     * the as-fast-as-possible mode, unless asked for explicitly. */
    if (o->rate > 0 && !window_set)
        o->window = 0;
    const char *why = check_opts(o);
    if (why) {
        warn("%s", why);
        fputs("try mqfork-load --help\n", stderr);
        exit(EXIT_USAGE);
    }
}

static unsigned char *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    size_t cap = 0, len = 0;
    if (!f) {
        warn("cannot open %s: %s", path, strerror(errno));
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
        warn("cannot read %s", path);
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
        warn("%s: not a sequence of 2-byte big-endian length + packet (%s)", path,
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

static uint64_t track_outstanding(const struct track *t)
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
static bool conn_step(struct conn *c, uint64_t deadline)
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

static bool conn_setup(struct conn *c, const struct opts *o)
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
            warn("TLS setup: %s", rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
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
static bool conn_open(struct conn *c, const char *const filters[], int nfilters)
{
    const struct opts *o = c->o;
    int rc = mosquitto_connect(c->m, o->host, o->port, o->keepalive);
    if (rc != MOSQ_ERR_SUCCESS) {
        int err = errno;
        bool refused = rc == MOSQ_ERR_ERRNO && err == ECONNREFUSED;
        warn("cannot connect to %s:%d: %s%s", o->host, o->port,
             rc == MOSQ_ERR_ERRNO ? strerror(err) : mosquitto_strerror(rc),
             o->cafile && !refused ? " (TLS handshake failed? check --cafile, --cert, --key and -h)"
                                   : "");
        return false;
    }
    c->last_misc = mono_ns();
    if (!conn_wait(c, connacked, mono_ns() + CONNECT_WAIT_NS)) {
        warn("no CONNACK from %s:%d%s", o->host, o->port,
             c->lost ? ": connection closed (TLS or protocol mismatch?)" : " within 5 s");
        return false;
    }
    if (c->connack_rc != 0) {
        warn("%s:%d refused the connection: %s", o->host, o->port, connack_text(c));
        return false;
    }
    for (int i = 0; i < nfilters; i++) {
        if (mosquitto_subscribe(c->m, NULL, filters[i], o->qos) != MOSQ_ERR_SUCCESS) {
            warn("cannot subscribe to %s", filters[i]);
            return false;
        }
        c->subacks_wanted++;
    }
    if (!conn_wait(c, subscribed, mono_ns() + CONNECT_WAIT_NS) || c->sub_refused || c->lost) {
        warn("subscription to %s refused or unanswered", filters[0]);
        return false;
    }
    return true;
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
            warn("publish to %s: %s", topic, mosquitto_strerror(rc));
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
        warn("no answers for %.1f s with %ld requests outstanding; giving up", o->timeout,
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

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted values, in ms. */
static double pct_ms(const uint64_t *v, size_t n, double q)
{
    if (!n)
        return 0;
    size_t rank = (size_t)ceil(q * (double)n);
    return (double)v[rank ? rank - 1 : 0] / 1e6;
}

static void latencies(uint64_t *v, size_t n, double *p50, double *p99, double *max)
{
    qsort(v, n, sizeof(*v), cmp_u64);
    *p50 = pct_ms(v, n, 0.50);
    *p99 = pct_ms(v, n, 0.99);
    *max = n ? (double)v[n - 1] / 1e6 : 0;
}

static double per_s(uint64_t events, uint64_t span_ns)
{
    return span_ns ? (double)events * (double)NS / (double)span_ns : 0;
}

static void make_report(struct load *l, struct report *r, uint64_t end)
{
    struct track *t = &l->tr;
    *r = (struct report){.sent = t->sent,
                         .answered = t->answered,
                         .errors = t->errors,
                         .dups = t->dups,
                         .unmatched = t->unmatched};
    r->lost = track_outstanding(t);
    r->elapsed = (double)(end - l->t0) / (double)NS;
    /* Rates over intervals: request k is due k/R after t0, so a paced run of
     * n requests reports R (n-1 intervals), not n over n/R plus slack. */
    if (t->sent > 1)
        r->send_rate = per_s(t->sent - 1, t->t_last_send - l->t0);
    if (t->answered > 1)
        r->answer_rate = per_s(t->answered - 1, t->t_last_answer - t->t_first_answer);
    latencies(t->lat_ns, t->lat_len, &r->p50, &r->p99, &r->max);
}

static void print_json(const struct load *l, const struct report *r)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "match", l->fifo ? "order" : "correlation");
    cJSON_AddNumberToObject(j, "sent", (double)r->sent);
    cJSON_AddNumberToObject(j, "answered", (double)r->answered);
    cJSON_AddNumberToObject(j, "lost", (double)r->lost);
    cJSON_AddNumberToObject(j, "errors", (double)r->errors);
    cJSON_AddNumberToObject(j, "duplicates", (double)r->dups);
    cJSON_AddNumberToObject(j, "unmatched", (double)r->unmatched);
    cJSON_AddNumberToObject(j, "elapsed_s", r->elapsed);
    cJSON_AddNumberToObject(j, "send_rate", r->send_rate);
    cJSON_AddNumberToObject(j, "answer_rate", r->answer_rate);
    cJSON_AddNumberToObject(j, "p50_ms", r->p50);
    cJSON_AddNumberToObject(j, "p99_ms", r->p99);
    cJSON_AddNumberToObject(j, "max_ms", r->max);
    cJSON_AddNumberToObject(j, "qos", l->o->qos);
    if (r->error)
        cJSON_AddStringToObject(j, "error", r->error);
    else
        cJSON_AddNullToObject(j, "error");
    char *s = cJSON_PrintUnformatted(j);
    if (s)
        puts(s);
    free(s);
    cJSON_Delete(j);
}

static void print_text(const struct load *l, const struct report *r)
{
    printf("matched by   %s\n", l->fifo ? "arrival order (MQTT 3.1.1 has no correlation data)"
                                        : "MQTT v5 correlation data");
    printf("sent         %" PRIu64 " (%.1f/s)\n", r->sent, r->send_rate);
    printf("answered     %" PRIu64 " (%.1f/s)\n", r->answered, r->answer_rate);
    printf("lost         %" PRIu64 "\n", r->lost);
    if (l->o->errors || r->errors)
        printf("errors       %" PRIu64 "\n", r->errors);
    if (r->dups || r->unmatched)
        printf("duplicates   %" PRIu64 "  unmatched %" PRIu64 "\n", r->dups, r->unmatched);
    printf("latency      p50 %.3f ms  p99 %.3f ms  max %.3f ms\n", r->p50, r->p99, r->max);
    printf("elapsed      %.2f s\n", r->elapsed);
    if (r->error)
        printf("error        %s\n", r->error);
}

/* Interim line: totals so far, and rates and latency over the last interval. */
struct interim {
    uint64_t next, last_t, last_sent, last_answered;
    size_t last_lat;
};

static void print_interim(struct load *l, struct interim *iv, uint64_t now)
{
    struct track *t = &l->tr;
    size_t n = t->lat_len - iv->last_lat;
    uint64_t *v = n ? malloc(n * sizeof(*v)) : NULL;
    double p50 = 0, p99 = 0, max = 0;

    if (v) {
        memcpy(v, t->lat_ns + iv->last_lat, n * sizeof(*v));
        latencies(v, n, &p50, &p99, &max);
        free(v);
    }
    printf("%7.2fs sent %" PRIu64 " answered %" PRIu64 " | %.0f/s sent %.0f/s answered"
           " | p50 %.3f p99 %.3f max %.3f ms\n",
           (double)(now - l->t0) / (double)NS, t->sent, t->answered,
           per_s(t->sent - iv->last_sent, now - iv->last_t),
           per_s(t->answered - iv->last_answered, now - iv->last_t), p50, p99, max);
    fflush(stdout);
    *iv = (struct interim){.next = iv->next + (uint64_t)(l->o->interval * (double)NS),
                           .last_t = now,
                           .last_sent = t->sent,
                           .last_answered = t->answered,
                           .last_lat = t->lat_len};
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

static int main_load(const struct opts *o)
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
            warn("%s after %" PRIu64 " sent, %" PRIu64 " answered", err, r.sent, r.answered);
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

/* Where to answer a request that names no response topic: its topic with the
 * last level in replaced by out (dev/7/in -> dev/7/out). */
static bool derive_reply_topic(const char *topic, char *out, size_t size)
{
    size_t len = strlen(topic);
    if (len < 3 || strcmp(topic + len - 3, "/in") != 0 || len + 2 > size)
        return false;
    memcpy(out, topic, len - 2);
    memcpy(out + len - 2, "out", 4);
    return true;
}

/* The limit: answer inside the message callback, nothing in between. */
static void on_request(struct mosquitto *m, void *obj, const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
    struct conn *c = obj;
    struct echo *e = c->app;
    char *rt = NULL, derived[TOPIC_MAX];
    void *corr = NULL;
    uint16_t corr_len = 0;
    mosquitto_property *out = NULL;

    mosquitto_property_read_string(props, MQTT_PROP_RESPONSE_TOPIC, &rt, false);
    if (!rt && !derive_reply_topic(msg->topic, derived, sizeof(derived))) {
        if (!e->skipped++)
            warn("no response topic and %s does not end in /in: not answered", msg->topic);
        return;
    }
    if (mosquitto_property_read_binary(props, MQTT_PROP_CORRELATION_DATA, &corr, &corr_len, false))
        mosquitto_property_add_binary(&out, MQTT_PROP_CORRELATION_DATA, corr, corr_len);
    if (mosquitto_publish_v5(m, NULL, rt ? rt : derived, msg->payloadlen, msg->payload, e->o->qos,
                             false, out) == MOSQ_ERR_SUCCESS)
        e->answered++;
    mosquitto_property_free_all(&out);
    free(corr);
    free(rt);
}

static int main_echo(const struct opts *o)
{
    struct conn c = {.o = o, .sigfd = signals_fd()};
    struct echo e = {.o = o};
    const char *filters[1] = {o->topic};
    int status = 0;

    c.app = &e;
    if (!conn_setup(&c, o))
        return EXIT_CONN;
    mosquitto_message_v5_callback_set(c.m, on_request);
    if (!conn_open(&c, filters, 1)) {
        status = EXIT_CONN;
    } else {
        /* Tests and scripts start sending on this line: we are subscribed. */
        puts("ready");
        fflush(stdout);
        while (!c.stop && conn_step(&c, 0)) {
        }
        if (!c.stop) {
            warn("echo server: connection to the broker lost");
            status = EXIT_CONN;
        }
        fprintf(stderr, "mqfork-load: echo server answered %" PRIu64 " requests\n", e.answered);
        mosquitto_disconnect(c.m);
    }
    mosquitto_destroy(c.m);
    return status;
}

int main(int argc, char **argv)
{
    struct opts o;
    char *owned;
    int status;

    parse_args(&o, argc, argv, &owned);
    /* Timer slack would add up to 50 us to every paced wake-up. */
    prctl(PR_SET_TIMERSLACK, 1UL);
    mosquitto_lib_init();
    status = o.echo ? main_echo(&o) : main_load(&o);
    mosquitto_lib_cleanup();
    free(owned);
    return status;
}
