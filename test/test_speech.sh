#!/usr/bin/env bash
# test_speech.sh - mqfork_speech.so (plugins/speech/) in a real daemon
# through a real mosquitto: goforward.raw (pocketsphinx-testdata) is
# transcribed "go forward ten meters"; flite's rms says "turn on the kitchen
# light" at 16 kHz, and that speech, transcribed again, holds "kitchen" and
# "light"; espeak-ng speaks Mandarin for a plausible time; mqforkd -t places
# a missing model at its file:line:column; a worker killed (-9) while it
# transcribes costs nothing: the job is retried and answered exactly once.
# It prints each worker's private and shared memory with the model loaded.
# Skipped (77) when the speech packages are missing.
#
#   test_speech.sh MQFORKD MQFORKSTAT PLUGIN
set -u
MQFORKD=$1
MQFORKSTAT=$2
PLUGIN=$3
TESTDATA=/usr/share/pocketsphinx/test/data
MODEL=/usr/share/pocketsphinx/model/en-us
FAILS=0

# shellcheck source=test/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
daemon_test_init speech-$$

for f in "$PLUGIN" "$TESTDATA/goforward.raw" "$MODEL/en-us/mdef"; do
    [ -e "$f" ] || {
        echo "SKIP: $f is missing (apt-get install pocketsphinx-en-us pocketsphinx-testdata)"
        exit 77
    }
done
for tool in mosquitto mosquitto_sub jq xxd; do
    command -v $tool >/dev/null || { echo "SKIP: no $tool"; exit 77; }
done

# ---- mqforkd -t: a model that is not there ----------------------------------

cat >"$TMP/bad.yaml" <<YAML
instance: $INSTANCE
plugins:
  - $PLUGIN
routes:
  - name: stt
    subscribe: stt/+/in
    job: speech.transcribe
    params:
      hmm: /nonexistent/en-us
  - name: tts
    subscribe: tts/+/in
    job: speech.synthesize
    params:
      voice: bogus
YAML
out=$("$MQFORKD" -t -c "$TMP/bad.yaml" 2>&1) && fail "-t accepted a missing model"
grep -qF "$TMP/bad.yaml:9:7: error: routes[0].params.hmm: /nonexistent/en-us: No such file or directory" <<<"$out" ||
    fail "-t does not place the missing hmm: $out"
grep -qF "$TMP/bad.yaml:14:7: error: routes[1].params.voice: unknown voice 'bogus'" <<<"$out" ||
    fail "-t does not place the unknown voice: $out"


# ---- a private broker ---------------------------------------------------------

start_broker || { fail "mosquitto does not start"; exit 1; }

# ---- the daemon with the routes -------------------------------------------------

# speech.synthesize bounds its output by its input's length (3 s + 125 ms a
# byte) up to its max_in (max_chars x 4 + 256 bytes); max_payload is 128 KiB
# for 4 s of 16 kHz speech to transcribe. The slab is generous (sparse in
# /dev/shm).
cat >"$TMP/run.yaml" <<YAML
instance: $INSTANCE
broker:
  host: 127.0.0.1
  port: $PORT
plugins:
  - $PLUGIN
workers:
  min: 2
  max: 2
limits:
  max_payload: 131072
  slab_mb: 1024
errors:
  topic: err/$INSTANCE
routes:
  - name: stt
    subscribe: stt/+/in
    job: speech.transcribe
    reply: stt/{1}/out
    retries: 2
    # Far above the ~1 s a transcription takes: on a machine as loaded as
    # 15 runnable processes on 2 cores one took 10 s.
    timeout_ms: 60000
  - name: tts
    subscribe: tts/+/in
    job: speech.synthesize
    reply: tts/{1}/out
    params:
      voice: rms
      sample_rate: 16000
  - name: tts_ok
    subscribe: ok/+/in
    job: speech.synthesize
    reply: ok/{1}/out
    cache: {ttl_s: 3600, max_mb: 4}
    params:
      voice: rms
      sample_rate: 16000
  - name: tts-cmn
    subscribe: cmn/+/in
    job: speech.synthesize
    reply: cmn/{1}/out
    params:
      voice: espeak:cmn
      sample_rate: 24000
YAML
out=$("$MQFORKD" -t -c "$TMP/run.yaml" 2>&1) || fail "-t rejects the good configuration: $out"

