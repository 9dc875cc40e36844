/* test_stat.c - mqforkstat from outside, against an engine running in this
 * process with a known load behind it and the daemon's MQTT source attached
 * (not connected): -j agrees with what was sent and received, -1 prints
 * every documented name, -p passes promtool, and the refusals (stale
 * segment, other layout version, no permission, unknown instance, bad
 * usage) give their messages and exit codes. Named blocks that only this
 * test knows, added at run time, show in -1, -j, -p and the live view with
 * the same layout version. The live view runs in a pseudo-terminal under
 * script(1), 80 columns wide, and quits on `q`.
 *
 *   test_stat MQFORKSTAT [tools/mqforkstat.md [test/stat_prom_families.txt]]
 *
 * While mqforkstat runs the engine is idle (its load has been answered), so
 * the figures it reads are the ones this process knows. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shm/segment.h"
#include "supervisor/routes.h"
#include "supervisor/source.h"
#include "test/fixture.h"
#include "test/run.h"
#include "test/stat_blocks.h"
#include "test/t.h"

#define ECHOES  500
#define CRASHES 3
#define LIMIT_S 20.0

static const char *stat_bin;
static const char *doc_path;
static const char *families_path; /* -p's families before named blocks */

/* ---- the load */

static void push_load(struct fixture *f)
{
    static const char payload[] = "hello";
    for (size_t i = 0; i < ECHOES; i++)
        T_REQUIRE(fixture_submit(f, i, f->echo, payload, sizeof(payload) - 1, NULL, PRIO_NORMAL, 0,
                                 0) == JOB_OK,
                  "echo %zu accepted", i);
    size_t n = ECHOES;
    T_REQUIRE(fixture_run_until(f, fixture_all_answered, &n, LIMIT_S), "echoes answered");
    /* one crash at a time, so each has a worker to kill and its own event */
    for (size_t i = ECHOES; i < ECHOES + CRASHES; i++) {
        T_REQUIRE(fixture_submit(f, i, f->crash, "segv", 4, NULL, PRIO_NORMAL, 0, 0) == JOB_OK,
                  "crash %zu accepted", i);
        size_t upto = i + 1;
        T_REQUIRE(fixture_run_until(f, fixture_all_answered, &upto, LIMIT_S), "crash answered");
        T_REQUIRE(fixture_run_until(f, fixture_pool_ready, NULL, LIMIT_S), "pool back");
    }
    /* let the engine publish the last figures (it does so once per turn) */
    struct stats_global g;
    double end = fixture_now() + LIMIT_S;
    do {
        engine_turn(f->e, 1000000);
        fixture_stats(f, &g);
    } while ((g.workers_live < f->conf.workers.min || g.completed + g.failed < ECHOES + CRASHES) &&
             fixture_now() < end);
}

/* Whether OUT holds LINE as a whole line. */
static bool has_line(const char *out, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = strstr(out, line); p; p = strstr(p + 1, line))
        if ((p == out || p[-1] == '\n') && (p[n] == '\n' || p[n] == '\0'))
            return true;
    return false;
}

/* ---- named blocks added at run time */

/* The value of the -1 line NAME in OUT, or "" (copied into BUF). */
static const char *text_value(char *buf, size_t len, const char *out, const char *name)
{
    size_t n = strlen(name);
    buf[0] = '\0';
    for (const char *p = strstr(out, name); p; p = strstr(p + 1, name))
        if ((p == out || p[-1] == '\n') && p[n] == ' ') {
            snprintf(buf, len, "%.*s", (int)strcspn(p + n + 1, "\n"), p + n + 1);
            break;
        }
    return buf;
}

/* The same mqforkstat, reading the same segment, shows blocks added after
 * it first read it, with fields it never heard of, and the layout version
 * stays what it was: adding counters is not a layout change. */
