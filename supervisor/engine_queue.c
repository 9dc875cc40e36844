/* engine_queue.c - the pending queues: where accepted jobs wait for a
 * worker, one FIFO per priority, served high first, and what becomes of
 * those that wait too long or are never served. Their moves in and out are
 * in engine_queue.h; dispatch.c takes jobs from them for the workers. */
#include "supervisor/engine_queue.h"

#include <inttypes.h>

#define EXPIRE_SWEEP_NS 50000000 /* look for expired pending jobs this often */

void queue_init(struct engine *e)
{
    for (int p = 0; p < PRIO_COUNT; p++)
        TAILQ_INIT(&e->q.pending[p]);
}

void queue_answer_expired(struct engine *e, struct job *j)
{
    queue_take(e, j);
    engine_finishf(e, j, JOB_E_EXPIRED, "still pending %" PRIu64 " ms after it was accepted",
                   (e->now_ns - j->accepted_ns) / 1000000);
}

void queue_expire(struct engine *e)
{
    /* A backlog of jobs without deadlines (a voice pool behind) is not
     * walked every 50 ms for nothing. */
    if (e->q.with_deadline == 0 || e->now_ns < e->q.next_expire_ns)
        return;
    e->q.next_expire_ns = e->now_ns + EXPIRE_SWEEP_NS;
    for (int p = 0; p < PRIO_COUNT; p++) {
        for (struct job *j = TAILQ_FIRST(&e->q.pending[p]), *next; j; j = next) {
            next = TAILQ_NEXT(j, link);
            if (queue_overdue(e, j))
                queue_answer_expired(e, j);
        }
    }
}

void queue_abandon(struct engine *e)
{
    for (int p = 0; p < PRIO_COUNT; p++) {
        struct job *j;
        while ((j = TAILQ_FIRST(&e->q.pending[p]))) {
            queue_take(e, j);
            engine_finishf(e, j, JOB_E_SHUTDOWN, "abandoned: the daemon stopped first");
        }
    }
}
