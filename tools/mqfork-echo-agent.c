/* mqfork-echo-agent.c - the smallest voice backend: it answers each
 * transcript mqforkd publishes (voice/{device}/stt, uplink recognize) with
 * "You said <transcript>." on voice/{device}/say, which mqforkd speaks to
 * the device. It serves the demo (a whole conversation) and the speech
 * benchmark, which also has it answer listen stops to time synthesis alone
 * and reads its timestamped lines. Its manual is mqfork-echo-agent(1). */
#include <cJSON.h>
#include <getopt.h>
#include <mosquitto.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tools/numarg.h"
#include "tools/sigfd.h"

#define EXIT_BROKER 1
#define EXIT_USAGE  2
#define TOPIC_MAX   512
#define ANSWER_MAX  4000 /* what one say carries at most (voice_say.c) */

struct opts {
    const char *host, *user, *pass;
    int port;
    const char *stt, *events, *say; /* filters with one +, and the say template */
    const char *answer;             /* fixed answer, or NULL: "You said ..." */
    bool listen_stop, timestamps;
    long count; /* answers before exiting, 0: no limit */
};

struct agent {
    const struct opts *o;
    struct mosquitto *m;
    long answered, refused;
    bool subscribed;
};

static void usage(FILE *f)
{
    fputs("usage: mqfork-echo-agent [options]\n"
          "Answers each transcript of mqforkd's voice gateway (uplink recognize) with\n"
          "\"You said <transcript>.\" on the device's say topic, which mqforkd speaks.\n"
          "  -H, --host HOST        broker (127.0.0.1)\n"
          "  -p, --port PORT        broker port (1883)\n"
          "  -u, --username USER    -P, --password PASS   broker credentials\n"
          "  -s, --stt FILTER       transcripts, the device id at its + (voice/+/stt)\n"
          "  -S, --say TEMPLATE     where answers go, {device}: the id (voice/{device}/say)\n"
          "  -a, --answer TEXT      answer TEXT instead of \"You said <transcript>.\"\n"
          "  -L, --listen-stop      answer each listen stop too, on --events: synthesis\n"
          "                         without recognition, for benchmarks\n"
          "  -e, --events FILTER    session events, the device id at its + (voice/+/events)\n"
          "  -T, --timestamps       start each line with the wall clock time of the answer\n"
          "  -n, --count N          exit after N answers (0: until SIGINT or SIGTERM)\n"
          "  -h, --help             -V, --version\n"
          "Prints \"listening\" once subscribed, then a line per answer.\n"
          "Exit status: 0 stopped or N answers, 1 broker lost or refused, 2 usage.\n",
          f);
}

static void say_line(const struct agent *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void say_line(const struct agent *a, const char *fmt, ...)
{
    va_list ap;
    if (a->o->timestamps) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        printf("%lld.%06ld ", (long long)ts.tv_sec, ts.tv_nsec / 1000);
    }
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* The level of TOPIC where FILTER has its +, into out; false when TOPIC
 * has not the filter's shape there. */
static bool device_of(const char *filter, const char *topic, char *out, size_t size)
{
    const char *plus = strchr(filter, '+');
    size_t skip = 0;
    for (const char *f = filter; f < plus; f++)
        skip += *f == '/';
    for (; skip > 0 && topic; skip--)
        topic = strchr(topic, '/') ? strchr(topic, '/') + 1 : NULL;
    if (!topic)
        return false;
    size_t len = strcspn(topic, "/");
    if (len == 0 || len >= size)
        return false;
    memcpy(out, topic, len);
    out[len] = '\0';
    return true;
}

static bool say_topic(const char *tmpl, const char *device, char *out, size_t size)
{
    const char *at = strstr(tmpl, "{device}");
    int n = snprintf(out, size, "%.*s%s%s", (int)(at - tmpl), tmpl, device, at + 8);
    return n > 0 && (size_t)n < size;
}

static void publish_answer(struct agent *a, const char *device, const char *heard)
{
    char topic[TOPIC_MAX], text[ANSWER_MAX];
    if (a->o->answer)
        snprintf(text, sizeof(text), "%s", a->o->answer);
    else
        snprintf(text, sizeof(text), "You said %s.", heard);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "text", text);
    char *json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    int rc = MOSQ_ERR_NOMEM;
    if (json && say_topic(a->o->say, device, topic, sizeof(topic)))
        rc = mosquitto_publish(a->m, NULL, topic, (int)strlen(json), json, 1, false);
    free(json);
    if (rc != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "mqfork-echo-agent: %s: answer not sent: %s\n", device,
                mosquitto_strerror(rc));
        a->refused++;
        return;
    }
    a->answered++;
    say_line(a, "%s heard \"%s\", said \"%s\"", device, heard, text);
}

