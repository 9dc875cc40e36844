/* voice_stt.c - utterances (uplink recognize): what a device says, decoded
 * in the pool as any uplink, is kept here and handed to the recognizer
 * (speech.transcribe, the speech plugin). In manual listen mode
 * an utterance runs from listen start to listen stop; in auto and realtime
 * mode the device only starts listening, and voice_vad.c ends each
 * utterance after voice.vad_silence_ms of silence (voice_stt_cut), or
 * counts it as silent when it heard no speech. Keeping the audio until its
 * transcript is out is what makes a worker's death harmless: the engine
 * runs the job again on another worker (counted as a replay), and the
 * transcript is published once.
 *
 * pocketsphinx runs at a few times real time and its state cannot leave a
 * worker, so an utterance handed over whole at its end would be recognized
 * long after it. While the device speaks, every voice.stt_part_ms of new
 * audio goes to the recognizer as a part (one at a time); the words it
 * heard whole are kept, and the next part, or the end, starts where the
 * last of them ends. So at the end only the last words are left to
 * recognize.
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

/* Audio that comes just before listen start belongs to the utterance: the
 * device sends listen start over MQTT and its first frames over UDP at
 * once, and the frames often come first (through the pool even). */
#define PREROLL_BYTES (240 * (VOICE_UP_RATE / 1000) * 2)

/* A part's words that end this close to its end are left to the next. */
#define PART_HOLD_MS 300
/* Audio before a cut that the next part, or the end, hears again: the
 * recognizer needs the words before to hear the next well. The words it
 * hears in it, ending up to PART_SLACK_MS past it (its word ends move a
 * little from one hearing to the next), are the last part's, dropped. */
#define PART_LEAD_MS  500
#define PART_SLACK_MS 150
#define PART_LEAD     ((uint64_t)PART_LEAD_MS * (VOICE_UP_RATE / 1000)) /* samples */

/* A session's utterances with the recognizer, in the order they were
 * handed over: their transcripts go out in that order (a short utterance's
 * must not overtake a long one's), and the words of an utterance's parts
 * go out joined with its end's, as one. The queue outlives its session when
 * transcripts are still out at its end: they still reach the backend, in
 * their order, and the queue goes with its last. */
struct stt_queue {
    struct stt_job *head, *tail;
    char *said;          /* the held parts' transcripts, joined; NULL: none yet */
    bool said_held;      /* one or more is held (said may still be NULL) */
    double said_start_s; /* where the first began */
    bool orphan;         /* its session ended */
    char session_id[VOICE_SESSION_LEN + 1];
};

/* An utterance, or a part of one, with the recognizer. */
struct stt_job {
    struct voice *v;
    struct stt_queue *q;
    struct stt_job *next;
    uint32_t slot, gen;
    bool done;
    bool part;            /* recognized while its utterance goes on */
    struct stt_job *then; /* a part's: the end of its utterance, waiting for its cut */
    uint8_t *held;        /* such an end's audio, from the part's start */
    uint32_t held_len;
    uint64_t begin; /* stream time where its audio begins */
    uint64_t lead;  /* samples of it before the last cut: heard again */
    char *text;     /* once done: the transcript, NULL when it failed (counted) */
    double start_s, end_s;
    uint64_t ended_ns; /* when the utterance ended (mono_ns): its stt_latency */
    char device[VOICE_DEVICE_MAX + 1];
};

