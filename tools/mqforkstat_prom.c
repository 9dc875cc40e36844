/* mqforkstat_prom.c - the -p output: one snapshot in the Prometheus text
 * exposition format (version 0.0.4), for node_exporter's textfile collector
 * or any scraper. Counters end in _total, units are seconds and bytes, and
 * latency is a real histogram. Every family's samples are written together,
 * as the format requires, so per-kind and per-worker families loop over the
 * kinds or workers inside. Busy blocks are left out and counted. */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "tools/mqforkstat.h"

#define NS_PER_S 1e9

/* Histogram boundaries: the internal buckets end at every power of two of
 * nanoseconds from 2^10 (1 us) to 2^37 (137 s), exclusive. A sample is an
 * integer of ns, so "below 2^k ns" is exactly "at most 2^k - 1 ns": that is
 * the le we print, and each cumulative count is exact, not an estimate. */
#define LE_FIRST_SHIFT STATS_HIST_MIN_SHIFT
#define LE_LAST_SHIFT  STATS_HIST_MAX_SHIFT

static void label_value(FILE *out, const char *v, size_t max)
{
    for (size_t i = 0; i < max && v[i]; i++) {
        char c = v[i];
        if (c == '\\' || c == '"')
            fprintf(out, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", out);
        else
            fputc(c, out);
    }
}

static void family(FILE *out, const char *name, const char *type, const char *help)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* `name{instance="x"` — the caller adds its labels and closes the brace. */
static void series(FILE *out, const struct snap *s, const char *name)
{
    fprintf(out, "%s{instance=\"", name);
    label_value(out, s->hdr.instance, sizeof(s->hdr.instance));
    fputc('"', out);
}

static void kind_labels(FILE *out, const struct stats_kind *k)
{
    fputs(",kind=\"", out);
    label_value(out, k->name, sizeof(k->name));
    fputs("\",route=\"", out);
    label_value(out, k->name, sizeof(k->name));
    fputc('"', out);
}

/* ---- instance and global */

static unsigned busy_blocks(const struct snap *s)
{
    unsigned n = s->global_busy + s->events_busy;
    for (unsigned i = 0; i < s->nkinds; i++)
        n += s->kinds[i].busy;
    for (unsigned i = 0; i < s->nworkers; i++)
        n += s->workers[i].busy;
    return n;
}

static void prom_instance(FILE *out, const struct snap *s)
{
    family(out, "mqfork_info", "gauge", "Always 1; labels name the daemon's version and pid.");
    series(out, s, "mqfork_info");
    fprintf(out, ",version=\"");
    label_value(out, s->hdr.version, sizeof(s->hdr.version));
    fprintf(out, "\",pid=\"%d\"} 1\n", (int)s->hdr.pid);
    family(out, "mqfork_start_time_seconds", "gauge", "When the daemon started, Unix time.");
    series(out, s, "mqfork_start_time_seconds");
    fprintf(out, "} %.3f\n", (double)s->hdr.start_realtime_ns / NS_PER_S);
    family(out, "mqfork_config_generation", "gauge", "Configuration reloads since the start.");
    series(out, s, "mqfork_config_generation");
    fprintf(out, "} %llu\n", (unsigned long long)s->generation);
    family(out, "mqfork_stats_busy_blocks", "gauge",
           "Statistics blocks left out of this scrape: no consistent copy could be had.");
    series(out, s, "mqfork_stats_busy_blocks");
    fprintf(out, "} %u\n", busy_blocks(s));
}

/* The family of F: its name up to the dot, as mqfork_<family>[_total]. */
static void field_family(char *buf, size_t len, const struct field *f)
{
    const char *dot = strchr(f->name, '.');
    int n = dot ? (int)(dot - f->name) : (int)strlen(f->name);
    snprintf(buf, len, "mqfork_%.*s%s", n, f->name, f->type == FIELD_COUNTER ? "_total" : "");
}

static void prom_global(FILE *out, const struct snap *s)
{
    if (s->global_busy)
        return;
    char prev[96] = "";
    for (size_t i = 0; i < stat_global_nfields; i++) {
        const struct field *f = &stat_global_fields[i];
        char name[96];
        field_family(name, sizeof(name), f);
        if (strcmp(name, prev) != 0)
            family(out, name, f->type == FIELD_COUNTER ? "counter" : "gauge", f->help);
        snprintf(prev, sizeof(prev), "%s", name);
        series(out, s, name);
        const char *dot = strchr(f->name, '.');
        if (dot && f->label)
            fprintf(out, ",%s=\"%s\"", f->label, dot + 1);
        if (f->divide == 1)
            fprintf(out, "} %llu\n", (unsigned long long)field_raw(f, &s->g));
        else
            fprintf(out, "} %.3f\n", field_value(f, &s->g));
    }
}

/* ---- per kind */

enum kind_metric { KM_RECEIVED, KM_COMPLETED, KM_FAILED };

static const struct {
    const char *name, *help;
} kind_counters[] = {
    [KM_RECEIVED] = {"mqfork_kind_received_total", "Jobs of this kind offered: accepted or "
                                                   "refused."},
    [KM_COMPLETED] = {"mqfork_kind_completed_total", "Jobs of this kind answered OK or filtered."},
    [KM_FAILED] = {"mqfork_kind_failed_total", "Jobs of this kind answered with an error."},
};

static uint64_t kind_counter(const struct stats_kind *k, enum kind_metric m)
{
    return m == KM_RECEIVED ? k->received : m == KM_COMPLETED ? k->completed : k->failed;
}

static void prom_kind_info(FILE *out, const struct snap *s)
{
    family(out, "mqfork_kind_info", "gauge", "Always 1; labels name the kind's handler.");
    for (unsigned i = 0; i < s->nkinds; i++) {
        const struct snap_kind *sk = &s->kinds[i];
        if (sk->busy)
            continue;
        series(out, s, "mqfork_kind_info");
        kind_labels(out, &sk->k);
        fputs(",handler=\"", out);
        label_value(out, sk->k.handler, sizeof(sk->k.handler));
        fputs("\"} 1\n", out);
    }
}

static void prom_kind_counters(FILE *out, const struct snap *s)
{
    for (unsigned m = 0; m < sizeof(kind_counters) / sizeof(kind_counters[0]); m++) {
        family(out, kind_counters[m].name, "counter", kind_counters[m].help);
        for (unsigned i = 0; i < s->nkinds; i++) {
            if (s->kinds[i].busy)
                continue;
            series(out, s, kind_counters[m].name);
            kind_labels(out, &s->kinds[i].k);
            fprintf(out, "} %llu\n", (unsigned long long)kind_counter(&s->kinds[i].k, m));
        }
    }
}

static void prom_kind_errors(FILE *out, const struct snap *s)
{
    family(out, "mqfork_kind_errors_total", "counter",
           "Jobs of this kind refused or answered with an error, by status.");
    for (unsigned i = 0; i < s->nkinds; i++) {
        const struct snap_kind *sk = &s->kinds[i];
        for (unsigned st = 0; !sk->busy && st < JOB_STATUS_COUNT; st++) {
            if (st == JOB_OK || st == JOB_FILTERED)
                continue;
            series(out, s, "mqfork_kind_errors_total");
            kind_labels(out, &sk->k);
            fprintf(out, ",status=\"%s\"} %llu\n", job_status_name(st),
                    (unsigned long long)sk->k.errors[st]);
        }
    }
}

static void prom_hist(FILE *out, const struct snap *s, const char *name, const struct stats_kind *k,
                      const struct stats_hist *h)
{
    uint64_t cum = 0;
    unsigned b = 0;
    for (unsigned shift = LE_FIRST_SHIFT; shift <= LE_LAST_SHIFT; shift++) {
        for (; b < STATS_HIST_BUCKETS && stats_hist_upper(b) <= (1ull << shift); b++)
            cum += h->bucket[b];
        fprintf(out, "%s_bucket{instance=\"", name);
        label_value(out, s->hdr.instance, sizeof(s->hdr.instance));
        fputc('"', out);
        kind_labels(out, k);
        fprintf(out, ",le=\"%.12g\"} %llu\n", (double)((1ull << shift) - 1) / NS_PER_S,
                (unsigned long long)(cum < h->count ? cum : h->count));
    }
    const char *suffix[] = {"_bucket", "_sum", "_count"};
    for (unsigned i = 0; i < 3; i++) {
        fprintf(out, "%s%s{instance=\"", name, suffix[i]);
        label_value(out, s->hdr.instance, sizeof(s->hdr.instance));
        fputc('"', out);
        kind_labels(out, k);
        if (i == 0)
            fprintf(out, ",le=\"+Inf\"} %llu\n", (unsigned long long)h->count);
        else if (i == 1)
            fprintf(out, "} %.9f\n", (double)h->sum_ns / NS_PER_S);
        else
            fprintf(out, "} %llu\n", (unsigned long long)h->count);
    }
}

static const struct {
    const char *name, *help;
    size_t offset; /* of the histogram in struct stats_kind */
} kind_hists[] = {
    {"mqfork_kind_wait_seconds", "Time from acceptance to start on a worker.",
     offsetof(struct stats_kind, wait)},
    {"mqfork_kind_run_seconds", "Time the handler ran, per job.", offsetof(struct stats_kind, run)},
    {"mqfork_kind_total_seconds",
     "Time from acceptance to the answer: the daemon's own time per job.",
     offsetof(struct stats_kind, total)},
};

static void prom_kind_latency(FILE *out, const struct snap *s)
{
    for (size_t h = 0; h < sizeof(kind_hists) / sizeof(kind_hists[0]); h++) {
        family(out, kind_hists[h].name, "histogram", kind_hists[h].help);
        for (unsigned i = 0; i < s->nkinds; i++) {
            const struct snap_kind *sk = &s->kinds[i];
            if (!sk->busy)
                prom_hist(out, s, kind_hists[h].name, &sk->k,
                          (const void *)((const char *)&sk->k + kind_hists[h].offset));
        }
    }
}

/* Whole numbers in full (a %g would round a large counter), others short. */
static void number(FILE *out, double v)
{
    if (v == floor(v) && fabs(v) < 1e15)
        fprintf(out, "%.0f\n", v);
    else
        fprintf(out, "%.9g\n", v);
}

/* ---- per worker */

enum worker_metric {
    WM_GENERATION,
    WM_INFLIGHT,
    WM_JOBS,
    WM_FAILURES,
    WM_RESPAWNS,
    WM_BACKOFF,
    WM_JOB_AGE,
    WM_CPU,
    WM_CPU_SECONDS,
    WM_RSS,
    WM_UPTIME,
    WM_COUNT
};

static const struct {
    const char *name, *type, *help;
} worker_metrics[WM_COUNT] = {
    [WM_GENERATION] = {"mqfork_worker_generation", "gauge", "Times this slot has been forked."},
    [WM_INFLIGHT] = {"mqfork_worker_inflight", "gauge", "Jobs handed to this worker."},
    [WM_JOBS] = {"mqfork_worker_jobs_total", "counter",
                 "Jobs this worker process finished (restarts with the process)."},
    [WM_FAILURES] = {"mqfork_worker_failures_total", "counter",
                     "Jobs this worker process answered with an error."},
    [WM_RESPAWNS] = {"mqfork_worker_respawns_total", "counter", "Respawns of this slot."},
    [WM_BACKOFF] = {"mqfork_worker_backoff_seconds", "gauge", "Current respawn delay of the slot."},
    [WM_JOB_AGE] = {"mqfork_worker_job_age_seconds", "gauge",
                    "How long the running job has run; 0 when none."},
    [WM_CPU] = {"mqfork_worker_cpu_ratio", "gauge", "CPU used over the last second, in cores."},
    [WM_CPU_SECONDS] = {"mqfork_worker_cpu_seconds_total", "counter",
                        "CPU time used by this worker process."},
    [WM_RSS] = {"mqfork_worker_rss_bytes", "gauge", "Resident set size of the worker."},
    [WM_UPTIME] = {"mqfork_worker_uptime_seconds", "gauge", "Time since this worker was forked."},
};

static double worker_metric(const struct snap *s, const struct snap_worker *sw,
                            enum worker_metric m)
{
    const struct stats_worker *w = &sw->w;
    switch (m) {
    case WM_GENERATION:
        return w->generation;
    case WM_INFLIGHT:
        return w->inflight;
    case WM_JOBS:
        return (double)w->jobs_done;
    case WM_FAILURES:
        return (double)w->failures;
    case WM_RESPAWNS:
        return (double)w->respawns;
    case WM_BACKOFF:
        return (double)w->backoff_ms / 1e3;
    case WM_JOB_AGE:
        return (double)worker_job_age_ns(s, sw) / NS_PER_S;
    case WM_CPU:
        return (double)w->cpu_permille / 1e3;
    case WM_CPU_SECONDS:
        return (double)w->cpu_ns / NS_PER_S;
    case WM_RSS:
        return (double)w->rss_kb * 1024.0;
    case WM_UPTIME:
        return w->started_ns && w->started_ns < s->mono_ns
                   ? (double)(s->mono_ns - w->started_ns) / NS_PER_S
                   : 0.0;
    case WM_COUNT:
        break;
    }
    return 0.0;
}

static void prom_worker_info(FILE *out, const struct snap *s)
{
    family(out, "mqfork_worker_info", "gauge", "Always 1; labels name the worker's pid and state.");
    for (unsigned i = 0; i < s->nworkers; i++) {
        const struct snap_worker *sw = &s->workers[i];
        if (sw->busy)
            continue;
        series(out, s, "mqfork_worker_info");
        fprintf(out, ",slot=\"%u\",pid=\"%d\",state=\"%s\"} 1\n", (unsigned)sw->slot,
                (int)sw->w.pid, worker_state_name(sw->w.state));
    }
}

static void prom_workers(FILE *out, const struct snap *s)
{
    prom_worker_info(out, s);
    for (unsigned m = 0; m < WM_COUNT; m++) {
        family(out, worker_metrics[m].name, worker_metrics[m].type, worker_metrics[m].help);
        for (unsigned i = 0; i < s->nworkers; i++) {
            const struct snap_worker *sw = &s->workers[i];
            if (sw->busy)
                continue;
            series(out, s, worker_metrics[m].name);
            fprintf(out, ",slot=\"%u\"} ", (unsigned)sw->slot);
            number(out, worker_metric(s, sw, m));
        }
    }
}

int out_prom(FILE *out, const struct snap *s)
{
    prom_instance(out, s);
    prom_global(out, s);
    prom_kind_info(out, s);
    prom_kind_counters(out, s);
    prom_kind_errors(out, s);
    prom_kind_latency(out, s);
    prom_workers(out, s);
    return fflush(out) == 0 && !ferror(out) ? 0 : -1;
}
