/* job.h - what crosses the shared-memory rings: the job descriptor the
 * supervisor hands a worker, the result descriptor it gets back, and the
 * status words every outcome ends with.
 *
 * Both descriptors are fixed-size and hold offsets into the payload slab, never
 * pointers: a worker's address space is a copy, and a wild worker must not be
 * able to make the supervisor follow a pointer it wrote. */
#ifndef MQFORK_PROTO_JOB_H
#define MQFORK_PROTO_JOB_H

#include <stdint.h>

/* How a job ended. The names (job_status_name) are the `error` words of error
 * reports, so they are part of the external contract. */
enum job_status {
    JOB_OK = 0,
    JOB_FILTERED,       /* handler recognized the input as nothing to answer */
    JOB_E_BAD_INPUT,    /* handler rejected the payload */
    JOB_E_FAILED,       /* handler failed for another reason */
    JOB_E_OVERLOADED,   /* refused: pending queue or slab full */
    JOB_E_TOO_LARGE,    /* refused: payload above limits.max_payload */
    JOB_E_UNKNOWN_KIND, /* refused: no such job kind */
    JOB_E_EXPIRED,      /* still pending after its deadline */
    JOB_E_QUARANTINED,  /* killed its worker (crash or timeout) more often than retries */
    JOB_E_SHUTDOWN,     /* abandoned by a drain that ran out of time, or its route was removed */
    JOB_STATUS_COUNT
};

const char *job_status_name(enum job_status s);

/* Bit flags of job_desc.flags. */
enum {
    JOB_STREAM_FRESH = 1u << 0, /* the stream's state must be (re)initialized first */
};

#define JOB_NO_STREAM UINT32_MAX

/* Supervisor -> worker. 64 bytes: one cache line per ring slot. */
struct job_desc {
    uint64_t id;     /* supervisor's job id; echoed in the result */
    uint32_t kind;   /* index into the kind table both sides share */
    uint32_t flags;  /* JOB_* flags */
    uint64_t in_off; /* input payload: slab offset and length */
    uint32_t in_len;
    uint32_t out_cap; /* output buffer: slab offset and capacity */
    uint64_t out_off;
    uint32_t stream_slot; /* stream state slot, or JOB_NO_STREAM */
    uint32_t meta_lost;   /* struct mqfork_job_meta, from the source */
    uint32_t meta_flags;
    uint32_t pad0;
    uint64_t meta_time_us;
};
_Static_assert(sizeof(struct job_desc) == 64, "job_desc is one cache line");

/* Worker -> supervisor. Everything in it is checked before use. */
struct result_desc {
    uint64_t id;      /* the job_desc.id this answers */
    uint32_t status;  /* enum job_status: JOB_OK, JOB_FILTERED, JOB_E_BAD_INPUT or JOB_E_FAILED */
    uint32_t out_len; /* bytes written to the output buffer (error text when status != OK) */
    uint64_t run_ns;  /* time the handler ran */
    uint64_t pad;
};
_Static_assert(sizeof(struct result_desc) == 32, "result_desc is half a cache line");

#endif
