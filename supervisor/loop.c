/* loop.c - one iteration of the event loop: io_uring poll watches, the
 * timers, the hooks, and the sleep in between (see loop.h). */
#include "supervisor/loop.h"

#include <assert.h>
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "shm/clock.h"

#define TIMER_SLACK_NS 50000

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
    struct timers timers;
    struct loop_hook *hooks;
    uint64_t now_ns;
    bool running; /* inside loop_run: now_ns is the iteration's time */
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
    timers_free(&l->timers);
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

/* ---- timers and hooks ---------------------------------------------- */

int loop_timer_init(struct loop *l, struct loop_timer *t, loop_timer_fn fn, void *ctx)
{
    *t = (struct loop_timer){0};
    if (timers_reserve(&l->timers) < 0)
        return -1;
    t->fn = fn;
    t->ctx = ctx;
    return 0;
}

void loop_timer_fini(struct loop *l, struct loop_timer *t)
{
    if (!t->fn)
        return;
    timers_cancel(&l->timers, t);
    timers_release(&l->timers);
    t->fn = NULL;
}

void loop_timer_arm(struct loop *l, struct loop_timer *t, uint64_t at_ns)
{
    timers_arm(&l->timers, t, at_ns);
}

void loop_timer_arm_by(struct loop *l, struct loop_timer *t, uint64_t at_ns)
{
    if (!t->pos || at_ns < t->at_ns)
        timers_arm(&l->timers, t, at_ns);
}

void loop_timer_cancel(struct loop *l, struct loop_timer *t)
{
    timers_cancel(&l->timers, t);
}

uint64_t loop_now_ns(const struct loop *l)
{
    return l->running ? l->now_ns : mono_ns();
}

void loop_hook_add(struct loop *l, struct loop_hook *h)
{
    struct loop_hook **pp = &l->hooks;
    while (*pp)
        pp = &(*pp)->next;
    h->next = NULL;
    *pp = h;
}

void loop_hook_remove(struct loop *l, struct loop_hook *h)
{
    for (struct loop_hook **pp = &l->hooks; *pp; pp = &(*pp)->next) {
        if (*pp == h) {
            *pp = h->next;
            return;
        }
    }
}

static bool hooks_before_sleep(struct loop *l)
{
    bool busy = false;
    for (struct loop_hook *h = l->hooks; h; h = h->next)
        busy |= h->before_sleep(h->ctx);
    return busy;
}

/* Every hook is asked, so that each after_sleep has its may_sleep to undo. */
static bool hooks_may_sleep(struct loop *l)
{
    bool ok = true;
    for (struct loop_hook *h = l->hooks; h; h = h->next)
        if (h->may_sleep)
            ok &= h->may_sleep(h->ctx);
    return ok;
}

static void hooks_after_sleep(struct loop *l)
{
    for (struct loop_hook *h = l->hooks; h; h = h->next)
        if (h->after_sleep)
            h->after_sleep(h->ctx);
}

/* ---- the iteration ------------------------------------------------- */

/* How long the loop may sleep: until the earliest timer, at most WAIT_NS
 * (< 0: no limit). A timer due sooner than TIMER_SLACK_NS is waited for
 * that long: timers due close together then fire after one wake-up, not
 * one each, at most that late - the kernel's own default timer slack. */
static int64_t sleep_ns(const struct loop *l, int64_t wait_ns)
{
    uint64_t next = timers_next(&l->timers);
    if (next == UINT64_MAX)
        return wait_ns;
    uint64_t left = next > l->now_ns ? next - l->now_ns : 0;
    if (left && left < TIMER_SLACK_NS)
        left = TIMER_SLACK_NS;
    int64_t until = left < INT64_MAX ? (int64_t)left : INT64_MAX;
    return wait_ns >= 0 && wait_ns < until ? wait_ns : until;
}

static void wait_for_completion(struct loop *l, int64_t ns)
{
    struct io_uring_cqe *cqe;
    struct __kernel_timespec ts = {.tv_sec = ns / (int64_t)NS_PER_S,
                                   .tv_nsec = ns % (int64_t)NS_PER_S};
    int rc = io_uring_submit_and_wait_timeout(&l->ring, &cqe, 1, ns < 0 ? NULL : &ts, NULL);
    if (rc < 0 && rc != -ETIME && rc != -EINTR)
        log_error("loop: io_uring wait failed: %s", strerror(-rc));
}

/* Nothing was to be done: sleep, if the hooks agree, until a watch fires
 * or a timer is due, then handle what woke the loop. */
static int sleep_and_handle(struct loop *l, int64_t wait_ns)
{
    if (!hooks_may_sleep(l)) {
        hooks_after_sleep(l);
        return 0;
    }
    l->now_ns = mono_ns(); /* a hook may have waited */
    int64_t ns = sleep_ns(l, wait_ns);
    if (ns != 0)
        wait_for_completion(l, ns);
    hooks_after_sleep(l);
    l->now_ns = mono_ns();
    int ran = drain(l) + (int)timers_expire(&l->timers, l->now_ns);
    /* Once more, so that the caller finds the state that woke the loop
     * taken in (the engine's results collected, its statistics published). */
    if (ran)
        hooks_before_sleep(l);
    return ran;
}

int loop_run(struct loop *l, int64_t wait_ns)
{
    assert(!l->running);
    l->running = true;
    l->now_ns = mono_ns();
    int ran = (int)timers_expire(&l->timers, l->now_ns);
    bool busy = hooks_before_sleep(l);
    ran += drain(l);
    if (!ran && !busy && wait_ns != 0 && timers_next(&l->timers) > l->now_ns)
        ran += sleep_and_handle(l, wait_ns);
    if (io_uring_sq_ready(&l->ring))
        io_uring_submit(&l->ring);
    l->running = false;
    return ran;
}
