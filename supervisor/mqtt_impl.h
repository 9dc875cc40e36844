/* mqtt_impl.h - the MQTT client's private state, shared by its two parts:
 * mqtt.c (the connection in the event loop, its timers, the subscriptions,
 * the figures) and mqtt_out.c (what it sends: at once while connected,
 * queued while the broker is away, both held to broker.max_outbound, and the
 * acknowledgements it awaits). */
#ifndef MQFORK_SUPERVISOR_MQTT_IMPL_H
#define MQFORK_SUPERVISOR_MQTT_IMPL_H

#include <mosquitto.h>

#include "common/log.h"
#include "supervisor/loop.h"
#include "supervisor/mqtt.h"

struct outbound;
struct stats_block;

enum mqtt_state { MQTT_IDLE, MQTT_CONNECTING, MQTT_CONNECTED };

/* The connection's figures: the data of the block "mqtt", kept here and
 * published once per loop round when they changed. */
struct mqtt_figures {
    uint32_t connected; /* gauge */
    uint32_t queue;     /* gauge: waiting in our queue or in the library */
    uint64_t reconnects, msgs_in, bytes_in, msgs_out, bytes_out, dropped;
};

struct subscription {
    char *filter;
    const char *match; /* the filter without its $share/GROUP/ prefix */
    int qos;
    int mid; /* of the last SUBSCRIBE sent for it, to name it in the log on SUBACK */
    struct mqtt_sink *sink;
};

struct mqtt {
    const struct conf *conf;
    struct loop *loop;
    struct mosquitto *mosq;
    bool v5;
    enum mqtt_state state;
    bool ever_connected;
    bool connect_called;
    bool stopping;     /* our own disconnect: not a loss */
    size_t unacked;    /* QoS 1 and 2 messages sent and not yet acknowledged */
    size_t in_library; /* handed to libmosquitto, not yet written (QoS 0) or acknowledged */
    uint8_t awaiting_ack[65536 / 8]; /* by message id (16 bits): which are those */
    bool more_to_read;
    int fd;
    struct loop_watch *rwatch, *wwatch;
    bool in_loop;                /* started: the hook and timers are the loop's */
    struct loop_hook hook;       /* flushes writes, reads what a wake-up left */
    struct loop_timer retry;     /* the next connection attempt */
    struct loop_timer keepalive; /* PINGREQ when due, and its answer missed */
    double backoff_s;
    struct subscription *subs;
    size_t nsubs;
    struct mqtt_sink *only_sink; /* the sink of every subscription, when they share one */
    uint64_t msg_seq;            /* messages received, to hand each to a sink once */
    struct outbound *q_head, *q_tail;
    size_t qlen;
    char *status_topic; /* malloc'd: a configured one may be long */
    char client_id[128];
    struct mqtt_figures n;
    struct stats_block *stats; /* "mqtt" in the segment; NULL: none */
    bool changed;
    struct log_rate bad_topic_log;
};

/* mqtt_out.c */
/* Hand one message to libmosquitto now (counted, and awaited if QoS > 0). */
void mqtt_publish_now(struct mqtt *m, const char *topic, const void *payload, size_t len, int qos,
                      bool retain, const void *corr, size_t corr_len);
/* Send what waited while the broker was away. */
void mqtt_flush_queue(struct mqtt *m);
/* libmosquitto's word that a message was written (QoS 0) or acknowledged. */
void mqtt_on_publish(struct mosquitto *mosq, void *ctx, int mid, int reason,
                     const mosquitto_property *props);
void mqtt_drop_queue(struct mqtt *m);

#endif
