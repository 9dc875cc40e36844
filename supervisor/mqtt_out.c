/* mqtt_out.c - what the supervisor's MQTT client sends (see mqtt_impl.h):
 * published at once while connected, queued while the broker is away, and
 * both held to broker.max_outbound, past which results are dropped and
 * counted; QoS 1 messages are tracked until their PUBACK (mqtt.c hands
 * everything over before exit). */
#include <mqtt_protocol.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "proto/topic.h"
#include "supervisor/mqtt_impl.h"

/* A message held while the broker is away; topic, payload and correlation
 * data live in the same allocation. */
struct outbound {
    struct outbound *next;
    char *topic;
    void *payload;
    size_t len;
    void *corr;
    size_t corr_len;
    int qos;
    bool retain;
};

void mqtt_publish_now(struct mqtt *m, const char *topic, const void *payload, size_t len, int qos,
                      bool retain, const void *corr, size_t corr_len)
{
    mosquitto_property *props = NULL;
    if (m->v5 && corr && corr_len)
        mosquitto_property_add_binary(&props, MQTT_PROP_CORRELATION_DATA, corr, (uint16_t)corr_len);
    int mid = 0;
    /* Counted before the call: a QoS 0 message may be written, and
     * mqtt_on_publish called, inside it. */
    m->in_library++;
    int rc = mosquitto_publish_v5(m->mosq, &mid, topic, (int)len, payload, qos, retain, props);
    mosquitto_property_free_all(&props);
    if (rc != MOSQ_ERR_SUCCESS && m->in_library)
        m->in_library--;
    if (rc == MOSQ_ERR_SUCCESS) {
        m->n.msgs_out++;
        m->n.bytes_out += len;
        if (qos > 0 && !(m->awaiting_ack[(mid & 0xffff) / 8] & (1u << (mid % 8)))) {
            m->awaiting_ack[(mid & 0xffff) / 8] |= (uint8_t)(1u << (mid % 8));
            m->unacked++;
        }
    } else {
        m->n.dropped++;
        log_warn("mqtt: publish to %s failed: %s", topic, mosquitto_strerror(rc));
    }
    m->changed = true;
}

static void enqueue(struct mqtt *m, const char *topic, const void *payload, size_t len, int qos,
                    bool retain, const void *corr, size_t corr_len)
{
    if (m->qlen >= m->conf->broker.max_outbound) {
        if (m->n.dropped++ % 1000 == 0)
            log_warn("mqtt: broker away and %zu messages queued (broker.max_outbound): dropping",
                     m->qlen);
        m->changed = true;
        return;
    }
    size_t tlen = strlen(topic) + 1;
    struct outbound *o = malloc(sizeof(*o) + tlen + len + corr_len);
    if (!o) {
        m->n.dropped++;
        return;
    }
    o->next = NULL;
    o->topic = (char *)(o + 1);
    o->payload = o->topic + tlen;
    o->corr = (char *)o->payload + len;
    memcpy(o->topic, topic, tlen);
    if (len)
        memcpy(o->payload, payload, len);
    if (corr_len)
        memcpy(o->corr, corr, corr_len);
    o->len = len;
    o->corr_len = corr_len;
    o->qos = qos;
    o->retain = retain;
    if (m->q_tail)
        m->q_tail->next = o;
    else
        m->q_head = o;
    m->q_tail = o;
    m->qlen++;
    m->changed = true;
}

void mqtt_publish(struct mqtt *m, const char *topic, const void *payload, size_t len, int qos,
                  bool retain, const void *correlation, size_t correlation_len)
{
    /* The callers check their topics; this is the last line: one PUBLISH to
     * a topic the broker refuses costs the connection, and libmosquitto
     * would send it again after each reconnect. */
    const char *problem = topic_publish_problem(topic, strlen(topic));
    if (problem) {
        m->n.dropped++;
        m->changed = true;
        log_rated(&m->bad_topic_log, LOG_LVL_ERROR, "mqtt: not publishing to a topic that %s",
                  problem);
        return;
    }
    /* A broker that is connected but does not read lets libmosquitto's own
     * queue grow: it is held to the same bound as ours. */
    if (m->state == MQTT_CONNECTED && m->in_library >= m->conf->broker.max_outbound) {
        if (m->n.dropped++ % 1000 == 0)
            log_warn("mqtt: the broker is not taking messages (%zu waiting, "
                     "broker.max_outbound): dropping",
                     m->in_library);
        m->changed = true;
        return;
    }
    if (m->state == MQTT_CONNECTED && !m->q_head)
        mqtt_publish_now(m, topic, payload, len, qos, retain, correlation, correlation_len);
    else
        enqueue(m, topic, payload, len, qos, retain, correlation, correlation_len);
}

void mqtt_on_publish(struct mosquitto *mosq, void *ctx, int mid, int reason,
                     const mosquitto_property *props)
{
    struct mqtt *m = ctx;
    if (m->in_library)
        m->in_library--;
    m->changed = true; /* the queue gauge */
    /* Called for QoS 0 messages too, when written: only count our own. */
    uint8_t *byte = &m->awaiting_ack[(mid & 0xffff) / 8], bit = (uint8_t)(1u << (mid % 8));
    if (*byte & bit) {
        *byte &= (uint8_t)~bit;
        m->unacked--;
    }
}

void mqtt_flush_queue(struct mqtt *m)
{
    struct outbound *o;
    while (m->state == MQTT_CONNECTED && (o = m->q_head)) {
        m->q_head = o->next;
        if (!m->q_head)
            m->q_tail = NULL;
        m->qlen--;
        mqtt_publish_now(m, o->topic, o->payload, o->len, o->qos, o->retain, o->corr, o->corr_len);
        free(o);
    }
    m->changed = true;
}

void mqtt_drop_queue(struct mqtt *m)
{
    while (m->q_head) {
        struct outbound *o = m->q_head;
        m->q_head = o->next;
        free(o);
    }
    m->q_tail = NULL;
    m->qlen = 0;
}
