/* config.c - the configuration's entry points (conf_load) and diagnostics:
 * read and parse the file, have it walked (config_load.c) and checked
 * (config_across.c), and collect every problem with its file:line:column so
 * `mqforkd -t` can show them all at once. The other parts are named in
 * conf/config_impl.h.
 *
 * The order of work: parse (a syntax error stops everything, since positions
 * after it mean nothing), then walk the tables (type and range of each value),
 * then check what involves several values (min <= max, route templates against
 * their filter). A value is stored only when it is valid, and a value already
 * reported is not reported again by a later cross-check. Handler names and
 * params are the registry's to check (worker/registry.c), since plugins may
 * bring handlers.
 *
 * A hostile file costs milliseconds, not minutes: it is refused past
 * CONF_MAX_BYTES before parsing, conf/compose.c stops at the first event
 * nested past CONF_MAX_DEPTH (and at aliases that expand too far), every
 * step here is O(n log n) at worst in the number of nodes (duplicate keys
 * are found by sorting; reported nodes are flags), and past CONF_DIAGS_MAX
 * diagnostics the rest are only counted. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "conf/compose.h"
#include "conf/config_impl.h"

/* ---- memory: a configuration is small; running out of memory while loading
 * it is not something the daemon can usefully recover from. */

static _Noreturn void out_of_memory(void)
{
    fputs("mqfork: out of memory while loading the configuration\n", stderr);
    abort();
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        out_of_memory();
    return q;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        out_of_memory();
    return p;
}

char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d)
        out_of_memory();
    return d;
}

static char *xvasprintf(const char *fmt, va_list ap)
{
    char *s;
    if (vasprintf(&s, fmt, ap) < 0)
        out_of_memory();
    return s;
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = xvasprintf(fmt, ap);
    va_end(ap);
    return s;
}

void set_string(char **field, const char *value)
{
    free(*field);
    *field = value ? xstrdup(value) : NULL;
}

int conf_strings_add(struct conf_strings *l, const char *s)
{
    char *copy = strdup(s);
    char **items = copy ? realloc(l->items, (l->count + 1) * sizeof(*items)) : NULL;
    if (!items) {
        free(copy);
        return -1;
    }
    items[l->count++] = copy;
    l->items = items;
    return 0;
}

bool conf_strings_equal(const struct conf_strings *a, const struct conf_strings *b)
{
    if (a->count != b->count)
        return false;
    for (size_t i = 0; i < a->count; i++)
        if (strcmp(a->items[i], b->items[i]) != 0)
            return false;
    return true;
}

/* ---- diagnostics */

/* Past CONF_DIAGS_MAX, a diagnostic is only counted: a file of 80,000
 * unknown keys makes 100 lines and a count, not 80,000 lines. */
static void diag_add(struct conf_diags *d, const char *file, int line, int column, char *msg,
                     bool warning)
{
    if (d->count >= CONF_DIAGS_MAX) {
        d->omitted++;
        d->omitted_errors += !warning;
        free(msg);
        return;
    }
    if (d->count == 0 || (d->count & (d->count - 1)) == 0)
        d->items = xrealloc(d->items, (d->count ? 2 * d->count : 1) * sizeof(*d->items));
    d->items[d->count++] = (struct conf_diag){
        .file = xstrdup(file),
        .line = line,
        .column = column,
        .message = msg,
        .warning = warning,
    };
}

void conf_diag(struct conf_diags *d, const char *file, int line, int column, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    diag_add(d, file, line, column, xvasprintf(fmt, ap), false);
    va_end(ap);
}

size_t conf_diags_warnings(const struct conf_diags *d)
{
    size_t n = 0;
    for (size_t i = 0; i < d->count; i++)
        n += d->items[i].warning;
    return n;
}

void conf_diags_free(struct conf_diags *d)
{
    for (size_t i = 0; i < d->count; i++) {
        free(d->items[i].file);
        free(d->items[i].message);
    }
    free(d->items);
    *d = (struct conf_diags){0};
}

