/* config.c - load the YAML configuration strictly: walk the document with a
 * table of key descriptors per mapping, store what is valid, and collect every
 * problem with its file:line:column so `mqforkd -t` can show them all at once.
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
#include "conf/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "conf/compose.h"
#include "proto/topic.h"
#include "shm/segment.h"
#include "shm/slab.h"

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

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        out_of_memory();
    return p;
}

static char *xstrdup(const char *s)
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

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = xvasprintf(fmt, ap);
    va_end(ap);
    return s;
}

static void set_string(char **field, const char *value)
{
    free(*field);
    *field = value ? xstrdup(value) : NULL;
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
static void report(struct loader *ld, const yaml_node_t *node, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void report(struct loader *ld, const yaml_node_t *node, const char *fmt, ...)
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
static void warn(struct loader *ld, const yaml_node_t *node, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void warn(struct loader *ld, const yaml_node_t *node, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    diag_add(ld->diags, ld->path, node ? (int)node->start_mark.line + 1 : 0,
             node ? (int)node->start_mark.column + 1 : 0, xvasprintf(fmt, ap), true);
    va_end(ap);
}

static bool was_reported(const struct loader *ld, const yaml_node_t *node)
{
    return ld->bad[node - ld->doc.nodes.start];
}

/* CONF_DIAGS_MAX diagnostics are kept already: what would only be counted
 * need not be worked out (a suggestion). */
static bool diags_full(const struct loader *ld)
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
static size_t *first_equal(const char *const *s, size_t n)
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

/* ---- YAML node helpers */

static yaml_node_t *get_node(struct loader *ld, int id)
{
    return yaml_document_get_node(&ld->doc, id);
}

