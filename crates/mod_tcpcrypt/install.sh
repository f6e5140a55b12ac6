#!/bin/sh
# Installs mod_tcpcrypt into httpd's module directory and Debian's
# mods-available, so that `a2enmod tcpcrypt` enables it.
#
#   install.sh [PATH/TO/libmod_tcpcrypt.so]
#
# Environment: APXS (default apxs) names the httpd build to install into;
# DESTDIR stages the files under another root (packaging, tests).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
so=${1:-${CARGO_TARGET_DIR:-$here/../../target}/release/libmod_tcpcrypt.so}
apxs=${APXS:-apxs}
destdir=${DESTDIR:-}

if [ ! -f "$so" ]; then
	echo "install.sh: $so not found; build it first (cargo build --release -p mod_tcpcrypt)" >&2
	exit 1
fi

libexecdir=$("$apxs" -q LIBEXECDIR)
sysconfdir=$("$apxs" -q SYSCONFDIR)
includedir=$("$apxs" -q INCLUDEDIR)
available="$destdir$sysconfdir/mods-available"

install -d "$destdir$libexecdir" "$available" "$destdir$includedir"
install -m 0644 "$so" "$destdir$libexecdir/mod_tcpcrypt.so"
# For modules that call the optional functions.
install -m 0644 "$here/include/mod_tcpcrypt.h" "$destdir$includedir/mod_tcpcrypt.h"
# The .load file names the module where httpd will find it: the installed
# path, not the staging one.
sed "s|/usr/lib/apache2/modules|$libexecdir|" "$here/debian/mods-available/tcpcrypt.load" >"$available/tcpcrypt.load"
chmod 0644 "$available/tcpcrypt.load"
# Keep an admin's edited tcpcrypt.conf.
if [ ! -e "$available/tcpcrypt.conf" ]; then
	install -m 0644 "$here/debian/mods-available/tcpcrypt.conf" "$available/tcpcrypt.conf"
fi
echo "installed $destdir$libexecdir/mod_tcpcrypt.so, $available/tcpcrypt.{load,conf} and $destdir$includedir/mod_tcpcrypt.h; enable with: a2enmod tcpcrypt"
