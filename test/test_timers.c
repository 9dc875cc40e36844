/* test_timers.c - the event loop's timers and hooks: firing order, ties,
 * cancel and re-arm, 100,000 armed at once, callbacks that arm and cancel
 * other timers, and the hooks' say in the loop's sleep. Timers are armed in
 * the past where a test needs them due, so no test waits on the clock but
 * the one that checks the loop sleeps until its timer. */
#include <stdlib.h>
#include <string.h>

#include "shm/clock.h"
#include "supervisor/loop.h"
#include "test/t.h"

#define MS 1000000ull

/* A timer that records when, and in which pass, it fired. */
struct probe {
    struct loop_timer t;
    struct recorder *r;
    unsigned id;
    uint64_t armed_at;
};

struct recorder {
    struct loop *l;
    unsigned *order; /* ids, in firing order */
    size_t n, cap;
    uint64_t pass_now; /* loop_now_ns() seen by the first callback */
    bool now_moved;    /* a later callback of the same run saw another */
};

static uint32_t rnd(uint32_t *x)
{
    *x ^= *x << 13, *x ^= *x >> 17, *x ^= *x << 5;
    return *x;
}

static void on_probe(void *ctx)
{
    struct probe *p = ctx;
    struct recorder *r = p->r;
    uint64_t now = loop_now_ns(r->l);
    if (r->n == 0)
        r->pass_now = now;
    r->now_moved |= now != r->pass_now;
    if (r->n < r->cap)
        r->order[r->n] = p->id;
    r->n++;
}

static struct probe *probes_new(struct recorder *r, size_t n)
{
    struct probe *p = calloc(n, sizeof(*p));
    r->order = calloc(n, sizeof(*r->order));
    r->cap = n;
    T_REQUIRE(p && r->order, "memory for %zu probes", n);
    for (size_t i = 0; i < n; i++) {
        p[i].r = r;
        p[i].id = (unsigned)i;
        T_REQUIRE(loop_timer_init(r->l, &p[i].t, on_probe, &p[i]) == 0, "timer %zu set up", i);
    }
    return p;
}

static void probes_free(struct recorder *r, struct probe *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        loop_timer_fini(r->l, &p[i].t);
    free(p);
    free(r->order);
    r->order = NULL;
    r->n = r->cap = 0;
}

static void arm(struct recorder *r, struct probe *p, uint64_t at)
{
    loop_timer_arm(r->l, &p->t, at);
    p->armed_at = at;
}

/* Fired in deadline order, ties in arming order (RANK: when each probe
 * was last armed). */
static bool in_order(const struct recorder *r, const struct probe *p, const unsigned *rank)
{
    for (size_t i = 1; i < r->n; i++) {
        const struct probe *a = &p[r->order[i - 1]], *b = &p[r->order[i]];
        if (a->armed_at > b->armed_at)
            return false;
        if (a->armed_at == b->armed_at && rank[a->id] > rank[b->id])
            return false;
    }
    return true;
}

/* N timers at random deadlines, all already due, some re-armed and some
 * cancelled: one pass fires exactly the armed ones, in order, all seeing
 * the same loop_now_ns(). */
static void test_order(struct loop *l, size_t n, unsigned spread)
{
    struct recorder r = {.l = l};
    struct probe *p = probes_new(&r, n);
    unsigned *rank = calloc(n, sizeof(*rank)), next_rank = 0;
    uint64_t base = mono_ns() - spread - MS; /* all due */
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < n; i++) {
        arm(&r, &p[i], base + rnd(&x) % spread);
        rank[i] = next_rank++;
    }
    for (size_t k = 0; k < n / 10; k++) {
        struct probe *q = &p[rnd(&x) % n];
        if (k % 2) {
            arm(&r, q, base + rnd(&x) % spread); /* re-armed: last among its ties */
            rank[q->id] = next_rank++;
        } else {
            loop_timer_cancel(l, &q->t);
        }
    }
    size_t live = 0;
    for (size_t i = 0; i < n; i++)
        live += loop_timer_armed(&p[i].t);
    int ran = loop_run(l, 0);
    T_CHECK(r.n == live && (size_t)ran == live, "%zu armed fired (fired %zu, ran %d)", live, r.n,
            ran);
    T_CHECK(in_order(&r, p, rank), "%zu timers fired by deadline, ties in arming order", n);
    T_CHECK(!r.now_moved, "one loop_now_ns() for the whole pass");
    bool none_armed = true;
    for (size_t i = 0; i < n; i++)
        none_armed &= !loop_timer_armed(&p[i].t);
    T_CHECK(none_armed, "no timer armed after firing");
    free(rank);
    probes_free(&r, p, n);
}

