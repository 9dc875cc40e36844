/* fuzz_plugin.c - libFuzzer harness for the plugin loader's checks
 * (worker/registry.c): plugins that fail to open, lack a symbol, carry
 * another ABI, fail their registration, or register handlers that are NULL,
 * misnamed, duplicated, without run() or with bad counters; then routes
 * naming any job with any params, checked against what was registered.
 * dlopen, dlsym, dlclose and dlerror are wrapped (-Wl,--wrap) so that a
 * path under /fuzz/ opens one of the input's plugins and no file at all.
 *
 * Whatever the input, the registry must hold only well-formed handlers of
 * plugins that loaded, one diagnostic per plugin that did not, and every
 * plugin opened must be closed exactly once by registry_free.
 *
 * Input: NPLUGINS, then per plugin PFLAGS ABI(4 bytes) NHANDLERS and per
 * handler HFLAGS NAME \0 NCOUNTERS and COUNTER_NAME \0 each; then routes,
 * each JOB \0 KEY \0 VALUE \0 (an empty KEY: no params). PFLAGS: bit 0
 * dlopen fails, 1 no ABI symbol, 2 no register symbol, 3 registration
 * returns -1, 4 the ABI is the 4 bytes read (else the right one). HFLAGS:
 * bit 0 add NULL, 1 wrong ABI, 2 no run(), 3 counters NULL, 4 a check()
 * that complains about every param, 5 no name. */
#include <dlfcn.h>

#include "fuzz.h"
#include "worker/registry.h"

#define MAX_PLUGINS  20
#define MAX_HANDLERS 8
#define MAX_COUNTERS 4
#define MAX_ROUTES   8

struct fake_handler {
    struct mqfork_handler h;
    struct mqfork_counter counter[MAX_COUNTERS];
    char *names[MAX_COUNTERS + 1];
    bool add_null;
};

struct fake_plugin {
    uint8_t flags;
    uint32_t abi;
    unsigned nhandlers, opened, closed;
    struct fake_handler handler[MAX_HANDLERS];
};

static struct fake_plugin plugin[MAX_PLUGINS];
static unsigned nplugins;
static struct fake_plugin *opening; /* the one dlopen returned last */
static const char *dl_error;

/* ---- the wrapped dynamic loader --------------------------------------------- */

void *__real_dlopen(const char *path, int flags);
void *__real_dlsym(void *handle, const char *symbol);
int __real_dlclose(void *handle);
char *__real_dlerror(void);
void *__wrap_dlopen(const char *path, int flags);
void *__wrap_dlsym(void *handle, const char *symbol);
int __wrap_dlclose(void *handle);
char *__wrap_dlerror(void);

static struct fake_plugin *fake(void *handle)
{
    struct fake_plugin *p = handle;
    return p >= plugin && p < plugin + MAX_PLUGINS ? p : NULL;
}

void *__wrap_dlopen(const char *path, int flags)
{
    unsigned i;
    if (sscanf(path, "/fuzz/%u", &i) != 1)
        return __real_dlopen(path, flags);
    FUZZ_CHECK(i < nplugins);
    if (plugin[i].flags & 1) {
        dl_error = "fuzz: cannot open";
        return NULL;
    }
    plugin[i].opened++;
    return opening = &plugin[i];
}

static int fake_register(struct mqfork_registry *r);

void *__wrap_dlsym(void *handle, const char *symbol)
{
    struct fake_plugin *p = fake(handle);
    if (!p)
        return __real_dlsym(handle, symbol);
    if (!strcmp(symbol, MQFORK_PLUGIN_ABI_SYMBOL) && !(p->flags & 2))
        return &p->abi;
    if (!strcmp(symbol, MQFORK_PLUGIN_REGISTER_SYMBOL) && !(p->flags & 4))
        return (void *)fake_register;
    dl_error = "fuzz: no such symbol";
    return NULL;
}

