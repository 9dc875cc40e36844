/* test_conf.c - the configuration loader against the files in test/conf: a
 * file that starts with "# expect: LINE:COL: MESSAGE" lines must fail with
 * exactly those diagnostics, a warn-*.yaml file must load with exactly the
 * warnings of its "# warn: LINE:COL: MESSAGE" lines, and an ok-*.yaml file
 * must load cleanly. Also the defaults, the shipped examples in conf/, and
 * the diagnostic output format.
 *
 * Usage: test_conf TEST_CONF_DIR REPO_CONF_DIR [SPEECH_PLUGIN]
 *
 * SPEECH_PLUGIN is this build's mqfork_speech.so, absent when the speech
 * libraries were not found: demo.yaml is then checked without its plugin. */
#include "conf/config.h"
#include "test/t.h"
#include "worker/registry.h"

#include <dirent.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct expect {
    int line, column;
    char message[512];
};

#define MAX_EXPECT 32

static bool str_eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

static bool near(double a, double b)
{
    return fabs(a - b) < 1e-9;
}

static char *join(const char *dir, const char *name)
{
    char *s;
    T_REQUIRE(asprintf(&s, "%s/%s", dir, name) >= 0, "asprintf");
    return s;
}

/* Read the "# expect:" (or "# warn:", as TAG says) lines at the top of
 * PATH; returns how many. */
static size_t read_expects(const char *path, const char *tag, struct expect *e, size_t max)
{
    FILE *f = fopen(path, "r");
    T_REQUIRE(f != NULL, "open %s", path);
    char line[1024];
    size_t n = 0, tl = strlen(tag);
    while (fgets(line, sizeof(line), f) && !strncmp(line, tag, tl)) {
        int used = 0;
        T_REQUIRE(n < max, "%s: too many expect lines", path);
        if (sscanf(line + tl, "%d:%d: %n", &e[n].line, &e[n].column, &used) != 2 || !used) {
            T_CHECK(false, "%s: malformed expect line: %s", path, line);
            continue;
        }
        snprintf(e[n].message, sizeof(e[n].message), "%s", line + tl + used);
        e[n].message[strcspn(e[n].message, "\n")] = '\0';
        n++;
    }
    fclose(f);
    return n;
}

static void print_diags(const char *what, const struct conf_diags *d)
{
    fprintf(stderr, "  %s:\n", what);
    for (size_t i = 0; i < d->count; i++)
        fprintf(stderr, "    %d:%d: %s\n", d->items[i].line, d->items[i].column,
                d->items[i].message);
}

/* D holds exactly the diagnostics E (N of them), each an error or, when
 * WARNINGS, a warning. */
static void match_diags(const char *path, const struct conf_diags *d, const struct expect *e,
                        size_t n, bool warnings)
{
    bool all = d->count == n;
    for (size_t i = 0; i < n; i++) {
        bool found = false;
        for (size_t j = 0; j < d->count && !found; j++)
            found = d->items[j].line == e[i].line && d->items[j].column == e[i].column &&
                    !strcmp(d->items[j].message, e[i].message);
        T_CHECK(found, "%s: missing diagnostic %d:%d: %s", path, e[i].line, e[i].column,
                e[i].message);
        all &= found;
    }
    T_CHECK(d->count == n, "%s: %zu diagnostics, expected %zu", path, d->count, n);
    for (size_t j = 0; j < d->count; j++) {
        T_CHECK(!strcmp(d->items[j].file, path), "%s: diagnostic names file %s", path,
                d->items[j].file);
        T_CHECK(d->items[j].warning == warnings, "%s: %d:%d is %s", path, d->items[j].line,
                d->items[j].column, d->items[j].warning ? "a warning" : "an error");
    }
    if (!all)
        print_diags(path, d);
}

/* A bad file: loading fails with exactly the expected diagnostics. */
static void check_bad(const char *path, const struct expect *e, size_t n)
{
    struct conf c;
    struct conf_diags d = {0};
    struct registry reg;
    T_REQUIRE(registry_init(&reg) == 0, "registry");
    int rc = registry_load_config(&reg, path, &c, true, &d);
    registry_free(&reg);
    T_CHECK(rc == -1, "%s: loading returned %d, expected -1", path, rc);
    T_CHECK(c.path == NULL && c.routes == NULL, "%s: conf not freed after a failure", path);
    match_diags(path, &d, e, n, false);
    conf_diags_free(&d);
}

