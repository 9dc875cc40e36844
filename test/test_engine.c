/* test_engine.c - the engine through its C API with real worker processes:
 * round trip, order within a stream, priority order, a slow job's and long
 * jobs' (workers.short_reserve) hold on the pool, stream eviction,
 * refusal and end, refusals, every kind of crash mid-job, hang -> timeout
 * -> retry -> quarantine, crash-loop backoff, recycling by job count and
 * by RSS, and a second outcome for one job aborting (debug builds). Each
 * test checks that every job accepted got exactly one outcome. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shm/segment.h"
#include "supervisor/engine_impl.h"
#include "test/fixture.h"
#include "test/t.h"

static void test_round_trip(void)
{
    struct fixture f;
    enum { N = 2000 };
    fixture_init(&f, "rt", N);
    fixture_start(&f);
    char payload[N][32];
    for (size_t i = 0; i < N; i++) {
        snprintf(payload[i], sizeof(payload[i]), "job %zu", i);
        T_CHECK(fixture_submit(&f, i, f.echo, payload[i], strlen(payload[i]), NULL, PRIO_NORMAL, 0,
                               0) == JOB_OK,
                "job %zu accepted", i);
    }
    size_t n = N;
    T_CHECK(fixture_run_until(&f, fixture_all_answered, &n, 20), "all %d answered", N);
    T_CHECK(fixture_each_once(&f, N), "each job answered exactly once");
    size_t wrong = 0;
    for (size_t i = 0; i < N; i++)
        wrong += f.recs[i].status != JOB_OK || strcmp(f.recs[i].data, payload[i]) != 0;
    T_CHECK(wrong == 0, "%zu echoes differ from their input", wrong);
    struct stats_global g;
    fixture_stats(&f, &g);
    T_CHECK(g.accepted == N && g.completed == N && g.failed == 0,
            "stats: accepted %lu completed %lu failed %lu", (unsigned long)g.accepted,
            (unsigned long)g.completed, (unsigned long)g.failed);
    fixture_free(&f);
}

/* Jobs of one stream complete in the order they arrived, even with
 * several workers free and jobs of different lengths. */
static void test_stream_order(void)
{
    struct fixture f;
    enum { STREAMS = 6, PER = 60, N = STREAMS * PER };
    fixture_init(&f, "order", N);
    f.conf.workers.min = 3;
    fixture_start(&f);
    char spin[N][8];
    for (size_t i = 0; i < N; i++) {
        char stream[16];
        snprintf(stream, sizeof(stream), "dev%zu", i % STREAMS);
        /* alternate short and long jobs so a free-for-all would reorder them */
        snprintf(spin[i], sizeof(spin[i]), "%d", (i / STREAMS) % 2 ? 20 : 300);
        T_REQUIRE(fixture_submit(&f, i, f.spin, spin[i], strlen(spin[i]), stream, PRIO_NORMAL, 0,
                                 0) == JOB_OK,
                  "job %zu accepted", i);
    }
    size_t n = N;
    T_CHECK(fixture_run_until(&f, fixture_all_answered, &n, 30), "all answered");
    T_CHECK(fixture_each_once(&f, N), "each job answered exactly once");
    size_t out_of_order = 0;
    for (size_t i = STREAMS; i < N; i++)
        out_of_order += f.recs[i].order < f.recs[i - STREAMS].order;
    T_CHECK(out_of_order == 0, "%zu jobs overtook an earlier job of their stream", out_of_order);
    fixture_free(&f);
}

/* With the only worker busy, queued jobs leave high first, then normal,
 * then low, each class in arrival order. */
