/* stats.h - the structured statistics of the segment: the engine's own
 * figures (published as the named block "engine", shm/statblock.h), the
 * per-kind and per-worker tables and the event rings, and the latency
 * histogram every block may hold.
 *
 * Every block has exactly one writing process and its own seqlock, so a
 * reader takes no lock and can never slow a writer down: each job kind's
 * block is written by the supervisor, each worker slot has a part the
 * supervisor writes and a part the worker itself writes. Counters only
 * grow; gauges are the value at the last update. Times are nanoseconds. */
#ifndef MQFORK_SHM_STATS_H
#define MQFORK_SHM_STATS_H

#include <stdint.h>

#include "proto/job.h"
#include "shm/seqlock.h"

#define STATS_NAME_LEN 48
#define STATS_RING_LEN 16 /* crash and scaling events kept */
#define STATS_PRIOS    3

/* Latency histogram: 8 buckets per power of two from 1 us to about 137 s,
 * one below and one above; good to about 6% for any percentile. */
#define STATS_HIST_SUB_BITS  3
#define STATS_HIST_MIN_SHIFT 10 /* 1024 ns */
#define STATS_HIST_MAX_SHIFT 37
#define STATS_HIST_BUCKETS                                                                         \
    (2 + (STATS_HIST_MAX_SHIFT - STATS_HIST_MIN_SHIFT) * (1 << STATS_HIST_SUB_BITS))

struct stats_hist {
    uint64_t count;
    uint64_t sum_ns;
    uint64_t max_ns;
    uint64_t bucket[STATS_HIST_BUCKETS];
};

enum stats_verdict { VERDICT_HEALTHY = 0, VERDICT_FALLING_BEHIND = 1 };

/* Rates are kept in thousandths of a job per second so the area holds only
 * integers. Windows: 1 s, 10 s, 60 s. */
#define STATS_RATE_WINDOWS 3

/* The engine's figures: the data of its block "engine" (its field table is
 * in supervisor/engine_stats.c). The engine keeps a private copy and
 * publishes it at the end of each round. */
struct stats_global {
    uint32_t verdict; /* enum stats_verdict */
    /* counters */
    uint64_t accepted;
    uint64_t completed; /* answered with a result (JOB_OK) */
    uint64_t filtered;  /* answered with nothing (JOB_FILTERED) */
    uint64_t failed;    /* answered with an error: handler error, quarantine, expiry, shutdown */
    uint64_t retried;   /* re-run after their worker died */
    uint64_t timed_out; /* attempts killed for running past timeout_ms */
    uint64_t quarantined;
    uint64_t expired;
    uint64_t abandoned;                 /* given up by a drain or removed route */
    uint64_t refused[JOB_STATUS_COUNT]; /* by reason: overloaded, too_large, unknown_kind */
    uint64_t late_results; /* results discarded: from a dead generation or not believable */
    uint64_t spawned;
    uint64_t crashed;
    uint64_t killed_timeout;
    uint64_t recycled;
    uint64_t stream_resets;
    uint64_t stream_evictions; /* idle streams without state, evicted for room */
    uint64_t stream_refusals;  /* new streams refused: every slot held a job or live state */
    uint64_t scale_events;
    /* gauges */
    uint32_t pending[STATS_PRIOS];
    uint32_t inflight;
    uint32_t workers_min, workers_max, workers_target;
    uint32_t workers_live, workers_busy, workers_idle;
    uint32_t streams_live;
    uint64_t slab_used, slab_size;
    uint64_t arrival_mrate[STATS_RATE_WINDOWS];    /* jobs/s x 1000 */
    uint64_t completion_mrate[STATS_RATE_WINDOWS]; /* answered jobs/s x 1000 */
    uint64_t updated_ns;                           /* CLOCK_MONOTONIC of the last update */
};

struct stats_kind {
    struct seqlock lock;
    uint32_t used;
    char name[STATS_NAME_LEN];         /* route name, or handler name for API-made kinds */
    char handler[STATS_NAME_LEN];      /* e.g. test.echo */
    uint64_t received;                 /* jobs offered: accepted or refused */
    uint64_t completed;                /* answered OK or filtered */
    uint64_t failed;                   /* answered with an error */
    uint64_t errors[JOB_STATUS_COUNT]; /* refusals and failed answers, by status */
    struct stats_hist wait;            /* accepted -> started on a worker */
    struct stats_hist run;             /* time the handler ran */
    struct stats_hist total;           /* accepted -> answered: the daemon's own time */
};

enum worker_state {
    WORKER_EMPTY = 0, /* slot not in use */
    WORKER_STARTING,  /* forked, setting up its handlers */
    WORKER_IDLE,
    WORKER_BUSY,
    WORKER_DRAINING, /* finishing its jobs before it is recycled or retired */
    WORKER_BACKOFF,  /* dead; waiting to be respawned */
};

const char *worker_state_name(enum worker_state s);

struct stats_worker {
    /* written by the supervisor */
    struct seqlock lock;
    int32_t pid;
    uint32_t state; /* enum worker_state */
    uint32_t generation;
    uint32_t inflight;
    uint64_t started_ns; /* CLOCK_MONOTONIC when forked */
    uint64_t respawns;
    uint64_t backoff_ms;   /* current respawn delay of this slot */
    uint32_t cpu_permille; /* of one core, over the last second */
    uint32_t pad;
    uint64_t rss_kb;
    uint64_t cpu_ns;
    /* written by the worker itself */
    _Alignas(64) struct seqlock self_lock;
    uint32_t cur_kind;     /* kind of the job running, when cur_start_ns != 0 */
    uint64_t cur_start_ns; /* CLOCK_MONOTONIC; 0 = no job running */
    uint64_t jobs_done;
    uint64_t failures; /* jobs its handlers answered with an error */
};

struct stats_crash {
    uint64_t time_ns; /* CLOCK_REALTIME */
    uint32_t slot;
    int32_t pid;
    int32_t signal; /* 0 when it exited */
    int32_t exit_code;
    char kind[STATS_NAME_LEN]; /* job kind it was running, "" if none */
};

struct stats_scale {
    uint64_t time_ns; /* CLOCK_REALTIME */
    uint32_t from, to;
    char reason[112];
};

struct stats_events {
    struct seqlock lock;
    uint64_t crashes; /* total written; the newest is crash[(crashes - 1) % LEN] */
    uint64_t scales;
    struct stats_crash crash[STATS_RING_LEN];
    struct stats_scale scale[STATS_RING_LEN];
};

/* Histogram helpers, shared by the writer and the reader. */
unsigned stats_hist_bucket(uint64_t ns);
uint64_t stats_hist_upper(unsigned bucket); /* upper bound in ns of a bucket */
void stats_hist_add(struct stats_hist *h, uint64_t ns);
/* The value below which the fraction Q (0..1) of samples lie; 0 when empty. */
uint64_t stats_hist_percentile(const struct stats_hist *h, double q);

#endif
