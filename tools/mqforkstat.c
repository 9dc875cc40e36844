/* mqforkstat - read an mqfork instance's statistics from its shared-memory
 * segment without disturbing the daemon: a live view on a terminal, or one
 * snapshot as text (-1), JSON (-j) or Prometheus exposition (-p); -l lists
 * the instances. This file parses the command line and picks the mode.
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

enum mode { MODE_DEFAULT, MODE_LIVE, MODE_TEXT, MODE_JSON, MODE_PROM, MODE_LIST };

struct options {
    const char *instance;
    enum mode mode;
    double interval_s;
};

static void usage(FILE *out)
{
    fprintf(out, "usage: mqforkstat [-n NAME] [-w SECONDS] [-1 | -j | -p | -l]\n"
                 "  -n NAME     instance to read (default: default)\n"
                 "  -w SECONDS  live view refresh, fractions allowed (default 1, at least 0.05)\n"
                 "  -1          one snapshot as text, one `name value` per line\n"
                 "  -j          one snapshot as JSON\n"
                 "  -p          one snapshot in the Prometheus text format\n"
                 "  -l          list the instances in /dev/shm\n"
                 "Without -1, -j, -p or -l: the live view on a terminal, else -1.\n");
}

static bool set_mode(struct options *o, enum mode m)
{
    if (o->mode != MODE_DEFAULT && o->mode != m) {
        fprintf(stderr, "mqforkstat: -1, -j, -p and -l exclude each other\n");
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

/* 0 with O filled, or the exit code of a usage error (or -1 for -h). */
static int parse(int argc, char **argv, struct options *o)
{
    *o = (struct options){.instance = "default", .interval_s = 1.0};
    int c;
    while ((c = getopt(argc, argv, "n:w:1jplh")) != -1) {
        bool ok = true;
        switch (c) {
        case 'n':
            o->instance = optarg;
            ok = valid_instance(optarg);
            break;
        case 'w':
            ok = parse_interval(optarg, &o->interval_s);
            break;
        case '1':
            ok = set_mode(o, MODE_TEXT);
            break;
        case 'j':
            ok = set_mode(o, MODE_JSON);
            break;
        case 'p':
            ok = set_mode(o, MODE_PROM);
            break;
        case 'l':
            ok = set_mode(o, MODE_LIST);
            break;
        case 'h':
            usage(stdout);
            return -1;
        default:
            ok = false;
        }
        if (!ok) {
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

static int one_shot(const struct options *o)
{
    struct segment seg;
    if (stat_attach(&seg, o->instance, true, stderr) < 0)
        return EXIT_NOT_FOUND;
    struct snap s;
    int rc = snap_take(&s, &seg);
    seg_close(&seg, false);
    if (rc < 0) {
        fprintf(stderr, "mqforkstat: out of memory\n");
        return EXIT_NOT_FOUND;
    }
    rc = o->mode == MODE_JSON   ? out_json(stdout, &s)
         : o->mode == MODE_PROM ? out_prom(stdout, &s)
                                : out_text(stdout, &s);
    snap_free(&s);
    if (rc < 0) {
        fprintf(stderr, "mqforkstat: cannot write the report\n");
        return EXIT_NOT_FOUND;
    }
    return 0;
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
    default:
        return one_shot(&o);
    }
}
