/* config_routes.c - the routes: and plugins: sequences: each route through
 * its key table, then its templates against its filter, its params, and
 * names unique across routes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/config_impl.h"
#include "proto/topic.h"
#include "shm/segment.h"

/* ---- routes */

void load_params(struct loader *ld, const yaml_node_t *v, struct conf_route *r, const char *path)
{
    char buf[64];
    if (is_null(v))
        return;
    if (v->type != YAML_MAPPING_NODE) {
        report(ld, v, "%s: expected a mapping, got %s", path, describe(v, buf, sizeof(buf)));
        return;
    }
    r->params_line = (int)v->start_mark.line + 1;
    r->params_column = (int)v->start_mark.column + 1;
    size_t n = map_size(v);
    r->params.items = xcalloc(n, sizeof(*r->params.items));
    size_t *first = map_first_keys(ld, v);
    for (size_t i = 0; i < n; i++) {
        if (bad_key(ld, v, i, first))
            continue;
        yaml_node_pair_t *p = &v->data.mapping.pairs.start[i];
        yaml_node_t *k = get_node(ld, p->key), *val = get_node(ld, p->value);
        if (val->type != YAML_SCALAR_NODE) {
            report(ld, val, "%s.%s: expected a plain value, got %s", path, scalar(k),
                   describe(val, buf, sizeof(buf)));
            continue;
        }
        if (strlen(scalar(val)) != val->data.scalar.length) {
            report(ld, val, "%s.%s: must not contain a NUL character", path, scalar(k));
            continue;
        }
        r->params.items[r->params.count++] = (struct conf_param){
            .key = xstrdup(scalar(k)),
            .value = xstrdup(is_null(val) ? "" : scalar(val)),
            .line = (int)k->start_mark.line + 1,
            .column = (int)k->start_mark.column + 1,
        };
    }
    free(first);
}

/* TPL (the value at V, a template whose {N} the matched filter's wildcards
 * fill) against each of the route's filters, until one finds it wrong. */
static void check_template_all(struct loader *ld, const yaml_node_t *v, const char *path,
                               const char *tpl, const struct conf_route *r, bool publish)
{
    if (!r->subscribe.count)
        check_template(ld, v, path, tpl, NULL, publish);
    for (size_t i = 0; i < r->subscribe.count && !was_reported(ld, v); i++)
        check_template(ld, v, path, tpl, r->subscribe.items[i], publish);
}

/* The {N} of each reply_allow filter against the route's filters. */
static void check_reply_allow(struct loader *ld, const struct conf_route *r,
                              const yaml_node_t *item, const char *path)
{
    const yaml_node_t *v = map_get(ld, item, "reply_allow");
    if (!v || (v->type != YAML_SCALAR_NODE && v->type != YAML_SEQUENCE_NODE) || is_null(v))
        return;
    for (size_t i = 0; i < list_count(v); i++) {
        const yaml_node_t *f = list_item(ld, v, i);
        if (f->type != YAML_SCALAR_NODE || was_reported(ld, f))
            continue;
        char *key_path = xasprintf("%s.reply_allow", path);
        char *item_path = list_item_path(key_path, v, i);
        check_template_all(ld, f, item_path, scalar(f), r, false);
        free(item_path);
        free(key_path);
    }
}

/* The filters: at most CONF_ROUTE_FILTERS_MAX, none twice (a message goes
 * to the first filter of the route that matches it). */
static void check_filters(struct loader *ld, const struct conf_route *r, const yaml_node_t *item,
                          const char *path)
{
    const yaml_node_t *v = map_get(ld, item, "subscribe");
    if (!v || v->type != YAML_SEQUENCE_NODE)
        return;
    size_t n = list_count(v);
    if (n > CONF_ROUTE_FILTERS_MAX) {
        report(ld, v, "%s.subscribe: at most %d filters; this route has %zu", path,
               CONF_ROUTE_FILTERS_MAX, n);
        return;
    }
    size_t *first = first_equal((const char *const *)r->subscribe.items, r->subscribe.count);
    for (size_t i = 0; i < r->subscribe.count && r->subscribe.count == n; i++)
        if (first[i] != i)
            report(ld, list_item(ld, v, i), "%s.subscribe[%zu]: '%s' is already subscribe[%zu]",
                   path, i, r->subscribe.items[i], first[i]);
    free(first);
}

