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

step "docs/conformance.md covers every RFC keyword and names only existing tests"
python3 scripts/conformance.py check

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo build (release binaries used by the integration tests)"
cargo build --workspace --release --locked

step "cargo test"
cargo test --workspace --release --locked --no-fail-fast

# Tiny sizes: this keeps the benchmark working, its numbers mean nothing here.
# It uses the release binaries built above, like the README's `make bench`.
# Exit 3 (a measurement failed or was not encrypted) fails the suite too.
step "benchmark smoke run (scripts/bench.sh --smoke, without the rebuild)"
"${CARGO_TARGET_DIR:-target}/release/tcpcrypt-bench" --smoke --json "${CARGO_TARGET_DIR:-target}/bench-smoke.json"

step "engine data-path benchmark smoke run (no kernel: the engines' own cost)"
TCPCRYPT_BENCH_MB=8 TCPCRYPT_BENCH_ROUNDS=1 cargo bench -p tcpcrypt-engine --bench data_path --locked

step "engine connection-setup benchmark smoke run (no kernel: the engines' own cost)"
TCPCRYPT_BENCH_CONNECTIONS=50 TCPCRYPT_BENCH_ROUNDS=1 cargo bench -p tcpcrypt-engine --bench connection_setup --locked

step "deployment files: make install / uninstall, systemd unit, shipped config"
bash dist/check.sh

step "Debian packages: build, lintian, install/remove/purge in a throwaway root"
bash dist/deb/check.sh

step "the app developer guide's examples, end to end"
bash docs/examples/check.sh

step "the README's demo, non-interactively"
demo_log=$(mktemp /tmp/tcpcrypt-demo-test.XXXXXX)
bash scripts/demo.sh </dev/null >"$demo_log" 2>&1 || { cat "$demo_log"; echo "test: the demo failed" >&2; exit 1; }
grep -q "RESULT: equal session IDs without the relay" "$demo_log" \
  && grep -q "RESULT: different session IDs through the relay" "$demo_log" \
  || { cat "$demo_log"; echo "test: the demo did not show equal then different session IDs" >&2; exit 1; }
echo "demo: equal IDs without the relay, different IDs through it"
rm -f "$demo_log"

step "fuzz targets build"
bash scripts/fuzz-build.sh
