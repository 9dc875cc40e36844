/* statread.c - read named counter blocks from a segment that may be damaged
 * or crafted (see statread.h): copy, check, then use only the copy. */
#include "shm/statread.h"

#include <stdlib.h>
#include <string.h>

#include "shm/segment.h"

/* [OFF, OFF + LEN) lies inside an area of SIZE bytes, and OFF is aligned. */
static bool inside(uint64_t off, uint64_t len, uint64_t size, uint64_t align)
{
    uint64_t end;
    return off % align == 0 && !__builtin_add_overflow(off, len, &end) && end <= size;
}

static bool terminated(const char *s, size_t len)
{
    return memchr(s, '\0', len) != NULL;
}

static const struct stats_dir *dir_of(const struct segment *s)
{
    return (const struct stats_dir *)s->stats;
}

int stats_dir_count(const struct segment *s)
{
    if (!s->stats || s->stats_size < sizeof(struct stats_dir))
        return -1;
    const struct stats_dir *d = dir_of(s);
    uint32_t n = atomic_load_explicit(&d->nblocks, memory_order_acquire);
    return n <= STATS_MAX_BLOCKS ? (int)n : -1;
}

int stats_entry(const struct segment *s, unsigned i, struct stats_block_entry *out)
{
    int n = stats_dir_count(s);
    if (n < 0 || i >= (unsigned)n)
        return -1;
    memcpy(out, &dir_of(s)->entry[i], sizeof(*out));
    uint64_t table, last, span;
    if (!terminated(out->name, sizeof(out->name)) || out->name[0] == '\0' ||
        (out->flags & ~STATS_BLOCK_FLAGS_KNOWN) || out->nfields > STATS_MAX_FIELDS ||
        out->instances == 0 || out->instances > STATS_MAX_INSTANCES || out->size > STATS_MAX_DATA ||
        out->stride < STATS_BLOCK_HEAD + (uint64_t)out->size || out->stride % 8 != 0)
        return -1;
    table = (uint64_t)out->nfields * sizeof(struct stats_field);
    /* the last instance's head and data must end inside the area */
    if (__builtin_mul_overflow(out->stride, (uint64_t)(out->instances - 1), &last) ||
        __builtin_add_overflow(last, STATS_BLOCK_HEAD + (uint64_t)out->size, &span))
        return -1;
    return inside(out->fields_off, table, s->stats_size, 8) &&
                   inside(out->data_off, span, s->stats_size, 8)
               ? 0
               : -1;
}

static bool field_sane(const struct stats_field *f, uint32_t data_size)
{
    return terminated(f->name, sizeof(f->name)) && f->name[0] != '\0' &&
           terminated(f->label, sizeof(f->label)) && terminated(f->states, sizeof(f->states)) &&
           terminated(f->help, sizeof(f->help)) && stats_size_fits(f->type, f->size) &&
           f->divide >= 1 && inside(f->offset, f->size, data_size, f->size == 4 ? 4 : 8);
}

int stats_fields(const struct segment *s, const struct stats_block_entry *e,
                 struct stats_field *out)
{
    /* E is a checked copy: its table lies inside the area. */
    memcpy(out, s->stats + e->fields_off, (size_t)e->nfields * sizeof(*out));
    for (uint32_t i = 0; i < e->nfields; i++)
        if (!field_sane(&out[i], e->size))
            return -1;
    return 0;
}

