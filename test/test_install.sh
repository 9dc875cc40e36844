#!/usr/bin/env bash
# test_install.sh - `meson install` puts everything in place (issue #10,
# item 2): into a scratch DESTDIR, the daemon and tools, the unit with the
# configured paths, whose commands and Documentation= pages are installed
# too, the example configuration in sysconfdir (which the installed daemon
# accepts with -t), the man pages, the docs, the handler header with its
# pkg-config file, and the mosquitto plugin.
#
#   test_install.sh BUILD_DIR BINDIR SYSCONFDIR UNITDIR MANDIR MAN(built|none)
set -u
BUILD=$1 BINDIR=$2 SYSCONFDIR=$3 UNITDIR=$4 MANDIR=$5 MAN=$6
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
FAILS=0
fail() {
    echo "FAIL: $*" >&2
    FAILS=$((FAILS + 1))
}
have() { [ -e "$TMP/root$1" ] || fail "not installed: $1"; }

meson install -C "$BUILD" --no-rebuild --destdir "$TMP/root" >"$TMP/install.log" 2>&1 ||
    { cat "$TMP/install.log"; fail "meson install"; exit 1; }

for tool in mqforkd mqforkstat mqfork-load mqfork-device mqfork-packets mqfork-echo-agent; do
    have "$BINDIR/$tool"
done
have "$SYSCONFDIR/mqfork/mqfork.yaml"
find "$TMP/root" -name handler.h -path '*/mqfork/*' | grep -q . || fail "no mqfork/handler.h"
find "$TMP/root" -name mqfork-handler.pc | grep -q . || fail "no mqfork-handler.pc"
find "$TMP/root" -name mqfork_p2p.so | grep -q . || fail "no mqfork_p2p.so"
find "$TMP/root" -name README.md -path '*/doc/mqfork/*' | grep -q . || fail "no README in the docs"

# The unit names the installed daemon and configuration, not a build's.
unit=$TMP/root$UNITDIR/mqforkd.service
[ -f "$unit" ] || { fail "no unit at $UNITDIR/mqforkd.service"; exit 1; }
grep -qx "ExecStart=$BINDIR/mqforkd -c $SYSCONFDIR/mqfork/mqfork.yaml" "$unit" ||
    fail "ExecStart is not the installed paths: $(grep ExecStart= "$unit")"
for cmd in $(sed -n 's/^Exec[A-Za-z]*=\([^ ]*\).*/\1/p' "$unit"); do
    case $cmd in
    "$BINDIR"/*) have "$cmd" ;;
    /bin/kill) ;;
    *) fail "the unit runs $cmd, which the install does not provide" ;;
    esac
done
if [ "$MAN" = built ]; then
    for page in $(sed -n 's/^Documentation=//p' "$unit"); do
        name=${page#man:} section=${name##*(} && section=${section%)} && name=${name%(*}
        have "$MANDIR/man$section/$name.$section"
    done
fi

# The installed daemon accepts the installed example.
"$TMP/root$BINDIR/mqforkd" -t -c "$TMP/root$SYSCONFDIR/mqfork/mqfork.yaml" >"$TMP/t.log" 2>&1 ||
    fail "mqforkd -t refuses the installed configuration: $(cat "$TMP/t.log")"

[ "$FAILS" -eq 0 ] || exit 1
echo "test_install: everything in place"
