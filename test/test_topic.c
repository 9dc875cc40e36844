/* test_topic.c - the pure topic functions of proto/topic.c: which topics may
 * be published to (length, levels, UTF-8, wildcards) and which filters
 * subscribed to, matching with capture, template expansion, and whether a
 * reply template can match its own filter. */
#include "proto/topic.h"
#include "test/t.h"

#include <stdlib.h>
#include <string.h>

static const char *problem(const char *topic)
{
    return topic_publish_problem(topic, strlen(topic));
}

/* "x/x/.../x": LEVELS levels, malloc'd. */
static char *levels(size_t n)
{
    char *s = malloc(2 * n);
    T_REQUIRE(s, "malloc");
    for (size_t i = 0; i < n; i++) {
        s[2 * i] = 'x';
        s[2 * i + 1] = '/';
    }
    s[2 * n - 1] = '\0';
    return s;
}

static void check_publishable(void)
{
    static const char *const good[] = {
        "a",
        "a/b/c",
        "/",
        "a//b",
        "$SYS/x",
        "caf\xc3\xa9/\xe2\x82\xac/\xf0\x9f\x98\x80",
        " spaced / out ",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        T_CHECK(problem(good[i]) == NULL, "'%s' is publishable: %s", good[i], problem(good[i]));
    static const struct {
        const char *topic, *why;
    } bad[] = {
        {"", "is empty"},
        {"a/+/b", "contains the wildcard '+' or '#'"},
        {"a/#", "contains the wildcard '+' or '#'"},
        {"a+b", "contains the wildcard '+' or '#'"},
        {"\xc3", "is not valid UTF-8"},                 /* truncated */
        {"\x80", "is not valid UTF-8"},                 /* stray continuation byte */
        {"\xc0\xaf", "is not valid UTF-8"},             /* overlong '/' */
        {"\xe0\x80\xaf", "is not valid UTF-8"},         /* overlong '/', 3 bytes */
        {"\xed\xa0\x80", "is not valid UTF-8"},         /* a surrogate */
        {"\xf4\x90\x80\x80", "is not valid UTF-8"},     /* past U+10FFFF */
        {"\xf8\x88\x80\x80\x80", "is not valid UTF-8"}, /* 5-byte form */
        {"a\tb", "contains a control character or a Unicode noncharacter"},
        {"a\x7f", "contains a control character or a Unicode noncharacter"},
        {"a\xc2\x85", "contains a control character or a Unicode noncharacter"},     /* U+0085 */
        {"a\xef\xbf\xbf", "contains a control character or a Unicode noncharacter"}, /* FFFF */
        {"a\xef\xb7\x90", "contains a control character or a Unicode noncharacter"}, /* FDD0 */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *p = problem(bad[i].topic);
        T_CHECK(p && !strcmp(p, bad[i].why), "topic %zu: '%s', want '%s'", i, p ? p : "(none)",
                bad[i].why);
    }
    const char *p = topic_publish_problem("a\0b", 3);
    T_CHECK(p && !strcmp(p, "contains U+0000"), "an embedded NUL: %s", p ? p : "(none)");
}

static void check_limits(void)
{
    char *s = levels(TOPIC_MAX_LEVELS);
    T_CHECK(problem(s) == NULL, "%d levels are fine: %s", TOPIC_MAX_LEVELS, problem(s));
    free(s);
    s = levels(TOPIC_MAX_LEVELS + 1);
    const char *p = problem(s);
    T_CHECK(p && !strcmp(p, "has more than 128 levels"), "%d levels: %s", TOPIC_MAX_LEVELS + 1,
            p ? p : "(none)");
    free(s);
    s = levels(251); /* the response topic of issue #9 */
    T_CHECK(problem(s) != NULL, "251 levels refused");
    free(s);

    s = malloc(TOPIC_MAX_BYTES + 2);
    T_REQUIRE(s, "malloc");
    memset(s, 'y', TOPIC_MAX_BYTES + 1);
    s[TOPIC_MAX_BYTES + 1] = '\0';
    p = problem(s);
    T_CHECK(p && !strcmp(p, "is longer than 65535 bytes"), "65536 bytes: %s", p ? p : "(none)");
    s[TOPIC_MAX_BYTES] = '\0';
    T_CHECK(problem(s) == NULL, "65535 bytes are fine");
    free(s);
}

static void check_filters(void)
{
    T_CHECK(topic_filter_problem("a/+/#", 5) == NULL, "wildcards are fine in a filter");
    T_CHECK(topic_filter_problem("$share/g/+/x", 12) == NULL, "a shared subscription");
    char *s = levels(TOPIC_MAX_LEVELS + 1);
    const char *p = topic_filter_problem(s, strlen(s));
    T_CHECK(p && !strcmp(p, "has more than 128 levels"), "129 levels: %s", p ? p : "(none)");
    free(s);
    p = topic_filter_problem("a/\x01", 3);
    T_CHECK(p && strstr(p, "control character"), "a control character: %s", p ? p : "(none)");
}

static void check_match_and_expand(void)
{
    struct topic_levels lv;
    char out[64];
    T_CHECK(topic_match("$share/g/dev/+/in/#", "dev/a/in/x/y", &lv) && lv.count == 2,
            "$share filter matches");
    T_CHECK(topic_expand("out/{2}/{1}", &lv, out, sizeof(out)) > 0 && !strcmp(out, "out/x/y/a"),
            "expanded: %s", out);
    T_CHECK(topic_match("a/#", "a", &lv) && lv.count == 1 && lv.level[0].len == 0,
            "a/# matches a with an empty capture");
    T_CHECK(!topic_match("+/x", "$SYS/x", &lv), "a leading wildcard skips $ topics");
    T_CHECK(topic_expand("{3}", &lv, out, sizeof(out)) < 0, "no such wildcard");
}

/* A reply template that can make a topic its route's own filter matches. */
static void check_self_match(void)
{
    static const struct {
        const char *tmpl, *filter;
        bool can;
    } cases[] = {
        {"mqfork/spin/{1}/done", "$share/mqfork/mqfork/spin/#", true}, /* issue #9, 15 */
        {"mqfork/spin/{1}/done", "$share/mqfork/mqfork/spin/+/in", false},
        {"e/{1}/out", "e/+/in", false},
        {"e/{1}/in", "e/+/in", true},
        {"a/{1}/b", "a/+/b", true},
        {"dev/{1}x/out", "dev/+/out", true},
        {"x/{1}/y", "x/+", false}, /* a '+' level holds no '/' */
        {"x/{1}/y", "x/#", true},
        {"in/{1}/z", "in/#", true},
        {"out/{1}", "+/#", true},
        {"a", "a/#", true}, /* "a/#" matches "a" too */
        {"ab", "a/#", false},
        {"$SYS/{1}", "#", false}, /* a leading wildcard skips '$' topics */
        {"{1}", "+", true},
        {"full-out/{2}/{1}", "$share/g/full/+/echo/#", false},
        {"full/{2}/{1}/out", "$share/g/full/+/echo/#", true}, /* {2} = "a/echo" */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        T_CHECK(topic_template_can_match(cases[i].tmpl, cases[i].filter) == cases[i].can,
                "'%s' against '%s': want %s", cases[i].tmpl, cases[i].filter,
                cases[i].can ? "can match" : "cannot match");
}

int main(void)
{
    check_publishable();
    check_limits();
    check_filters();
    check_match_and_expand();
    check_self_match();
    T_DONE();
}
