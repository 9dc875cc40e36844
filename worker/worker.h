/* worker.h - the loop a worker process runs after fork: set up each job
 * kind's handler once, then take jobs from its ring, run them and push the
 * results, spinning briefly before it parks on the ring's futex. */
#ifndef MQFORK_WORKER_WORKER_H
#define MQFORK_WORKER_WORKER_H

#include <stdint.h>

#include "mqfork/handler.h"
#include "shm/segment.h"

/* Kind index of the control message that tells a worker to exit once it has
 * answered everything queued before it. */
#define WORKER_EXIT_KIND UINT32_MAX

/* Exit status of a worker whose handler set-up failed. */
#define WORKER_EXIT_SETUP 70

struct worker_kind {
    const struct mqfork_handler *handler;
    const struct mqfork_params *params;
    void *preloaded;
    uint64_t *counters; /* this worker's instance of the handler's counters, or NULL */
    void *histograms;   /* ... and of its histograms (struct stats_hist each), or NULL */
};

struct worker_args {
    const struct segment *seg;
    unsigned slot;
    uint32_t generation;
    int efd; /* eventfd that wakes the supervisor */
    const struct worker_kind *kinds;
    unsigned nkinds;
    uint64_t spin_ns; /* how long to poll an empty ring before parking */
};

/* Run the worker; never returns. Call in the child right after fork. */
void worker_main(const struct worker_args *a) __attribute__((noreturn));

/* Set the process title seen by ps and top; proctitle_init (from main, with
 * main's argv) lets it replace the whole command line, not only the name. */
void proctitle_init(int argc, char **argv);
void proctitle_set(const char *title);

#endif
