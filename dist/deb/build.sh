#!/usr/bin/env bash
# Builds the Debian packages (tcpcryptd, libtcpcrypt0, libtcpcrypt-dev,
# libapache2-mod-tcpcrypt) from this tree with debian/ and dpkg-buildpackage,
# and collects them in OUTDIR. `make deb` runs it.
#
#   dist/deb/build.sh [OUTDIR]      (default: $CARGO_TARGET_DIR/debian)
#
# The Rust build runs offline with the installed toolchain, in the tree's
# target directory, so a release build already made is reused.
# dpkg-buildpackage writes its results next to the tree (..); they are moved
# from there into OUTDIR at once.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
out=${1:-$CARGO_TARGET_DIR/debian}
parent=$(dirname "$root")

source_name=$(sed -n 's/^Source: *//p' "$root/debian/control")
version=$(cd "$root" && dpkg-parsechangelog -S Version)
arch=$(dpkg-architecture -q DEB_HOST_ARCH)
packages=$(sed -n 's/^Package: *//p' "$root/debian/control")

cd "$root"
dpkg-buildpackage -b -us -uc >"$CARGO_TARGET_DIR/deb-build.log" 2>&1 || {
  tail -n 40 "$CARGO_TARGET_DIR/deb-build.log" >&2
  echo "deb: dpkg-buildpackage failed; full log in $CARGO_TARGET_DIR/deb-build.log" >&2
  exit 1
}
mkdir -p "$out"
rm -f "$out"/*.deb "$out"/*.ddeb "$out"/*.buildinfo "$out"/*.changes
for p in $packages; do
  mv "$parent/${p}_${version}_${arch}.deb" "$out/"
  if [[ -e $parent/${p}-dbgsym_${version}_${arch}.deb ]]; then
    mv "$parent/${p}-dbgsym_${version}_${arch}.deb" "$out/"
  fi
done
mv "$parent/${source_name}_${version}_${arch}.buildinfo" "$parent/${source_name}_${version}_${arch}.changes" "$out/"
# Leave the tree as it was: dh_clean removes debian/tmp, the package trees
# and debhelper's logs.
debian/rules clean >/dev/null
echo "deb: built in $out:"
ls -1 "$out"
