/* voice.c - the voice gateway as a source (source.h): xiaozhi devices
 * (doc/VOICE.md) say hello over MQTT, get a session with its own key, nonce and
 * ssrc, stream Opus over UDP (voice_up.c) and hear what the backend sends
 * them (voice_down.c). This file is the control path: the devices' JSON
 * messages, the session events the backend reads on voice/{device}/events,
 * and how each session starts and ends (exactly one "ended" event each).
 *
 *   xiaozhi/{device}/up --hello--> session --reply--> devices/p2p/{device}
 *                       --listen, abort, mcp--> voice/{device}/events
 *                       --goodbye--> ended
 *
 * Several instances may share the devices ($share/GROUP/xiaozhi/+/up): the
 * broker hands each message to one of them, and the UDP audio goes to the
 * instance whose hello reply the device got. A message for a device with no
 * session here is forwarded on voice.topics.forward, which every instance
 * subscribes to without sharing (and without getting its own back: MQTT v5
 * No Local); the instance that has the session takes it. Each hello is
 * forwarded too, so that an instance holding the device's previous session
 * ends it as replaced. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/topic.h"
#include "shm/clock.h"
#include "supervisor/engine.h"
#include "supervisor/source.h"
#include "supervisor/voice_impl.h"

static const char *const end_names[END_COUNT] = {"goodbye", "server", "idle", "replaced",
                                                 "shutdown"};

/* ---- topics ----------------------------------------------------------------- */

int voice_topic(const char *tmpl, const char *device, char *out, size_t len)
{
    const char *at = strstr(tmpl, "{device}");
    int n = at ? snprintf(out, len, "%.*s%s%s", (int)(at - tmpl), tmpl, device, at + 8) : -1;
    return n >= 0 && (size_t)n < len ? 0 : -1;
}

int voice_device_of(const char *pattern, const char *wildcard, const char *topic, char *out,
                    size_t len)
{
    size_t wlen = strlen(wildcard);
    for (const char *p = pattern, *t = topic;;) {
        size_t pl = strcspn(p, "/"), tl = strcspn(t, "/");
        if (pl == wlen && !memcmp(p, wildcard, wlen)) {
            if (tl == 0 || tl >= len)
                return -1;
            memcpy(out, t, tl);
            out[tl] = '\0';
        } else if (pl != tl || memcmp(p, t, pl) != 0) {
            return -1;
        }
        if (!p[pl] || !t[tl])
            return p[pl] || t[tl] ? -1 : 0;
        p += pl + 1, t += tl + 1;
    }
}

void voice_to_device(struct voice *v, const char *device, const char *json)
{
    char topic[VOICE_TOPIC_MAX];
    if (voice_topic(v->vc->topics.down, device, topic, sizeof(topic)) == 0)
        mqtt_publish(v->mqtt, topic, json, strlen(json), 0, false, NULL, 0);
}

cJSON *voice_event_new(const struct voice_session *s, const char *type)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", type);
    cJSON_AddStringToObject(o, "session_id", s->id);
    cJSON_AddStringToObject(o, "device", s->device);
    return o;
}

void voice_event_send(struct voice *v, const struct voice_session *s, cJSON *event)
{
    char topic[VOICE_TOPIC_MAX];
    char *json = cJSON_PrintUnformatted(event);
    cJSON_Delete(event);
    if (json && voice_topic(v->vc->topics.events, s->device, topic, sizeof(topic)) == 0)
        mqtt_publish(v->mqtt, topic, json, strlen(json), 0, false, NULL, 0);
    free(json);
}

/* ---- a session's start and end ---------------------------------------------- */

static void reply_hello(struct voice *v, struct voice_session *s)
{
    const struct conf_voice *vc = v->vc;
    struct voice_hello_reply r = {
        .session_id = s->id,
        .server = vc->public_host ? vc->public_host : vc->bind,
        .port = (uint16_t)(vc->public_port ? vc->public_port : vc->port),
        .downlink = {(int)vc->downlink_rate, 1, (int)vc->downlink_frame_ms},
    };
    memcpy(r.key, s->key, sizeof(r.key));
    memcpy(r.nonce, s->nonce, sizeof(r.nonce));
    char *json = voice_hello_json(&r);
    if (json)
        voice_to_device(v, s->device, json);
    free(json);
}

