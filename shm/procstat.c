/* procstat.c - parse /proc/PID/stat (see procstat.h). */
#include "shm/procstat.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int procstat_read(pid_t pid, struct procstat *out)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    /* The command name may hold spaces and parentheses: start after the last
     * ')'. Then: state ppid pgrp session tty tpgid flags minflt cminflt
     * majflt cmajflt utime stime cutime cstime priority nice threads itreal
     * starttime vsize rss. */
    const char *p = strrchr(buf, ')');
    unsigned long long utime, stime, start;
    long rss_pages;
    if (!p || sscanf(p + 2,
                     "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d "
                     "%*d %*d %llu %*u %ld",
                     &utime, &stime, &start, &rss_pages) != 4)
        return -1;
    out->cpu_ticks = utime + stime;
    out->starttime = start;
    out->rss_kb =
        (uint64_t)(rss_pages > 0 ? rss_pages : 0) * (uint64_t)(sysconf(_SC_PAGESIZE) / 1024);
    return 0;
}
