/* timers.h - the event loop's timers: one-shot deadlines kept in a 4-ary
 * min-heap, so that arming, re-arming, cancelling and expiring each cost
 * O(log n) with n the number armed, and nothing is allocated per arm.
 *
 * The timer itself is embedded by its owner (a worker, a session, the MQTT
 * client): 32 bytes. The heap holds 16 bytes per timer set up: its room
 * grows when a timer is set up (timers_reserve), never when one is armed,
 * so arming cannot fail. Ties fire in the order they were armed.
 *
 * Use it through the loop (loop.h: loop_timer_init, loop_timer_arm, ...);
 * this header is the data structure, with no io_uring and no clock. */
#ifndef MQFORK_SUPERVISOR_TIMERS_H
#define MQFORK_SUPERVISOR_TIMERS_H

#include <stdbool.h>
#include <stdint.h>

typedef void (*loop_timer_fn)(void *ctx);

/* Owned by the caller; its fields are the heap's, read them through
 * loop_timer_armed() and loop_timer_at(). */
struct loop_timer {
    uint64_t at_ns;   /* when it fires, while armed */
    loop_timer_fn fn; /* NULL: not set up */
    void *ctx;
    uint32_t pos; /* its index in the heap + 1; 0: not armed */
    uint32_t seq; /* arming order, to break ties */
};

struct timer_slot; /* a heap entry: the deadline and its timer */

struct timers {
    struct timer_slot *v;
    uint32_t n;               /* armed */
    uint32_t cap;             /* room in v */
    uint32_t reserved;        /* timers set up: n never passes it */
    uint32_t seq;             /* next arming's number */
    uint64_t expiring_now_ns; /* inside timers_expire: the time it expires up to */
};

static inline bool loop_timer_armed(const struct loop_timer *t)
{
    return t->pos != 0;
}

/* When an armed timer fires (CLOCK_MONOTONIC ns). */
static inline uint64_t loop_timer_at(const struct loop_timer *t)
{
    return t->at_ns;
}

/* Room for one more timer. 0, or -1 when memory ran out. */
int timers_reserve(struct timers *h);
/* One timer fewer (it must not be armed). */
void timers_release(struct timers *h);
void timers_free(struct timers *h);

/* Arm T for AT_NS, or move it there if armed. A timer armed from inside
 * timers_expire for a time it already covers fires in the next pass, not
 * in this one: a callback that arms its own timer for "now" cannot keep the
 * pass going for ever. */
void timers_arm(struct timers *h, struct loop_timer *t, uint64_t at_ns);
void timers_cancel(struct timers *h, struct loop_timer *t);

/* The earliest deadline armed, or UINT64_MAX when none is. */
uint64_t timers_next(const struct timers *h);

/* Fire, earliest first, every timer due at NOW_NS; each is disarmed before
 * its function runs, which may arm or cancel any timer (itself too).
 * Returns how many fired. */
unsigned timers_expire(struct timers *h, uint64_t now_ns);

#endif
