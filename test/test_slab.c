/* test_slab.c - unit tests of the payload slab allocator: sizes and
 * alignment, exhaustion, coalescing, bad frees, and a random stress against
 * a shadow model of who owns every byte. */
#include "shm/slab.h"
#include "test/t.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define KIB ((size_t)1024)
#define MIB (1024 * KIB)

static void *region(size_t size)
{
    void *p = aligned_alloc(4096, (size + 4095) / 4096 * 4096);
    T_REQUIRE(p != NULL, "aligned_alloc(%zu)", size);
    return p;
}

static void init_ok(struct slab *s, void *base, size_t size, size_t max_alloc)
{
    int rc = slab_init(s, base, size, max_alloc);
    T_REQUIRE(rc == 0, "slab_init(%zu, %zu): %s", size, max_alloc, strerror(errno));
}

/* Allocate blocks of LEN until the slab refuses; return how many. OFFS, when
 * given, receives the offsets. */
static size_t fill(struct slab *s, size_t len, uint64_t *offs)
{
    size_t n = 0;
    for (uint64_t off; (off = slab_alloc(s, len)) != SLAB_NONE; n++) {
        if (offs)
            offs[n] = off;
    }
    return n;
}

static void test_init_errors(void)
{
    struct slab s;
    char *mem = region(64 * KIB);

    errno = 0;
    T_CHECK(slab_init(&s, NULL, 64 * KIB, 1024) == -1 && errno == EINVAL, "NULL base");
    errno = 0;
    T_CHECK(slab_init(&s, mem, 64 * KIB, 0) == -1 && errno == EINVAL, "max_alloc 0");
    errno = 0;
    T_CHECK(slab_init(&s, mem, 64 * KIB, 128 * KIB) == -1 && errno == EINVAL,
            "slab smaller than its largest block");
    errno = 0;
    T_CHECK(slab_init(&s, mem, 64 * KIB, ((size_t)1 << 30) + 1) == -1 && errno == EINVAL,
            "max_alloc above 1 GiB");
    slab_destroy(&s); /* safe after a failed init */

    init_ok(&s, mem, 64 * KIB, 64 * KIB);
    T_CHECK(slab_size(&s) == 64 * KIB, "size %zu", slab_size(&s));
    T_CHECK(slab_used(&s) == 0, "used %zu", slab_used(&s));
    slab_destroy(&s);
    free(mem);
}

/* slab_block_bytes says what slab_init needs: a region one block short of
 * it is refused, one of exactly it is taken. */
static void test_block_bytes(void)
{
    T_CHECK(slab_block_bytes(0) == 256 && slab_block_bytes(1) == 256, "smallest block");
    T_CHECK(slab_block_bytes(256) == 256 && slab_block_bytes(257) == 512, "powers of two");
    T_CHECK(slab_block_bytes(40 * KIB) == 64 * KIB, "40 KiB takes 64 KiB");
    T_CHECK(slab_block_bytes((size_t)1 << 30) == (size_t)1 << 30, "1 GiB, the largest");
    T_CHECK(slab_block_bytes(((size_t)1 << 30) + 1) == 0, "past the largest");
    struct slab s;
    char *mem = region(64 * KIB);
    errno = 0;
    T_CHECK(slab_init(&s, mem, slab_block_bytes(40 * KIB) - 1, 40 * KIB) == -1 && errno == EINVAL,
            "a region short of the block is refused");
    init_ok(&s, mem, slab_block_bytes(40 * KIB), 40 * KIB);
    slab_destroy(&s);
    free(mem);
}

static void test_round_trip(void)
{
    struct slab s;
    char *mem = region(MIB);
    init_ok(&s, mem, MIB, 64 * KIB);

    static const size_t lens[] = {1, 255, 256, 257, 1000, 4096, 4097, 65535, 65536};
    uint64_t offs[sizeof(lens) / sizeof(lens[0])];
    size_t used = 0;
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        offs[i] = slab_alloc(&s, lens[i]);
        T_REQUIRE(offs[i] != SLAB_NONE, "alloc %zu", lens[i]);
        size_t cap = slab_capacity(&s, offs[i]);
        size_t want = lens[i] <= 256 ? 256 : lens[i];
        T_CHECK(cap >= want && cap < 2 * want && (cap & (cap - 1)) == 0, "len %zu got capacity %zu",
                lens[i], cap);
        T_CHECK(slab_ptr(&s, offs[i]) == mem + offs[i], "ptr of %llu", (unsigned long long)offs[i]);
        used += cap;
        T_CHECK(slab_used(&s) == used, "used %zu, expected %zu", slab_used(&s), used);
    }
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        used -= slab_capacity(&s, offs[i]);
        slab_free(&s, offs[i]);
        T_CHECK(slab_used(&s) == used, "used %zu after free, expected %zu", slab_used(&s), used);
        T_CHECK(slab_capacity(&s, offs[i]) == 0, "freed block still has a capacity");
    }
    T_CHECK(slab_bad_frees(&s) == 0, "bad frees %llu", (unsigned long long)slab_bad_frees(&s));
    T_CHECK(slab_ptr(&s, MIB) == NULL, "ptr past the end");
    T_CHECK(slab_ptr(&s, SLAB_NONE) == NULL, "ptr of SLAB_NONE");
    slab_destroy(&s);
    free(mem);
}

