/* log.c - format log lines for the journal or a terminal (see log.h). The
 * level and tag are process-wide on purpose: a process has one log. */
#include "common/log.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shm/clock.h"

static enum log_level min_level = LOG_LVL_INFO;
static char tag[32];

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const int journal_priority[] = {7, 6, 4, 3};

int log_set_level_name(const char *name)
{
    for (int i = 0; i <= LOG_LVL_ERROR; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            min_level = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

void log_set_level(enum log_level level)
{
    min_level = level;
}

void log_set_tag(const char *t)
{
    snprintf(tag, sizeof(tag), "%s", t ? t : "");
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (level < min_level)
        return;
    char line[1024];
    size_t n;
    if (getenv("JOURNAL_STREAM")) {
        n = (size_t)snprintf(line, sizeof(line), "<%d>", journal_priority[level]);
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        localtime_r(&ts.tv_sec, &tm);
        /* The date too: a terminal's or a file's log outlives a day. */
        n = strftime(line, sizeof(line), "%Y-%m-%d %H:%M:%S", &tm);
        n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ld %-5s ", ts.tv_nsec / 1000000,
                              level_names[level]);
    }
    if (tag[0] && n < sizeof(line))
        n += (size_t)snprintf(line + n, sizeof(line) - n, "%s: ", tag);
    va_list ap;
    va_start(ap, fmt);
    if (n < sizeof(line))
        n += (size_t)vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    va_end(ap);
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    /* One write per line, so lines of several processes never interleave. */
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}

void log_rated(struct log_rate *r, enum log_level level, const char *fmt, ...)
{
    if (level < min_level)
        return;
    uint64_t now = mono_ns();
    if (now < r->next_ns) {
        r->held++;
        return;
    }
    char text[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (r->held)
        log_msg(level, "%s (and %" PRIu64 " more like it, not logged)", text, r->held);
    else
        log_msg(level, "%s", text);
    r->held = 0;
    r->next_ns = now + NS_PER_S;
}