static void test_priority_order(void)
{
    struct fixture f;
    enum { PER = 20, N = 1 + 3 * PER };
    fixture_init(&f, "prio", N);
    f.conf.workers.min = f.conf.workers.max = 1;
    f.conf.workers.inflight = 1;
    fixture_start(&f);
    T_REQUIRE(fixture_submit(&f, 0, f.spin, "100000", 6, NULL, PRIO_NORMAL, 0, 0) == JOB_OK,
              "blocker accepted");
    engine_turn(f.e, 0); /* the blocker goes out; the rest queues behind it */
    static const enum conf_priority order[] = {PRIO_LOW, PRIO_NORMAL, PRIO_HIGH};
    for (size_t i = 1; i < N; i++)
        T_REQUIRE(fixture_submit(&f, i, f.echo, "x", 1, NULL, order[i % 3], 0, 0) == JOB_OK,
                  "job %zu accepted", i);
    size_t n = N;
    T_CHECK(fixture_run_until(&f, fixture_all_answered, &n, 20), "all answered");
    size_t bad = 0;
    for (size_t i = 1; i < N; i++)
        for (size_t k = 1; k < N; k++) {
            enum conf_priority pi = order[i % 3], pk = order[k % 3];
            bool should_precede = pi < pk || (pi == pk && i < k);
            bad += should_precede && f.recs[i].order > f.recs[k].order;
        }
    T_CHECK(bad == 0, "%zu pairs answered against priority or arrival order", bad);
    fixture_free(&f);
}

/* A slow job holds up only its own worker: quick jobs offered while it runs
 * go to the other worker and are all answered before it finishes. */
static void test_slow_job_isolated(void)
{
    struct fixture f;
    enum { N = 41 };
    fixture_init(&f, "isolate", N);
    fixture_start(&f);
    T_REQUIRE(fixture_submit(&f, 0, f.spin, "300000", 6, NULL, PRIO_NORMAL, 0, 0) == JOB_OK,
              "slow job accepted");
    engine_turn(f.e, 0);
    for (size_t i = 1; i < N; i++)
        T_REQUIRE(fixture_submit(&f, i, f.echo, "q", 1, NULL, PRIO_NORMAL, 0, 0) == JOB_OK,
                  "quick job accepted");
    size_t n = N;
    T_CHECK(fixture_run_until(&f, fixture_all_answered, &n, 20), "all answered");
    size_t behind = 0;
    for (size_t i = 1; i < N; i++)
        behind += f.recs[i].order > f.recs[0].order;
    T_CHECK(behind == 0, "%zu quick jobs waited for the slow one", behind);
    fixture_free(&f);
}

/* Workers with a long job in flight (one expected to run past
 * workers.inflight_us). */
static unsigned workers_with_long(const struct fixture *f)
{
    unsigned n = 0;
    for (unsigned i = 0; i < f->e->pool.nslots; i++)
        n += f->e->pool.workers[i].est_ns > (uint64_t)f->conf.workers.inflight_us * 1000;
    return n;
}

/* While short jobs come, two long ones offered at once to a pool of two
 * take one worker (workers.short_reserve 1), and a short job offered after
 * them is answered before either; with the reserve off, both take one.
 * engine_would_start says whether one more would wait. */
static void reserve_round(unsigned reserve)
{
    struct fixture f;
    enum { N = 5 };
    fixture_init(&f, "reserve", N);
    f.conf.workers.min = f.conf.workers.max = 2;
    f.conf.workers.short_reserve = reserve;
    fixture_start(&f);
    /* the spin handler's estimate learns that it is long, and a short job
     * is seen */
    T_REQUIRE(fixture_submit(&f, 0, f.spin, "50000", 5, NULL, PRIO_NORMAL, 0, 0) == JOB_OK,
              "first long job accepted");
    size_t n = 1;
    T_REQUIRE(fixture_run_until(&f, fixture_all_answered, &n, 20), "first long job answered");
    T_REQUIRE(fixture_submit(&f, 1, f.echo, "q", 1, NULL, PRIO_NORMAL, 0, 0) == JOB_OK,
              "short job accepted");
    n = 2;
    T_REQUIRE(fixture_run_until(&f, fixture_all_answered, &n, 20), "short job answered");
    T_CHECK(engine_would_start(f.e, (uint32_t)f.spin), "a long job would wait on an idle pool");
    for (size_t i = 2; i < 4; i++)
        T_REQUIRE(fixture_submit(&f, i, f.spin, "300000", 6, NULL, PRIO_NORMAL, 0, 0) == JOB_OK,
                  "long job %zu accepted", i);
    engine_turn(f.e, 0);
    T_CHECK(workers_with_long(&f) == (reserve ? 1u : 2u), "reserve %u: %u workers took a long job",
            reserve, workers_with_long(&f));
    T_CHECK(!engine_would_start(f.e, (uint32_t)f.spin), "a long job would start with none free");
    T_REQUIRE(fixture_submit(&f, 4, f.echo, "q", 1, NULL, PRIO_NORMAL, 0, 0) == JOB_OK,
              "short job accepted");
    n = N;
    T_CHECK(fixture_run_until(&f, fixture_all_answered, &n, 20), "all answered");
    if (reserve)
        T_CHECK(f.recs[4].order < f.recs[2].order && f.recs[4].order < f.recs[3].order,
                "the short job waited for a long one");
    T_CHECK(fixture_each_once(&f, N), "each job answered once");
    fixture_free(&f);
}