int __wrap_dlclose(void *handle)
{
    struct fake_plugin *p = fake(handle);
    if (!p)
        return __real_dlclose(handle);
    p->closed++;
    return 0;
}

char *__wrap_dlerror(void)
{
    const char *e = dl_error;
    dl_error = NULL;
    return e ? (char *)e : __real_dlerror();
}

/* ---- the fake plugins ------------------------------------------------------ */

static enum mqfork_status fake_run(void *ctx, struct mqfork_job *job)
{
    return MQFORK_OK;
}

static const struct mqfork_param stray = {.key = "stray", .value = "x"};

/* Complains about nothing in particular, about every param, and about a
 * param that is not one of those it was given. */
static void fake_check(const struct mqfork_params *p, struct mqfork_check *c)
{
    c->problem(c, NULL, "fuzz: no good");
    for (size_t i = 0; i < p->count; i++)
        c->problem(c, &p->items[i], "%s: fuzz: bad value '%s'", p->items[i].key, p->items[i].value);
    c->problem(c, &stray, "stray: not one of the params");
}

static int fake_register(struct mqfork_registry *r)
{
    struct fake_plugin *p = opening;
    FUZZ_CHECK(p && r->abi == MQFORK_HANDLER_ABI);
    for (unsigned i = 0; i < p->nhandlers; i++)
        r->add(r, p->handler[i].add_null ? NULL : &p->handler[i].h);
    return p->flags & 8 ? -1 : 0;
}

static void read_handler(struct fuzz_in *in, struct fake_handler *f)
{
    uint8_t flags = fuzz_byte(in);
    memset(f, 0, sizeof(*f));
    f->add_null = flags & 1;
    f->names[0] = fuzz_str(in);
    f->h = (struct mqfork_handler){
        .abi = flags & 2 ? MQFORK_HANDLER_ABI + 1 : MQFORK_HANDLER_ABI,
        .name = flags & 32 ? NULL : f->names[0],
        .run = flags & 4 ? NULL : fake_run,
        .check = flags & 16 ? fake_check : NULL,
        .ncounters = fuzz_byte(in) % (MAX_COUNTERS + 1),
        .counters = flags & 8 ? NULL : f->counter,
    };
    for (unsigned i = 0; i < f->h.ncounters; i++)
        f->counter[i].name = f->names[i + 1] = fuzz_str(in);
}

static void read_plugin(struct fuzz_in *in, struct fake_plugin *p)
{
    memset(p, 0, sizeof(*p));
    p->flags = fuzz_byte(in);
    uint32_t abi = (uint32_t)fuzz_u16(in) << 16;
    abi |= fuzz_u16(in);
    p->abi = p->flags & 16 ? abi : MQFORK_HANDLER_ABI;
    p->nhandlers = fuzz_byte(in) % (MAX_HANDLERS + 1);
    for (unsigned i = 0; i < p->nhandlers; i++)
        read_handler(in, &p->handler[i]);
}

static void free_plugin(struct fake_plugin *p)
{
    for (unsigned i = 0; i < p->nhandlers; i++)
        for (unsigned k = 0; k <= MAX_COUNTERS; k++)
            free(p->handler[i].names[k]);
}

/* ---- the checks ----------------------------------------------------------- */

static bool name_ok(const char *name, const char *chars)
{
    size_t n = strlen(name);
    return n >= 1 && n <= 47 && strspn(name, chars) == n;
}

/* Which fake plugin H belongs to, or NULL for a built-in. */
static struct fake_plugin *owner(const struct mqfork_handler *h)
{
    for (unsigned i = 0; i < nplugins; i++)
        for (unsigned k = 0; k < plugin[i].nhandlers; k++)
            if (h == &plugin[i].handler[k].h)
                return &plugin[i];
    return NULL;
}

