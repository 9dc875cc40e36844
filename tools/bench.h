/* bench.h - the parts of mqfork-bench, one file each, and the two helpers
 * they share for their figures. */
#ifndef MQFORK_TOOLS_BENCH_H
#define MQFORK_TOOLS_BENCH_H

#include <stddef.h>

/* One figure against its goal: CMP "<=" (lower is better) or ">=". */
void bench_row(const char *what, double value, const char *unit, const char *cmp, double goal);
/* The Q quantile of V (sorted in place). */
double bench_percentile(double *v, size_t n, double q);

/* bench_timers.c: the event loop's timers, N armed at once. */
void bench_timers(size_t n, double seconds);
/* bench_lifecycle.c: scale-up reaction, reload under load, drain. */
void bench_lifecycle(double seconds, unsigned workers);

#endif
