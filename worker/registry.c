/* registry.c - see registry.h: built-in handlers, plugins loaded with
 * dlopen before fork, and the one place where routes' handlers and params
 * are checked. */
#include "worker/registry.h"

#include <dlfcn.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shm/slab.h"
#include "shm/statblock.h"
#include "worker/handler.h"

/* ---- registration -------------------------------------------------------- */

static bool name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > 47)
        return false;
    return strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

/* What a handler declares, checked before anyone calls it. */
static const char *malformed(const struct mqfork_handler *h)
{
    if (h->abi != MQFORK_HANDLER_ABI)
        return "it was built against another handler ABI";
    if (!name_ok(h->name))
        return "its name is not 1..47 of [a-z0-9._-]";
    if (!h->run)
        return "it has no run()";
    if (h->ncounters && !h->counters)
        return "it declares counters without their list";
    for (unsigned i = 0; i < h->ncounters; i++)
        if (!name_ok(h->counters[i].name) || strchr(h->counters[i].name, '.'))
            return "a counter's name is not 1..47 of [a-z0-9_-]";
    if (h->nhistograms && !h->histograms)
        return "it declares histograms without their list";
    if (h->ncounters + (uint64_t)h->nhistograms > STATS_MAX_FIELDS)
        return "it declares more than 256 counters and histograms";
    for (unsigned i = 0; i < h->nhistograms; i++) {
        if (!name_ok(h->histograms[i].name) || strchr(h->histograms[i].name, '.'))
            return "a histogram's name is not 1..47 of [a-z0-9_-]";
        for (unsigned j = 0; j < h->ncounters; j++)
            if (strcmp(h->histograms[i].name, h->counters[j].name) == 0)
                return "a histogram has the name of one of its counters";
    }
    return NULL;
}

static int add_handler(struct mqfork_registry *mr, const struct mqfork_handler *h)
{
    struct registry *r = mr->host;
    const char *bad = h ? malformed(h) : "it is NULL";
    if (!bad && registry_find(r, h->name))
        bad = "a handler of that name is registered already";
    if (!bad && r->count == REGISTRY_MAX_HANDLERS)
        bad = "too many handlers";
    if (bad) {
        snprintf(r->why, sizeof(r->why), "handler '%s' refused: %s",
                 h && h->abi == MQFORK_HANDLER_ABI && h->name ? h->name : "?", bad);
        return -1;
    }
    r->handler[r->count++] = h;
    return 0;
}

static struct mqfork_registry api_of(struct registry *r)
{
    return (struct mqfork_registry){.abi = MQFORK_HANDLER_ABI, .add = add_handler, .host = r};
}

int registry_init(struct registry *r)
{
    memset(r, 0, sizeof(*r));
    struct mqfork_registry api = api_of(r);
    return handlers_register_builtin(&api);
}

const struct mqfork_handler *registry_find(const struct registry *r, const char *name)
{
    for (size_t i = 0; i < r->count; i++)
        if (strcmp(r->handler[i]->name, name) == 0)
            return r->handler[i];
    return NULL;
}

/* ---- plugins ------------------------------------------------------------- */

static const char *file_of(const struct conf *c)
{
    return c->path ? c->path : "-";
}

/* Open PATH, check its ABI and let it register; on failure the reason is in
 * WHY and nothing of the plugin stays registered or loaded. */
static int load_plugin(struct registry *r, const char *path, char *why, size_t len)
{
    if (r->nplugins == REGISTRY_MAX_PLUGINS) {
        snprintf(why, len, "too many plugins (at most %d)", REGISTRY_MAX_PLUGINS);
        return -1;
    }
    void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        snprintf(why, len, "cannot load: %s", dlerror());
        return -1;
    }
    const uint32_t *abi = dlsym(dl, MQFORK_PLUGIN_ABI_SYMBOL);
    int (*reg)(struct mqfork_registry *) =
        (int (*)(struct mqfork_registry *))dlsym(dl, MQFORK_PLUGIN_REGISTER_SYMBOL);
    size_t before = r->count;
    struct mqfork_registry api = api_of(r);
    r->why[0] = '\0';
    if (!abi || !reg)
        snprintf(why, len, "not an mqfork plugin (no %s)",
                 !abi ? MQFORK_PLUGIN_ABI_SYMBOL : MQFORK_PLUGIN_REGISTER_SYMBOL);
    else if (*abi != MQFORK_HANDLER_ABI)
        snprintf(why, len, "built for handler ABI %u; this mqforkd has ABI %u (rebuild it)",
                 (unsigned)*abi, MQFORK_HANDLER_ABI);
    else if (reg(&api) < 0 || r->count == before)
        snprintf(why, len, "its registration failed%s%s", r->why[0] ? ": " : "", r->why);
    else {
        r->plugin[r->nplugins++] = dl;
        return 0;
    }
    r->count = before;
    dlclose(dl);
    return -1;
}