/* A file that loads, with exactly the expected warnings. */
static void check_warn(const char *path, const struct expect *e, size_t n)
{
    struct conf c;
    struct conf_diags d = {0};
    int rc = conf_load(path, &c, &d);
    T_CHECK(rc == 0, "%s: conf_load returned %d, expected 0", path, rc);
    match_diags(path, &d, e, n, true);
    if (rc == 0)
        conf_free(&c);
    conf_diags_free(&d);
}

/* Load a file that must be valid; the caller frees *c. */
static void load_ok(const char *path, struct conf *c)
{
    struct conf_diags d = {0};
    struct registry reg;
    T_REQUIRE(registry_init(&reg) == 0, "registry");
    int rc = registry_load_config(&reg, path, c, true, &d);
    registry_free(&reg);
    T_CHECK(rc == 0 && d.count == 0, "%s: loading returned %d with %zu diagnostics", path, rc,
            d.count);
    if (d.count)
        print_diags(path, &d);
    conf_diags_free(&d);
    T_REQUIRE(rc == 0, "%s must load", path);
    T_CHECK(str_eq(c->path, path), "%s: path is %s", path, c->path);
}

/* Load a file that must load, with warnings only (check_dir matched them);
 * the caller frees *c. */
static void load_warned(const char *path, struct conf *c)
{
    struct conf_diags d = {0};
    int rc = conf_load(path, c, &d);
    T_CHECK(conf_diags_warnings(&d) == d.count, "%s: errors besides the warnings", path);
    conf_diags_free(&d);
    T_REQUIRE(rc == 0, "%s must load", path);
}

/* Every .yaml file in DIR: bad files by their expectations, ok-* cleanly. */
static void check_dir(const char *dir)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    T_REQUIRE(n >= 0, "scandir %s", dir);
    int bad = 0, ok = 0, warned = 0;
    for (int i = 0; i < n; i++) {
        const char *name = names[i]->d_name;
        size_t len = strlen(name);
        if (len > 5 && !strcmp(name + len - 5, ".yaml")) {
            char *path = join(dir, name);
            struct expect e[MAX_EXPECT];
            size_t ne = read_expects(path, "# expect: ", e, MAX_EXPECT);
            if (!strncmp(name, "ok-", 3)) {
                T_CHECK(ne == 0, "%s: an ok- file with expectations", path);
                struct conf c;
                load_ok(path, &c);
                conf_free(&c);
                ok++;
            } else if (!strncmp(name, "warn-", 5)) {
                ne = read_expects(path, "# warn: ", e, MAX_EXPECT);
                T_CHECK(ne > 0, "%s: a warn- file without '# warn:' lines", path);
                check_warn(path, e, ne);
                warned++;
            } else {
                T_CHECK(ne > 0, "%s: neither ok-*.yaml nor '# expect:' lines", path);
                check_bad(path, e, ne);
                bad++;
            }
            free(path);
        }
        free(names[i]);
    }
    free(names);
    T_CHECK(bad >= 20 && ok >= 2 && warned >= 3, "only %d bad, %d ok and %d warn files in %s", bad,
            ok, warned, dir);
}

