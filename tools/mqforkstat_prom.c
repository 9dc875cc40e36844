/* mqforkstat_prom.c - the -p output: one snapshot in the Prometheus text
 * exposition format (version 0.0.4), for node_exporter's textfile collector
 * or any scraper. Counters end in _total, units are seconds and bytes, and
 * latency is a real histogram. Every family's samples are written together,
 * as the format requires. This file writes the instance's families and
 * every named block's, from the block's own field table; the kinds' and
 * workers' are in mqforkstat_prom_tables.c. Busy blocks are left out and
 * counted. */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "shm/statread.h"
#include "tools/mqforkstat_prom.h"

/* Histogram boundaries: the internal buckets end at every power of two of
 * nanoseconds from 2^10 (1 us) to 2^37 (137 s), exclusive. A sample is an
 * integer of ns, so "below 2^k ns" is exactly "at most 2^k - 1 ns": that is
 * the le we print, and each cumulative count is exact, not an estimate. */
#define LE_FIRST_SHIFT STATS_HIST_MIN_SHIFT
#define LE_LAST_SHIFT  STATS_HIST_MAX_SHIFT

#define METRIC_LEN (STATS_BLOCK_NAME_LEN + STATS_FIELD_NAME_LEN + 24)

void prom_escape(char *dst, size_t len, const char *v, size_t max)
{
    size_t o = 0;
    for (size_t i = 0; i < max && v[i] && o + 3 < len; i++) {
        char c = v[i];
        if (c == '\\' || c == '"' || c == '\n')
            dst[o++] = '\\';
        dst[o++] = c == '\n' ? 'n' : c;
    }
    if (len)
        dst[o] = '\0';
}

void label_value(FILE *out, const char *v, size_t max)
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

void family(FILE *out, const char *name, const char *type, const char *help)
{
    fprintf(out, "# HELP %s ", name);
    /* HELP escapes backslash and newline; a block's help comes from the segment */
    for (const char *p = help; *p; p++) {
        if (*p == '\\' || *p == '\n')
            fputc('\\', out);
        fputc(*p == '\n' ? 'n' : *p, out);
    }
    fprintf(out, "\n# TYPE %s %s\n", name, type);
}

void series(FILE *out, const struct snap *s, const char *name)
{
    fprintf(out, "%s{" PROM_INSTANCE_LABEL "=\"", name);
    label_value(out, s->hdr.instance, sizeof(s->hdr.instance));
    fputc('"', out);
}

void number(FILE *out, double v)
{
    if (v == floor(v) && fabs(v) < 1e15)
        fprintf(out, "%.0f\n", v);
    else
        fprintf(out, "%.9g\n", v);
}

void prom_hist(FILE *out, const struct snap *s, const char *name, const char *labels,
               const struct stats_hist *h)
{
    uint64_t cum = 0;
    unsigned b = 0;
    char bucket[METRIC_LEN + 8];
    snprintf(bucket, sizeof(bucket), "%s_bucket", name);
    for (unsigned shift = LE_FIRST_SHIFT; shift <= LE_LAST_SHIFT; shift++) {
        for (; b < STATS_HIST_BUCKETS && stats_hist_upper(b) <= (1ull << shift); b++)
            cum += h->bucket[b];
        series(out, s, bucket);
        fprintf(out, "%s,le=\"%.12g\"} %llu\n", labels, (double)((1ull << shift) - 1) / NS_PER_S,
                (unsigned long long)(cum < h->count ? cum : h->count));
    }
    series(out, s, bucket);
    fprintf(out, "%s,le=\"+Inf\"} %llu\n", labels, (unsigned long long)h->count);
    fprintf(out, "%s_sum{" PROM_INSTANCE_LABEL "=\"", name);
    label_value(out, s->hdr.instance, sizeof(s->hdr.instance));
    fprintf(out, "\"%s} %.9f\n", labels, (double)h->sum_ns / NS_PER_S);
    fprintf(out, "%s_count{" PROM_INSTANCE_LABEL "=\"", name);
    label_value(out, s->hdr.instance, sizeof(s->hdr.instance));
    fprintf(out, "\"%s} %llu\n", labels, (unsigned long long)h->count);
}

/* ---- instance */

