/* mqfork/handler.h - everything a job handler needs, whether it is built into
 * mqforkd or loaded as a plugin (`plugins:` in the configuration).
 *
 * A handler turns one job's input bytes into output bytes in a worker
 * process. Its life, and who calls what:
 *
 *   supervisor, when a configuration loads (mqforkd -t, start, reload):
 *     check(params)            say what is wrong with a route's params
 *     out_bound(params)        the most output one job can produce
 *     state_size(params)       bytes of per-stream state that may move
 *                              between workers (0: none)
 *     (on reload, check and out_bound run in a thread of the supervisor
 *     while its loop goes on: they read their arguments only, no globals)
 *   supervisor, once per route before the workers are forked:
 *     preload(params)          load read-only data (a model); every worker
 *                              shares it copy-on-write
 *   each worker, once after fork:
 *     init(params, preloaded)  per-worker state, returned as the context
 *   each worker, for every job:
 *     run(ctx, job)
 *   each worker, when it exits gracefully:
 *     fini(ctx)
 *   supervisor, when the route is gone:
 *     unload(preloaded)
 *
 * The supervisor never runs a job. Everything a handler answers is checked
 * before use: an output longer than the job's capacity, or bytes written
 * past it, fail the job. Every function but run() and name may be NULL.
 *
 * A plugin is a shared object that defines its handlers and registers them:
 *
 *   static const struct mqfork_handler upper = {
 *       .abi = MQFORK_HANDLER_ABI, .name = "example.upper", .run = upper_run};
 *   static int plugin_register(struct mqfork_registry *r)
 *   {
 *       return r->add(r, &upper);
 *   }
 *   MQFORK_PLUGIN(plugin_register)
 *
 * Build it with `cc -shared -fPIC $(pkg-config --cflags mqfork-handler)`.
 * mqforkd loads it before it forks, so it is mapped at the same address in
 * every worker. */
#ifndef MQFORK_HANDLER_H
#define MQFORK_HANDLER_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bumped whenever a struct below changes shape; mqforkd refuses a plugin
 * built against another value. */
#define MQFORK_HANDLER_ABI 3

/* How run() ended. The values are those of the engine's job statuses. */
enum mqfork_status {
    MQFORK_OK = 0,        /* out holds the result */
    MQFORK_FILTERED = 1,  /* nothing to answer (a keepalive, say) */
    MQFORK_BAD_INPUT = 2, /* the input is wrong: out holds a sentence saying why */
    MQFORK_FAILED = 3,    /* something else failed: out holds a sentence saying why */
};

/* One `key: value` of a route's `params:`, as text. */
struct mqfork_param {
    const char *key;
    const char *value;
};

struct mqfork_params {
    const struct mqfork_param *items;
    size_t count;
};

/* Where check() reports problems: one call per problem, ABOUT the param it
 * concerns (or NULL), so mqforkd -t can point at its file:line:column. */
