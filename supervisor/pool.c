/* pool.c - the worker processes and their slots (struct pool): fork them,
 * take their answers, notice their deaths, respawn them with backoff, keep
 * their number at the target, recycle them. A worker's death is reported
 * by the kernel through its pidfd (doc/DESIGN.md, principle 8); the jobs it
 * held are engine_inflight.c's. A hung job is caught by its timeout: the
 * worker is killed and the job treated as if it had crashed it. */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "shm/clock.h"
#include "shm/procstat.h"
#include "shm/statblock.h"
#include "supervisor/engine_inflight.h"
#include "supervisor/loop.h"

#define WORKER_SPIN_NS   50000
#define BACKOFF_FIRST_NS UINT64_C(10000000) /* second crash in a row: wait 10 ms, then double */

static void on_worker_exit(void *ctx, int events);

int pool_init(struct engine *e)
{
    e->pool.workers = calloc(e->pool.nslots, sizeof(*e->pool.workers));
    if (!e->pool.workers)
        return -1;
    for (unsigned i = 0; i < e->pool.nslots; i++) {
        struct worker *w = &e->pool.workers[i];
        w->engine = e;
        w->slot = i;
        w->pidfd = -1;
        TAILQ_INIT(&w->inflight);
    }
    return 0;
}

void pool_free(struct engine *e)
{
    free(e->pool.workers);
    e->pool.workers = NULL;
}

bool pool_takes_jobs(const struct worker *w)
{
    return (w->state == WORKER_IDLE || w->state == WORKER_BUSY) && !w->killed;
}

void pool_publish_worker(struct engine *e, struct worker *w)
{
    struct stats_worker *s = &e->seg.workers_stats[w->slot];
    seqlock_write_begin(&s->lock);
    s->pid = w->pid;
    s->state = w->state;
    s->generation = w->generation;
    s->inflight = w->ninflight;
    s->started_ns = w->spawned_ns;
    s->respawns = w->respawns;
    s->backoff_ms = w->backoff_ns / 1000000;
    seqlock_write_end(&s->lock);
}

void pool_count(struct engine *e)
{
    unsigned live = 0, busy = 0, idle = 0;
    for (unsigned i = 0; i < e->pool.nslots; i++) {
        const struct worker *w = &e->pool.workers[i];
        if (w->pid <= 0 || w->state == WORKER_STARTING)
            continue;
        live++;
        busy += w->ninflight > 0;
        idle += w->ninflight == 0;
    }
    /* Published with this round, not at the next 1 s sample: a reader
     * waiting for workers to be busy must be able to see it. */
    if (live != e->g.workers_live || busy != e->g.workers_busy || idle != e->g.workers_idle)
        e->g_dirty = true;
    e->g.workers_live = live;
    e->g.workers_busy = busy;
    e->g.workers_idle = idle;
}

/* A slot's rings and control word start clean for each new worker: a dead
 * worker can only have wedged its own pair (doc/DESIGN.md, principle 2). */
static void reset_slot(struct engine *e, struct worker *w)
{
    uint32_t cap = e->seg.hdr->ring_cap;
    ring_reset(seg_job_ring(&e->seg, w->slot));
    ring_reset(seg_result_ring(&e->seg, w->slot));
    ring_attach(&w->jobs, seg_job_ring(&e->seg, w->slot), cap, sizeof(struct job_desc), true);
    ring_attach(&w->results, seg_result_ring(&e->seg, w->slot), cap, sizeof(struct result_desc),
                false);
    struct seg_worker_ctl *ctl = seg_worker_ctl(&e->seg, w->slot);
    atomic_store(&ctl->ready, 0);
    atomic_store(&ctl->initializing, 0);
    ctl->generation = ++w->generation;
    stats_blocks_unwedge_slot(&e->seg, w->slot); /* the dead one may have died mid-update */
    struct stats_worker *s = &e->seg.workers_stats[w->slot];
    seqlock_unwedge(&s->self_lock); /* else this round would leave it odd */
    seqlock_write_begin(&s->self_lock);
    s->cur_start_ns = 0;
    s->jobs_done = 0;
    s->failures = 0;
    seqlock_write_end(&s->self_lock);
    w->killed = DEATH_NONE;
    w->exit_sent = false;
    w->jobs_sent = 0;
    assert(w->ninflight == 0 && TAILQ_EMPTY(&w->inflight)); /* engine_inflight.c emptied it */
}

