/* scale.h - the autoscaler, a part of the engine (its functions are in
 * engine_impl.h and engine.h: engine_scale_manual). Every scaling.interval_s
 * it looks at the figures of the last interval and moves the pool target:
 *
 *   up by scaling.step when   load > up_load, or CPU > up_cpu, or
 *                             p95 > up_p95_ms, or pending > up_pending_per_worker x live
 *   down by one when          load < down_load and CPU < down_cpu and
 *                             p95 < down_p95_ms and nothing is pending
 *
 * load: a live worker's outstanding work against its bound - the larger of
 *       its in-flight jobs / workers.inflight and their expected run time /
 *       workers.inflight_us, at most 1 - averaged over live workers and over
 *       the interval's ticks;
 * CPU:  the live workers' mean CPU use over the last second (/proc);
 * p95:  of the handler run times answered during the interval.
 *
 * After an event (its own or a manual one) no other comes before the
 * cooldown of that event's direction has passed: up_cooldown_s after going
 * up, down_cooldown_s after going down. Each event is logged and written to
 * the stats area's scale ring. Manual changes come in through
 * engine_scale_manual (engine.h), which is scale_manual. */
#ifndef MQFORK_SUPERVISOR_SCALE_H
#define MQFORK_SUPERVISOR_SCALE_H

#include <stdbool.h>

#include "conf/config.h"

struct engine;

/* Take settings C (at start and on reload); once the engine runs, the next
 * check is one interval on. */
void scale_configure(struct engine *e, const struct conf_scaling *c);
/* Arm the check for one interval from now (engine start). */
void scale_restart(struct engine *e);
/* Each engine tick: add one load sample. */
void scale_sample(struct engine *e);
/* The check, every interval: the function of the engine's scale.check timer. */
void scale_check(void *engine);
/* An operator's change by DELTA (engine_scale_manual, engine.h). */
unsigned scale_manual(struct engine *e, int delta, const char *who);
/* Log an event FROM -> TO and put it in the stats ring; starts the cooldown. */
void scale_record(struct engine *e, unsigned from, unsigned to, bool up, const char *reason);

#endif
