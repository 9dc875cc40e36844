/* mqforkstat_fields.c - how every output names and values a block's fields
 * (from the field table the block carries, so the text, JSON and Prometheus
 * outputs cannot drift apart), and the derived figures (latency in
 * microseconds, job age, uptime, crash cause, event times) every output
 * computes and formats the same way. */
#include <signal.h>
#include <string.h>
#include <time.h>

#include "shm/statread.h"
#include "tools/mqforkstat.h"

void field_text_name(char *buf, size_t len, const struct snap_block *b, const struct stats_field *f)
{
    char raw[STATS_BLOCK_NAME_LEN + STATS_FIELD_NAME_LEN + 2];
    if (block_global(b))
        snprintf(raw, sizeof(raw), "%s", f->name);
    else
        snprintf(raw, sizeof(raw), "%s.%s", b->e.name, f->name);
    /* a crafted name must not break the `name value` lines */
    safe_name(buf, len, raw, sizeof(raw));
}

double field_value(const struct stats_field *f, const void *data)
{
    return (double)stats_field_raw(f, data) / (double)f->divide;
}

/* The VALUE-th of the '|'-separated names of F, or the number itself. */
const char *field_state(char *buf, size_t len, const struct stats_field *f, const void *data)
{
    uint64_t v = stats_field_raw(f, data);
    const char *p = f->states;
    for (uint64_t i = 0; i < v && p; i++) {
        p = strchr(p, '|');
        p = p ? p + 1 : NULL;
    }
    size_t n = p ? strcspn(p, "|") : 0;
    if (n)
        safe_name(buf, len, p, n);
    else
        snprintf(buf, len, "%llu", (unsigned long long)v);
    return buf;
}

double field_age_s(const struct snap *s, const struct stats_field *f, const void *data)
{
    uint64_t t = stats_field_raw(f, data);
    return t && t < s->mono_ns ? (double)(s->mono_ns - t) / 1e9 : 0.0;
}

double hist_us(uint64_t ns)
{
    return (double)ns / 1000.0;
}

double hist_mean_us(const struct stats_hist *h)
{
    return h->count ? (double)h->sum_ns / (double)h->count / 1000.0 : 0.0;
}

uint64_t worker_job_age_ns(const struct snap *s, const struct snap_worker *w)
{
    uint64_t start = w->w.cur_start_ns;
    return start && start < s->mono_ns ? s->mono_ns - start : 0;
}

double snap_uptime_s(const struct snap *s)
{
    uint64_t start = s->hdr.start_realtime_ns;
    return start && start < s->real_ns ? (double)(s->real_ns - start) / 1e9 : 0.0;
}

void safe_name(char *dst, size_t dstlen, const char *name, size_t len)
{
    size_t i = 0;
    for (; i + 1 < dstlen && i < len && name[i]; i++) {
        unsigned char c = (unsigned char)name[i];
        dst[i] = c <= ' ' || c >= 0x7f ? '_' : (char)c;
    }
    if (dstlen)
        dst[i] = '\0';
}

/* Bytes in one well-formed UTF-8 sequence at S, or 0 (RFC 3629's table:
 * no overlong forms, surrogates or code points past U+10FFFF). */
static size_t utf8_len(const unsigned char *s)
{
    unsigned c = s[0];
    size_t n = c < 0x80                 ? 1
               : c >= 0xc2 && c <= 0xdf ? 2
               : c >= 0xe0 && c <= 0xef ? 3
               : c >= 0xf0 && c <= 0xf4 ? 4
                                        : 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f) || (c == 0xf0 && s[1] < 0x90) ||
        (c == 0xf4 && s[1] > 0x8f))
        return 0;
    return n;
}

void utf8_repair(char *text)
{
    for (unsigned char *p = (unsigned char *)text; *p;) {
        size_t n = utf8_len(p);
        if (n)
            p += n;
        else
            *p++ = '?';
    }
}

/* ISO 8601 UTC with milliseconds; the event rings keep CLOCK_REALTIME. */
void fmt_time_iso(char *buf, size_t len, uint64_t ns)
{
    time_t t = (time_t)(ns / 1000000000u);
    struct tm tm;
    gmtime_r(&t, &tm);
    char base[32];
    strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, len, "%s.%03uZ", base, (unsigned)(ns / 1000000u % 1000u));
}

/* "SIGSEGV", or "exit 3" for a worker that exited by itself. */
void crash_cause(char *buf, size_t len, const struct stats_crash *c)
{
    const char *abbrev = c->signal > 0 && c->signal < NSIG ? sigabbrev_np(c->signal) : NULL;
    if (c->signal == 0)
        snprintf(buf, len, "exit_%d", (int)c->exit_code);
    else if (abbrev)
        snprintf(buf, len, "SIG%s", abbrev);
    else
        snprintf(buf, len, "signal_%d", (int)c->signal);
}
