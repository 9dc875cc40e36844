/* handler.c - the registry of job handlers, and small helpers that handlers
 * share for reading params and reporting errors. */
#include "worker/handler.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct handler *const registry[] = {
    &handler_test_echo, &handler_test_spin,   &handler_test_crash,
    &handler_test_hang, &handler_opus_decode, &handler_opus_encode,
};

#define REGISTRY_SIZE (sizeof(registry) / sizeof(registry[0]))

const struct handler *handler_find(const char *name)
{
    for (size_t i = 0; i < REGISTRY_SIZE; i++)
        if (strcmp(registry[i]->name, name) == 0)
            return registry[i];
    return NULL;
}

void handler_names(char *buf, size_t len)
{
    size_t used = 0;
    if (len)
        buf[0] = '\0';
    for (size_t i = 0; i < REGISTRY_SIZE && used < len; i++) {
        int n = snprintf(buf + used, len - used, "%s%s", i ? ", " : "", registry[i]->name);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

const struct conf_param *handler_param(const struct conf_params *p, const char *key)
{
    for (size_t i = 0; p && i < p->count; i++)
        if (strcmp(p->items[i].key, key) == 0)
            return &p->items[i];
    return NULL;
}

int handler_param_int(const struct conf_params *p, const char *key, long min, long max, long *out,
                      char *err, size_t errlen, const struct conf_param **where)
{
    const struct conf_param *param = handler_param(p, key);
    if (!param)
        return 0;
    char *end;
    errno = 0;
    long v = strtol(param->value, &end, 10);
    if (errno || end == param->value || *end != '\0') {
        snprintf(err, errlen, "%s: expected an integer, got '%s'", key, param->value);
    } else if (v < min || v > max) {
        snprintf(err, errlen, "%s: %ld is out of range (%ld..%ld)", key, v, min, max);
    } else {
        *out = v;
        return 0;
    }
    if (where)
        *where = param;
    return -1;
}

void handler_error(struct handler_job *job, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = job->out_cap ? vsnprintf((char *)job->out, job->out_cap, fmt, ap) : 0;
    va_end(ap);
    if (n < 0)
        n = 0;
    job->out_len = (size_t)n < job->out_cap ? (size_t)n : job->out_cap ? job->out_cap - 1 : 0;
}

uint64_t handler_out_capacity(const struct handler_out_bound *b, uint64_t in_len)
{
    uint64_t cap = HANDLER_ERROR_TEXT;
    if (b) {
        /* in_len is at most limits.max_payload (2^24): no overflow below 2^56. */
        uint64_t scaled = (in_len * b->per_in_q16 + 65535) >> 16;
        if (b->fixed + scaled > cap)
            cap = b->fixed + scaled;
    }
    return cap;
}
