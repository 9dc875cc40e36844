/* compose.c - see compose.h: libyaml's events into a yaml_document_t, with
 * a bound on nesting, one on what aliases expand to, and anchors in a hash
 * table. The work is linear in the input: every event is handled once, in
 * constant time (an alias's expanded size is kept with its node). */
#include "conf/compose.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Noreturn void compose_out_of_memory(void)
{
    fputs("mqfork: out of memory while reading the configuration\n", stderr);
    abort();
}

/* ---- anchors: name -> node id, open addressing (FNV-1a, linear probing) */

struct anchor {
    char *name; /* NULL: a free slot */
    int id;
    int line; /* 1-based, where the anchored node starts */
};

struct anchors {
    struct anchor *slot;
    size_t cap, count; /* cap: 0 or a power of two */
};

static size_t anchor_hash(const char *s)
{
    uint64_t h = 1469598103934665603u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211u;
    return (size_t)h;
}

/* The slot of NAME, or the free slot where it would go. */
static struct anchor *anchor_slot(const struct anchors *a, const char *name)
{
    for (size_t i = anchor_hash(name) & (a->cap - 1);; i = (i + 1) & (a->cap - 1))
        if (!a->slot[i].name || !strcmp(a->slot[i].name, name))
            return &a->slot[i];
}

static const struct anchor *anchor_find(const struct anchors *a, const char *name)
{
    if (!a->cap)
        return NULL;
    const struct anchor *s = anchor_slot(a, name);
    return s->name ? s : NULL;
}

/* Add NAME (taken over): NULL, or the earlier anchor of that name. */
static const struct anchor *anchor_add(struct anchors *a, char *name, int id, int line)
{
    if (2 * (a->count + 1) > a->cap) {
        struct anchors grown = {.cap = a->cap ? 2 * a->cap : 64, .count = a->count};
        grown.slot = calloc(grown.cap, sizeof(*grown.slot));
        if (!grown.slot)
            compose_out_of_memory();
        for (size_t i = 0; i < a->cap; i++)
            if (a->slot[i].name)
                *anchor_slot(&grown, a->slot[i].name) = a->slot[i];
        free(a->slot);
        *a = grown;
    }
    struct anchor *s = anchor_slot(a, name);
    if (s->name) {
        free(name);
        return s;
    }
    *s = (struct anchor){.name = name, .id = id, .line = line};
    a->count++;
    return NULL;
}

static void anchors_free(struct anchors *a)
{
    for (size_t i = 0; i < a->cap; i++)
        free(a->slot[i].name);
    free(a->slot);
}

/* ---- the composer */

/* An open sequence or mapping. */
struct frame {
    int id;
    int key;       /* a mapping's key waiting for its value, or 0 */
    size_t weight; /* what it expands to so far */
    char *anchor;  /* its anchor, registered when it is complete; or NULL */
    yaml_mark_t start;
};

struct composer {
    const char *path;
    struct conf_diags *diags;
    yaml_document_t *doc;
    struct frame frames[CONF_MAX_DEPTH];
    int depth;
    size_t *weight; /* by node id - 1: what the node expands to */
    size_t nweight;
    size_t expanded; /* of the whole document */
    struct anchors anchors;
};

