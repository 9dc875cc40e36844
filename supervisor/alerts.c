/* alerts.c - the alerts: section at work. Every interval_s it looks at the
 * daemon's figures - jobs pending, the share of the jobs answered in the
 * interval that failed, the 99th percentile of their time in the daemon,
 * the workers' CPU and memory - and an alert whose figure reaches its fire
 * threshold fires; it resolves only once the figure is back at its resolve
 * threshold, lower, so that a figure hovering around one value does not
 * flap. Each change is published as JSON on alerts.topic (the figure, the
 * threshold crossed), logged, and counted in the block "alerts".
 *
 * It takes no jobs: it is a source (source.h) only for the life cycle -
 * the broker once attached, the configuration on each reload. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "shm/segment.h"
#include "shm/statblock.h"
#include "shm/stats.h"
#include "supervisor/engine.h"
#include "supervisor/loop.h"
#include "supervisor/mqtt.h"
#include "supervisor/source.h"

/* The data of the block "alerts": for each alert, by its name. */
struct alert_figures {
    uint64_t firing[ALERT_COUNT];   /* 1 while it fires */
    uint64_t fired[ALERT_COUNT];    /* times it fired */
    uint64_t resolved[ALERT_COUNT]; /* times it resolved */
    uint64_t value[ALERT_COUNT];    /* its figure when last looked at, x 1000 */
};

#define BY_ALERT(kind, member, f, name, divide, help)                                              \
    STATS_DESC(kind, struct alert_figures, member[f], name, "alert", divide, help)
#define ALERT_FIELDS(f, n)                                                                         \
    BY_ALERT(STATS_GAUGE, firing, f, "firing." n, 1, "1 while the alert fires."),                  \
        BY_ALERT(STATS_COUNTER, fired, f, "fired." n, 1, "Times the alert fired."),                \
        BY_ALERT(STATS_COUNTER, resolved, f, "resolved." n, 1, "Times the alert resolved."),       \
        BY_ALERT(STATS_GAUGE, value, f, "value." n, 1000,                                          \
                 "The alert's figure when last looked at (alerts.interval_s).")

static const struct stats_field_desc alert_fields[] = {
    ALERT_FIELDS(ALERT_PENDING, "pending"),     ALERT_FIELDS(ALERT_ERROR_RATE, "error_rate"),
    ALERT_FIELDS(ALERT_P99_MS, "p99_ms"),       ALERT_FIELDS(ALERT_CPU, "cpu"),
    ALERT_FIELDS(ALERT_MEMORY_MB, "memory_mb"),
};

struct alerts {
    const struct conf *conf;
    struct engine *engine;
    struct loop *loop;
    struct mqtt *mqtt;
    struct loop_timer tick;
    struct stats_block *stats;
    struct alert_figures fig;
    bool firing[ALERT_COUNT];
    /* What the last look saw, for the figures of an interval */
    uint64_t last_failed, last_answered;
    struct stats_hist last_total;
};

/* ---- the figures */

static double pending(const struct stats_global *g)
{
    double n = 0;
    for (int p = 0; p < STATS_PRIOS; p++)
        n += g->pending[p];
    return n;
}

static double error_rate(struct alerts *a, const struct stats_global *g)
{
    uint64_t answered = g->completed + g->filtered + g->failed;
    uint64_t failed = g->failed - a->last_failed, all = answered - a->last_answered;
    a->last_failed = g->failed;
    a->last_answered = answered;
    return all ? (double)failed / (double)all : 0;
}

/* Every route's accepted -> answered times since the last look, merged:
 * the histograms only grow, but a kind a reload removed takes its counts
 * with it, so a bucket that shrank counts as empty. */
