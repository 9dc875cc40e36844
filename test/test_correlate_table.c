/* test_correlate_table.c - supervisor/correlate.c alone, with times made
 * up by the test: a key completed in any order, duplicates and replaced
 * parts, expiry in the order of first parts, overflow of the oldest,
 * max_bytes, the keys handed over at free, and both framings byte for byte
 * (run under ASan by tools/check). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "supervisor/correlate.h"
#include "test/t.h"

#define MS 1000000ull

static struct correlate_figures fig;
static char completed[256], incomplete[256]; /* what was handed over: KEY=FRAME, KEY: PARTS */
static size_t completed_len;
static enum correlate_end last_end;
static int ctx_live; /* contexts the table holds or handed over unfreed */

static void *new_ctx(void)
{
    ctx_live++;
    return malloc(1);
}

static void free_ctx(void *ctx)
{
    if (ctx)
        ctx_live--;
    free(ctx);
}

static void on_complete(void *owner, const struct correlate_set *set)
{
    size_t len = 0;
    uint8_t *frame = correlate_frame(set, &len);
    T_REQUIRE(frame, "correlate_frame");
    size_t klen = strlen(set->key);
    T_REQUIRE(klen + 1 + len < sizeof(completed), "a frame of %zu bytes", len);
    memcpy(completed, set->key, klen);
    completed[klen] = '=';
    memcpy(completed + klen + 1, frame, len);
    completed_len = klen + 1 + len;
    completed[completed_len] = '\0';
    free(frame);
    for (size_t i = 0; i < set->nparts; i++)
        free_ctx(set->part[i].ctx);
}

static void on_incomplete(void *owner, const struct correlate_set *set, enum correlate_end why)
{
    size_t at = (size_t)snprintf(incomplete, sizeof(incomplete), "%s:", set->key);
    for (size_t i = 0; i < set->nparts; i++)
        if (set->have & (1u << i)) {
            at += (size_t)snprintf(incomplete + at, sizeof(incomplete) - at, " %s", set->names[i]);
            free_ctx(set->part[i].ctx);
        }
    last_end = why;
}

static const struct correlate_ops ops = {.complete = on_complete, .incomplete = on_incomplete};

static struct correlate *make(uint32_t window_ms, uint32_t max_open, size_t max_bytes)
{
    static char *names[] = {"result", "trace", "head"};
    struct conf_correlate cc = {.enabled = true,
                                .key = "{1}",
                                .parts = {.items = names, .count = 3},
                                .window_ms = window_ms,
                                .max_open = max_open};
    struct correlate *t = correlate_new(&cc, max_bytes, &fig, &ops, NULL);
    T_REQUIRE(t, "correlate_new");
    return t;
}

static enum correlate_verdict add(struct correlate *t, const char *key, size_t part,
                                  const char *payload, uint64_t now)
{
    void *old = NULL, *ctx = new_ctx();
    enum correlate_verdict v =
        correlate_add(t, key, strlen(key), part, payload, strlen(payload), ctx, now, &old);
    if (v == CORRELATE_DUPLICATE || v == CORRELATE_TOO_LARGE || v == CORRELATE_NOMEM)
        free_ctx(ctx);
    free_ctx(old);
    return v;
}

static void test_complete_and_duplicates(void)
{
    struct correlate *t = make(1000, 10, 1 << 20);
    T_CHECK(add(t, "r1", 2, "\"H\"", 0) == CORRELATE_HELD, "head held");
    T_CHECK(add(t, "r1", 2, "\"H\"", 1) == CORRELATE_DUPLICATE, "same bytes: duplicate");
    T_CHECK(add(t, "r1", 0, "1", 2) == CORRELATE_HELD, "result held");
    T_CHECK(add(t, "r1", 0, "2", 3) == CORRELATE_REPLACED, "other bytes: replaced");
    T_CHECK(fig.open == 1 && fig.bytes == 4, "open %llu, bytes %llu", (unsigned long long)fig.open,
            (unsigned long long)fig.bytes);
    T_CHECK(add(t, "r1", 1, " [1, 2] ", 4) == CORRELATE_COMPLETE, "trace completes");
    T_CHECK(!strcmp(completed, "r1={\"result\":2,\"trace\": [1, 2] ,\"head\":\"H\"}"), "%s",
            completed);
    T_CHECK(fig.completed == 1 && fig.duplicates == 1 && fig.replaced == 1 && fig.open == 0 &&
                fig.bytes == 0,
            "figures after completion");
    T_CHECK(correlate_next_ns(t) == UINT64_MAX, "nothing open");
    T_CHECK(add(t, "r1", 0, "1", 5) == CORRELATE_HELD, "a completed key opens again");
    correlate_free(t);
    T_CHECK(last_end == CORRELATE_DROPPED && !strcmp(incomplete, "r1: result"),
            "free hands over what is open: %s", incomplete);
}