static const char *scalar(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

/* A plain empty, `~` or `null` scalar: the key is there without a value. */
static bool is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *s = scalar(n);
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* What a node is, for "expected X, got Y": the quoted value, shortened and
 * with control characters replaced so a message stays on one line. */
static const char *describe(const yaml_node_t *n, char *buf, size_t len)
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
static yaml_node_t *map_get(struct loader *ld, const yaml_node_t *map, const char *key)
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
static yaml_node_t *lookup(struct loader *ld, const char *path)
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

/* Field position in struct conf (C) or struct conf_route (R). */
#define C(f) .offset = offsetof(struct conf, f), .size = sizeof(((struct conf *)0)->f)
#define R(f) .offset = offsetof(struct conf_route, f), .size = sizeof(((struct conf_route *)0)->f)

/* clang-format off */
#define STR(n, at, fl, chk) {.name = n, .kind = KEY_STRING, at, .flags = fl, .check = chk}
#define INT(n, at, lo, hi)  {.name = n, .kind = KEY_INT, at, .imin = lo, .imax = hi}
#define NUM(n, at, lo, hi)  {.name = n, .kind = KEY_NUMBER, at, .dmin = lo, .dmax = hi}
#define BOOL(n, at)         {.name = n, .kind = KEY_BOOL, at}
#define CHOICE(n, at, list) {.name = n, .kind = KEY_CHOICE, at, .choices = list}
#define ENUM(n, at, list)   {.name = n, .kind = KEY_ENUM, at, .choices = list}
#define MAP(n, table)       {.name = n, .kind = KEY_MAP, .sub = table}
/* clang-format on */

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const protocols[] = {"5", "3.1.1", NULL};
/* Indexed by enum conf_priority. */
static const char *const priorities[] = {"high", "normal", "low", NULL};

static string_check check_instance, check_route_name, check_topic, check_filter, check_allow_filter,
    check_device_filter, check_device_topic, check_uplink;

static const struct key tls_keys[] = {
    STR("ca_file", C(broker.tls.ca_file), KEY_NULLABLE, NULL),
    STR("cert_file", C(broker.tls.cert_file), KEY_NULLABLE, NULL),
    STR("key_file", C(broker.tls.key_file), KEY_NULLABLE, NULL),
    BOOL("verify", C(broker.tls.verify)),
    {0},
};

static const struct key broker_keys[] = {
    STR("host", C(broker.host), 0, NULL),
    INT("port", C(broker.port), 1, 65535),
    CHOICE("protocol", C(broker.protocol), protocols),
    STR("client_id", C(broker.client_id), KEY_NULLABLE, NULL),
    STR("username", C(broker.username), KEY_NULLABLE | KEY_EMPTY_OK, NULL),
    STR("password", C(broker.password), KEY_NULLABLE | KEY_EMPTY_OK, NULL),
    INT("keepalive_s", C(broker.keepalive_s), 5, 3600),
    BOOL("clean_session", C(broker.clean_session)),
    INT("session_expiry_s", C(broker.session_expiry_s), 0, UINT32_MAX),
    NUM("reconnect_min_s", C(broker.reconnect_min_s), 0.01, 86400),
    NUM("reconnect_max_s", C(broker.reconnect_max_s), 0.01, 86400),
    STR("status_topic", C(broker.status_topic), KEY_NULLABLE, check_topic),
    INT("max_outbound", C(broker.max_outbound), 1, 10000000),
    {.name = "tls", .kind = KEY_MAP, .sub = tls_keys, C(broker.tls_enabled), .flags = KEY_MARK},
    {0},
};

static const struct key workers_keys[] = {
    INT("min", C(workers.min), 1, 1024),
    INT("max", C(workers.max), 1, 1024),
    INT("inflight", C(workers.inflight), 1, 1024),
    INT("inflight_us", C(workers.inflight_us), 1, 10000000),
    INT("max_jobs", C(workers.max_jobs), 0, LLONG_MAX),
    INT("max_rss_mb", C(workers.max_rss_mb), 0, 1048576),
    NUM("backoff_max_s", C(workers.backoff_max_s), 0.01, 600),
    NUM("stable_s", C(workers.stable_s), 0.01, 86400),
    {0},
};

static const struct key limits_keys[] = {
    INT("max_payload", C(limits.max_payload), 1, 16777216),
    INT("max_pending", C(limits.max_pending), 1, 10000000),
    INT("slab_mb", C(limits.slab_mb), 1, 65536),
    {0},
};

static const struct key streams_keys[] = {
    INT("max", C(streams.max), 1, 1000000),
    NUM("idle_s", C(streams.idle_s), 0.1, 86400),
    {0},
};

static const struct key scaling_keys[] = {
    BOOL("enabled", C(scaling.enabled)),
    NUM("interval_s", C(scaling.interval_s), 0.01, 86400),
    NUM("up_cooldown_s", C(scaling.up_cooldown_s), 0.01, 86400),
    NUM("down_cooldown_s", C(scaling.down_cooldown_s), 0.01, 86400),
    INT("step", C(scaling.step), 1, 1024),
    NUM("up_load", C(scaling.up_load), 0, 1),
    NUM("up_cpu", C(scaling.up_cpu), 0, 1),
    NUM("up_p95_ms", C(scaling.up_p95_ms), 0, 3600000),
    NUM("up_pending_per_worker", C(scaling.up_pending_per_worker), 0, 1000000),
    NUM("down_load", C(scaling.down_load), 0, 1),
    NUM("down_cpu", C(scaling.down_cpu), 0, 1),
    NUM("down_p95_ms", C(scaling.down_p95_ms), 0, 3600000),
    {0},
};

static const struct key errors_keys[] = {
    STR("topic", C(errors_topic), 0, check_topic),
    {0},
};

#define V(f) C(voice.f)
static const struct key voice_topic_keys[] = {
    STR("up", V(topics.up), 0, check_device_filter),
    STR("down", V(topics.down), 0, check_device_topic),
    STR("events", V(topics.events), 0, check_device_topic),
    STR("opus", V(topics.opus), 0, check_device_topic),
    STR("pcm", V(topics.pcm), 0, check_device_topic),
    STR("play", V(topics.play), 0, check_device_topic),
    STR("say_pcm", V(topics.say_pcm), 0, check_device_topic),
    STR("ctl", V(topics.ctl), 0, check_device_topic),
    STR("stt", V(topics.stt), 0, check_device_topic),
    STR("say", V(topics.say), 0, check_device_topic),
    STR("forward", V(topics.forward), 0, check_device_topic),
    {0},
};

static const struct key voice_keys[] = {
    STR("bind", V(bind), 0, NULL),
    INT("port", V(port), 1, 65535),
    STR("public_host", V(public_host), KEY_NULLABLE, NULL),
    INT("public_port", V(public_port), 0, 65535),
    MAP("topics", voice_topic_keys),
    INT("max_sessions", V(max_sessions), 1, 1000000),
    NUM("idle_s", V(idle_s), 1, 86400),
    {.name = "uplink", .kind = KEY_STRINGS, V(uplink), .check = check_uplink},
    INT("pcm_batch_ms", V(pcm_batch_ms), 60, 6000),
    INT("max_utterance_s", V(max_utterance_s), 1, 300),
    STR("say_voice", V(say_voice), KEY_NULLABLE, NULL),
    INT("downlink_rate", V(downlink_rate), 8000, 48000),
    INT("downlink_frame_ms", V(downlink_frame_ms), 20, 60),
    INT("queue_frames", V(queue_frames), 1, 100000),
    {0},
};

static const struct key top_keys[] = {
    STR("instance", C(instance), 0, check_instance),
    CHOICE("log_level", C(log_level), log_levels),
    STR("user", C(user), KEY_NULLABLE, NULL),
    NUM("shutdown_timeout_s", C(shutdown_timeout_s), 0, 86400),
    MAP("broker", broker_keys),
    MAP("workers", workers_keys),
    MAP("limits", limits_keys),
    MAP("streams", streams_keys),
    MAP("scaling", scaling_keys),
    MAP("errors", errors_keys),
    {.name = "voice", .kind = KEY_MAP, .sub = voice_keys, C(voice.enabled), .flags = KEY_MARK},
    {.name = "plugins", .kind = KEY_PLUGINS},
    {.name = "routes", .kind = KEY_ROUTES},
    {0},
};

/* Applied to a struct conf_route. */
static const struct key route_keys[] = {
    STR("name", R(name), KEY_REQUIRED, check_route_name),
    /* check_filter explains what is wrong with an empty filter */
    STR("subscribe", R(subscribe), KEY_REQUIRED | KEY_EMPTY_OK, check_filter),
    INT("qos", R(qos), 0, 2),
    STR("job", R(job), KEY_REQUIRED, NULL),
    STR("reply", R(reply), KEY_NULLABLE, NULL),
    {.name = "reply_allow", .kind = KEY_STRINGS, R(reply_allow), .check = check_allow_filter},
    STR("stream", R(stream), KEY_NULLABLE, NULL),
    ENUM("priority", R(priority), priorities),
    INT("timeout_ms", R(timeout_ms), 1, 3600000),
    INT("deadline_ms", R(deadline_ms), 0, 3600000),
    INT("retries", R(retries), 0, 100),
    {.name = "params", .kind = KEY_PARAMS},
    {0},
};

/* ---- defaults */

static void route_defaults(struct conf_route *r)
{
    *r = (struct conf_route){
        .qos = 0,
        .priority = PRIO_NORMAL,
        .timeout_ms = 10000,
        .deadline_ms = 0,
        .retries = 2,
    };
}

void conf_defaults(struct conf *c)
{
    *c = (struct conf){
        .instance = xstrdup("default"),
        .log_level = xstrdup("info"),
        .shutdown_timeout_s = 30,
        .broker =
            {
                .host = xstrdup("127.0.0.1"),
                .port = 1883,
                .protocol = xstrdup("5"),
                .keepalive_s = 30,
                .clean_session = true,
                .session_expiry_s = 0,
                .reconnect_min_s = 0.5,
                .reconnect_max_s = 30,
                .max_outbound = 10000,
                .tls = {.verify = true},
            },
        .workers =
            {
                .min = 2,
                .max = 8,
                .inflight = 32,
                .inflight_us = 2000,
                .max_jobs = 0,
                .max_rss_mb = 0,
                .backoff_max_s = 2,
                .stable_s = 10,
            },
        .limits = {.max_payload = 65536, .max_pending = 65536, .slab_mb = 64},
        .streams = {.max = 1024, .idle_s = 60},
        .voice =
            {
                .bind = xstrdup("127.0.0.1"),
                .port = 8884,
                .topics =
                    {
                        .up = xstrdup("xiaozhi/+/up"),
                        .down = xstrdup("devices/p2p/{device}"),
                        .events = xstrdup("voice/{device}/events"),
                        .opus = xstrdup("voice/{device}/opus"),
                        .pcm = xstrdup("voice/{device}/pcm"),
                        .play = xstrdup("voice/{device}/play"),
                        .say_pcm = xstrdup("voice/{device}/say_pcm"),
                        .ctl = xstrdup("voice/{device}/ctl"),
                        .stt = xstrdup("voice/{device}/stt"),
                        .say = xstrdup("voice/{device}/say"),
                        .forward = xstrdup("mqfork/voice/{device}/forward"),
                    },
                .max_sessions = 1000,
                .idle_s = 120,
                .uplink_modes = UPLINK_RELAY,
                .pcm_batch_ms = 600,
                .max_utterance_s = 15,
                .downlink_rate = 24000,
                .downlink_frame_ms = 60,
                .queue_frames = 500,
            },
        .scaling =
            {
                .enabled = true,
                .interval_s = 10,
                .up_cooldown_s = 30,
                .down_cooldown_s = 60,
                .step = 1,
                .up_load = 0.70,
                .up_cpu = 0.60,
                .up_p95_ms = 50,
                .up_pending_per_worker = 3,
                .down_load = 0.30,
                .down_cpu = 0.30,
                .down_p95_ms = 10,
            },
        .errors_topic = xstrdup("mqfork/errors"),
    };
}

static void route_free(struct conf_route *r)
{
    free(r->name);
    free(r->subscribe);
    free(r->job);
    free(r->reply);
    for (size_t i = 0; i < r->reply_allow.count; i++)
        free(r->reply_allow.items[i]);
    free(r->reply_allow.items);
    free(r->stream);
    for (size_t i = 0; i < r->params.count; i++) {
        free(r->params.items[i].key);
        free(r->params.items[i].value);
    }
    free(r->params.items);
}

static void voice_free(struct conf_voice *v)
{
    char **topics[] = {&v->topics.up,   &v->topics.down, &v->topics.events,  &v->topics.opus,
                       &v->topics.pcm,  &v->topics.play, &v->topics.say_pcm, &v->topics.ctl,
                       &v->topics.stt,  &v->topics.say,  &v->topics.forward, &v->bind,
                       &v->public_host, &v->say_voice};
    for (size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++)
        free(*topics[i]);
    for (size_t i = 0; i < v->uplink.count; i++)
        free(v->uplink.items[i]);
    free(v->uplink.items);
}

void conf_free(struct conf *c)
{
    free(c->path);
    free(c->instance);
    free(c->log_level);
    free(c->user);
    struct conf_broker *b = &c->broker;
    free(b->host);
    free(b->protocol);
    free(b->client_id);
    free(b->username);
    free(b->password);
    free(b->status_topic);
    free(b->tls.ca_file);
    free(b->tls.cert_file);
    free(b->tls.key_file);
    free(c->errors_topic);
    voice_free(&c->voice);
    for (size_t i = 0; i < c->nplugins; i++)
        free(c->plugins[i].path);
    free(c->plugins);
    for (size_t i = 0; i < c->nroutes; i++)
        route_free(&c->routes[i]);
    free(c->routes);
    memset(c, 0, sizeof(*c));
}

int conf_priority_parse(const char *s)
{
    for (int i = 0; i < PRIO_COUNT; i++)
        if (!strcmp(s, priorities[i]))
            return i;
    return -1;
}

const char *conf_priority_name(enum conf_priority p)
{
    return (unsigned)p < PRIO_COUNT ? priorities[p] : "invalid";
}

/* ---- string checks */

static bool check_instance(struct loader *ld, const yaml_node_t *n, const char *path, const char *s)
{
    size_t len = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-");
    if (s[len] == '\0' && len >= 1 && len <= 32)
        return true;
    char buf[64];
    report(ld, n, "%s: %s is not a valid instance name (1 to 32 of A-Z a-z 0-9 _ -)", path,
           describe(n, buf, sizeof(buf)));
    return false;
}

/* Route names appear in stats, logs and error reports: keep them tame. */
static bool check_route_name(struct loader *ld, const yaml_node_t *n, const char *path,
                             const char *s)
{
    size_t len = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-");
    if (s[len] == '\0' && len >= 1 && len <= CONF_ROUTE_NAME_MAX)
        return true;
    char buf[64];
    report(ld, n, "%s: %s is not a valid route name (1 to %d of A-Z a-z 0-9 _ . -)", path,
           describe(n, buf, sizeof(buf)), CONF_ROUTE_NAME_MAX);
    return false;
}

/* A topic to publish to, as the broker will take it (topic_publish_problem). */
static bool check_topic(struct loader *ld, const yaml_node_t *n, const char *path, const char *s)
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

static bool check_filter(struct loader *ld, const yaml_node_t *n, const char *path, const char *s)
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
static bool check_allow_filter(struct loader *ld, const yaml_node_t *n, const char *path,
                               const char *s)
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
static bool check_device_topic(struct loader *ld, const yaml_node_t *n, const char *path,
                               const char *s)
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
static bool check_device_filter(struct loader *ld, const yaml_node_t *n, const char *path,
                                const char *s)
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

static bool check_uplink(struct loader *ld, const yaml_node_t *n, const char *path, const char *s)
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
static size_t list_count(const yaml_node_t *v)
{
    return v->type == YAML_SEQUENCE_NODE
               ? (size_t)(v->data.sequence.items.top - v->data.sequence.items.start)
               : 1;
}

static yaml_node_t *list_item(struct loader *ld, const yaml_node_t *v, size_t i)
{
    return v->type == YAML_SEQUENCE_NODE ? get_node(ld, v->data.sequence.items.start[i])
                                         : (yaml_node_t *)v;
}

/* The path of item I of the list at PATH: "routes[0].reply_allow[1]", or
 * PATH itself for a list given as one string. Malloc'd. */
static char *list_item_path(const char *path, const yaml_node_t *v, size_t i)
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

static void load_routes(struct loader *ld, const yaml_node_t *seq);
static void load_plugins(struct loader *ld, const yaml_node_t *seq);
static void load_params(struct loader *ld, const yaml_node_t *v, struct conf_route *r,
                        const char *path);
static uint64_t load_map(struct loader *ld, const yaml_node_t *map, const struct key *keys,
                         char *base, const char *prefix, const char *where);

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
static size_t map_size(const yaml_node_t *map)
{
    return (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
}

static size_t *map_first_keys(struct loader *ld, const yaml_node_t *map)
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
static bool bad_key(struct loader *ld, const yaml_node_t *map, size_t i, const size_t *first)
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
static uint64_t load_map(struct loader *ld, const yaml_node_t *map, const struct key *keys,
                         char *base, const char *prefix, const char *where)
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

/* ---- routes */

static void load_params(struct loader *ld, const yaml_node_t *v, struct conf_route *r,
                        const char *path)
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
static void check_template(struct loader *ld, const yaml_node_t *n, const char *path,
                           const char *tpl, const char *filter, bool publish)
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

/* The {N} of each reply_allow filter against the route's filter. */
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
        check_template(ld, f, item_path, scalar(f), r->subscribe, false);
        free(item_path);
        free(key_path);
    }
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

    /* r->subscribe is only set when it is a valid filter. */
    char key_path[48];
    yaml_node_t *v;
    if (r->reply && (v = map_get(ld, item, "reply"))) {
        snprintf(key_path, sizeof(key_path), "%s.reply", path);
        check_template(ld, v, key_path, r->reply, r->subscribe, true);
        if (r->subscribe && !was_reported(ld, v) &&
            topic_template_can_match(r->reply, r->subscribe))
            warn(ld, v,
                 "%s: '%s' can match the route's own filter '%s': its replies would come "
                 "back to it as requests",
                 key_path, r->reply, r->subscribe);
    }
    if (r->stream && (v = map_get(ld, item, "stream"))) {
        snprintf(key_path, sizeof(key_path), "%s.stream", path);
        check_template(ld, v, key_path, r->stream, r->subscribe, false);
    }
    check_reply_allow(ld, r, item, path);
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

static void load_routes(struct loader *ld, const yaml_node_t *seq)
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
static void load_plugins(struct loader *ld, const yaml_node_t *seq)
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

/* ---- checks across values */

/* Report "A (x) RELATION B (y)" at A's value, or at B's when A is not in the
 * file; stay quiet when either value was already reported. */
static void contradiction(struct loader *ld, const char *a, double av, const char *relation,
                          const char *b, double bv)
{
    yaml_node_t *an = lookup(ld, a), *bn = lookup(ld, b);
    if ((an && was_reported(ld, an)) || (bn && was_reported(ld, bn)))
        return;
    report(ld, an ? an : bn, "%s (%.15g%s) %s %s (%.15g%s)", a, av, an ? "" : ", the default",
           relation, b, bv, bn ? "" : ", the default");
}

/* 0 when PATH is a file this process can read, else why not (an errno).
 * Relative paths are relative to the working directory, as when TLS opens them. */
static int file_unreadable(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return errno;
    if (S_ISDIR(st.st_mode))
        return EISDIR;
    return access(path, R_OK) == 0 ? 0 : errno;
}

static void check_tls(struct loader *ld)
{
    const struct conf_tls *t = &ld->conf->broker.tls;
    if (!t->cert_file != !t->key_file) {
        const char *given = t->cert_file ? "cert_file" : "key_file";
        const char *other = t->cert_file ? "key_file" : "cert_file";
        char path[40];
        snprintf(path, sizeof(path), "broker.tls.%s", given);
        report(ld, lookup(ld, path), "broker.tls.%s is given without broker.tls.%s", given, other);
    }
    const char *const names[] = {"ca_file", "cert_file", "key_file"};
    const char *const files[] = {t->ca_file, t->cert_file, t->key_file};
    for (size_t i = 0; i < 3; i++) {
        int err = files[i] ? file_unreadable(files[i]) : 0;
        if (!err)
            continue;
        char path[40];
        snprintf(path, sizeof(path), "broker.tls.%s", names[i]);
        report(ld, lookup(ld, path), "%s: cannot read '%s': %s", path, files[i], strerror(err));
    }
}

/* engine_start needs a slab that holds one block for the largest job. The
 * slab hands out powers of two, so a payload of 2.5 MiB takes 4 MiB. (A
 * handler's output may be larger still: worker/registry.c checks that.) */
static void check_limits(struct loader *ld)
{
    const struct conf_limits *l = &ld->conf->limits;
    size_t block = slab_block_bytes(l->max_payload);
    if (block <= (uint64_t)l->slab_mb << 20)
        return;
    yaml_node_t *pn = lookup(ld, "limits.max_payload"), *sn = lookup(ld, "limits.slab_mb");
    if ((pn && was_reported(ld, pn)) || (sn && was_reported(ld, sn)))
        return;
    if (block == l->max_payload)
        report(ld, pn ? pn : sn,
               "limits.max_payload (%u bytes) does not fit in limits.slab_mb (%u MiB)",
               l->max_payload, l->slab_mb);
    else
        report(ld, pn ? pn : sn,
               "limits.max_payload (%u bytes) does not fit in limits.slab_mb (%u MiB): it takes a "
               "block of %zu bytes",
               l->max_payload, l->slab_mb, block);
}

/* What the voice keys mean together. */
static void check_voice(struct loader *ld)
{
    struct conf_voice *v = &ld->conf->voice;
    if (v->uplink.count)
        v->uplink_modes = 0;
    for (size_t i = 0; i < v->uplink.count; i++)
        v->uplink_modes |= !strcmp(v->uplink.items[i], "relay") ? UPLINK_RELAY
                           : !strcmp(v->uplink.items[i], "decode")
                               ? UPLINK_DECODE
                               : UPLINK_RECOGNIZE | UPLINK_DECODE;
    /* An utterance travels to the recognizer as one job. */
    uint64_t utterance = (uint64_t)v->max_utterance_s * 16000 * 2;
    if ((v->uplink_modes & UPLINK_RECOGNIZE) && ld->conf->limits.max_payload < utterance)
        report(ld, lookup(ld, "limits.max_payload") ?: lookup(ld, "voice.uplink"),
               "limits.max_payload (%u bytes) cannot hold an utterance of voice.max_utterance_s "
               "(%u s: %llu bytes of 16 kHz PCM)",
               ld->conf->limits.max_payload, v->max_utterance_s, (unsigned long long)utterance);
    static const uint32_t rates[] = {8000, 12000, 16000, 24000, 48000};
    bool rate_ok = false;
    for (size_t i = 0; i < sizeof(rates) / sizeof(rates[0]); i++)
        rate_ok |= v->downlink_rate == rates[i];
    if (!rate_ok)
        report(ld, lookup(ld, "voice.downlink_rate"),
               "voice.downlink_rate: %u is not an Opus rate (8000, 12000, 16000, 24000, 48000)",
               v->downlink_rate);
    if (v->downlink_frame_ms % 20)
        report(ld, lookup(ld, "voice.downlink_frame_ms"),
               "voice.downlink_frame_ms: %u is not 20, 40 or 60", v->downlink_frame_ms);
    if (v->pcm_batch_ms % 60)
        report(ld, lookup(ld, "voice.pcm_batch_ms"),
               "voice.pcm_batch_ms: %u is not a whole number of 60 ms frames", v->pcm_batch_ms);
    /* Instances sharing the devices forward what is not theirs through the
     * broker, and must not get their own forwards back (No Local). */
    if (!strncmp(v->topics.up, "$share/", 7) && strcmp(ld->conf->broker.protocol, "5") != 0)
        report(ld, lookup(ld, "voice.topics.up"),
               "voice.topics.up: a shared subscription needs broker.protocol 5");
    /* Each session may hold a decoder's and an encoder's stream. */
    uint64_t streams = (uint64_t)v->max_sessions * ((v->uplink_modes & UPLINK_DECODE) ? 2 : 1);
    if (ld->conf->streams.max < streams)
        warn(ld, lookup(ld, "voice.max_sessions") ?: lookup(ld, "voice"),
             "voice.max_sessions: %u sessions may need %llu codec streams, and streams.max is "
             "%u: past it a new session's audio is refused",
             v->max_sessions, (unsigned long long)streams, ld->conf->streams.max);
    bool wildcard = !strcmp(v->bind, "0.0.0.0") || !strcmp(v->bind, "::");
    if (wildcard && !v->public_host)
        report(ld, lookup(ld, "voice.bind"),
               "voice.bind: %s is every address; set voice.public_host to the one devices reach",
               v->bind);
}

static void check_across(struct loader *ld)
{
    const struct conf *c = ld->conf;
    if (c->workers.min > c->workers.max)
        contradiction(ld, "workers.min", c->workers.min, "is greater than", "workers.max",
                      c->workers.max);
    if (c->broker.reconnect_max_s < c->broker.reconnect_min_s)
        contradiction(ld, "broker.reconnect_max_s", c->broker.reconnect_max_s, "is less than",
                      "broker.reconnect_min_s", c->broker.reconnect_min_s);
    /* Scaling down above the point of scaling up would make the pool flap. */
    const struct conf_scaling *s = &c->scaling;
    if (s->down_load > s->up_load)
        contradiction(ld, "scaling.down_load", s->down_load, "is greater than", "scaling.up_load",
                      s->up_load);
    if (s->down_cpu > s->up_cpu)
        contradiction(ld, "scaling.down_cpu", s->down_cpu, "is greater than", "scaling.up_cpu",
                      s->up_cpu);
    if (s->down_p95_ms > s->up_p95_ms)
        contradiction(ld, "scaling.down_p95_ms", s->down_p95_ms, "is greater than",
                      "scaling.up_p95_ms", s->up_p95_ms);
    check_limits(ld);
    if (c->voice.enabled)
        check_voice(ld);
    if (c->broker.tls_enabled)
        check_tls(ld);
    /* The daemon drops to this user at start: find out now, not then.
     * (getpwnam_r: a reload loads in a thread of its own.) */
    yaml_node_t *un = lookup(ld, "user");
    struct passwd pw, *found = NULL;
    char pwbuf[4096];
    if (c->user && !(un && was_reported(ld, un)) &&
        (getpwnam_r(c->user, &pw, pwbuf, sizeof(pwbuf), &found) != 0 || !found))
        report(ld, un, "user: no such user '%s'", c->user);
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
    if (!root || is_null(root))
        return; /* an empty file: every default */
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