static void test_short_reserve(void)
{
    reserve_round(1);
    reserve_round(0);
}

/* A job still pending past its deadline_ms is answered `expired`, never run. */
static void test_deadline(void)
{
    struct fixture f;
    enum { N = 6 };
    fixture_init(&f, "deadline", N);
    f.conf.workers.min = f.conf.workers.max = 1;
    f.conf.workers.inflight = 1;
    fixture_start(&f);
    T_REQUIRE(fixture_submit(&f, 0, f.spin, "150000", 6, NULL, PRIO_NORMAL, 0, 0) == JOB_OK,
              "blocker");
    engine_turn(f.e, 0);
    for (size_t i = 1; i < N; i++) {
        struct engine_job j = {.kind = (uint32_t)f.echo,
                               .payload = "late",
                               .len = 4,
                               .priority = PRIO_NORMAL,
                               .deadline_ms = 30,
                               .done = fixture_record_done,
                               .ctx = &f.recs[i]};
        T_REQUIRE(engine_submit(f.e, &j, NULL) == JOB_OK, "job %zu accepted", i);
    }
    size_t n = N;
    T_CHECK(fixture_run_until(&f, fixture_all_answered, &n, 10), "all answered");
    size_t expired = 0;
    for (size_t i = 1; i < N; i++)
        expired += f.recs[i].status == JOB_E_EXPIRED && f.recs[i].attempts == 0;
    T_CHECK(expired == N - 1, "%zu of %d expired without running", expired, N - 1);
    T_CHECK(f.recs[0].status == JOB_OK, "the blocker itself ran");
    struct stats_global g;
    fixture_stats(&f, &g);
    T_CHECK(g.expired == N - 1, "expired counted (%lu)", (unsigned long)g.expired);
    fixture_free(&f);
}

/* A full stream table makes room by evicting the least recently used idle
 * stream without state to lose (test.echo keeps none), and counts it; a
 * stream with work is never evicted. */
static void test_stream_eviction(void)
{
    struct fixture f;
    enum { N = 6 };
    fixture_init(&f, "evict", N);
    f.conf.streams.max = 4;
    fixture_start(&f);
    for (size_t i = 0; i < N; i++) {
        char key[8];
        snprintf(key, sizeof(key), "s%zu", i);
        T_REQUIRE(fixture_submit(&f, i, f.echo, "x", 1, key, PRIO_NORMAL, 0, 0) == JOB_OK,
                  "stream job %zu accepted", i);
        size_t n = i + 1;
        T_REQUIRE(fixture_run_until(&f, fixture_all_answered, &n, 5), "answered");
    }
    struct stats_global g;
    fixture_stats(&f, &g);
    T_CHECK(g.stream_evictions == 2 && g.streams_live == 4 && g.stream_refusals == 0,
            "6 streams in 4 slots: 2 evicted (%lu), 4 live (%u), none refused (%lu)",
            (unsigned long)g.stream_evictions, g.streams_live, (unsigned long)g.stream_refusals);
    fixture_free(&f);
}

static bool streams_below(struct fixture *f, void *n)
{
    struct stats_global g;
    fixture_stats(f, &g);
    return g.streams_live < *(uint32_t *)n;
}

