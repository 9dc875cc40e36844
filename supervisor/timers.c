/* timers.c - the 4-ary min-heap behind the loop's timers (see timers.h).
 *
 * Four children per node rather than two: the tree is half as deep, so a
 * timer moving up or down touches half as many cache lines, and the four
 * children it compares sit in one 64-byte line. Each entry carries its
 * deadline, so comparisons read the heap array only; the timer itself is
 * touched to record its new position, and on ties. */
#include "supervisor/timers.h"

#include <assert.h>
#include <stdlib.h>

#define ARITY     4
#define FIRST_CAP 64

struct timer_slot {
    uint64_t at_ns;
    struct loop_timer *t;
};

/* Earlier deadline first; the same deadline, earlier armed first. The
 * difference of arming numbers is read as signed so that the order holds
 * across their wrap-around. */
static inline bool before(const struct timer_slot *a, const struct timer_slot *b)
{
    if (a->at_ns != b->at_ns)
        return a->at_ns < b->at_ns;
    return (int32_t)(a->t->seq - b->t->seq) < 0;
}

static inline void place(struct timers *h, uint32_t i, struct timer_slot s)
{
    h->v[i] = s;
    s.t->pos = i + 1;
}

static void sift_up(struct timers *h, uint32_t i, struct timer_slot s)
{
    while (i > 0) {
        uint32_t parent = (i - 1) / ARITY;
        if (!before(&s, &h->v[parent]))
            break;
        place(h, i, h->v[parent]);
        i = parent;
    }
    place(h, i, s);
}

static void sift_down(struct timers *h, uint32_t i, struct timer_slot s)
{
    for (;;) {
        uint32_t first = ARITY * i + 1;
        if (first >= h->n)
            break;
        uint32_t end = first + ARITY < h->n ? first + ARITY : h->n, least = first;
        for (uint32_t c = first + 1; c < end; c++)
            if (before(&h->v[c], &h->v[least]))
                least = c;
        if (!before(&h->v[least], &s))
            break;
        place(h, i, h->v[least]);
        i = least;
    }
    place(h, i, s);
}

/* Put S at index I, which holds nothing of value, and restore the order. */
static void settle(struct timers *h, uint32_t i, struct timer_slot s)
{
    if (i > 0 && before(&s, &h->v[(i - 1) / ARITY]))
        sift_up(h, i, s);
    else
        sift_down(h, i, s);
}

int timers_reserve(struct timers *h)
{
    if (h->reserved == h->cap) {
        uint32_t cap = h->cap ? h->cap * 2 : FIRST_CAP;
        struct timer_slot *v = cap > h->cap ? realloc(h->v, (size_t)cap * sizeof(*v)) : NULL;
        if (!v)
            return -1;
        h->v = v;
        h->cap = cap;
    }
    h->reserved++;
    return 0;
}

void timers_release(struct timers *h)
{
    assert(h->reserved > h->n);
    h->reserved--;
}

void timers_free(struct timers *h)
{
    free(h->v);
    *h = (struct timers){0};
}

void timers_arm(struct timers *h, struct loop_timer *t, uint64_t at_ns)
{
    if (at_ns <= h->expiring_now_ns)
        at_ns = h->expiring_now_ns + 1;
    t->at_ns = at_ns;
    t->seq = h->seq++;
    struct timer_slot s = {at_ns, t};
    if (t->pos) {
        settle(h, t->pos - 1, s);
        return;
    }
    assert(h->n < h->reserved); /* every armed timer was set up */
    sift_up(h, h->n++, s);
}

void timers_cancel(struct timers *h, struct loop_timer *t)
{
    if (!t->pos)
        return;
    uint32_t i = t->pos - 1;
    t->pos = 0;
    struct timer_slot last = h->v[--h->n];
    if (i < h->n)
        settle(h, i, last);
}

uint64_t timers_next(const struct timers *h)
{
    return h->n ? h->v[0].at_ns : UINT64_MAX;
}

unsigned timers_expire(struct timers *h, uint64_t now_ns)
{
    unsigned fired = 0;
    h->expiring_now_ns = now_ns;
    while (h->n && h->v[0].at_ns <= now_ns) {
        struct loop_timer *t = h->v[0].t;
        timers_cancel(h, t);
        t->fn(t->ctx);
        fired++;
    }
    h->expiring_now_ns = 0;
    return fired;
}
