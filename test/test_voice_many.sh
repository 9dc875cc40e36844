#!/usr/bin/env bash
# test_voice_many.sh - the voice gateway under strain, with real processes:
#   1. two mqforkd instances share the devices ($share/voice/xiaozhi/+/up):
#      each hello is answered once, by one instance, and each device's
#      audio and messages are handled by the instance that answered it
#      (what reaches the other is forwarded through the broker);
#   2. kill -9 of a worker every 100 ms while 50 devices stream to be
#      decoded: no session is lost, every frame is decoded or counted as
#      failed (its decoder resets);
#   3. SIGTERM with sessions open: a goodbye to each device, one ended event
#      each with reason shutdown, exit status 0.
#
#   test_voice_many.sh MQFORKD MQFORK-DEVICE MQFORKSTAT MQFORK_P2P.SO
set -u
MQFORKD=$1
DEVICE=$2
MQFORKSTAT=$3
P2P=$4
TMP=$(mktemp -d)
FAILS=0
PIDS=()
A=voicea-$$
B=voiceb-$$

# shellcheck source=test/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
INSTANCE=$A # cleanup_test removes its segment; B's goes here
cleanup() {
    cleanup_test
    rm -f "/dev/shm/mqfork.$B"
}
trap cleanup EXIT

start_broker "plugin $P2P" || { fail "mosquitto does not start"; exit 1; }
PIDS+=("$BROKER")

# start_daemon INSTANCE UDP_PORT: its pid in DAEMON
start_daemon() {
    cat >"$TMP/$1.yaml" <<EOF
instance: $1
broker: {host: 127.0.0.1, port: $PORT}
workers: {min: 2, max: 2, backoff_max_s: 0.05, stable_s: 0.02}
streams: {max: 256}
voice:
  port: $2
  topics: {up: \$share/voice/xiaozhi/+/up}
  uplink: [relay, decode]
EOF
    "$MQFORKD" -c "$TMP/$1.yaml" >"$TMP/$1.log" 2>&1 &
    DAEMON=$!
    PIDS+=("$DAEMON")
    wait_for 10 grep -q "subscribed to mqfork/voice/+/forward" "$TMP/$1.log" ||
        fail "$1 does not subscribe"
}

stat_of() { # INSTANCE NAME
    "$MQFORKSTAT" -n "$1" -1 2>/dev/null | awk -v k="$2" '$1 == k { print $2 }'
}
sum_of() { # NAME: over both instances
    echo $(($(stat_of "$A" "$1") + $(stat_of "$B" "$1")))
}
sum_is() {
    [ "$(sum_of "$1")" = "$2" ]
}
total() { # FILE FIELD
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["total"][sys.argv[2]])' "$1" "$2"
}

start_daemon "$A" $((PORT + 1))
PID_A=$DAEMON
start_daemon "$B" $((PORT + 2))

# ---- 1. two instances share the devices ----------------------------------------

"$DEVICE" -p "$PORT" -n 8 --ramp 0.5 -d 1.2 -W 0.5 -j >"$TMP/shared.json" 2>"$TMP/shared.err" ||
    fail "devices behind two instances: $(cat "$TMP/shared.err") $(cat "$TMP/shared.json")"
SENT=$(total "$TMP/shared.json" sent)
[ "$(total "$TMP/shared.json" ok)" = 8 ] || fail "not every device had its session"
sum_is voice.sessions_started 8 || fail "hellos answered $(sum_of voice.sessions_started) times, want 8"
# mosquitto deals the group's messages out in turn, not by device: each
# instance gets some of every device's, and forwards what is not its own.
[ "$(stat_of "$A" voice.control_in)" -ge 1 ] && [ "$(stat_of "$B" voice.control_in)" -ge 1 ] ||
    fail "one instance got every message: the group does not share"
wait_for 20 sum_is voice.sessions_ended.goodbye 8 ||
    fail "goodbyes reached $(sum_of voice.sessions_ended.goodbye) of 8 sessions"
