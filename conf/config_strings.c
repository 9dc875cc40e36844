/* config_strings.c - checks of single strings: instance and route names,
 * topics to publish to, topic filters (shared, wildcards, device topics),
 * uplink modes, and the {N} templates of a route's reply and stream. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/config_impl.h"
#include "proto/topic.h"

/* ---- string checks */

bool check_instance(struct loader *ld, const yaml_node_t *n, const char *path, const char *s)
{
    size_t len = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-");
    if (s[len] == '\0' && len >= 1 && len <= 32)
        return true;
    char buf[64];
    report(ld, n, "%s: %s is not a valid instance name (1 to 32 of A-Z a-z 0-9 _ -)", path,
           describe(n, buf, sizeof(buf)));
    return false;
}

/* A name of WHAT ("route") that appears in stats, logs, reports and JSON
 * keys: kept tame, 1 to CONF_ROUTE_NAME_MAX of A-Z a-z 0-9 _ . - */
static bool tame_name(struct loader *ld, const yaml_node_t *n, const char *path, const char *s,
                      const char *what)
{
    size_t len = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-");
    if (s[len] == '\0' && len >= 1 && len <= CONF_ROUTE_NAME_MAX)
        return true;
    char buf[64];
    report(ld, n, "%s: %s is not a valid %s name (1 to %d of A-Z a-z 0-9 _ . -)", path,
           describe(n, buf, sizeof(buf)), what, CONF_ROUTE_NAME_MAX);
    return false;
}

bool check_route_name(struct loader *ld, const yaml_node_t *n, const char *path, const char *s)
{
    return tame_name(ld, n, path, s, "route");
}

/* A correlation's part names are keys of the JSON object a completed key
 * becomes. */
bool check_part_name(struct loader *ld, const yaml_node_t *n, const char *path, const char *s)
{
    return tame_name(ld, n, path, s, "part");
}

/* A topic to publish to, as the broker will take it (topic_publish_problem). */
bool check_topic(struct loader *ld, const yaml_node_t *n, const char *path, const char *s)
{
    const char *problem = topic_publish_problem(s, strlen(s));
    if (problem)
        report(ld, n, "%s: cannot be published to: the topic %s", path, problem);
    return !problem;
}

/* Check the levels of a topic filter: '#' only as the whole last level, '+'
 * only as a whole level. Reports at N (naming WHOLE, the filter as written). */
static bool filter_levels(struct loader *ld, const yaml_node_t *n, const char *path,
                          const char *filter, const char *whole)
{
    for (const char *lvl = filter;;) {
        size_t len = strcspn(lvl, "/");
        bool last = lvl[len] == '\0';
        if (memchr(lvl, '#', len) && (len != 1 || !last)) {
            report(ld, n, "%s: '#' must be the whole last level of '%s'", path, whole);
            return false;
        }
        if (memchr(lvl, '+', len) && len != 1) {
            report(ld, n, "%s: '+' must be a whole level in '%s'", path, whole);
            return false;
        }
        if (last)
            return true;
        lvl += len + 1;
    }
}

/* The part of a filter that matches topics: past "$share/<group>/". */
static const char *filter_body(const char *s)
{
    if (strncmp(s, "$share/", 7))
        return s;
    const char *slash = strchr(s + 7, '/');
    return slash ? slash + 1 : s + strlen(s);
}

/* Wildcards of a filter already checked valid. */
static int filter_wildcards(const char *s)
{
    int wild = 0;
    for (const char *lvl = filter_body(s);;) {
        size_t len = strcspn(lvl, "/");
        if (len == 1 && (*lvl == '+' || *lvl == '#'))
            wild++;
        if (!lvl[len])
            return wild;
        lvl += len + 1;
    }
}

bool check_filter(struct loader *ld, const yaml_node_t *n, const char *path, const char *s)
{
    if (!*s) {
        report(ld, n, "%s: a topic filter must not be empty", path);
        return false;
    }
    /* A SUBSCRIBE the broker refuses costs the connection, after every
     * reconnect again. */
    const char *problem = topic_filter_problem(s, strlen(s));
    if (problem) {
        report(ld, n, "%s: cannot be subscribed to: the filter %s", path, problem);
        return false;
    }
    const char *body = filter_body(s);
    if (body != s) {
        size_t glen = (size_t)(body - s) - 7 - (body[-1] == '/');
        if (glen == 0 || strcspn(s + 7, "+#") < glen) {
            report(ld, n,
                   "%s: the group of a shared subscription must be non-empty, without '+' or "
                   "'#', in '%s'",
                   path, s);
            return false;
        }
        if (!*body) {
            report(ld, n, "%s: a shared subscription needs a filter after '$share/<group>/'", path);
            return false;
        }
    }
    if (!filter_levels(ld, n, path, body, s))
        return false;
    /* The levels a message matched are captured for the templates: the
     * daemon keeps TOPIC_MAX_WILDCARDS of them, and a filter with more would
     * match nothing at all. */
    int wild = filter_wildcards(s);
    if (wild > TOPIC_MAX_WILDCARDS) {
        report(ld, n, "%s: at most %d wildcards in a filter, '%s' has %d", path,
               TOPIC_MAX_WILDCARDS, s, wild);
        return false;
    }
    return true;
}

/* An item of reply_allow: a filter a response topic is matched against,
 * whose {N} the route's wildcards fill (checked in load_route). */
bool check_allow_filter(struct loader *ld, const yaml_node_t *n, const char *path, const char *s)
{
    const char *problem = topic_filter_problem(s, strlen(s));
    if (problem) {
        report(ld, n, "%s: the filter %s", path, problem);
        return false;
    }
    if (!strncmp(s, "$share/", 7)) {
        report(ld, n, "%s: a response topic is matched against it, so no '$share/' here", path);
        return false;
    }
    return filter_levels(ld, n, path, s, s);
}

