/* routes.c - from MQTT message to job, and from outcome to reply.
 *
 * A message is matched against the routes in configuration order; the
 * first with a filter that matches takes it. The levels that filter's
 * wildcards matched fill the reply and stream templates. A route with
 * correlate: holds the message as a part instead (routes_correlate.c). The topic a reply will go to
 * is checked before the job is made (topic_publish_problem): a message whose reply could not be
 * published is refused as bad_input, counted and reported, and never reaches the broker. The
 * request's context (topic, reply topic, correlation data) travels with the job and comes back with
 * its outcome. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shm/clock.h"
#include "shm/statblock.h"
#include "supervisor/engine.h"
#include "supervisor/routes_impl.h"
#include "supervisor/source.h"

/* The routes' figures: the data of their block "routes", counted in
 * place (each write is one seqlock round, on messages that are no job). */
struct routes_figures {
    uint64_t unrouted;
};

static const struct stats_field_desc routes_fields[] = {
    STATS_FIELD(STATS_COUNTER, struct routes_figures, unrouted, "mqtt_unrouted",
                "MQTT messages that matched no route."),
};

struct routes *routes_new(const struct conf *c, struct engine *e, struct loop *l)
{
    struct routes *r = calloc(1, sizeof(*r));
    if (!r || !(r->route = calloc(c->nroutes ? c->nroutes : 1, sizeof(*r->route)))) {
        free(r);
        return NULL;
    }
    r->conf = c;
    r->engine = e;
    r->loop = l;
    r->sink = (struct mqtt_sink){.fn = routes_on_message, .ctx = r};
    for (size_t i = 0; i < c->nroutes; i++) {
        const struct conf_route *cr = &c->routes[i];
        int kind = engine_add_kind(e, cr->name, cr->job, &cr->params);
        if (kind < 0) {
            routes_free(r);
            return NULL;
        }
        r->route[r->count++] = (struct route){.conf = cr, .kind = (uint32_t)kind};
        if (cr->cache.enabled &&
            !(r->route[i].cache = cache_new(cr->job, &cr->params, &cr->cache, c->limits.max_pending,
                                            &r->cache_figures))) {
            log_error("out of memory for the cache of route %s", cr->name);
            routes_free(r);
            return NULL;
        }
    }
    correlate_carry(r, r->route, r->count, NULL, 0);
    for (size_t i = 0; i < r->count; i++)
        if (r->route[i].conf->correlate.enabled && !r->route[i].table) {
            routes_free(r);
            return NULL;
        }
    return r;
}

static void publish_cache_figures(struct routes *r)
{
    if (r->cache_stats)
        stats_block_publish(r->cache_stats, &r->cache_figures, sizeof(r->cache_figures));
}

/* The caches of the routes that keep their name move to FRESH, following
 * their new settings; those no route wants any more are retired. A cache
 * that cannot be made leaves its route uncached (logged). */
static void carry_caches(struct routes *r, const struct conf *c, struct route *fresh)
{
    for (size_t i = 0; i < c->nroutes; i++) {
        const struct conf_route *cr = fresh[i].conf;
        for (size_t k = 0; k < r->count && !fresh[i].cache; k++)
            if (r->route[k].cache && cr->cache.enabled &&
                strcmp(r->route[k].conf->name, cr->name) == 0 &&
                cache_configure(r->route[k].cache, cr->job, &cr->params, &cr->cache,
                                c->limits.max_pending) == 0) {
                fresh[i].cache = r->route[k].cache;
                r->route[k].cache = NULL;
            }
        if (cr->cache.enabled && !fresh[i].cache &&
            !(fresh[i].cache = cache_new(cr->job, &cr->params, &cr->cache, c->limits.max_pending,
                                         &r->cache_figures)))
            log_error("reload: out of memory for the cache of route %s: not cached", cr->name);
    }
    for (size_t k = 0; k < r->count; k++)
        cache_retire(r->route[k].cache);
    publish_cache_figures(r);
}

static int subscribe_all(struct routes *r)
{
    for (size_t i = 0; i < r->count; i++) {
        const struct conf_route *cr = r->route[i].conf;
        for (size_t f = 0; f < cr->subscribe.count; f++)
            if (mqtt_subscribe(r->mqtt, cr->subscribe.items[f], cr->qos, &r->sink) < 0)
                return -1;
    }
    return 0;
}

