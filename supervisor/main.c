/* main.c - mqforkd: read the configuration, start the engine and the
 * sources it asks for (the routes, the voice gateway: source.h), and run the
 * event loop until a signal says stop.
 *
 *   mqforkd [-c FILE]       run in the foreground (systemd style)
 *   mqforkd -t [-c FILE]    check FILE, print every problem, exit 0 or 1
 * FILE is <sysconfdir>/mqfork/mqfork.yaml (/etc/mqfork/mqfork.yaml for a
 * package) unless -c names another.
 *
 * Signals arrive through a signalfd in the loop, never as handlers:
 * SIGUSR1 / SIGUSR2 one worker more / fewer, SIGTERM / SIGINT drain and exit
 * 0, a second one or SIGQUIT exit at once with 3. Exit status 1 is a
 * configuration with errors or a start that failed, 2 a usage error. */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "common/log.h"
#include "conf/config.h"
#include "shm/clock.h"
#include "supervisor/engine.h"
#include "supervisor/loop.h"
#include "supervisor/mqtt.h"
#include "supervisor/notify.h"
#include "supervisor/reload_conf.h"
#include "supervisor/restart_keys.h"
#include "supervisor/source.h"
#include "worker/registry.h"
#include "worker/worker.h"

enum run_state { RUNNING, DRAINING, STOP_NOW };

/* Every source mqforkd knows, in the order they start (source.h). */
static const struct source_ops *const source_table[] = {&routes_source, &voice_source,
                                                        &alerts_source};
#define MAX_SOURCES (sizeof(source_table) / sizeof(source_table[0]))

/* A source the configuration asked for. */
struct source {
    const struct source_ops *ops;
    void *self;
};

/* After a drain, how long results and error reports may take to reach the
 * broker before the daemon exits anyway (counting what is left). */
#define FLUSH_MAX_NS (10 * NS_PER_S)

struct daemon {
    struct conf conf;
    struct registry registry;
    struct loop *loop;
    struct engine *engine;
    struct source sources[MAX_SOURCES];
    size_t nsources;
    struct mqtt *mqtt;
    struct notify notify;
    int sfd;
    enum run_state state;
    int exit_code;
    struct loop_timer drain_deadline;
    struct reload_conf *reloader; /* made at the first SIGHUP */
    bool verbose;                 /* -v: debug whatever log_level says */
};

/* log_level of the configuration, unless -v asked for everything. */
static void set_log_level(const struct daemon *d)
{
    if (d->verbose)
        log_set_level(LOG_LVL_DEBUG);
    else
        log_set_level_name(d->conf.log_level);
}

/* The configuration read without -c: where meson install puts it. */
#define DEFAULT_CONFIG MQFORK_SYSCONFDIR "/mqfork/mqfork.yaml"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: mqforkd [-t] [-v] [-c FILE]\n"
            "  -c, --config FILE  configuration file (YAML; default %s)\n"
            "  -t, --test         check the configuration, print every problem, exit 0 or 1\n"
            "  -v, --verbose      log at level debug, whatever log_level says\n"
            "  -V, --version      print the version\n"
            "  -h, --help         this help\n",
            DEFAULT_CONFIG);
}

static int check_config(const char *path)
{
    struct conf c;
    struct conf_diags d = {0};
    struct registry reg;
    int rc = registry_init(&reg);
    if (rc == 0)
        rc = registry_load_config(&reg, path, &c, true, &d);
    conf_diags_print(&d, stderr);
    if (rc == 0) {
        size_t warnings = conf_diags_warnings(&d);
        printf("%s: configuration OK (%zu route%s, workers %u..%u)", path, c.nroutes,
               c.nroutes == 1 ? "" : "s", c.workers.min, c.workers.max);
        if (warnings)
            printf(", %zu warning%s", warnings, warnings == 1 ? "" : "s");
        putchar('\n');
        conf_free(&c);
    } else {
        fprintf(stderr, "%s: %zu problem%s\n", path, conf_diags_total(&d),
                conf_diags_total(&d) == 1 ? "" : "s");
    }
    conf_diags_free(&d);
    registry_free(&reg);
    return rc == 0 ? 0 : 1;
}

/* Each diagnostic as a log line with file:line:column, at its level. */
static void log_diags(const struct conf_diags *d)
{
    for (size_t i = 0; i < d->count; i++) {
        const struct conf_diag *g = &d->items[i];
        log_msg(g->warning ? LOG_LVL_WARN : LOG_LVL_ERROR, "%s:%d:%d: %s", g->file, g->line,
                g->column, g->message);
    }
}