static void test_blocks_added(struct fixture *f)
{
    const char *argv[] = {stat_bin, "-1", "-n", f->conf.instance, NULL};
    struct run before = run(argv);
    char v1[32], v2[32];
    T_CHECK(before.status == 0 && !strstr(before.out, "\nstattest."),
            "-1 before the block exists: exit %d", before.status);
    T_REQUIRE(stat_blocks_add(f), "the engine took the test's blocks");
    struct run after = run(argv);
    T_CHECK(after.status == 0, "-1 after: exit %d: %s", after.status, after.err);
    text_value(v1, sizeof(v1), before.out, "layout_version");
    text_value(v2, sizeof(v2), after.out, "layout_version");
    T_CHECK(v1[0] && strcmp(v1, v2) == 0 && atoi(v2) == SEG_LAYOUT_VERSION,
            "layout_version %s before, %s after", v1, v2);
    for (size_t i = 0; stat_blocks_text[i]; i++)
        T_CHECK(has_line(after.out, stat_blocks_text[i]), "-1 lacks '%s'", stat_blocks_text[i]);
    run_free(&before);
    run_free(&after);
}

/* ---- -j */

static double num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static const cJSON *find_kind(const cJSON *kinds, const char *name)
{
    const cJSON *k;
    cJSON_ArrayForEach(k, kinds)
    {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(k, "name");
        if (cJSON_IsString(n) && strcmp(n->valuestring, name) == 0)
            return k;
    }
    return NULL;
}

static void check_json_kinds(const cJSON *doc)
{
    const cJSON *kinds = cJSON_GetObjectItemCaseSensitive(doc, "kinds");
    const cJSON *echo = find_kind(kinds, "test.echo"), *crash = find_kind(kinds, "test.crash");
    T_REQUIRE(echo && crash, "kinds test.echo and test.crash present");
    T_CHECK(num(echo, "received") == ECHOES && num(echo, "completed") == ECHOES,
            "echo received %g completed %g", num(echo, "received"), num(echo, "completed"));
    const cJSON *run = cJSON_GetObjectItemCaseSensitive(echo, "run");
    const cJSON *wait = cJSON_GetObjectItemCaseSensitive(echo, "wait");
    T_CHECK(num(wait, "count") == ECHOES, "echo wait count %g", num(wait, "count"));
    T_CHECK(num(run, "count") > 0 && num(run, "count") <= ECHOES && num(run, "p99_us") > 0,
            "echo run count %g p99 %g", num(run, "count"), num(run, "p99_us"));
    /* Every echo was answered, and no job is answered before it started. */
    const cJSON *total = cJSON_GetObjectItemCaseSensitive(echo, "total");
    T_CHECK(num(total, "count") == ECHOES, "echo total count %g", num(total, "count"));
    T_CHECK(num(total, "p99_us") > 0 && num(total, "p99_us") >= num(wait, "p99_us") &&
                num(total, "max_us") >= num(wait, "max_us"),
            "echo total p99 %g max %g, wait p99 %g max %g", num(total, "p99_us"),
            num(total, "max_us"), num(wait, "p99_us"), num(wait, "max_us"));
    const cJSON *errors = cJSON_GetObjectItemCaseSensitive(crash, "errors");
    T_CHECK(num(crash, "failed") == CRASHES && num(errors, "quarantined") == CRASHES,
            "crash failed %g quarantined %g", num(crash, "failed"), num(errors, "quarantined"));
}

static void check_json_workers(const cJSON *doc, const struct fixture *f)
{
    const cJSON *workers = cJSON_GetObjectItemCaseSensitive(doc, "workers");
    int n = 0;
    const cJSON *w;
    cJSON_ArrayForEach(w, workers)
    {
        int slot = (int)num(w, "slot");
        T_CHECK(num(w, "pid") == engine_worker_pid(f->e, (unsigned)slot),
                "worker %d pid %g is the engine's %d", slot, num(w, "pid"),
                engine_worker_pid(f->e, (unsigned)slot));
        n++;
    }
    T_CHECK(n == (int)f->conf.workers.min, "%d workers listed", n);
}

