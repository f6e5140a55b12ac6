#!/usr/bin/env bash
# Builds every cargo-fuzz target of tcpcrypt-proto, tcpcrypt-engine and
# tcpcrypt-auth, so CI notices when one stops compiling. Running them is a
# manual step (see the README.md in each crates/*/fuzz).
#
# Works on the stable toolchain: cargo-fuzz hands rustc nightly-only flags
# (-Zsanitizer, sancov passes), which RUSTC_BOOTSTRAP=1 lets stable accept.
# Installs cargo-fuzz first if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz-build: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
built=0
for fuzz_dir in crates/tcpcrypt-proto/fuzz crates/tcpcrypt-engine/fuzz crates/tcpcrypt-auth/fuzz; do
  targets=$(cargo fuzz list --fuzz-dir "$fuzz_dir")
  if [[ -z "$targets" ]]; then
    echo "fuzz-build: no fuzz targets found in $fuzz_dir" >&2
    exit 1
  fi
  for target in $targets; do
    echo "fuzz-build: building $target"
    # One target directory for both fuzz workspaces: their dependencies
    # (aws-lc above all) are built once.
    cargo fuzz build --fuzz-dir "$fuzz_dir" --target-dir target/fuzz "$target"
    built=$((built + 1))
  done
done
echo "fuzz-build: built $built targets"
