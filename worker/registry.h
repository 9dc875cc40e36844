/* registry.h - the handlers a daemon knows: the built-in ones and those the
 * plugins named by `plugins:` register, loaded into the supervisor before it
 * forks so every worker has them at the same addresses. The registry also
 * checks every route's handler and params, in one place, for `mqforkd -t`,
 * start and reload; and keeps the owned copies of params that kinds hold.
 *
 * One registry per daemon (or test), owned by its caller; nothing global. */
#ifndef MQFORK_WORKER_REGISTRY_H
#define MQFORK_WORKER_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>

#include "conf/config.h"
#include "mqfork/handler.h"

#define REGISTRY_MAX_HANDLERS 64
#define REGISTRY_MAX_PLUGINS  16

struct registry {
    const struct mqfork_handler *handler[REGISTRY_MAX_HANDLERS];
    size_t count;
    void *plugin[REGISTRY_MAX_PLUGINS]; /* dlopen handles */
    size_t nplugins;
    char why[256]; /* why the last registration was refused */
};

/* An empty registry with the built-in handlers. 0, or -1 (logged). */
int registry_init(struct registry *r);

/* Load every plugin C names; each problem goes to *D with the entry's
 * position. 0 when all loaded. */
int registry_load_plugins(struct registry *r, const struct conf *c, struct conf_diags *d);

const struct mqfork_handler *registry_find(const struct registry *r, const char *name);

/* Check every route's `job:` and `params:`; each problem goes to *D with
 * its file:line:column. 0 when all are good. */
int registry_check_routes(const struct registry *r, const struct conf *c, struct conf_diags *d);

/* conf_load PATH into *C, then (WITH_PLUGINS: at start; a reload keeps the
 * plugins it has) load the plugins it names into R, then check its routes
 * against R: what `mqforkd -t` checks. Every problem goes to *D. 0, or -1
 * with *C freed. */
int registry_load_config(struct registry *r, const char *path, struct conf *c, bool with_plugins,
                         struct conf_diags *d);

/* Check PARAMS for handler H outside a file (the C API): the first problem
 * into ERR. 0 when good. */
int registry_check_params(const struct mqfork_handler *h, const struct conf_params *params,
                          char *err, size_t errlen);

/* Unload the plugins. Their handlers must no longer be in use. */
void registry_free(struct registry *r);

/* Params as handlers see them: an owned copy of a route's params. */
int params_copy(struct mqfork_params *dst, const struct conf_params *src);
void params_free(struct mqfork_params *p);
bool params_equal(const struct mqfork_params *a, const struct conf_params *b);

#endif
