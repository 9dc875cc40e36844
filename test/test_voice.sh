#!/usr/bin/env bash
# test_voice.sh - the voice gateway end to end: a real mosquitto with the
# p2p plugin, mqforkd with a voice: section, mqfork-device speaking the
# device protocol, and a backend made of mosquitto_sub and mosquitto_pub
# that answers each "listen stop" with tts start, audio and tts stop: one
# device gets PCM to say (encoded in the pool), the other Opus to play (a
# sequence the daemon's own opus.encode route made), each paced (loosely:
# the median interval near 60 ms). Then the counters of
# block voice, bad datagrams, a hello past max_sessions, a replaced session
# and an idle one.
#
#   test_voice.sh MQFORKD MQFORK-DEVICE MQFORKSTAT MQFORK_P2P.SO
set -u
MQFORKD=$1
DEVICE=$2
MQFORKSTAT=$3
P2P=$4
TMP=$(mktemp -d)
FAILS=0
PIDS=()
INSTANCE=voice-$$

# shellcheck source=test/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trap cleanup_test EXIT

start_broker "plugin $P2P" || { fail "mosquitto does not start"; exit 1; }
PIDS+=("$BROKER")
VPORT=$((PORT + 1))

cat >"$TMP/voice.yaml" <<EOF
instance: $INSTANCE
broker: {host: 127.0.0.1, port: $PORT}
workers: {min: 2, max: 2}
voice:
  port: $VPORT
  max_sessions: 3
  idle_s: 2
  uplink: [relay, decode]
  pcm_batch_ms: 300
routes:
  - {name: enc, subscribe: test/enc, job: opus.encode, reply: test/enc/out,
     params: {sample_rate: 24000}}
EOF
"$MQFORKD" -t -c "$TMP/voice.yaml" >/dev/null || fail "mqforkd -t refuses the voice config"
"$MQFORKD" -c "$TMP/voice.yaml" >"$TMP/daemon.log" 2>&1 &
PIDS+=($!)
stat_of() {
    "$MQFORKSTAT" -n "$INSTANCE" -1 2>/dev/null | awk -v k="$1" '$1 == k { print $2 }'
}
stat_is() {
    [ "$(stat_of "$1")" = "$2" ]
}
wait_for 10 grep -q "subscribed to voice/+/ctl" "$TMP/daemon.log" || fail "the daemon does not subscribe"

# The backend's audio: 1.2 s of 24 kHz noise as PCM, and as Opus packets.
head -c $((20 * 1440 * 2)) /dev/urandom >"$TMP/say.pcm"
mosquitto_sub -h 127.0.0.1 -p "$PORT" -t test/enc/out -C 1 -N >"$TMP/play.opus" &
SUB=$!
# mosquitto_sub has no ready signal: publish until its one message came.
sub_done() {
    ! kill -0 "$SUB" 2>/dev/null
}
for _ in $(seq 20); do
    mosquitto_pub -h 127.0.0.1 -p "$PORT" -t test/enc -f "$TMP/say.pcm"
    wait_for 1 sub_done && break
done
kill "$SUB" 2>/dev/null
wait "$SUB" 2>/dev/null
[ -s "$TMP/play.opus" ] || fail "no Opus sequence from the enc route"

# The backend: on listen stop, tts start, the audio, tts stop.
backend() {
    mosquitto_sub -h 127.0.0.1 -p "$PORT" -t 'voice/+/events' -F '%t %p' |
        while read -r topic payload; do
            dev=${topic#voice/}
            dev=${dev%/events}
            echo "$topic $payload" >>"$TMP/events.log"
            case $payload in
            *'"type":"listen"'*'"state":"stop"'*)
                mosquitto_pub -h 127.0.0.1 -p "$PORT" -t "voice/$dev/ctl" \
                    -m '{"type":"tts","state":"start"}'
                if [ "$dev" = dev-1 ]; then
                    mosquitto_pub -h 127.0.0.1 -p "$PORT" -t "voice/$dev/say_pcm" -f "$TMP/say.pcm"
                else
                    mosquitto_pub -h 127.0.0.1 -p "$PORT" -t "voice/$dev/play" -f "$TMP/play.opus"
                fi
                mosquitto_pub -h 127.0.0.1 -p "$PORT" -t "voice/$dev/ctl" \
                    -m '{"type":"tts","state":"stop"}'
                ;;
            esac
        done
}
backend &
PIDS+=($!)
backend_listens() {
    mosquitto_pub -h 127.0.0.1 -p "$PORT" -t voice/probe/events -m probe
    grep -q probe "$TMP/events.log" 2>/dev/null
}
wait_for 15 backend_listens || fail "the backend does not listen"

# ---- two devices talking ------------------------------------------------------