/* A refusal: said once per message on stderr, and counted. */
static void refuse(struct agent *a, const char *topic, const char *why)
{
    fprintf(stderr, "mqfork-echo-agent: %s: %s: not answered\n", topic, why);
    a->refused++;
}

static void on_stt(struct agent *a, const char *device, const cJSON *msg, const char *topic)
{
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(msg, "text");
    if (!cJSON_IsString(text))
        refuse(a, topic, "not a transcript (JSON with a text string)");
    else if (!text->valuestring[0])
        refuse(a, topic, "an empty transcript");
    else
        publish_answer(a, device, text->valuestring);
}

static bool is_listen_stop(const cJSON *msg)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(msg, "type");
    const cJSON *state = cJSON_GetObjectItemCaseSensitive(msg, "state");
    return cJSON_IsString(type) && !strcmp(type->valuestring, "listen") && cJSON_IsString(state) &&
           !strcmp(state->valuestring, "stop");
}

static void on_message(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
    struct agent *a = obj;
    char device[TOPIC_MAX];
    bool matches_stt = false, matches_events = false;
    mosquitto_topic_matches_sub(a->o->stt, msg->topic, &matches_stt);
    if (a->o->listen_stop)
        mosquitto_topic_matches_sub(a->o->events, msg->topic, &matches_events);
    if (!matches_stt && !matches_events)
        return;
    cJSON *o = cJSON_ParseWithLength(msg->payload, (size_t)msg->payloadlen);
    if (!device_of(matches_stt ? a->o->stt : a->o->events, msg->topic, device, sizeof(device)))
        refuse(a, msg->topic, "no device id in the topic");
    else if (!cJSON_IsObject(o))
        refuse(a, msg->topic, "not JSON");
    else if (matches_stt)
        on_stt(a, device, o, msg->topic);
    else if (is_listen_stop(o))
        publish_answer(a, device, "");
    cJSON_Delete(o);
}

static void on_connect(struct mosquitto *m, void *obj, int rc)
{
    struct agent *a = obj;
    if (rc != 0) {
        fprintf(stderr, "mqfork-echo-agent: the broker refused: %s\n",
                mosquitto_connack_string(rc));
        return;
    }
    const char *filters[2] = {a->o->stt, a->o->events};
    char *const *subs = (char *const *)filters;
    rc = mosquitto_subscribe_multiple(m, NULL, a->o->listen_stop ? 2 : 1, subs, 1, 0, NULL);
    if (rc != MOSQ_ERR_SUCCESS)
        fprintf(stderr, "mqfork-echo-agent: subscribe: %s\n", mosquitto_strerror(rc));
}

static void on_subscribe(struct mosquitto *m, void *obj, int mid, int n, const int *granted)
{
    struct agent *a = obj;
    for (int i = 0; i < n; i++)
        if (granted[i] > 2)
            fprintf(stderr, "mqfork-echo-agent: the broker refused a subscription\n");
    if (!a->subscribed)
        say_line(a, "listening");
    a->subscribed = true;
}

static const struct option long_opts[] = {
    {"host", required_argument, NULL, 'H'},     {"port", required_argument, NULL, 'p'},
    {"username", required_argument, NULL, 'u'}, {"password", required_argument, NULL, 'P'},
    {"stt", required_argument, NULL, 's'},      {"say", required_argument, NULL, 'S'},
    {"answer", required_argument, NULL, 'a'},   {"listen-stop", no_argument, NULL, 'L'},
    {"events", required_argument, NULL, 'e'},   {"timestamps", no_argument, NULL, 'T'},
    {"count", required_argument, NULL, 'n'},    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},        {NULL, 0, NULL, 0},
};

/* One filter with exactly one +, as a whole level, and no #. */
static bool one_plus(const char *filter)
{
    const char *plus = strchr(filter, '+');
    return plus && !strchr(plus + 1, '+') && !strchr(filter, '#') &&
           (plus == filter || plus[-1] == '/') && (plus[1] == '\0' || plus[1] == '/');
}

