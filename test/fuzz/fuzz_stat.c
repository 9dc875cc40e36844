/* fuzz_stat.c - libFuzzer harness for mqforkstat's segment reader: a real
 * segment (made once with seg_create, with a global, a plain and a
 * per-worker block, a kind, a worker and events) is patched by the input
 * anywhere (header, block directory and field tables, events, kind and
 * worker tables) and maybe truncated, then read as `mqforkstat -1/-j/-p`
 * reads it: stat_attach, snap_take, and every one-shot output. The reader
 * must refuse the segment or read it without touching anything outside the
 * checked regions (ASan), and its outputs must stay well formed: `-1`
 * lines without control characters, as many whatever the header's strings
 * say; `-j` JSON in UTF-8; `-p` a valid Prometheus exposition.
 *
 * Input: FLAGS [SIZE(3 bytes) when FLAGS bit 0: the file is cut to it],
 * then patches: REGION OFFSET(3 bytes) LENGTH BYTES. REGION (mod 6): the
 * header, the blocks' area in use, events, kinds, worker stats, the file.
 * FLAGS bit 1: a segment whose daemon is gone is refused (as -1 does). */
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <stddef.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "prom_check.h"
#include "shm/segment.h"
#include "shm/statblock.h"
#include "tools/mqforkstat.h"

static struct segment tmpl; /* ours, writable: what every input patches */
static uint8_t *pristine;   /* its bytes as made */
static char instance[32];
static FILE *devnull;

/* ---- the segment every input starts from ------------------------------------ */

struct global_data {
    uint64_t accepted, refused_overloaded, health, started_ns;
    uint32_t live, busy_us;
    struct stats_hist latency;
};

struct worker_data {
    uint64_t bytes;
    struct stats_hist run;
};

#define G(kind, member, name, help) STATS_FIELD(kind, struct global_data, member, name, help)

static const struct stats_field_desc global_fields[] = {
    G(STATS_COUNTER, accepted, "jobs_accepted", "Jobs accepted."),
    STATS_DESC(STATS_COUNTER, struct global_data, refused_overloaded, "jobs_refused.overloaded",
               "reason", 1, "Jobs refused, by reason."),
    {.name = "health",
     .type = STATS_STATE,
     .offset = offsetof(struct global_data, health),
     .size = 8,
     .states = "HEALTHY|FALLING_BEHIND",
     .help = "Verdict."},
    G(STATS_TIMESTAMP, started_ns, "started", "When it started."),
    G(STATS_GAUGE, live, "workers_live", "Workers alive."),
    STATS_DESC(STATS_GAUGE, struct global_data, busy_us, "busy_s", NULL, 1000000, "Busy time."),
    G(STATS_HISTOGRAM, latency, "latency", "Latency \\ of \"jobs\"\nin ns."),
};

static const struct stats_field_desc worker_fields[] = {
    STATS_FIELD(STATS_COUNTER, struct worker_data, bytes, "bytes", "Bytes."),
    STATS_FIELD(STATS_HISTOGRAM, struct worker_data, run, "run", "Run time."),
};

static void add_blocks(void)
{
    struct stats_block_spec g = {.name = "engine",
                                 .flags = STATS_BLOCK_GLOBAL,
                                 .fields = global_fields,
                                 .nfields = 7,
                                 .size = sizeof(struct global_data)};
    struct stats_block_spec w = {.name = "plugin.fuzz-echo",
                                 .flags = STATS_BLOCK_PER_WORKER,
                                 .fields = worker_fields,
                                 .nfields = 2,
                                 .size = sizeof(struct worker_data)};
    struct stats_block_spec v = {
        .name = "voice", .fields = worker_fields, .nfields = 1, .size = sizeof(struct worker_data)};
    struct global_data gd = {.accepted = 42,
                             .refused_overloaded = 3,
                             .health = 1,
                             .live = 2,
                             .busy_us = 1500000,
                             .started_ns = 1};
    struct worker_data wd = {.bytes = 7};
    stats_hist_add(&gd.latency, 123456);
    stats_hist_add(&wd.run, 9999999);
    struct stats_block *b = stats_block_add(&tmpl, &g), *pw = stats_block_add(&tmpl, &w);
    struct stats_block *pv = stats_block_add(&tmpl, &v);
    FUZZ_CHECK(b && pw && pv);
    stats_block_publish(b, &gd, sizeof(gd));
    stats_block_publish(pw, &wd, sizeof(wd));
    stats_block_publish(stats_block_instance(pw, 1), &wd, sizeof(wd));
    stats_block_publish(pv, &wd, sizeof(wd));
}

