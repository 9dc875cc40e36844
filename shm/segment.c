/* segment.c - lay out, create, attach and remove an instance's shared-memory
 * segment. The layout is computed in one place (layout()) for the creator;
 * a reader takes the offsets from a copy of the header after checking that
 * every region lies inside the file it mapped. */
#include "shm/segment.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "proto/job.h"
#include "shm/procstat.h"
#include "shm/ring.h"
#include "shm/statblock.h"
#include "shm/statread.h"

#define PAGE 4096u

static uint64_t page_align(uint64_t n)
{
    return (n + PAGE - 1) & ~(uint64_t)(PAGE - 1);
}

static uint64_t line_align(uint64_t n)
{
    return (n + RING_CACHELINE - 1) & ~(uint64_t)(RING_CACHELINE - 1);
}

/* Fill the offsets of s and h from g; returns the total size. */
static uint64_t layout(struct segment *s, struct seg_header *h, const struct seg_geometry *g)
{
    uint64_t off = page_align(sizeof(struct seg_header));
    h->off_stats = off;
    h->stats_size = page_align(stats_area_size(g->max_workers));
    off = page_align(off + h->stats_size);
    h->off_events = off;
    off = page_align(off + sizeof(struct stats_events));
    h->off_kinds = off;
    off = page_align(off + sizeof(struct stats_kind) * SEG_MAX_KINDS);
    h->off_workers_stats = off;
    off = page_align(off + sizeof(struct stats_worker) * g->max_workers);

    s->job_ring_off = line_align(sizeof(struct seg_worker_ctl));
    s->result_ring_off =
        s->job_ring_off + line_align(ring_shm_size(g->ring_cap, sizeof(struct job_desc)));
    s->worker_stride = page_align(
        s->result_ring_off + line_align(ring_shm_size(g->ring_cap, sizeof(struct result_desc))));
    h->off_workers = off;
    h->worker_stride = s->worker_stride;
    off = page_align(off + s->worker_stride * g->max_workers);

    h->off_streams = off;
    off = page_align(off + g->stream_slot_size * g->max_streams);
    h->off_slab = off;
    h->slab_size = g->slab_size;
    return page_align(off + g->slab_size);
}

/* Point S into its mapping by the geometry in H: the header the creator
 * wrote, or a reader's checked copy of it. */
static void point_into(struct segment *s, const struct seg_header *h)
{
    uint8_t *b = s->base;
    s->hdr = s->base;
    s->max_workers = h->max_workers;
    s->max_kinds = h->max_kinds;
    s->stats = b + h->off_stats;
    s->stats_size = h->stats_size;
    s->events = (struct stats_events *)(b + h->off_events);
    s->kinds = (struct stats_kind *)(b + h->off_kinds);
    s->workers_stats = (struct stats_worker *)(b + h->off_workers_stats);
    s->workers = b + h->off_workers;
    s->worker_stride = h->worker_stride;
    s->streams = b + h->off_streams;
    s->slab = b + h->off_slab;
}

uint64_t seg_pid_starttime(pid_t pid)
{
    struct procstat ps;
    return procstat_read(pid, &ps) == 0 ? ps.starttime : 0;
}

bool seg_owner_alive(const struct seg_header *h)
{
    if (h->pid <= 0)
        return false;
    if (kill(h->pid, 0) < 0 && errno == ESRCH)
        return false;
    uint64_t start = seg_pid_starttime(h->pid);
    return start != 0 && start == h->pid_starttime;
}

static void set_name(struct segment *s, const char *instance)
{
    snprintf(s->name, sizeof(s->name), "/mqfork.%s", instance);
}

/* The pid a segment's header names, read for the log only; 0 if none. */
static pid_t header_pid(int fd)
{
    struct stat st;
    struct seg_header h = {0};
    if (fstat(fd, &st) == 0 && (size_t)st.st_size >= sizeof(h)) {
        void *m = mmap(NULL, sizeof(h), PROT_READ, MAP_SHARED, fd, 0);
        if (m != MAP_FAILED) {
            memcpy(&h, m, sizeof(h));
            munmap(m, sizeof(h));
        }
    }
    return h.magic == SEG_MAGIC && h.pid > 0 ? h.pid : 0;
}

/* Whatever has our name now belongs to no live instance (the caller holds
 * the instance lock): a crashed run's segment, or something a stranger
 * planted. Nothing in it is trusted; it goes. */
static int remove_stale(struct segment *s, pid_t *stale_pid)
{
    int fd = shm_open(s->name, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0 && errno == ENOENT)
        return 0;
    *stale_pid = fd >= 0 ? header_pid(fd) : 0;
    if (*stale_pid == 0)
        *stale_pid = -1;
    if (fd >= 0)
        close(fd);
    if (shm_unlink(s->name) == 0 || errno == ENOENT)
        return 0;
    /* Root without CAP_FOWNER (the shipped unit) may not unlink a file its
     * daemon user owns in sticky /dev/shm, but may take it back first. */
    char path[sizeof(s->name) + 16];
    snprintf(path, sizeof(path), "/dev/shm%s", s->name);
    if ((errno == EPERM || errno == EACCES) && chown(path, geteuid(), getegid()) == 0 &&
        shm_unlink(s->name) == 0)
        return 0;
    return -1;
}

