/* engine_streams.c - the stream table: jobs of one kind that share a
 * stream key run one at a time, in arrival order, and share a state slot
 * in the segment (doc/DESIGN.md, principle 5). A stream's next job waits here
 * while its active one is pending or running; an idle stream keeps its
 * state until streams.idle_s has passed. When every slot holds a job or
 * state, a new stream is refused rather than another's state reset; only
 * idle streams with nothing to lose make room, and a source that knows a
 * stream has ended frees its slot at once (engine_stream_end). */
#include <stdlib.h>
#include <string.h>

#include "supervisor/engine_impl.h"
#include "supervisor/engine_queue.h"

static size_t next_pow2(size_t v)
{
    size_t p = 1;
    while (p < v)
        p <<= 1;
    return p;
}

int streams_init(struct engine *e)
{
    struct streams *st = &e->st;
    st->all = calloc(e->sconf.max, sizeof(*st->all));
    st->nbuckets = next_pow2((size_t)e->sconf.max * 2);
    st->buckets = calloc(st->nbuckets, sizeof(*st->buckets));
    if (!st->all || !st->buckets)
        return -1;
    TAILQ_INIT(&st->idle);
    TAILQ_INIT(&st->spare);
    TAILQ_INIT(&st->free);
    for (uint32_t i = e->sconf.max; i-- > 0;) {
        st->all[i].slot = i;
        TAILQ_INSERT_HEAD(&st->free, &st->all[i], lru);
    }
    return 0;
}

void streams_free(struct engine *e)
{
    free(e->st.all);
    free(e->st.buckets);
    e->st.all = NULL;
    e->st.buckets = NULL;
}

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
    const struct kind *k = &e->kinds[s->kind];
    return k->handler && k->state_size > 0 && !s->fresh;
}

/* The idle list S is on: streams that hold state wait there for
 * streams.idle_s; spare ones (nothing to lose) may be evicted for room. */
static struct stream_list *idle_list(struct engine *e, const struct stream *s)
{
    return s->spare ? &e->st.spare : &e->st.idle;
}

/* When idle stream S is forgotten, unless a job comes for it first. */
static uint64_t idle_until(const struct engine *e, const struct stream *s)
{
    return s->last_used_ns + (uint64_t)(e->sconf.idle_s * 1e9);
}

/* Forget stream S, on no list: its slot is free. */
static void stream_drop(struct engine *e, struct stream *s)
{
    struct stream **pp = &e->st.buckets[s->hash & (e->st.nbuckets - 1)];
    while (*pp && *pp != s)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = s->hnext;
    s->in_use = false;
    TAILQ_INSERT_HEAD(&e->st.free, s, lru);
    e->g.streams_live--;
}

/* Forget idle stream S. */
static void stream_unlink(struct engine *e, struct stream *s)
{
    TAILQ_REMOVE(idle_list(e, s), s, lru);
    stream_drop(e, s);
}

static struct stream *stream_new(struct engine *e, uint32_t kind, uint64_t hash, const void *key,
                                 size_t len)
{
    struct stream *s = TAILQ_FIRST(&e->st.free);
    if (!s) {
        /* Full: the least recently used idle stream with no state to lose
         * makes room. Streams that hold state keep it until they expire, and
         * the new stream is refused instead (issue #9, finding 6). */
        s = TAILQ_FIRST(&e->st.spare);
        if (!s) {
            e->g.stream_refusals++;
            return NULL;
        }
        stream_unlink(e, s);
        e->g.stream_evictions++;
    }
    TAILQ_REMOVE(&e->st.free, s, lru);
    s->in_use = true;
    s->hash = hash;
    s->kind = kind;
    s->klen = (uint32_t)len;
    memcpy(s->key, key, len);
    s->fresh = true;
    s->ended = false;
    s->active = NULL;
    TAILQ_INIT(&s->waiting);
    struct stream **b = &e->st.buckets[hash & (e->st.nbuckets - 1)];
    s->hnext = *b;
    *b = s;
    e->g.streams_live++;
    return s;
}

