/* mqfork-device-dev.c - one simulated device's life, as the firmware lives
 * it (main/protocols/mqtt_protocol.cc, main/application.cc): connect with
 * its device id as the client id, subscribe to nothing, publish hello, wait
 * 10 s for the reply, open the audio channel, then per turn listen start,
 * the recording at real-time pace, listen stop and the answer, and at the
 * end goodbye. The audio channel itself is mqfork-device-udp.c. */
#include <cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tools/mqfork-device.h"

#define CLOSE_WAIT_US (2 * US) /* for the broker to take goodbye and DISCONNECT */

/* What the firmware's GetHelloMessage writes (without the optional font
 * capabilities of boards that push glyphs). */
static const char hello_json[] =
    "{\"type\":\"hello\",\"version\":3,\"transport\":\"udp\",\"features\":{\"mcp\":true},"
    "\"audio_params\":{\"format\":\"opus\",\"sample_rate\":16000,\"channels\":1,"
    "\"frame_duration\":60}}";

/* Expand "{device}" in TMPL with ID. 0, or -1 when it does not fit. */
static int expand(const char *tmpl, const char *id, char *out, size_t cap)
{
    size_t at = 0, idlen = strlen(id);
    for (const char *p = tmpl; *p;) {
        const char *piece = p;
        size_t n = 1;
        if (!strncmp(p, "{device}", 8)) {
            piece = id;
            n = idlen;
            p += 8;
        } else {
            p++;
        }
        if (at + n >= cap)
            return -1;
        memcpy(out + at, piece, n);
        at += n;
    }
    out[at] = '\0';
    return 0;
}

void dev_init(struct sim *s, struct device *d, long index)
{
    const struct opts *o = &s->o;
    memset(d, 0, sizeof(*d));
    d->sim = s;
    d->index = index;
    d->mqtt_fd = d->udp_fd = d->wav_fd = -1;
    d->heap_pos = -1;
    d->st.hello_us = -1;
    snprintf(d->id, sizeof(d->id), "%s%ld", o->prefix, o->id_start + index);
    if (expand(o->topic_up, d->id, d->topic_up, sizeof(d->topic_up)) < 0 ||
        expand(o->topic_down, d->id, d->topic_down, sizeof(d->topic_down)) < 0)
        dev_fail(d, "topic longer than %d bytes", DEV_TOPIC_MAX - 1);
}

void dev_fail(struct device *d, const char *fmt, ...)
{
    va_list ap;
    if (d->state == DEV_FAILED || d->state == DEV_DONE)
        return;
    va_start(ap, fmt);
    vsnprintf(d->reason, sizeof(d->reason), fmt, ap);
    va_end(ap);
    d->state = DEV_FAILED;
    if (d->sim->o.verbose)
        dev_log(d, "failed: %s", d->reason);
}

void dev_log(const struct device *d, const char *fmt, ...)
{
    va_list ap;
    if (d->sim->o.timestamps) {
        /* The wall clock, which a backend on this machine shares: the
         * benchmark lines up its publishes with what the devices got. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        fprintf(stderr, "%lld.%06ld ", (long long)ts.tv_sec, ts.tv_nsec / 1000);
    }
    fprintf(stderr, "%s ", d->id);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void publish(struct device *d, const char *json)
{
    int rc = mosquitto_publish(d->mosq, NULL, d->topic_up, (int)strlen(json), json, 0, false);
    if (d->sim->o.verbose > 1)
        dev_log(d, "> %s", json);
    if (rc != MOSQ_ERR_SUCCESS)
        dev_fail(d, "publish on %s: %s", d->topic_up, mosquitto_strerror(rc));
}

/* A control message in the firmware's key order (protocol.cc), through
 * cJSON so that any session id the server chose is escaped. */
static void send_ctl(struct device *d, const char *type, const char *state, const char *mode)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "session_id", d->hello.session_id);
    cJSON_AddStringToObject(o, "type", type);
    if (state)
        cJSON_AddStringToObject(o, "state", state);
    if (mode)
        cJSON_AddStringToObject(o, "mode", mode);
    char *json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (json)
        publish(d, json);
    else
        dev_fail(d, "out of memory");
    free(json);
}

