/* worker.c - a worker process: take a job from the ring, run its handler,
 * push the result, and wake the supervisor only if it is asleep.
 *
 * The supervisor forked us; everything we got from it (the kind table, the
 * segment geometry) is a private copy, so we trust it. What we write to the
 * segment the supervisor checks before use. Handlers never write into the
 * segment themselves: their output goes to a private scratch area and only
 * what fits the job's buffer is copied out (see struct scratch). */
#include "worker/worker.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "common/log.h"
#include "shm/clock.h"
#include "shm/ring.h"
#include "shm/stats.h"

/* Where handlers write their output: a private mapping as large as the slab
 * whose next page is unmapped. A job's buffer ends SCRATCH_SLACK bytes or a
 * little more before that page. The slack holds a canary: a handler that
 * writes a little past its capacity fails its job; one that writes further
 * faults (its worker dies, and the job is retried or quarantined). Either
 * way it cannot overwrite another job's buffer in the slab. */
struct scratch {
    uint8_t *end; /* first byte of the guard page */
    size_t size;
};

#define SCRATCH_ALIGN  16
#define SCRATCH_SLACK  32
#define SCRATCH_CANARY 0xa5

struct worker {
    const struct worker_args *a;
    struct scratch scratch;
    bool overrun_logged;
    struct ring jobs, results;
    void *ctx[SEG_MAX_KINDS];
    struct stats_worker *stats;
    struct seg_header *hdr;
    bool spin; /* the last wait was short: poll before parking */
};

/* Leave nothing of the supervisor's behind: its signal mask (it blocks
 * signals for its signalfd) and every descriptor but the eventfd. */
static void detach_from_supervisor(const struct worker_args *a)
{
    sigset_t none;
    sigemptyset(&none);
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL);
    sigprocmask(SIG_SETMASK, &none, NULL);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != a->seg->hdr->pid)
        _exit(0); /* the supervisor died before we could ask to follow it */
    if (a->efd > 3)
        close_range(3, (unsigned)a->efd - 1, 0);
    close_range((unsigned)a->efd + 1, ~0u, 0);
}

/* Workers run batches of CPU-heavy jobs. As SCHED_BATCH, a worker the
 * supervisor wakes does not preempt it in the middle of a round (it runs on
 * an idle core, or at the next tick), so handing out N jobs costs one
 * context switch, not N. Unprivileged and harmless if refused. */
static void schedule_as_batch(void)
{
    struct sched_param none = {0};
    if (sched_setscheduler(0, SCHED_BATCH, &none) < 0)
        log_debug("cannot run as SCHED_BATCH: %s", strerror(errno));
}

/* A handler's histogram gets one duration: each value with one atomic
 * operation, as its counters, so a reader's copy holds whole values. This
 * worker is the only writer of its instance. */
static void observe_ns(void *data, unsigned i, uint64_t ns)
{
    struct stats_hist *h = (struct stats_hist *)data + i;
    __atomic_fetch_add(&h->count, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->sum_ns, ns, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->bucket[stats_hist_bucket(ns)], 1, __ATOMIC_RELAXED);
    if (ns > __atomic_load_n(&h->max_ns, __ATOMIC_RELAXED))
        __atomic_store_n(&h->max_ns, ns, __ATOMIC_RELAXED);
}

/* Each init() runs under a sign saying whose it is, so that if it kills us
 * the supervisor knows which handler to blame. */
static void init_handlers(struct worker *w)
{
    struct seg_worker_ctl *ctl = seg_worker_ctl(w->a->seg, w->a->slot);
    for (unsigned k = 0; k < w->a->nkinds; k++) {
        const struct worker_kind *kind = &w->a->kinds[k];
        if (!kind->handler || !kind->handler->init)
            continue; /* removed by a reload, or set aside: its index is never sent */
        atomic_store(&ctl->initializing, k + 1);
        struct mqfork_init in = {
            .params = kind->params,
            .preloaded = kind->preloaded,
            .counters = kind->counters,
            .worker = w->a->slot,
            .histograms = {kind->histograms, kind->histograms ? observe_ns : NULL}};
        w->ctx[k] = kind->handler->init(&in);
        if (!w->ctx[k]) {
            log_error("init of handler %s failed", kind->handler->name);
            _exit(WORKER_EXIT_SETUP);
        }
    }
    atomic_store(&ctl->initializing, 0);
}

