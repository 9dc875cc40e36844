/* mqfork-load-report.c - what a load run reports: totals, rates over
 * intervals and latency percentiles, as text or one JSON line, and the
 * interim lines of -i. */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/mqfork-load.h"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted values, in ms. */
static double pct_ms(const uint64_t *v, size_t n, double q)
{
    if (!n)
        return 0;
    size_t rank = (size_t)ceil(q * (double)n);
    return (double)v[rank ? rank - 1 : 0] / 1e6;
}

static void latencies(uint64_t *v, size_t n, double *p50, double *p99, double *max)
{
    qsort(v, n, sizeof(*v), cmp_u64);
    *p50 = pct_ms(v, n, 0.50);
    *p99 = pct_ms(v, n, 0.99);
    *max = n ? (double)v[n - 1] / 1e6 : 0;
}

static double per_s(uint64_t events, uint64_t span_ns)
{
    return span_ns ? (double)events * (double)NS / (double)span_ns : 0;
}

void make_report(struct load *l, struct report *r, uint64_t end)
{
    struct track *t = &l->tr;
    *r = (struct report){.sent = t->sent,
                         .answered = t->answered,
                         .errors = t->errors,
                         .dups = t->dups,
                         .unmatched = t->unmatched};
    r->lost = track_outstanding(t);
    r->elapsed = (double)(end - l->t0) / (double)NS;
    /* Rates over intervals: request k is due k/R after t0, so a paced run of
     * n requests reports R (n-1 intervals), not n over n/R plus slack. */
    if (t->sent > 1)
        r->send_rate = per_s(t->sent - 1, t->t_last_send - l->t0);
    if (t->answered > 1)
        r->answer_rate = per_s(t->answered - 1, t->t_last_answer - t->t_first_answer);
    latencies(t->lat_ns, t->lat_len, &r->p50, &r->p99, &r->max);
}

void print_json(const struct load *l, const struct report *r)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "match", l->fifo ? "order" : "correlation");
    cJSON_AddNumberToObject(j, "sent", (double)r->sent);
    cJSON_AddNumberToObject(j, "answered", (double)r->answered);
    cJSON_AddNumberToObject(j, "lost", (double)r->lost);
    cJSON_AddNumberToObject(j, "errors", (double)r->errors);
    cJSON_AddNumberToObject(j, "duplicates", (double)r->dups);
    cJSON_AddNumberToObject(j, "unmatched", (double)r->unmatched);
    cJSON_AddNumberToObject(j, "elapsed_s", r->elapsed);
    cJSON_AddNumberToObject(j, "send_rate", r->send_rate);
    cJSON_AddNumberToObject(j, "answer_rate", r->answer_rate);
    cJSON_AddNumberToObject(j, "p50_ms", r->p50);
    cJSON_AddNumberToObject(j, "p99_ms", r->p99);
    cJSON_AddNumberToObject(j, "max_ms", r->max);
    cJSON_AddNumberToObject(j, "qos", l->o->qos);
    if (r->error)
        cJSON_AddStringToObject(j, "error", r->error);
    else
        cJSON_AddNullToObject(j, "error");
    char *s = cJSON_PrintUnformatted(j);
    if (s)
        puts(s);
    free(s);
    cJSON_Delete(j);
}

void print_text(const struct load *l, const struct report *r)
{
    printf("matched by   %s\n", l->fifo ? "arrival order (MQTT 3.1.1 has no correlation data)"
                                        : "MQTT v5 correlation data");
    printf("sent         %" PRIu64 " (%.1f/s)\n", r->sent, r->send_rate);
    printf("answered     %" PRIu64 " (%.1f/s)\n", r->answered, r->answer_rate);
    printf("lost         %" PRIu64 "\n", r->lost);
    if (l->o->errors || r->errors)
        printf("errors       %" PRIu64 "\n", r->errors);
    if (r->dups || r->unmatched)
        printf("duplicates   %" PRIu64 "  unmatched %" PRIu64 "\n", r->dups, r->unmatched);
    printf("latency      p50 %.3f ms  p99 %.3f ms  max %.3f ms\n", r->p50, r->p99, r->max);
    printf("elapsed      %.2f s\n", r->elapsed);
    if (r->error)
        printf("error        %s\n", r->error);
}

void print_interim(struct load *l, struct interim *iv, uint64_t now)
{
    struct track *t = &l->tr;
    size_t n = t->lat_len - iv->last_lat;
    uint64_t *v = n ? malloc(n * sizeof(*v)) : NULL;
    double p50 = 0, p99 = 0, max = 0;

    if (v) {
        memcpy(v, t->lat_ns + iv->last_lat, n * sizeof(*v));
        latencies(v, n, &p50, &p99, &max);
        free(v);
    }
    printf("%7.2fs sent %" PRIu64 " answered %" PRIu64 " | %.0f/s sent %.0f/s answered"
           " | p50 %.3f p99 %.3f max %.3f ms\n",
           (double)(now - l->t0) / (double)NS, t->sent, t->answered,
           per_s(t->sent - iv->last_sent, now - iv->last_t),
           per_s(t->answered - iv->last_answered, now - iv->last_t), p50, p99, max);
    fflush(stdout);
    *iv = (struct interim){.next = iv->next + (uint64_t)(l->o->interval * (double)NS),
                           .last_t = now,
                           .last_sent = t->sent,
                           .last_answered = t->answered,
                           .last_lat = t->lat_len};
}
