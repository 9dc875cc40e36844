/* run.h - run a program from a test and collect what it printed: its
 * exit status, standard output and standard error, with a time limit, as
 * another user if asked. Used by the tests that drive mqforkstat. */
#ifndef MQFORK_TEST_RUN_H
#define MQFORK_TEST_RUN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct run {
    int status; /* exit code, or 128 + signal, or -1 if it did not finish */
    char *out, *err;
    size_t out_len, err_len;
};

void run_free(struct run *r);

/* Add N bytes of DATA to the NUL-terminated buffer *BUF of *LEN bytes. */
void run_append(char **buf, size_t *len, const char *data, size_t n);

/* The exit status of child PID as struct run has it. */
int run_wait(pid_t pid);

/* Run ARGV with stdin from IN_FD (or /dev/null), as USER when set; killed
 * when it has not finished within 20 s. */
struct run run_as(const char *user, int in_fd, const char *const argv[]);
struct run run(const char *const argv[]);

/* Figure NAME of instance INSTANCE as MQFORKSTAT -1 prints it; -1 when it
 * is not there. */
long run_figure(const char *mqforkstat, const char *instance, const char *name);

/* Whether NAME is an executable on $PATH. */
bool run_has_program(const char *name);

#endif
