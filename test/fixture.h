/* fixture.h - an engine inside the test process, with the drill handlers as
 * job kinds and a record of every outcome, for the integration tests and
 * the benchmark. The test process is the supervisor: its workers are real
 * forked processes, their deaths real signals. */
#ifndef MQFORK_TEST_FIXTURE_H
#define MQFORK_TEST_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/config.h"
#include "shm/statblock.h"
#include "shm/stats.h"
#include "supervisor/engine.h"
#include "worker/registry.h"

struct fixture;

/* What happened to one submitted job. */
struct record {
    struct fixture *f;
    int outcomes; /* must end as exactly 1 */
    enum job_status status;
    uint32_t attempts;
    uint64_t order; /* position among all outcomes, from 1 */
    size_t len;
    char data[64]; /* start of the result or error text */
};

struct fixture {
    struct conf conf; /* adjust between fixture_init and fixture_start */
    struct registry registry;
    struct loop *loop;
    struct engine *e;
    int echo, spin, crash, hang; /* kind indices */
    struct {
        const char *name, *handler;
        const struct conf_params *params;
        int *index;
    } extra[8];
    unsigned nextra;
    const struct stats_block_spec *blocks[4]; /* declared at fixture_start */
    unsigned nblocks;
    struct record *recs;
    size_t nrecs;
    uint64_t answered;
};

/* Defaults for a small pool, instance named after the test and its pid. */
void fixture_init(struct fixture *f, const char *name, size_t nrecs);
/* Register one more job kind at fixture_start; its index lands in *INDEX. */
void fixture_add_kind(struct fixture *f, const char *name, const char *handler,
                      const struct conf_params *params, int *index);
/* Declare a named counter block at fixture_start (engine_declare_block). */
void fixture_declare_block(struct fixture *f, const struct stats_block_spec *spec);
void fixture_start(struct fixture *f);
void fixture_free(struct fixture *f);

/* Submit job number IDX (its outcome lands in recs[IDX]). */
enum job_status fixture_submit(struct fixture *f, size_t idx, int kind, const void *payload,
                               size_t len, const char *stream, enum conf_priority prio,
                               uint32_t timeout_ms, uint32_t retries);

/* The outcome callback fixture_submit uses; ctx is a struct record. */
void fixture_record_done(void *ctx, const struct engine_outcome *o);

/* Turn the engine until COND(f, arg) holds or LIMIT_S passes; returns COND. */
bool fixture_run_until(struct fixture *f, bool (*cond)(struct fixture *, void *), void *arg,
                       double limit_s);

/* Conditions for fixture_run_until. */
bool fixture_all_answered(struct fixture *f, void *n_submitted);
bool fixture_pool_ready(struct fixture *f, void *unused);
/* At least *(unsigned *)n workers hold a job (as the statistics say). */
bool fixture_workers_busy(struct fixture *f, void *n);

/* A configuration equal to the running one, with one route per kind named
 * as fixture_start named it (extra kinds without their params), for
 * engine_reload. Free with conf_free. */
int fixture_reload_conf(const struct fixture *f, struct conf *c);

/* Every record below N has exactly one outcome. */
bool fixture_each_once(const struct fixture *f, size_t n);

/* A consistent copy of the global statistics. */
void fixture_stats(const struct fixture *f, struct stats_global *out);

double fixture_now(void);

#endif
