#!/usr/bin/env bash
# Installs libtcpcrypt (shared and static library), its header and its
# pkg-config file under PREFIX, from an already built cargo target dir.
#
#   crates/tcpcrypt-client/install.sh PREFIX [TARGET_PROFILE_DIR] [LIBDIR]
#
# TARGET_PROFILE_DIR defaults to target/release (honouring CARGO_TARGET_DIR);
# LIBDIR defaults to PREFIX/lib. Honours DESTDIR for staged installs.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
prefix="${1:?usage: install.sh PREFIX [TARGET_PROFILE_DIR] [LIBDIR]}"
profile_dir="${2:-${CARGO_TARGET_DIR:-$here/../../target}/release}"
libdir="${3:-$prefix/lib}"
dest="${DESTDIR:-}"
version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$here/../../Cargo.toml" | head -n1)"
soname="libtcpcrypt.so.0"

# cargo puts the libraries in the profile dir when tcpcrypt-client itself was
# built, and only in deps/ when it was built as another crate's dependency.
if [[ ! -f "$profile_dir/libtcpcrypt.so" && -f "$profile_dir/deps/libtcpcrypt.so" ]]; then
  profile_dir="$profile_dir/deps"
fi
for f in libtcpcrypt.so libtcpcrypt.a; do
  [[ -f "$profile_dir/$f" ]] || { echo "install.sh: $profile_dir/$f missing; run cargo build -p tcpcrypt-client --release first" >&2; exit 1; }
done

install -d "$dest$libdir" "$dest$prefix/include/tcpcrypt" "$dest$libdir/pkgconfig"
install -m 0755 "$profile_dir/libtcpcrypt.so" "$dest$libdir/libtcpcrypt.so.$version"
ln -sf "libtcpcrypt.so.$version" "$dest$libdir/$soname"
ln -sf "$soname" "$dest$libdir/libtcpcrypt.so"
install -m 0644 "$profile_dir/libtcpcrypt.a" "$dest$libdir/libtcpcrypt.a"
install -m 0644 "$here/include/tcpcrypt/tcpcrypt.h" "$dest$prefix/include/tcpcrypt/tcpcrypt.h"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@LIBDIR@|$libdir|g" -e "s|@VERSION@|$version|g" \
  "$here/tcpcrypt.pc.in" > "$dest$libdir/pkgconfig/tcpcrypt.pc"
echo "installed libtcpcrypt $version under $dest$prefix"