static void test_limits(void)
{
    struct slab s;
    char *mem = region(256 * KIB);
    init_ok(&s, mem, 256 * KIB, 40000); /* largest block 64 KiB */

    uint64_t off = slab_alloc(&s, 0);
    T_CHECK(off != SLAB_NONE && slab_capacity(&s, off) == 256, "len 0 gets a smallest block");
    slab_free(&s, off);
    T_CHECK(slab_alloc(&s, 40001) == SLAB_NONE, "len above max_alloc");
    T_CHECK(slab_alloc(&s, SIZE_MAX) == SLAB_NONE, "len SIZE_MAX");
    off = slab_alloc(&s, 40000);
    T_CHECK(off != SLAB_NONE && slab_capacity(&s, off) == 64 * KIB, "len max_alloc");
    slab_free(&s, off);
    T_CHECK(slab_used(&s) == 0, "used %zu", slab_used(&s));
    slab_destroy(&s);
    free(mem);
}

static void test_exhaustion(void)
{
    struct slab s;
    char *mem = region(MIB);
    init_ok(&s, mem, MIB, 16 * KIB);

    uint64_t offs[64];
    T_CHECK(fill(&s, 16 * KIB, offs) == 64, "64 largest blocks in 1 MiB");
    T_CHECK(slab_used(&s) == MIB, "used %zu when full", slab_used(&s));
    T_CHECK(slab_alloc(&s, 1) == SLAB_NONE, "full slab refuses even a small block");
    slab_free(&s, offs[17]);
    uint64_t again = slab_alloc(&s, 16 * KIB);
    T_CHECK(again == offs[17], "the freed block is handed out again");
    slab_free(&s, again);
    T_CHECK(fill(&s, 256, NULL) == 64, "a freed largest block splits into 64 small ones");
    T_CHECK(slab_alloc(&s, 256) == SLAB_NONE, "full again");
    slab_destroy(&s);
    free(mem);
}

/* Small xorshift generator so every run sees the same sequence. */
static uint64_t rnd(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

static void test_coalescing(void)
{
    struct slab s;
    size_t size = 2 * MIB;
    char *mem = region(size);
    init_ok(&s, mem, size, 256 * KIB);

    size_t n = size / 256;
    uint64_t *offs = calloc(n, sizeof(*offs));
    T_REQUIRE(offs != NULL, "calloc");
    T_CHECK(fill(&s, 100, offs) == n, "fills with %zu smallest blocks", n);

    /* Free in a shuffled order so merges happen in every pattern. */
    uint64_t seed = 0x1234567;
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = rnd(&seed) % (i + 1);
        uint64_t t = offs[i];
        offs[i] = offs[j];
        offs[j] = t;
    }
    for (size_t i = 0; i < n; i++)
        slab_free(&s, offs[i]);
    T_CHECK(slab_used(&s) == 0, "used %zu", slab_used(&s));
    T_CHECK(fill(&s, 256 * KIB, NULL) == 8, "every largest block whole again");
    free(offs);
    slab_destroy(&s);
    free(mem);
}

static void test_alignment(void)
{
    struct slab s;
    char *mem = region(4 * MIB);
    init_ok(&s, mem, 4 * MIB, MIB);

    uint64_t seed = 99;
    for (int i = 0; i < 2000; i++) {
        size_t len = rnd(&seed) % (1u << (rnd(&seed) % 21));
        uint64_t off = slab_alloc(&s, len);
        if (off == SLAB_NONE)
            continue;
        size_t cap = slab_capacity(&s, off);
        T_CHECK(cap >= 256 && off % cap == 0, "offset %llu for a block of %zu",
                (unsigned long long)off, cap);
    }
    slab_destroy(&s);
    free(mem);
}

