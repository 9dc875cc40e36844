/* reload_conf.h - SIGHUP's loading of the configuration, off the loop.
 *
 * Loading a file (parse, validate, the handlers' params checks) runs in a
 * thread of its own while the loop goes on answering jobs; the result comes
 * back through an eventfd the loop watches and is handed to the owner's
 * function on the loop, which applies it. One load at a time: a SIGHUP
 * during a load is remembered, and one more load follows it (however many
 * came). A load that fails is logged here, every problem with its
 * file:line:column, and changes nothing.
 *
 * The thread reads only the file's path (its own copy) and the registry,
 * which nothing changes while the daemon runs (plugins are loaded at start
 * only); the loader and the checks keep their state in their arguments. */
#ifndef MQFORK_SUPERVISOR_RELOAD_CONF_H
#define MQFORK_SUPERVISOR_RELOAD_CONF_H

#include <stdbool.h>

#include "conf/config.h"
#include "supervisor/loop.h"
#include "worker/registry.h"

struct reload_conf;

/* On the loop, when a load is over: C is the configuration it loaded, to be
 * taken over by the callee (moved out or conf_free'd), or NULL when the file
 * had problems (logged). AGAIN: a SIGHUP came during the load, so another
 * one starts once this returns true. */
typedef bool (*reload_conf_fn)(void *ctx, struct conf *c, bool again);

/* Loads of PATH checked against R (which must outlive it), reported to DONE.
 * NULL when the eventfd or its watch cannot be made (logged). */
struct reload_conf *reload_conf_new(struct loop *l, struct registry *r, const char *path,
                                    reload_conf_fn done, void *ctx);

/* A SIGHUP: start a load, or remember one when a load is under way. 1 when
 * one started, 0 when remembered, -1 when no thread could start (logged). */
int reload_conf_request(struct reload_conf *rc);

/* Wait for a load under way, drop its result, and free. NULL is fine. */
void reload_conf_free(struct reload_conf *rc);

#endif