/* Whether a route of C subscribes to FILTER. */
static bool wanted_filter(const struct conf *c, const char *filter)
{
    for (size_t k = 0; k < c->nroutes; k++)
        for (size_t f = 0; f < c->routes[k].subscribe.count; f++)
            if (strcmp(filter, c->routes[k].subscribe.items[f]) == 0)
                return true;
    return false;
}

int routes_attach(struct routes *r, struct mqtt *m)
{
    struct stats_block_spec spec = {
        .name = "routes",
        .flags = STATS_BLOCK_GLOBAL, /* mqtt_unrouted predates blocks */
        .fields = routes_fields,
        .nfields = sizeof(routes_fields) / sizeof(routes_fields[0]),
        .size = sizeof(struct routes_figures),
    };
    r->mqtt = m;
    if (!r->stats && !(r->stats = engine_add_block(r->engine, &spec)))
        return -1;
    if (!r->cache_stats && !(r->cache_stats = engine_add_block(r->engine, &cache_stats_spec)))
        return -1;
    if (!r->correlate_stats &&
        !(r->correlate_stats = engine_add_block(r->engine, &correlate_stats_spec)))
        return -1;
    if (correlate_attach(r) < 0)
        return -1;
    return subscribe_all(r);
}

int routes_reload(struct routes *r, const struct conf *c)
{
    struct route *fresh = calloc(c->nroutes ? c->nroutes : 1, sizeof(*fresh));
    if (!fresh)
        return -1;
    for (size_t i = 0; i < c->nroutes; i++) {
        int kind = engine_kind_by_name(r->engine, c->routes[i].name);
        if (kind < 0) {
            log_error("reload: route %s has no job kind in the engine", c->routes[i].name);
            free(fresh);
            return -1;
        }
        fresh[i] = (struct route){.conf = &c->routes[i], .kind = (uint32_t)kind};
    }
    /* Unsubscribe only what no route wants any more; kept filters never
     * stop delivering, new ones are added by subscribe_all. */
    for (size_t i = 0; i < r->count; i++) {
        const struct conf_route *cr = r->route[i].conf;
        for (size_t f = 0; f < cr->subscribe.count; f++)
            if (!wanted_filter(c, cr->subscribe.items[f]))
                mqtt_unsubscribe(r->mqtt, cr->subscribe.items[f], &r->sink);
    }
    carry_caches(r, c, fresh);
    /* The windows follow the new limits, and what they drop is reported
     * on the new errors.topic. */
    r->conf = c;
    correlate_carry(r, fresh, c->nroutes, r->route, r->count);
    free(r->route);
    r->route = fresh;
    r->count = c->nroutes;
    return subscribe_all(r);
}

/* What a job's attempts ended in, as words for its report: up to the
 * last one kept, and none for a job tried once (its error says it). */
struct tries {
    const char *words[ENGINE_TRIES_KEPT];
    size_t n;
};

static void tries_of(const struct engine_outcome *o, struct tries *t)
{
    t->n = 0;
    for (unsigned i = 0; o->attempts > 1 && i < o->attempts && i < ENGINE_TRIES_KEPT; i++) {
        enum engine_try what = engine_try_at(o->tries, i);
        if (what != TRY_NONE)
            t->n = i + 1;
        t->words[i] = what != TRY_NONE ? engine_try_name(what) : "answered";
    }
}

void publish_report(struct routes *r, const struct report *rep)
{
    char *json = report_json(rep);
    if (!json) {
        log_error("out of memory for an error report on %s", rep->topic);
        return;
    }
    if (!r->broker_gone)
        mqtt_publish(r->mqtt, r->conf->errors_topic, json, strlen(json), 1, false, rep->correlation,
                     rep->correlation_len);
    free(json);
}

static void report(struct routes *r, const char *route, const char *topic, const char *error,
                   const char *detail, size_t detail_len, uint32_t attempts,
                   const struct tries *tries, const void *corr, size_t corr_len)
{
    publish_report(r, &(struct report){
                          .route = route,
                          .topic = topic,
                          .error = error,
                          .detail = detail,
                          .detail_len = detail_len,
                          .attempts = attempts,
                          .tries = tries ? tries->words : NULL,
                          .ntries = tries ? tries->n : 0,
                          .correlation = corr,
                          .correlation_len = corr_len,
                      });
}

static void on_job_done(void *ctx, const struct engine_outcome *o)
{
    struct request *q = ctx;
    struct routes *r = q->routes;
    if (o->status == JOB_OK) {
        if (q->reply)
            mqtt_publish(r->mqtt, q->reply, o->data, o->len, q->qos, false, q->corr, q->corr_len);
    } else if (o->status != JOB_FILTERED) {
        struct tries tries;
        tries_of(o, &tries);
        report(r, q->route, q->topic, job_status_name(o->status), (const char *)o->data, o->len,
               o->attempts, &tries, q->corr, q->corr_len);
    }
    free(q);
}

