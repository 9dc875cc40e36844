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

# mqforkd -t on FILE must refuse it (WHAT names it in the failure) and
# print each of the LINES (fixed strings); each miss is counted.
t_refuses() { # MQFORKD FILE WHAT LINE...
    local mqforkd=$1 file=$2 what=$3 out want
    shift 3
    out=$("$mqforkd" -t -c "$file" 2>&1) && fail "-t accepted $what"
    for want in "$@"; do
        grep -qF "$want" <<<"$out" || fail "-t does not say '$want': $out"
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
        # below the kernel's ephemeral ports (32768 up), which clients take
        PORT=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
        {
            printf 'listener %d 127.0.0.1\nallow_anonymous true\n' "$PORT"
            # As root, mosquitto would drop to the user mosquitto, who may
            # not reach a plugin in a tree under a private directory.
            [ "$(id -u)" -ne 0 ] || printf 'user root\n'
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

# Subscribe to the daemon's status and the TOPICS given ($TMP/sub.out, a
# line `topic payload` a message; with --hex `topic hex-of-payload`, so
# that binary payloads survive), start MQFORKD on $TMP/run.yaml
# ($TMP/daemon.log) and wait until it is online. 0, or 1 (counted) when it
# never came online.
daemon_test_start() { # MQFORKD [--hex] TOPIC...
    local mqforkd=$1 t args=(-v) online=online
    shift
    if [ "${1:-}" = --hex ]; then
        args=(-F '%t %x')
        online=$(printf online | xxd -p)
        shift
    fi
    for t in "mqfork/$INSTANCE/status" "$@"; do args+=(-t "$t"); done
    mosquitto_sub -h 127.0.0.1 -p "$PORT" "${args[@]}" >"$TMP/sub.out" 2>&1 &
    SUB_PID=$!
    "$mqforkd" -c "$TMP/run.yaml" >"$TMP/daemon.log" 2>&1 &
    DAEMON_PID=$!
    wait_for 30 grep -q "$online" "$TMP/sub.out" || {
        fail "the daemon never came online: $(tail -5 "$TMP/daemon.log")"
        return 1
    }
}

# SIGTERM to the daemon, which must drain and exit 0; then the verdict.
daemon_test_end() { # NAME
    daemon_test_stop
    daemon_test_verdict "$1"
}

# SIGTERM to the daemon, which must drain and exit 0 (counted if not).
daemon_test_stop() {
    local rc
    kill -TERM "$DAEMON_PID"
    wait "$DAEMON_PID"
    rc=$?
    DAEMON_PID=
    [ "$rc" -eq 0 ] || fail "the daemon exited $rc on SIGTERM"
}

# The verdict of test NAME, with the end of the daemon's log and of the
# messages ($TMP/daemon.log, $TMP/sub.out) when a check failed.
daemon_test_verdict() { # NAME
    if [ "$FAILS" -gt 0 ]; then
        echo "--- daemon log" >&2
        tail -20 "$TMP/daemon.log" >&2
        echo "--- messages" >&2
        tail -20 "$TMP/sub.out" | cut -c1-300 >&2
        exit 1
    fi
    echo "$1: all checks passed"
}

# The start of a test of the voice gateway with speech, called with the
# test's name and its arguments, MQFORKD MQFORK-DEVICE MQFORKSTAT
# MQFORK_P2P.SO MQFORK_SPEECH.SO: sets those, TMP, PIDS, INSTANCE and RAW
# (pocketsphinx-testdata's goforward.raw), and the EXIT trap; exits 77
# (skipped) without the test data.
# shellcheck disable=SC2034 # the variables are the caller's
speech_test_init() {
    local name=$1
    MQFORKD=$2 DEVICE=$3 MQFORKSTAT=$4 P2P=$5 SPEECH=$6
    TMP=$(mktemp -d)
    PIDS=()
    INSTANCE=${name#test_}-$$
    RAW=/usr/share/pocketsphinx/test/data/goforward.raw
    trap cleanup_test EXIT
    [ -r "$RAW" ] || {
        echo "$name: no $RAW (pocketsphinx-testdata): skipped"
        exit 77
    }
}

# The EXIT trap of a test that started PIDS, made TMP and ran mqforkd as
# INSTANCE.
cleanup_test() {
    for p in "${PIDS[@]}"; do kill_tree "$p"; done
    wait 2>/dev/null
    rm -rf "$TMP"
    rm -f "/dev/shm/mqfork.$INSTANCE"
}

# The voice gateway that listens and speaks, for a test: a private
# mosquitto with mqfork_p2p.so ($P2P), and mqforkd ($MQFORKD, $SPEECH) with
# uplink recognize and say_voice rms at 16 kHz; each argument is one more
# line of its configuration, after those of voice: (indented, it goes under
# voice:). Sets PORT and DAEMON; the log is $TMP/daemon.log. 0 once the
# daemon subscribed.
start_voice_speech() {
    start_broker "plugin $P2P" || {
        fail "mosquitto does not start"
        return 1
    }
    PIDS+=("$BROKER")
    printf '%s\n' "instance: $INSTANCE" "broker: {host: 127.0.0.1, port: $PORT}" \
        "workers: {min: 2, max: 2}" "limits: {max_payload: 500000}" "streams: {max: 4096}" \
        "plugins: [$SPEECH]" "voice:" "  port: $((PORT + 1))" "  uplink: [recognize]" \
        "  say_voice: rms" "  downlink_rate: 16000" "$@" >"$TMP/voice.yaml"
    "$MQFORKD" -t -c "$TMP/voice.yaml" >/dev/null || fail "mqforkd -t refuses the configuration"
    "$MQFORKD" -c "$TMP/voice.yaml" >"$TMP/daemon.log" 2>&1 &
    DAEMON=$!
    PIDS+=("$DAEMON")
    wait_for 20 grep -q "subscribed to voice/+/say" "$TMP/daemon.log" || {
        fail "the daemon does not subscribe"
        return 1
    }
}

# A process's user CPU time in ticks (its name holds spaces: the fields are
# counted after the last ')').
utime() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 }'; }

# The worker of $DAEMON whose CPU time grows by 3 ticks within 50 ms (the
# one running a long job); nothing when none is caught within 10 s, or once
# "$@" succeeds.
busy_worker() {
    local end=$((SECONDS + 10)) w workers
    local -A before
    workers=$(pgrep -P "$DAEMON" -f 'mqforkd: worker')
    while [ $SECONDS -lt $end ] && ! "$@"; do
        for w in $workers; do before[$w]=$(utime "$w"); done
        sleep 0.05
        for w in $workers; do
            if [ $(($(utime "$w") - before[$w])) -ge 3 ]; then
                echo "$w"
                return
            fi
        done
    done
}
