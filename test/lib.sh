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
