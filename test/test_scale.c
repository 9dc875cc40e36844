/* test_scale.c - the pool's life at the engine level, with real workers:
 * manual scaling clamped to [min, max], the autoscaler going up under
 * test.spin load and back down when idle, its cooldown after a manual
 * change, scale-down never touching a busy worker, a reload under load
 * (kept, added and removed routes, new limits, no job lost) and the drain
 * (every accepted job answered, or abandoned and reported). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shm/segment.h"
#include "test/fixture.h"
#include "test/t.h"

static void scaling_off(struct fixture *f)
{
    f->conf.scaling.enabled = false;
}

/* Fast scaling: checked every 0.1 s, short cooldowns. */
static void scaling_fast(struct fixture *f, double cooldown_s)
{
    struct conf_scaling *s = &f->conf.scaling;
    s->enabled = true;
    s->interval_s = 0.1;
    s->up_cooldown_s = cooldown_s;
    s->down_cooldown_s = cooldown_s;
}

static uint64_t scale_events(const struct fixture *f)
{
    struct stats_global g;
    fixture_stats(f, &g);
    return g.scale_events;
}

static const struct stats_scale *last_event(const struct fixture *f)
{
    const struct stats_events *ev = engine_segment(f->e)->events;
    return ev->scales ? &ev->scale[(ev->scales - 1) % STATS_RING_LEN] : NULL;
}

static void turn_for(struct fixture *f, double s)
{
    double end = fixture_now() + s;
    while (fixture_now() < end)
        engine_turn(f->e, 5000000);
}

/* SIGUSR1 past workers.max and SIGUSR2 below workers.min are clamped;
 * only real changes are scaling events. */
static void test_manual_clamp(void)
{
    struct fixture f;
    fixture_init(&f, "manual", 0);
    scaling_off(&f);
    fixture_start(&f);
    unsigned got[6];
    got[0] = engine_scale_manual(f.e, +1, "SIGUSR1");
    got[1] = engine_scale_manual(f.e, +1, "SIGUSR1");
    got[2] = engine_scale_manual(f.e, +1, "SIGUSR1");
    T_CHECK(got[0] == 3 && got[1] == 4 && got[2] == 4, "up: 3, 4, then clamped at 4 (got %u %u %u)",
            got[0], got[1], got[2]);
    T_CHECK(fixture_run_until(&f, fixture_pool_ready, NULL, 10), "4 workers ready");
    T_CHECK(engine_live_workers(f.e) == 4, "4 live (got %u)", engine_live_workers(f.e));
    got[3] = engine_scale_manual(f.e, -1, "SIGUSR2");
    got[4] = engine_scale_manual(f.e, -1, "SIGUSR2");
    got[5] = engine_scale_manual(f.e, -1, "SIGUSR2");
    T_CHECK(got[3] == 3 && got[4] == 2 && got[5] == 2,
            "down: 3, 2, then clamped at 2 (got %u %u %u)", got[3], got[4], got[5]);
    engine_turn(f.e, 0); /* publishes the statistics */
    T_CHECK(scale_events(&f) == 4, "4 scaling events, not 6 (got %lu)",
            (unsigned long)scale_events(&f));
    const struct stats_scale *ev = last_event(&f);
    T_CHECK(ev && ev->from == 3 && ev->to == 2 && strstr(ev->reason, "SIGUSR2"),
            "last event 3 -> 2 by SIGUSR2 (%s)", ev ? ev->reason : "none");
    turn_for(&f, 0.3);
    T_CHECK(engine_live_workers(f.e) == 2, "back to 2 live (got %u)", engine_live_workers(f.e));
    fixture_free(&f);
}

struct load {
    size_t submitted, cap;
    int kind;
    const char *payload;
};

/* Keep about TARGET jobs pending. */
static void keep_loaded(struct fixture *f, struct load *l, size_t target)
{
    while (l->submitted < l->cap &&
           l->submitted - f->answered < target + engine_live_workers(f->e) * 2 &&
           fixture_submit(f, l->submitted, l->kind, l->payload, strlen(l->payload), NULL,
                          PRIO_NORMAL, 0, 0) == JOB_OK)
        l->submitted++;
}

static bool all_first_try_ok(const struct fixture *f, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (f->recs[i].outcomes != 1 || f->recs[i].status != JOB_OK || f->recs[i].attempts != 1)
            return false;
    return true;
}

/* Under test.spin load the pool grows to workers.max one step per
 * interval; idle, it shrinks back to workers.min. No job suffers. */
