/* loop.h - the supervisor's event loop: one io_uring that watches file
 * descriptors (signalfd, the results eventfd, worker pidfds, the MQTT and
 * later the UDP sockets), the timers, and the decision to sleep.
 *
 * One iteration (loop_run), as in Redis's ae.c:
 *
 *   due timers -> before-sleep hooks (the engine's round, MQTT's flush)
 *   -> ready watches -> if nothing was done: ask the hooks, sleep until a
 *   watch fires or the earliest timer is due, then ready watches, due
 *   timers, and the hooks again if either ran
 *
 * Under load the loop makes few system calls: completions are read from the
 * shared completion ring, and io_uring_enter runs only to submit a new watch,
 * to post completions the kernel has flagged as waiting (cooperative task
 * running), or to sleep when nothing is left to do. */
#ifndef MQFORK_SUPERVISOR_LOOP_H
#define MQFORK_SUPERVISOR_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#include "supervisor/timers.h"

struct loop;
struct loop_watch;

/* Called with the poll events that fired (POLLIN, ...) or a negative errno. */
typedef void (*loop_fn)(void *ctx, int events);

struct loop *loop_new(unsigned entries);
void loop_free(struct loop *l);

/* Watch FD for EVENTS. A repeating watch fires every time FD is ready until
 * cancelled; a one-shot watch fires once and is then gone by itself. */
struct loop_watch *loop_watch(struct loop *l, int fd, unsigned events, bool repeat, loop_fn fn,
                              void *ctx);

/* Stop a watch; its function is not called again. The watch's memory is
 * released once the kernel confirms. */
void loop_cancel(struct loop *l, struct loop_watch *w);

/* ---- timers ------------------------------------------------------------
 * A timer fires once; its function may arm it again. Set one up once (this
 * reserves its room in the heap: the only step that can fail), then arm,
 * re-arm and cancel it any number of times in O(log n), without allocating.
 * Ties fire in the order they were armed. A timer never fires early, and
 * late by at most 50 us when the loop slept for it: timers due closer
 * together than that share one wake-up. */

/* 0, or -1 when memory ran out (T is then left not set up). */
int loop_timer_init(struct loop *l, struct loop_timer *t, loop_timer_fn fn, void *ctx);
/* Cancel T and give back its room; T may then be freed. Does nothing to a
 * timer never set up, or zeroed. */
void loop_timer_fini(struct loop *l, struct loop_timer *t);
/* Fire T at AT_NS (mono_ns() time), armed or not: an armed timer moves. A
 * time already past fires at the next expiry (see timers_arm). */
void loop_timer_arm(struct loop *l, struct loop_timer *t, uint64_t at_ns);
/* Fire T no later than AT_NS: arm it unless it is armed for earlier. */
void loop_timer_arm_by(struct loop *l, struct loop_timer *t, uint64_t at_ns);
void loop_timer_cancel(struct loop *l, struct loop_timer *t);

/* The time of this iteration, read once when it started and again after
 * the loop slept; outside loop_run, the time now. Deadlines measured from
 * it agree within one iteration and cost no clock read. */
uint64_t loop_now_ns(const struct loop *l);

/* ---- hooks ---------------------------------------------------------------
 * Work a layer does once per iteration besides its watches and timers, and
 * its say in whether the loop sleeps. The owner embeds the hook and fills
 * it in; hooks run in the order they were added. */
struct loop_hook {
    /* Every iteration, before ready watches are handled. Returns whether it
     * did work: then the loop does not sleep in this iteration. */
    bool (*before_sleep)(void *ctx);
    /* Optional. When the loop is about to sleep (no hook did work, no watch
     * is ready, no timer is due): may wait briefly for work of its own and
     * returns false to keep the loop awake. The loop may still not sleep. */
    bool (*may_sleep)(void *ctx);
    /* Optional. After every may_sleep, once the loop slept or chose not to:
     * undo what may_sleep set up for the sleep. */
    void (*after_sleep)(void *ctx);
    void *ctx;
    struct loop_hook *next; /* the loop's */
};

/* Not from inside a hook. */
void loop_hook_add(struct loop *l, struct loop_hook *h);
void loop_hook_remove(struct loop *l, struct loop_hook *h);

/* One iteration (see the top of this file). When nothing was to be done
 * and WAIT_NS is not zero, it sleeps until a watch fires, the earliest
 * timer is due, or WAIT_NS passes (< 0: no limit). What the caller finds
 * afterwards has been through the hooks. Returns the number of watch and
 * timer callbacks run. Not from inside a callback or hook. */
int loop_run(struct loop *l, int64_t wait_ns);

#endif
