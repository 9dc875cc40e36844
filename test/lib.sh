# shellcheck shell=bash
# test/lib.sh - what the shell tests share: counting failures, and waiting
# for a condition that an event makes true (never a fixed sleep). Source it
# after setting FAILS=0.

fail() {
    echo "FAIL: $*" >&2
    FAILS=$((FAILS + 1))
}

# Wait until the command succeeds, up to $1 seconds.
wait_for() {
    local limit=$1
    shift
    local end=$((SECONDS + limit))
    until "$@"; do
        [ $SECONDS -ge $end ] && return 1
        sleep 0.02
    done
}

# A pid and its descendants (a pipeline in a subshell, say), with SIGKILL.
kill_tree() {
    local c
    for c in $(pgrep -P "$1"); do kill_tree "$c"; done
    kill -9 "$1" 2>/dev/null
}

# A private mosquitto on a free loopback port, its files in $TMP; the lines
# given are added to its configuration (a plugin, say). Sets PORT, and
# BROKER to its pid. 0 once it takes a publish, 1 after five ports failed.
start_broker() {
    local try
    for try in 1 2 3 4 5; do
        PORT=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        {
            printf 'listener %d 127.0.0.1\nallow_anonymous true\n' "$PORT"
            printf '%s\n' "$@"
        } >"$TMP/mosquitto.conf"
        mosquitto -c "$TMP/mosquitto.conf" >"$TMP/mosquitto.log" 2>&1 &
        BROKER=$!
        if wait_for 5 mosquitto_pub -h 127.0.0.1 -p "$PORT" -t probe -m x 2>/dev/null; then
            return 0
        fi
        kill -9 "$BROKER" 2>/dev/null
    done
    return 1
}

# A test of one daemon through a private broker: $TMP, and the pids BROKER,
# DAEMON_PID and SUB_PID (a mosquitto_sub), all killed at exit, with the
# segment of INSTANCE. Call it once, after FAILS=0.
daemon_test_init() { # INSTANCE
    INSTANCE=$1
    TMP=$(mktemp -d)
    BROKER=
    DAEMON_PID=
    SUB_PID=
    trap daemon_test_cleanup EXIT
}

daemon_test_cleanup() {
    local p
    for p in $SUB_PID $DAEMON_PID $BROKER; do kill -9 "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$TMP"
    rm -f "/dev/shm/mqfork.$INSTANCE"
}

# Subscribe to the daemon's status and the TOPICS given ($TMP/sub.out),
# start MQFORKD on $TMP/run.yaml ($TMP/daemon.log) and wait until it is
# online. 0, or 1 (counted) when it never came online.
daemon_test_start() { # MQFORKD TOPIC...
    local mqforkd=$1 t args=()
    shift
    for t in "mqfork/$INSTANCE/status" "$@"; do args+=(-t "$t"); done
    mosquitto_sub -h 127.0.0.1 -p "$PORT" -v "${args[@]}" >"$TMP/sub.out" 2>&1 &
    SUB_PID=$!
    "$mqforkd" -c "$TMP/run.yaml" >"$TMP/daemon.log" 2>&1 &
    DAEMON_PID=$!
    wait_for 30 grep -q online "$TMP/sub.out" || {
        fail "the daemon never came online"
        return 1
    }
}

# SIGTERM to the daemon, which must drain and exit 0; then the verdict of
# test NAME, with the end of the daemon's log and of the messages
# ($TMP/daemon.log, $TMP/sub.out) when a check failed.
daemon_test_end() { # NAME
    local rc
    kill -TERM "$DAEMON_PID"
    wait "$DAEMON_PID"
    rc=$?
    DAEMON_PID=
    [ "$rc" -eq 0 ] || fail "the daemon exited $rc on SIGTERM"
    if [ "$FAILS" -gt 0 ]; then
        echo "--- daemon log" >&2
        tail -20 "$TMP/daemon.log" >&2
        echo "--- messages" >&2
        tail -20 "$TMP/sub.out" >&2
        exit 1
    fi
    echo "$1: all checks passed"
}
