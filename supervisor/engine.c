/* engine.c - the engine's front door and back door: jobs are accepted in
 * engine_submit() and leave, each exactly once, through engine_finish();
 * it owns the job pool (struct jobs) and the engine's life (new, start,
 * abandon, free). In between a job belongs to engine_queue.c and
 * engine_streams.c (queued) and engine_inflight.c (running); dispatch.c
 * moves it from one to the other, and engine_loop.c is the round that
 * moves them along, in the event loop. */
#include "supervisor/engine.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "shm/clock.h"
#include "shm/lock.h"
#include "supervisor/engine_impl.h"
#include "supervisor/engine_queue.h"
#include "supervisor/loop.h"
#include "supervisor/privs.h"

#define DEFAULT_TIMEOUT_MS 10000

static uint32_t next_pow2(uint32_t v)
{
    uint32_t p = 1;
    while (p < v)
        p <<= 1;
    return p;
}

/* Drain the eventfd a worker wrote to wake us; the work itself is found by
 * looking at the rings. */
static void on_wakeup(void *ctx, int events)
{
    struct engine *e = ctx;
    eventfd_t v;
    if (events > 0)
        eventfd_read(e->efd, &v);
}

static int make_segment(struct engine *e)
{
    struct seg_geometry g = {
        .max_workers = e->wconf.max,
        /* one slot more than the in-flight bound, for the exit message */
        .ring_cap = next_pow2(e->wconf.inflight + 1),
        .max_streams = e->sconf.max,
        .stream_slot_size = e->stream_slot_size,
        .slab_size = (uint64_t)e->limits.slab_mb << 20,
    };
    pid_t other = 0;
    char why[512];
    e->lock_fd = instance_lock(e->instance, &other, why, sizeof(why));
    if (e->lock_fd < 0) {
        if (errno == EEXIST)
            log_error("instance '%s' is already running as pid %d", e->instance, (int)other);
        else
            log_error("instance '%s': %s", e->instance, why);
        return -1;
    }
    if (seg_create(&e->seg, e->instance, &g, &other) < 0) {
        log_error("cannot create shared memory /dev/shm%s for instance '%s': %s", e->seg.name,
                  e->instance, strerror(errno));
        return -1;
    }
    if (other > 0)
        log_warn("replaced the stale segment /dev/shm%s of pid %d", e->seg.name, (int)other);
    else if (other < 0)
        log_warn("replaced a stale segment /dev/shm%s of unknown origin", e->seg.name);
    return 0;
}

struct engine *engine_new(const struct conf *c, struct loop *loop, const struct registry *reg)
{
    struct engine *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->registry = reg;
    e->wconf = c->workers;
    e->limits = c->limits;
    e->sconf = c->streams;
    snprintf(e->instance, sizeof(e->instance), "%s", c->instance);
    e->loop = loop;
    e->efd = -1;
    e->lock_fd = -1;
    e->accepting = true;
    e->pool.target = c->workers.min;
    e->pool.nslots = c->workers.max;
    scale_configure(e, &c->scaling);
    if ((c->user && privs_plan(c->user, &e->drop_privs, &e->uid, &e->gid) < 0) ||
        engine_loop_init(e) < 0) {
        engine_loop_fini(e);
        free(e);
        return NULL;
    }
    return e;
}

/* Only the supervisor's own group may read the segment once it runs as
 * the configured user; then drop before the first fork (see engine.h). */
static int drop_privileges(struct engine *e)
{
    if (!e->drop_privs)
        return 0;
    if (fchown(e->seg.fd, e->uid, e->gid) < 0) {
        log_error("cannot hand segment /dev/shm%s to uid %d: %s", e->seg.name, (int)e->uid,
                  strerror(errno));
        return -1;
    }
    return privs_drop(e->uid, e->gid);
}

/* The job pool: max_pending queued, plus a full ring per worker. */
static int jobs_init(struct engine *e)
{
    struct jobs *js = &e->jobs;
    js->n = (size_t)e->limits.max_pending + (size_t)e->pool.nslots * e->wconf.inflight;
    js->all = calloc(js->n, sizeof(*js->all));
    if (!js->all)
        return -1;
    TAILQ_INIT(&js->free);
    for (size_t i = js->n; i-- > 0;)
        TAILQ_INSERT_HEAD(&js->free, &js->all[i], link);
    queue_init(e);
    return 0;
}

