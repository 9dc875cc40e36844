/* handler.h - the registry of job handlers and the interface each one fills.
 *
 * A handler is looked up by the name a route gives in `job:`. The supervisor
 * only ever calls check(), out_bound() and state_size(): pure functions of
 * the configuration, run while it loads. setup() and run() are called in
 * worker processes only (DESIGN.md, principle 1). */
#ifndef MQFORK_WORKER_HANDLER_H
#define MQFORK_WORKER_HANDLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/config.h"
#include "proto/job.h"

/* The most output one job may produce, declared once per route so the
 * supervisor can size each job's buffer from its input length without
 * running handler code: fixed + in_len * per_in_q16 / 65536, rounded up.
 * The engine adds room for an error sentence (HANDLER_ERROR_TEXT). */
struct handler_out_bound {
    uint32_t fixed;
    uint32_t per_in_q16; /* 65536: one output byte per input byte */
};

#define HANDLER_ERROR_TEXT 256

/* One job as a handler sees it. */
struct handler_job {
    const uint8_t *in;
    size_t in_len;
    uint8_t *out; /* output buffer; on error, a sentence for a human goes here.
                     Writing past out_cap fails the job (or kills the worker). */
    size_t out_cap;
    size_t out_len;   /* set by run() */
    void *state;      /* the stream's state (state_size bytes), or NULL without a stream */
    bool state_fresh; /* state must be initialized before use */
};

struct handler {
    const char *name;
    /* Check a route's params when the configuration loads. On a problem,
     * write a message to err, point *where at the offending param (or NULL)
     * and return -1. NULL means the handler takes no params. */
    int (*check)(const struct conf_params *p, char *err, size_t errlen,
                 const struct conf_param **where);
    /* The output bound of a route with these params; NULL: error text only. */
    void (*out_bound)(const struct conf_params *p, struct handler_out_bound *b);
    /* Bytes of per-stream state in shared memory; NULL or 0 = stateless. */
    size_t (*state_size)(const struct conf_params *p);
    /* Per-worker set-up, run once after fork for each kind; returns the
     * handler's context for run(), or NULL on failure (the worker exits). */
    void *(*setup)(const struct conf_params *p);
    /* Run one job. Returns JOB_OK, JOB_FILTERED, JOB_E_BAD_INPUT or JOB_E_FAILED. */
    enum job_status (*run)(void *ctx, struct handler_job *job);
};

const struct handler *handler_find(const char *name);

/* Write "name" suggestions etc.: the registered names, comma separated. */
void handler_names(char *buf, size_t len);

/* Helpers for handlers' check() and setup(): find a param by key; parse it. */
const struct conf_param *handler_param(const struct conf_params *p, const char *key);
/* Parse the param KEY as an integer in [min, max] into *out (left as is when
 * absent). Returns 0, or -1 with a message in err. */
int handler_param_int(const struct conf_params *p, const char *key, long min, long max, long *out,
                      char *err, size_t errlen, const struct conf_param **where);

/* Output capacity of a job of IN_LEN bytes under bound B, error text
 * included; UINT64_MAX-safe (never wraps). */
uint64_t handler_out_capacity(const struct handler_out_bound *b, uint64_t in_len);

/* Write an error sentence into job->out (truncated to out_cap). */
void handler_error(struct handler_job *job, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The test handlers (handler_test.c). */
extern const struct handler handler_test_echo, handler_test_spin, handler_test_crash,
    handler_test_hang;

/* The codec handlers (handler_opus.c). */
extern const struct handler handler_opus_decode, handler_opus_encode;

#endif
