/* mqforkstat_json.c - the -j output: one snapshot as a JSON document
 * (schema 1, documented in tools/mqforkstat.md) built with cJSON. The
 * global blocks' fields make up "global", every other named block is an
 * object in "blocks"; both are built from the blocks' own field tables.
 * Blocks that could not be copied consistently carry "busy": true. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "tools/mqforkstat.h"

#define JSON_SCHEMA 1

static cJSON *json_instance(const struct snap *s)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", s->hdr.instance);
    cJSON_AddNumberToObject(o, "pid", s->hdr.pid);
    cJSON_AddBoolToObject(o, "alive", s->alive);
    /* -j reads a segment whose daemon is gone too: what it last wrote. */
    cJSON_AddBoolToObject(o, "stale", !s->alive);
    cJSON_AddStringToObject(o, "version", s->hdr.version);
    cJSON_AddNumberToObject(o, "layout_version", s->hdr.layout_version);
    cJSON_AddNumberToObject(o, "generation", (double)s->generation);
    cJSON_AddNumberToObject(o, "start_time", (double)s->hdr.start_realtime_ns / 1e9);
    cJSON_AddNumberToObject(o, "uptime_s", snap_uptime_s(s));
    return o;
}

static cJSON *json_hist(const struct stats_hist *h)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "count", (double)h->count);
    cJSON_AddNumberToObject(o, "sum_s", (double)h->sum_ns / 1e9);
    cJSON_AddNumberToObject(o, "mean_us", hist_mean_us(h));
    cJSON_AddNumberToObject(o, "p50_us", hist_us(stats_hist_percentile(h, 0.50)));
    cJSON_AddNumberToObject(o, "p90_us", hist_us(stats_hist_percentile(h, 0.90)));
    cJSON_AddNumberToObject(o, "p99_us", hist_us(stats_hist_percentile(h, 0.99)));
    cJSON_AddNumberToObject(o, "max_us", hist_us(h->max_ns));
    return o;
}

/* Put ITEM under NAME in O; "a.b" goes to the object "a", key "b". */
static void add_dotted(cJSON *o, const char *name, cJSON *item)
{
    const char *dot = strchr(name, '.');
    if (!dot) {
        cJSON_AddItemToObject(o, name, item);
        return;
    }
    char family[STATS_FIELD_NAME_LEN];
    snprintf(family, sizeof(family), "%.*s", (int)(dot - name), name);
    cJSON *sub = cJSON_GetObjectItemCaseSensitive(o, family);
    if (!cJSON_IsObject(sub))
        sub = cJSON_AddObjectToObject(o, family);
    cJSON_AddItemToObject(sub, dot + 1, item);
}

static cJSON *json_field(const struct snap *s, const struct snap_block *b,
                         const struct stats_field *f)
{
    char state[STATS_STATES_LEN];
    switch (f->type) {
    case STATS_HISTOGRAM:
        return json_hist(field_hist(f, b->data));
    case STATS_STATE:
        return cJSON_CreateString(field_state(state, sizeof(state), f, b->data));
    case STATS_TIMESTAMP:
        return cJSON_CreateNumber(field_age_s(s, f, b->data));
    default:
        return cJSON_CreateNumber(field_value(f, b->data));
    }
}

static void json_fields(cJSON *o, const struct snap *s, const struct snap_block *b)
{
    for (uint32_t i = 0; i < b->e.nfields; i++)
        add_dotted(o, b->fields[i].name, json_field(s, b, &b->fields[i]));
}

/* The global blocks' fields, together: the instance-wide names. */
static cJSON *json_global(const struct snap *s)
{
    cJSON *o = cJSON_CreateObject();
    bool busy = false;
    for (unsigned i = 0; i < s->nblocks; i++)
        busy |= block_global(&s->blocks[i]) && s->blocks[i].busy;
    cJSON_AddBoolToObject(o, "busy", busy);
    for (unsigned i = 0; i < s->nblocks; i++)
        if (block_global(&s->blocks[i]) && !s->blocks[i].busy)
            json_fields(o, s, &s->blocks[i]);
    return o;
}

/* Every other block, by name. */
static cJSON *json_blocks(const struct snap *s)
{
    cJSON *all = cJSON_CreateObject();
    for (unsigned i = 0; i < s->nblocks; i++) {
        const struct snap_block *b = &s->blocks[i];
        if (block_global(b))
            continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddBoolToObject(o, "busy", b->busy);
        cJSON_AddNumberToObject(o, "instances", b->e.instances);
        if (!b->busy)
            json_fields(o, s, b);
        cJSON_AddItemToObject(all, b->e.name, o);
    }
    return all;
}

static cJSON *json_kind(const struct snap_kind *sk)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "index", sk->index);
    cJSON_AddBoolToObject(o, "busy", sk->busy);
    if (sk->busy)
        return o;
    const struct stats_kind *k = &sk->k;
    cJSON_AddStringToObject(o, "name", k->name);
    cJSON_AddStringToObject(o, "route", k->name);
    cJSON_AddStringToObject(o, "handler", k->handler);
    cJSON_AddNumberToObject(o, "received", (double)k->received);
    cJSON_AddNumberToObject(o, "completed", (double)k->completed);
    cJSON_AddNumberToObject(o, "failed", (double)k->failed);
    cJSON *errors = cJSON_AddObjectToObject(o, "errors");
    for (unsigned st = 0; st < JOB_STATUS_COUNT; st++)
        if (k->errors[st])
            cJSON_AddNumberToObject(errors, job_status_name(st), (double)k->errors[st]);
    cJSON_AddItemToObject(o, "wait", json_hist(&k->wait));
    cJSON_AddItemToObject(o, "run", json_hist(&k->run));
    cJSON_AddItemToObject(o, "total", json_hist(&k->total));
    return o;
}