/* Streams whose codec holds state keep it until streams.idle_s passes: when
 * they fill the table, a job that would start a new stream is refused as
 * overloaded and counted, rather than one of them being evicted and its
 * next frame decoded by a reset decoder (issue #9, finding 6). The streams
 * held go on; once they expire, the new stream is taken. */
static void test_stream_refusal(void)
{
    struct fixture f;
    enum { SLOTS = 4, N = SLOTS + 3 };
    int dec;
    fixture_init(&f, "srefuse", N);
    f.conf.streams.max = SLOTS;
    f.conf.streams.idle_s = 0.5;
    fixture_add_kind(&f, "dec", "opus.decode", NULL, &dec);
    fixture_start(&f);
    static const uint8_t frame[] = {0xf8}; /* 20 ms without data: concealment */
    size_t n = 0;
    for (size_t i = 0; i < SLOTS; i++) {
        char key[8];
        snprintf(key, sizeof(key), "s%zu", i);
        T_REQUIRE(fixture_submit(&f, i, dec, frame, sizeof(frame), key, PRIO_NORMAL, 0, 0) ==
                      JOB_OK,
                  "stream %zu accepted", i);
        n++;
        T_REQUIRE(fixture_run_until(&f, fixture_all_answered, &n, 5), "answered");
    }
    T_CHECK(fixture_submit(&f, SLOTS, dec, frame, sizeof(frame), "new", PRIO_NORMAL, 0, 0) ==
                JOB_E_OVERLOADED,
            "a new stream is refused while every slot holds live state");
    T_CHECK(fixture_submit(&f, SLOTS + 1, dec, frame, sizeof(frame), "s0", PRIO_NORMAL, 0, 0) ==
                JOB_OK,
            "a stream held goes on");
    n++;
    T_REQUIRE(fixture_run_until(&f, fixture_all_answered, &n, 5), "answered");
    struct stats_global g;
    fixture_stats(&f, &g);
    T_CHECK(g.stream_refusals == 1 && g.refused[JOB_E_OVERLOADED] == 1,
            "refusal counted: stream_refusals %lu, overloaded %lu",
            (unsigned long)g.stream_refusals, (unsigned long)g.refused[JOB_E_OVERLOADED]);
    T_CHECK(g.stream_evictions == 0 && g.stream_resets == 0 && g.streams_live == SLOTS,
            "no state lost: %lu evicted, %lu reset, %u live", (unsigned long)g.stream_evictions,
            (unsigned long)g.stream_resets, g.streams_live);
    size_t ok = 0;
    for (size_t i = 0; i < N; i++)
        ok += f.recs[i].outcomes == 1 && f.recs[i].status == JOB_OK;
    T_CHECK(ok == SLOTS + 1 && f.recs[SLOTS].outcomes == 0,
            "%zu decoded, the refused never answered", ok);
    uint32_t slots = SLOTS;
    T_REQUIRE(fixture_run_until(&f, streams_below, &slots, 5), "idle streams expire");
    T_CHECK(fixture_submit(&f, SLOTS + 2, dec, frame, sizeof(frame), "new", PRIO_NORMAL, 0, 0) ==
                JOB_OK,
            "the new stream is taken once a slot is free");
    n++;
    T_CHECK(fixture_run_until(&f, fixture_all_answered, &n, 5), "answered");
    fixture_free(&f);
}

/* A source that ends a stream (engine_stream_end) frees its slot at once
 * when it is idle, or once its last job is answered: a full table then
 * takes a new stream without evicting or refusing anything. */
