/* lock.c - see lock.h. */
#include "shm/lock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* Make DIR if missing and check that no one but us (or root) could have
 * planted anything in it. */
static int trusted_dir(const char *dir, mode_t mode, char *why, size_t whylen)
{
    struct stat st;
    if (mkdir(dir, mode) < 0 && errno != EEXIST) {
        snprintf(why, whylen, "cannot make %s: %s", dir, strerror(errno));
        return -1;
    }
    if (lstat(dir, &st) < 0) {
        snprintf(why, whylen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode) || (st.st_uid != 0 && st.st_uid != geteuid()) || (st.st_mode & 022)) {
        snprintf(why, whylen,
                 "%s is not a directory owned by root or uid %d and writable by no one else", dir,
                 (int)geteuid());
        errno = EPERM;
        return -1;
    }
    return 0;
}

static void lock_dir(char *dir, size_t len)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (geteuid() == 0)
        snprintf(dir, len, "/run/mqfork");
    else if (xdg && xdg[0] == '/')
        snprintf(dir, len, "%s/mqfork", xdg);
    else
        snprintf(dir, len, "/tmp/mqfork-%d", (int)geteuid());
}

static pid_t read_pid(int fd)
{
    char buf[24] = "";
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    return n > 0 ? (pid_t)strtol(buf, NULL, 10) : 0;
}

int instance_lock(const char *instance, pid_t *holder, char *why, size_t whylen)
{
    char dir[256], path[400];
    *holder = 0;
    lock_dir(dir, sizeof(dir));
    if (trusted_dir(dir, geteuid() == 0 ? 0755 : 0700, why, whylen) < 0)
        return -1;
    snprintf(path, sizeof(path), "%s/%s.lock", dir, instance);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        snprintf(why, whylen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int saved = errno == EWOULDBLOCK ? EEXIST : errno;
        *holder = read_pid(fd);
        snprintf(why, whylen, "cannot lock %s: %s", path, strerror(errno));
        close(fd);
        errno = saved;
        return -1;
    }
    char pid[24];
    int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        snprintf(why, whylen, "cannot write %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}
