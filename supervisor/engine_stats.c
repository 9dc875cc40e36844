/* engine_stats.c - the engine's named counter blocks: "engine", with the
 * table that names and explains each of its figures (mqforkstat prints them
 * from this table, with the names scripts have always used), the blocks
 * declared before start, and each handler's own counters
 * ("plugin.<handler>", one instance per worker slot). The figures
 * themselves are counted, each by the part of the engine it describes,
 * into a private struct stats_global. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "shm/statblock.h"
#include "supervisor/engine_impl.h"

#define FIELD(kind, name, label, member, divide, help)                                             \
    STATS_DESC(kind, struct stats_global, member, name, label, divide, help)
#define COUNTER(name, member, help) FIELD(STATS_COUNTER, name, NULL, member, 1, help)
#define GAUGE(name, member, help)   FIELD(STATS_GAUGE, name, NULL, member, 1, help)
#define LABELED(name, label, kind, member, divide, help)                                           \
    FIELD(kind, name, label, member, divide, help)

static const struct stats_field_desc engine_fields[] = {
    FIELD(STATS_TIMESTAMP, "stats_age_s", NULL, updated_ns, 1,
          "Seconds since the engine last published its figures."),
    {.name = "verdict",
     .type = STATS_STATE,
     .offset = offsetof(struct stats_global, verdict),
     .size = sizeof(((struct stats_global *)0)->verdict),
     .states = "HEALTHY|FALLING_BEHIND",
     .help = "FALLING_BEHIND when over 10 s answers came at less than 95% of arrivals."},
    COUNTER("jobs_accepted", accepted, "Jobs accepted into the queues."),
    COUNTER("jobs_completed", completed, "Jobs answered with a result."),
    COUNTER("jobs_filtered", filtered, "Jobs answered with nothing (the handler filtered them)."),
    COUNTER("jobs_failed", failed,
            "Jobs answered with an error: handler error, quarantine, expiry or shutdown."),
    COUNTER("jobs_retried", retried, "Job attempts re-run after their worker died."),
    COUNTER("jobs_timed_out", timed_out, "Job attempts killed for running past timeout_ms."),
    COUNTER("jobs_quarantined", quarantined,
            "Jobs quarantined for killing workers more often than their retries."),
    COUNTER("jobs_expired", expired, "Jobs dropped for still pending past their deadline."),
    COUNTER("jobs_abandoned", abandoned, "Jobs given up by a drain or a removed route."),
    LABELED("jobs_refused.overloaded", "reason", STATS_COUNTER, refused[JOB_E_OVERLOADED], 1,
            "Jobs refused, by reason."),
    LABELED("jobs_refused.too_large", "reason", STATS_COUNTER, refused[JOB_E_TOO_LARGE], 1,
            "Jobs refused, by reason."),
    LABELED("jobs_refused.unknown_kind", "reason", STATS_COUNTER, refused[JOB_E_UNKNOWN_KIND], 1,
            "Jobs refused, by reason."),
    LABELED("jobs_refused.shutdown", "reason", STATS_COUNTER, refused[JOB_E_SHUTDOWN], 1,
            "Jobs refused, by reason."),
    LABELED("jobs_refused.bad_input", "reason", STATS_COUNTER, refused[JOB_E_BAD_INPUT], 1,
            "Jobs refused, by reason."),
    COUNTER("late_results", late_results,
            "Results discarded: from a dead worker generation or not believable."),
    LABELED("jobs_pending.high", "priority", STATS_GAUGE, pending[0], 1,
            "Jobs waiting in the queues, by priority."),
    LABELED("jobs_pending.normal", "priority", STATS_GAUGE, pending[1], 1,
            "Jobs waiting in the queues, by priority."),
    LABELED("jobs_pending.low", "priority", STATS_GAUGE, pending[2], 1,
            "Jobs waiting in the queues, by priority."),
    GAUGE("jobs_inflight", inflight, "Jobs handed to a worker and not yet answered."),
    LABELED("arrival_rate.1s", "window", STATS_GAUGE, arrival_mrate[0], 1000,
            "Jobs accepted per second, averaged over the window."),
    LABELED("arrival_rate.10s", "window", STATS_GAUGE, arrival_mrate[1], 1000,
            "Jobs accepted per second, averaged over the window."),
    LABELED("arrival_rate.60s", "window", STATS_GAUGE, arrival_mrate[2], 1000,
            "Jobs accepted per second, averaged over the window."),
    LABELED("completion_rate.1s", "window", STATS_GAUGE, completion_mrate[0], 1000,
            "Jobs answered per second, averaged over the window."),
    LABELED("completion_rate.10s", "window", STATS_GAUGE, completion_mrate[1], 1000,
            "Jobs answered per second, averaged over the window."),
    LABELED("completion_rate.60s", "window", STATS_GAUGE, completion_mrate[2], 1000,
            "Jobs answered per second, averaged over the window."),
    GAUGE("falling_behind", verdict,
          "1 when over 10 s jobs were answered at less than 95% of their arrival rate."),
    GAUGE("workers_min", workers_min, "Configured minimum pool size."),
    GAUGE("workers_max", workers_max, "Configured maximum pool size."),
    GAUGE("workers_target", workers_target, "Pool size the supervisor aims for now."),
    GAUGE("workers_live", workers_live, "Workers running and ready."),
    GAUGE("workers_busy", workers_busy, "Live workers with at least one job."),
    GAUGE("workers_idle", workers_idle, "Live workers without a job."),
    COUNTER("workers_spawned", spawned, "Worker processes forked."),
    COUNTER("workers_crashed", crashed, "Workers that died without being asked to."),
    COUNTER("workers_killed_timeout", killed_timeout,
            "Workers killed because a job ran past its timeout."),
    COUNTER("workers_recycled", recycled, "Workers retired by job count or RSS and replaced."),
    COUNTER("scale_events", scale_events, "Pool size changes (autoscaler and signals)."),
    GAUGE("streams_live", streams_live, "Streams with state in shared memory."),
    COUNTER("stream_resets", stream_resets,
            "Stream states reset because their worker died mid-frame."),
    COUNTER("stream_evictions", stream_evictions,
            "Idle streams without state to lose evicted for space."),
    COUNTER("stream_refusals", stream_refusals,
            "New streams refused as overloaded: every slot held a job or live state."),
    GAUGE("slab_used_bytes", slab_used, "Payload slab bytes in use."),
    GAUGE("slab_size_bytes", slab_size, "Payload slab size in bytes."),
};

static const char *spec_name(const struct stats_block_spec *spec)
{
    return spec->name ? spec->name : "(null)";
}

int engine_declare_block(struct engine *e, const struct stats_block_spec *spec)
{
    if (e->started || e->ndeclared >= STATS_MAX_BLOCKS) {
        log_error("cannot declare statistics block '%s': %s", spec_name(spec),
                  e->started ? "the engine has started" : "too many blocks");
        return -1;
    }
    e->declared[e->ndeclared++] = spec;
    return 0;
}

/* The engine's block, then the declared ones: all before the first fork. */
int engine_stats_start(struct engine *e)
{
    struct stats_block_spec spec = {
        .name = "engine",
        .flags = STATS_BLOCK_GLOBAL,
        .fields = engine_fields,
        .nfields = sizeof(engine_fields) / sizeof(engine_fields[0]),
        .size = sizeof(struct stats_global),
    };
    e->stats = stats_block_add(&e->seg, &spec);
    if (!e->stats) {
        log_error("cannot add the engine's statistics block: %s", strerror(errno));
        return -1;
    }
    for (unsigned i = 0; i < e->ndeclared; i++)
        if (!stats_block_add(&e->seg, e->declared[i])) {
            log_error("cannot add statistics block '%s': %s", spec_name(e->declared[i]),
                      strerror(errno));
            return -1;
        }
    for (unsigned k = 0; k < e->nkinds; k++)
        engine_handler_figures(e, e->kinds[k].handler, 0);
    return 0;
}

