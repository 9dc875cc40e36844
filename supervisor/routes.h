/* routes.h - the routes of the configuration: each turns the MQTT messages
 * of its topic filter into jobs of one kind, and each job's outcome into a
 * reply on its reply topic or an error report on errors.topic.
 *
 *   message -> routes_on_message -> engine_submit
 *   outcome -> on_job_done -> mqtt_publish (reply or error report)
 */
#ifndef MQFORK_SUPERVISOR_ROUTES_H
#define MQFORK_SUPERVISOR_ROUTES_H

#include "conf/config.h"
#include "supervisor/mqtt.h"

struct engine;
struct routes;

struct loop;

/* Register one job kind per route of C (C must outlive the routes). Before
 * engine_start. L runs the timers of correlation windows (NULL: none
 * expire). NULL on failure (logged). */
struct routes *routes_new(const struct conf *c, struct engine *e, struct loop *l);

/* Start publishing through M and subscribe every route's filter; the
 * routes' figures (mqtt_unrouted) get their block "routes" in the
 * engine's segment (the engine has started). */
int routes_attach(struct routes *r, struct mqtt *m);

/* Follow a reloaded configuration C (the engine has taken it already):
 * kinds by route name, subscriptions replaced. Jobs in flight keep what
 * they need to be answered. 0, or -1 (logged) with the routes unchanged. */
int routes_reload(struct routes *r, const struct conf *c);

/* The MQTT message callback (ctx = the routes). */
void routes_on_message(void *ctx, const struct mqtt_message *msg);

void routes_free(struct routes *r);

#endif
