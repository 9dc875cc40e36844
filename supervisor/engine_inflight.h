/* engine_inflight.h - a worker's in-flight list, its two moves on the hot
 * path (dispatch -> collect), inline: inflight_add and inflight_take_head,
 * with inflight_rescue and inflight_abandon in engine_inflight.c, are the
 * only code that changes a worker's inflight, ninflight, est_ns and
 * head_started_ns. */
#ifndef MQFORK_SUPERVISOR_ENGINE_INFLIGHT_H
#define MQFORK_SUPERVISOR_ENGINE_INFLIGHT_H

#include "supervisor/engine_impl.h"

/* "job 42 (route echo, topic t/1/in)": J as a crash, timeout or
 * quarantine line names it, with what its source says of it (else its
 * kind), in BUF. */
const char *job_label(const struct engine *e, const struct job *j, char *buf, size_t len);

/* Taken job J, just pushed to W's ring, becomes the last of W's jobs: one
 * attempt more (inflight_rescue gives it back when J was not to blame), and
 * W is charged its kind's estimate. The first one starts at once. */
static inline void inflight_add(struct engine *e, struct worker *w, struct job *j)
{
    job_move(j, JOB_TAKEN, JOB_INFLIGHT);
    j->attempts++;
    j->worker = (int)w->slot;
    if (w->ninflight == 0) {
        w->head_started_ns = e->now_ns;
        j->started_ns = e->now_ns;
    }
    TAILQ_INSERT_TAIL(&w->inflight, j, link);
    w->ninflight++;
    j->est_ns = e->kinds[j->kind].est_ns;
    w->est_ns += j->est_ns;
}

/* W answered the job at the head of its list (which must be there): it is
 * taken out, to be answered, and the next one starts now. */
static inline struct job *inflight_take_head(struct engine *e, struct worker *w)
{
    struct job *j = TAILQ_FIRST(&w->inflight);
    job_move(j, JOB_INFLIGHT, JOB_TAKEN);
    TAILQ_REMOVE(&w->inflight, j, link);
    w->ninflight--;
    w->est_ns -= j->est_ns;
    struct job *next = TAILQ_FIRST(&w->inflight);
    if (next) {
        w->head_started_ns = e->now_ns;
        next->started_ns = e->now_ns;
    }
    return j;
}

#endif