/* The per-worker block "plugin.<name>" of handler H's figures: its counters,
 * each a uint64_t, then its histograms, each a struct stats_hist, in the
 * order H declares them. NULL when it cannot be added. */
static struct stats_block *add_handler_block(struct engine *e, const struct mqfork_handler *h,
                                             const char *name)
{
    unsigned n = h->ncounters + h->nhistograms;
    struct stats_field_desc *f = calloc(n, sizeof(*f));
    if (!f)
        return NULL;
    for (unsigned i = 0; i < h->ncounters; i++)
        f[i] = (struct stats_field_desc){
            .name = h->counters[i].name,
            .type = h->counters[i].gauge ? STATS_GAUGE : STATS_COUNTER,
            .offset = i * sizeof(uint64_t),
            .size = sizeof(uint64_t),
            .help = h->counters[i].help,
        };
    for (unsigned i = 0; i < h->nhistograms; i++)
        f[h->ncounters + i] = (struct stats_field_desc){
            .name = h->histograms[i].name,
            .type = STATS_HISTOGRAM,
            .offset = engine_handler_hist_offset(h) + i * sizeof(struct stats_hist),
            .size = sizeof(struct stats_hist),
            .help = h->histograms[i].help,
        };
    struct stats_block_spec spec = {
        .name = name,
        .flags = STATS_BLOCK_PER_WORKER,
        .fields = f,
        .nfields = n,
        .size = engine_handler_hist_offset(h) + h->nhistograms * sizeof(struct stats_hist),
    };
    struct stats_block *b = stats_block_add(&e->seg, &spec);
    if (!b)
        log_error("handler %s: cannot add its figures' block %s: %s", h->name, name,
                  strerror(errno));
    free(f);
    return b;
}

size_t engine_handler_hist_offset(const struct mqfork_handler *h)
{
    return h->ncounters * sizeof(uint64_t);
}

void *engine_handler_figures(struct engine *e, const struct mqfork_handler *h, unsigned slot)
{
    if (!h || (!h->ncounters && !h->nhistograms))
        return NULL;
    char name[STATS_BLOCK_NAME_LEN];
    snprintf(name, sizeof(name), "plugin.%s", h->name);
    struct stats_block *b = stats_block_find(&e->seg, name);
    if (!b)
        b = add_handler_block(e, h, name);
    b = b ? stats_block_instance(b, slot) : NULL;
    return b ? stats_block_data(b) : NULL;
}

void engine_stats_publish(struct engine *e)
{
    stats_block_publish(e->stats, &e->g, sizeof(e->g));
}

struct stats_block *engine_add_block(struct engine *e, const struct stats_block_spec *spec)
{
    struct stats_block *b = e->started ? stats_block_add(&e->seg, spec) : NULL;
    if (!b)
        log_error("cannot add statistics block '%s': %s", spec_name(spec),
                  !e->started ? "the engine has not started" : strerror(errno));
    return b;
}
