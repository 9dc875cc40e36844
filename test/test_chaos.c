/* test_chaos.c - under steady load, SIGKILL a random worker every 50 ms for
 * 10 s. At the end every submitted job has exactly one outcome (none lost,
 * none twice), every echo that came back OK carries its own payload, jobs of
 * a stream were answered in order, and every slot is live again. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test/fixture.h"
#include "test/t.h"

#define CHAOS_SECONDS    10.0
#define KILL_EVERY       0.05
#define KEEP_OUTSTANDING 256
#define MAX_JOBS         2000000
#define STREAMS          16

static char (*payloads)[24];

static void submit_one(struct fixture *f, size_t i)
{
    snprintf(payloads[i], sizeof(payloads[i]), "c%zu", i);
    char stream[16];
    const char *key = NULL;
    if (i % 4 == 0) { /* a quarter of the jobs belong to streams */
        snprintf(stream, sizeof(stream), "s%zu", (i / 4) % STREAMS);
        key = stream;
    }
    int kind = i % 8 == 1 ? f->spin : f->echo;
    const char *p = kind == f->spin ? "200" : payloads[i];
    /* generous retries: a job would need to be running at 21 kills to be quarantined */
    if (fixture_submit(f, i, kind, p, strlen(p), key, (enum conf_priority)(i % 3), 0, 20) !=
        JOB_OK) {
        fprintf(stderr, "job %zu refused\n", i);
        exit(1);
    }
}

int main(void)
{
    struct fixture f;
    payloads = calloc(MAX_JOBS, sizeof(*payloads));
    fixture_init(&f, "chaos", MAX_JOBS);
    f.conf.workers.min = 3;
    f.conf.workers.stable_s = 0.02;
    f.conf.workers.backoff_max_s = 0.05;
    fixture_start(&f);
    srand(12345);

    size_t submitted = 0, kills = 0;
    int last_killed[8] = {0};
    double start = fixture_now(), next_kill = start + KILL_EVERY;
    while (fixture_now() - start < CHAOS_SECONDS && submitted < MAX_JOBS) {
        while (engine_outstanding(f.e) < KEEP_OUTSTANDING && submitted < MAX_JOBS)
            submit_one(&f, submitted++);
        engine_turn(f.e, 1000000);
        if (fixture_now() >= next_kill) {
            next_kill += KILL_EVERY;
            /* A worker killed and not reaped yet is a zombie that kill()
             * still finds: on a loaded machine the loop catches up on its
             * kills back to back, and would count one death many times.
             * So the next live one from a random slot. */
            unsigned first = (unsigned)rand() % f.conf.workers.min;
            for (unsigned k = 0; k < f.conf.workers.min; k++) {
                unsigned slot = (first + k) % f.conf.workers.min;
                int pid = engine_worker_pid(f.e, slot);
                if (pid > 0 && pid != last_killed[slot] && kill(pid, SIGKILL) == 0) {
                    last_killed[slot] = pid;
                    kills++;
                    break;
                }
            }
        }
    }
    T_CHECK(fixture_run_until(&f, fixture_all_answered, &submitted, 30),
            "all %zu jobs answered after the chaos", submitted);
    T_CHECK(fixture_run_until(&f, fixture_pool_ready, NULL, 10), "every slot live again");

    size_t none = 0, twice = 0, ok = 0, wrong = 0, quarantined = 0, other = 0, disorder = 0;
    size_t last[STREAMS] = {0};
    uint64_t last_order[STREAMS] = {0};
    for (size_t i = 0; i < submitted; i++) {
        const struct record *r = &f.recs[i];
        none += r->outcomes == 0;
        twice += r->outcomes > 1;
        if (r->status == JOB_OK) {
            ok++;
            bool is_echo = i % 8 != 1;
            wrong += is_echo && strcmp(r->data, payloads[i]) != 0;
        } else if (r->status == JOB_E_QUARANTINED) {
            quarantined++;
        } else {
            other++;
        }
        if (i % 4 == 0) {
            size_t s = (i / 4) % STREAMS;
            disorder += last[s] && r->order < last_order[s];
            last[s] = i;
            last_order[s] = r->order;
        }
    }
    struct stats_global g;
    fixture_stats(&f, &g);
    printf("chaos: %zu jobs, %zu kills, %zu ok, %zu quarantined, %lu retried, %lu crashed, "
           "%lu late results discarded\n",
           submitted, kills, ok, quarantined, (unsigned long)g.retried, (unsigned long)g.crashed,
           (unsigned long)g.late_results);
    T_CHECK(kills >= CHAOS_SECONDS / KILL_EVERY * 0.8, "killed %zu workers", kills);
    T_CHECK(none == 0, "%zu jobs never answered", none);
    T_CHECK(twice == 0, "%zu jobs answered twice", twice);
    T_CHECK(wrong == 0, "%zu echoes carry another job's payload", wrong);
    T_CHECK(other == 0, "%zu jobs ended neither OK nor quarantined", other);
    T_CHECK(disorder == 0, "%zu stream jobs answered out of order", disorder);
    T_CHECK(g.accepted == submitted && g.completed + g.failed == submitted,
            "stats agree: accepted %lu, answered %lu, submitted %zu", (unsigned long)g.accepted,
            (unsigned long)(g.completed + g.failed), submitted);
    T_CHECK(g.crashed >= kills / 2, "crashes counted (%lu for %zu kills)", (unsigned long)g.crashed,
            kills);
    fixture_free(&f);
    free(payloads);
    T_DONE();
}
