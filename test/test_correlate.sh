#!/usr/bin/env bash
# test_correlate.sh - correlation windows (README, "Correlation windows"),
# through a real mosquitto: mqforkd -t places correlate: mistakes at
# file:line:column; three parts of one key within the window become one
# job whose payload is the documented JSON object (test.echo answers it
# back), or the length-prefixed frame when a part is not JSON; a repeated
# part is a duplicate (one job), other bytes replace it; a key still
# incomplete after the window is reported on errors.topic with the parts it
# had; past max_open the oldest open key is reported; a reload that changes
# a route's correlate: and the shutdown report the keys still open;
# mqforkstat counts it all in the block correlate.
#
#   test_correlate.sh MQFORKD MQFORKSTAT
set -u
MQFORKD=$1
MQFORKSTAT=$2
FAILS=0

# shellcheck source=test/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
daemon_test_init correlate-$$

# ---- mqforkd -t --------------------------------------------------------------

cat >"$TMP/bad.yaml" <<EOF
instance: $INSTANCE
routes:
  - name: hole
    subscribe: [rigs/+/result, rigs/+/trace]
    job: test.echo
    correlate:
      key: "{2}"
      parts: [result, trace, head]
      window_ms: 0
  - name: twice
    subscribe: [a/+/x, a/+/y]
    job: test.echo
    correlate: {key: "{1}", parts: [x, x]}
EOF
t_refuses "$MQFORKD" "$TMP/bad.yaml" "bad correlate: sections" \
    "$TMP/bad.yaml:7:12: error: routes[0].correlate.key: {2} refers to wildcard 2 but 'rigs/+/result' has only 1" \
    "$TMP/bad.yaml:8:14: error: routes[0].correlate.parts: 3 part names for 2 subscribe filters: give one per filter" \
    "$TMP/bad.yaml:9:18: error: routes[0].correlate.window_ms: 0 is out of range (1..3600000)" \
    "$TMP/bad.yaml:13:16: error: routes[1].correlate: missing required key 'window_ms'" \
    "$TMP/bad.yaml:13:40: error: routes[1].correlate.parts[1]: 'x' is already part 0"

# ---- the daemon --------------------------------------------------------------

start_broker || {
    fail "mosquitto does not start"
    exit 1
}

write_conf() { # MAX_OPEN of the route small
    cat >"$TMP/run.yaml" <<EOF
instance: $INSTANCE
broker: {host: 127.0.0.1, port: $PORT}
workers: {min: 1, max: 1}
scaling: {enabled: false}
errors: {topic: err/$INSTANCE}
routes:
  - name: hole
    subscribe: [rigs/+/result, rigs/+/trace, rigs/+/head]
    qos: 1
    job: test.echo
    reply: rigs/{1}/hole
    correlate: {key: "{1}", parts: [result, trace, head], window_ms: 4000}
  - name: bin
    subscribe: [bin/+/a, bin/+/b]
    qos: 1
    job: test.echo
    reply: bin/{1}/out
    correlate: {key: "{1}", parts: [a, b], window_ms: 30000}
  - name: small
    subscribe: [sm/+/a, sm/+/b]
    qos: 1
    job: test.echo
    reply: sm/{1}/out
    correlate: {key: "{1}", parts: [a, b], window_ms: 60000, max_open: $1}
EOF
}
write_conf 2
"$MQFORKD" -t -c "$TMP/run.yaml" >/dev/null 2>&1 || fail "-t rejects the good configuration"

daemon_test_start "$MQFORKD" 'rigs/+/hole' 'sm/+/out' "err/$INSTANCE"
mosquitto_sub -h 127.0.0.1 -p "$PORT" -q 1 -F '%t %x' -t 'bin/+/out' >"$TMP/bin.out" 2>&1 &
SUB_PID="$SUB_PID $!"

pub() { mosquitto_pub -h 127.0.0.1 -p "$PORT" -q 1 -t "$1" -m "$2"; }
replies() { grep -c "^$1 " "$TMP/sub.out"; }
report_of() { grep "^err/$INSTANCE .*\"key\":\"$1\"" "$TMP/sub.out"; }
stat_has() { "$MQFORKSTAT" -1 -n "$INSTANCE" | grep -qx "$1"; }

# A key completed: one job, its payload the JSON object by part name.
pub rigs/r1/result '{"depth": 12}'
pub rigs/r1/head '"H1"'
pub rigs/r1/trace '[1,2,3]'
wait_for 30 grep -q '^rigs/r1/hole ' "$TMP/sub.out" || fail "the complete key r1 was never answered"
grep -qxF 'rigs/r1/hole {"result":{"depth": 12},"trace":[1,2,3],"head":"H1"}' "$TMP/sub.out" ||
    fail "r1's job is not the JSON object of its parts: $(grep '^rigs/r1/hole' "$TMP/sub.out")"

