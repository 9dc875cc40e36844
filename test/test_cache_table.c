/* test_cache_table.c - supervisor/cache.c alone, with outcomes made up by
 * the test: waiters answered in arrival order, failures fanned out and not
 * kept, LRU order, ttl_s, results larger than max_mb, and a reload or
 * retirement while jobs run (run under ASan by tools/check). */
#include <stdio.h>
#include <string.h>

#include "supervisor/cache.h"
#include "test/t.h"

struct waiter {
    struct cache_waiter link; /* first, as the routes' requests have it */
    int id;
};

static int answered[16], order[16], nanswered;
static enum job_status last_status;

static void answer(struct cache_waiter *w, const struct engine_outcome *o)
{
    struct waiter *x = (struct waiter *)w;
    answered[x->id]++;
    order[nanswered++] = x->id;
    last_status = o->status;
}

static const struct conf_params no_params;
static struct cache_figures fig;

static struct cache *make(double ttl_s, uint32_t max_mb)
{
    struct conf_cache cc = {.enabled = true, .ttl_s = ttl_s, .max_mb = max_mb};
    struct cache *c = cache_new("test.echo", &no_params, &cc, 3, &fig);
    T_REQUIRE(c, "cache_new");
    return c;
}

static enum cache_verdict begin(struct cache *c, const char *key, size_t len, struct waiter *w,
                                uint64_t now, struct cache_flight **f)
{
    const void *data;
    size_t dlen;
    return cache_begin(c, key, len, &w->link, now, &data, &dlen, f);
}

static struct engine_outcome result(enum job_status st, const char *text)
{
    return (struct engine_outcome){
        .status = st, .data = (const uint8_t *)text, .len = strlen(text)};
}

static void test_coalesce_and_failure(void)
{
    struct cache *c = make(60, 1);
    struct waiter w[4] = {{.id = 0}, {.id = 1}, {.id = 2}, {.id = 3}};
    struct cache_flight *f = NULL, *g = NULL;
    T_CHECK(begin(c, "x", 1, &w[0], 1, &f) == CACHE_MISS, "first: miss");
    T_CHECK(begin(c, "x", 1, &w[1], 2, &g) == CACHE_JOINED, "second: joined");
    T_CHECK(begin(c, "x", 1, &w[2], 3, &g) == CACHE_JOINED, "third: joined");
    T_CHECK(begin(c, "x", 1, &w[3], 3, &g) == CACHE_FULL, "fourth: over max_waiters");
    struct engine_outcome bad = result(JOB_E_FAILED, "no");
    nanswered = 0;
    cache_finish(f, &bad, 4, answer);
    T_CHECK(nanswered == 3 && order[0] == 0 && order[1] == 1 && order[2] == 2,
            "all three answered in arrival order");
    T_CHECK(last_status == JOB_E_FAILED, "with the failure");
    T_CHECK(begin(c, "x", 1, &w[3], 5, &f) == CACHE_MISS, "a failure is not kept");
    struct engine_outcome ok = result(JOB_OK, "yes");
    cache_finish(f, &ok, 6, answer);
    T_CHECK(begin(c, "x", 1, &w[3], 7, &g) == CACHE_HIT, "a success is kept");
    T_CHECK(begin(c, "xy", 2, &w[3], 7, &f) == CACHE_MISS, "another key is another job");
    cache_finish(f, &ok, 8, answer);
    cache_retire(c);
}

static void test_ttl(void)
{
    struct cache *c = make(1, 1);
    struct waiter w = {.id = 0};
    struct cache_flight *f = NULL;
    T_CHECK(begin(c, "t", 1, &w, 1000, &f) == CACHE_MISS, "miss");
    struct engine_outcome ok = result(JOB_OK, "r");
    cache_finish(f, &ok, 1000, answer);
    uint64_t expired = fig.expired;
    T_CHECK(begin(c, "t", 1, &w, 1000 + 999999999, &f) == CACHE_HIT, "hit just before 1 s");
    T_CHECK(begin(c, "t", 1, &w, 1000 + 1000000000, &f) == CACHE_MISS, "miss at 1 s");
    T_CHECK(fig.expired == expired + 1, "expiry counted");
    cache_finish(f, &ok, 2000000000, answer);
    cache_retire(c);
}

static void test_too_large(void)
{
    static char big[(1 << 20) + 1];
    struct cache *c = make(60, 1);
    struct waiter w = {.id = 0};
    struct cache_flight *f = NULL;
    T_CHECK(begin(c, "k", 1, &w, 1, &f) == CACHE_MISS, "miss");
    struct engine_outcome huge = {
        .status = JOB_OK, .data = (const uint8_t *)big, .len = sizeof(big)};
    uint64_t too_large = fig.too_large;
    cache_finish(f, &huge, 2, answer);
    T_CHECK(fig.too_large == too_large + 1, "a result over max_mb is not kept");
    T_CHECK(begin(c, "k", 1, &w, 3, &f) == CACHE_MISS, "so the next one runs");
    cache_finish(f, &huge, 4, answer);
    cache_retire(c);
}

/* A reload that changes the params, and a route removed, while a job runs:
 * its waiters are answered, nothing is kept, nothing leaks. */
static void test_reload_and_retire(void)
{
    struct cache *c = make(60, 1);
    struct waiter w[3] = {{.id = 0}, {.id = 1}, {.id = 2}};
    struct cache_flight *f = NULL, *g = NULL;
    T_CHECK(begin(c, "r", 1, &w[0], 1, &f) == CACHE_MISS, "miss");
    struct conf_param p = {.key = "voice", .value = "slt"};
    struct conf_params params = {.items = &p, .count = 1};
    struct conf_cache cc = {.enabled = true, .ttl_s = 60, .max_mb = 1};
    T_CHECK(cache_configure(c, "test.echo", &params, &cc, 3) == 0, "reconfigured");
    T_CHECK(begin(c, "r", 1, &w[1], 2, &g) == CACHE_MISS, "other params: not joined");
    struct engine_outcome ok = result(JOB_OK, "r");
    nanswered = 0;
    cache_finish(f, &ok, 3, answer);
    T_CHECK(nanswered == 1 && order[0] == 0, "the old job's waiter answered");
    T_CHECK(begin(c, "r", 1, &w[2], 4, &f) == CACHE_JOINED, "the old result was not kept");
    cache_retire(c); /* g's job still runs */
    nanswered = 0;
    cache_finish(g, &ok, 5, answer);
    T_CHECK(nanswered == 2, "a retired cache's waiters answered: %d", nanswered);
}

int main(void)
{
    test_coalesce_and_failure();
    test_ttl();
    test_too_large();
    test_reload_and_retire();
    T_CHECK(fig.entries == 0 && fig.bytes == 0, "retired caches hold nothing: %lu entries",
            (unsigned long)fig.entries);
    T_DONE();
}
