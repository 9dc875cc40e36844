/* voice_down.c - what the backend sends a device, in order:
 *
 *   voice/{device}/play     Opus packets: one per message, or a sequence
 *                           each prefixed by its length (2 bytes, big-
 *                           endian), as opus.encode produces
 *   voice/{device}/say_pcm  PCM s16le at the downlink rate, encoded in the
 *                           pool (the session is the encoder's stream)
 *   voice/{device}/ctl      JSON for the device (tts, stt, llm, mcp, ...),
 *                           passed on unchanged
 *
 * Each session has one bounded queue of audio frames and control messages.
 * Audio leaves at real-time pace, one frame per frame duration on the
 * session's timer, scheduled from the first frame so that lateness does
 * not add up; a control message leaves as soon as the audio queued before
 * it has left, so "tts stop" follows the speech it ends. A frame due when
 * the queue has run dry is an underrun. An abort from the device drops the
 * audio still queued. */
#include <stdlib.h>
#include <string.h>

#include "supervisor/engine.h"
#include "supervisor/voice_impl.h"

struct down_job {
    struct voice *v;
    uint32_t slot, gen;
};

static uint64_t frame_ns(const struct voice *v)
{
    return (uint64_t)v->vc->downlink_frame_ms * 1000000;
}

static void push(struct voice_session *s, struct voice_out *o)
{
    o->next = NULL;
    if (s->q_tail)
        s->q_tail->next = o;
    else
        s->q_head = o;
    s->q_tail = o;
    s->q_frames += !o->control;
}

static struct voice_out *pop(struct voice_session *s)
{
    struct voice_out *o = s->q_head;
    if ((s->q_head = o->next) == NULL)
        s->q_tail = NULL;
    s->q_frames -= !o->control;
    return o;
}

void voice_down_clear(struct voice_session *s)
{
    while (s->q_head)
        free(pop(s));
}

/* ---- pacing --------------------------------------------------------------------- */

/* Send the control messages at the head of the queue. False when one of
 * them ended the session (the backend's goodbye). */
static bool send_controls(struct voice *v, struct voice_session *s)
{
    while (s->q_head && s->q_head->control) {
        struct voice_out *o = pop(s);
        voice_to_device(v, s->device, (const char *)o->data);
        bool bye = o->len == 1; /* marked when queued */
        free(o);
        if (bye) {
            voice_end_session(v, s, END_SERVER);
            return false;
        }
    }
    return true;
}

/* The frame due at s->next_ns: send it and arm the timer for the next. */
static void pump(struct voice *v, struct voice_session *s)
{
    if (!send_controls(v, s))
        return;
    if (!s->q_head) {
        if (v->draining)
            voice_end_session(v, s, END_SHUTDOWN);
        return; /* dry: pacing stops, s->next_ns keeps the slot that found it so */
    }
    struct voice_out *o = pop(s);
    uint64_t now = loop_now_ns(v->loop);
    stats_hist_add(&v->n.down_lateness, now > s->next_ns ? now - s->next_ns : 0);
    voice_udp_send(v, s, o->data, o->len);
    free(o);
    s->next_ns += frame_ns(v);
    loop_timer_arm(v->loop, &s->pace, s->next_ns);
}

void voice_pace_fired(void *ctx)
{
    struct voice_session *s = ctx;
    pump(s->owner, s);
}

/* Audio or a message joined the queue: start pacing unless it runs. A
 * frame that comes within a frame of the slot that found the queue dry
 * is late: an underrun, and the pace goes on from now. */
static void kick(struct voice *v, struct voice_session *s)
{
    if (loop_timer_armed(&s->pace))
        return;
    uint64_t now = loop_now_ns(v->loop);
    if (s->next_ns && now >= s->next_ns && now < s->next_ns + frame_ns(v) && s->q_frames)
        v->n.down_underruns++;
    s->next_ns = now; /* the queue ran dry at a slot already past */
    pump(v, s);
}

static bool enqueue(struct voice *v, struct voice_session *s, const void *data, size_t len,
                    bool control, bool goodbye)
{
    if (!control && s->q_frames >= v->vc->queue_frames) {
        v->n.down_overflow++;
        return false;
    }
    struct voice_out *o = malloc(sizeof(*o) + len + 1);
    if (!o) {
        v->n.down_overflow++;
        return false;
    }
    o->control = control;
    o->len = control ? goodbye : (uint16_t)len;
    memcpy(o->data, data, len);
    o->data[len] = '\0';
    push(s, o);
    return true;
}