static double p99_ms(struct alerts *a, struct segment *seg)
{
    struct stats_hist now = {0}, delta = {0};
    for (uint32_t k = 0; k < seg->max_kinds; k++) {
        const struct stats_hist *h = &seg->kinds[k].total;
        if (!seg->kinds[k].used)
            continue;
        for (unsigned b = 0; b < STATS_HIST_BUCKETS; b++)
            now.bucket[b] += h->bucket[b];
        now.count += h->count;
        now.max_ns = h->max_ns > now.max_ns ? h->max_ns : now.max_ns;
    }
    for (unsigned b = 0; b < STATS_HIST_BUCKETS; b++) {
        uint64_t was = a->last_total.bucket[b];
        delta.bucket[b] = now.bucket[b] > was ? now.bucket[b] - was : 0;
        delta.count += delta.bucket[b];
    }
    delta.max_ns = now.max_ns;
    a->last_total = now;
    return delta.count ? (double)stats_hist_percentile(&delta, 0.99) / 1e6 : 0;
}

static bool live(const struct stats_worker *w)
{
    return w->state == WORKER_IDLE || w->state == WORKER_BUSY || w->state == WORKER_DRAINING;
}

/* The live workers' CPU as a share of what they could use, and their
 * resident memory in MiB. */
static void workers_use(struct segment *seg, double *cpu, double *memory_mb)
{
    uint64_t permille = 0, rss_kb = 0, n = 0;
    for (uint32_t i = 0; i < seg->max_workers; i++) {
        const struct stats_worker *w = &seg->workers_stats[i];
        if (!live(w))
            continue;
        n++;
        permille += w->cpu_permille;
        rss_kb += w->rss_kb;
    }
    *cpu = n ? (double)permille / (1000.0 * (double)n) : 0;
    *memory_mb = (double)rss_kb / 1024.0;
}

static void measure(struct alerts *a, double v[ALERT_COUNT])
{
    const struct stats_global *g = engine_stats(a->engine);
    struct segment *seg = engine_segment(a->engine);
    v[ALERT_PENDING] = pending(g);
    v[ALERT_ERROR_RATE] = error_rate(a, g);
    v[ALERT_P99_MS] = p99_ms(a, seg);
    workers_use(seg, &v[ALERT_CPU], &v[ALERT_MEMORY_MB]);
}

/* ---- firing and resolving */

static void publish(struct alerts *a, enum conf_alert_figure f, const char *state, double value,
                    const double *threshold, const char *reason)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    cJSON *o = cJSON_CreateObject();
    char *text = NULL;
    if (o && cJSON_AddStringToObject(o, "alert", conf_alert_name(f)) &&
        cJSON_AddStringToObject(o, "state", state) && cJSON_AddNumberToObject(o, "value", value) &&
        (!threshold || cJSON_AddNumberToObject(o, "threshold", *threshold)) &&
        (!reason || cJSON_AddStringToObject(o, "reason", reason)) &&
        cJSON_AddStringToObject(o, "instance", a->conf->instance) &&
        cJSON_AddNumberToObject(o, "time", (double)now.tv_sec + now.tv_nsec / 1e9))
        text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!text) {
        log_error("alert %s: out of memory for its message", conf_alert_name(f));
        return;
    }
    if (a->mqtt)
        mqtt_publish(a->mqtt, a->conf->alerts.topic, text, strlen(text), 1, false, NULL, 0);
    free(text);
}

static void set_firing(struct alerts *a, enum conf_alert_figure f, bool on)
{
    a->firing[f] = on;
    a->fig.firing[f] = on;
    if (on)
        a->fig.fired[f]++;
    else
        a->fig.resolved[f]++;
}

/* Fire when V reaches fire, resolve when it is back at resolve. */
static void judge(struct alerts *a, enum conf_alert_figure f, double v)
{
    const struct conf_alert *rule = &a->conf->alerts.rule[f];
    if (!a->firing[f] && v >= rule->fire) {
        set_firing(a, f, true);
        log_warn("alert %s firing: %g reached %g", conf_alert_name(f), v, rule->fire);
        publish(a, f, "firing", v, &rule->fire, NULL);
    } else if (a->firing[f] && v <= rule->resolve) {
        set_firing(a, f, false);
        log_info("alert %s resolved: %g is back at %g", conf_alert_name(f), v, rule->resolve);
        publish(a, f, "resolved", v, &rule->resolve, NULL);
    }
}