/* A reload's load is over (supervisor/reload_conf.c): C is the new
 * configuration, or NULL when it did not load (its problems are logged). */
static bool reload_apply(void *ctx, struct conf *c, bool again)
{
    struct daemon *d = ctx;
    if (d->state != RUNNING) {
        if (c)
            conf_free(c);
        log_info("SIGHUP: the daemon is stopping; the configuration stays as it was");
        return false;
    }
    if (c && engine_reload(d->engine, c) < 0) {
        conf_free(c);
    } else if (c) {
        restart_keys_keep(&d->conf, c);
        /* The engine keeps copies; the sources move to the new one, reading
         * the old one as they do, and then nothing points into it. */
        struct conf old = d->conf;
        d->conf = *c;
        for (size_t i = 0; i < d->nsources; i++)
            if (d->sources[i].ops->reload(d->sources[i].self, &d->conf) < 0)
                log_error("SIGHUP: the source %s could not follow its new configuration",
                          d->sources[i].ops->name);
        conf_free(&old);
        set_log_level(d);
        log_info("SIGHUP: configuration reloaded from %s", d->conf.path);
    }
    if (!again)
        notify_reloaded(&d->notify);
    return true;
}

/* SIGHUP: the file is loaded in a thread while the loop goes on, and
 * applied by reload_apply; a configuration that does not load changes
 * nothing. */
static void reload(struct daemon *d)
{
    if (!d->reloader)
        d->reloader = reload_conf_new(d->loop, &d->registry, d->conf.path, reload_apply, d);
    if (d->reloader && reload_conf_request(d->reloader) == 1)
        notify_reloading(&d->notify);
}

static void begin_drain(struct daemon *d, const char *why)
{
    if (d->state != RUNNING) {
        log_warn("%s during the drain: stopping now", why);
        d->state = STOP_NOW;
        d->exit_code = 3;
        return;
    }
    log_info("%s: draining %zu jobs (at most %.1f s), then exiting", why,
             engine_outstanding(d->engine), d->conf.shutdown_timeout_s);
    notify_stopping(&d->notify, why);
    for (size_t i = 0; i < d->nsources; i++)
        if (d->sources[i].ops->drain)
            d->sources[i].ops->drain(d->sources[i].self);
    engine_stop_accepting(d->engine);
    d->state = DRAINING;
    loop_timer_arm(d->loop, &d->drain_deadline,
                   loop_now_ns(d->loop) + (uint64_t)(d->conf.shutdown_timeout_s * 1e9));
}

static void on_drain_deadline(void *ctx)
{
    struct daemon *d = ctx;
    log_warn("shutdown_timeout_s passed with %zu jobs unanswered: abandoning them",
             engine_outstanding(d->engine));
    d->state = STOP_NOW;
}

