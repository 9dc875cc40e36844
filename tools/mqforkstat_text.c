/* mqforkstat_text.c - the -1 output: one snapshot, one `name value` per
 * line, names as documented in tools/mqforkstat.md, so that scripts can grep
 * and awk it. Every named block is printed from its own field table. A
 * block that could not be copied consistently is a line `busy <block>`
 * instead of its figures. */
#include <string.h>

#include "shm/statread.h"
#include "tools/mqforkstat.h"

#define NAME_MAX_TEXT (STATS_NAME_LEN + 1)

static void text_header(FILE *out, const struct snap *s)
{
    /* the header's strings come from the segment too: keep them names */
    char instance[sizeof(s->hdr.instance)], version[sizeof(s->hdr.version)];
    safe_name(instance, sizeof(instance), s->hdr.instance, sizeof(s->hdr.instance));
    safe_name(version, sizeof(version), s->hdr.version, sizeof(s->hdr.version));
    fprintf(out, "instance %s\n", instance[0] ? instance : "-");
    fprintf(out, "pid %d\n", (int)s->hdr.pid);
    fprintf(out, "version %s\n", version[0] ? version : "-");
    fprintf(out, "layout_version %u\n", (unsigned)s->hdr.layout_version);
    fprintf(out, "generation %llu\n", (unsigned long long)s->generation);
    fprintf(out, "start_time %.3f\n", (double)s->hdr.start_realtime_ns / 1e9);
    fprintf(out, "uptime_s %.3f\n", snap_uptime_s(s));
}

/* A histogram as STEM_count, STEM_mean_us, STEM_p50_us, ... */
static void text_hist(FILE *out, const char *stem, const struct stats_hist *h)
{
    fprintf(out, "%s_count %llu\n", stem, (unsigned long long)h->count);
    fprintf(out, "%s_mean_us %.1f\n", stem, hist_mean_us(h));
    fprintf(out, "%s_p50_us %.1f\n", stem, hist_us(stats_hist_percentile(h, 0.50)));
    fprintf(out, "%s_p90_us %.1f\n", stem, hist_us(stats_hist_percentile(h, 0.90)));
    fprintf(out, "%s_p99_us %.1f\n", stem, hist_us(stats_hist_percentile(h, 0.99)));
    fprintf(out, "%s_max_us %.1f\n", stem, hist_us(h->max_ns));
}

static void text_field(FILE *out, const struct snap *s, const struct snap_block *b,
                       const struct stats_field *f)
{
    char name[STATS_BLOCK_NAME_LEN + STATS_FIELD_NAME_LEN + 2], state[STATS_STATES_LEN];
    field_text_name(name, sizeof(name), b, f);
    switch (f->type) {
    case STATS_HISTOGRAM:
        text_hist(out, name, field_hist(f, b->data));
        break;
    case STATS_STATE:
        fprintf(out, "%s %s\n", name, field_state(state, sizeof(state), f, b->data));
        break;
    case STATS_TIMESTAMP:
        fprintf(out, "%s %.3f\n", name, field_age_s(s, f, b->data));
        break;
    default:
        if (f->divide == 1)
            fprintf(out, "%s %llu\n", name, (unsigned long long)stats_field_raw(f, b->data));
        else
            fprintf(out, "%s %.3f\n", name, field_value(f, b->data));
    }
}

/* A global block's names are the instance's own: it is busy as "global". */
static void text_block(FILE *out, const struct snap *s, const struct snap_block *b)
{
    if (b->busy) {
        char name[STATS_BLOCK_NAME_LEN];
        safe_name(name, sizeof(name), b->e.name, sizeof(b->e.name));
        fprintf(out, "busy %s\n", block_global(b) ? "global" : name);
        return;
    }
    for (uint32_t i = 0; i < b->e.nfields; i++)
        text_field(out, s, b, &b->fields[i]);
}

static void text_kind(FILE *out, const struct snap_kind *sk)
{
    if (sk->busy) {
        fprintf(out, "busy kind.%u\n", (unsigned)sk->index);
        return;
    }
    const struct stats_kind *k = &sk->k;
    char name[NAME_MAX_TEXT], handler[NAME_MAX_TEXT], prefix[NAME_MAX_TEXT + 8];
    safe_name(name, sizeof(name), k->name, sizeof(k->name));
    safe_name(handler, sizeof(handler), k->handler, sizeof(k->handler));
    snprintf(prefix, sizeof(prefix), "kind.%s", name);
    fprintf(out, "%s.handler %s\n", prefix, handler[0] ? handler : "-");
    fprintf(out, "%s.received %llu\n", prefix, (unsigned long long)k->received);
    fprintf(out, "%s.completed %llu\n", prefix, (unsigned long long)k->completed);
    fprintf(out, "%s.failed %llu\n", prefix, (unsigned long long)k->failed);
    for (unsigned st = 0; st < JOB_STATUS_COUNT; st++)
        if (k->errors[st])
            fprintf(out, "%s.errors.%s %llu\n", prefix, job_status_name(st),
                    (unsigned long long)k->errors[st]);
    const struct {
        const char *what;
        const struct stats_hist *h;
    } hists[] = {{"wait", &k->wait}, {"run", &k->run}, {"total", &k->total}};
    for (size_t i = 0; i < sizeof(hists) / sizeof(hists[0]); i++) {
        char stem[NAME_MAX_TEXT + 16];
        snprintf(stem, sizeof(stem), "%s.%s", prefix, hists[i].what);
        text_hist(out, stem, hists[i].h);
    }
}

