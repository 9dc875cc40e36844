/* dispatch.c - where accepted jobs wait and how they are handed out.
 *
 * Jobs wait in three FIFO queues, one per priority, served high first. A job
 * of a stream waits on its stream instead while another job of the same
 * stream is pending or running, so a stream has one job out at a time, in
 * arrival order. dispatch() gives each job at the head of a queue to the
 * worker with the least outstanding work, measured in expected run time,
 * and stops handing a worker more once that passes workers.inflight_us or
 * workers.inflight jobs: a slow job then holds up only its own worker. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "supervisor/engine_impl.h"
#include "supervisor/log.h"

#define EXPIRE_SWEEP_NS 50000000 /* look for expired pending jobs this often */
#define SKIP_MAX        64       /* jobs passed over per queue while a reload recycles */

static size_t next_pow2(size_t v)
{
    size_t p = 1;
    while (p < v)
        p <<= 1;
    return p;
}

int dispatch_init(struct engine *e)
{
    e->njobs = (size_t)e->limits.max_pending + (size_t)e->nslots * e->wconf.inflight;
    e->jobs = calloc(e->njobs, sizeof(*e->jobs));
    e->streams = calloc(e->sconf.max, sizeof(*e->streams));
    e->nbuckets = next_pow2((size_t)e->sconf.max * 2);
    e->buckets = calloc(e->nbuckets, sizeof(*e->buckets));
    if (!e->jobs || !e->streams || !e->buckets)
        return -1;
    TAILQ_INIT(&e->free_jobs);
    for (size_t i = e->njobs; i-- > 0;)
        TAILQ_INSERT_HEAD(&e->free_jobs, &e->jobs[i], link);
    for (int p = 0; p < PRIO_COUNT; p++)
        TAILQ_INIT(&e->pending[p]);
    TAILQ_INIT(&e->idle_streams);
    TAILQ_INIT(&e->spare_streams);
    TAILQ_INIT(&e->free_streams);
    for (uint32_t i = e->sconf.max; i-- > 0;) {
        e->streams[i].slot = i;
        TAILQ_INSERT_HEAD(&e->free_streams, &e->streams[i], lru);
    }
    return 0;
}

void dispatch_free(struct engine *e)
{
    free(e->jobs);
    free(e->streams);
    free(e->buckets);
    e->jobs = NULL;
    e->streams = NULL;
    e->buckets = NULL;
}

/* ---- streams ---------------------------------------------------------- */