static void fork_worker(struct engine *e, struct worker *w)
{
    struct worker_kind kinds[SEG_MAX_KINDS];
    for (unsigned k = 0; k < e->nkinds; k++) { /* NULL handler: removed, or set aside */
        const struct mqfork_handler *h = e->kinds[k].failing ? NULL : e->kinds[k].handler;
        char *figures = engine_handler_figures(e, h, w->slot);
        kinds[k] = (struct worker_kind){
            .handler = h,
            .params = &e->kinds[k].params,
            .preloaded = e->kinds[k].preloaded,
            .counters = figures && h->ncounters ? (uint64_t *)figures : NULL,
            .histograms =
                figures && h->nhistograms ? figures + engine_handler_hist_offset(h) : NULL};
    }
    struct worker_args args = {
        .seg = &e->seg,
        .slot = w->slot,
        .generation = w->generation,
        .efd = e->efd,
        .kinds = kinds,
        .nkinds = e->nkinds,
        .spin_ns = WORKER_SPIN_NS,
    };
    worker_main(&args);
}

int pool_spawn(struct engine *e, struct worker *w)
{
    reset_slot(e, w);
    pid_t pid = fork();
    if (pid < 0) {
        log_error("worker %u: fork failed: %s", w->slot, strerror(errno));
        return -1;
    }
    if (pid == 0)
        fork_worker(e, w);
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0) {
        log_error("worker %u: pidfd_open failed: %s", w->slot, strerror(errno));
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    w->pid = pid;
    w->pidfd = pidfd;
    w->kinds_gen = e->kinds_gen;
    w->watch = loop_watch(e->loop, pidfd, POLLIN, false, on_worker_exit, w);
    w->state = WORKER_STARTING;
    w->spawned_ns = mono_ns();
    w->ready_ns = 0;
    e->g.spawned++;
    e->g_dirty = true;
    pool_publish_worker(e, w);
    log_debug("worker %u: started as pid %d", w->slot, (int)pid);
    return 0;
}

void pool_kill(struct engine *e, struct worker *w, enum death_cause why)
{
    if (w->killed || w->pid <= 0)
        return;
    w->killed = why;
    kill(w->pid, SIGKILL);
    if (why == DEATH_TIMEOUT) {
        e->g.timed_out++;
        e->g.killed_timeout++;
        e->g_dirty = true;
    }
}

/* Ask W to exit once it has answered what it holds (recycling, retiring). */
void pool_drain(struct engine *e, struct worker *w)
{
    if (w->exit_sent || w->killed || w->pid <= 0)
        return;
    struct job_desc d = {.kind = WORKER_EXIT_KIND};
    if (!ring_push(&w->jobs, &d)) {
        pool_kill(e, w, DEATH_WILD);
        return;
    }
    ring_wake(&w->jobs);
    w->exit_sent = true;
    w->state = WORKER_DRAINING;
    pool_publish_worker(e, w);
}

void pool_retire(struct engine *e, struct worker *w)
{
    w->retiring = true;
    if (w->state == WORKER_STARTING || w->state == WORKER_BACKOFF) {
        pool_kill(e, w, DEATH_RETIRED);
        if (w->state == WORKER_BACKOFF) {
            w->state = WORKER_EMPTY;
            w->retiring = false;
            pool_publish_worker(e, w);
        }
        return;
    }
    pool_drain(e, w);
}

/* One answer from W. Anything that does not fit what we sent marks the
 * worker wild: it is killed and its jobs handled as after a crash. */
static void on_result(struct engine *e, struct worker *w, const struct result_desc *r)
{
    struct job *j = TAILQ_FIRST(&w->inflight);
    if (!j || r->id != j->id || r->status > JOB_E_FAILED || r->out_len > j->out_cap) {
        e->g.late_results++;
        log_warn("worker %u (pid %d) answered a job it was not running; killing it", w->slot,
                 (int)w->pid);
        pool_kill(e, w, DEATH_WILD);
        return;
    }
    inflight_take_head(e, w);
    /* The worker's own figure, bounded by what it could have been: a job
     * runs no longer than its timeout before its worker is killed. */
    uint64_t run_ns = r->run_ns < j->timeout_ns ? r->run_ns : j->timeout_ns;
    kind_measured(&e->kinds[j->kind], run_ns);
    if (!w->ninflight && w->state == WORKER_BUSY) {
        w->state = WORKER_IDLE;
        pool_publish_worker(e, w);
    }
    const void *out = slab_ptr(&e->slab, j->out_off);
    if (r->status == JOB_E_FAILED)
        retry_or_answer(e, j, TRY_FAILED, JOB_E_FAILED, out, r->out_len, run_ns);
    else
        engine_finish(e, j, (enum job_status)r->status, out, r->out_len, run_ns);
}

