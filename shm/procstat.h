/* procstat.h - what the kernel says about a process in /proc/PID/stat: CPU
 * time, resident memory and start time. The daemon samples its workers with
 * it, the segment code tells a live owner from a reused pid, and the
 * benchmark measures CPU. */
#ifndef MQFORK_SHM_PROCSTAT_H
#define MQFORK_SHM_PROCSTAT_H

#include <stdint.h>
#include <sys/types.h>

struct procstat {
    uint64_t cpu_ticks; /* user + system time, in clock ticks (sysconf(_SC_CLK_TCK)) */
    uint64_t rss_kb;    /* resident set size */
    uint64_t starttime; /* clock ticks after boot at which it started */
};

/* 0, or -1 when the process is gone or the file cannot be read. */
int procstat_read(pid_t pid, struct procstat *out);

#endif