static void test_stream_end(void)
{
    struct fixture f;
    enum { N = 5 };
    int dec;
    fixture_init(&f, "send", N);
    f.conf.streams.max = 2;
    fixture_add_kind(&f, "dec", "opus.decode", NULL, &dec);
    fixture_start(&f);
    static const uint8_t frame[] = {0xf8}; /* 20 ms without data: concealment */
    const char *keys[N] = {"a", "b", "c", "b", "d"};
    size_t n = 0;
    for (size_t i = 0; i < 2; i++) {
        T_REQUIRE(fixture_submit(&f, i, dec, frame, 1, keys[i], PRIO_NORMAL, 0, 0) == JOB_OK,
                  "stream %s", keys[i]);
        n++;
        T_REQUIRE(fixture_run_until(&f, fixture_all_answered, &n, 5), "answered");
    }
    engine_stream_end(f.e, (uint32_t)dec, "a", 1);
    engine_stream_end(f.e, (uint32_t)dec, "zz", 2); /* unknown: ignored */
    T_CHECK(fixture_submit(&f, 2, dec, frame, 1, "c", PRIO_NORMAL, 0, 0) == JOB_OK,
            "an ended idle stream makes room at once");
    T_REQUIRE(fixture_submit(&f, 3, dec, frame, 1, "b", PRIO_NORMAL, 0, 0) == JOB_OK, "b again");
    engine_stream_end(f.e, (uint32_t)dec, "b", 1); /* its job still out */
    n += 2;
    T_REQUIRE(fixture_run_until(&f, fixture_all_answered, &n, 5), "answered");
    T_CHECK(fixture_submit(&f, 4, dec, frame, 1, "d", PRIO_NORMAL, 0, 0) == JOB_OK,
            "an ended stream's slot is free once its last job is answered");
    n++;
    T_REQUIRE(fixture_run_until(&f, fixture_all_answered, &n, 5), "answered");
    struct stats_global g;
    fixture_stats(&f, &g);
    T_CHECK(g.stream_refusals == 0 && g.stream_evictions == 0 && g.streams_live == 2,
            "%lu refused, %lu evicted, %u live", (unsigned long)g.stream_refusals,
            (unsigned long)g.stream_evictions, g.streams_live);
    fixture_free(&f);
}

/* Past max_pending a job is refused, counted, and never answered; too large
 * and unknown kinds likewise. What was accepted is still answered. */
static void test_refusals(void)
{
    struct fixture f;
    enum { N = 300 };
    fixture_init(&f, "refuse", N);
    f.conf.workers.min = f.conf.workers.max = 1;
    f.conf.workers.inflight = 1;
    f.conf.limits.max_pending = 100;
    f.conf.limits.max_payload = 1024;
    fixture_start(&f);
    T_REQUIRE(fixture_submit(&f, 0, f.spin, "50000", 5, NULL, PRIO_NORMAL, 0, 0) == JOB_OK,
              "blocker");
    engine_turn(f.e, 0);
    size_t accepted = 1, overloaded = 0;
    for (size_t i = 1; i < N; i++) {
        enum job_status st = fixture_submit(&f, i, f.echo, "y", 1, NULL, PRIO_NORMAL, 0, 0);
        accepted += st == JOB_OK;
        overloaded += st == JOB_E_OVERLOADED;
    }
    T_CHECK(accepted == 101 && overloaded == N - 101,
            "100 queued + 1 running accepted (got %zu), the rest overloaded (got %zu)", accepted,
            overloaded);
    static char big[2048];
    T_CHECK(fixture_submit(&f, N, f.echo, big, sizeof(big), NULL, PRIO_NORMAL, 0, 0) ==
                JOB_E_TOO_LARGE,
            "2048 bytes over a 1024 limit is too_large");
    T_CHECK(fixture_submit(&f, N, 99, "z", 1, NULL, PRIO_NORMAL, 0, 0) == JOB_E_UNKNOWN_KIND,
            "kind 99 is unknown");
    T_CHECK(fixture_run_until(&f, fixture_all_answered, &accepted, 20), "accepted answered");
    size_t answered = 0, twice = 0;
    for (size_t i = 0; i < N; i++) {
        answered += f.recs[i].outcomes == 1;
        twice += f.recs[i].outcomes > 1;
    }
    T_CHECK(answered == accepted && twice == 0, "answered %zu of %zu, %zu twice", answered,
            accepted, twice);
    struct stats_global g;
    fixture_stats(&f, &g);
    T_CHECK(g.refused[JOB_E_OVERLOADED] == overloaded && g.refused[JOB_E_TOO_LARGE] == 1 &&
                g.refused[JOB_E_UNKNOWN_KIND] == 1,
            "refusals counted by reason");
    fixture_free(&f);
}