# Every payload in hex, one line per message: binary PCM survives.
daemon_test_start "$MQFORKD" --hex 'stt/+/out' 'tts/+/out' 'ok/+/out' 'cmn/+/out' \
    "err/$INSTANCE" || exit 1

count() { grep -c "^$1 " "$TMP/sub.out"; }
# The payload of the Nth message on TOPIC, as bytes.
payload() { grep "^$1 " "$TMP/sub.out" | sed -n "${2:-1}p" | cut -d' ' -f2 | xxd -r -p; }
has() { [ "$(count "$1")" -ge "${2:-1}" ]; }

pub_file() { mosquitto_pub -h 127.0.0.1 -p "$PORT" -t "$1" -f "$2"; }
pub() { mosquitto_pub -h 127.0.0.1 -p "$PORT" -t "$1" -m "$2"; }
errors() { payload "err/$INSTANCE" 1; }
in_range() { [ "$1" -ge "$2" ] && [ "$1" -le "$3" ]; }

# ---- transcribe -----------------------------------------------------------------

pub_file stt/a/in "$TESTDATA/goforward.raw"
wait_for 60 has stt/a/out || fail "no transcript of goforward.raw: $(errors)"
text=$(payload stt/a/out | jq -r .text)
echo "goforward.raw: $(payload stt/a/out)"
[ "$text" = "go forward ten meters" ] || fail "goforward.raw transcribed '$text'"

# One second of silence: no words, an empty text.
head -c 32000 /dev/zero >"$TMP/silence.raw"
pub_file stt/s/in "$TMP/silence.raw"
wait_for 60 has stt/s/out || fail "no transcript of silence: $(errors)"
[ "$(payload stt/s/out | jq -r .text)" = "" ] || fail "silence transcribed: $(payload stt/s/out)"

# ---- synthesize, and back -------------------------------------------------------

pub tts/b/in "turn on the kitchen light"
wait_for 60 has tts/b/out || fail "no speech from rms: $(errors)"
payload tts/b/out >"$TMP/rms.raw"
bytes=$(stat -c %s "$TMP/rms.raw")
echo "rms 'turn on the kitchen light': $bytes bytes ($((bytes / 32)) ms at 16 kHz)"
in_range "$bytes" 32000 128000 || fail "rms speech of $bytes bytes is not 1-4 s"
pub_file stt/b/in "$TMP/rms.raw"
wait_for 60 has stt/b/out || fail "no transcript of rms's speech: $(errors)"
text=$(payload stt/b/out | jq -r .text)
echo "rms's speech transcribed: '$text'"
{ grep -qw kitchen <<<"$text" && grep -qw light <<<"$text"; } ||
    fail "rms's speech transcribed '$text', without kitchen and light"

# A recurring phrase on a route with cache: synthesized once, the second
# requester answered from the cache on its own reply topic.
pub ok/g/in "OK"
wait_for 60 has ok/g/out || fail "no speech for OK: $(errors)"
pub ok/h/in "OK"
wait_for 30 has ok/h/out || fail "the second OK was not answered: $(errors)"
[ "$(payload ok/g/out | md5sum)" = "$(payload ok/h/out | md5sum)" ] ||
    fail "the cached OK differs from the synthesized one"
stats=$("$MQFORKSTAT" -1 -n "$INSTANCE")
grep -qx 'kind.tts_ok.received 1' <<<"$stats" ||
    fail "OK twice ran $(grep '^kind.tts_ok.received' <<<"$stats") jobs, 1 expected"
grep -qx 'cache.hits 1' <<<"$stats" || fail "no cache hit: $(grep '^cache\.' <<<"$stats")"

# JSON input, another voice.
pub tts/c/in '{"text": "hello world", "voice": "slt"}'
wait_for 60 has tts/c/out || fail "no speech from JSON with slt: $(errors)"
bytes=$(payload tts/c/out | wc -c)
echo "slt 'hello world': $bytes bytes"
in_range "$bytes" 16000 96000 || fail "slt 'hello world' is $bytes bytes"

# Mandarin with espeak-ng at 24 kHz: six syllables.
pub cmn/d/in '今天天气很好'
wait_for 60 has cmn/d/out || fail "no Mandarin speech: $(errors)"
bytes=$(payload cmn/d/out | wc -c)
echo "espeak:cmn '今天天气很好': $bytes bytes ($((bytes / 48)) ms at 24 kHz)"
in_range "$bytes" 48000 192000 || fail "Mandarin speech of $bytes bytes is not 1-4 s"

