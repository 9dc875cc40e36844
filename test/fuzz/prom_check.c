/* prom_check.c - check a Prometheus text exposition line by line (see
 * prom_check.h): a small parser of the 0.0.4 format that keeps the names
 * of families and series it has seen in string sets. */
#include "prom_check.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

/* ---- a set of strings (open addressing, grows at half full) --------------- */

struct set {
    char **slot;
    char *value; /* per slot: a family's type letter, or 0 */
    size_t cap, count;
};

static uint64_t hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static size_t set_find(const struct set *set, const char *s, size_t n)
{
    size_t i = hash(s, n) & (set->cap - 1);
    while (set->slot[i] && (strlen(set->slot[i]) != n || memcmp(set->slot[i], s, n)))
        i = (i + 1) & (set->cap - 1);
    return i;
}

static void set_grow(struct set *set)
{
    struct set bigger = {.cap = set->cap ? set->cap * 2 : 64};
    bigger.slot = calloc(bigger.cap, sizeof(*bigger.slot));
    bigger.value = calloc(bigger.cap, 1);
    FUZZ_CHECK(bigger.slot && bigger.value);
    for (size_t i = 0; i < set->cap; i++)
        if (set->slot[i]) {
            size_t k = set_find(&bigger, set->slot[i], strlen(set->slot[i]));
            bigger.slot[k] = set->slot[i];
            bigger.value[k] = set->value[i];
        }
    bigger.count = set->count;
    free(set->slot);
    free(set->value);
    *set = bigger;
}

/* The slot of S (N bytes), added when absent; *ADDED says which. */
static size_t set_add(struct set *set, const char *s, size_t n, bool *added)
{
    if (2 * (set->count + 1) > set->cap)
        set_grow(set);
    size_t i = set_find(set, s, n);
    *added = !set->slot[i];
    if (*added) {
        set->slot[i] = strndup(s, n);
        FUZZ_CHECK(set->slot[i]);
        set->count++;
    }
    return i;
}

static void set_free(struct set *set)
{
    for (size_t i = 0; i < set->cap; i++)
        free(set->slot[i]);
    free(set->slot);
    free(set->value);
}

/* ---- tokens ----------------------------------------------------------------- */

static bool name_char(char c, bool first, bool colon)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':') ||
           (!first && c >= '0' && c <= '9');
}

/* Length of the name at P (metric names may hold ':'), 0 when none. */
static size_t name_len(const char *p, const char *end, bool colon)
{
    size_t n = 0;
    while (p + n < end && name_char(p[n], n == 0, colon))
        n++;
    return n;
}

/* Whether the escaped text [P, END) has only the escapes ESCAPES allows
 * after a backslash, and is UTF-8 once unescaped. */
static bool escaped_ok(const char *p, const char *end, const char *escapes)
{
    for (const char *q = p; q < end; q++)
        if (*q == '\\' && (++q == end || !strchr(escapes, *q)))
            return false;
    return fuzz_utf8((const uint8_t *)p, (size_t)(end - p));
}

/* ---- lines -------------------------------------------------------------------- */

struct state {
    struct set types;  /* family -> type letter */
    struct set helped; /* families with a HELP */
    struct set done;   /* families whose samples are over */
    struct set series;
    char *current; /* the family whose samples come now */
};

static void enter_family(struct state *st, const char *name, size_t n)
{
    bool added;
    if (st->current && (strlen(st->current) != n || memcmp(st->current, name, n)))
        set_add(&st->done, st->current, strlen(st->current), &added);
    free(st->current);
    st->current = strndup(name, n);
}

static const char *meta_line(struct state *st, const char *p, const char *end)
{
    bool help = !strncmp(p, "# HELP ", 7), type = !strncmp(p, "# TYPE ", 7), added;
    if (!help && !type)
        return NULL; /* another comment */
    p += 7;
    size_t n = name_len(p, end, true);
    if (!n || p + n == end || p[n] != ' ')
        return "a HELP or TYPE line without a metric name and a space";
    const char *rest = p + n + 1;
    if (help) {
        set_add(&st->helped, p, n, &added);
        return !added                         ? "a second HELP for the family"
               : escaped_ok(rest, end, "\\n") ? NULL
                                              : "a HELP text with a bad escape or not UTF-8";
    }
    static const char *const types[] = {"counter", "gauge", "histogram", "summary", "untyped"};
    size_t k = 0, len = (size_t)(end - rest);
    while (k < 5 && (strlen(types[k]) != len || memcmp(rest, types[k], len)))
        k++;
    if (k == 5)
        return "a TYPE that is not a metric type";
    size_t i = set_add(&st->types, p, n, &added);
    if (!added)
        return "a second TYPE for the family";
    st->types.value[i] = types[k][0];
    bool current = st->current && strlen(st->current) == n && !memcmp(st->current, p, n);
    if (current || st->done.slot[set_find(&st->done, p, n)])
        return "a TYPE after the family's samples";
    enter_family(st, p, n);
    return NULL;
}

