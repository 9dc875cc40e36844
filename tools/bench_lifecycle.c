/* bench_lifecycle.c - mqfork-bench's pool lifecycle figures (issue 3): how
 * fast the autoscaler reacts, what a reload under saturated load costs,
 * and how long a drain takes against the pool's work. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shm/segment.h"
#include "test/fixture.h"
#include "tools/bench.h"

struct life {
    struct fixture f;
    uint64_t submitted, answered, failed;
    uint64_t run_ns;
};

static void life_done(void *ctx, const struct engine_outcome *o)
{
    struct life *l = ctx;
    l->answered++;
    l->failed += o->status != JOB_OK;
    l->run_ns += o->run_ns;
}

static bool life_submit(struct life *l, int kind, const char *payload)
{
    struct engine_job j = {
        .kind = (uint32_t)kind,
        .payload = payload,
        .len = strlen(payload),
        .priority = PRIO_NORMAL,
        .done = life_done,
        .ctx = l,
    };
    if (engine_submit(l->f.e, &j, NULL) != JOB_OK)
        return false;
    l->submitted++;
    return true;
}

static void life_fill(struct life *l, int kind, const char *payload, uint64_t backlog)
{
    while (l->submitted - l->answered < backlog && life_submit(l, kind, payload))
        ;
}

static void life_start(struct life *l, const char *name, unsigned min, unsigned max)
{
    memset(l, 0, sizeof(*l));
    fixture_init(&l->f, name, 0);
    l->f.conf.workers.min = min;
    l->f.conf.workers.max = max;
    l->f.conf.limits.slab_mb = 64;
    l->f.conf.scaling.enabled = false;
}

static void life_settle(struct life *l, double s)
{
    double end = fixture_now() + s;
    while (fixture_now() < end || l->answered < l->submitted)
        engine_turn(l->f.e, 1000000);
}

/* Load appears at a random moment of the check interval; time until the
 * second worker has answered a job. */
static void bench_scale_reaction(unsigned rounds)
{
    struct life l;
    life_start(&l, "bscale", 1, 2);
    l.f.conf.scaling.enabled = true;
    l.f.conf.scaling.interval_s = 0.5;
    l.f.conf.scaling.up_cooldown_s = 0.01;
    l.f.conf.scaling.down_cooldown_s = 3600;
    fixture_start(&l.f);
    const struct segment *seg = engine_segment(l.f.e);
    double *t = calloc(rounds, sizeof(*t));
    for (unsigned r = 0; r < rounds; r++) {
        life_settle(&l, 0.05 + 0.5 * (double)r / rounds); /* spread over the interval */
        uint64_t before = seg->workers_stats[1].jobs_done;
        double t0 = fixture_now();
        while (seg->workers_stats[1].jobs_done == before && fixture_now() - t0 < 5) {
            life_fill(&l, l.f.spin, "200", 50);
            engine_turn(l.f.e, 0);
        }
        t[r] = (fixture_now() - t0) * 1e3;
        life_settle(&l, 0);
        engine_set_target(l.f.e, 1);
        life_settle(&l, 0.1);
    }
    printf("\nscale-up reaction: load on at a random point of a 500 ms interval, until the "
           "new worker has answered a job (%u rounds)\n",
           rounds);
    bench_row("p50", bench_percentile(t, rounds, 0.5), "ms", "<=", 550);
    bench_row("max", bench_percentile(t, rounds, 1.0), "ms", "<=", 550);
    free(t);
    fixture_free(&l.f);
}

static void bench_route(struct conf *c, const char *name, const char *job)
{
    c->routes = realloc(c->routes, (c->nroutes + 1) * sizeof(*c->routes));
    struct conf_route *r = &c->routes[c->nroutes++];
    memset(r, 0, sizeof(*r));
    r->name = strdup(name);
    conf_strings_add(&r->subscribe, "bench/#");
    r->job = strdup(job);
}

/* Saturated echo load; a reload that adds a route (so every worker is
 * recycled) at 1 s; throughput per 50 ms slice, jobs lost. */