static void describe_transcribe(const void *ctx, char *buf, size_t len)
{
    const struct stt_job *j = ctx;
    voice_job_describe(j->v, j->slot, j->gen, j->device, j->part ? "transcribe part" : "transcribe",
                       buf, len);
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
    cJSON_AddStringToObject(o, "session_id", j->q->session_id);
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

/* Whether TEXT begins with the word *SAID ends with: the recognizer heard
 * the tail of a part's last word again at the start of what followed it
 * (its word ends are not exact), which is seldom a word said twice. */
static bool repeats_last_word(const char *said, const char *text)
{
    const char *last = strrchr(said, ' ');
    last = last ? last + 1 : said;
    size_t n = strlen(last);
    return n && strncmp(text, last, n) == 0 && (text[n] == ' ' || !text[n]);
}

/* TEXT after what *SAID holds, a space between; *SAID stays as it was when
 * there is no memory (the part is lost, as a failed one is). */
static void join(char **said, const char *text)
{
    if (*said && repeats_last_word(*said, text)) {
        text += strcspn(text, " ");
        text += strspn(text, " ");
    }
    if (!*text)
        return;
    char *both = NULL;
    if (asprintf(&both, "%s%s%s", *said ? *said : "", *said ? " " : "", text) >= 0) {
        free(*said);
        *said = both;
    }
}

/* A part's transcript waits in Q for the rest of its utterance. */
static void hold_part(struct stt_queue *q, struct stt_job *j)
{
    if (!q->said_held)
        q->said_start_s = j->start_s;
    q->said_held = true;
    if (j->text)
        join(&q->said, j->text);
}

/* The parts held before J come first in its transcript. */
static void take_held(struct stt_queue *q, struct stt_job *j)
{
    join(&q->said, j->text ? j->text : "");
    free(j->text);
    j->text = q->said;
    j->start_s = q->said_start_s;
    q->said = NULL;
    q->said_held = false;
}

/* J's transcript, to S's device while S lives (NULL: the backend only). */
static void publish_one(struct voice *v, struct voice_session *s, struct stt_job *j)
{
    struct stt_queue *q = j->q;
    if (j->part) {
        hold_part(q, j);
    } else {
        bool heard = j->text || q->said_held;
        if (q->said_held)
            take_held(q, j);
        if (j->text && *j->text) {
            v->n.transcripts++;
            publish_transcript(v, s, j, j->text);
            stats_hist_add(&v->n.stt_latency, mono_ns() - j->ended_ns);
        } else if (heard) {
            v->n.transcripts_empty++;
        }
    }
    free(j->text);
    free(j);
}

/* The transcripts of Q that are done and no longer wait for an earlier
 * one; an orphaned queue goes with its last. */
static void publish_ready(struct voice *v, struct stt_queue *q, struct voice_session *s)
{
    while (q->head && q->head->done) {
        struct stt_job *j = q->head;
        if (!(q->head = j->next))
            q->tail = NULL;
        publish_one(v, s, j);
    }
    if (q->orphan && !q->head) {
        free(q->said);
        free(q);
    }
}

/* Past the words of TEXT that end in J's lead (the last part's, heard
 * again); *END: the first end after them. */
static const char *past_lead(const struct stt_job *j, const char *text, const cJSON **end)
{
    double lead_ms = (double)j->lead * 1000 / VOICE_UP_RATE + PART_SLACK_MS;
    while (j->lead && *end && cJSON_IsNumber(*end) && (*end)->valuedouble <= lead_ms) {
        text += strspn(text, " ");
        text += strcspn(text, " ");
        *end = (*end)->next;
    }
    return text + strspn(text, " ");
}

/* A part's answer: past its lead, its words that end PART_HOLD_MS or more
 * before its end, and before another word, are kept (the recognizer's last
 * words are still unsure of themselves: the next part hears them again).
 * Returns the cut: where the last of them ends, in samples from the part's
 * start, a place between two words heard whole; 0 when none is kept. */
static uint64_t keep_words(struct voice *v, struct stt_job *j, const char *text, const cJSON *ends)
{
    double until = (j->end_s - j->start_s) * 1000 - PART_HOLD_MS;
    const cJSON *end = ends ? ends->child : NULL;
    const char *from = past_lead(j, text, &end), *to = from;
    size_t words = 0;
    double cut_ms = 0;
    /* a word the next begins after: the cut never leaves the end only
     * silence to recognize, in which pocketsphinx hears words */
    for (; end && end->next && cJSON_IsNumber(end) && end->valuedouble <= until; end = end->next) {
        cut_ms = end->valuedouble;
        to += strspn(to, " ");
        to += strcspn(to, " ");
        words++;
    }
    if (!words || !(j->text = strndup(from, (size_t)(to - from))))
        return 0;
    v->n.stt_part_words += words;
    return (uint64_t)cut_ms * (VOICE_UP_RATE / 1000);
}

static void send_held(struct voice *v, struct stt_job *j, uint64_t cut);

static void on_transcript(void *ctx, const struct engine_outcome *o)
{
    struct stt_job *j = ctx;
    struct voice *v = j->v;
    struct stt_queue *q = j->q;
    struct voice_session *s = q->orphan ? NULL : voice_by_slot(v, j->slot, j->gen);
    bool current = s && s->part_out == j; /* its utterance goes on */
    uint64_t cut = 0;
    if (current)
        s->part_out = NULL; /* the next may go */
    v->n.stt_replays += o->attempts > 1 ? o->attempts - 1 : 0;
    v->n.stt_quarantined += o->status == JOB_E_QUARANTINED;
    cJSON *r = o->status == JOB_OK ? cJSON_ParseWithLength((const char *)o->data, o->len) : NULL;
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(r, "text");
    if (!cJSON_IsString(text)) {
        v->n.stt_failed += !j->part; /* a part's words are heard again later */
        log_rated(&v->bad_control_log, LOG_LVL_WARN,
                  "voice: %s: an utterance not transcribed: %.*s", j->device,
                  o->status == JOB_OK ? 0 : (int)o->len, (const char *)o->data);
    } else if (j->part) {
        cut = keep_words(v, j, text->valuestring, cJSON_GetObjectItemCaseSensitive(r, "ends_ms"));
    } else {
        const cJSON *ends = cJSON_GetObjectItemCaseSensitive(r, "ends_ms");
        const cJSON *end = ends ? ends->child : NULL;
        if (!(j->text = strdup(past_lead(j, text->valuestring, &end))))
            v->n.stt_failed++;
    }
    cJSON_Delete(r);
    v->changed = true;
    if (current && cut)
        s->part_from = j->begin + cut;
    if (j->then) /* the end of its utterance waited for the cut */
        send_held(v, j->then, cut ? cut : j->lead);
    j->done = true;
    publish_ready(v, q, s);
}

/* S's queue, made with its first utterance; NULL without memory. */
static struct stt_queue *queue_of(struct voice_session *s)
{
    if (!s->stt && (s->stt = calloc(1, sizeof(*s->stt))))
        memcpy(s->stt->session_id, s->id, sizeof(s->stt->session_id));
    return s->stt;
}

/* A new job for S's queue, in its place at the end; NULL without memory. */
static struct stt_job *append_job(struct voice *v, struct voice_session *s)
{
    struct stt_queue *q = queue_of(s);
    struct stt_job *j = q ? calloc(1, sizeof(*j)) : NULL;
    if (!j)
        return NULL;
    *j = (struct stt_job){.v = v, .q = q, .slot = s->slot, .gen = s->gen};
    memcpy(j->device, s->device, sizeof(j->device));
    if (q->tail)
        q->tail = q->tail->next = j;
    else
        q->head = q->tail = j;
    return j;
}

/* J, done with nothing (more) to recognize: its transcript still goes
 * out in its turn, with the parts' words. */
static void end_empty(struct voice *v, struct stt_job *j)
{
    j->done = true;
    j->text = strdup("");
    publish_ready(v, j->q, voice_by_slot(v, j->slot, j->gen));
}

/* J's LEN bytes of audio at PCM to the recognizer; false when it is done
 * already: nothing to recognize, or refused (failed, and in its place
 * still for the parts' sake). */
static bool recognize(struct voice *v, struct stt_job *j, const uint8_t *pcm, uint32_t len)
{
    if (!len) {
        end_empty(v, j);
        return false;
    }
    struct engine_job job = {.kind = (uint32_t)v->stt_kind,
                             .payload = pcm,
                             .len = len,
                             .priority = PRIO_NORMAL,
                             .timeout_ms = 60000,
                             .retries = 2,
                             .done = on_transcript,
                             .describe = describe_transcribe,
                             .ctx = j};
    v->n.utterances += !j->part;
    v->n.stt_parts += j->part;
    if (engine_submit(v->engine, &job, NULL) == JOB_OK)
        return true;
    v->n.stt_failed += !j->part; /* refused: overloaded, or shutting down */
    j->done = true;
    publish_ready(v, j->q, voice_by_slot(v, j->slot, j->gen));
    return false;
}

/* An utterance's end that waited for its part's cut: the audio from the
 * lead before FROM (samples from the part's start, where its audio does). */
static void send_held(struct voice *v, struct stt_job *j, uint64_t from)
{
    uint64_t lead = from < PART_LEAD ? from : PART_LEAD;
    uint64_t skip = (from - lead) * 2 < j->held_len ? (from - lead) * 2 : j->held_len;
    j->lead = lead;
    j->start_s += (double)(skip / 2) / VOICE_UP_RATE;
    recognize(v, j, j->held + skip, j->held_len - (uint32_t)skip);
    free(j->held);
    j->held = NULL;
}

/* Hand S's audio up to stream time UPTO to the recognizer: a PART of the
 * utterance, or its end, after which the next begins. A part's audio stays
 * in the buffer: the next part, or the end, starts at its cut. An end
 * that comes while a part is out waits for that cut, with a copy of its
 * audio, rather than recognize again all that the part is recognizing. */
static void submit(struct voice *v, struct voice_session *s, uint64_t upto, bool part)
{
    uint64_t begin =
        s->part_from > s->utt_start + PART_LEAD ? s->part_from - PART_LEAD : s->utt_start;
    uint64_t lead = s->part_from > begin ? s->part_from - begin : 0;
    uint64_t skip = (begin - s->utt_start) * 2, want = upto > begin ? (upto - begin) * 2 : 0;
    uint32_t have = s->utt_len > skip ? s->utt_len - (uint32_t)skip : 0;
    uint32_t len = want < have ? (uint32_t)want : have;
    if (part && !len)
        return;
    struct stt_job *j = len || (!part && s->parts) ? append_job(v, s) : NULL;
    if (j) {
        j->part = part;
        j->begin = begin;
        j->lead = lead;
        j->start_s = (double)begin / VOICE_UP_RATE;
        j->end_s = (double)upto / VOICE_UP_RATE;
        j->ended_ns = mono_ns();
        if (part) {
            s->part_upto = upto;
            if (recognize(v, j, s->utt + skip, len))
                s->part_out = j;
        } else if (s->part_out && len && (j->held = malloc(len))) {
            memcpy(j->held, s->utt + skip, len);
            j->held_len = len;
            s->part_out->then = j;
        } else {
            recognize(v, j, s->utt + skip, len);
        }
    } else if (len) {
        v->n.stt_failed += !part; /* no memory: counted as a failed transcription */
    }
    v->changed = true;
    if (part) {
        s->parts++;
        return;
    }
    s->part_out = NULL;
    s->part_from = s->part_upto = upto;
    voice_stt_trim(v, s, upto);
    s->parts = 0;
    s->voiced = false;
    s->voiced_end = upto;
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
    submit(v, s, upto, false);
}

/* What S has said since the last cut, recognized while it goes on
 * speaking: every voice.stt_part_ms of it, one part at a time, and in auto
 * mode once the detector heard speech (before, the audio is let go). A
 * part goes only when a worker can take it at once: one that waited would
 * hear less than the audio that came meanwhile, and its lead again for
 * nothing, so a busy pool recognizes fewer, longer parts. */
static void part_due(struct voice *v, struct voice_session *s)
{
    uint64_t now = s->utt_start + s->utt_len / 2;
    uint64_t every = (uint64_t)v->vc->stt_part_ms * (VOICE_UP_RATE / 1000);
    /* from the last part's end, not its cut: a part hears again only the
     * words its predecessor left, never all of them */
    uint64_t from = s->part_upto > s->utt_start ? s->part_upto : s->utt_start;
    if (every && !s->part_out && now >= from + every && (!s->endpointing || s->voiced) &&
        engine_would_start(v->engine, (uint32_t)v->stt_kind))
        submit(v, s, now, true);
}

/* The utterance ends (listen stop or start, the session's end): to the
 * recognizer, unless the detector heard nothing in it. */
static void finish(struct voice *v, struct voice_session *s)
{
    if (s->endpointing && !s->voiced && !s->parts) {
        v->n.utterances_silent += s->utt_len > 0 || s->vad_done > s->utt_start;
        v->n.silence_ms += s->utt_len / 2 * 1000 / VOICE_UP_RATE;
        voice_stt_trim(v, s, s->heard);
        v->changed = true;
        return;
    }
    submit(v, s, s->heard, false);
}

/* PCM (NULL: silence) to the utterance of S. */
static void append_audio(struct voice *v, struct voice_session *s, const uint8_t *pcm, size_t len)
{
    size_t most = (size_t)v->vc->max_utterance_s * VOICE_UP_RATE * 2;
    if (!s->utt && !(s->utt = malloc(most)))
        return;
    while (len) {
        size_t take = voice_pcm_fill(s->utt + s->utt_len, most - s->utt_len, pcm, len);
        pcm = pcm ? pcm + take : NULL;
        s->utt_len += (uint32_t)take;
        len -= take;
        if (s->utt_len == most) {
            v->n.utterances_cut++;
            submit(v, s, s->utt_start + s->utt_len / 2, false);
        }
    }
}

/* The newest PREROLL_BYTES of S's audio while it does not listen. */
static void keep_preroll(struct voice_session *s, const uint8_t *pcm, size_t len)
{
    if (!s->preroll && !(s->preroll = malloc(PREROLL_BYTES)))
        return;
    if (len >= PREROLL_BYTES) {
        pcm = pcm ? pcm + len - PREROLL_BYTES : NULL;
        len = PREROLL_BYTES;
        s->preroll_len = 0;
    } else if (s->preroll_len + len > PREROLL_BYTES) {
        size_t drop = s->preroll_len + len - PREROLL_BYTES;
        memmove(s->preroll, s->preroll + drop, s->preroll_len - drop);
        s->preroll_len -= (uint16_t)drop;
    }
    s->preroll_len += (uint16_t)voice_pcm_fill(s->preroll + s->preroll_len, len, pcm, len);
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
        uint64_t from = s->heard - s->preroll_len / 2;
        s->utt_start = s->part_from = s->part_upto = from;
        s->utt_len = 0;
        s->voiced = false;
        s->vad_done = s->voiced_end = from;
        if (s->preroll_len)
            append_audio(v, s, s->preroll, s->preroll_len);
        s->preroll_len = 0;
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
    s->heard += len / 2;
    if (v->stt_kind < 0)
        return;
    if (!(s->listening || s->closing)) {
        keep_preroll(s, pcm, len);
        return;
    }
    append_audio(v, s, pcm, len);
    if (s->closing && !s->decoding) {
        s->closing = false;
        finish(v, s);
    } else if (s->listening) {
        if (s->endpointing)
            voice_vad_check(v, s);
        part_due(v, s);
    }
}

void voice_stt_end(struct voice *v, struct voice_session *s)
{
    if (v->stt_kind >= 0 && (s->listening || s->closing))
        finish(v, s);
    free(s->utt);
    s->utt = NULL;
    free(s->preroll);
    s->preroll = NULL;
    s->preroll_len = 0;
    /* What is done goes out now; what is still out, when it comes back. */
    struct stt_queue *q = s->stt;
    s->stt = NULL;
    if (q) {
        q->orphan = true;
        publish_ready(v, q, s);
    }
}
