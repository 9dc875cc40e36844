/* broker.c - runs a private mosquitto for one integration test: a temp dir
 * with its configuration, optional password file and test PKI, a free
 * loopback port, readiness by connecting, and teardown that leaves nothing
 * behind even when the test crashes. Also the small child-process helpers
 * tests use to run clients against that broker with deadlines. */
#include "broker.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define READY_TIMEOUT_MS 5000
#define START_ATTEMPTS   5

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("broker: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* dir/name into out; the harness's paths are short, so truncation is a bug. */
static int path_in(char out[BROKER_PATH_MAX], const char *dir, const char *name)
{
    int n = snprintf(out, BROKER_PATH_MAX, "%s/%s", dir, name);
    if (n < 0 || n >= BROKER_PATH_MAX) {
        fail("path too long: %s/%s", dir, name);
        return -1;
    }
    return 0;
}

/* Ask the kernel for a free port. Another process may take it before
 * mosquitto binds; broker_start notices and retries with a new one. */
static int free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int port = -1;

    if (fd < 0)
        return -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static bool port_accepts(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok;

    if (fd < 0)
        return false;
    ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

/* Wait for pid to exit, at most timeout_ms. A pidfd makes this a wait for the
 * event itself; kernels without pidfd_open fall back to polling waitpid. */
static int wait_pid(pid_t pid, int timeout_ms, int *status)
{
    int64_t deadline = now_ms() + timeout_ms;
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);

    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR)) {
            if (fd >= 0)
                close(fd);
            return r == pid ? 0 : -1;
        }
        int64_t left = deadline - now_ms();
        if (left <= 0)
            break;
        if (fd >= 0) {
            struct pollfd pfd = {.fd = fd, .events = POLLIN};
            poll(&pfd, 1, (int)left);
        } else {
            nap_ms(left < 5 ? (int)left : 5);
        }
    }
    if (fd >= 0)
        close(fd);
    return -1;
}

/* In a freshly forked child: die with the test, so that no broker or client
 * outlives it; if the parent is already gone, do not even start. */
static void child_bind_to_parent(pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
}

static void child_redirect(int fd_null, int fd_out, int fd_err)
{
    dup2(fd_null, STDIN_FILENO);
    dup2(fd_out, STDOUT_FILENO);
    dup2(fd_err, STDERR_FILENO);
}

/* Run a helper command (openssl, mosquitto_passwd) in dir with its output
 * appended to dir/tools.log; 0 when it exited 0. */
static int run_tool(const char *dir, char *const argv[])
{
    char logpath[BROKER_PATH_MAX];
    pid_t parent = getpid();
    int status;

    if (path_in(logpath, dir, "tools.log") < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int null = open("/dev/null", O_RDONLY);
        int log = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0600);
        child_bind_to_parent(parent);
        if (null < 0 || log < 0 || chdir(dir) < 0)
            _exit(127);
        child_redirect(null, log, log);
        execvp(argv[0], argv);
        _exit(127);
    }
    if (wait_pid(pid, 30000, &status) < 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fail("%s timed out", argv[0]);
        return -1;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fail("%s %s failed; see %s", argv[0], argv[1], logpath);
        return -1;
    }
    return 0;
}

static int write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fail("cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    fputs(text, f);
    return fclose(f) == 0 ? 0 : -1;
}

/* A certificate signed by the test CA: key, request, then x509 -req with the
 * extensions in extfile (SANs for the server, clientAuth for the client). */
static int make_leaf(const char *dir, const char *name, const char *cn, const char *ext)
{
    char key[64], csr[64], crt[64], subj[96], extfile[64];
    snprintf(key, sizeof(key), "%s.key", name);
    snprintf(csr, sizeof(csr), "%s.csr", name);
    snprintf(crt, sizeof(crt), "%s.crt", name);
    snprintf(subj, sizeof(subj), "/CN=%s", cn);
    snprintf(extfile, sizeof(extfile), "%s.ext", name);

    char extpath[BROKER_PATH_MAX];
    if (path_in(extpath, dir, extfile) < 0 || write_file(extpath, ext) < 0)
        return -1;
    char *req[] = {
        "openssl", "req",     "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes",  "-keyout", key,    "-out",    csr,  "-subj",    subj,
        NULL};
    char *sign[] = {
        "openssl",         "x509",  "-req", "-in",  csr, "-CA",      "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1",    "-out", crt, "-extfile", extfile,  NULL};
    if (run_tool(dir, req) < 0 || run_tool(dir, sign) < 0)
        return -1;
    return 0;
}

