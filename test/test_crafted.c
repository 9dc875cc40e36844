/* test_crafted.c - mqforkstat against segments that lie: a header whose
 * regions wrap around 2^64 (offset 0xffffffffff401000 with 65536 workers),
 * truncated files, a block directory or field table that points outside
 * the area, and random damage to a real segment. Every one is owned by this
 * (live) process, so only the reader's checks stand between it and reading
 * out of bounds. mqforkstat must refuse cleanly (exit 1 with a reason) or
 * read what is valid (exit 0), never crash; under the sanitizer build any
 * out-of-bounds read aborts it. `-l` must not call them alive. And the
 * writer's side: what stats_block_add refuses to put in a segment, and a
 * per-worker instance left mid-update by a dead worker made readable.
 *
 *   test_crafted MQFORKSTAT */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "shm/segment.h"
#include "shm/statblock.h"
#include "test/run.h"
#include "test/t.h"

#define RANDOM_ROUNDS 60

static const char *stat_bin;
static unsigned serial;

/* A real segment of this live process, with one block, to damage. */
static void make_real(struct segment *s, char *name, size_t len)
{
    snprintf(name, len, "crafted-%d-%u", (int)getpid(), serial++);
    struct seg_geometry g = {.max_workers = 2, .ring_cap = 64, .slab_size = 65536};
    pid_t stale;
    T_REQUIRE(seg_create(s, name, &g, &stale) == 0, "segment %s: %s", name, strerror(errno));
    static const struct stats_field_desc f[] = {
        {.name = "hits", .type = STATS_COUNTER, .offset = 0, .size = 8, .help = "Hits."},
    };
    struct stats_block_spec spec = {.name = "crafted", .fields = f, .nfields = 1, .size = 8};
    T_REQUIRE(stats_block_add(s, &spec), "block added");
}

/* Run every one-shot mode on NAME: each exits 1 saying WHY (or, when WHY is
 * NULL, 0 or 1), and none dies of a signal or a sanitizer. */
static void expect_refused(const char *what, const char *name, const char *why)
{
    const char *modes[] = {"-1", "-j", "-p"};
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        const char *argv[] = {stat_bin, modes[i], "-n", name, NULL};
        struct run r = run(argv);
        if (why)
            T_CHECK(r.status == 1 && strstr(r.err, why), "%s %s: exit %d, wanted 1 with '%s': %s",
                    what, modes[i], r.status, why, r.err);
        else
            T_CHECK(r.status == 0 || r.status == 1, "%s %s: exit %d: %s", what, modes[i], r.status,
                    r.err);
        run_free(&r);
    }
}

/* `-l` shows NAME, and not as alive. */
static void expect_not_alive(const char *what, const char *name)
{
    const char *argv[] = {stat_bin, "-l", NULL};
    struct run r = run(argv);
    const char *line = strstr(r.out, name);
    size_t n = line ? strcspn(line, "\n") : 0;
    T_CHECK(r.status == 0 && line, "%s: -l exit %d, lists it: %s", what, r.status, r.out);
    T_CHECK(!line || !memmem(line, n, "alive", 5), "%s: -l says alive: %.*s", what, (int)n, line);
    run_free(&r);
}

static void drop(struct segment *s)
{
    seg_close(s, true);
}

/* The finding: end checks that wrap around 2^64. */
static void test_wrapping_header(void)
{
    struct segment s;
    char name[64];
    make_real(&s, name, sizeof(name));
    s.hdr->off_workers_stats = 0xffffffffff401000ull;
    s.hdr->max_workers = 65536;
    expect_refused("wrapping offset", name, "damaged");
    expect_not_alive("wrapping offset", name);
    s.hdr->off_workers_stats = 4096;
    s.hdr->max_workers = 65536; /* does not wrap, but runs past the end */
    expect_refused("workers past the end", name, "damaged");
    s.hdr->max_workers = 2;
    s.hdr->worker_stride = 0x8000000000000000ull; /* stride x workers wraps */
    expect_refused("wrapping stride", name, "damaged");
    drop(&s);
}

/* A file shorter than its header says, and a header that agrees with it. */
static void test_truncated(void)
{
    struct segment s;
    char name[64];
    make_real(&s, name, sizeof(name));
    size_t half = s.size / 2;
    T_REQUIRE(ftruncate(s.fd, (off_t)half) == 0, "truncate");
    expect_refused("truncated", name, "damaged");
    s.hdr->size = half; /* now the header matches the file, its regions do not */
    expect_refused("truncated, size patched", name, "damaged");
    expect_not_alive("truncated", name);
    T_REQUIRE(ftruncate(s.fd, 100) == 0, "truncate to less than a header");
    expect_refused("shorter than a header", name, "not an mqfork segment");
    drop(&s);
}

static struct stats_dir *dir_of(struct segment *s)
{
    return (struct stats_dir *)s->stats;
}

/* Directory and field table damage, one at a time, each on a fresh copy. */
static void test_directory(void)
{
    static const char *const cases[] = {"nblocks",    "fields_off",  "data_off",     "instances",
                                        "stride",     "block name",  "field offset", "field name",
                                        "field size", "field divide"};
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        struct segment s;
        char name[64];
        make_real(&s, name, sizeof(name));
        struct stats_dir *d = dir_of(&s);
        struct stats_block_entry *e = &d->entry[0]; /* the block "crafted" */
        struct stats_field *f = (struct stats_field *)(s.stats + e->fields_off);
        switch (c) {
        case 0:
            atomic_store(&d->nblocks, 100000);
            break;
        case 1:
            e->fields_off = 0xfffffffffffff000ull;
            break;
        case 2:
            e->data_off = s.stats_size - 8;
            break;
        case 3:
            e->instances = 0x7fffffff;
            break;
        case 4:
            e->stride = 0x4000000000000000ull;
            e->instances = 4;
            break;
        case 5:
            memset(e->name, 'x', sizeof(e->name));
            break;
        case 6:
            f->offset = 0xfffffff8;
            break;
        case 7:
            memset(f->name, 'y', sizeof(f->name));
            break;
        case 8:
            f->size = 4096;
            break;
        default:
            f->divide = 0;
            break;
        }
        expect_refused(cases[c], name, "damaged");
        expect_not_alive(cases[c], name);
        drop(&s);
    }
}

