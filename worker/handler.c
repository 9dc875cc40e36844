/* handler.c - the list of built-in handlers, and the output-bound
 * arithmetic (see worker/handler.h). */
#include "worker/handler.h"

#include "proto/job.h"

_Static_assert((int)MQFORK_OK == (int)JOB_OK && (int)MQFORK_FILTERED == (int)JOB_FILTERED &&
                   (int)MQFORK_BAD_INPUT == (int)JOB_E_BAD_INPUT &&
                   (int)MQFORK_FAILED == (int)JOB_E_FAILED,
               "a handler's status is a job status");

static const struct mqfork_handler *const builtin[] = {
    &handler_test_echo, &handler_test_spin,   &handler_test_crash,  &handler_test_hang,
    &handler_test_fail, &handler_opus_decode, &handler_opus_encode,
};

int handlers_register_builtin(struct mqfork_registry *r)
{
    for (size_t i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++)
        if (r->add(r, builtin[i]) < 0)
            return -1;
    return 0;
}

uint64_t handler_max_in(const struct mqfork_out_bound *b, uint64_t max_payload)
{
    return b && b->max_in && b->max_in < max_payload ? b->max_in : max_payload;
}

uint64_t handler_out_capacity(const struct mqfork_out_bound *b, uint64_t in_len)
{
    uint64_t cap = MQFORK_ERROR_TEXT;
    if (b) {
        /* in_len is at most limits.max_payload (2^24): no overflow below 2^56. */
        uint64_t scaled = (in_len * b->per_in_q16 + 65535) >> 16;
        if (b->fixed + scaled > cap)
            cap = b->fixed + scaled;
    }
    return cap;
}
