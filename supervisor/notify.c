/* notify.c - the systemd notification protocol, through libsystemd's
 * sd_notify (see notify.h). Kept out of the engine on purpose: the engine
 * is also run by tests and the benchmark, where there is no service. */
#include "supervisor/notify.h"

#include <stdio.h>
#include <stdlib.h>
#include <systemd/sd-daemon.h>

#include "shm/clock.h"
#include "shm/stats.h"
#include "supervisor/engine.h"

#define STATUS_EVERY_NS (5 * NS_PER_S)
/* Nothing tells us when the pool is up: until it is, look this often. */
#define READY_POLL_NS 10000000

void notify_init(struct notify *n)
{
    *n = (struct notify){.enabled = getenv("NOTIFY_SOCKET") != NULL, .state = "running"};
    uint64_t usec = 0;
    /* > 0 only when WATCHDOG_USEC is set and WATCHDOG_PID (if set) is us. */
    if (n->enabled && sd_watchdog_enabled(0, &usec) > 0 && usec > 0)
        n->wd_every = usec * 1000 / 2;
}

/* The pool's size comes from the engine itself: the statistics block is
 * refreshed once a second, and right after READY=1 it still said 0. */
static void send_status(const struct notify *n)
{
    const struct stats_global *g = engine_stats(n->engine);
    sd_notifyf(0,
               "STATUS=%s: workers %u live, %u busy (target %u); %.1f jobs/s; %zu outstanding; %s",
               n->state, engine_live_workers(n->engine), g->workers_busy, engine_target(n->engine),
               (double)g->completion_mrate[0] / 1000.0, engine_outstanding(n->engine),
               g->verdict == VERDICT_FALLING_BEHIND ? "falling behind" : "healthy");
}

static void on_status(void *ctx)
{
    struct notify *n = ctx;
    uint64_t now = loop_now_ns(n->loop);
    if (!n->ready && engine_live_workers(n->engine) < engine_target(n->engine)) {
        loop_timer_arm(n->loop, &n->status, now + READY_POLL_NS);
        return;
    }
    if (!n->ready) {
        n->ready = true;
        sd_notify(0, "READY=1");
    }
    send_status(n);
    loop_timer_arm(n->loop, &n->status, now + STATUS_EVERY_NS);
}

static void on_watchdog(void *ctx)
{
    struct notify *n = ctx;
    sd_notify(0, "WATCHDOG=1");
    loop_timer_arm(n->loop, &n->watchdog, loop_now_ns(n->loop) + n->wd_every);
}

int notify_start(struct notify *n, struct loop *l, const struct engine *e)
{
    if (!n->enabled)
        return 0;
    n->loop = l;
    n->engine = e;
    if (loop_timer_init(l, &n->status, on_status, n) < 0 ||
        loop_timer_init(l, &n->watchdog, on_watchdog, n) < 0)
        return -1;
    uint64_t now = loop_now_ns(l);
    loop_timer_arm(l, &n->status, now);
    if (n->wd_every)
        loop_timer_arm(l, &n->watchdog, now);
    return 0;
}

void notify_stop(struct notify *n)
{
    if (!n->loop)
        return;
    loop_timer_fini(n->loop, &n->status);
    loop_timer_fini(n->loop, &n->watchdog);
}

void notify_reloading(struct notify *n)
{
    if (!n->enabled)
        return;
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)(mono_ns() / 1000));
}

void notify_reloaded(struct notify *n)
{
    if (n->enabled)
        sd_notify(0, "READY=1");
}

void notify_stopping(struct notify *n, const char *why)
{
    n->state = "draining";
    if (n->enabled)
        sd_notifyf(0, "STOPPING=1\nSTATUS=draining (%s)", why);
}