static void problem(struct composer *cp, yaml_mark_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void problem(struct composer *cp, yaml_mark_t at, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    conf_diag(cp->diags, cp->path, (int)at.line + 1, (int)at.column + 1, "%s", msg);
}

/* libyaml's "!" and no tag both mean the default one. */
static yaml_char_t *tag_of(yaml_char_t *tag)
{
    return tag && strcmp((const char *)tag, "!") ? tag : NULL;
}

/* Node ID (just made, or an alias's target) now stands where the innermost
 * open collection is, or is the root. Its expanded size is WEIGHT. */
static void attach(struct composer *cp, int id, size_t weight)
{
    if (cp->depth == 0)
        return; /* the root: the document's first node */
    struct frame *f = &cp->frames[cp->depth - 1];
    f->weight += weight;
    yaml_node_t *parent = yaml_document_get_node(cp->doc, f->id);
    int ok = 1;
    if (parent->type == YAML_SEQUENCE_NODE)
        ok = yaml_document_append_sequence_item(cp->doc, f->id, id);
    else if (!f->key)
        f->key = id;
    else {
        ok = yaml_document_append_mapping_pair(cp->doc, f->id, f->key, id);
        f->key = 0;
    }
    if (!ok)
        compose_out_of_memory();
}

/* A node was added: record its marks and what it expands to. */
static void added(struct composer *cp, int id, const yaml_event_t *ev, size_t weight)
{
    if (!id)
        compose_out_of_memory();
    yaml_node_t *n = yaml_document_get_node(cp->doc, id);
    n->start_mark = ev->start_mark;
    n->end_mark = ev->end_mark;
    if ((size_t)id > cp->nweight) {
        size_t cap = cp->nweight ? 2 * cp->nweight : 256;
        while (cap < (size_t)id)
            cap *= 2;
        cp->weight = realloc(cp->weight, cap * sizeof(*cp->weight));
        if (!cp->weight)
            compose_out_of_memory();
        cp->nweight = cap;
    }
    cp->weight[id - 1] = weight;
}

/* Register ANCHOR (taken over; NULL: none) for the complete node ID. */
static int name_node(struct composer *cp, char *anchor, int id, yaml_mark_t at)
{
    if (!anchor)
        return 0;
    const struct anchor *first = anchor_add(&cp->anchors, anchor, id, (int)at.line + 1);
    if (!first)
        return 0;
    problem(cp, at, "yaml: found duplicate anchor '%s' (first at line %d)", first->name,
            first->line);
    return -1;
}

static int grow(struct composer *cp, size_t weight, yaml_mark_t at)
{
    cp->expanded += weight;
    if (cp->expanded <= CONF_MAX_EXPANDED)
        return 0;
    problem(cp, at,
            "yaml: the aliases make this file larger than %d bytes once expanded "
            "(a configuration has no use for that many)",
            CONF_MAX_EXPANDED);
    return -1;
}

static int open_collection(struct composer *cp, yaml_event_t *ev)
{
    if (cp->depth == CONF_MAX_DEPTH) {
        problem(cp, ev->start_mark,
                "yaml: nested more than %d levels deep (a configuration needs 4)", CONF_MAX_DEPTH);
        return -1;
    }
    if (grow(cp, 1, ev->start_mark) < 0)
        return -1;
    int id;
    yaml_char_t **anchor;
    if (ev->type == YAML_SEQUENCE_START_EVENT) {
        id = yaml_document_add_sequence(cp->doc, tag_of(ev->data.sequence_start.tag),
                                        ev->data.sequence_start.style);
        anchor = &ev->data.sequence_start.anchor;
    } else {
        id = yaml_document_add_mapping(cp->doc, tag_of(ev->data.mapping_start.tag),
                                       ev->data.mapping_start.style);
        anchor = &ev->data.mapping_start.anchor;
    }
    added(cp, id, ev, 1);
    cp->frames[cp->depth++] =
        (struct frame){.id = id, .weight = 1, .anchor = (char *)*anchor, .start = ev->start_mark};
    *anchor = NULL; /* the frame has it now */
    return 0;
}

static int close_collection(struct composer *cp, const yaml_event_t *ev)
{
    struct frame f = cp->frames[--cp->depth];
    yaml_node_t *n = yaml_document_get_node(cp->doc, f.id);
    n->end_mark = ev->end_mark;
    cp->weight[f.id - 1] = f.weight;
    attach(cp, f.id, f.weight);
    return name_node(cp, f.anchor, f.id, f.start);
}

static int scalar(struct composer *cp, yaml_event_t *ev)
{
    size_t weight = 1 + ev->data.scalar.length;
    if (grow(cp, weight, ev->start_mark) < 0)
        return -1;
    int id = yaml_document_add_scalar(cp->doc, tag_of(ev->data.scalar.tag), ev->data.scalar.value,
                                      (int)ev->data.scalar.length, ev->data.scalar.style);
    added(cp, id, ev, weight);
    attach(cp, id, weight);
    char *anchor = (char *)ev->data.scalar.anchor;
    ev->data.scalar.anchor = NULL;
    return name_node(cp, anchor, id, ev->start_mark);
}

static int alias(struct composer *cp, const yaml_event_t *ev)
{
    const char *name = (const char *)ev->data.alias.anchor;
    const struct anchor *a = anchor_find(&cp->anchors, name);
    if (!a) {
        /* Also an alias inside the node of its own anchor: not complete
         * yet, so not registered, and a cycle never gets built. */
        problem(cp, ev->start_mark, "yaml: found undefined alias '%s'", name);
        return -1;
    }
    size_t weight = cp->weight[a->id - 1];
    if (grow(cp, weight, ev->start_mark) < 0)
        return -1;
    attach(cp, a->id, weight);
    return 0;
}

/* Report the parser's error, at the line and column of its problem. */
static void syntax_error(struct composer *cp, const yaml_parser_t *p, const char *buf, size_t len)
{
    if (p->error == YAML_MEMORY_ERROR)
        compose_out_of_memory();
    const char *what = p->problem ? p->problem : "cannot parse the file";
    yaml_mark_t at = p->problem_mark;
    if (p->error == YAML_READER_ERROR) {
        /* The reader (encoding) only knows a byte offset. */
        size_t off = p->problem_offset < len ? p->problem_offset : len;
        at = (yaml_mark_t){0};
        for (size_t i = 0; i < off; i++, at.column++) {
            if (buf[i] == '\n') {
                at.line++;
                at.column = (size_t)-1;
            }
        }
    }
    if (p->context)
        problem(cp, at, "yaml: %s (%s that starts at line %d)", what, p->context,
                (int)p->context_mark.line + 1);
    else
        problem(cp, at, "yaml: %s", what);
}

/* One event of the first document into the document. */
static int compose_event(struct composer *cp, yaml_event_t *ev)
{
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        return scalar(cp, ev);
    case YAML_ALIAS_EVENT:
        return alias(cp, ev);
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT:
        return open_collection(cp, ev);
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        return close_collection(cp, ev);
    default:
        return 0;
    }
}

