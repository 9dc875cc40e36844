/* engine_loop.c - the engine in the event loop. Its round (collect results,
 * dispatch, publish the statistics) is a before-sleep hook; its say in the
 * loop's sleep is how results wake the supervisor (doc/DESIGN.md, principle 7);
 * its periodic work runs on timers: the housekeeping tick, the per-second
 * sample, and the end of a sleep that batches results. The stream-expiry
 * and scaling timers are set up here too; their functions live with the
 * state they look at (engine_streams.c, scale.c). */
#include <string.h>

#include "shm/clock.h"
#include "supervisor/engine_impl.h"
#include "supervisor/loop.h"

#define SPIN_NS            30000     /* supervisor polls at most this long before it sleeps */
#define TICK_IDLE_NS       200000000 /* the tick while no job is out */
#define BATCH_MIN_NS       200000    /* queued work per worker from which results are batched */
#define BATCH_MAX_SLEEP_NS 1000000

/* Per-second samples give the arrival and completion rates and the verdict. */
static void sample_rates(struct engine *e)
{
    static const unsigned windows[STATS_RATE_WINDOWS] = {1, 10, 60};
    uint64_t answered = e->g.completed + e->g.filtered + e->g.failed;
    e->rate_pos = (e->rate_pos + 1) % RATE_SAMPLES;
    e->rate_accepted[e->rate_pos] = e->g.accepted;
    e->rate_answered[e->rate_pos] = answered;
    if (e->rate_count < RATE_SAMPLES)
        e->rate_count++;
    for (unsigned i = 0; i < STATS_RATE_WINDOWS; i++) {
        unsigned w = windows[i] < e->rate_count ? windows[i] : e->rate_count - 1;
        unsigned then = (e->rate_pos + RATE_SAMPLES - w) % RATE_SAMPLES;
        e->g.arrival_mrate[i] = w ? (e->g.accepted - e->rate_accepted[then]) * 1000 / w : 0;
        e->g.completion_mrate[i] = w ? (answered - e->rate_answered[then]) * 1000 / w : 0;
    }
    /* Falling behind: over 10 s, answers came at less than 95% of arrivals. */
    uint64_t in = e->g.arrival_mrate[1], out = e->g.completion_mrate[1];
    e->g.verdict = in >= 1000 && out * 100 < in * 95 ? VERDICT_FALLING_BEHIND : VERDICT_HEALTHY;
}

void engine_publish(struct engine *e)
{
    e->g.inflight = (uint32_t)(e->jobs.outstanding - engine_queued(e) - e->rq.n);
    e->g.slab_used = slab_used(&e->slab);
    e->g.workers_target = e->pool.target;
    e->g.updated_ns = e->now_ns;
    engine_stats_publish(e);
    e->g_dirty = false;
}

/* ---- timers ----------------------------------------------------------- */

/* Housekeeping: job timeouts and deadlines, respawns after backoff, the
 * pool's size, handlers set aside and due to be tried again, the
 * autoscaler's load. Often while jobs are out, so that a
 * hung job is caught within TICK_BUSY_NS of its timeout. Whatever asked for
 * an earlier tick meanwhile (engine_wake_at) keeps its time. */
static void on_tick(void *ctx)
{
    struct engine *e = engine_of_timer(ctx);
    queue_expire(e);
    pool_tick(e);
    kinds_retry(e);
    pool_count(e);
    scale_sample(e);
    uint64_t every = e->jobs.outstanding ? TICK_BUSY_NS : TICK_IDLE_NS;
    loop_timer_arm_by(e->loop, &e->tick, e->now_ns + every);
}

static void on_second(void *ctx)
{
    struct engine *e = engine_of_timer(ctx);
    sample_rates(e);
    pool_sample(e);
    e->g_dirty = true;
    loop_timer_arm(e->loop, &e->second, e->now_ns + NS_PER_S);
}

/* Only to end the sleep: the round after it collects the batch. */
static void on_batch_done(void *ctx)
{
    (void)ctx;
}

/* ---- the round and the sleep ------------------------------------------ */

/* One pass over everything that can move without waiting. Returns whether
 * results came in (dispatching alone is no reason to stay awake: the
 * workers are busy, and the results wake us). */
static bool round_work(void *ctx)
{
    struct engine *e = ctx;
    engine_sync_clock(e);
    bool busy = pool_collect(e);
    dispatch(e);
    if (e->g_dirty)
        engine_publish(e);
    return busy;
}

