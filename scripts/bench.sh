#!/usr/bin/env bash
# The benchmark: builds the release binaries, then runs tcpcrypt-bench, which
# sets up its own namespaces and daemons, measures plain TCP against tcpcrypt
# in alternating rounds and removes everything again. Run as root.
# Arguments go to tcpcrypt-bench (e.g. --rounds 9, --bulk-bytes 1G, --smoke;
# --help lists them). The table goes to stdout, JSON to target/bench.json.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "bench: it creates network namespaces and firewall rules; run as root" >&2
  exit 1
fi

# Only what the build and the test bed need, not the whole test suite's list
# (Apache, PHP, ...) that scripts/deps.sh installs.
PACKAGES=(build-essential pkg-config clang libclang-dev cmake iproute2 iptables procps)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "bench: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "bench: cargo not found; install Rust with rustup (https://rustup.rs) first" >&2
  exit 1
fi

cargo build --release --locked -p tcpcryptd -p tcpcrypt-bench
exec "${CARGO_TARGET_DIR:-target}/release/tcpcrypt-bench" "$@"
