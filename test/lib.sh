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
