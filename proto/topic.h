/* topic.h - MQTT topic filters and reply templates: match a topic against a
 * route's filter while capturing the levels its wildcards matched, expand a
 * template such as "dev/{1}/out" with those levels, and tell whether a topic
 * is one a broker takes for a PUBLISH. Pure functions over strings; no
 * allocation. */
#ifndef MQFORK_PROTO_TOPIC_H
#define MQFORK_PROTO_TOPIC_H

#include <stdbool.h>
#include <stddef.h>

#define TOPIC_MAX_WILDCARDS 16

/* The longest topic: MQTT strings carry a 16-bit length. */
#define TOPIC_MAX_BYTES 65535
/* The most levels a topic may have. Brokers bound them, and answer a PUBLISH
 * past the bound by closing the connection: mosquitto refuses more than 200
 * '/' (TOPIC_HIERARCHY_LIMIT, lib/util_topic.c), EMQX's max_topic_levels is
 * 128 by default. The lower one holds for both. */
#define TOPIC_MAX_LEVELS 128

/* What the wildcards of a filter matched, as spans of the topic. */
struct topic_levels {
    unsigned count;
    struct {
        const char *at;
        size_t len;
    } level[TOPIC_MAX_WILDCARDS];
};

/* The filter without a "$share/<group>/" prefix (the broker strips it too). */
const char *topic_filter_base(const char *filter);

/* Whether TOPIC matches FILTER (MQTT rules, including that a wildcard in the
 * first level does not match a topic starting with '$'); on a match, fill
 * *LV with the levels the wildcards matched ('#' captures the rest, possibly
 * empty). LV may be NULL: nothing is captured, and any number of wildcards
 * may match. */
bool topic_match(const char *filter, const char *topic, struct topic_levels *lv);

/* Expand TMPL into OUT: "{N}" becomes wildcard N's level (1-based). Returns
 * the length written, or -1 when OUT is too small or N has no level. */
long topic_expand(const char *tmpl, const struct topic_levels *lv, char *out, size_t cap);

/* NULL when TOPIC (LEN bytes, not necessarily NUL-terminated) may be
 * published to: 1 to TOPIC_MAX_BYTES bytes of well-formed UTF-8, without
 * U+0000, control characters (U+0001..U+001F, U+007F..U+009F) or
 * noncharacters, which MQTT lets a receiver treat as malformed; no '+' or
 * '#'; at most TOPIC_MAX_LEVELS levels. Otherwise why not, as a phrase to
 * follow "the topic ...", e.g. "has more than 128 levels". */
const char *topic_publish_problem(const char *topic, size_t len);

/* The same for a filter to subscribe to, '+' and '#' allowed anywhere (where
 * they may stand is the caller's to check). Levels are counted over the
 * whole text, a "$share/<group>/" prefix included, as a broker may. */
const char *topic_filter_problem(const char *filter, size_t len);

/* Whether the LEN bytes at TEXT are well-formed UTF-8 (utf8_decode's rules). */
bool utf8_valid(const void *text, size_t len);

/* Whether a topic that template TMPL makes, its {N} filled with anything
 * wildcard N of FILTER may match, can match FILTER itself: a route whose
 * reply can match its own filter answers its own replies. The templates'
 * levels are taken as free, so "can": a route may still never do it.
 * False, too, when the two are too long to tell (past about 4 million
 * pairs of positions). */
bool topic_template_can_match(const char *tmpl, const char *filter);

#endif