"$DEVICE" -p "$PORT" -n 2 -d 1.2 -W 6 -j >"$TMP/devices.json" 2>"$TMP/devices.err" ||
    fail "mqfork-device: $(cat "$TMP/devices.err")"
for d in 0 1; do
    python3 - "$TMP/devices.json" "$d" <<'EOF' || fail "device $d: $(cat "$TMP/devices.json")"
import json, sys
d = json.load(open(sys.argv[1]))["devices"][int(sys.argv[2])]
ok = (d["result"] == "ok" and d["received"] == 20 and d["lost"] == 0 and d["out_of_order"] == 0
      and d["bad"] == 0 and d["undecodable"] == 0 and d["json"]["tts"] == 2)
sys.exit(0 if ok else 1)
EOF
    # Paced, loosely (the figure against its goal is tools/bench-voice's):
    # the median interval within 30 ms of 60; a burst would be 60 ms off.
    python3 - "$TMP/devices.json" "$d" <<'EOF' || fail "device $d: downlink not paced: $(cat "$TMP/devices.json")"
import json, sys
d = json.load(open(sys.argv[1]))["devices"][int(sys.argv[2])]
sys.exit(0 if d["jitter_p50_ms"] is not None and d["jitter_p50_ms"] < 30 else 1)
EOF
done
SENT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["total"]["sent"])' "$TMP/devices.json")
wait_for 15 stat_is voice.sessions_ended.goodbye 2 || fail "two sessions ended by goodbye"
wait_for 15 stat_is voice.decoded "$SENT" || fail "decoded $(stat_of voice.decoded) of $SENT"
stat_is voice.relayed "$SENT" || fail "relayed $(stat_of voice.relayed) of $SENT"
stat_is voice.downlink_frames 40 || fail "downlink frames $(stat_of voice.downlink_frames), want 40"
stat_is voice.lost 0 || fail "lost $(stat_of voice.lost)"
[ "$(stat_of voice.pcm_messages)" -ge 2 ] || fail "no decoded PCM published"

# ---- bad datagrams are dropped and counted ---------------------------------------

printf 'xx' >/dev/udp/127.0.0.1/$VPORT
printf '\002\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000' >/dev/udp/127.0.0.1/$VPORT
printf '\001\000\000\001\000\000\000\000\000\000\000\000\000\000\000\001x' >/dev/udp/127.0.0.1/$VPORT
printf '\001\000\000\005\000\000\000\000\000\000\000\000\000\000\000\001x' >/dev/udp/127.0.0.1/$VPORT
wait_for 15 stat_is voice.dropped.short 1 || fail "a short datagram is not counted"
stat_is voice.dropped.bad_type 1 || fail "a datagram of type 2 is not counted"
stat_is voice.dropped.unknown 1 || fail "a datagram of no session is not counted"
stat_is voice.dropped.bad_length 1 || fail "a datagram of the wrong length is not counted"

# ---- max_sessions, replacement, idle expiry ----------------------------------------

HELLO='{"type":"hello","version":3,"transport":"udp","audio_params":{"format":"opus","sample_rate":16000,"channels":1,"frame_duration":60}}'
mosquitto_sub -h 127.0.0.1 -p "$PORT" -t 'devices/p2p/#' -F '%t %p' >"$TMP/p2p.log" &
PIDS+=($!)
p2p_listens() {
    mosquitto_pub -h 127.0.0.1 -p "$PORT" -t devices/p2p/probe -m probe
    grep -q probe "$TMP/p2p.log"
}
wait_for 15 p2p_listens || fail "the p2p listener does not listen"
for d in a b a c d; do
    mosquitto_pub -h 127.0.0.1 -p "$PORT" -t "xiaozhi/fake-$d/up" -m "$HELLO"
done
wait_for 15 stat_is voice.sessions_ended.replaced 1 || fail "a second hello does not replace"
wait_for 15 stat_is voice.hello_refused.full 1 ||
    fail "a hello past max_sessions is not refused: $(stat_of voice.hello_refused.full)"
grep -q 'devices/p2p/fake-d {"type":"alert"' "$TMP/p2p.log" || fail "no alert for the refused hello"
wait_for 20 stat_is voice.sessions_ended.idle 3 ||
    fail "idle sessions do not end: $(stat_of voice.sessions_ended.idle)"
wait_for 15 grep -q 'devices/p2p/fake-a {"type":"goodbye"' "$TMP/p2p.log" ||
    fail "no goodbye for an idle session"
grep -c '"type":"ended"' "$TMP/events.log" | grep -qx 6 ||
    fail "not one ended event per session: $(grep -c '"type":"ended"' "$TMP/events.log")"
stat_is voice.sessions_active 0 || fail "sessions still active"

if ((FAILS > 0)); then
    echo "--- daemon log"; tail -n 30 "$TMP/daemon.log"
    exit 1
fi
echo "test_voice: all checks passed"