int engine_start(struct engine *e)
{
    uint32_t slot_size = 0;
    for (unsigned k = 0; k < e->nkinds; k++)
        if (e->kinds[k].state_size > slot_size)
            slot_size = e->kinds[k].state_size;
    e->stream_slot_size = (slot_size + 63) & ~63u;
    if (make_segment(e) < 0 || engine_stats_start(e) < 0 || retry_start(e) < 0 ||
        drop_privileges(e) < 0)
        return -1;
    for (unsigned k = 0; k < e->nkinds; k++) {
        struct kind *kd = &e->kinds[k];
        if (kind_preload(kd->name, kd->handler, &kd->params, &kd->preloaded) < 0)
            return -1;
    }
    e->max_alloc = kinds_largest_alloc(e);
    if (slab_init(&e->slab, e->seg.slab, e->seg.hdr->slab_size, e->max_alloc) < 0) {
        log_error("limits.slab_mb (%u MiB) cannot hold a job of %zu bytes", e->limits.slab_mb,
                  kinds_largest_alloc(e));
        return -1;
    }
    e->seg.hdr->stream_slot_size = e->stream_slot_size;
    e->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (e->efd < 0 || jobs_init(e) < 0 || streams_init(e) < 0 || pool_init(e) < 0) {
        log_error("engine start: %s", strerror(errno));
        return -1;
    }
    e->efd_watch = loop_watch(e->loop, e->efd, POLLIN, true, on_wakeup, e);
    for (unsigned k = 0; k < e->nkinds; k++)
        engine_publish_kind(e, k);
    e->g.workers_min = e->wconf.min;
    e->g.workers_max = e->wconf.max;
    e->g.slab_size = slab_size(&e->slab);
    e->started = true;
    engine_loop_start(e);
    log_info(
        "instance '%s': segment /dev/shm%s is %.1f MiB (slab %.1f MiB, %u worker slots, %u stream "
        "slots of %u bytes)",
        e->instance, e->seg.name, (double)e->seg.size / 1048576.0,
        (double)slab_size(&e->slab) / 1048576.0, e->pool.nslots, e->sconf.max, e->stream_slot_size);
    for (unsigned i = 0; i < e->pool.target; i++)
        if (pool_spawn(e, engine_worker(e, i)) < 0)
            return -1;
    return 0;
}

static enum job_status refuse(struct engine *e, uint32_t kind, enum job_status why)
{
    e->g.refused[why]++;
    e->g_dirty = true;
    if (kind < e->nkinds) {
        struct stats_kind *ks = e->kinds[kind].stats;
        seqlock_write_begin(&ks->lock);
        ks->received++;
        ks->errors[why]++;
        seqlock_write_end(&ks->lock);
    }
    return why;
}

void engine_count_refusal(struct engine *e, uint32_t kind, enum job_status reason)
{
    /* Kinds have their stats blocks once the engine has started. */
    if ((unsigned)reason < JOB_STATUS_COUNT)
        refuse(e, e->started ? kind : UINT32_MAX, reason);
}

