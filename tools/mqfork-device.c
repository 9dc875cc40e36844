/* mqfork-device.c - the device simulator's entry: reads the options, loads
 * and encodes the recording, raises the descriptor limit for thousands of
 * devices, runs them all in one event loop and prints what they measured.
 * The protocol it speaks is doc/VOICE.md; its manual is
 * tools/mqfork-device.md. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "tools/mqfork-device.h"
#include "tools/numarg.h"

#define EXIT_FAILED 1
#define EXIT_USAGE  2
#define FDS_SPARE   64
#define DEVICES_MAX 1000000L

static void usage(FILE *f)
{
    fputs("usage: mqfork-device [options]\n"
          "Simulates xiaozhi voice devices (VOICE.md): hello over MQTT without any\n"
          "subscription, encrypted Opus over UDP at real-time pace, the downlink\n"
          "decrypted, sequence-checked, decoded and timed.\n"
          "  -H, --host HOST          broker (127.0.0.1)\n"
          "  -p, --port PORT          broker port (1883)\n"
          "  -u, --username USER      -P, --password PASS   broker credentials\n"
          "  -n, --devices N          devices in this process (1)\n"
          "  -r, --ramp SECONDS       start them evenly over this long (0)\n"
          "  -l, --loops N            turns per device: listen start, the recording,\n"
          "                           listen stop, the answer (1; 0 = until --duration)\n"
          "  -d, --duration SECONDS   stop streaming after this much audio per device\n"
          "  -i, --id-prefix PREFIX   device ids (and MQTT client ids) PREFIX<n> (dev-)\n"
          "      --id-start N         first <n> (1)\n"
          "  -t, --topic-up TEMPLATE  where devices publish ({device}: id) (xiaozhi/{device}/up)\n"
          "  -s, --subscribe          subscribe to --topic-down: only for brokers without\n"
          "                           the p2p delivery (real devices subscribe to nothing)\n"
          "      --topic-down TEMPLATE  (devices/p2p/{device})\n"
          "  -a, --audio FILE         .wav (16-bit PCM, 16 kHz) or raw s16le 16 kHz mono\n"
          "                           (default: a 3 s 440 Hz tone)\n"
          "  -m, --mode MODE          listen mode: auto, manual or realtime (auto)\n"
          "  -S, --silence SECONDS    after the recording, this much silence and no listen\n"
          "                           stop: the server's endpointing ends the utterance\n"
          "  -W, --wait SECONDS       after listen stop, end the turn after this long\n"
          "                           without anything from the server (5)\n"
          "      --abort-after-ms N   send abort N ms after the first downlink frame of a tts\n"
          "      --hello-timeout S    connect and hello reply timeout (10, the firmware's)\n"
          "  -w, --save-wav DIR       save what each device received as DIR/<id>.wav\n"
          "  -j, --json               summary as one JSON line\n"
          "      --table N            per-device table up to N devices, totals only beyond (32)\n"
          "  -v, --verbose            print control messages received (-vv: sent too), to stderr\n"
          "  -T, --timestamps         start each -v line with the wall clock time (s since 1970)\n"
          "  -h, --help               -V, --version\n"
          "Exit status: 0 every device had its session, 1 some device failed, 2 usage.\n",
          f);
}

static bool parse_mode(const char *s, enum voice_listen_mode *m)
{
    static const enum voice_listen_mode all[] = {VOICE_MODE_AUTO, VOICE_MODE_MANUAL,
                                                 VOICE_MODE_REALTIME};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        if (!strcmp(s, voice_listen_mode_name(all[i]))) {
            *m = all[i];
            return true;
        }
    return false;
}

enum { OPT_ID_START = 256, OPT_TOPIC_DOWN, OPT_HELLO_TIMEOUT, OPT_TABLE, OPT_ABORT };

static const struct option long_opts[] = {
    {"host", required_argument, NULL, 'H'},
    {"port", required_argument, NULL, 'p'},
    {"username", required_argument, NULL, 'u'},
    {"password", required_argument, NULL, 'P'},
    {"devices", required_argument, NULL, 'n'},
    {"ramp", required_argument, NULL, 'r'},
    {"loops", required_argument, NULL, 'l'},
    {"duration", required_argument, NULL, 'd'},
    {"id-prefix", required_argument, NULL, 'i'},
    {"id-start", required_argument, NULL, OPT_ID_START},
    {"topic-up", required_argument, NULL, 't'},
    {"topic-down", required_argument, NULL, OPT_TOPIC_DOWN},
    {"subscribe", no_argument, NULL, 's'},
    {"audio", required_argument, NULL, 'a'},
    {"mode", required_argument, NULL, 'm'},
    {"silence", required_argument, NULL, 'S'},
    {"wait", required_argument, NULL, 'W'},
    {"abort-after-ms", required_argument, NULL, OPT_ABORT},
    {"hello-timeout", required_argument, NULL, OPT_HELLO_TIMEOUT},
    {"save-wav", required_argument, NULL, 'w'},
    {"json", no_argument, NULL, 'j'},
    {"table", required_argument, NULL, OPT_TABLE},
    {"verbose", no_argument, NULL, 'v'},
    {"timestamps", no_argument, NULL, 'T'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

/* One option; false when its value is bad. */
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
    case 'n':
        return parse_long(arg, 1, DEVICES_MAX, &o->devices);
    case 'r':
        return parse_double(arg, 0, &o->ramp_s);
    case 'l':
        return parse_long(arg, 0, 1000000000L, &o->loops);
    case 'd':
        return parse_double(arg, 0, &o->duration_s);
    case 'i':
        o->prefix = arg;
        return true;
    case OPT_ID_START:
        return parse_long(arg, 0, 1000000000000L, &o->id_start);
    case 't':
        o->topic_up = arg;
        return true;
    case OPT_TOPIC_DOWN:
        o->topic_down = arg;
        return true;
    case 's':
        o->subscribe = true;
        return true;
    case 'a':
        o->audio = arg;
        return true;
    case 'm':
        return parse_mode(arg, &o->mode);
    case 'S':
        return parse_double(arg, 0, &o->silence_s) && o->silence_s <= 600;
    case 'W':
        return parse_double(arg, 0, &o->wait_s);
    case OPT_ABORT:
        return parse_long(arg, 0, 3600000L, &o->abort_ms);
    case OPT_HELLO_TIMEOUT:
        return parse_double(arg, 0.001, &o->hello_timeout_s);
    case 'w':
        o->save_dir = arg;
        return true;
    case 'j':
        o->json = true;
        return true;
    case OPT_TABLE:
        return parse_long(arg, 0, DEVICES_MAX, &o->table_max);
    case 'v':
        o->verbose++;
        return true;
    case 'T':
        o->timestamps = true;
        return true;
    default:
        return false;
    }
}

