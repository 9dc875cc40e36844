/* voice_stt.c - utterances (uplink recognize): what a device says, decoded
 * in the pool as any uplink, is kept here and handed to the recognizer
 * (speech.transcribe, the speech plugin) as one job. In manual listen mode
 * an utterance runs from listen start to listen stop; in auto and realtime
 * mode the device only starts listening, and voice_vad.c ends each
 * utterance after voice.vad_silence_ms of silence (voice_stt_cut), or
 * counts it as silent when it heard no speech. Keeping the audio until its
 * transcript is out is what makes a worker's death harmless: the engine
 * runs the job again on another worker (counted as a replay), and the
 * transcript is published once.
 *
 * The transcript goes to the device as stt, and to the backend on
 * voice/{device}/stt with the utterance's place in the session's stream
 * time. An utterance longer than voice.max_utterance_s is transcribed in
 * parts; one of noise only is counted, not published. */
#include <stdlib.h>
#include <string.h>

#include "shm/clock.h"
#include "supervisor/engine.h"
#include "supervisor/voice_impl.h"

/* An utterance with the recognizer. A session's are listed in the order
 * they were handed over (s->stt_head), and their transcripts go out in
 * that order: a short utterance's must not overtake a long one's. */
struct stt_job {
    struct voice *v;
    struct stt_job *next;
    uint32_t slot, gen;
    bool done;
    char *text; /* once done: the transcript, NULL when none (counted) */
    double start_s, end_s;
    uint64_t ended_ns; /* when the utterance ended (mono_ns): its stt_latency */
    char device[VOICE_DEVICE_MAX + 1];
};

static void describe_transcribe(const void *ctx, char *buf, size_t len)
{
    const struct stt_job *j = ctx;
    voice_job_describe(j->v, j->slot, j->gen, j->device, "transcribe", buf, len);
}

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

static void publish_one(struct voice *v, struct voice_session *s, struct stt_job *j)
{
    if (j->text) {
        v->n.transcripts++;
        publish_transcript(v, s, j, j->text);
        stats_hist_add(&v->n.stt_latency, mono_ns() - j->ended_ns);
    }
    free(j->text);
    free(j);
}

/* The transcripts of S that are done and no longer wait for an earlier one. */
static void publish_ready(struct voice *v, struct voice_session *s)
{
    while (s->stt_head && s->stt_head->done) {
        struct stt_job *j = s->stt_head;
        if (!(s->stt_head = j->next))
            s->stt_tail = NULL;
        publish_one(v, s, j);
    }
}

static void on_transcript(void *ctx, const struct engine_outcome *o)
{
    struct stt_job *j = ctx;
    struct voice *v = j->v;
    struct voice_session *s = voice_by_slot(v, j->slot, j->gen);
    v->n.stt_replays += o->attempts > 1 ? o->attempts - 1 : 0;
    v->n.stt_quarantined += o->status == JOB_E_QUARANTINED;
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
        j->text = strdup(text->valuestring);
    }
    cJSON_Delete(r);
    v->changed = true;
    j->done = true;
    if (s)
        publish_ready(v, s);
    else /* its session ended while it was out: nothing to wait for */
        publish_one(v, NULL, j);
}

/* Hand S's audio up to stream time UPTO to the recognizer; what came after
 * it begins the next utterance. */
static void submit(struct voice *v, struct voice_session *s, uint64_t upto)
{
    uint64_t want = (upto - s->utt_start) * 2;
    uint32_t len = want < s->utt_len ? (uint32_t)want : s->utt_len;
    struct stt_job *j = len ? malloc(sizeof(*j)) : NULL;
    if (j) {
        *j = (struct stt_job){.v = v,
                              .slot = s->slot,
                              .gen = s->gen,
                              .start_s = (double)s->utt_start / VOICE_UP_RATE,
                              .end_s = (double)upto / VOICE_UP_RATE,
                              .ended_ns = mono_ns()};
        memcpy(j->device, s->device, sizeof(j->device));
        struct engine_job job = {.kind = (uint32_t)v->stt_kind,
                                 .payload = s->utt,
                                 .len = len,
                                 .priority = PRIO_NORMAL,
                                 .timeout_ms = 60000,
                                 .retries = 2,
                                 .done = on_transcript,
                                 .describe = describe_transcribe,
                                 .ctx = j};
        v->n.utterances++;
        if (engine_submit(v->engine, &job, NULL) != JOB_OK) {
            v->n.stt_failed++; /* refused: overloaded, or shutting down */
            free(j);
        } else if (s->stt_tail) {
            s->stt_tail = s->stt_tail->next = j;
        } else {
            s->stt_head = s->stt_tail = j;
        }
    }
    voice_stt_trim(v, s, upto);
    s->voiced = false;
    s->voiced_end = upto;
    v->changed = true;
}

