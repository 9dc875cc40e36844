/* bench_timers.c - the event loop's timers at the scale voice sessions need,
 * for mqfork-bench: N armed at once; what arming, moving, firing and
 * cancelling one costs; and N sessions each paced every 60 ms. Goal (issue
 * "seams"): 100,000 armed, arming and firing each under 1 us. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "shm/clock.h"
#include "supervisor/loop.h"
#include "tools/bench.h"

#define PACE_NS    (60 * 1000000ull) /* a voice session's downlink frame */
#define OPS_ROUNDS 5
#define OPS        5 /* measured per round: insert, re-arm, expiry, cancel, worst insert */

struct timer_figures {
    double insert_ns, rearm_ns, expire_ns, cancel_ns; /* per operation */
    double insert_worst_ns;                           /* each the earliest yet */
    uint64_t fired_in_one_pass;
    double paced_per_s, paced_want_per_s; /* firings per second: done, wanted */
    double paced_cpu_ns;                  /* CPU per firing, callback and re-arm included */
    double paced_core;                    /* share of one core */
};

struct btimer {
    struct loop_timer t;
    struct loop *l;
    uint64_t *fired;
    uint64_t period_ns; /* 0: fire once */
};

static void on_fire(void *ctx)
{
    struct btimer *b = ctx;
    (*b->fired)++;
    if (b->period_ns) /* from its own deadline: no drift */
        loop_timer_arm(b->l, &b->t, loop_timer_at(&b->t) + b->period_ns);
}

static uint32_t rnd(uint32_t *x)
{
    *x ^= *x << 13, *x ^= *x >> 17, *x ^= *x << 5;
    return *x;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Nanoseconds per arming of every timer at a moment of the last second
 * (so all are due): a random one, or with X NULL each earlier than all
 * before it, so that each climbs to the top of the heap (the worst case). */
static double arm_all(struct btimer *b, size_t n, uint32_t *x)
{
    uint64_t base = mono_ns() - NS_PER_S;
    uint64_t t0 = mono_ns();
    for (size_t i = 0; i < n; i++)
        loop_timer_arm(b[i].l, &b[i].t, base + (x ? rnd(x) % NS_PER_S : n - i));
    return (double)(mono_ns() - t0) / (double)n;
}

/* One round of insert, re-arm, expiry, cancel and worst-case insert with
 * N armed, in nanoseconds per operation; then how many fired in the one
 * expiry pass. */
static void ops_round(struct btimer *b, size_t n, uint64_t *fired, uint32_t *x, double ns[OPS + 1])
{
    struct loop *l = b[0].l;
    ns[0] = arm_all(b, n, x);
    uint64_t base = mono_ns() - NS_PER_S, t0 = mono_ns();
    for (size_t i = 0; i < n; i++)
        loop_timer_arm(l, &b[rnd(x) % n].t, base + rnd(x) % NS_PER_S);
    ns[1] = (double)(mono_ns() - t0) / (double)n;
    *fired = 0;
    t0 = mono_ns();
    loop_run(l, 0); /* all due: one pass fires them all */
    ns[2] = (double)(mono_ns() - t0) / (double)n;
    ns[OPS] = (double)*fired;
    arm_all(b, n, x);
    t0 = mono_ns();
    for (size_t i = 0; i < n; i++)
        loop_timer_cancel(l, &b[(i * 7919) % n].t); /* a prime stride: scattered */
    ns[3] = (double)(mono_ns() - t0) / (double)n;
    ns[4] = arm_all(b, n, NULL);
    loop_run(l, 0);
}

/* The median of OPS_ROUNDS rounds: on a shared machine one round can lose
 * its core for a while. */
static void bench_ops(struct btimer *b, size_t n, uint64_t *fired, struct timer_figures *f)
{
    double ns[OPS][OPS_ROUNDS];
    uint32_t x = 88172645u;
    for (int r = 0; r < OPS_ROUNDS; r++) {
        double one[OPS + 1];
        ops_round(b, n, fired, &x, one);
        for (int k = 0; k < OPS; k++)
            ns[k][r] = one[k];
        f->fired_in_one_pass = (uint64_t)one[OPS];
    }
    f->insert_ns = bench_percentile(ns[0], OPS_ROUNDS, 0.5);
    f->rearm_ns = bench_percentile(ns[1], OPS_ROUNDS, 0.5);
    f->expire_ns = bench_percentile(ns[2], OPS_ROUNDS, 0.5);
    f->cancel_ns = bench_percentile(ns[3], OPS_ROUNDS, 0.5);
    f->insert_worst_ns = bench_percentile(ns[4], OPS_ROUNDS, 0.5);
}

/* N sessions, each paced every 60 ms from a random phase, for SECONDS:
 * firings per second and the CPU the loop spent on them. */
static void bench_pacing(struct btimer *b, size_t n, uint64_t *fired, double seconds,
                         struct timer_figures *f)
{
    struct loop *l = b[0].l;
    uint32_t x = 521288629u;
    uint64_t now = mono_ns();
    for (size_t i = 0; i < n; i++) {
        b[i].period_ns = PACE_NS;
        loop_timer_arm(l, &b[i].t, now + rnd(&x) % PACE_NS);
    }
    *fired = 0;
    double c0 = cpu_s();
    uint64_t t0 = mono_ns(), end = t0 + (uint64_t)(seconds * 1e9);
    while (mono_ns() < end)
        loop_run(l, (int64_t)(end - mono_ns()));
    double wall = (double)(mono_ns() - t0) / 1e9, cpu = cpu_s() - c0;
    f->paced_per_s = (double)*fired / wall;
    f->paced_want_per_s = (double)n * 1e9 / (double)PACE_NS;
    f->paced_cpu_ns = *fired ? cpu * 1e9 / (double)*fired : 0;
    f->paced_core = cpu / wall;
}

static void report(size_t n, const struct timer_figures *f)
{
    printf("event-loop timers: %zu armed at once (median of %d rounds)\n", n, OPS_ROUNDS);
    bench_row("insert (arm)", f->insert_ns, "ns/op", "<=", 1000);
    bench_row("insert, each the earliest", f->insert_worst_ns, "ns/op", "<=", 1000);
    bench_row("expiry (fire + callback)", f->expire_ns, "ns/op", "<=", 1000);
    printf("  %-28s %12.1f ns/op; cancel %.1f ns/op; %lu fired in one pass\n", "re-arm (move)",
           f->rearm_ns, f->cancel_ns, (unsigned long)f->fired_in_one_pass);
    printf("  %-28s %12.0f fires/s (of %.0f); %.0f ns CPU per fire and re-arm, %.0f%% of a core\n",
           "each paced every 60 ms", f->paced_per_s, f->paced_want_per_s, f->paced_cpu_ns,
           f->paced_core * 100);
}

void bench_timers(size_t n, double seconds)
{
    struct loop *l = loop_new(8);
    struct btimer *b = calloc(n, sizeof(*b));
    uint64_t fired = 0;
    size_t ready = 0;
    for (; l && b && ready < n; ready++) {
        b[ready] = (struct btimer){.l = l, .fired = &fired};
        if (loop_timer_init(l, &b[ready].t, on_fire, &b[ready]) < 0)
            break;
    }
    if (ready == n) {
        struct timer_figures f = {0};
        bench_ops(b, n, &fired, &f);
        bench_pacing(b, n, &fired, seconds, &f);
        report(n, &f);
    } else {
        printf("event-loop timers: no memory for %zu (%zu set up)\n", n, ready);
    }
    for (size_t i = 0; i < ready; i++)
        loop_timer_fini(l, &b[i].t);
    free(b);
    loop_free(l);
}