static void test_odd_sizes(void)
{
    struct slab s;
    size_t size = 3 * 64 * KIB + 1000;
    char *mem = region(size);

    init_ok(&s, mem, size, 64 * KIB);
    T_CHECK(slab_size(&s) == 3 * 64 * KIB, "rounded down to %zu", slab_size(&s));
    uint64_t offs[4];
    T_CHECK(fill(&s, 64 * KIB, offs) == 3, "three largest blocks");
    for (int i = 0; i < 3; i++)
        slab_free(&s, offs[i]);
    T_CHECK(fill(&s, 256, NULL) == 3 * 256, "%d smallest blocks", 3 * 256);
    slab_destroy(&s);

    /* max_alloc not a power of two: largest block 32 KiB, 6 of them. */
    init_ok(&s, mem, size, 20000);
    T_CHECK(slab_size(&s) == 6 * 32 * KIB, "size %zu", slab_size(&s));
    T_CHECK(fill(&s, 20000, NULL) == 6, "six blocks of 32 KiB");
    slab_reset(&s);
    T_CHECK(slab_used(&s) == 0, "reset empties");
    T_CHECK(fill(&s, 257, NULL) == 6 * 64, "512-byte blocks after reset");
    slab_destroy(&s);
    free(mem);
}

static void test_bad_frees(void)
{
    struct slab s;
    char *mem = region(MIB);
    init_ok(&s, mem, MIB, 64 * KIB);

    uint64_t a = slab_alloc(&s, 1000); /* 1 KiB at 0 */
    uint64_t b = slab_alloc(&s, 1000);
    size_t used = slab_used(&s);
    slab_free(&s, a);
    slab_free(&s, a); /* double free */
    T_CHECK(slab_bad_frees(&s) == 1, "double free counted");
    T_CHECK(slab_used(&s) == used - 1024, "double free changes nothing");

    static const uint64_t junk[] = {1, 255, 256, 512, MIB, MIB + 256, SLAB_NONE, 1u << 19};
    for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++)
        slab_free(&s, b + junk[i]); /* inside b, unaligned, past the end, free space */
    T_CHECK(slab_bad_frees(&s) == 1 + sizeof(junk) / sizeof(junk[0]), "bad frees %llu",
            (unsigned long long)slab_bad_frees(&s));
    T_CHECK(slab_capacity(&s, b) == 1024, "b untouched");
    slab_free(&s, b);
    T_CHECK(slab_used(&s) == 0, "used %zu", slab_used(&s));
    T_CHECK(fill(&s, 64 * KIB, NULL) == 16, "all whole after the bad frees");
    slab_destroy(&s);
    free(mem);
}

/* --- random stress against a shadow model --- */

struct live {
    uint64_t off;
    size_t cap;
    uint32_t id;
};

struct model {
    struct slab s;
    uint8_t *mem;
    uint32_t *owner; /* per 256-byte unit: id of the live block covering it, 0 if none */
    struct live *live;
    size_t nlive;
    size_t used;
    uint32_t next_id;
};

static uint8_t pattern(uint32_t id, size_t i)
{
    return (uint8_t)(id * 131u + i * 7u + (i >> 8));
}

/* Is some aligned run of CAP bytes wholly unowned? A buddy allocator that
 * merges eagerly must then be able to hand it out. */
static bool model_has_room(const struct model *m, size_t cap)
{
    size_t units = cap / 256;
    for (size_t u = 0; u < m->s.nmin; u += units) {
        size_t k = 0;
        while (k < units && m->owner[u + k] == 0)
            k++;
        if (k == units)
            return true;
    }
    return false;
}

static void model_alloc(struct model *m, size_t len)
{
    uint64_t off = slab_alloc(&m->s, len);
    if (len > m->s.max_alloc) {
        T_CHECK(off == SLAB_NONE, "len %zu above max_alloc accepted", len);
        return;
    }
    size_t want = 256;
    while (want < len)
        want *= 2;
    if (off == SLAB_NONE) {
        T_CHECK(!model_has_room(m, want), "refused %zu with room left", len);
        return;
    }
    size_t cap = slab_capacity(&m->s, off);
    T_REQUIRE(cap == want && off % cap == 0 && off + cap <= slab_size(&m->s),
              "len %zu: offset %llu capacity %zu", len, (unsigned long long)off, cap);
    uint32_t id = ++m->next_id;
    for (size_t u = off / 256; u < (off + cap) / 256; u++) {
        T_REQUIRE(m->owner[u] == 0, "block at %llu overlaps live block %u", (unsigned long long)off,
                  m->owner[u]);
        m->owner[u] = id;
    }
    uint8_t *p = slab_ptr(&m->s, off);
    for (size_t i = 0; i < cap; i++)
        p[i] = pattern(id, i);
    m->live[m->nlive++] = (struct live){off, cap, id};
    m->used += cap;
}