static bool collect_worker(struct engine *e, struct worker *w)
{
    struct result_desc r;
    bool any = false;
    int rc;
    while (!w->killed && (rc = ring_pop(&w->results, &r)) != 0) {
        if (rc < 0) {
            log_warn("worker %u (pid %d) corrupted its result ring; killing it", w->slot,
                     (int)w->pid);
            pool_kill(e, w, DEATH_WILD);
            break;
        }
        on_result(e, w, &r);
        any = true;
    }
    return any;
}

bool pool_collect(struct engine *e)
{
    bool any = false;
    for (unsigned i = 0; i < e->pool.nslots; i++) {
        struct worker *w = &e->pool.workers[i];
        if (w->pid <= 0)
            continue;
        if (w->state == WORKER_STARTING) {
            if (!atomic_load(&seg_worker_ctl(&e->seg, i)->ready))
                continue;
            w->state = w->retiring ? WORKER_DRAINING : WORKER_IDLE;
            w->ready_ns = e->now_ns;
            kinds_started(e);
            pool_publish_worker(e, w);
            log_debug("worker %u: ready after %.1f ms", i,
                      (double)(e->now_ns - w->spawned_ns) / 1e6);
            any = true;
        }
        any |= collect_worker(e, w);
    }
    return any;
}

/* ---- deaths ----------------------------------------------------------- */

static void record_crash(struct engine *e, struct worker *w, const siginfo_t *si)
{
    struct stats_events *ev = e->seg.events;
    const struct job *j = TAILQ_FIRST(&w->inflight);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    seqlock_write_begin(&ev->lock);
    struct stats_crash *c = &ev->crash[ev->crashes % STATS_RING_LEN];
    c->time_ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
    c->slot = w->slot;
    c->pid = w->pid;
    c->signal = si->si_code == CLD_EXITED ? 0 : si->si_status;
    c->exit_code = si->si_code == CLD_EXITED ? si->si_status : 0;
    snprintf(c->kind, sizeof(c->kind), "%s", j ? e->kinds[j->kind].name : "");
    ev->crashes++;
    seqlock_write_end(&ev->lock);
}

static void describe_death(const struct worker *w, const siginfo_t *si, const struct engine *e,
                           char *buf, size_t len)
{
    const struct job *j = TAILQ_FIRST(&w->inflight);
    if (w->killed == DEATH_TIMEOUT && j)
        snprintf(buf, len, "timeout: ran past %" PRIu64 " ms", j->timeout_ns / 1000000);
    else if (w->killed == DEATH_WILD)
        snprintf(buf, len, "crashed: worker broke the ring protocol");
    else if (si->si_code == CLD_EXITED && si->si_status == WORKER_EXIT_SETUP)
        snprintf(buf, len, "crashed: handler set-up failed");
    else if (si->si_code == CLD_EXITED)
        snprintf(buf, len, "crashed: exit %d", si->si_status);
    else
        snprintf(buf, len, "crashed: signal %d", si->si_status);
    (void)e;
}

/* A worker that died while it ran a handler's init() blames that handler
 * (it says whose init runs in its control area; read it only while the
 * worker was starting, since a wild worker could write anything there). */
static void blame_init(struct engine *e, struct worker *w, const char *how)
{
    uint32_t k = atomic_load(&seg_worker_ctl(&e->seg, w->slot)->initializing);
    if (w->state == WORKER_STARTING && !w->killed && k > 0 && k <= e->nkinds)
        kind_init_died(e, k - 1, how);
}

/* When W's slot may fork again: at once after a worker that lived a while,
 * with a doubling delay while the slot keeps dying young. */
static void schedule_respawn(struct engine *e, struct worker *w, bool crashed)
{
    uint64_t lived = e->now_ns - w->spawned_ns;
    if (!crashed || lived >= (uint64_t)(e->wconf.stable_s * 1e9))
        w->crash_streak = 0;
    if (crashed)
        w->crash_streak++;
    uint64_t cap = (uint64_t)(e->wconf.backoff_max_s * 1e9);
    uint64_t delay = 0;
    if (w->crash_streak > 1) {
        unsigned shift = w->crash_streak - 2 < 30 ? w->crash_streak - 2 : 30;
        delay = BACKOFF_FIRST_NS << shift;
        if (delay > cap)
            delay = cap;
    }
    w->backoff_ns = delay;
    w->respawns++;
    if (delay == 0) {
        if (pool_spawn(e, w) == 0)
            return;
        delay = BACKOFF_FIRST_NS;
    }
    log_warn("worker %u keeps dying (%u in a row): next start in %" PRIu64 " ms", w->slot,
             w->crash_streak, delay / 1000000);
    w->state = WORKER_BACKOFF;
    w->respawn_at_ns = e->now_ns + delay;
    engine_wake_at(e, w->respawn_at_ns);
    pool_publish_worker(e, w);
}

