/* correlate.c - one route's correlation windows (correlate.h): a chained
 * hash table of open keys, each also on a list in the order of its first
 * part, which is the order its window ends in (every window is as long) and
 * the order overflow expires them in. */
#include "supervisor/correlate.h"

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "proto/topic.h"

#define F(kind, member, name, help) STATS_FIELD(kind, struct correlate_figures, member, name, help)

static const struct stats_field_desc correlate_fields[] = {
    F(STATS_COUNTER, parts, "parts", "Messages held as a part of a correlation key."),
    F(STATS_COUNTER, completed, "completed", "Keys whose every part came: each became one job."),
    F(STATS_COUNTER, duplicates, "duplicates",
      "Parts dropped: the same bytes were held for the key's part."),
    F(STATS_COUNTER, replaced, "replaced",
      "Parts that replaced other bytes held for the key's part."),
    F(STATS_COUNTER, expired, "expired",
      "Keys dropped incomplete (window passed, reload or shutdown), each reported."),
    F(STATS_COUNTER, overflowed, "overflowed",
      "Keys expired early, the oldest open past max_open, each reported."),
    F(STATS_COUNTER, too_large, "too_large",
      "Parts refused: the key's job would pass limits.max_payload."),
    F(STATS_GAUGE, open, "open", "Keys open now."),
    F(STATS_GAUGE, bytes, "bytes", "Bytes of the parts held now."),
};

const struct stats_block_spec correlate_stats_spec = {
    .name = "correlate",
    .fields = correlate_fields,
    .nfields = sizeof(correlate_fields) / sizeof(correlate_fields[0]),
    .size = sizeof(struct correlate_figures),
};

struct part {
    uint8_t *data; /* NULL: not come yet */
    size_t len;
    void *ctx;
};

/* One open key. */
struct entry {
    struct entry *chain;         /* next in its bucket */
    struct entry *older, *newer; /* by first part */
    uint64_t hash, deadline_ns;
    uint32_t have;
    size_t last;
    size_t framed; /* bytes of its length-prefixed frame, missing parts as empty */
    size_t key_len;
    char *key; /* in the same allocation, after the parts */
    struct part part[];
};

struct correlate {
    char *key_tpl;
    char **names;
    size_t nparts, base_framed, max_bytes;
    uint32_t window_ms, max_open;
    struct correlate_figures *fig;
    const struct correlate_ops *ops;
    void *owner;
    struct entry **bucket;
    size_t nbuckets, count;
    struct entry *oldest, *newest;
};

/* ---- lifetime */

struct correlate *correlate_new(const struct conf_correlate *conf, size_t max_bytes,
                                struct correlate_figures *fig, const struct correlate_ops *ops,
                                void *owner)
{
    struct correlate *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    *t = (struct correlate){.nparts = conf->parts.count,
                            .max_bytes = max_bytes,
                            .window_ms = conf->window_ms,
                            .max_open = conf->max_open,
                            .fig = fig,
                            .ops = ops,
                            .owner = owner,
                            .nbuckets = 64};
    t->key_tpl = strdup(conf->key);
    t->names = calloc(t->nparts ? t->nparts : 1, sizeof(*t->names));
    t->bucket = calloc(t->nbuckets, sizeof(*t->bucket));
    bool ok = t->key_tpl && t->names && t->bucket;
    for (size_t i = 0; ok && i < t->nparts; i++) {
        ok = (t->names[i] = strdup(conf->parts.items[i])) != NULL;
        t->base_framed += 6 + (ok ? strlen(t->names[i]) : 0);
    }
    if (!ok) {
        t->count = 0;
        correlate_free(t);
        return NULL;
    }
    return t;
}

bool correlate_conf_equal(const struct conf_correlate *a, const struct conf_correlate *b)
{
    return a->enabled == b->enabled &&
           (!a->enabled || (!strcmp(a->key, b->key) && conf_strings_equal(&a->parts, &b->parts) &&
                            a->window_ms == b->window_ms && a->max_open == b->max_open));
}

void correlate_set_max_bytes(struct correlate *t, size_t max_bytes)
{
    t->max_bytes = max_bytes;
}

/* ---- the table */

static struct entry **slot_of(struct correlate *t, uint64_t hash)
{
    return &t->bucket[hash & (t->nbuckets - 1)];
}

static struct entry *find(struct correlate *t, uint64_t hash, const char *key, size_t len)
{
    for (struct entry *e = *slot_of(t, hash); e; e = e->chain)
        if (e->hash == hash && e->key_len == len && memcmp(e->key, key, len) == 0)
            return e;
    return NULL;
}

