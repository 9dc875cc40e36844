/* routes_correlate.c - the routes' correlation windows: each message of a
 * route with correlate: is a part of the key its topic makes, held in the
 * route's table (supervisor/correlate.h) until the key is complete, which
 * makes one job of the framed parts, answered as the part that came last
 * asked (its reply topic and correlation data); a key that leaves the
 * table incomplete is reported on errors.topic with the parts it had. One
 * timer of the loop follows the earliest end of an open key's window. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shm/clock.h"
#include "supervisor/engine.h"
#include "supervisor/routes_impl.h"

void publish_correlate_figures(struct routes *r)
{
    if (r->correlate_stats)
        stats_block_publish(r->correlate_stats, &r->correlate_figures,
                            sizeof(r->correlate_figures));
}

/* Fire no later than the end of T's oldest window. */
static void arm_for(struct routes *r, const struct correlate *t)
{
    uint64_t at = correlate_next_ns(t);
    if (r->loop && r->window_end.fn && at != UINT64_MAX)
        loop_timer_arm_by(r->loop, &r->window_end, at);
}

static void on_window_end(void *ctx)
{
    struct routes *r = ctx;
    uint64_t now = mono_ns();
    for (size_t i = 0; i < r->count; i++)
        if (r->route[i].table)
            correlate_expire(r->route[i].table, now);
    for (size_t i = 0; i < r->count; i++)
        if (r->route[i].table)
            arm_for(r, r->route[i].table);
    publish_correlate_figures(r);
}

int correlate_attach(struct routes *r)
{
    if (!r->loop || r->window_end.fn)
        return 0;
    if (loop_timer_init(r->loop, &r->window_end, on_window_end, r) < 0) {
        log_error("routes: cannot set up the timer of correlation windows");
        return -1;
    }
    for (size_t i = 0; i < r->count; i++)
        if (r->route[i].table)
            arm_for(r, r->route[i].table);
    return 0;
}

void correlate_detach(struct routes *r)
{
    if (r->loop && r->window_end.fn)
        loop_timer_fini(r->loop, &r->window_end);
}

/* ---- what the tables hand over */

static void free_parts(const struct correlate_set *set)
{
    for (size_t i = 0; i < set->nparts; i++)
        if (set->have & (1u << i))
            free(set->part[i].ctx);
}

/* The job of a complete key: the framed parts, answered as the last part
 * asked. */
static void on_complete(void *owner, const struct correlate_set *set)
{
    struct routes *r = owner;
    struct request *q = set->part[set->last].ctx;
    const struct route *route = route_named(r, q->route);
    size_t len = 0;
    uint8_t *payload = correlate_frame(set, &len);
    for (size_t i = 0; i < set->nparts; i++)
        if (i != set->last)
            free(set->part[i].ctx);
    if (!payload || !route) {
        log_error("route %s: out of memory for the job of correlation key %s", q->route, set->key);
        free(q);
        return;
    }
    log_debug("route %s: correlation key %s complete: %zu bytes", q->route, set->key, len);
    submit_request(r, route, q, payload, len);
    free(payload);
}

static const char *end_words(const struct routes *r, enum correlate_end why)
{
    switch (why) {
    case CORRELATE_EXPIRED:
        return "its window passed";
    case CORRELATE_OVERFLOWED:
        return "correlate.max_open keys were open and it was the oldest";
    default:
        return r->draining ? "the daemon is stopping"
                           : "its route's correlate: changed or went (reload)";
    }
}

/* A key dropped incomplete: a log line and a report with the parts it had,
 * on the last part's topic and correlation data. */