enum job_status engine_submit(struct engine *e, const struct engine_job *r, uint64_t *id)
{
    if (!e->started)
        return refuse(e, UINT32_MAX, JOB_E_SHUTDOWN);
    if (r->kind >= e->nkinds || !e->kinds[r->kind].handler)
        return refuse(e, r->kind, JOB_E_UNKNOWN_KIND);
    if (!e->accepting)
        return refuse(e, r->kind, JOB_E_SHUTDOWN);
    uint64_t out_cap = kind_out_capacity(&e->kinds[r->kind], r->len);
    if (r->out_max && r->out_max < out_cap)
        out_cap = r->out_max;
    if (r->len > kind_max_in(&e->kinds[r->kind], e->limits.max_payload) ||
        r->stream_len > ENGINE_STREAM_KEY_MAX || out_cap > e->max_alloc)
        return refuse(e, r->kind, JOB_E_TOO_LARGE);
    struct job *j = TAILQ_FIRST(&e->jobs.free);
    if (!j || engine_queued(e) >= e->limits.max_pending)
        return refuse(e, r->kind, JOB_E_OVERLOADED);
    /* Input and output together or not at all: a job that waited for its
     * output at dispatch could wait for memory only queued jobs hold. */
    uint64_t in = slab_alloc(&e->slab, r->len), out = slab_alloc(&e->slab, out_cap);
    struct stream *s = NULL;
    if (in == SLAB_NONE || out == SLAB_NONE ||
        (r->stream && !(s = stream_get(e, r->kind, r->stream, r->stream_len)))) {
        slab_free(&e->slab, in);
        slab_free(&e->slab, out);
        return refuse(e, r->kind, JOB_E_OVERLOADED);
    }
    TAILQ_REMOVE(&e->jobs.free, j, link);
    job_move(j, JOB_FREE, JOB_TAKEN);
    if (r->len) /* an empty MQTT payload comes as NULL */
        memcpy(slab_ptr(&e->slab, in), r->payload, r->len);
    /* A job submitted from a watch may be dispatched in this same round:
     * its start, stamped with e->now_ns, must not come before this. */
    uint64_t now = e->now_ns = mono_ns();
    *j = (struct job){
        .id = ++e->jobs.next_id,
        .state = JOB_TAKEN,
        .kind = r->kind,
        .prio = r->priority < PRIO_COUNT ? (uint8_t)r->priority : PRIO_NORMAL,
        .retries = r->retries,
        .retry_on = (uint8_t)(r->retry_on ? r->retry_on : RETRY_CRASHED | RETRY_TIMEOUT),
        .backoff_ms = r->backoff_ms,
        .backoff_max_ms = r->backoff_max_ms,
        .timeout_ns = (uint64_t)(r->timeout_ms ? r->timeout_ms : DEFAULT_TIMEOUT_MS) * 1000000,
        .deadline_ns = r->deadline_ms ? now + (uint64_t)r->deadline_ms * 1000000 : 0,
        .accepted_ns = now,
        .in_off = in,
        .in_len = (uint32_t)r->len,
        .out_off = out,
        .out_cap = (uint32_t)out_cap,
        .meta = r->meta,
        .stream = s,
        .worker = -1,
        .done = r->done,
        .describe = r->describe,
        .ctx = r->ctx,
    };
    e->jobs.outstanding++;
    engine_wake_at(e, now + TICK_BUSY_NS);
    e->g.accepted++;
    e->g_dirty = true;
    struct stats_kind *ks = e->kinds[r->kind].stats;
    seqlock_write_begin(&ks->lock);
    ks->received++;
    seqlock_write_end(&ks->lock);
    if (s)
        stream_enter(e, s, j);
    else
        queue_push(e, j, false);
    if (id)
        *id = j->id;
    return JOB_OK;
}

/* How long the daemon has held J. now_ns is read when a round starts, but a
 * job is stamped by its own clock read when accepted: one accepted by this
 * round's events and answered in it (its route removed by a reload, say) is
 * newer than now_ns, and only a fresh read is then later than its stamp. */
static uint64_t held_ns(const struct engine *e, const struct job *j)
{
    uint64_t now = e->now_ns >= j->accepted_ns ? e->now_ns : mono_ns();
    return now - j->accepted_ns;
}

static void count_outcome(struct engine *e, const struct job *j, enum job_status st,
                          uint64_t run_ns)
{
    struct stats_kind *ks = e->kinds[j->kind].stats;
    bool ok = st == JOB_OK || st == JOB_FILTERED;
    if (st == JOB_OK)
        e->g.completed++;
    else if (st == JOB_FILTERED)
        e->g.filtered++;
    else
        e->g.failed++;
    if (st == JOB_E_QUARANTINED)
        e->g.quarantined++;
    else if (st == JOB_E_EXPIRED)
        e->g.expired++;
    else if (st == JOB_E_SHUTDOWN)
        e->g.abandoned++;
    e->g_dirty = true;
    seqlock_write_begin(&ks->lock);
    if (ok) {
        ks->completed++;
    } else {
        ks->failed++;
        ks->errors[st]++;
    }
    /* Only a worker answers with these: then the job ran, however briefly. */
    bool ran = st == JOB_OK || st == JOB_FILTERED || st == JOB_E_BAD_INPUT || st == JOB_E_FAILED;
    if (j->started_ns)
        stats_hist_add(&ks->wait, j->started_ns - j->accepted_ns);
    if (ran)
        stats_hist_add(&ks->run, run_ns);
    stats_hist_add(&ks->total, held_ns(e, j));
    seqlock_write_end(&ks->lock);
    if (ran)
        stats_hist_add(&e->scale.run, run_ns);
}