static struct stream *stream_find(struct engine *e, uint32_t kind, uint64_t h, const void *key,
                                  size_t len)
{
    for (struct stream *s = e->st.buckets[h & (e->st.nbuckets - 1)]; s; s = s->hnext)
        if (s->hash == h && s->kind == kind && s->klen == len && memcmp(s->key, key, len) == 0)
            return s;
    return NULL;
}

struct stream *stream_get(struct engine *e, uint32_t kind, const void *key, size_t len)
{
    uint64_t h = stream_hash(kind, key, len);
    struct stream *s = stream_find(e, kind, h, key, len);
    if (!s)
        return stream_new(e, kind, h, key, len);
    if (stream_idle(s))
        TAILQ_REMOVE(idle_list(e, s), s, lru);
    s->ended = false; /* a job came after all */
    return s;
}

void engine_stream_end(struct engine *e, uint32_t kind, const void *key, size_t len)
{
    if (!e->started || len > ENGINE_STREAM_KEY_MAX)
        return;
    struct stream *s = stream_find(e, kind, stream_hash(kind, key, len), key, len);
    if (s && stream_idle(s))
        stream_unlink(e, s);
    else if (s)
        s->ended = true; /* once its last job is answered */
}

void stream_enter(struct engine *e, struct stream *s, struct job *j)
{
    if (s->active) {
        job_move(j, JOB_TAKEN, JOB_STREAM_WAIT);
        TAILQ_INSERT_TAIL(&s->waiting, j, link);
        e->st.waiting++;
        return;
    }
    s->active = j;
    queue_push(e, j, false);
}

void stream_unwait(struct engine *e, struct job *j)
{
    job_move(j, JOB_STREAM_WAIT, JOB_TAKEN);
    TAILQ_REMOVE(&j->stream->waiting, j, link);
    e->st.waiting--;
}

void stream_release_job(struct engine *e, struct job *j)
{
    struct stream *s = j->stream;
    if (s->active != j)
        return;
    struct job *next = TAILQ_FIRST(&s->waiting);
    if (next) {
        stream_unwait(e, next);
        s->active = next;
        queue_push(e, next, false);
        return;
    }
    s->active = NULL;
    if (s->ended) {
        stream_drop(e, s);
        return;
    }
    s->last_used_ns = e->now_ns;
    s->spare = !stream_holds_state(e, s);
    TAILQ_INSERT_TAIL(idle_list(e, s), s, lru);
    /* The newest idle stream: a timer armed already is for an older one. */
    loop_timer_arm_by(e->loop, &e->st.expiry, idle_until(e, s));
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
    struct stream *s = expire_list(e, &e->st.idle);
    struct stream *spare = expire_list(e, &e->st.spare);
    if (spare && (!s || spare->last_used_ns < s->last_used_ns))
        s = spare;
    if (s)
        loop_timer_arm(e->loop, &e->st.expiry, idle_until(e, s));
}

void stream_job_sent(struct job *j)
{
    j->sent_fresh = j->stream->fresh;
    j->stream->fresh = false;
}

void stream_job_lost(struct engine *e, struct job *j, bool culprit)
{
    if (culprit) {
        /* It may have died halfway through changing the stream's state. */
        j->stream->fresh = true;
        e->g.stream_resets++;
    } else if (j->sent_fresh) {
        j->stream->fresh = true;
    }
}

/* A reload redefined KIND: its streams' state belongs to the old handler.
 * Idle streams are forgotten when DROP (the index gets a new route); the
 * others start fresh with their next job. */
void stream_forget_kind(struct engine *e, uint32_t kind, bool drop)
{
    for (uint32_t i = 0; i < e->sconf.max; i++) {
        struct stream *s = &e->st.all[i];
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
            TAILQ_REMOVE(&e->st.idle, s, lru);
            s->spare = true;
            TAILQ_INSERT_TAIL(&e->st.spare, s, lru);
        }
    }
}
