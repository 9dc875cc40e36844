/* kinds.c - the kind table: one entry per route (or per API-made kind),
 * naming its handler, its owned params, what its preload made, its output
 * bound and its stats block; and the health of its handler's init(): a
 * handler whose init keeps killing new workers is set aside, its jobs
 * answered with an error, and tried again later, so the other kinds keep
 * their workers. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "supervisor/engine_impl.h"

#define INIT_TRIES      2           /* init deaths in a row before a kind is set aside */
#define RETRY_FIRST_NS  1000000000u /* then tried again after 1 s, 2 s, 4 s ... */
#define RETRY_MAX_SHIFT 6           /* ... up to 64 s */

int kind_preload(const char *name, const struct mqfork_handler *h,
                 const struct mqfork_params *params, void **out)
{
    *out = NULL;
    if (!h->preload)
        return 0;
    if (!(*out = h->preload(params))) {
        log_error("job kind '%s': the preload of handler %s failed", name, h->name);
        return -1;
    }
    return 0;
}

static void kind_unload(struct kind *k)
{
    if (k->preloaded && k->handler->unload)
        k->handler->unload(k->preloaded);
    k->preloaded = NULL;
}

/* Fill kind slot IDX from handler H with PARAMS (checked by the caller).
 * Its stats block is bound later by engine_publish_kind. */
int kind_define(struct engine *e, unsigned idx, const char *name, const struct mqfork_handler *h,
                const struct conf_params *params, void *preloaded)
{
    struct kind *k = &e->kinds[idx];
    if (k->handler)
        kind_unload(k);
    params_free(&k->params);
    memset(k, 0, sizeof(*k));
    snprintf(k->name, sizeof(k->name), "%s", name);
    k->handler = h;
    k->preloaded = preloaded;
    if (params_copy(&k->params, params) < 0) {
        kind_unload(k);
        params_free(&k->params);
        k->handler = NULL;
        return -1;
    }
    if (h->out_bound)
        h->out_bound(&k->params, &k->out);
    k->state_size = h->state_size ? (uint32_t)h->state_size(&k->params) : 0;
    /* Until a run was measured, assume a job of this kind fills a worker's
     * whole budget: nothing is queued behind a job that may be slow. */
    k->est_ns = (uint64_t)e->wconf.inflight_us * 1000;
    k->since_gen = e->kinds_gen;
    return 0;
}

/* The route of kind IDX is gone: refuse its new jobs from now on. Its name
 * and stats stay for the jobs still running on old workers. */
void kind_undefine(struct engine *e, unsigned idx)
{
    struct kind *k = &e->kinds[idx];
    kind_unload(k);
    params_free(&k->params);
    k->handler = NULL;
    if (k->stats) {
        seqlock_write_begin(&k->stats->lock);
        k->stats->used = 0;
        seqlock_write_end(&k->stats->lock);
    }
}

int engine_add_kind(struct engine *e, const char *name, const char *handler,
                    const struct conf_params *params)
{
    const struct mqfork_handler *h = registry_find(e->registry, handler);
    if (e->started || e->nkinds >= SEG_MAX_KINDS || !h) {
        log_error("cannot add job kind '%s': %s", name,
                  !h           ? "no such handler"
                  : e->started ? "pool already started"
                               : "too many kinds");
        return -1;
    }
    char err[256];
    if (registry_check_params(h, params, err, sizeof(err)) < 0) {
        log_error("job kind '%s': %s", name, err);
        return -1;
    }
    /* Preloaded at engine_start, once the process runs as its user. */
    if (kind_define(e, e->nkinds, name, h, params, NULL) < 0)
        return -1;
    return (int)e->nkinds++;
}

int engine_add_source_kind(struct engine *e, const char *name, const char *handler,
                           const struct conf_params *params)
{
    int k = engine_add_kind(e, name, handler, params);
    if (k >= 0)
        e->kinds[k].of_source = true;
    return k;
}

int engine_kind_by_name(const struct engine *e, const char *name)
{
    for (unsigned k = 0; k < e->nkinds; k++)
        if (e->kinds[k].handler && strcmp(e->kinds[k].name, name) == 0)
            return (int)k;
    return -1;
}

uint64_t kind_max_in(const struct kind *k, uint64_t max_payload)
{
    return handler_max_in(k->handler && k->handler->out_bound ? &k->out : NULL, max_payload);
}

uint64_t kind_out_capacity(const struct kind *k, uint64_t in_len)
{
    return handler_out_capacity(k->handler && k->handler->out_bound ? &k->out : NULL, in_len);
}

/* The slab must hold the largest block any job asks for. */
size_t kinds_largest_alloc(const struct engine *e)
{
    uint64_t max = e->limits.max_payload;
    for (unsigned k = 0; k < e->nkinds; k++) {
        uint64_t out =
            kind_out_capacity(&e->kinds[k], kind_max_in(&e->kinds[k], e->limits.max_payload));
        if (out > max)
            max = out;
    }
    return (size_t)max;
}

void engine_publish_kind(struct engine *e, unsigned k)
{
    struct stats_kind *s = &e->seg.kinds[k];
    seqlock_write_begin(&s->lock);
    s->used = 1;
    snprintf(s->name, sizeof(s->name), "%s", e->kinds[k].name);
    snprintf(s->handler, sizeof(s->handler), "%s", e->kinds[k].handler->name);
    seqlock_write_end(&s->lock);
    e->kinds[k].stats = s;
}

void kind_init_died(struct engine *e, unsigned k, const char *how)
{
    struct kind *kd = &e->kinds[k];
    if (k >= e->nkinds || !kd->handler || kd->failing)
        return;
    if (++kd->init_failures < INIT_TRIES) {
        log_warn("route %s: handler %s %s in init", kd->name, kd->handler->name, how);
        return;
    }
    unsigned shift = kd->init_failures - INIT_TRIES;
    uint64_t delay = (uint64_t)RETRY_FIRST_NS
                     << (shift < RETRY_MAX_SHIFT ? shift : RETRY_MAX_SHIFT);
    kd->failing = true;
    kd->retry_at_ns = e->now_ns + delay;
    snprintf(kd->failure, sizeof(kd->failure), "%s in init %u times in a row", how,
             kd->init_failures);
    log_error("route %s: handler %s %s; its jobs fail until it starts (next try in %" PRIu64 " s)",
              kd->name, kd->handler->name, kd->failure, delay / 1000000000u);
    engine_wake_at(e, kd->retry_at_ns);
}

void kinds_started(struct engine *e)
{
    for (unsigned k = 0; k < e->nkinds; k++)
        if (!e->kinds[k].failing)
            e->kinds[k].init_failures = 0;
}

/* A set-aside kind whose time has come goes back into new workers: the
 * pool recycles its workers gracefully to take it up, as after a reload,
 * and a new death in its init sets it aside again for twice as long. */
void kinds_retry(struct engine *e)
{
    for (unsigned k = 0; k < e->nkinds; k++) {
        struct kind *kd = &e->kinds[k];
        if (!kd->failing)
            continue;
        if (e->now_ns < kd->retry_at_ns) {
            engine_wake_at(e, kd->retry_at_ns);
            continue;
        }
        kd->failing = false;
        kd->since_gen = ++e->kinds_gen;
        log_info("route %s: trying handler %s again", kd->name, kd->handler->name);
    }
}
