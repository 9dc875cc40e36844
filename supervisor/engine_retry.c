/* engine_retry.c - what becomes of a job whose attempt failed: its worker
 * crashed, it ran past its timeout, or its handler answered `failed`. When
 * its route retries that cause (retry_on) and its retries are not spent, it
 * goes back to the front of its queue: at once, or after a backoff that
 * doubles with each attempt (backoff_ms, capped at backoff_max_ms, less up to
 * a fifth at random so that jobs that failed together do not all come back
 * together). A retry is never scheduled past the job's deadline: the job is
 * then answered with its last error, as when its retries are spent, so it
 * still gets exactly one outcome. The waiting jobs are kept by when they are
 * due, under one timer, and counted in the block "retry". */
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "supervisor/engine_inflight.h"
#include "supervisor/engine_queue.h"

#define DEFAULT_BACKOFF_MAX_MS 30000

/* The data of the block "retry". */
struct retry_figures {
    uint64_t scheduled[TRY_FAILED + 1]; /* by enum engine_try */
    uint64_t waiting;
    uint64_t exhausted;
    uint64_t past_deadline;
    uint64_t succeeded;
};

#define F(kind, member, name, help) STATS_FIELD(kind, struct retry_figures, member, name, help)
#define BY_CAUSE(t, name)                                                                          \
    STATS_DESC(STATS_COUNTER, struct retry_figures, scheduled[t], name, "cause", 1,                \
               "Failed attempts tried again, by what ended them.")

static const struct stats_field_desc retry_fields[] = {
    BY_CAUSE(TRY_CRASHED, "scheduled.crashed"),
    BY_CAUSE(TRY_TIMEOUT, "scheduled.timeout"),
    BY_CAUSE(TRY_FAILED, "scheduled.failed"),
    F(STATS_GAUGE, waiting, "waiting", "Jobs waiting out their backoff before their next attempt."),
    F(STATS_COUNTER, exhausted, "exhausted",
      "Jobs answered with their error: their route retries it, but their retries were spent."),
    F(STATS_COUNTER, past_deadline, "past_deadline",
      "Jobs answered with their error: their next attempt would have come after their deadline."),
    F(STATS_COUNTER, succeeded, "succeeded", "Jobs answered with a result after a failed attempt."),
};

static void on_due(void *ctx);

int retry_start(struct engine *e)
{
    struct retries *rq = &e->rq;
    struct stats_block_spec spec = {
        .name = "retry",
        .fields = retry_fields,
        .nfields = sizeof(retry_fields) / sizeof(retry_fields[0]),
        .size = sizeof(struct retry_figures),
    };
    TAILQ_INIT(&rq->waiting);
    rq->rng = mono_ns() | 1;
    if (!(rq->stats = stats_block_add(&e->seg, &spec)) ||
        loop_timer_init(e->loop, &rq->due, on_due, e) < 0) {
        log_error("cannot set up the retries' timer and block");
        return -1;
    }
    return 0;
}

void retry_fini(struct engine *e)
{
    loop_timer_fini(e->loop, &e->rq.due);
}

/* One more of the figure at OFFSET in the block, with the gauge. */
static void count(struct retries *rq, size_t offset)
{
    struct retry_figures *f = stats_block_begin(rq->stats);
    (*(uint64_t *)((char *)f + offset))++;
    f->waiting = rq->n;
    stats_block_end(rq->stats);
}

static void publish_waiting(struct retries *rq)
{
    struct retry_figures *f = stats_block_begin(rq->stats);
    f->waiting = rq->n;
    stats_block_end(rq->stats);
}

/* xorshift64: the jitter needs spread, not secrecy. */
static uint64_t next_random(struct retries *rq)
{
    rq->rng ^= rq->rng << 13;
    rq->rng ^= rq->rng >> 7;
    rq->rng ^= rq->rng << 17;
    return rq->rng;
}

/* The wait before J's next attempt, J having had j->attempts. */
static uint64_t backoff_ns(struct retries *rq, const struct job *j)
{
    if (!j->backoff_ms)
        return 0;
    uint64_t cap = j->backoff_max_ms ? j->backoff_max_ms : DEFAULT_BACKOFF_MAX_MS;
    unsigned doublings = j->attempts > 1 ? j->attempts - 1 : 0;
    uint64_t ms = doublings < 32 ? (uint64_t)j->backoff_ms << doublings : cap;
    uint64_t ns = (ms < cap ? ms : cap) * 1000000;
    return ns - next_random(rq) % (ns / 5 + 1);
}

/* Answer J with ST and WHY, NOTE (when set) added in brackets. */
static void answer(struct engine *e, struct job *j, enum job_status st, const void *why, size_t len,
                   uint64_t run_ns, const char *note)
{
    if (!note) {
        engine_finish(e, j, st, why, len, run_ns);
        return;
    }
    char msg[384];
    int n = snprintf(msg, sizeof(msg), "%.*s (%s)", (int)(len < 256 ? len : 256), (const char *)why,
                     note);
    if (st == JOB_E_QUARANTINED) {
        char label[512];
        log_warn("%s quarantined: %s", job_label(e, j, label, sizeof(label)), msg);
    }
    engine_finish(e, j, st, msg,
                  n < 0                     ? 0
                  : (size_t)n < sizeof(msg) ? (size_t)n
                                            : sizeof(msg) - 1,
                  run_ns);
}

