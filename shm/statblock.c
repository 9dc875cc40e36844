/* statblock.c - the supervisor's side of the named counter blocks: lay out
 * the directory, check a block's declaration, reserve its field table and
 * instances, and publish it (see statblock.h). */
#include "shm/statblock.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "shm/segment.h"

#define INSTANCE_ALIGN 64 /* instances of per-worker blocks never share a cache line */

/* Names the outputs use for their own tables and families (kind.<name>.x,
 * mqfork_worker_..., busy <block>, mqfork_stats_busy_blocks, ...): neither
 * one of them nor one of them and a dot may start a block's name. */
static const char *const reserved[] = {"kind",   "worker",   "crash",  "scale", "busy", "stats",
                                       "config", "instance", "global", "info",  "start"};

uint64_t stats_area_size(uint32_t max_workers)
{
    return STATS_AREA_BASE + (uint64_t)STATS_AREA_PER_SLOT * max_workers;
}

static struct stats_dir *dir_of(const struct segment *s)
{
    return (struct stats_dir *)s->stats;
}

void stats_area_init(struct segment *s)
{
    struct stats_dir *d = dir_of(s);
    d->max_blocks = STATS_MAX_BLOCKS;
    d->used = sizeof(*d);
    atomic_store_explicit(&d->nblocks, 0, memory_order_release);
}

static bool name_chars(const char *name, size_t max, bool dots)
{
    size_t n = strnlen(name, max);
    if (n == 0 || n >= max)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
              (dots && c == '.')))
            return false;
    }
    return name[0] != '.' && name[n - 1] != '.';
}

static bool block_name_ok(const char *name)
{
    if (!name || !name_chars(name, STATS_BLOCK_NAME_LEN, true))
        return false;
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
        size_t n = strlen(reserved[i]);
        if (strncmp(name, reserved[i], n) == 0 && (name[n] == '\0' || name[n] == '.'))
            return false;
    }
    return true;
}

static bool fits(const char *s, size_t max)
{
    return !s || strnlen(s, max) < max;
}

bool stats_size_fits(uint32_t type, uint64_t size)
{
    switch (type) {
    case STATS_COUNTER:
    case STATS_GAUGE:
    case STATS_STATE:
        return size == 4 || size == 8;
    case STATS_TIMESTAMP:
        return size == 8;
    case STATS_HISTOGRAM:
        return size == sizeof(struct stats_hist);
    }
    return false;
}

/* One field: its name, its size for its type, where it lies in SIZE bytes. */
static bool field_ok(const struct stats_field_desc *f, size_t size, unsigned flags)
{
    const char *dot = f->name ? strchr(f->name, '.') : NULL;
    size_t align = f->size == 4 ? 4 : 8;
    if (!f->name || !name_chars(f->name, STATS_FIELD_NAME_LEN, true) ||
        (dot && strchr(dot + 1, '.')) || !stats_size_fits(f->type, f->size) ||
        f->offset % align != 0 || f->offset > size || f->size > size - f->offset)
        return false;
    if (dot && (!f->label || !name_chars(f->label, STATS_LABEL_LEN, false)))
        return false;
    if ((flags & STATS_BLOCK_PER_WORKER) && (f->type == STATS_STATE || f->type == STATS_TIMESTAMP))
        return false; /* a sum of states or of times means nothing */
    /* a longer help text is cut, not refused */
    return fits(f->label, STATS_LABEL_LEN) && fits(f->states, STATS_STATES_LEN) &&
           (f->type != STATS_STATE || f->states);
}

static bool spec_ok(const struct stats_block_spec *b)
{
    unsigned both = STATS_BLOCK_GLOBAL | STATS_BLOCK_PER_WORKER;
    if (!block_name_ok(b->name) || (b->flags & ~STATS_BLOCK_FLAGS_KNOWN) ||
        (b->flags & both) == both || b->nfields > STATS_MAX_FIELDS || b->size > STATS_MAX_DATA ||
        (b->nfields && !b->fields))
        return false;
    for (unsigned i = 0; i < b->nfields; i++) {
        if (!field_ok(&b->fields[i], b->size, b->flags))
            return false;
        for (unsigned j = 0; j < i; j++)
            if (strcmp(b->fields[i].name, b->fields[j].name) == 0)
                return false;
    }
    return true;
}

/* A block of that name, or a global block's field already named so. */
static bool taken(const struct segment *s, const struct stats_block_spec *b)
{
    const struct stats_dir *d = dir_of(s);
    uint32_t n = atomic_load_explicit(&d->nblocks, memory_order_relaxed);
    for (uint32_t i = 0; i < n; i++) {
        const struct stats_block_entry *e = &d->entry[i];
        if (strcmp(e->name, b->name) == 0)
            return true;
        if (!(e->flags & STATS_BLOCK_GLOBAL) || !(b->flags & STATS_BLOCK_GLOBAL))
            continue;
        const struct stats_field *f = (const void *)(s->stats + e->fields_off);
        for (uint32_t k = 0; k < e->nfields; k++)
            for (unsigned j = 0; j < b->nfields; j++)
                if (strcmp(f[k].name, b->fields[j].name) == 0)
                    return true;
    }
    return false;
}

