#!/usr/bin/env bash
# Checks the deployment files, as root, after a release build:
#  - `make install DESTDIR=...` places every file, with this prefix's paths
#    in the pkg-config file and the systemd unit; a second install keeps an
#    edited tcpcryptd.conf; `make uninstall` removes all but the config;
#  - the installed unit passes `systemd-analyze verify` without a warning;
#  - the shipped tcpcryptd.conf, with every option uncommented at its
#    documented value, starts tcpcryptd (in a throwaway network namespace),
#    whose SIGTERM then leaves no rule behind.
#
#   bash dist/check.sh          (honours CARGO_TARGET_DIR)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
target=$CARGO_TARGET_DIR/release

fail() { echo "check: FAIL: $*" >&2; exit 1; }
pass() { echo "check: ok: $*"; }

[[ $(id -u) -eq 0 ]] || fail "needs root (a network namespace for the daemon)"

stage=$(mktemp -d /tmp/tcpcrypt-dist-check.XXXXXX)
ns=dist-check-$$
cleanup() {
  set +e
  for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  ip netns del "$ns" 2>/dev/null
  rm -rf "$stage"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. Installation layout.
dest=$stage/root
make -s -C "$root" install DESTDIR="$dest" >"$stage/install.log" 2>&1 \
  || fail "make install: $(cat "$stage/install.log")"
libexec=$(apxs -q LIBEXECDIR)
apache_conf=$(apxs -q SYSCONFDIR)
expected=(
  /usr/local/sbin/tcpcryptd
  /usr/local/bin/tcpcrypt
  /usr/local/lib/libtcpcrypt.so
  /usr/local/lib/libtcpcrypt.so.0
  /usr/local/lib/libtcpcrypt.a
  /usr/local/include/tcpcrypt/tcpcrypt.h
  /usr/local/lib/pkgconfig/tcpcrypt.pc
  "$libexec/mod_tcpcrypt.so"
  "$apache_conf/mods-available/tcpcrypt.load"
  "$apache_conf/mods-available/tcpcrypt.conf"
  "$(apxs -q INCLUDEDIR)/mod_tcpcrypt.h"
  /usr/local/lib/systemd/system/tcpcryptd.service
  /etc/tcpcrypt/tcpcryptd.conf
  /etc/tcpcrypt/tcpcryptd.conf.dist
  /usr/local/share/doc/tcpcrypt/operator-guide.md
  /usr/local/share/doc/tcpcrypt/app-developer-guide.md
  /usr/local/share/doc/tcpcrypt/control-protocol.md
  /usr/local/share/doc/tcpcrypt/architecture.md
  /usr/local/share/doc/tcpcrypt/channel-bound-auth.md
  /usr/local/share/doc/tcpcrypt/examples/client.py
  /usr/local/share/doc/tcpcrypt/examples/proof.c
)
for f in "${expected[@]}"; do
  [[ -e $dest$f ]] || fail "make install did not create $f"
done
pass "make install placed all ${#expected[@]} files"

unit=$dest/usr/local/lib/systemd/system/tcpcryptd.service
grep -q '@[A-Z]*@' "$unit" && fail "unsubstituted placeholder in the unit: $(grep '@[A-Z]*@' "$unit")"
grep -qx 'ExecStart=/usr/local/sbin/tcpcryptd --config /etc/tcpcrypt/tcpcryptd.conf' "$unit" \
  || fail "unit ExecStart: $(grep ExecStart= "$unit")"
grep -qx 'prefix=/usr/local' "$dest/usr/local/lib/pkgconfig/tcpcrypt.pc" || fail "pkg-config prefix"
PKG_CONFIG_PATH=$dest/usr/local/lib/pkgconfig PKG_CONFIG_SYSROOT_DIR=$dest \
  pkg-config --cflags --libs tcpcrypt >/dev/null || fail "pkg-config cannot read tcpcrypt.pc"
pass "unit and pkg-config file carry the install paths"

echo "# edited by the admin" >>"$dest/etc/tcpcrypt/tcpcryptd.conf"
make -s -C "$root" install DESTDIR="$dest" >"$stage/install2.log" 2>&1 || fail "second make install"
tail -n1 "$dest/etc/tcpcrypt/tcpcryptd.conf" | grep -q "edited by the admin" \
  || fail "a second make install overwrote tcpcryptd.conf"
pass "a second make install keeps an edited tcpcryptd.conf"

# 2. systemd's own check of the unit (the binary must exist where it says).
if command -v systemd-analyze >/dev/null; then
  sed -e "s|/usr/local/sbin/tcpcryptd|$target/tcpcryptd|" "$unit" >"$stage/tcpcryptd.service"
  out=$(systemd-analyze verify "$stage/tcpcryptd.service" 2>&1) || fail "systemd-analyze verify: $out"
  [[ -z $out ]] || fail "systemd-analyze verify warns: $out"
  pass "systemd-analyze verify accepts the unit"
else
  echo "check: skipped: systemd-analyze not installed"
fi

# 3. Every option of the shipped config at its documented value (but the
# paths, and the group, which must exist once named).
conf=$stage/all.conf
sed -e 's/^#\([a-z-]* = \)/\1/' "$root/dist/etc/tcpcryptd.conf" \
  | sed -e "s|^control-socket = .*|control-socket = $stage/control.sock|" \
        -e "s|^keylog = .*|keylog = $stage/keylog|" \
        -e "s|^control-group = .*|control-group = root|" >"$conf"
# The file must show every option `tcpcryptd --help` lists (but --config).
in_file=$(sed -n 's/^\([a-z-]*\) = .*/\1/p' "$conf" | sort | tr '\n' ' ')
in_help=$("$target/tcpcryptd" --help | sed -n 's/^ *--\([a-z-]*\).*/\1/p' \
  | grep -vx 'config\|help\|version' | sort | tr '\n' ' ')
[[ $in_file == "$in_help" ]] || fail "tcpcryptd.conf shows [$in_file], tcpcryptd --help has [$in_help]"
options=$(wc -w <<<"$in_file")
ip netns add "$ns"
ip -n "$ns" link set lo up
ip netns exec "$ns" "$target/tcpcryptd" --config "$conf" 2>"$stage/daemon.log" &
daemon=$!
for _ in $(seq 100); do grep -qs ' ready: ' "$stage/daemon.log" && break; sleep 0.1; done
grep -Eq ' ready: (queue 7463|[0-9]+ packet threads on queues 7463 to [0-9]+), fail-open' "$stage/daemon.log" \
  || fail "tcpcryptd did not start with the shipped config: $(cat "$stage/daemon.log")"
ip netns exec "$ns" iptables -t raw -S OUTPUT | grep -q 'comment tcpcryptd' || fail "no rules installed"
kill -TERM "$daemon"
wait "$daemon" || fail "tcpcryptd exited with an error: $(cat "$stage/daemon.log")"
ip netns exec "$ns" iptables -t raw -S | grep -q TCPCRYPT && fail "rules left after SIGTERM"
pass "the shipped config (all $options options) starts tcpcryptd; SIGTERM removes its rules"

# 4. Uninstall.
make -s -C "$root" uninstall DESTDIR="$dest" >"$stage/uninstall.log" 2>&1 || fail "make uninstall"
left=$(cd "$dest" && find . -type f -o -type l | sort | tr '\n' ' ')
[[ $left == "./etc/apache2/mods-available/tcpcrypt.conf ./etc/tcpcrypt/tcpcryptd.conf " ]] \
  || fail "make uninstall left: $left"
pass "make uninstall removes everything but the two config files"

echo "check: all deployment checks passed"