static void grow(struct correlate *t)
{
    size_t n = t->nbuckets * 2;
    struct entry **fresh = calloc(n, sizeof(*fresh));
    if (!fresh)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < t->nbuckets; i++)
        for (struct entry *e = t->bucket[i], *next; e; e = next) {
            next = e->chain;
            e->chain = fresh[e->hash & (n - 1)];
            fresh[e->hash & (n - 1)] = e;
        }
    free(t->bucket);
    t->bucket = fresh;
    t->nbuckets = n;
}

/* Take E off the table and the list (its parts stay with it). */
static void unlink_entry(struct correlate *t, struct entry *e)
{
    struct entry **p = slot_of(t, e->hash);
    while (*p != e)
        p = &(*p)->chain;
    *p = e->chain;
    *(e->newer ? &e->newer->older : &t->newest) = e->older;
    *(e->older ? &e->older->newer : &t->oldest) = e->newer;
    t->count--;
    t->fig->open--;
}

static struct entry *open_key(struct correlate *t, uint64_t hash, const char *key, size_t len,
                              uint64_t now_ns)
{
    struct entry *e = calloc(1, sizeof(*e) + t->nparts * sizeof(e->part[0]) + len + 1);
    if (!e)
        return NULL;
    e->hash = hash;
    e->deadline_ns = now_ns + (uint64_t)t->window_ms * 1000000;
    e->framed = t->base_framed;
    e->key_len = len;
    e->key = (char *)&e->part[t->nparts];
    memcpy(e->key, key, len);
    if (t->count >= t->nbuckets)
        grow(t);
    struct entry **slot = slot_of(t, hash);
    e->chain = *slot;
    *slot = e;
    e->older = t->newest;
    *(t->newest ? &t->newest->newer : &t->oldest) = e;
    t->newest = e;
    t->count++;
    t->fig->open++;
    return e;
}

/* Hand E's parts to the owner (COMPLETE, or incomplete for WHY), then free it. */
static void hand_over(struct correlate *t, struct entry *e, bool complete, enum correlate_end why)
{
    unlink_entry(t, e);
    struct correlate_set set = {.key = e->key,
                                .nparts = t->nparts,
                                .names = (const char *const *)t->names,
                                .have = e->have,
                                .last = e->last};
    for (size_t i = 0; i < t->nparts; i++) {
        set.part[i].data = e->part[i].data;
        set.part[i].len = e->part[i].len;
        set.part[i].ctx = e->part[i].ctx;
    }
    if (complete)
        t->ops->complete(t->owner, &set);
    else
        t->ops->incomplete(t->owner, &set, why);
    for (size_t i = 0; i < t->nparts; i++) {
        t->fig->bytes -= e->part[i].len;
        free(e->part[i].data);
    }
    free(e);
}

void correlate_free(struct correlate *t)
{
    if (!t)
        return;
    while (t->oldest) {
        t->fig->expired++;
        hand_over(t, t->oldest, false, CORRELATE_DROPPED);
    }
    for (size_t i = 0; t->names && i < t->nparts; i++)
        free(t->names[i]);
    free(t->names);
    free(t->key_tpl);
    free(t->bucket);
    free(t);
}

/* ---- parts */

/* Keep PAYLOAD as part I of E (replacing what it held). */
static bool hold(struct correlate *t, struct entry *e, size_t i, const void *payload, size_t len,
                 void *ctx)
{
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return false;
    memcpy(copy, payload, len);
    struct part *p = &e->part[i];
    e->framed += len - p->len;
    t->fig->bytes += len - p->len;
    free(p->data);
    *p = (struct part){.data = copy, .len = len, .ctx = ctx};
    e->have |= 1u << i;
    e->last = i;
    t->fig->parts++;
    return true;
}

/* A new key needs room: the oldest open one goes, reported. */
static void make_room(struct correlate *t)
{
    while (t->oldest && t->count >= t->max_open) {
        t->fig->overflowed++;
        hand_over(t, t->oldest, false, CORRELATE_OVERFLOWED);
    }
}

