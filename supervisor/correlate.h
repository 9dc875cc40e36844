/* correlate.h - one route's correlation windows (`correlate:`): the
 * messages of its filters that make the same key are held until every part
 * has come, then become one job; a key still incomplete window_ms after its
 * first part is expired. At most max_open keys are open: past it the oldest
 * is expired early (overflowed).
 *
 *   part -> correlate_add: HELD | DUPLICATE | REPLACED | COMPLETE (the
 *           complete callback ran) | TOO_LARGE | NOMEM
 *   time -> correlate_expire: each key past its window to the expire callback
 *
 * Keys are found by XXH3 and compared in full. Each part carries an opaque
 * context of the caller's (a request): the table hands it back, never frees
 * it. No clock and no loop: the caller passes the time and arms a timer for
 * correlate_next_ns. */
#ifndef MQFORK_SUPERVISOR_CORRELATE_H
#define MQFORK_SUPERVISOR_CORRELATE_H

#include <stddef.h>
#include <stdint.h>

#include "conf/config.h"
#include "shm/statblock.h"

/* Bytes of a key: a longer one is refused by the caller. */
#define CORRELATE_KEY_MAX 256

struct correlate;

/* The figures of every route's correlation together: the block "correlate". */
struct correlate_figures {
    uint64_t parts, completed, duplicates, replaced, expired, overflowed, too_large;
    uint64_t open, bytes; /* gauges */
};

extern const struct stats_block_spec correlate_stats_spec;

/* A key's parts as the table hands them over, in the configured order. */
struct correlate_set {
    const char *key;
    size_t nparts;
    const char *const *names; /* the configured part names */
    uint32_t have;            /* bit i: part i came */
    size_t last;              /* the part that came last */
    struct {
        const uint8_t *data;
        size_t len;
        void *ctx;
    } part[CONF_ROUTE_FILTERS_MAX];
};

/* Why a key left the table incomplete. */
enum correlate_end {
    CORRELATE_EXPIRED,    /* its window passed */
    CORRELATE_OVERFLOWED, /* max_open keys were open and it was the oldest */
    CORRELATE_DROPPED,    /* its route's correlation changed or went (reload), or shutdown */
};

/* What the owner does with a set: it owns every part's ctx from then on;
 * the set's bytes are valid during the call only. */
struct correlate_ops {
    void (*complete)(void *owner, const struct correlate_set *set);
    void (*incomplete)(void *owner, const struct correlate_set *set, enum correlate_end why);
};

/* A table for CONF (copied), whose keys hold at most MAX_BYTES of framed
 * payload (limits.max_payload: what the job may carry). FIG counts (shared
 * by every route's table). NULL when out of memory. */
struct correlate *correlate_new(const struct conf_correlate *conf, size_t max_bytes,
                                struct correlate_figures *fig, const struct correlate_ops *ops,
                                void *owner);

/* Whether a table of A keeps its meaning under B (the same key, parts,
 * window and bound): a reload keeps its open keys then. */
bool correlate_conf_equal(const struct conf_correlate *a, const struct conf_correlate *b);

/* Follow a new limits.max_payload (a reload that kept the table). */
void correlate_set_max_bytes(struct correlate *t, size_t max_bytes);

enum correlate_verdict {
    CORRELATE_HELD,      /* kept; the key waits for more parts */
    CORRELATE_DUPLICATE, /* the same bytes are held for this part: CTX not taken */
    CORRELATE_REPLACED,  /* other bytes were held for this part: *OLD is their ctx */
    CORRELATE_COMPLETE,  /* the last part: the complete callback has run */
    CORRELATE_TOO_LARGE, /* the key's framed payload would pass max_bytes: CTX not taken */
    CORRELATE_NOMEM,     /* CTX not taken */
};

/* Part PART (index of the filter the message matched) of KEY (KEY_LEN
 * bytes) with PAYLOAD came at NOW_NS. May first expire the oldest key
 * (incomplete callback) to stay within max_open. */
enum correlate_verdict correlate_add(struct correlate *t, const char *key, size_t key_len,
                                     size_t part, const void *payload, size_t len, void *ctx,
                                     uint64_t now_ns, void **old);

/* When the oldest open key's window ends, or UINT64_MAX with none open. */
uint64_t correlate_next_ns(const struct correlate *t);

/* Every key whose window ended by NOW_NS to the incomplete callback. */
void correlate_expire(struct correlate *t, uint64_t now_ns);

/* Every open key to the incomplete callback (CORRELATE_DROPPED), then the
 * table freed. NULL does nothing. */
void correlate_free(struct correlate *t);

/* The job's payload for a complete SET (README, "Correlation windows"): a
 * JSON object by part name when every part is JSON, else each part as a
 * big-endian u16 name length, the name, a big-endian u32 payload length and
 * the payload. Malloc'd, its length in *LEN; NULL when out of memory. */
uint8_t *correlate_frame(const struct correlate_set *set, size_t *len);

#endif
