/* topic.c - topic matching with wildcard capture, and template expansion
 * (see topic.h). */
#include "proto/topic.h"

#include <stdlib.h>
#include <string.h>

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
