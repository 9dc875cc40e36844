#!/usr/bin/env bash
# test_plugin.sh - a handler plugin built outside the tree, as a user builds
# one: against the installed header, found with pkg-config. mqforkd -t
# catches its param errors with file:line:column and refuses a plugin of
# another ABI; the daemon runs it as a route through a real mosquitto and
# mqforkstat shows its counter; a
# 64 MiB preload is shared by the workers, not copied; a handler whose init
# crashes is set aside while the other routes keep their workers.
#
#   test_plugin.sh MQFORKD BUILD_DIR SOURCE_DIR
set -u
MQFORKD=$1
BUILD=$2
SRC=$3
FAILS=0

# shellcheck source=test/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
daemon_test_init plug-$$

# ---- build the plugin as a user would -------------------------------------

meson install -C "$BUILD" --no-rebuild --tags devel --destdir "$TMP/root" >"$TMP/install.log" 2>&1 ||
    { cat "$TMP/install.log"; fail "meson install of the header"; exit 1; }
PC=$(find "$TMP/root" -name mqfork-handler.pc | head -n 1)
[ -n "$PC" ] || { fail "no mqfork-handler.pc installed"; exit 1; }
export PKG_CONFIG_PATH=${PC%/*} PKG_CONFIG_SYSROOT_DIR=$TMP/root
CFLAGS=$(pkg-config --cflags mqfork-handler) || { fail "pkg-config mqfork-handler"; exit 1; }
case "$CFLAGS" in *"$TMP/root"*) ;; *) fail "cflags do not point into the install: $CFLAGS" ;; esac
build() { # OUT [CC flags...]
    local out=$1
    shift
    cc -shared -fPIC -std=gnu17 -Wall -Wextra -Werror -o "$TMP/$out" \
        "$SRC/plugin/example.c" $CFLAGS "$@"
}
build example.so || { fail "the example plugin does not build"; exit 1; }
build example-abi.so -DEXAMPLE_ABI=999 || fail "the wrong-ABI plugin does not build"

# ---- mqforkd -t ------------------------------------------------------------

cat >"$TMP/bad.yaml" <<EOF
instance: $INSTANCE
plugins:
  - example.so
routes:
  - name: up
    subscribe: up/+/in
    job: example.upper
    params:
      preload_mb: 5000
      colour: red
EOF
out=$("$MQFORKD" -t -c "$TMP/bad.yaml" 2>&1) && fail "-t accepted bad params"
grep -qF "$TMP/bad.yaml:9:7: error: routes[0].params.preload_mb: 5000 is out of range (0..1024)" <<<"$out" ||
    fail "-t does not place the preload_mb error: $out"
grep -qF "$TMP/bad.yaml:10:7: error: routes[0].params.colour: unknown param for example.upper" <<<"$out" ||
    fail "-t reports only the first problem: $out"

sed -e 's/example.so/example-abi.so/' -e '/preload_mb/d' -e '/colour/d' "$TMP/bad.yaml" >"$TMP/abi.yaml"
out=$("$MQFORKD" -t -c "$TMP/abi.yaml" 2>&1) && fail "-t accepted a plugin of another ABI"
grep -qF "$TMP/abi.yaml:3:5: error: plugins[0]: example-abi.so: built for handler ABI 999; this mqforkd has ABI 3" <<<"$out" ||
    fail "no clear ABI message: $out"

# ---- a private broker -------------------------------------------------------

start_broker || { fail "mosquitto does not start"; exit 1; }

# ---- the plugin as a route --------------------------------------------------

cat >"$TMP/run.yaml" <<EOF
instance: $INSTANCE
broker:
  host: 127.0.0.1
  port: $PORT
plugins:
  - example.so
workers:
  min: 2
  max: 2
errors:
  topic: err/$INSTANCE
routes:
  - name: echo
    subscribe: e/+/in
    job: test.echo
    reply: e/{1}/out
  - name: up
    subscribe: up/+/in
    job: example.upper
    reply: up/{1}/out
    params:
      prefix: ">"
      preload_mb: 64
  - name: broken
    subscribe: b/+/in
    job: example.upper
    reply: b/{1}/out
    params:
      crash_init: true
EOF
"$MQFORKD" -t -c "$TMP/run.yaml" >/dev/null 2>&1 || fail "-t rejects the good configuration"

daemon_test_start "$MQFORKD" 'e/#' 'up/#' 'b/#' "err/$INSTANCE"

pub() { mosquitto_pub -h 127.0.0.1 -p "$PORT" -t "$1" -m "$2"; }
# The echo route answers even while the broken route's workers die.
echoed() {
    pub e/a/in ping
    grep -q '^e/a/out ping' "$TMP/sub.out"
}
wait_for 20 echoed || fail "the echo route does not answer beside a crashing init"
wait_for 20 grep -q 'in init 2 times in a row' "$TMP/daemon.log" ||
    fail "the crashing init was never set aside: $(tail -5 "$TMP/daemon.log")"
pub up/a/in hello
wait_for 20 grep -q '^up/a/out >HELLO' "$TMP/sub.out" || fail "the plugin route does not answer"
# The plugin's counter, summed over its workers, as mqforkstat shows it.
counted() { "$BUILD/mqforkstat" -1 -n "$INSTANCE" | grep -qx 'plugin.example.upper.bytes 6'; }
wait_for 10 counted ||
    fail "mqforkstat lacks the plugin's counter: $("$BUILD/mqforkstat" -1 -n "$INSTANCE" | grep plugin)"
"$BUILD/mqforkstat" -j -n "$INSTANCE" | tr -d ' \t\n' | grep -q '"plugin.example.upper":{[^}]*"bytes":6' ||
    fail "mqforkstat -j lacks the plugin's counter"
"$BUILD/mqforkstat" -p -n "$INSTANCE" | grep -q '^mqfork_plugin_example_upper_bytes_total{mqfork_instance="'"$INSTANCE"'"} 6$' ||
    fail "mqforkstat -p lacks the plugin's counter: $("$BUILD/mqforkstat" -p -n "$INSTANCE" | grep plugin)"
pub b/a/in hello
wait_for 20 grep -q "^err/$INSTANCE .*cannot start" "$TMP/sub.out" ||
    fail "a job of the set-aside route gets no error report"
grep -q '^b/a/out' "$TMP/sub.out" && fail "the set-aside route answered"
kill -0 "$DAEMON_PID" 2>/dev/null || fail "the daemon died"

# ---- the preload is shared, not copied --------------------------------------

kb() { # FIELD PID: a field of smaps_rollup in kB
    awk -v f="$1:" '$1 == f { print $2 }' "/proc/$2/smaps_rollup"
}
# The set-aside route's init is retried now and then: a worker may be
# between its crash and its replacement when looked at.
two_workers() {
    workers=$(pgrep -P "$DAEMON_PID" -f 'mqforkd: worker')
    [ "$(wc -w <<<"$workers")" -eq 2 ]
}
wait_for 10 two_workers || fail "2 workers expected, found: $workers"
for w in $workers; do
    private=$(($(kb Private_Dirty "$w") + $(kb Private_Clean "$w")))
    shared=$(($(kb Shared_Dirty "$w") + $(kb Shared_Clean "$w")))
    echo "worker $w: private $((private / 1024)) MiB, shared $((shared / 1024)) MiB"
    [ "$private" -lt $((16 * 1024)) ] || fail "worker $w holds $((private / 1024)) MiB privately"
    [ "$shared" -ge $((64 * 1024)) ] || fail "worker $w shares only $((shared / 1024)) MiB"
done

daemon_test_end test_plugin