/* The defaults config.h documents. */
static void check_defaults(const struct conf *c)
{
    T_CHECK(str_eq(c->instance, "default"), "instance %s", c->instance);
    T_CHECK(str_eq(c->log_level, "info"), "log_level %s", c->log_level);
    T_CHECK(c->user == NULL, "user");
    T_CHECK(near(c->shutdown_timeout_s, 30), "shutdown_timeout_s %g", c->shutdown_timeout_s);
    const struct conf_broker *b = &c->broker;
    T_CHECK(str_eq(b->host, "127.0.0.1"), "host %s", b->host);
    T_CHECK(b->port == 1883, "port %d", b->port);
    T_CHECK(str_eq(b->protocol, "5"), "protocol %s", b->protocol);
    T_CHECK(!b->client_id && !b->username && !b->password && !b->status_topic, "broker NULLs");
    T_CHECK(b->keepalive_s == 30, "keepalive_s %u", b->keepalive_s);
    T_CHECK(b->clean_session, "clean_session");
    T_CHECK(b->session_expiry_s == 0, "session_expiry_s");
    T_CHECK(near(b->reconnect_min_s, 0.5) && near(b->reconnect_max_s, 30), "reconnect");
    T_CHECK(b->max_outbound == 10000, "max_outbound %u", b->max_outbound);
    T_CHECK(!b->tls_enabled && b->tls.verify, "tls");
    T_CHECK(!b->tls.ca_file && !b->tls.cert_file && !b->tls.key_file, "tls files");
    const struct conf_workers *w = &c->workers;
    T_CHECK(w->min == 2 && w->max == 8, "workers %u..%u", w->min, w->max);
    T_CHECK(w->inflight == 32 && w->inflight_us == 2000, "inflight");
    T_CHECK(w->max_jobs == 0 && w->max_rss_mb == 0, "recycling");
    T_CHECK(near(w->backoff_max_s, 2) && near(w->stable_s, 10), "backoff");
    T_CHECK(c->limits.max_payload == 65536 && c->limits.max_pending == 65536 &&
                c->limits.slab_mb == 64,
            "limits");
    T_CHECK(c->streams.max == 1024 && near(c->streams.idle_s, 60), "streams");
    const struct conf_scaling *s = &c->scaling;
    T_CHECK(s->enabled && near(s->interval_s, 10), "scaling.interval_s");
    T_CHECK(near(s->up_cooldown_s, 30) && near(s->down_cooldown_s, 60), "cooldowns");
    T_CHECK(s->step == 1, "step");
    T_CHECK(near(s->up_load, 0.70) && near(s->up_cpu, 0.60) && near(s->up_p95_ms, 50) &&
                near(s->up_pending_per_worker, 3),
            "up thresholds");
    T_CHECK(near(s->down_load, 0.30) && near(s->down_cpu, 0.30) && near(s->down_p95_ms, 10),
            "down thresholds");
    T_CHECK(str_eq(c->errors_topic, "mqfork/errors"), "errors_topic %s", c->errors_topic);
    T_CHECK(c->routes == NULL && c->nroutes == 0, "routes");
}

static void check_empty_and_defaults(const char *dir)
{
    struct conf c;
    conf_defaults(&c);
    T_CHECK(c.path == NULL, "conf_defaults sets no path");
    check_defaults(&c);
    conf_free(&c);

    char *path = join(dir, "warn-empty.yaml");
    load_warned(path, &c);
    check_defaults(&c);
    conf_free(&c);
    free(path);

    path = join(dir, "warn-null-sections.yaml");
    load_warned(path, &c);
    T_CHECK(c.broker.tls_enabled, "a bare tls: enables TLS");
    T_CHECK(c.broker.client_id == NULL && c.nroutes == 0, "null values");
    T_CHECK(c.workers.min == 2, "workers default");
    conf_free(&c);
    free(path);
}

static void check_full_broker(const struct conf *c)
{
    const struct conf_broker *b = &c->broker;
    T_CHECK(str_eq(b->host, "broker.example") && b->port == 8883, "host:port");
    T_CHECK(str_eq(b->protocol, "3.1.1"), "protocol %s", b->protocol);
    T_CHECK(str_eq(b->client_id, "full-client"), "client_id");
    T_CHECK(str_eq(b->username, "user") && str_eq(b->password, ""), "credentials");
    T_CHECK(b->keepalive_s == 5 && !b->clean_session, "keepalive, clean_session");
    T_CHECK(b->session_expiry_s == UINT32_MAX, "session_expiry_s %u", b->session_expiry_s);
    T_CHECK(near(b->reconnect_min_s, 0.05) && near(b->reconnect_max_s, 1.5), "reconnect");
    T_CHECK(str_eq(b->status_topic, "full/status") && b->max_outbound == 10000000, "status");
    T_CHECK(b->tls_enabled && !b->tls.verify && str_eq(b->tls.ca_file, "/dev/null") &&
                str_eq(b->tls.cert_file, "/dev/null") && str_eq(b->tls.key_file, "/dev/null"),
            "tls");
}