static void send_hello(struct device *d)
{
    d->state = DEV_HELLO;
    d->t_hello = now_us();
    timer_set(d, d->t_hello + (int64_t)(d->sim->o.hello_timeout_s * US));
    publish(d, hello_json);
}

/* ---- turns: listen start, the recording, listen stop, the answer ---------- */

static void listen_start(struct device *d)
{
    send_ctl(d, "listen", "start", voice_listen_mode_name(d->sim->o.mode));
    d->state = DEV_STREAMING;
    d->frame = 0;
    d->t_stream0 = now_us();
    timer_set(d, d->t_stream0);
}

/* The turn's answer is awaited: until --wait passes in quiet, or the
 * grace after tts stop. */
static void await_answer(struct device *d)
{
    d->state = DEV_REPLY;
    d->t_heard = now_us();
    d->got_audio = d->spoke = d->tts_stopped = d->aborted = false;
    d->abort_at = 0;
    timer_set(d, d->t_heard + (int64_t)(d->sim->o.wait_s * US));
}

static void listen_stop(struct device *d)
{
    send_ctl(d, "listen", "stop", NULL);
    d->t_stop = now_us();
    await_answer(d);
}

void dev_reply_timer(struct device *d, int64_t due)
{
    timer_set(d, d->abort_at && !d->aborted && d->abort_at < due ? d->abort_at : due);
}

/* The first downlink frame of a tts came: with --abort-after-ms, the
 * abort is due that long after it. */
void dev_heard_speech(struct device *d)
{
    if (d->sim->o.abort_ms >= 0 && d->spoke && !d->abort_at)
        d->abort_at = now_us() + d->sim->o.abort_ms * 1000;
}

/* The abort is due: sent, then the answer's end is awaited as before. */
static void send_abort(struct device *d)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "session_id", d->hello.session_id);
    cJSON_AddStringToObject(o, "type", "abort");
    cJSON_AddStringToObject(o, "reason", "none");
    char *json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (json)
        publish(d, json);
    free(json);
    d->aborted = true;
    d->st.aborts++;
    timer_set(d, now_us() + (d->tts_stopped ? chan_grace_us(d) : (int64_t)(d->sim->o.wait_s * US)));
}

static bool out_of_time(const struct device *d)
{
    const struct opts *o = &d->sim->o;
    return o->duration_s > 0 && (double)d->frames_total * DEV_FRAME_MS >= o->duration_s * 1000;
}

/* Goodbye (unless the server said it first) and DISCONNECT; DONE when the
 * broker has them, or after CLOSE_WAIT_US. */
static void close_session(struct device *d, bool goodbye)
{
    chan_close(d);
    if (goodbye)
        send_ctl(d, "goodbye", NULL, NULL);
    if (d->state == DEV_FAILED)
        return;
    d->state = DEV_CLOSING;
    timer_set(d, now_us() + CLOSE_WAIT_US);
    if (mosquitto_disconnect(d->mosq) != MOSQ_ERR_SUCCESS)
        d->state = DEV_DONE;
}

static void end_turn(struct device *d)
{
    d->loop++;
    if ((d->sim->o.loops == 0 || d->loop < d->sim->o.loops) && !out_of_time(d) && !d->sim->stopping)
        listen_start(d);
    else
        close_session(d, true);
}

/* A frame is due: send it; at the end of the recording or of the time,
 * listen stop. */
static void stream_tick(struct device *d)
{
    const struct recording *r = &d->sim->rec;
    chan_send_frame(d);
    if (d->state != DEV_STREAMING)
        return;
    d->frame++;
    if (d->frame == r->speech_frames && d->sim->o.silence_s > 0)
        d->t_stop = now_us(); /* the speech is over: the answer may come */
    if (d->frame >= r->frames && d->sim->o.silence_s > 0)
        await_answer(d); /* the server heard no end: nothing more is coming */
    else if (d->frame >= r->frames || out_of_time(d))
        listen_stop(d);
    else
        timer_set(d, d->t_stream0 + (int64_t)d->frame * DEV_FRAME_MS * 1000);
}

