/* engine_impl.h - the engine's private state, shared by its three parts:
 * engine.c (the API, outcomes, stats), dispatch.c (queues, streams, choosing
 * a worker) and pool.c (forking, deaths, timeouts, recycling, scaling).
 *
 * Ownership: a struct job lives in the engine's job pool from submit until
 * its outcome; at any moment it is in exactly one place - a pending queue, a
 * stream's waiting list, or one worker's in-flight list - and job->where
 * says which. */
#ifndef MQFORK_SUPERVISOR_ENGINE_IMPL_H
#define MQFORK_SUPERVISOR_ENGINE_IMPL_H

#include <sys/queue.h>
#include <sys/types.h>

#include "conf/config.h"
#include "shm/ring.h"
#include "shm/segment.h"
#include "shm/slab.h"
#include "shm/statblock.h"
#include "supervisor/engine.h"
#include "supervisor/loop.h"
#include "supervisor/scale.h"
#include "worker/handler.h"
#include "worker/registry.h"
#include "worker/worker.h"

enum job_where { JOB_FREE, JOB_PENDING, JOB_STREAM_WAIT, JOB_INFLIGHT };

/* Why a worker died, as the supervisor saw it. */
enum death_cause { DEATH_NONE, DEATH_CRASH, DEATH_TIMEOUT, DEATH_WILD, DEATH_RETIRED };

struct stream;

struct job {
    TAILQ_ENTRY(job) link;
    uint64_t id;
    enum job_where where;
    uint32_t kind;
    uint8_t prio;
    bool sent_fresh; /* its dispatch carried JOB_STREAM_FRESH */
    uint32_t attempts;
    uint32_t retries;
    uint64_t timeout_ns;
    uint64_t deadline_ns; /* CLOCK_MONOTONIC; 0 = none */
    uint64_t accepted_ns;
    uint64_t started_ns; /* when it became the running job of its worker */
    uint64_t est_ns;     /* run time its worker was charged with at dispatch */
    uint64_t in_off;
    uint32_t in_len;
    uint32_t out_cap; /* sized at acceptance: a reload never shrinks a queued job's buffer */
    uint64_t out_off; /* reserved with the input, so dispatch never waits for memory */
    struct mqfork_job_meta meta;
    struct stream *stream;
    int worker; /* slot while in flight, else -1 */
    engine_done_fn done;
    void *ctx;
};

TAILQ_HEAD(job_list, job);

struct stream {
    TAILQ_ENTRY(stream) lru; /* on the idle list while it has no job */
    struct stream *hnext;    /* hash chain */
    uint64_t hash;
    uint32_t kind;
    uint32_t klen;
    uint32_t slot; /* its state slot in the segment */
    bool in_use;
    bool spare;         /* idle without state to lose: on spare_streams */
    bool fresh;         /* state must be initialized by the next job */
    struct job *active; /* its one job pending or in flight, or NULL */
    struct job_list waiting;
    uint64_t last_used_ns;
    char key[ENGINE_STREAM_KEY_MAX];
};

TAILQ_HEAD(stream_list, stream);

struct kind {
    /* The whole route name: routes find their kind by it after a reload.
     * The stats block keeps only STATS_NAME_LEN - 1 bytes of it. */
    char name[CONF_ROUTE_NAME_MAX + 1];
    const struct mqfork_handler *handler;
    struct mqfork_params params; /* owned copy */
    void *preloaded;             /* handler->preload's result, shared by every worker */
    struct mqfork_out_bound out;
    uint32_t state_size;
    uint64_t est_ns; /* moving average of run time: what dispatch expects a job to cost */
    struct stats_kind *stats;
    /* Kinds generation in which this definition appeared: a worker forked
     * before it holds another handler (or none) at this index. */
    uint32_t since_gen;
    /* handler == NULL: the route was removed by a reload; the index stays
     * reserved while old workers may still hold its jobs. */
    /* Its handler's init() killed this many new workers in a row; past a
     * few it is set aside (failing) until retry_at_ns (kinds.c). */
    uint32_t init_failures;
    bool failing;
    uint64_t retry_at_ns;
    char failure[64]; /* what its init did, for the error reports */
};