static void add_tables(void)
{
    struct stats_kind *k = &tmpl.kinds[0];
    k->used = 1;
    snprintf(k->name, sizeof(k->name), "echo");
    snprintf(k->handler, sizeof(k->handler), "test.echo");
    k->received = 10;
    k->errors[JOB_E_OVERLOADED] = 1;
    stats_hist_add(&k->run, 5000);
    struct stats_worker *w = &tmpl.workers_stats[0];
    w->state = WORKER_BUSY;
    w->pid = getpid();
    w->cur_start_ns = 1;
    struct stats_events *ev = tmpl.events;
    ev->crashes = 1;
    ev->crash[0] = (struct stats_crash){.time_ns = 1, .signal = 11, .kind = "echo"};
    ev->scales = 1;
    ev->scale[0] = (struct stats_scale){.from = 2, .to = 3, .reason = "load 0.9 > 0.7"};
}

/* Where each region starts in the segment, and its length: taken once,
 * before anything patches the segment. */
static size_t region_start[6], region_len[6];

static void find_regions(void)
{
    const uint8_t *b = tmpl.base;
    const struct stats_dir *dir = (const struct stats_dir *)tmpl.stats;
    const size_t start[6] = {0,
                             (size_t)(tmpl.stats - b),
                             (size_t)((const uint8_t *)tmpl.events - b),
                             (size_t)((const uint8_t *)tmpl.kinds - b),
                             (size_t)((const uint8_t *)tmpl.workers_stats - b),
                             0};
    const size_t length[6] = {sizeof(struct seg_header),
                              (size_t)dir->used,
                              sizeof(struct stats_events),
                              SEG_MAX_KINDS * sizeof(struct stats_kind),
                              tmpl.max_workers * sizeof(struct stats_worker),
                              tmpl.size};
    memcpy(region_start, start, sizeof(start));
    memcpy(region_len, length, sizeof(length));
}

static void remove_segment(void)
{
    seg_close(&tmpl, true);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct seg_geometry g = {.max_workers = 2, .ring_cap = 64, .slab_size = 65536};
    pid_t stale;
    snprintf(instance, sizeof(instance), "fuzzstat-%d", (int)getpid());
    FUZZ_CHECK(seg_create(&tmpl, instance, &g, &stale) == 0);
    atexit(remove_segment);
    add_blocks();
    add_tables();
    find_regions();
    pristine = fuzz_xmalloc(tmpl.size);
    memcpy(pristine, tmpl.base, tmpl.size);
    devnull = fopen("/dev/null", "w");
    FUZZ_CHECK(devnull != NULL);
    return 0;
}

/* ---- patching, and undoing it ------------------------------------------------- */

#define MAX_PATCHES 64

static struct {
    size_t off[MAX_PATCHES], len[MAX_PATCHES], count;
    size_t size; /* the file's, when cut */
} undo;

static uint32_t fuzz_u24(struct fuzz_in *in)
{
    uint32_t hi = fuzz_byte(in);
    return hi << 16 | fuzz_u16(in);
}

static void patch(struct fuzz_in *in)
{
    while (in->n > 0 && undo.count < MAX_PATCHES) {
        unsigned r = fuzz_byte(in) % 6;
        size_t at = region_start[r] + fuzz_u24(in) % region_len[r];
        size_t n = fuzz_byte(in);
        n = n < in->n ? n : in->n;
        n = n < tmpl.size - at ? n : tmpl.size - at;
        memcpy((uint8_t *)tmpl.base + at, in->p, n);
        in->p += n;
        in->n -= n;
        undo.off[undo.count] = at;
        undo.len[undo.count++] = n;
    }
}

