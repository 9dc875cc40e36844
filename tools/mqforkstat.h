/* mqforkstat.h - what the parts of mqforkstat share: a consistent snapshot
 * of an instance's statistics, the table of global counters and gauges that
 * every output format names the same way, and the output entry points. */
#ifndef MQFORK_TOOLS_MQFORKSTAT_H
#define MQFORK_TOOLS_MQFORKSTAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "shm/segment.h"
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

/* Everything one report shows, copied out of the segment block by block. */
struct snap {
    struct seg_header hdr; /* written once by the daemon at start */
    uint64_t generation;
    bool alive;       /* the daemon named in the header still runs */
    uint64_t mono_ns; /* CLOCK_MONOTONIC and CLOCK_REALTIME when taken */
    uint64_t real_ns;
    bool global_busy;
    struct stats_global g;
    bool events_busy;
    struct stats_events ev;
    unsigned nkinds;
    struct snap_kind *kinds; /* used (or busy) kinds, by index */
    unsigned nworkers;
    struct snap_worker *workers; /* non-empty (or busy) slots, by slot */
};

/* Take a snapshot of SEG (attached). 0, or -1 when out of memory. */
int snap_take(struct snap *s, const struct segment *seg);
void snap_free(struct snap *s);

/* The name of kind INDEX in S, or NULL when the snapshot does not know it. */
const char *snap_kind_name(const struct snap *s, uint32_t index);

/* Attach to INSTANCE, or print why not on ERR and return -1. STALE_IS_ERROR:
 * a segment whose daemon is gone is refused (the one-shot modes). */
int stat_attach(struct segment *seg, const char *instance, bool stale_is_error, FILE *err);

/* The -l listing of every instance in /dev/shm. Returns the exit code. */
int stat_list(FILE *out);

/* ---- the global block's fields, shared by the text, JSON and Prometheus
 * outputs. NAME is the -1 name; a dot splits it into a family and a label
 * value (jobs_refused.overloaded: family jobs_refused, label reason). */
enum field_type { FIELD_COUNTER, FIELD_GAUGE };

struct field {
    const char *name;
    const char *label; /* Prometheus label key of the part after the dot */
    enum field_type type;
    size_t off;      /* in struct stats_global */
    unsigned width;  /* 4 or 8 bytes */
    unsigned divide; /* 1: an integer; else shown as value / divide */
    const char *help;
};

extern const struct field stat_global_fields[];
extern const size_t stat_global_nfields;

/* The value of F in G, as an integer and as the number shown. */
uint64_t field_raw(const struct field *f, const struct stats_global *g);
double field_value(const struct field *f, const struct stats_global *g);

const char *verdict_name(uint32_t v);

/* Kind and worker figures derived the same way by every output. */
double hist_us(uint64_t ns);
double hist_mean_us(const struct stats_hist *h);
uint64_t worker_job_age_ns(const struct snap *s, const struct snap_worker *w);
double snap_uptime_s(const struct snap *s);
double snap_age_s(const struct snap *s); /* since the global block's last update */

/* ISO 8601 UTC with milliseconds of a CLOCK_REALTIME time in ns. */
void fmt_time_iso(char *buf, size_t len, uint64_t ns);
/* Why a worker died: "SIGSEGV", or "exit_3" when it exited by itself. */
void crash_cause(char *buf, size_t len, const struct stats_crash *c);

/* Copy NAME (of at most LEN bytes, maybe unterminated) with every byte
 * that would break a `name value` line replaced by '_'. */
void safe_name(char *dst, size_t dstlen, const char *name, size_t len);

/* Output formats. Each returns 0, or -1 when writing failed. */
int out_text(FILE *out, const struct snap *s);
int out_json(FILE *out, const struct snap *s);
int out_prom(FILE *out, const struct snap *s);

/* The ncurses live view until `q`. Returns the exit code. */
int live_run(const char *instance, double interval_s);

#endif
