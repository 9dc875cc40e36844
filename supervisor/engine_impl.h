/* engine_impl.h - the engine's private state, in one part per owner. Each
 * part is changed only by the code of its owner, through the owner's
 * functions; the others only read it:
 *
 *   struct jobs       engine.c            the job pool; accepted, not answered
 *   struct queues     engine_queue.[ch]   the pending queues, by priority
 *   struct streams    engine_streams.c    the stream table, its waiting jobs
 *   worker in flight  engine_inflight.[ch] what each worker holds, its cost
 *   struct retries    engine_retry.c      jobs waiting out their backoff
 *   struct pool       pool.c              the worker slots, their states, target
 *   struct scaler     scale.c             the autoscaler
 *   struct kind       kinds.c, reload.c   the kind table
 *
 * The moves on the hot path (submit -> dispatch -> collect) are inline, in
 * the owner's header or below. dispatch.c moves jobs from the queues to the
 * workers through them. A struct job lives in the job pool from submit
 * until its outcome; job->state says where it is, and every move asserts
 * (in debug builds) that it comes from where it must, so a job queued,
 * sent or answered twice aborts under the tests. */
#ifndef MQFORK_SUPERVISOR_ENGINE_IMPL_H
#define MQFORK_SUPERVISOR_ENGINE_IMPL_H

#include <assert.h>
#include <sys/queue.h>
#include <sys/types.h>

#include "conf/config.h"
#include "shm/clock.h"
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

/* Where a job is. A job leaves a list as JOB_TAKEN, and only a taken job
 * goes into a list or is answered:
 *
 *   FREE -> TAKEN (submit) -> PENDING | STREAM_WAIT
 *   STREAM_WAIT -> TAKEN -> PENDING (its turn), or answered (route removed)
 *   PENDING -> TAKEN -> INFLIGHT (sent), PENDING (the send failed), or answered
 *   INFLIGHT -> TAKEN -> PENDING (its worker died), RETRY_WAIT, or answered
 *   RETRY_WAIT -> TAKEN -> PENDING (its backoff is over), or answered (shutdown)
 *   answered: TAKEN -> FREE (engine_finish) */
enum job_state { JOB_FREE, JOB_TAKEN, JOB_PENDING, JOB_STREAM_WAIT, JOB_INFLIGHT, JOB_RETRY_WAIT };

/* Why a worker died, as the supervisor saw it. */
enum death_cause { DEATH_NONE, DEATH_CRASH, DEATH_TIMEOUT, DEATH_WILD, DEATH_RETIRED };

struct stream;

struct job {
    TAILQ_ENTRY(job) link;
    uint64_t id;
    enum job_state state; /* changed only by job_move */
    uint32_t kind;
    uint8_t prio;
    bool sent_fresh;  /* its dispatch carried JOB_STREAM_FRESH */
    uint8_t retry_on; /* enum conf_retry bits */
    uint32_t attempts;
    uint32_t retries;
    uint32_t tries;          /* enum engine_try of each failed attempt (engine_try_at) */
    uint32_t backoff_ms;     /* first retry's delay, doubling */
    uint32_t backoff_max_ms; /* its cap */
    uint64_t retry_at_ns;    /* in JOB_RETRY_WAIT: when it goes back to the queue */
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
    engine_describe_fn describe;
    void *ctx;
};

TAILQ_HEAD(job_list, job);

/* Move J from state FROM to TO; from any other state is a bug (asserted,
 * so compiled out with NDEBUG). */
static inline void job_move(struct job *j, enum job_state from, enum job_state to)
{
    assert(j->state == from);
    (void)from;
    j->state = to;
}

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
    bool ended;         /* its source ended it: forgotten once idle */
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
    bool of_source; /* a source's own (engine_add_source_kind): no route of a reload names it */
    uint64_t retry_at_ns;
    char failure[64]; /* what its init did, for the error reports */
};

#define EST_CLIP_MIN_NS 10000 /* a run always counts for this much at least */

/* A job of kind K ran RUN_NS: the estimate dispatch charges its next jobs
 * with is a moving average over about the last eight. A run counts for at
 * most twice the estimate (or EST_CLIP_MIN_NS): run_ns is wall time, and a
 * worker the scheduler set aside for 10 ms (a busy machine) would otherwise
 * make a 70 us kind look like 1.3 ms, so dispatch would hand each worker one
 * job where it takes twenty, and the workers would starve between the
 * supervisor's rounds. A kind that really got slower still doubles its
 * estimate within six jobs. kinds.c's, inline for the hot path (a result). */