static bool take(struct opts *o, int ch, const char *arg)
{
    long port;
    switch (ch) {
    case 'H':
        o->host = arg;
        return true;
    case 'p':
        return parse_long(arg, 1, 65535, &port) && (o->port = (int)port, true);
    case 'u':
        o->user = arg;
        return true;
    case 'P':
        o->pass = arg;
        return true;
    case 's':
        o->stt = arg;
        return one_plus(arg);
    case 'e':
        o->events = arg;
        return one_plus(arg);
    case 'S':
        o->say = arg;
        return strstr(arg, "{device}") != NULL;
    case 'a':
        o->answer = arg;
        return strlen(arg) < ANSWER_MAX;
    case 'L':
        o->listen_stop = true;
        return true;
    case 'T':
        o->timestamps = true;
        return true;
    case 'n':
        return parse_long(arg, 0, 1000000000L, &o->count);
    default:
        return false;
    }
}

/* Returns -1 to go on, or the exit status. */
static int parse_args(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){.host = "127.0.0.1",
                       .port = 1883,
                       .stt = "voice/+/stt",
                       .events = "voice/+/events",
                       .say = "voice/{device}/say"};
    int ch;
    while ((ch = getopt_long(argc, argv, "H:p:u:P:s:S:a:Le:Tn:hV", long_opts, NULL)) != -1) {
        if (ch == 'h') {
            usage(stdout);
            return 0;
        }
        if (ch == 'V') {
            puts("mqfork-echo-agent " MQFORK_VERSION);
            return 0;
        }
        if (ch == '?' || !take(o, ch, optarg)) {
            if (ch != '?')
                fprintf(stderr, "mqfork-echo-agent: bad value for -%c: %s\n", ch, optarg);
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "mqfork-echo-agent: unexpected argument: %s\n", argv[optind]);
        return EXIT_USAGE;
    }
    if (o->listen_stop && !o->answer) {
        fprintf(stderr, "mqfork-echo-agent: -L needs -a TEXT (a listen stop has no transcript)\n");
        return EXIT_USAGE;
    }
    return -1;
}

/* Until a signal or the count; libmosquitto reconnects by itself when the
 * broker goes away, and each connect subscribes again. */
static int run(struct agent *a, int sigfd)
{
    struct signalfd_siginfo si;
    while (!a->o->count || a->answered < a->o->count) {
        if (read(sigfd, &si, sizeof(si)) == sizeof(si))
            return 0;
        int rc = mosquitto_loop(a->m, 100, 1);
        if (rc == MOSQ_ERR_CONN_REFUSED || rc == MOSQ_ERR_AUTH) {
            fprintf(stderr, "mqfork-echo-agent: %s\n", mosquitto_strerror(rc));
            return EXIT_BROKER;
        }
        if (rc != MOSQ_ERR_SUCCESS) {
            fprintf(stderr, "mqfork-echo-agent: %s; reconnecting\n", mosquitto_strerror(rc));
            sleep(1);
            mosquitto_reconnect(a->m);
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o;
    int status = parse_args(argc, argv, &o);
    if (status >= 0)
        return status;
    int sigfd = signals_fd();
    mosquitto_lib_init();
    struct agent a = {.o = &o};
    a.m = mosquitto_new(NULL, true, &a);
    if (!a.m || sigfd < 0) {
        fprintf(stderr, "mqfork-echo-agent: out of memory or descriptors\n");
        return EXIT_BROKER;
    }
    mosquitto_connect_callback_set(a.m, on_connect);
    mosquitto_subscribe_callback_set(a.m, on_subscribe);
    mosquitto_message_callback_set(a.m, on_message);
    if (o.user)
        mosquitto_username_pw_set(a.m, o.user, o.pass);
    int rc = mosquitto_connect(a.m, o.host, o.port, 60);
    if (rc != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "mqfork-echo-agent: %s:%d: %s\n", o.host, o.port, mosquitto_strerror(rc));
        status = EXIT_BROKER;
    } else {
        status = run(&a, sigfd);
        mosquitto_loop(a.m, 100, 1); /* the last answers out */
        mosquitto_disconnect(a.m);
    }
    fprintf(stderr, "mqfork-echo-agent: %ld answered, %ld not answered\n", a.answered, a.refused);
    mosquitto_destroy(a.m);
    mosquitto_lib_cleanup();
    return status;
}