void dev_timer(struct device *d)
{
    switch (d->state) {
    case DEV_IDLE:
        dev_start(d);
        break;
    case DEV_CONNECTING:
    case DEV_SUBSCRIBING:
        dev_fail(d, "no CONNACK/SUBACK within %.0f s", d->sim->o.hello_timeout_s);
        break;
    case DEV_HELLO:
        dev_fail(d, "no hello reply within %.0f s", d->sim->o.hello_timeout_s);
        break;
    case DEV_STREAMING:
        stream_tick(d);
        break;
    case DEV_REPLY:
        if (d->abort_at && !d->aborted && now_us() >= d->abort_at)
            send_abort(d);
        else
            end_turn(d); /* quiet for --wait, or the grace after tts stop */
        break;
    case DEV_CLOSING:
        d->state = DEV_DONE;
        break;
    default:
        break;
    }
}

/* ---- control messages from the server ------------------------------------ */

static void on_hello(struct device *d, const char *json, size_t len)
{
    char why[200];
    if (d->state != DEV_HELLO) {
        d->st.json[JK_OTHER]++; /* a late or second reply: the firmware would rekey */
        return;
    }
    if (voice_server_hello_parse(json, len, &d->hello, why, sizeof(why)) < 0) {
        dev_fail(d, "bad hello reply: %s", why);
        return;
    }
    d->st.hello_us = now_us() - d->t_hello;
    if (chan_open(d, why, sizeof(why)) < 0) {
        dev_fail(d, "audio channel: %s", why);
        return;
    }
    listen_start(d);
}

static void on_tts(struct device *d, const cJSON *o)
{
    const cJSON *state = cJSON_GetObjectItemCaseSensitive(o, "state");
    d->st.json[JK_TTS]++;
    if (!cJSON_IsString(state))
        return;
    if (!strcmp(state->valuestring, "start")) {
        d->spoke = true;
        d->last_rx_us = 0; /* a new utterance: its first gap is no jitter */
    } else if (!strcmp(state->valuestring, "stop") && d->state == DEV_REPLY) {
        /* The answer is over; packets still on their way get a short grace. */
        d->tts_stopped = true;
        dev_udp_readable(d);
        dev_reply_timer(d, now_us() + chan_grace_us(d));
    }
}

static void on_goodbye(struct device *d, const cJSON *o)
{
    const cJSON *sid = cJSON_GetObjectItemCaseSensitive(o, "session_id");
    d->st.json[JK_OTHER]++;
    /* As the firmware: only a goodbye for this session closes it, without
     * a goodbye back. */
    if (d->state >= DEV_STREAMING && d->state <= DEV_REPLY && cJSON_IsString(sid) &&
        !strcmp(sid->valuestring, d->hello.session_id)) {
        snprintf(d->reason, sizeof(d->reason), "the server said goodbye");
        close_session(d, false);
    }
}

static void on_json(struct device *d, const char *json, size_t len)
{
    cJSON *o = cJSON_ParseWithLength(json, len);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
    if (d->sim->o.verbose)
        dev_log(d, "< %.*s", (int)len, json);
    if (!cJSON_IsString(type)) {
        d->st.json[JK_OTHER]++;
        d->st.bad_json++;
    } else if (!strcmp(type->valuestring, "hello")) {
        on_hello(d, json, len);
    } else if (!strcmp(type->valuestring, "tts")) {
        on_tts(d, o);
    } else if (!strcmp(type->valuestring, "goodbye")) {
        on_goodbye(d, o);
    } else if (!strcmp(type->valuestring, "stt")) {
        d->st.json[JK_STT]++;
        if (d->state == DEV_STREAMING && d->sim->o.silence_s > 0)
            await_answer(d); /* the server ended the utterance: its answer follows */
        if (d->state == DEV_REPLY)
            hist_add(&d->st.stt, now_us() - d->t_stop);
    } else {
        d->st.json[!strcmp(type->valuestring, "llm") ? JK_LLM : JK_OTHER]++;
    }
    cJSON_Delete(o);
}

