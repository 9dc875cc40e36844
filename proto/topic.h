/* topic.h - MQTT topic filters and reply templates: match a topic against a
 * route's filter while capturing the levels its wildcards matched, and
 * expand a template such as "dev/{1}/out" with those levels. Pure functions
 * over strings; no allocation. */
#ifndef MQFORK_PROTO_TOPIC_H
#define MQFORK_PROTO_TOPIC_H

#include <stdbool.h>
#include <stddef.h>

#define TOPIC_MAX_WILDCARDS 16

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
 * empty). */
bool topic_match(const char *filter, const char *topic, struct topic_levels *lv);

/* Expand TMPL into OUT: "{N}" becomes wildcard N's level (1-based). Returns
 * the length written, or -1 when OUT is too small or N has no level. */
long topic_expand(const char *tmpl, const struct topic_levels *lv, char *out, size_t cap);

#endif