static void check_full_routes(const struct conf *c)
{
    T_REQUIRE(c->nroutes == 2, "nroutes %zu", c->nroutes);
    const struct conf_route *r = &c->routes[0];
    T_CHECK(str_eq(r->name, "echo") && str_eq(r->job, "test.echo"), "route 0");
    T_CHECK(r->subscribe.count == 1 && str_eq(r->subscribe.items[0], "$share/grp/full/+/echo/#"),
            "subscribe %s", r->subscribe.items[0]);
    T_CHECK(str_eq(r->reply, "full-out/{2}/{1}") && str_eq(r->stream, "{1}"), "templates");
    T_CHECK(r->reply_allow.count == 3 && str_eq(r->reply_allow.items[0], "resp/{1}/#") &&
                str_eq(r->reply_allow.items[1], "+/{2}/answers") &&
                str_eq(r->reply_allow.items[2], "$SYS/x"),
            "reply_allow as a sequence");
    T_CHECK(r->qos == 2 && r->priority == PRIO_HIGH, "qos, priority");
    T_CHECK(r->timeout_ms == 3600000 && r->deadline_ms == 1 && r->retries == 0, "times");
    T_CHECK(r->params.count == 0, "no params");
    T_CHECK(r->line == 64 && r->column == 5, "route 0 at %d:%d", r->line, r->column);
    r = &c->routes[1];
    T_CHECK(str_eq(r->name, "spin.low") && str_eq(r->job, "test.spin"), "route 1");
    T_CHECK(!r->reply && !r->stream, "route 1 templates");
    T_CHECK(r->reply_allow.count == 1 && str_eq(r->reply_allow.items[0], "spin/answers"),
            "reply_allow as one string");
    T_CHECK(r->qos == 0 && r->priority == PRIO_LOW, "route 1 qos, priority");
    T_CHECK(r->timeout_ms == 10000 && r->deadline_ms == 0 && r->retries == 2, "route defaults");
}

static void check_full(const char *dir)
{
    char *path = join(dir, "ok-full.yaml");
    struct conf c;
    load_ok(path, &c);
    T_CHECK(str_eq(c.instance, "test_full-1") && str_eq(c.log_level, "debug"), "instance");
    /* root: any other user may be unable to read a tree unpacked under a
     * private directory, which -t warns about, and this file loads cleanly */
    T_CHECK(str_eq(c.user, "root") && near(c.shutdown_timeout_s, 0.5), "user, shutdown");
    check_full_broker(&c);
    const struct conf_workers *w = &c.workers;
    T_CHECK(w->min == 1 && w->max == 1 && w->inflight == 1024, "workers");
    T_CHECK(w->inflight_us == 10000000 && w->max_jobs == UINT64_C(18446744073709551), "workers");
    T_CHECK(w->max_rss_mb == 512 && near(w->backoff_max_s, 0.05) && near(w->stable_s, 0.5),
            "workers recycling");
    T_CHECK(c.limits.max_payload == 1048576 && c.limits.max_pending == 10 && c.limits.slab_mb == 1,
            "limits");
    T_CHECK(c.streams.max == 1000000 && near(c.streams.idle_s, 0.1), "streams");
    const struct conf_scaling *s = &c.scaling;
    T_CHECK(!s->enabled && near(s->interval_s, 0.05) && s->step == 3, "scaling");
    T_CHECK(near(s->up_cooldown_s, 0.1) && near(s->down_cooldown_s, 0.2), "cooldowns");
    T_CHECK(near(s->up_load, 1) && near(s->up_cpu, 0.95) && near(s->up_p95_ms, 250.5) &&
                near(s->up_pending_per_worker, 0),
            "up thresholds");
    T_CHECK(near(s->down_load, 0) && near(s->down_cpu, 0.05) && near(s->down_p95_ms, 100),
            "down thresholds");
    T_CHECK(str_eq(c.errors_topic, "full/errors"), "errors.topic");
    check_full_routes(&c);
    conf_free(&c);
    free(path);
}