/* A voice device's topic: {device} once, as a whole level, and the rest a
 * topic the broker takes when a device id fills it. */
bool check_device_topic(struct loader *ld, const yaml_node_t *n, const char *path, const char *s)
{
    const char *at = strstr(s, "{device}");
    if (!at || strstr(at + 1, "{device}") || (at != s && at[-1] != '/') ||
        (at[8] != '\0' && at[8] != '/')) {
        report(ld, n, "%s: '%s' must hold {device} once, as a whole level", path, s);
        return false;
    }
    char sample[1024];
    snprintf(sample, sizeof(sample), "%.*sdevice%s", (int)(at - s), s, at + 8);
    const char *problem = topic_publish_problem(sample, strlen(sample));
    if (problem)
        report(ld, n, "%s: cannot be published to: the topic %s", path, problem);
    return !problem;
}

/* The devices' filter: its one '+' is where the device id is. */
bool check_device_filter(struct loader *ld, const yaml_node_t *n, const char *path, const char *s)
{
    if (!check_filter(ld, n, path, s))
        return false;
    const char *body = filter_body(s);
    if (filter_wildcards(s) != 1 || strchr(body, '#')) {
        report(ld, n, "%s: '%s' must have exactly one '+' (the device id) and no '#'", path, s);
        return false;
    }
    return true;
}

bool check_uplink(struct loader *ld, const yaml_node_t *n, const char *path, const char *s)
{
    static const char *const modes[] = {"relay", "decode", "recognize"};
    for (size_t i = 0; i < 3; i++)
        if (!strcmp(s, modes[i]))
            return true;
    const char *near = conf_suggest(s, modes, 3);
    report(ld, n, "%s: '%s' is not an uplink mode (relay, decode, recognize)%s%s%s", path, s,
           near ? "; did you mean '" : "", near ? near : "", near ? "'?" : "");
    return false;
}

/* The names of enum conf_retry's bits, in their order. */
static const char *const retry_causes[] = {"crashed", "timeout", "failed"};

bool check_retry_cause(struct loader *ld, const yaml_node_t *n, const char *path, const char *s)
{
    if (conf_retry_cause(s))
        return true;
    const char *near = conf_suggest(s, retry_causes, 3);
    report(ld, n, "%s: '%s' is not a cause to retry (crashed, timeout, failed)%s%s%s", path, s,
           near ? "; did you mean '" : "", near ? near : "", near ? "'?" : "");
    return false;
}

unsigned conf_retry_cause(const char *s)
{
    for (unsigned i = 0; i < 3; i++)
        if (!strcmp(s, retry_causes[i]))
            return 1u << i;
    return 0;
}

/* Check one {REF} of a template (REF is LEN bytes) against the number of
 * wildcards WILD of FILTER (NULL: unknown, only the syntax is checked). */
static void check_reference(struct loader *ld, const yaml_node_t *n, const char *path,
                            const char *ref, int len, const char *filter, int wild)
{
    if (len == 0 || len > 9 || strspn(ref, "0123456789") != (size_t)len) {
        report(ld, n, "%s: '{%.*s}' is not a wildcard reference like {1}", path, len, ref);
        return;
    }
    long w = strtol(ref, NULL, 10);
    if (w == 0)
        report(ld, n, "%s: {%.*s} is not a wildcard; they count from {1}", path, len, ref);
    else if (filter && w > wild && wild == 0)
        report(ld, n, "%s: {%.*s} refers to wildcard %ld but '%s' has none", path, len, ref, w,
               filter);
    else if (filter && w > wild)
        report(ld, n, "%s: {%.*s} refers to wildcard %ld but '%s' has only %d", path, len, ref, w,
               filter, wild);
}

/* The shortest topic a reply template makes, each {N} taken as one
 * character: when even that cannot be published to (too many levels, a
 * control character), no reply of the route ever can. */
static void check_reply_shortest(struct loader *ld, const yaml_node_t *n, const char *path,
                                 const char *tpl)
{
    char *shortest = xstrdup(tpl); /* {N} is at least 3 characters: it only shrinks */
    size_t o = 0;
    for (const char *s = tpl, *end; *s; s++) {
        if (*s == '{' && (end = strchr(s, '}'))) {
            shortest[o++] = 'x';
            s = end;
        } else {
            shortest[o++] = *s;
        }
    }
    const char *problem = topic_publish_problem(shortest, o);
    if (problem)
        report(ld, n, "%s: no reply can be published: the topic it makes %s", path, problem);
    free(shortest);
}

/* Check a reply or stream template: {N} stands for the level matched by the
 * Nth wildcard of the route's filter. A reply is published to, so its literal
 * text must not hold wildcards; what {N} expands to comes from a topic, which
 * has none either. */
void check_template(struct loader *ld, const yaml_node_t *n, const char *path, const char *tpl,
                    const char *filter, bool publish)
{
    int wild = filter ? filter_wildcards(filter) : 0;
    bool literal_wild = false;
    for (const char *s = tpl; *s; s++) {
        if (*s == '}') {
            report(ld, n, "%s: '}' without an opening '{' in '%s'", path, tpl);
        } else if (*s != '{') {
            literal_wild |= *s == '+' || *s == '#';
        } else {
            const char *end = strchr(s, '}');
            if (!end) {
                report(ld, n, "%s: '{' without a closing '}' in '%s'", path, tpl);
                break;
            }
            check_reference(ld, n, path, s + 1, (int)(end - s - 1), filter, wild);
            s = end;
        }
    }
    if (publish && literal_wild)
        report(ld, n, "%s: a topic to publish to must not contain '+' or '#'", path);
    else if (publish)
        check_reply_shortest(ld, n, path, tpl);
}