static void test_autoscale(void)
{
    struct fixture f;
    enum { CAP = 200000 };
    fixture_init(&f, "auto", CAP);
    f.conf.workers.min = 1;
    f.conf.workers.max = 3;
    scaling_fast(&f, 0.2);
    fixture_start(&f);
    struct load l = {.cap = CAP, .kind = f.spin, .payload = "500"};
    double t0 = fixture_now(), first_up = 0;
    while (engine_target(f.e) < 3 && fixture_now() - t0 < 10) {
        keep_loaded(&f, &l, 20);
        engine_turn(f.e, 1000000);
        if (!first_up && engine_live_workers(f.e) >= 2)
            first_up = fixture_now() - t0;
    }
    T_CHECK(engine_target(f.e) == 3, "scaled up to 3 under load (target %u)", engine_target(f.e));
    T_CHECK(first_up > 0 && first_up < 0.5, "second worker taking jobs %.3f s after the load",
            first_up);
    const struct stats_scale *ev = last_event(&f);
    T_CHECK(ev && ev->from == 2 && ev->to == 3 && strstr(ev->reason, "pending"),
            "event 2 -> 3 names its figures (%s)", ev ? ev->reason : "none");
    size_t n = l.submitted;
    T_CHECK(fixture_run_until(&f, fixture_all_answered, &n, 20), "all answered");
    T_CHECK(all_first_try_ok(&f, n), "every job OK on its first attempt");
    double idle0 = fixture_now();
    while (engine_target(f.e) > 1 && fixture_now() - idle0 < 10)
        engine_turn(f.e, 10000000);
    T_CHECK(engine_target(f.e) == 1, "back to 1 when idle (target %u after %.1f s)",
            engine_target(f.e), fixture_now() - idle0);
    T_CHECK(fixture_run_until(&f, fixture_pool_ready, NULL, 5) && engine_live_workers(f.e) == 1,
            "1 live worker");
    ev = last_event(&f);
    T_CHECK(ev && ev->to == 1 && strstr(ev->reason, "load"), "down event (%s)",
            ev ? ev->reason : "none");
    T_CHECK(scale_events(&f) == 4, "2 up + 2 down events (got %lu)",
            (unsigned long)scale_events(&f));
    fixture_free(&f);
}

/* After a manual change the autoscaler waits out the cooldown of its
 * direction before it moves the pool itself. */
static void test_cooldown_after_manual(void)
{
    struct fixture f;
    enum { CAP = 200000 };
    fixture_init(&f, "cool", CAP);
    f.conf.workers.min = 1;
    f.conf.workers.max = 4;
    scaling_fast(&f, 0.2);
    f.conf.scaling.up_cooldown_s = 1.0;
    fixture_start(&f);
    double t_manual = fixture_now();
    T_REQUIRE(engine_scale_manual(f.e, +1, "SIGUSR1") == 2, "manual up to 2");
    struct load l = {.cap = CAP, .kind = f.spin, .payload = "500"};
    while (engine_target(f.e) == 2 && fixture_now() - t_manual < 5) {
        keep_loaded(&f, &l, 20);
        engine_turn(f.e, 1000000);
    }
    double waited = fixture_now() - t_manual;
    T_CHECK(engine_target(f.e) == 3, "the autoscaler went on to 3 (target %u)", engine_target(f.e));
    T_CHECK(waited >= 1.0 && waited < 1.5,
            "first automatic event %.3f s after the manual one "
            "(cooldown 1 s, interval 0.1 s)",
            waited);
    size_t n = l.submitted;
    T_CHECK(fixture_run_until(&f, fixture_all_answered, &n, 20), "all answered");
    T_CHECK(all_first_try_ok(&f, n), "every job OK on its first attempt");
    fixture_free(&f);
}

/* Lowering the target while every worker runs a long job retires none of
 * them mid-job: the jobs finish where they are, then the pool shrinks. */
static void test_scale_down_waits_for_idle(void)
{
    struct fixture f;
    fixture_init(&f, "shrink", 3);
    f.conf.workers.min = 1;
    f.conf.workers.max = 3;
    scaling_off(&f);
    fixture_start(&f);
    engine_set_target(f.e, 3);
    T_REQUIRE(fixture_run_until(&f, fixture_pool_ready, NULL, 10), "3 ready");
    for (size_t i = 0; i < 3; i++)
        T_REQUIRE(fixture_submit(&f, i, f.spin, "200000", 6, NULL, PRIO_NORMAL, 0, 0) == JOB_OK,
                  "long job %zu", i);
    engine_turn(f.e, 0);
    int pids[3];
    for (unsigned i = 0; i < 3; i++)
        pids[i] = engine_worker_pid(f.e, i);
    T_CHECK(engine_scale_manual(f.e, -2, "test") == 1, "target 1");
    turn_for(&f, 0.05);
    unsigned still = 0;
    for (unsigned i = 0; i < 3; i++)
        still += engine_worker_pid(f.e, i) == pids[i] && pids[i] > 0;
    T_CHECK(still == 3, "busy workers are not retired (%u of 3 still there)", still);
    size_t n = 3;
    T_CHECK(fixture_run_until(&f, fixture_all_answered, &n, 10), "answered");
    T_CHECK(all_first_try_ok(&f, 3), "each long job ran once, OK");
    turn_for(&f, 0.3);
    T_CHECK(engine_live_workers(f.e) == 1, "then 1 live (got %u)", engine_live_workers(f.e));
    struct stats_global g;
    fixture_stats(&f, &g);
    T_CHECK(g.crashed == 0, "retiring is not crashing");
    fixture_free(&f);
}

