#!/usr/bin/env bash
# Checks the Debian packages, as root (scripts/test.sh runs it):
#  - they build from the tree with dist/deb/build.sh (`make deb`);
#  - lintian reports no error (warnings are printed; see dist/deb/README.md);
#  - installed together with dpkg -i in a throwaway root, the daemon's unit
#    passes `systemd-analyze verify` and is not enabled, the tcpcrypt group
#    exists, the configuration is a conffile, `a2enmod tcpcrypt` and
#    `apache2ctl -t` work, a C program builds against libtcpcrypt through
#    pkg-config and runs;
#  - removing keeps the configuration and disables the module; purging then
#    leaves no file, directory or group behind that the install created;
#  - with an admin's tcpcrypt group already there, install uses it and purge
#    keeps it.
#
# The throwaway root is an overlay mount of this machine's own root
# filesystem (upper layer in a tmpfs), entered with chroot: it has the
# packages the suite already needs (apache2, iptables, adduser), costs no
# download, and whatever dpkg does in it vanishes with the mount.
#
#   bash dist/deb/check.sh          (honours CARGO_TARGET_DIR)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}

fail() { echo "deb-check: FAIL: $*" >&2; exit 1; }
pass() { echo "deb-check: ok: $*"; }

[[ $(id -u) -eq 0 ]] || fail "needs root (dpkg in a chroot, mounts)"
for tool in dpkg-buildpackage lintian chroot; do
  command -v "$tool" >/dev/null || fail "$tool is missing (scripts/deps.sh installs it)"
done

work=$(mktemp -d /tmp/tcpcrypt-deb-check.XXXXXX)
mnt=$work/mnt
r=$mnt/root
cleanup() {
  set +e
  for m in "$r/proc" "$r/dev" "$r" "$mnt"; do
    mountpoint -q "$m" && umount "$m"
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. Build.
debs=$work/debs
bash "$root/dist/deb/build.sh" "$debs" >"$work/build.log" 2>&1 || fail "build: $(tail -n 30 "$work/build.log")"
packages=(tcpcryptd libtcpcrypt0 libtcpcrypt-dev libapache2-mod-tcpcrypt)
files=()
for p in "${packages[@]}"; do
  f=$(ls "$debs/${p}"_*.deb 2>/dev/null | head -n1)
  [[ -n $f ]] || fail "no $p package was built"
  files+=("$f")
done
pass "built ${packages[*]}"

# 2. lintian: errors fail, warnings are shown.
lintian --fail-on error --no-tag-display-limit "${files[@]}" >"$work/lintian.log" 2>&1 \
  || fail "lintian: $(cat "$work/lintian.log")"
grep -E '^[EW]: ' "$work/lintian.log" | sed 's/^/deb-check:   lintian /' || true
pass "lintian reports no error"

# 3. The throwaway root.
mkdir -p "$mnt"
mount -t tmpfs tmpfs "$mnt"
mkdir -p "$mnt/upper" "$mnt/work" "$r"
mount -t overlay overlay -o "lowerdir=/,upperdir=$mnt/upper,workdir=$mnt/work" "$r"
mount -t proc proc "$r/proc"
mount --bind /dev "$r/dev"
in_root() { chroot "$r" "$@"; }
# No service is started or restarted from maintainer scripts in here.
printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d"
chmod 0755 "$r/usr/sbin/policy-rc.d"
in_root sh -c '[ ! -d /run/systemd/system ]' || fail "the chroot sees a running systemd"
mkdir -p "$r/tmp/debs"
cp "${files[@]}" "$r/tmp/debs/"

# Start from a root without anything of tcpcrypt's, as a fresh machine: no
# group, no files of an earlier `make install`, no Apache module state.
if in_root getent group tcpcrypt >/dev/null; then
  in_root groupdel tcpcrypt
fi
rm -rf "$r/etc/tcpcrypt" "$r"/etc/apache2/mods-*/tcpcrypt.* "$r"/var/lib/apache2/module/*/tcpcrypt
for f in "${files[@]}"; do
  dpkg-deb -c "$f" | awk '$1 !~ /^d/ { sub(/^\.\//, "", $6); print $6 }' | while read -r p; do
    rm -f "$r/$p"
  done
done
state=$work/before.json
python3 "$root/dist/deb/rootdiff.py" record "$mnt/upper" "$r" "$state"

# 4. Install.
in_root sh -c 'dpkg -i /tmp/debs/*.deb' >"$work/install.log" 2>&1 || fail "dpkg -i: $(cat "$work/install.log")"
for p in "${packages[@]}"; do
  in_root dpkg-query -W -f='${Status}\n' "$p" | grep -q "install ok installed" || fail "$p is not installed"
done
pass "dpkg -i installed all four packages"

in_root getent group tcpcrypt >/dev/null || fail "no tcpcrypt group after install"
in_root dpkg-query -W -f='${Conffiles}\n' tcpcryptd | grep -q ' /etc/tcpcrypt/tcpcryptd.conf ' \
  || fail "tcpcryptd.conf is not a conffile"
[[ ! -e $r/etc/systemd/system/multi-user.target.wants/tcpcryptd.service ]] || fail "the unit was enabled on install"
out=$(in_root systemd-analyze verify /lib/systemd/system/tcpcryptd.service 2>&1) || fail "systemd-analyze verify: $out"
[[ -z $out ]] || fail "systemd-analyze verify warns: $out"
in_root /usr/sbin/tcpcryptd --help >/dev/null || fail "tcpcryptd --help"
in_root /usr/bin/tcpcrypt --version >/dev/null || fail "tcpcrypt --version"
pass "group created, conffile marked, unit verified and not enabled, binaries run"

in_root a2enmod tcpcrypt >"$work/a2enmod.log" 2>&1 || fail "a2enmod tcpcrypt: $(cat "$work/a2enmod.log")"
out=$(in_root apache2ctl -t 2>&1) || fail "apache2ctl -t: $out"
in_root apache2ctl -M 2>/dev/null | grep -q tcpcrypt_module || fail "apache2ctl -M does not list tcpcrypt_module"
pass "a2enmod tcpcrypt, apache2ctl -t ($out), module loaded"

cat >"$r/tmp/lookup.c" <<'C'
#include <stdio.h>
#include <netinet/in.h>
#include <tcpcrypt/tcpcrypt.h>
int main(void) {
	/* fd 0 is no TCP socket: the call must fail cleanly, not crash. */
	char sid[256];
	unsigned int len = sizeof sid;
	int rc = tcpcrypt_getsockopt(0, IPPROTO_TCP, TCP_CRYPT_SESSID, sid, &len);
	printf("%d\n", rc);
	return 0;
}
C
in_root sh -c 'cc -o /tmp/lookup /tmp/lookup.c $(pkg-config --cflags --libs tcpcrypt) && /tmp/lookup' \
  >"$work/cc.log" 2>&1 || fail "building against libtcpcrypt: $(cat "$work/cc.log")"
