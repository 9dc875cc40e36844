/* job.c - names of job statuses, as they appear in error reports and stats. */
#include "proto/job.h"

static const char *const status_names[JOB_STATUS_COUNT] = {
    [JOB_OK] = "ok",
    [JOB_FILTERED] = "filtered",
    [JOB_E_BAD_INPUT] = "bad_input",
    [JOB_E_FAILED] = "failed",
    [JOB_E_OVERLOADED] = "overloaded",
    [JOB_E_TOO_LARGE] = "too_large",
    [JOB_E_UNKNOWN_KIND] = "unknown_kind",
    [JOB_E_EXPIRED] = "expired",
    [JOB_E_QUARANTINED] = "quarantined",
    [JOB_E_SHUTDOWN] = "shutdown",
};

const char *job_status_name(enum job_status s)
{
    if ((unsigned)s >= JOB_STATUS_COUNT)
        return "invalid";
    return status_names[s];
}
