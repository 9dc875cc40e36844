/* voice_stt.c - utterances (uplink recognize): what a device says from
 * listen start to listen stop, decoded in the pool as any uplink, is kept
 * here and handed to the recognizer (speech.transcribe, the speech plugin)
 * as one job. Keeping the audio until its transcript is out is what makes
 * a worker's death harmless: the engine runs the job again on another
 * worker (counted as a replay), and the transcript is published once.
 *
 * The transcript goes to the device as stt, and to the backend on
 * voice/{device}/stt with the utterance's place in the session's stream
 * time. An utterance longer than voice.max_utterance_s is transcribed in
 * parts; one of noise only is counted, not published. */
#include <stdlib.h>
#include <string.h>

#include "supervisor/engine.h"
#include "supervisor/voice_impl.h"

#define RATE 16000 /* the uplink as decoded */

struct stt_job {
    struct voice *v;
    uint32_t slot, gen;
    double start_s, end_s;
    char device[VOICE_DEVICE_MAX + 1];
};

static void publish_transcript(struct voice *v, struct voice_session *s, const struct stt_job *j,
                               const char *text)
{
    char topic[VOICE_TOPIC_MAX];
    if (s) {
        char *stt = voice_stt_json(s->id, text);
        if (stt)
            voice_to_device(v, s->device, stt);
        free(stt);
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "stt");
    cJSON_AddStringToObject(o, "session_id", s ? s->id : "");
    cJSON_AddStringToObject(o, "device", j->device);
    cJSON_AddStringToObject(o, "text", text);
    cJSON_AddNumberToObject(o, "start_s", j->start_s);
    cJSON_AddNumberToObject(o, "end_s", j->end_s);
    cJSON_AddNumberToObject(o, "audio_s", j->end_s - j->start_s);
    char *json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (json && voice_topic(v->vc->topics.stt, j->device, topic, sizeof(topic)) == 0)
        mqtt_publish(v->mqtt, topic, json, strlen(json), 1, false, NULL, 0);
    free(json);
}

static void on_transcript(void *ctx, const struct engine_outcome *o)
{
    struct stt_job *j = ctx;
    struct voice *v = j->v;
    struct voice_session *s = voice_by_slot(v, j->slot, j->gen);
    v->n.stt_replays += o->attempts > 1 ? o->attempts - 1 : 0;
    cJSON *r = o->status == JOB_OK ? cJSON_ParseWithLength((const char *)o->data, o->len) : NULL;
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(r, "text");
    if (!cJSON_IsString(text)) {
        v->n.stt_failed++;
        log_rated(&v->bad_control_log, LOG_LVL_WARN,
                  "voice: %s: an utterance not transcribed: %.*s", j->device,
                  o->status == JOB_OK ? 0 : (int)o->len, (const char *)o->data);
    } else if (!text->valuestring[0]) {
        v->n.transcripts_empty++;
    } else {
        v->n.transcripts++;
        publish_transcript(v, s, j, text->valuestring);
    }
    cJSON_Delete(r);
    v->changed = true;
    free(j);
}

/* Hand what S heard to the recognizer, and start afresh. */
static void submit(struct voice *v, struct voice_session *s)
{
    struct stt_job *j = s->utt_len ? malloc(sizeof(*j)) : NULL;
    if (j) {
        *j = (struct stt_job){.v = v,
                              .slot = s->slot,
                              .gen = s->gen,
                              .start_s = (double)s->utt_start / RATE,
                              .end_s = (double)(s->utt_start + s->utt_len / 2) / RATE};
        memcpy(j->device, s->device, sizeof(j->device));
        struct engine_job job = {.kind = (uint32_t)v->stt_kind,
                                 .payload = s->utt,
                                 .len = s->utt_len,
                                 .priority = PRIO_NORMAL,
                                 .timeout_ms = 60000,
                                 .retries = 2,
                                 .done = on_transcript,
                                 .ctx = j};
        v->n.utterances++;
        if (engine_submit(v->engine, &job, NULL) != JOB_OK) {
            v->n.stt_failed++; /* refused: overloaded, or shutting down */
            free(j);
        }
    }
    s->utt_start += s->utt_len / 2;
    s->utt_len = 0;
    v->changed = true;
}

void voice_stt_listen(struct voice *v, struct voice_session *s, bool start)
{
    if (v->stt_kind < 0)
        return;
    if (start) {
        if (s->listening || s->closing)
            submit(v, s); /* a new start ends the last one */
        s->listening = true;
        s->closing = false;
        s->utt_start = s->heard;
        s->utt_len = 0;
        return;
    }
    if (!s->listening)
        return;
    s->listening = false;
    s->closing = s->decoding > 0; /* the last frames are still in the pool */
    if (!s->closing)
        submit(v, s);
}

void voice_stt_audio(struct voice *v, struct voice_session *s, const uint8_t *pcm, size_t len)
{
    size_t most = (size_t)v->vc->max_utterance_s * RATE * 2;
    s->heard += len / 2;
    if (v->stt_kind < 0 || !(s->listening || s->closing))
        return;
    if (!s->utt && !(s->utt = malloc(most)))
        return;
    while (len) {
        size_t take = most - s->utt_len < len ? most - s->utt_len : len;
        memcpy(s->utt + s->utt_len, pcm, take);
        s->utt_len += (uint32_t)take;
        pcm += take, len -= take;
        if (s->utt_len == most) {
            v->n.utterances_cut++;
            submit(v, s);
        }
    }
    if (s->closing && !s->decoding) {
        s->closing = false;
        submit(v, s);
    }
}

void voice_stt_end(struct voice *v, struct voice_session *s)
{
    if (v->stt_kind >= 0 && (s->listening || s->closing))
        submit(v, s);
    free(s->utt);
    s->utt = NULL;
}
