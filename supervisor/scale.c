/* scale.c - the autoscaler and the operator's manual scaling: measure the
 * pool over each interval, decide up / down / stay, and record every change
 * as a scaling event (see scale.h for the rules). */
#include "supervisor/scale.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "shm/clock.h"
#include "supervisor/engine_impl.h"

/* What one interval looked like. */
struct figures {
    double load;   /* 0..1 */
    double cpu;    /* 0..1 of one core per worker */
    double p95_ms; /* handler run time */
    size_t pending;
    unsigned live;
};

static uint64_t secs_ns(double s)
{
    return (uint64_t)(s * 1e9);
}

void scale_restart(struct engine *e)
{
    loop_timer_arm(e->loop, &e->scale.check,
                   loop_now_ns(e->loop) + secs_ns(e->scale.conf.interval_s));
}

void scale_configure(struct engine *e, const struct conf_scaling *c)
{
    e->scale.conf = *c;
    if (e->started)
        scale_restart(e);
}

/* A worker's outstanding work against its bound, whichever bound is nearer. */
static double worker_load(const struct engine *e, const struct worker *w)
{
    double jobs = (double)w->ninflight / (double)e->wconf.inflight;
    double work = (double)w->est_ns / ((double)e->wconf.inflight_us * 1000.0);
    double l = jobs > work ? jobs : work;
    return l < 1.0 ? l : 1.0;
}

/* Ticks come every 2 ms under load and every 200 ms when idle, so each
 * sample is weighted by the time since the previous one. */
void scale_sample(struct engine *e)
{
    struct scaler *s = &e->scale;
    double sum = 0;
    unsigned live = 0;
    for (unsigned i = 0; i < e->pool.nslots; i++) {
        const struct worker *w = &e->pool.workers[i];
        if (pool_takes_jobs(w)) {
            sum += worker_load(e, w);
            live++;
        }
    }
    uint64_t dt = s->last_sample_ns ? e->now_ns - s->last_sample_ns : 0;
    s->last_sample_ns = e->now_ns;
    if (!live || !dt)
        return;
    s->load_sum += sum / live * (double)dt;
    s->load_weight += (double)dt;
}

/* The interval's figures; the accumulators start over. */
static void measure(struct engine *e, struct figures *f)
{
    struct scaler *s = &e->scale;
    memset(f, 0, sizeof(*f));
    f->load = s->load_weight > 0 ? s->load_sum / s->load_weight : 0;
    uint64_t cpu = 0;
    for (unsigned i = 0; i < e->pool.nslots; i++) {
        if (pool_takes_jobs(&e->pool.workers[i])) {
            cpu += e->seg.workers_stats[i].cpu_permille;
            f->live++;
        }
    }
    f->cpu = f->live ? (double)cpu / 1000.0 / f->live : 0;
    f->p95_ms = (double)stats_hist_percentile(&s->run, 0.95) / 1e6;
    for (int p = 0; p < PRIO_COUNT; p++)
        f->pending += e->g.pending[p];
    s->load_sum = s->load_weight = 0;
    memset(&s->run, 0, sizeof(s->run));
}

/* "load 0.92>0.70, cpu 0.45, p95 1.2 ms, pending 40>6": each figure, with
 * the threshold it crossed when it is one that decided. */
static void describe(char *buf, size_t len, const struct figures *f, const struct conf_scaling *c,
                     bool up)
{
    const char *rel = up ? ">" : "<";
    double pend_thr = up ? c->up_pending_per_worker * f->live : 0;
    char l[24] = "", u[24] = "", p[24] = "", q[24] = "";
    if (up ? f->load > c->up_load : true)
        snprintf(l, sizeof(l), "%s%.2f", rel, up ? c->up_load : c->down_load);
    if (up ? f->cpu > c->up_cpu : true)
        snprintf(u, sizeof(u), "%s%.2f", rel, up ? c->up_cpu : c->down_cpu);
    if (up ? f->p95_ms > c->up_p95_ms : true)
        snprintf(p, sizeof(p), "%s%g", rel, up ? c->up_p95_ms : c->down_p95_ms);
    if (up && (double)f->pending > pend_thr)
        snprintf(q, sizeof(q), ">%g", pend_thr);
    snprintf(buf, len, "load %.2f%s, cpu %.2f%s, p95 %.1f%s ms, pending %zu%s, %u live", f->load, l,
             f->cpu, u, f->p95_ms, p, f->pending, q, f->live);
}

