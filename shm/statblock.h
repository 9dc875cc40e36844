/* statblock.h - named counter blocks: the part of the segment where the
 * engine, each source and each plugin publish their own counters, gauges
 * and histograms, in the spirit of Varnish's VSC. mqforkstat renders every
 * block in every format from the block's own field table, so adding a
 * counter changes no layout version and no reader.
 *
 * The stats area (seg_header.off_stats, .stats_size) starts with a
 * directory (struct stats_dir) and hands out the rest to blocks:
 *
 *   stats_dir | field table of block 0 | instances of block 0 | field table
 *   of block 1 | ...
 *
 * A block is a name ("engine", "mqtt", "voice", "plugin.<name>"), a field
 * table written once by the supervisor before the block is published (the
 * directory's count is raised with release order after it), and one or more
 * instances of its data, each behind its own seqlock with exactly one
 * writing process. A plain block has one instance, written by the process
 * that added it. A per-worker block (STATS_BLOCK_PER_WORKER) has one
 * instance per worker slot, reserved by the supervisor before the workers
 * that write them fork; the worker in slot N writes instance N only, and
 * readers show the sum of all instances (histograms merged, max of maxima).
 * A slot's counters survive the worker process, so the sum only grows.
 *
 * Names: a block flagged STATS_BLOCK_GLOBAL holds instance-wide figures named
 * without the block's name (the engine's, MQTT's and the routes', whose
 * names predate blocks); every other block's fields are shown as <block>.<field>. A dot in
 * a field name splits it into a family and a label value
 * (jobs_refused.overloaded: family jobs_refused, Prometheus label
 * reason="overloaded"); such a field must name its label key.
 *
 * A handler's own counters (include/mqfork/handler.h) are the per-worker
 * block "plugin.<handler name>", added by the engine before it forks a
 * worker that runs the handler. The handler updates each value with one
 * atomic operation instead of a seqlock round, so its instance's seqlock
 * stays even: a reader's copy holds whole values, each of its own moment.
 *
 * Only the supervisor adds blocks (single-threaded); blocks live as long as
 * the segment. Readers validate every directory entry and field table they
 * use against the area's real size (shm/statread.c). */
#ifndef MQFORK_SHM_STATBLOCK_H
#define MQFORK_SHM_STATBLOCK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm/seqlock.h"
#include "shm/stats.h"

#define STATS_MAX_BLOCKS     64
#define STATS_MAX_FIELDS     256     /* per block */
#define STATS_MAX_INSTANCES  65536   /* per block: worker slots */
#define STATS_MAX_DATA       1048576 /* bytes of one instance's data */
#define STATS_BLOCK_NAME_LEN 64      /* "plugin." and a handler's name */
#define STATS_FIELD_NAME_LEN 48
#define STATS_LABEL_LEN      16
#define STATS_STATES_LEN     64
#define STATS_HELP_LEN       120
#define STATS_BLOCK_HEAD     32 /* an instance's seqlock and bookkeeping; data follows */

/* Room the area gives blocks: the fixed ones, blocks added at run time, and
 * per-worker blocks (which take one instance per slot). Untouched pages of
 * the segment cost no memory. */
#define STATS_AREA_BASE     (256u * 1024)
#define STATS_AREA_PER_SLOT (8u * 1024)

enum stats_type {
    STATS_COUNTER = 1, /* only grows; 4 or 8 bytes */
    STATS_GAUGE,       /* the value at the last update; 4 or 8 bytes */
    STATS_HISTOGRAM,   /* a struct stats_hist of durations in ns */
    STATS_STATE,       /* a gauge shown by name: value i is the i-th of `states` */
    STATS_TIMESTAMP,   /* CLOCK_MONOTONIC ns, 8 bytes: shown as seconds since */
};

enum stats_block_flags {
    STATS_BLOCK_GLOBAL = 1u << 0,     /* names shown without the block's name */
    STATS_BLOCK_PER_WORKER = 1u << 1, /* one instance per worker slot, summed */
};
#define STATS_BLOCK_FLAGS_KNOWN (STATS_BLOCK_GLOBAL | STATS_BLOCK_PER_WORKER)

/* What a writer declares for one field. */
struct stats_field_desc {
    const char *name; /* [a-z0-9_-], one '.' at most; unique in its namespace */
    enum stats_type type;
    size_t offset;      /* in the block's data (the writer's struct) */
    size_t size;        /* 4 or 8; sizeof(struct stats_hist) for a histogram */
    uint32_t divide;    /* 0 or 1: an integer; else shown as value / divide */
    const char *label;  /* Prometheus label key of the part after the dot */
    const char *states; /* STATS_STATE: names of 0, 1, ... separated by '|' */
    const char *help;   /* one sentence: Prometheus HELP and the docs */
};