static void check_json_crashes(const cJSON *doc)
{
    const cJSON *crashes = cJSON_GetObjectItemCaseSensitive(doc, "crashes");
    const cJSON *recent = cJSON_GetObjectItemCaseSensitive(crashes, "recent");
    T_CHECK(num(crashes, "total") == CRASHES && cJSON_GetArraySize(recent) == CRASHES,
            "crashes total %g", num(crashes, "total"));
    const cJSON *c0 = cJSON_GetArrayItem(recent, 0);
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(c0, "kind");
    T_CHECK(num(c0, "signal") == SIGSEGV && cJSON_IsString(kind) &&
                strcmp(kind->valuestring, "test.crash") == 0,
            "newest crash: SIGSEGV in test.crash");
}

/* The test's own blocks, found under "blocks" by name. */
static void check_json_blocks(const cJSON *doc, const struct fixture *f)
{
    const cJSON *blocks = cJSON_GetObjectItemCaseSensitive(doc, "blocks");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(blocks, "stattest");
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(blocks, "plugin.stattest");
    const cJSON *errors = cJSON_GetObjectItemCaseSensitive(t, "errors");
    const cJSON *latency = cJSON_GetObjectItemCaseSensitive(t, "latency");
    T_REQUIRE(t && p, "-j has blocks stattest and plugin.stattest");
    T_CHECK(num(t, "hits") == 42 && num(t, "level") == 7 && num(t, "ratio") == 1.5,
            "stattest hits %g level %g ratio %g", num(t, "hits"), num(t, "level"), num(t, "ratio"));
    T_CHECK(num(errors, "timeout") == 3 && num(errors, "refused") == 1, "stattest errors");
    T_CHECK(num(latency, "count") == 3 && num(latency, "max_us") == 9, "stattest latency");
    T_CHECK(num(p, "instances") == f->conf.workers.max && num(p, "frames") == 12,
            "plugin.stattest: %g instances summed to %g frames", num(p, "instances"),
            num(p, "frames"));
}

static void test_json(const struct fixture *f)
{
    const char *argv[] = {stat_bin, "-j", "-n", f->conf.instance, NULL};
    struct run r = run(argv);
    T_CHECK(r.status == 0, "-j exit %d: %s", r.status, r.err);
    cJSON *doc = cJSON_Parse(r.out);
    T_REQUIRE(doc, "-j output parses as JSON");
    const cJSON *inst = cJSON_GetObjectItemCaseSensitive(doc, "instance");
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(doc, "global");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(inst, "name");
    T_CHECK(num(doc, "schema") == 1, "schema 1");
    T_CHECK(cJSON_IsString(name) && strcmp(name->valuestring, f->conf.instance) == 0,
            "instance name");
    T_CHECK(num(inst, "pid") == getpid(), "pid is this process");
    T_CHECK(num(g, "jobs_accepted") == ECHOES + CRASHES, "accepted %g", num(g, "jobs_accepted"));
    T_CHECK(num(g, "jobs_completed") == ECHOES, "completed %g", num(g, "jobs_completed"));
    T_CHECK(num(g, "jobs_failed") == CRASHES && num(g, "jobs_quarantined") == CRASHES,
            "failed %g quarantined %g", num(g, "jobs_failed"), num(g, "jobs_quarantined"));
    T_CHECK(num(g, "workers_crashed") == CRASHES, "crashed %g", num(g, "workers_crashed"));
    size_t ok = 0;
    for (size_t i = 0; i < ECHOES; i++)
        ok += f->recs[i].status == JOB_OK;
    T_CHECK(ok == ECHOES, "this process received %zu echoes", ok);
    check_json_kinds(doc);
    check_json_workers(doc, f);
    check_json_crashes(doc);
    check_json_blocks(doc, f);
    cJSON_Delete(doc);
    run_free(&r);
}