/* correlate: its key, parts and window given; a part per filter, each
 * named once; the key's {N} within every filter's wildcards. */
static void check_correlate(struct loader *ld, const struct conf_route *r, const yaml_node_t *item,
                            const char *path)
{
    const struct conf_correlate *cc = &r->correlate;
    const yaml_node_t *v = map_get(ld, item, "correlate"), *f;
    if (!cc->enabled || !v || was_reported(ld, v))
        return;
    static const char *const required[] = {"key", "parts", "window_ms"};
    for (size_t i = 0; i < 3; i++)
        if (!map_get(ld, v, required[i]))
            report(ld, v, "%s.correlate: missing required key '%s'", path, required[i]);
    char *key_path = xasprintf("%s.correlate.key", path);
    if (cc->key && (f = map_get(ld, v, "key")))
        check_template_all(ld, f, key_path, cc->key, r, false);
    free(key_path);
    const yaml_node_t *parts = map_get(ld, v, "parts"), *subs = map_get(ld, item, "subscribe");
    if (!parts || was_reported(ld, parts) || !subs || was_reported(ld, subs))
        return;
    if (list_count(parts) != list_count(subs)) {
        report(ld, parts,
               "%s.correlate.parts: %zu part names for %zu subscribe filters: give one per filter",
               path, list_count(parts), list_count(subs));
        return;
    }
    size_t *first = first_equal((const char *const *)cc->parts.items, cc->parts.count);
    for (size_t i = 0; i < cc->parts.count && cc->parts.count == list_count(parts); i++)
        if (first[i] != i)
            report(ld, list_item(ld, parts, i), "%s.correlate.parts[%zu]: '%s' is already part %zu",
                   path, i, cc->parts.items[i], first[i]);
    free(first);
}

/* retry_on's causes as bits; backoff_max_ms caps backoff_ms's doubling,
 * so it cannot be below it. */
static void load_retry(struct loader *ld, struct conf_route *r, const yaml_node_t *item,
                       const char *path)
{
    if (r->retry_on.count)
        r->retry_causes = 0;
    for (size_t i = 0; i < r->retry_on.count; i++)
        r->retry_causes |= conf_retry_cause(r->retry_on.items[i]);
    yaml_node_t *v = map_get(ld, item, "backoff_max_ms");
    if (r->backoff_ms > r->backoff_max_ms && !(v && was_reported(ld, v)))
        report(ld, v ? v : map_get(ld, item, "backoff_ms"),
               "%s.backoff_max_ms (%u%s) is below %s.backoff_ms (%u): it caps the delay between "
               "retries",
               path, r->backoff_max_ms, v ? "" : ", the default", path, r->backoff_ms);
}

static void load_route(struct loader *ld, struct conf_route *r, const yaml_node_t *item,
                       size_t index)
{
    char path[32], buf[64];
    snprintf(path, sizeof(path), "routes[%zu]", index);
    r->line = (int)item->start_mark.line + 1;
    r->column = (int)item->start_mark.column + 1;
    if (item->type != YAML_MAPPING_NODE) {
        report(ld, item, "%s: expected a mapping, got %s", path, describe(item, buf, sizeof(buf)));
        return;
    }
    uint64_t seen = load_map(ld, item, route_keys, (char *)r, path, path);
    for (size_t i = 0; route_keys[i].name; i++)
        if ((route_keys[i].flags & KEY_REQUIRED) && !(seen & (UINT64_C(1) << i)))
            report(ld, item, "%s: missing required key '%s'", path, route_keys[i].name);

    /* r->subscribe holds the filters that are valid. */
    char key_path[48];
    yaml_node_t *v;
    check_filters(ld, r, item, path);
    if (r->reply && (v = map_get(ld, item, "reply"))) {
        snprintf(key_path, sizeof(key_path), "%s.reply", path);
        check_template_all(ld, v, key_path, r->reply, r, true);
        for (size_t i = 0; i < r->subscribe.count && !was_reported(ld, v); i++)
            if (topic_template_can_match(r->reply, r->subscribe.items[i]))
                report_warning(ld, v,
                               "%s: '%s' can match the route's own filter '%s': its replies "
                               "would come back to it as requests",
                               key_path, r->reply, r->subscribe.items[i]);
    }
    if (r->stream && (v = map_get(ld, item, "stream"))) {
        snprintf(key_path, sizeof(key_path), "%s.stream", path);
        check_template_all(ld, v, key_path, r->stream, r, false);
    }
    /* A stream's jobs share the state the ones before them left (a decoder,
     * say): equal requests need not give equal results. */
    if (r->stream && r->cache.enabled && (v = map_get(ld, item, "cache")))
        report(ld, v,
               "%s.cache: a stream route cannot cache: its results depend on the jobs before "
               "them; remove cache: or stream:",
               path);
    check_reply_allow(ld, r, item, path);
    check_correlate(ld, r, item, path);
    load_retry(ld, r, item, path);
    if ((v = map_get(ld, item, "job"))) {
        r->job_line = (int)v->start_mark.line + 1;
        r->job_column = (int)v->start_mark.column + 1;
    }
}

