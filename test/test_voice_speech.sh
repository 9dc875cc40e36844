#!/usr/bin/env bash
# test_voice_speech.sh - a whole conversation through the voice gateway:
# a simulated device says goforward.raw (pocketsphinx-testdata) in manual
# listen mode; mqforkd decodes it in the pool and transcribes the utterance
# (uplink recognize, speech.transcribe); the device gets the transcript as
# stt and the backend on voice/{device}/stt; the backend, mqfork-echo-agent,
# answers on voice/{device}/say; the device gets tts start, a
# sentence_start, the spoken answer (speech.synthesize, flite rms) and tts
# stop, and saves it as a WAV, which recognized again holds the words.
#
#   test_voice_speech.sh MQFORKD MQFORK-DEVICE MQFORKSTAT MQFORK_P2P.SO MQFORK_SPEECH.SO \
#                        MQFORK-ECHO-AGENT
set -u
FAILS=0
# shellcheck source=test/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
speech_test_init test_voice_speech "$@"
AGENT=$6

# Parts every 1.5 s: what the device has said so far is recognized while
# it still speaks.
start_voice_speech "  stt_part_ms: 1500" "routes:" \
    "  - {name: again, subscribe: test/again, job: speech.transcribe, reply: test/again/out}" ||
    exit 1

# The backend: mqfork-echo-agent answers each transcript with "You said
# ..."; beside it, mosquitto_sub keeps what was published for the checks.
"$AGENT" -p "$PORT" -T >"$TMP/agent.out" 2>"$TMP/agent.err" &
PIDS+=($!)
mosquitto_sub -h 127.0.0.1 -p "$PORT" -t 'voice/+/stt' -t test/again/out -F '%t %p' \
    >"$TMP/backend.log" &
PIDS+=($!)
listens() {
    mosquitto_pub -h 127.0.0.1 -p "$PORT" -t test/again/out -m probe
    grep -q probe "$TMP/backend.log" 2>/dev/null
}
wait_for 10 listens || fail "the backend does not listen"
wait_for 10 grep -q listening "$TMP/agent.out" || fail "mqfork-echo-agent does not listen"

"$DEVICE" -p "$PORT" -n 1 -a "$RAW" -m manual -W 10 -w "$TMP/heard" -v -T -j \
    >"$TMP/device.out" 2>"$TMP/device.err" || fail "mqfork-device: $(tail -n 3 "$TMP/device.err")"
grep -q '"type":"stt".*"text":"go forward ten meters"' "$TMP/device.err" ||
    fail "the device got no stt 'go forward ten meters'"
grep -q 'voice/dev-1/stt .*"text":"go forward ten meters".*"audio_s"' "$TMP/backend.log" ||
    fail "no transcript on voice/dev-1/stt"
# from the first frame, though it may come before listen start (UDP is not
# slower than MQTT through the broker)
grep -q 'voice/dev-1/stt .*"start_s":0,' "$TMP/backend.log" ||
    fail "the transcript does not start with the device's first frame"
for state in '"state":"start"' '"state":"sentence_start","text":"You said go forward ten meters."' \
    '"state":"stop"'; do
    grep -q "\"type\":\"tts\".*$state" "$TMP/device.err" || fail "the device got no tts $state"
done
grep -q '^[0-9]*\.[0-9]\{6\} dev-1 heard "go forward ten meters", said "You said go forward ten meters."$' \
    "$TMP/agent.out" || fail "mqfork-echo-agent's line: $(tail -n 1 "$TMP/agent.out")"
# The agent's publish and the device's first audio, on one clock (-T).
SAID=$(awk '/ said "/ { print $1; exit }' "$TMP/agent.out")
HEARD=$(awk '$2 == "dev-1" && $3 == "<" && $4 == "audio" { print $1; exit }' "$TMP/device.err")
awk -v s="${SAID:-0}" -v h="${HEARD:-0}" 'BEGIN { exit !(s > 0 && h > s && h - s < 20) }' ||
    fail "say at ${SAID:-?}, its first audio at ${HEARD:-?}"
grep -Eq '"stt_p50_ms":[0-9.]+' "$TMP/device.out" || fail "the device timed no transcript"
WAV=$TMP/heard/dev-1.wav
SIZE=$(stat -c %s "$WAV" 2>/dev/null || echo 0)
# "You said go forward ten meters." is about 2 s at 16 kHz: 64 kB
((SIZE > 30000 && SIZE < 200000)) || fail "the answer saved is $SIZE bytes"

# What the device heard, recognized again.
tail -c +45 "$WAV" >"$TMP/heard.raw"
for _ in 1 2 3; do
    mosquitto_pub -h 127.0.0.1 -p "$PORT" -t test/again -f "$TMP/heard.raw"
    wait_for 20 grep -q 'test/again/out .*forward' "$TMP/backend.log" && break
done
grep -Eq 'test/again/out .*"text": *"[^"]*forward[^"]*meters' "$TMP/backend.log" ||
    fail "the answer recognized again: $(grep test/again/out "$TMP/backend.log" | tail -n 1)"
# A device that says goodbye as soon as it stops speaking: its transcript,
# still being made when its session ends, reaches the backend all the
# same, once, whole.
"$DEVICE" -p "$PORT" -n 1 -i bye- -a "$RAW" -m manual -W 0 -j >"$TMP/bye.out" 2>"$TMP/bye.err" ||
    fail "mqfork-device (bye): $(tail -n 3 "$TMP/bye.err")"
wait_for 30 grep -q 'voice/bye-1/stt ' "$TMP/backend.log" || fail "no transcript after the goodbye"
BYE=$(grep -c 'voice/bye-1/stt .*"text":"go forward ten meters"' "$TMP/backend.log")
((BYE == 1)) || fail "after the goodbye: $(grep 'voice/bye-1/stt' "$TMP/backend.log")"
stat_is() {
    "$MQFORKSTAT" -n "$INSTANCE" -1 2>/dev/null | grep -qx "$1 $2"
}
stat_is voice.transcripts 2 || fail "voice.transcripts is not 2"
stat_is voice.sentences 1 || fail "voice.sentences is not 1"
# A part went while the device spoke (what it kept depends on how soon it
# came back; the transcript above is whole and exact either way).
PARTS=$("$MQFORKSTAT" -n "$INSTANCE" -1 | awk '$1 == "voice.utterance_parts" {print $2}')
((${PARTS:-0} >= 1)) || fail "voice.utterance_parts is ${PARTS:-?}: no part recognized during speech"
# The utterance's end to its transcript, and the say to its first frame.
stat_is voice.stt_latency_count 2 || fail "voice.stt_latency not observed"
stat_is voice.say_first_audio_count 1 || fail "voice.say_first_audio not observed"
"$MQFORKSTAT" -n "$INSTANCE" -1 | grep -E '^voice\.((stt_latency|say_first_audio)_p50_us|utterance_part)'

if ((FAILS > 0)); then
    echo "--- backend"; cut -c1-300 "$TMP/backend.log"
    echo "--- device"; tail -n 20 "$TMP/device.err"
    echo "--- daemon"; tail -n 20 "$TMP/daemon.log"
    exit 1
fi
echo "test_voice_speech: all checks passed"