static void add_route(struct conf *c, const char *name, const char *job)
{
    c->routes = realloc(c->routes, (c->nroutes + 1) * sizeof(*c->routes));
    struct conf_route *r = &c->routes[c->nroutes++];
    memset(r, 0, sizeof(*r));
    r->name = strdup(name);
    conf_strings_add(&r->subscribe, "t/#");
    r->job = strdup(job);
}

/* The fixture's configuration for a reload: kept test.echo and test.spin,
 * removed test.crash and test.hang, added "extra" (test.echo); 3..4
 * workers. */
static void reload_conf(const struct fixture *f, struct conf *c)
{
    conf_defaults(c);
    free(c->instance);
    c->instance = strdup(f->conf.instance);
    c->workers = f->conf.workers;
    c->workers.min = 3;
    c->workers.max = 4;
    c->limits = f->conf.limits;
    c->scaling = f->conf.scaling;
    add_route(c, "test.echo", "test.echo");
    add_route(c, "test.spin", "test.spin");
    add_route(c, "extra", "test.echo");
}

/* Reload while jobs flow: kept routes keep flowing, queued jobs of removed
 * routes are answered "route removed by reload", the new route works, the
 * new limits hold, every worker is recycled, and nothing is lost. */
static void test_reload_under_load(void)
{
    struct fixture f;
    enum { N = 6000, CRASHQ = 20 };
    fixture_init(&f, "reload", N);
    f.conf.workers.min = 2;
    f.conf.workers.max = 4;
    scaling_off(&f);
    fixture_start(&f);
    int old_pids[2] = {engine_worker_pid(f.e, 0), engine_worker_pid(f.e, 1)};
    size_t i = 0;
    for (; i < 400; i++)
        T_REQUIRE(fixture_submit(&f, i, f.spin, "300", 3, NULL, PRIO_NORMAL, 0, 0) == JOB_OK,
                  "spin");
    /* Behind all of that, jobs of a route the reload removes. */
    for (size_t k = 0; k < CRASHQ; k++, i++)
        T_REQUIRE(fixture_submit(&f, i, f.crash, "segv", 4, NULL, PRIO_LOW, 0, 0) == JOB_OK,
                  "crash");
    engine_turn(f.e, 0);
    struct conf c;
    reload_conf(&f, &c);
    T_REQUIRE(engine_reload(f.e, &c) == 0, "reload accepted");
    int extra = engine_kind_by_name(f.e, "extra");
    T_CHECK(extra >= 0 && engine_kind_by_name(f.e, "test.crash") < 0, "kinds by name after reload");
    T_CHECK(engine_kind_by_name(f.e, "test.echo") == f.echo, "kept route keeps its index");
    T_CHECK(fixture_submit(&f, N - 1, f.hang, "", 0, NULL, PRIO_NORMAL, 0, 0) == JOB_E_UNKNOWN_KIND,
            "a removed route's index is refused");
    T_CHECK(engine_segment(f.e)->hdr->generation == 1, "segment generation bumped");
    /* Keep offering work of kept and new routes while the pool recycles. */
    double t0 = fixture_now();
    while (i < N - 1 && fixture_now() - t0 < 20) {
        int kind = i % 3 == 0 ? extra : i % 3 == 1 ? f.echo : f.spin;
        const char *p = kind == f.spin ? "100" : "e";
        if (fixture_submit(&f, i, kind, p, strlen(p), NULL, PRIO_NORMAL, 0, 0) == JOB_OK)
            i++;
        engine_turn(f.e, 0);
    }
    size_t n = i;
    T_CHECK(fixture_run_until(&f, fixture_all_answered, &n, 20), "all %zu answered", n);
    T_CHECK(fixture_each_once(&f, n), "each exactly once");
    size_t ok = 0, removed = 0, other = 0;
    for (size_t k = 0; k < n; k++) {
        const struct record *r = &f.recs[k];
        if (r->status == JOB_OK)
            ok++;
        else if (r->status == JOB_E_SHUTDOWN && strstr(r->data, "route removed by reload"))
            removed++;
        else
            other++;
    }
    T_CHECK(removed == CRASHQ && ok == n - CRASHQ && other == 0,
            "%zu OK, %zu removed (want %d), %zu other", ok, removed, CRASHQ, other);
    T_CHECK(fixture_run_until(&f, fixture_pool_ready, NULL, 10), "pool ready");
    T_CHECK(engine_stale_workers(f.e) == 0, "no worker left with the old kind table");
    T_CHECK(engine_target(f.e) == 3 && engine_live_workers(f.e) == 3,
            "workers.min 3 in force (target %u, live %u)", engine_target(f.e),
            engine_live_workers(f.e));
    for (unsigned k = 0; k < 2; k++)
        T_CHECK(engine_worker_pid(f.e, k) != old_pids[k], "slot %u recycled", k);
    struct stats_global g;
    fixture_stats(&f, &g);
    T_CHECK(g.crashed == 0 && g.workers_min == 3 && g.workers_max == 4,
            "no crash; stats show 3..4 (crashed %lu, %u..%u)", (unsigned long)g.crashed,
            g.workers_min, g.workers_max);
    conf_free(&c);
    fixture_free(&f);
}

