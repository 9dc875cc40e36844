#!/usr/bin/env bash
# test_echo_agent.sh - mqfork-echo-agent against a real mosquitto, with no
# daemon: it answers a transcript on voice/{device}/say as JSON (quotes and
# all escaped), refuses what is no transcript (not JSON, no text, an empty
# text, a topic without the device) with a line each and goes on, answers
# listen stops with -L, and exits after -n answers saying its counts.
#
#   test_echo_agent.sh MQFORK-ECHO-AGENT
set -u
AGENT=$1
TMP=$(mktemp -d)
FAILS=0
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill_tree "$p"; done
    wait 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

# shellcheck source=test/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$AGENT" -L >/dev/null 2>&1
[ $? -eq 2 ] || fail "-L without -a is not a usage error"
"$AGENT" -s 'voice/#' >/dev/null 2>&1
[ $? -eq 2 ] || fail "a filter without one + is not a usage error"

start_broker || { fail "mosquitto does not start"; exit 1; }
PIDS+=("$BROKER")
pub() { mosquitto_pub -h 127.0.0.1 -p "$PORT" -q 1 -t "$1" -m "$2"; }

mosquitto_sub -h 127.0.0.1 -p "$PORT" -t 'voice/+/say' -t probe/say -F '%t %p' >"$TMP/say.log" &
PIDS+=($!)
listens() {
    pub probe/say probe
    grep -q probe "$TMP/say.log"
}
wait_for 15 listens || fail "mosquitto_sub does not listen"

"$AGENT" -p "$PORT" -n 2 -T >"$TMP/agent.out" 2>"$TMP/agent.err" &
AGENT_PID=$!
PIDS+=("$AGENT_PID")
wait_for 15 grep -q listening "$TMP/agent.out" || fail "the agent does not listen"
pub voice/d1/stt 'not json'
pub voice/d1/stt '{"type":"stt"}'
pub voice/d1/stt '{"type":"stt","text":""}'
pub voice/d1/stt '{"type":"stt","text":42}'
pub voice/d2/stt '{"type":"stt","text":"say \"cheese\" now"}'
wait_for 15 grep -q 'voice/d2/say' "$TMP/say.log" || fail "no answer on voice/d2/say"
grep -qxF 'voice/d2/say {"text":"You said say \"cheese\" now."}' "$TMP/say.log" ||
    fail "the answer: $(grep voice/d2 "$TMP/say.log")"
grep -Eq '^[0-9]+\.[0-9]{6} d2 heard "say "cheese" now", said "You said say "cheese" now."$' \
    "$TMP/agent.out" || fail "the agent's line: $(tail -n 1 "$TMP/agent.out")"
[ "$(grep -c 'voice/d1/stt: .*not answered' "$TMP/agent.err")" -eq 4 ] ||
    fail "four refusals: $(cat "$TMP/agent.err")"
grep -q 'd1/say' "$TMP/say.log" && fail "a refused transcript was answered"
pub voice/d3/stt '{"text":"bye"}'
wait_for 15 grep -q 'voice/d3/say' "$TMP/say.log" || fail "no answer to d3"
wait "$AGENT_PID"
rc=$?
[ $rc -eq 0 ] || fail "the agent exited $rc after -n 2"
grep -q '2 answered, 4 not answered' "$TMP/agent.err" || fail "its counts: $(tail -n 1 "$TMP/agent.err")"

# -L: a listen stop answered with the -a text; a listen start is not.
"$AGENT" -p "$PORT" -n 1 -L -a "Hello there." >"$TMP/agent.out" 2>"$TMP/agent.err" &
AGENT_PID=$!
PIDS+=("$AGENT_PID")
wait_for 15 grep -q listening "$TMP/agent.out" || fail "the agent -L does not listen"
pub voice/d4/events '{"type":"listen","state":"start","mode":"manual"}'
pub voice/d5/events '{"type":"listen","state":"stop"}'
wait_for 15 grep -q 'voice/d5/say' "$TMP/say.log" || fail "no answer to d5's listen stop"
grep -qxF 'voice/d5/say {"text":"Hello there."}' "$TMP/say.log" || fail "d5's answer"
grep -q 'd4/say' "$TMP/say.log" && fail "a listen start was answered"
wait "$AGENT_PID" || fail "the agent -L exited $?"

if ((FAILS > 0)); then
    echo "--- agent"; cat "$TMP/agent.out" "$TMP/agent.err"
    echo "--- say"; cat "$TMP/say.log"
    exit 1
fi
echo "test_echo_agent: all checks passed"