static void text_worker(FILE *out, const struct snap *s, const struct snap_worker *sw)
{
    unsigned slot = sw->slot;
    if (sw->busy) {
        fprintf(out, "busy worker.%u\n", slot);
        return;
    }
    const struct stats_worker *w = &sw->w;
    uint64_t age = worker_job_age_ns(s, sw);
    const char *kind = age ? snap_kind_name(s, w->cur_kind) : NULL;
    char kname[NAME_MAX_TEXT];
    safe_name(kname, sizeof(kname), kind ? kind : "-", STATS_NAME_LEN);
    uint64_t up = w->started_ns && w->started_ns < s->mono_ns ? s->mono_ns - w->started_ns : 0;
    fprintf(out, "worker.%u.pid %d\n", slot, (int)w->pid);
    fprintf(out, "worker.%u.state %s\n", slot, worker_state_name(w->state));
    fprintf(out, "worker.%u.generation %u\n", slot, (unsigned)w->generation);
    fprintf(out, "worker.%u.uptime_s %.3f\n", slot, (double)up / 1e9);
    fprintf(out, "worker.%u.inflight %u\n", slot, (unsigned)w->inflight);
    fprintf(out, "worker.%u.jobs_done %llu\n", slot, (unsigned long long)w->jobs_done);
    fprintf(out, "worker.%u.failures %llu\n", slot, (unsigned long long)w->failures);
    fprintf(out, "worker.%u.respawns %llu\n", slot, (unsigned long long)w->respawns);
    fprintf(out, "worker.%u.backoff_ms %llu\n", slot, (unsigned long long)w->backoff_ms);
    fprintf(out, "worker.%u.job_kind %s\n", slot, age && kname[0] ? kname : "-");
    fprintf(out, "worker.%u.job_age_ms %.3f\n", slot, (double)age / 1e6);
    fprintf(out, "worker.%u.cpu_pct %.1f\n", slot, (double)w->cpu_permille / 10.0);
    fprintf(out, "worker.%u.cpu_s %.3f\n", slot, (double)w->cpu_ns / 1e9);
    fprintf(out, "worker.%u.rss_kb %llu\n", slot, (unsigned long long)w->rss_kb);
}

static void text_crash(FILE *out, unsigned i, const struct stats_crash *c)
{
    char when[40], cause[32], kind[NAME_MAX_TEXT];
    fmt_time_iso(when, sizeof(when), c->time_ns);
    crash_cause(cause, sizeof(cause), c);
    safe_name(kind, sizeof(kind), c->kind, sizeof(c->kind));
    fprintf(out, "crash.%u.time %s\n", i, when);
    fprintf(out, "crash.%u.slot %u\n", i, (unsigned)c->slot);
    fprintf(out, "crash.%u.pid %d\n", i, (int)c->pid);
    fprintf(out, "crash.%u.signal %d\n", i, (int)c->signal);
    fprintf(out, "crash.%u.exit_code %d\n", i, (int)c->exit_code);
    fprintf(out, "crash.%u.cause %s\n", i, cause);
    fprintf(out, "crash.%u.kind %s\n", i, kind[0] ? kind : "-");
}

static void text_scale(FILE *out, unsigned i, const struct stats_scale *e)
{
    char when[40], reason[sizeof(e->reason) + 1];
    fmt_time_iso(when, sizeof(when), e->time_ns);
    /* the reason is a sentence: keep its spaces, drop line breaks and every
     * other control character (a crafted one could drive the terminal) */
    size_t n = strnlen(e->reason, sizeof(e->reason));
    for (size_t j = 0; j < n; j++) {
        unsigned char c = (unsigned char)e->reason[j];
        reason[j] = c < ' ' || c == 0x7f ? ' ' : (char)c;
    }
    reason[n] = '\0';
    fprintf(out, "scale.%u.time %s\n", i, when);
    fprintf(out, "scale.%u.from %u\n", i, (unsigned)e->from);
    fprintf(out, "scale.%u.to %u\n", i, (unsigned)e->to);
    fprintf(out, "scale.%u.reason %s\n", i, n ? reason : "-");
}

static void text_events(FILE *out, const struct snap *s)
{
    if (s->events_busy) {
        fprintf(out, "busy events\n");
        return;
    }
    const struct stats_events *ev = &s->ev;
    for (uint64_t i = 0; i < ev->crashes && i < STATS_RING_LEN; i++)
        text_crash(out, (unsigned)i, &ev->crash[(ev->crashes - 1 - i) % STATS_RING_LEN]);
    for (uint64_t i = 0; i < ev->scales && i < STATS_RING_LEN; i++)
        text_scale(out, (unsigned)i, &ev->scale[(ev->scales - 1 - i) % STATS_RING_LEN]);
}

int out_text(FILE *out, const struct snap *s)
{
    text_header(out, s);
    for (unsigned i = 0; i < s->nblocks; i++)
        text_block(out, s, &s->blocks[i]);
    for (unsigned i = 0; i < s->nkinds; i++)
        text_kind(out, &s->kinds[i]);
    for (unsigned i = 0; i < s->nworkers; i++)
        text_worker(out, s, &s->workers[i]);
    text_events(out, s);
    return fflush(out) == 0 && !ferror(out) ? 0 : -1;
}