static void refuse_hello(struct voice *v, const char *device, enum voice_refusal why,
                         const char *text)
{
    v->n.refused[why]++;
    v->changed = true;
    log_rated(&v->bad_control_log, LOG_LVL_WARN, "voice: hello from %.64s refused: %s", device,
              text);
    char *json = voice_alert_json(text);
    if (json)
        voice_to_device(v, device, json);
    free(json);
}

static void on_hello(struct voice *v, const char *device, const struct voice_msg *m)
{
    struct voice_session *old = voice_by_device(v, device);
    if (old) /* the device forgot it: no goodbye, it would close the new one */
        voice_end_session(v, old, END_REPLACED);
    if (v->draining) {
        refuse_hello(v, device, REFUSED_FULL, "the server is shutting down");
        return;
    }
    struct voice_session *s = voice_session_new(v, device);
    if (!s) {
        refuse_hello(v, device, REFUSED_FULL, "the server has no room for another session");
        return;
    }
    s->seen_ns = loop_now_ns(v->loop);
    loop_timer_arm(v->loop, &s->idle, s->seen_ns + (uint64_t)(v->vc->idle_s * 1e9));
    v->n.started++;
    v->n.active++;
    v->changed = true;
    reply_hello(v, s);
    cJSON *e = voice_event_new(s, "started");
    cJSON *a = cJSON_AddObjectToObject(e, "audio_params");
    cJSON_AddNumberToObject(a, "sample_rate", m->audio.sample_rate);
    cJSON_AddNumberToObject(a, "channels", m->audio.channels);
    cJSON_AddNumberToObject(a, "frame_duration", m->audio.frame_ms);
    voice_event_send(v, s, e);
}

void voice_end_session(struct voice *v, struct voice_session *s, enum voice_end why)
{
    if (why == END_IDLE || why == END_SHUTDOWN) {
        char *json = voice_goodbye_json(s->id);
        if (json)
            voice_to_device(v, s->device, json);
        free(json);
    }
    voice_up_end(v, s);
    if (s->pcm_len)
        voice_up_flush_pcm(v, s);
    voice_stt_end(v, s);
    cJSON *e = voice_event_new(s, "ended");
    cJSON_AddStringToObject(e, "reason", end_names[why]);
    voice_event_send(v, s, e);
    v->n.down_aborted += s->q_frames;
    if (v->decode_kind >= 0) /* the codecs' slots take new sessions at once */
        engine_stream_end(v->engine, (uint32_t)v->decode_kind, s->id, strlen(s->id));
    engine_stream_end(v->engine, (uint32_t)v->encode_kind, s->id, strlen(s->id));
    if (v->tts_kind >= 0)
        engine_stream_end(v->engine, (uint32_t)v->tts_kind, s->id, strlen(s->id));
    v->n.ended[why]++;
    v->n.active--;
    v->changed = true;
    voice_session_free(v, s);
}

void voice_idle_fired(void *ctx)
{
    struct voice_session *s = ctx;
    struct voice *v = s->owner;
    uint64_t due = s->seen_ns + (uint64_t)(v->vc->idle_s * 1e9);
    if (loop_now_ns(v->loop) < due)
        loop_timer_arm(v->loop, &s->idle, due); /* traffic since it was armed */
    else
        voice_end_session(v, s, END_IDLE);
}

/* ---- the devices' messages -------------------------------------------------- */

static void on_listen(struct voice *v, struct voice_session *s, const struct voice_msg *m)
{
    cJSON *e = voice_event_new(s, "listen");
    cJSON_AddStringToObject(e, "state", voice_listen_state_name(m->listen));
    cJSON_AddStringToObject(e, "mode", voice_listen_mode_name(m->mode));
    if (m->listen == VOICE_LISTEN_DETECT)
        cJSON_AddStringToObject(e, "text", m->text);
    voice_event_send(v, s, e);
    if (m->listen != VOICE_LISTEN_DETECT)
        voice_stt_listen(v, s, m->listen == VOICE_LISTEN_START, m->mode);
}

