/* config_load.c - walk the YAML document against the key tables: each value
 * parsed and range-checked as its key says (scalars, strings, lists, choices,
 * nested mappings) and stored only when valid; duplicate and unknown keys
 * reported, with the likely one suggested for a typo. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/config_impl.h"

/* ---- YAML node helpers */

yaml_node_t *get_node(struct loader *ld, int id)
{
    return yaml_document_get_node(&ld->doc, id);
}

const char *scalar(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

/* A plain empty, `~` or `null` scalar: the key is there without a value. */
bool is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *s = scalar(n);
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* What a node is, for "expected X, got Y": the quoted value, shortened and
 * with control characters replaced so a message stays on one line. */
const char *describe(const yaml_node_t *n, char *buf, size_t len)
{
    if (n->type == YAML_MAPPING_NODE)
        return "a mapping";
    if (n->type == YAML_SEQUENCE_NODE)
        return "a sequence";
    if (is_null(n))
        return "nothing";
    const char *s = scalar(n);
    size_t max = len - 6, o = 0;
    buf[o++] = '\'';
    for (size_t i = 0; s[i] && o < max; i++)
        buf[o++] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    if (strlen(s) > max - 1)
        memcpy(buf + o - 3, "...", 3);
    buf[o++] = '\'';
    buf[o] = '\0';
    return buf;
}

/* The value node of KEY in MAP (first occurrence), or NULL. */
yaml_node_t *map_get(struct loader *ld, const yaml_node_t *map, const char *key)
{
    if (!map || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = get_node(ld, p->key);
        if (k->type == YAML_SCALAR_NODE && !strcmp(scalar(k), key))
            return get_node(ld, p->value);
    }
    return NULL;
}

/* The value node at a dotted PATH ("workers.min") from the root, or NULL. */
yaml_node_t *lookup(struct loader *ld, const char *path)
{
    yaml_node_t *n = yaml_document_get_root_node(&ld->doc);
    char key[64];
    while (n && *path) {
        size_t len = strcspn(path, ".");
        if (len >= sizeof(key))
            return NULL;
        memcpy(key, path, len);
        key[len] = '\0';
        n = map_get(ld, n, key);
        path += len + (path[len] == '.');
    }
    return n;
}

/* ---- suggestions: the closest candidate by optimal-string-alignment edit
 * distance (a transposition counts as one edit, case is ignored), when it is close enough to be
 * a likely typo: at most 2 edits, or a third of the word. A candidate that is a
 * prefix of the word ('warn' for 'warning') is a likely slip too. */

#define SUGGEST_MAX 64

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la >= SUGGEST_MAX || lb >= SUGGEST_MAX)
        return SIZE_MAX;
    unsigned short d[SUGGEST_MAX + 1][SUGGEST_MAX + 1];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = (unsigned short)i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = (unsigned short)j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            unsigned best = d[i - 1][j - 1] +
                            (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));
            if (d[i - 1][j] + 1u < best)
                best = d[i - 1][j] + 1u;
            if (d[i][j - 1] + 1u < best)
                best = d[i][j - 1] + 1u;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1u < best)
                best = d[i - 2][j - 2] + 1u;
            d[i][j] = (unsigned short)best;
        }
    }
    return d[la][lb];
}

static bool close_enough(const char *word, const char *cand, size_t d)
{
    size_t lw = strlen(word), lc = strlen(cand);
    /* Never suggest a word that shares nothing with the typo. */
    if (d >= lw || d >= lc)
        return false;
    if (d <= 2 || d * 3 <= lw)
        return true;
    return lc >= 3 && !strncmp(word, cand, lc);
}

const char *conf_suggest(const char *word, const char *const *cands, size_t n)
{
    const char *best = NULL;
    size_t best_d = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        size_t d = edit_distance(word, cands[i]);
        if (d < best_d && close_enough(word, cands[i], d)) {
            best_d = d;
            best = cands[i];
        }
    }
    return best;
}

/* ---- scalar parsing */

static bool parse_int(const char *s, long long *out, bool *overflow)
{
    const char *p = s + (*s == '+' || *s == '-');
    if (!*p || strspn(p, "0123456789") != strlen(p))
        return false;
    errno = 0;
    *out = strtoll(s, NULL, 10);
    *overflow = errno == ERANGE;
    return true;
}