/* The single exit of every accepted job. */
void engine_finish(struct engine *e, struct job *j, enum job_status st, const void *data,
                   size_t len, uint64_t run_ns)
{
    job_move(j, JOB_TAKEN, JOB_FREE); /* a second outcome aborts here */
    struct engine_outcome o = {
        .id = j->id,
        .status = st,
        .data = data,
        .len = len,
        .attempts = j->attempts,
        .tries = j->tries,
        .wait_ns = j->started_ns ? j->started_ns - j->accepted_ns : 0,
        .run_ns = run_ns,
    };
    count_outcome(e, j, st, run_ns);
    if (j->tries)
        retry_count_outcome(e, j, st);
    if (j->done)
        j->done(j->ctx, &o);
    /* Released only now: the result lives in the slab during the callback. */
    slab_free(&e->slab, j->in_off);
    slab_free(&e->slab, j->out_off);
    if (j->stream)
        stream_release_job(e, j);
    TAILQ_INSERT_HEAD(&e->jobs.free, j, link);
    e->jobs.outstanding--;
}

void engine_finishf(struct engine *e, struct job *j, enum job_status st, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    engine_finish(e, j, st, msg, (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1, 0);
}

size_t engine_outstanding(const struct engine *e)
{
    return e->jobs.outstanding;
}

unsigned engine_live_workers(const struct engine *e)
{
    unsigned n = 0;
    for (unsigned i = 0; i < e->pool.nslots; i++)
        n += pool_takes_jobs(&e->pool.workers[i]);
    return n;
}

unsigned engine_target(const struct engine *e)
{
    return e->pool.target;
}

unsigned engine_set_target(struct engine *e, unsigned target)
{
    return pool_set_target(e, target);
}

unsigned engine_scale_manual(struct engine *e, int delta, const char *who)
{
    return scale_manual(e, delta, who);
}

void engine_stop_accepting(struct engine *e)
{
    e->accepting = false;
}

size_t engine_abandon(struct engine *e)
{
    size_t total = e->jobs.outstanding, retrying = e->rq.n;
    size_t running = total - engine_queued(e) - retrying;
    e->accepting = false;
    pool_shutdown(e);
    queue_abandon(e);
    retry_abandon(e);
    if (total)
        log_warn("abandoned %zu jobs (%zu running, %zu queued, %zu waiting for a retry): answered "
                 "with a shutdown error",
                 total, running, total - running - retrying, retrying);
    if (e->started) {
        pool_count(e);
        engine_publish(e);
    }
    return total;
}

unsigned engine_stale_workers(const struct engine *e)
{
    unsigned n = 0;
    for (unsigned i = 0; i < e->pool.nslots && e->pool.workers; i++)
        n += e->pool.workers[i].pid > 0 && e->pool.workers[i].kinds_gen < e->kinds_gen;
    return n;
}

void engine_free(struct engine *e)
{
    if (!e)
        return;
    if (e->started)
        engine_abandon(e);
    engine_loop_fini(e);
    retry_fini(e);
    if (e->efd_watch)
        loop_cancel(e->loop, e->efd_watch);
    loop_run(e->loop, 0);
    if (e->efd >= 0)
        close(e->efd);
    pool_free(e);
    streams_free(e);
    free(e->jobs.all);
    for (unsigned k = 0; k < e->nkinds; k++)
        kind_undefine(e, k);
    if (e->started) {
        slab_destroy(&e->slab);
        seg_close(&e->seg, true);
    }
    if (e->lock_fd >= 0)
        close(e->lock_fd);
    free(e);
}

const struct stats_global *engine_stats(const struct engine *e)
{
    return &e->g;
}

struct segment *engine_segment(struct engine *e)
{
    return &e->seg;
}

int engine_worker_pid(const struct engine *e, unsigned slot)
{
    return slot < e->pool.nslots && e->pool.workers ? e->pool.workers[slot].pid : 0;
}
