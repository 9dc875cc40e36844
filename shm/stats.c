/* stats.c - latency histogram arithmetic and state names, shared by the
 * daemon (writer) and mqforkstat (reader). */
#include "shm/stats.h"

#define SUB (1u << STATS_HIST_SUB_BITS)

unsigned stats_hist_bucket(uint64_t ns)
{
    if (ns < (1ull << STATS_HIST_MIN_SHIFT))
        return 0;
    unsigned e = 63u - (unsigned)__builtin_clzll(ns);
    if (e >= STATS_HIST_MAX_SHIFT)
        return STATS_HIST_BUCKETS - 1;
    unsigned sub = (unsigned)(ns >> (e - STATS_HIST_SUB_BITS)) & (SUB - 1);
    return 1 + (e - STATS_HIST_MIN_SHIFT) * SUB + sub;
}

uint64_t stats_hist_upper(unsigned bucket)
{
    if (bucket == 0)
        return 1ull << STATS_HIST_MIN_SHIFT;
    if (bucket >= STATS_HIST_BUCKETS - 1)
        return UINT64_MAX;
    unsigned e = (bucket - 1) / SUB + STATS_HIST_MIN_SHIFT;
    unsigned sub = (bucket - 1) % SUB;
    return (uint64_t)(SUB + sub + 1) << (e - STATS_HIST_SUB_BITS);
}

void stats_hist_add(struct stats_hist *h, uint64_t ns)
{
    h->count++;
    h->sum_ns += ns;
    if (ns > h->max_ns)
        h->max_ns = ns;
    h->bucket[stats_hist_bucket(ns)]++;
}

uint64_t stats_hist_percentile(const struct stats_hist *h, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->count);
    if (rank >= h->count)
        rank = h->count - 1;
    uint64_t seen = 0;
    for (unsigned b = 0; b < STATS_HIST_BUCKETS; b++) {
        seen += h->bucket[b];
        if (seen > rank) {
            uint64_t upper = stats_hist_upper(b);
            return upper < h->max_ns ? upper : h->max_ns;
        }
    }
    return h->max_ns;
}

const char *worker_state_name(enum worker_state s)
{
    switch (s) {
    case WORKER_EMPTY:
        return "empty";
    case WORKER_STARTING:
        return "starting";
    case WORKER_IDLE:
        return "idle";
    case WORKER_BUSY:
        return "busy";
    case WORKER_DRAINING:
        return "draining";
    case WORKER_BACKOFF:
        return "backoff";
    }
    return "unknown";
}
