#!/usr/bin/env bash
# Runs the app developer guide's examples for real, as root, after a release
# build: two throwaway network namespaces joined by a veth pair, tcpcryptd in
# each, Apache with mod_tcpcrypt, PHP and a Ruby CGI in the server one; the
# Python and C clients in the client one. Also checks that every example
# file is quoted verbatim in docs/app-developer-guide.md, so the guide and
# the tested code cannot drift apart.
#
#   bash docs/examples/check.sh        (honours CARGO_TARGET_DIR)
#
# Needs: apache2, libapache2-mod-php, ruby, python3, cc, libssl-dev, curl.
# Everything it creates is removed on exit, also on failure or Ctrl-C.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}/release

fail() { echo "check: FAIL: $*" >&2; exit 1; }
pass() { echo "check: ok: $*"; }

# 1. The guide quotes each example file exactly.
python3 - "$here" "$root/docs/app-developer-guide.md" <<'PY'
import pathlib, re, sys
here, guide = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]).read_text()
blocks = {body for _, body in re.findall(r"```(\w+)\n(.*?)```", guide, re.S)}
missing = [f.name for f in sorted(here.iterdir())
           if f.suffix in {".php", ".rb", ".py", ".c"} and f.read_text() not in blocks]
if missing:
    sys.exit(f"check: FAIL: not quoted verbatim in the guide: {', '.join(missing)}")
print("check: ok: every example file is quoted verbatim in app-developer-guide.md")
PY

[[ $(id -u) -eq 0 ]] || fail "needs root (network namespaces, firewall rules)"
for f in tcpcryptd tcpcrypt libtcpcrypt.so libmod_tcpcrypt.so; do
  [[ -f $target/$f ]] || fail "$target/$f missing: run make (or cargo build --release --workspace) first"
done

id=$$
ns_c=docs-c-$id ns_s=docs-s-$id
# Addresses only inside the namespaces; the third octet varies per run so
# parallel runs do not meet.
net=10.99.$((id % 250))
c_ip=$net.1 s_ip=$net.2
work=$(mktemp -d /tmp/tcpcrypt-docs-check.XXXXXX)
chmod 755 "$work"