static void test_binary_frame(void)
{
    struct correlate *t = make(1000, 10, 1 << 20);
    add(t, "k", 0, "{}", 0);
    add(t, "k", 1, "not json", 0);
    add(t, "k", 2, "{\"a\":1} x", 0); /* JSON and then more: not JSON */
    static const char want[] = "k=\x00\x06result\x00\x00\x00\x02{}"
                               "\x00\x05trace\x00\x00\x00\x08not json"
                               "\x00\x04head\x00\x00\x00\x09{\"a\":1} x";
    T_CHECK(completed_len == sizeof(want) - 1 && !memcmp(completed, want, sizeof(want) - 1),
            "the length-prefixed frame");
    correlate_free(t);
}

static void test_expiry_and_overflow(void)
{
    memset(&fig, 0, sizeof(fig));
    struct correlate *t = make(100, 2, 1 << 20);
    add(t, "a", 0, "1", 0 * MS);
    add(t, "b", 1, "1", 10 * MS);
    add(t, "a", 2, "1", 50 * MS); /* a later part does not move a's window */
    T_CHECK(correlate_next_ns(t) == 100 * MS, "a's window ends first");
    correlate_expire(t, 99 * MS);
    T_CHECK(fig.expired == 0, "nothing before its window ends");
    correlate_expire(t, 100 * MS);
    T_CHECK(fig.expired == 1 && !strcmp(incomplete, "a: result head") &&
                last_end == CORRELATE_EXPIRED,
            "a expired with its parts: %s", incomplete);
    add(t, "c", 0, "1", 20 * MS);
    add(t, "d", 0, "1", 30 * MS); /* a third open key: the oldest, b, goes */
    T_CHECK(fig.overflowed == 1 && !strcmp(incomplete, "b: trace") &&
                last_end == CORRELATE_OVERFLOWED,
            "b overflowed: %s", incomplete);
    T_CHECK(fig.open == 2, "two open");
    correlate_expire(t, 1000 * MS);
    T_CHECK(fig.expired == 3 && fig.open == 0, "c and d expired");
    correlate_free(t);
}

static void test_max_bytes(void)
{
    /* The frame of three empty parts: 6 bytes + the name each = 33. */
    struct correlate *t = make(100, 10, 33 + 4);
    T_CHECK(add(t, "x", 0, "12345", 0) == CORRELATE_TOO_LARGE, "5 bytes do not fit in 4");
    T_CHECK(add(t, "x", 0, "12", 0) == CORRELATE_HELD, "2 do");
    T_CHECK(add(t, "x", 1, "123", 0) == CORRELATE_TOO_LARGE, "2 + 3 do not");
    T_CHECK(add(t, "x", 0, "1234", 0) == CORRELATE_REPLACED, "a replacement counts alone");
    T_CHECK(fig.too_large == 2, "too_large %llu", (unsigned long long)fig.too_large);
    correlate_free(t);
}

static void test_conf_equal(void)
{
    char *names[] = {"a", "b"}, *other[] = {"a", "c"};
    struct conf_correlate a = {.enabled = true,
                               .key = "{1}",
                               .parts = {.items = names, .count = 2},
                               .window_ms = 10,
                               .max_open = 5};
    struct conf_correlate b = a;
    T_CHECK(correlate_conf_equal(&a, &b), "equal");
    b.parts.items = other;
    T_CHECK(!correlate_conf_equal(&a, &b), "a part renamed");
    b = a;
    b.window_ms = 11;
    T_CHECK(!correlate_conf_equal(&a, &b), "another window");
}

int main(void)
{
    test_complete_and_duplicates();
    test_binary_frame();
    test_expiry_and_overflow();
    test_max_bytes();
    test_conf_equal();
    T_CHECK(ctx_live == 0, "%d contexts were not handed back", ctx_live);
    T_DONE();
}
