/* clock.h - the one clock of mqfork: CLOCK_MONOTONIC in nanoseconds. The
 * supervisor's deadlines and timers, the workers' run times and the
 * timestamps the segment carries for mqforkstat are all on it, so they can
 * be compared across processes. */
#ifndef MQFORK_SHM_CLOCK_H
#define MQFORK_SHM_CLOCK_H

#include <stdint.h>
#include <time.h>

#define NS_PER_S 1000000000ull

/* Inline: the supervisor reads it several times per round (vDSO, no
 * system call). */
static inline uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

#endif
