#!/usr/bin/env bash
# test_voice_auto.sh - auto listen mode through the voice gateway, with
# simulated devices (mqfork-device --silence) that never say listen stop:
#
#  1. dev-1 says goforward.raw (pocketsphinx-testdata), then streams
#     silence: the server's endpointing (speech.vad, voice.vad_silence_ms)
#     ends the utterance, and its transcript reaches the device as stt and
#     the backend on voice/dev-1/stt, once;
#  2. quiet-1 streams only silence: no stt, no transcript, the utterance
#     counted as silent;
#  3. dev-4 says it thrice, one utterance; the worker transcribing it is
#     killed: the supervisor's copy is transcribed again, the stt comes once,
#     and the crash line names the job (device, session, transcribe).
#
#   test_voice_auto.sh MQFORKD MQFORK-DEVICE MQFORKSTAT MQFORK_P2P.SO MQFORK_SPEECH.SO
set -u
FAILS=0
# shellcheck source=test/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
speech_test_init test_voice_auto "$@"

# Parts off: step 3 kills the worker in the middle of one long recognition,
# and a part (shorter) may end just before the kill lands.
start_voice_speech "  vad_silence_ms: 800" "  stt_part_ms: 0" || exit 1

# The backend: it logs the transcripts.
mosquitto_sub -h 127.0.0.1 -p "$PORT" -t 'voice/+/stt' -t test/probe -F '%t %p' \
    >"$TMP/backend.log" &
PIDS+=($!)
listens() {
    mosquitto_pub -h 127.0.0.1 -p "$PORT" -t test/probe -m probe
    grep -q probe "$TMP/backend.log" 2>/dev/null
}
wait_for 10 listens || fail "the backend does not listen"
stat_of() {
    "$MQFORKSTAT" -n "$INSTANCE" -1 2>/dev/null | awk -v k="$1" '$1 == k { print $2 }'
}

# A device that has its stt is sent SIGINT (it then ends its session as a
# person would): nothing else is coming, and a loaded machine may take a
# while to transcribe, so it waits up to a minute instead of --wait.
until_stt() { # until_stt DEVICE-ID PID
    wait_for 60 grep -q "^$1 < {\"type\":\"stt\"" "$TMP/$1.err" || fail "$1 got no stt"
    kill -INT "$2"
    wait "$2" || fail "$1: $(tail -n 3 "$TMP/$1.err")"
}

# 1. Speech, then silence, and no listen stop: the server ends it.
"$DEVICE" -p "$PORT" -n 1 -a "$RAW" -m auto -S 4 -W 60 -vv >"$TMP/dev1.out" 2>"$TMP/dev-1.err" &
until_stt dev-1 $!
grep -q '"state":"stop"' "$TMP/dev-1.err" && fail "dev-1 sent listen stop"
grep -q 'dev-1 < {"type":"stt".*"text":"go forward ten meters"' "$TMP/dev-1.err" ||
    fail "dev-1 got no stt 'go forward ten meters'"
[ "$(grep -c 'dev-1 < {"type":"stt"' "$TMP/dev-1.err")" = 1 ] || fail "dev-1 got more than one stt"
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

# 3. The worker transcribing dies: the utterance is transcribed again from
# the audio the supervisor kept, and its transcript comes once. Three times
# goforward.raw without its trailing silence (its speech ends at 2.2 s) is
# one utterance, long enough to catch the recognizer at work.
head -c 73600 "$RAW" >"$TMP/once.raw"
cat "$TMP/once.raw" "$TMP/once.raw" "$TMP/once.raw" >"$TMP/thrice.raw"
BEFORE=$(stat_of voice.utterances)
"$DEVICE" -p "$PORT" -n 1 --id-start 4 -a "$TMP/thrice.raw" -m auto -S 4 -W 60 -v \
    >"$TMP/dev4.out" 2>"$TMP/dev-4.err" &
DEV4=$!
utterance_out() { [ "$(stat_of voice.utterances)" != "$BEFORE" ]; }
wait_for 30 utterance_out || fail "dev-4's utterance never ended"
transcribed() { grep -q 'voice/dev-4/stt' "$TMP/backend.log"; }
VICTIM=$(busy_worker transcribed)
if [ -n "$VICTIM" ]; then
    kill -9 "$VICTIM"
else
    fail "no worker caught transcribing dev-4's utterance"
fi
until_stt dev-4 "$DEV4"
{ [ "$(grep -c 'dev-4 < {"type":"stt"' "$TMP/dev-4.err")" = 1 ] &&
    grep -q 'dev-4 < {"type":"stt".*"text":"[^"]*forward[^"]*forward' "$TMP/dev-4.err"; } ||
    fail "dev-4 did not get one stt of 'go forward ten meters' said thrice"
[ "$(grep -c 'voice/dev-4/stt ' "$TMP/backend.log")" = 1 ] || fail "not one transcript on voice/dev-4/stt"
REPLAYS=$(stat_of voice.stt_replays)
((${REPLAYS:-0} >= 1)) || fail "voice.stt_replays is ${REPLAYS:-missing}: the transcription was not cut"
# The crash line says which job it cut: the voice source describes it.
grep -qE "crashed: signal 9 running job [0-9]+ \(voice transcribe, device dev-4, session [0-9a-f]+\)" \
    "$TMP/daemon.log" || fail "the crash line does not name dev-4's transcription: $(grep crashed "$TMP/daemon.log")"
echo "speech.vad: $(stat_of plugin.speech.vad.windows) windows, $(stat_of plugin.speech.vad.audio_ms)" \
    "ms of audio searched in $(stat_of plugin.speech.vad.search_us) us"

if ((FAILS > 0)); then
    for f in dev-1 dev-4; do echo "--- $f"; tail -n 10 "$TMP/$f.err"; done
    echo "--- daemon"; tail -n 20 "$TMP/daemon.log"
    "$MQFORKSTAT" -n "$INSTANCE" -1 2>/dev/null |
        grep -E '^voice\.(utter|transc|endp|vad|stt)|^kind.voice.stt.(rec|comp|fail)|^jobs_inflight'
    exit 1
fi
echo "test_voice_auto: all checks passed"
