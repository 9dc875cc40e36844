/* mqfork-device-report.c - what the device simulator measured: latency
 * histograms (log-linear, microseconds), and the summary on stdout, as a
 * per-device table with a totals line, or as JSON. */
#include <cJSON.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "tools/mqfork-device.h"

#define EXACT  64 /* values below are their own bucket */
#define SUB    32 /* buckets per power of two above */
#define TOP    40 /* up to 2^40 us */
#define HIST_N (EXACT + (TOP - 6) * SUB)

static int bucket(int64_t v)
{
    if (v < EXACT)
        return v < 0 ? 0 : (int)v;
    int e = 63 - __builtin_clzll((unsigned long long)v);
    int b = EXACT + (e - 6) * SUB + (int)((v >> (e - 5)) & (SUB - 1));
    return b < HIST_N ? b : HIST_N - 1;
}

static int64_t bucket_mid(int b)
{
    if (b < EXACT)
        return b;
    int e = (b - EXACT) / SUB + 6, sub = (b - EXACT) % SUB;
    int64_t width = (int64_t)1 << (e - 5);
    return ((int64_t)1 << e) + sub * width + width / 2;
}

void hist_add(struct hist *h, int64_t us)
{
    if (!h->b && !(h->b = calloc(HIST_N, sizeof(*h->b))))
        return;
    h->b[bucket(us)]++;
    h->n++;
}

int64_t hist_quantile(const struct hist *h, double q)
{
    if (!h->n)
        return -1;
    uint64_t want = (uint64_t)(q * (double)h->n + 0.999999), seen = 0;
    if (want < 1)
        want = 1;
    for (int b = 0; b < HIST_N; b++) {
        seen += h->b[b];
        if (seen >= want)
            return bucket_mid(b);
    }
    return bucket_mid(HIST_N - 1);
}

void hist_merge(struct hist *into, const struct hist *from)
{
    if (!from->n || (!into->b && !(into->b = calloc(HIST_N, sizeof(*into->b)))))
        return;
    for (int b = 0; b < HIST_N; b++)
        into->b[b] += from->b[b];
    into->n += from->n;
}

void hist_free(struct hist *h)
{
    free(h->b);
    h->b = NULL;
    h->n = 0;
}

/* ---- the summary --------------------------------------------------------- */

struct totals {
    long ok, failed, stopped;
    struct dev_stats st; /* counters summed, histograms merged */
    struct hist hello;
    double cpu_s, elapsed_s;
    long rss_kb;
};

/* failed: no session (connect or hello failed) or lost its connection;
 * stopped: interrupted before its hello reply; ok: had its session. */
static const char *result(const struct device *d)
{
    if (d->state == DEV_FAILED)
        return "failed";
    if (d->state != DEV_DONE)
        return "running";
    return d->st.hello_us < 0 ? "stopped" : "ok";
}

/* The counters, as named in the JSON output ("json." ones in its "json"
 * object). */
static const struct {
    const char *name;
    size_t off;
} counters[] = {
    {"sent", offsetof(struct dev_stats, sent)},
    {"send_errors", offsetof(struct dev_stats, send_errors)},
    {"received", offsetof(struct dev_stats, received)},
    {"lost", offsetof(struct dev_stats, lost)},
    {"out_of_order", offsetof(struct dev_stats, ooo)},
    {"bad", offsetof(struct dev_stats, bad)},
    {"undecodable", offsetof(struct dev_stats, undecodable)},
    {"aborts", offsetof(struct dev_stats, aborts)},
    {"after_abort", offsetof(struct dev_stats, after_abort)},
    {"json.stt", offsetof(struct dev_stats, json[JK_STT])},
    {"json.tts", offsetof(struct dev_stats, json[JK_TTS])},
    {"json.llm", offsetof(struct dev_stats, json[JK_LLM])},
    {"json.other", offsetof(struct dev_stats, json[JK_OTHER])},
    {"json.unparsable", offsetof(struct dev_stats, bad_json)},
};

static uint64_t *counter(struct dev_stats *st, size_t k)
{
    return (uint64_t *)((char *)st + counters[k].off);
}

static uint64_t count_of(const struct dev_stats *st, size_t k)
{
    return *(const uint64_t *)((const char *)st + counters[k].off);
}

