/* slab.c - the payload slab's buddy allocator; see slab.h for the layout of
 * its private bitmaps and why none of them live in the slab itself. */
#include "shm/slab.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* --- a set of block numbers: bitmap with a 64-ary summary tree --- */

static size_t words_for(size_t bits)
{
    return (bits + 63) / 64;
}

/* Words a set of N blocks needs, all levels together. */
static size_t bits_words(size_t n)
{
    size_t total = 0;
    size_t words = words_for(n);
    for (;;) {
        total += words;
        if (words == 1)
            return total;
        words = words_for(words);
    }
}

/* Point B's levels at consecutive words from *CURSOR and advance it. */
static void bits_layout(struct slab_bits *b, size_t n, uint64_t **cursor)
{
    size_t words = words_for(n);
    b->nlvl = 0;
    for (;;) {
        b->lvl[b->nlvl++] = *cursor;
        *cursor += words;
        if (words == 1)
            return;
        words = words_for(words);
    }
}

static bool bits_test(const struct slab_bits *b, size_t i)
{
    return (b->lvl[0][i / 64] >> (i % 64)) & 1;
}

static bool bits_any(const struct slab_bits *b)
{
    return b->lvl[b->nlvl - 1][0] != 0;
}

/* A summary bit changes only when its word turns empty or non-empty, so both
 * updates stop climbing as soon as a word was, or stays, non-empty. */
static void bits_set(struct slab_bits *b, size_t i)
{
    for (unsigned l = 0; l < b->nlvl; l++, i /= 64) {
        uint64_t *w = &b->lvl[l][i / 64];
        bool was_empty = *w == 0;
        *w |= UINT64_C(1) << (i % 64);
        if (!was_empty)
            return;
    }
}

static void bits_clear(struct slab_bits *b, size_t i)
{
    for (unsigned l = 0; l < b->nlvl; l++, i /= 64) {
        uint64_t *w = &b->lvl[l][i / 64];
        *w &= ~(UINT64_C(1) << (i % 64));
        if (*w != 0)
            return;
    }
}

/* Lowest member; the set must not be empty. Lowest-first keeps live blocks
 * packed at the start of the slab, which leaves large blocks whole. */
static size_t bits_first(const struct slab_bits *b)
{
    size_t i = 0;
    for (unsigned l = b->nlvl; l-- > 0;)
        i = i * 64 + (size_t)__builtin_ctzll(b->lvl[l][i]);
    return i;
}

/* --- "allocated" bitmaps, one flat bitmap per order --- */

static bool alloc_test(const struct slab *s, unsigned order, size_t blk)
{
    return (s->alloc[order][blk / 64] >> (blk % 64)) & 1;
}

static void alloc_flip(struct slab *s, unsigned order, size_t blk)
{
    s->alloc[order][blk / 64] ^= UINT64_C(1) << (blk % 64);
}

/* --- orders --- */

static size_t order_bytes(unsigned order)
{
    return (size_t)1 << (order + SLAB_MIN_SHIFT);
}

/* Smallest order whose block holds LEN bytes. */
static unsigned order_for(size_t len)
{
    if (len <= order_bytes(0))
        return 0;
    unsigned shift = 64 - (unsigned)__builtin_clzll((unsigned long long)len - 1);
    return shift - SLAB_MIN_SHIFT;
}

size_t slab_block_bytes(size_t len)
{
    return len > order_bytes(SLAB_ORDERS - 1) ? 0 : order_bytes(order_for(len));
}

/* Order of the allocated block starting at OFF, or -1 when no allocated
 * block starts there. Blocks never overlap, so at most one order matches; a
 * block of order k must start on a multiple of its size, which ends the
 * search early for most offsets. */
static int alloc_order(const struct slab *s, uint64_t off)
{
    if (off >= s->size || off % order_bytes(0) != 0)
        return -1;
    size_t idx = (size_t)(off >> SLAB_MIN_SHIFT);
    for (unsigned k = 0; k <= s->top; k++) {
        if (idx & (((size_t)1 << k) - 1))
            return -1;
        if (alloc_test(s, k, idx >> k))
            return (int)k;
    }
    return -1;
}