static void on_tick(void *ctx)
{
    struct alerts *a = ctx;
    double v[ALERT_COUNT];
    measure(a, v);
    for (int f = 0; f < ALERT_COUNT; f++) {
        a->fig.value[f] = (uint64_t)llround(v[f] * 1000);
        if (a->conf->alerts.rule[f].enabled)
            judge(a, (enum conf_alert_figure)f, v[f]);
    }
    stats_block_publish(a->stats, &a->fig, sizeof(a->fig));
    loop_timer_arm(a->loop, &a->tick,
                   loop_now_ns(a->loop) + (uint64_t)(a->conf->alerts.interval_s * 1e9));
}

/* ---- as a source (source.h) */

static bool alerts_wanted(const struct conf *c)
{
    return true; /* with no alert on, a reload may turn one on */
}

static void *alerts_create(const struct conf *c, struct engine *e, struct loop *l)
{
    struct alerts *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    *a = (struct alerts){.conf = c, .engine = e, .loop = l};
    if (loop_timer_init(l, &a->tick, on_tick, a) < 0) {
        free(a);
        return NULL;
    }
    return a;
}

static bool any_on(const struct conf *c)
{
    for (int f = 0; f < ALERT_COUNT; f++)
        if (c->alerts.rule[f].enabled)
            return true;
    return false;
}

/* Look at the figures every interval_s while an alert is on; the block
 * "alerts" is added when the first one is, so an instance without alerts
 * shows none. */
static int start_looking(struct alerts *a)
{
    struct stats_block_spec spec = {
        .name = "alerts",
        .fields = alert_fields,
        .nfields = sizeof(alert_fields) / sizeof(alert_fields[0]),
        .size = sizeof(struct alert_figures),
    };
    if (!any_on(a->conf)) {
        loop_timer_cancel(a->loop, &a->tick);
        return 0;
    }
    if (!a->stats) {
        if (!(a->stats = engine_add_block(a->engine, &spec)))
            return -1;
        double baseline[ALERT_COUNT];
        measure(a, baseline); /* the first interval's figures start now */
    }
    loop_timer_arm(a->loop, &a->tick,
                   loop_now_ns(a->loop) + (uint64_t)(a->conf->alerts.interval_s * 1e9));
    return 0;
}

static int alerts_attach(void *self, struct mqtt *m)
{
    struct alerts *a = self;
    a->mqtt = m;
    return start_looking(a);
}

/* An alert the new configuration turns off resolves, said so. */
static int alerts_reload(void *self, const struct conf *c)
{
    struct alerts *a = self;
    a->conf = c;
    for (int f = 0; f < ALERT_COUNT; f++) {
        if (!a->firing[f] || c->alerts.rule[f].enabled)
            continue;
        set_firing(a, (enum conf_alert_figure)f, false);
        log_info("alert %s resolved: turned off by the reload", conf_alert_name(f));
        publish(a, (enum conf_alert_figure)f, "resolved", (double)a->fig.value[f] / 1000, NULL,
                "turned off by reload");
    }
    if (a->stats)
        stats_block_publish(a->stats, &a->fig, sizeof(a->fig));
    return start_looking(a);
}

static void alerts_free(void *self)
{
    struct alerts *a = self;
    if (!a)
        return;
    loop_timer_fini(a->loop, &a->tick);
    free(a);
}

const struct source_ops alerts_source = {
    .name = "alerts",
    .wanted = alerts_wanted,
    .create = alerts_create,
    .attach = alerts_attach,
    .reload = alerts_reload,
    .free = alerts_free,
};