static void check_handler(const struct registry *r, size_t i)
{
    const struct mqfork_handler *h = r->handler[i];
    FUZZ_CHECK(h && h->abi == MQFORK_HANDLER_ABI && h->run);
    FUZZ_CHECK(name_ok(h->name, "abcdefghijklmnopqrstuvwxyz0123456789._-"));
    FUZZ_CHECK(!h->ncounters || h->counters);
    for (unsigned k = 0; k < h->ncounters; k++)
        FUZZ_CHECK(name_ok(h->counters[k].name, "abcdefghijklmnopqrstuvwxyz0123456789_-"));
    for (size_t k = 0; k < i; k++)
        FUZZ_CHECK(strcmp(r->handler[k]->name, h->name) != 0);
    struct fake_plugin *p = owner(h);
    FUZZ_CHECK(!p || (p->opened == 1 && p->closed == 0)); /* only from a kept plugin */
}

static void check_registry(const struct registry *r, const struct conf_diags *d)
{
    unsigned failed = 0;
    FUZZ_CHECK(r->count <= REGISTRY_MAX_HANDLERS && r->nplugins <= REGISTRY_MAX_PLUGINS);
    for (size_t i = 0; i < r->count; i++)
        check_handler(r, i);
    for (unsigned i = 0; i < nplugins; i++) {
        FUZZ_CHECK(plugin[i].opened <= 1 && plugin[i].closed <= plugin[i].opened);
        failed += plugin[i].opened == 0 || plugin[i].closed == 1;
    }
    FUZZ_CHECK(d->count == failed);
}

/* ---- the input -------------------------------------------------------------- */

struct routes_in {
    struct conf_route route[MAX_ROUTES];
    struct conf_param param[MAX_ROUTES];
    char *text[MAX_ROUTES * 3];
    size_t ntext;
};

static char *keep(struct routes_in *ri, char *s)
{
    return ri->text[ri->ntext++] = s;
}

static size_t read_routes(struct fuzz_in *in, struct routes_in *ri)
{
    size_t n = 0;
    for (; n < MAX_ROUTES && in->n > 0; n++) {
        struct conf_route *r = &ri->route[n];
        *r = (struct conf_route){.name = "r", .job = keep(ri, fuzz_str(in)), .line = 1};
        ri->param[n] = (struct conf_param){.key = keep(ri, fuzz_str(in)), .line = 2};
        ri->param[n].value = keep(ri, fuzz_str(in));
        if (ri->param[n].key[0])
            r->params = (struct conf_params){.items = &ri->param[n], .count = 1};
    }
    return n;
}

static void load(struct conf *c)
{
    struct registry r;
    struct conf_diags d = {0};
    FUZZ_CHECK(registry_init(&r) == 0);
    registry_load_plugins(&r, c, &d);
    check_registry(&r, &d);
    size_t before = d.count;
    if (registry_check_routes(&r, c, &d) == 0)
        FUZZ_CHECK(d.count == before);
    conf_diags_free(&d);
    registry_free(&r);
    for (unsigned i = 0; i < nplugins; i++)
        FUZZ_CHECK(plugin[i].closed == plugin[i].opened);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = {data, size};
    struct conf_plugin paths[MAX_PLUGINS];
    char names[MAX_PLUGINS][16];
    nplugins = fuzz_byte(&in) % (MAX_PLUGINS + 1);
    for (unsigned i = 0; i < nplugins; i++) {
        read_plugin(&in, &plugin[i]);
        snprintf(names[i], sizeof(names[i]), "%u", i);
        paths[i] = (struct conf_plugin){.path = names[i], .line = (int)i + 1, .column = 1};
    }
    struct routes_in ri = {0};
    struct conf c = {.path = "/fuzz/mqfork.yaml", .plugins = paths, .nplugins = nplugins};
    c.nroutes = read_routes(&in, &ri);
    c.routes = ri.route;
    load(&c);
    for (size_t i = 0; i < ri.ntext; i++)
        free(ri.text[i]);
    for (unsigned i = 0; i < nplugins; i++)
        free_plugin(&plugin[i]);
    return 0;
}