static void bench_reload(double seconds)
{
    enum { SLICES = 200 };
    struct life l;
    life_start(&l, "breload", 2, 2);
    fixture_start(&l.f);
    struct conf c;
    conf_defaults(&c);
    free(c.instance);
    c.instance = strdup(l.f.conf.instance);
    c.workers = l.f.conf.workers;
    c.limits = l.f.conf.limits;
    c.scaling = l.f.conf.scaling;
    const char *names[] = {"test.echo", "test.spin", "test.crash", "test.hang"};
    for (int i = 0; i < 4; i++)
        bench_route(&c, names[i], names[i]);
    bench_route(&c, "extra", "test.echo");
    uint64_t done[SLICES] = {0};
    unsigned nslices = (unsigned)(seconds / 0.05) < SLICES ? (unsigned)(seconds / 0.05) : SLICES;
    double t0 = fixture_now(), reload_at = 0;
    for (unsigned s = 0; s < nslices; s++) {
        uint64_t a0 = l.answered;
        while (fixture_now() - t0 < 0.05 * (s + 1)) {
            life_fill(&l, l.f.echo, "0123456789abcdef", 4096);
            engine_turn(l.f.e, 0);
            if (!reload_at && fixture_now() - t0 >= 1.0) {
                reload_at = fixture_now() - t0;
                if (engine_reload(l.f.e, &c) < 0)
                    printf("reload failed\n");
            }
        }
        done[s] = l.answered - a0;
    }
    life_settle(&l, 0);
    double before = 0, worst = 1e18;
    unsigned nb = 0, worst_at = 0;
    for (unsigned s = 0; s < nslices; s++) {
        double rate = (double)done[s] / 0.05;
        if (0.05 * (s + 1) <= reload_at && s > 1) {
            before += rate;
            nb++;
        } else if (0.05 * s >= reload_at && rate < worst) {
            worst = rate;
            worst_at = s;
        }
    }
    before = nb ? before / nb : 0;
    printf("\nreload under saturated test.echo load (2 workers, every worker recycled)\n");
    printf("  throughput before %.0f jobs/s; worst 50 ms slice after the reload %.0f jobs/s "
           "(%.0f%%, %.0f ms after it)\n",
           before, worst, before ? worst * 100 / before : 0, (0.05 * worst_at - reload_at) * 1e3);
    bench_row("jobs lost", (double)(l.submitted - l.answered), "jobs", "<=", 0);
    bench_row("jobs failed", (double)l.failed, "jobs", "<=", 0);
    conf_free(&c);
    fixture_free(&l.f);
}

/* 10,000 short jobs pending, then the drain: time until all are answered
 * and the pool is stopped, against the handler time the pool needed. */
static void bench_drain(unsigned workers)
{
    enum { N = 10000 };
    struct life l;
    life_start(&l, "bdrain", workers, workers);
    fixture_start(&l.f);
    for (unsigned i = 0; i < N; i++)
        life_submit(&l, l.f.spin, "100");
    double t0 = fixture_now();
    engine_stop_accepting(l.f.e);
    while (engine_outstanding(l.f.e))
        engine_turn(l.f.e, 1000000);
    double answered = fixture_now() - t0;
    size_t abandoned = engine_abandon(l.f.e);
    double stopped = fixture_now() - t0;
    double ideal = (double)l.run_ns / 1e9 / workers;
    printf("\ndrain: %d pending test.spin 100 us jobs, %u workers\n", N, workers);
    printf("  all answered after %.3f s, pool stopped after %.3f s; handler time / workers "
           "%.3f s\n",
           answered, stopped, ideal);
    bench_row("drain / pool work", stopped / ideal, "x", "<=", 1.2);
    bench_row("abandoned or failed", (double)(abandoned + l.failed), "jobs", "<=", 0);
    fixture_free(&l.f);
}

void bench_lifecycle(double seconds, unsigned workers)
{
    bench_scale_reaction(8);
    bench_reload(seconds);
    bench_drain(workers);
}