/* mcp and any other message: passed to the backend as the device sent it. */
static void pass_through(struct voice *v, struct voice_session *s, const struct mqtt_message *msg)
{
    char *raw = strndup(msg->payload, msg->len);
    cJSON *e = voice_event_new(s, "message");
    if (raw)
        cJSON_AddRawToObject(e, "message", raw);
    voice_event_send(v, s, e);
    free(raw);
}

static void on_session_message(struct voice *v, struct voice_session *s, const struct voice_msg *m,
                               const struct mqtt_message *msg)
{
    s->seen_ns = loop_now_ns(v->loop);
    switch (m->type) {
    case VOICE_MSG_LISTEN:
        on_listen(v, s, m);
        break;
    case VOICE_MSG_ABORT: {
        cJSON *e = voice_event_new(s, "abort");
        cJSON_AddStringToObject(e, "reason", m->text);
        voice_event_send(v, s, e);
        voice_down_abort(v, s); /* last: a goodbye it lets out ends the session */
        break;
    }
    case VOICE_MSG_GOODBYE:
        voice_end_session(v, s, END_GOODBYE);
        break;
    case VOICE_MSG_HELLO: /* forwarded: another instance has its new session */
        voice_end_session(v, s, END_REPLACED);
        break;
    default:
        pass_through(v, s, msg);
        break;
    }
}

static void bad_control(struct voice *v, const char *device, const char *why)
{
    v->n.control_bad++;
    v->changed = true;
    log_rated(&v->bad_control_log, LOG_LVL_WARN, "voice: a message from %.64s refused: %s", device,
              why);
}

/* Pass a device's message to the other instances. */
static void forward(struct voice *v, const char *device, const struct mqtt_message *msg)
{
    char topic[VOICE_TOPIC_MAX];
    if (voice_topic(v->vc->topics.forward, device, topic, sizeof(topic)) == 0) {
        mqtt_publish(v->mqtt, topic, msg->payload, msg->len, 0, false, NULL, 0);
        v->n.forwarded++;
    }
}

/* A message another instance forwarded: ours if we hold the session. */
static void on_forwarded(void *ctx, const struct mqtt_message *msg)
{
    struct voice *v = ctx;
    char device[VOICE_DEVICE_MAX + 1], why[256];
    struct voice_msg m;
    struct voice_session *s = NULL;
    v->changed = true;
    if (voice_device_of(v->vc->topics.forward, "{device}", msg->topic, device, sizeof(device)) ==
            0 &&
        voice_msg_parse(msg->payload, msg->len, &m, why, sizeof(why)) == 0)
        s = voice_by_device(v, device);
    if (s && (!m.session_id[0] || strcmp(m.session_id, s->id) == 0 || m.type == VOICE_MSG_HELLO))
        on_session_message(v, s, &m, msg);
    else
        v->n.forwards_other++;
}

static void on_device_message(void *ctx, const struct mqtt_message *msg)
{
    struct voice *v = ctx;
    char device[VOICE_DEVICE_MAX + 1], why[256];
    struct voice_msg m;
    v->n.control_in++;
    v->changed = true;
    if (voice_device_of(topic_filter_base(v->vc->topics.up), "+", msg->topic, device,
                        sizeof(device)) < 0) {
        v->n.refused[REFUSED_BAD_DEVICE]++;
        log_rated(&v->bad_control_log, LOG_LVL_WARN,
                  "voice: no device id of 1 to %d bytes in the topic %.64s", VOICE_DEVICE_MAX,
                  msg->topic);
        return;
    }
    if (voice_msg_parse(msg->payload, msg->len, &m, why, sizeof(why)) < 0) {
        if (m.type == VOICE_MSG_HELLO)
            refuse_hello(v, device, REFUSED_BAD_HELLO, why);
        else
            bad_control(v, device, why);
        return;
    }
    if (m.type == VOICE_MSG_HELLO) {
        on_hello(v, device, &m);
        if (v->shared)
            forward(v, device, msg);
        return;
    }
    struct voice_session *s = voice_by_device(v, device);
    if (!s && v->shared) {
        forward(v, device, msg);
        return;
    }
    if (!s || (m.session_id[0] && strcmp(m.session_id, s->id) != 0)) {
        v->n.control_unknown++; /* before a hello, or of a session that ended */
        log_debug("voice: %s message from %.64s names no live session", msg->topic, device);
        return;
    }
    on_session_message(v, s, &m, msg);
}