void voice_down_abort(struct voice *v, struct voice_session *s)
{
    struct voice_out *keep = NULL, **tail = &keep;
    while (s->q_head) {
        struct voice_out *o = pop(s);
        if (o->control) {
            *tail = o;
            tail = &o->next;
        } else {
            v->n.down_aborted++;
            free(o);
        }
    }
    for (struct voice_out *o = keep, *next; o; o = next) {
        next = o->next;
        push(s, o);
    }
    send_controls(v, s);
}

/* ---- the backend's messages -------------------------------------------------------- */

/* A payload that splits exactly into length-prefixed packets is a sequence;
 * anything else is one packet. Each is queued; true if any was. */
static bool queue_packets(struct voice *v, struct voice_session *s, const uint8_t *p, size_t len)
{
    size_t at = 0;
    while (at + 2 <= len) {
        size_t n = (size_t)p[at] << 8 | p[at + 1];
        if (n == 0 || n > VOICE_OPUS_MAX || at + 2 + n > len)
            break;
        at += 2 + n;
    }
    if (at == len && len) {
        bool any = false;
        for (at = 0; at < len; at += 2 + ((size_t)p[at] << 8 | p[at + 1]))
            any |= enqueue(v, s, p + at + 2, (size_t)p[at] << 8 | p[at + 1], false, false);
        return any;
    }
    if (!len || len > VOICE_OPUS_MAX) {
        v->n.down_bad++; /* not one Opus packet */
        return false;
    }
    return enqueue(v, s, p, len, false, false);
}

static void on_encoded(void *ctx, const struct engine_outcome *o)
{
    struct down_job *j = ctx;
    struct voice *v = j->v;
    struct voice_session *s = voice_by_slot(v, j->slot, j->gen);
    if (s)
        s->jobs--;
    if (o->status != JOB_OK)
        v->n.down_bad++;
    else if (s && queue_packets(v, s, o->data, o->len))
        kick(v, s);
    v->changed = true;
    free(j);
}

static void say_pcm(struct voice *v, struct voice_session *s, const struct mqtt_message *m)
{
    struct down_job *j = malloc(sizeof(*j));
    if (!j || !m->len) {
        v->n.down_bad++;
        free(j);
        return;
    }
    *j = (struct down_job){v, s->slot, s->gen};
    struct engine_job job = {
        .kind = (uint32_t)v->encode_kind,
        .payload = m->payload,
        .len = m->len,
        .stream = s->id,
        .stream_len = strlen(s->id),
        .priority = PRIO_HIGH,
        .timeout_ms = 5000,
        .retries = 2,
        .done = on_encoded,
        .ctx = j,
    };
    if (engine_submit(v->engine, &job, NULL) != JOB_OK) {
        v->n.down_bad++;
        free(j);
        return;
    }
    s->jobs++;
}

/* JSON for the device: an object with a type; a goodbye ends the session
 * once it has left. */
static void control(struct voice *v, struct voice_session *s, const struct mqtt_message *m)
{
    cJSON *o = m->len <= VOICE_JSON_MAX ? cJSON_ParseWithLength(m->payload, m->len) : NULL;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
    bool ok = cJSON_IsObject(o) && cJSON_IsString(type);
    bool bye = ok && !strcmp(type->valuestring, "goodbye");
    cJSON_Delete(o);
    if (!ok) {
        v->n.down_bad++;
        log_rated(&v->bad_control_log, LOG_LVL_WARN,
                  "voice: %.64s: not a JSON object with a \"type\" string", m->topic);
        return;
    }
    if (enqueue(v, s, m->payload, m->len, true, bye))
        kick(v, s);
}

void voice_down_message(void *ctx, const struct mqtt_message *m)
{
    struct voice *v = ctx;
    const struct conf_voice_topics *t = &v->vc->topics;
    char device[VOICE_DEVICE_MAX + 1];
    int which = voice_device_of(t->play, "{device}", m->topic, device, sizeof(device)) == 0      ? 0
                : voice_device_of(t->say_pcm, "{device}", m->topic, device, sizeof(device)) == 0 ? 1
                : voice_device_of(t->ctl, "{device}", m->topic, device, sizeof(device)) == 0     ? 2
                                                                                             : -1;
    struct voice_session *s = which < 0 ? NULL : voice_by_device(v, device);
    v->changed = true;
    if (!s) {
        v->n.control_unknown++; /* no session here: ended, or another instance's */
        return;
    }
    if (which == 0) {
        if (queue_packets(v, s, m->payload, m->len))
            kick(v, s);
    } else if (which == 1)
        say_pcm(v, s, m);
    else
        control(v, s, m);
}
