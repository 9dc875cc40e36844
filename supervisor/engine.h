/* engine.h - the job engine: the one entry point through which jobs enter the
 * pool (from the MQTT routes, the UDP sessions, the tests and the benchmark)
 * and through which each accepted job gets exactly one outcome.
 *
 * The engine owns the shared-memory segment, the worker processes and the
 * queues. It runs inside the caller's event loop (loop.h): once started,
 * its round of work (collect results, dispatch) runs in every iteration of
 * the loop, and its periodic work on the loop's timers. engine_turn() is
 * one iteration, for callers that have nothing else to run.
 *
 *   kind = engine_add_kind(e, "echo", "test.echo", NULL);   before start
 *   engine_start(e);                                        forks the pool
 *   engine_submit(e, &job, &id)  -> JOB_OK: accepted; job.done runs once later
 *                                -> any other status: refused, done never runs
 *   while (...) engine_turn(e, -1);
 */
#ifndef MQFORK_SUPERVISOR_ENGINE_H
#define MQFORK_SUPERVISOR_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/config.h"
#include "mqfork/handler.h"
#include "proto/job.h"

struct engine;
struct loop;
struct registry;
struct segment;
struct stats_block;
struct stats_block_spec;
struct stats_global;

/* What ended an attempt of a job: the causes a route may retry (retry_on). */
enum engine_try { TRY_NONE = 0, TRY_CRASHED, TRY_TIMEOUT, TRY_FAILED };

/* Attempts whose cause engine_outcome.tries keeps: the first ones. */
#define ENGINE_TRIES_KEPT 16

/* The word for T in error reports ("crashed", "timeout", "failed"). Inline:
 * the routes use it without the engine (their fuzz harness stands in for
 * the rest of it). */
static inline const char *engine_try_name(enum engine_try t)
{
    switch (t) {
    case TRY_CRASHED:
        return "crashed";
    case TRY_TIMEOUT:
        return "timeout";
    case TRY_FAILED:
        return "failed";
    default:
        return "";
    }
}

/* The cause that ended attempt I (from 0) of the job TRIES describes
 * (engine_outcome.tries); TRY_NONE when it ended otherwise or is not kept. */
static inline enum engine_try engine_try_at(uint32_t tries, unsigned i)
{
    return i < ENGINE_TRIES_KEPT ? (enum engine_try)((tries >> (2 * i)) & 3) : TRY_NONE;
}

/* How one accepted job ended. Pointers are valid only during the callback. */
struct engine_outcome {
    uint64_t id;
    enum job_status status;
    const uint8_t *data; /* JOB_OK: the result; otherwise a sentence for a human */
    size_t len;
    uint32_t attempts; /* times it was started on a worker */
    uint32_t tries;    /* what ended each attempt that failed: engine_try_at */
    uint64_t wait_ns;  /* accepted -> last started (0 if never started) */
    uint64_t run_ns;   /* handler run time (0 unless a worker answered) */
};

typedef void (*engine_done_fn)(void *ctx, const struct engine_outcome *o);
/* How the source names a job in a log line ("route echo, topic t/1/in"),
 * from the job's ctx, into BUF. */
typedef void (*engine_describe_fn)(const void *ctx, char *buf, size_t len);

struct engine_job {
    uint32_t kind;
    const void *payload;
    size_t len;
    const void *stream; /* stream key: jobs with the same kind and key run one at
                           a time in arrival order and share state; NULL = none */
    size_t stream_len;
    uint32_t out_max; /* the most output this job can write, when the source knows
                         better than its kind's bound (which still caps it); 0 = that bound */
    enum conf_priority priority;
    uint32_t timeout_ms;         /* run time allowed per attempt; 0 = 10000 */
    uint32_t deadline_ms;        /* drop as expired if still pending this long; 0 = never */
    uint32_t retries;            /* re-runs after an attempt ended in a cause of retry_on */
    unsigned retry_on;           /* enum conf_retry bits; 0 = RETRY_CRASHED | RETRY_TIMEOUT */
    uint32_t backoff_ms;         /* delay before the first re-run, doubling; 0 = at once */
    uint32_t backoff_max_ms;     /* cap of that delay; 0 = 30000 */
    struct mqfork_job_meta meta; /* what the source knew besides the bytes */
    engine_done_fn done;
    engine_describe_fn describe; /* NULL: the job is named by its kind */
    void *ctx;
};

#define ENGINE_STREAM_KEY_MAX 128

/* Create the engine for configuration C (copied), with its segment. The loop
 * and the registry of handlers are the caller's and must outlive the
 * engine; the engine adds its own watches to the loop. NULL on failure,
 * logged. */
struct engine *engine_new(const struct conf *c, struct loop *loop, const struct registry *reg);

/* Register a job kind: NAME for stats, HANDLER from the registry, PARAMS
 * (copied; NULL = none). The handler's preload runs at engine_start, after
 * privileges are dropped and before the first fork. Before engine_start only. Returns the kind's
 * index, or -1 (logged) for an unknown handler, bad params or too many kinds. */
int engine_add_kind(struct engine *e, const char *name, const char *handler,
                    const struct conf_params *params);
/* The same for a source's own kind (voice.decode, say) rather than a
 * route's: a reload, which compares routes, leaves it as it is. */
int engine_add_source_kind(struct engine *e, const char *name, const char *handler,
                           const struct conf_params *params);