/* ---- as a source -------------------------------------------------------------- */

static bool voice_wanted(const struct conf *c)
{
    return c->voice.enabled;
}

/* The pool's codec jobs: uplink decode (16 kHz mono, the devices' format)
 * when asked for, downlink encode at the announced format for say_pcm. */
static int add_kinds(struct voice *v)
{
    char rate[16], frame[16], sequence[16];
    snprintf(sequence, sizeof(sequence), "%d", VOICE_DECODE_BATCH);
    struct conf_param dec[] = {{.key = "sample_rate", .value = "16000"},
                               {.key = "sequence", .value = sequence}};
    snprintf(rate, sizeof(rate), "%u", v->vc->downlink_rate);
    snprintf(frame, sizeof(frame), "%u", v->vc->downlink_frame_ms);
    struct conf_param enc[] = {{.key = "sample_rate", .value = rate},
                               {.key = "frame_ms", .value = frame}};
    struct conf_params decp = {dec, 2}, encp = {enc, 2};
    if (v->modes & UPLINK_DECODE && (v->decode_kind = engine_add_source_kind(
                                         v->engine, "voice.decode", "opus.decode", &decp)) < 0)
        return -1;
    v->encode_kind = engine_add_source_kind(v->engine, "voice.encode", "opus.encode", &encp);
    if (v->encode_kind < 0)
        return -1;
    char rate2[16];
    snprintf(rate2, sizeof(rate2), "%u", v->vc->downlink_rate);
    /* sentences of at most 300 bytes (voice_say.c), bounded at 100 ms a byte */
    struct conf_param tts[] = {{.key = "sample_rate", .value = rate2},
                               {.key = "max_chars", .value = "300"},
                               {.key = "bound_ms_per_byte", .value = "100"}};
    struct conf_params ttsp = {tts, 3};
    if (v->vc->say_voice && (v->tts_kind = engine_add_source_kind(
                                 v->engine, "voice.tts", "speech.synthesize", &ttsp)) < 0) {
        log_error("voice: voice.say_voice needs speech.synthesize: load the speech plugin "
                  "(plugins: [.../mqfork_speech.so])");
        return -1;
    }
    if ((v->modes & UPLINK_RECOGNIZE) &&
        (v->stt_kind = engine_add_source_kind(v->engine, "voice.stt", "speech.transcribe", NULL)) <
            0) {
        log_error("voice: uplink recognize needs speech.transcribe: load the speech plugin "
                  "(plugins: [.../mqfork_speech.so])");
        return -1;
    }
    if ((v->modes & UPLINK_RECOGNIZE) &&
        (v->vad_kind = engine_add_kind(v->engine, "voice.vad", "speech.vad", NULL)) < 0)
        return -1;
    return 0;
}

static void voice_free(void *self);

static void *voice_create(const struct conf *c, struct engine *e, struct loop *l)
{
    struct voice *v = calloc(1, sizeof(*v));
    if (!v)
        return NULL;
    *v = (struct voice){.conf = c,
                        .vc = &c->voice,
                        .engine = e,
                        .loop = l,
                        .fd = -1,
                        .decode_kind = -1,
                        .encode_kind = -1,
                        .stt_kind = -1,
                        .tts_kind = -1,
                        .vad_kind = -1,
                        .modes = c->voice.uplink_modes};
    v->up_sink = (struct mqtt_sink){.fn = on_device_message, .ctx = v};
    v->fwd_sink = (struct mqtt_sink){.fn = on_forwarded, .ctx = v};
    v->shared = strncmp(c->voice.topics.up, "$share/", 7) == 0;
    v->back_sink = (struct mqtt_sink){.fn = voice_down_message, .ctx = v};
    if (voice_table_init(v) < 0 || add_kinds(v) < 0) {
        log_error("voice: cannot set up the gateway");
        voice_free(v);
        return NULL;
    }
    return v;
}

/* The backend's topics, as filters: {device} becomes '+'. */
static int back_filter(const char *tmpl, char *out, size_t len)
{
    return voice_topic(tmpl, "+", out, len);
}

