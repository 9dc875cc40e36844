/* loop.c - io_uring poll watches and the wait for them (see loop.h). */
#include "supervisor/loop.h"

#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "supervisor/log.h"

struct loop_watch {
    struct loop_watch *prev, *next; /* every live watch, so loop_free can free them */
    int fd;
    unsigned events;
    bool repeat;
    bool cancelled;
    loop_fn fn;
    void *ctx;
};

struct loop {
    struct io_uring ring;
    struct loop_watch *watches;
};

static void link_watch(struct loop *l, struct loop_watch *w)
{
    w->next = l->watches;
    if (w->next)
        w->next->prev = w;
    l->watches = w;
}

static void free_watch(struct loop *l, struct loop_watch *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        l->watches = w->next;
    if (w->next)
        w->next->prev = w->prev;
    free(w);
}

/* user_data of the cancel request itself: its completion needs no action. */
#define CANCEL_TAG 1ull

struct loop *loop_new(unsigned entries)
{
    struct loop *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    /* Cooperative task running: a completion that arrives while we are busy
     * is posted when we next enter the kernel, instead of interrupting us
     * with an IPI for each packet the broker sends. The flag tells
     * io_uring_peek_cqe() when such work waits. Older kernels lack both. */
    int rc = io_uring_queue_init(entries, &l->ring,
                                 IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG);
    if (rc == -EINVAL)
        rc = io_uring_queue_init(entries, &l->ring, 0);
    if (rc < 0) {
        free(l);
        errno = -rc;
        return NULL;
    }
    return l;
}

void loop_free(struct loop *l)
{
    if (!l)
        return;
    io_uring_queue_exit(&l->ring);
    while (l->watches)
        free_watch(l, l->watches);
    free(l);
}

static struct io_uring_sqe *get_sqe(struct loop *l)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);
    if (!sqe) {
        io_uring_submit(&l->ring);
        sqe = io_uring_get_sqe(&l->ring);
    }
    return sqe;
}

static int arm(struct loop *l, struct loop_watch *w)
{
    struct io_uring_sqe *sqe = get_sqe(l);
    if (!sqe)
        return -1;
    if (w->repeat)
        io_uring_prep_poll_multishot(sqe, w->fd, w->events);
    else
        io_uring_prep_poll_add(sqe, w->fd, w->events);
    io_uring_sqe_set_data(sqe, w);
    return 0;
}

struct loop_watch *loop_watch(struct loop *l, int fd, unsigned events, bool repeat, loop_fn fn,
                              void *ctx)
{
    struct loop_watch *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    *w = (struct loop_watch){.fd = fd, .events = events, .repeat = repeat, .fn = fn, .ctx = ctx};
    if (arm(l, w) < 0) {
        free(w);
        return NULL;
    }
    link_watch(l, w);
    return w;
}

void loop_cancel(struct loop *l, struct loop_watch *w)
{
    if (!w || w->cancelled)
        return;
    w->cancelled = true;
    struct io_uring_sqe *sqe = get_sqe(l);
    if (!sqe) {
        log_error("loop: no submission slot to cancel a watch on fd %d", w->fd);
        return;
    }
    io_uring_prep_poll_remove(sqe, (uint64_t)(uintptr_t)w);
    io_uring_sqe_set_data64(sqe, CANCEL_TAG);
}

/* One completion. A watch is freed when the kernel says its poll is over
 * (no IORING_CQE_F_MORE) and nobody wants it again. */
static void complete(struct loop *l, uint64_t data, int res, unsigned flags)
{
    if (data == CANCEL_TAG || data == 0)
        return;
    struct loop_watch *w = (struct loop_watch *)(uintptr_t)data;
    bool more = flags & IORING_CQE_F_MORE;
    if (!w->cancelled)
        w->fn(w->ctx, res);
    if (more)
        return;
    /* A repeating poll the kernel ended (e.g. overflow): arm it again. */
    if (w->repeat && !w->cancelled && res != -ECANCELED && arm(l, w) == 0)
        return;
    free_watch(l, w);
}

static int drain(struct loop *l)
{
    int handled = 0;
    struct io_uring_cqe *cqe;
    while (io_uring_peek_cqe(&l->ring, &cqe) == 0) {
        uint64_t data = cqe->user_data;
        int res = cqe->res;
        unsigned flags = cqe->flags;
        io_uring_cqe_seen(&l->ring, cqe);
        complete(l, data, res, flags);
        handled++;
    }
    return handled;
}

int loop_run(struct loop *l, int64_t wait_ns)
{
    int handled = drain(l);
    if (handled || wait_ns == 0) {
        if (io_uring_sq_ready(&l->ring))
            io_uring_submit(&l->ring);
        return handled;
    }
    struct io_uring_cqe *cqe;
    struct __kernel_timespec ts = {.tv_sec = wait_ns / 1000000000, .tv_nsec = wait_ns % 1000000000};
    int rc = io_uring_submit_and_wait_timeout(&l->ring, &cqe, 1, wait_ns < 0 ? NULL : &ts, NULL);
    if (rc < 0 && rc != -ETIME && rc != -EINTR)
        log_error("loop: io_uring wait failed: %s", strerror(-rc));
    return drain(l);
}