/* The plugins: line of demo.yaml: a developer's build/ beside conf/. */
#define DEMO_PLUGINS "plugins: [../build/plugins/speech/mqfork_speech.so]\n"

/* A copy of demo.yaml whose plugin is SPEECH: this build's, wherever it is
 * (a package build's debian/build, build-asan/), not whatever ../build
 * holds. The caller unlinks and frees it. */
static char *demo_with_plugin(const char *demo, const char *speech)
{
    FILE *in = fopen(demo, "r");
    T_REQUIRE(in != NULL, "open %s", demo);
    char *path = strdup("/tmp/test_conf-demo-XXXXXX.yaml");
    int fd = path ? mkstemps(path, 5) : -1;
    FILE *out = fd >= 0 ? fdopen(fd, "w") : NULL;
    T_REQUIRE(out != NULL, "a temporary copy of %s", demo);
    char line[512];
    bool replaced = false;
    while (fgets(line, sizeof(line), in)) {
        bool it = strcmp(line, DEMO_PLUGINS) == 0;
        if (it)
            fprintf(out, "plugins: [%s]\n", speech);
        else
            fputs(line, out);
        replaced |= it;
    }
    fclose(in);
    T_REQUIRE(fclose(out) == 0, "write %s", path);
    T_CHECK(replaced, "%s has no line %s", demo, DEMO_PLUGINS);
    return path;
}

/* demo.yaml as the daemon would take it, with this build's SPEECH plugin;
 * without one (not built) only what the loader checks, plugins aside. */
static void load_demo(const char *dir, const char *speech, struct conf *c)
{
    char *demo = join(dir, "demo.yaml");
    if (speech) {
        char *copy = demo_with_plugin(demo, speech);
        load_ok(copy, c);
        unlink(copy);
        free(copy);
    } else {
        struct conf_diags d = {0};
        T_CHECK(conf_load(demo, c, &d) == 0 && d.count == 0, "%s: %zu diagnostics", demo, d.count);
        conf_diags_free(&d);
        T_REQUIRE(c->path != NULL, "%s must load", demo);
        printf("test_conf: no speech plugin built: %s checked without its plugin\n", demo);
    }
    free(demo);
}

/* The shipped examples load, and demo.yaml is what its comments promise. */
static void check_examples(const char *dir, const char *speech)
{
    char *path = join(dir, "mqfork.yaml");
    struct conf c;
    load_ok(path, &c);
    T_REQUIRE(c.nroutes == 5, "mqfork.yaml routes %zu", c.nroutes);
    const struct conf_correlate *cc = &c.routes[1].correlate;
    T_CHECK(c.routes[1].subscribe.count == 3 && cc->enabled && str_eq(cc->key, "{1}") &&
                cc->parts.count == 3 && str_eq(cc->parts.items[2], "head") &&
                cc->window_ms == 2000 && cc->max_open == 10000,
            "mqfork.yaml's correlating route");
    conf_free(&c);
    free(path);

    load_demo(dir, speech, &c);
    T_CHECK(str_eq(c.instance, "demo"), "demo instance %s", c.instance);
    T_CHECK(c.workers.min == 3 && c.workers.max == 4, "demo pool");
    T_REQUIRE(c.nroutes == 4, "demo routes %zu", c.nroutes);
    T_CHECK(str_eq(c.routes[0].name, "echo") && str_eq(c.routes[0].job, "test.echo") &&
                str_eq(c.routes[0].subscribe.items[0], "demo/echo/+/in") &&
                str_eq(c.routes[0].reply, "demo/echo/{1}/out"),
            "demo echo route");
    T_CHECK(str_eq(c.routes[1].name, "decode") && str_eq(c.routes[1].job, "opus.decode") &&
                str_eq(c.routes[1].stream, "{1}"),
            "demo decode route");
    T_CHECK(str_eq(c.routes[3].name, "spin") && str_eq(c.routes[3].job, "test.spin"),
            "demo spin route");
    conf_free(&c);
}

/* What conf_diags_print prints for D. Malloc'd. */
static char *printed(const struct conf_diags *d)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    T_REQUIRE(f != NULL, "open_memstream");
    conf_diags_print(d, f);
    fclose(f);
    return text;
}