/* A relative path is relative to the configuration file's directory, not
 * to wherever the daemon was started from (/ under systemd). */
static void plugin_path(const struct conf *c, const char *path, char *out, size_t len)
{
    const char *slash = c->path ? strrchr(c->path, '/') : NULL;
    if (path[0] == '/' || !slash)
        snprintf(out, len, "%s", path);
    else
        snprintf(out, len, "%.*s/%s", (int)(slash - c->path), c->path, path);
}

int registry_load_plugins(struct registry *r, const struct conf *c, struct conf_diags *d)
{
    int rc = 0;
    for (size_t i = 0; i < c->nplugins; i++) {
        const struct conf_plugin *p = &c->plugins[i];
        char why[512], path[4096];
        plugin_path(c, p->path, path, sizeof(path));
        if (load_plugin(r, path, why, sizeof(why)) < 0) {
            conf_diag(d, file_of(c), p->line, p->column, "plugins[%zu]: %s: %s", i, p->path, why);
            rc = -1;
        }
    }
    return rc;
}

void registry_free(struct registry *r)
{
    while (r->nplugins > 0)
        dlclose(r->plugin[--r->nplugins]);
    r->count = 0;
}

/* ---- params -------------------------------------------------------------- */

int params_copy(struct mqfork_params *dst, const struct conf_params *src)
{
    *dst = (struct mqfork_params){0};
    if (!src || src->count == 0)
        return 0;
    struct mqfork_param *items = calloc(src->count, sizeof(*items));
    if (!items)
        return -1;
    dst->items = items;
    for (size_t i = 0; i < src->count; i++) {
        items[i].key = strdup(src->items[i].key);
        items[i].value = strdup(src->items[i].value);
        dst->count++;
        if (!items[i].key || !items[i].value)
            return -1;
    }
    return 0;
}

void params_free(struct mqfork_params *p)
{
    for (size_t i = 0; i < p->count; i++) {
        free((char *)p->items[i].key);
        free((char *)p->items[i].value);
    }
    free((void *)p->items);
    *p = (struct mqfork_params){0};
}

bool params_equal(const struct mqfork_params *a, const struct conf_params *b)
{
    size_t na = a ? a->count : 0, nb = b ? b->count : 0;
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a->items[i].key, b->items[i].key) ||
            strcmp(a->items[i].value, b->items[i].value))
            return false;
    return true;
}

/* ---- checking ------------------------------------------------------------ */

/* What a handler's check() reports into: the route's params, to turn the
 * param a problem is about back into its position in the file. */
struct check_host {
    struct mqfork_check api;
    const struct conf *conf;
    const struct conf_route *route;
    size_t index; /* of the route */
    const struct mqfork_params *view;
    struct conf_diags *diags; /* NULL: the first message goes to err */
    char *err;
    size_t errlen;
    unsigned problems;
};

static void report_problem(struct mqfork_check *c, const struct mqfork_param *about,
                           const char *fmt, ...)
{
    struct check_host *h = (struct check_host *)c;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (h->problems++ == 0 && h->err)
        snprintf(h->err, h->errlen, "%s", msg);
    if (!h->diags)
        return;
    const struct conf_route *r = h->route;
    size_t i = about && h->view->items ? (size_t)(about - h->view->items) : SIZE_MAX;
    if (i >= r->params.count) {
        int line = r->params_line ? r->params_line : r->line;
        int column = r->params_line ? r->params_column : r->column;
        conf_diag(h->diags, file_of(h->conf), line, column, "routes[%zu].params: %s", h->index,
                  msg);
        return;
    }
    /* Messages start with the param's key: make it part of the path. */
    size_t kl = strlen(about->key);
    bool keyed = !strncmp(msg, about->key, kl) && !strncmp(msg + kl, ": ", 2);
    conf_diag(h->diags, file_of(h->conf), r->params.items[i].line, r->params.items[i].column,
              "routes[%zu].params%s%s", h->index, keyed ? "." : ": ", msg);
}

/* Run H's check on PARAMS through HOST; a handler without check() takes no
 * params. Returns the number of problems. */
static unsigned run_check(const struct mqfork_handler *h, const struct conf_params *params,
                          struct check_host *host)
{
    struct mqfork_params view;
    if (params_copy(&view, params) < 0) {
        params_free(&view);
        host->api.problem(&host->api, NULL, "out of memory");
        return host->problems;
    }
    host->api.problem = report_problem;
    host->view = &view;
    if (h->check)
        h->check(&view, &host->api);
    else
        for (size_t i = 0; i < view.count; i++)
            host->api.problem(&host->api, &view.items[i],
                              "handler '%s' takes no params; unknown '%s'", h->name,
                              view.items[i].key);
    params_free(&view);
    return host->problems;
}