static void on_signal(void *ctx, int events)
{
    struct daemon *d = ctx;
    struct signalfd_siginfo si;
    while (read(d->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        switch (si.ssi_signo) {
        case SIGUSR1:
            engine_scale_manual(d->engine, +1, "SIGUSR1");
            break;
        case SIGUSR2:
            engine_scale_manual(d->engine, -1, "SIGUSR2");
            break;
        case SIGHUP:
            if (d->state == RUNNING)
                reload(d);
            break;
        case SIGTERM:
        case SIGINT:
            begin_drain(d, si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
            break;
        case SIGQUIT:
            log_info("SIGQUIT: stopping now");
            d->state = STOP_NOW;
            d->exit_code = 3;
            break;
        }
    }
}

static int setup_signals(struct daemon *d)
{
    sigset_t set;
    sigemptyset(&set);
    int sigs[] = {SIGUSR1, SIGUSR2, SIGHUP, SIGTERM, SIGINT, SIGQUIT};
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaddset(&set, sigs[i]);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    d->sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (d->sfd < 0 || !loop_watch(d->loop, d->sfd, POLLIN, true, on_signal, d)) {
        log_error("signalfd: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* Before engine_start: each source the configuration wants registers its
 * job kinds. */
static int create_sources(struct daemon *d)
{
    for (size_t i = 0; i < MAX_SOURCES; i++) {
        const struct source_ops *ops = source_table[i];
        if (!ops->wanted(&d->conf))
            continue;
        void *self = ops->create(&d->conf, d->engine, d->loop);
        if (!self)
            return -1;
        d->sources[d->nsources++] = (struct source){ops, self};
    }
    return 0;
}

static int connect_broker(struct daemon *d)
{
    d->mqtt = mqtt_new(&d->conf, d->loop, engine_segment(d->engine));
    if (!d->mqtt)
        return -1;
    for (size_t i = 0; i < d->nsources; i++)
        if (d->sources[i].ops->attach(d->sources[i].self, d->mqtt) < 0)
            return -1;
    return mqtt_start(d->mqtt);
}

/* Jobs not yet answered, and what the sources still owe besides. */
static size_t outstanding(const struct daemon *d)
{
    size_t n = engine_outstanding(d->engine);
    for (size_t i = 0; i < d->nsources; i++)
        if (d->sources[i].ops->outstanding)
            n += d->sources[i].ops->outstanding(d->sources[i].self);
    return n;
}

/* The loop runs until a signal says stop, or a drain is over: every job
 * answered, or the drain deadline's timer gave up on them. */
static void run(struct daemon *d)
{
    while (d->state != STOP_NOW && !(d->state == DRAINING && outstanding(d) == 0))
        loop_run(d->loop, -1);
}

static int serve(const char *path, bool verbose)
{
    struct daemon d = {.sfd = -1, .verbose = verbose};
    notify_init(&d.notify);
    struct conf_diags diags = {0};
    if (registry_init(&d.registry) < 0 ||
        registry_load_config(&d.registry, path, &d.conf, true, &diags) < 0) {
        conf_diags_print(&diags, stderr);
        conf_diags_free(&diags);
        registry_free(&d.registry);
        return 1;
    }
    set_log_level(&d);
    log_diags(&diags); /* warnings only */
    conf_diags_free(&diags);
    int rc = 1;
    d.loop = loop_new(256);
    if (!d.loop) {
        log_error("io_uring: %s", strerror(errno));
        goto out;
    }
    if (setup_signals(&d) < 0 ||
        loop_timer_init(d.loop, &d.drain_deadline, on_drain_deadline, &d) < 0 ||
        !(d.engine = engine_new(&d.conf, d.loop, &d.registry)) || create_sources(&d) < 0 ||
        engine_start(d.engine) < 0 || connect_broker(&d) < 0 ||
        notify_start(&d.notify, d.loop, d.engine) < 0)
        goto out;
    log_info("mqforkd %s: instance '%s' running as pid %d with %u workers", MQFORK_VERSION,
             d.conf.instance, (int)getpid(), d.conf.workers.min);
    run(&d);
    rc = d.exit_code;
out:
    reload_conf_free(d.reloader); /* waits for a load under way */
    notify_stop(&d.notify);
    if (d.loop)
        loop_timer_fini(d.loop, &d.drain_deadline);
    /* The engine first: jobs it abandons are reported through MQTT, and a
     * graceful exit hands every report to the broker before it goes. */
    engine_free(d.engine);
    /* A drain, finished or cut short by shutdown_timeout_s (exit 0): not
     * a second signal or SIGQUIT (exit 3), which mean now. */
    if (d.state != RUNNING && d.exit_code == 0)
        mqtt_flush(d.mqtt, mono_ns() + FLUSH_MAX_NS);
    mqtt_free(d.mqtt);
    for (size_t i = d.nsources; i-- > 0;)
        d.sources[i].ops->free(d.sources[i].self);
    if (d.sfd >= 0)
        close(d.sfd);
    loop_free(d.loop);
    conf_free(&d.conf);
    registry_free(&d.registry);
    if (rc == 0)
        log_info("stopped");
    return rc;
}

/* What the command line asks for. */
struct options {
    const char *path;
    bool test_only;
    bool verbose;
};

/* 0 with O filled, -1 when the tool is done (help, version: exit 0), or
 * the exit status of a usage error. */
static int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longs[] = {
        {"config", required_argument, NULL, 'c'}, {"test", no_argument, NULL, 't'},
        {"verbose", no_argument, NULL, 'v'},      {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    *o = (struct options){.path = DEFAULT_CONFIG};
    int opt;
    while ((opt = getopt_long(argc, argv, "c:tvVh", longs, NULL)) != -1) {
        switch (opt) {
        case 'c':
            o->path = optarg;
            break;
        case 't':
            o->test_only = true;
            break;
        case 'v':
            o->verbose = true;
            break;
        case 'V':
            printf("mqforkd %s\n", MQFORK_VERSION);
            return -1;
        case 'h':
            usage(stdout);
            return -1;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "mqforkd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct options o;
    proctitle_init(argc, argv);
    int rc = parse_options(argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? 0 : rc;
    return o.test_only ? check_config(o.path) : serve(o.path, o.verbose);
}
