/* slab.h - the payload slab: a buddy allocator over a region of the shared
 * segment, handing out offsets from the region's base.
 *
 * Workers can write the slab, so none of the allocator's bookkeeping lives in
 * it: every bit of metadata is in the supervisor's private memory (one malloc
 * at init), and a wild worker can scribble over payloads but never over the
 * allocator (doc/DESIGN.md, principles 1 and 3). Only the supervisor calls these.
 *
 * Blocks are powers of two from 256 bytes (order 0) up to the largest block,
 * the smallest power of two >= max_alloc. The region is managed as a row of
 * largest blocks, so its size is rounded down to a multiple of one. Each
 * order keeps two bitmaps, one bit per block of that order: "free" (with a
 * 64-ary summary tree on top, so the lowest free block is found in a few word
 * reads) and "allocated" (so slab_free needs only the offset, and a stale or
 * made-up offset is recognised and ignored). About 4 bits per 256 bytes:
 * ~130 KiB for a 64 MiB slab. alloc and free are O(log n), never malloc. */
#ifndef MQFORK_SHM_SLAB_H
#define MQFORK_SHM_SLAB_H

#include <stddef.h>
#include <stdint.h>

#define SLAB_NONE      UINT64_MAX
#define SLAB_MIN_SHIFT 8  /* 256-byte smallest block */
#define SLAB_MAX_SHIFT 30 /* 1 GiB largest block, far above limits.max_payload */
#define SLAB_ORDERS    (SLAB_MAX_SHIFT - SLAB_MIN_SHIFT + 1)
#define SLAB_TREE_MAX  6 /* summary levels for up to 2^32 blocks (a 1 TiB slab) */

/* A set of block numbers of one order. lvl[0] has one bit per block; bit w of
 * lvl[j + 1] is set exactly when word w of lvl[j] is non-zero, up to a single
 * top word. */
struct slab_bits {
    uint64_t *lvl[SLAB_TREE_MAX];
    unsigned nlvl;
};

/* Visible so it can be embedded; the fields are the allocator's own. */
struct slab {
    uint8_t *base;
    size_t size;        /* managed bytes, a multiple of the largest block */
    size_t max_alloc;   /* longest request accepted */
    size_t used;        /* bytes in allocated blocks */
    size_t nmin;        /* blocks of order 0 */
    unsigned top;       /* order of the largest block */
    uint64_t bad_frees; /* slab_free calls that named no allocated block */
    uint64_t *meta;     /* every bitmap word below, one allocation */
    size_t meta_words;
    struct slab_bits free[SLAB_ORDERS];
    uint64_t *alloc[SLAB_ORDERS]; /* one bit per block of that order */
};

/* Manage SIZE bytes at BASE. 0, or -1 with errno EINVAL (BASE is NULL,
 * MAX_ALLOC is 0 or above 1 GiB, or SIZE holds no largest block, or more than
 * 2^32 small ones) or ENOMEM. */
int slab_init(struct slab *s, void *base, size_t size, size_t max_alloc);

/* Bytes of the block a request of LEN bytes takes: a power of two of at
 * least 256; 0 when LEN is above the largest block there can be (1 GiB).
 * slab_init(..., SIZE, MAX_ALLOC) needs SIZE >= slab_block_bytes(MAX_ALLOC). */
size_t slab_block_bytes(size_t len);
void slab_destroy(struct slab *s);

/* Offset of a free block of at least LEN bytes (a smallest block when LEN is
 * 0), aligned to its own size; SLAB_NONE when LEN > max_alloc or no block is
 * free. */
uint64_t slab_alloc(struct slab *s, size_t len);

/* Give back the block at OFF; SLAB_NONE is ignored. An offset that is not the start of an
 * allocated block (double free, made-up value) changes nothing and is
 * counted in slab_bad_frees(). */
void slab_free(struct slab *s, uint64_t off);

/* Address of OFF, or NULL when OFF is outside the slab. Checks bounds only:
 * an offset read from shared memory must also be checked against the block
 * the supervisor allocated for that job. */
void *slab_ptr(const struct slab *s, uint64_t off);

/* Usable bytes of the allocated block at OFF, 0 when OFF is not one. */
size_t slab_capacity(const struct slab *s, uint64_t off);

size_t slab_used(const struct slab *s);
size_t slab_size(const struct slab *s);
uint64_t slab_bad_frees(const struct slab *s);

/* Free every block at once (a drain, or a restart of the engine). */
void slab_reset(struct slab *s);

#endif