/* The events after the first document: a second one is a problem (reported
 * once it has parsed, as its syntax errors come first), and is not built. */
static int rest_of_stream(struct composer *cp, yaml_parser_t *p, const char *buf, size_t len)
{
    yaml_event_t ev;
    yaml_mark_t second = {0};
    bool in_second = false;
    int depth = 0;
    for (;;) {
        if (!yaml_parser_parse(p, &ev)) {
            syntax_error(cp, p, buf, len);
            return -1;
        }
        yaml_event_type_t type = ev.type;
        yaml_mark_t at = ev.start_mark;
        yaml_event_delete(&ev);
        if (type == YAML_STREAM_END_EVENT)
            return 0;
        if (type == YAML_DOCUMENT_START_EVENT) {
            second = at;
            in_second = true;
        } else if (type == YAML_DOCUMENT_END_EVENT && in_second) {
            problem(cp, second, "only one YAML document is allowed in a configuration file");
            return 0;
        } else if (type == YAML_SEQUENCE_START_EVENT || type == YAML_MAPPING_START_EVENT) {
            if (++depth > CONF_MAX_DEPTH) {
                problem(cp, at, "yaml: nested more than %d levels deep (a configuration needs 4)",
                        CONF_MAX_DEPTH);
                return -1;
            }
        } else if (type == YAML_SEQUENCE_END_EVENT || type == YAML_MAPPING_END_EVENT) {
            depth--;
        }
    }
}

int compose_document(const char *path, const char *buf, size_t len, yaml_document_t *doc,
                     struct conf_diags *d)
{
    yaml_parser_t p;
    if (!yaml_parser_initialize(&p) || !yaml_document_initialize(doc, NULL, NULL, NULL, 1, 1))
        compose_out_of_memory();
    yaml_parser_set_input_string(&p, (const unsigned char *)buf, len);
    struct composer cp = {.path = path, .diags = d, .doc = doc};
    int rc = 0;
    for (bool done = false; !done && rc == 0;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            syntax_error(&cp, &p, buf, len);
            rc = -1;
            break;
        }
        if (ev.type == YAML_DOCUMENT_START_EVENT)
            doc->start_mark = ev.start_mark;
        else if (ev.type == YAML_DOCUMENT_END_EVENT)
            doc->end_mark = ev.end_mark;
        done = ev.type == YAML_DOCUMENT_END_EVENT || ev.type == YAML_STREAM_END_EVENT;
        if (ev.type == YAML_DOCUMENT_END_EVENT)
            rc = rest_of_stream(&cp, &p, buf, len);
        else
            rc = compose_event(&cp, &ev);
        yaml_event_delete(&ev);
    }
    while (cp.depth > 0)
        free(cp.frames[--cp.depth].anchor);
    if (rc < 0)
        yaml_document_delete(doc);
    anchors_free(&cp.anchors);
    free(cp.weight);
    yaml_parser_delete(&p);
    return rc;
}