/* Each request waiting for a cached route's job: its own reply topic and
 * correlation data. */
static void answer_waiter(struct cache_waiter *w, const struct engine_outcome *o)
{
    on_job_done((struct request *)w, o);
}

/* The job of a caching route: CTX is the request that started it, one of
 * the waiters its flight answers. */
static void on_cached_job_done(void *ctx, const struct engine_outcome *o)
{
    struct request *q = ctx;
    struct routes *r = q->routes;
    cache_finish(q->flight, o, mono_ns(), answer_waiter);
    publish_cache_figures(r);
}

/* The route that takes TOPIC, and in *FILTER the index of its filter that
 * matched (the first, in the configured order). */
static const struct route *match(const struct routes *r, const char *topic, struct topic_levels *lv,
                                 size_t *filter)
{
    for (size_t i = 0; i < r->count; i++)
        for (size_t f = 0; f < r->route[i].conf->subscribe.count; f++)
            if (topic_match(r->route[i].conf->subscribe.items[f], topic, lv)) {
                *filter = f;
                return &r->route[i];
            }
    return NULL;
}

const struct route *route_named(const struct routes *r, const char *name)
{
    for (size_t i = 0; i < r->count; i++)
        if (strcmp(r->route[i].conf->name, name) == 0)
            return &r->route[i];
    return NULL;
}

/* The length of S with its NUL, or 0 for NULL. */
static size_t size_of(const char *s)
{
    return s ? strlen(s) + 1 : 0;
}

/* S copied to *AT (moved past it), or NULL for NULL. */
static char *put(char **at, const char *s, size_t len)
{
    if (!s)
        return NULL;
    char *out = memcpy(*at, s, len);
    *at += len;
    return out;
}

struct request *new_request(struct routes *r, const struct route *route,
                            const struct mqtt_message *msg, const char *reply, const char *stream)
{
    size_t nlen = size_of(route->conf->name), tlen = size_of(msg->topic);
    size_t rlen = size_of(reply), slen = size_of(stream);
    struct request *q = malloc(sizeof(*q) + nlen + tlen + rlen + slen + msg->correlation_len);
    if (!q)
        return NULL;
    char *p = (char *)(q + 1);
    q->flight = NULL;
    q->routes = r;
    q->qos = route->conf->qos;
    q->route = put(&p, route->conf->name, nlen);
    q->topic = put(&p, msg->topic, tlen);
    q->reply = put(&p, reply, rlen);
    q->stream = put(&p, stream, slen);
    q->corr = msg->correlation_len ? memcpy(p, msg->correlation, msg->correlation_len) : NULL;
    q->corr_len = msg->correlation_len;
    return q;
}

static void refusal_text(enum job_status st, size_t len, char *buf, size_t size)
{
    switch (st) {
    case JOB_E_TOO_LARGE:
        snprintf(buf, size, "refused: the payload (%zu bytes) is larger than limits.max_payload",
                 len);
        break;
    case JOB_E_OVERLOADED:
        snprintf(buf, size, "refused: the pending queue is full (limits.max_pending)");
        break;
    case JOB_E_UNKNOWN_KIND:
        snprintf(buf, size, "refused: the route's job kind is gone (reload in progress)");
        break;
    default:
        snprintf(buf, size, "refused: the daemon is stopping");
    }
}

/* TOPIC as a report or log line quotes it: its first QUOTED_TOPIC_MAX
 * bytes, "..." when there are more, and '?' for each byte that is not
 * printable ASCII (a topic may hold a newline; the log has one event a
 * line). OUT has QUOTED_TOPIC_MAX + 4 bytes. */
static const char *quote_topic(const char *topic, char *out)
{
    size_t i = 0;
    for (; topic[i] && i < QUOTED_TOPIC_MAX; i++)
        out[i] = topic[i] >= 0x20 && topic[i] < 0x7f ? topic[i] : '?';
    strcpy(out + i, topic[i] ? "..." : "");
    return out;
}

