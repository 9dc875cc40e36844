#!/usr/bin/env bash
# test_retry.sh - retries on failure, through a real mosquitto: mqforkd -t
# places retry_on and backoff mistakes at file:line:column; a handler that
# fails twice (test.fail, its count kept in its stream's state) is tried
# again after the configured backoff and answers; one that always fails is
# reported once, with its attempts; a retry that would come after the
# job's deadline is not made; a crash is reported at once where retry_on
# leaves it out, a timeout retried after its backoff where it does not;
# mqforkstat counts them in the block retry.
#
#   test_retry.sh MQFORKD MQFORKSTAT
set -u
MQFORKD=$1
MQFORKSTAT=$2
FAILS=0

# shellcheck source=test/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
daemon_test_init retry-$$

# ---- mqforkd -t --------------------------------------------------------------

cat >"$TMP/bad.yaml" <<EOF
instance: $INSTANCE
routes:
  - name: flaky
    subscribe: fl/+/in
    job: test.fail
    retry_on: [failed, tiemout]
    backoff_ms: 5000
    backoff_max_ms: 1000
EOF
out=$("$MQFORKD" -t -c "$TMP/bad.yaml" 2>&1) && fail "-t accepted a bad retry_on"
grep -qF "$TMP/bad.yaml:6:24: error: routes[0].retry_on[1]: 'tiemout' is not a cause to retry (crashed, timeout, failed); did you mean 'timeout'?" <<<"$out" ||
    fail "-t does not place the retry_on error: $out"
grep -qF "$TMP/bad.yaml:8:21: error: routes[0].backoff_max_ms (1000) is below routes[0].backoff_ms (5000)" <<<"$out" ||
    fail "-t does not place the backoff contradiction: $out"

# ---- the daemon --------------------------------------------------------------

start_broker || {
    fail "mosquitto does not start"
    exit 1
}

# flaky: 300 ms, then 600 ms before the second retry (less up to a fifth).
# late: the first retry comes within its 2 s deadline, the second (1.6 to
# 2 s after the second failure) could not.
cat >"$TMP/run.yaml" <<EOF
instance: $INSTANCE
broker:
  host: 127.0.0.1
  port: $PORT
workers:
  min: 2
  max: 2
scaling:
  enabled: false
errors:
  topic: err/$INSTANCE
routes:
  - name: flaky
    subscribe: fl/+/in
    job: test.fail
    reply: fl/{1}/out
    stream: "{1}"
    retry_on: [failed, crashed]
    retries: 3
    backoff_ms: 300
    backoff_max_ms: 10000
  - name: late
    subscribe: dl/+/in
    job: test.fail
    reply: dl/{1}/out
    retry_on: failed
    retries: 5
    backoff_ms: 1000
    deadline_ms: 2000
  - name: plain
    subscribe: pl/+/in
    job: test.fail
    reply: pl/{1}/out
  - name: crash
    subscribe: cr/+/in
    job: test.crash
    retry_on: [failed]
  - name: hang
    subscribe: hg/+/in
    job: test.hang
    timeout_ms: 200
    retry_on: timeout
    retries: 1
    backoff_ms: 300
EOF
"$MQFORKD" -t -c "$TMP/run.yaml" >/dev/null 2>&1 || fail "-t rejects the good configuration"

daemon_test_start "$MQFORKD" 'fl/+/out' 'dl/+/out' 'pl/+/out' "err/$INSTANCE"

pub() { mosquitto_pub -h 127.0.0.1 -p "$PORT" -q 1 -t "$1" -m "$2"; }
ms() { echo $(($(date +%s%N) / 1000000)); }
report_of() { grep "^err/$INSTANCE .*\"topic\":\"$1\"" "$TMP/sub.out"; }

# Fails twice, answers on the third attempt, not before both waits.
start=$(ms)
pub fl/two/in 2
wait_for 30 grep -q '^fl/two/out 2$' "$TMP/sub.out" || fail "the flaky job was never answered"
took=$(($(ms) - start))
echo "flaky job answered after ${took} ms (waits of 240-300 and 480-600 ms)"
[ "$took" -ge 720 ] || fail "the flaky job was answered after $took ms: the backoff was not waited"
report_of fl/two/in && fail "the flaky job that succeeded got an error report too"

