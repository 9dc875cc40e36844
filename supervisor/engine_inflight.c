/* engine_inflight.c - what becomes of the jobs a worker held when it is
 * gone. The job at the head of a dead worker's in-flight list is the one it
 * was running - workers run their ring in order - so only that job is
 * charged an attempt; the jobs queued behind it go back to the front of
 * their queues untouched. The list's moves on the hot path are in
 * engine_inflight.h. */
#include "supervisor/engine_inflight.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "supervisor/engine_queue.h"

const char *job_label(const struct engine *e, const struct job *j, char *buf, size_t len)
{
    char said[384] = "";
    if (j->describe)
        j->describe(j->ctx, said, sizeof(said));
    if (said[0])
        snprintf(buf, len, "job %" PRIu64 " (%s)", j->id, said);
    else
        snprintf(buf, len, "job %" PRIu64 " (kind %s)", j->id, e->kinds[j->kind].name);
    return buf;
}

/* J leaves W's list, taken. */
static void take(struct worker *w, struct job *j)
{
    job_move(j, JOB_INFLIGHT, JOB_TAKEN);
    TAILQ_REMOVE(&w->inflight, j, link);
    w->ninflight--;
    w->est_ns -= j->est_ns;
}

static void requeue(struct engine *e, struct job *j)
{
    j->worker = -1;
    queue_push(e, j, true);
}

/* The jobs W held when it died. REASON is set when its running job is to
 * blame; then that job is charged an attempt, and is retried or quarantined
 * (engine_retry.c); the others are not. */
void inflight_rescue(struct engine *e, struct worker *w, const char *reason)
{
    struct job *culprit = reason ? TAILQ_FIRST(&w->inflight) : NULL;
    /* Tail first, each to the front of its queue: their order is kept. */
    struct job *j;
    while ((j = TAILQ_LAST(&w->inflight, job_list))) {
        take(w, j);
        if (j->stream)
            stream_job_lost(e, j, j == culprit);
        if (j != culprit) {
            j->attempts--;
            requeue(e, j);
        } else {
            retry_or_answer(e, j, w->killed == DEATH_TIMEOUT ? TRY_TIMEOUT : TRY_CRASHED,
                            JOB_E_QUARANTINED, reason, strlen(reason), 0);
        }
    }
}

/* The daemon stops: what W held is answered as abandoned. */
void inflight_abandon(struct engine *e, struct worker *w)
{
    struct job *j;
    while ((j = TAILQ_FIRST(&w->inflight))) {
        take(w, j);
        engine_finishf(e, j, JOB_E_SHUTDOWN, "abandoned: the daemon stopped first");
    }
}