/* Create the segment and fork workers.min workers. 0, or -1 (logged).
 * When the configuration names a `user:` and the process runs as root, the
 * segment is handed to that user's group (mode 0640, for mqforkstat) and
 * the whole process then drops to the user and group before any worker is
 * forked: workers, handler set-up included, never run as root, and the
 * supervisor keeps nothing it does not need. */
int engine_start(struct engine *e);

/* Offer a job. JOB_OK: accepted, and J->done will run exactly once, from a
 * later iteration of the loop (never from inside this call). Anything else: refused
 * (JOB_E_OVERLOADED, JOB_E_TOO_LARGE, JOB_E_UNKNOWN_KIND, JOB_E_SHUTDOWN),
 * counted, and done is not called. */
enum job_status engine_submit(struct engine *e, const struct engine_job *j, uint64_t *id);

/* The source will offer no more jobs of stream KEY (LEN bytes) of kind
 * KIND - a voice session ended, say: its state slot is freed as soon as its
 * last job is answered, instead of streams.idle_s later, and may take a new
 * stream (a full table refuses new streams; see streams.max). A job of the
 * stream offered before then cancels this. Unknown streams are ignored. */
void engine_stream_end(struct engine *e, uint32_t kind, const void *key, size_t len);

/* Count a job its source refused before offering it (a reply topic no
 * broker would take, say), as engine_submit counts its own refusals: by
 * REASON in the global block and in kind KIND's block. */
void engine_count_refusal(struct engine *e, uint32_t kind, enum job_status reason);

/* One iteration of the loop (loop_run): due timers, the engine's round
 * (collect results, dispatch), ready loop events; when there was nothing to
 * do, spin briefly and then sleep in the loop up to WAIT_NS (< 0: until
 * something happens; 0: never sleep). */
void engine_turn(struct engine *e, int64_t wait_ns);

/* Jobs accepted and not yet answered. */
size_t engine_outstanding(const struct engine *e);

/* Whether a job of KIND submitted now would go to a worker at once:
 * nothing waits ahead of it, and a worker may take it. For work that is
 * worth doing only when it need not wait (voice_stt.c's parts). */
bool engine_would_start(struct engine *e, uint32_t kind);

/* Workers ready to take jobs now. */
unsigned engine_live_workers(const struct engine *e);

/* Change the wanted pool size (clamped to [workers.min, workers.max]);
 * returns the size set. Growth forks at once; shrinking retires idle
 * workers after their current jobs. */
unsigned engine_set_target(struct engine *e, unsigned target);
unsigned engine_target(const struct engine *e);

/* An operator's change of the pool by DELTA workers (SIGUSR1 +1, SIGUSR2 -1;
 * WHO names it in the log). Clamped to [workers.min, workers.max], logged,
 * recorded as a scaling event, and the autoscaler's cooldown starts. Returns
 * the new target. */
unsigned engine_scale_manual(struct engine *e, int delta, const char *who);

/* Apply configuration C (already validated by conf_load) to the running
 * engine: worker limits, scaling, limits that fit the segment (others are
 * logged as needing a restart and kept), and the routes. Kinds are matched
 * by route name: a kept route keeps its index and its jobs keep flowing;
 * pending jobs of a removed route are answered JOB_E_SHUTDOWN ("route
 * removed by reload"); when the kind table changed, every worker is
 * recycled gracefully (it answers what it holds, then is forked again with
 * the new table) and no job is ever sent to a worker without its handler.
 * Returns 0, or -1 (logged) with nothing changed. */
int engine_reload(struct engine *e, const struct conf *c);

/* Index of the job kind named NAME (a route), or -1. Valid after a reload. */
int engine_kind_by_name(const struct engine *e, const char *name);

/* Workers still running a kind table older than the current one. */
unsigned engine_stale_workers(const struct engine *e);

/* Stop accepting jobs (submit returns JOB_E_SHUTDOWN). */
void engine_stop_accepting(struct engine *e);

/* Answer every job not yet answered with JOB_E_SHUTDOWN (counted as
 * abandoned, and logged when there were any), kill the workers, wait for
 * them. Returns how many jobs were abandoned. */
size_t engine_abandon(struct engine *e);

/* Stop the pool if still running, unlink the segment and free everything. */
void engine_free(struct engine *e);

/* Add a named counter block (shm/statblock.h) to the instance's segment,
 * after engine_start: a source's or a plugin's own figures, which
 * mqforkstat shows without knowing them in advance. The caller publishes
 * it. NULL when it cannot be added (logged). */
struct stats_block *engine_add_block(struct engine *e, const struct stats_block_spec *spec);

/* Declare a block before engine_start, which adds it before the first
 * worker forks: the way for a per-worker block (STATS_BLOCK_PER_WORKER),
 * whose instance N the worker of slot N writes, found by name with
 * stats_block_find and stats_block_instance. SPEC, its table and strings
 * must outlive the engine. 0, or -1 (logged: too many, or started). */
int engine_declare_block(struct engine *e, const struct stats_block_spec *spec);

/* The engine's own figures as last published (its block "engine"). */
const struct stats_global *engine_stats(const struct engine *e);

/* The segment, for the sources' blocks and for tests and tools that look at
 * the stats it holds. */
struct segment *engine_segment(struct engine *e);

/* Pids of the workers, by slot (0 where none), for tests and drills. */
int engine_worker_pid(const struct engine *e, unsigned slot);

#endif
