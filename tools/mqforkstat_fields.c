/* mqforkstat_fields.c - the one list of the global block's counters and
 * gauges, with their names, types and help texts, so the text, JSON and
 * Prometheus outputs cannot drift apart; and the derived figures (latency in
 * microseconds, job age, uptime, crash cause, event times) every output
 * computes and formats the same way. */
#include <signal.h>
#include <string.h>
#include <time.h>

#include "tools/mqforkstat.h"

#define G(member) offsetof(struct stats_global, member), sizeof(((struct stats_global *)0)->member)

#define COUNTER(name, member, help)                                                                \
    {                                                                                              \
        name, NULL, FIELD_COUNTER, G(member), 1, help                                              \
    }
#define GAUGE(name, member, help)                                                                  \
    {                                                                                              \
        name, NULL, FIELD_GAUGE, G(member), 1, help                                                \
    }
#define LABELED(name, label, type, member, divide, help)                                           \
    {                                                                                              \
        name, label, type, G(member), divide, help                                                 \
    }

const struct field stat_global_fields[] = {
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
    LABELED("jobs_refused.overloaded", "reason", FIELD_COUNTER, refused[JOB_E_OVERLOADED], 1,
            "Jobs refused, by reason."),
    LABELED("jobs_refused.too_large", "reason", FIELD_COUNTER, refused[JOB_E_TOO_LARGE], 1,
            "Jobs refused, by reason."),
    LABELED("jobs_refused.unknown_kind", "reason", FIELD_COUNTER, refused[JOB_E_UNKNOWN_KIND], 1,
            "Jobs refused, by reason."),
    LABELED("jobs_refused.shutdown", "reason", FIELD_COUNTER, refused[JOB_E_SHUTDOWN], 1,
            "Jobs refused, by reason."),
    LABELED("jobs_refused.bad_input", "reason", FIELD_COUNTER, refused[JOB_E_BAD_INPUT], 1,
            "Jobs refused, by reason."),
    COUNTER("late_results", late_results,
            "Results discarded: from a dead worker generation or not believable."),
    LABELED("jobs_pending.high", "priority", FIELD_GAUGE, pending[0], 1,
            "Jobs waiting in the queues, by priority."),
    LABELED("jobs_pending.normal", "priority", FIELD_GAUGE, pending[1], 1,
            "Jobs waiting in the queues, by priority."),
    LABELED("jobs_pending.low", "priority", FIELD_GAUGE, pending[2], 1,
            "Jobs waiting in the queues, by priority."),
    GAUGE("jobs_inflight", inflight, "Jobs handed to a worker and not yet answered."),
    LABELED("arrival_rate.1s", "window", FIELD_GAUGE, arrival_mrate[0], 1000,
            "Jobs accepted per second, averaged over the window."),
    LABELED("arrival_rate.10s", "window", FIELD_GAUGE, arrival_mrate[1], 1000,
            "Jobs accepted per second, averaged over the window."),
    LABELED("arrival_rate.60s", "window", FIELD_GAUGE, arrival_mrate[2], 1000,
            "Jobs accepted per second, averaged over the window."),
    LABELED("completion_rate.1s", "window", FIELD_GAUGE, completion_mrate[0], 1000,
            "Jobs answered per second, averaged over the window."),
    LABELED("completion_rate.10s", "window", FIELD_GAUGE, completion_mrate[1], 1000,
            "Jobs answered per second, averaged over the window."),
    LABELED("completion_rate.60s", "window", FIELD_GAUGE, completion_mrate[2], 1000,
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
    COUNTER("stream_evictions", stream_evictions, "Idle stream states evicted for space."),
    GAUGE("slab_used_bytes", slab_used, "Payload slab bytes in use."),
    GAUGE("slab_size_bytes", slab_size, "Payload slab size in bytes."),
    GAUGE("mqtt_connected", mqtt_connected, "1 while connected to the MQTT broker."),
    GAUGE("mqtt_queue", mqtt_queue, "Results waiting to be published."),
    COUNTER("mqtt_reconnects", mqtt_reconnects, "Broker connections made after the first."),
    COUNTER("mqtt_messages_in", mqtt_msgs_in, "MQTT messages received."),
    COUNTER("mqtt_bytes_in", mqtt_bytes_in, "MQTT payload bytes received."),
    COUNTER("mqtt_messages_out", mqtt_msgs_out, "MQTT messages published."),
    COUNTER("mqtt_bytes_out", mqtt_bytes_out, "MQTT payload bytes published."),
    COUNTER("mqtt_dropped", mqtt_dropped,
            "Results dropped: outbound queue full, or a topic no broker would take."),
    COUNTER("mqtt_unrouted", mqtt_unrouted, "MQTT messages that matched no route."),
};

const size_t stat_global_nfields = sizeof(stat_global_fields) / sizeof(stat_global_fields[0]);

uint64_t field_raw(const struct field *f, const struct stats_global *g)
{
    const char *p = (const char *)g + f->off;
    if (f->width == 4) {
        uint32_t v;
        memcpy(&v, p, sizeof(v));
        return v;
    }
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

double field_value(const struct field *f, const struct stats_global *g)
{
    return (double)field_raw(f, g) / (double)f->divide;
}

const char *verdict_name(uint32_t v)
{
    return v == VERDICT_FALLING_BEHIND ? "FALLING_BEHIND"
           : v == VERDICT_HEALTHY      ? "HEALTHY"
                                       : "UNKNOWN";
}

double hist_us(uint64_t ns)
{
    return (double)ns / 1000.0;
}

double hist_mean_us(const struct stats_hist *h)
{
    return h->count ? (double)h->sum_ns / (double)h->count / 1000.0 : 0.0;
}

uint64_t worker_job_age_ns(const struct snap *s, const struct snap_worker *w)
{
    uint64_t start = w->w.cur_start_ns;
    return start && start < s->mono_ns ? s->mono_ns - start : 0;
}

double snap_uptime_s(const struct snap *s)
{
    uint64_t start = s->hdr.start_realtime_ns;
    return start && start < s->real_ns ? (double)(s->real_ns - start) / 1e9 : 0.0;
}

double snap_age_s(const struct snap *s)
{
    uint64_t up = s->g.updated_ns;
    return up && up < s->mono_ns ? (double)(s->mono_ns - up) / 1e9 : 0.0;
}

void safe_name(char *dst, size_t dstlen, const char *name, size_t len)
{
    size_t i = 0;
    for (; i + 1 < dstlen && i < len && name[i]; i++) {
        unsigned char c = (unsigned char)name[i];
        dst[i] = c <= ' ' || c >= 0x7f ? '_' : (char)c;
    }
    if (dstlen)
        dst[i] = '\0';
}

/* ISO 8601 UTC with milliseconds; the event rings keep CLOCK_REALTIME. */
void fmt_time_iso(char *buf, size_t len, uint64_t ns)
{
    time_t t = (time_t)(ns / 1000000000u);
    struct tm tm;
    gmtime_r(&t, &tm);
    char base[32];
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, len, "%s.%03uZ", base, (unsigned)(ns / 1000000u % 1000u));
}

/* "SIGSEGV", or "exit 3" for a worker that exited by itself. */
void crash_cause(char *buf, size_t len, const struct stats_crash *c)
{
    const char *abbrev = c->signal > 0 && c->signal < NSIG ? sigabbrev_np(c->signal) : NULL;
    if (c->signal == 0)
        snprintf(buf, len, "exit_%d", (int)c->exit_code);
    else if (abbrev)
        snprintf(buf, len, "SIG%s", abbrev);
    else
        snprintf(buf, len, "signal_%d", (int)c->signal);
}
