#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, property, integration
# (network namespaces, the real daemon, the real Apache). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "test: the integration tests create network namespaces and firewall rules; run as root" >&2
  exit 1
fi

bash scripts/deps.sh

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo build (release binaries used by the integration tests)"
cargo build --workspace --release --locked

step "cargo test"
cargo test --workspace --release --locked

if [[ -x scripts/fuzz-build.sh ]]; then
  step "fuzz targets build"
  bash scripts/fuzz-build.sh
fi