static bool wants_up(const struct figures *f, const struct conf_scaling *c)
{
    return f->load > c->up_load || f->cpu > c->up_cpu || f->p95_ms > c->up_p95_ms ||
           (double)f->pending > c->up_pending_per_worker * f->live;
}

static bool wants_down(const struct figures *f, const struct conf_scaling *c)
{
    return f->load < c->down_load && f->cpu < c->down_cpu && f->p95_ms < c->down_p95_ms &&
           f->pending == 0;
}

static bool cooling_down(const struct engine *e)
{
    const struct scaler *s = &e->scale;
    if (!s->last_event_ns)
        return false;
    double cd = s->last_up ? s->conf.up_cooldown_s : s->conf.down_cooldown_s;
    return e->now_ns < s->last_event_ns + secs_ns(cd);
}

static void decide(struct engine *e, const struct figures *f)
{
    const struct conf_scaling *c = &e->scale.conf;
    unsigned from = e->pool.target, to = from;
    bool up = wants_up(f, c);
    if (up)
        to = from + c->step < e->wconf.max ? from + c->step : e->wconf.max;
    else if (wants_down(f, c))
        to = from > e->wconf.min ? from - 1 : from;
    if (to == from)
        return;
    char reason[192]; /* room for every figure; the stats ring keeps what fits */
    describe(reason, sizeof(reason), f, c, up);
    pool_set_target(e, to);
    scale_record(e, from, to, up, reason);
}

void scale_check(void *engine)
{
    struct engine *e = engine_of_timer(engine);
    struct scaler *s = &e->scale;
    loop_timer_arm(e->loop, &s->check, e->now_ns + secs_ns(s->conf.interval_s));
    struct figures f;
    measure(e, &f);
    /* Not while draining, nor while no worker is up to measure. */
    if (s->conf.enabled && e->accepting && f.live && !cooling_down(e))
        decide(e, &f);
}

void scale_record(struct engine *e, unsigned from, unsigned to, bool up, const char *reason)
{
    log_info("scaling %s: %u -> %u workers (%s)", up ? "up" : "down", from, to, reason);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct stats_events *ev = e->seg.events;
    seqlock_write_begin(&ev->lock);
    struct stats_scale *sc = &ev->scale[ev->scales % STATS_RING_LEN];
    sc->time_ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
    sc->from = from;
    sc->to = to;
    snprintf(sc->reason, sizeof(sc->reason), "%s", reason);
    ev->scales++;
    seqlock_write_end(&ev->lock);
    e->g.scale_events++;
    e->g_dirty = true;
    e->scale.last_event_ns = mono_ns();
    e->scale.last_up = up;
}

unsigned scale_manual(struct engine *e, int delta, const char *who)
{
    unsigned from = e->pool.target;
    long want = (long)from + delta;
    if (want < (long)e->wconf.min)
        want = e->wconf.min;
    if (want > (long)e->wconf.max)
        want = e->wconf.max;
    if (delta == 0)
        return from;
    if ((unsigned)want == from) {
        log_info("%s ignored: already at workers.%s (%u)", who, delta > 0 ? "max" : "min", from);
        return from;
    }
    unsigned to = pool_set_target(e, (unsigned)want);
    char reason[64];
    snprintf(reason, sizeof(reason), "manual: %s", who);
    scale_record(e, from, to, delta > 0, reason);
    return to;
}