/* ---- -1 against the documentation */

/* The names documented in tools/mqforkstat.md: the first `code` of each
 * table row of its "## `-1`" section, with <placeholders> turned into '*'. */
static size_t doc_names(char names[][96], size_t max)
{
    FILE *fp = fopen(doc_path, "r");
    T_REQUIRE(fp, "cannot open %s", doc_path);
    char line[1024];
    size_t n = 0;
    bool inside = false; /* the section "## `-1`" */
    while (fgets(line, sizeof(line), fp) && n < max) {
        if (strncmp(line, "## ", 3) == 0)
            inside = strncmp(line, "## `-1`", 7) == 0;
        if (!inside || strncmp(line, "| `", 3) != 0)
            continue;
        char *end = strchr(line + 3, '`');
        if (!end)
            continue;
        *end = '\0';
        if (strncmp(line + 3, "<block>", 7) == 0)
            continue; /* any block's fields: this test checks its own */
        size_t k = 0;
        for (const char *p = line + 3; *p && k + 1 < sizeof(names[0]); p++) {
            if (*p == '<') {
                names[n][k++] = '*';
                p = strchr(p, '>');
                if (!p)
                    break;
            } else {
                names[n][k++] = *p;
            }
        }
        names[n][k] = '\0';
        n++;
    }
    fclose(fp);
    return n;
}

static bool output_has(const char *out, const char *pattern)
{
    char *copy = strdup(out);
    bool found = false;
    char *save = NULL;
    for (char *l = strtok_r(copy, "\n", &save); l && !found; l = strtok_r(NULL, "\n", &save)) {
        char *sp = strchr(l, ' ');
        if (sp)
            *sp = '\0';
        found = fnmatch(pattern, l, 0) == 0;
    }
    free(copy);
    return found;
}

static bool documented(char names[][96], size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (fnmatch(names[i], name, 0) == 0)
            return true;
    return false;
}

static void test_text(const struct fixture *f)
{
    static char names[512][96];
    size_t n = doc_names(names, 512);
    T_CHECK(n > 60, "only %zu names documented", n);
    const char *argv[] = {stat_bin, "-1", "-n", f->conf.instance, NULL};
    struct run r = run(argv);
    T_CHECK(r.status == 0, "-1 exit %d: %s", r.status, r.err);
    for (size_t i = 0; i < n; i++) {
        /* no scaling happens here, so its ring is empty */
        if (strncmp(names[i], "scale.", 6) == 0 || strncmp(names[i], "busy", 4) == 0)
            continue;
        T_CHECK(output_has(r.out, names[i]), "-1 lacks the documented %s", names[i]);
    }
    char *copy = strdup(r.out), *save = NULL;
    for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        char *sp = strchr(l, ' ');
        T_CHECK(sp && sp[1], "line '%s' is `name value`", l);
        if (sp)
            *sp = '\0';
        T_CHECK(documented(names, n, l) || stat_blocks_own(l),
                "-1 prints %s, which is not documented", l);
    }
    free(copy);
    T_CHECK(strstr(r.out, "\njobs_accepted 503\n"), "-1 has jobs_accepted 503");
    T_CHECK(strstr(r.out, "\nworkers_live 2\n"), "-1 has workers_live 2");
    for (size_t i = 0; stat_blocks_text[i]; i++)
        T_CHECK(has_line(r.out, stat_blocks_text[i]), "-1 lacks '%s'", stat_blocks_text[i]);
    run_free(&r);
}

/* ---- -p */

/* Every # HELP and # TYPE line -p printed before named blocks is printed
 * still: no family's name, type or help text changed. */
static void check_prom_families(const char *out)
{
    FILE *fp = fopen(families_path, "r");
    T_REQUIRE(fp, "cannot open %s", families_path);
    char line[512];
    int n = 0;
    while (fgets(line, sizeof(line), fp)) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "# HELP ", 7) != 0 && strncmp(line, "# TYPE ", 7) != 0)
            continue;
        T_CHECK(has_line(out, line), "-p lacks '%s'", line);
        n++;
    }
    fclose(fp);
    T_CHECK(n > 100, "only %d family lines in %s", n, families_path);
}

