/* reload.c - apply a new configuration to a running engine (engine_reload).
 *
 * Two steps: plan everything first, so a reload that cannot be applied
 * changes nothing; then commit. What the segment's geometry fixes (slab,
 * worker slots, ring size, stream slots, the job pool) cannot change
 * without a restart: such a change is logged and the old value kept.
 *
 * Kinds are matched to routes by name. A worker holds the kind table it was
 * forked with, so each kind records the generation of its definition and a
 * worker is only given jobs of kinds its table already had (dispatch.c);
 * pool.c recycles the old-table workers a few at a time. Queued jobs of a
 * removed route are taken from their queue or stream through the owners'
 * functions and answered here. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "supervisor/engine_queue.h"

enum kind_change { KIND_KEPT, KIND_CHANGED, KIND_NEW };

struct plan {
    struct conf_workers w;
    struct conf_limits lim;
    unsigned index[SEG_MAX_KINDS]; /* route i -> kind index */
    enum kind_change change[SEG_MAX_KINDS];
    const struct mqfork_handler *h[SEG_MAX_KINDS];
    void *preloaded[SEG_MAX_KINDS]; /* by route: new and changed kinds' preloads */
    bool removed[SEG_MAX_KINDS];    /* by kind index */
    bool taken[SEG_MAX_KINDS];      /* by kind index, in the new table */
    unsigned nkinds;                /* the table's length afterwards */
    unsigned kept, changed, added, nremoved;
};

static void needs_restart(const char *key, double want, double keep)
{
    log_warn("reload: %s %g needs a restart (the running segment is sized for %g); keeping %g", key,
             want, keep, keep);
}

/* The worker and limit settings, less what the segment cannot take. */
static void plan_limits(const struct engine *e, const struct conf *c, struct plan *p)
{
    p->w = c->workers;
    p->lim = c->limits;
    if (p->w.max > e->pool.nslots) {
        needs_restart("workers.max", p->w.max, e->pool.nslots);
        p->w.max = e->pool.nslots;
        if (p->w.min > p->w.max)
            p->w.min = p->w.max;
    }
    uint32_t ring_room = e->seg.hdr->ring_cap - 1; /* one slot for the exit message */
    if (p->w.inflight > ring_room) {
        needs_restart("workers.inflight", p->w.inflight, e->wconf.inflight);
        p->w.inflight = e->wconf.inflight;
    }
    if (p->lim.slab_mb != e->limits.slab_mb) {
        needs_restart("limits.slab_mb", p->lim.slab_mb, e->limits.slab_mb);
        p->lim.slab_mb = e->limits.slab_mb;
    }
    if (p->lim.max_payload > e->max_alloc) {
        needs_restart("limits.max_payload", p->lim.max_payload, e->limits.max_payload);
        p->lim.max_payload = e->limits.max_payload;
    }
    /* The job pool holds max_pending queued plus a full ring per worker. */
    size_t room = e->jobs.n - (size_t)e->pool.nslots * p->w.inflight;
    if (p->lim.max_pending > room) {
        needs_restart("limits.max_pending", p->lim.max_pending, (double)room);
        p->lim.max_pending = (uint32_t)room;
    }
    if (c->streams.max != e->sconf.max)
        needs_restart("streams.max", c->streams.max, e->sconf.max);
    if (strcmp(c->instance, e->instance) != 0)
        log_warn("reload: instance '%s' needs a restart; keeping '%s'", c->instance, e->instance);
}

/* Jobs not yet answered, by kind: a removed kind's index is reused only
 * once nothing of it is left anywhere. */
static void count_outstanding(const struct engine *e, size_t *by_kind)
{
    memset(by_kind, 0, sizeof(size_t) * SEG_MAX_KINDS);
    for (size_t i = 0; i < e->jobs.n; i++)
        if (e->jobs.all[i].state != JOB_FREE && e->jobs.all[i].kind < SEG_MAX_KINDS)
            by_kind[e->jobs.all[i].kind]++;
}

static int new_index(const struct engine *e, struct plan *p, const size_t *outstanding)
{
    if (p->nkinds < SEG_MAX_KINDS)
        return (int)p->nkinds++;
    for (unsigned k = 0; k < e->nkinds; k++)
        if (!p->taken[k] && (!e->kinds[k].handler || p->removed[k]) && !outstanding[k])
            return (int)k;
    return -1;
}

/* Whether H with PARAMS fits the running segment: its stream state and its
 * largest output. */
static int fits_segment(const struct engine *e, const struct mqfork_handler *h,
                        const struct mqfork_params *params, const struct plan *p, const char *name)
{
    size_t state = h->state_size ? h->state_size(params) : 0;
    struct mqfork_out_bound bound = {0};
    if (h->out_bound)
        h->out_bound(params, &bound);
    uint64_t out = handler_out_capacity(h->out_bound ? &bound : NULL,
                                        handler_max_in(&bound, p->lim.max_payload));
    if (state > e->stream_slot_size || out > e->max_alloc) {
        log_error("reload: route '%s' needs a restart: its %s does not fit the running segment",
                  name, state > e->stream_slot_size ? "stream state" : "output");
        return -1;
    }
    return 0;
}

/* Check route I against the registry and what the running segment can
 * hold; preload it when it is new or changed. */
