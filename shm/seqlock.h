/* seqlock.h - a sequence lock for data with one writer and any number of
 * readers in other processes. The writer never waits; a reader copies the
 * data and retries when the sequence moved (or was odd) meanwhile, so it
 * never sees a torn update. Readers give up after a bounded number of tries
 * instead of waiting on a writer that may have died mid-update. */
#ifndef MQFORK_SHM_SEQLOCK_H
#define MQFORK_SHM_SEQLOCK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

struct seqlock {
    _Atomic uint32_t seq;
};

static inline void seqlock_write_begin(struct seqlock *l)
{
    uint32_t s = atomic_load_explicit(&l->seq, memory_order_relaxed);
    atomic_store_explicit(&l->seq, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
}

static inline void seqlock_write_end(struct seqlock *l)
{
    uint32_t s = atomic_load_explicit(&l->seq, memory_order_relaxed);
    atomic_store_explicit(&l->seq, s + 1, memory_order_release);
}

/* A writer that died between begin and end left the sequence odd, and
 * readers would find the data busy for ever (and the next writer's rounds
 * odd): make it even. Only while nobody writes it. */
static inline void seqlock_unwedge(struct seqlock *l)
{
    uint32_t s = atomic_load_explicit(&l->seq, memory_order_relaxed);
    if (s & 1)
        atomic_store_explicit(&l->seq, s + 1, memory_order_release);
}

/* Copy LEN bytes of SRC, guarded by L, into DST. False when no consistent
 * copy could be had in TRIES attempts (the writer is mid-update or gone). */
static inline bool seqlock_read(const struct seqlock *l, void *dst, const void *src, size_t len,
                                int tries)
{
    while (tries-- > 0) {
        uint32_t s1 = atomic_load_explicit(&l->seq, memory_order_acquire);
        if (s1 & 1)
            continue;
        memcpy(dst, src, len);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&l->seq, memory_order_relaxed) == s1)
            return true;
    }
    return false;
}

#endif