uint64_t stats_field_raw(const struct stats_field *f, const void *data)
{
    const char *p = (const char *)data + f->offset;
    if (f->size == 4) {
        uint32_t v;
        memcpy(&v, p, sizeof(v));
        return v;
    }
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static void add_raw(const struct stats_field *f, void *sum, const void *more)
{
    uint64_t v = stats_field_raw(f, sum) + stats_field_raw(f, more);
    char *p = (char *)sum + f->offset;
    if (f->size == 4) {
        uint32_t v32 = (uint32_t)v;
        memcpy(p, &v32, sizeof(v32));
    } else {
        memcpy(p, &v, sizeof(v));
    }
}

static void merge_hist(struct stats_hist *sum, const struct stats_hist *more)
{
    sum->count += more->count;
    sum->sum_ns += more->sum_ns;
    if (more->max_ns > sum->max_ns)
        sum->max_ns = more->max_ns;
    for (unsigned b = 0; b < STATS_HIST_BUCKETS; b++)
        sum->bucket[b] += more->bucket[b];
}

/* Add instance MORE into SUM field by field; states and times are not
 * summed (a writer cannot declare them in a per-worker block). */
static void merge(const struct stats_block_entry *e, const struct stats_field *f, void *sum,
                  const void *more)
{
    for (uint32_t i = 0; i < e->nfields; i++) {
        if (f[i].type == STATS_COUNTER || f[i].type == STATS_GAUGE)
            add_raw(&f[i], sum, more);
        else if (f[i].type == STATS_HISTOGRAM)
            merge_hist((struct stats_hist *)((char *)sum + f[i].offset),
                       (const struct stats_hist *)((const char *)more + f[i].offset));
    }
}

static const struct stats_block *instance(const struct segment *s,
                                          const struct stats_block_entry *e, uint32_t i)
{
    return (const struct stats_block *)(s->stats + e->data_off + e->stride * i);
}

bool stats_read(const struct segment *s, const struct stats_block_entry *e,
                const struct stats_field *f, void *dst, int tries)
{
    const struct stats_block *b = instance(s, e, 0);
    if (!seqlock_read(&b->lock, dst, (const char *)b + STATS_BLOCK_HEAD, e->size, tries))
        return false;
    if (e->instances == 1)
        return true;
    void *more = malloc(e->size ? e->size : 1);
    bool ok = more != NULL;
    for (uint32_t i = 1; ok && i < e->instances; i++) {
        b = instance(s, e, i);
        ok = seqlock_read(&b->lock, more, (const char *)b + STATS_BLOCK_HEAD, e->size, tries);
        if (ok)
            merge(e, f, dst, more);
    }
    free(more);
    return ok;
}

int stats_check(const struct segment *s)
{
    int n = stats_dir_count(s);
    struct stats_field *f = malloc(STATS_MAX_FIELDS * sizeof(*f));
    int rc = n < 0 || !f ? -1 : 0;
    for (int i = 0; rc == 0 && i < n; i++) {
        struct stats_block_entry e;
        rc = stats_entry(s, (unsigned)i, &e) == 0 ? stats_fields(s, &e, f) : -1;
    }
    free(f);
    return rc;
}

int stats_find(const struct segment *s, const char *name, struct stats_block_entry *out)
{
    int n = stats_dir_count(s);
    for (int i = 0; i < n; i++)
        if (stats_entry(s, (unsigned)i, out) == 0 && strcmp(out->name, name) == 0)
            return 0;
    return -1;
}

const struct stats_field *stats_field_find(const struct stats_field *f, unsigned n,
                                           const char *name)
{
    for (unsigned i = 0; i < n; i++)
        if (strcmp(f[i].name, name) == 0)
            return &f[i];
    return NULL;
}

/* Find block NAME of S and copy its checked field table into *F and its
 * data into *DATA (both allocated here, freed by the caller): 0, or -1. */
static int load(const struct segment *s, const char *name, struct stats_block_entry *e,
                struct stats_field **f, void **data)
{
    *f = NULL;
    *data = NULL;
    if (stats_find(s, name, e) < 0)
        return -1;
    *f = calloc(e->nfields ? e->nfields : 1, sizeof(**f));
    *data = malloc(e->size ? e->size : 1);
    return *f && *data && stats_fields(s, e, *f) == 0 && stats_read(s, e, *f, *data, 1000) ? 0 : -1;
}

int stats_copy(const struct segment *s, const char *name, void *dst, size_t len)
{
    struct stats_block_entry e;
    struct stats_field *f;
    void *data;
    int rc = load(s, name, &e, &f, &data);
    if (rc == 0 && e.size == len)
        memcpy(dst, data, len);
    free(f);
    free(data);
    return rc == 0 && e.size == len ? 0 : -1;
}

int stats_value(const struct segment *s, const char *block, const char *field, uint64_t *out)
{
    struct stats_block_entry e;
    struct stats_field *f;
    void *data;
    int rc = load(s, block, &e, &f, &data);
    const struct stats_field *x = rc == 0 ? stats_field_find(f, e.nfields, field) : NULL;
    rc = x && x->type != STATS_HISTOGRAM ? 0 : -1;
    if (rc == 0)
        *out = stats_field_raw(x, data);
    free(f);
    free(data);
    return rc;
}
