/* cache.c - one route's result cache and request coalescing (cache.h): a
 * chained hash table of entries, each either a flight (a running job and
 * the requests waiting for it) or a kept result on the LRU list. */
#include "supervisor/cache.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define F(kind, member, name, help) STATS_FIELD(kind, struct cache_figures, member, name, help)

static const struct stats_field_desc cache_fields[] = {
    F(STATS_COUNTER, hits, "hits", "Requests answered from a kept result, without a job."),
    F(STATS_COUNTER, misses, "misses", "Requests of cached routes that ran a job."),
    F(STATS_COUNTER, coalesced, "coalesced",
      "Requests that joined an equal request's running job and got its outcome."),
    F(STATS_COUNTER, stored, "stored", "Successful results kept."),
    F(STATS_COUNTER, evicted, "evicted", "Results evicted, least recently used first, by max_mb."),
    F(STATS_COUNTER, expired, "expired", "Results dropped after ttl_s."),
    F(STATS_COUNTER, too_large, "too_large", "Results not kept: larger than max_mb alone."),
    F(STATS_GAUGE, bytes, "bytes", "Bytes the kept results and their keys take."),
    F(STATS_GAUGE, entries, "entries", "Results kept now."),
};

const struct stats_block_spec cache_stats_spec = {
    .name = "cache",
    .fields = cache_fields,
    .nfields = sizeof(cache_fields) / sizeof(cache_fields[0]),
    .size = sizeof(struct cache_figures),
};

/* A flight until its job ends (stored_ns 0), then a kept result. */
struct cache_flight {
    struct cache *cache;
    struct cache_flight *chain;         /* next in its bucket */
    struct cache_flight *older, *newer; /* the LRU list, kept results only */
    struct cache_waiter *waiters, **last;
    size_t nwaiters;
    bool in_table; /* false: detached by a reload; answers, keeps nothing */
    uint64_t hash;
    uint64_t stored_ns;
    uint8_t *result;
    size_t result_len, key_len;
    uint8_t key[]; /* the payload: handler and params are the cache's own */
};

struct cache {
    struct cache_figures *fig;
    uint64_t seed;  /* XXH3 of handler and params: part of every key's hash */
    char *identity; /* handler and params, length-prefixed: what seed hashes */
    size_t identity_len;
    uint64_t ttl_ns, max_bytes, bytes;
    size_t max_waiters;
    struct cache_flight **bucket;
    size_t nbuckets, count;               /* count: entries in the table */
    struct cache_flight *newest, *oldest; /* LRU of kept results */
    size_t flights;                       /* running, table or not */
    bool retired;
};

/* ---- identity: handler and params, each length-prefixed so that no two
 * different lists of strings give the same bytes */

static size_t put(char *out, size_t at, const char *s)
{
    uint32_t n = (uint32_t)strlen(s);
    if (out) {
        memcpy(out + at, &n, sizeof(n));
        memcpy(out + at + sizeof(n), s, n);
    }
    return at + sizeof(n) + n;
}

static char *identity(const char *handler, const struct conf_params *p, size_t *len)
{
    size_t n = put(NULL, 0, handler);
    for (size_t i = 0; i < p->count; i++)
        n = put(NULL, put(NULL, n, p->items[i].key), p->items[i].value);
    char *out = malloc(n ? n : 1);
    if (!out)
        return NULL;
    size_t at = put(out, 0, handler);
    for (size_t i = 0; i < p->count; i++)
        at = put(out, put(out, at, p->items[i].key), p->items[i].value);
    *len = at;
    return out;
}

/* ---- the table */

static struct cache_flight **slot_of(struct cache *c, uint64_t hash)
{
    return &c->bucket[hash & (c->nbuckets - 1)];
}

static void unlink_table(struct cache *c, struct cache_flight *e)
{
    if (!e->in_table)
        return;
    struct cache_flight **p = slot_of(c, e->hash);
    while (*p != e)
        p = &(*p)->chain;
    *p = e->chain;
    e->in_table = false;
    c->count--;
}

