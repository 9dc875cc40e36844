/* log.h - the daemon's log: one line per event on stderr, which systemd's
 * journal captures. Under the journal each line carries its priority as a
 * "<N>" prefix; elsewhere it carries the local date and time and the
 * level's name. */
#ifndef MQFORK_COMMON_LOG_H
#define MQFORK_COMMON_LOG_H

#include <stdint.h>

enum log_level { LOG_LVL_DEBUG, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERROR };

/* Only messages at LEVEL or above are written. Returns -1 for an unknown name. */
int log_set_level_name(const char *name);
void log_set_level(enum log_level level);
/* A tag written after the level on each line ("worker 3"); NULL for none. */
void log_set_tag(const char *tag);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)

/* A budget for a line that a flood could repeat (one bad request after
 * another): at most one such line a second, and the next one written says
 * how many were held back. Start it zeroed; one per kind of line. */
struct log_rate {
    uint64_t next_ns; /* CLOCK_MONOTONIC before which lines are held back */
    uint64_t held;
};

void log_rated(struct log_rate *r, enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
