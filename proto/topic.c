/* topic.c - topic matching with wildcard capture, template expansion, and
 * the check of a topic to publish to (see topic.h). */
#include "proto/topic.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define STRINGIFY_(x) #x
#define STRINGIFY(x)  STRINGIFY_(x)

const char *topic_filter_base(const char *filter)
{
    if (strncmp(filter, "$share/", 7) != 0)
        return filter;
    const char *slash = strchr(filter + 7, '/');
    return slash ? slash + 1 : filter + strlen(filter);
}

/* Length of the level starting at P (up to the next '/' or the end). */
static size_t level_len(const char *p)
{
    const char *slash = strchr(p, '/');
    return slash ? (size_t)(slash - p) : strlen(p);
}

static bool capture(struct topic_levels *lv, const char *at, size_t len)
{
    if (!lv)
        return true;
    if (lv->count >= TOPIC_MAX_WILDCARDS)
        return false;
    lv->level[lv->count].at = at;
    lv->level[lv->count].len = len;
    lv->count++;
    return true;
}

bool topic_match(const char *filter, const char *topic, struct topic_levels *lv)
{
    const char *f = topic_filter_base(filter), *t = topic;
    if (lv)
        lv->count = 0;
    if (topic[0] == '$' && (f[0] == '+' || f[0] == '#'))
        return false;
    for (;;) {
        size_t fl = level_len(f), tl = level_len(t);
        if (fl == 1 && f[0] == '#')
            return capture(lv, t, strlen(t));
        if (fl == 1 && f[0] == '+') {
            if (!capture(lv, t, tl))
                return false;
        } else if (fl != tl || memcmp(f, t, fl) != 0) {
            return false;
        }
        bool f_more = f[fl] == '/', t_more = t[tl] == '/';
        if (!f_more || !t_more) {
            /* "a/#" also matches "a": the '#' then captures nothing */
            if (f_more && !t_more && strcmp(f + fl, "/#") == 0)
                return capture(lv, t + tl, 0);
            return f_more == t_more;
        }
        f += fl + 1;
        t += tl + 1;
    }
}

long topic_expand(const char *tmpl, const struct topic_levels *lv, char *out, size_t cap)
{
    size_t n = 0;
    for (const char *p = tmpl; *p; p++) {
        const char *src = p;
        size_t len = 1;
        if (*p == '{') {
            char *end;
            unsigned long i = strtoul(p + 1, &end, 10);
            if (*end != '}' || i == 0 || i > lv->count)
                return -1;
            src = lv->level[i - 1].at;
            len = lv->level[i - 1].len;
            p = end;
        }
        if (n + len >= cap)
            return -1;
        memcpy(out + n, src, len);
        n += len;
    }
    out[n] = '\0';
    return (long)n;
}

/* Decode the UTF-8 sequence at S (N > 0 bytes left) into *CP. Returns its
 * length, or 0 when it is ill-formed: a stray continuation byte, a truncated
 * sequence, an overlong form, a surrogate or a value past U+10FFFF. */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    static const uint32_t least[5] = {0, 0, 0x80, 0x800, 0x10000};
    size_t len = s[0] < 0x80             ? 1
                 : (s[0] & 0xe0) == 0xc0 ? 2
                 : (s[0] & 0xf0) == 0xe0 ? 3
                 : (s[0] & 0xf8) == 0xf0 ? 4
                                         : 0;
    if (len == 0 || len > n)
        return 0;
    uint32_t c = len == 1 ? s[0] : s[0] & (0x7fu >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = c << 6 | (s[i] & 0x3f);
    }
    if (c < least[len] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}

bool utf8_valid(const void *text, size_t len)
{
    const unsigned char *s = text;
    uint32_t c;
    for (size_t i = 0, n; i < len; i += n)
        if (!(n = utf8_decode(s + i, len - i, &c)))
            return false;
    return true;
}

/* Characters MQTT says a string should not hold; a broker may treat them as
 * malformed and close the connection. */
static bool unwelcome(uint32_t c)
{
    return c <= 0x1f || (c >= 0x7f && c <= 0x9f) || (c >= 0xfdd0 && c <= 0xfdef) ||
           (c & 0xfffe) == 0xfffe;
}

/* What topic_publish_problem and topic_filter_problem share; WILDCARDS_OK
 * lets '+' and '#' through (their placement is the caller's to check). */
static const char *text_problem(const char *text, size_t len, bool wildcards_ok)
{
    if (len == 0)
        return "is empty";
    if (len > TOPIC_MAX_BYTES)
        return "is longer than " STRINGIFY(TOPIC_MAX_BYTES) " bytes";
    const unsigned char *s = (const unsigned char *)text;
    size_t levels = 1;
    for (size_t i = 0, n; i < len; i += n) {
        uint32_t c;
        if (!(n = utf8_decode(s + i, len - i, &c)))
            return "is not valid UTF-8";
        if (c == 0)
            return "contains U+0000";
        if (unwelcome(c))
            return "contains a control character or a Unicode noncharacter";
        if (!wildcards_ok && (c == '+' || c == '#'))
            return "contains the wildcard '+' or '#'";
        levels += c == '/';
    }
    if (levels > TOPIC_MAX_LEVELS)
        return "has more than " STRINGIFY(TOPIC_MAX_LEVELS) " levels";
    return NULL;
}

const char *topic_publish_problem(const char *topic, size_t len)
{
    return text_problem(topic, len, false);
}

