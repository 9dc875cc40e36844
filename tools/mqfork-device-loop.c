/* mqfork-device-loop.c - the device simulator's one thread: an epoll loop
 * over every device's MQTT and UDP sockets and a signalfd, a timer heap
 * holding each device's next due time (its ramp slot, its next 60 ms frame,
 * a timeout), and libmosquitto driven without its own loop
 * (mosquitto_loop_read, _write, _misc). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "shm/clock.h"
#include "tools/mqfork-device.h"

#define EV_MQTT  0u
#define EV_UDP   1u
#define EV_SIG   UINT64_MAX
#define BATCH    512
#define MISC_US  US /* keepalive work for every client, once a second */
#define MAX_WAIT (MISC_US)

int64_t now_us(void)
{
    return (int64_t)(mono_ns() / 1000);
}

/* ---- the timer heap: a binary min-heap of devices by due time ------------ */

static void heap_put(struct sim *s, long pos, struct device *d)
{
    s->heap[pos] = d;
    d->heap_pos = pos;
}

static void sift_up(struct sim *s, long pos)
{
    struct device *d = s->heap[pos];
    while (pos > 0 && s->heap[(pos - 1) / 2]->due > d->due) {
        heap_put(s, pos, s->heap[(pos - 1) / 2]);
        pos = (pos - 1) / 2;
    }
    heap_put(s, pos, d);
}

static void sift_down(struct sim *s, long pos)
{
    struct device *d = s->heap[pos];
    for (;;) {
        long c = 2 * pos + 1;
        if (c >= s->heap_len)
            break;
        if (c + 1 < s->heap_len && s->heap[c + 1]->due < s->heap[c]->due)
            c++;
        if (s->heap[c]->due >= d->due)
            break;
        heap_put(s, pos, s->heap[c]);
        pos = c;
    }
    heap_put(s, pos, d);
}

void timer_set(struct device *d, int64_t due)
{
    struct sim *s = d->sim;
    d->due = due;
    if (d->heap_pos < 0) {
        heap_put(s, s->heap_len++, d);
        sift_up(s, d->heap_pos);
    } else {
        sift_up(s, d->heap_pos);
        sift_down(s, d->heap_pos);
    }
}

void timer_clear(struct device *d)
{
    struct sim *s = d->sim;
    long pos = d->heap_pos;
    if (pos < 0)
        return;
    d->heap_pos = -1;
    struct device *last = s->heap[--s->heap_len];
    if (last == d)
        return;
    heap_put(s, pos, last);
    sift_up(s, pos);
    sift_down(s, last->heap_pos);
}

/* ---- sockets ------------------------------------------------------------- */

static int watch(struct sim *s, int op, int fd, uint32_t events, uint64_t tag)
{
    struct epoll_event ev = {.events = events, .data.u64 = tag};
    return epoll_ctl(s->ep, op, fd, &ev);
}

int loop_watch_udp(struct device *d)
{
    return watch(d->sim, EPOLL_CTL_ADD, d->udp_fd, EPOLLIN, (uint64_t)d->index << 1 | EV_UDP);
}

void loop_unwatch(struct sim *s, int fd)
{
    epoll_ctl(s->ep, EPOLL_CTL_DEL, fd, NULL);
}

/* libmosquitto opens its socket in mosquitto_connect_async and closes it
 * itself on errors and after DISCONNECT (closing removes it from the epoll
 * set); so after every call into it, look at what it has now. */
void loop_mqtt_sync(struct device *d)
{
    int fd = d->mosq ? mosquitto_socket(d->mosq) : -1;
    uint32_t want = EPOLLIN | (fd >= 0 && mosquitto_want_write(d->mosq) ? EPOLLOUT : 0);
    uint64_t tag = (uint64_t)d->index << 1 | EV_MQTT;
    if (fd != d->mqtt_fd) {
        d->mqtt_fd = fd;
        d->watched = 0;
        if (fd >= 0 && watch(d->sim, EPOLL_CTL_ADD, fd, want, tag) == 0)
            d->watched = want;
    } else if (fd >= 0 && want != d->watched && watch(d->sim, EPOLL_CTL_MOD, fd, want, tag) == 0) {
        d->watched = want;
    }
}

void loop_mqtt_close(struct device *d)
{
    if (!d->mosq)
        return;
    if (d->mqtt_fd >= 0 && mosquitto_socket(d->mosq) == d->mqtt_fd)
        loop_unwatch(d->sim, d->mqtt_fd);
    mosquitto_destroy(d->mosq);
    d->mosq = NULL;
    d->mqtt_fd = -1;
}

