/* t.h - the few macros every test program uses: check a condition, report
 * where it failed, and turn the count of failures into the exit status that
 * meson reads. Tests are plain programs; each check names what it expected. */
#ifndef MQFORK_TEST_T_H
#define MQFORK_TEST_T_H

#include <stdio.h>
#include <stdlib.h>

static int t_failures;

#define T_CHECK(cond, ...)                                                                         \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            t_failures++;                                                                          \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* Like T_CHECK, but the test cannot go on without it. */
#define T_REQUIRE(cond, ...)                                                                       \
    do {                                                                                           \
        int t_before_ = t_failures;                                                                \
        T_CHECK(cond, __VA_ARGS__);                                                                \
        if (t_failures != t_before_)                                                               \
            exit(1);                                                                               \
    } while (0)

#define T_DONE()                                                                                   \
    do {                                                                                           \
        if (t_failures)                                                                            \
            fprintf(stderr, "%d check(s) failed\n", t_failures);                                   \
        return t_failures ? 1 : 0;                                                                 \
    } while (0)

#endif