static void grow(struct cache *c)
{
    size_t n = c->nbuckets * 2;
    struct cache_flight **fresh = calloc(n, sizeof(*fresh));
    if (!fresh)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < c->nbuckets; i++)
        for (struct cache_flight *e = c->bucket[i], *next; e; e = next) {
            next = e->chain;
            e->chain = fresh[e->hash & (n - 1)];
            fresh[e->hash & (n - 1)] = e;
        }
    free(c->bucket);
    c->bucket = fresh;
    c->nbuckets = n;
}

/* ---- kept results */

static uint64_t charge(const struct cache_flight *e)
{
    return sizeof(*e) + e->key_len + e->result_len;
}

static void lru_unlink(struct cache *c, struct cache_flight *e)
{
    *(e->newer ? &e->newer->older : &c->newest) = e->older;
    *(e->older ? &e->older->newer : &c->oldest) = e->newer;
    e->older = e->newer = NULL;
}

static void lru_push(struct cache *c, struct cache_flight *e)
{
    e->older = c->newest;
    e->newer = NULL;
    *(c->newest ? &c->newest->newer : &c->oldest) = e;
    c->newest = e;
}

/* Forget the kept result E; COUNTER says why (evicted, expired) or NULL. */
static void drop(struct cache *c, struct cache_flight *e, uint64_t *counter)
{
    unlink_table(c, e);
    lru_unlink(c, e);
    c->bytes -= charge(e);
    c->fig->bytes -= charge(e);
    c->fig->entries--;
    if (counter)
        (*counter)++;
    free(e->result);
    free(e);
}

static bool expired(const struct cache *c, const struct cache_flight *e, uint64_t now_ns)
{
    return now_ns - e->stored_ns >= c->ttl_ns;
}

/* Evict the least recently used results until NEED more bytes fit. */
static void evict_for(struct cache *c, uint64_t need)
{
    while (c->oldest && c->bytes + need > c->max_bytes)
        drop(c, c->oldest, &c->fig->evicted);
}

/* Make room for NEED bytes: expired results first (from the least recently
 * used end, where they gather), then the least recently used. */
static void make_room(struct cache *c, uint64_t need, uint64_t now_ns)
{
    while (c->oldest && expired(c, c->oldest, now_ns))
        drop(c, c->oldest, &c->fig->expired);
    evict_for(c, need);
}

/* Drop every kept result and detach every flight: nothing found any more. */
static void clear(struct cache *c)
{
    while (c->oldest)
        drop(c, c->oldest, NULL);
    for (size_t i = 0; i < c->nbuckets; i++)
        for (struct cache_flight *e = c->bucket[i], *next; e; e = next) {
            next = e->chain;
            e->in_table = false;
            c->count--;
        }
    memset(c->bucket, 0, c->nbuckets * sizeof(*c->bucket));
}

/* ---- lifetime */

static void set_limits(struct cache *c, const struct conf_cache *conf, size_t max_waiters)
{
    c->max_waiters = max_waiters;
    c->ttl_ns = (uint64_t)(conf->ttl_s * 1e9);
    c->max_bytes = (uint64_t)conf->max_mb << 20;
}

struct cache *cache_new(const char *handler, const struct conf_params *params,
                        const struct conf_cache *conf, size_t max_waiters,
                        struct cache_figures *fig)
{
    struct cache *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->fig = fig;
    c->nbuckets = 64;
    c->bucket = calloc(c->nbuckets, sizeof(*c->bucket));
    c->identity = identity(handler, params, &c->identity_len);
    if (!c->bucket || !c->identity) {
        free(c->bucket);
        free(c->identity);
        free(c);
        return NULL;
    }
    c->seed = XXH3_64bits(c->identity, c->identity_len);
    set_limits(c, conf, max_waiters);
    return c;
}

int cache_configure(struct cache *c, const char *handler, const struct conf_params *params,
                    const struct conf_cache *conf, size_t max_waiters)
{
    size_t len;
    char *id = identity(handler, params, &len);
    if (!id)
        return -1;
    if (len != c->identity_len || memcmp(id, c->identity, len) != 0) {
        clear(c);
        free(c->identity);
        c->identity = id;
        c->identity_len = len;
        c->seed = XXH3_64bits(id, len);
    } else {
        free(id);
    }
    set_limits(c, conf, max_waiters);
    evict_for(c, 0);
    return 0;
}

