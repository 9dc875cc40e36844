#!/usr/bin/env bash
# test_daemon.sh - mqforkd seen from outside, as an operator sees it: the
# configuration check, the segment in /dev/shm, the worker processes in ps,
# kill -9 of a worker, a second instance, a stale segment, SIGTERM; as
# root also a segment a stranger forged, and a restart after a crash under
# the shipped unit's capabilities with `user:` set. With mqforkstat: its
# --listen server (GET /metrics and nothing else) and -j on a stale
# segment.
#
#   test_daemon.sh MQFORKD TEST_SOURCE_DIR MQFORKSTAT
set -u
MQFORKD=$1
SRC=$2
MQFORKSTAT=$3
unset JOURNAL_STREAM # the log checks read lines as a terminal gets them
TMP=$(mktemp -d)
FAILS=0
DAEMON_PID=
SERVE_PID=

cleanup() {
    [ -n "$DAEMON_PID" ] && kill -9 "$DAEMON_PID" 2>/dev/null
    [ -n "$SERVE_PID" ] && kill -9 "$SERVE_PID" 2>/dev/null
    rm -rf "$TMP"
    rm -f "/dev/shm/mqfork.$INSTANCE"
}
trap cleanup EXIT

# shellcheck source=test/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

workers_of() { # pids of the children of $1 whose title names a worker
    local p
    for p in $(pgrep -P "$1" 2>/dev/null); do
        tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q '^mqforkd: worker ' && echo "$p"
    done
}

count_workers() { [ "$(workers_of "$DAEMON_PID" | wc -l)" -eq "$1" ]; }

INSTANCE="daemontest-$$"
CONF=$TMP/mqfork.yaml
cat >"$CONF" <<EOF
instance: $INSTANCE
workers:
  min: 2
  max: 3
  stable_s: 0.05
limits:
  slab_mb: 8
routes:
  - name: echo
    subscribe: t/+/in
    job: test.echo
    reply: t/{1}/out
EOF

# --- the configuration check -------------------------------------------------
out=$("$MQFORKD" -t -c "$CONF" 2>&1) || fail "-t on a good file exited $?: $out"
echo "$out" | grep -q "configuration OK" || fail "-t on a good file says: $out"

"$MQFORKD" -t -c "$SRC/../conf/mqfork.yaml" >/dev/null 2>&1 || fail "conf/mqfork.yaml does not pass -t"

warn=$SRC/conf/warn-own-replies.yaml
out=$("$MQFORKD" -t -c "$warn" 2>&1) || fail "-t on a file with only warnings exited $?: $out"
echo "$out" | grep -qF "$warn:11:12: warning: routes[0].reply: " || fail "-t shows no warning: $out"
echo "$out" | grep -q "configuration OK (5 routes, workers 2..8), 3 warnings" ||
    fail "-t does not count the warnings: $out"