# Too long a text, and a voice espeak-ng does not have, are refused with
# a reason.
pub tts/e/in "$(head -c 1500 /dev/zero | tr '\0' a)"
wait_for 30 has "err/$INSTANCE" || fail "1500 characters were not refused"
errors | grep -q 'more than max_chars' || fail "no reason: $(errors)"
pub tts/f/in '{"text": "hello", "voice": "espeak:nosuchvoice"}'
wait_for 30 has "err/$INSTANCE" 2 || fail "an unknown espeak voice was not refused"
payload "err/$INSTANCE" 2 | grep -q "espeak-ng has no voice 'nosuchvoice'" ||
    fail "no reason: $(payload "err/$INSTANCE" 2)"

# ---- memory: the model is shared ------------------------------------------------

kb() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$2/smaps_rollup"; }
mib() { echo "$(($1 / 1024)).$(($1 % 1024 * 10 / 1024))"; }
workers=$(pgrep -P "$DAEMON_PID" -f 'mqforkd: worker')
[ "$(wc -w <<<"$workers")" -eq 2 ] || fail "2 workers expected, found: $workers"
for p in $DAEMON_PID $workers; do
    private=$(($(kb Private_Dirty "$p") + $(kb Private_Clean "$p")))
    shared=$(($(kb Shared_Dirty "$p") + $(kb Shared_Clean "$p")))
    echo "$(tr '\0' ' ' <"/proc/$p/cmdline" | cut -c1-20): rss $(mib "$(kb Rss "$p")") MiB," \
        "private $(mib $private) MiB, shared $(mib $shared) MiB"
done

# ---- kill -9 mid-utterance --------------------------------------------------------

# The worker transcribing is the one whose CPU time grows.
# (Its name holds spaces: the fields counted after the last ')'.)
utime() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 }'; }
pub_file stt/k/in "$TESTDATA/goforward.raw"
victim=
end=$((SECONDS + 10))
while [ -z "$victim" ] && [ $SECONDS -lt $end ] && ! has stt/k/out; do
    declare -A before=()
    for w in $workers; do before[$w]=$(utime "$w"); done
    sleep 0.05
    for w in $workers; do
        [ $(($(utime "$w") - before[$w])) -ge 3 ] && victim=$w
    done
done
if [ -z "$victim" ] || has stt/k/out; then
    fail "no worker caught transcribing (victim '$victim', answered: $(count stt/k/out))"
else
    kill -9 "$victim"
    echo "killed worker $victim while it transcribed"
    wait_for 60 has stt/k/out || fail "the transcript never came after the kill: $(errors)"
    # A later job's answer: a duplicate of the first would have come before.
    pub_file stt/z/in "$TESTDATA/goforward.raw"
    wait_for 60 has stt/z/out || fail "no transcript after the kill"
    [ "$(count stt/k/out)" -eq 1 ] || fail "$(count stt/k/out) transcripts of the killed job"
    [ "$(payload stt/k/out | jq -r .text)" = "go forward ten meters" ] ||
        fail "the retried job transcribed: $(payload stt/k/out)"
    grep -q 'signal 9' "$TMP/daemon.log" || fail "the daemon did not log the kill"
fi

# ---- counters --------------------------------------------------------------------

stats=$("$MQFORKSTAT" -1 -n "$INSTANCE" | grep '^plugin\.speech')
echo "$stats"
grep -qx 'plugin.speech.transcribe.utterances [5-9]' <<<"$stats" || fail "utterances not counted"
grep -q '^plugin.speech.transcribe.audio_ms [1-9]' <<<"$stats" || fail "audio_ms not counted"
grep -qx 'plugin.speech.transcribe.empty 1' <<<"$stats" || fail "the silence not counted empty"
grep -q '^plugin.speech.synthesize.characters [1-9]' <<<"$stats" || fail "characters not counted"
grep -q '^plugin.speech.synthesize.audio_ms [1-9]' <<<"$stats" || fail "audio_ms not counted"
# The handlers' histograms (handler ABI 3), merged over the workers.
grep -qx 'plugin.speech.transcribe.recognition_count [5-9]' <<<"$stats" ||
    fail "recognition times not observed"
grep -q '^plugin.speech.transcribe.per_audio_second_p50_us [1-9]' <<<"$stats" ||
    fail "no real-time factor"
grep -q '^plugin.speech.synthesize.synthesis_count [1-9]' <<<"$stats" ||
    fail "synthesis times not observed"

daemon_test_end test_speech
