/* example.c - a handler plugin built outside the tree, as a user builds one:
 *
 *   cc -shared -fPIC -o example.so example.c $(pkg-config --cflags mqfork-handler)
 *
 * example.upper answers its input in upper case. Its params exercise every
 * step of a handler's life for test_plugin.sh:
 *   prefix       text put before the answer (default none)
 *   preload_mb   MiB the supervisor allocates and fills in preload, shared
 *                copy-on-write by the workers (0..1024, default 0)
 *   crash_init   true: the worker crashes in init (default false)
 * and it counts the bytes it answered in its counter `bytes`.
 * Built with -DEXAMPLE_ABI=N it claims another ABI, to be refused. */
#include <ctype.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <mqfork/handler.h>

#ifdef EXAMPLE_ABI
#undef MQFORK_HANDLER_ABI
#define MQFORK_HANDLER_ABI EXAMPLE_ABI
#endif

struct preload {
    size_t len;
    uint8_t *data;
};

struct upper {
    const char *prefix;
    size_t prefix_len;
    uint64_t *counters;
};

static const char *const known[] = {"prefix", "preload_mb", "crash_init", NULL};

static void upper_check(const struct mqfork_params *p, struct mqfork_check *c)
{
    long mb = 0;
    mqfork_params_known(p, known, "example.upper", c);
    mqfork_param_long(p, "preload_mb", 0, 1024, &mb, c);
    const struct mqfork_param *crash = mqfork_param_find(p, "crash_init");
    if (crash && strcmp(crash->value, "true") && strcmp(crash->value, "false"))
        c->problem(c, crash, "crash_init: expected true or false, got '%s'", crash->value);
}

static void upper_bound(const struct mqfork_params *p, struct mqfork_out_bound *b)
{
    const struct mqfork_param *prefix = mqfork_param_find(p, "prefix");
    *b = (struct mqfork_out_bound){
        .fixed = prefix ? (uint32_t)strlen(prefix->value) : 0,
        .per_in_q16 = 65536,
    };
}

static void *upper_preload(const struct mqfork_params *p)
{
    long mb = 0;
    mqfork_param_long(p, "preload_mb", 0, 1024, &mb, NULL);
    struct preload *pl = calloc(1, sizeof(*pl));
    if (!pl)
        return NULL;
    pl->len = (size_t)mb << 20;
    if (pl->len && !(pl->data = malloc(pl->len))) {
        free(pl);
        return NULL;
    }
    for (size_t i = 0; i < pl->len; i++)
        pl->data[i] = (uint8_t)(i * 131 + 7); /* touched: really resident */
    return pl;
}

static void upper_unload(void *preloaded)
{
    struct preload *pl = preloaded;
    free(pl->data);
    free(pl);
}

static void *upper_init(const struct mqfork_init *in)
{
    const struct mqfork_param *crash = mqfork_param_find(in->params, "crash_init");
    if (crash && strcmp(crash->value, "true") == 0)
        raise(SIGSEGV);
    struct upper *u = calloc(1, sizeof(*u));
    if (!u)
        return NULL;
    const struct mqfork_param *prefix = mqfork_param_find(in->params, "prefix");
    u->prefix = prefix ? prefix->value : "";
    u->prefix_len = strlen(u->prefix);
    u->counters = in->counters;
    return u;
}

static void upper_fini(void *ctx)
{
    free(ctx);
}

static enum mqfork_status upper_run(void *ctx, struct mqfork_job *job)
{
    struct upper *u = ctx;
    memcpy(job->out, u->prefix, u->prefix_len);
    for (size_t i = 0; i < job->in_len; i++)
        job->out[u->prefix_len + i] = (uint8_t)toupper(job->in[i]);
    job->out_len = u->prefix_len + job->in_len;
    mqfork_count(u->counters, 0, job->out_len);
    return MQFORK_OK;
}

static const struct mqfork_counter counters[] = {
    {.name = "bytes", .help = "Bytes answered in upper case."},
};

static const struct mqfork_handler upper = {
    .abi = MQFORK_HANDLER_ABI,
    .name = "example.upper",
    .check = upper_check,
    .out_bound = upper_bound,
    .preload = upper_preload,
    .unload = upper_unload,
    .init = upper_init,
    .fini = upper_fini,
    .run = upper_run,
    .counters = counters,
    .ncounters = 1,
};

static int register_example(struct mqfork_registry *r)
{
    return r->add(r, &upper);
}

#ifdef EXAMPLE_ABI
/* MQFORK_PLUGIN exports the header's ABI; this one claims EXAMPLE_ABI. */
__attribute__((visibility("default"))) const uint32_t mqfork_plugin_abi = EXAMPLE_ABI;
__attribute__((visibility("default"))) int mqfork_plugin_register(struct mqfork_registry *r);
int mqfork_plugin_register(struct mqfork_registry *r)
{
    return register_example(r);
}
#else
MQFORK_PLUGIN(register_example)
#endif