/* A field as the segment holds it (strings NUL-terminated). */
struct stats_field {
    char name[STATS_FIELD_NAME_LEN];
    char label[STATS_LABEL_LEN];
    char states[STATS_STATES_LEN];
    char help[STATS_HELP_LEN];
    uint32_t type; /* enum stats_type */
    uint32_t size;
    uint32_t offset;
    uint32_t divide; /* >= 1 */
};

/* One block in the directory; offsets are from the start of the area. */
struct stats_block_entry {
    char name[STATS_BLOCK_NAME_LEN];
    uint32_t flags;
    uint32_t nfields;
    uint32_t instances;
    uint32_t size;       /* data bytes of one instance */
    uint64_t fields_off; /* nfields struct stats_field */
    uint64_t data_off;   /* instance 0's head */
    uint64_t stride;     /* from one instance's head to the next */
};

struct stats_dir {
    _Atomic uint32_t nblocks; /* entries published; raised after each is written */
    uint32_t max_blocks;
    uint64_t used; /* bytes of the area handed out (the supervisor's bookkeeping) */
    struct stats_block_entry entry[STATS_MAX_BLOCKS];
};

/* The head of one instance of a block in the segment: the writer's handle.
 * Its data follows at STATS_BLOCK_HEAD bytes. */
struct stats_block {
    struct seqlock lock;
    uint32_t index;  /* instance: the worker slot of a per-worker block, else 0 */
    uint32_t count;  /* instances of the block */
    uint32_t size;   /* data bytes */
    uint64_t stride; /* to the next instance */
};

/* What stats_block_add needs to know about a block. */
struct stats_block_spec {
    const char *name; /* [a-z0-9_.-], not a name the outputs use for tables */
    unsigned flags;   /* enum stats_block_flags */
    const struct stats_field_desc *fields;
    unsigned nfields;
    size_t size; /* data bytes: the writer's struct */
};

struct segment;

/* Whether a field of TYPE (enum stats_type) may be SIZE bytes. */
bool stats_size_fits(uint32_t type, uint64_t size);

/* Bytes of stats area a segment for MAX_WORKERS slots gets. */
uint64_t stats_area_size(uint32_t max_workers);

/* Lay out an empty directory in the area of the new segment S. */
void stats_area_init(struct segment *s);

/* Add a block to S (the supervisor, which created S). Its data starts
 * zeroed. Returns instance 0, or NULL with errno: EINVAL (a bad name,
 * field or flag; also logged by the caller), EEXIST (the name or, for a
 * global block, a field name is taken), ENOSPC (no room left). */
struct stats_block *stats_block_add(struct segment *s, const struct stats_block_spec *spec);

/* Instance 0 of the block named NAME in S, the writer's own segment (a
 * worker looks up the per-worker block its handler declared), or NULL. */
struct stats_block *stats_block_find(struct segment *s, const char *name);

/* Instance I of the block whose instance 0 is B (per-worker: slot I), or
 * NULL when it has no such instance. */
struct stats_block *stats_block_instance(struct stats_block *b, unsigned i);

static inline void *stats_block_data(struct stats_block *b)
{
    return (char *)b + STATS_BLOCK_HEAD;
}

/* Write the block's data in place: begin returns the data, end publishes. */
static inline void *stats_block_begin(struct stats_block *b)
{
    seqlock_write_begin(&b->lock);
    return stats_block_data(b);
}

static inline void stats_block_end(struct stats_block *b)
{
    seqlock_write_end(&b->lock);
}

/* Publish a private copy: the LEN (<= the block's size) bytes of SRC. */
void stats_block_publish(struct stats_block *b, const void *src, size_t len);

/* A dead writer may have left B's seqlock odd (mid-update): make it even, so
 * readers can copy the instance again. Only while nobody writes it. */
void stats_block_unwedge(struct stats_block *b);

/* The worker of SLOT is dead and its replacement not yet forked: unwedge
 * its instance of every per-worker block of S (the supervisor). */
void stats_blocks_unwedge_slot(struct segment *s, unsigned slot);

/* Field declarations: field MEMBER of the writer's struct STRUCT_. */
#define STATS_DESC(kind_, struct_, member, name_, label_, divide_, help_)                          \
    {                                                                                              \
        .name = (name_), .type = (kind_), .offset = offsetof(struct_, member),                     \
        .size = sizeof(((struct_ *)0)->member), .divide = (divide_), .label = (label_),            \
        .help = (help_)                                                                            \
    }
#define STATS_FIELD(kind_, struct_, member, name_, help_)                                          \
    STATS_DESC(kind_, struct_, member, name_, NULL, 1, help_)

#endif
