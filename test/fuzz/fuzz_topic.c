/* fuzz_topic.c - libFuzzer harness for proto/topic.c: a route's filter, an
 * incoming topic and a reply template, as topic_match, topic_expand and
 * topic_template_can_match see them, and any bytes as a topic to publish
 * or a filter to subscribe to. A match is compared with a plain
 * reimplementation of the MQTT rules (for filters a configuration can
 * hold), an expansion with the template filled by hand, a template whose
 * expansion matches its filter must be one that "can match", and what a
 * broker takes with the rules topic.h states, checked by hand.
 *
 * Input: FILTER \0 TOPIC \0 TEMPLATE \0 CAP(2 bytes: the output buffer). */
#include "fuzz.h"
#include "proto/topic.h"

/* A string cut at its '/': where each level starts and how long it is. */
struct split {
    size_t count;
    const char **at;
    size_t *len;
};

static void split(const char *s, struct split *sp)
{
    size_t most = 1;
    for (const char *p = s; *p; p++)
        most += *p == '/';
    sp->at = fuzz_xmalloc(most * sizeof(*sp->at));
    sp->len = fuzz_xmalloc(most * sizeof(*sp->len));
    sp->count = 0;
    for (const char *p = s;; p++) {
        const char *slash = strchr(p, '/');
        sp->at[sp->count] = p;
        sp->len[sp->count++] = slash ? (size_t)(slash - p) : strlen(p);
        if (!slash)
            return;
        p = slash;
    }
}

static void split_free(struct split *sp)
{
    free(sp->at);
    free(sp->len);
}

static bool level_is(const struct split *sp, size_t i, const char *word)
{
    return sp->len[i] == strlen(word) && !memcmp(sp->at[i], word, sp->len[i]);
}

/* A filter a configuration accepts: '+' and '#' only as whole levels, '#'
 * only last, at most TOPIC_MAX_WILDCARDS of them. */
static bool filter_valid(const struct split *f)
{
    unsigned wild = 0;
    for (size_t i = 0; i < f->count; i++) {
        bool plus = level_is(f, i, "+"), hash = level_is(f, i, "#");
        if (hash && i + 1 != f->count)
            return false;
        if (!plus && !hash && memchr(f->at[i], '+', f->len[i]))
            return false;
        if (!plus && !hash && memchr(f->at[i], '#', f->len[i]))
            return false;
        wild += plus || hash;
    }
    return wild <= TOPIC_MAX_WILDCARDS;
}

static void put(struct topic_levels *lv, const char *at, size_t len)
{
    lv->level[lv->count].at = at;
    lv->level[lv->count++].len = len;
}

/* The MQTT rules, level by level. */
static bool reference_match(const struct split *f, const char *topic, struct topic_levels *lv)
{
    lv->count = 0;
    if (topic[0] == '$' && (level_is(f, 0, "+") || level_is(f, 0, "#")))
        return false;
    struct split t;
    split(topic, &t);
    bool m = true;
    size_t i = 0;
    for (; m && i < f->count && !level_is(f, i, "#"); i++) {
        if (i == t.count)
            m = false;
        else if (level_is(f, i, "+"))
            put(lv, t.at[i], t.len[i]);
        else
            m = f->len[i] == t.len[i] && !memcmp(f->at[i], t.at[i], t.len[i]);
    }
    if (m && i < f->count) { /* '#': the rest, possibly nothing */
        const char *at = i < t.count ? t.at[i] : topic + strlen(topic);
        put(lv, at, strlen(at));
    } else if (m) {
        m = f->count == t.count;
    }
    split_free(&t);
    return m;
}

/* topic_match, its captures within the topic and, for a filter a
 * configuration can hold, equal to the reference's. */
static bool check_match(const char *filter, const char *topic, struct topic_levels *lv)
{
    bool m = topic_match(filter, topic, lv);
    const char *base = topic_filter_base(filter);
    FUZZ_CHECK(base >= filter && base <= filter + strlen(filter));
    size_t tlen = strlen(topic);
    if (m) {
        FUZZ_CHECK(lv->count <= TOPIC_MAX_WILDCARDS);
        for (unsigned i = 0; i < lv->count; i++)
            FUZZ_CHECK(lv->level[i].at >= topic &&
                       lv->level[i].at + lv->level[i].len <= topic + tlen);
    }
    struct split f;
    struct topic_levels want;
    split(base, &f);
    if (filter_valid(&f)) {
        FUZZ_CHECK(reference_match(&f, topic, &want) == m);
        FUZZ_CHECK(!m || want.count == lv->count);
        for (unsigned i = 0; m && i < lv->count; i++)
            FUZZ_CHECK(want.level[i].at == lv->level[i].at &&
                       want.level[i].len == lv->level[i].len);
    }
    split_free(&f);
    return m;
}

#define NOT_CONFIG (-2)

/* The N of a "{N}" at P as a configuration writes it (1 to 9 digits), and
 * where it ends in *END; 0 when P holds something else. */
