#!/usr/bin/env bash
# test_voice_auto.sh - auto listen mode and abort through the voice gateway,
# with simulated devices (mqfork-device) that never say listen stop:
#
#  1. dev-1 says goforward.raw (pocketsphinx-testdata) in auto mode, then
#     keeps streaming silence: the server's endpointing (speech.vad, after
#     voice.vad_silence_ms) ends the utterance, and the transcript reaches
#     the device as stt and the backend on voice/dev-1/stt, once;
#  2. dev-2 streams only silence in auto mode: no stt, no transcript, the
#     utterance counted as silent;
#  3. dev-3 hears a long say and aborts it 600 ms into the speech: at most
#     the frame in flight arrives after the abort (2 allowed), far fewer
#     than the whole speech, and tts stop follows (no sentence_start of
#     what it will not hear);
#  4. the workers are killed while dev-4's utterance is transcribed: the
#     supervisor's copy is transcribed again, and the stt comes once.
#
#   test_voice_auto.sh MQFORKD MQFORK-DEVICE MQFORKSTAT MQFORK_P2P.SO MQFORK_SPEECH.SO
set -u
MQFORKD=$1
DEVICE=$2
MQFORKSTAT=$3
P2P=$4
SPEECH=$5
TMP=$(mktemp -d)
FAILS=0
PIDS=()
INSTANCE=vauto-$$
RAW=/usr/share/pocketsphinx/test/data/goforward.raw

cleanup() {
    for p in "${PIDS[@]}"; do kill_tree "$p"; done
    wait 2>/dev/null
    rm -rf "$TMP"
    rm -f "/dev/shm/mqfork.$INSTANCE"
}
trap cleanup EXIT

# shellcheck source=test/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ -r "$RAW" ] || { echo "test_voice_auto: no $RAW (pocketsphinx-testdata): skipped"; exit 77; }
start_broker "plugin $P2P" || { fail "mosquitto does not start"; exit 1; }
PIDS+=("$BROKER")

cat >"$TMP/voice.yaml" <<EOF
instance: $INSTANCE
broker: {host: 127.0.0.1, port: $PORT}
workers: {min: 2, max: 2}
limits: {max_payload: 500000}
streams: {max: 4096}
plugins: [$SPEECH]
voice:
  port: $((PORT + 1))
  uplink: [recognize]
  vad_silence_ms: 800
  say_voice: rms
  downlink_rate: 16000
EOF
"$MQFORKD" -t -c "$TMP/voice.yaml" >/dev/null || fail "mqforkd -t refuses the configuration"
"$MQFORKD" -c "$TMP/voice.yaml" >"$TMP/daemon.log" 2>&1 &
DAEMON=$!
PIDS+=("$DAEMON")
wait_for 20 grep -q "subscribed to voice/+/say" "$TMP/daemon.log" || fail "the daemon does not subscribe"

# The backend: logs transcripts; when dev-3 stops listening, it answers
# with speech much longer than the abort lets through.
LONG="This answer is long on purpose. It goes on for several sentences. The device will not \
hear the end of it. It stops listening well before that. Nobody hears this sentence. \
Nor this one, which is the last."
backend() {
    mosquitto_sub -h 127.0.0.1 -p "$PORT" -t 'voice/+/stt' -t 'voice/dev-3/events' -t test/probe \
        -F '%t %p' |
        while read -r topic payload; do
            echo "$topic $payload" >>"$TMP/backend.log"
            case $topic in
            voice/dev-3/events)
                grep -q '"state":"stop"' <<<"$payload" &&
                    mosquitto_pub -h 127.0.0.1 -p "$PORT" -t voice/dev-3/say -m "$LONG"
                ;;
            esac
        done
}
backend &
PIDS+=($!)
listens() {
    mosquitto_pub -h 127.0.0.1 -p "$PORT" -t test/probe -m probe
    grep -q probe "$TMP/backend.log" 2>/dev/null
}
wait_for 10 listens || fail "the backend does not listen"
stat_of() {
    "$MQFORKSTAT" -n "$INSTANCE" -1 2>/dev/null | awk -v k="$1" '$1 == k { print $2 }'
}

# 1. Speech, then silence, and no listen stop: the server ends it.
"$DEVICE" -p "$PORT" -n 1 -a "$RAW" -m auto -S 4 -W 10 -vv \
    >"$TMP/dev1.out" 2>"$TMP/dev1.err" || fail "dev-1: $(tail -n 3 "$TMP/dev1.err")"
grep -q '"state":"stop"' "$TMP/dev1.err" && fail "dev-1 sent listen stop"
grep -q 'dev-1 < {"type":"stt".*"text":"go forward ten meters"' "$TMP/dev1.err" ||
    fail "dev-1 got no stt 'go forward ten meters'"
[ "$(grep -c 'dev-1 < {"type":"stt"' "$TMP/dev1.err")" = 1 ] || fail "dev-1 got more than one stt"
grep -q 'voice/dev-1/stt .*"text":"go forward ten meters".*"audio_s"' "$TMP/backend.log" ||
    fail "no transcript on voice/dev-1/stt"
[ "$(stat_of voice.endpoints)" = 1 ] || fail "voice.endpoints is $(stat_of voice.endpoints), not 1"
[ "$(stat_of voice.transcripts)" = 1 ] || fail "voice.transcripts is not 1"