static void test_prom(const struct fixture *f)
{
    const char *argv[] = {stat_bin, "-p", "-n", f->conf.instance, NULL};
    struct run r = run(argv);
    T_CHECK(r.status == 0, "-p exit %d: %s", r.status, r.err);
    T_CHECK(strstr(r.out, "mqfork_jobs_accepted_total{mqfork_instance=\"") != NULL,
            "-p has counters");
    T_CHECK(strstr(r.out, "# TYPE mqfork_kind_run_seconds histogram") != NULL, "-p has histograms");
    T_CHECK(strstr(r.out, "# TYPE mqfork_kind_total_seconds histogram") != NULL,
            "-p has the total histogram");
    for (size_t i = 0; stat_blocks_prom[i]; i++) {
        char line[256];
        snprintf(line, sizeof(line), stat_blocks_prom[i], f->conf.instance);
        T_CHECK(has_line(r.out, line), "-p lacks '%s'", line);
    }
    check_prom_families(r.out);
    if (!run_has_program("promtool")) {
        fprintf(stderr, "test_stat: promtool not found, -p not checked by it (tools/check "
                        "installs the prometheus package)\n");
        run_free(&r);
        return;
    }
    char path[] = "/tmp/test_stat_prom_XXXXXX";
    int fd = mkstemp(path);
    T_REQUIRE(fd >= 0 && write(fd, r.out, r.out_len) == (ssize_t)r.out_len, "temp file");
    lseek(fd, 0, SEEK_SET);
    const char *check[] = {"promtool", "check", "metrics", NULL};
    struct run c = run_as(NULL, fd, check);
    T_CHECK(c.status == 0 && c.out_len == 0, "promtool check metrics: exit %d: %s%s", c.status,
            c.out, c.err);
    close(fd);
    unlink(path);
    run_free(&c);
    run_free(&r);
}

/* ---- refusals */

static void expect_refusal(const char *what, const char *user, const char *const argv[], int code,
                           const char *message)
{
    struct run r = run_as(user, -1, argv);
    T_CHECK(r.status == code, "%s: exit %d, wanted %d (%s)", what, r.status, code, r.err);
    T_CHECK(!message || strstr(r.err, message), "%s: message lacks '%s': %s", what, message, r.err);
    run_free(&r);
}

static void test_stale(void)
{
    char name[64];
    snprintf(name, sizeof(name), "stat-stale-%d", (int)getpid());
    pid_t pid = fork();
    if (pid == 0) {
        struct segment s;
        struct seg_geometry g = {.max_workers = 1, .ring_cap = 64, .slab_size = 65536};
        pid_t stale;
        _exit(seg_create(&s, name, &g, &stale) == 0 ? 0 : 1); /* exits without unlinking */
    }
    T_REQUIRE(run_wait(pid) == 0, "child made a segment");
    const char *argv[] = {stat_bin, "-1", "-n", name, NULL};
    char msg[128];
    snprintf(msg, sizeof(msg), "the daemon (pid %d) is gone; the segment is stale", (int)pid);
    expect_refusal("stale", NULL, argv, 1, msg);
    const char *list[] = {stat_bin, "-l", NULL};
    struct run r = run(list);
    char *line = strstr(r.out, name);
    T_CHECK(r.status == 0 && line && strstr(line, "stale"), "-l shows %s as stale:\n%s", name,
            r.out);
    run_free(&r);
    char shm[80];
    snprintf(shm, sizeof(shm), "/mqfork.%s", name);
    shm_unlink(shm);
}