static unsigned long reference(const char *p, const char **end)
{
    size_t digits = strspn(p + 1, "0123456789");
    if (digits == 0 || digits > 9 || p[1 + digits] != '}')
        return 0;
    unsigned long n = 0;
    for (size_t i = 0; i < digits; i++)
        n = n * 10 + (unsigned long)(p[1 + i] - '0');
    *end = p + 1 + digits;
    return n;
}

/* TMPL filled by hand into OUT (when not NULL); its length, -1 when a {N}
 * has no level, NOT_CONFIG for a template a configuration refuses. */
static long reference_expand(const char *tmpl, const struct topic_levels *lv, char *out)
{
    size_t n = 0;
    for (const char *p = tmpl; *p; p++) {
        if (*p == '}')
            return NOT_CONFIG;
        if (*p != '{') {
            if (out)
                out[n] = *p;
            n++;
            continue;
        }
        unsigned long i = reference(p, &p);
        if (i == 0)
            return NOT_CONFIG;
        if (i > lv->count)
            return -1;
        if (out)
            memcpy(out + n, lv->level[i - 1].at, lv->level[i - 1].len);
        n += lv->level[i - 1].len;
    }
    if (out)
        out[n] = '\0';
    return (long)n;
}

/* topic_expand into a buffer of CAP bytes: a text that fits, or -1; for a
 * template a configuration holds, the reference's text when it fits. */
static void check_expand(const char *tmpl, const struct topic_levels *lv, size_t cap)
{
    char *out = fuzz_xmalloc(cap);
    long n = topic_expand(tmpl, lv, out, cap);
    long w = reference_expand(tmpl, lv, NULL);
    FUZZ_CHECK(n == -1 || ((size_t)n < cap && strlen(out) == (size_t)n));
    if (w >= 0 && (size_t)w < cap) {
        char *want = fuzz_xmalloc((size_t)w + 1);
        reference_expand(tmpl, lv, want);
        FUZZ_CHECK(n == w);
        FUZZ_CHECK(!memcmp(out, want, (size_t)w + 1));
        free(want);
    } else if (w != NOT_CONFIG) {
        FUZZ_CHECK(n == -1);
    }
    free(out);
}

/* Whether a broker takes S (LEN bytes) as topic.h says, checked by hand:
 * 1 to TOPIC_MAX_BYTES bytes of UTF-8 without U+0000 to U+001F, U+007F to
 * U+009F, noncharacters, nor (unless WILD) '+' or '#'; at most
 * TOPIC_MAX_LEVELS levels. */
static bool reference_takes(const uint8_t *s, size_t len, bool wild)
{
    size_t levels = 1;
    if (len == 0 || len > TOPIC_MAX_BYTES)
        return false;
    for (size_t i = 0, n; i < len; i += n) {
        uint32_t c;
        if (!(n = fuzz_utf8_next(s + i, len - i, &c)) || c < 0x20 || (c >= 0x7f && c < 0xa0))
            return false;
        if ((c >= 0xfdd0 && c <= 0xfdef) || (c & 0xffff) >= 0xfffe)
            return false;
        if (!wild && (c == '+' || c == '#'))
            return false;
        levels += c == '/';
    }
    return levels <= TOPIC_MAX_LEVELS;
}

static void check_takes(const uint8_t *s, size_t len)
{
    char *copy = fuzz_xmalloc(len); /* not NUL-terminated */
    memcpy(copy, s, len);
    FUZZ_CHECK(!topic_publish_problem(copy, len) == reference_takes(s, len, false));
    FUZZ_CHECK(!topic_filter_problem(copy, len) == reference_takes(s, len, true));
    free(copy);
}

/* A template whose expansion from a match of FILTER matches FILTER again
 * is one topic_template_can_match must see (unless too long to tell). */
static void check_can_match(const char *filter, const char *tmpl, const struct topic_levels *lv)
{
    size_t tl = strlen(tmpl), fl = strlen(topic_filter_base(filter));
    if ((uint64_t)(tl + 1) * (fl + 1) > (1u << 22))
        return;
    long n = reference_expand(tmpl, lv, NULL);
    struct split f;
    split(topic_filter_base(filter), &f);
    if (n >= 0 && filter_valid(&f)) {
        char *topic = fuzz_xmalloc((size_t)n + 1);
        reference_expand(tmpl, lv, topic);
        if (topic_match(filter, topic, NULL))
            FUZZ_CHECK(topic_template_can_match(tmpl, filter));
        free(topic);
    } else if ((tl + 1) * (fl + 1) <= (1u << 16)) {
        topic_template_can_match(tmpl, filter); /* only safe */
    }
    split_free(&f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = {data, size};
    char *filter = fuzz_str(&in), *topic = fuzz_str(&in), *tmpl = fuzz_str(&in);
    size_t cap = fuzz_u16(&in) % 2048 + 1;
    struct topic_levels lv;
    if (!check_match(filter, topic, &lv))
        lv.count = 0; /* a template is still expanded, with no levels */
    check_expand(tmpl, &lv, cap);
    check_can_match(filter, tmpl, &lv);
    check_takes(data, size);
    check_takes((const uint8_t *)topic, strlen(topic));
    free(filter);
    free(topic);
    free(tmpl);
    return 0;
}