/* Ten timers with one deadline fire in arming order; one re-armed for the
 * same deadline moves to the end, and arm_by keeps the earlier time. */
static void test_ties(struct loop *l)
{
    struct recorder r = {.l = l};
    struct probe *p = probes_new(&r, 10);
    uint64_t at = mono_ns() - MS;
    for (unsigned i = 0; i < 10; i++)
        arm(&r, &p[i], at);
    arm(&r, &p[3], at);
    loop_timer_arm_by(l, &p[5].t, at + 1000 * MS); /* armed earlier: stays */
    loop_run(l, 0);
    static const unsigned want[10] = {0, 1, 2, 4, 5, 6, 7, 8, 9, 3};
    T_CHECK(r.n == 10 && memcmp(r.order, want, sizeof(want)) == 0,
            "ties in arming order, the re-armed one last (%u %u %u ... %u)", r.order[0], r.order[1],
            r.order[2], r.order[9]);
    probes_free(&r, p, 10);
}

/* Cancel, re-arm later and earlier, and fini of an armed timer. */
static void test_cancel_rearm(struct loop *l)
{
    struct recorder r = {.l = l};
    struct probe *p = probes_new(&r, 4);
    uint64_t now = mono_ns(), far = now + 3600 * 1000 * MS;
    arm(&r, &p[0], now - MS);
    loop_timer_cancel(l, &p[0].t);
    loop_timer_cancel(l, &p[0].t); /* twice: nothing more */
    arm(&r, &p[1], now - MS);
    arm(&r, &p[1], far); /* moved out of reach */
    arm(&r, &p[2], far);
    arm(&r, &p[2], now - 2 * MS); /* moved in */
    loop_timer_arm_by(l, &p[3].t, now - MS);
    loop_timer_arm_by(l, &p[3].t, far); /* later than armed: no change */
    loop_run(l, 0);
    T_CHECK(r.n == 2 && r.order[0] == 2 && r.order[1] == 3, "only 2 then 3 fired (%zu fired)", r.n);
    T_CHECK(loop_timer_armed(&p[1].t) && loop_timer_at(&p[1].t) == far, "1 still armed, far off");
    loop_timer_fini(l, &p[1].t); /* armed: cancelled with it */
    T_CHECK(!loop_timer_armed(&p[1].t), "fini disarms");
    T_CHECK(loop_timer_init(l, &p[1].t, on_probe, &p[1]) == 0, "set up again");
    loop_run(l, 0);
    T_CHECK(r.n == 2, "nothing else fired");
    probes_free(&r, p, 4);
}

/* A callback that cancels a timer due in the same pass, arms another for a
 * time already past, and re-arms itself for "now": the pass ends, and the
 * two armed ones fire in the next. */
struct chain {
    struct loop *l;
    struct loop_timer a, b, c;
    unsigned fired_a, fired_b, fired_c;
};

static void on_a(void *ctx)
{
    struct chain *k = ctx;
    if (k->fired_a++ == 0) {
        loop_timer_cancel(k->l, &k->b);
        loop_timer_arm(k->l, &k->c, loop_now_ns(k->l) - MS);
        loop_timer_arm(k->l, &k->a, loop_now_ns(k->l));
    }
}

static void on_b(void *ctx)
{
    ((struct chain *)ctx)->fired_b++;
}

static void on_c(void *ctx)
{
    ((struct chain *)ctx)->fired_c++;
}