bad=$SRC/conf/bad-several.yaml
out=$("$MQFORKD" -t -c "$bad" 2>&1)
rc=$?
[ $rc -eq 1 ] || fail "-t on a bad file exited $rc, want 1"
n=0
while IFS= read -r line; do
    expect=${line#\# expect: }
    echo "$out" | grep -qF "$bad:$expect" || fail "-t output lacks '$bad:$expect'"
    n=$((n + 1))
done < <(grep '^# expect: ' "$bad" | sed 's/^# expect: \([0-9]*:[0-9]*\): /# expect: \1: error: /')
[ $n -ge 2 ] || fail "bad-several.yaml should list several problems"

# One route: "1 route", not "1 routes".
ONE=$TMP/one.yaml
printf 'instance: %s\nroutes:\n  - name: a\n    subscribe: a/+/in\n    job: test.echo\n' \
    "$INSTANCE" >"$ONE"
out=$("$MQFORKD" -t -c "$ONE" 2>&1)
echo "$out" | grep -q "configuration OK (1 route, workers" || fail "-t with one route says: $out"

# No route and no voice gateway: loads, with a warning.
printf 'instance: %s\nroutes: []\n' "$INSTANCE" >"$TMP/empty.yaml"
out=$("$MQFORKD" -t -c "$TMP/empty.yaml" 2>&1) || fail "-t on an empty route list exited $?: $out"
echo "$out" | grep -qF "$TMP/empty.yaml:2:9: warning: routes: none, and no voice: section" ||
    fail "-t does not warn about an empty route list: $out"

# Every problem of a route's params, not just the first.
cat >"$TMP/params.yaml" <<EOF2
routes:
  - name: dec
    subscribe: a/+/in
    job: opus.decode
    params:
      sample_rate: 12345
      channels: 7
      bogus: 1
      conceal: 99
EOF2
out=$("$MQFORKD" -t -c "$TMP/params.yaml" 2>&1)
for key in sample_rate channels bogus conceal; do
    echo "$out" | grep -q "error: routes\[0\]\.params\.$key: " || fail "-t misses params.$key: $out"
done
echo "$out" | grep -q ": 4 problems$" || fail "-t does not count 4 problems: $out"

# A user: that cannot read the file: every reload would fail after the
# daemon drops to it. The temporary directory (mode 0700) already keeps
# nobody out; a readable file in a searchable directory does not warn.
if id nobody >/dev/null 2>&1 && [ "$(id -un)" != nobody ]; then
    { echo "user: nobody"; cat "$ONE"; } >"$TMP/user.yaml"
    chmod 600 "$TMP/user.yaml"
    out=$("$MQFORKD" -t -c "$TMP/user.yaml" 2>&1) || fail "-t with an unreadable file exited $?: $out"
    echo "$out" | grep -qF "warning: user: 'nobody' cannot read $TMP/user.yaml: a reload" ||
        fail "-t does not warn that nobody cannot read the file: $out"
    OPEN=$(mktemp -d)
    chmod 755 "$OPEN"
    cp "$TMP/user.yaml" "$OPEN/user.yaml"
    chmod 644 "$OPEN/user.yaml"
    out=$("$MQFORKD" -t -c "$OPEN/user.yaml" 2>&1)
    echo "$out" | grep -q "cannot read" && fail "-t warns about a file nobody can read: $out"
    rm -rf "$OPEN"
fi

out=$("$MQFORKD" -t -c "$TMP/missing.yaml" 2>&1)
[ $? -eq 1 ] && echo "$out" | grep -q "cannot open" || fail "-t on a missing file: $out"
"$MQFORKD" --bogus >/dev/null 2>&1
[ $? -eq 2 ] || fail "an unknown option should be a usage error (exit 2)"
"$MQFORKD" -t -c "$CONF" extra >/dev/null 2>&1
[ $? -eq 2 ] || fail "an argument besides the options should be a usage error (exit 2)"
out=$("$MQFORKD" --test --config "$CONF" 2>&1) || fail "--test --config on a good file exited $?: $out"
echo "$out" | grep -q "configuration OK" || fail "--test --config on a good file says: $out"
# Without -c: the file in the build's sysconfdir, which --help names.
default=$("$MQFORKD" --help | sed -n 's/.*default \(\/[^)]*mqfork\.yaml\)).*/\1/p')
[[ $default == */mqfork/mqfork.yaml ]] || fail "--help names no default configuration: $default"
if [ ! -e "$default" ]; then
    out=$("$MQFORKD" -t 2>&1)
    [ $? -eq 1 ] && echo "$out" | grep -qF "cannot open '$default'" ||
        fail "-t without -c does not read $default: $out"
fi

# --- running -----------------------------------------------------------------
start_daemon() {
    "$MQFORKD" -c "$CONF" 2>>"$TMP/log" &
    DAEMON_PID=$!
}

# The first run with --verbose: debug lines whatever log_level says.
"$MQFORKD" --verbose -c "$CONF" 2>>"$TMP/log" &
DAEMON_PID=$!
wait_for 10 count_workers 2 || fail "2 workers did not appear: $(cat "$TMP/log")"
wait_for 15 grep -q " debug .*worker 0: started as pid" "$TMP/log" ||
    fail "--verbose logs no debug line: $(head -5 "$TMP/log")"
# Off the journal each line starts with the date and the time.
head -1 "$TMP/log" | grep -qE '^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3} ' ||
    fail "a log line without the date: $(head -1 "$TMP/log")"
SEG=/dev/shm/mqfork.$INSTANCE
[ -e "$SEG" ] || fail "no segment $SEG"
mode=$(stat -c %a "$SEG" 2>/dev/null)
[ "$mode" = "640" ] || fail "segment mode is $mode, want 640"
grep -q "segment /dev/shm/mqfork.$INSTANCE is .* MiB" "$TMP/log" || fail "segment size not logged"

# kill -9 one worker: a new one takes its slot, the pool stays at 2
victim=$(workers_of "$DAEMON_PID" | head -1)
victim_title=$(tr '\0' ' ' <"/proc/$victim/cmdline")
kill -9 "$victim"
replaced() {
    local p
    p=$(workers_of "$DAEMON_PID" | grep -vx "$victim" | xargs -r -n1 sh -c \
        'tr "\0" " " </proc/$0/cmdline' | grep -cF "$victim_title")
    [ "$p" -ge 1 ] && count_workers 2
}
wait_for 5 replaced || fail "worker $victim ($victim_title) was not replaced"
kill -0 "$DAEMON_PID" 2>/dev/null || fail "the daemon died when its worker was killed"

# several kills at once: still within bounds and back to 2
for p in $(workers_of "$DAEMON_PID"); do kill -9 "$p"; done
wait_for 5 count_workers 2 || fail "pool not back to 2 after killing every worker"
[ "$(workers_of "$DAEMON_PID" | wc -l)" -le 3 ] || fail "more workers than workers.max"

# a second daemon for the same instance is refused
out=$("$MQFORKD" -c "$CONF" 2>&1)
[ $? -ne 0 ] && echo "$out" | grep -q "already running as pid $DAEMON_PID" ||
    fail "a second instance was not refused: $out"

# mqforkstat --listen: GET /metrics is the -p exposition; any other path
# 404, another method 405, a request head over 4 KiB refused with 431.
# Requests go through bash's /dev/tcp, one per connection.

# http REQUEST: send REQUEST (printf %b escapes) to the server; print the
# status code; the headers land in $TMP/head, the body in $TMP/body.
http() {
    local version code
    exec 9<>"/dev/tcp/127.0.0.1/$SERVE_PORT" 2>/dev/null || return 1
    printf '%b' "$1" >&9 2>/dev/null
    read -r -t 15 version code _ <&9 || code=none
    : >"$TMP/head"
    while IFS= read -r -t 15 line <&9 && [ -n "${line%$'\r'}" ]; do
        echo "${line%$'\r'}" >>"$TMP/head"
    done
    timeout 15 cat <&9 >"$TMP/body" # the server closes after one response
    exec 9<&-
    echo "$code"
}
get() { http "GET $1 HTTP/1.1\r\nHost: test\r\n\r\n"; }
# Serving, or gone (the port was taken).
serving_or_gone() { [ "$(get /metrics)" = 200 ] || ! kill -0 "$SERVE_PID" 2>/dev/null; }
for try in 1 2 3 4 5; do
    SERVE_PORT=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
    "$MQFORKSTAT" -n "$INSTANCE" --listen "127.0.0.1:$SERVE_PORT" 2>>"$TMP/serve.log" &
    SERVE_PID=$!
    wait_for 15 serving_or_gone
    kill -0 "$SERVE_PID" 2>/dev/null && break
    SERVE_PID=
done
if [ -z "$SERVE_PID" ]; then
    fail "mqforkstat --listen did not start: $(cat "$TMP/serve.log")"
else
    code=$(get /metrics)
    [ "$code" = 200 ] || fail "GET /metrics answered $code"
    grep -qx "Content-Type: text/plain; version=0.0.4; charset=utf-8" "$TMP/head" ||
        fail "GET /metrics: $(cat "$TMP/head")"
    grep -q "^mqfork_info{mqfork_instance=\"$INSTANCE\"" "$TMP/body" ||
        fail "GET /metrics is not the exposition: $(head -5 "$TMP/body")"
    "$MQFORKSTAT" -n "$INSTANCE" -p | grep '^# TYPE' >"$TMP/types.p"
    grep '^# TYPE' "$TMP/body" | cmp -s - "$TMP/types.p" || fail "GET /metrics has other families than -p"
    code=$(get /)
    [ "$code" = 404 ] || fail "GET / answered $code, want 404"
    code=$(get /metrics/../etc/passwd)
    [ "$code" = 404 ] || fail "GET of another path answered $code, want 404"
    code=$(http "POST /metrics HTTP/1.1\r\nContent-Length: 1\r\n\r\nx")
    [ "$code" = 405 ] || fail "POST /metrics answered $code, want 405"
    big=$(head -c 20000 /dev/zero | tr '\0' a)
    code=$(http "GET /metrics HTTP/1.1\r\nX-Big: $big\r\n\r\n")
    [ "$code" = 431 ] || fail "a 20 kB request head answered $code, want 431"
    code=$(http "hello\r\n\r\n")
    [ "$code" = 400 ] || fail "a request that is not HTTP answered $code, want 400"
    # A client that connects and sends nothing does not stall the others.
    exec 7<>"/dev/tcp/127.0.0.1/$SERVE_PORT"
    code=$(get /metrics)
    [ "$code" = 200 ] || fail "a silent client stalled the server: $code"
    exec 7>&-
    kill -0 "$SERVE_PID" 2>/dev/null || fail "mqforkstat --listen died: $(cat "$TMP/serve.log")"
fi

# SIGTERM: exit 0, segment gone, workers gone
old_workers=$(workers_of "$DAEMON_PID")
kill -TERM "$DAEMON_PID"
wait "$DAEMON_PID"
rc=$?
DAEMON_PID=
[ $rc -eq 0 ] || fail "SIGTERM: exit status $rc, want 0"
[ ! -e "$SEG" ] || fail "segment left after a clean exit"
for p in $old_workers; do
    wait_for 5 sh -c "! kill -0 $p 2>/dev/null" || fail "worker $p outlived the daemon"
done

# --- a stale segment from a crashed run is replaced ---------------------------
start_daemon
wait_for 10 count_workers 2 || fail "second start: no workers"
old_workers=$(workers_of "$DAEMON_PID")
kill -9 "$DAEMON_PID"
wait "$DAEMON_PID" 2>/dev/null
DAEMON_PID=
for p in $old_workers; do
    wait_for 5 sh -c "! kill -0 $p 2>/dev/null" || fail "worker $p outlived a killed supervisor"
done
[ -e "$SEG" ] || fail "a killed supervisor should leave its segment behind"
# -j still prints the stale segment, marked; the exit status says stale.
"$MQFORKSTAT" -n "$INSTANCE" -j >"$TMP/stale.json" 2>"$TMP/stale.err"
rc=$?
[ $rc -eq 1 ] || fail "-j on a stale segment exited $rc, want 1"
jq -e '.instance.stale == true and .instance.alive == false' "$TMP/stale.json" >/dev/null || fail "-j on a stale segment: no \"stale\": true: $(head -c 300 "$TMP/stale.json")"
grep -q "is gone" "$TMP/stale.err" || fail "-j on a stale segment says nothing on stderr"
"$MQFORKSTAT" -n "$INSTANCE" -1 >/dev/null 2>&1 && fail "-1 on a stale segment exited 0"
if [ -n "$SERVE_PID" ]; then
    code=$(get /metrics)
    [ "$code" = 503 ] && grep -q "is gone" "$TMP/body" ||
        fail "GET /metrics of a stale segment: $code $(cat "$TMP/body")"
fi
# A name that does not exist: mqforkstat names those that do, and -l.
out=$("$MQFORKSTAT" -n "no-such-$INSTANCE" -1 2>&1)
echo "$out" | grep -q "no such instance 'no-such-$INSTANCE'" && echo "$out" | grep -q "mqforkstat -l" ||
    fail "no such instance: $out"
stale_pid=$(awk '/running as pid/ { p = $0 } END { sub(/.*running as pid /, "", p); sub(/ .*/, "", p); print p }' "$TMP/log")
start_daemon
wait_for 10 count_workers 2 || fail "did not start over a stale segment: $(tail -3 "$TMP/log")"
grep -q "replaced the stale segment /dev/shm/mqfork.$INSTANCE of pid $stale_pid\$" "$TMP/log" ||
    fail "replacing the stale segment of pid $stale_pid is not logged: $(grep stale "$TMP/log")"
kill -TERM "$DAEMON_PID"
wait "$DAEMON_PID"
DAEMON_PID=

# --- as root: what a stranger and the unit's capabilities cannot stop --------
# Little-endian bytes of $1 in $2 bytes, for a forged header.
le() {
    local i
    for ((i = 0; i < $2; i++)); do
        printf "\\x$(printf %02x $((($1 >> (8 * i)) & 255)))"
    done
}

if [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null; then
    # A 4 KiB header claiming pid 1, with pid 1's real start time, written
    # by nobody where the segment goes: the daemon starts anyway.
    start1=$(awk '{ print $22 }' /proc/1/stat)
    { printf 'MQFORKSG'; le 2 4; le 4096 4; le 4096 8; le 1 4; le 0 4; le "$start1" 8; } |
        setpriv --reuid=nobody --regid=nogroup --clear-groups \
            sh -c "cat >$SEG && truncate -s 4096 $SEG"
    [ "$(stat -c %U "$SEG" 2>/dev/null)" = nobody ] || fail "could not forge a segment as nobody"
    start_daemon
    wait_for 10 count_workers 2 || fail "a forged segment kept the daemon from starting: $(tail -3 "$TMP/log")"
    grep -q "replaced the stale segment /dev/shm/mqfork.$INSTANCE of pid 1" "$TMP/log" ||
        fail "replacing the forged segment is not logged"
    kill -TERM "$DAEMON_PID"
    wait "$DAEMON_PID"
    DAEMON_PID=

    # With user: nobody the segment is nobody's; after a crash, root with
    # only the unit's bounding set (CAP_SETUID, CAP_SETGID, CAP_CHOWN) must
    # still be able to replace it.
    UCONF=$TMP/user.yaml
    { echo "user: nobody"; cat "$CONF"; } >"$UCONF"
    unit_caps=$(sed -n 's/^CapabilityBoundingSet=//p' "$SRC/../conf/mqforkd.service.in" |
        tr ' ' '\n' | sed 's/^CAP_//' | tr 'A-Z' 'a-z' | sed 's/^/+/' | paste -sd, -)
    start_as_unit() {
        setpriv --bounding-set "-all,$unit_caps" "$MQFORKD" -c "$UCONF" 2>>"$TMP/log" &
        DAEMON_PID=$!
    }
    start_as_unit
    wait_for 10 count_workers 2 || fail "no workers under the unit's capabilities: $(tail -3 "$TMP/log")"
    [ "$(stat -c %U "$SEG" 2>/dev/null)" = nobody ] || fail "the segment is not nobody's"
    old_workers=$(workers_of "$DAEMON_PID")
    kill -9 "$DAEMON_PID"
    wait "$DAEMON_PID" 2>/dev/null
    for p in $old_workers; do
        wait_for 5 sh -c "! kill -0 $p 2>/dev/null" || fail "worker $p outlived a killed supervisor"
    done
    start_as_unit
    wait_for 10 count_workers 2 || fail "no restart after a crash under the unit's capabilities: $(tail -3 "$TMP/log")"
    kill -TERM "$DAEMON_PID"
    wait "$DAEMON_PID"
    DAEMON_PID=
else
    echo "test_daemon: not root: skipping the forged segment and the unit's capabilities"
fi

if [ $FAILS -ne 0 ]; then
    echo "--- daemon log" >&2
    cat "$TMP/log" >&2
    exit 1
fi
echo "test_daemon: all checks passed"
