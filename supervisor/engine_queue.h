/* engine_queue.h - the pending queues' two moves, inline for the hot path
 * (submit -> dispatch): queue_push and queue_take are the only code that
 * changes struct queues' lists and count and the pending gauges; the rest
 * of the queues is engine_queue.c. */
#ifndef MQFORK_SUPERVISOR_ENGINE_QUEUE_H
#define MQFORK_SUPERVISOR_ENGINE_QUEUE_H

#include "supervisor/engine_impl.h"

/* Taken job J goes to the back of its priority's queue, or to the front
 * (FRONT: a retry, or a send that failed, keeps its place). */
static inline void queue_push(struct engine *e, struct job *j, bool front)
{
    job_move(j, JOB_TAKEN, JOB_PENDING);
    if (front)
        TAILQ_INSERT_HEAD(&e->q.pending[j->prio], j, link);
    else
        TAILQ_INSERT_TAIL(&e->q.pending[j->prio], j, link);
    e->q.n++;
    e->q.with_deadline += j->deadline_ns != 0;
    e->g.pending[j->prio]++;
}

/* Pending job J leaves its queue, taken: to be sent or answered. */
static inline void queue_take(struct engine *e, struct job *j)
{
    job_move(j, JOB_PENDING, JOB_TAKEN);
    TAILQ_REMOVE(&e->q.pending[j->prio], j, link);
    e->q.n--;
    e->q.with_deadline -= j->deadline_ns != 0;
    e->g.pending[j->prio]--;
}

/* Whether pending job J is past its deadline. */
static inline bool queue_overdue(const struct engine *e, const struct job *j)
{
    return j->deadline_ns && e->now_ns > j->deadline_ns;
}

#endif
