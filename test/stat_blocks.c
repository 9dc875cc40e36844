/* stat_blocks.c - see stat_blocks.h. The figures are chosen so that each
 * kind of field shows: a counter, a gauge, labeled counters, a divided
 * gauge, a histogram, and a per-worker block declared before the workers
 * fork, written by other processes and summed over its slots. */
#include "test/stat_blocks.h"

#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shm/statblock.h"
#include "test/fixture.h"

struct test_figures {
    uint64_t hits;
    uint32_t level;
    uint32_t pad;
    uint64_t errors_timeout, errors_refused;
    uint64_t ratio_milli;
    struct stats_hist latency;
};

#define T(kind, member, name, help) STATS_FIELD(kind, struct test_figures, member, name, help)

static const struct stats_field_desc test_fields[] = {
    T(STATS_COUNTER, hits, "hits", "Things this test counted."),
    T(STATS_GAUGE, level, "level", "A level this test set."),
    STATS_DESC(STATS_COUNTER, struct test_figures, errors_timeout, "errors.timeout", "reason", 1,
               "Errors this test counted, by reason."),
    STATS_DESC(STATS_COUNTER, struct test_figures, errors_refused, "errors.refused", "reason", 1,
               "Errors this test counted, by reason."),
    STATS_DESC(STATS_GAUGE, struct test_figures, ratio_milli, "ratio", NULL, 1000,
               "A ratio this test set, in thousandths."),
    T(STATS_HISTOGRAM, latency, "latency", "Latency this test measured."),
};

/* What a plugin's handler would count in each worker. */
struct slot_figures {
    uint64_t frames;
    struct stats_hist decode;
};

static const struct stats_field_desc slot_fields[] = {
    STATS_FIELD(STATS_COUNTER, struct slot_figures, frames, "frames", "Frames decoded."),
    STATS_FIELD(STATS_HISTOGRAM, struct slot_figures, decode, "decode", "Time per frame."),
};

const char *const stat_blocks_text[] = {
    "stattest.hits 42",
    "stattest.level 7",
    "stattest.errors.timeout 3",
    "stattest.errors.refused 1",
    "stattest.ratio 1.500",
    "stattest.latency_count 3",
    "stattest.latency_max_us 9.0",
    "plugin.stattest.frames 12",
    "plugin.stattest.decode_count 2",
    "plugin.stattest.decode_max_us 50.0",
    NULL,
};

const char *const stat_blocks_prom[] = {
    "# TYPE mqfork_stattest_hits_total counter",
    "mqfork_stattest_hits_total{mqfork_instance=\"%s\"} 42",
    "mqfork_stattest_level{mqfork_instance=\"%s\"} 7",
    "mqfork_stattest_errors_total{mqfork_instance=\"%s\",reason=\"timeout\"} 3",
    "mqfork_stattest_errors_total{mqfork_instance=\"%s\",reason=\"refused\"} 1",
    "mqfork_stattest_ratio{mqfork_instance=\"%s\"} 1.500",
    "# TYPE mqfork_stattest_latency_seconds histogram",
    "mqfork_stattest_latency_seconds_count{mqfork_instance=\"%s\"} 3",
    "mqfork_plugin_stattest_frames_total{mqfork_instance=\"%s\"} 12",
    "mqfork_plugin_stattest_decode_seconds_count{mqfork_instance=\"%s\"} 2",
    NULL,
};

bool stat_blocks_own(const char *name)
{
    return strncmp(name, "stattest.", 9) == 0 || strncmp(name, "plugin.stattest.", 16) == 0;
}

static bool add_plain(struct fixture *f)
{
    struct stats_block_spec spec = {
        .name = "stattest",
        .fields = test_fields,
        .nfields = sizeof(test_fields) / sizeof(test_fields[0]),
        .size = sizeof(struct test_figures),
    };
    struct stats_block *b = engine_add_block(f->e, &spec);
    if (!b)
        return false;
    struct test_figures *t = stats_block_begin(b);
    t->hits = 42;
    t->level = 7;
    t->errors_timeout = 3;
    t->errors_refused = 1;
    t->ratio_milli = 1500;
    stats_hist_add(&t->latency, 2000);
    stats_hist_add(&t->latency, 4000);
    stats_hist_add(&t->latency, 9000);
    stats_block_end(b);
    return true;
}

static const struct stats_block_spec slot_spec = {
    .name = "plugin.stattest",
    .flags = STATS_BLOCK_PER_WORKER,
    .fields = slot_fields,
    .nfields = sizeof(slot_fields) / sizeof(slot_fields[0]),
    .size = sizeof(struct slot_figures),
};

void stat_blocks_declare(struct fixture *f)
{
    fixture_declare_block(f, &slot_spec);
}

/* Each slot's instance has its own writer: two processes forked from the
 * supervisor, as workers are, stand in for the workers of slots 0 and 1
 * and write only their own, found by name. */
static bool write_slots(struct fixture *f)
{
    for (unsigned slot = 0; slot < 2; slot++) {
        pid_t pid = fork();
        if (pid == 0) {
            struct stats_block *b = stats_block_find(engine_segment(f->e), slot_spec.name);
            struct stats_block *mine = b ? stats_block_instance(b, slot) : NULL;
            if (!mine)
                _exit(1);
            struct slot_figures *s = stats_block_begin(mine);
            s->frames = 5 + 2 * slot;
            stats_hist_add(&s->decode, slot ? 50000 : 10000);
            stats_block_end(mine);
            _exit(0);
        }
        int st;
        if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            return false;
    }
    return true;
}

bool stat_blocks_add(struct fixture *f)
{
    return add_plain(f) && write_slots(f);
}