/* A missing file, appending to existing diagnostics, and the printed form. */
static void check_missing_and_print(const char *dir)
{
    struct conf c;
    struct conf_diags d = {0};
    char *bad = join(dir, "bad-unknown-key.yaml");
    T_CHECK(conf_load(bad, &c, &d) == -1 && d.count == 1, "bad-unknown-key: %zu", d.count);
    const char *missing = "/nonexistent/mqfork.yaml";
    T_CHECK(conf_load(missing, &c, &d) == -1, "missing file loads");
    T_REQUIRE(d.count == 2, "diagnostics are appended: %zu", d.count);
    T_CHECK(d.items[1].line == 0 && d.items[1].column == 0, "no position");
    T_CHECK(!strcmp(d.items[1].message,
                    "cannot open '/nonexistent/mqfork.yaml': No such file or directory"),
            "message: %s", d.items[1].message);

    char *want = NULL, *text = printed(&d);
    T_REQUIRE(asprintf(&want,
                       "%s:3:1: error: unknown key 'wokers' in the top level; did you mean "
                       "'workers'?\n"
                       "/nonexistent/mqfork.yaml: error: cannot open '/nonexistent/mqfork.yaml': "
                       "No such file or directory\n",
                       bad) >= 0,
              "asprintf");
    T_CHECK(!strcmp(text, want), "printed:\n%s\nwanted:\n%s", text, want);
    free(text);
    free(want);
    free(bad);
    conf_diags_free(&d);
    T_CHECK(d.items == NULL && d.count == 0, "conf_diags_free resets");
}

/* ---- hostile files: each is refused within its bound, quickly. The
 * ceiling is generous (a loaded CI machine); these took from 7 s to minutes
 * before the bounds, and take milliseconds now. */

#define HOSTILE_MAX_S 5.0

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Write LINES copies of LINE after HEAD into DIR/NAME. Malloc'd path. */
static char *write_file(const char *dir, const char *name, const char *head, const char *line,
                        size_t lines)
{
    char *path = join(dir, name);
    FILE *f = fopen(path, "w");
    T_REQUIRE(f != NULL, "create %s", path);
    fputs(head, f);
    for (size_t i = 0; i < lines; i++)
        fprintf(f, line, i);
    T_REQUIRE(fclose(f) == 0, "write %s", path);
    return path;
}

/* Load PATH (with the registry's checks): it must fail within
 * HOSTILE_MAX_S. The caller frees *D. */
static void load_hostile(const char *path, struct conf_diags *d)
{
    struct conf c;
    struct registry reg;
    T_REQUIRE(registry_init(&reg) == 0, "registry");
    double t0 = now_s();
    int rc = registry_load_config(&reg, path, &c, true, d);
    double took = now_s() - t0;
    registry_free(&reg);
    T_CHECK(rc == -1, "%s: loading returned %d", path, rc);
    T_CHECK(took < HOSTILE_MAX_S, "%s: loading took %.2f s", path, took);
}

/* Exactly one error, at LINE:COLUMN, saying MESSAGE. */
static void check_one(const char *path, int line, int column, const char *message)
{
    struct conf_diags d = {0};
    load_hostile(path, &d);
    T_CHECK(d.count == 1 && d.omitted == 0, "%s: %zu diagnostics", path, conf_diags_total(&d));
    if (d.count >= 1)
        T_CHECK(d.items[0].line == line && d.items[0].column == column &&
                    !strcmp(d.items[0].message, message),
                "%s: %d:%d: %s", path, d.items[0].line, d.items[0].column, d.items[0].message);
    conf_diags_free(&d);
}

