/* source.h - a source: one way jobs come in and results go out. The MQTT
 * routes are one, the voice gateway another. Each owns its configuration
 * section, its counters, its reload step and the way it reports errors; the
 * engine knows none of them, and the daemon (main.c) drives every source
 * through the same steps, in the order of its table:
 *
 *   create (before engine_start: register job kinds)
 *   -> attach (after it: counter blocks, subscriptions, sockets)
 *   -> reload on SIGHUP -> drain on SIGTERM -> free
 *
 * README's "Adding a source" walks through writing one. */
#ifndef MQFORK_SUPERVISOR_SOURCE_H
#define MQFORK_SUPERVISOR_SOURCE_H

#include <stdbool.h>
#include <stddef.h>

struct conf;
struct engine;
struct loop;
struct mqtt;

struct source_ops {
    const char *name; /* for the log */
    /* Whether configuration C asks for this source at all. */
    bool (*wanted)(const struct conf *c);
    /* Register the source's job kinds with E (engine_add_kind) and set up
     * what needs no broker. C outlives the source until a reload hands it a
     * new one. NULL on failure (logged). */
    void *(*create)(const struct conf *c, struct engine *e, struct loop *l);
    /* After engine_start, with the broker client made: add counter blocks,
     * subscribe, open sockets. 0, or -1 (logged). */
    int (*attach)(void *self, struct mqtt *m);
    /* Follow reloaded configuration C, which the engine has taken already.
     * 0, or -1 (logged) with the source as it was. */
    int (*reload)(void *self, const struct conf *c);
    /* Shutdown begins: take no new work, close what the protocol closes
     * politely. Optional. */
    void (*drain)(void *self);
    /* Work the source still owes beyond the engine's jobs (audio still to
     * play, say): the drain waits for it too. Optional: none. */
    size_t (*outstanding)(void *self);
    void (*free)(void *self);
};

/* The sources mqforkd knows, in the order it starts them. alerts takes
 * no jobs: it follows the same life cycle to publish its alerts. */
extern const struct source_ops routes_source;
extern const struct source_ops voice_source;
extern const struct source_ops alerts_source;

#endif