static void reap(struct engine *e, struct worker *w)
{
    siginfo_t si = {0};
    if (waitid(P_PIDFD, (id_t)w->pidfd, &si, WEXITED) < 0) {
        log_error("worker %u: waitid: %s", w->slot, strerror(errno));
        return;
    }
    close(w->pidfd);
    w->pidfd = -1;
    engine_read_clock(e);
    /* Answers it pushed before it died are good, unless we had given up on it. */
    if (!w->killed)
        collect_worker(e, w);
    else
        e->g.late_results += ring_has_data(&w->results);
    bool clean = w->exit_sent && !w->killed && si.si_code == CLD_EXITED && si.si_status == 0 &&
                 w->ninflight == 0;
    char reason[96] = "";
    /* A worker retired before it was ready was killed by us: no crash. */
    if (!clean && w->killed == DEATH_RETIRED) {
        log_debug("worker %u (pid %d) retired before it was ready", w->slot, (int)w->pid);
    } else if (!clean) {
        describe_death(w, &si, e, reason, sizeof(reason));
        blame_init(e, w, reason);
        if (w->killed != DEATH_TIMEOUT && w->killed != DEATH_RETIRED)
            e->g.crashed++;
        record_crash(e, w, &si);
        char label[512] = "";
        const struct job *running = TAILQ_FIRST(&w->inflight);
        if (running)
            job_label(e, running, label, sizeof(label));
        log_warn("worker %u (pid %d) %s%s%s%s", w->slot, (int)w->pid, reason,
                 running ? " running " : "", label,
                 running ? "; its jobs go to other workers" : "");
    }
    inflight_rescue(e, w, clean || w->killed == DEATH_RETIRED ? NULL : reason);
    w->pid = 0;
    e->g_dirty = true;
    if (w->retiring) {
        w->retiring = false;
        w->state = WORKER_EMPTY;
        pool_publish_worker(e, w);
        return;
    }
    if (clean)
        e->g.recycled++;
    schedule_respawn(e, w, !clean);
}

static void on_worker_exit(void *ctx, int events)
{
    struct worker *w = ctx;
    w->watch = NULL; /* a one-shot watch is gone once it fired */
    if (w->pidfd >= 0)
        reap(w->engine, w);
}

/* ---- timers ----------------------------------------------------------- */

static unsigned workers_in_use(const struct engine *e)
{
    unsigned used = 0;
    for (unsigned i = 0; i < e->pool.nslots; i++)
        used += e->pool.workers[i].state != WORKER_EMPTY && !e->pool.workers[i].retiring;
    return used;
}

/* Keep the number of workers in use at the target: fork into empty slots,
 * and retire surplus workers from the top - only ones holding no job, so a
 * scale-down never interrupts or delays work; a busy surplus worker is
 * retired at a later tick, once it is idle. */
static void fill_to_target(struct engine *e)
{
    unsigned used = workers_in_use(e);
    for (unsigned i = 0; i < e->pool.nslots && used < e->pool.target; i++) {
        struct worker *w = &e->pool.workers[i];
        if (w->state == WORKER_EMPTY && w->pid <= 0 && pool_spawn(e, w) == 0)
            used++;
    }
    for (unsigned i = e->pool.nslots; i-- > 0 && used > e->pool.target;) {
        struct worker *w = &e->pool.workers[i];
        if (w->state == WORKER_EMPTY || w->retiring || w->ninflight)
            continue;
        pool_retire(e, w);
        used--;
    }
}

/* After a reload changed the kind table, replace workers holding the old
 * one: each answers what it holds and exits, and is forked again with the
 * new table. At most half the pool (at least one) is out at a time, so the
 * jobs of kept routes keep flowing. */
static void recycle_stale(struct engine *e)
{
    unsigned out = 0, stale = 0;
    for (unsigned i = 0; i < e->pool.nslots; i++) {
        const struct worker *w = &e->pool.workers[i];
        if (w->pid <= 0)
            continue;
        out += w->state == WORKER_STARTING || w->state == WORKER_DRAINING;
        stale += w->kinds_gen < e->kinds_gen && pool_takes_jobs(w) && !w->exit_sent;
    }
    unsigned limit = e->pool.target / 2 ? e->pool.target / 2 : 1;
    for (unsigned i = e->pool.nslots; i-- > 0 && stale && out < limit;) {
        struct worker *w = &e->pool.workers[i];
        if (w->pid <= 0 || w->kinds_gen >= e->kinds_gen || !pool_takes_jobs(w) || w->exit_sent)
            continue;
        pool_drain(e, w);
        out++;
        stale--;
    }
}