wait_for 20 sum_is voice.decoded "$SENT" || fail "decoded $(sum_of voice.decoded) of $SENT"
sum_is voice.dropped.unknown 0 || fail "audio reached an instance without its session"
[ "$(sum_of voice.forwarded)" -ge 8 ] || fail "nothing was forwarded between the instances"

# ---- 2. workers killed every 100 ms while 50 devices stream ---------------------

kill "$DAEMON" # one instance is enough from here
wait "$DAEMON" 2>/dev/null
BEFORE_DEC=$(stat_of "$A" voice.decoded)
BEFORE_FAIL=$(stat_of "$A" voice.decode_failed)
"$DEVICE" -p "$PORT" -n 50 --ramp 1 -d 3 -W 0.5 -j >"$TMP/kill.json" 2>"$TMP/kill.err" &
SIM=$!
KILLS=0
while kill -0 "$SIM" 2>/dev/null && ((KILLS < 200)); do
    w=$(pgrep -P "$PID_A" | shuf -n 1)
    [ -n "$w" ] && kill -9 "$w" 2>/dev/null && KILLS=$((KILLS + 1))
    sleep 0.1
done
wait "$SIM" || fail "devices while workers die: $(cat "$TMP/kill.err")"
SENT=$(total "$TMP/kill.json" sent)
[ "$(total "$TMP/kill.json" ok)" = 50 ] || fail "a session was lost while workers died"
((KILLS >= 10)) || fail "only $KILLS workers killed"
accounted() {
    local dec fail
    dec=$(($(stat_of "$A" voice.decoded) - BEFORE_DEC))
    fail=$(($(stat_of "$A" voice.decode_failed) - BEFORE_FAIL))
    [ $((dec + fail)) = "$SENT" ]
}
wait_for 30 accounted || fail "of $SENT frames, $(($(stat_of "$A" voice.decoded) - BEFORE_DEC)) decoded and $(($(stat_of "$A" voice.decode_failed) - BEFORE_FAIL)) failed"

# ---- 3. SIGTERM with sessions open ------------------------------------------------

mosquitto_sub -h 127.0.0.1 -p "$PORT" -t 'devices/p2p/#' -t 'voice/+/events' -F '%t %p' \
    >"$TMP/bye.log" &
PIDS+=($!)
listens() {
    mosquitto_pub -h 127.0.0.1 -p "$PORT" -t devices/p2p/probe -m probe
    grep -q probe "$TMP/bye.log"
}
wait_for 15 listens || fail "the listener does not listen"
HELLO='{"type":"hello","version":3,"transport":"udp","audio_params":{"format":"opus","sample_rate":16000,"channels":1,"frame_duration":60}}'
for d in 1 2 3; do
    mosquitto_pub -h 127.0.0.1 -p "$PORT" -t "xiaozhi/bye-$d/up" -m "$HELLO"
done
wait_for 15 grep -q 'devices/p2p/bye-3 {"type":"hello"' "$TMP/bye.log" || fail "no hello replies"
kill -TERM "$PID_A"
wait "$PID_A"
rc=$?
[ $rc = 0 ] || fail "exit status $rc after SIGTERM"
for d in 1 2 3; do
    wait_for 15 grep -q "devices/p2p/bye-$d {\"type\":\"goodbye\"" "$TMP/bye.log" ||
        fail "no goodbye for bye-$d"
    grep -q "voice/bye-$d/events .*\"reason\":\"shutdown\"" "$TMP/bye.log" ||
        fail "no ended event for bye-$d"
done

if ((FAILS > 0)); then
    echo "--- $A log"; tail -n 30 "$TMP/$A.log"; echo "--- $B log"; head -n 30 "$TMP/$B.log"
    exit 1
fi
echo "test_voice_many: all checks passed ($KILLS workers killed)"
