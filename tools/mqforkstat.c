/* mqforkstat - read an mqfork instance's statistics from its shared-memory
 * segment without disturbing the daemon: a live view on a terminal, or one
 * snapshot as text (-1), JSON (-j) or Prometheus exposition (-p); -l lists
 * the instances; --listen serves -p over HTTP (mqforkstat_serve.c). This
 * file parses the command line and picks the mode.
 *
 * Exit status: 0 fine, 1 instance not found, stale or unreadable, 2 usage. */
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/mqforkstat.h"

#define EXIT_NOT_FOUND 1
#define EXIT_USAGE     2
#define MIN_INTERVAL_S 0.05

enum mode { MODE_DEFAULT, MODE_LIVE, MODE_TEXT, MODE_JSON, MODE_PROM, MODE_LIST, MODE_SERVE };

struct options {
    const char *instance;
    enum mode mode;
    double interval_s;
    const char *listen; /* --listen ADDRESS:PORT */
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: mqforkstat [-n NAME] [-w SECONDS] [-1 | -j | -p | -l | --listen ADDR:PORT]\n"
            "  -n, --instance NAME     instance to read (default: default)\n"
            "  -w, --interval SECONDS  live view refresh, fractions allowed (default 1, at least "
            "0.05)\n"
            "  -1, --text              one snapshot as text, one `name value` per line\n"
            "  -j, --json              one snapshot as JSON\n"
            "  -p, --prometheus        one snapshot in the Prometheus text format\n"
            "  -l, --list              list the instances in /dev/shm\n"
            "      --listen ADDR:PORT  serve -p over HTTP: GET /metrics only, read-only\n"
            "  -V, --version           print the version\n"
            "  -h, --help              this help\n"
            "Without -1, -j, -p, -l or --listen: the live view on a terminal, else -1.\n");
}

static bool set_mode(struct options *o, enum mode m)
{
    if (o->mode != MODE_DEFAULT && o->mode != m) {
        fprintf(stderr, "mqforkstat: -1, -j, -p, -l and --listen exclude each other\n");
        return false;
    }
    o->mode = m;
    return true;
}

static bool parse_interval(const char *arg, double *out)
{
    char *end;
    double v = strtod(arg, &end);
    if (end == arg || *end || !isfinite(v) || v < MIN_INTERVAL_S || v > 86400) {
        fprintf(stderr, "mqforkstat: -w wants seconds from %g to 86400, not '%s'\n", MIN_INTERVAL_S,
                arg);
        return false;
    }
    *out = v;
    return true;
}

static bool valid_instance(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n >= SEG_INSTANCE_LEN || strchr(name, '/')) {
        fprintf(stderr, "mqforkstat: '%s' is not an instance name\n", name);
        return false;
    }
    return true;
}

enum { OPT_LISTEN = 256 };

/* One option into O; false when it is bad. */
static bool take(struct options *o, int c, const char *arg)
{
    switch (c) {
    case 'n':
        o->instance = arg;
        return valid_instance(arg);
    case 'w':
        return parse_interval(arg, &o->interval_s);
    case '1':
        return set_mode(o, MODE_TEXT);
    case 'j':
        return set_mode(o, MODE_JSON);
    case 'p':
        return set_mode(o, MODE_PROM);
    case 'l':
        return set_mode(o, MODE_LIST);
    case OPT_LISTEN:
        o->listen = arg;
        return set_mode(o, MODE_SERVE);
    default:
        return false;
    }
}

/* 0 with O filled, or the exit code of a usage error (or -1 for -h, -V). */
static int parse(int argc, char **argv, struct options *o)
{
    static const struct option longs[] = {
        {"instance", required_argument, NULL, 'n'},
        {"interval", required_argument, NULL, 'w'},
        {"text", no_argument, NULL, '1'},
        {"json", no_argument, NULL, 'j'},
        {"prometheus", no_argument, NULL, 'p'},
        {"list", no_argument, NULL, 'l'},
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *o = (struct options){.instance = "default", .interval_s = 1.0};
    int c;
    while ((c = getopt_long(argc, argv, "n:w:1jplVh", longs, NULL)) != -1) {
        if (c == 'h' || c == 'V') {
            if (c == 'h')
                usage(stdout);
            else
                printf("mqforkstat %s\n", MQFORK_VERSION);
            return -1;
        }
        if (!take(o, c, optarg)) {
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "mqforkstat: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return EXIT_USAGE;
    }
    if (o->mode == MODE_DEFAULT)
        o->mode = isatty(STDOUT_FILENO) ? MODE_LIVE : MODE_TEXT;
    return 0;
}

/* One snapshot in the mode's format. A stale segment is refused, except
 * by -j, which prints what the daemon last wrote, marked "stale": true
 * (and still exits 1: the daemon is gone). */
static int one_shot(const struct options *o)
{
    struct segment seg;
    bool json = o->mode == MODE_JSON;
    if (stat_attach(&seg, o->instance, !json, stderr) < 0)
        return EXIT_NOT_FOUND;
    struct snap s;
    int rc = snap_take(&s, &seg);
    seg_close(&seg, false);
    if (rc < 0) {
        fprintf(stderr, "mqforkstat: out of memory\n");
        return EXIT_NOT_FOUND;
    }
    rc = json                   ? out_json(stdout, &s)
         : o->mode == MODE_PROM ? out_prom(stdout, &s)
                                : out_text(stdout, &s);
    bool stale = !s.alive;
    int pid = (int)s.hdr.pid;
    snap_free(&s);
    if (rc < 0) {
        fprintf(stderr, "mqforkstat: cannot write the report\n");
        return EXIT_NOT_FOUND;
    }
    if (stale)
        fprintf(stderr,
                "mqforkstat: instance '%s': the daemon (pid %d) is gone; this is what it "
                "last wrote\n",
                o->instance, pid);
    return stale ? EXIT_NOT_FOUND : 0;
}

int main(int argc, char **argv)
{
    struct options o;
    int rc = parse(argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? 0 : rc;
    switch (o.mode) {
    case MODE_LIST:
        return stat_list(stdout);
    case MODE_LIVE:
        return live_run(o.instance, o.interval_s);
    case MODE_SERVE:
        return serve_metrics(o.instance, o.listen);
    default:
        return one_shot(&o);
    }
}
