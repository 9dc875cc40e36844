/* voice_say.c - text the backend wants a device to hear, on
 * voice/{device}/say: plain UTF-8, or JSON {"text": ..., "voice": ...}.
 *
 * The text is cut into sentences, so the first audio leaves while the rest
 * is still being made. Each sentence is a speech.synthesize job (the speech
 * plugin) in the session's stream, so they come back in order; its PCM is
 * encoded and queued like say_pcm's (voice_down.c), behind a tts
 * sentence_start that carries the sentence. tts start goes first and tts
 * stop after the last sentence, all in order with the audio. An abort from
 * the device drops what is still being made, and tts stop follows. */
#include <stdlib.h>
#include <string.h>

#include "shm/clock.h"
#include "supervisor/engine.h"
#include "supervisor/voice_impl.h"

#define SAY_MAX      4000 /* bytes of text one say may carry */
#define SENTENCE_MAX 200  /* bytes: a longer sentence is cut at a space, or by 300 anyway */

struct say_job {
    struct voice *v;
    uint32_t slot, gen, epoch;
    char *sentence_start; /* the tts message to go ahead of its audio */
};

static void describe_say(const void *ctx, char *buf, size_t len)
{
    const struct say_job *j = ctx;
    voice_job_describe(j->v, j->slot, j->gen, NULL, "say", buf, len);
}

void voice_say_done(struct voice *v, struct voice_session *s)
{
    char *stop = voice_tts_json(s->id, "stop", NULL);
    if (stop)
        voice_down_control(v, s, stop);
    free(stop);
}

static void on_spoken(void *ctx, const struct engine_outcome *o)
{
    struct say_job *j = ctx;
    struct voice *v = j->v;
    struct voice_session *s = voice_job_back(v, j->slot, j->gen);
    bool current = s && j->epoch == s->epoch;
    if (o->status != JOB_OK)
        v->n.say_failed++;
    if (current && o->status == JOB_OK)
        voice_down_pcm(v, s, o->data, o->len, j->sentence_start, true), j->sentence_start = NULL;
    if (current && --s->say_parts == 0)
        voice_say_done(v, s);
    if (current)
        voice_down_kick(v, s);
    v->changed = true;
    free(j->sentence_start);
    free(j);
}

/* A byte that ends a sentence, followed by space or the end: . ! ? ; and
 * their full-width forms (3 bytes each in UTF-8: 。！？；). */
static size_t sentence_end(const char *t, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (strchr(".!?;", t[i]) && (i + 1 == len || t[i + 1] == ' ' || t[i + 1] == '\n'))
            return i + 1;
        if (i + 3 <= len &&
            (!memcmp(t + i, "\xe3\x80\x82", 3) || !memcmp(t + i, "\xef\xbc\x81", 3) ||
             !memcmp(t + i, "\xef\xbc\x9f", 3) || !memcmp(t + i, "\xef\xbc\x9b", 3)))
            return i + 3;
        bool lead = (t[i] & 0xc0) != 0x80; /* not inside a UTF-8 character */
        if (i >= SENTENCE_MAX && lead && (t[i] == ' ' || i >= SENTENCE_MAX * 3 / 2))
            return i;
    }
    return len;
}

static bool speak(struct voice *v, struct voice_session *s, const char *text, size_t len,
                  const char *voice)
{
    cJSON *in = cJSON_CreateObject();
    char *sentence = strndup(text, len);
    cJSON_AddStringToObject(in, "text", sentence ? sentence : "");
    cJSON_AddStringToObject(in, "voice", voice);
    char *payload = cJSON_PrintUnformatted(in);
    cJSON_Delete(in);
    struct say_job *j = malloc(sizeof(*j));
    bool ok = payload && sentence && j;
    if (ok) {
        *j = (struct say_job){v, s->slot, s->gen, s->epoch,
                              voice_tts_json(s->id, "sentence_start", sentence)};
        struct engine_job job = {.kind = (uint32_t)v->tts_kind,
                                 .payload = payload,
                                 .len = strlen(payload),
                                 .stream = s->id,
                                 .stream_len = strlen(s->id),
                                 .priority = PRIO_HIGH,
                                 .timeout_ms = 10000,
                                 .retries = 1,
                                 .done = on_spoken,
                                 .describe = describe_say,
                                 .ctx = j};
        ok = engine_submit(v->engine, &job, NULL) == JOB_OK;
        if (!ok)
            free(j->sentence_start);
    }
    if (ok) {
        s->jobs++;
        s->say_parts++;
        v->n.sentences++;
    } else {
        free(j);
    }
    free(payload);
    free(sentence);
    return ok;
}

/* The text and voice of a say, or NULL when it is not one. */
static char *say_text(struct voice *v, const struct mqtt_message *m, char *voice, size_t vlen)
{
    snprintf(voice, vlen, "%s", v->vc->say_voice ? v->vc->say_voice : "");
    if (!m->len || m->len > SAY_MAX || memchr(m->payload, '\0', m->len))
        return NULL;
    if (((const char *)m->payload)[0] != '{')
        return strndup(m->payload, m->len);
    cJSON *o = cJSON_ParseWithLength(m->payload, m->len);
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(o, "text");
    const cJSON *vo = cJSON_GetObjectItemCaseSensitive(o, "voice");
    char *out = cJSON_IsString(text) ? strdup(text->valuestring) : NULL;
    if (cJSON_IsString(vo))
        snprintf(voice, vlen, "%s", vo->valuestring);
    cJSON_Delete(o);
    return out;
}

void voice_say_message(struct voice *v, struct voice_session *s, const struct mqtt_message *m)
{
    char voice[64];
    char *text = v->tts_kind >= 0 ? say_text(v, m, voice, sizeof(voice)) : NULL;
    v->changed = true;
    if (!text) {
        v->n.say_failed++;
        log_rated(&v->bad_control_log, LOG_LVL_WARN, "voice: %.64s: %s", m->topic,
                  v->tts_kind < 0 ? "say needs voice.say_voice and the speech plugin"
                                  : "not text of 1 to 4000 bytes, or JSON with a text string");
        return;
    }
    v->n.says++;
    bool started = s->say_parts > 0, any = false;
    if (!started) {
        char *start = voice_tts_json(s->id, "start", NULL);
        s->say_asked_ns = mono_ns();
        if (start)
            voice_down_say_start(v, s, start);
        free(start);
    }
    for (size_t at = 0, len = strlen(text); at < len;) {
        size_t n = sentence_end(text + at, len - at), skip = strspn(text + at, " \n\t");
        if (n > skip)
            any |= speak(v, s, text + at + skip, n - skip, voice);
        at += n;
    }
    if (!any && !started) {
        v->n.say_failed++;
        voice_say_done(v, s);
    }
    free(text);
    voice_down_kick(v, s);
}