static void sum(struct sim *s, struct totals *t)
{
    struct rusage ru;
    memset(t, 0, sizeof(*t));
    for (long i = 0; i < s->n; i++) {
        const struct dev_stats *d = &s->devs[i].st;
        const char *r = result(&s->devs[i]);
        t->ok += !strcmp(r, "ok");
        t->failed += !strcmp(r, "failed");
        t->stopped += strcmp(r, "ok") && strcmp(r, "failed");
        for (size_t k = 0; k < sizeof(counters) / sizeof(counters[0]); k++)
            *counter(&t->st, k) += count_of(d, k);
        hist_merge(&t->st.jitter, &d->jitter);
        hist_merge(&t->st.reply, &d->reply);
        hist_merge(&t->st.stt, &d->stt);
        hist_merge(&t->st.late, &d->late);
        if (d->hello_us >= 0)
            hist_add(&t->hello, d->hello_us);
    }
    getrusage(RUSAGE_SELF, &ru);
    t->cpu_s = cpu_seconds() - s->cpu0;
    t->elapsed_s = (double)(s->t_end - s->t0) / US;
    t->rss_kb = ru.ru_maxrss;
}

double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static double ms(int64_t us)
{
    return (double)us / 1000.0;
}

/* A quantile in ms for the table, "-" when there is no value. */
static const char *qcell(char *buf, size_t len, const struct hist *h, double q)
{
    int64_t v = hist_quantile(h, q);
    if (v < 0)
        return "-";
    snprintf(buf, len, "%.2f", ms(v));
    return buf;
}

static uint64_t json_total(const struct dev_stats *st)
{
    uint64_t n = 0;
    for (int k = 0; k < JK_COUNT; k++)
        n += st->json[k];
    return n;
}

static void print_row(const struct device *d)
{
    char h[24] = "-", j50[24], j99[24], rp[24];
    const struct dev_stats *st = &d->st;
    if (st->hello_us >= 0)
        snprintf(h, sizeof(h), "%.2f", ms(st->hello_us));
    printf("%-14s %-7s %8s %6llu %6llu %5llu %4llu %4llu %8s %8s %9s %5llu", d->id, result(d), h,
           (unsigned long long)st->sent, (unsigned long long)st->received,
           (unsigned long long)st->lost, (unsigned long long)st->ooo, (unsigned long long)st->bad,
           qcell(j50, sizeof(j50), &st->jitter, 0.5), qcell(j99, sizeof(j99), &st->jitter, 0.99),
           qcell(rp, sizeof(rp), &st->reply, 0.5), (unsigned long long)json_total(st));
    printf(d->reason[0] ? "  %s\n" : "\n", d->reason);
}

/* Beyond the table: how many devices failed for each reason (the first
 * few reasons). */
static void print_failures(const struct sim *s)
{
    enum { KINDS = 6 };
    const char *why[KINDS];
    long count[KINDS] = {0}, other = 0;
    int kinds = 0;
    for (long i = 0; i < s->n; i++) {
        const struct device *d = &s->devs[i];
        int k = 0;
        if (d->state != DEV_FAILED)
            continue;
        while (k < kinds && strcmp(why[k], d->reason))
            k++;
        if (k == kinds && kinds < KINDS)
            why[kinds++] = d->reason;
        if (k < kinds)
            count[k]++;
        else
            other++;
    }
    for (int k = 0; k < kinds; k++)
        printf("failed: %ld x %s\n", count[k], why[k]);
    if (other)
        printf("failed: %ld x other reasons\n", other);
}

static void print_text(struct sim *s, const struct totals *t)
{
    char a[24], b[24], c[24], e[24], f[24], g[24];
    if (s->n <= s->o.table_max) {
        printf("%-14s %-7s %8s %6s %6s %5s %4s %4s %8s %8s %9s %5s  %s\n", "device", "result",
               "hello_ms", "sent", "recv", "lost", "ooo", "bad", "jit_p50", "jit_p99", "reply_ms",
               "json", "note");
        for (long i = 0; i < s->n; i++)
            print_row(&s->devs[i]);
    } else {
        print_failures(s);
    }
    const struct dev_stats *st = &t->st;
    printf("total: %ld devices, %ld ok, %ld failed, %ld stopped; uplink %llu sent (%llu errors, "
           "late p99 %s ms); downlink %llu received, %llu lost, %llu out of order, %llu bad, "
           "%llu undecodable, jitter p50 %s ms p99 %s ms; hello p50 %s ms p99 %s ms; reply p50 "
           "%s ms; control %llu (stt %llu, tts %llu, llm %llu, other %llu); cpu %.2f s in %.2f s "
           "(%.1f%% of a core), max rss %.1f MB\n",
           s->n, t->ok, t->failed, t->stopped, (unsigned long long)st->sent,
           (unsigned long long)st->send_errors, qcell(a, sizeof(a), &st->late, 0.99),
           (unsigned long long)st->received, (unsigned long long)st->lost,
           (unsigned long long)st->ooo, (unsigned long long)st->bad,
           (unsigned long long)st->undecodable, qcell(b, sizeof(b), &st->jitter, 0.5),
           qcell(c, sizeof(c), &st->jitter, 0.99), qcell(e, sizeof(e), &t->hello, 0.5),
           qcell(f, sizeof(f), &t->hello, 0.99), qcell(g, sizeof(g), &st->reply, 0.5),
           (unsigned long long)json_total(st), (unsigned long long)st->json[JK_STT],
           (unsigned long long)st->json[JK_TTS], (unsigned long long)st->json[JK_LLM],
           (unsigned long long)st->json[JK_OTHER], t->cpu_s, t->elapsed_s,
           t->elapsed_s > 0 ? 100.0 * t->cpu_s / t->elapsed_s : 0.0, (double)t->rss_kb / 1024);
    if (s->o.abort_ms >= 0)
        printf("aborts: %llu sent, %llu downlink datagrams accepted after them\n",
               (unsigned long long)st->aborts, (unsigned long long)st->after_abort);
}

