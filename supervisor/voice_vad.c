/* voice_vad.c - endpointing: where an utterance ends in auto and realtime
 * listen mode, in which the device only starts listening and leaves the
 * end to the server.
 *
 * The detector is pocketsphinx's own (speech.vad: the front end the
 * recognizer decodes with, which tracks the noise floor in each mel band),
 * run in the pool like all audio work, so a crash in it costs a job, not
 * the supervisor. Debian 12 has no libfvad (WebRTC's detector), speexdsp's
 * is a loudness gate, and an energy threshold written here would be a
 * worse copy of pocketsphinx's in the one process that must not stall.
 *
 * A detector's state (its noise estimate) lives in a worker's heap and
 * cannot move between workers, so each speech.vad job is stateless: every
 * VAD_EVERY_MS of new audio, the newest window goes to the pool, the new
 * audio led by VAD_LEAD_MS already judged, which the detector needs to
 * learn the noise (it takes the start of any input for speech for up to a
 * second: a stretch it reports in a window's first VAD_EDGE_MS counts only
 * past the lead), and stretches shorter than VAD_MIN_MS are clicks, not
 * words (decoded silence has them where the device's encoder sent comfort
 * noise). What the answers say is kept here, in the session:
 * whether the utterance holds speech, and where the latest speech ended.
 * voice.vad_silence_ms past that end, the utterance goes to the recognizer
 * (voice_stt_cut) and the next begins. Until the first speech, the audio
 * older than the lead is silence and is let go (counted), so a device
 * listening to a quiet room holds a second of audio, not
 * voice.max_utterance_s.
 *
 * One job per session is in flight. A job whose worker died is run again
 * by the engine and gives the same answer; one that fails leaves its audio
 * to the next window (VAD_MAX_MS at most), and an utterance the detector
 * never judged is still cut at voice.max_utterance_s and transcribed:
 * a failing detector makes the end late, it loses nothing. */
#include <stdlib.h>
#include <string.h>

#include "supervisor/engine.h"
#include "supervisor/voice_impl.h"

#define VAD_EVERY_MS    300   /* new audio that makes a window */
#define VAD_LEAD_MS     1000  /* judged audio ahead of it, for the noise */
#define VAD_EDGE_MS     200   /* a stretch starting this early may be the noise not yet learnt */
#define VAD_MAX_MS      10000 /* the longest window (after failures) */
#define VAD_MIN_MS      200   /* shorter stretches are clicks (and DTX's comfort noise) */
#define VAD_HANGOVER_MS 100   /* speech.vad's: silence it still counts as speech */

#define SAMPLES(ms) ((uint64_t)(ms) * (VOICE_UP_RATE / 1000))

struct vad_job {
    struct voice *v;
    uint32_t slot, gen;
    uint64_t from, to; /* the window, in stream time */
};

static void describe_vad(const void *ctx, char *buf, size_t len)
{
    const struct vad_job *j = ctx;
    voice_job_describe(j->v, j->slot, j->gen, NULL, "vad", buf, len);
}

/* One stretch of speech the detector reported, [A, B) ms into the window;
 * *OPEN when it lasts to the window's end. False when it is malformed. */
static bool take_stretch(struct voice_session *s, const struct vad_job *j, const cJSON *a,
                         const cJSON *b, bool *open_end)
{
    if (!cJSON_IsNumber(a) || !cJSON_IsNumber(b) || a->valuedouble < 0 ||
        b->valuedouble < a->valuedouble || b->valuedouble > VAD_MAX_MS + VAD_LEAD_MS)
        return false;
    uint64_t start = j->from + SAMPLES(a->valuedouble), end = j->from + SAMPLES(b->valuedouble);
    uint64_t learnt = j->from + SAMPLES(VAD_LEAD_MS);
    if (start < j->from + SAMPLES(VAD_EDGE_MS) && start < learnt)
        start = learnt;
    if (end > j->to)
        end = j->to;
    /* one still open at the window's end may hold the detector's hangover:
     * if that short, the next window says what it was */
    bool open = b->valuedouble >= (double)(j->to - j->from) * 1000 / VOICE_UP_RATE - 10;
    *open_end |= open;
    if (b->valuedouble - a->valuedouble < VAD_MIN_MS + (open ? VAD_HANGOVER_MS : 0))
        return true;
    if (end > start && end > s->utt_start) {
        s->voiced = true;
        if (end > s->voiced_end)
            s->voiced_end = end;
    }
    return true;
}

