/* mqtt.h - the supervisor's MQTT connection: libmosquitto driven from the
 * event loop, never blocking it. It connects and reconnects with backoff,
 * keeps the subscriptions it was given and restores them after a
 * reconnect, publishes a retained status with a last will, and holds
 * outgoing messages in a bounded queue while the broker is away. */
#ifndef MQFORK_SUPERVISOR_MQTT_H
#define MQFORK_SUPERVISOR_MQTT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/config.h"

struct loop;
struct mqtt;
struct segment;

/* One incoming message; pointers are valid during the callback only. */
struct mqtt_message {
    const char *topic;
    const void *payload;
    size_t len;
    const char *response_topic; /* MQTT v5 request's response topic, or NULL */
    const void *correlation;    /* MQTT v5 correlation data, or NULL */
    size_t correlation_len;
};

typedef void (*mqtt_message_fn)(void *ctx, const struct mqtt_message *m);

/* Who takes the messages of a subscription: a source (the routes, the voice
 * gateway). Embedded in its owner, which fills in fn and ctx; a message
 * reaches each sink with a subscription that matches it, once. */
struct mqtt_sink {
    mqtt_message_fn fn;
    void *ctx;
    uint64_t last_msg; /* the client's: the message it last handed this sink */
};

/* Create the client for C's broker section (C must outlive it). Nothing
 * connects, and nothing is added to LOOP, before mqtt_start. Its figures (mqtt_connected,
 * mqtt_queue, mqtt_messages_in, ...) go to its named block "mqtt" in SEG (NULL: none), published
 * from the loop when they changed. NULL on failure (logged). */
struct mqtt *mqtt_new(const struct conf *c, struct loop *loop, struct segment *seg);

/* Subscribe SINK to FILTER (a $share/GROUP/ prefix allowed) now and after
 * every reconnect (a filter the sink already holds is kept as it is: no gap
 * in delivery). SINK must outlive the subscription. */
int mqtt_subscribe(struct mqtt *m, const char *filter, int qos, struct mqtt_sink *sink);
/* Drop SINK's subscription to FILTER (unsubscribing from the broker when no
 * other sink holds the filter). */
void mqtt_unsubscribe(struct mqtt *m, const char *filter, struct mqtt_sink *sink);

/* Begin connecting; returns at once. From now on the client runs in the
 * loop: a before-sleep hook flushes what is left to write and publishes the
 * figures, timers send keepalives and reconnect; mqtt_free, before the
 * loop is freed, takes them out. 0, or -1 (out of memory, logged). */
int mqtt_start(struct mqtt *m);

/* Publish, or queue while the broker is away (bounded by
 * broker.max_outbound; past it the message is dropped and counted).
 * CORRELATION (may be NULL) is sent as MQTT v5 correlation data. A TOPIC
 * that no broker would take (topic_publish_problem) is dropped, counted and
 * logged: callers check their topics first, this only keeps one that slips
 * through from costing the connection. */
void mqtt_publish(struct mqtt *m, const char *topic, const void *payload, size_t len, int qos,
                  bool retain, const void *correlation, size_t correlation_len);

/* Before exit: hand the broker everything still waiting and read its
 * acknowledgements, until DEADLINE_NS (mono_ns() time). Returns how many
 * messages could not be delivered, which is also logged. */
size_t mqtt_flush(struct mqtt *m, uint64_t deadline_ns);

/* Publish the offline status, disconnect and free. */
void mqtt_free(struct mqtt *m);

#endif