# A stream's next job waits for the one being retried: answers in order.
pub fl/ord/in 2
pub fl/ord/in 0
wait_for 30 grep -q '^fl/ord/out 0$' "$TMP/sub.out" || fail "the stream's second job was never answered"
[ "$(grep '^fl/ord/out' "$TMP/sub.out" | tr '\n' ' ')" = "fl/ord/out 2 fl/ord/out 0 " ] ||
    fail "the stream's jobs were answered out of order: $(grep '^fl/ord/out' "$TMP/sub.out")"

# Always fails: one report, after every attempt, each listed.
pub fl/always/in always
wait_for 30 report_of fl/always/in >/dev/null || fail "no report for the job that always fails"
rep=$(report_of fl/always/in)
[ "$(wc -l <<<"$rep")" -eq 1 ] || fail "more than one report: $rep"
grep -qF '"error":"failed"' <<<"$rep" || fail "the report's error is not failed: $rep"
grep -qF '(attempt 4 of 4)' <<<"$rep" || fail "the report's detail does not count the attempts: $rep"
grep -qF '"attempts":4,"tries":["failed","failed","failed","failed"]' <<<"$rep" ||
    fail "the report does not list the attempts: $rep"

# The deadline wins: attempt 2 fails, and no third is scheduled.
pub dl/a/in always
wait_for 30 report_of dl/a/in >/dev/null || fail "no report for the job with a deadline"
rep=$(report_of dl/a/in)
grep -qF '"attempts":2,' <<<"$rep" || fail "the job with a deadline was not tried exactly twice: $rep"
grep -qF 'would come after the deadline' <<<"$rep" || fail "the report does not name the deadline: $rep"

# A route that does not retry failed reports the handler's words as ever.
pub pl/a/in always
wait_for 30 report_of pl/a/in >/dev/null || fail "no report on the plain route"
grep -qF '"detail":"test.fail: failing as asked","attempts":1}' <<<"$(report_of pl/a/in)" ||
    fail "the plain route's report changed: $(report_of pl/a/in)"
# A crash is not retried where retry_on leaves it out; a timeout is, once.
pub cr/a/in segv
wait_for 30 report_of cr/a/in >/dev/null || fail "no report for the crash"
grep -qF '"error":"quarantined","detail":"crashed: signal 11 (attempt 1; retry_on leaves out crashed)","attempts":1}' <<<"$(report_of cr/a/in)" ||
    fail "the crash was not reported at once: $(report_of cr/a/in)"
pub hg/a/in x
wait_for 30 report_of hg/a/in >/dev/null || fail "no report for the hung job"
grep -qF '"error":"quarantined","detail":"timeout: ran past 200 ms (attempt 2 of 2)","attempts":2,"tries":["timeout","timeout"]}' <<<"$(report_of hg/a/in)" ||
    fail "the hung job was not retried once: $(report_of hg/a/in)"

# Published once per change; the report may come just before the figure.
stat_has() { "$MQFORKSTAT" -1 -n "$INSTANCE" | grep -qx "$1"; }
for line in 'retry.scheduled.failed 8' 'retry.scheduled.timeout 1' 'retry.scheduled.crashed 0' \
    'retry.exhausted 2' 'retry.past_deadline 1' \
    'retry.succeeded 2' 'retry.waiting 0'; do
    wait_for 10 stat_has "$line" ||
        fail "mqforkstat lacks '$line': $("$MQFORKSTAT" -1 -n "$INSTANCE" | grep '^retry')"
done
"$MQFORKSTAT" -p -n "$INSTANCE" |
    grep -q "^mqfork_retry_scheduled_total{mqfork_instance=\"$INSTANCE\",cause=\"failed\"} 8$" ||
    fail "mqforkstat -p lacks the retries: $("$MQFORKSTAT" -p -n "$INSTANCE" | grep retry)"
"$MQFORKSTAT" -j -n "$INSTANCE" | tr -d ' \t\n' | grep -q '"retry":{[^}]*"scheduled":{[^}]*"failed":8},"waiting":0,"exhausted":2,' ||
    fail "mqforkstat -j lacks the retries: $("$MQFORKSTAT" -j -n "$INSTANCE" | tr -d " \t\n" | grep -o "\"retry\":{[^}]*}[^}]*}")"

daemon_test_end test_retry
