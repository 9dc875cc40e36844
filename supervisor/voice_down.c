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
 * Each session has one bounded queue of audio frames and control messages,
 * in the order they came; audio still being encoded holds its place.
 * Audio leaves at real-time pace, one frame per frame duration on the
 * session's timer, scheduled from the first frame so that lateness does
 * not add up; a control message leaves as soon as what was queued before
 * it has left, so "tts stop" follows the speech it ends. A frame due when
 * the queue has run dry, or waits for the pool, is an underrun. An abort
 * from the device drops the audio still queued or being encoded. */
#include <stdlib.h>
#include <string.h>

#include "shm/clock.h"
#include "supervisor/engine.h"
#include "supervisor/voice_impl.h"

struct down_job {
    struct voice *v;
    uint32_t slot, gen;
    uint32_t epoch;          /* the session's when submitted: an abort raises it */
    bool say;                /* a part of a say: tts stop follows the last */
    char *before;            /* a control message for the device ahead of this audio, or NULL */
    struct voice_out *place; /* its place in the queue (OUT_PENDING) */
};

static void describe_encode(const void *ctx, char *buf, size_t len)
{
    const struct down_job *j = ctx;
    voice_job_describe(j->v, j->slot, j->gen, NULL, "encode", buf, len);
}

static uint64_t frame_ns(const struct voice *v)
{
    return (uint64_t)v->vc->downlink_frame_ms * 1000000;
}

/* Put O after AT in S's queue (NULL: at its end). */
static void insert(struct voice_session *s, struct voice_out *at, struct voice_out *o)
{
    if (!at)
        at = s->q_tail;
    o->next = at ? at->next : NULL;
    if (at)
        at->next = o;
    else
        s->q_head = o;
    if (s->q_tail == at)
        s->q_tail = o;
    s->q_frames += o->kind == OUT_AUDIO;
}