static void test_callbacks_arm_and_cancel(struct loop *l)
{
    struct chain k = {.l = l};
    T_REQUIRE(loop_timer_init(l, &k.a, on_a, &k) == 0 && loop_timer_init(l, &k.b, on_b, &k) == 0 &&
                  loop_timer_init(l, &k.c, on_c, &k) == 0,
              "timers set up");
    uint64_t past = mono_ns() - 5 * MS;
    loop_timer_arm(l, &k.a, past);
    loop_timer_arm(l, &k.b, past + 1);
    int ran = loop_run(l, 0);
    T_CHECK(ran == 1 && k.fired_a == 1 && k.fired_b == 0 && k.fired_c == 0,
            "first pass: a only, b cancelled by it (ran %d)", ran);
    T_CHECK(loop_timer_armed(&k.a) && loop_timer_armed(&k.c), "a and c armed for the next pass");
    ran = loop_run(l, 0);
    T_CHECK(ran == 2 && k.fired_a == 2 && k.fired_c == 1 && k.fired_b == 0,
            "second pass: c and a (ran %d)", ran);
    loop_timer_fini(l, &k.a);
    loop_timer_fini(l, &k.b);
    loop_timer_fini(l, &k.c);
}

/* The loop sleeps until its earliest timer, not past it and not before. */
static void test_sleeps_until_timer(struct loop *l)
{
    struct recorder r = {.l = l};
    struct probe *p = probes_new(&r, 2);
    uint64_t now = mono_ns();
    arm(&r, &p[0], now + 20 * MS);
    arm(&r, &p[1], now + 3600 * 1000 * MS);
    while (r.n == 0)
        loop_run(l, -1);
    T_CHECK(r.n == 1 && r.order[0] == 0, "the near timer fired, the far one did not");
    T_CHECK(r.pass_now >= now + 20 * MS, "not before its time (%.3f ms early)",
            ((double)(now + 20 * MS) - (double)r.pass_now) / 1e6);
    probes_free(&r, p, 2);
}

/* ---- hooks ---------------------------------------------------------- */

struct hook_probe {
    struct loop_hook h;
    unsigned before, may, after;
    bool busy_left;  /* before_sleep reports work, once */
    bool allow;      /* may_sleep's answer */
    bool after_seen; /* after_sleep came after may_sleep */
};

static bool hp_before(void *ctx)
{
    struct hook_probe *p = ctx;
    p->before++;
    bool busy = p->busy_left;
    p->busy_left = false;
    return busy;
}

static bool hp_may(void *ctx)
{
    struct hook_probe *p = ctx;
    p->may++;
    return p->allow;
}

static void hp_after(void *ctx)
{
    struct hook_probe *p = ctx;
    p->after++;
    p->after_seen = p->after == p->may;
}

static void test_hooks(struct loop *l)
{
    struct hook_probe hp = {0};
    hp.h = (struct loop_hook){
        .before_sleep = hp_before, .may_sleep = hp_may, .after_sleep = hp_after, .ctx = &hp};
    loop_hook_add(l, &hp.h);
    struct recorder r = {.l = l};
    struct probe *p = probes_new(&r, 1);
    arm(&r, &p[0], mono_ns() + 3600 * 1000 * MS);

    hp.busy_left = true; /* work done: no sleep, however long it may wait */
    loop_run(l, -1);
    T_CHECK(hp.before == 1 && hp.may == 0, "busy hook: the loop did not ask to sleep");

    hp.allow = false; /* work of its own came: the loop stays awake */
    loop_run(l, -1);
    T_CHECK(hp.before == 2 && hp.may == 1 && hp.after == 1 && hp.after_seen,
            "may_sleep said no: after_sleep ran, no sleep");

    hp.allow = true; /* sleeps until the timer; then the hook runs again */
    arm(&r, &p[0], mono_ns() + 5 * MS);
    while (r.n == 0)
        loop_run(l, -1);
    T_CHECK(hp.may >= 2 && hp.after == hp.may && hp.before >= 4,
            "slept, woke, and the hook ran after the timer (%u before, %u may, %u after)",
            hp.before, hp.may, hp.after);

    loop_hook_remove(l, &hp.h);
    unsigned before = hp.before;
    loop_run(l, 0);
    T_CHECK(hp.before == before, "a removed hook runs no more");
    probes_free(&r, p, 1);
}

int main(void)
{
    struct loop *l = loop_new(64);
    T_REQUIRE(l, "loop");
    test_order(l, 1000, 200); /* many ties */
    test_order(l, 100000, 1u << 28);
    test_ties(l);
    test_cancel_rearm(l);
    test_callbacks_arm_and_cancel(l);
    test_sleeps_until_timer(l);
    test_hooks(l);
    loop_free(l);
    T_DONE();
}