void voice_stt_trim(struct voice *v, struct voice_session *s, uint64_t from)
{
    if (from <= s->utt_start)
        return;
    uint64_t want = (from - s->utt_start) * 2;
    uint32_t drop = want < s->utt_len ? (uint32_t)want : s->utt_len;
    if (drop)
        memmove(s->utt, s->utt + drop, s->utt_len - drop);
    s->utt_len -= drop;
    s->utt_start = from;
}

void voice_stt_cut(struct voice *v, struct voice_session *s, uint64_t upto)
{
    submit(v, s, upto);
}

/* The utterance ends (listen stop or start, the session's end): to the
 * recognizer, unless the detector heard nothing in it. */
static void finish(struct voice *v, struct voice_session *s)
{
    if (s->endpointing && !s->voiced) {
        v->n.utterances_silent += s->utt_len > 0 || s->vad_done > s->utt_start;
        v->n.silence_ms += s->utt_len / 2 * 1000 / VOICE_UP_RATE;
        voice_stt_trim(v, s, s->heard);
        v->changed = true;
        return;
    }
    submit(v, s, s->heard);
}

void voice_stt_listen(struct voice *v, struct voice_session *s, bool start,
                      enum voice_listen_mode mode)
{
    if (v->stt_kind < 0)
        return;
    if (start) {
        if (s->listening || s->closing)
            finish(v, s); /* a new start ends the last one */
        s->listening = true;
        s->closing = false;
        s->endpointing = mode != VOICE_MODE_MANUAL && v->vad_kind >= 0;
        s->utt_start = s->heard;
        s->utt_len = 0;
        s->voiced = false;
        s->vad_done = s->voiced_end = s->heard;
        return;
    }
    if (!s->listening)
        return;
    s->listening = false;
    s->closing = s->decoding > 0; /* the last frames are still in the pool */
    if (!s->closing)
        finish(v, s);
}

void voice_stt_audio(struct voice *v, struct voice_session *s, const uint8_t *pcm, size_t len)
{
    size_t most = (size_t)v->vc->max_utterance_s * VOICE_UP_RATE * 2;
    s->heard += len / 2;
    if (v->stt_kind < 0 || !(s->listening || s->closing))
        return;
    if (!s->utt && !(s->utt = malloc(most)))
        return;
    while (len) {
        size_t take = most - s->utt_len < len ? most - s->utt_len : len;
        if (pcm)
            memcpy(s->utt + s->utt_len, pcm, take), pcm += take;
        else
            memset(s->utt + s->utt_len, 0, take);
        s->utt_len += (uint32_t)take;
        len -= take;
        if (s->utt_len == most) {
            v->n.utterances_cut++;
            submit(v, s, s->utt_start + s->utt_len / 2);
        }
    }
    if (s->closing && !s->decoding) {
        s->closing = false;
        finish(v, s);
    } else if (s->listening && s->endpointing) {
        voice_vad_check(v, s);
    }
}

void voice_stt_end(struct voice *v, struct voice_session *s)
{
    if (v->stt_kind >= 0 && (s->listening || s->closing))
        finish(v, s);
    free(s->utt);
    s->utt = NULL;
    /* What is done goes out now; what is still out, when it comes back. */
    for (struct stt_job *j = s->stt_head, *next; j; j = next) {
        next = j->next;
        j->next = NULL;
        if (j->done)
            publish_one(v, s, j);
    }
    s->stt_head = s->stt_tail = NULL;
}
