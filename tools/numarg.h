/* numarg.h - strict parsing of a number given on a tool's command line:
 * the whole argument, in range, finite; shared by mqfork-load and
 * mqfork-device. */
#ifndef MQFORK_TOOLS_NUMARG_H
#define MQFORK_TOOLS_NUMARG_H

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

static inline bool parse_double(const char *s, double lo, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo)
        return false;
    *out = v;
    return true;
}

static inline bool parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

#endif
