/* segment.h - the shared-memory segment of one instance: its layout, and
 * creating, attaching and removing it.
 *
 * /dev/shm/mqfork.<instance>, mode 0640. Layout, each part page aligned:
 *   header | named counter blocks (shm/statblock.h) | events | kinds |
 *   worker stats | per-worker areas (control word, job ring, result ring) |
 *   stream states | payload slab
 * The header records every offset and size, so a reader (mqforkstat) needs
 * nothing but the header to find its way. A reader checks magic and layout
 * version, then that every region the header names lies inside the file it
 * mapped (overflow-safe), before it trusts any of it; it keeps the checked
 * values and never reads the geometry from the mapping again.
 *
 * Layout version 3: counters live in named blocks, so adding one changes
 * neither this layout nor mqforkstat. */
#ifndef MQFORK_SHM_SEGMENT_H
#define MQFORK_SHM_SEGMENT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "shm/stats.h"

#define SEG_MAGIC          0x47534b524f46514dull /* "MQFORKSG" little-endian */
#define SEG_LAYOUT_VERSION 3
#define SEG_INSTANCE_LEN   64
#define SEG_MAX_KINDS      64

struct seg_header {
    uint64_t magic;
    uint32_t layout_version;
    uint32_t header_size;
    uint64_t size; /* of the whole segment */
    int32_t pid;   /* supervisor */
    uint32_t pad0;
    uint64_t pid_starttime;      /* supervisor's start time in clock ticks after boot
                                    (/proc/PID/stat field 22): tells a reused pid apart */
    uint64_t start_realtime_ns;  /* CLOCK_REALTIME at start */
    _Atomic uint64_t generation; /* bumped by every configuration reload */
    char instance[SEG_INSTANCE_LEN];
    char version[16]; /* daemon version */
    /* geometry */
    uint32_t max_workers;
    uint32_t max_kinds;
    uint32_t ring_cap; /* entries of each job ring and result ring */
    uint32_t max_streams;
    uint64_t stream_slot_size;
    uint64_t off_stats, stats_size; /* named counter blocks */
    uint64_t off_events, off_kinds, off_workers_stats;
    uint64_t off_workers, worker_stride;
    uint64_t off_streams;
    uint64_t off_slab, slab_size;
    /* the supervisor is parked in its event loop: a worker that pushes a
     * result must write the eventfd (doc/DESIGN.md, principle 7) */
    _Alignas(64) _Atomic uint32_t supervisor_sleeping;
};

/* Per-worker control area, at the start of each worker's area. */
struct seg_worker_ctl {
    _Atomic uint32_t ready;        /* set by the worker once its handlers are set up */
    uint32_t generation;           /* written by the supervisor before fork */
    _Atomic uint32_t initializing; /* kind index + 1 whose init() runs now; 0: none */
};

/* The sizes a segment is made from (derived from the configuration). */
struct seg_geometry {
    uint32_t max_workers;
    uint32_t ring_cap;
    uint32_t max_streams;
    uint64_t stream_slot_size;
    uint64_t slab_size;
};

/* A mapped segment, as either side sees it. Pointers are computed from the
 * geometry the creator knows (supervisor) or, for a reader, from a header it
 * has checked. */
struct segment {
    char name[SEG_INSTANCE_LEN + 16]; /* "/mqfork.<instance>" */
    int fd;
    bool writable;
    size_t size;
    void *base;
    struct seg_header *hdr;
    /* geometry: the creator's, or a reader's checked copy of the header's */
    uint32_t max_workers, max_kinds;
    uint64_t stats_size;
    uint8_t *stats; /* the named blocks' area (shm/statblock.h) */
    struct stats_events *events;
    struct stats_kind *kinds;
    struct stats_worker *workers_stats;
    uint8_t *workers;
    uint8_t *streams;
    uint8_t *slab;
    uint64_t worker_stride, job_ring_off, result_ring_off;
};

/* Create the segment of INSTANCE; the caller holds the instance lock
 * (shm/lock.h), so whatever has the name already is stale, or forged, and
 * is removed unread: *STALE_PID is then the pid its header named, -1 when
 * it named none, and 0 when there was nothing. */
int seg_create(struct segment *s, const char *instance, const struct seg_geometry *g,
               pid_t *stale_pid);

/* Map INSTANCE's segment read-only. Returns 0, or -1 with errno: ENOENT (no
 * such instance), EACCES (not allowed), EPROTO (bad magic or other layout
 * version; *found_version set when magic was right, else 0), EBADMSG (right
 * magic and version, but a region the header names does not fit the file,
 * or the block directory is damaged: a broken or crafted segment). */
int seg_attach(struct segment *s, const char *instance, uint32_t *found_version);

/* Unmap; remove the name too when UNLINK (the supervisor's clean exit). */
void seg_close(struct segment *s, bool unlink);

/* Whether the supervisor the header names is still the process alive. */
bool seg_owner_alive(const struct seg_header *h);

/* Clock ticks after boot at which PID started, or 0 if it is gone. */
uint64_t seg_pid_starttime(pid_t pid);

static inline struct seg_worker_ctl *seg_worker_ctl(const struct segment *s, unsigned slot)
{
    return (struct seg_worker_ctl *)(s->workers + s->worker_stride * slot);
}

static inline void *seg_job_ring(const struct segment *s, unsigned slot)
{
    return s->workers + s->worker_stride * slot + s->job_ring_off;
}

static inline void *seg_result_ring(const struct segment *s, unsigned slot)
{
    return s->workers + s->worker_stride * slot + s->result_ring_off;
}

#endif