cleanup() {
  set +e
  [[ -s $work/httpd.pid ]] && kill "$(cat "$work/httpd.pid")" 2>/dev/null
  for ns in "$ns_c" "$ns_s"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill "$p" 2>/dev/null; done
  done
  sleep 1
  for ns in "$ns_c" "$ns_s"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$ns_c"
ip netns add "$ns_s"
ip link add "dc$id" type veth peer name "ds$id"
ip link set "dc$id" netns "$ns_c"
ip link set "ds$id" netns "$ns_s"
ip -n "$ns_c" addr add "$c_ip/24" dev "dc$id"
ip -n "$ns_s" addr add "$s_ip/24" dev "ds$id"
for ns in "$ns_c" "$ns_s"; do ip -n "$ns" link set lo up; done
ip -n "$ns_c" link set "dc$id" up
ip -n "$ns_s" link set "ds$id" up

# The library under its soname, as ctypes.CDLL("libtcpcrypt.so.0") and the
# linker expect it after `make install`.
mkdir -p "$work/lib"
ln -s "$target/libtcpcrypt.so" "$work/lib/libtcpcrypt.so.0"
ln -s "$target/libtcpcrypt.so" "$work/lib/libtcpcrypt.so"

ip netns exec "$ns_c" "$target/tcpcryptd" --control-socket "$work/c.sock" \
  --control-group root 2>"$work/c.log" &
ip netns exec "$ns_s" "$target/tcpcryptd" --control-socket "$work/s.sock" \
  --control-group www-data 2>"$work/s.log" &
for _ in $(seq 100); do [[ -S $work/c.sock && -S $work/s.sock ]] && break; sleep 0.1; done
[[ -S $work/c.sock && -S $work/s.sock ]] || fail "tcpcryptd did not start: $(cat "$work"/*.log)"

mkdir -p "$work/www"
cp "$here/login.php" "$work/www/login.php"
install -m 0755 "$here/login.rb" "$work/www/login.rb"
moddir=$(apxs -q LIBEXECDIR)
cat >"$work/httpd.conf" <<EOF
ServerRoot "$work"
ServerName docs.test
Listen $s_ip:80
PidFile $work/httpd.pid
ErrorLog $work/error.log
LogLevel warn
LoadModule mpm_prefork_module $moddir/mod_mpm_prefork.so
LoadModule authz_core_module $moddir/mod_authz_core.so
LoadModule mime_module $moddir/mod_mime.so
LoadModule cgi_module $moddir/mod_cgi.so
LoadModule php_module $(ls "$moddir"/libphp*.so | head -n1)
LoadModule tcpcrypt_module $target/libmod_tcpcrypt.so
TypesConfig /etc/mime.types
User www-data
Group www-data
TcpcryptControlSocket $work/s.sock
DocumentRoot "$work/www"
<Directory "$work/www">
  Options +ExecCGI
  AddHandler cgi-script .rb
  Require all granted
</Directory>
<FilesMatch \.php$>
  SetHandler application/x-httpd-php
</FilesMatch>
EOF
ip netns exec "$ns_s" apache2 -f "$work/httpd.conf" -k start
for _ in $(seq 100); do [[ -s $work/httpd.pid ]] && break; sleep 0.1; done
[[ -s $work/httpd.pid ]] || fail "apache did not start: $(cat "$work/error.log")"

in_client() { ip netns exec "$ns_c" env TCPCRYPT_CONTROL="$work/c.sock" LD_LIBRARY_PATH="$work/lib" "$@"; }

# 2. Python client, proof checked by the PHP page and by the Ruby CGI.
out=$(in_client python3 "$here/client.py" "$s_ip" /login.php)
[[ $out == "welcome, alice: no one is in the middle of this connection" ]] || fail "client.py -> login.php: $out"
pass "client.py's proof accepted by login.php"
out=$(in_client python3 "$here/client.py" "$s_ip" /login.rb)
[[ $out == "welcome, alice" ]] || fail "client.py -> login.rb: $out"
pass "client.py's proof accepted by login.rb"

# 3. A proof that was not made for this connection is refused.
out=$(in_client curl -s -H 'X-Tcpcrypt-User: alice' -H "X-Tcpcrypt-Proof: $(printf '0%.0s' $(seq 64))" "http://$s_ip/login.php")
[[ $out == "proof does not match this connection" ]] || fail "wrong proof: $out"
pass "a wrong proof is refused"

# 4. The C client reports the session the server side has too.
cc -Wall -Wextra -std=c11 -D_POSIX_C_SOURCE=200809L -o "$work/proof" "$here/proof.c" \
  -I"$root/crates/tcpcrypt-client/include" -L"$work/lib" -ltcpcrypt -lcrypto
out=$(in_client "$work/proof" "$s_ip")
sid=$(sed -n 's/^session \([0-9a-f]\{66\}\), role A, .*/\1/p' <<<"$out")
[[ -n $sid ]] || fail "proof.c printed: $out"
grep -q '^X-Tcpcrypt-Proof: [0-9a-f]\{64\}$' <<<"$out" || fail "proof.c printed no proof: $out"
ip netns exec "$ns_s" "$target/tcpcrypt" --control "$work/s.sock" status --all --json \
  | grep -q "\"session_id\":\"$sid\"" || fail "server does not know proof.c's session $sid"
pass "proof.c's session ID $sid is the server's too"

# 5. The signature examples agree with each other (no network needed).
if ! python3 -c 'import cryptography' 2>/dev/null; then
  echo "check: skipped: sign.py needs the Python cryptography package (python3-cryptography)"
  echo "check: all other examples passed"
  exit 0
fi
python3 - "$here" <<'PY' >"$work/sig.txt"
import sys; sys.path.insert(0, sys.argv[1])
from sign import Ed25519PrivateKey, signature
from cryptography.hazmat.primitives import serialization as s
sid = bytes.fromhex("23" + "5a" * 32)
k = Ed25519PrivateKey.generate()
pk = k.public_key().public_bytes(s.Encoding.Raw, s.PublicFormat.Raw).hex()
print(sid.hex().upper(), pk, signature(k, "A", sid))
PY
read -r sid_up pk sig <"$work/sig.txt"
verify() {
  env TCP_CRYPT_SESSID="$sid_up" TCP_CRYPT_ROLE="$1" \
    php -r "require '$here/verify.php'; echo signature_ok(hex2bin('$pk'), '$sig') ? 'yes' : 'no';"
}
[[ $(verify B) == yes ]] || fail "verify.php rejects a good signature"
[[ $(verify A) == no ]] || fail "verify.php accepts a signature made by its own role"
pass "sign.py's signature verifies in verify.php, and not for the wrong role"

echo "check: all examples passed"
