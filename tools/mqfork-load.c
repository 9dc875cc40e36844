/* mqfork-load.c - the operator's MQTT load generator: publishes requests at a
 * clock-paced rate (or as fast as a window of unanswered requests allows),
 * matches each reply to its request (MQTT v5 correlation data, or arrival
 * order under 3.1.1) and reports sent, answered, lost and latency. With
 * --echo-server it is instead "the limit": a bare client that answers each
 * request from its message callback, which benchmarks compare mqforkd with.
 *
 * This file: the options, the usage text and main; the other parts are
 * named in tools/mqfork-load.h. */
#include <getopt.h>
#include <math.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include "tools/mqfork-load.h"
#include "tools/numarg.h"

/* One write per message, so that lines from several tools sharing a
 * terminal or test log do not interleave. */
void load_warn(const char *fmt, ...)
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
          "  -t, --topic TOPIC       request topic; %d is replaced by the device index\n"
          "  -T, --reply FILTER      reply filter (default: TOPIC with %d->+ and last level\n"
          "                          in->out)\n"
          "  -D, --devices DEVICES   devices %d cycles over (default 1)\n"
          "  -r, --rate RATE         messages/s paced by the clock; 0 = as fast as the window\n"
          "                          allows\n"
          "  -w, --window WINDOW     at most this many unanswered requests (default 1000 with\n"
          "                          -r 0; a paced run ignores answers unless -w is given)\n"
          "  -n, --count COUNT       messages to send (default 1000 unless -d)\n"
          "  -d, --duration SECONDS  send for this long\n"
          "  -W, --timeout S         wait this long for stragglers after the last send\n"
          "                          (default 2)\n"
          "  -f, --file FILE         payloads: 2-byte big-endian length + bytes, repeated\n"
          "      --raw               with -f: the whole file is one payload\n"
          "  -s, --size SIZE         payload of SIZE random bytes (default 64)\n"
          "  -m, --message TEXT      payload TEXT\n"
          "  -q, --qos QOS           publish and subscribe QoS (default 0)\n"
          "  -e, --errors FILTER     count error reports published on FILTER\n"
          "      --response-topic TOPIC  set the v5 response topic (%d allowed)\n"
          "  -i, --interval SECONDS  interim report every SECONDS\n"
          "  -j, --json              final report as one JSON line\n"
          "connection:\n"
          "  -H, --host HOST         broker (127.0.0.1)\n"
          "  -p, --port PORT         broker port (1883, 8883 with TLS)\n"
          "  -u, --username USER     -P, --password PASSWORD\n"
          "  -V, --protocol 5|311    MQTT version (default 5; 3.1.1 matches replies in order)\n"
          "  --cafile FILE  --cert FILE  --key FILE   TLS\n"
          "echo server (the limit): answers each request on its v5 response topic, or\n"
          "  on the request topic with its last level in->out, copying correlation data.\n"
          "  -h, --help              this help      --version   print the version\n",
          f);
}

enum {
    OPT_RAW = 256,
    OPT_CAFILE,
    OPT_CERT,
    OPT_KEY,
    OPT_RESPONSE_TOPIC,
    OPT_ECHO,
    OPT_VERSION,
};

static const struct option long_opts[] = {
    {"topic", required_argument, NULL, 't'},
    {"reply", required_argument, NULL, 'T'},
    {"devices", required_argument, NULL, 'D'},
    {"rate", required_argument, NULL, 'r'},
    {"window", required_argument, NULL, 'w'},
    {"count", required_argument, NULL, 'n'},
    {"duration", required_argument, NULL, 'd'},
    {"timeout", required_argument, NULL, 'W'},
    {"file", required_argument, NULL, 'f'},
    {"raw", no_argument, NULL, OPT_RAW},
    {"size", required_argument, NULL, 's'},
    {"message", required_argument, NULL, 'm'},
    {"qos", required_argument, NULL, 'q'},
    {"errors", required_argument, NULL, 'e'},
    {"response-topic", required_argument, NULL, OPT_RESPONSE_TOPIC},
    {"interval", required_argument, NULL, 'i'},
    {"json", no_argument, NULL, 'j'},
    {"host", required_argument, NULL, 'H'},
    {"port", required_argument, NULL, 'p'},
    {"username", required_argument, NULL, 'u'},
    {"password", required_argument, NULL, 'P'},
    {"protocol", required_argument, NULL, 'V'},
    {"cafile", required_argument, NULL, OPT_CAFILE},
    {"cert", required_argument, NULL, OPT_CERT},
    {"key", required_argument, NULL, OPT_KEY},
    {"echo-server", no_argument, NULL, OPT_ECHO},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

/* Options whose argument is kept as it is. */
static const char **string_opt(struct opts *o, int ch)
{
    switch (ch) {
    case 'H':
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
bool expand(const char *tmpl, long dev, const char *text, char *out, size_t size)
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
    while ((ch = getopt_long(argc, argv, "H:p:u:P:V:t:T:e:D:r:w:n:d:W:f:s:m:q:i:jh", long_opts,
                             NULL)) != -1) {
        if (ch == 'h') {
            usage(stdout);
            exit(0);
        }
        if (ch == OPT_VERSION) {
            printf("mqfork-load %s\n", MQFORK_VERSION);
            exit(0);
        }
        if (ch == '?' || !set_opt(o, ch, optarg, &window_set)) {
            if (ch != '?')
                load_warn("bad value for -%c: %s", ch < 256 ? ch : '-', optarg);
            fputs("try mqfork-load --help\n", stderr);
            exit(EXIT_USAGE);
        }
    }
    if (optind < argc) {
        load_warn("unexpected argument: %s", argv[optind]);
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
        load_warn("%s", why);
        fputs("try mqfork-load --help\n", stderr);
        exit(EXIT_USAGE);
    }
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