/* A reload the running segment cannot take changes nothing. */
static void test_reload_refused(void)
{
    struct fixture f;
    fixture_init(&f, "refused", 1);
    scaling_off(&f);
    fixture_start(&f);
    struct conf c;
    reload_conf(&f, &c);
    for (int k = 0; k < 70; k++) {
        char name[16];
        snprintf(name, sizeof(name), "r%d", k);
        add_route(&c, name, "test.echo");
    }
    T_CHECK(engine_reload(f.e, &c) < 0, "70 routes do not fit 64 kinds");
    T_CHECK(engine_kind_by_name(f.e, "test.crash") == f.crash, "old table kept");
    T_CHECK(engine_segment(f.e)->hdr->generation == 0, "generation unchanged");
    T_CHECK(engine_target(f.e) == 2, "old workers.min kept");
    conf_free(&c);
    fixture_free(&f);
}

/* Drain: stop accepting, and everything accepted is still answered. */
static void test_drain(void)
{
    struct fixture f;
    enum { N = 3000 };
    fixture_init(&f, "drain", N);
    scaling_off(&f);
    fixture_start(&f);
    for (size_t i = 0; i < N; i++)
        T_REQUIRE(fixture_submit(&f, i, f.spin, "100", 3, NULL, PRIO_NORMAL, 0, 0) == JOB_OK,
                  "accepted");
    engine_turn(f.e, 0);
    engine_stop_accepting(f.e);
    T_CHECK(fixture_submit(&f, 0, f.echo, "x", 1, NULL, PRIO_NORMAL, 0, 0) == JOB_E_SHUTDOWN,
            "refused while draining");
    size_t n = N;
    T_CHECK(fixture_run_until(&f, fixture_all_answered, &n, 20), "all answered");
    T_CHECK(all_first_try_ok(&f, N), "all OK");
    T_CHECK(engine_abandon(f.e) == 0, "nothing left to abandon");
    fixture_free(&f);
}

/* Drain cut short: what is left is answered JOB_E_SHUTDOWN and counted. */
static void test_abandon(void)
{
    struct fixture f;
    enum { N = 500 };
    fixture_init(&f, "abandon", N);
    scaling_off(&f);
    fixture_start(&f);
    for (size_t i = 0; i < N; i++)
        T_REQUIRE(fixture_submit(&f, i, f.spin, "2000", 4, i % 7 ? NULL : "s", PRIO_NORMAL, 0, 0) ==
                      JOB_OK,
                  "accepted");
    engine_stop_accepting(f.e);
    turn_for(&f, 0.05);
    size_t done = f.answered;
    size_t abandoned = engine_abandon(f.e);
    T_CHECK(abandoned > 0 && done + abandoned == N, "%zu done + %zu abandoned = %d", done,
            abandoned, N);
    T_CHECK(fixture_each_once(&f, N), "each exactly once");
    size_t shut = 0;
    for (size_t i = 0; i < N; i++)
        shut += f.recs[i].status == JOB_E_SHUTDOWN;
    T_CHECK(shut == abandoned, "abandoned ones answered shutdown (%zu)", shut);
    struct stats_global g;
    fixture_stats(&f, &g);
    T_CHECK(g.abandoned == abandoned, "counted (%lu)", (unsigned long)g.abandoned);
    fixture_free(&f);
}

int main(void)
{
    test_manual_clamp();
    test_autoscale();
    test_cooldown_after_manual();
    test_scale_down_waits_for_idle();
    test_reload_under_load();
    test_reload_refused();
    test_drain();
    test_abandon();
    T_DONE();
}
