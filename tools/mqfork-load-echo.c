/* mqfork-load-echo.c - the echo server (--echo-server), "the limit": a bare
 * client that answers each request from its message callback, copying the
 * correlation data, which benchmarks compare mqforkd with. */
#include <inttypes.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/mqfork-load.h"
#include "tools/sigfd.h"

/* Where to answer a request that names no response topic: its topic with the
 * last level in replaced by out (dev/7/in -> dev/7/out). */
static bool derive_reply_topic(const char *topic, char *out, size_t size)
{
    size_t len = strlen(topic);
    if (len < 3 || strcmp(topic + len - 3, "/in") != 0 || len + 2 > size)
        return false;
    memcpy(out, topic, len - 2);
    memcpy(out + len - 2, "out", 4);
    return true;
}

/* The limit: answer inside the message callback, nothing in between. */
static void on_request(struct mosquitto *m, void *obj, const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
    struct conn *c = obj;
    struct echo *e = c->app;
    char *rt = NULL, derived[TOPIC_MAX];
    void *corr = NULL;
    uint16_t corr_len = 0;
    mosquitto_property *out = NULL;

    mosquitto_property_read_string(props, MQTT_PROP_RESPONSE_TOPIC, &rt, false);
    if (!rt && !derive_reply_topic(msg->topic, derived, sizeof(derived))) {
        if (!e->skipped++)
            load_warn("no response topic and %s does not end in /in: not answered", msg->topic);
        return;
    }
    if (mosquitto_property_read_binary(props, MQTT_PROP_CORRELATION_DATA, &corr, &corr_len, false))
        mosquitto_property_add_binary(&out, MQTT_PROP_CORRELATION_DATA, corr, corr_len);
    if (mosquitto_publish_v5(m, NULL, rt ? rt : derived, msg->payloadlen, msg->payload, e->o->qos,
                             false, out) == MOSQ_ERR_SUCCESS)
        e->answered++;
    mosquitto_property_free_all(&out);
    free(corr);
    free(rt);
}

int main_echo(const struct opts *o)
{
    struct conn c = {.o = o, .sigfd = signals_fd()};
    struct echo e = {.o = o};
    const char *filters[1] = {o->topic};
    int status = 0;

    c.app = &e;
    if (!conn_setup(&c, o))
        return EXIT_CONN;
    mosquitto_message_v5_callback_set(c.m, on_request);
    if (!conn_open(&c, filters, 1)) {
        status = EXIT_CONN;
    } else {
        /* Tests and scripts start sending on this line: we are subscribed. */
        puts("ready");
        fflush(stdout);
        while (!c.stop && conn_step(&c, 0)) {
        }
        if (!c.stop) {
            load_warn("echo server: connection to the broker lost");
            status = EXIT_CONN;
        }
        fprintf(stderr, "mqfork-load: echo server answered %" PRIu64 " requests\n", e.answered);
        mosquitto_disconnect(c.m);
    }
    mosquitto_destroy(c.m);
    return status;
}