size_t conf_diags_total(const struct conf_diags *d)
{
    return d->count + d->omitted;
}

char *conf_diags_omitted_text(const struct conf_diags *d)
{
    if (!d->omitted)
        return NULL;
    return xasprintf("%zu more problem%s not shown (%zu in all)", d->omitted,
                     d->omitted == 1 ? "" : "s", conf_diags_total(d));
}

void conf_diags_print(const struct conf_diags *d, FILE *out)
{
    for (size_t i = 0; i < d->count; i++) {
        const struct conf_diag *g = &d->items[i];
        const char *kind = g->warning ? "warning" : "error";
        if (g->line > 0)
            fprintf(out, "%s:%d:%d: %s: %s\n", g->file, g->line, g->column, kind, g->message);
        else
            fprintf(out, "%s: %s: %s\n", g->file, kind, g->message);
    }
    char *more = conf_diags_omitted_text(d);
    if (more)
        fprintf(out, "%s: %s: %s\n", d->items[d->count - 1].file,
                d->omitted_errors ? "error" : "warning", more);
    free(more);
}

static void vreport_at(struct loader *ld, int line, int column, const char *fmt, va_list ap)
{
    diag_add(ld->diags, ld->path, line, column, xvasprintf(fmt, ap), false);
}

static void report_at(struct loader *ld, int line, int column, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void report_at(struct loader *ld, int line, int column, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport_at(ld, line, column, fmt, ap);
    va_end(ap);
}

/* Report a problem at NODE (libyaml marks are 0-based; diagnostics 1-based),
 * and remember NODE as reported. */
void report(struct loader *ld, const yaml_node_t *node, const char *fmt, ...)
{
    int line = 0, column = 0;
    if (node) {
        line = (int)node->start_mark.line + 1;
        column = (int)node->start_mark.column + 1;
        ld->bad[node - ld->doc.nodes.start] = true;
    }
    va_list ap;
    va_start(ap, fmt);
    vreport_at(ld, line, column, fmt, ap);
    va_end(ap);
}

/* A warning at NODE: the file still loads. */
void report_warning(struct loader *ld, const yaml_node_t *node, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    diag_add(ld->diags, ld->path, node ? (int)node->start_mark.line + 1 : 0,
             node ? (int)node->start_mark.column + 1 : 0, xvasprintf(fmt, ap), true);
    va_end(ap);
}

bool was_reported(const struct loader *ld, const yaml_node_t *node)
{
    return ld->bad[node - ld->doc.nodes.start];
}

/* CONF_DIAGS_MAX diagnostics are kept already: what would only be counted
 * need not be worked out (a suggestion). */
bool diags_full(const struct loader *ld)
{
    return ld->diags->count >= CONF_DIAGS_MAX;
}

/* ---- equal strings among many, in O(n log n): sorted, an equal run's
 * smallest index is its first. */

struct indexed {
    const char *s;
    size_t i;
};

static int indexed_cmp(const void *a, const void *b)
{
    const struct indexed *x = a, *y = b;
    int c = strcmp(x->s, y->s);
    return c ? c : (x->i > y->i) - (x->i < y->i);
}

/* For each of the N strings S, the index of the first one equal to it (its
 * own when none came before, or when it is NULL). Malloc'd. */
size_t *first_equal(const char *const *s, size_t n)
{
    size_t *first = xcalloc(n, sizeof(*first));
    struct indexed *sorted = xcalloc(n, sizeof(*sorted));
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        first[i] = i;
        if (s[i])
            sorted[m++] = (struct indexed){s[i], i};
    }
    qsort(sorted, m, sizeof(*sorted), indexed_cmp);
    for (size_t j = 1; j < m; j++)
        if (!strcmp(sorted[j].s, sorted[j - 1].s))
            first[sorted[j].i] = first[sorted[j - 1].i];
    free(sorted);
    return first;
}