static void restore(void)
{
    if (undo.size != tmpl.size) {
        FUZZ_CHECK(ftruncate(tmpl.fd, (off_t)tmpl.size) == 0);
        memcpy(tmpl.base, pristine, tmpl.size);
    }
    for (size_t i = 0; i < undo.count; i++)
        memcpy((uint8_t *)tmpl.base + undo.off[i], pristine + undo.off[i], undo.len[i]);
    undo.count = 0;
}

/* ---- the outputs ---------------------------------------------------------------- */

typedef int (*output_fn)(FILE *out, const struct snap *s);

/* OUT of S into a malloc'd text in *TEXT, its length returned. */
static size_t render(output_fn out, const struct snap *s, char **text)
{
    size_t len = 0;
    FILE *f = open_memstream(text, &len);
    FUZZ_CHECK(f != NULL);
    FUZZ_CHECK(out(f, s) == 0);
    fclose(f);
    return len;
}

/* Whether the line at P names a scale event's reason, whose value is the
 * rest of the line (tools/mqforkstat.md): "scale.<i>.reason ". */
static bool reason_line(const char *p)
{
    size_t digits = strncmp(p, "scale.", 6) ? 0 : strspn(p + 6, "0123456789");
    return digits && !strncmp(p + 6 + digits, ".reason ", 8);
}

/* `name value` lines, no control characters, one space but in a reason;
 * their number. */
static size_t check_lines(const char *text, size_t len)
{
    size_t lines = 0;
    for (size_t i = 0; i < len; i++) {
        FUZZ_CHECK((unsigned char)text[i] >= 0x20 || text[i] == '\n');
        FUZZ_CHECK(text[i] != 0x7f);
        lines += text[i] == '\n';
    }
    FUZZ_CHECK(len == 0 || text[len - 1] == '\n');
    for (const char *p = text; p < text + len; p = strchr(p, '\n') + 1) {
        size_t name = strcspn(p, " \n"), value = strcspn(p + name + 1, " \n");
        bool ok = name > 0 && p[name] == ' ' &&
                  (reason_line(p) || (value > 0 && p[name + 1 + value] == '\n'));
        if (!ok)
            fprintf(stderr, "-1 output: not a name-value line: %.*s\n", (int)strcspn(p, "\n"), p);
        FUZZ_CHECK(ok);
    }
    return lines;
}

static void check_text(const struct snap *s)
{
    char *text;
    size_t len = render(out_text, s, &text), lines = check_lines(text, len);
    free(text);
    /* the header's strings must not add or remove lines */
    struct snap plain = *s;
    snprintf(plain.hdr.instance, sizeof(plain.hdr.instance), "x");
    snprintf(plain.hdr.version, sizeof(plain.hdr.version), "x");
    len = render(out_text, &plain, &text);
    FUZZ_CHECK(check_lines(text, len) == lines);
    free(text);
}

static void check_json(const struct snap *s)
{
    char *text;
    size_t len = render(out_json, s, &text);
    cJSON *o = cJSON_ParseWithLength(text, len);
    FUZZ_CHECK(cJSON_IsObject(o));
    FUZZ_CHECK(fuzz_utf8((const uint8_t *)text, len));
    cJSON_Delete(o);
    free(text);
}

static void check_prom(const struct snap *s)
{
    char *text, where[256];
    size_t len = render(out_prom, s, &text);
    const char *why = prom_check(text, len, where, sizeof(where));
    if (why)
        fprintf(stderr, "-p output: %s: %s\n", why, where);
    FUZZ_CHECK(why == NULL);
    free(text);
}

static void read_segment(bool stale_is_error)
{
    struct segment seg;
    struct snap s;
    if (stat_attach(&seg, instance, stale_is_error, devnull) < 0)
        return;
    if (snap_take(&s, &seg) == 0) {
        check_text(&s);
        check_json(&s);
        check_prom(&s);
        snap_free(&s);
    }
    seg_close(&seg, false);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = {data, size};
    uint8_t flags = fuzz_byte(&in);
    undo.size = flags & 1 ? fuzz_u24(&in) % (tmpl.size + 1) : tmpl.size;
    patch(&in);
    if (undo.size != tmpl.size)
        FUZZ_CHECK(ftruncate(tmpl.fd, (off_t)undo.size) == 0);
    read_segment(flags & 2);
    restore();
    return 0;
}
