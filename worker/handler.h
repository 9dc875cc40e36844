/* handler.h - the handlers built into mqforkd, registered through the same
 * public API as plugins (include/mqfork/handler.h), and the arithmetic of
 * a job's output bound that the supervisor and the worker share. */
#ifndef MQFORK_WORKER_HANDLER_H
#define MQFORK_WORKER_HANDLER_H

#include <stdint.h>

#include "mqfork/handler.h"

/* Output capacity of a job of IN_LEN bytes under bound B (NULL: none),
 * room for an error sentence included; never wraps. */
uint64_t handler_out_capacity(const struct mqfork_out_bound *b, uint64_t in_len);
/* The longest input a job may have: B's max_in, or MAX_PAYLOAD. */
uint64_t handler_max_in(const struct mqfork_out_bound *b, uint64_t max_payload);

/* Register every built-in handler with R. 0, or -1 (R's add said why). */
int handlers_register_builtin(struct mqfork_registry *r);

/* The test handlers (handler_test.c). */
extern const struct mqfork_handler handler_test_echo, handler_test_spin, handler_test_crash,
    handler_test_hang, handler_test_fail;

/* The codec handlers (handler_opus.c). */
extern const struct mqfork_handler handler_opus_decode, handler_opus_encode;

/* The most lost packets opus.decode's conceal param may ask to conceal
 * (meta.lost) before the packet it decodes. */
#define OPUS_CONCEAL_MAX 8

/* The most entries opus.decode's sequence param lets one job carry. */
#define OPUS_SEQUENCE_MAX 64

#endif
