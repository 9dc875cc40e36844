/* reload_conf.c - see reload_conf.h: a thread per load, joined on the loop
 * once its eventfd says it is over. */
#include "supervisor/reload_conf.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/log.h"
#include "shm/clock.h"

struct reload_conf {
    struct loop *loop;
    struct registry *registry; /* only read: plugins are not loaded on reload */
    char *path;
    reload_conf_fn done;
    void *ctx;
    int efd;
    struct loop_watch *watch;
    pthread_t thread;
    bool running; /* a thread is loading (or done and not joined yet) */
    bool again;   /* a SIGHUP came while it was */
    uint64_t started_ns;
    /* The thread's result: its own until it signals efd, then the loop's. */
    struct conf conf;
    struct conf_diags diags;
    int rc;
};

static void *load(void *arg)
{
    struct reload_conf *rc = arg;
    rc->diags = (struct conf_diags){0};
    rc->rc = registry_load_config(rc->registry, rc->path, &rc->conf, false, &rc->diags);
    uint64_t one = 1;
    ssize_t w = write(rc->efd, &one, sizeof(one));
    (void)w; /* an eventfd counter this small cannot overflow */
    return NULL;
}

/* Each diagnostic as a log line at its level, then how many more there were. */
static void log_problems(const struct conf_diags *d)
{
    for (size_t i = 0; i < d->count; i++) {
        const struct conf_diag *g = &d->items[i];
        enum log_level lvl = g->warning ? LOG_LVL_WARN : LOG_LVL_ERROR;
        if (g->line > 0)
            log_msg(lvl, "%s:%d:%d: %s", g->file, g->line, g->column, g->message);
        else
            log_msg(lvl, "%s: %s", g->file, g->message);
    }
    char *more = conf_diags_omitted_text(d);
    if (more)
        log_msg(d->omitted_errors ? LOG_LVL_ERROR : LOG_LVL_WARN, "%s", more);
    free(more);
}

static int start(struct reload_conf *rc)
{
    /* The thread takes no signal: they are the loop's, through its signalfd. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&rc->thread, NULL, load, rc);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        log_error("SIGHUP: cannot start loading %s: %s; keeping the current configuration",
                  rc->path, strerror(err));
        return -1;
    }
    rc->running = true;
    rc->started_ns = mono_ns();
    log_info("SIGHUP: loading %s", rc->path);
    return 1;
}

static void on_loaded(void *ctx, int events)
{
    struct reload_conf *rc = ctx;
    uint64_t n;
    if (events < 0 || read(rc->efd, &n, sizeof(n)) != (ssize_t)sizeof(n) || !rc->running)
        return;
    pthread_join(rc->thread, NULL);
    rc->running = false;
    log_problems(&rc->diags);
    if (rc->rc < 0)
        log_error("SIGHUP: %s has %zu problem%s; keeping the current configuration", rc->path,
                  conf_diags_total(&rc->diags), conf_diags_total(&rc->diags) == 1 ? "" : "s");
    else
        log_debug("SIGHUP: %s loaded in %.1f ms", rc->path,
                  (double)(mono_ns() - rc->started_ns) / 1e6);
    conf_diags_free(&rc->diags);
    bool again = rc->again;
    rc->again = false;
    /* A remembered SIGHUP whose load cannot start is over at once. */
    if (rc->done(rc->ctx, rc->rc < 0 ? NULL : &rc->conf, again) && again && start(rc) < 0)
        rc->done(rc->ctx, NULL, false);
}

struct reload_conf *reload_conf_new(struct loop *l, struct registry *r, const char *path,
                                    reload_conf_fn done, void *ctx)
{
    struct reload_conf *rc = calloc(1, sizeof(*rc));
    if (!rc || !(rc->path = strdup(path))) {
        free(rc);
        log_error("SIGHUP: out of memory");
        return NULL;
    }
    *rc = (struct reload_conf){
        .loop = l, .registry = r, .path = rc->path, .done = done, .ctx = ctx, .efd = -1};
    rc->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (rc->efd < 0 || !(rc->watch = loop_watch(l, rc->efd, POLLIN, true, on_loaded, rc))) {
        log_error("SIGHUP: eventfd: %s", strerror(errno));
        reload_conf_free(rc);
        return NULL;
    }
    return rc;
}

int reload_conf_request(struct reload_conf *rc)
{
    if (!rc->running)
        return start(rc);
    if (!rc->again)
        log_info("SIGHUP: %s is being loaded; loading it again after", rc->path);
    rc->again = true;
    return 0;
}

void reload_conf_free(struct reload_conf *rc)
{
    if (!rc)
        return;
    if (rc->running) {
        pthread_join(rc->thread, NULL);
        if (rc->rc == 0)
            conf_free(&rc->conf);
        conf_diags_free(&rc->diags);
    }
    if (rc->watch)
        loop_cancel(rc->loop, rc->watch);
    if (rc->efd >= 0)
        close(rc->efd);
    free(rc->path);
    free(rc);
}
