#!/usr/bin/env bash
# test_man.sh - the manual pages cannot drift from what they describe: every
# page was built (roff with its .TH line; groff, when installed, finds
# nothing to warn about), each tool answers -h, --help and --version alike,
# every option in each tool's usage is in its page as *-x*, every key of conf/mqfork.yaml (commented ones too) is in
# mqfork.yaml(5) as *dotted.name* (a route's keys, and its params, by their
# own name), and so is every key name of the key tables in conf/*.c. Without scdoc the pages are not built, and only the drift
# checks run, on the sources in doc/.
#
#   test_man.sh SOURCE_ROOT MAN_BUILD_DIR built|none MQFORKD MQFORKSTAT \
#               MQFORK_LOAD MQFORK_DEVICE MQFORK_PACKETS MQFORK_ECHO_AGENT
set -u
SRC=$1
MAN=$2
BUILT=$3
shift 3
FAILS=0

# shellcheck source=test/lib.sh
. "$SRC/test/lib.sh"

pages="mqforkd.8 mqfork.yaml.5 mqforkstat.1 mqfork-load.1 mqfork-device.1 mqfork-packets.1
    mqfork-echo-agent.1"

# 1. Each page built.
if [ "$BUILT" = built ]; then
    for page in $pages; do
        name=${page%.*}
        section=${page##*.}
        f=$MAN/$page
        if [ ! -s "$f" ]; then
            fail "$page was not built ($f)"
            continue
        fi
        grep -q "^\.TH \"$name\" \"$section\"" "$f" || fail "$page has no .TH \"$name\" \"$section\" line"
        if command -v groff >/dev/null 2>&1; then
            out=$(LC_ALL=C groff -ww -man -Tutf8 -z "$f" 2>&1)
            [ -z "$out" ] || fail "groff warns about $page: $out"
        fi
    done
else
    echo "test_man: scdoc not found, pages not built; checking their sources only"
fi

# 2. Every option of a tool's usage is in its page, in bold.
# options TEXT: the -x and --long options named in a usage text.
options() {
    grep -oE '(^|[][ ,|(])--?[A-Za-z0-9][A-Za-z0-9-]*' | sed 's/^[][ ,|(]//' | sort -u
}

check_tool() { # check_tool PAGE USAGE_TEXT
    local page=$1 usage=$2 scd=$SRC/doc/$1.scd opt n=0
    [ -n "$usage" ] || {
        fail "$page: no usage text"
        return
    }
    while read -r opt; do
        [ -n "$opt" ] || continue
        n=$((n + 1))
        grep -qF -- "*$opt*" "$scd" || fail "$page: option $opt of the usage is not in doc/$page.scd"
    done < <(printf '%s\n' "$usage" | options)
    [ "$n" -gt 0 ] || fail "$page: found no option in the usage"
}

# Every tool: -h and --help print the same usage on standard output and
# exit 0; --version prints "NAME VERSION" and exits 0.
check_cli() { # check_cli NAME PROGRAM
    local name=$1 prog=$2 short long version
    short=$("$prog" -h 2>/dev/null) || fail "$name -h exits $?, want 0"
    long=$("$prog" --help 2>/dev/null) || fail "$name --help exits $?, want 0"
    [[ $short == usage:* ]] || fail "$name -h prints no usage on standard output: $short"
    [ "$short" = "$long" ] || fail "$name -h and --help differ"
    version=$("$prog" --version 2>/dev/null) || fail "$name --version exits $?, want 0"
    [[ $version =~ ^$name\ [0-9]+\.[0-9]+ ]] || fail "$name --version prints '$version'"
}

check_cli mqforkd "$1"
check_cli mqforkstat "$2"
check_cli mqfork-load "$3"
check_cli mqfork-device "$4"
check_cli mqfork-packets "$5"
check_cli mqfork-echo-agent "$6"

check_tool mqforkd.8 "$("$1" --help)"
check_tool mqforkstat.1 "$("$2" --help)"
check_tool mqfork-load.1 "$("$3" --help)"
check_tool mqfork-device.1 "$("$4" --help)"
check_tool mqfork-packets.1 "$("$5" --help)"
check_tool mqfork-echo-agent.1 "$("$6" --help)"

# 3. Every key of the example configuration is in mqfork.yaml(5).
# Keys of maps are dotted (broker.tls.ca_file); in a list item (a route)
# the path starts again, and a key is checked by its last name (name,
# sample_rate). A key that only opens a map is covered by its children.
keys=$(awk '
    {
        line = $0
        if (match(line, /^ *#/)) {          # a commented key counts too
            pre = substr(line, 1, RLENGTH - 1)
            rest = substr(line, RLENGTH + 1)
            sub(/^ /, "", rest)
            line = pre rest
        }
        item = 0
        if (match(line, /^ *- /)) {
            item = 1
            ind0 = RLENGTH - 2
            line = substr(line, 1, ind0) "  " substr(line, RLENGTH + 1)
        }
        if (!match(line, /^ *[a-z_][a-z0-9_]*:( |$)/))
            next
        ind = match(line, /[^ ]/) - 1
        key = substr(line, ind + 1)
        sub(/:.*/, "", key)
        value = substr(line, ind + length(key) + 2)
        sub(/#.*/, "", value)
        gsub(/ /, "", value)
        if (item) {
            while (n > 0 && ind_of[n] >= ind0) n--
            n++; ind_of[n] = ind0; key_of[n] = "[]"
        }
        while (n > 0 && ind_of[n] >= ind) n--
        n++; ind_of[n] = ind; key_of[n] = key
        if (value == "")
            next
        path = ""; inlist = 0
        for (i = 1; i <= n; i++) {
            if (key_of[i] == "[]") { path = ""; inlist = 1; continue }
            path = path == "" ? key_of[i] : path "." key_of[i]
        }
        if (inlist) path = key
        print path
    }' "$SRC/conf/mqfork.yaml" | sort -u)
nkeys=0
for key in $keys; do
    nkeys=$((nkeys + 1))
    grep -qF -- "*$key*" "$SRC/doc/mqfork.yaml.5.scd" ||
        fail "key $key of conf/mqfork.yaml is not in doc/mqfork.yaml.5.scd"
done
[ "$nkeys" -ge 50 ] || fail "found only $nkeys keys in conf/mqfork.yaml: $keys"

# 4. Every key the loader knows (the key tables of conf/*.c), also
# those the example leaves out, is in mqfork.yaml(5): as *name* or as the
# last part of a *dotted.name*.
ntable=0
for key in $(grep -oE '(STR|INT|NUM|BOOL|CHOICE|ENUM|MAP)\("[a-z0-9_]+"|\.name = "[a-z0-9_]+"' \
    "$SRC"/conf/*.c | sed -E 's/.*"([a-z0-9_]+)"/\1/' | sort -u); do
    ntable=$((ntable + 1))
    grep -qE -- "[*.]$key\*" "$SRC/doc/mqfork.yaml.5.scd" ||
        fail "key $key of conf/*.c is not in doc/mqfork.yaml.5.scd"
done
[ "$ntable" -ge 50 ] || fail "found only $ntable keys in conf/*.c"

if [ "$FAILS" -gt 0 ]; then
    exit 1
fi
echo "test_man: all checks passed ($nkeys keys of conf/mqfork.yaml, $ntable of conf/*.c)"
