/* test_memory.c - payload memory under pressure, through the engine's C API
 * with real workers: a job's output buffer is sized and reserved when it is
 * accepted, so a reload that lowers limits.max_payload cannot shrink the
 * buffers of queued jobs, a full slab refuses new jobs instead of stalling
 * the ones it accepted, and a handler that writes past its buffer fails its
 * job without touching anyone else's bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test/fixture.h"
#include "test/t.h"

/* A result compared byte for byte with what was sent, whatever its size. */
struct echo_check {
    struct fixture *f;
    const uint8_t *sent;
    size_t len;
    int outcomes;
    enum job_status status;
    bool same;
};

static void check_echo(void *ctx, const struct engine_outcome *o)
{
    struct echo_check *c = ctx;
    c->outcomes++;
    c->status = o->status;
    c->same = o->len == c->len && memcmp(o->data, c->sent, c->len) == 0;
    c->f->answered++;
}

static enum job_status submit_checked(struct fixture *f, int kind, struct echo_check *c)
{
    struct engine_job j = {
        .kind = (uint32_t)kind,
        .payload = c->sent,
        .len = c->len,
        .priority = PRIO_NORMAL,
        .done = check_echo,
        .ctx = c,
    };
    c->f = f;
    return engine_submit(f->e, &j, NULL);
}

/* Occupy every worker with a spin of SPIN_US, and wait until each runs one. */
static void occupy_workers(struct fixture *f, unsigned workers, const char *spin_us)
{
    for (unsigned i = 0; i < workers; i++)
        T_REQUIRE(fixture_submit(f, i, f->spin, spin_us, strlen(spin_us), NULL, PRIO_HIGH, 0, 0) ==
                      JOB_OK,
                  "spin %u accepted", i);
    T_REQUIRE(fixture_run_until(f, fixture_workers_busy, &workers, 5), "every worker busy");
}

/* A reload to limits.max_payload 1000 while 20 echoes of 60,000 bytes wait:
 * each is answered with exactly its own 60,000 bytes. */
static void test_reload_lowers_max_payload(void)
{
    enum { N = 20, LEN = 60000 };
    struct fixture f;
    fixture_init(&f, "shrink", 2);
    f.conf.workers.min = f.conf.workers.max = 2;
    fixture_start(&f);
    occupy_workers(&f, 2, "300000");

    static uint8_t sent[N][LEN];
    struct echo_check c[N];
    for (size_t i = 0; i < N; i++) {
        for (size_t b = 0; b < LEN; b++)
            sent[i][b] = (uint8_t)(i * 37 + b * 13 + b / 251);
        c[i] = (struct echo_check){.sent = sent[i], .len = LEN};
        T_REQUIRE(submit_checked(&f, f.echo, &c[i]) == JOB_OK, "echo %zu accepted", i);
    }

    struct conf lower;
    T_REQUIRE(fixture_reload_conf(&f, &lower) == 0, "reload configuration made");
    lower.limits.max_payload = 1000;
    T_REQUIRE(engine_reload(f.e, &lower) == 0, "reload applied");

    size_t n = N + 2;
    T_CHECK(fixture_run_until(&f, fixture_all_answered, &n, 20), "all answered");
    size_t once = 0, ok = 0, same = 0;
    for (size_t i = 0; i < N; i++) {
        once += c[i].outcomes == 1;
        ok += c[i].status == JOB_OK;
        same += c[i].same;
    }
    T_CHECK(once == N && ok == N, "each answered once (%zu) and OK (%zu)", once, ok);
    T_CHECK(same == N, "%zu of %d echoes are exactly their own 60,000 bytes", same, N);
    static uint8_t big[2000];
    struct echo_check after = {.sent = big, .len = sizeof(big)};
    T_CHECK(submit_checked(&f, f.echo, &after) == JOB_E_TOO_LARGE,
            "a new job above the lowered limit is refused");
    fixture_free(&f);
    conf_free(&lower);
}

/* Jobs of 60 KB until the slab refuses them, while the workers are busy,
 * then a 5-byte probe whose small block could split the last free space:
 * refusals come at once, every accepted job is answered once the workers
 * are free (none waits for memory only queued jobs hold), and a second
 * probe then gets its answer. */
