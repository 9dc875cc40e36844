#!/usr/bin/env bash
# test_alert_rules.sh - the shipped Prometheus alerting rules
# (conf/mqfork-alerts.yml): promtool loads them (check rules), each alert
# fires on its fixture and stays quiet on the instance under its threshold
# (test rules, test/alerts/), and every metric they name is one that
# `mqforkstat -p` prints (test/stat_prom_families.txt): a renamed family
# cannot leave an alert that never fires. Skips (exit 77) without promtool.
#
#   test_alert_rules.sh SOURCE_ROOT
set -u
SRC=$1
FAILS=0

# shellcheck source=test/lib.sh
. "$SRC/test/lib.sh"

if ! command -v promtool >/dev/null 2>&1; then
    echo "test_alert_rules: SKIP: promtool not found (Debian package prometheus; tools/check installs it)"
    exit 77
fi
rules=$SRC/conf/mqfork-alerts.yml
out=$(promtool check rules "$rules" 2>&1) || fail "promtool check rules: $out"
grep -q 'SUCCESS: 6 rules found' <<<"$out" || fail "expected 6 rules: $out"
out=$(cd "$SRC/test/alerts" && promtool test rules mqfork-alerts-test.yml 2>&1) ||
    fail "promtool test rules: $out"

# Each alert has a fixture.
while read -r alert; do
    grep -q "alertname: $alert\$" "$SRC/test/alerts/mqfork-alerts-test.yml" ||
        fail "alert $alert has no fixture in test/alerts/mqfork-alerts-test.yml"
done < <(grep -oE 'alert: [A-Za-z0-9]+' "$rules" | cut -d' ' -f2)
# Each metric is a family of mqforkstat -p (a histogram's by its _bucket);
# mqfork_instance is the label every series carries, not a metric.
while read -r metric; do
    family=${metric%_bucket}
    grep -q "^# TYPE $family " "$SRC/test/stat_prom_families.txt" ||
        fail "the rules use $metric, which mqforkstat -p does not print"
done < <(grep -v '^ *#' "$rules" | grep -oE 'mqfork_[a-z0-9_]+' | grep -vx mqfork_instance | sort -u)
# They group and name by that label, never by Prometheus' own instance
# (the target's host:port, which a site may scrape several daemons behind).
! grep -v '^ *#' "$rules" | grep -qE 'by \([^)]*\binstance\b|labels\.instance\b' ||
    fail "the rules use the label instance; mqforkstat -p names the daemon mqfork_instance"

[ "$FAILS" -eq 0 ] || exit 1
echo "test_alert_rules: all checks passed"