/* Decimal numbers only: strtod alone would also take "nan", "inf" and hex. */
static bool parse_number(const char *s, double *out)
{
    const char *p = s + (*s == '+' || *s == '-');
    size_t digits = strspn(p, "0123456789");
    p += digits;
    if (*p == '.') {
        size_t frac = strspn(p + 1, "0123456789");
        digits += frac;
        p += 1 + frac;
    }
    if (!digits)
        return false;
    if (*p == 'e' || *p == 'E') {
        p++;
        p += *p == '+' || *p == '-';
        size_t exp = strspn(p, "0123456789");
        if (!exp)
            return false;
        p += exp;
    }
    if (*p)
        return false;
    *out = strtod(s, NULL);
    return true;
}

static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
    for (size_t i = 0; i < 3; i++) {
        if (!strcasecmp(s, yes[i]) || !strcasecmp(s, no[i])) {
            *out = !strcasecmp(s, yes[i]);
            return true;
        }
    }
    return false;
}

static size_t count_choices(const char *const *list)
{
    size_t n = 0;
    while (list[n])
        n++;
    return n;
}

/* "a, b or c" */
static void choices_text(const char *const *list, char *buf, size_t len)
{
    size_t n = count_choices(list), o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && o < len; i++) {
        const char *sep = i == 0 ? "" : i + 1 == n ? " or " : ", ";
        int w = snprintf(buf + o, len - o, "%s%s", sep, list[i]);
        if (w < 0)
            break;
        o += (size_t)w;
    }
}

/* ---- storing one value */

/* Integer fields are uint64_t, or 32 bits wide (uint32_t, int, an enum). */
_Static_assert(sizeof(int) == sizeof(uint32_t), "int fields are 32 bits");
_Static_assert(sizeof(enum conf_priority) == sizeof(uint32_t), "enum fields are 32 bits");

static void store_int(void *field, size_t size, long long v)
{
    if (size == sizeof(uint64_t)) {
        uint64_t x = (uint64_t)v;
        memcpy(field, &x, sizeof(x));
    } else {
        /* The ranges in the tables fit both uint32_t and int. */
        uint32_t x = (uint32_t)v;
        memcpy(field, &x, sizeof(x));
    }
}

static const char *type_noun(const struct key *k)
{
    switch (k->kind) {
    case KEY_INT:
        return "an integer";
    case KEY_NUMBER:
        return "a number";
    case KEY_BOOL:
        return "true or false";
    default:
        return "a string";
    }
}

/* The string V holds, checked as key K wants; NULL (reported) when it is
 * not a string K takes. */
static const char *string_value(struct loader *ld, const struct key *k, const yaml_node_t *v,
                                const char *path)
{
    char buf[64];
    if (v->type != YAML_SCALAR_NODE || is_null(v)) {
        report(ld, v, "%s: expected a string, got %s", path, describe(v, buf, sizeof(buf)));
        return NULL;
    }
    const char *s = scalar(v);
    if (strlen(s) != v->data.scalar.length) {
        report(ld, v, "%s: must not contain a NUL character", path);
        return NULL;
    }
    if (!*s && !(k->flags & KEY_EMPTY_OK)) {
        report(ld, v, "%s: must not be empty", path);
        return NULL;
    }
    return !k->check || k->check(ld, v, path, s) ? s : NULL;
}

static void load_string(struct loader *ld, const struct key *k, const yaml_node_t *v, char *base,
                        const char *path)
{
    char **field = (char **)(base + k->offset);
    if (is_null(v) && (k->flags & KEY_NULLABLE)) {
        set_string(field, NULL);
        return;
    }
    const char *s = string_value(ld, k, v, path);
    if (s)
        set_string(field, s);
}

/* A list is given as a sequence, or as one string (V a scalar). */
size_t list_count(const yaml_node_t *v)
{
    return v->type == YAML_SEQUENCE_NODE
               ? (size_t)(v->data.sequence.items.top - v->data.sequence.items.start)
               : 1;
}

yaml_node_t *list_item(struct loader *ld, const yaml_node_t *v, size_t i)
{
    return v->type == YAML_SEQUENCE_NODE ? get_node(ld, v->data.sequence.items.start[i])
                                         : (yaml_node_t *)v;
}

