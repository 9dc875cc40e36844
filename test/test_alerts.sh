#!/usr/bin/env bash
# test_alerts.sh - the alerts: section through a real mosquitto: mqforkd -t
# places its mistakes at file:line:column; a pool of one worker stalled by
# CPU-bound jobs (test.spin) makes jobs pending cross alerts.pending.fire,
# and the alert fires, then resolves once they are answered; failing jobs
# (test.fail) make the error rate fire and resolve. Each change is one JSON
# message on alerts.topic with the figure and the threshold, a log line,
# and counts in the block alerts (mqforkstat -1 and -p). A reload turns an
# alert on, and off: then it resolves.
#
#   test_alerts.sh MQFORKD MQFORKSTAT
set -u
MQFORKD=$1
MQFORKSTAT=$2
FAILS=0

# shellcheck source=test/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
daemon_test_init alerts-$$

# ---- mqforkd -t --------------------------------------------------------------

cat >"$TMP/bad.yaml" <<EOF
instance: $INSTANCE
alerts:
  topic: al/#
  pending: {fire: 10, resolve: 20}
  error_rate: {resolve: 0.1}
  latency: {fire: 1}
  cpu: {fire: 1.5}
EOF
t_refuses "$MQFORKD" "$TMP/bad.yaml" "bad alerts" \
    "$TMP/bad.yaml:3:10: error: alerts.topic:" \
    "$TMP/bad.yaml:4:32: error: alerts.pending.resolve (20) must be below alerts.pending.fire (10)" \
    "$TMP/bad.yaml:5:15: error: alerts.error_rate: missing required key 'fire'" \
    "$TMP/bad.yaml:6:3: error: unknown key 'latency' in 'alerts'" \
    "$TMP/bad.yaml:7:15: error: alerts.cpu.fire: 1.5 is out of range"

# ---- the daemon --------------------------------------------------------------

start_broker || {
    fail "mosquitto does not start"
    exit 1
}

# One worker taking one job at a time: spin jobs queue up behind it.
cat >"$TMP/run.yaml" <<EOF
instance: $INSTANCE
broker:
  host: 127.0.0.1
  port: $PORT
workers:
  min: 1
  max: 1
  inflight: 1
scaling:
  enabled: false
errors:
  topic: err/$INSTANCE
alerts:
  topic: al/$INSTANCE
  interval_s: 0.1
  pending: {fire: 5, resolve: 1}
  error_rate: {fire: 0.5, resolve: 0.1}
routes:
  - name: spin
    subscribe: sp/+/in
    job: test.spin
    reply: sp/{1}/out
  - name: fail
    subscribe: fa/+/in
    job: test.fail
EOF
"$MQFORKD" -t -c "$TMP/run.yaml" >/dev/null 2>&1 || fail "-t rejects the good configuration"

daemon_test_start "$MQFORKD" "al/$INSTANCE" 'sp/+/out'

alert() { grep "^al/$INSTANCE {\"alert\":\"$1\",\"state\":\"$2\"" "$TMP/sub.out"; }
stat_has() { "$MQFORKSTAT" -1 -n "$INSTANCE" | grep -qx "$1"; }

# Ten jobs of 0.2 s of CPU each, for one worker: nine wait.
for i in 0 1 2 3 4 5 6 7 8 9; do
    mosquitto_pub -h 127.0.0.1 -p "$PORT" -q 1 -t "sp/$i/in" -m 200000
done
wait_for 30 alert pending firing >/dev/null || fail "the pending alert never fired"
msg=$(alert pending firing | head -n 1)
grep -qE '"value":([5-9]|10),"threshold":5,"instance":"'"$INSTANCE"'","time":[0-9.]+}$' <<<"$msg" ||
    fail "the firing message lacks the figure or the threshold: $msg"
wait_for 30 alert pending resolved >/dev/null || fail "the pending alert never resolved"
grep -qE '"value":[01],"threshold":1,' <<<"$(alert pending resolved)" ||
    fail "the resolved message lacks the figure or the threshold: $(alert pending resolved)"
[ "$(alert pending firing | wc -l)" -eq 1 ] || fail "the pending alert flapped: $(alert pending firing)"
grep -q 'alert pending firing: .* reached 5' "$TMP/daemon.log" || fail "no log line for the firing"
grep -q 'alert pending resolved: .* is back at 1' "$TMP/daemon.log" || fail "no log line for the resolution"
wait_for 30 grep -q '^sp/9/out' "$TMP/sub.out" || fail "the spin jobs were not all answered"

# Every job fails for a moment, then none.
for i in 0 1 2 3; do
    mosquitto_pub -h 127.0.0.1 -p "$PORT" -q 1 -t "fa/$i/in" -m always
done
wait_for 30 alert error_rate firing >/dev/null || fail "the error rate alert never fired"
wait_for 30 alert error_rate resolved >/dev/null || fail "the error rate alert never resolved"

for line in 'alerts.fired.pending 1' 'alerts.resolved.pending 1' 'alerts.firing.pending 0' \
    'alerts.firing.error_rate 0'; do
    wait_for 10 stat_has "$line" ||
        fail "mqforkstat lacks '$line': $("$MQFORKSTAT" -1 -n "$INSTANCE" | grep '^alerts')"
done
"$MQFORKSTAT" -p -n "$INSTANCE" |
    grep -q "^mqfork_alerts_fired_total{mqfork_instance=\"$INSTANCE\",alert=\"pending\"} 1$" ||
    fail "mqforkstat -p lacks the alerts: $("$MQFORKSTAT" -p -n "$INSTANCE" | grep alerts)"

# A reload turns an alert on (the workers surely hold a MiB: it fires at
# its first look), and the next one off: it resolves, saying why.
sed -i 's/^  error_rate: .*/&\n  memory_mb: {fire: 1}/' "$TMP/run.yaml"
kill -HUP "$DAEMON_PID"
wait_for 30 alert memory_mb firing >/dev/null || fail "the alert a reload turned on never fired"
sed -i '/memory_mb/d' "$TMP/run.yaml"
kill -HUP "$DAEMON_PID"
wait_for 30 alert memory_mb resolved >/dev/null || fail "the alert a reload turned off never resolved"
grep -qF '"reason":"turned off by reload"' <<<"$(alert memory_mb resolved)" ||
    fail "the resolution does not say the reload turned it off: $(alert memory_mb resolved)"

daemon_test_end test_alerts
