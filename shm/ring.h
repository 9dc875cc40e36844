/* ring.h - a single-producer/single-consumer ring of fixed-size entries that
 * lives in shared memory, with a futex parking place for its consumer.
 *
 * The shared part holds only the two indices, a sleeper flag and the
 * entries. Each side keeps a private handle (struct ring) with the geometry
 * and its own index, so nothing the other process writes can make it index
 * outside the ring: the other side's index is checked against the capacity
 * every time it is read, and a value that cannot be right reads as "full"
 * to a producer and as an error to a consumer (doc/DESIGN.md, principle 1).
 *
 * Indices are free-running 32-bit counters; capacity is a power of two. */
#ifndef MQFORK_SHM_RING_H
#define MQFORK_SHM_RING_H

#include <linux/futex.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define RING_CACHELINE 64

/* Shared part. head and tail sit on separate cache lines so producer and
 * consumer never write the same line. */
struct ring_shm {
    _Alignas(RING_CACHELINE) _Atomic uint32_t head; /* consumer's index */
    _Atomic uint32_t sleeping;                      /* consumer is parked on the futex */
    _Alignas(RING_CACHELINE) _Atomic uint32_t tail; /* producer's index; the futex word */
    _Alignas(RING_CACHELINE) uint8_t entries[];
};

/* Tell the CPU we are spinning on a memory location. */
static inline void ring_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Private handle of one side. */
struct ring {
    struct ring_shm *shm;
    uint32_t cap;    /* entries, a power of two */
    uint32_t esize;  /* bytes per entry */
    uint32_t pos;    /* this side's index: tail for the producer, head for the consumer */
    uint32_t cached; /* last value read of the other side's index */
};

static inline size_t ring_shm_size(uint32_t cap, uint32_t esize)
{
    return sizeof(struct ring_shm) + (size_t)cap * esize;
}

/* Attach a handle to MEM (ring_shm_size bytes). The handle starts at the
 * indices the ring holds now, so a side may attach to a ring in use. */
static inline void ring_attach(struct ring *r, void *mem, uint32_t cap, uint32_t esize,
                               bool producer)
{
    r->shm = (struct ring_shm *)mem;
    r->cap = cap;
    r->esize = esize;
    r->pos = producer ? atomic_load(&r->shm->tail) : atomic_load(&r->shm->head);
    /* A consumer reads (and checks) the producer's index on its first pop. */
    r->cached = producer ? atomic_load(&r->shm->head) : r->pos;
}

/* Empty the ring. Only when neither side is running (a dead worker's pair,
 * before the replacement is forked). Handles must be re-attached after. */
static inline void ring_reset(void *mem)
{
    struct ring_shm *s = (struct ring_shm *)mem;
    atomic_store(&s->head, 0);
    atomic_store(&s->tail, 0);
    atomic_store(&s->sleeping, 0);
}

static inline uint8_t *ring_slot(const struct ring *r, uint32_t index)
{
    return r->shm->entries + (size_t)(index & (r->cap - 1)) * r->esize;
}

/* Producer: entries the consumer has not taken yet, as far as we can tell. */
static inline uint32_t ring_used(struct ring *r)
{
    uint32_t used = r->pos - atomic_load_explicit(&r->shm->head, memory_order_acquire);
    return used > r->cap ? r->cap : used;
}

/* Producer: append one entry. False when full (or the consumer's index is
 * not believable, which the producer treats the same way). */
static inline bool ring_push(struct ring *r, const void *entry)
{
    if (r->pos - r->cached >= r->cap) {
        r->cached = atomic_load_explicit(&r->shm->head, memory_order_acquire);
        if (r->pos - r->cached >= r->cap)
            return false;
    }
    memcpy(ring_slot(r, r->pos), entry, r->esize);
    r->pos++;
    atomic_store_explicit(&r->shm->tail, r->pos, memory_order_release);
    return true;
}

/* Consumer: take one entry. 1 = got one, 0 = empty, -1 = the producer's
 * index is impossible (the producer is wild; stop reading this ring). */
static inline int ring_pop(struct ring *r, void *entry)
{
    if (r->pos == r->cached) {
        r->cached = atomic_load_explicit(&r->shm->tail, memory_order_acquire);
        if (r->pos == r->cached)
            return 0;
        if (r->cached - r->pos > r->cap) {
            r->cached = r->pos;
            return -1;
        }
    }
    memcpy(entry, ring_slot(r, r->pos), r->esize);
    r->pos++;
    atomic_store_explicit(&r->shm->head, r->pos, memory_order_release);
    return 1;
}

/* Consumer: is anything waiting? */
static inline bool ring_has_data(struct ring *r)
{
    if (r->pos != r->cached)
        return true;
    return atomic_load_explicit(&r->shm->tail, memory_order_acquire) != r->pos;
}

/* Consumer: park until the producer pushes, or TIMEOUT (NULL = forever)
 * passes, or a signal arrives. The sleeper flag is raised before the last
 * look at tail, and ring_wake() looks at the flag after its push, with a full
 * fence on both sides: one of the two always sees the other. */
static inline void ring_sleep(struct ring *r, const struct timespec *timeout)
{
    atomic_store(&r->shm->sleeping, 1);
    uint32_t tail = atomic_load(&r->shm->tail);
    if (tail == r->pos)
        syscall(SYS_futex, &r->shm->tail, FUTEX_WAIT, tail, timeout, NULL, 0);
    atomic_store_explicit(&r->shm->sleeping, 0, memory_order_relaxed);
}

/* Producer: after one or more pushes, wake the consumer if it is parked.
 * Costs a fence and, only when the consumer sleeps, one syscall. The
 * producer takes the flag down itself: a consumer already woken but not yet
 * scheduled (slow on a busy machine) would otherwise be woken again, one
 * useless syscall for each push until it runs. Taking the flag down early
 * loses nothing: a consumer that has not reached FUTEX_WAIT yet finds tail
 * moved and returns at once, and it raises the flag again before it next
 * parks. */
static inline void ring_wake(struct ring *r)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&r->shm->sleeping, memory_order_relaxed) &&
        atomic_exchange(&r->shm->sleeping, 0))
        syscall(SYS_futex, &r->shm->tail, FUTEX_WAKE, 1, NULL, NULL, 0);
}

/* Producer: is the consumer parked (or about to be), so that the next push
 * costs a wake-up? Only a hint: the consumer may raise or drop the flag
 * right after. */
static inline bool ring_consumer_parked(const struct ring *r)
{
    return atomic_load_explicit(&r->shm->sleeping, memory_order_relaxed);
}

#endif
