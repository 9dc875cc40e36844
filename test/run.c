/* run.c - see run.h. */
#include "test/run.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RUN_LIMIT_S 20.0

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void run_free(struct run *r)
{
    free(r->out);
    free(r->err);
}

void run_append(char **buf, size_t *len, const char *data, size_t n)
{
    char *more = realloc(*buf, *len + n + 1);
    if (!more)
        abort();
    memcpy(more + *len, data, n);
    *len += n;
    more[*len] = '\0';
    *buf = more;
}

/* Read FD into BUF until EOF; false when nothing came for LIMIT_S. */
static bool drain(int fds[2], struct run *r, double limit_s)
{
    double end = now_s() + limit_s;
    while (fds[0] >= 0 || fds[1] >= 0) {
        struct pollfd p[2] = {{fds[0], POLLIN, 0}, {fds[1], POLLIN, 0}};
        int left = (int)((end - now_s()) * 1000);
        if (left <= 0 || poll(p, 2, left) <= 0)
            return false;
        for (int i = 0; i < 2; i++) {
            if (fds[i] < 0 || !p[i].revents)
                continue;
            char buf[4096];
            ssize_t n = read(fds[i], buf, sizeof(buf));
            if (n <= 0) {
                close(fds[i]);
                fds[i] = -1;
            } else if (i == 0) {
                run_append(&r->out, &r->out_len, buf, (size_t)n);
            } else {
                run_append(&r->err, &r->err_len, buf, (size_t)n);
            }
        }
    }
    return true;
}

int run_wait(pid_t pid)
{
    int st;
    if (waitpid(pid, &st, 0) < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Become USER (unless NULL) in a child, for the permission test. */
static void become(const char *user)
{
    const struct passwd *pw = user ? getpwnam(user) : NULL;
    if (!user)
        return;
    if (!pw || setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0)
        _exit(126);
    if (chdir("/") < 0)
        _exit(126);
}

/* Run ARGV with stdin from IN_FD (or /dev/null), as USER when set. */
struct run run_as(const char *user, int in_fd, const char *const argv[])
{
    struct run r = {.status = -1, .out = calloc(1, 1), .err = calloc(1, 1)};
    int po[2], pe[2];
    if (pipe2(po, O_CLOEXEC) < 0 || pipe2(pe, O_CLOEXEC) < 0)
        abort();
    pid_t pid = fork();
    if (pid == 0) {
        int in = in_fd >= 0 ? in_fd : open("/dev/null", O_RDONLY);
        dup2(in, 0);
        dup2(po[1], 1);
        dup2(pe[1], 2);
        become(user);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    int fds[2] = {po[0], pe[0]};
    if (!drain(fds, &r, RUN_LIMIT_S)) {
        kill(pid, SIGKILL);
        for (int i = 0; i < 2; i++)
            if (fds[i] >= 0)
                close(fds[i]);
    }
    r.status = run_wait(pid);
    return r;
}

struct run run(const char *const argv[])
{
    return run_as(NULL, -1, argv);
}

bool run_has_program(const char *name)
{
    const char *path = getenv("PATH");
    char *copy = strdup(path ? path : "/usr/bin:/bin");
    bool found = false;
    char *save = NULL;
    for (char *d = strtok_r(copy, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
        char full[4096];
        snprintf(full, sizeof(full), "%s/%s", d, name);
        found = access(full, X_OK) == 0;
    }
    free(copy);
    return found;
}

long run_figure(const char *mqforkstat, const char *instance, const char *name)
{
    const char *argv[] = {mqforkstat, "-n", instance, "-1", NULL};
    struct run r = run(argv);
    long v = -1;
    char key[128];
    snprintf(key, sizeof(key), "\n%s ", name);
    const char *at = r.out ? strstr(r.out, key) : NULL;
    if (at)
        v = strtol(at + strlen(key), NULL, 10);
    run_free(&r);
    return v;
}