static void on_incomplete(void *owner, const struct correlate_set *set, enum correlate_end why)
{
    struct routes *r = owner;
    const struct request *q = set->part[set->last].ctx;
    const char *had[CONF_ROUTE_FILTERS_MAX];
    char missing[512] = "";
    size_t nhad = 0, at = 0;
    for (size_t i = 0; i < set->nparts; i++)
        if (set->have & (1u << i))
            had[nhad++] = set->names[i];
        else if (at < sizeof(missing))
            at += (size_t)snprintf(missing + at, sizeof(missing) - at, "%s%s", at ? ", " : "",
                                   set->names[i]);
    char detail[768];
    snprintf(detail, sizeof(detail), "correlation key '%s' dropped incomplete: %s; missing %s",
             set->key, end_words(r, why), missing);
    log_rated(&r->refusals, LOG_LVL_WARN, "route %s: %s", q->route, detail);
    publish_report(r, &(struct report){.route = q->route,
                                       .topic = q->topic,
                                       .error = job_status_name(JOB_E_EXPIRED),
                                       .detail = detail,
                                       .detail_len = strlen(detail),
                                       .correlation = q->corr,
                                       .correlation_len = q->corr_len,
                                       .key = set->key,
                                       .parts = had,
                                       .nparts = nhad});
    free_parts(set);
}

static const struct correlate_ops table_ops = {
    .complete = on_complete,
    .incomplete = on_incomplete,
};

/* ---- tables across reloads */

void correlate_carry(struct routes *r, struct route *fresh, size_t nfresh, const struct route *old,
                     size_t nold)
{
    struct route *was = (struct route *)old;
    for (size_t i = 0; i < nfresh; i++) {
        const struct conf_route *cr = fresh[i].conf;
        for (size_t k = 0; k < nold && cr->correlate.enabled && !fresh[i].table; k++)
            if (was[k].table && strcmp(was[k].conf->name, cr->name) == 0 &&
                correlate_conf_equal(&was[k].conf->correlate, &cr->correlate)) {
                fresh[i].table = was[k].table;
                was[k].table = NULL;
                correlate_set_max_bytes(fresh[i].table, r->conf->limits.max_payload);
            }
        if (cr->correlate.enabled && !fresh[i].table &&
            !(fresh[i].table = correlate_new(&cr->correlate, r->conf->limits.max_payload,
                                             &r->correlate_figures, &table_ops, r)))
            log_error("out of memory for the correlation windows of route %s", cr->name);
    }
    for (size_t k = 0; k < nold; k++) {
        correlate_free(was[k].table);
        was[k].table = NULL;
    }
    publish_correlate_figures(r);
}

void correlate_drain(struct routes *r)
{
    r->draining = true;
    for (size_t i = 0; i < r->count; i++) {
        correlate_free(r->route[i].table);
        r->route[i].table = NULL;
    }
    publish_correlate_figures(r);
}

/* ---- parts */

void correlate_part(struct routes *r, const struct route *route, size_t part,
                    const struct topic_levels *lv, const struct mqtt_message *msg,
                    const char *reply, const char *stream)
{
    char key[CORRELATE_KEY_MAX + 1];
    long key_len = topic_expand(route->conf->correlate.key, lv, key, sizeof(key));
    struct request *q = NULL;
    if (key_len < 0)
        refuse_message(r, route, msg, JOB_E_BAD_INPUT,
                       "refused: the correlation key made from the topic is too long");
    else if (r->draining)
        refuse_message(r, route, msg, JOB_E_SHUTDOWN, "refused: the daemon is stopping");
    else if (!route->table)
        refuse_message(r, route, msg, JOB_E_OVERLOADED,
                       "refused: the route's correlation windows could not be made");
    else if (!(q = new_request(r, route, msg, reply, stream)))
        log_error("out of memory for a request on %s", msg->topic);
    if (!q)
        return;
    void *old = NULL;
    enum correlate_verdict v = correlate_add(route->table, key, (size_t)key_len, part, msg->payload,
                                             msg->len, q, mono_ns(), &old);
    free(old);
    if (v == CORRELATE_DUPLICATE)
        log_debug("route %s: a duplicate part of correlation key %s", route->conf->name, key);
    if (v == CORRELATE_DUPLICATE || v == CORRELATE_TOO_LARGE || v == CORRELATE_NOMEM)
        free(q);
    if (v == CORRELATE_TOO_LARGE)
        refuse_message(r, route, msg, JOB_E_TOO_LARGE,
                       "refused: with this part the correlation key's job would be larger than "
                       "limits.max_payload");
    else if (v == CORRELATE_NOMEM)
        refuse_message(r, route, msg, JOB_E_OVERLOADED,
                       "refused: out of memory for a correlation part");
    arm_for(r, route->table);
    publish_correlate_figures(r);
}
