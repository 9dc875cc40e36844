/* mqforkstat.h - what the parts of mqforkstat share: a consistent snapshot
 * of an instance's statistics (every named block with its own field table,
 * the kind and worker tables, the event rings), the rules every output
 * format names a block's fields by, and the output entry points. */
#ifndef MQFORK_TOOLS_MQFORKSTAT_H
#define MQFORK_TOOLS_MQFORKSTAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "shm/segment.h"
#include "shm/statblock.h"
#include "shm/stats.h"

/* Copies tried per block before it is reported busy: a writer holds a block
 * for well under a microsecond, so running out means it died mid-update or
 * the reader was descheduled many times over; waiting longer would let a
 * dead writer stall the reader. */
#define SNAP_TRIES 1000

struct snap_kind {
    uint32_t index; /* in the segment's kind table */
    bool busy;      /* no consistent copy: only index is valid */
    struct stats_kind k;
};

struct snap_worker {
    uint32_t slot;
    bool busy; /* no consistent copy of the supervisor's or the worker's part */
    struct stats_worker w;
};

/* A named block: checked copies of its directory entry and field table,
 * and its data (every instance of a per-worker block summed). */
struct snap_block {
    struct stats_block_entry e;
    bool busy; /* no consistent copy: only e is valid */
    struct stats_field *fields;
    void *data;
};

/* Everything one report shows, copied out of the segment block by block. */
struct snap {
    struct seg_header hdr; /* written once by the daemon at start */
    uint64_t generation;
    bool alive;       /* the daemon named in the header still runs */
    uint64_t mono_ns; /* CLOCK_MONOTONIC and CLOCK_REALTIME when taken */
    uint64_t real_ns;
    unsigned nblocks;
    struct snap_block *blocks; /* in the directory's order: the engine's first */
    bool events_busy;
    struct stats_events ev;
    unsigned nkinds;
    struct snap_kind *kinds; /* used (or busy) kinds, by index */
    unsigned nworkers;
    struct snap_worker *workers; /* non-empty (or busy) slots, by slot */
};

/* Take a snapshot of SEG (attached). 0, or -1 with errno ENOMEM, or
 * EBADMSG when a directory entry or field table is damaged. */
int snap_take(struct snap *s, const struct segment *seg);
void snap_free(struct snap *s);

/* The name of kind INDEX in S, or NULL when the snapshot does not know it. */
const char *snap_kind_name(const struct snap *s, uint32_t index);

/* Attach to INSTANCE, or print why not on ERR and return -1. STALE_IS_ERROR:
 * a segment whose daemon is gone is refused (the one-shot modes). */
int stat_attach(struct segment *seg, const char *instance, bool stale_is_error, FILE *err);

/* The -l listing of every instance in /dev/shm. Returns the exit code. */
int stat_list(FILE *out);

/* ---- a block's fields, named alike by every output. A global block's
 * field is shown by its own name, any other block's as <block>.<field>. A
 * dot in a field name splits it into a family and a label value
 * (jobs_refused.overloaded: family jobs_refused, label reason). */

static inline bool block_global(const struct snap_block *b)
{
    return b->e.flags & STATS_BLOCK_GLOBAL;
}

/* The field's name as -1 prints it: "jobs_accepted", "voice.sessions". */
void field_text_name(char *buf, size_t len, const struct snap_block *b,
                     const struct stats_field *f);

/* The value of F in DATA, as the number shown (divided as F says). */
double field_value(const struct stats_field *f, const void *data);

/* The name of the state F holds in DATA ("HEALTHY"), in BUF. */
const char *field_state(char *buf, size_t len, const struct stats_field *f, const void *data);

/* Seconds since the CLOCK_MONOTONIC time F holds in DATA (0 when unset). */
double field_age_s(const struct snap *s, const struct stats_field *f, const void *data);

/* The histogram F in DATA (aligned: the snapshot's copy). */
static inline const struct stats_hist *field_hist(const struct stats_field *f, const void *data)
{
    return (const struct stats_hist *)((const char *)data + f->offset);
}

/* The block named NAME in S, when it could be copied; else NULL. */
const struct snap_block *snap_block(const struct snap *s, const char *name);

/* Kind and worker figures derived the same way by every output. */
double hist_us(uint64_t ns);
double hist_mean_us(const struct stats_hist *h);
uint64_t worker_job_age_ns(const struct snap *s, const struct snap_worker *w);
double snap_uptime_s(const struct snap *s);

/* ISO 8601 UTC with milliseconds of a CLOCK_REALTIME time in ns. */
void fmt_time_iso(char *buf, size_t len, uint64_t ns);
/* Why a worker died: "SIGSEGV", or "exit_3" when it exited by itself. */
void crash_cause(char *buf, size_t len, const struct stats_crash *c);

/* Copy NAME (of at most LEN bytes, maybe unterminated) with every byte
 * that would break a `name value` line replaced by '_'. */
void safe_name(char *dst, size_t dstlen, const char *name, size_t len);

/* Make TEXT (NUL-terminated) UTF-8: every byte outside a well-formed
 * sequence becomes '?'. The JSON and Prometheus documents must be UTF-8,
 * and the names and texts they quote come from a segment that may be
 * crafted; their structure is ASCII, so only quoted contents change. */
void utf8_repair(char *text);

/* Output formats. Each returns 0, or -1 when writing failed. */
int out_text(FILE *out, const struct snap *s);
int out_json(FILE *out, const struct snap *s);
int out_prom(FILE *out, const struct snap *s);

/* --listen: serve GET /metrics at SPEC (ADDRESS:PORT) until killed.
 * Returns the exit code when it cannot (or can no longer) serve. */
int serve_metrics(const char *instance, const char *spec);

/* The ncurses live view until `q`. Returns the exit code. */
int live_run(const char *instance, double interval_s);

#endif