static void cache_free(struct cache *c)
{
    free(c->bucket);
    free(c->identity);
    free(c);
}

void cache_retire(struct cache *c)
{
    if (!c)
        return;
    clear(c);
    c->retired = true;
    if (!c->flights)
        cache_free(c);
}

/* ---- requests and outcomes */

static struct cache_flight *find(struct cache *c, uint64_t hash, const void *key, size_t len)
{
    for (struct cache_flight *e = *slot_of(c, hash); e; e = e->chain)
        if (e->hash == hash && e->key_len == len && memcmp(e->key, key, len) == 0)
            return e;
    return NULL;
}

static struct cache_flight *take_off(struct cache *c, uint64_t hash, const void *key, size_t len,
                                     struct cache_waiter *w)
{
    struct cache_flight *f = malloc(sizeof(*f) + len);
    if (!f)
        return NULL;
    *f = (struct cache_flight){.cache = c, .hash = hash, .key_len = len, .in_table = true};
    memcpy(f->key, key, len);
    w->next = NULL;
    f->waiters = w;
    f->last = &w->next;
    f->nwaiters = 1;
    if (c->count >= c->nbuckets)
        grow(c);
    struct cache_flight **slot = slot_of(c, hash);
    f->chain = *slot;
    *slot = f;
    c->count++;
    c->flights++;
    return f;
}

enum cache_verdict cache_begin(struct cache *c, const void *payload, size_t len,
                               struct cache_waiter *w, uint64_t now_ns, const void **data,
                               size_t *data_len, struct cache_flight **flight)
{
    uint64_t hash = XXH3_64bits_withSeed(payload, len, c->seed);
    struct cache_flight *e = find(c, hash, payload, len);
    if (e && e->stored_ns && expired(c, e, now_ns)) {
        drop(c, e, &c->fig->expired);
        e = NULL;
    }
    if (e && e->stored_ns) {
        lru_unlink(c, e);
        lru_push(c, e);
        c->fig->hits++;
        *data = e->result;
        *data_len = e->result_len;
        return CACHE_HIT;
    }
    if (e && e->nwaiters >= c->max_waiters)
        return CACHE_FULL;
    if (e) {
        e->nwaiters++;
        w->next = NULL;
        *e->last = w;
        e->last = &w->next;
        c->fig->coalesced++;
        return CACHE_JOINED;
    }
    if (!(*flight = take_off(c, hash, payload, len, w)))
        return CACHE_NOMEM;
    c->fig->misses++;
    return CACHE_MISS;
}

/* Keep F's result O, or forget F. */
static void keep(struct cache *c, struct cache_flight *f, const struct engine_outcome *o,
                 uint64_t now_ns)
{
    bool ok = o->status == JOB_OK && f->in_table && !c->retired;
    if (ok && sizeof(*f) + f->key_len + o->len > c->max_bytes) {
        c->fig->too_large++;
        ok = false;
    }
    if (ok && !(f->result = malloc(o->len ? o->len : 1)))
        ok = false;
    if (!ok) {
        unlink_table(c, f);
        free(f);
        return;
    }
    memcpy(f->result, o->data, o->len);
    f->result_len = o->len;
    f->stored_ns = now_ns ? now_ns : 1; /* 0 means running */
    make_room(c, charge(f), now_ns);
    lru_push(c, f);
    c->bytes += charge(f);
    c->fig->bytes += charge(f);
    c->fig->entries++;
    c->fig->stored++;
}

void cache_finish(struct cache_flight *f, const struct engine_outcome *o, uint64_t now_ns,
                  cache_answer_fn answer)
{
    struct cache *c = f->cache;
    struct cache_waiter *w = f->waiters;
    f->waiters = NULL;
    c->flights--;
    keep(c, f, o, now_ns);
    /* The waiters are answered after the table is settled: an answer may
     * be published at once, and nothing here is touched again. */
    while (w) {
        struct cache_waiter *next = w->next;
        answer(w, o);
        w = next;
    }
    if (c->retired && !c->flights)
        cache_free(c);
}