static int subscribe(struct voice *v, const struct conf_voice *vc)
{
    const char *back[] = {vc->topics.play, vc->topics.say_pcm, vc->topics.ctl, vc->topics.say};
    char f[VOICE_TOPIC_MAX];
    if (mqtt_subscribe(v->mqtt, vc->topics.up, 0, &v->up_sink) < 0 ||
        (v->shared && (back_filter(vc->topics.forward, f, sizeof(f)) < 0 ||
                       mqtt_subscribe(v->mqtt, f, 0, &v->fwd_sink) < 0)))
        return -1;
    for (size_t i = 0; i < 4; i++)
        if (back_filter(back[i], f, sizeof(f)) < 0 ||
            mqtt_subscribe(v->mqtt, f, 0, &v->back_sink) < 0)
            return -1;
    return 0;
}

static void unsubscribe(struct voice *v, const struct conf_voice *vc)
{
    const char *back[] = {vc->topics.play, vc->topics.say_pcm, vc->topics.ctl, vc->topics.say};
    char f[VOICE_TOPIC_MAX];
    mqtt_unsubscribe(v->mqtt, vc->topics.up, &v->up_sink);
    if (v->shared && back_filter(vc->topics.forward, f, sizeof(f)) == 0)
        mqtt_unsubscribe(v->mqtt, f, &v->fwd_sink);
    for (size_t i = 0; i < 4; i++)
        if (back_filter(back[i], f, sizeof(f)) == 0)
            mqtt_unsubscribe(v->mqtt, f, &v->back_sink);
}

static int voice_attach(void *self, struct mqtt *m)
{
    struct voice *v = self;
    v->mqtt = m;
    if (voice_stats_add(v) < 0 || voice_udp_open(v) < 0 || subscribe(v, v->vc) < 0)
        return -1;
    log_info("voice: devices on %s, audio on udp %s:%d, at most %u sessions", v->vc->topics.up,
             v->vc->bind, v->vc->port, v->vc->max_sessions);
    return 0;
}

/* Topics and times follow a reload; the socket, the table and the codec
 * formats are set at start. */
static int voice_reload(void *self, const struct conf *c)
{
    struct voice *v = self;
    const struct conf_voice *old = v->vc, *vc = &c->voice;
    if (!vc->enabled || strcmp(old->bind, vc->bind) || old->port != vc->port ||
        old->max_sessions != vc->max_sessions || vc->uplink_modes != v->modes ||
        old->downlink_rate != vc->downlink_rate || old->downlink_frame_ms != vc->downlink_frame_ms)
        log_warn("voice: changes to voice.bind, port, max_sessions, uplink or the downlink "
                 "format need a restart; keeping those as they were");
    unsubscribe(v, old);
    v->conf = c;
    v->vc = vc;
    v->shared = strncmp(vc->topics.up, "$share/", 7) == 0;
    return subscribe(v, vc);
}

/* Sessions with nothing left to play end now; the others when their queue
 * runs dry (voice_down.c), or when the drain's deadline passes. */
static void voice_drain(void *self)
{
    struct voice *v = self;
    v->draining = true;
    for (uint32_t i = 0; i < v->nslots; i++) {
        struct voice_session *s = v->slot[i];
        if (s && s->live && !s->q_head)
            voice_end_session(v, s, END_SHUTDOWN);
    }
}

static size_t voice_outstanding(void *self)
{
    struct voice *v = self;
    return v->draining ? (size_t)v->n.active : 0;
}

static void voice_free(void *self)
{
    struct voice *v = self;
    for (uint32_t i = 0; v->slot && i < v->nslots; i++)
        if (v->slot[i] && v->slot[i]->live) { /* past the drain: the broker is gone */
            v->n.ended[END_SHUTDOWN]++;
            v->n.active--;
            voice_session_free(v, v->slot[i]);
        }
    voice_udp_close(v);
    voice_table_free(v);
    free(v);
}

const struct source_ops voice_source = {
    .name = "voice",
    .wanted = voice_wanted,
    .create = voice_create,
    .attach = voice_attach,
    .reload = voice_reload,
    .drain = voice_drain,
    .outstanding = voice_outstanding,
    .free = voice_free,
};