/* Whether any worker has something for us: results, or word that it is ready. */
static bool results_waiting(struct engine *e)
{
    for (unsigned i = 0; i < e->pool.nslots; i++) {
        struct worker *w = engine_worker(e, i);
        if (w->state == WORKER_STARTING && atomic_load(&seg_worker_ctl(&e->seg, i)->ready))
            return true;
        if (w->pid > 0 && w->state != WORKER_STARTING && ring_has_data(&w->results))
            return true;
    }
    return false;
}

/* Under saturation - jobs still pending, and every worker holding enough
 * work to stay busy a while - being woken for each result only takes CPU
 * from the workers. Then sleep on a timer for half of what the least loaded
 * worker holds, without raising the sleeper flag: one wake-up per batch
 * instead of an eventfd write per result (doc/DESIGN.md, principle 7). */
static uint64_t batch_sleep_ns(const struct engine *e)
{
    if (engine_queued(e) == 0)
        return 0;
    uint64_t least = UINT64_MAX;
    for (unsigned i = 0; i < e->pool.nslots; i++)
        if (pool_takes_jobs(&e->pool.workers[i]) && e->pool.workers[i].est_ns < least)
            least = e->pool.workers[i].est_ns;
    if (least == UINT64_MAX || least < BATCH_MIN_NS)
        return 0;
    return least / 2 < BATCH_MAX_SLEEP_NS ? least / 2 : BATCH_MAX_SLEEP_NS;
}

/* Poll the result rings until UNTIL_NS; true as soon as something came. */
static bool spin_for_results(struct engine *e, uint64_t until_ns)
{
    while (mono_ns() < until_ns) {
        if (results_waiting(e))
            return true;
        ring_cpu_relax();
    }
    return false;
}

/* The loop is about to sleep: publish what is left, then either batch (a
 * timed sleep with the flag down), or poll a little - only when the last
 * wait for results was short (see next_job in worker/worker.c for why) -
 * and raise the flag. Then look once more: a worker that pushed before it
 * saw the flag is caught here, one that pushed after writes the eventfd. */
static bool round_may_sleep(void *ctx)
{
    struct engine *e = ctx;
    if (e->g_dirty)
        engine_publish(e);
    uint64_t batch = batch_sleep_ns(e);
    if (batch) {
        loop_timer_arm(e->loop, &e->batch, e->now_ns + batch);
        return true;
    }
    e->sleep_start_ns = mono_ns();
    if (e->jobs.outstanding && e->spin && spin_for_results(e, e->sleep_start_ns + SPIN_NS))
        return false;
    atomic_store(&e->seg.hdr->supervisor_sleeping, 1);
    e->flag_raised = true;
    return !results_waiting(e);
}

static void round_after_sleep(void *ctx)
{
    struct engine *e = ctx;
    loop_timer_cancel(e->loop, &e->batch);
    if (!e->flag_raised)
        return;
    atomic_store(&e->seg.hdr->supervisor_sleeping, 0);
    e->flag_raised = false;
    e->spin = mono_ns() - e->sleep_start_ns < SPIN_NS;
}

/* ---- set-up ----------------------------------------------------------- */

int engine_loop_init(struct engine *e)
{
    struct loop *l = e->loop;
    e->hook = (struct loop_hook){
        .before_sleep = round_work,
        .may_sleep = round_may_sleep,
        .after_sleep = round_after_sleep,
        .ctx = e,
    };
    if (loop_timer_init(l, &e->tick, on_tick, e) < 0 ||
        loop_timer_init(l, &e->second, on_second, e) < 0 ||
        loop_timer_init(l, &e->batch, on_batch_done, e) < 0 ||
        loop_timer_init(l, &e->st.expiry, stream_expire, e) < 0 ||
        loop_timer_init(l, &e->scale.check, scale_check, e) < 0)
        return -1;
    return 0;
}

/* Once the pool starts: the tick and the sample run at once, the round
 * from the next iteration on. */
void engine_loop_start(struct engine *e)
{
    engine_sync_clock(e);
    loop_timer_arm(e->loop, &e->tick, e->now_ns);
    loop_timer_arm(e->loop, &e->second, e->now_ns);
    scale_restart(e);
    loop_hook_add(e->loop, &e->hook);
}

void engine_loop_fini(struct engine *e)
{
    loop_hook_remove(e->loop, &e->hook);
    struct loop_timer *timers[] = {&e->tick, &e->second, &e->batch, &e->st.expiry, &e->scale.check};
    for (size_t i = 0; i < sizeof(timers) / sizeof(timers[0]); i++)
        loop_timer_fini(e->loop, timers[i]);
}

/* The loop's iteration, for callers that drive the engine (tests, bench). */
void engine_turn(struct engine *e, int64_t wait_ns)
{
    loop_run(e->loop, wait_ns);
}