/* CONF_DIAGS_MAX diagnostics kept, the rest counted, and said so last. */
static void check_capped(const char *path, size_t problems)
{
    struct conf_diags d = {0};
    load_hostile(path, &d);
    T_CHECK(d.count == CONF_DIAGS_MAX, "%s: %zu kept", path, d.count);
    T_CHECK(conf_diags_total(&d) == problems && d.omitted_errors == d.omitted,
            "%s: %zu problems (%zu omitted, %zu errors), expected %zu", path, conf_diags_total(&d),
            d.omitted, d.omitted_errors, problems);
    char *want = NULL, *text = printed(&d);
    size_t len = strlen(text);
    T_REQUIRE(asprintf(&want, "%s: error: %zu more problems not shown (%zu in all)\n", path,
                       problems - CONF_DIAGS_MAX, problems) >= 0,
              "asprintf");
    T_CHECK(len >= strlen(want) && !strcmp(text + len - strlen(want), want), "%s: printed last: %s",
            path, len > 200 ? text + len - 200 : text);
    free(text);
    free(want);
    conf_diags_free(&d);
}

static void check_hostile(void)
{
    char dir[] = "/tmp/mqfork-test-conf-XXXXXX";
    T_REQUIRE(mkdtemp(dir) != NULL, "mkdtemp");
    char msg[256];

    /* The size: a file of exactly CONF_MAX_BYTES is read, one byte more
     * is not (comment lines of 64 bytes, and one byte). */
    char line[65];
    memset(line, '#', 63);
    line[63] = '\n';
    line[64] = '\0';
    char *path = write_file(dir, "max.yaml", "", line, CONF_MAX_BYTES / 64);
    struct conf c;
    load_warned(path, &c); /* no route */
    conf_free(&c);
    unlink(path);
    free(path);
    path = write_file(dir, "big.yaml", "#", line, CONF_MAX_BYTES / 64);
    snprintf(msg, sizeof(msg),
             "the file is larger than a configuration may be: more than %d bytes (1 MiB)",
             CONF_MAX_BYTES);
    check_one(path, 0, 0, msg);
    unlink(path);
    free(path);

    /* Depth: of 100,000 nested sequences, the one the load stops at is the
     * first too deep: "workers: " is 9 columns, and its mapping level 1. */
    path = write_file(dir, "deep.yaml", "workers: ", "[", 100000);
    snprintf(msg, sizeof(msg), "yaml: nested more than %d levels deep (a configuration needs 4)",
             CONF_MAX_DEPTH);
    check_one(path, 1, 9 + CONF_MAX_DEPTH, msg);
    unlink(path);
    free(path);

    /* 80,000 unknown keys, at the top and in a route's params. */
    path = write_file(dir, "unknown.yaml", "", "k%06zu: 1\n", 80000);
    check_capped(path, 80000);
    unlink(path);
    free(path);
    path = write_file(dir, "params.yaml",
                      "routes:\n  - name: r\n    subscribe: a/+\n    job: test.echo\n"
                      "    params:\n",
                      "      k%06zu: 1\n", 60000);
    check_capped(path, 60000);
    unlink(path);
    free(path);

    /* 60,000 keys that are all the same one (duplicates in a mapping). */
    path = write_file(dir, "dup.yaml", "", "instance: a%.0zu\n", 60000);
    check_capped(path, 59999);
    unlink(path);
    free(path);

    T_CHECK(rmdir(dir) == 0, "rmdir %s", dir);
}

static void check_priorities(void)
{
    T_CHECK(conf_priority_parse("high") == PRIO_HIGH, "high");
    T_CHECK(conf_priority_parse("normal") == PRIO_NORMAL, "normal");
    T_CHECK(conf_priority_parse("low") == PRIO_LOW, "low");
    T_CHECK(conf_priority_parse("urgent") == -1, "urgent");
    T_CHECK(!strcmp(conf_priority_name(PRIO_LOW), "low"), "name low");
    T_CHECK(!strcmp(conf_priority_name(PRIO_HIGH), "high"), "name high");
}

int main(int argc, char **argv)
{
    T_REQUIRE(argc == 3 || argc == 4, "usage: %s TEST_CONF_DIR REPO_CONF_DIR [SPEECH_PLUGIN]",
              argv[0]);
    check_dir(argv[1]);
    check_empty_and_defaults(argv[1]);
    check_full(argv[1]);
    check_examples(argv[2], argc == 4 ? argv[3] : NULL);
    check_missing_and_print(argv[1]);
    check_hostile();
    check_priorities();
    T_DONE();
}