static unsigned busy_blocks(const struct snap *s)
{
    unsigned n = s->events_busy;
    for (unsigned i = 0; i < s->nblocks; i++)
        n += s->blocks[i].busy;
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

/* ---- named blocks */

/* One field as a sample of a family. */
struct prom_field {
    const struct snap_block *b;
    const struct stats_field *f;
    const char *type; /* counter, gauge, histogram */
    char name[METRIC_LEN];
};

/* Anything but [a-zA-Z0-9_] becomes '_', so a crafted name stays a name. */
static void sanitize(char *p)
{
    for (; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9')))
            *p = '_';
}

/* The family of F: mqfork_[<block>_]<name up to the dot>, then _total for
 * a counter and _seconds for a histogram. False for a type Prometheus
 * does not get (states and times: it keeps its own clock). */
static bool metric(struct prom_field *m, const struct snap_block *b, const struct stats_field *f)
{
    m->b = b;
    m->f = f;
    m->type = f->type == STATS_COUNTER     ? "counter"
              : f->type == STATS_GAUGE     ? "gauge"
              : f->type == STATS_HISTOGRAM ? "histogram"
                                           : NULL;
    if (!m->type)
        return false;
    char family[STATS_FIELD_NAME_LEN], block[STATS_BLOCK_NAME_LEN + 1] = "";
    snprintf(family, sizeof(family), "%.*s", (int)strcspn(f->name, "."), f->name);
    if (!block_global(b))
        snprintf(block, sizeof(block), "%s_", b->e.name);
    snprintf(m->name, sizeof(m->name), "mqfork_%s%s", block, family);
    sanitize(m->name + 7);
    strcat(m->name, f->type == STATS_COUNTER     ? "_total"
                    : f->type == STATS_HISTOGRAM ? "_seconds"
                                                 : "");
    return true;
}

/* The label of a dotted name: `,<label>="<after the dot>"`, or "". */
static void field_labels(char *buf, size_t len, const struct stats_field *f)
{
    const char *dot = strchr(f->name, '.');
    char key[STATS_LABEL_LEN + 4], value[2 * STATS_FIELD_NAME_LEN];
    buf[0] = '\0';
    if (!dot)
        return;
    snprintf(key, sizeof(key), "%s", f->label[0] ? f->label : "key");
    sanitize(key);
    /* a label name may not start with a digit, nor be one the sample has
     * already (every sample has mqfork_instance, a histogram's buckets le)
     * or one Prometheus sets on every target itself (instance, job) */
    bool taken = !strcmp(key, PROM_INSTANCE_LABEL) || !strcmp(key, "le") ||
                 !strcmp(key, "instance") || !strcmp(key, "job");
    if ((key[0] >= '0' && key[0] <= '9') || taken) {
        memmove(key + 1, key, strlen(key) + 1);
        key[0] = '_';
    }
    prom_escape(value, sizeof(value), dot + 1, STATS_FIELD_NAME_LEN);
    snprintf(buf, len, ",%s=\"%s\"", key, value);
}

static void sample(FILE *out, const struct snap *s, const struct prom_field *m)
{
    char labels[PROM_LABELS_LEN];
    field_labels(labels, sizeof(labels), m->f);
    if (m->f->type == STATS_HISTOGRAM) {
        prom_hist(out, s, m->name, labels, field_hist(m->f, m->b->data));
        return;
    }
    series(out, s, m->name);
    if (m->f->divide == 1)
        fprintf(out, "%s} %llu\n", labels, (unsigned long long)stats_field_raw(m->f, m->b->data));
    else
        fprintf(out, "%s} %.3f\n", labels, field_value(m->f, m->b->data));
}

/* Every field of every block that could be copied, as a family member. */
static size_t collect(const struct snap *s, struct prom_field *all)
{
    size_t n = 0;
    for (unsigned i = 0; i < s->nblocks; i++)
        for (uint32_t k = 0; !s->blocks[i].busy && k < s->blocks[i].e.nfields; k++)
            n += metric(&all[n], &s->blocks[i], &s->blocks[i].fields[k]);
    return n;
}

/* Each family once, its first field's help and type, then all its samples;
 * a name written already (the tables', or a crafted repeat) is skipped. */
static int prom_blocks(FILE *out, const struct snap *s)
{
    size_t max = 0;
    for (unsigned i = 0; i < s->nblocks; i++)
        max += s->blocks[i].e.nfields;
    struct prom_field *all = calloc(max ? max : 1, sizeof(*all));
    if (!all)
        return -1;
    size_t n = collect(s, all);
    for (size_t i = 0; i < n; i++) {
        bool seen = prom_fixed_family(all[i].name);
        for (size_t j = 0; j < i && !seen; j++)
            seen = strcmp(all[j].name, all[i].name) == 0;
        if (seen)
            continue;
        family(out, all[i].name, all[i].type, all[i].f->help[0] ? all[i].f->help : "-");
        for (size_t j = i; j < n; j++)
            if (strcmp(all[j].name, all[i].name) == 0 && all[j].type == all[i].type)
                sample(out, s, &all[j]);
    }
    free(all);
    return 0;
}

int out_prom(FILE *out, const struct snap *s)
{
    char *text = NULL;
    size_t len = 0;
    FILE *doc = open_memstream(&text, &len);
    if (!doc)
        return -1;
    prom_instance(doc, s);
    int rc = prom_blocks(doc, s);
    prom_tables(doc, s);
    if (fclose(doc) != 0 || rc < 0) {
        free(text);
        return -1;
    }
    utf8_repair(text); /* the exposition is UTF-8 */
    fwrite(text, 1, len, out);
    free(text);
    return fflush(out) == 0 && !ferror(out) ? 0 : -1;
}