/* --- API --- */

static void slab_layout(struct slab *s)
{
    uint64_t *cursor = s->meta;
    for (unsigned k = 0; k <= s->top; k++) {
        size_t blocks = s->nmin >> k;
        bits_layout(&s->free[k], blocks, &cursor);
        s->alloc[k] = cursor;
        cursor += words_for(blocks);
    }
}

int slab_init(struct slab *s, void *base, size_t size, size_t max_alloc)
{
    memset(s, 0, sizeof(*s));
    if (!base || max_alloc == 0 || max_alloc > order_bytes(SLAB_ORDERS - 1)) {
        errno = EINVAL;
        return -1;
    }
    s->top = order_for(max_alloc);
    size_t largest = order_bytes(s->top);
    s->size = size / largest * largest;
    s->nmin = s->size >> SLAB_MIN_SHIFT;
    if (s->size == 0 || (uint64_t)s->nmin > (UINT64_C(1) << 32)) {
        errno = EINVAL;
        return -1;
    }
    for (unsigned k = 0; k <= s->top; k++)
        s->meta_words += bits_words(s->nmin >> k) + words_for(s->nmin >> k);
    s->meta = malloc(s->meta_words * sizeof(uint64_t));
    if (!s->meta) {
        errno = ENOMEM;
        return -1;
    }
    s->base = base;
    s->max_alloc = max_alloc;
    slab_layout(s);
    slab_reset(s);
    return 0;
}

void slab_destroy(struct slab *s)
{
    free(s->meta);
    memset(s, 0, sizeof(*s));
}

void slab_reset(struct slab *s)
{
    memset(s->meta, 0, s->meta_words * sizeof(uint64_t));
    s->used = 0;
    for (size_t i = 0; i < (s->nmin >> s->top); i++)
        bits_set(&s->free[s->top], i);
}

uint64_t slab_alloc(struct slab *s, size_t len)
{
    if (len > s->max_alloc)
        return SLAB_NONE;
    unsigned want = order_for(len);
    unsigned k = want;
    while (k <= s->top && !bits_any(&s->free[k]))
        k++;
    if (k > s->top)
        return SLAB_NONE;
    size_t blk = bits_first(&s->free[k]);
    bits_clear(&s->free[k], blk);
    /* Split down to the wanted order; each split frees the upper half. */
    while (k > want) {
        k--;
        blk *= 2;
        bits_set(&s->free[k], blk + 1);
    }
    alloc_flip(s, want, blk);
    s->used += order_bytes(want);
    return (uint64_t)blk << (want + SLAB_MIN_SHIFT);
}

void slab_free(struct slab *s, uint64_t off)
{
    if (off == SLAB_NONE)
        return;
    int found = alloc_order(s, off);
    if (found < 0) {
        s->bad_frees++;
        return;
    }
    unsigned k = (unsigned)found;
    size_t blk = (size_t)(off >> (k + SLAB_MIN_SHIFT));
    alloc_flip(s, k, blk);
    s->used -= order_bytes(k);
    /* Merge with the buddy for as long as the buddy is free and whole. */
    while (k < s->top && bits_test(&s->free[k], blk ^ 1)) {
        bits_clear(&s->free[k], blk ^ 1);
        blk /= 2;
        k++;
    }
    bits_set(&s->free[k], blk);
}

void *slab_ptr(const struct slab *s, uint64_t off)
{
    return off < s->size ? s->base + off : NULL;
}

size_t slab_capacity(const struct slab *s, uint64_t off)
{
    int k = alloc_order(s, off);
    return k < 0 ? 0 : order_bytes((unsigned)k);
}

size_t slab_used(const struct slab *s)
{
    return s->used;
}

size_t slab_size(const struct slab *s)
{
    return s->size;
}

uint64_t slab_bad_frees(const struct slab *s)
{
    return s->bad_frees;
}