int registry_check_params(const struct mqfork_handler *h, const struct conf_params *params,
                          char *err, size_t errlen)
{
    struct check_host host = {.err = err, .errlen = errlen};
    if (errlen)
        err[0] = '\0';
    return run_check(h, params, &host) ? -1 : 0;
}

static void unknown_handler(const struct registry *r, const struct conf *c, size_t i,
                            struct conf_diags *d)
{
    const struct conf_route *rt = &c->routes[i];
    const char *names[REGISTRY_MAX_HANDLERS];
    char list[1024] = "";
    size_t used = 0;
    for (size_t k = 0; k < r->count; k++) {
        names[k] = r->handler[k]->name;
        int n = snprintf(list + used, sizeof(list) - used, "%s%s", k ? ", " : "", names[k]);
        if (n > 0 && (size_t)n < sizeof(list) - used)
            used += (size_t)n;
    }
    const char *near = conf_suggest(rt->job, names, r->count);
    if (near)
        conf_diag(d, file_of(c), rt->job_line, rt->job_column,
                  "routes[%zu].job: unknown handler '%s'; did you mean '%s'?", i, rt->job, near);
    else
        conf_diag(d, file_of(c), rt->job_line, rt->job_column,
                  "routes[%zu].job: unknown handler '%s' (known: %s)", i, rt->job, list);
}

/* engine_start needs a slab that holds one block for the largest job: the
 * output handler H bounds for a max_payload input may be larger than the
 * input (opus.encode's), and blocks are powers of two. */
static unsigned check_output_fits(const struct mqfork_handler *h, const struct conf *c, size_t i,
                                  struct conf_diags *d)
{
    const struct conf_route *rt = &c->routes[i];
    struct mqfork_params view;
    struct mqfork_out_bound bound = {0};
    if (!h->out_bound || params_copy(&view, &rt->params) < 0)
        return 0; /* no bound: MQFORK_ERROR_TEXT bytes; out of memory: start will say */
    h->out_bound(&view, &bound);
    params_free(&view);
    uint64_t out = handler_out_capacity(&bound, handler_max_in(&bound, c->limits.max_payload));
    size_t block = slab_block_bytes(out);
    /* Not larger than the input: the loader has checked max_payload. */
    if (out <= c->limits.max_payload || (block && block <= (uint64_t)c->limits.slab_mb << 20))
        return 0;
    char taken[64] = "";
    if (block > out)
        snprintf(taken, sizeof(taken), ": it takes a block of %zu bytes", block);
    conf_diag(d, file_of(c), rt->job_line, rt->job_column,
              "routes[%zu].job: the output of a %u-byte %s job (%" PRIu64
              " bytes) does not fit in limits.slab_mb (%u MiB)%s",
              i, c->limits.max_payload, h->name, out, c->limits.slab_mb, taken);
    return 1;
}

int registry_check_routes(const struct registry *r, const struct conf *c, struct conf_diags *d)
{
    unsigned problems = 0;
    for (size_t i = 0; i < c->nroutes; i++) {
        const struct conf_route *rt = &c->routes[i];
        if (!rt->job)
            continue; /* the loader reported it */
        const struct mqfork_handler *h = registry_find(r, rt->job);
        if (!h) {
            unknown_handler(r, c, i, d);
            problems++;
            continue;
        }
        struct check_host host = {.conf = c, .route = rt, .index = i, .diags = d};
        unsigned bad = run_check(h, &rt->params, &host);
        problems += bad ? bad : check_output_fits(h, c, i, d);
    }
    return problems ? -1 : 0;
}

struct load_step {
    struct registry *r;
    bool with_plugins;
};

/* The voice gateway's handlers: speech.transcribe comes from a plugin. */
static void check_voice(const struct registry *r, const struct conf *c, struct conf_diags *d)
{
    if (c->voice.enabled && (c->voice.uplink_modes & UPLINK_RECOGNIZE) &&
        !registry_find(r, "speech.transcribe"))
        conf_diag(d, file_of(c), 0, 0,
                  "voice.uplink: recognize needs the handler speech.transcribe: load the speech "
                  "plugin (plugins: [.../mqfork_speech.so])");
    if (c->voice.enabled && c->voice.say_voice && !registry_find(r, "speech.synthesize"))
        conf_diag(d, file_of(c), 0, 0,
                  "voice.say_voice: needs the handler speech.synthesize: load the speech plugin "
                  "(plugins: [.../mqfork_speech.so])");
}

static void plugins_and_routes(void *ctx, const struct conf *c, struct conf_diags *d)
{
    struct load_step *s = ctx;
    if (s->with_plugins)
        registry_load_plugins(s->r, c, d);
    registry_check_routes(s->r, c, d);
    check_voice(s->r, c, d);
}

int registry_load_config(struct registry *r, const char *path, struct conf *c, bool with_plugins,
                         struct conf_diags *d)
{
    struct load_step s = {.r = r, .with_plugins = with_plugins};
    return conf_load_checked(path, c, d, plugins_and_routes, &s);
}
