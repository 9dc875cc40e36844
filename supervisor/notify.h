/* notify.h - telling systemd how the daemon is doing (sd_notify): READY=1
 * once the minimum pool is up, STATUS= every few seconds, WATCHDOG=1 from
 * the loop while it makes progress, RELOADING=1 / READY=1 around a reload,
 * STOPPING=1 on drain. Without NOTIFY_SOCKET every call does nothing. */
#ifndef MQFORK_SUPERVISOR_NOTIFY_H
#define MQFORK_SUPERVISOR_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

struct engine;

struct notify {
    bool enabled;      /* NOTIFY_SOCKET is set */
    bool ready;        /* READY=1 sent */
    uint64_t wd_every; /* watchdog ping interval (half of WATCHDOG_USEC); 0 = off */
    uint64_t next_wd_ns, next_status_ns;
};

void notify_init(struct notify *n);

/* From each turn of the loop: READY=1 once ENGINE's minimum pool is up,
 * then the watchdog ping and STATUS= when due. Returns nanoseconds until
 * it next needs a turn (the loop must not sleep longer), or -1. */
int64_t notify_tick(struct notify *n, const struct engine *e, const char *state);

void notify_reloading(struct notify *n);
void notify_reloaded(struct notify *n);
void notify_stopping(struct notify *n, const char *why);

#endif