/* ---- libmosquitto callbacks (no client is destroyed inside them) ---------- */

static void on_message(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
    struct device *d = obj;
    if (msg->payloadlen > 0)
        on_json(d, msg->payload, (size_t)msg->payloadlen);
}

static void on_connect(struct mosquitto *m, void *obj, int rc)
{
    struct device *d = obj;
    if (rc != 0) {
        dev_fail(d, "broker refused the connection: %s", mosquitto_connack_string(rc));
    } else if (d->sim->o.subscribe) {
        d->state = DEV_SUBSCRIBING;
        rc = mosquitto_subscribe(m, NULL, d->topic_down, 0);
        if (rc != MOSQ_ERR_SUCCESS)
            dev_fail(d, "subscribe %s: %s", d->topic_down, mosquitto_strerror(rc));
    } else {
        send_hello(d);
    }
}

static void on_subscribe(struct mosquitto *m, void *obj, int mid, int n, const int *granted)
{
    struct device *d = obj;
    if (n < 1 || granted[0] > 2)
        dev_fail(d, "subscription to %s refused", d->topic_down);
    else if (d->state == DEV_SUBSCRIBING)
        send_hello(d);
}

static void on_disconnect(struct mosquitto *m, void *obj, int rc)
{
    struct device *d = obj;
    if (d->state == DEV_CLOSING)
        d->state = DEV_DONE;
    else
        dev_fail(d, "MQTT connection lost: %s",
                 rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
}

void dev_start(struct device *d)
{
    const struct opts *o = &d->sim->o;
    d->mosq = mosquitto_new(d->id, true, d);
    if (!d->mosq) {
        dev_fail(d, "mosquitto_new: out of memory");
        return;
    }
    mosquitto_int_option(d->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    if (o->user)
        mosquitto_username_pw_set(d->mosq, o->user, o->pass);
    mosquitto_connect_callback_set(d->mosq, on_connect);
    mosquitto_disconnect_callback_set(d->mosq, on_disconnect);
    mosquitto_message_callback_set(d->mosq, on_message);
    mosquitto_subscribe_callback_set(d->mosq, on_subscribe);
    d->state = DEV_CONNECTING;
    timer_set(d, now_us() + (int64_t)(o->hello_timeout_s * US));
    int rc = mosquitto_connect_async(d->mosq, o->host, o->port, DEV_KEEPALIVE_S);
    if (rc != MOSQ_ERR_SUCCESS)
        dev_fail(d, "connect to %s:%d: %s", o->host, o->port,
                 rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
}

/* SIGINT or SIGTERM: a device in a session ends it as a person would (listen
 * stop, goodbye); one that has none yet just goes. */
void dev_stop(struct device *d)
{
    switch (d->state) {
    case DEV_IDLE:
        snprintf(d->reason, sizeof(d->reason), "interrupted before its start");
        d->state = DEV_DONE;
        break;
    case DEV_CONNECTING:
    case DEV_SUBSCRIBING:
    case DEV_HELLO:
        snprintf(d->reason, sizeof(d->reason), "interrupted before its hello reply");
        d->state = DEV_DONE;
        break;
    case DEV_STREAMING:
        send_ctl(d, "listen", "stop", NULL);
        snprintf(d->reason, sizeof(d->reason), "interrupted");
        close_session(d, true);
        break;
    case DEV_REPLY:
        snprintf(d->reason, sizeof(d->reason), "interrupted");
        close_session(d, true);
        break;
    default:
        break;
    }
}

/* Release what a finished device holds (outside any libmosquitto callback). */
void dev_free(struct device *d)
{
    timer_clear(d);
    chan_close(d);
    loop_mqtt_close(d);
}