void refuse_message(struct routes *r, const struct route *route, const struct mqtt_message *msg,
                    enum job_status st, const char *why)
{
    char quoted[QUOTED_TOPIC_MAX + 4];
    engine_count_refusal(r->engine, route->kind, st);
    log_rated(&r->refusals, LOG_LVL_WARN, "route %s: a message on %s: %s", route->conf->name,
              quote_topic(msg->topic, quoted), why);
    report(r, route->conf->name, msg->topic, job_status_name(st), why, strlen(why), 0, NULL,
           msg->correlation, msg->correlation_len);
}

/* "refused: the WHAT 'TOPIC' REASON" into WHY, the topic quoted. */
static void refusal_of_topic(char *why, size_t why_len, const char *what, const char *topic,
                             const char *reason)
{
    char quoted[QUOTED_TOPIC_MAX + 4];
    snprintf(why, why_len, "refused: the %s '%s' %s", what, quote_topic(topic, quoted), reason);
}

/* Whether TOPIC may be published to; if not, why not in WHY, naming it as
 * WHAT ("reply topic"). A broker answers a PUBLISH to a topic it refuses by
 * closing the connection, and libmosquitto sends a QoS > 0 message again
 * after every reconnect: one bad topic would cut the daemon off for good. */
static bool publishable(const char *what, const char *topic, char *why, size_t why_len)
{
    const char *problem = topic_publish_problem(topic, strlen(topic));
    if (problem)
        refusal_of_topic(why, why_len, what, topic, problem);
    return !problem;
}

/* Whether the response topic RT matches one of the route's reply_allow
 * filters, their {N} filled from the request topic as a reply template's
 * are. Without this a requester could have the daemon publish where the
 * broker's ACL forbids the requester to (a confused deputy). */
static bool response_allowed(const struct conf_route *cr, const struct mqtt_message *msg,
                             const struct topic_levels *lv, const char *rt)
{
    /* The levels fill a filter, where a '+' or '#' would widen it; a broker
     * never delivers such a topic, and checking costs little. */
    if (strpbrk(msg->topic, "+#"))
        return false;
    char filter[TOPIC_MAX];
    for (size_t i = 0; i < cr->reply_allow.count; i++)
        if (topic_expand(cr->reply_allow.items[i], lv, filter, sizeof(filter)) >= 0 &&
            topic_match(filter, rt, NULL))
            return true;
    return false;
}

/* Where the reply goes: the request's MQTT v5 response topic when the route
 * allows it (reply_allow), else the route's reply template expanded into
 * BUF. A route without reply_allow ignores response topics. NULL with WHY
 * set when the message must be refused; NULL with WHY empty when the route
 * sends no reply. */
static const char *reply_topic(const struct conf_route *cr, const struct mqtt_message *msg,
                               const struct topic_levels *lv, char *buf, size_t cap, char *why,
                               size_t why_len)
{
    const char *rt = msg->response_topic;
    if (rt && cr->reply_allow.count) {
        if (!publishable("response topic", rt, why, why_len))
            return NULL;
        if (response_allowed(cr, msg, lv, rt))
            return rt;
        refusal_of_topic(why, why_len, "response topic", rt, "is not allowed by reply_allow");
        return NULL;
    }
    if (rt)
        log_debug("route %s: response topic ignored: no reply_allow", cr->name);
    if (!cr->reply)
        return NULL;
    if (topic_expand(cr->reply, lv, buf, cap) < 0) {
        snprintf(why, why_len, "the reply topic made from the topic is too long");
        return NULL;
    }
    return publishable("reply topic", buf, why, why_len) ? buf : NULL;
}

/* A job of the routes in a log line (engine_describe_fn). */
static void describe_request(const void *ctx, char *buf, size_t len)
{
    const struct request *q = ctx;
    snprintf(buf, len, "route %s, topic %s", q->route, q->topic);
}

/* Offer Q's job J; a refusal is reported at once, to every request waiting
 * for it when it is a cached route's. */
static void offer(struct routes *r, struct request *q, const struct engine_job *j)
{
    enum job_status st = engine_submit(r->engine, j, NULL);
    if (st == JOB_OK)
        return;
    char refusal[128];
    refusal_text(st, j->len, refusal, sizeof(refusal));
    struct engine_outcome no = {
        .status = st, .data = (const uint8_t *)refusal, .len = strlen(refusal)};
    if (q->flight)
        cache_finish(q->flight, &no, mono_ns(), answer_waiter);
    else
        on_job_done(q, &no);
}

/* A caching route's request: answered from the cache, joined to an equal
 * request's running job, or offered as the job equal ones will join. */
