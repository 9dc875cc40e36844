/* dispatch.c - how queued jobs are handed out. dispatch() gives each job
 * at the head of a queue (engine_queue.c), high priority first, to the
 * worker with the least outstanding work, measured in expected run time,
 * and stops handing a worker more once that passes workers.inflight_us or
 * workers.inflight jobs: a slow job then holds up only its own worker. A
 * job of a stream reaches the queues only when its turn has come
 * (engine_streams.c).
 *
 * A long job (expected to run past workers.inflight_us: a recognition,
 * say) never takes the last workers.short_reserve workers free of long
 * jobs while short ones come: the engine does not preempt, so a pool full
 * of long jobs would hold every short one (a device's 60 ms frame) until
 * one of them ends. */
#include "common/log.h"
#include "supervisor/engine_inflight.h"
#include "supervisor/engine_queue.h"

#define SKIP_MAX 64 /* jobs passed over per queue and round */

/* What waking a parked worker costs, counted as queued work: the
 * supervisor's futex syscall, the worker's way back through the scheduler
 * (both dear in a VM), and its parking again after. A job goes to a worker
 * that is awake, or already being woken this round, while the work queued
 * there is less than this; a parked one is woken only beyond it. */
#define WAKE_COST_NS 100000

/* Short jobs count as coming while one was taken this recently. */
#define SHORT_SEEN_NS 1000000000ull

/* Expected work queued to W: the estimates of its jobs, plus however long
 * the running one has already overrun its estimate, plus the cost of a
 * wake-up if W is parked and not yet woken by this dispatch. */
static uint64_t worker_load(const struct engine *e, const struct worker *w)
{
    uint64_t load = w->est_ns;
    if (!w->wake && ring_consumer_parked(&w->jobs))
        load += WAKE_COST_NS;
    const struct job *head = TAILQ_FIRST(&w->inflight);
    if (head) {
        uint64_t age = e->now_ns - w->head_started_ns;
        uint64_t est = e->kinds[head->kind].est_ns;
        if (age > est)
            load += age - est;
    }
    return load;
}

/* workers.inflight_us in ns: the expected work one worker may have queued. */
static uint64_t budget_ns(const struct engine *e)
{
    return (uint64_t)e->wconf.inflight_us * 1000;
}

/* Whether jobs of KIND are long ones: expected to run past the budget, so
 * that they go only to a worker with nothing queued. */
static bool kind_is_long(const struct engine *e, uint32_t kind)
{
    return e->kinds[kind].est_ns > budget_ns(e);
}

/* Whether a job of KIND is a long one that must wait for the short ones:
 * short jobs came of late, no more than workers.short_reserve workers are
 * free of long work, and one is not (its end dispatches again: a held job
 * never waits on an idle pool). */
static bool held_for_short(const struct engine *e, uint32_t kind)
{
    if (!kind_is_long(e, kind) || !e->wconf.short_reserve ||
        e->now_ns - e->short_seen_ns > SHORT_SEEN_NS)
        return false;
    unsigned free_of_long = 0, with_long = 0;
    for (unsigned i = 0; i < e->pool.nslots; i++) {
        const struct worker *w = &e->pool.workers[i];
        if (pool_takes_jobs(w)) {
            free_of_long += w->est_ns <= budget_ns(e);
            with_long += w->est_ns > budget_ns(e);
        }
    }
    return with_long && free_of_long <= e->wconf.short_reserve;
}

/* The least loaded worker that may take a job of KIND, or NULL. Ties go to
 * the lowest slot, and a parked worker counts the cost of waking it, so a
 * lightly loaded pool keeps using the same warm workers and the others can
 * sleep. */
static struct worker *pick_worker(struct engine *e, uint32_t kind)
{
    uint64_t budget = budget_ns(e);
    uint64_t est = e->kinds[kind].est_ns;
    struct worker *best = NULL;
    uint64_t best_load = UINT64_MAX;
    for (unsigned i = 0; i < e->pool.nslots; i++) {
        struct worker *w = &e->pool.workers[i];
        if (!pool_takes_jobs(w) || w->ninflight >= e->wconf.inflight ||
            w->kinds_gen < e->kinds[kind].since_gen)
            continue;
        uint64_t load = worker_load(e, w);
        if (w->ninflight && load + est > budget)
            continue;
        if (load < best_load) {
            best = w;
            best_load = load;
        }
    }
    return best;
}

