#!/usr/bin/env bash
# Installs the Debian packages the build, the tests and the demo need, if any
# is missing. Safe to run repeatedly; does nothing when all are present.
set -euo pipefail

PACKAGES=(
  build-essential pkg-config clang libclang-dev cmake   # aws-lc-rs, bindgen
  iproute2 iptables tcpdump procps psmisc ethtool       # namespaces, rules, captures, offloads
  apache2 apache2-dev libapache2-mod-php php-cli        # mod_tcpcrypt and its tests
  apache2-utils                                         # ab, for mod_tcpcrypt's real_daemon bench
  ruby python3 curl nghttp2-client                      # CGI languages, HTTP clients
  libssl-dev python3-cryptography                       # the app guide's C and Python examples
  dpkg-dev debhelper fakeroot lintian                   # make deb, dist/deb/check.sh
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "deps: missing packages: ${missing[*]}; run as root (or install them) first" >&2
    exit 1
  fi
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Apache must not run as a system service during tests: every test starts its
# own httpd with a private configuration.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet apache2 2>/dev/null; then
  systemctl stop apache2 || true
fi
if [[ -f /var/run/apache2/apache2.pid ]] && command -v apache2ctl >/dev/null; then
  apache2ctl stop >/dev/null 2>&1 || true
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "deps: cargo not found; install Rust with rustup (https://rustup.rs) first" >&2
  exit 1
fi
