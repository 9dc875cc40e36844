/* restart_keys.c - the settings a reload (SIGHUP) leaves as they are: the
 * broker connection is made once (its client id, session and TLS context
 * with it), the user was dropped to at start, plugins are loaded before
 * the first fork. Each one a reload would change is logged by its name,
 * so the operator knows a restart is due, and the running value stays in
 * the configuration the daemon goes on with: what the MQTT client reads
 * (a reconnect, its log lines) and what the next reload compares with
 * are what runs. The engine's own (the segment's sizes) are logged by
 * supervisor/reload.c. */
#include "supervisor/restart_keys.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/log.h"

enum key_type { T_STR, T_SECRET, T_INT, T_U32, T_NUM, T_BOOL };

struct restart_key {
    const char *name;
    enum key_type type;
    size_t offset; /* in struct conf */
};

#define KEY(name, type, member)                                                                    \
    {                                                                                              \
        name, type, offsetof(struct conf, member)                                                  \
    }

static const struct restart_key keys[] = {
    KEY("broker.host", T_STR, broker.host),
    KEY("broker.port", T_INT, broker.port),
    KEY("broker.protocol", T_STR, broker.protocol),
    KEY("broker.client_id", T_STR, broker.client_id),
    KEY("broker.username", T_STR, broker.username),
    KEY("broker.password", T_SECRET, broker.password),
    KEY("broker.keepalive_s", T_U32, broker.keepalive_s),
    KEY("broker.clean_session", T_BOOL, broker.clean_session),
    KEY("broker.session_expiry_s", T_U32, broker.session_expiry_s),
    KEY("broker.reconnect_min_s", T_NUM, broker.reconnect_min_s),
    KEY("broker.reconnect_max_s", T_NUM, broker.reconnect_max_s),
    KEY("broker.status_topic", T_STR, broker.status_topic),
    KEY("broker.max_outbound", T_U32, broker.max_outbound),
    KEY("broker.tls", T_BOOL, broker.tls_enabled),
    KEY("broker.tls.ca_file", T_STR, broker.tls.ca_file),
    KEY("broker.tls.cert_file", T_STR, broker.tls.cert_file),
    KEY("broker.tls.key_file", T_STR, broker.tls.key_file),
    KEY("broker.tls.verify", T_BOOL, broker.tls.verify),
    KEY("user", T_STR, user),
};

/* The value of K in C as the log shows it, in BUF; "(unset)" for a
 * string left out. */
static const char *show(const struct restart_key *k, const struct conf *c, char *buf, size_t len)
{
    const char *p = (const char *)c + k->offset;
    const char *s;
    switch (k->type) {
    case T_STR:
    case T_SECRET:
        memcpy(&s, p, sizeof(s));
        snprintf(buf, len, "%s", s ? s : "(unset)");
        break;
    case T_INT:
        snprintf(buf, len, "%d", *(const int *)(const void *)p);
        break;
    case T_U32:
        snprintf(buf, len, "%u", *(const uint32_t *)(const void *)p);
        break;
    case T_NUM:
        snprintf(buf, len, "%g", *(const double *)(const void *)p);
        break;
    case T_BOOL:
        snprintf(buf, len, "%s", *(const bool *)(const void *)p ? "true" : "false");
        break;
    }
    return buf;
}

static bool same_plugins(const struct conf *a, const struct conf *b)
{
    if (a->nplugins != b->nplugins)
        return false;
    for (size_t i = 0; i < a->nplugins; i++)
        if (strcmp(a->plugins[i].path, b->plugins[i].path) != 0)
            return false;
    return true;
}

unsigned restart_keys_keep(struct conf *running, struct conf *want)
{
    unsigned n = 0;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        const struct restart_key *k = &keys[i];
        char was[256], now[256];
        show(k, running, was, sizeof(was));
        if (!strcmp(was, show(k, want, now, sizeof(now))))
            continue;
        n++;
        if (k->type == T_SECRET)
            log_warn("SIGHUP: %s changed: needs a restart; keeping the old one", k->name);
        else
            log_warn("SIGHUP: %s %s needs a restart; keeping %s", k->name, now, was);
    }
    if (!same_plugins(running, want)) {
        n++;
        log_warn("SIGHUP: plugins: changes need a restart; keeping the plugins loaded");
    }
    /* Swapped, not copied: each configuration still owns its strings. */
    struct conf_broker b = running->broker;
    running->broker = want->broker;
    want->broker = b;
    char *user = running->user;
    running->user = want->user;
    want->user = user;
    struct conf_plugin *plugins = running->plugins;
    size_t nplugins = running->nplugins;
    running->plugins = want->plugins;
    running->nplugins = want->nplugins;
    want->plugins = plugins;
    want->nplugins = nplugins;
    return n;
}