const char *topic_filter_problem(const char *filter, size_t len)
{
    return text_problem(filter, len, true);
}

/* ---- can a template make a topic its own filter matches? Both sides are
 * read as patterns over characters: a literal, a '+' (any run without '/'),
 * a '#' (any run). Two patterns share a string when a walk through both can
 * reach both ends, each step taking one token or one character. */

enum glob_kind { GLOB_CHAR, GLOB_LEVEL, GLOB_ANY };

struct glob {
    unsigned char kind; /* enum glob_kind */
    char c;             /* GLOB_CHAR */
};

/* Pairs of positions the walk may visit at most: past it, no answer. */
#define GLOB_MAX_STATES (1u << 22)

static bool glob_takes(const struct glob *g, char c)
{
    return g->kind == GLOB_ANY || (g->kind == GLOB_LEVEL && c != '/');
}

/* One step of the walk from (I, J), in row CUR (same I) or NEXT (I + 1). */
static void glob_step(const struct glob *a, size_t na, const struct glob *b, size_t nb, size_t i,
                      size_t j, bool *cur, bool *next)
{
    bool a_char = i < na && a[i].kind == GLOB_CHAR, b_char = j < nb && b[j].kind == GLOB_CHAR;
    if (j < nb && !b_char)
        cur[j + 1] = true; /* B's star as empty */
    if (i == na)
        return;
    if (!a_char)
        next[j] = true; /* A's star as empty */
    if (j == nb)
        return;
    if (a_char && b_char && a[i].c == b[j].c)
        next[j + 1] = true;
    else if (a_char && !b_char && glob_takes(&b[j], a[i].c))
        next[j] = true; /* B's star takes A's character */
    else if (!a_char && b_char && glob_takes(&a[i], b[j].c))
        cur[j + 1] = true; /* A's star takes B's character */
}

/* Whether A (NA tokens) and B (NB) match a common string. Row I of the walk
 * says which prefixes of B can match A's first I tokens. Both stars taking
 * one character at once is never needed: without it both still match. */
static bool globs_meet(const struct glob *a, size_t na, const struct glob *b, size_t nb)
{
    bool *rows = calloc(2 * (nb + 1), sizeof(*rows)), *cur = rows, *next = rows + nb + 1;
    if (!rows)
        return false;
    cur[0] = true;
    for (size_t i = 0;; i++) {
        for (size_t j = 0; j <= nb; j++)
            if (cur[j])
                glob_step(a, na, b, nb, i, j, cur, next);
        if (i == na)
            break;
        bool *t = cur;
        cur = next;
        next = t;
        memset(next, 0, (nb + 1) * sizeof(*next));
    }
    bool met = cur[nb];
    free(rows);
    return met;
}

/* FILTER's body (no $share/ prefix) as tokens into OUT (room for its
 * length); its wildcards' kinds, in order, into WILD (TOPIC_MAX_WILDCARDS
 * kept). Returns the number of tokens. */
static size_t filter_globs(const char *f, struct glob *out, unsigned char *wild, unsigned *nwild)
{
    size_t n = 0;
    *nwild = 0;
    for (; *f; f++) {
        unsigned char kind = *f == '+' ? GLOB_LEVEL : *f == '#' ? GLOB_ANY : GLOB_CHAR;
        if (kind != GLOB_CHAR && *nwild < TOPIC_MAX_WILDCARDS)
            wild[(*nwild)++] = kind;
        out[n++] = (struct glob){.kind = kind, .c = *f};
    }
    return n;
}

/* TMPL as tokens into OUT (room for its length): {N} is what wildcard N
 * matched, a level for '+', anything for '#' (or for a reference to no
 * wildcard: the loader reports those). Returns the number of tokens. */
static size_t template_globs(const char *t, const unsigned char *wild, unsigned nwild,
                             struct glob *out)
{
    size_t n = 0;
    for (; *t; t++) {
        char *end;
        unsigned long w = *t == '{' ? strtoul(t + 1, &end, 10) : 0;
        if (*t == '{' && *end == '}') {
            out[n++] = (struct glob){.kind = w >= 1 && w <= nwild ? wild[w - 1] : GLOB_ANY};
            t = end;
        } else {
            out[n++] = (struct glob){.kind = GLOB_CHAR, .c = *t};
        }
    }
    return n;
}

bool topic_template_can_match(const char *tmpl, const char *filter)
{
    const char *f = topic_filter_base(filter);
    size_t tl = strlen(tmpl), fl = strlen(f);
    if ((uint64_t)(tl + 1) * (fl + 1) > GLOB_MAX_STATES)
        return false;
    /* A topic starting with '$' is not matched by a leading wildcard. */
    if (tmpl[0] == '$' && (f[0] == '+' || f[0] == '#'))
        return false;
    struct glob *t = calloc(tl + 1, sizeof(*t)), *fg = calloc(fl + 1, sizeof(*fg));
    unsigned char wild[TOPIC_MAX_WILDCARDS];
    unsigned nwild;
    bool met = false;
    if (t && fg) {
        size_t nf = filter_globs(f, fg, wild, &nwild), nt = template_globs(tmpl, wild, nwild, t);
        met = globs_meet(t, nt, fg, nf);
        /* "a/#" also matches "a" */
        if (!met && nf >= 2 && fg[nf - 1].kind == GLOB_ANY && fg[nf - 2].c == '/')
            met = globs_meet(t, nt, fg, nf - 2);
    }
    free(t);
    free(fg);
    return met;
}