static cJSON *json_worker(const struct snap *s, const struct snap_worker *sw)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "slot", sw->slot);
    cJSON_AddBoolToObject(o, "busy", sw->busy);
    if (sw->busy)
        return o;
    const struct stats_worker *w = &sw->w;
    uint64_t age = worker_job_age_ns(s, sw);
    const char *kind = age ? snap_kind_name(s, w->cur_kind) : NULL;
    uint64_t up = w->started_ns && w->started_ns < s->mono_ns ? s->mono_ns - w->started_ns : 0;
    cJSON_AddNumberToObject(o, "pid", w->pid);
    cJSON_AddStringToObject(o, "state", worker_state_name(w->state));
    cJSON_AddNumberToObject(o, "generation", w->generation);
    cJSON_AddNumberToObject(o, "uptime_s", (double)up / 1e9);
    cJSON_AddNumberToObject(o, "inflight", w->inflight);
    cJSON_AddNumberToObject(o, "jobs_done", (double)w->jobs_done);
    cJSON_AddNumberToObject(o, "failures", (double)w->failures);
    cJSON_AddNumberToObject(o, "respawns", (double)w->respawns);
    cJSON_AddNumberToObject(o, "backoff_ms", (double)w->backoff_ms);
    if (kind)
        cJSON_AddStringToObject(o, "job_kind", kind);
    else
        cJSON_AddNullToObject(o, "job_kind");
    cJSON_AddNumberToObject(o, "job_age_ms", (double)age / 1e6);
    cJSON_AddNumberToObject(o, "cpu_pct", (double)w->cpu_permille / 10.0);
    cJSON_AddNumberToObject(o, "cpu_s", (double)w->cpu_ns / 1e9);
    cJSON_AddNumberToObject(o, "rss_kb", (double)w->rss_kb);
    return o;
}

static cJSON *json_crash(const struct stats_crash *c)
{
    char when[40], cause[32], kind[STATS_NAME_LEN + 1];
    fmt_time_iso(when, sizeof(when), c->time_ns);
    crash_cause(cause, sizeof(cause), c);
    snprintf(kind, sizeof(kind), "%.*s", STATS_NAME_LEN, c->kind);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "time", (double)c->time_ns / 1e9);
    cJSON_AddStringToObject(o, "time_iso", when);
    cJSON_AddNumberToObject(o, "slot", c->slot);
    cJSON_AddNumberToObject(o, "pid", c->pid);
    cJSON_AddNumberToObject(o, "signal", c->signal);
    cJSON_AddNumberToObject(o, "exit_code", c->exit_code);
    cJSON_AddStringToObject(o, "cause", cause);
    if (kind[0])
        cJSON_AddStringToObject(o, "kind", kind);
    else
        cJSON_AddNullToObject(o, "kind");
    return o;
}

static cJSON *json_scale(const struct stats_scale *e)
{
    char when[40], reason[sizeof(e->reason) + 1];
    fmt_time_iso(when, sizeof(when), e->time_ns);
    snprintf(reason, sizeof(reason), "%.*s", (int)sizeof(e->reason), e->reason);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "time", (double)e->time_ns / 1e9);
    cJSON_AddStringToObject(o, "time_iso", when);
    cJSON_AddNumberToObject(o, "from", e->from);
    cJSON_AddNumberToObject(o, "to", e->to);
    cJSON_AddStringToObject(o, "reason", reason);
    return o;
}

/* The crash ring or the scaling ring: newest first. */
static cJSON *json_ring(const struct snap *s, bool crashes)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "busy", s->events_busy);
    if (s->events_busy)
        return o;
    uint64_t total = crashes ? s->ev.crashes : s->ev.scales;
    cJSON_AddNumberToObject(o, "total", (double)total);
    cJSON *recent = cJSON_AddArrayToObject(o, "recent");
    for (uint64_t i = 0; i < total && i < STATS_RING_LEN; i++) {
        unsigned at = (unsigned)((total - 1 - i) % STATS_RING_LEN);
        cJSON_AddItemToArray(recent,
                             crashes ? json_crash(&s->ev.crash[at]) : json_scale(&s->ev.scale[at]));
    }
    return o;
}

int out_json(FILE *out, const struct snap *s)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddNumberToObject(doc, "schema", JSON_SCHEMA);
    cJSON_AddItemToObject(doc, "instance", json_instance(s));
    cJSON_AddItemToObject(doc, "global", json_global(s));
    cJSON_AddItemToObject(doc, "blocks", json_blocks(s));
    cJSON *kinds = cJSON_AddArrayToObject(doc, "kinds");
    for (unsigned i = 0; i < s->nkinds; i++)
        cJSON_AddItemToArray(kinds, json_kind(&s->kinds[i]));
    cJSON *workers = cJSON_AddArrayToObject(doc, "workers");
    for (unsigned i = 0; i < s->nworkers; i++)
        cJSON_AddItemToArray(workers, json_worker(s, &s->workers[i]));
    cJSON_AddItemToObject(doc, "crashes", json_ring(s, true));
    cJSON_AddItemToObject(doc, "scaling", json_ring(s, false));
    char *text = cJSON_Print(doc);
    cJSON_Delete(doc);
    if (!text)
        return -1;
    utf8_repair(text);
    fprintf(out, "%s\n", text);
    free(text);
    return fflush(out) == 0 && !ferror(out) ? 0 : -1;
}