static void model_free(struct model *m, size_t which)
{
    struct live l = m->live[which];
    const uint8_t *p = slab_ptr(&m->s, l.off);
    size_t bad = 0;
    for (size_t i = 0; i < l.cap; i++)
        bad += p[i] != pattern(l.id, i);
    T_CHECK(bad == 0, "block %u at %llu: %zu bytes overwritten", l.id, (unsigned long long)l.off,
            bad);
    for (size_t u = l.off / 256; u < (l.off + l.cap) / 256; u++)
        m->owner[u] = 0;
    slab_free(&m->s, l.off);
    m->live[which] = m->live[--m->nlive];
    m->used -= l.cap;
}

/* Free an offset that starts no live block; nothing may change. */
static void model_bad_free(struct model *m, uint64_t *seed)
{
    uint64_t off = rnd(seed) % slab_size(&m->s) & ~(uint64_t)255;
    for (size_t i = 0; i < m->nlive; i++) {
        if (m->live[i].off == off)
            return;
    }
    uint64_t before = slab_bad_frees(&m->s);
    slab_free(&m->s, off);
    T_CHECK(slab_bad_frees(&m->s) == before + 1, "bad free of %llu not caught",
            (unsigned long long)off);
}

static size_t random_len(uint64_t *seed, size_t max_alloc)
{
    unsigned r = (unsigned)(rnd(seed) % 100);
    if (r == 0)
        return max_alloc + 1 + rnd(seed) % 1000;
    if (r < 60)
        return rnd(seed) % 600;
    return rnd(seed) % (max_alloc + 1);
}

static void test_stress(void)
{
    struct model m = {0};
    size_t size = 13 * 64 * KIB + 4321; /* not a power of two, not a multiple */
    m.mem = region(size);
    init_ok(&m.s, m.mem, size, 50000);
    m.owner = calloc(m.s.nmin, sizeof(*m.owner));
    m.live = calloc(m.s.nmin, sizeof(*m.live));
    T_REQUIRE(m.owner && m.live, "calloc");

    uint64_t seed = 0xdeadbeefcafe;
    for (int step = 0; step < 300000; step++) {
        unsigned r = (unsigned)(rnd(&seed) % 1000);
        /* Drift between filling and draining so both full and empty happen. */
        bool filling = (step / 20000) % 2 == 0;
        if (r < 5)
            model_bad_free(&m, &seed);
        else if (m.nlive > 0 && r < (filling ? 400u : 650u))
            model_free(&m, rnd(&seed) % m.nlive);
        else
            model_alloc(&m, random_len(&seed, m.s.max_alloc));
        if (slab_used(&m.s) != m.used) {
            T_CHECK(0, "step %d: used %zu, model %zu", step, slab_used(&m.s), m.used);
            break;
        }
    }
    while (m.nlive > 0)
        model_free(&m, m.nlive - 1);
    T_CHECK(slab_used(&m.s) == 0, "used %zu at the end", slab_used(&m.s));
    T_CHECK(fill(&m.s, 50000, NULL) == 13, "all 13 largest blocks whole at the end");
    free(m.live);
    free(m.owner);
    slab_destroy(&m.s);
    free(m.mem);
}

/* The default configuration: metadata stays small and every block is usable. */
static void test_big(void)
{
    struct slab s;
    size_t size = 64 * MIB;
    char *mem = region(size);

    init_ok(&s, mem, size, 16 * MIB);
    size_t meta = s.meta_words * sizeof(uint64_t);
    T_CHECK(meta < 300 * KIB, "metadata %zu bytes for 64 MiB", meta);
    T_CHECK(fill(&s, 1, NULL) == size / 256, "%zu smallest blocks", size / 256);
    slab_reset(&s);
    T_CHECK(fill(&s, 16 * MIB, NULL) == 4, "four 16 MiB blocks after reset");
    slab_destroy(&s);
    free(mem);
}

int main(void)
{
    test_init_errors();
    test_block_bytes();
    test_round_trip();
    test_limits();
    test_exhaustion();
    test_coalescing();
    test_alignment();
    test_odd_sizes();
    test_bad_frees();
    test_stress();
    test_big();
    T_DONE();
}