/* A device that has finished gives back what it holds, once. */
static void reap(struct sim *s, struct device *d)
{
    if (d->state != DEV_DONE && d->state != DEV_FAILED) {
        loop_mqtt_sync(d);
        return;
    }
    if (d->reaped)
        return;
    dev_free(d);
    d->reaped = true;
    s->finished++;
    s->failed += d->state == DEV_FAILED;
}

static void on_mqtt(struct sim *s, struct device *d, uint32_t ev)
{
    if (!d->mosq || d->mqtt_fd < 0)
        return;
    if (ev & EPOLLOUT)
        mosquitto_loop_write(d->mosq, 1); /* also how a pending connect completes */
    if ((ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) && mosquitto_socket(d->mosq) >= 0)
        mosquitto_loop_read(d->mosq, 1);
}

static void on_signal(struct sim *s)
{
    struct signalfd_siginfo si;
    while (read(s->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (++s->stopping > 1)
            return;
        fprintf(stderr, "mqfork-device: %s: ending every session (again: stop now)\n",
                strsignal((int)si.ssi_signo));
        for (long i = 0; i < s->n; i++) {
            dev_stop(&s->devs[i]);
            reap(s, &s->devs[i]);
        }
    }
}

static void dispatch(struct sim *s, const struct epoll_event *ev)
{
    if (ev->data.u64 == EV_SIG) {
        on_signal(s);
        return;
    }
    struct device *d = &s->devs[ev->data.u64 >> 1];
    if ((ev->data.u64 & 1) == EV_UDP)
        dev_udp_readable(d);
    else
        on_mqtt(s, d, ev->events);
    reap(s, d);
}

static void run_timers(struct sim *s, int64_t now)
{
    while (s->heap_len > 0 && s->heap[0]->due <= now) {
        struct device *d = s->heap[0];
        timer_clear(d);
        dev_timer(d);
        reap(s, d);
    }
}

static void run_misc(struct sim *s)
{
    for (long i = 0; i < s->n; i++) {
        struct device *d = &s->devs[i];
        if (d->mosq && d->mqtt_fd >= 0) {
            mosquitto_loop_misc(d->mosq);
            reap(s, d);
        }
    }
}

/* Sleep until an event or NEXT (us, CLOCK_MONOTONIC); returns the count. */
static int wait_events(struct sim *s, struct epoll_event *evs, int64_t next)
{
    int64_t left = next - now_us();
    if (left < 0)
        left = 0;
    if (left > MAX_WAIT)
        left = MAX_WAIT;
    struct timespec ts = {left / US, (left % US) * 1000};
    int n = epoll_pwait2(s->ep, evs, BATCH, &ts, NULL);
    if (n < 0 && errno == ENOSYS)
        n = epoll_wait(s->ep, evs, BATCH, (int)((left + 999) / 1000));
    return n;
}

void loop_run(struct sim *s)
{
    struct epoll_event evs[BATCH];
    int64_t next_misc = now_us() + MISC_US;
    for (;;) {
        int64_t now = now_us();
        run_timers(s, now);
        if (now >= next_misc) {
            run_misc(s);
            next_misc = now + MISC_US;
        }
        if (s->finished >= s->n || s->stopping > 1)
            break;
        int64_t next = s->heap_len > 0 && s->heap[0]->due < next_misc ? s->heap[0]->due : next_misc;
        int n = wait_events(s, evs, next);
        for (int i = 0; i < n; i++)
            dispatch(s, &evs[i]);
    }
    s->t_end = now_us();
}

int loop_init(struct sim *s)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_BLOCK, &set, NULL);
    s->ep = epoll_create1(EPOLL_CLOEXEC);
    s->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    s->heap = calloc((size_t)s->n, sizeof(*s->heap));
    if (s->ep < 0 || s->sigfd < 0 || !s->heap ||
        watch(s, EPOLL_CTL_ADD, s->sigfd, EPOLLIN, EV_SIG) < 0) {
        perror("mqfork-device: epoll");
        return -1;
    }
    for (long i = 0; i < s->n; i++) {
        struct device *d = &s->devs[i];
        if (d->state == DEV_IDLE)
            timer_set(d, s->t0 + (int64_t)(s->o.ramp_s * US * (double)i / (double)s->n));
        else
            reap(s, d); /* failed already (a topic too long) */
    }
    return 0;
}

void loop_fini(struct sim *s)
{
    for (long i = 0; i < s->n; i++)
        dev_free(&s->devs[i]);
    free(s->heap);
    if (s->ep >= 0)
        close(s->ep);
    if (s->sigfd >= 0)
        close(s->sigfd);
}