/* A job that crashes its worker is retried on another worker up to its
 * retries, then quarantined with the reason; echo jobs around it all come
 * back, and the pool returns to full strength. */
static void test_crashes(void)
{
    static const struct {
        const char *payload, *reason;
    } kinds[] = {
        {"segv", "crashed: signal 11"},
        {"abort", "crashed: signal 6"},
        {"exit", "crashed: exit 3"},
    };
    struct fixture f;
    enum { ECHOES = 200, N = 3 + ECHOES };
    fixture_init(&f, "crash", N);
    f.conf.workers.min = 3;
    f.conf.workers.stable_s = 0.01;
    fixture_start(&f);
    for (size_t i = 0; i < 3; i++)
        T_REQUIRE(fixture_submit(&f, i, f.crash, kinds[i].payload, strlen(kinds[i].payload), NULL,
                                 PRIO_NORMAL, 0, 1) == JOB_OK,
                  "crash job accepted");
    for (size_t i = 3; i < N; i++)
        T_REQUIRE(fixture_submit(&f, i, f.echo, "e", 1, NULL, PRIO_NORMAL, 0, 0) == JOB_OK,
                  "echo accepted");
    size_t n = N;
    T_CHECK(fixture_run_until(&f, fixture_all_answered, &n, 20), "all answered");
    T_CHECK(fixture_each_once(&f, N), "each job answered exactly once");
    for (size_t i = 0; i < 3; i++) {
        T_CHECK(f.recs[i].status == JOB_E_QUARANTINED, "%s: quarantined (got %s)", kinds[i].payload,
                job_status_name(f.recs[i].status));
        T_CHECK(strstr(f.recs[i].data, kinds[i].reason) != NULL, "%s: reason '%s' in '%s'",
                kinds[i].payload, kinds[i].reason, f.recs[i].data);
        T_CHECK(f.recs[i].attempts == 2, "%s: ran twice (retries 1), got %u", kinds[i].payload,
                f.recs[i].attempts);
    }
    size_t echo_ok = 0;
    for (size_t i = 3; i < N; i++)
        echo_ok += f.recs[i].status == JOB_OK;
    T_CHECK(echo_ok == ECHOES, "echo jobs all answered OK (%zu of %d)", echo_ok, ECHOES);
    T_CHECK(fixture_run_until(&f, fixture_pool_ready, NULL, 10), "pool back to full strength");
    struct stats_global g;
    fixture_stats(&f, &g);
    T_CHECK(g.crashed == 6 && g.quarantined == 3 && g.retried == 3,
            "6 crashes, 3 retries, 3 quarantined (got %lu, %lu, %lu)", (unsigned long)g.crashed,
            (unsigned long)g.retried, (unsigned long)g.quarantined);
    const struct segment *seg = engine_segment(f.e);
    T_CHECK(seg->events->crashes == 6, "6 crashes in the crash ring");
    fixture_free(&f);
}