/* The autoscaler's state (scale.c). */
struct scaler {
    struct conf_scaling conf;
    struct loop_timer check; /* every interval_s */
    uint64_t last_event_ns;  /* 0: none yet */
    bool last_up;            /* direction of the last event: picks the cooldown */
    uint64_t last_sample_ns;
    double load_sum;       /* load x time since the last check */
    double load_weight;    /* the time */
    struct stats_hist run; /* handler run times answered since the last check */
};

struct worker {
    struct engine *engine;
    struct loop_watch *watch; /* on the pidfd */
    unsigned slot;
    enum worker_state state;
    pid_t pid;
    int pidfd;
    uint32_t generation;
    uint32_t kinds_gen;       /* the kind table it was forked with */
    struct ring jobs;         /* we produce */
    struct ring results;      /* we consume */
    struct job_list inflight; /* in the order the worker runs them */
    uint32_t ninflight;
    uint64_t est_ns;          /* sum of the estimates of its in-flight jobs */
    uint64_t head_started_ns; /* when the job at the head of inflight started */
    uint64_t jobs_sent;       /* since it was forked: recycled at workers.max_jobs */
    bool wake;                /* jobs pushed since the last wake-up */
    bool retiring;            /* leaves the pool for good when it exits */
    bool exit_sent;           /* the exit message is in its ring */
    enum death_cause killed;  /* we sent SIGKILL, and why */
    uint64_t spawned_ns;
    uint64_t ready_ns;
    uint64_t respawn_at_ns; /* in WORKER_BACKOFF: when to fork again */
    uint32_t crash_streak;  /* deaths in a row of workers that did not live stable_s */
    uint64_t backoff_ns;
    uint64_t respawns;
    uint64_t cpu_ticks; /* last sample from /proc, for CPU % */
    uint64_t cpu_sampled_ns;
};

#define TICK_BUSY_NS 2000000 /* the tick while jobs are out: timeouts are this precise */

/* Per-second samples of the accepted and answered counters, for rates. */
#define RATE_SAMPLES 61

struct engine {
    const struct registry *registry; /* the caller's: handlers by name */
    struct conf_workers wconf;
    struct conf_limits limits;
    struct conf_streams sconf;
    char instance[SEG_INSTANCE_LEN];
    struct loop *loop;
    struct segment seg;
    struct slab slab;
    int efd;     /* workers write it to wake us */
    int lock_fd; /* the instance lock (shm/lock.h), held for our whole life */
    struct loop_watch *efd_watch;
    bool started, accepting;

    /* In the loop (engine_loop.c): the round, and the going to sleep. */
    struct loop_hook hook;
    bool spin;        /* the last wait for results was short: poll before sleeping */
    bool flag_raised; /* supervisor_sleeping is set: workers write the eventfd */
    uint64_t sleep_start_ns;
    struct loop_timer tick;   /* housekeeping: timeouts, respawns, the pool's size */
    struct loop_timer second; /* rates, workers' CPU and memory */
    struct loop_timer batch;  /* the end of a sleep that batches results */

    struct kind kinds[SEG_MAX_KINDS];
    unsigned nkinds;
    uint32_t kinds_gen; /* bumped by each reload that changes the kind table */
    size_t max_alloc;   /* largest block the slab was set up for */

    struct scaler scale;
    bool drop_privs; /* workers run as uid/gid (conf user:) */
    uid_t uid;
    gid_t gid;

    struct worker *workers;
    unsigned nslots; /* workers.max */
    unsigned target;

    struct job *jobs; /* the job pool */
    size_t njobs;
    struct job_list free_jobs;
    size_t outstanding; /* accepted, not yet answered */
    size_t queued;      /* pending + waiting on a stream */
    struct job_list pending[PRIO_COUNT];
    uint64_t next_id;

    struct stream *streams; /* streams.max records */
    struct stream **buckets;
    size_t nbuckets;
    struct stream_list idle_streams;  /* idle, holding state; least recently used first */
    struct stream_list spare_streams; /* idle, nothing to lose; least recently used first */
    struct stream_list free_streams;
    struct loop_timer stream_idle; /* the least recently used idle stream expires */
    uint32_t stream_slot_size;

    struct stats_global g;     /* private copy, published each turn */
    struct stats_block *stats; /* its block "engine" in the segment */
    const struct stats_block_spec *declared[STATS_MAX_BLOCKS]; /* added at start */
    unsigned ndeclared;
    bool g_dirty;
    uint64_t now_ns; /* the loop's time, as of the round or timer running */
    uint64_t next_expire_ns;
    uint64_t rate_accepted[RATE_SAMPLES], rate_answered[RATE_SAMPLES];
    unsigned rate_pos, rate_count;
};