static uint64_t stream_hash(uint32_t kind, const void *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull ^ kind; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= ((const uint8_t *)key)[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static bool stream_idle(const struct stream *s)
{
    return !s->active && TAILQ_EMPTY(&s->waiting);
}

/* Whether idle stream S holds state its next job needs: forgetting it
 * before it expires would hand that job a reset codec, silently. */
static bool stream_holds_state(const struct engine *e, const struct stream *s)
{
    return e->kinds[s->kind].state_size > 0 && !s->fresh;
}

/* The idle list S is on: streams that hold state wait there for
 * streams.idle_s; spare ones (nothing to lose) may be evicted for room. */
static struct stream_list *idle_list(struct engine *e, const struct stream *s)
{
    return s->spare ? &e->spare_streams : &e->idle_streams;
}

/* When idle stream S is forgotten, unless a job comes for it first. */
static uint64_t idle_until(const struct engine *e, const struct stream *s)
{
    return s->last_used_ns + (uint64_t)(e->sconf.idle_s * 1e9);
}

static void stream_unlink(struct engine *e, struct stream *s)
{
    struct stream **pp = &e->buckets[s->hash & (e->nbuckets - 1)];
    while (*pp && *pp != s)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = s->hnext;
    TAILQ_REMOVE(idle_list(e, s), s, lru);
    s->in_use = false;
    TAILQ_INSERT_HEAD(&e->free_streams, s, lru);
    e->g.streams_live--;
}

static struct stream *stream_new(struct engine *e, uint32_t kind, uint64_t hash, const void *key,
                                 size_t len)
{
    struct stream *s = TAILQ_FIRST(&e->free_streams);
    if (!s) {
        /* Full: the least recently used idle stream with no state to lose
         * makes room. Streams that hold state keep it until they expire, and
         * the new stream is refused instead (issue #9, finding 6). */
        s = TAILQ_FIRST(&e->spare_streams);
        if (!s) {
            e->g.stream_refusals++;
            return NULL;
        }
        stream_unlink(e, s);
        e->g.stream_evictions++;
    }
    TAILQ_REMOVE(&e->free_streams, s, lru);
    s->in_use = true;
    s->hash = hash;
    s->kind = kind;
    s->klen = (uint32_t)len;
    memcpy(s->key, key, len);
    s->fresh = true;
    s->active = NULL;
    TAILQ_INIT(&s->waiting);
    struct stream **b = &e->buckets[hash & (e->nbuckets - 1)];
    s->hnext = *b;
    *b = s;
    e->g.streams_live++;
    return s;
}

struct stream *stream_get(struct engine *e, uint32_t kind, const void *key, size_t len)
{
    uint64_t h = stream_hash(kind, key, len);
    for (struct stream *s = e->buckets[h & (e->nbuckets - 1)]; s; s = s->hnext) {
        if (s->hash == h && s->kind == kind && s->klen == len && memcmp(s->key, key, len) == 0) {
            if (stream_idle(s))
                TAILQ_REMOVE(idle_list(e, s), s, lru);
            return s;
        }
    }
    return stream_new(e, kind, h, key, len);
}

/* J, its stream's active job, is answered: the stream's next job may go. */
void stream_release_job(struct engine *e, struct job *j)
{
    struct stream *s = j->stream;
    if (s->active != j)
        return;
    struct job *next = TAILQ_FIRST(&s->waiting);
    if (next) {
        TAILQ_REMOVE(&s->waiting, next, link);
        s->active = next;
        pending_push(e, next, false);
        return;
    }
    s->active = NULL;
    s->last_used_ns = e->now_ns;
    s->spare = !stream_holds_state(e, s);
    TAILQ_INSERT_TAIL(idle_list(e, s), s, lru);
    /* The newest idle stream: a timer armed already is for an older one. */
    loop_timer_arm_by(e->loop, &e->stream_idle, idle_until(e, s));
}

/* Forget the streams of idle list L idle longer than streams.idle_s; the
 * least recently used one left, or NULL. */
static struct stream *expire_list(struct engine *e, struct stream_list *l)
{
    struct stream *s;
    while ((s = TAILQ_FIRST(l)) && idle_until(e, s) <= e->now_ns)
        stream_unlink(e, s);
    return s;
}

/* Forget streams idle longer than streams.idle_s; their state goes with
 * them. Then wait for the least recently used one left. */
void stream_expire(void *engine)
{
    struct engine *e = engine_of_timer(engine);
    struct stream *s = expire_list(e, &e->idle_streams);
    struct stream *spare = expire_list(e, &e->spare_streams);
    if (spare && (!s || spare->last_used_ns < s->last_used_ns))
        s = spare;
    if (s)
        loop_timer_arm(e->loop, &e->stream_idle, idle_until(e, s));
}

/* A reload redefined KIND: its streams' state belongs to the old handler.
 * Idle streams are forgotten when DROP (the index gets a new route); the
 * others start fresh with their next job. */
void stream_forget_kind(struct engine *e, uint32_t kind, bool drop)
{
    for (uint32_t i = 0; i < e->sconf.max; i++) {
        struct stream *s = &e->streams[i];
        if (!s->in_use || s->kind != kind)
            continue;
        if (drop && stream_idle(s)) {
            stream_unlink(e, s);
            continue;
        }
        s->fresh = true;
        if (stream_idle(s) && !s->spare) {
            /* Nothing to lose any more: it may make room. Its place at the
             * tail only delays its own expiry, by at most streams.idle_s. */
            TAILQ_REMOVE(&e->idle_streams, s, lru);
            s->spare = true;
            TAILQ_INSERT_TAIL(&e->spare_streams, s, lru);
        }
    }
}

/* ---- pending queues --------------------------------------------------- */

void pending_push(struct engine *e, struct job *j, bool front)
{
    if (front)
        TAILQ_INSERT_HEAD(&e->pending[j->prio], j, link);
    else
        TAILQ_INSERT_TAIL(&e->pending[j->prio], j, link);
    j->where = JOB_PENDING;
    e->g.pending[j->prio]++;
}

void pending_remove(struct engine *e, struct job *j)
{
    TAILQ_REMOVE(&e->pending[j->prio], j, link);
    e->g.pending[j->prio]--;
    e->queued--;
}

static void expire(struct engine *e, struct job *j)
{
    pending_remove(e, j);
    engine_finishf(e, j, JOB_E_EXPIRED, "still pending %" PRIu64 " ms after it was accepted",
                   (e->now_ns - j->accepted_ns) / 1000000);
}

void dispatch_expire(struct engine *e)
{
    if (e->queued == 0 || e->now_ns < e->next_expire_ns)
        return;
    e->next_expire_ns = e->now_ns + EXPIRE_SWEEP_NS;
    for (int p = 0; p < PRIO_COUNT; p++) {
        for (struct job *j = TAILQ_FIRST(&e->pending[p]), *next; j; j = next) {
            next = TAILQ_NEXT(j, link);
            if (j->deadline_ns && e->now_ns > j->deadline_ns)
                expire(e, j);
        }
    }
}

/* ---- choosing a worker ------------------------------------------------ */

/* Expected work queued to W: the estimates of its jobs, plus however long
 * the running one has already overrun its estimate. */
static uint64_t worker_load(const struct engine *e, const struct worker *w)
{
    uint64_t load = w->est_ns;
    const struct job *head = TAILQ_FIRST(&w->inflight);
    if (head) {
        uint64_t age = e->now_ns - w->head_started_ns;
        uint64_t est = e->kinds[head->kind].est_ns;
        if (age > est)
            load += age - est;
    }
    return load;
}

/* The least loaded worker that may take J, or NULL. Ties go to the lowest
 * slot, so a lightly loaded pool keeps using the same warm workers and the
 * others can sleep. */
static struct worker *pick_worker(struct engine *e, const struct job *j)
{
    uint64_t budget = (uint64_t)e->wconf.inflight_us * 1000;
    uint64_t est = e->kinds[j->kind].est_ns;
    struct worker *best = NULL;
    uint64_t best_load = UINT64_MAX;
    for (unsigned i = 0; i < e->nslots; i++) {
        struct worker *w = &e->workers[i];
        if (!pool_takes_jobs(w) || w->ninflight >= e->wconf.inflight ||
            w->kinds_gen < e->kinds[j->kind].since_gen)
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
    struct kind *k = &e->kinds[j->kind];
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
    if (j->stream) {
        j->sent_fresh = j->stream->fresh;
        j->stream->fresh = false;
    }
    j->where = JOB_INFLIGHT;
    j->worker = (int)w->slot;
    j->attempts++;
    if (w->ninflight == 0) {
        w->head_started_ns = e->now_ns;
        j->started_ns = e->now_ns;
    }
    TAILQ_INSERT_TAIL(&w->inflight, j, link);
    w->ninflight++;
    j->est_ns = k->est_ns;
    w->est_ns += k->est_ns;
    w->wake = true;
    if (w->state == WORKER_IDLE) {
        w->state = WORKER_BUSY;
        pool_publish_worker(e, w);
    }
    /* Recycling: the exit message queues right behind its last job. */
    if (e->wconf.max_jobs && ++w->jobs_sent >= e->wconf.max_jobs)
        pool_drain(e, w);
    return true;
}

/* A job whose route a reload removed while it waited (or was being
 * retried) never runs: no new worker has its handler. */
static void answer_removed(struct engine *e, struct job *j)
{
    pending_remove(e, j);
    engine_finishf(e, j, JOB_E_SHUTDOWN, "route removed by reload");
}

/* A job whose handler cannot start (kinds.c) fails at once rather than
 * wait for a worker that has it. */
static void answer_failing(struct engine *e, struct job *j)
{
    const struct kind *k = &e->kinds[j->kind];
    pending_remove(e, j);
    engine_finishf(e, j, JOB_E_FAILED, "handler %s cannot start: %s", k->handler->name, k->failure);
}

/* While a reload recycles the pool, a job of a new or changed kind may find
 * no worker forked with its handler yet; jobs behind it that old workers
 * can run go on, up to SKIP_MAX passed over. Otherwise the queue's head
 * waiting means everything behind it waits too. */
static bool may_skip(const struct engine *e, const struct job *j, unsigned *skipped)
{
    return e->kinds[j->kind].since_gen > 0 && engine_stale_workers(e) > 0 &&
           (*skipped)++ < SKIP_MAX;
}

void dispatch(struct engine *e)
{
    for (int p = 0; p < PRIO_COUNT; p++) {
        unsigned skipped = 0;
        for (struct job *j = TAILQ_FIRST(&e->pending[p]), *next; j; j = next) {
            next = TAILQ_NEXT(j, link);
            if (j->deadline_ns && e->now_ns > j->deadline_ns) {
                expire(e, j);
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
            struct worker *w = pick_worker(e, j);
            if (!w && may_skip(e, j, &skipped))
                continue;
            if (!w)
                goto wake;
            pending_remove(e, j);
            if (!send_to(e, w, j)) {
                pending_push(e, j, true);
                e->queued++;
                goto wake;
            }
        }
    }
wake:
    for (unsigned i = 0; i < e->nslots; i++) {
        struct worker *w = &e->workers[i];
        if (w->wake) {
            w->wake = false;
            ring_wake(&w->jobs);
        }
    }
}