static void route_names_unique(struct loader *ld, const yaml_node_t *seq)
{
    struct conf *c = ld->conf;
    const char **names = xcalloc(c->nroutes, sizeof(*names));
    for (size_t j = 0; j < c->nroutes; j++)
        names[j] = c->routes[j].name;
    size_t *first = first_equal(names, c->nroutes);
    for (size_t j = 0; j < c->nroutes; j++) {
        size_t i = first[j];
        if (i == j)
            continue;
        yaml_node_t *item = get_node(ld, seq->data.sequence.items.start[j]);
        report(ld, map_get(ld, item, "name"),
               "routes[%zu].name: '%s' is already the name of routes[%zu] (line %d)", j,
               c->routes[j].name, i, c->routes[i].line);
    }
    free(first);
    free(names);
}

void load_routes(struct loader *ld, const yaml_node_t *seq)
{
    char buf[64];
    if (is_null(seq))
        return;
    if (seq->type != YAML_SEQUENCE_NODE) {
        report(ld, seq, "routes: expected a sequence of routes, got %s",
               describe(seq, buf, sizeof(buf)));
        return;
    }
    struct conf *c = ld->conf;
    size_t n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
    c->routes = xcalloc(n, sizeof(*c->routes));
    c->nroutes = n;
    for (size_t i = 0; i < n; i++) {
        route_defaults(&c->routes[i]);
        load_route(ld, &c->routes[i], get_node(ld, seq->data.sequence.items.start[i]), i);
    }
    route_names_unique(ld, seq);
    /* Each route is a job kind, and the segment has a stats block for
     * SEG_MAX_KINDS of them. */
    if (n > SEG_MAX_KINDS)
        report(ld, get_node(ld, seq->data.sequence.items.start[SEG_MAX_KINDS]),
               "routes[%d]: at most %d routes; this file has %zu", SEG_MAX_KINDS, SEG_MAX_KINDS, n);
}

/* Paths of shared objects; loading and checking them is worker/registry.c's. */
void load_plugins(struct loader *ld, const yaml_node_t *seq)
{
    char buf[64];
    if (is_null(seq))
        return;
    if (seq->type != YAML_SEQUENCE_NODE) {
        report(ld, seq, "plugins: expected a sequence of paths, got %s",
               describe(seq, buf, sizeof(buf)));
        return;
    }
    struct conf *c = ld->conf;
    size_t n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
    c->plugins = xcalloc(n ? n : 1, sizeof(*c->plugins));
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *v = get_node(ld, seq->data.sequence.items.start[i]);
        if (v->type != YAML_SCALAR_NODE || is_null(v) || !scalar(v)[0] ||
            strlen(scalar(v)) != v->data.scalar.length) {
            report(ld, v, "plugins[%zu]: expected the path of a shared object, got %s", i,
                   describe(v, buf, sizeof(buf)));
            continue;
        }
        c->plugins[c->nplugins++] = (struct conf_plugin){
            .path = xstrdup(scalar(v)),
            .line = (int)v->start_mark.line + 1,
            .column = (int)v->start_mark.column + 1,
        };
    }
}
