/* fixture.c - see fixture.h. */
#include "test/fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "shm/clock.h"
#include "shm/segment.h"
#include "shm/statread.h"
#include "supervisor/loop.h"

double fixture_now(void)
{
    return (double)mono_ns() / 1e9;
}

void fixture_init(struct fixture *f, const char *name, size_t nrecs)
{
    memset(f, 0, sizeof(*f));
    conf_defaults(&f->conf);
    char instance[64];
    snprintf(instance, sizeof(instance), "%s-%d", name, (int)getpid());
    free(f->conf.instance);
    f->conf.instance = strdup(instance);
    f->conf.workers.min = 2;
    f->conf.workers.max = 4;
    f->conf.limits.slab_mb = 16;
    f->nrecs = nrecs;
    f->recs = calloc(nrecs ? nrecs : 1, sizeof(*f->recs));
    for (size_t i = 0; i < nrecs; i++)
        f->recs[i].f = f;
    if (!getenv("MQFORK_TEST_VERBOSE"))
        log_set_level(LOG_LVL_ERROR);
}

static int must_kind(struct fixture *f, const char *name, const char *handler,
                     const struct conf_params *params)
{
    int k = engine_add_kind(f->e, name, handler, params);
    if (k < 0) {
        fprintf(stderr, "fixture: cannot add kind %s\n", name);
        exit(1);
    }
    return k;
}

void fixture_add_kind(struct fixture *f, const char *name, const char *handler,
                      const struct conf_params *params, int *index)
{
    if (f->nextra >= sizeof(f->extra) / sizeof(f->extra[0])) {
        fprintf(stderr, "fixture: too many extra kinds\n");
        exit(1);
    }
    f->extra[f->nextra].name = name;
    f->extra[f->nextra].handler = handler;
    f->extra[f->nextra].params = params;
    f->extra[f->nextra].index = index;
    f->nextra++;
}

void fixture_declare_block(struct fixture *f, const struct stats_block_spec *spec)
{
    if (f->nblocks >= sizeof(f->blocks) / sizeof(f->blocks[0])) {
        fprintf(stderr, "fixture: too many blocks\n");
        exit(1);
    }
    f->blocks[f->nblocks++] = spec;
}

void fixture_start(struct fixture *f)
{
    f->loop = loop_new(256);
    f->e = f->loop && registry_init(&f->registry) == 0 ? engine_new(&f->conf, f->loop, &f->registry)
                                                       : NULL;
    if (!f->e) {
        fprintf(stderr, "fixture: cannot create the engine\n");
        exit(1);
    }
    f->echo = must_kind(f, "test.echo", "test.echo", NULL);
    f->spin = must_kind(f, "test.spin", "test.spin", NULL);
    f->crash = must_kind(f, "test.crash", "test.crash", NULL);
    f->hang = must_kind(f, "test.hang", "test.hang", NULL);
    for (unsigned i = 0; i < f->nextra; i++)
        *f->extra[i].index =
            must_kind(f, f->extra[i].name, f->extra[i].handler, f->extra[i].params);
    for (unsigned i = 0; i < f->nblocks; i++)
        if (engine_declare_block(f->e, f->blocks[i]) < 0)
            exit(1);
    if (engine_start(f->e) < 0) {
        fprintf(stderr, "fixture: engine_start failed\n");
        exit(1);
    }
    if (!fixture_run_until(f, fixture_pool_ready, NULL, 10)) {
        fprintf(stderr, "fixture: pool not ready in 10 s\n");
        exit(1);
    }
}

void fixture_free(struct fixture *f)
{
    engine_free(f->e);
    loop_free(f->loop);
    registry_free(&f->registry);
    conf_free(&f->conf);
    free(f->recs);
}

void fixture_record_done(void *ctx, const struct engine_outcome *o)
{
    struct record *r = ctx;
    r->outcomes++;
    r->status = o->status;
    r->attempts = o->attempts;
    r->order = ++r->f->answered;
    r->len = o->len;
    size_t n = o->len < sizeof(r->data) - 1 ? o->len : sizeof(r->data) - 1;
    memcpy(r->data, o->data, n);
    r->data[n] = '\0';
}

enum job_status fixture_submit(struct fixture *f, size_t idx, int kind, const void *payload,
                               size_t len, const char *stream, enum conf_priority prio,
                               uint32_t timeout_ms, uint32_t retries)
{
    struct engine_job j = {
        .kind = (uint32_t)kind,
        .payload = payload,
        .len = len,
        .stream = stream,
        .stream_len = stream ? strlen(stream) : 0,
        .priority = prio,
        .timeout_ms = timeout_ms,
        .retries = retries,
        .done = fixture_record_done,
        .ctx = idx < f->nrecs ? &f->recs[idx] : NULL,
    };
    if (!j.ctx)
        j.done = NULL;
    return engine_submit(f->e, &j, NULL);
}

bool fixture_run_until(struct fixture *f, bool (*cond)(struct fixture *, void *), void *arg,
                       double limit_s)
{
    double end = fixture_now() + limit_s;
    while (!cond(f, arg)) {
        if (fixture_now() > end)
            return false;
        engine_turn(f->e, 10000000);
    }
    return true;
}

bool fixture_all_answered(struct fixture *f, void *n_submitted)
{
    return f->answered >= *(size_t *)n_submitted && engine_outstanding(f->e) == 0;
}

bool fixture_pool_ready(struct fixture *f, void *unused)
{
    return engine_live_workers(f->e) >= engine_target(f->e);
}

bool fixture_workers_busy(struct fixture *f, void *n)
{
    struct stats_global g;
    fixture_stats(f, &g);
    return g.workers_busy >= *(unsigned *)n;
}

static int add_route(struct conf *c, const char *name, const char *handler)
{
    struct conf_route *r = &c->routes[c->nroutes++];
    r->name = strdup(name);
    r->job = strdup(handler);
    return r->name && r->job && conf_strings_add(&r->subscribe, name) == 0 ? 0 : -1;
}

int fixture_reload_conf(const struct fixture *f, struct conf *c)
{
    conf_defaults(c);
    free(c->instance);
    c->instance = strdup(f->conf.instance);
    c->workers = f->conf.workers;
    c->limits = f->conf.limits;
    c->streams = f->conf.streams;
    c->scaling = f->conf.scaling;
    c->routes = calloc(4 + f->nextra, sizeof(*c->routes));
    if (!c->instance || !c->routes)
        return -1;
    const char *builtin[] = {"test.echo", "test.spin", "test.crash", "test.hang"};
    int rc = 0;
    for (unsigned i = 0; i < 4; i++)
        rc |= add_route(c, builtin[i], builtin[i]);
    for (unsigned i = 0; i < f->nextra; i++)
        rc |= add_route(c, f->extra[i].name, f->extra[i].handler);
    return rc;
}

bool fixture_each_once(const struct fixture *f, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (f->recs[i].outcomes != 1)
            return false;
    return true;
}

void fixture_stats(const struct fixture *f, struct stats_global *out)
{
    const struct segment *s = engine_segment(f->e);
    while (stats_copy(s, "engine", out, sizeof(*out)) < 0)
        ;
}