# 2. Silence only: nothing is transcribed, the utterance is counted.
SILENT=$(stat_of voice.utterances_silent)
printf '\0\0' >"$TMP/quiet.raw"
"$DEVICE" -p "$PORT" -n 1 -i quiet- -a "$TMP/quiet.raw" -m auto -S 4 -W 1 -v \
    >"$TMP/dev2.out" 2>"$TMP/dev2.err" || fail "quiet-1: $(tail -n 3 "$TMP/dev2.err")"
grep -q '"type":"stt"' "$TMP/dev2.err" && fail "silence got an stt"
one_more_silent() { [ "$(stat_of voice.utterances_silent)" = $((SILENT + 1)) ]; }
wait_for 15 one_more_silent ||
    fail "voice.utterances_silent is $(stat_of voice.utterances_silent), not $((SILENT + 1))"
[ "$(stat_of voice.transcripts)" = 1 ] || fail "silence was transcribed"
[ "$(stat_of voice.utterances)" = 1 ] || fail "silence went to the recognizer"
grep -q 'quiet-1/stt' "$TMP/backend.log" && fail "a transcript of silence on quiet-1/stt"
SILENT_MS=$(stat_of voice.silence_ms)
((${SILENT_MS:-0} > 2000)) || fail "voice.silence_ms is ${SILENT_MS:-missing}: 4 s were silent"

# 3. Abort mid-speech: the downlink stops within a frame.
"$DEVICE" -p "$PORT" -n 1 --id-start 3 -a "$RAW" -m manual -W 20 --abort-after-ms 600 \
    -j -vv >"$TMP/dev3.json" 2>"$TMP/dev3.err" || fail "dev-3: $(tail -n 3 "$TMP/dev3.err")"
AFTER=$(grep -o '"after_abort":[0-9]*' "$TMP/dev3.json" | head -n 1 | cut -d: -f2)
RECEIVED=$(grep -o '"received":[0-9]*' "$TMP/dev3.json" | head -n 1 | cut -d: -f2)
ABORTS=$(grep -o '"aborts":[0-9]*' "$TMP/dev3.json" | head -n 1 | cut -d: -f2)
[ "${ABORTS:-0}" = 1 ] || fail "dev-3 sent ${ABORTS:-no} aborts, not 1"
((${AFTER:-99} <= 2)) || fail "$AFTER downlink frames after the abort (at most 2: one in flight)"
# 600 ms is 10 frames; the whole answer is about 15 s, 250 frames
((${RECEIVED:-999} < 60)) || fail "dev-3 heard $RECEIVED frames of a speech it aborted"
AFTER_LOG=$(sed -n '/^dev-3 > .*"type":"abort"/,$p' "$TMP/dev3.err")
grep -q '"type":"tts".*"state":"stop"' <<<"$AFTER_LOG" || fail "no tts stop after the abort"
grep -q 'sentence_start' <<<"$AFTER_LOG" && fail "a sentence_start after the abort"
[ "$(stat_of voice.downlink_aborted)" -gt 0 ] 2>/dev/null ||
    fail "voice.downlink_aborted is $(stat_of voice.downlink_aborted)"

# 4. The workers die while the utterance is transcribed: it is replayed
# from the audio the supervisor kept, and its transcript comes once.
# Three times goforward.raw without its trailing silence (its speech ends
# at 2.2 s): one utterance, long enough to be caught in the recognizer.
head -c 73600 "$RAW" >"$TMP/once.raw"
cat "$TMP/once.raw" "$TMP/once.raw" "$TMP/once.raw" >"$TMP/thrice.raw"
BEFORE=$(stat_of voice.utterances)
utterances_changed() { [ "$(stat_of voice.utterances)" != "$BEFORE" ]; }
"$DEVICE" -p "$PORT" -n 1 --id-start 4 -a "$TMP/thrice.raw" -m auto -S 4 -W 10 -v \
    >"$TMP/dev4.out" 2>"$TMP/dev4.err" &
DEV4=$!
wait_for 30 utterances_changed || fail "dev-4's utterance never ended"
kill -9 $(pgrep -P "$DAEMON" -f 'mqforkd: worker') 2>/dev/null
wait "$DEV4" || fail "dev-4: $(tail -n 3 "$TMP/dev4.err")"
[ "$(grep -c 'dev-4 < {"type":"stt"' "$TMP/dev4.err")" = 1 ] &&
    grep -q 'dev-4 < {"type":"stt".*"text":"[^"]*forward[^"]*forward' "$TMP/dev4.err" ||
    fail "dev-4 did not get one stt of 'go forward ten meters' said thrice"
[ "$(grep -c 'voice/dev-4/stt ' "$TMP/backend.log")" = 1 ] || fail "not one transcript on voice/dev-4/stt"
REPLAYS=$(stat_of voice.stt_replays)
((${REPLAYS:-0} >= 1)) || fail "voice.stt_replays is ${REPLAYS:-missing}: the transcription was not cut"
echo "vad: $(stat_of plugin.speech.vad.windows) windows, $(stat_of plugin.speech.vad.audio_ms) ms" \
    "of audio searched in $(stat_of plugin.speech.vad.search_us) us"

if ((FAILS > 0)); then
    echo "--- dev-1"; tail -n 20 "$TMP/dev1.err"
    echo "--- dev-3"; cat "$TMP/dev3.json"; tail -n 10 "$TMP/dev3.err"
    echo "--- daemon"; tail -n 20 "$TMP/daemon.log"
    "$MQFORKSTAT" -n "$INSTANCE" -1 2>/dev/null | grep -E '^voice\.(utter|transc|endp|vad|stt)|^kind.voice.stt.(rec|comp|fail)|^(engine|jobs|pool)'
    exit 1
fi
echo "test_voice_auto: all checks passed"