static void add_q(cJSON *o, const char *name, const struct hist *h, double q)
{
    int64_t v = hist_quantile(h, q);
    if (v < 0)
        cJSON_AddNullToObject(o, name);
    else
        cJSON_AddNumberToObject(o, name, ms(v));
}

/* The counters every device and the total share. */
static void add_counts(cJSON *o, const struct dev_stats *st)
{
    cJSON *j = cJSON_AddObjectToObject(o, "json");
    for (size_t k = 0; k < sizeof(counters) / sizeof(counters[0]); k++) {
        bool sub = !strncmp(counters[k].name, "json.", 5);
        cJSON_AddNumberToObject(sub ? j : o, counters[k].name + (sub ? 5 : 0),
                                (double)count_of(st, k));
    }
    add_q(o, "jitter_p50_ms", &st->jitter, 0.5);
    add_q(o, "jitter_p99_ms", &st->jitter, 0.99);
    add_q(o, "reply_p50_ms", &st->reply, 0.5);
    add_q(o, "reply_p99_ms", &st->reply, 0.99);
    add_q(o, "stt_p50_ms", &st->stt, 0.5);
    add_q(o, "stt_p95_ms", &st->stt, 0.95);
    add_q(o, "late_p99_ms", &st->late, 0.99);
}

static cJSON *device_json(const struct sim *s, const struct device *d)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", d->id);
    cJSON_AddStringToObject(o, "result", result(d));
    cJSON_AddStringToObject(o, "reason", d->reason);
    if (d->st.hello_us >= 0)
        cJSON_AddNumberToObject(o, "hello_ms", ms(d->st.hello_us));
    else
        cJSON_AddNullToObject(o, "hello_ms");
    cJSON_AddStringToObject(o, "session_id", d->hello.session_id);
    cJSON_AddNumberToObject(o, "downlink_rate", d->hello.downlink.sample_rate);
    add_counts(o, &d->st);
    cJSON_AddNumberToObject(o, "saved_samples", (double)d->st.saved);
    return o;
}

static void print_json(struct sim *s, const struct totals *t)
{
    cJSON *o = cJSON_CreateObject(), *r = cJSON_AddObjectToObject(o, "recording");
    cJSON_AddStringToObject(r, "name", s->rec.name);
    cJSON_AddNumberToObject(r, "frames", (double)s->rec.frames);
    cJSON *devs = cJSON_AddArrayToObject(o, "devices");
    for (long i = 0; i < s->n; i++)
        cJSON_AddItemToArray(devs, device_json(s, &s->devs[i]));
    cJSON *tot = cJSON_AddObjectToObject(o, "total");
    cJSON_AddNumberToObject(tot, "devices", (double)s->n);
    cJSON_AddNumberToObject(tot, "ok", (double)t->ok);
    cJSON_AddNumberToObject(tot, "failed", (double)t->failed);
    cJSON_AddNumberToObject(tot, "stopped", (double)t->stopped);
    add_q(tot, "hello_p50_ms", &t->hello, 0.5);
    add_q(tot, "hello_p99_ms", &t->hello, 0.99);
    add_counts(tot, &t->st);
    cJSON_AddNumberToObject(tot, "cpu_s", t->cpu_s);
    cJSON_AddNumberToObject(tot, "elapsed_s", t->elapsed_s);
    cJSON_AddNumberToObject(tot, "max_rss_kb", (double)t->rss_kb);
    char *text = cJSON_PrintUnformatted(o);
    if (text)
        puts(text);
    free(text);
    cJSON_Delete(o);
}

void report_print(struct sim *s)
{
    struct totals t;
    sum(s, &t);
    if (s->o.json)
        print_json(s, &t);
    else
        print_text(s, &t);
    fflush(stdout);
    hist_free(&t.st.jitter);
    hist_free(&t.st.reply);
    hist_free(&t.st.stt);
    hist_free(&t.st.late);
    hist_free(&t.hello);
}
