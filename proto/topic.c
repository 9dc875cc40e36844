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
