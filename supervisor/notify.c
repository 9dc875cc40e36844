/* notify.c - the systemd notification protocol, through libsystemd's
 * sd_notify (see notify.h). Kept out of the engine on purpose: the engine
 * is also run by tests and the benchmark, where there is no service. */
#include "supervisor/notify.h"

#include <stdio.h>
#include <stdlib.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "shm/stats.h"
#include "supervisor/engine.h"

#define STATUS_EVERY_NS 5000000000ull

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void notify_init(struct notify *n)
{
    *n = (struct notify){.enabled = getenv("NOTIFY_SOCKET") != NULL};
    uint64_t usec = 0;
    /* > 0 only when WATCHDOG_USEC is set and WATCHDOG_PID (if set) is us. */
    if (n->enabled && sd_watchdog_enabled(0, &usec) > 0 && usec > 0)
        n->wd_every = usec * 1000 / 2;
}

static void send_status(const struct engine *e, const char *state)
{
    const struct stats_global *g = engine_stats(e);
    sd_notifyf(0,
               "STATUS=%s: workers %u live, %u busy (target %u); %.1f jobs/s; %zu outstanding; %s",
               state, g->workers_live, g->workers_busy, g->workers_target,
               (double)g->completion_mrate[0] / 1000.0, engine_outstanding(e),
               g->verdict == VERDICT_FALLING_BEHIND ? "falling behind" : "healthy");
}

int64_t notify_tick(struct notify *n, const struct engine *e, const char *state)
{
    if (!n->enabled)
        return -1;
    uint64_t now = mono_ns();
    if (!n->ready && engine_live_workers(e) >= engine_target(e)) {
        n->ready = true;
        sd_notify(0, "READY=1");
        n->next_status_ns = 0;
    }
    if (n->wd_every && now >= n->next_wd_ns) {
        sd_notify(0, "WATCHDOG=1");
        n->next_wd_ns = now + n->wd_every;
    }
    if (now >= n->next_status_ns) {
        send_status(e, state);
        n->next_status_ns = now + STATUS_EVERY_NS;
    }
    uint64_t next = n->next_status_ns;
    if (n->wd_every && n->next_wd_ns < next)
        next = n->next_wd_ns;
    if (!n->ready) /* look again soon: workers become ready without waking us */
        next = now + 10000000;
    return next > now ? (int64_t)(next - now) : 0;
}

void notify_reloading(struct notify *n)
{
    if (!n->enabled)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
               (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);
}

void notify_reloaded(struct notify *n)
{
    if (n->enabled)
        sd_notify(0, "READY=1");
}

void notify_stopping(struct notify *n, const char *why)
{
    if (n->enabled)
        sd_notifyf(0, "STOPPING=1\nSTATUS=draining (%s)", why);
}
