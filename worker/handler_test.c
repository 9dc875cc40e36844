/* handler_test.c - the drill handlers that ship with the daemon:
 * test.echo (output = input), test.spin (burn the payload's decimal count of
 * microseconds of CPU), test.crash (die by `segv`, `abort` or `exit`, or
 * `overrun`: write past the output buffer), test.hang (never return) and
 * test.fail (answer `failed` the payload's count of times per stream, then
 * echo: a flaky backend, for retries).
 * Operators use them to rehearse failures. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mqfork/handler.h"
#include "worker/handler.h"

static void same_as_input(const struct mqfork_params *p, struct mqfork_out_bound *b)
{
    *b = (struct mqfork_out_bound){.per_in_q16 = 65536};
}

static enum mqfork_status echo_run(void *ctx, struct mqfork_job *job)
{
    memcpy(job->out, job->in, job->in_len);
    job->out_len = job->in_len;
    return MQFORK_OK;
}

/* Parse a short decimal payload without trusting it to be NUL-terminated. */
static int parse_decimal(const uint8_t *in, size_t len, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0 || len > 20)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (in[i] < '0' || in[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(in[i] - '0');
        if (v > max)
            return -1;
    }
    *out = v;
    return 0;
}

static bool payload_is(const struct mqfork_job *job, const char *word)
{
    size_t n = strlen(word);
    return job->in_len == n && memcmp(job->in, word, n) == 0;
}

static uint64_t cpu_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#define SPIN_MAX_US 3600000000ull /* an hour: longer is surely a typo */

static enum mqfork_status spin_run(void *ctx, struct mqfork_job *job)
{
    uint64_t us;
    if (parse_decimal(job->in, job->in_len, SPIN_MAX_US, &us) < 0) {
        mqfork_job_error(job, "test.spin wants a decimal count of microseconds up to %llu",
                         (unsigned long long)SPIN_MAX_US);
        return MQFORK_BAD_INPUT;
    }
    uint64_t end = cpu_now_ns() + us * 1000;
    while (cpu_now_ns() < end)
        ;
    job->out_len = 0;
    return MQFORK_OK;
}

static enum mqfork_status crash_run(void *ctx, struct mqfork_job *job)
{
    if (payload_is(job, "segv")) {
        raise(SIGSEGV);
    } else if (payload_is(job, "abort")) {
        abort();
    } else if (payload_is(job, "exit")) {
        _exit(3);
    } else if (payload_is(job, "overrun")) {
        memset(job->out, 'x', job->out_cap + 8); /* the worker must catch this */
        job->out_len = job->out_cap;
        return MQFORK_OK;
    }
    mqfork_job_error(job, "test.crash wants 'segv', 'abort', 'exit' or 'overrun'");
    return MQFORK_BAD_INPUT;
}

static enum mqfork_status hang_run(void *ctx, struct mqfork_job *job)
{
    for (;;)
        pause();
    return MQFORK_FAILED;
}

/* test.fail's state: how often its stream ran it. */
static size_t fail_state_size(const struct mqfork_params *p)
{
    return sizeof(uint64_t);
}

#define FAIL_MAX 1000000

/* Fail while the stream has run fewer than N jobs (each attempt of a job
 * is a run); "always" fails always, as does any N > 0 without a stream. */
static enum mqfork_status fail_run(void *ctx, struct mqfork_job *job)
{
    uint64_t n = 0, runs = 0;
    bool always = payload_is(job, "always");
    if (!always && parse_decimal(job->in, job->in_len, FAIL_MAX, &n) < 0) {
        mqfork_job_error(job, "test.fail wants 'always' or a count of failures up to %d", FAIL_MAX);
        return MQFORK_BAD_INPUT;
    }
    if (job->state) {
        uint64_t *seen = job->state;
        if (job->state_fresh)
            *seen = 0;
        runs = ++*seen;
    }
    if (always || (n > 0 && (!job->state || runs <= n))) {
        mqfork_job_error(job, "test.fail: failing as asked");
        return MQFORK_FAILED;
    }
    return echo_run(ctx, job);
}

const struct mqfork_handler handler_test_echo = {
    .abi = MQFORK_HANDLER_ABI,
    .name = "test.echo",
    .out_bound = same_as_input,
    .run = echo_run,
};

const struct mqfork_handler handler_test_spin = {
    .abi = MQFORK_HANDLER_ABI,
    .name = "test.spin",
    .run = spin_run,
};

const struct mqfork_handler handler_test_crash = {
    .abi = MQFORK_HANDLER_ABI,
    .name = "test.crash",
    .run = crash_run,
};

const struct mqfork_handler handler_test_hang = {
    .abi = MQFORK_HANDLER_ABI,
    .name = "test.hang",
    .run = hang_run,
};

const struct mqfork_handler handler_test_fail = {
    .abi = MQFORK_HANDLER_ABI,
    .name = "test.fail",
    .out_bound = same_as_input,
    .state_size = fail_state_size,
    .run = fail_run,
};