static inline void kind_measured(struct kind *k, uint64_t run_ns)
{
    uint64_t most = 2 * k->est_ns > EST_CLIP_MIN_NS ? 2 * k->est_ns : EST_CLIP_MIN_NS;
    if (run_ns > most)
        run_ns = most;
    k->est_ns = k->est_ns - k->est_ns / 8 + run_ns / 8;
    if (k->est_ns == 0)
        k->est_ns = 1;
}

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
    uint32_t kinds_gen;  /* the kind table it was forked with */
    struct ring jobs;    /* we produce */
    struct ring results; /* we consume */
    /* Its in-flight jobs (engine_inflight.c) */
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

/* The job pool (engine.c). */
struct jobs {
    struct job *all;
    size_t n;
    struct job_list free;
    size_t outstanding; /* accepted, not yet answered */
    uint64_t next_id;
};

/* The pending queues, served high priority first (engine_queue.c). */
struct queues {
    struct job_list pending[PRIO_COUNT];
    size_t n;             /* jobs in them */
    size_t with_deadline; /* of which with a deadline: none, and nothing can expire */
    uint64_t next_expire_ns;
};

/* Jobs waiting out their backoff before they are tried again, by when they
 * are due, under one timer (engine_retry.c). */
struct retries {
    struct job_list waiting;
    size_t n;
    struct loop_timer due;     /* the first of them is due */
    uint64_t rng;              /* for the jitter */
    struct stats_block *stats; /* its block "retry" */
};

/* The stream table (engine_streams.c). */
struct streams {
    struct stream *all; /* streams.max records */
    struct stream **buckets;
    size_t nbuckets;
    struct stream_list idle;  /* idle, holding state; least recently used first */
    struct stream_list spare; /* idle, nothing to lose; least recently used first */
    struct stream_list free;
    struct loop_timer expiry; /* the least recently used idle stream expires */
    size_t waiting;           /* jobs waiting behind their stream's active job */
};

/* The worker slots (pool.c). */
struct pool {
    struct worker *workers;
    unsigned nslots; /* workers.max */
    unsigned target;
};

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

    /* The kind table (kinds.c; reload.c swaps its entries) */
    struct kind kinds[SEG_MAX_KINDS];
    unsigned nkinds;
    uint32_t kinds_gen; /* bumped by each reload that changes the kind table */
    size_t max_alloc;   /* largest block the slab was set up for */
    uint32_t stream_slot_size;

    struct scaler scale; /* scale.c */
    bool drop_privs;     /* workers run as uid/gid (conf user:) */
    uid_t uid;
    gid_t gid;

    struct pool pool;  /* pool.c */
    struct jobs jobs;  /* engine.c */
    struct queues q;   /* engine_queue.[ch] */
    struct streams st; /* engine_streams.c */
    struct retries rq; /* engine_retry.c */

    /* Each figure is counted by the part it describes. */
    struct stats_global g;     /* private copy, published each turn */
    struct stats_block *stats; /* its block "engine" in the segment */
    const struct stats_block_spec *declared[STATS_MAX_BLOCKS]; /* added at start */
    unsigned ndeclared;
    bool g_dirty;
    uint64_t now_ns; /* the loop's time, as of the round or timer running */
    uint64_t short_seen_ns; /* when dispatch last took a short job (dispatch.c) */
    uint64_t rate_accepted[RATE_SAMPLES], rate_answered[RATE_SAMPLES];
    unsigned rate_pos, rate_count;
};

/* Jobs accepted and not yet started: pending, or waiting on their stream. */
static inline size_t engine_queued(const struct engine *e)
{
    return e->q.n + e->st.waiting;
}