static void test_full_slab_refuses_and_recovers(void)
{
    enum { MAX = 200, LEN = 60000 };
    struct fixture f;
    fixture_init(&f, "fullslab", 4);
    f.conf.workers.min = f.conf.workers.max = 2;
    f.conf.limits.slab_mb = 2;
    fixture_start(&f);
    occupy_workers(&f, 2, "200000");

    static uint8_t sent[LEN];
    memset(sent, 'p', sizeof(sent));
    static struct echo_check c[MAX];
    size_t accepted = 0, refused = 0;
    for (size_t i = 0; i < MAX; i++) {
        c[i] = (struct echo_check){.sent = sent, .len = LEN};
        enum job_status st = submit_checked(&f, f.echo, &c[i]);
        accepted += st == JOB_OK;
        refused += st == JOB_E_OVERLOADED;
    }
    T_CHECK(accepted > 0 && refused > 0 && accepted + refused == MAX,
            "%zu accepted, %zu refused as overloaded", accepted, refused);
    bool probe_in = fixture_submit(&f, 3, f.echo, "probe", 5, NULL, PRIO_NORMAL, 0, 0) == JOB_OK;

    size_t n = accepted + 2 + probe_in;
    T_CHECK(fixture_run_until(&f, fixture_all_answered, &n, 20), "every accepted job answered");
    size_t good = 0;
    for (size_t i = 0; i < MAX; i++)
        good += c[i].outcomes == 1 && c[i].status == JOB_OK && c[i].same;
    T_CHECK(good == accepted, "%zu of %zu accepted jobs answered once with their bytes", good,
            accepted);
    T_REQUIRE(fixture_submit(&f, 2, f.echo, "probe", 5, NULL, PRIO_NORMAL, 0, 0) == JOB_OK,
              "probe accepted");
    n = accepted + 3 + probe_in;
    T_CHECK(fixture_run_until(&f, fixture_all_answered, &n, 5), "probe answered");
    T_CHECK(f.recs[2].status == JOB_OK && strcmp(f.recs[2].data, "probe") == 0, "probe echoed (%s)",
            f.recs[2].data);
    fixture_free(&f);
}

/* A handler that writes past its buffer fails its job; its worker lives on,
 * and the jobs around it keep their bytes. */
static void test_overrun_fails_the_job(void)
{
    enum { N = 50 };
    struct fixture f;
    fixture_init(&f, "overrun", N + 1);
    f.conf.workers.min = f.conf.workers.max = 1;
    fixture_start(&f);
    char payload[N][16];
    for (size_t i = 0; i < N; i++) {
        snprintf(payload[i], sizeof(payload[i]), "neighbour %zu", i);
        T_REQUIRE(fixture_submit(&f, i, f.echo, payload[i], strlen(payload[i]), NULL, PRIO_NORMAL,
                                 0, 0) == JOB_OK,
                  "echo accepted");
        if (i == N / 2)
            T_REQUIRE(fixture_submit(&f, N, f.crash, "overrun", 7, NULL, PRIO_NORMAL, 0, 0) ==
                          JOB_OK,
                      "overrun accepted");
    }
    size_t n = N + 1;
    T_CHECK(fixture_run_until(&f, fixture_all_answered, &n, 10), "all answered");
    T_CHECK(f.recs[N].status == JOB_E_FAILED && f.recs[N].attempts == 1,
            "the overrun failed on its first attempt (status %d, %u attempts)", f.recs[N].status,
            f.recs[N].attempts);
    T_CHECK(strstr(f.recs[N].data, "wrote past its output buffer") != NULL, "it says why: %s",
            f.recs[N].data);
    size_t wrong = 0;
    for (size_t i = 0; i < N; i++)
        wrong += f.recs[i].status != JOB_OK || strcmp(f.recs[i].data, payload[i]) != 0;
    T_CHECK(wrong == 0, "%zu neighbours changed", wrong);
    struct stats_global g;
    fixture_stats(&f, &g);
    T_CHECK(g.crashed == 0, "no worker died (%lu)", (unsigned long)g.crashed);
    fixture_free(&f);
}

int main(void)
{
    test_reload_lowers_max_payload();
    test_full_slab_refuses_and_recovers();
    test_overrun_fails_the_job();
    T_DONE();
}