/* A hung job is killed at its timeout, retried, and quarantined. */
static void test_hang_timeout(void)
{
    struct fixture f;
    enum { N = 11 };
    fixture_init(&f, "hang", N);
    fixture_start(&f);
    double t0 = fixture_now();
    T_REQUIRE(fixture_submit(&f, 0, f.hang, "", 0, NULL, PRIO_NORMAL, 100, 2) == JOB_OK,
              "hang accepted");
    for (size_t i = 1; i < N; i++)
        T_REQUIRE(fixture_submit(&f, i, f.echo, "e", 1, NULL, PRIO_NORMAL, 0, 0) == JOB_OK,
                  "echo accepted");
    size_t n = N;
    T_CHECK(fixture_run_until(&f, fixture_all_answered, &n, 20), "all answered");
    double took = fixture_now() - t0;
    T_CHECK(fixture_each_once(&f, N), "each job answered exactly once");
    T_CHECK(f.recs[0].status == JOB_E_QUARANTINED && strstr(f.recs[0].data, "timeout"),
            "hang quarantined for timeout: %s %s", job_status_name(f.recs[0].status),
            f.recs[0].data);
    T_CHECK(f.recs[0].attempts == 3, "ran 3 times (retries 2), got %u", f.recs[0].attempts);
    T_CHECK(took >= 0.3, "three 100 ms timeouts take at least 0.3 s (took %.3f)", took);
    struct stats_global g;
    fixture_stats(&f, &g);
    T_CHECK(g.timed_out == 3 && g.killed_timeout == 3, "3 timeouts counted (got %lu)",
            (unsigned long)g.timed_out);
    for (size_t i = 1; i < N; i++)
        T_CHECK(f.recs[i].status == JOB_OK, "echo %zu ok", i);
    T_CHECK(fixture_run_until(&f, fixture_pool_ready, NULL, 10), "pool back to full strength");
    fixture_free(&f);
}

/* A slot whose workers die young is respawned with a growing delay, capped
 * at backoff_max_s; a worker that lives past stable_s resets it. */
static void test_crash_loop_backoff(void)
{
    struct fixture f;
    enum { N = 16, DEATHS = 14 };
    fixture_init(&f, "backoff", N);
    f.conf.workers.min = f.conf.workers.max = 1;
    f.conf.workers.backoff_max_s = 0.1;
    f.conf.workers.stable_s = 1.0;
    fixture_start(&f);
    double t0 = fixture_now();
    for (size_t i = 0; i < DEATHS; i++)
        T_REQUIRE(fixture_submit(&f, i, f.crash, "segv", 4, NULL, PRIO_NORMAL, 0, 0) == JOB_OK,
                  "crash accepted");
    size_t n = DEATHS;
    T_CHECK(fixture_run_until(&f, fixture_all_answered, &n, 20), "all answered");
    double took = fixture_now() - t0;
    const struct segment *s = engine_segment(f.e);
    /* delays before each restart: 0, 10, 20, 40, 80 ms, then 100 (capped)
     * from the sixth death on, however long the streak: the doubling must
     * neither overflow nor come back down */
    T_CHECK(took >= 0.15 + 0.1 * (DEATHS - 6),
            "%d deaths in a row took %.3f s, backoff should make it >= %.2f", DEATHS, took,
            0.15 + 0.1 * (DEATHS - 6));
    T_CHECK(s->workers_stats[0].backoff_ms == 100, "backoff capped at 100 ms, shows %lu",
            (unsigned long)s->workers_stats[0].backoff_ms);
    T_CHECK(fixture_run_until(&f, fixture_pool_ready, NULL, 5), "slot live again");
    /* Live past stable_s, then crash: respawned at once. */
    double live_since = fixture_now();
    while (fixture_now() - live_since < 1.1)
        engine_turn(f.e, 50000000);
    T_REQUIRE(fixture_submit(&f, DEATHS, f.crash, "segv", 4, NULL, PRIO_NORMAL, 0, 0) == JOB_OK,
              "crash accepted");
    n = DEATHS + 1;
    T_CHECK(fixture_run_until(&f, fixture_all_answered, &n, 5), "answered");
    T_CHECK(s->workers_stats[0].backoff_ms == 0, "backoff reset after a stable worker (shows %lu)",
            (unsigned long)s->workers_stats[0].backoff_ms);
    fixture_free(&f);
}

