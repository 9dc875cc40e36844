/* fuzz_config.c - libFuzzer harness for the configuration loader: the input
 * is a configuration file, loaded and checked as `mqforkd -t` does it
 * (conf/config*.c, then every route's handler and params through the
 * registry; plugins are not loaded). It must end in either a valid
 * configuration (with warnings at most) or errors, never both; a valid one
 * must keep the documented ranges and publish and subscribe only to topics
 * a broker takes, and every route's filter must match a topic made from it,
 * with its reply and stream templates expanding from that match. */
#include <sys/mman.h>
#include <unistd.h>

#include "conf/config.h"
#include "fuzz.h"
#include "proto/topic.h"
#include "worker/registry.h"

static struct registry registry;
static int fd = -1;
static char path[64];
static FILE *devnull;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    FUZZ_CHECK(registry_init(&registry) == 0);
    fd = memfd_create("fuzz.yaml", 0);
    FUZZ_CHECK(fd >= 0);
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    devnull = fopen("/dev/null", "w");
    FUZZ_CHECK(devnull != NULL);
    return 0;
}

/* A topic FILTER matches: '+' levels become "x", a '#' level "y/z". */
static char *topic_for(const char *filter)
{
    const char *base = topic_filter_base(filter);
    size_t n = 0;
    char *t = fuzz_xmalloc(strlen(base) * 3 + 1);
    for (const char *p = base; *p; p++) {
        bool whole = (p == base || p[-1] == '/') && (p[1] == '/' || p[1] == '\0');
        if (whole && *p == '+')
            t[n++] = 'x';
        else if (whole && *p == '#')
            n += (size_t)sprintf(t + n, "y/z");
        else
            t[n++] = *p;
    }
    t[n] = '\0';
    return t;
}

static void check_template(const char *tmpl, const struct topic_levels *lv)
{
    if (!tmpl)
        return;
    size_t cap = strlen(tmpl) * 4 + 1;
    char *out = fuzz_xmalloc(cap);
    FUZZ_CHECK(topic_expand(tmpl, lv, out, cap) >= 0);
    free(out);
}

static void check_route(const struct conf_route *r)
{
    FUZZ_CHECK(r->name && r->subscribe.count >= 1 && r->job);
    FUZZ_CHECK(r->qos >= 0 && r->qos <= 2);
    FUZZ_CHECK(r->priority < PRIO_COUNT);
    FUZZ_CHECK(r->timeout_ms >= 1 && r->timeout_ms <= 3600000);
    FUZZ_CHECK(r->deadline_ms <= 3600000 && r->retries <= 100);
    FUZZ_CHECK(r->subscribe.count <= CONF_ROUTE_FILTERS_MAX);
    FUZZ_CHECK(!r->correlate.enabled || r->correlate.parts.count == r->subscribe.count);
    for (size_t i = 0; i < r->subscribe.count; i++) {
        const char *filter = r->subscribe.items[i];
        FUZZ_CHECK(!topic_filter_problem(filter, strlen(filter)));
        char *topic = topic_for(filter);
        struct topic_levels lv;
        FUZZ_CHECK(topic_match(filter, topic, &lv));
        check_template(r->reply, &lv);
        check_template(r->stream, &lv);
        check_template(r->correlate.enabled ? r->correlate.key : NULL, &lv);
        free(topic);
    }
}

static void check_valid(const struct conf *c)
{
    FUZZ_CHECK(c->instance && c->errors_topic && c->broker.host);
    FUZZ_CHECK(!topic_publish_problem(c->errors_topic, strlen(c->errors_topic)));
    FUZZ_CHECK(c->workers.min >= 1 && c->workers.min <= c->workers.max);
    FUZZ_CHECK(c->workers.max <= 1024);
    FUZZ_CHECK(c->broker.port >= 1 && c->broker.port <= 65535);
    FUZZ_CHECK(c->broker.reconnect_min_s <= c->broker.reconnect_max_s);
    FUZZ_CHECK(c->limits.max_payload >= 1 && c->limits.max_payload <= 16777216);
    FUZZ_CHECK((uint64_t)c->limits.max_payload <= (uint64_t)c->limits.slab_mb << 20);
    for (size_t i = 0; i < c->nroutes; i++)
        check_route(&c->routes[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FUZZ_CHECK(ftruncate(fd, 0) == 0);
    FUZZ_CHECK(pwrite(fd, data, size, 0) == (ssize_t)size);
    struct conf c;
    struct conf_diags d = {0};
    int rc = registry_load_config(&registry, path, &c, false, &d);
    /* Past CONF_DIAGS_MAX, errors are only counted. */
    FUZZ_CHECK(d.count <= CONF_DIAGS_MAX);
    FUZZ_CHECK((rc == 0) == (d.count == conf_diags_warnings(&d) && d.omitted_errors == 0));
    for (size_t i = 0; i < d.count; i++)
        FUZZ_CHECK(d.items[i].message && d.items[i].line >= 0 && d.items[i].column >= 0);
    conf_diags_print(&d, devnull);
    if (rc == 0) {
        check_valid(&c);
        conf_free(&c);
    }
    conf_diags_free(&d);
    return 0;
}