/* J waits in the list, by due time AT_NS, the earliest first. Failures of
 * one route come in order and share a backoff: the search from the back
 * usually stops at once. */
static void wait_until(struct engine *e, struct job *j, uint64_t at_ns)
{
    struct retries *rq = &e->rq;
    job_move(j, JOB_TAKEN, JOB_RETRY_WAIT);
    j->retry_at_ns = at_ns;
    struct job *before = TAILQ_LAST(&rq->waiting, job_list);
    while (before && before->retry_at_ns > at_ns)
        before = TAILQ_PREV(before, job_list, link);
    if (before)
        TAILQ_INSERT_AFTER(&rq->waiting, before, j, link);
    else
        TAILQ_INSERT_HEAD(&rq->waiting, j, link);
    rq->n++;
    if (TAILQ_FIRST(&rq->waiting) == j)
        loop_timer_arm(e->loop, &rq->due, at_ns);
}

static unsigned cause_bit(enum engine_try cause)
{
    return cause == TRY_CRASHED   ? RETRY_CRASHED
           : cause == TRY_TIMEOUT ? RETRY_TIMEOUT
                                  : RETRY_FAILED;
}

/* Schedule J's next attempt, DELAY_NS from now. */
static void schedule(struct engine *e, struct job *j, enum engine_try cause, uint64_t delay_ns)
{
    struct retries *rq = &e->rq;
    /* The engine's jobs_retried keeps its meaning: re-runs after a death. */
    if (cause != TRY_FAILED)
        e->g.retried++;
    e->g_dirty = true;
    if (delay_ns == 0)
        queue_push(e, j, true);
    else
        wait_until(e, j, e->now_ns + delay_ns);
    count(rq, offsetof(struct retry_figures, scheduled) + cause * sizeof(uint64_t));
}

void retry_or_answer(struct engine *e, struct job *j, enum engine_try cause, enum job_status status,
                     const void *why, size_t len, uint64_t run_ns)
{
    char note[160];
    unsigned attempt = j->attempts;
    j->worker = -1;
    if (attempt >= 1 && attempt <= ENGINE_TRIES_KEPT)
        j->tries |= (uint32_t)cause << (2 * (attempt - 1));
    if (!(j->retry_on & cause_bit(cause))) {
        /* A handler's failure reads as it always did on a route that does
         * not retry it; a death says which attempt it was. */
        snprintf(note, sizeof(note), "attempt %u; retry_on leaves out %s", attempt,
                 engine_try_name(cause));
        answer(e, j, status, why, len, run_ns, cause == TRY_FAILED && attempt <= 1 ? NULL : note);
        return;
    }
    if (attempt > j->retries) {
        snprintf(note, sizeof(note), "attempt %u of %u", attempt, j->retries + 1);
        count(&e->rq, offsetof(struct retry_figures, exhausted));
        answer(e, j, status, why, len, run_ns, note);
        return;
    }
    uint64_t delay = backoff_ns(&e->rq, j);
    if (j->deadline_ns && e->now_ns + delay > j->deadline_ns) {
        snprintf(note, sizeof(note),
                 "attempt %u of %u; no retry: the next, in %" PRIu64 " ms, would come after "
                 "the deadline",
                 attempt, j->retries + 1, delay / 1000000);
        count(&e->rq, offsetof(struct retry_figures, past_deadline));
        answer(e, j, status, why, len, run_ns, note);
        return;
    }
    schedule(e, j, cause, delay);
}

/* The retries' timer: the jobs now due go back to the front of their
 * queues, for the engine's round to dispatch. */
static void on_due(void *ctx)
{
    struct engine *e = engine_of_timer(ctx);
    struct retries *rq = &e->rq;
    struct job *j;
    while ((j = TAILQ_FIRST(&rq->waiting)) && j->retry_at_ns <= e->now_ns) {
        job_move(j, JOB_RETRY_WAIT, JOB_TAKEN);
        TAILQ_REMOVE(&rq->waiting, j, link);
        rq->n--;
        queue_push(e, j, true);
        e->g_dirty = true;
    }
    if (j)
        loop_timer_arm(e->loop, &rq->due, j->retry_at_ns);
    engine_wake_at(e, e->now_ns + TICK_BUSY_NS);
    publish_waiting(rq);
}

void retry_count_outcome(struct engine *e, const struct job *j, enum job_status st)
{
    if (j->tries && (st == JOB_OK || st == JOB_FILTERED))
        count(&e->rq, offsetof(struct retry_figures, succeeded));
}

void retry_abandon(struct engine *e)
{
    struct retries *rq = &e->rq;
    struct job *j;
    while ((j = TAILQ_FIRST(&rq->waiting))) {
        job_move(j, JOB_RETRY_WAIT, JOB_TAKEN);
        TAILQ_REMOVE(&rq->waiting, j, link);
        rq->n--;
        engine_finishf(e, j, JOB_E_SHUTDOWN, "abandoned: the daemon stopped first");
    }
    if (rq->stats)
        publish_waiting(rq);
    loop_timer_cancel(e->loop, &rq->due);
}
