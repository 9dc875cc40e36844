/* loop.h - the supervisor's event loop: one io_uring that watches file
 * descriptors (signalfd, the results eventfd, worker pidfds, and later the
 * MQTT and UDP sockets) and calls a function when one is ready.
 *
 * Under load the loop makes few system calls: completions are read from the
 * shared completion ring, and io_uring_enter runs only to submit a new watch,
 * to post completions the kernel has flagged as waiting (cooperative task
 * running), or to sleep when nothing is left to do. */
#ifndef MQFORK_SUPERVISOR_LOOP_H
#define MQFORK_SUPERVISOR_LOOP_H

#include <stdbool.h>
#include <stdint.h>

struct loop;
struct loop_watch;

/* Called with the poll events that fired (POLLIN, ...) or a negative errno. */
typedef void (*loop_fn)(void *ctx, int events);

struct loop *loop_new(unsigned entries);
void loop_free(struct loop *l);

/* Watch FD for EVENTS. A repeating watch fires every time FD is ready until
 * cancelled; a one-shot watch fires once and is then gone by itself. */
struct loop_watch *loop_watch(struct loop *l, int fd, unsigned events, bool repeat, loop_fn fn,
                              void *ctx);

/* Stop a watch; its function is not called again. The watch's memory is
 * released once the kernel confirms. */
void loop_cancel(struct loop *l, struct loop_watch *w);

/* Handle every completion ready now. If there was none and WAIT_NS is not
 * zero, sleep until one comes or WAIT_NS passes (< 0: no limit). Returns
 * the number of callbacks run. */
int loop_run(struct loop *l, int64_t wait_ns);

#endif