enum correlate_verdict correlate_add(struct correlate *t, const char *key, size_t key_len,
                                     size_t part, const void *payload, size_t len, void *ctx,
                                     uint64_t now_ns, void **old)
{
    uint64_t hash = XXH3_64bits(key, key_len);
    struct entry *e = find(t, hash, key, key_len);
    struct part *p = e ? &e->part[part] : NULL;
    if (p && p->data && p->len == len && memcmp(p->data, payload, len) == 0) {
        t->fig->duplicates++;
        return CORRELATE_DUPLICATE;
    }
    if ((e ? e->framed - (p->data ? p->len : 0) : t->base_framed) + len > t->max_bytes) {
        t->fig->too_large++;
        return CORRELATE_TOO_LARGE;
    }
    if (!e) {
        make_room(t);
        if (!(e = open_key(t, hash, key, key_len, now_ns)))
            return CORRELATE_NOMEM;
        p = &e->part[part];
    }
    void *was = p->data ? p->ctx : NULL;
    if (!hold(t, e, part, payload, len, ctx)) {
        if (!e->have) {
            unlink_entry(t, e);
            free(e);
        }
        return CORRELATE_NOMEM;
    }
    if (was) {
        t->fig->replaced++;
        *old = was;
    }
    if (e->have + 1 == 1u << t->nparts) {
        t->fig->completed++;
        hand_over(t, e, true, CORRELATE_EXPIRED);
        return CORRELATE_COMPLETE;
    }
    return was ? CORRELATE_REPLACED : CORRELATE_HELD;
}

uint64_t correlate_next_ns(const struct correlate *t)
{
    return t->oldest ? t->oldest->deadline_ns : UINT64_MAX;
}

void correlate_expire(struct correlate *t, uint64_t now_ns)
{
    while (t->oldest && t->oldest->deadline_ns <= now_ns) {
        t->fig->expired++;
        hand_over(t, t->oldest, false, CORRELATE_EXPIRED);
    }
}

/* ---- framing */

/* Whether the LEN bytes at S are one JSON value, and only that (white
 * space around it allowed): valid UTF-8, no byte-order mark (cJSON skips
 * one, and inside an object it would be an error). */
static bool is_json(const uint8_t *s, size_t len)
{
    if (!len || (len >= 3 && s[0] == 0xef && s[1] == 0xbb && s[2] == 0xbf) || !utf8_valid(s, len))
        return false;
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithLengthOpts((const char *)s, len, &end, false);
    if (!v)
        return false;
    cJSON_Delete(v);
    for (size_t at = (size_t)((const uint8_t *)end - s); at < len; at++)
        if (!strchr(" \t\r\n", s[at]) || !s[at])
            return false;
    return true;
}

static uint8_t *append(uint8_t *at, const void *src, size_t len)
{
    memcpy(at, src, len);
    return at + len;
}

/* {"name":<part>,...}: each part's bytes as they came. */
static uint8_t *frame_json(const struct correlate_set *set, size_t *len)
{
    size_t n = 2;
    for (size_t i = 0; i < set->nparts; i++)
        n += strlen(set->names[i]) + 4 + set->part[i].len;
    uint8_t *out = malloc(n), *at = out;
    if (!out)
        return NULL;
    *at++ = '{';
    for (size_t i = 0; i < set->nparts; i++) {
        at = append(at, i ? ",\"" : "\"", i ? 2 : 1);
        at = append(at, set->names[i], strlen(set->names[i]));
        at = append(at, "\":", 2);
        at = append(at, set->part[i].data, set->part[i].len);
    }
    *at++ = '}';
    *len = (size_t)(at - out);
    return out;
}

static uint8_t *frame_binary(const struct correlate_set *set, size_t *len)
{
    size_t n = 0;
    for (size_t i = 0; i < set->nparts; i++)
        n += 6 + strlen(set->names[i]) + set->part[i].len;
    uint8_t *out = malloc(n ? n : 1), *at = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < set->nparts; i++) {
        size_t nl = strlen(set->names[i]), pl = set->part[i].len;
        uint8_t head[4] = {(uint8_t)(nl >> 8), (uint8_t)nl};
        at = append(append(at, head, 2), set->names[i], nl);
        head[0] = (uint8_t)(pl >> 24), head[1] = (uint8_t)(pl >> 16);
        head[2] = (uint8_t)(pl >> 8), head[3] = (uint8_t)pl;
        at = append(append(at, head, 4), set->part[i].data, pl);
    }
    *len = n;
    return out;
}

uint8_t *correlate_frame(const struct correlate_set *set, size_t *len)
{
    bool json = true;
    for (size_t i = 0; json && i < set->nparts; i++)
        json = is_json(set->part[i].data, set->part[i].len);
    return json ? frame_json(set, len) : frame_binary(set, len);
}
