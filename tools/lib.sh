# shellcheck shell=bash disable=SC2034
# tools/lib.sh — shell helpers shared by tools/check and tools/demo.
# Source it (". tools/lib.sh"); it sets no shell options of its own.

# Every Debian package the build, the tests and the demo need, in one place.
#   build:    meson ninja-build pkg-config gcc clang + the -dev libraries
#             (mosquitto-dev: the broker plugin headers for mqfork_p2p.so;
#             libclang-rt-dev: clang's sanitizer and libFuzzer runtimes, only
#             recommended by clang, so --no-install-recommends leaves it out;
#             scdoc: the manual pages of doc/, which test_man checks)
#   tests:    mosquitto (private broker), mosquitto-clients, openssl (TLS certs)
#   speech:   libpocketsphinx-dev flite1-dev libespeak-ng-dev libsoxr-dev
#             (plugins/speech, mqfork_speech.so), pocketsphinx-en-us (the
#             model), pocketsphinx-testdata (test_speech's recordings), jq
#   demo/ops: espeak-ng + sox + opus-tools (voice samples), prometheus
#             (promtool checks the -p exposition and, in test_alert_rules,
#             conf/mqfork-alerts.yml), tmux (demo panes)
MQFORK_DEB_PACKAGES=(
    meson ninja-build pkg-config gcc clang libclang-rt-dev
    libmosquitto-dev liburing-dev libopus-dev libyaml-dev libssl-dev
    libsystemd-dev libcjson-dev libncurses-dev libxxhash-dev mosquitto-dev scdoc
    mosquitto mosquitto-clients openssl
    libpocketsphinx-dev pocketsphinx-en-us pocketsphinx-testdata flite1-dev libespeak-ng-dev
    libsoxr-dev jq xxd
    espeak-ng sox opus-tools prometheus tmux
)

# Repository root (the directory above tools/).
MQFORK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Progress line: "== building (gcc)".
mqfork_say() {
    printf '== %s\n' "$*"
}

mqfork_warn() {
    printf '!! %s\n' "$*" >&2
}

# Print the packages from the arguments (default: MQFORK_DEB_PACKAGES) that
# are not fully installed, one per line.
mqfork_missing_packages() {
    local pkg status
    (($# > 0)) || set -- "${MQFORK_DEB_PACKAGES[@]}"
    for pkg in "$@"; do
        status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
        [[ "$status" == "install ok installed" ]] || printf '%s\n' "$pkg"
    done
}

# Run a command as root: directly, through sudo, or not at all (returns 1).
_mqfork_as_root() {
    if [[ "$(id -u)" == 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        if [[ -t 0 ]]; then
            sudo "$@"
        else
            sudo -n "$@" # no terminal: never wait for a password prompt
        fi
    else
        return 1
    fi
}

# Install whatever is missing of MQFORK_DEB_PACKAGES (or of the arguments).
# Does nothing (and needs no root) when everything is there already.
# Returns 1 with a clear message when it cannot install.
mqfork_ensure_packages() {
    local missing still apt_opts
    (($# > 0)) || set -- "${MQFORK_DEB_PACKAGES[@]}"
    mapfile -t missing < <(mqfork_missing_packages "$@")
    ((${#missing[@]} == 0)) && return 0

    mqfork_say "installing ${missing[*]}"
    if [[ "$(id -u)" != 0 ]] && ! command -v sudo >/dev/null 2>&1; then
        mqfork_warn "not root and no sudo; please install as root:"
        mqfork_warn "  apt-get install --no-install-recommends ${missing[*]}"
        return 1
    fi

    apt_opts=(-q -y --no-install-recommends -o DPkg::Lock::Timeout=300)
    _mqfork_as_root env DEBIAN_FRONTEND=noninteractive apt-get -qq \
        -o DPkg::Lock::Timeout=300 update ||
        mqfork_warn "apt-get update failed; trying to install anyway"
    if ! _mqfork_as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install "${apt_opts[@]}" "${missing[@]}"; then
        # The usual cause: a package's service (mosquitto) failed to start in
        # its postinst. We never use the system broker, so finish configuring
        # with service starts denied, but only if no policy is in place.
        mqfork_warn "apt-get install failed; retrying configuration without starting services"
        _mqfork_configure_without_services || true
    fi

    mapfile -t still < <(mqfork_missing_packages "${missing[@]}")
    if ((${#still[@]} > 0)); then
        mqfork_warn "could not install: ${still[*]}"
        mqfork_warn "please install as root:"
        mqfork_warn "  apt-get install --no-install-recommends ${still[*]}"
        return 1
    fi
    return 0
}

_mqfork_configure_without_services() {
    local policy=/usr/sbin/policy-rc.d rc=0
    if _mqfork_as_root test -e "$policy"; then
        _mqfork_as_root env DEBIAN_FRONTEND=noninteractive dpkg --configure -a
        return
    fi
    _mqfork_as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy" ||
        return 1
    _mqfork_as_root env DEBIAN_FRONTEND=noninteractive dpkg --configure -a || rc=$?
    _mqfork_as_root rm -f "$policy"
    return "$rc"
}