in_root sh -c 'cc -o /tmp/lookup-static /tmp/lookup.c $(pkg-config --cflags tcpcrypt) -Wl,-Bstatic -ltcpcrypt -Wl,-Bdynamic $(pkg-config --libs --static tcpcrypt | sed "s/-ltcpcrypt//") && /tmp/lookup-static' \
  >"$work/cc-static.log" 2>&1 || fail "linking libtcpcrypt.a: $(cat "$work/cc-static.log")"
rm -f "$r/tmp/lookup" "$r/tmp/lookup-static" "$r/tmp/lookup.c"
pass "a C program builds and runs against libtcpcrypt (shared and static)"

# 5. Remove, then purge.
in_root dpkg --remove "${packages[@]}" >"$work/remove.log" 2>&1 || fail "dpkg --remove: $(cat "$work/remove.log")"
[[ -e $r/etc/tcpcrypt/tcpcryptd.conf ]] || fail "remove deleted the configuration"
[[ ! -e $r/etc/apache2/mods-enabled/tcpcrypt.load ]] || fail "remove left the module enabled"
pass "remove keeps the configuration and disables the module"
in_root dpkg --purge "${packages[@]}" >"$work/purge.log" 2>&1 || fail "dpkg --purge: $(cat "$work/purge.log")"
in_root getent group tcpcrypt >/dev/null && fail "the tcpcrypt group survived the purge"
python3 "$root/dist/deb/rootdiff.py" compare "$mnt/upper" "$r" "$state" >"$work/left.txt" \
  || fail "purge left changes behind:
$(cat "$work/left.txt")"
pass "purge removed every file, directory and the group the install created"

# 6. An admin's own tcpcrypt group is used, and kept by the purge.
in_root groupadd --system tcpcrypt
python3 "$root/dist/deb/rootdiff.py" record "$mnt/upper" "$r" "$state"
in_root dpkg -i "/tmp/debs/$(basename "${files[0]}")" >"$work/install2.log" 2>&1 \
  || fail "dpkg -i tcpcryptd with an existing group: $(cat "$work/install2.log")"
in_root dpkg --purge tcpcryptd >"$work/purge2.log" 2>&1 || fail "dpkg --purge: $(cat "$work/purge2.log")"
in_root getent group tcpcrypt >/dev/null || fail "the purge deleted a group the install did not create"
python3 "$root/dist/deb/rootdiff.py" compare "$mnt/upper" "$r" "$state" >"$work/left2.txt" \
  || fail "install and purge with an existing group left changes behind:
$(cat "$work/left2.txt")"
pass "an existing tcpcrypt group is used and survives the purge"