struct mqfork_check {
    void (*problem)(struct mqfork_check *c, const struct mqfork_param *about, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
    void *host;
};

/* The most output one job may produce, which the supervisor computes for
 * each job from its input length without calling the handler:
 * fixed + in_len * per_in_q16 / 65536, rounded up. Room for an error
 * sentence (MQFORK_ERROR_TEXT bytes) is always added. A handler whose
 * output grows fast with its input (speech from text) names the longest
 * input it takes in max_in: longer ones are refused as too_large before
 * they reach it, and the slab is sized for max_in, not limits.max_payload. */
struct mqfork_out_bound {
    uint32_t fixed;
    uint32_t per_in_q16; /* 65536: one output byte per input byte */
    uint32_t max_in;     /* bytes; 0: limits.max_payload */
};

#define MQFORK_ERROR_TEXT 256

/* What the source knew about a job besides its bytes. */
struct mqfork_job_meta {
    uint32_t flags;   /* MQFORK_META_* */
    uint32_t lost;    /* packets the source saw lost right before this one */
    uint64_t time_us; /* the source's timestamp for the input; 0: none */
};

enum {
    MQFORK_META_LAST = 1u << 0, /* the last input of its stream's current unit (an utterance) */
};

struct mqfork_job {
    const uint8_t *in;
    size_t in_len;
    uint8_t *out; /* output buffer, out_cap bytes */
    size_t out_cap;
    size_t out_len;   /* set by run() */
    void *state;      /* the stream's state (state_size bytes), or NULL without a stream */
    bool state_fresh; /* state must be initialized before use */
    struct mqfork_job_meta meta;
};

/* Where this worker keeps the handler's histograms, and how to add to one:
 * use mqfork_observe_ns(). */
struct mqfork_histograms {
    void *data;
    void (*add_ns)(void *data, unsigned i, uint64_t ns);
};

/* Arguments of init(). */
struct mqfork_init {
    const struct mqfork_params *params;
    void *preloaded;    /* what preload() returned, or NULL */
    uint64_t *counters; /* this worker's values of the handler's counters, or NULL */
    unsigned worker;    /* the worker's slot */
    struct mqfork_histograms histograms; /* the handler's histograms (ABI 3) */
};

/* A counter or gauge the handler keeps; mqforkstat shows the sum over the
 * workers under the handler's name. Update with mqfork_count(). */
struct mqfork_counter {
    const char *name; /* [a-z0-9_]+ */
    const char *help;
    bool gauge;
};

/* A histogram of durations the handler keeps (ABI 3), such as the time of
 * each run or the time per second of audio; mqforkstat merges the workers'
 * and shows count, mean and percentiles under the handler's name, and a
 * Prometheus histogram. Record with mqfork_observe_ns(). */
struct mqfork_histogram {
    const char *name; /* [a-z0-9_]+, not the name of one of its counters */
    const char *help;
};

struct mqfork_handler {
    uint32_t abi;     /* MQFORK_HANDLER_ABI */
    const char *name; /* what routes name in `job:`, e.g. "speech.transcribe" */
    void (*check)(const struct mqfork_params *p, struct mqfork_check *c);
    void (*out_bound)(const struct mqfork_params *p, struct mqfork_out_bound *b);
    size_t (*state_size)(const struct mqfork_params *p);
    void *(*preload)(const struct mqfork_params *p); /* NULL result: failure */
    void (*unload)(void *preloaded);
    void *(*init)(const struct mqfork_init *in); /* NULL result: failure, the worker exits */
    void (*fini)(void *ctx);
    enum mqfork_status (*run)(void *ctx, struct mqfork_job *job);
    const struct mqfork_counter *counters;
    unsigned ncounters;
    const struct mqfork_histogram *histograms;
    unsigned nhistograms;
};

/* Handed to a plugin's registration function. */
struct mqfork_registry {
    uint32_t abi; /* the daemon's MQFORK_HANDLER_ABI */
    /* Register H (which must outlive the plugin's use): 0, or -1 when the
     * name is taken or H is malformed (mqforkd says why). */
    int (*add)(struct mqfork_registry *r, const struct mqfork_handler *h);
    void *host;
};

#define MQFORK_PLUGIN_ABI_SYMBOL      "mqfork_plugin_abi"
#define MQFORK_PLUGIN_REGISTER_SYMBOL "mqfork_plugin_register"

/* Define the two symbols mqforkd looks for in a plugin. */
#define MQFORK_PLUGIN(register_fn)                                                                 \
    __attribute__((visibility("default"))) const uint32_t mqfork_plugin_abi = MQFORK_HANDLER_ABI;  \
    __attribute__((visibility("default"))) int mqfork_plugin_register(struct mqfork_registry *r);  \
    int mqfork_plugin_register(struct mqfork_registry *r)                                          \
    {                                                                                              \
        return register_fn(r);                                                                     \
    }

/* ---- helpers ------------------------------------------------------------ */

static inline const struct mqfork_param *mqfork_param_find(const struct mqfork_params *p,
                                                           const char *key)
{
    for (size_t i = 0; p && i < p->count; i++)
        if (strcmp(p->items[i].key, key) == 0)
            return &p->items[i];
    return NULL;
}

/* Parse param KEY as an integer in [min, max] into *out (left as is when
 * absent). On a problem, report it to C (when not NULL) and return -1. */
static inline int mqfork_param_long(const struct mqfork_params *p, const char *key, long min,
                                    long max, long *out, struct mqfork_check *c)
{
    const struct mqfork_param *param = mqfork_param_find(p, key);
    if (!param)
        return 0;
    char *end;
    errno = 0;
    long v = strtol(param->value, &end, 10);
    if (errno || end == param->value || *end != '\0') {
        if (c)
            c->problem(c, param, "%s: expected an integer, got '%s'", key, param->value);
        return -1;
    }
    if (v < min || v > max) {
        if (c)
            c->problem(c, param, "%s: %ld is out of range (%ld..%ld)", key, v, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

/* Report every param whose key is not in the NULL-terminated KNOWN. */
static inline void mqfork_params_known(const struct mqfork_params *p, const char *const *known,
                                       const char *handler, struct mqfork_check *c)
{
    for (size_t i = 0; p && i < p->count; i++) {
        size_t k = 0;
        while (known[k] && strcmp(known[k], p->items[i].key) != 0)
            k++;
        if (!known[k])
            c->problem(c, &p->items[i], "%s: unknown param for %s", p->items[i].key, handler);
    }
}

/* Write an error sentence into job->out (cut to out_cap) and set out_len. */
static inline __attribute__((format(printf, 2, 3))) void mqfork_job_error(struct mqfork_job *job,
                                                                          const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = job->out_cap ? vsnprintf((char *)job->out, job->out_cap, fmt, ap) : 0;
    va_end(ap);
    if (n < 0)
        n = 0;
    job->out_len = (size_t)n < job->out_cap ? (size_t)n : job->out_cap ? job->out_cap - 1 : 0;
}

/* Add N to counter I of the handler's counters (a gauge: set with
 * mqfork_gauge). Readers in other processes see whole values. */
static inline void mqfork_count(uint64_t *counters, unsigned i, uint64_t n)
{
    if (counters)
        __atomic_fetch_add(&counters[i], n, __ATOMIC_RELAXED);
}

static inline void mqfork_gauge(uint64_t *counters, unsigned i, uint64_t v)
{
    if (counters)
        __atomic_store_n(&counters[i], v, __ATOMIC_RELAXED);
}

/* Add one duration of NS nanoseconds to histogram I of the handler's
 * histograms (H is init()'s in->histograms, kept by the handler). */
static inline void mqfork_observe_ns(const struct mqfork_histograms *h, unsigned i, uint64_t ns)
{
    if (h && h->add_ns)
        h->add_ns(h->data, i, ns);
}

#endif