# A part repeated is a duplicate: one job still. Other bytes replace a part.
pub rigs/r2/result 1
pub rigs/r2/result 1
pub rigs/r2/trace 2
pub rigs/r2/trace 3
pub rigs/r2/head 4
wait_for 30 grep -q '^rigs/r2/hole ' "$TMP/sub.out" || fail "the key r2 was never answered"
grep -qxF 'rigs/r2/hole {"result":1,"trace":3,"head":4}' "$TMP/sub.out" ||
    fail "r2's job does not hold the replacing trace: $(grep '^rigs/r2/hole' "$TMP/sub.out")"

# Parts not all JSON: length-prefixed (u16 name length, name, u32 length).
printf 'hello' >"$TMP/a"
printf '\0{}' >"$TMP/b"
mosquitto_pub -h 127.0.0.1 -p "$PORT" -q 1 -t bin/k/b -f "$TMP/b"
mosquitto_pub -h 127.0.0.1 -p "$PORT" -q 1 -t bin/k/a -f "$TMP/a"
wait_for 30 grep -q '^bin/k/out ' "$TMP/bin.out" || fail "the binary key was never answered"
grep -qx 'bin/k/out 0001610000000568656c6c6f00016200000003007b7d' "$TMP/bin.out" ||
    fail "the binary key's job is not the length-prefixed frame: $(cat "$TMP/bin.out")"

# An incomplete key: reported once its window passed, with the parts it had.
pub rigs/r5/trace x
pub rigs/r5/result '{}'
wait_for 30 report_of r5 >/dev/null || fail "no report for the incomplete key r5"
rep=$(report_of r5)
grep -qF '"route":"hole","topic":"rigs/r5/result","error":"expired","detail":"correlation key '"'r5'"' dropped incomplete: its window passed; missing head"' <<<"$rep" ||
    fail "r5's report does not say what expired: $rep"
grep -qF '"key":"r5","parts":["result","trace"]' <<<"$rep" || fail "r5's report lacks its parts: $rep"
grep -q '^rigs/r5/hole' "$TMP/sub.out" && fail "the incomplete key r5 became a job"

# Past max_open (2) the oldest open key is expired early and reported.
pub sm/k1/a 1
pub sm/k2/a 2
pub sm/k3/a 3
wait_for 30 report_of k1 >/dev/null || fail "no report for the overflowed key k1"
grep -qF 'correlate.max_open keys were open and it was the oldest; missing b' <<<"$(report_of k1)" ||
    fail "k1's report does not say it overflowed: $(report_of k1)"
pub sm/k3/b 4
wait_for 30 grep -q '^sm/k3/out ' "$TMP/sub.out" || fail "k3 was never answered after the overflow"
report_of k2 && fail "k2 was reported while it was still open"

for line in 'correlate.completed 4' 'correlate.duplicates 1' 'correlate.replaced 1' \
    'correlate.expired 1' 'correlate.overflowed 1' 'correlate.open 1'; do
    wait_for 10 stat_has "$line" ||
        fail "mqforkstat lacks '$line': $("$MQFORKSTAT" -1 -n "$INSTANCE" | grep '^correlate')"
done
"$MQFORKSTAT" -p -n "$INSTANCE" | grep -q "^mqfork_correlate_completed_total{mqfork_instance=\"$INSTANCE\"} 4$" ||
    fail "mqforkstat -p lacks the block correlate"
"$MQFORKSTAT" -j -n "$INSTANCE" | tr -d ' \t\n' | grep -q '"correlate":{[^}]*"completed":4,' ||
    fail "mqforkstat -j lacks the block correlate"
if [ "$(replies rigs/r1/hole)" -ne 1 ] || [ "$(replies rigs/r2/hole)" -ne 1 ]; then
    fail "a complete key was answered more than once: $(grep '^rigs/' "$TMP/sub.out")"
fi

# A reload that changes small's correlate: drops k2, reported; bin's, not
# changed, keeps its open key r6.
pub bin/r6/a 1
write_conf 3
kill -HUP "$DAEMON_PID"
wait_for 30 report_of k2 >/dev/null || fail "the reload did not report k2"
grep -qF "its route's correlate: changed or went (reload)" <<<"$(report_of k2)" ||
    fail "k2's report does not say why: $(report_of k2)"
report_of r6 && fail "the reload dropped r6, whose route did not change"

# Shutdown reports what is still open.
pub sm/k7/b 1
wait_for 30 stat_has 'correlate.open 2' || fail "k7 was never held (r6 and k7 open)"
daemon_test_stop
wait_for 30 report_of k7 >/dev/null || fail "the shutdown did not report k7"
wait_for 30 report_of r6 >/dev/null || fail "the shutdown did not report r6"
grep -qF 'dropped incomplete: the daemon is stopping; missing a","attempts":0,"key":"k7","parts":["b"]' <<<"$(report_of k7)" ||
    fail "k7's report does not say why: $(report_of k7)"

daemon_test_verdict test_correlate
