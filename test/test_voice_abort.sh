#!/usr/bin/env bash
# test_voice_abort.sh - an abort mid-speech stops the downlink within one
# frame: a simulated device (mqfork-device --abort-after-ms) says
# goforward.raw, the backend answers with a long say (about 15 s of
# speech), and the device aborts 600 ms into it. At most the frame in
# flight arrives after the abort (2 allowed), far fewer than the whole
# speech arrive, and tts stop follows, with no sentence_start of what the
# device will not hear.
#
#   test_voice_abort.sh MQFORKD MQFORK-DEVICE MQFORKSTAT MQFORK_P2P.SO MQFORK_SPEECH.SO
set -u
FAILS=0
# shellcheck source=test/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
speech_test_init test_voice_abort "$@"

# shellcheck disable=SC2119 # no lines to add
start_voice_speech || exit 1

# The backend: when the device stops listening, a long answer.
LONG="This answer is long on purpose. It goes on for several sentences. The device will not \
hear the end of it. It stops listening well before that. Nobody hears this sentence. \
Nor this one, which is the last."
backend() {
    mosquitto_sub -h 127.0.0.1 -p "$PORT" -t 'voice/+/events' -t test/probe -F '%t %p' |
        while read -r topic payload; do
            echo "$topic $payload" >>"$TMP/backend.log"
            if [[ $topic == voice/*/events ]] && grep -q '"state":"stop"' <<<"$payload"; then
                dev=${topic#voice/}
                mosquitto_pub -h 127.0.0.1 -p "$PORT" -t "voice/${dev%/events}/say" -m "$LONG"
            fi
        done
}
backend &
PIDS+=($!)
listens() {
    mosquitto_pub -h 127.0.0.1 -p "$PORT" -t test/probe -m probe
    grep -q probe "$TMP/backend.log" 2>/dev/null
}
wait_for 10 listens || fail "the backend does not listen"

"$DEVICE" -p "$PORT" -n 1 -a "$RAW" -m manual -W 20 --abort-after-ms 600 -j -vv \
    >"$TMP/dev.json" 2>"$TMP/dev.err" || fail "dev-1: $(tail -n 3 "$TMP/dev.err")"
count() { grep -o "\"$1\":[0-9]*" "$TMP/dev.json" | head -n 1 | cut -d: -f2; }
AFTER=$(count after_abort)
RECEIVED=$(count received)
[ "$(count aborts)" = 1 ] || fail "the device sent $(count aborts) aborts, not 1"
((${AFTER:-99} <= 2)) || fail "$AFTER downlink frames after the abort (at most 2: one in flight)"
# 600 ms is 10 frames; the whole answer is about 15 s, 250 frames
((${RECEIVED:-999} < 60)) || fail "the device heard $RECEIVED frames of a speech it aborted"
AFTER_LOG=$(sed -n '/^dev-1 > .*"type":"abort"/,$p' "$TMP/dev.err")
grep -q '"type":"tts".*"state":"stop"' <<<"$AFTER_LOG" || fail "no tts stop after the abort"
grep -q 'sentence_start' <<<"$AFTER_LOG" && fail "a sentence_start after the abort"
ABORTED=$("$MQFORKSTAT" -n "$INSTANCE" -1 2>/dev/null | awk '$1 == "voice.downlink_aborted" { print $2 }')
((${ABORTED:-0} > 0)) || fail "voice.downlink_aborted is ${ABORTED:-missing}"
echo "abort: $RECEIVED frames heard, $AFTER after the abort, $ABORTED dropped by the server"

if ((FAILS > 0)); then
    echo "--- device"; cat "$TMP/dev.json"; tail -n 10 "$TMP/dev.err"
    echo "--- daemon"; tail -n 20 "$TMP/daemon.log"
    exit 1
fi
echo "test_voice_abort: all checks passed"
