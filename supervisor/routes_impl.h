/* routes_impl.h - private to supervisor/routes*.c: the routes' state, the
 * request a message becomes, and what routes.c (message to job, outcome to
 * reply) and routes_correlate.c (correlation windows) share. */
#ifndef MQFORK_SUPERVISOR_ROUTES_IMPL_H
#define MQFORK_SUPERVISOR_ROUTES_IMPL_H

#include "common/log.h"
#include "proto/report.h"
#include "proto/topic.h"
#include "supervisor/cache.h"
#include "supervisor/correlate.h"
#include "supervisor/loop.h"
#include "supervisor/routes.h"

#pragma GCC visibility push(hidden)

#define TOPIC_MAX 1024
/* Bytes of a refused topic quoted in its report and log line: enough to
 * recognise it, while a 64 KiB topic stays out of both. */
#define QUOTED_TOPIC_MAX 64

struct route {
    const struct conf_route *conf;
    uint32_t kind;
    struct cache *cache;     /* NULL: the route has no cache: */
    struct correlate *table; /* NULL: the route has no correlate: */
};

struct routes {
    const struct conf *conf;
    struct engine *engine;
    struct loop *loop; /* NULL (tests, fuzzing): no correlation windows expire */
    struct mqtt *mqtt;
    struct mqtt_sink sink; /* the messages of every route's filter */
    struct route *route;
    size_t count;
    struct log_rate refusals;           /* a flood of bad requests is not a flood of lines */
    struct stats_block *stats;          /* "routes" in the segment */
    struct cache_figures cache_figures; /* every route's cache, published as "cache" */
    struct stats_block *cache_stats;
    struct correlate_figures correlate_figures; /* every route's windows: "correlate" */
    struct stats_block *correlate_stats;
    struct loop_timer window_end; /* the earliest end of an open key's window */
    bool draining;                /* no key is opened any more */
    bool broker_gone;             /* routes_free: the MQTT client was freed before */
};

/* What an accepted job needs to be answered: one allocation. It holds
 * copies, not pointers into the routes, which a reload replaces. */
struct request {
    struct cache_waiter waiter;  /* first: the cache chains the requests of one job */
    struct cache_flight *flight; /* the job equal requests wait for, or NULL */
    struct routes *routes;
    int qos;
    char *route; /* name */
    char *topic;
    char *reply;  /* NULL: the route sends no reply */
    char *stream; /* NULL: no stream */
    void *corr;
    size_t corr_len;
};

/* ---- routes.c */

/* One allocation for the request of MSG on ROUTE and its strings. */
struct request *new_request(struct routes *r, const struct route *route,
                            const struct mqtt_message *msg, const char *reply, const char *stream);
/* Q's job with PAYLOAD, offered (Q owned by the job from then on); a
 * refusal is reported at once. */
void submit_request(struct routes *r, const struct route *route, struct request *q,
                    const void *payload, size_t len);
/* Refuse MSG before it becomes a job: counted against the route's kind,
 * logged (at most a line a second) and reported on errors.topic. */
void refuse_message(struct routes *r, const struct route *route, const struct mqtt_message *msg,
                    enum job_status st, const char *why);
/* Publish REP on errors.topic, with its correlation data. */
void publish_report(struct routes *r, const struct report *rep);
const struct route *route_named(const struct routes *r, const char *name);

/* ---- routes_correlate.c */

/* The tables of the routes that have correlate:, made (at start) or
 * carried over from OLD (a reload: by route name, when their settings are
 * equal; the others' open keys dropped and reported). */
void correlate_carry(struct routes *r, struct route *fresh, size_t nfresh, const struct route *old,
                     size_t nold);
/* MSG is part PART of ROUTE's key made from LV: held, or the job it completes. */
void correlate_part(struct routes *r, const struct route *route, size_t part,
                    const struct topic_levels *lv, const struct mqtt_message *msg,
                    const char *reply, const char *stream);
/* Shutdown: every open key dropped and reported; no key opens any more. */
void correlate_drain(struct routes *r);
/* Set up the timer of the windows' ends (R's loop known). 0 or -1. */
int correlate_attach(struct routes *r);
void correlate_detach(struct routes *r);
void publish_correlate_figures(struct routes *r);

#pragma GCC visibility pop

#endif