/* What the answer means for the utterance: silence let go, or its end. */
static void judge(struct voice *v, struct voice_session *s, const struct vad_job *j,
                  const cJSON *speech)
{
    const cJSON *stretch;
    bool open_end = false;
    cJSON_ArrayForEach(stretch, speech)
    {
        if (!take_stretch(s, j, cJSON_GetArrayItem(stretch, 0), cJSON_GetArrayItem(stretch, 1),
                          &open_end))
            v->n.vad_failed++; /* cannot happen: speech.vad writes them */
    }
    if (j->to > s->vad_done)
        s->vad_done = j->to;
    if (!s->voiced) {
        uint64_t keep = j->to > SAMPLES(VAD_LEAD_MS) ? j->to - SAMPLES(VAD_LEAD_MS) : 0;
        if (keep > s->utt_start) {
            v->n.silence_ms += (keep - s->utt_start) * 1000 / VOICE_UP_RATE;
            voice_stt_trim(v, s, keep);
        }
    } else if (!open_end && j->to >= s->voiced_end + SAMPLES(v->vc->vad_silence_ms)) {
        /* not while something begins: the detector is late to hear speech
         * resume (its noise estimate rose with the last), and a stretch
         * too short to count yet may be a word */
        v->n.endpoints++;
        voice_stt_cut(v, s, j->to);
    }
}

static void on_vad(void *ctx, const struct engine_outcome *o)
{
    struct vad_job *j = ctx;
    struct voice *v = j->v;
    struct voice_session *s = voice_by_slot(v, j->slot, j->gen);
    cJSON *r = o->status == JOB_OK ? cJSON_ParseWithLength((const char *)o->data, o->len) : NULL;
    const cJSON *speech = cJSON_GetObjectItemCaseSensitive(r, "speech_ms");
    if (s)
        s->vad_busy = false;
    if (!cJSON_IsArray(speech)) {
        v->n.vad_failed++;
        log_rated(&v->bad_control_log, LOG_LVL_WARN, "voice: %s: speech.vad failed: %.*s",
                  s ? s->device : "a session that ended", (int)o->len, (const char *)o->data);
    } else if (s && s->listening && s->endpointing) {
        judge(v, s, j, speech);
    }
    cJSON_Delete(r);
    v->changed = true;
    free(j);
    if (s && s->listening && s->endpointing)
        voice_vad_check(v, s); /* audio may have come meanwhile */
}

void voice_vad_check(struct voice *v, struct voice_session *s)
{
    uint64_t to = s->utt_start + s->utt_len / 2;
    if (s->vad_busy || to < s->vad_done + SAMPLES(VAD_EVERY_MS))
        return;
    uint64_t from = s->vad_done > SAMPLES(VAD_LEAD_MS) ? s->vad_done - SAMPLES(VAD_LEAD_MS) : 0;
    if (to - from > SAMPLES(VAD_MAX_MS + VAD_LEAD_MS))
        from = to - SAMPLES(VAD_MAX_MS + VAD_LEAD_MS);
    if (from < s->utt_start)
        from = s->utt_start;
    struct vad_job *j = malloc(sizeof(*j));
    if (!j) {
        v->n.vad_failed++;
        return;
    }
    *j = (struct vad_job){.v = v, .slot = s->slot, .gen = s->gen, .from = from, .to = to};
    struct engine_job job = {.kind = (uint32_t)v->vad_kind,
                             .payload = s->utt + (from - s->utt_start) * 2,
                             .len = (size_t)(to - from) * 2,
                             .priority = PRIO_HIGH,
                             .timeout_ms = 5000,
                             .retries = 2,
                             .done = on_vad,
                             .describe = describe_vad,
                             .ctx = j};
    if (engine_submit(v->engine, &job, NULL) != JOB_OK) {
        v->n.vad_failed++; /* refused: overloaded, or shutting down; the next window has it */
        free(j);
        return;
    }
    v->n.vad_jobs++;
    s->vad_busy = true;
}