int seg_create(struct segment *s, const char *instance, const struct seg_geometry *g,
               pid_t *stale_pid)
{
    memset(s, 0, sizeof(*s));
    s->fd = -1;
    set_name(s, instance);
    *stale_pid = 0;
    if (remove_stale(s, stale_pid) < 0)
        return -1;

    struct seg_header h = {0};
    uint64_t size = layout(s, &h, g);
    int fd = shm_open(s->name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0)
        return -1;
    /* shm_open applies the umask; the mode is part of the contract. */
    if (fchmod(fd, 0640) < 0 || ftruncate(fd, (off_t)size) < 0)
        goto fail;
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED)
        goto fail;
    s->fd = fd;
    s->base = base;
    s->size = size;
    s->writable = true;

    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    h.magic = SEG_MAGIC;
    h.layout_version = SEG_LAYOUT_VERSION;
    h.header_size = sizeof(struct seg_header);
    h.size = size;
    h.pid = getpid();
    h.pid_starttime = seg_pid_starttime(getpid());
    h.start_realtime_ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
    snprintf(h.instance, sizeof(h.instance), "%s", instance);
    snprintf(h.version, sizeof(h.version), "%s", MQFORK_VERSION);
    h.max_workers = g->max_workers;
    h.max_kinds = SEG_MAX_KINDS;
    h.ring_cap = g->ring_cap;
    h.max_streams = g->max_streams;
    h.stream_slot_size = g->stream_slot_size;
    memcpy(base, &h, sizeof(h));
    point_into(s, &h);
    stats_area_init(s);
    return 0;
fail:;
    int saved = errno;
    close(fd);
    shm_unlink(s->name);
    errno = saved;
    return -1;
}

/* [OFF, OFF + COUNT * EACH) lies inside SIZE bytes, after the header, and
 * OFF is aligned for the structures there; no sum or product may wrap. */
static bool region_fits(uint64_t off, uint64_t count, uint64_t each, uint64_t size)
{
    uint64_t len, end;
    return off >= sizeof(struct seg_header) && off % 64 == 0 &&
           !__builtin_mul_overflow(count, each, &len) && !__builtin_add_overflow(off, len, &end) &&
           end <= size;
}

/* Every region a reader may touch lies inside the SIZE bytes it mapped. */
static bool header_sane(const struct seg_header *h, uint64_t size)
{
    if (h->header_size != sizeof(struct seg_header) || h->size != size ||
        h->max_kinds > SEG_MAX_KINDS || h->max_workers > STATS_MAX_INSTANCES ||
        h->stats_size < sizeof(struct stats_dir))
        return false;
    return region_fits(h->off_stats, 1, h->stats_size, size) &&
           region_fits(h->off_events, 1, sizeof(struct stats_events), size) &&
           region_fits(h->off_kinds, h->max_kinds, sizeof(struct stats_kind), size) &&
           region_fits(h->off_workers_stats, h->max_workers, sizeof(struct stats_worker), size) &&
           region_fits(h->off_workers, h->max_workers, h->worker_stride, size) &&
           region_fits(h->off_streams, h->max_streams, h->stream_slot_size, size) &&
           region_fits(h->off_slab, 1, h->slab_size, size);
}

/* Why the header at BASE (SIZE bytes mapped) cannot be read: 0 when it
 * can, else EPROTO or EBADMSG (see seg_attach); *FOUND as seg_attach says.
 * H receives the copy that was checked. */
static int header_check(const void *base, uint64_t size, struct seg_header *h, uint32_t *found)
{
    /* A copy: a writer changing the mapping cannot alter what was checked. */
    memcpy(h, base, sizeof(*h));
    if (h->magic != SEG_MAGIC || h->layout_version != SEG_LAYOUT_VERSION) {
        if (found && h->magic == SEG_MAGIC)
            *found = h->layout_version;
        return EPROTO;
    }
    return header_sane(h, size) ? 0 : EBADMSG;
}

int seg_attach(struct segment *s, const char *instance, uint32_t *found_version)
{
    memset(s, 0, sizeof(*s));
    s->fd = -1;
    if (found_version)
        *found_version = 0;
    set_name(s, instance);
    int fd = shm_open(s->name, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) < 0)
        goto fail;
    if ((size_t)st.st_size < sizeof(struct seg_header)) {
        errno = EPROTO;
        goto fail;
    }
    void *base = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED)
        goto fail;
    struct seg_header h;
    int why = header_check(base, (uint64_t)st.st_size, &h, found_version);
    s->base = base;
    s->size = (size_t)st.st_size;
    if (why == 0) {
        point_into(s, &h);
        why = stats_check(s) < 0 ? EBADMSG : 0;
    }
    if (why) {
        munmap(base, (size_t)st.st_size);
        memset(s, 0, sizeof(*s));
        s->fd = -1;
        errno = why;
        goto fail;
    }
    s->fd = fd;
    return 0;
fail:;
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

void seg_close(struct segment *s, bool unlink)
{
    if (s->base)
        munmap(s->base, s->size);
    if (s->fd >= 0)
        close(s->fd);
    if (unlink)
        shm_unlink(s->name);
    s->base = NULL;
    s->fd = -1;
}
