/* voice_stats.c - the voice gateway's figures: its block "voice" in the
 * segment, so mqforkstat shows them as voice.<name> in every format without
 * knowing them in advance. Counted in private by the loop and published
 * once per round when they changed. */
#include <stddef.h>

#include "shm/statblock.h"
#include "supervisor/engine.h"
#include "supervisor/voice_impl.h"

#define F(kind, member, name, help) STATS_FIELD(kind, struct voice_figures, member, name, help)
#define L(member, name, label, help)                                                               \
    STATS_DESC(STATS_COUNTER, struct voice_figures, member, name, label, 1, help)

static const struct stats_field_desc voice_fields[] = {
    F(STATS_GAUGE, active, "sessions_active", "Voice sessions open now."),
    F(STATS_COUNTER, started, "sessions_started", "Voice sessions opened by a hello."),
    L(ended[END_GOODBYE], "sessions_ended.goodbye", "reason", "Sessions the device ended."),
    L(ended[END_SERVER], "sessions_ended.server", "reason", "Sessions the backend ended."),
    L(ended[END_IDLE], "sessions_ended.idle", "reason", "Sessions ended after voice.idle_s."),
    L(ended[END_REPLACED], "sessions_ended.replaced", "reason",
      "Sessions replaced by a new hello from the same device."),
    L(ended[END_SHUTDOWN], "sessions_ended.shutdown", "reason", "Sessions ended by shutdown."),
    L(refused[REFUSED_FULL], "hello_refused.full", "reason",
      "Hellos refused: voice.max_sessions reached, or shutting down."),
    L(refused[REFUSED_BAD_HELLO], "hello_refused.bad_hello", "reason",
      "Hellos refused: wrong version, transport or audio params."),
    L(refused[REFUSED_BAD_DEVICE], "hello_refused.bad_device", "reason",
      "Messages whose topic names no valid device id."),
    F(STATS_COUNTER, control_in, "control_in", "Control messages from devices."),
    F(STATS_COUNTER, control_bad, "control_bad", "Control messages refused as malformed."),
    F(STATS_COUNTER, control_unknown, "control_unknown",
      "Messages for a device or session that has no live session here."),
    F(STATS_COUNTER, forwarded, "forwarded",
      "Device messages passed to the other instances: a hello, or one of no session here."),
    F(STATS_COUNTER, forwards_other, "forwards_other",
      "Messages other instances forwarded that concern no session here."),
    F(STATS_COUNTER, dgrams_in, "datagrams_in", "UDP datagrams received."),
    F(STATS_COUNTER, bytes_in, "bytes_in", "UDP bytes received."),
    F(STATS_COUNTER, dgrams_out, "datagrams_out", "UDP datagrams sent."),
    F(STATS_COUNTER, bytes_out, "bytes_out", "UDP bytes queued to send."),
    F(STATS_COUNTER, send_errors, "send_errors", "UDP datagrams the kernel would not send."),
    L(drops[VOICE_SHORT], "dropped.short", "reason", "Datagrams shorter than the header."),
    L(drops[VOICE_BAD_TYPE], "dropped.bad_type", "reason", "Datagrams of a type other than 1."),
    L(drops[VOICE_BAD_LENGTH], "dropped.bad_length", "reason",
      "Datagrams whose length disagrees with their header."),
    L(drops[VOICE_UNKNOWN], "dropped.unknown", "reason", "Datagrams whose ssrc names no session."),
    L(drops[VOICE_REPLAYED], "dropped.replayed", "reason",
      "Datagrams whose sequence was not above the last: replayed or late."),
    F(STATS_COUNTER, lost, "lost", "Uplink packets missing from the sequence."),
    F(STATS_COUNTER, concealed, "concealed", "Lost uplink packets concealed by the decoder."),
    F(STATS_COUNTER, relayed, "relayed", "Uplink packets relayed to the backend."),
    F(STATS_COUNTER, decoded, "decoded", "Uplink packets decoded in the pool."),
    F(STATS_COUNTER, decode_failed, "decode_failed",
      "Uplink packets not decoded (refused, failed, or their worker died): the decoder resets."),
    F(STATS_COUNTER, decode_jobs, "decode_jobs",
      "Decode jobs given to the pool: the frames of a session that come while its job is in the "
      "pool go together in its next."),
    F(STATS_COUNTER, pcm_out, "pcm_messages", "Batches of decoded uplink published."),
    F(STATS_COUNTER, utterances, "utterances", "Utterances handed to the recognizer."),
    F(STATS_COUNTER, utterances_cut, "utterances_cut",
      "Utterances cut at voice.max_utterance_s and transcribed in parts."),
    F(STATS_COUNTER, transcripts, "transcripts", "Transcripts published."),
    F(STATS_COUNTER, transcripts_empty, "transcripts_empty",
      "Utterances the recognizer heard no words in."),
    F(STATS_COUNTER, stt_failed, "stt_failed", "Utterances refused or failed by the recognizer."),
    F(STATS_COUNTER, stt_parts, "utterance_parts",
      "Parts of utterances recognized while the device still spoke."),
    F(STATS_COUNTER, stt_part_words, "utterance_part_words",
      "Words the parts heard whole and kept: not left to the utterance's end."),
    F(STATS_COUNTER, utterances_silent, "utterances_silent",
      "Auto-mode utterances in which the detector heard no speech: not transcribed."),
    F(STATS_COUNTER, endpoints, "endpoints",
      "Auto-mode utterances ended by voice.vad_silence_ms of silence after speech."),
    F(STATS_COUNTER, vad_jobs, "vad_jobs", "Windows of audio handed to speech.vad."),
    F(STATS_COUNTER, vad_failed, "vad_failed",
      "Windows speech.vad refused or failed: the next window takes their audio."),
    F(STATS_COUNTER, silence_ms, "silence_ms",
      "Milliseconds of auto-mode audio let go as silence before any speech."),
    F(STATS_COUNTER, says, "says", "Texts the backend asked to be spoken."),
    F(STATS_COUNTER, sentences, "sentences", "Sentences synthesized for them."),
    F(STATS_COUNTER, say_failed, "say_failed",
      "Says refused (no voice, malformed, too long) and sentences not synthesized."),
    F(STATS_COUNTER, stt_replays, "stt_replays",
      "Utterances run again after their recognizer's worker died."),
    F(STATS_COUNTER, stt_quarantined, "stt_quarantined",
      "Utterances whose recognition killed workers more often than its retries: reported."),
    F(STATS_COUNTER, down_frames, "downlink_frames", "Downlink frames sent to devices."),
    F(STATS_COUNTER, down_underruns, "downlink_underruns", "Downlink frames due and not ready."),
    F(STATS_COUNTER, down_overflow, "downlink_overflow",
      "Downlink frames refused: the session's queue was full."),
    F(STATS_COUNTER, down_aborted, "downlink_aborted",
      "Downlink frames dropped by an abort or the session's end."),
    F(STATS_COUNTER, down_bad, "downlink_bad",
      "Backend messages refused: not audio, not a JSON object, or no device address yet."),
    F(STATS_HISTOGRAM, decode_latency, "decode_latency",
      "From an uplink datagram's arrival to its decoded PCM."),
    F(STATS_HISTOGRAM, down_lateness, "downlink_lateness",
      "How late each downlink frame left against its pacing slot."),
    F(STATS_HISTOGRAM, stt_latency, "stt_latency",
      "From an utterance's end (listen stop, or the endpoint) to its transcript out."),
    F(STATS_HISTOGRAM, say_first_audio, "say_first_audio",
      "From a say to the first frame of its speech sent to the device."),
};

int voice_stats_add(struct voice *v)
{
    struct stats_block_spec spec = {
        .name = "voice",
        .fields = voice_fields,
        .nfields = sizeof(voice_fields) / sizeof(voice_fields[0]),
        .size = sizeof(struct voice_figures),
    };
    if (!v->stats && !(v->stats = engine_add_block(v->engine, &spec)))
        return -1;
    return 0;
}

void voice_stats_publish(struct voice *v)
{
    stats_block_publish(v->stats, &v->n, sizeof(v->n));
    v->changed = false;
}