static int plan_route(const struct engine *e, const struct conf_route *r, struct plan *p, size_t i)
{
    const struct mqfork_handler *h = registry_find(e->registry, r->job);
    char err[256];
    if (!h) {
        log_error("reload: route '%s': no handler '%s'", r->name, r->job);
        return -1;
    }
    if (registry_check_params(h, &r->params, err, sizeof(err)) < 0) {
        log_error("reload: route '%s': %s", r->name, err);
        return -1;
    }
    struct mqfork_params params;
    int rc = params_copy(&params, &r->params);
    if (rc == 0)
        rc = fits_segment(e, h, &params, p, r->name);
    p->h[i] = h;
    int k = engine_kind_by_name(e, r->name);
    if (k >= 0) {
        const struct kind *old = &e->kinds[k];
        p->index[i] = (unsigned)k;
        p->change[i] =
            old->handler == h && params_equal(&old->params, &r->params) ? KIND_KEPT : KIND_CHANGED;
        p->taken[k] = true;
    }
    if (rc == 0 && p->change[i] != KIND_KEPT)
        rc = kind_preload(r->name, h, &params, &p->preloaded[i]);
    params_free(&params);
    return rc;
}

/* A reload that fails after some preloads gives them back. */
static void unload_plan(struct plan *p, size_t nroutes)
{
    for (size_t i = 0; i < nroutes; i++)
        if (p->preloaded[i] && p->h[i]->unload)
            p->h[i]->unload(p->preloaded[i]);
}

static int plan_kinds(const struct engine *e, const struct conf *c, struct plan *p)
{
    p->nkinds = e->nkinds;
    for (size_t i = 0; i < c->nroutes; i++) {
        p->change[i] = KIND_NEW;
        if (plan_route(e, &c->routes[i], p, i) < 0)
            return -1;
    }
    for (unsigned k = 0; k < e->nkinds; k++)
        p->removed[k] = e->kinds[k].handler && !p->taken[k] && !e->kinds[k].of_source;
    size_t outstanding[SEG_MAX_KINDS];
    count_outstanding(e, outstanding);
    for (size_t i = 0; i < c->nroutes; i++) {
        if (p->change[i] != KIND_NEW)
            continue;
        int k = new_index(e, p, outstanding);
        if (k < 0) {
            log_error("reload: more than %d job kinds in use: route '%s' needs a restart",
                      SEG_MAX_KINDS, c->routes[i].name);
            return -1;
        }
        p->index[i] = (unsigned)k;
        p->taken[k] = true;
    }
    for (size_t i = 0; i < c->nroutes; i++) {
        p->kept += p->change[i] == KIND_KEPT;
        p->changed += p->change[i] == KIND_CHANGED;
        p->added += p->change[i] == KIND_NEW;
    }
    for (unsigned k = 0; k < e->nkinds; k++)
        p->nremoved += p->removed[k];
    return 0;
}

/* Queued jobs of removed routes are answered now; running ones finish on
 * the old workers that have their handler. */
static size_t answer_removed(struct engine *e, const struct plan *p)
{
    size_t n = 0;
    /* Stream waiters first: answering a stream's active job would move its
     * next waiter to the pending queue. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < e->jobs.n; i++) {
            struct job *j = &e->jobs.all[i];
            if (j->kind >= SEG_MAX_KINDS || !p->removed[j->kind])
                continue;
            if (pass == 0 && j->state == JOB_STREAM_WAIT) {
                stream_unwait(e, j);
            } else if (pass == 1 && j->state == JOB_PENDING) {
                queue_take(e, j);
            } else {
                continue;
            }
            engine_finishf(e, j, JOB_E_SHUTDOWN, "route removed by reload");
            n++;
        }
    }
    return n;
}

static int commit_kinds(struct engine *e, const struct conf *c, struct plan *p)
{
    if (!p->changed && !p->added && !p->nremoved)
        return 0;
    e->kinds_gen++;
    for (unsigned k = 0; k < e->nkinds; k++)
        if (p->removed[k])
            kind_undefine(e, k);
    for (size_t i = 0; i < c->nroutes; i++) {
        if (p->change[i] == KIND_KEPT)
            continue;
        unsigned k = p->index[i];
        bool reused = p->change[i] == KIND_NEW && k < e->nkinds;
        void *preloaded = p->preloaded[i];
        p->preloaded[i] = NULL; /* the kind owns it now */
        if (kind_define(e, k, c->routes[i].name, p->h[i], &c->routes[i].params, preloaded) < 0) {
            log_error("reload: out of memory defining route '%s'", c->routes[i].name);
            return -1;
        }
        engine_publish_kind(e, k);
        stream_forget_kind(e, k, reused);
    }
    e->nkinds = p->nkinds;
    return 0;
}

int engine_reload(struct engine *e, const struct conf *c)
{
    struct plan p;
    memset(&p, 0, sizeof(p));
    if (!e->started || c->nroutes > SEG_MAX_KINDS) {
        log_error("reload: %s; keeping the current configuration",
                  !e->started ? "the engine is not running" : "too many routes");
        return -1;
    }
    plan_limits(e, c, &p);
    if (plan_kinds(e, c, &p) < 0) {
        unload_plan(&p, c->nroutes);
        log_error("reload: keeping the current configuration");
        return -1;
    }
    e->wconf = p.w;
    e->limits = p.lim;
    e->sconf.idle_s = c->streams.idle_s;
    scale_configure(e, &c->scaling);
    if (commit_kinds(e, c, &p) < 0) {
        unload_plan(&p, c->nroutes);
        return -1;
    }
    size_t answered = answer_removed(e, &p);
    atomic_fetch_add(&e->seg.hdr->generation, 1);
    e->g.workers_min = e->wconf.min;
    e->g.workers_max = e->wconf.max;
    pool_set_target(e, e->pool.target);
    log_info("reload: routes %u kept, %u changed, %u added, %u removed (%zu queued jobs of removed "
             "routes answered); workers %u..%u, target %u; %u workers to recycle",
             p.kept, p.changed, p.added, p.nremoved, answered, e->wconf.min, e->wconf.max,
             e->pool.target, engine_stale_workers(e));
    return 0;
}