/* Recycling by job count: each worker exits after max_jobs, gracefully. */
static void test_recycle_jobs(void)
{
    struct fixture f;
    enum { N = 1000 };
    fixture_init(&f, "recycle", N);
    f.conf.workers.max_jobs = 100;
    fixture_start(&f);
    int first_pid = engine_worker_pid(f.e, 0);
    for (size_t i = 0; i < N; i++)
        T_REQUIRE(fixture_submit(&f, i, f.echo, "r", 1, NULL, PRIO_NORMAL, 0, 0) == JOB_OK,
                  "accepted");
    size_t n = N;
    T_CHECK(fixture_run_until(&f, fixture_all_answered, &n, 20), "all answered");
    T_CHECK(fixture_each_once(&f, N), "each once");
    size_t ok = 0;
    for (size_t i = 0; i < N; i++)
        ok += f.recs[i].status == JOB_OK && f.recs[i].attempts == 1;
    T_CHECK(ok == N, "all OK on their first attempt (%zu)", ok);
    T_CHECK(fixture_run_until(&f, fixture_pool_ready, NULL, 5), "pool ready");
    struct stats_global g;
    fixture_stats(&f, &g);
    T_CHECK(g.recycled >= 8 && g.crashed == 0, "recycled %lu times (>= 8), crashed %lu",
            (unsigned long)g.recycled, (unsigned long)g.crashed);
    T_CHECK(engine_worker_pid(f.e, 0) != first_pid, "slot 0 has a new process");
    fixture_free(&f);
}

static uint64_t recycled_count(struct fixture *f)
{
    struct stats_global g;
    fixture_stats(f, &g);
    return g.recycled;
}

static bool recycled_since(struct fixture *f, void *before)
{
    return recycled_count(f) > *(uint64_t *)before;
}

/* Recycling by RSS: a worker above max_rss_mb is replaced after its jobs. */
static void test_recycle_rss(void)
{
    struct fixture f;
    fixture_init(&f, "rss", 1);
    f.conf.workers.min = f.conf.workers.max = 1;
    f.conf.workers.max_rss_mb = 1; /* any process is above 1 MiB */
    fixture_start(&f);
    /* The first sample may already have recycled the first process while
     * fixture_start waited for the pool: count from here, not from zero. */
    int pid = engine_worker_pid(f.e, 0);
    uint64_t before = recycled_count(&f);
    T_CHECK(fixture_run_until(&f, recycled_since, &before, 5), "recycled within 5 s");
    T_CHECK(fixture_run_until(&f, fixture_pool_ready, NULL, 5), "pool ready");
    T_CHECK(engine_worker_pid(f.e, 0) != pid, "a new process in slot 0");
    struct stats_global g;
    fixture_stats(&f, &g);
    T_CHECK(g.crashed == 0, "recycling is not a crash");
    fixture_free(&f);
}

/* A job answered twice is a bug that must not pass quietly: in a debug
 * build its second engine_finish aborts (engine_impl.h, job_move). Tried
 * in a child, on a job the engine answered already. */
static void test_double_finish(void)
{
#ifdef NDEBUG
    T_CHECK(true, "assertions are compiled out (NDEBUG)");
#else
    struct fixture f;
    fixture_init(&f, "twice", 1);
    fixture_start(&f);
    T_REQUIRE(fixture_submit(&f, 0, f.echo, "x", 1, NULL, PRIO_NORMAL, 0, 0) == JOB_OK, "job");
    size_t n = 1;
    T_REQUIRE(fixture_run_until(&f, fixture_all_answered, &n, 5), "answered");
    struct job *j = &f.e->jobs.all[0]; /* the first job taken from the pool */
    T_REQUIRE(j->state == JOB_FREE && j->id == 1, "job 1 is back in the pool");
    fflush(NULL);
    pid_t pid = fork();
    T_REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        freopen("/dev/null", "w", stderr); /* the assertion's message is expected */
        engine_finishf(f.e, j, JOB_E_FAILED, "a second outcome");
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    T_CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
            "a second engine_finish aborts (status 0x%x)", status);
    T_CHECK(f.recs[0].outcomes == 1, "the parent saw one outcome");
    fixture_free(&f);
#endif
}

int main(void)
{
    test_round_trip();
    test_stream_order();
    test_priority_order();
    test_slow_job_isolated();
    test_short_reserve();
    test_deadline();
    test_stream_eviction();
    test_stream_refusal();
    test_stream_end();
    test_refusals();
    test_crashes();
    test_hang_timeout();
    test_crash_loop_backoff();
    test_recycle_jobs();
    test_recycle_rss();
    test_double_finish();
    T_DONE();
}