/* The test PKI: a CA valid for one day, a server certificate for localhost
 * and 127.0.0.1, and a client certificate for require_certificate tests. */
static int make_certs(struct broker *b)
{
    char *ca[] = {"openssl",
                  "req",
                  "-x509",
                  "-newkey",
                  "ec",
                  "-pkeyopt",
                  "ec_paramgen_curve:prime256v1",
                  "-nodes",
                  "-keyout",
                  "ca.key",
                  "-out",
                  "ca.crt",
                  "-days",
                  "1",
                  "-subj",
                  "/CN=mqfork-test-ca",
                  NULL};
    if (run_tool(b->dir, ca) < 0)
        return -1;
    if (make_leaf(b->dir, "server", "localhost",
                  "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                  "extendedKeyUsage=serverAuth\n") < 0)
        return -1;
    if (make_leaf(b->dir, "client", "mqfork-test-client", "extendedKeyUsage=clientAuth\n") < 0)
        return -1;
    if (path_in(b->ca_file, b->dir, "ca.crt") < 0 ||
        path_in(b->server_cert, b->dir, "server.crt") < 0 ||
        path_in(b->server_key, b->dir, "server.key") < 0 ||
        path_in(b->client_cert, b->dir, "client.crt") < 0 ||
        path_in(b->client_key, b->dir, "client.key") < 0)
        return -1;
    return 0;
}

static int make_passwd(struct broker *b, const struct broker_opts *o)
{
    char *argv[] = {"mosquitto_passwd",  "-c", "-b", "passwd", (char *)o->username,
                    (char *)o->password, NULL};
    if (run_tool(b->dir, argv) < 0)
        return -1;
    for (const char *const *u = o->more_users; u && u[0] && u[1]; u += 2) {
        char *add[] = {"mosquitto_passwd", "-b", "passwd", (char *)u[0], (char *)u[1], NULL};
        if (run_tool(b->dir, add) < 0)
            return -1;
    }
    return 0;
}

/* mosquitto.conf for this broker. Large queues so that load tests measure
 * the broker's speed, not its default limits; TCP_NODELAY so latency is not
 * Nagle's. */
static int write_conf(const struct broker *b, const struct broker_opts *o)
{
    FILE *f = fopen(b->conf, "w");
    if (!f) {
        fail("cannot write %s: %s", b->conf, strerror(errno));
        return -1;
    }
    fprintf(f, "# written by the mqfork test harness\n"
               "per_listener_settings false\n"
               "log_dest stderr\n"
               "log_timestamp_format %%H:%%M:%%S\n"
               "set_tcp_nodelay true\n"
               "max_queued_messages 1000000\n"
               "max_inflight_messages 1000\n");
    /* Run as root, mosquitto would drop to the mosquitto user, which cannot
     * read the password file and certificates in our private dir. */
    if (geteuid() == 0)
        fprintf(f, "user root\n");
    if (o->username && o->password)
        fprintf(f, "allow_anonymous false\npassword_file %s/passwd\n", b->dir);
    else
        fprintf(f, "allow_anonymous true\n");
    if (o->persistent)
        fprintf(f, "persistence true\npersistence_location %s/\n", b->dir);
    else
        fprintf(f, "persistence false\n");
    if (o->extra_conf)
        fprintf(f, "%s\n", o->extra_conf);
    fprintf(f, "\nlistener %d 127.0.0.1\n", b->port);
    if (o->tls)
        fprintf(f,
                "\nlistener %d 127.0.0.1\n"
                "cafile %s\ncertfile %s\nkeyfile %s\n"
                "require_certificate %s\n",
                b->tls_port, b->ca_file, b->server_cert, b->server_key,
                o->require_cert ? "true" : "false");
    return fclose(f) == 0 ? 0 : -1;
}

/* fork/exec mosquitto in its own process group, stderr to the log file. */
static int spawn_mosquitto(struct broker *b)
{
    const char *exe = getenv("MQFORK_MOSQUITTO");
    pid_t parent = getpid();

    if (!exe)
        exe = "/usr/sbin/mosquitto";
    pid_t pid = fork();
    if (pid < 0) {
        fail("fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        int log = open(b->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        setpgid(0, 0);
        child_bind_to_parent(parent);
        if (null < 0 || log < 0)
            _exit(127);
        child_redirect(null, null, log);
        execl(exe, "mosquitto", "-c", b->conf, (char *)NULL);
        _exit(127);
    }
    b->pid = pid;
    return 0;
}

/* Connect until every listener accepts. 0 ready, -1 timed out, -2 mosquitto
 * exited (most likely a port taken between free_port and its bind). */
static int wait_ready(struct broker *b)
{
    int64_t deadline = now_ms() + READY_TIMEOUT_MS;
    int status;

    while (now_ms() < deadline) {
        if (waitpid(b->pid, &status, WNOHANG) == b->pid) {
            b->pid = 0;
            return -2;
        }
        if (port_accepts(b->port) && (!b->tls_port || port_accepts(b->tls_port)))
            return 0;
        nap_ms(5);
    }
    return -1;
}

static void show_log(const struct broker *b)
{
    char line[512];
    FILE *f = fopen(b->log, "r");
    if (!f)
        return;
    while (fgets(line, sizeof(line), f))
        fprintf(stderr, "  mosquitto: %s", line);
    fclose(f);
}

/* Whether mosquitto's log says it lost the race for its port. */
static bool lost_port_race(const struct broker *b)
{
    char line[512];
    bool found = false;
    FILE *f = fopen(b->log, "r");
    if (!f)
        return false;
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, "Address already in use") != NULL;
    fclose(f);
    return found;
}

static void reap_broker(struct broker *b, int sig)
{
    int status;
    if (b->pid <= 0)
        return;
    kill(b->pid, sig);
    if (wait_pid(b->pid, 5000, &status) < 0) {
        kill(b->pid, SIGKILL);
        waitpid(b->pid, &status, 0);
    }
    b->pid = 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    remove(path);
    return 0;
}

static void remove_dir(struct broker *b)
{
    if (b->dir[0])
        nftw(b->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    b->dir[0] = '\0';
}

/* The janitor: a process that outlives the test just long enough to remove
 * the temp dir, however the test ends (a crash, a failed T_REQUIRE, meson's
 * timeout). It waits for end of file on a pipe whose write end only the test
 * holds, so it needs no polling and no global state in the test. */
static void janitor_main(int fd, const char *dir)
{
    char c;
    signal(SIGINT, SIG_IGN); /* a Ctrl-C or SIGTERM to the test's group */
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    dup2(fd, STDIN_FILENO);
    close_range(STDIN_FILENO + 1, ~0U, 0); /* hold no other pipe (or the test log) open */
    while (read(STDIN_FILENO, &c, 1) != 0 && errno == EINTR) {
    }
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    _exit(0);
}

static int start_janitor(struct broker *b)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0)
        janitor_main(fds[0], b->dir);
    close(fds[0]);
    b->janitor = pid;
    b->janitor_fd = fds[1];
    return 0;
}

/* The dir is already gone or going: dismiss the janitor. */
static void stop_janitor(struct broker *b)
{
    if (b->janitor <= 0)
        return;
    close(b->janitor_fd);
    kill(b->janitor, SIGKILL);
    waitpid(b->janitor, NULL, 0);
    b->janitor = 0;
    b->janitor_fd = -1;
}

/* Pick ports, write the configuration, start, wait; retry with new ports
 * when another process took ours first, and only then. */
static int launch(struct broker *b, const struct broker_opts *o)
{
    for (int attempt = 0; attempt < START_ATTEMPTS; attempt++) {
        b->port = free_port();
        b->tls_port = o->tls ? free_port() : 0;
        if (b->port < 0 || b->tls_port < 0 || b->port == b->tls_port)
            continue;
        if (write_conf(b, o) < 0 || spawn_mosquitto(b) < 0)
            return -1;
        int r = wait_ready(b);
        if (r == 0)
            return 0;
        if (r == -1) {
            fail("mosquitto not accepting on port %d after %d ms", b->port, READY_TIMEOUT_MS);
            reap_broker(b, SIGKILL);
            break;
        }
        if (!lost_port_race(b))
            break;
        unlink(b->log); /* so the next attempt's log says why it failed, if it does */
    }
    fail("could not start mosquitto; its log:");
    show_log(b);
    return -1;
}

static int prepare_dir(struct broker *b)
{
    const char *tmp = getenv("TMPDIR");
    int n = snprintf(b->dir, sizeof(b->dir), "%s/mqfork-broker.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (n < 0 || n >= (int)sizeof(b->dir) || !mkdtemp(b->dir)) {
        fail("cannot make a temp dir: %s", strerror(errno));
        b->dir[0] = '\0';
        return -1;
    }
    if (path_in(b->conf, b->dir, "mosquitto.conf") < 0 ||
        path_in(b->log, b->dir, "mosquitto.log") < 0)
        return -1;
    return 0;
}

int broker_start(struct broker *b, const struct broker_opts *o)
{
    static const struct broker_opts plain;

    memset(b, 0, sizeof(*b));
    if (!o)
        o = &plain;
    if ((o->username != NULL) != (o->password != NULL) || (o->more_users && !o->username)) {
        fail("username and password go together, and come before more_users");
        return -1;
    }
    if (prepare_dir(b) < 0 || start_janitor(b) < 0 || (o->tls && make_certs(b) < 0) ||
        (o->username && make_passwd(b, o) < 0) || launch(b, o) < 0) {
        remove_dir(b);
        stop_janitor(b);
        return -1;
    }
    return 0;
}

void broker_stop(struct broker *b)
{
    reap_broker(b, SIGTERM);
    remove_dir(b);
    stop_janitor(b);
}

void broker_kill(struct broker *b)
{
    reap_broker(b, SIGKILL);
}

void broker_terminate(struct broker *b)
{
    reap_broker(b, SIGTERM);
}

int broker_restart_same_port(struct broker *b)
{
    reap_broker(b, SIGKILL);
    /* mosquitto sets SO_REUSEADDR, so the old connections' TIME_WAIT does not
     * keep it from binding the same port again. */
    if (spawn_mosquitto(b) < 0)
        return -1;
    if (wait_ready(b) != 0) {
        fail("mosquitto did not come back on port %d; its log:", b->port);
        show_log(b);
        reap_broker(b, SIGKILL);
        return -1;
    }
    return 0;
}

int proc_spawn(struct proc *p, char *const argv[], bool capture)
{
    int pipefd[2] = {-1, -1};
    pid_t parent = getpid();

    memset(p, 0, sizeof(*p));
    p->out = -1;
    if (capture && pipe2(pipefd, O_CLOEXEC) < 0)
        return -1;
    fflush(NULL); /* or buffered test output would be written twice */
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        child_bind_to_parent(parent);
        if (capture)
            dup2(pipefd[1], STDOUT_FILENO);
        execv(argv[0], argv);
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    if (capture) {
        close(pipefd[1]);
        p->out = pipefd[0];
    }
    p->pid = pid;
    return 0;
}

/* Take one line out of the buffer if a whole one is there. */
static int take_line(struct proc *p, char *line, size_t size)
{
    char *nl = memchr(p->buf, '\n', p->len);
    if (!nl)
        return -1;
    size_t n = (size_t)(nl - p->buf);
    size_t copy = n < size - 1 ? n : size - 1;
    memcpy(line, p->buf, copy);
    line[copy] = '\0';
    p->len -= n + 1;
    memmove(p->buf, nl + 1, p->len);
    return (int)copy;
}

int proc_line(struct proc *p, char *line, size_t size, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;

    for (;;) {
        int n = take_line(p, line, size);
        if (n >= 0)
            return n;
        if (p->out < 0 || p->len == sizeof(p->buf))
            return -1;
        int64_t left = deadline - now_ms();
        struct pollfd pfd = {.fd = p->out, .events = POLLIN};
        if (left <= 0 || poll(&pfd, 1, (int)left) == 0)
            return -1;
        ssize_t r = read(p->out, p->buf + p->len, sizeof(p->buf) - p->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p->len += (size_t)r;
    }
}

int proc_wait(struct proc *p, int timeout_ms, int *status)
{
    if (p->pid <= 0)
        return -1;
    if (wait_pid(p->pid, timeout_ms, status) < 0)
        return -1;
    p->pid = 0;
    if (p->out >= 0)
        close(p->out);
    p->out = -1;
    return 0;
}

void proc_stop(struct proc *p, int sig)
{
    int status;
    if (p->pid <= 0)
        return;
    kill(p->pid, sig);
    if (proc_wait(p, 5000, &status) < 0) {
        kill(p->pid, SIGKILL);
        proc_wait(p, 5000, &status);
    }
}