static inline struct worker *engine_worker(struct engine *e, unsigned slot)
{
    return &e->workers[slot];
}

/* Bring the engine's clock to the loop's, never backwards: a worker reaped
 * in this iteration stamped its jobs with a fresher reading, and a job's
 * age must not come out negative. */
static inline void engine_sync_clock(struct engine *e)
{
    uint64_t now = loop_now_ns(e->loop);
    if (now > e->now_ns)
        e->now_ns = now;
}

/* For the engine's timer functions: the engine CTX, its clock synced. */
static inline struct engine *engine_of_timer(void *ctx)
{
    struct engine *e = ctx;
    engine_sync_clock(e);
    return e;
}

/* Make sure the housekeeping tick runs no later than AT_NS. */
static inline void engine_wake_at(struct engine *e, uint64_t at_ns)
{
    loop_timer_arm_by(e->loop, &e->tick, at_ns);
}

/* engine.c */
/* kinds.c */
size_t kinds_largest_alloc(const struct engine *e);
/* A worker died in kind K's init(), HOW ("crashed: signal 11"). */
void kind_init_died(struct engine *e, unsigned k, const char *how);
/* A worker started: every kind it took up is healthy. */
void kinds_started(struct engine *e);
/* Take set-aside kinds whose retry time has come back into new workers. */
void kinds_retry(struct engine *e);
/* Output buffer for a job of IN_LEN bytes of kind K, error text included. */
uint64_t kind_out_capacity(const struct kind *k, uint64_t in_len);
/* Fill kind slot IDX; it takes PRELOADED (kind_preload's result, or NULL). */
int kind_define(struct engine *e, unsigned idx, const char *name, const struct mqfork_handler *h,
                const struct conf_params *params, void *preloaded);
void kind_undefine(struct engine *e, unsigned idx);
/* Run H's preload for PARAMS in the supervisor, before any fork that needs
 * it. *OUT is NULL when H has none. 0, or -1 (logged). */
int kind_preload(const char *name, const struct mqfork_handler *h,
                 const struct mqfork_params *params, void **out);
void engine_publish_kind(struct engine *e, unsigned idx);
void engine_finish(struct engine *e, struct job *j, enum job_status st, const void *data,
                   size_t len, uint64_t run_ns);
void engine_finishf(struct engine *e, struct job *j, enum job_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* engine_stats.c */
int engine_stats_start(struct engine *e);
void engine_stats_publish(struct engine *e);
/* Slot SLOT's values of handler H's counters (its block "plugin.<name>",
 * added when missing, before the worker that writes them forks), or NULL
 * when H declares none or the block cannot be added (logged). */
uint64_t *engine_handler_counters(struct engine *e, const struct mqfork_handler *h, unsigned slot);

/* engine_loop.c */
int engine_loop_init(struct engine *e);
void engine_loop_start(struct engine *e);
void engine_loop_fini(struct engine *e);
void engine_publish(struct engine *e);

/* dispatch.c */
int dispatch_init(struct engine *e);
void dispatch_free(struct engine *e);
struct stream *stream_get(struct engine *e, uint32_t kind, const void *key, size_t len);
void stream_release_job(struct engine *e, struct job *j);
void stream_expire(void *engine); /* the stream_idle timer */
void stream_forget_kind(struct engine *e, uint32_t kind, bool drop);
void pending_push(struct engine *e, struct job *j, bool front);
void pending_remove(struct engine *e, struct job *j);
void dispatch(struct engine *e);
void dispatch_expire(struct engine *e);

/* pool.c */
int pool_init(struct engine *e);
void pool_free(struct engine *e);
int pool_spawn(struct engine *e, struct worker *w);
bool pool_collect(struct engine *e);
void pool_tick(struct engine *e);
void pool_sample(struct engine *e);
void pool_kill(struct engine *e, struct worker *w, enum death_cause why);
void pool_retire(struct engine *e, struct worker *w);
void pool_drain(struct engine *e, struct worker *w);
bool pool_takes_jobs(const struct worker *w);
void pool_publish_worker(struct engine *e, struct worker *w);
void pool_shutdown(struct engine *e);
void pool_count(struct engine *e);

#endif
