/* config_impl.h - private to conf/config*.c: the state of one conf_load()
 * call, the key descriptors that say what the configuration is, and the
 * helpers the parts of the loader share. Nothing outside conf/ includes it.
 *
 * The parts: config.c (entry points, diagnostics, memory), config_load.c
 * (walking the document against the key tables), config_keys.c (the tables
 * and defaults), config_strings.c (checks of topics, filters, names and
 * templates), config_routes.c (routes: and plugins:), config_across.c
 * (checks that involve several values). */
#ifndef MQFORK_CONF_CONFIG_IMPL_H
#define MQFORK_CONF_CONFIG_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

#include "conf/config.h"

/* Not part of any binary's dynamic symbols: these short names stay the
 * loader's own. */
#pragma GCC visibility push(hidden)

/* ---- the state of one conf_load() call */

struct loader {
    const char *path;
    struct conf *conf;
    struct conf_diags *diags;
    size_t diags_before; /* diags->count on entry: this load failed if an error came after */
    yaml_document_t doc;
    /* By node (its index in doc): already reported, so cross-checks stay
     * quiet about it. */
    bool *bad;
};

/* ---- key descriptors */

enum key_kind {
    KEY_STRING,
    KEY_INT,    /* uint32_t, int or uint64_t field, by size */
    KEY_NUMBER, /* double */
    KEY_BOOL,
    KEY_CHOICE,  /* one of .choices, stored as a string */
    KEY_ENUM,    /* one of .choices, stored as its index (an enum) */
    KEY_MAP,     /* a nested mapping described by .sub */
    KEY_ROUTES,  /* the routes: sequence */
    KEY_PARAMS,  /* a route's free-form params: mapping */
    KEY_PLUGINS, /* the plugins: sequence of paths */
    KEY_STRINGS, /* struct conf_strings: one string or a sequence; .check applies to each */
};

enum {
    KEY_NULLABLE = 1u << 0, /* `key:` without a value leaves the string NULL */
    KEY_EMPTY_OK = 1u << 1, /* "" is a valid string */
    KEY_REQUIRED = 1u << 2, /* the mapping is incomplete without it */
    KEY_MARK = 1u << 3,     /* KEY_MAP: set the bool at .offset when present */
};

/* Validates a string value; reports at the node and returns false if bad. */
typedef bool string_check(struct loader *ld, const yaml_node_t *n, const char *path, const char *s);

/* A table is an array of these ended by {0}; at most 64 entries (load_map
 * returns which were present as a bitmask). */
struct key {
    const char *name; /* NULL ends a table */
    enum key_kind kind;
    size_t offset, size; /* of the field, from the base the table is applied to */
    unsigned flags;
    long long imin, imax;
    double dmin, dmax;
    const char *const *choices; /* NULL-terminated */
    const struct key *sub;
    string_check *check;
};

/* ---- config_keys.c: the tables and defaults */

extern const struct key top_keys[];   /* applied to a struct conf */
extern const struct key route_keys[]; /* applied to a struct conf_route */
void route_defaults(struct conf_route *r);

/* ---- config.c: memory (out of memory ends the process) */

void *xcalloc(size_t n, size_t size);
char *xstrdup(const char *s);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Replace *FIELD by a copy of VALUE (NULL allowed). */
void set_string(char **field, const char *value);

/* ---- config.c: diagnostics of this load */

/* An error at NODE (or at no position when NULL); NODE counts as reported. */
void report(struct loader *ld, const yaml_node_t *node, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A warning at NODE: the file still loads. */
void report_warning(struct loader *ld, const yaml_node_t *node, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
bool was_reported(const struct loader *ld, const yaml_node_t *node);
/* What would now only be counted need not be worked out. */
bool diags_full(const struct loader *ld);
/* For each of the N strings S, the index of the first one equal to it.
 * Malloc'd. */
size_t *first_equal(const char *const *s, size_t n);

/* ---- config_load.c: YAML nodes */

yaml_node_t *get_node(struct loader *ld, int id);
const char *scalar(const yaml_node_t *n);
bool is_null(const yaml_node_t *n);
/* NODE quoted and shortened, for "expected X, got Y"; BUF holds it. */
const char *describe(const yaml_node_t *n, char *buf, size_t len);
yaml_node_t *map_get(struct loader *ld, const yaml_node_t *map, const char *key);
/* The value node at a dotted PATH ("workers.min") from the root, or NULL. */
yaml_node_t *lookup(struct loader *ld, const char *path);

/* ---- config_load.c: lists, mappings */

size_t list_count(const yaml_node_t *v);
yaml_node_t *list_item(struct loader *ld, const yaml_node_t *v, size_t i);
char *list_item_path(const char *path, const yaml_node_t *v, size_t i);
size_t map_size(const yaml_node_t *map);
size_t *map_first_keys(struct loader *ld, const yaml_node_t *map);
bool bad_key(struct loader *ld, const yaml_node_t *map, size_t i, const size_t *first);
uint64_t load_map(struct loader *ld, const yaml_node_t *map, const struct key *keys, char *base,
                  const char *prefix, const char *where);

/* ---- config_strings.c: checks of strings, and of route templates */

string_check check_instance, check_route_name, check_topic, check_filter, check_allow_filter,
    check_device_filter, check_device_topic, check_uplink, check_retry_cause, check_part_name;
void check_template(struct loader *ld, const yaml_node_t *n, const char *path, const char *tpl,
                    const char *filter, bool publish);

/* ---- config_routes.c: routes: and plugins: */

void load_routes(struct loader *ld, const yaml_node_t *seq);
void load_plugins(struct loader *ld, const yaml_node_t *seq);
void load_params(struct loader *ld, const yaml_node_t *v, struct conf_route *r, const char *path);

/* ---- config_across.c */

/* What several values mean together: min <= max, the slab, TLS, voice, user. */
void check_across(struct loader *ld);
/* A warning when the file gives the daemon nothing to do (no route, no
 * voice gateway); part of check_across, and all an empty file gets. */
void check_has_work(struct loader *ld);

#pragma GCC visibility pop

#endif
