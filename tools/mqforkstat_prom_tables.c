/* mqforkstat_prom_tables.c - the -p output's structured tables: one family
 * per figure of the job kinds (labels kind and route) and of the worker
 * slots (label slot), each family's samples written together as the format
 * requires. */
#include <stddef.h>
#include <string.h>

#include "tools/mqforkstat_prom.h"

/* `,kind="x",route="x"`: a route is its kind (see tools/mqforkstat.md). */
static void kind_labels(char *buf, size_t len, const struct stats_kind *k)
{
    char name[2 * STATS_NAME_LEN + 1];
    prom_escape(name, sizeof(name), k->name, sizeof(k->name));
    snprintf(buf, len, ",kind=\"%s\",route=\"%s\"", name, name);
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
        char labels[PROM_LABELS_LEN];
        kind_labels(labels, sizeof(labels), &sk->k);
        series(out, s, "mqfork_kind_info");
        fputs(labels, out);
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
            char labels[PROM_LABELS_LEN];
            kind_labels(labels, sizeof(labels), &s->kinds[i].k);
            series(out, s, kind_counters[m].name);
            fputs(labels, out);
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
            char labels[PROM_LABELS_LEN];
            kind_labels(labels, sizeof(labels), &sk->k);
            series(out, s, "mqfork_kind_errors_total");
            fputs(labels, out);
            fprintf(out, ",status=\"%s\"} %llu\n", job_status_name(st),
                    (unsigned long long)sk->k.errors[st]);
        }
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
            char labels[PROM_LABELS_LEN];
            if (sk->busy)
                continue;
            kind_labels(labels, sizeof(labels), &sk->k);
            prom_hist(out, s, kind_hists[h].name, labels,
                      (const void *)((const char *)&sk->k + kind_hists[h].offset));
        }
    }
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

bool prom_fixed_family(const char *name)
{
    static const char *const instance[] = {"mqfork_info",
                                           "mqfork_start_time_seconds",
                                           "mqfork_config_generation",
                                           "mqfork_stats_busy_blocks",
                                           "mqfork_kind_info",
                                           "mqfork_kind_errors_total",
                                           "mqfork_worker_info"};
    for (size_t i = 0; i < sizeof(instance) / sizeof(instance[0]); i++)
        if (strcmp(name, instance[i]) == 0)
            return true;
    for (size_t i = 0; i < sizeof(kind_counters) / sizeof(kind_counters[0]); i++)
        if (strcmp(name, kind_counters[i].name) == 0)
            return true;
    for (size_t i = 0; i < sizeof(kind_hists) / sizeof(kind_hists[0]); i++)
        if (strcmp(name, kind_hists[i].name) == 0)
            return true;
    for (size_t i = 0; i < WM_COUNT; i++)
        if (strcmp(name, worker_metrics[i].name) == 0)
            return true;
    return false;
}

void prom_tables(FILE *out, const struct snap *s)
{
    prom_kind_info(out, s);
    prom_kind_counters(out, s);
    prom_kind_errors(out, s);
    prom_kind_latency(out, s);
    prom_workers(out, s);
}