static struct voice_out *pop(struct voice_session *s)
{
    struct voice_out *o = s->q_head;
    if ((s->q_head = o->next) == NULL)
        s->q_tail = NULL;
    s->q_frames -= o->kind == OUT_AUDIO;
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
    while (s->q_head && s->q_head->kind != OUT_AUDIO && s->q_head->kind != OUT_PENDING) {
        struct voice_out *o = pop(s);
        if (o->kind != OUT_DONE)
            voice_to_device(v, s->device, (const char *)o->data);
        s->say_first_due |= o->kind == OUT_SAY_START;
        bool bye = o->kind == OUT_GOODBYE;
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
    if (s->q_head->kind == OUT_PENDING)
        return; /* the pool is still encoding it: its outcome kicks */
    struct voice_out *o = pop(s);
    uint64_t now = loop_now_ns(v->loop);
    stats_hist_add(&v->n.down_lateness, now > s->next_ns ? now - s->next_ns : 0);
    voice_udp_send(v, s, o->data, o->len);
    free(o);
    if (s->say_first_due) {
        s->say_first_due = false;
        stats_hist_add(&v->n.say_first_audio, mono_ns() - s->say_asked_ns);
    }
    s->next_ns += frame_ns(v);
    loop_timer_arm(v->loop, &s->pace, s->next_ns);
}

void voice_pace_fired(void *ctx)
{
    struct voice_session *s = ctx;
    if (s->q_head && s->q_head->kind == OUT_PENDING)
        s->owner->n.down_underruns++; /* a frame is due and the pool has not made it yet */
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

/* Queue DATA as KIND after AT (NULL: at the end). The entry, or NULL when
 * the queue is full of audio (counted) or memory ran out. */
static struct voice_out *enqueue(struct voice *v, struct voice_session *s, const void *data,
                                 size_t len, enum voice_out_kind kind, struct voice_out *at)
{
    if (kind == OUT_AUDIO && s->q_frames >= v->vc->queue_frames) {
        v->n.down_overflow++;
        return NULL;
    }
    struct voice_out *o = malloc(sizeof(*o) + len + 1);
    if (!o) {
        v->n.down_overflow++;
        return NULL;
    }
    o->kind = (uint8_t)kind;
    o->len = (uint16_t)len;
    if (len)
        memcpy(o->data, data, len);
    o->data[len] = '\0';
    insert(s, at, o);
    return o;
}

void voice_down_control(struct voice *v, struct voice_session *s, const char *json)
{
    enqueue(v, s, json, strlen(json), OUT_CONTROL, NULL);
}

void voice_down_say_start(struct voice *v, struct voice_session *s, const char *json)
{
    enqueue(v, s, json, strlen(json), OUT_SAY_START, NULL);
}

void voice_down_kick(struct voice *v, struct voice_session *s)
{
    kick(v, s);
}

void voice_down_abort(struct voice *v, struct voice_session *s)
{
    s->epoch++; /* audio still being encoded is dropped when it comes back */
    bool speaking = s->say_parts > 0;
    s->say_parts = 0;
    s->say_first_due = false; /* its first audio will not come */
    struct voice_out *keep = NULL, **tail = &keep;
    while (s->q_head) {
        struct voice_out *o = pop(s);
        if (o->kind == OUT_CONTROL || o->kind == OUT_GOODBYE || o->kind == OUT_SAY_START) {
            *tail = o;
            tail = &o->next;
        } else {
            v->n.down_aborted += o->kind == OUT_AUDIO;
            free(o);
        }
    }
    *tail = NULL; /* the last kept still points into the queue, at what was freed */
    for (struct voice_out *o = keep, *next; o; o = next) {
        next = o->next;
        insert(s, NULL, o);
    }
    if (speaking)
        voice_say_done(v, s);
    send_controls(v, s); /* last: a goodbye among them ends the session */
}

/* ---- the backend's messages -------------------------------------------------------- */

/* A payload that splits exactly into length-prefixed packets is a sequence;
 * anything else is one packet. Each is queued after *AT (NULL: at the end),
 * which then names the last one queued; true if any was. */
static bool queue_packets(struct voice *v, struct voice_session *s, const uint8_t *p, size_t len,
                          struct voice_out **at)
{
    size_t pos = 0;
    while (pos + 2 <= len) {
        size_t n = (size_t)p[pos] << 8 | p[pos + 1];
        if (n == 0 || n > VOICE_OPUS_MAX || pos + 2 + n > len)
            break;
        pos += 2 + n;
    }
    bool sequence = pos == len && len;
    if (!sequence && (!len || len > VOICE_OPUS_MAX)) {
        v->n.down_bad++; /* not one Opus packet */
        return false;
    }
    bool any = false;
    for (pos = 0; pos < len;) {
        size_t n = sequence ? (size_t)p[pos] << 8 | p[pos + 1] : len;
        const uint8_t *pkt = sequence ? p + pos + 2 : p;
        struct voice_out *o = enqueue(v, s, pkt, n, OUT_AUDIO, *at);
        if (o && *at)
            *at = o;
        any |= o != NULL;
        pos += sequence ? 2 + n : n;
    }
    return any;
}

/* Audio encoded for S: the message meant to go before it (a sentence's
 * tts sentence_start), then its packets; the last part of a say is
 * followed by tts stop. Parts of a downlink an abort cut are dropped. */
static void on_encoded(void *ctx, const struct engine_outcome *o)
{
    struct down_job *j = ctx;
    struct voice *v = j->v;
    struct voice_session *s = voice_job_back(v, j->slot, j->gen);
    bool current = s && j->epoch == s->epoch;
    if (o->status != JOB_OK)
        v->n.down_bad++;
    struct voice_out *at = current ? j->place : NULL;
    if (current && j->before)
        at = enqueue(v, s, j->before, strlen(j->before), OUT_ANNOUNCE, at) ?: at;
    if (current && o->status == JOB_OK)
        queue_packets(v, s, o->data, o->len, &at);
    if (current)
        j->place->kind = OUT_DONE;
    if (current && j->say && --s->say_parts == 0)
        voice_say_done(v, s);
    if (current)
        kick(v, s);
    v->changed = true;
    free(j->before);
    free(j);
}

static bool encode_part(struct voice *v, struct voice_session *s, const uint8_t *pcm, size_t len,
                        char *before, bool say)
{
    struct down_job *j = malloc(sizeof(*j));
    if (!j) {
        free(before);
        return false;
    }
    *j = (struct down_job){v, s->slot, s->gen, s->epoch, say, before, NULL};
    if (!(j->place = enqueue(v, s, NULL, 0, OUT_PENDING, NULL))) {
        free(before);
        free(j);
        return false;
    }
    struct engine_job job = {
        .kind = (uint32_t)v->encode_kind,
        .payload = pcm,
        .len = len,
        .stream = s->id,
        .stream_len = strlen(s->id),
        .priority = PRIO_HIGH,
        .timeout_ms = 5000,
        .retries = 2,
        .done = on_encoded,
        .describe = describe_encode,
        .ctx = j,
    };
    if (engine_submit(v->engine, &job, NULL) != JOB_OK) {
        j->place->kind = OUT_DONE;
        free(before);
        free(j);
        return false;
    }
    s->jobs++;
    s->say_parts += say;
    return true;
}

int voice_down_pcm(struct voice *v, struct voice_session *s, const uint8_t *pcm, size_t len,
                   char *before, bool say)
{
    size_t frame = (size_t)v->vc->downlink_rate / 1000 * v->vc->downlink_frame_ms * 2;
    size_t most = v->conf->limits.max_payload / frame * frame, parts = 0;
    if (!len || len % 2 || most == 0) {
        free(before);
        v->n.down_bad++;
        return -1;
    }
    /* whole frames, at most max_payload a job: the last one padded with silence */
    uint8_t *tail = NULL;
    for (size_t at = 0; at < len; at += most) {
        size_t n = len - at < most ? len - at : most;
        const uint8_t *part = pcm + at;
        if (n % frame) {
            size_t padded = (n / frame + 1) * frame;
            if (!(tail = calloc(1, padded)))
                break;
            memcpy(tail, part, n);
            part = tail, n = padded;
        }
        parts += encode_part(v, s, part, n, at == 0 ? before : NULL, say);
        free(tail);
        tail = NULL;
    }
    if (!parts)
        v->n.down_bad++; /* refused: overloaded, or shutting down */
    return parts ? 0 : -1;
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
    if (enqueue(v, s, m->payload, m->len, bye ? OUT_GOODBYE : OUT_CONTROL, NULL))
        kick(v, s);
}

/* Which of the backend's topics TOPIC is, with its device in DEVICE. */
enum back_topic { BACK_PLAY, BACK_SAY_PCM, BACK_CTL, BACK_SAY, BACK_NONE };

static enum back_topic back_topic(const struct conf_voice_topics *t, const char *topic,
                                  char *device, size_t len)
{
    const char *tmpl[] = {t->play, t->say_pcm, t->ctl, t->say};
    for (int i = 0; i < BACK_NONE; i++)
        if (voice_device_of(tmpl[i], "{device}", topic, device, len) == 0)
            return (enum back_topic)i;
    return BACK_NONE;
}

void voice_down_message(void *ctx, const struct mqtt_message *m)
{
    struct voice *v = ctx;
    char device[VOICE_DEVICE_MAX + 1];
    enum back_topic which = back_topic(&v->vc->topics, m->topic, device, sizeof(device));
    struct voice_session *s = which == BACK_NONE ? NULL : voice_by_device(v, device);
    v->changed = true;
    if (!s) {
        v->n.control_unknown++; /* no session here: ended, or another instance's */
        return;
    }
    switch (which) {
    case BACK_PLAY: {
        struct voice_out *at = NULL;
        if (queue_packets(v, s, m->payload, m->len, &at))
            kick(v, s);
        break;
    }
    case BACK_SAY_PCM:
        voice_down_pcm(v, s, m->payload, m->len, NULL, false);
        break;
    case BACK_CTL:
        control(v, s, m);
        break;
    default:
        voice_say_message(v, s, m);
        break;
    }
}