static bool send_to(struct engine *e, struct worker *w, struct job *j)
{
    struct job_desc d = {
        .id = j->id,
        .kind = j->kind,
        .in_off = j->in_off,
        .in_len = j->in_len,
        .out_off = j->out_off,
        .out_cap = j->out_cap,
        .stream_slot = j->stream && e->stream_slot_size ? j->stream->slot : JOB_NO_STREAM,
        .meta_lost = j->meta.lost,
        .meta_flags = j->meta.flags,
        .meta_time_us = j->meta.time_us,
    };
    if (j->stream && j->stream->fresh)
        d.flags |= JOB_STREAM_FRESH;
    if (!ring_push(&w->jobs, &d)) {
        /* Our bound keeps a ring from filling: its consumer index is wild. */
        pool_kill(e, w, DEATH_WILD);
        return false;
    }
    if (j->stream)
        stream_job_sent(j);
    inflight_add(e, w, j);
    w->wake = true;
    pool_job_sent(e, w);
    return true;
}

/* A job whose route a reload removed while it waited (or was being
 * retried) never runs: no new worker has its handler. */
static void answer_removed(struct engine *e, struct job *j)
{
    queue_take(e, j);
    engine_finishf(e, j, JOB_E_SHUTDOWN, "route removed by reload");
}

/* A job whose handler cannot start (kinds.c) fails at once rather than
 * wait for a worker that has it. */
static void answer_failing(struct engine *e, struct job *j)
{
    const struct kind *k = &e->kinds[j->kind];
    queue_take(e, j);
    engine_finishf(e, j, JOB_E_FAILED, "handler %s cannot start: %s", k->handler->name, k->failure);
}

/* While a reload recycles the pool, a job of a new or changed kind may find
 * no worker forked with its handler yet, and a long job HELD for the short
 * ones waits; jobs behind it that can run go on, up to SKIP_MAX passed
 * over. Otherwise the queue's head waiting means everything behind it
 * waits too. */
static bool may_skip(const struct engine *e, const struct job *j, bool held, unsigned *skipped)
{
    return (held || (e->kinds[j->kind].since_gen > 0 && engine_stale_workers(e) > 0)) &&
           (*skipped)++ < SKIP_MAX;
}

bool engine_would_start(struct engine *e, uint32_t kind)
{
    return kind < e->nkinds && e->kinds[kind].handler && !e->q.n && !held_for_short(e, kind) &&
           pick_worker(e, kind);
}

void dispatch(struct engine *e)
{
    for (int p = 0; p < PRIO_COUNT; p++) {
        unsigned skipped = 0;
        for (struct job *j = TAILQ_FIRST(&e->q.pending[p]), *next; j; j = next) {
            next = TAILQ_NEXT(j, link);
            if (queue_overdue(e, j)) {
                queue_answer_expired(e, j);
                continue;
            }
            if (!e->kinds[j->kind].handler) {
                answer_removed(e, j);
                continue;
            }
            if (e->kinds[j->kind].failing) {
                answer_failing(e, j);
                continue;
            }
            if (!kind_is_long(e, j->kind))
                e->short_seen_ns = e->now_ns;
            bool held = held_for_short(e, j->kind);
            struct worker *w = held ? NULL : pick_worker(e, j->kind);
            if (!w && may_skip(e, j, held, &skipped))
                continue;
            if (!w)
                goto wake;
            queue_take(e, j);
            if (!send_to(e, w, j)) {
                queue_push(e, j, true);
                goto wake;
            }
        }
    }
wake:
    for (unsigned i = 0; i < e->pool.nslots; i++) {
        struct worker *w = &e->pool.workers[i];
        if (w->wake) {
            w->wake = false;
            ring_wake(&w->jobs);
        }
    }
}