/* Random bytes over the header's geometry or the stats area's start. */
static void test_random(void)
{
    srand(12345);
    for (int round = 0; round < RANDOM_ROUNDS; round++) {
        struct segment s;
        char name[64], what[64];
        make_real(&s, name, sizeof(name));
        uint8_t *base = s.base;
        /* past magic and version, which would only make it "not mqfork" */
        size_t from = round % 2 ? offsetof(struct seg_header, size) : 0;
        size_t to = round % 2 ? sizeof(struct seg_header) : sizeof(struct stats_dir) + 512;
        uint8_t *p = round % 2 ? base : s.stats;
        for (int i = 0; i < 1 + rand() % 8; i++)
            p[from + (size_t)rand() % (to - from)] = (uint8_t)rand();
        snprintf(what, sizeof(what), "random round %d", round);
        expect_refused(what, name, NULL);
        drop(&s);
    }
}

/* A spec of one field F in a block NAME of 16 bytes. */
static struct stats_block_spec one(const char *name, unsigned flags,
                                   const struct stats_field_desc *f)
{
    return (struct stats_block_spec){
        .name = name, .flags = flags, .fields = f, .nfields = 1, .size = 16};
}

static void test_writer_refuses(void)
{
    struct segment s;
    char name[64];
    make_real(&s, name, sizeof(name));
    const struct stats_field_desc
        ok = {.name = "x", .type = STATS_COUNTER, .size = 8},
        dotted = {.name = "x.y", .type = STATS_COUNTER, .size = 8},
        past = {.name = "x", .type = STATS_GAUGE, .offset = 12, .size = 8},
        odd = {.name = "x", .type = STATS_GAUGE, .offset = 4, .size = 8},
        state = {.name = "x", .type = STATS_STATE, .size = 4, .states = "A|B"},
        taken = {.name = "hits", .type = STATS_COUNTER, .size = 8};
    const struct {
        const char *what;
        struct stats_block_spec spec;
        int err;
    } cases[] = {
        {"reserved name", one("kind", 0, &ok), EINVAL},
        {"bad name", one("Big Name", 0, &ok), EINVAL},
        {"dotted without label", one("b1", 0, &dotted), EINVAL},
        {"field past the data", one("b2", 0, &past), EINVAL},
        {"unaligned field", one("b3", 0, &odd), EINVAL},
        {"per-worker state", one("b4", STATS_BLOCK_PER_WORKER, &state), EINVAL},
        {"global and per-worker", one("b5", STATS_BLOCK_GLOBAL | STATS_BLOCK_PER_WORKER, &ok),
         EINVAL},
        {"name taken", one("crafted", 0, &ok), EEXIST},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        errno = 0;
        T_CHECK(!stats_block_add(&s, &cases[i].spec) && errno == cases[i].err,
                "%s: added, or errno %d", cases[i].what, errno);
    }
    struct stats_block_spec g1 = one("g1", STATS_BLOCK_GLOBAL, &taken);
    struct stats_block_spec g2 = one("g2", STATS_BLOCK_GLOBAL, &taken);
    T_CHECK(stats_block_add(&s, &g1) && !stats_block_add(&s, &g2) && errno == EEXIST,
            "a global field name is taken once");
    drop(&s);
}

/* A worker that died mid-update leaves its instance's sequence odd; the
 * supervisor makes it even again before the slot's next worker forks. */
static void test_unwedge(void)
{
    struct segment s;
    char name[64];
    make_real(&s, name, sizeof(name));
    const struct stats_field_desc f = {.name = "frames", .type = STATS_COUNTER, .size = 8};
    struct stats_block_spec spec = one("plugin.wedge", STATS_BLOCK_PER_WORKER, &f);
    struct stats_block *b = stats_block_add(&s, &spec);
    T_REQUIRE(b && stats_block_instance(b, 1) && !stats_block_instance(b, 2), "2 instances");
    uint64_t *frames = stats_block_begin(stats_block_instance(b, 1));
    *frames = 3; /* and the worker dies before stats_block_end */
    expect_refused("mid-update", name, NULL);
    const char *argv[] = {stat_bin, "-1", "-n", name, NULL};
    struct run r = run(argv);
    T_CHECK(strstr(r.out, "busy plugin.wedge"), "shown busy while wedged:\n%s", r.out);
    run_free(&r);
    stats_blocks_unwedge_slot(&s, 1);
    r = run(argv);
    T_CHECK(strstr(r.out, "\nplugin.wedge.frames 3\n"), "readable again:\n%s", r.out);
    run_free(&r);
    drop(&s);
}

int main(int argc, char **argv)
{
    T_REQUIRE(argc >= 2, "usage: test_crafted MQFORKSTAT");
    stat_bin = argv[1];
    signal(SIGPIPE, SIG_IGN);
    test_wrapping_header();
    test_truncated();
    test_directory();
    test_random();
    test_writer_refuses();
    test_unwedge();
    T_DONE();
}