/* A graceful exit gives handlers the chance to close what they opened. */
static _Noreturn void exit_gracefully(struct worker *w)
{
    for (unsigned k = 0; k < w->a->nkinds; k++) {
        const struct worker_kind *kind = &w->a->kinds[k];
        if (kind->handler && kind->handler->fini && w->ctx[k])
            kind->handler->fini(w->ctx[k]);
    }
    _exit(0);
}

static void notify_supervisor(struct worker *w)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&w->hdr->supervisor_sleeping, memory_order_relaxed) &&
        atomic_exchange(&w->hdr->supervisor_sleeping, 0))
        eventfd_write(w->a->efd, 1);
}

/* A descriptor from the supervisor is trusted, but checking it costs nothing
 * next to a handler run and turns a supervisor bug into an error, not a
 * scribble over someone else's buffer. */
static bool desc_valid(const struct worker *w, const struct job_desc *d)
{
    const struct seg_header *h = w->hdr;
    return d->kind < w->a->nkinds && w->a->kinds[d->kind].handler && d->in_off <= h->slab_size &&
           d->in_len <= h->slab_size - d->in_off && d->out_off <= h->slab_size &&
           d->out_cap <= h->slab_size - d->out_off &&
           (d->stream_slot == JOB_NO_STREAM || d->stream_slot < h->max_streams);
}

static void scratch_map(struct scratch *s, size_t size)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size = (size + SCRATCH_SLACK + SCRATCH_ALIGN + page - 1) / page * page;
    uint8_t *p = mmap(NULL, size + page, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED || mprotect(p + size, page, PROT_NONE) < 0) {
        log_error("cannot map the output scratch area (%zu bytes): %s", size, strerror(errno));
        _exit(WORKER_EXIT_SETUP);
    }
    s->end = p + size;
    s->size = size;
}

/* Bytes from a buffer of CAP bytes to the guard page: aligned, slack included. */
static size_t scratch_room(size_t cap)
{
    return (cap + SCRATCH_SLACK + SCRATCH_ALIGN - 1) & ~(size_t)(SCRATCH_ALIGN - 1);
}

/* A buffer of CAP bytes followed by the canary up to the guard page. */
static uint8_t *scratch_buffer(const struct scratch *s, size_t cap)
{
    uint8_t *out = s->end - scratch_room(cap);
    memset(out + cap, SCRATCH_CANARY, scratch_room(cap) - cap);
    return out;
}

static bool canary_intact(const uint8_t *out, size_t cap)
{
    for (size_t i = cap; i < scratch_room(cap); i++)
        if (out[i] != SCRATCH_CANARY)
            return false;
    return true;
}

/* The handler wrote past its buffer, or says it did: the job fails, with a
 * sentence saying so, and nothing of what it wrote leaves the worker. */
static enum job_status overrun(struct worker *w, const struct job_desc *d, struct mqfork_job *hj)
{
    const char *name = w->a->kinds[d->kind].handler->name;
    if (!w->overrun_logged) {
        log_error("handler %s wrote past its output buffer (%u bytes): job failed", name,
                  d->out_cap);
        w->overrun_logged = true; /* once per worker: a bad handler must not flood the log */
    }
    mqfork_job_error(hj, "handler %s wrote past its output buffer (%u bytes)", name, d->out_cap);
    return JOB_E_FAILED;
}