static void copy_str(char *dst, size_t len, const char *src)
{
    memset(dst, 0, len);
    if (src)
        memcpy(dst, src, strnlen(src, len - 1));
}

static void write_fields(struct stats_field *out, const struct stats_block_spec *b)
{
    for (unsigned i = 0; i < b->nfields; i++) {
        const struct stats_field_desc *f = &b->fields[i];
        copy_str(out[i].name, sizeof(out[i].name), f->name);
        copy_str(out[i].label, sizeof(out[i].label), f->label);
        copy_str(out[i].states, sizeof(out[i].states), f->states);
        copy_str(out[i].help, sizeof(out[i].help), f->help);
        out[i].type = f->type;
        out[i].size = (uint32_t)f->size;
        out[i].offset = (uint32_t)f->offset;
        out[i].divide = f->divide > 1 ? f->divide : 1;
    }
}

static uint64_t align_up(uint64_t n, uint64_t a)
{
    return (n + a - 1) & ~(a - 1);
}

/* Reserve the field table and the instances of B in the area; false when
 * they do not fit. */
static bool reserve(struct segment *s, const struct stats_block_spec *b, uint32_t instances,
                    struct stats_block_entry *e)
{
    struct stats_dir *d = dir_of(s);
    uint64_t stride = align_up(STATS_BLOCK_HEAD + b->size, INSTANCE_ALIGN);
    e->fields_off = align_up(d->used, 8);
    e->data_off =
        align_up(e->fields_off + (uint64_t)b->nfields * sizeof(struct stats_field), INSTANCE_ALIGN);
    uint64_t end = e->data_off + stride * instances;
    if (end > s->stats_size)
        return false;
    e->stride = stride;
    e->instances = instances;
    d->used = end;
    return true;
}

static void init_instances(struct segment *s, const struct stats_block_entry *e)
{
    for (uint32_t i = 0; i < e->instances; i++) {
        struct stats_block *b = (void *)(s->stats + e->data_off + e->stride * i);
        /* The area is fresh from ftruncate, hence zero: only the head is
         * written, so the pages of unused slots stay untouched. */
        b->index = i;
        b->count = e->instances;
        b->size = e->size;
        b->stride = e->stride;
    }
}

struct stats_block *stats_block_add(struct segment *s, const struct stats_block_spec *spec)
{
    struct stats_dir *d = dir_of(s);
    uint32_t n = atomic_load_explicit(&d->nblocks, memory_order_relaxed);
    if (!spec_ok(spec)) {
        errno = EINVAL;
        return NULL;
    }
    if (taken(s, spec)) {
        errno = EEXIST;
        return NULL;
    }
    struct stats_block_entry e = {
        .flags = spec->flags, .nfields = spec->nfields, .size = (uint32_t)spec->size};
    uint32_t instances = spec->flags & STATS_BLOCK_PER_WORKER ? s->max_workers : 1;
    if (n >= d->max_blocks || instances == 0 || !reserve(s, spec, instances, &e)) {
        errno = ENOSPC;
        return NULL;
    }
    copy_str(e.name, sizeof(e.name), spec->name);
    write_fields((struct stats_field *)(s->stats + e.fields_off), spec);
    init_instances(s, &e);
    d->entry[n] = e;
    /* Readers see the entry, its table and its instances complete. */
    atomic_store_explicit(&d->nblocks, n + 1, memory_order_release);
    return (struct stats_block *)(s->stats + e.data_off);
}

struct stats_block *stats_block_find(struct segment *s, const char *name)
{
    struct stats_dir *d = dir_of(s);
    uint32_t n = atomic_load_explicit(&d->nblocks, memory_order_acquire);
    for (uint32_t i = 0; i < n; i++)
        if (strncmp(d->entry[i].name, name, sizeof(d->entry[i].name)) == 0)
            return (struct stats_block *)(s->stats + d->entry[i].data_off);
    return NULL;
}

struct stats_block *stats_block_instance(struct stats_block *b, unsigned i)
{
    return i < b->count ? (struct stats_block *)((char *)b + b->stride * i) : NULL;
}

void stats_block_publish(struct stats_block *b, const void *src, size_t len)
{
    seqlock_write_begin(&b->lock);
    memcpy(stats_block_data(b), src, len < b->size ? len : b->size);
    seqlock_write_end(&b->lock);
}

void stats_block_unwedge(struct stats_block *b)
{
    seqlock_unwedge(&b->lock);
}

void stats_blocks_unwedge_slot(struct segment *s, unsigned slot)
{
    struct stats_dir *d = dir_of(s);
    uint32_t n = atomic_load_explicit(&d->nblocks, memory_order_relaxed);
    for (uint32_t i = 0; i < n; i++) {
        const struct stats_block_entry *e = &d->entry[i];
        if ((e->flags & STATS_BLOCK_PER_WORKER) && slot < e->instances)
            stats_block_unwedge((struct stats_block *)(s->stats + e->data_off + e->stride * slot));
    }
}
