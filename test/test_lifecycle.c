/* test_lifecycle.c - the real mqforkd under the signals operators send:
 * SIGUSR1 / SIGUSR2 clamped and logged, SIGHUP with a broken file (old
 * configuration kept, every problem logged with file:line:column) and with
 * a good one (new pool size in force), SIGTERM (exit 0, segment and workers
 * gone), SIGQUIT (non-zero, segment and workers gone), and the systemd
 * notifications, read from our own NOTIFY_SOCKET. The test waits on events
 * - log lines through a pipe, datagrams, waitpid - not on sleeps.
 *
 * Usage: test_lifecycle PATH_TO_MQFORKD */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test/t.h"

static const char *mqforkd;
static char dir[64];

struct daemon {
    pid_t pid;
    int err;    /* its stderr */
    int notify; /* our NOTIFY_SOCKET, or -1 */
    char instance[48];
    char conf[128];
    char buf[65536]; /* stderr lines not yet looked at */
    size_t len;
    char notes[16384]; /* notification datagrams, newline separated */
    size_t nlen;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void write_conf(const char *path, const char *instance, const char *workers,
                       const char *extra)
{
    FILE *f = fopen(path, "w");
    T_REQUIRE(f, "write %s", path);
    fprintf(f,
            "instance: %s\n"
            "log_level: info\n"
            "shutdown_timeout_s: 5\n"
            "broker:\n"
            "  host: 127.0.0.1\n"
            "  port: 1\n"
            "  reconnect_min_s: 5\n"
            "  reconnect_max_s: 5\n"
            "workers:\n"
            "%s"
            "scaling:\n"
            "  enabled: false\n"
            "routes:\n"
            "  - name: echo\n"
            "    subscribe: lc/echo/+\n"
            "    job: test.echo\n"
            "%s",
            instance, workers, extra);
    fclose(f);
}

/* Replace FROM by TO in the file PATH (once). */
static void rewrite(const char *path, const char *from, const char *to)
{
    char buf[8192];
    FILE *f = fopen(path, "r");
    T_REQUIRE(f, "read %s", path);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *at = strstr(buf, from);
    T_REQUIRE(at, "%s holds no '%s'", path, from);
    f = fopen(path, "w");
    T_REQUIRE(f, "write %s", path);
    fprintf(f, "%.*s%s%s", (int)(at - buf), buf, to, at + strlen(from));
    fclose(f);
}

static int notify_socket(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    T_REQUIRE(strlen(path) < sizeof(a.sun_path), "socket path %s too long", path);
    memcpy(a.sun_path, path, strlen(path) + 1);
    unlink(path);
    T_REQUIRE(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0, "bind %s", path);
    return fd;
}

/* Start mqforkd on D->conf; with notifications when WITH_NOTIFY. The child
 * knows its pid before exec, so WATCHDOG_PID can name the daemon. */
static void start(struct daemon *d, bool with_notify)
{
    int p[2];
    T_REQUIRE(pipe2(p, O_CLOEXEC) == 0, "pipe");
    char sock[128];
    snprintf(sock, sizeof(sock), "%s/notify-%s", dir, d->instance);
    d->notify = with_notify ? notify_socket(sock) : -1;
    d->len = d->nlen = 0;
    d->pid = fork();
    T_REQUIRE(d->pid >= 0, "fork");
    if (d->pid == 0) {
        dup2(p[1], STDERR_FILENO);
        unsetenv("JOURNAL_STREAM");
        unsetenv("NOTIFY_SOCKET");
        if (with_notify) {
            char pid[16];
            snprintf(pid, sizeof(pid), "%d", (int)getpid());
            setenv("NOTIFY_SOCKET", sock, 1);
            setenv("WATCHDOG_USEC", "200000", 1);
            setenv("WATCHDOG_PID", pid, 1);
        }
        execl(mqforkd, mqforkd, "-c", d->conf, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    d->err = p[0];
}

/* Read what is there from the daemon's stderr and notify socket, waiting
 * up to MS for something to come. */
static void pump(struct daemon *d, int ms)
{
    struct pollfd pf[2] = {{d->err, POLLIN, 0}, {d->notify, POLLIN, 0}};
    if (poll(pf, d->notify >= 0 ? 2 : 1, ms) <= 0)
        return;
    if (pf[0].revents) {
        ssize_t n = read(d->err, d->buf + d->len, sizeof(d->buf) - 1 - d->len);
        if (n > 0) {
            if (getenv("MQFORK_TEST_VERBOSE"))
                fwrite(d->buf + d->len, 1, (size_t)n, stderr);
            d->len += (size_t)n;
            d->buf[d->len] = '\0';
        }
    }
    char dg[1024];
    ssize_t n;
    while (d->notify >= 0 && (n = recv(d->notify, dg, sizeof(dg) - 1, 0)) > 0) {
        dg[n] = '\0';
        if (d->nlen + (size_t)n + 2 < sizeof(d->notes))
            d->nlen += (size_t)snprintf(d->notes + d->nlen, sizeof(d->notes) - d->nlen, "%s\n", dg);
    }
}

/* Wait for TEXT in the log (consumed up to it, so each wait sees new lines). */
static bool wait_log(struct daemon *d, const char *text, double limit_s)
{
    double end = now_s() + limit_s;
    for (;;) {
        char *at = strstr(d->buf, text);
        if (at) {
            char *eol = strchr(at, '\n');
            size_t cut = eol ? (size_t)(eol + 1 - d->buf) : d->len;
            memmove(d->buf, d->buf + cut, d->len - cut + 1);
            d->len -= cut;
            return true;
        }
        if (now_s() > end)
            return false;
        pump(d, 50);
    }
}

/* Wait for a notification containing TEXT (consumed likewise). */
/* Wait for the notification line holding TEXT; copy it into LINE. */
static bool note_line(struct daemon *d, const char *text, char *line, size_t len, double limit_s)
{
    double end = now_s() + limit_s;
    char *at;
    while (!(at = strstr(d->notes, text))) {
        if (now_s() > end)
            return false;
        pump(d, 50);
    }
    snprintf(line, len, "%.*s", (int)strcspn(at, "\n"), at);
    return true;
}

static bool wait_note(struct daemon *d, const char *text, double limit_s)
{
    double end = now_s() + limit_s;
    for (;;) {
        char *at = strstr(d->notes, text);
        if (at) {
            char *eol = strchr(at, '\n');
            size_t cut = eol ? (size_t)(eol + 1 - d->notes) : d->nlen;
            memmove(d->notes, d->notes + cut, d->nlen - cut + 1);
            d->nlen -= cut;
            return true;
        }
        if (now_s() > end)
            return false;
        pump(d, 50);
    }
}

static int wait_exit(struct daemon *d, double limit_s)
{
    double end = now_s() + limit_s;
    int st;
    for (;;) {
        pid_t r = waitpid(d->pid, &st, WNOHANG);
        if (r == d->pid)
            break;
        if (now_s() > end) {
            kill(d->pid, SIGKILL);
            waitpid(d->pid, &st, 0);
            T_CHECK(false, "daemon did not exit within %.0f s", limit_s);
            break;
        }
        pump(d, 20);
    }
    pump(d, 0);
    close(d->err);
    if (d->notify >= 0)
        close(d->notify);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Children of PID whose command line starts with "mqforkd: worker ". */
static unsigned list_workers(pid_t pid, pid_t *out, unsigned max)
{
    DIR *p = opendir("/proc");
    unsigned n = 0;
    struct dirent *de;
    while (p && (de = readdir(p))) {
        char path[300], buf[512];
        snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t len = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[len] = '\0';
        char *rp = strrchr(buf, ')');
        char state;
        int ppid;
        if (!rp || sscanf(rp + 2, "%c %d", &state, &ppid) != 2 || ppid != pid || state == 'Z')
            continue;
        snprintf(path, sizeof(path), "/proc/%s/cmdline", de->d_name);
        f = fopen(path, "r");
        if (!f)
            continue;
        len = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[len] = '\0';
        if (strncmp(buf, "mqforkd: worker ", 16) == 0 && n < max)
            out[n++] = atoi(de->d_name);
    }
    if (p)
        closedir(p);
    return n;
}

/* Wait until PID has exactly WANT workers. Workers start and leave without
 * a log line at level info, so this looks at /proc now and then. */
static bool wait_workers(struct daemon *d, unsigned want, double limit_s)
{
    pid_t w[64];
    double end = now_s() + limit_s;
    while (list_workers(d->pid, w, 64) != want) {
        if (now_s() > end)
            return false;
        pump(d, 20);
    }
    return true;
}

static bool gone(pid_t pid)
{
    char path[64], buf[256];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return true;
    size_t len = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[len] = '\0';
    char *rp = strrchr(buf, ')');
    return rp && rp[2] == 'Z';
}

static bool segment_exists(const char *instance)
{
    char path[128];
    snprintf(path, sizeof(path), "/dev/shm/mqfork.%s", instance);
    return access(path, F_OK) == 0;
}

static void setup(struct daemon *d, const char *name, const char *workers)
{
    memset(d, 0, sizeof(*d));
    snprintf(d->instance, sizeof(d->instance), "lc-%s-%d", name, (int)getpid());
    snprintf(d->conf, sizeof(d->conf), "%s/%s.yaml", dir, name);
    write_conf(d->conf, d->instance, workers, "");
}

/* SIGUSR1/2 clamped and logged; SIGHUP broken then good; systemd
 * notifications all along; SIGTERM ends it with 0 and leaves nothing. */
static void test_signals_reload_notify(void)
{
    struct daemon d;
    setup(&d, "main", "  min: 2\n  max: 3\n");
    start(&d, true);
    T_REQUIRE(wait_log(&d, "running as pid", 10), "daemon started");
    T_CHECK(wait_note(&d, "READY=1", 10), "READY=1");
    T_CHECK(wait_workers(&d, 2, 5), "2 workers titled 'mqforkd: worker N'");
    /* The first STATUS= comes with READY=1, when the pool is up. */
    char status[256] = "";
    T_CHECK(note_line(&d, "STATUS=", status, sizeof(status), 5), "STATUS=");
    T_CHECK(strstr(status, "workers 2 live") && strstr(status, "(target 2)"),
            "the first STATUS= counts the workers: %s", status);
    T_CHECK(wait_note(&d, "STATUS=", 5), "STATUS=");
    T_CHECK(wait_note(&d, "WATCHDOG=1", 2) && wait_note(&d, "WATCHDOG=1", 1),
            "WATCHDOG=1, repeatedly");

    kill(d.pid, SIGUSR1);
    T_CHECK(wait_log(&d, "scaling up: 2 -> 3 workers (manual: SIGUSR1)", 5), "SIGUSR1 logged");
    kill(d.pid, SIGUSR1);
    T_CHECK(wait_log(&d, "SIGUSR1 ignored: already at workers.max (3)", 5), "clamped at max");
    T_CHECK(wait_workers(&d, 3, 5), "3 workers");
    kill(d.pid, SIGUSR2);
    T_CHECK(wait_log(&d, "scaling down: 3 -> 2 workers (manual: SIGUSR2)", 5), "SIGUSR2 logged");
    kill(d.pid, SIGUSR2);
    T_CHECK(wait_log(&d, "SIGUSR2 ignored: already at workers.min (2)", 5), "clamped at min");
    T_CHECK(wait_workers(&d, 2, 5), "2 workers again");

    /* A broken file: every problem logged where it is, nothing changes. */
    write_conf(d.conf, d.instance, "  min: 0\n  max: 3\n  bogus: 1\n", "");
    kill(d.pid, SIGHUP);
    T_CHECK(wait_note(&d, "RELOADING=1", 5), "RELOADING=1");
    T_CHECK(strstr(d.notes, "MONOTONIC_USEC=") != NULL || wait_note(&d, "MONOTONIC_USEC=", 1),
            "MONOTONIC_USEC with it");
    char where[200];
    snprintf(where, sizeof(where), "%s:10:8: workers.min: 0 is out of range", d.conf);
    T_CHECK(wait_log(&d, where, 5), "first problem with file:line:column");
    snprintf(where, sizeof(where), "%s:12:3: ", d.conf);
    T_CHECK(wait_log(&d, where, 5), "second problem with file:line:column");
    T_CHECK(wait_log(&d, "keeping the current configuration", 5), "old configuration kept");
    T_CHECK(wait_note(&d, "READY=1", 5), "READY=1 after the failed reload");
    T_CHECK(wait_workers(&d, 2, 1), "still 2 workers");

    /* A good one, with one more route: the new minimum is in force, and
     * every worker is replaced by one forked with the new kind table. */
    pid_t before[8];
    unsigned nb = list_workers(d.pid, before, 8);
    write_conf(d.conf, d.instance, "  min: 3\n  max: 3\n",
               "  - name: spin\n    subscribe: lc/spin/+\n    job: test.spin\n");
    kill(d.pid, SIGHUP);
    T_CHECK(wait_note(&d, "RELOADING=1", 5), "RELOADING=1 again");
    T_CHECK(wait_log(&d, "routes 1 kept, 0 changed, 1 added, 0 removed", 5), "route added");
    T_CHECK(wait_log(&d, "configuration reloaded", 5), "reloaded");
    T_CHECK(wait_note(&d, "READY=1", 5), "READY=1 after the reload");
    T_CHECK(wait_workers(&d, 3, 5), "3 workers after reload (workers.min 3)");
    double end = now_s() + 5;
    bool all_new = false;
    while (!all_new && now_s() < end) {
        all_new = true;
        for (unsigned i = 0; i < nb; i++)
            all_new &= gone(before[i]);
        pump(&d, 20);
    }
    T_CHECK(all_new, "every old worker recycled");
    T_CHECK(wait_workers(&d, 3, 5), "3 workers after recycling");

    /* Broker settings need a restart: each change is logged, the running
     * value kept (the next reload compares with it: logged again). */
    rewrite(d.conf, "  port: 1\n", "  port: 2\n");
    rewrite(d.conf, "  reconnect_max_s: 5\n", "  reconnect_max_s: 6\n");
    for (int round = 0; round < 2; round++) {
        kill(d.pid, SIGHUP);
        T_CHECK(wait_log(&d, "SIGHUP: broker.port 2 needs a restart; keeping 1", 5),
                "broker.port change logged (reload %d)", round + 1);
        T_CHECK(wait_log(&d, "SIGHUP: broker.reconnect_max_s 6 needs a restart; keeping 5", 5),
                "broker.reconnect_max_s change logged (reload %d)", round + 1);
        T_CHECK(wait_log(&d, "configuration reloaded", 5), "reloaded with broker changes");
    }

    kill(d.pid, SIGTERM);
    T_CHECK(wait_note(&d, "STOPPING=1", 5), "STOPPING=1");
    pid_t after[8];
    unsigned na = list_workers(d.pid, after, 8);
    int rc = wait_exit(&d, 10);
    T_CHECK(rc == 0, "SIGTERM: exit 0 (got %d)", rc);
    T_CHECK(!segment_exists(d.instance), "segment unlinked");
    for (unsigned i = 0; i < nb; i++)
        T_CHECK(gone(before[i]), "old worker %d gone", (int)before[i]);
    for (unsigned i = 0; i < na; i++)
        T_CHECK(gone(after[i]), "worker %d gone", (int)after[i]);
}

/* SIGQUIT: at once, non-zero, and still nothing left behind. */
static void test_sigquit(void)
{
    struct daemon d;
    setup(&d, "quit", "  min: 2\n  max: 2\n");
    start(&d, false);
    T_REQUIRE(wait_log(&d, "running as pid", 10), "daemon started");
    T_CHECK(wait_workers(&d, 2, 5), "2 workers");
    pid_t w[8];
    unsigned n = list_workers(d.pid, w, 8);
    T_CHECK(segment_exists(d.instance), "segment there while running");
    kill(d.pid, SIGQUIT);
    int rc = wait_exit(&d, 10);
    T_CHECK(rc != 0 && rc < 128, "SIGQUIT: non-zero exit, not killed (got %d)", rc);
    T_CHECK(!segment_exists(d.instance), "segment unlinked");
    for (unsigned i = 0; i < n; i++)
        T_CHECK(gone(w[i]), "worker %d gone", (int)w[i]);
}

/* Without NOTIFY_SOCKET the daemon runs the same; SIGINT drains like TERM. */
static void test_sigint_quiet(void)
{
    struct daemon d;
    setup(&d, "int", "  min: 1\n  max: 2\n");
    start(&d, false);
    T_REQUIRE(wait_log(&d, "running as pid", 10), "daemon started");
    T_CHECK(wait_workers(&d, 1, 5), "1 worker");
    kill(d.pid, SIGINT);
    T_CHECK(wait_log(&d, "SIGINT: draining", 5), "drain logged");
    int rc = wait_exit(&d, 10);
    T_CHECK(rc == 0, "SIGINT: exit 0 (got %d)", rc);
    T_CHECK(!segment_exists(d.instance), "segment unlinked");
}

static int uid_of(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    int uid = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "Uid: %d", &uid) == 1)
            break;
    if (f)
        fclose(f);
    return uid;
}

/* Started as root with user: nobody, the daemon and its workers run as
 * nobody, and the segment belongs to nobody's group, mode 0640. */
static void test_privileges(void)
{
    struct passwd *pw = getpwnam("nobody");
    if (geteuid() != 0 || !pw) {
        printf("test_privileges: skipped (needs root and a user 'nobody')\n");
        return;
    }
    uid_t uid = pw->pw_uid;
    gid_t gid = pw->pw_gid;
    struct daemon d;
    setup(&d, "user", "  min: 2\n  max: 2\n");
    FILE *f = fopen(d.conf, "a");
    T_REQUIRE(f, "append");
    fprintf(f, "user: nobody\n");
    fclose(f);
    start(&d, false);
    T_REQUIRE(wait_log(&d, "running as pid", 10), "daemon started");
    T_CHECK(wait_workers(&d, 2, 5), "2 workers");
    T_CHECK(uid_of(d.pid) == (int)uid, "supervisor runs as nobody (uid %d)", uid_of(d.pid));
    pid_t w[8];
    unsigned n = list_workers(d.pid, w, 8);
    for (unsigned i = 0; i < n; i++)
        T_CHECK(uid_of(w[i]) == (int)uid, "worker %d runs as nobody", (int)w[i]);
    char path[128];
    snprintf(path, sizeof(path), "/dev/shm/mqfork.%s", d.instance);
    struct stat st;
    T_CHECK(stat(path, &st) == 0 && st.st_gid == gid && (st.st_mode & 0777) == 0640,
            "segment group nobody, mode 0640 (gid %d mode %o)", (int)st.st_gid,
            (unsigned)st.st_mode & 0777);
    kill(d.pid, SIGTERM);
    int rc = wait_exit(&d, 10);
    T_CHECK(rc == 0, "exit 0 (got %d)", rc);
    T_CHECK(!segment_exists(d.instance), "segment unlinked by the unprivileged daemon");
}

int main(int argc, char **argv)
{
    T_REQUIRE(argc == 2, "usage: test_lifecycle PATH_TO_MQFORKD");
    mqforkd = argv[1];
    signal(SIGPIPE, SIG_IGN);
    snprintf(dir, sizeof(dir), "/tmp/mqfork-lc-XXXXXX");
    T_REQUIRE(mkdtemp(dir), "mkdtemp");
    test_signals_reload_notify();
    test_sigquit();
    test_sigint_quiet();
    test_privileges();
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    T_CHECK(system(cmd) == 0, "clean up %s", dir);
    T_DONE();
}