/* Returns -1 to go on, or the exit status. */
static int parse_args(int argc, char **argv, struct opts *o)
{
    *o = (struct opts){.host = "127.0.0.1",
                       .port = 1883,
                       .devices = 1,
                       .loops = 1,
                       .prefix = "dev-",
                       .id_start = 1,
                       .topic_up = "xiaozhi/{device}/up",
                       .topic_down = "devices/p2p/{device}",
                       .mode = VOICE_MODE_AUTO,
                       .hello_timeout_s = 10,
                       .wait_s = 5,
                       .abort_ms = -1,
                       .table_max = 32};
    int ch;
    while ((ch = getopt_long(argc, argv, "H:p:u:P:n:r:l:d:i:t:sa:m:S:W:w:jvThV", long_opts, NULL)) !=
           -1) {
        if (ch == 'h') {
            usage(stdout);
            return 0;
        }
        if (ch == 'V') {
            printf("mqfork-device %s\n", MQFORK_VERSION);
            return 0;
        }
        if (!take(o, ch, optarg)) {
            if (ch != '?')
                fprintf(stderr, "mqfork-device: bad value for -%c: %s\n", ch < 256 ? ch : '-',
                        optarg);
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc || (o->loops == 0 && o->duration_s == 0)) {
        fprintf(stderr, "mqfork-device: %s\n",
                optind < argc ? "unexpected argument" : "--loops 0 needs --duration");
        return EXIT_USAGE;
    }
    return -1;
}

/* Thousands of devices need thousands of descriptors: raise the limit,
 * the hard one too where that is allowed (CAP_SYS_RESOURCE). */
static void raise_fd_limit(const struct opts *o)
{
    struct rlimit rl;
    /* MQTT, libmosquitto's socket pair, UDP, and the WAV file. */
    rlim_t per = o->save_dir ? 5 : 4;
    rlim_t need = (rlim_t)o->devices * per + FDS_SPARE;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= need)
        return;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need &&
        setrlimit(RLIMIT_NOFILE, &(struct rlimit){need, need}) == 0)
        return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < need)
        fprintf(stderr,
                "mqfork-device: the descriptor limit (%llu) holds about %llu devices; raise the "
                "hard limit or split the devices over processes (--id-start)\n",
                (unsigned long long)rl.rlim_cur,
                (unsigned long long)((rl.rlim_cur - FDS_SPARE) / per));
}

static int run(struct sim *s)
{
    if (s->o.save_dir && mkdir(s->o.save_dir, 0755) < 0 && errno != EEXIST) {
        fprintf(stderr, "mqfork-device: %s: %s\n", s->o.save_dir, strerror(errno));
        return EXIT_USAGE;
    }
    if (recording_load(&s->rec, s->o.audio, s->o.silence_s) < 0)
        return EXIT_USAGE;
    s->devs = calloc((size_t)s->o.devices, sizeof(*s->devs));
    if (!s->devs) {
        fprintf(stderr, "mqfork-device: out of memory for %ld devices\n", s->o.devices);
        return EXIT_USAGE;
    }
    s->n = s->o.devices;
    for (long i = 0; i < s->n; i++)
        dev_init(s, &s->devs[i], i);
    s->t0 = now_us();
    s->cpu0 = cpu_seconds();
    if (loop_init(s) < 0)
        return EXIT_USAGE;
    loop_run(s);
    report_print(s);
    for (long i = 0; i < s->n; i++)
        if (s->devs[i].state == DEV_FAILED)
            return EXIT_FAILED;
    return 0;
}

int main(int argc, char **argv)
{
    struct sim s = {.ep = -1, .sigfd = -1};
    int rc = parse_args(argc, argv, &s.o);
    if (rc >= 0)
        return rc;
    raise_fd_limit(&s.o);
    mosquitto_lib_init();
    rc = run(&s);
    loop_fini(&s);
    for (long i = 0; s.devs && i < s.n; i++) {
        hist_free(&s.devs[i].st.jitter);
        hist_free(&s.devs[i].st.reply);
        hist_free(&s.devs[i].st.stt);
        hist_free(&s.devs[i].st.late);
    }
    free(s.devs);
    recording_free(&s.rec);
    mosquitto_lib_cleanup();
    return rc;
}