static void test_version(void)
{
    char name[64], shm[80];
    snprintf(name, sizeof(name), "stat-version-%d", (int)getpid());
    snprintf(shm, sizeof(shm), "/mqfork.%s", name);
    int fd = shm_open(shm, O_RDWR | O_CREAT | O_EXCL, 0640);
    struct seg_header h = {.magic = SEG_MAGIC, .layout_version = SEG_LAYOUT_VERSION + 98};
    T_REQUIRE(fd >= 0 && ftruncate(fd, 8192) == 0 && write(fd, &h, sizeof(h)) == sizeof(h),
              "fake segment");
    close(fd);
    char msg[128];
    snprintf(msg, sizeof(msg), "layout version %d, this mqforkstat reads version %d",
             SEG_LAYOUT_VERSION + 98, SEG_LAYOUT_VERSION);
    const char *argv[] = {stat_bin, "-j", "-n", name, NULL};
    expect_refusal("version", NULL, argv, 1, msg);
    shm_unlink(shm);
}

static void test_permission(const struct fixture *f)
{
    if (getuid() != 0 || !getpwnam("nobody")) {
        fprintf(stderr, "test_stat: not root: permission test skipped\n");
        return;
    }
    struct stat st;
    char path[128], msg[128];
    snprintf(path, sizeof(path), "/dev/shm/mqfork.%s", f->conf.instance);
    T_REQUIRE(stat(path, &st) == 0, "segment file exists");
    const struct group *gr = getgrgid(st.st_gid);
    snprintf(msg, sizeof(msg), "member of group '%s'", gr ? gr->gr_name : "?");
    /* the build tree must be reachable by nobody (it is not under /root) */
    const char *help[] = {stat_bin, "-h", NULL};
    struct run h = run_as("nobody", -1, help);
    run_free(&h);
    if (h.status != 0) {
        fprintf(stderr, "test_stat: nobody cannot run %s: permission test skipped\n", stat_bin);
        return;
    }
    const char *argv[] = {stat_bin, "-1", "-n", f->conf.instance, NULL};
    expect_refusal("permission", "nobody", argv, 1, "this user may not read");
    expect_refusal("permission group", "nobody", argv, 1, msg);
}

static void test_usage(void)
{
    const char *unknown[] = {stat_bin, "-1", "-n", "no-such-instance-for-test", NULL};
    expect_refusal("unknown instance", NULL, unknown, 1, "no such instance");
    const char *bad_flag[] = {stat_bin, "-x", NULL};
    expect_refusal("bad flag", NULL, bad_flag, 2, "usage");
    const char *bad_w[] = {stat_bin, "-w", "0.01", NULL};
    expect_refusal("bad -w", NULL, bad_w, 2, "-w");
    const char *two[] = {stat_bin, "-1", "-j", NULL};
    expect_refusal("two modes", NULL, two, 2, "exclude");
    const char *extra[] = {stat_bin, "-1", "stray", NULL};
    expect_refusal("stray argument", NULL, extra, 2, "unexpected");
}

/* ---- the live view in a pseudo-terminal */

/* Wait for the pty's next output until END and add it to R's: 1 = read some,
 * 0 = EOF, -1 = END passed first. */
static int read_more(int fd, struct run *r, double end)
{
    struct pollfd p = {fd, POLLIN, 0};
    int left = (int)((end - fixture_now()) * 1000);
    if (left <= 0 || poll(&p, 1, left) <= 0)
        return -1;
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0)
        return 0;
    run_append(&r->out, &r->out_len, buf, (size_t)n);
    return 1;
}

/* Read the pty's output until it holds every one of WANT or LIMIT_S passes. */
static bool read_until(int fd, struct run *r, const char *const want[], double limit_s)
{
    double end = fixture_now() + limit_s;
    for (;;) {
        bool all = true;
        for (size_t i = 0; want[i]; i++)
            all = all && strstr(r->out, want[i]);
        if (all)
            return true;
        if (read_more(fd, r, end) <= 0)
            return false;
    }
}