/* The path of item I of the list at PATH: "routes[0].reply_allow[1]", or
 * PATH itself for a list given as one string. Malloc'd. */
char *list_item_path(const char *path, const yaml_node_t *v, size_t i)
{
    return v->type == YAML_SEQUENCE_NODE ? xasprintf("%s[%zu]", path, i) : xstrdup(path);
}

/* One string, or a sequence of strings each checked as key K wants. */
static void load_strings(struct loader *ld, const struct key *k, const yaml_node_t *v, char *base,
                         const char *path)
{
    struct conf_strings *field = (struct conf_strings *)(base + k->offset);
    char buf[64];
    if (is_null(v))
        return;
    if (v->type != YAML_SCALAR_NODE && v->type != YAML_SEQUENCE_NODE) {
        report(ld, v, "%s: expected a string or a sequence of strings, got %s", path,
               describe(v, buf, sizeof(buf)));
        return;
    }
    size_t n = list_count(v);
    if (n == 0)
        report(ld, v, "%s: an empty list; leave the key out for its default", path);
    field->items = xcalloc(n, sizeof(*field->items));
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *item = list_item(ld, v, i);
        char *item_path = list_item_path(path, v, i);
        const char *str = string_value(ld, k, item, item_path);
        if (str)
            field->items[field->count++] = xstrdup(str);
        free(item_path);
    }
}

static void load_choice(struct loader *ld, const struct key *k, const yaml_node_t *v, char *base,
                        const char *path)
{
    char buf[64], list[128];
    const char *s = v->type == YAML_SCALAR_NODE && !is_null(v) ? scalar(v) : NULL;
    for (size_t i = 0; s && k->choices[i]; i++) {
        if (strcmp(s, k->choices[i]))
            continue;
        if (k->kind == KEY_CHOICE)
            set_string((char **)(base + k->offset), s);
        else
            store_int(base + k->offset, k->size, (long long)i);
        return;
    }
    choices_text(k->choices, list, sizeof(list));
    const char *near = s ? conf_suggest(s, k->choices, count_choices(k->choices)) : NULL;
    if (near)
        report(ld, v, "%s: expected %s, got %s; did you mean '%s'?", path, list,
               describe(v, buf, sizeof(buf)), near);
    else
        report(ld, v, "%s: expected %s, got %s", path, list, describe(v, buf, sizeof(buf)));
}

/* Integers, numbers and booleans. */
static void load_scalar(struct loader *ld, const struct key *k, const yaml_node_t *v, char *base,
                        const char *path)
{
    char buf[64];
    const char *s = v->type == YAML_SCALAR_NODE && !is_null(v) ? scalar(v) : NULL;
    long long i;
    double d;
    bool b, overflow = false;
    if (k->kind == KEY_INT && s && parse_int(s, &i, &overflow)) {
        if (overflow || i < k->imin || i > k->imax)
            report(ld, v, "%s: %s is out of range (%lld..%lld)", path, s, k->imin, k->imax);
        else
            store_int(base + k->offset, k->size, i);
    } else if (k->kind == KEY_NUMBER && s && parse_number(s, &d)) {
        if (!isfinite(d) || d < k->dmin || d > k->dmax)
            report(ld, v, "%s: %s is out of range (%.15g..%.15g)", path, s, k->dmin, k->dmax);
        else
            memcpy(base + k->offset, &d, sizeof(d));
    } else if (k->kind == KEY_BOOL && s && parse_bool(s, &b)) {
        memcpy(base + k->offset, &b, sizeof(b));
    } else {
        report(ld, v, "%s: expected %s, got %s", path, type_noun(k), describe(v, buf, sizeof(buf)));
    }
}

/* ---- mappings */