static void submit_cached(struct routes *r, struct cache *c, struct request *q,
                          struct engine_job *j)
{
    const void *data = NULL;
    size_t len = 0;
    switch (cache_begin(c, j->payload, j->len, &q->waiter, mono_ns(), &data, &len, &q->flight)) {
    case CACHE_HIT:
        on_job_done(q, &(struct engine_outcome){.status = JOB_OK, .data = data, .len = len});
        break;
    case CACHE_JOINED:
        break;
    case CACHE_FULL: {
        static const char why[] =
            "refused: limits.max_pending requests wait for an equal one's job";
        engine_count_refusal(r->engine, j->kind, JOB_E_OVERLOADED);
        on_job_done(q, &(struct engine_outcome){.status = JOB_E_OVERLOADED,
                                                .data = (const uint8_t *)why,
                                                .len = sizeof(why) - 1});
        break;
    }
    case CACHE_MISS:
        j->done = on_cached_job_done;
        offer(r, q, j);
        break;
    case CACHE_NOMEM:
        q->flight = NULL;
        offer(r, q, j);
        break;
    }
    publish_cache_figures(r);
}

void submit_request(struct routes *r, const struct route *route, struct request *q,
                    const void *payload, size_t len)
{
    const struct conf_route *cr = route->conf;
    struct engine_job j = {
        .kind = route->kind,
        .payload = payload,
        .len = len,
        .stream = q->stream,
        .stream_len = q->stream ? strlen(q->stream) : 0,
        .priority = cr->priority,
        .timeout_ms = cr->timeout_ms,
        .deadline_ms = cr->deadline_ms,
        .retries = cr->retries,
        .retry_on = cr->retry_causes,
        .backoff_ms = cr->backoff_ms,
        .backoff_max_ms = cr->backoff_max_ms,
        .done = on_job_done,
        .describe = describe_request,
        .ctx = q,
    };
    if (route->cache)
        submit_cached(r, route->cache, q, &j);
    else
        offer(r, q, &j);
}

void routes_on_message(void *ctx, const struct mqtt_message *msg)
{
    struct routes *r = ctx;
    struct topic_levels lv;
    size_t filter = 0;
    const struct route *route = match(r, msg->topic, &lv, &filter);
    if (!route) {
        struct routes_figures *fig = stats_block_begin(r->stats);
        fig->unrouted++;
        stats_block_end(r->stats);
        log_debug("no route for topic %s", msg->topic);
        return;
    }
    const struct conf_route *cr = route->conf;
    char buf[TOPIC_MAX], stream[ENGINE_STREAM_KEY_MAX + 1], why[256] = "";
    const char *reply = reply_topic(cr, msg, &lv, buf, sizeof(buf), why, sizeof(why));
    if (!why[0] && cr->stream && topic_expand(cr->stream, &lv, stream, sizeof(stream)) < 0)
        snprintf(why, sizeof(why), "the stream key made from the topic is too long");
    const char *s = cr->stream ? stream : NULL;
    struct request *q;
    if (why[0])
        refuse_message(r, route, msg, JOB_E_BAD_INPUT, why);
    else if (cr->correlate.enabled)
        correlate_part(r, route, filter, &lv, msg, reply, s);
    else if (!(q = new_request(r, route, msg, reply, s)))
        log_error("out of memory for a request on %s", msg->topic);
    else
        submit_request(r, route, q, msg->payload, msg->len);
}

void routes_free(struct routes *r)
{
    if (!r)
        return;
    r->broker_gone = true; /* what the windows still hold is only logged */
    for (size_t i = 0; i < r->count; i++) {
        cache_retire(r->route[i].cache);
        correlate_free(r->route[i].table);
    }
    correlate_detach(r);
    free(r->route);
    free(r);
}

/* ---- as a source (source.h) ---------------------------------------------- */

static bool routes_wanted(const struct conf *c)
{
    return true; /* with no routes, the broker still gets the status topic */
}

static void *routes_create(const struct conf *c, struct engine *e, struct loop *l)
{
    return routes_new(c, e, l);
}

static int routes_attach_source(void *self, struct mqtt *m)
{
    return routes_attach(self, m);
}

static int routes_reload_source(void *self, const struct conf *c)
{
    return routes_reload(self, c);
}

static void routes_drain_source(void *self)
{
    correlate_drain(self);
}

static void routes_free_source(void *self)
{
    routes_free(self);
}

const struct source_ops routes_source = {
    .name = "routes",
    .wanted = routes_wanted,
    .create = routes_create,
    .attach = routes_attach_source,
    .reload = routes_reload_source,
    .drain = routes_drain_source,
    .free = routes_free_source,
};