static inline struct worker *engine_worker(struct engine *e, unsigned slot)
{
    return &e->pool.workers[slot];
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

/* Read the clock afresh, outside a round (a worker reaped). */
static inline void engine_read_clock(struct engine *e)
{
    e->now_ns = mono_ns();
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
void engine_finish(struct engine *e, struct job *j, enum job_status st, const void *data,
                   size_t len, uint64_t run_ns);
void engine_finishf(struct engine *e, struct job *j, enum job_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

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
/* The longest input a job of K may have (its handler's max_in, or MAX_PAYLOAD). */
uint64_t kind_max_in(const struct kind *k, uint64_t max_payload);
/* Fill kind slot IDX; it takes PRELOADED (kind_preload's result, or NULL). */
int kind_define(struct engine *e, unsigned idx, const char *name, const struct mqfork_handler *h,
                const struct conf_params *params, void *preloaded);
void kind_undefine(struct engine *e, unsigned idx);
/* Run H's preload for PARAMS in the supervisor, before any fork that needs
 * it. *OUT is NULL when H has none. 0, or -1 (logged). */
int kind_preload(const char *name, const struct mqfork_handler *h,
                 const struct mqfork_params *params, void **out);
void engine_publish_kind(struct engine *e, unsigned idx);

/* engine_stats.c */
int engine_stats_start(struct engine *e);
void engine_stats_publish(struct engine *e);
/* Slot SLOT's instance of handler H's figures (its block "plugin.<name>",
 * added on first use): its counters from the start, its histograms from
 * engine_handler_hist_offset(H). NULL when H keeps none or the block cannot
 * be added. */
void *engine_handler_figures(struct engine *e, const struct mqfork_handler *h, unsigned slot);
size_t engine_handler_hist_offset(const struct mqfork_handler *h);

/* engine_loop.c */
int engine_loop_init(struct engine *e);
void engine_loop_start(struct engine *e);
void engine_loop_fini(struct engine *e);
void engine_publish(struct engine *e);

/* engine_queue.c (the moves in and out: engine_queue.h) */
void queue_init(struct engine *e);
/* Answer pending job J as expired (queue_overdue). */
void queue_answer_expired(struct engine *e, struct job *j);
/* Answer pending jobs past their deadline (at most every 50 ms). */
void queue_expire(struct engine *e);
/* Answer every pending job with a shutdown error. */
void queue_abandon(struct engine *e);

/* engine_streams.c */
int streams_init(struct engine *e);
void streams_free(struct engine *e);
struct stream *stream_get(struct engine *e, uint32_t kind, const void *key, size_t len);
/* A new job J of stream S (taken) goes to the queue, or waits behind the
 * stream's active job. */
void stream_enter(struct engine *e, struct stream *s, struct job *j);
/* J, waiting on its stream, is taken out to be answered (reload). */
void stream_unwait(struct engine *e, struct job *j);
/* J is answered: its stream's next job may go. */
void stream_release_job(struct engine *e, struct job *j);
/* J goes to a worker: the state is its to initialize when fresh. */
void stream_job_sent(struct job *j);
/* J was running and its worker died: its stream's state is suspect when it
 * was J's to change (CULPRIT) or J was to initialize it. */
void stream_job_lost(struct engine *e, struct job *j, bool culprit);
void stream_expire(void *engine); /* the streams' expiry timer */
void stream_forget_kind(struct engine *e, uint32_t kind, bool drop);

/* dispatch.c */
void dispatch(struct engine *e);

/* engine_inflight.c (the moves on the hot path: engine_inflight.h) */
/* W is gone: its jobs go back to the queues, or are answered (REASON: its
 * running job killed it). */
void inflight_rescue(struct engine *e, struct worker *w, const char *reason);
/* The daemon stops: W's jobs are answered as abandoned. */
void inflight_abandon(struct engine *e, struct worker *w);

/* engine_retry.c */
int retry_start(struct engine *e);
void retry_fini(struct engine *e);
/* Taken job J's attempt ended in CAUSE (WHY, LEN bytes, says how): J goes
 * back to the queue, at once or after its backoff, when its route retries
 * CAUSE and its retries and deadline allow; otherwise J is answered with
 * STATUS and WHY. */
void retry_or_answer(struct engine *e, struct job *j, enum engine_try cause, enum job_status status,
                     const void *why, size_t len, uint64_t run_ns);
/* J is answered with ST: counted when it succeeded after a retry. */
void retry_count_outcome(struct engine *e, const struct job *j, enum job_status st);
/* The daemon stops: jobs waiting for a retry are answered as abandoned. */
void retry_abandon(struct engine *e);

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
/* The wanted pool size, clamped to [workers.min, workers.max]. */
unsigned pool_set_target(struct engine *e, unsigned target);

/* W was sent a job (dispatch.c): it is busy, and it counts toward its
 * recycling at workers.max_jobs, whose exit message then queues right
 * behind its last job. pool.c's, inline for the hot path. */
static inline void pool_job_sent(struct engine *e, struct worker *w)
{
    if (w->state == WORKER_IDLE) {
        w->state = WORKER_BUSY;
        pool_publish_worker(e, w);
    }
    if (e->wconf.max_jobs && ++w->jobs_sent >= e->wconf.max_jobs)
        pool_drain(e, w);
}

#endif