/* ---- reading and parsing the file */

/* The file, whole, when it is at most CONF_MAX_BYTES: refused before it
 * is parsed (and, when the size is known, before it is read). */
static char *read_file(struct loader *ld, size_t *len)
{
    FILE *f = fopen(ld->path, "rb");
    if (!f) {
        report_at(ld, 0, 0, "cannot open '%s': %s", ld->path, strerror(errno));
        return NULL;
    }
    /* A regular file in one read of its size (and one more to see its
     * end); anything else growing, never past CONF_MAX_BYTES + 1. */
    struct stat st;
    bool regular = fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode);
    bool big = regular && st.st_size > CONF_MAX_BYTES;
    size_t cap = regular && !big ? (size_t)st.st_size + 1 : 4096, n = 0;
    char *buf = NULL;
    while (!big) {
        buf = xrealloc(buf, cap);
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap || ferror(f))
            break;
        big = n > CONF_MAX_BYTES;
        cap = 2 * cap < CONF_MAX_BYTES + 1 ? 2 * cap : CONF_MAX_BYTES + 1;
    }
    if (big) {
        report_at(ld, 0, 0,
                  "the file is larger than a configuration may be: more than %d bytes (1 MiB)",
                  CONF_MAX_BYTES);
    } else if (ferror(f)) {
        report_at(ld, 0, 0, "cannot read '%s': %s", ld->path, strerror(errno));
    }
    if (big || ferror(f)) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = n;
    return buf;
}

static void load_document(struct loader *ld)
{
    char buf[64];
    yaml_node_t *root = yaml_document_get_root_node(&ld->doc);
    if (!root || is_null(root)) {
        check_has_work(ld); /* an empty file: every default, and no route */
        return;
    }
    if (root->type != YAML_MAPPING_NODE) {
        report(ld, root, "the top level must be a mapping of keys, got %s",
               describe(root, buf, sizeof(buf)));
        return;
    }
    load_map(ld, root, top_keys, (char *)ld->conf, "", "the top level");
    check_across(ld);
}

/* Order this load's diagnostics as they appear in the file (stable, so two at
 * one place keep the order they were found in). */
static void sort_diags(struct conf_diags *d, size_t from)
{
    for (size_t i = from + 1; i < d->count; i++) {
        struct conf_diag g = d->items[i];
        size_t j = i;
        for (; j > from; j--) {
            const struct conf_diag *p = &d->items[j - 1];
            if (p->line < g.line || (p->line == g.line && p->column <= g.column))
                break;
            d->items[j] = *p;
        }
        d->items[j] = g;
    }
}

int conf_load(const char *path, struct conf *c, struct conf_diags *d)
{
    return conf_load_checked(path, c, d, NULL, NULL);
}

int conf_load_checked(const char *path, struct conf *c, struct conf_diags *d, conf_check_fn check,
                      void *ctx)
{
    struct loader ld = {.path = path, .conf = c, .diags = d, .diags_before = d->count};
    conf_defaults(c);
    c->path = xstrdup(path);
    size_t len = 0, omitted_errors = d->omitted_errors;
    char *buf = read_file(&ld, &len);
    bool parsed = buf && compose_document(path, buf, len, &ld.doc, d) == 0;
    if (parsed) {
        ld.bad = xcalloc((size_t)(ld.doc.nodes.top - ld.doc.nodes.start), sizeof(*ld.bad));
        load_document(&ld);
        yaml_document_delete(&ld.doc);
        free(ld.bad);
    }
    free(buf);
    if (parsed && check)
        check(ctx, c, d);
    sort_diags(d, ld.diags_before);
    bool errors = d->omitted_errors != omitted_errors;
    for (size_t i = ld.diags_before; i < d->count; i++)
        errors |= !d->items[i].warning;
    if (!errors)
        return 0;
    conf_free(c);
    return -1;
}