void pool_tick(struct engine *e)
{
    for (unsigned i = 0; i < e->pool.nslots; i++) {
        struct worker *w = &e->pool.workers[i];
        if (w->state == WORKER_BACKOFF && e->now_ns >= w->respawn_at_ns) {
            if (pool_spawn(e, w) < 0)
                w->respawn_at_ns = e->now_ns + BACKOFF_FIRST_NS;
            continue;
        }
        const struct job *head = TAILQ_FIRST(&w->inflight);
        if (head && !w->killed && e->now_ns - w->head_started_ns > head->timeout_ns) {
            char label[512];
            log_warn("worker %u (pid %d): %s ran past its %" PRIu64
                     " ms timeout; killing the worker",
                     w->slot, (int)w->pid, job_label(e, head, label, sizeof(label)),
                     head->timeout_ns / 1000000);
            pool_kill(e, w, DEATH_TIMEOUT);
        }
    }
    fill_to_target(e);
    recycle_stale(e);
}

/* CPU and memory of each worker, as the kernel counts them: /proc is
 * trusted, a worker's word about itself is not. */
static void sample_worker(struct engine *e, struct worker *w)
{
    struct procstat ps;
    if (procstat_read(w->pid, &ps) < 0)
        return;
    long hz = sysconf(_SC_CLK_TCK);
    uint64_t ticks = ps.cpu_ticks;
    uint64_t dt = e->now_ns - w->cpu_sampled_ns;
    uint32_t permille = 0;
    if (w->cpu_sampled_ns && dt && ticks >= w->cpu_ticks)
        permille = (uint32_t)((ticks - w->cpu_ticks) * 1000000000000ull / (uint64_t)hz / dt);
    w->cpu_ticks = ticks;
    w->cpu_sampled_ns = e->now_ns;
    uint64_t rss_kb = ps.rss_kb;

    struct stats_worker *s = &e->seg.workers_stats[w->slot];
    seqlock_write_begin(&s->lock);
    s->cpu_permille = permille;
    s->rss_kb = rss_kb;
    s->cpu_ns = ticks * (1000000000ull / (uint64_t)hz);
    s->inflight = w->ninflight;
    seqlock_write_end(&s->lock);

    if (e->wconf.max_rss_mb && rss_kb > (uint64_t)e->wconf.max_rss_mb * 1024 && !w->exit_sent) {
        log_info("worker %u (pid %d) uses %" PRIu64 " MiB, above workers.max_rss_mb: recycling it",
                 w->slot, (int)w->pid, rss_kb / 1024);
        pool_drain(e, w);
    }
}

void pool_sample(struct engine *e)
{
    for (unsigned i = 0; i < e->pool.nslots; i++) {
        struct worker *w = &e->pool.workers[i];
        if (w->pid > 0 && w->state != WORKER_STARTING)
            sample_worker(e, w);
    }
}

/* ---- scaling and shutdown --------------------------------------------- */

unsigned pool_set_target(struct engine *e, unsigned target)
{
    if (target < e->wconf.min)
        target = e->wconf.min;
    if (target > e->wconf.max)
        target = e->wconf.max;
    e->pool.target = target;
    fill_to_target(e);
    e->g_dirty = true;
    return target;
}

/* Kill every worker and wait for it; what it held is abandoned. */
void pool_shutdown(struct engine *e)
{
    for (unsigned i = 0; i < e->pool.nslots; i++) {
        struct worker *w = &e->pool.workers[i];
        if (w->pid > 0)
            kill(w->pid, SIGKILL);
    }
    for (unsigned i = 0; i < e->pool.nslots; i++) {
        struct worker *w = &e->pool.workers[i];
        if (w->watch) {
            loop_cancel(e->loop, w->watch);
            w->watch = NULL;
        }
        if (w->pidfd >= 0) {
            siginfo_t si;
            waitid(P_PIDFD, (id_t)w->pidfd, &si, WEXITED);
            close(w->pidfd);
            w->pidfd = -1;
        }
        inflight_abandon(e, w);
        w->pid = 0;
        w->state = WORKER_EMPTY;
        pool_publish_worker(e, w);
    }
}
