/* cache.h - one route's result cache and request coalescing (`cache:`).
 *
 * A request equal to an earlier one (same handler, params and payload) is
 * answered from the earlier result for ttl_s; one equal to a request whose
 * job is still running waits for that job and gets its outcome. Entries are
 * found by XXH3 of the key and then compared in full, so a hash collision
 * never serves a wrong answer; the least recently used results are evicted
 * to stay within max_mb. Only successful results are kept.
 *
 *   message -> cache_begin: HIT (answer now) | JOINED (wait) | MISS (submit
 *              a job whose context is the returned flight)
 *   outcome -> cache_finish: every waiter answered, the result kept if OK
 *
 * The caller (supervisor/routes.c) owns the waiters: a struct cache_waiter
 * is the first member of its request. */
#ifndef MQFORK_SUPERVISOR_CACHE_H
#define MQFORK_SUPERVISOR_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "conf/config.h"
#include "shm/statblock.h"
#include "supervisor/engine.h"

struct cache;
struct cache_flight; /* a job whose outcome equal requests wait for */

struct cache_waiter {
    struct cache_waiter *next;
};

/* The figures of every route's cache together: the block "cache". */
struct cache_figures {
    uint64_t hits, misses, coalesced;
    uint64_t stored, evicted, expired, too_large;
    uint64_t bytes, entries; /* gauges */
};

/* The block "cache": its name and field table. */
extern const struct stats_block_spec cache_stats_spec;

/* A cache for the jobs of HANDLER with PARAMS, sized by CONF, with at most
 * MAX_WAITERS requests waiting for one job (a flood of equal requests is
 * refused as overloaded, as unequal ones are by limits.max_pending); FIG
 * counts (shared by the caches of all routes). NULL when out of memory. */
struct cache *cache_new(const char *handler, const struct conf_params *params,
                        const struct conf_cache *conf, size_t max_waiters,
                        struct cache_figures *fig);

/* Follow a reloaded route: new ttl and size (evicting down to it); when
 * handler or params changed, every kept result is dropped and running jobs
 * are no longer joined. 0, or -1 when out of memory (cache unchanged). */
int cache_configure(struct cache *c, const char *handler, const struct conf_params *params,
                    const struct conf_cache *conf, size_t max_waiters);

/* The route is gone: results dropped now, the cache freed when its last
 * running job has finished. */
void cache_retire(struct cache *c);

enum cache_verdict {
    CACHE_HIT,    /* *data, *len: the result (valid until the next cache call) */
    CACHE_JOINED, /* W waits for the running equal job */
    CACHE_FULL,   /* MAX_WAITERS wait for it already: refuse W */
    CACHE_MISS,   /* W waits for *flight: submit its job, ctx = *flight */
    CACHE_NOMEM,  /* nothing kept: run the job uncached */
};

enum cache_verdict cache_begin(struct cache *c, const void *payload, size_t len,
                               struct cache_waiter *w, uint64_t now_ns, const void **data,
                               size_t *data_len, struct cache_flight **flight);

/* Answer one waiter with the outcome (it owns W from then on). */
typedef void (*cache_answer_fn)(struct cache_waiter *w, const struct engine_outcome *o);

/* The flight's job ended with O (or was refused: O made by the caller).
 * Each waiter gets ANSWER, in arrival order; a JOB_OK result is kept. */
void cache_finish(struct cache_flight *f, const struct engine_outcome *o, uint64_t now_ns,
                  cache_answer_fn answer);

#endif
