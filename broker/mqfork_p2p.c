/* mqfork_p2p.c - a mosquitto 2.0 plugin (v5 API) that delivers every message
 * published on <prefix><client id> (default devices/p2p/<id>) to the client
 * with that id, whatever it subscribed: xiaozhi devices subscribe to nothing.
 *
 * What mosquitto 2.0.11's source guarantees (src/handle_publish.c, loop.c):
 * - MOSQ_EVT_MESSAGE runs only for a PUBLISH read from a client, after the
 *   write ACL allowed it, so a refused publish never reaches this plugin;
 * - mosquitto_broker_publish_copy only appends to a list; the main loop
 *   hands each entry straight to that client's outgoing queue (no ACL, no
 *   subscription matching, retain forced off, dropped when no such client),
 *   so the copy never enters MOSQ_EVT_MESSAGE again and cannot loop;
 * - the original publish goes on as usual: the publisher gets its normal
 *   acknowledgement and any subscriber of the topic (a monitor) gets it. The
 *   plugin only clears its retain flag: a reply is for the device now, never
 *   for a later subscriber. */
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define P2P_DEFAULT_PREFIX "devices/p2p/"
#define P2P_PREFIX_MAX     256 /* bytes of the prefix, with its final '/' */
#define P2P_ID_MAX         256 /* longest client id delivered to, in bytes */

/* Debian's broker exports it, mosquitto's own linker.syms does not: the
 * publisher's v5 properties (content type, correlation data, user
 * properties...) are forwarded when the broker has it, and dropped when not. */
#pragma weak mosquitto_property_copy_all

struct p2p {
    mosquitto_plugin_id_t *id;
    size_t prefix_len;
    char prefix[P2P_PREFIX_MAX];
};

/* A usable prefix: topic levels ending in '/', no wildcards (what
 * mosquitto_pub_topic_check refuses). */
static bool prefix_ok(const char *prefix)
{
    size_t len = strnlen(prefix, P2P_PREFIX_MAX);
    return len > 1 && len < P2P_PREFIX_MAX && prefix[len - 1] == '/' &&
           mosquitto_pub_topic_check(prefix) == MOSQ_ERR_SUCCESS;
}

static int read_options(struct p2p *p, const struct mosquitto_opt *opts, int count)
{
    const char *prefix = P2P_DEFAULT_PREFIX;

    for (int i = 0; i < count; i++) {
        if (strcmp(opts[i].key, "prefix") != 0) {
            mosquitto_log_printf(MOSQ_LOG_ERR,
                                 "mqfork_p2p: unknown option plugin_opt_%s (known: prefix)",
                                 opts[i].key);
            return MOSQ_ERR_INVAL;
        }
        prefix = opts[i].value;
    }
    if (!prefix_ok(prefix)) {
        mosquitto_log_printf(MOSQ_LOG_ERR,
                             "mqfork_p2p: plugin_opt_prefix '%s' must be topic levels ending "
                             "in '/', without + or #, shorter than %d bytes",
                             prefix, P2P_PREFIX_MAX);
        return MOSQ_ERR_INVAL;
    }
    p->prefix_len = strlen(prefix);
    memcpy(p->prefix, prefix, p->prefix_len + 1);
    return MOSQ_ERR_SUCCESS;
}

/* A client id as a topic level can carry it: not empty, no further level,
 * bounded (mosquitto accepts ids up to 65535 bytes; no device needs that). */
static bool id_ok(const char *id)
{
    size_t len = strnlen(id, P2P_ID_MAX + 1);
    return len > 0 && len <= P2P_ID_MAX && !memchr(id, '/', len);
}

static mosquitto_property *copy_properties(const mosquitto_property *props)
{
    mosquitto_property *copy = NULL;

    if (props && mosquitto_property_copy_all &&
        mosquitto_property_copy_all(&copy, props) != MOSQ_ERR_SUCCESS)
        mosquitto_property_free_all(&copy);
    return copy;
}

/* Queue a copy for the client named id, at the publisher's QoS, never
 * retained. The broker owns the properties once this succeeds. */
static void deliver(const struct mosquitto_evt_message *ev, const char *id)
{
    mosquitto_property *props = copy_properties(ev->properties);
    int rc = mosquitto_broker_publish_copy(id, ev->topic, (int)ev->payloadlen, ev->payload, ev->qos,
                                           false, props);
    if (rc != MOSQ_ERR_SUCCESS) {
        mosquitto_property_free_all(&props);
        mosquitto_log_printf(MOSQ_LOG_WARNING, "mqfork_p2p: '%s' not delivered: error %d",
                             ev->topic, rc);
    }
}

static int on_message(int event, void *event_data, void *userdata)
{
    struct mosquitto_evt_message *ev = event_data;
    const struct p2p *p = userdata;

    if (!ev->topic || strncmp(ev->topic, p->prefix, p->prefix_len) != 0)
        return MOSQ_ERR_SUCCESS;
    ev->retain = false;
    const char *id = ev->topic + p->prefix_len;
    if (id_ok(id))
        deliver(ev, id);
    else
        mosquitto_log_printf(MOSQ_LOG_WARNING,
                             "mqfork_p2p: '%.*s' names no client id (empty, nested or longer "
                             "than %d bytes); not delivered",
                             P2P_PREFIX_MAX + P2P_ID_MAX, ev->topic, P2P_ID_MAX);
    return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
    for (int i = 0; i < supported_version_count; i++)
        if (supported_versions[i] == 5)
            return 5;
    return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
                          struct mosquitto_opt *options, int option_count)
{
    struct p2p *p = calloc(1, sizeof(*p));
    int rc;

    if (!p)
        return MOSQ_ERR_NOMEM;
    p->id = identifier;
    rc = read_options(p, options, option_count);
    if (rc == MOSQ_ERR_SUCCESS)
        rc = mosquitto_callback_register(identifier, MOSQ_EVT_MESSAGE, on_message, NULL, p);
    if (rc != MOSQ_ERR_SUCCESS) {
        free(p);
        return rc;
    }
    *userdata = p;
    mosquitto_log_printf(MOSQ_LOG_INFO, "mqfork_p2p: delivering %s<client id> to that client",
                         p->prefix);
    return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
    struct p2p *p = userdata;

    if (p) {
        mosquitto_callback_unregister(p->id, MOSQ_EVT_MESSAGE, on_message, NULL);
        free(p);
    }
    return MOSQ_ERR_SUCCESS;
}