/* The family a sample named NAME (N bytes) belongs to: a histogram's or
 * summary's _bucket, _sum and _count are its own. Its length. */
static size_t family_of(struct state *st, const char *name, size_t n)
{
    static const char *const suffix[] = {"_bucket", "_sum", "_count"};
    for (size_t k = 0; k < 3; k++) {
        size_t s = strlen(suffix[k]);
        if (n <= s || memcmp(name + n - s, suffix[k], s))
            continue;
        size_t i = set_find(&st->types, name, n - s);
        char t = st->types.slot[i] ? st->types.value[i] : 0;
        if (t == 'h' || (t == 's' && k > 0))
            return n - s;
    }
    return n;
}

#define MAX_LABELS 16

/* Labels from P (just past '{') to their '}': into *AFTER. */
static const char *labels(const char *p, const char *end, const char **after)
{
    const char *name[MAX_LABELS];
    size_t len[MAX_LABELS], count = 0;
    while (p < end && *p != '}') {
        size_t n = name_len(p, end, false);
        if (!n || p + n + 1 >= end || p[n] != '=' || p[n + 1] != '"')
            return "a label that is not name=\"value\"";
        for (size_t i = 0; i < count; i++)
            if (len[i] == n && !memcmp(name[i], p, n))
                return "a label twice in one sample";
        if (count == MAX_LABELS)
            return "more labels than mqforkstat writes";
        name[count] = p;
        len[count++] = n;
        const char *v = p + n + 2, *q = v;
        while (q < end && *q != '"')
            q += *q == '\\' && q + 1 < end ? 2 : 1;
        if (q >= end || !escaped_ok(v, q, "\\\"n"))
            return "a label value unterminated, badly escaped or not UTF-8";
        p = q + 1;
        if (p < end && *p == ',')
            p++;
        else if (p >= end || *p != '}')
            return "labels not separated by ','";
    }
    *after = p + 1;
    return p < end ? NULL : "labels without their '}'";
}

static bool number(const char *p, const char *end)
{
    char buf[64], *stop;
    size_t n = (size_t)(end - p);
    if (n == 0 || n >= sizeof(buf))
        return false;
    memcpy(buf, p, n);
    buf[n] = '\0';
    strtod(buf, &stop);
    return *stop == '\0';
}

static const char *sample_line(struct state *st, const char *p, const char *end)
{
    size_t n = name_len(p, end, true);
    const char *after = p + n, *why = NULL;
    bool added;
    if (!n)
        return "a sample without a metric name";
    if (after < end && *after == '{' && (why = labels(after + 1, end, &after)))
        return why;
    set_add(&st->series, p, (size_t)(after - p), &added);
    if (!added)
        return "a series twice";
    size_t fam = family_of(st, p, n);
    if (st->done.slot[set_find(&st->done, p, fam)])
        return "a family's samples not together";
    enter_family(st, p, fam);
    if (after >= end || *after != ' ')
        return "no space before the value";
    const char *v = after + 1, *ts = memchr(v, ' ', (size_t)(end - v));
    if (!number(v, ts ? ts : end) || (ts && !number(ts + 1, end)))
        return "a value or timestamp that is not a number";
    return NULL;
}

const char *prom_check(const char *text, size_t len, char *where, size_t where_len)
{
    struct state st = {0};
    const char *why = NULL, *end = text + len;
    set_grow(&st.types); /* set_find needs a table */
    set_grow(&st.helped);
    set_grow(&st.done);
    set_grow(&st.series);
    for (const char *p = text; !why && p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p)), *eol = nl ? nl : end;
        if (!nl)
            why = "a last line without its newline";
        else if (p < eol && *p == '#')
            why = meta_line(&st, p, eol);
        else if (p < eol)
            why = sample_line(&st, p, eol);
        if (why)
            snprintf(where, where_len, "%.*s", (int)(eol - p), p);
        p = eol + 1;
    }
    set_free(&st.types);
    set_free(&st.helped);
    set_free(&st.done);
    set_free(&st.series);
    free(st.current);
    return why;
}