/* Read the pty's output until EOF; false when LIMIT_S passed first. */
static bool read_to_eof(int fd, struct run *r, double limit_s)
{
    double end = fixture_now() + limit_s;
    int rc;
    while ((rc = read_more(fd, r, end)) > 0)
        ;
    return rc == 0;
}

static void test_live(const struct fixture *f)
{
    if (!run_has_program("script")) {
        fprintf(stderr, "test_stat: script(1) not found: live view test skipped\n");
        return;
    }
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "exec '%s' -n '%s' -w 0.2", stat_bin, f->conf.instance);
    int in[2], out[2];
    T_REQUIRE(pipe2(in, O_CLOEXEC) == 0 && pipe2(out, O_CLOEXEC) == 0, "pipes");
    pid_t pid = fork();
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        dup2(out[1], 2);
        setenv("TERM", "xterm", 1);
        setenv("LINES", "120", 1);
        setenv("COLUMNS", "80", 1);
        execlp("script", "script", "-qfec", cmd, "/dev/null", (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    struct run r = {.out = calloc(1, 1)};
    const char *const want[] = {f->conf.instance,  "test.echo",     "workers", "stattest",
                                "plugin.stattest", "mqtt_unrouted", NULL};
    T_CHECK(read_until(out[0], &r, want, LIMIT_S), "live view shows the instance:\n%s", r.out);
    T_CHECK(write(in[1], "q", 1) == 1, "sent q");
    /* script exits with the view, closing the pipe: EOF is the event */
    bool quit = read_to_eof(out[0], &r, 5.0);
    if (!quit)
        kill(pid, SIGKILL);
    int status = run_wait(pid);
    T_CHECK(quit && status == 0, "live view quit on q within 5 s (status %d)", status);
    close(in[1]);
    close(out[0]);
    free(r.out);
}

int main(int argc, char **argv)
{
    T_REQUIRE(argc >= 2, "usage: test_stat MQFORKSTAT [tools/mqforkstat.md [FAMILIES]]");
    /* absolute: the permission test runs it from / */
    static char bin[4096];
    T_REQUIRE(realpath(argv[1], bin), "%s not found", argv[1]);
    stat_bin = bin;
    doc_path = argc >= 3 ? argv[2] : "tools/mqforkstat.md";
    families_path = argc >= 4 ? argv[3] : "test/stat_prom_families.txt";
    signal(SIGPIPE, SIG_IGN);

    struct fixture f;
    fixture_init(&f, "stat", ECHOES + CRASHES);
    /* crashes follow each other: respawn at once, not after a backoff */
    f.conf.workers.stable_s = 0.02;
    f.conf.workers.backoff_max_s = 0.05;
    stat_blocks_declare(&f);
    fixture_start(&f);
    /* the daemon's MQTT source, not connected: its blocks ("mqtt", "routes")
     * hold names -1 must print, all 0 here */
    struct routes *routes = routes_new(&f.conf, f.e, f.loop);
    struct mqtt *mqtt = routes ? mqtt_new(&f.conf, f.loop, engine_segment(f.e)) : NULL;
    T_REQUIRE(mqtt && routes_attach(routes, mqtt) == 0, "MQTT source attached");
    /* and its alerts, one on and never firing: their block holds names too */
    f.conf.alerts.rule[ALERT_PENDING] = (struct conf_alert){.enabled = true, .fire = 1e9};
    void *alerts = alerts_source.create(&f.conf, f.e, f.loop);
    T_REQUIRE(alerts && alerts_source.attach(alerts, mqtt) == 0, "alerts attached");
    push_load(&f);

    test_blocks_added(&f);
    test_json(&f);
    test_text(&f);
    test_prom(&f);
    test_permission(&f);
    test_live(&f);
    test_stale();
    test_version();
    test_usage();

    alerts_source.free(alerts);
    routes_free(routes); /* its timer is the fixture's loop's */
    fixture_free(&f);
    mqtt_free(mqtt);
    T_DONE();
}