static void load_value(struct loader *ld, const struct key *k, const yaml_node_t *v, char *base,
                       const char *path)
{
    char buf[64], where[80];
    switch (k->kind) {
    case KEY_STRING:
        load_string(ld, k, v, base, path);
        break;
    case KEY_INT:
    case KEY_NUMBER:
    case KEY_BOOL:
        load_scalar(ld, k, v, base, path);
        break;
    case KEY_CHOICE:
    case KEY_ENUM:
        load_choice(ld, k, v, base, path);
        break;
    case KEY_MAP:
        /* `tls:` alone counts as present: TLS with every default. */
        if (v->type != YAML_MAPPING_NODE && !is_null(v)) {
            report(ld, v, "%s: expected a mapping, got %s", path, describe(v, buf, sizeof(buf)));
            break;
        }
        if (k->flags & KEY_MARK)
            *(bool *)(base + k->offset) = true;
        snprintf(where, sizeof(where), "'%s'", path);
        if (v->type == YAML_MAPPING_NODE)
            load_map(ld, v, k->sub, base, path, where);
        break;
    case KEY_ROUTES:
        load_routes(ld, v);
        break;
    case KEY_PLUGINS:
        load_plugins(ld, v);
        break;
    case KEY_PARAMS:
        load_params(ld, v, (struct conf_route *)base, path);
        break;
    case KEY_STRINGS:
        load_strings(ld, k, v, base, path);
        break;
    }
}

/* The pairs of MAP: their number, and for each the index of the first
 * pair with the same key (its own when none came before; malloc'd). */
size_t map_size(const yaml_node_t *map)
{
    return (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
}

size_t *map_first_keys(struct loader *ld, const yaml_node_t *map)
{
    size_t n = map_size(map);
    const char **keys = xcalloc(n, sizeof(*keys));
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *k = get_node(ld, map->data.mapping.pairs.start[i].key);
        keys[i] = k->type == YAML_SCALAR_NODE ? scalar(k) : NULL;
    }
    size_t *first = first_equal(keys, n);
    free(keys);
    return first;
}

/* A key that is not a plain scalar, or that repeats an earlier one in MAP
 * (FIRST as map_first_keys found): report it and return true. */
bool bad_key(struct loader *ld, const yaml_node_t *map, size_t i, const size_t *first)
{
    char buf[64];
    yaml_node_t *k = get_node(ld, map->data.mapping.pairs.start[i].key);
    if (k->type != YAML_SCALAR_NODE) {
        report(ld, k, "a key must be a plain word, got %s", describe(k, buf, sizeof(buf)));
        return true;
    }
    if (first[i] == i)
        return false;
    yaml_node_t *prev = get_node(ld, map->data.mapping.pairs.start[first[i]].key);
    report(ld, k, "duplicate key '%s' (first at line %d)", scalar(k),
           (int)prev->start_mark.line + 1);
    return true;
}

static void unknown_key(struct loader *ld, const yaml_node_t *k, const struct key *keys,
                        const char *where)
{
    const char *names[64];
    size_t n = 0;
    for (; keys[n].name && n < 64; n++)
        names[n] = keys[n].name;
    const char *near = diags_full(ld) ? NULL : conf_suggest(scalar(k), names, n);
    if (near)
        report(ld, k, "unknown key '%s' in %s; did you mean '%s'?", scalar(k), where, near);
    else
        report(ld, k, "unknown key '%s' in %s", scalar(k), where);
}

/* Load MAP's pairs through KEYS into BASE. PREFIX ("" at the top level) makes
 * the dotted paths of messages; WHERE names the mapping in "unknown key".
 * Returns a bit per entry of KEYS that was present. */
uint64_t load_map(struct loader *ld, const yaml_node_t *map, const struct key *keys, char *base,
                  const char *prefix, const char *where)
{
    uint64_t seen = 0;
    size_t *first = map_first_keys(ld, map);
    for (size_t pi = 0; pi < map_size(map); pi++) {
        if (bad_key(ld, map, pi, first))
            continue;
        yaml_node_pair_t *p = &map->data.mapping.pairs.start[pi];
        yaml_node_t *k = get_node(ld, p->key);
        size_t i = 0;
        while (keys[i].name && strcmp(keys[i].name, scalar(k)))
            i++;
        if (!keys[i].name) {
            unknown_key(ld, k, keys, where);
            continue;
        }
        seen |= UINT64_C(1) << i;
        char *path = *prefix ? xasprintf("%s.%s", prefix, keys[i].name) : xstrdup(keys[i].name);
        load_value(ld, &keys[i], get_node(ld, p->value), base, path);
        free(path);
    }
    free(first);
    return seen;
}
