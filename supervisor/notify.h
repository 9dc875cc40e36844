/* notify.h - telling systemd how the daemon is doing (sd_notify): READY=1
 * once the minimum pool is up, STATUS= every few seconds, WATCHDOG=1 from
 * the loop while it makes progress, RELOADING=1 / READY=1 around a reload,
 * STOPPING=1 on drain. Without NOTIFY_SOCKET every call does nothing. */
#ifndef MQFORK_SUPERVISOR_NOTIFY_H
#define MQFORK_SUPERVISOR_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

#include "supervisor/loop.h"

struct engine;

struct notify {
    bool enabled;      /* NOTIFY_SOCKET is set */
    bool ready;        /* READY=1 sent */
    uint64_t wd_every; /* watchdog ping interval (half of WATCHDOG_USEC); 0 = off */
    const char *state; /* "running", "draining": the start of STATUS= */
    struct loop *loop;
    const struct engine *engine;
    struct loop_timer status;   /* readiness until READY=1, then STATUS= */
    struct loop_timer watchdog; /* fires only while the loop runs */
};

void notify_init(struct notify *n);

/* Report on ENGINE from the loop's timers: READY=1 once its minimum pool is
 * up, then STATUS= and the watchdog ping when due. 0, or -1 (out of
 * memory). */
int notify_start(struct notify *n, struct loop *l, const struct engine *e);
/* Stop the timers (before the loop or the engine goes). */
void notify_stop(struct notify *n);

void notify_reloading(struct notify *n);
void notify_reloaded(struct notify *n);
/* STOPPING=1; STATUS= says "draining" from now on. */
void notify_stopping(struct notify *n, const char *why);

#endif