static enum job_status run_job(struct worker *w, const struct job_desc *d, struct result_desc *r)
{
    const struct segment *seg = w->a->seg;
    struct mqfork_job hj = {
        .in = seg->slab + d->in_off,
        .in_len = d->in_len,
        .out = scratch_buffer(&w->scratch, d->out_cap),
        .out_cap = d->out_cap,
        .state_fresh = d->flags & JOB_STREAM_FRESH,
        .meta = {.flags = d->meta_flags, .lost = d->meta_lost, .time_us = d->meta_time_us},
    };
    if (d->stream_slot != JOB_NO_STREAM && w->hdr->stream_slot_size)
        hj.state = seg->streams + (size_t)d->stream_slot * w->hdr->stream_slot_size;
    enum job_status st = (enum job_status)w->a->kinds[d->kind].handler->run(w->ctx[d->kind], &hj);
    if (hj.out_len > d->out_cap || !canary_intact(hj.out, d->out_cap)) {
        st = overrun(w, d, &hj);
    } else if (st > JOB_E_FAILED) {
        mqfork_job_error(&hj, "handler %s answered an unknown status (%d)",
                         w->a->kinds[d->kind].handler->name, (int)st);
        st = JOB_E_FAILED;
    }
    memcpy(seg->slab + d->out_off, hj.out, hj.out_len);
    r->out_len = (uint32_t)hj.out_len;
    return st;
}

static void handle(struct worker *w, const struct job_desc *d)
{
    struct result_desc r = {.id = d->id};
    uint64_t start = mono_ns();

    seqlock_write_begin(&w->stats->self_lock);
    w->stats->cur_kind = d->kind;
    w->stats->cur_start_ns = start;
    seqlock_write_end(&w->stats->self_lock);

    enum job_status st = desc_valid(w, d) ? run_job(w, d, &r) : JOB_E_FAILED;
    r.status = st;
    r.run_ns = mono_ns() - start;
    while (!ring_push(&w->results, &r))
        sched_yield(); /* cannot happen while the supervisor keeps its in-flight bound */
    notify_supervisor(w);

    seqlock_write_begin(&w->stats->self_lock);
    w->stats->cur_start_ns = 0;
    w->stats->jobs_done++;
    if (st != JOB_OK && st != JOB_FILTERED)
        w->stats->failures++;
    seqlock_write_end(&w->stats->self_lock);
}

/* Take the next job: poll the ring for spin_ns, then park on its futex. */
/* Take the next job: poll the ring briefly, then park on its futex. The
 * poll only pays when jobs come back to back; when the last wait outlasted
 * the spin, the next one parks at once and leaves the CPU to others (on a
 * small machine: the broker, the supervisor, the other workers). */
static void next_job(struct worker *w, struct job_desc *d)
{
    if (ring_pop(&w->jobs, d) == 1)
        return;
    uint64_t start = mono_ns(), until = start + (w->spin ? w->a->spin_ns : 0);
    for (;;) {
        while (!ring_has_data(&w->jobs) && mono_ns() < until)
            ring_cpu_relax();
        if (!ring_has_data(&w->jobs))
            ring_sleep(&w->jobs, NULL);
        if (ring_pop(&w->jobs, d) == 1)
            break;
    }
    w->spin = mono_ns() - start < w->a->spin_ns;
}

void worker_main(const struct worker_args *a)
{
    struct worker w = {
        .a = a, .hdr = a->seg->hdr, .stats = &a->seg->workers_stats[a->slot], .spin = true};
    char title[64];
    snprintf(title, sizeof(title), "mqforkd: worker %u", a->slot);
    proctitle_set(title);
    snprintf(title, sizeof(title), "worker %u", a->slot);
    log_set_tag(title);
    detach_from_supervisor(a);
    schedule_as_batch();

    uint32_t cap = a->seg->hdr->ring_cap;
    ring_attach(&w.jobs, seg_job_ring(a->seg, a->slot), cap, sizeof(struct job_desc), false);
    ring_attach(&w.results, seg_result_ring(a->seg, a->slot), cap, sizeof(struct result_desc),
                true);
    scratch_map(&w.scratch, a->seg->hdr->slab_size);
    init_handlers(&w);
    atomic_store(&seg_worker_ctl(a->seg, a->slot)->ready, 1);
    notify_supervisor(&w);

    for (;;) {
        struct job_desc d;
        next_job(&w, &d);
        if (d.kind == WORKER_EXIT_KIND)
            exit_gracefully(&w);
        handle(&w, &d);
    }
}
