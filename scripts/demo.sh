#!/usr/bin/env bash
# The mod_tcpcrypt demo, on one machine, as root.
#
# Builds everything, then creates three throwaway network namespaces
#   client ── router ── server
# runs tcpcryptd in client and server, Apache with mod_tcpcrypt and a PHP
# page in server, and fetches the page from client: the session ID the web
# app sees equals the one the client's own connection has. Then a
# man-in-the-middle relay on the router intercepts the same fetch: the two IDs
# differ, and the page says so. Everything the demo creates is removed on
# exit, also on Ctrl-C or failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

if [[ $(id -u) -ne 0 ]]; then
  echo "demo: needs root (network namespaces, firewall rules); run: sudo bash scripts/demo.sh" >&2
  exit 1
fi

# Network namespace names. Refuse to touch same-named namespaces the demo did
# not create.
NS_C=client NS_R=router NS_S=server
MARKER=/run/tcpcrypt-demo.owner
for ns in $NS_C $NS_R $NS_S; do
  if ip netns list | awk '{print $1}' | grep -qx "$ns" && [[ ! -e $MARKER ]]; then
    echo "demo: a network namespace named '$ns' already exists and was not made by this demo; remove it first" >&2
    exit 1
  fi
done

C_IP=10.77.1.2 RC_IP=10.77.1.1 RS_IP=10.77.2.1 S_IP=10.77.2.2
WORK=$(mktemp -d /tmp/tcpcrypt-demo.XXXXXX)
chmod 755 "$WORK"
PIDS=()

cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  if [[ -f $WORK/httpd.pid ]]; then kill "$(cat "$WORK/httpd.pid")" 2>/dev/null; fi
  sleep 0.5
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
  for ns in $NS_C $NS_R $NS_S; do
    # Kill anything still running inside before deleting the namespace.
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  rm -f "$MARKER"
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

say "Installing what the demo needs and building (release; the first build takes a few minutes)"
bash scripts/deps.sh
cargo build --release --workspace --locked 2>&1 | grep -E '^(error|warning: unused)|Finished' || true
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}/release
for f in tcpcryptd tcpcrypt libmod_tcpcrypt.so; do
  [[ -e $TARGET/$f ]] || { echo "demo: build did not produce $TARGET/$f" >&2; exit 1; }
done

say "Creating namespaces: $NS_C ($C_IP) -- $NS_R -- $NS_S ($S_IP)"
touch "$MARKER"
for ns in $NS_C $NS_R $NS_S; do ip netns add "$ns"; in_ns "$ns" ip link set lo up; done
ip link add c-r type veth peer name r-c
ip link set c-r netns $NS_C; ip link set r-c netns $NS_R
ip link add s-r type veth peer name r-s
ip link set s-r netns $NS_S; ip link set r-s netns $NS_R
in_ns $NS_C ip addr add $C_IP/24 dev c-r;  in_ns $NS_C ip link set c-r up
in_ns $NS_R ip addr add $RC_IP/24 dev r-c; in_ns $NS_R ip link set r-c up
in_ns $NS_R ip addr add $RS_IP/24 dev r-s; in_ns $NS_R ip link set r-s up
in_ns $NS_S ip addr add $S_IP/24 dev s-r;  in_ns $NS_S ip link set s-r up
in_ns $NS_C ip route add default via $RC_IP
in_ns $NS_S ip route add default via $RS_IP
in_ns $NS_R sysctl -qw net.ipv4.ip_forward=1

start_tcpcryptd() {
  local ns=$1
  in_ns "$ns" "$TARGET/tcpcryptd" --control-socket "$WORK/$ns.sock" --control-group www-data \
    --log-level info >"$WORK/tcpcryptd-$ns.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    [[ -S $WORK/$ns.sock ]] && return 0
    sleep 0.1
  done
  echo "demo: tcpcryptd in $ns did not start:" >&2; cat "$WORK/tcpcryptd-$ns.log" >&2; exit 1
}

say "Starting tcpcryptd in $NS_C and in $NS_S"
start_tcpcryptd $NS_C
start_tcpcryptd $NS_S

say "Starting Apache with mod_tcpcrypt in $NS_S"
mkdir -p "$WORK/htdocs" "$WORK/logs"
cat >"$WORK/htdocs/index.php" <<'PHP'
<?php
// What a web app does with tcpcrypt: read the session ID of its own
// connection. Here it also compares it with the ID the client says its
// connection has (a real app would check a signature over it instead).
$mine = $_SERVER['TCP_CRYPT_SESSID'] ?? null;
$theirs = strtoupper($_SERVER['HTTP_X_TCPCRYPT_CLIENT_SESSID'] ?? '');
header('Content-Type: text/plain');
if ($mine === null) {
    echo "server: this connection is not encrypted by tcpcrypt\n";
    exit;
}
echo "server: TCP_CRYPT_SESSID = $mine (role ", $_SERVER['TCP_CRYPT_ROLE'] ?? '?', ")\n";
if ($theirs === '') {
    echo "verdict: the client did not say which session ID it sees\n";
} elseif (hash_equals($mine, $theirs)) {
    echo "verdict: EQUAL - the client and this server share one tcpcrypt session: nobody in the middle\n";
} else {
    echo "verdict: DIFFERENT - the client's session is $theirs: someone is in the middle\n";
}
PHP
MODDIR=$(apxs -q LIBEXECDIR)
cat >"$WORK/httpd.conf" <<EOF
ServerRoot "$WORK"
ServerName demo.test
Listen $S_IP:80
PidFile $WORK/httpd.pid
ErrorLog $WORK/logs/error.log
LogLevel warn
LoadModule mpm_prefork_module $MODDIR/mod_mpm_prefork.so
LoadModule authz_core_module $MODDIR/mod_authz_core.so
LoadModule mime_module $MODDIR/mod_mime.so
TypesConfig /etc/mime.types
LoadModule dir_module $MODDIR/mod_dir.so
LoadModule php_module $(ls $MODDIR/libphp*.so | head -1)
LoadModule tcpcrypt_module $TARGET/libmod_tcpcrypt.so
User www-data
Group www-data
TcpcryptControlSocket $WORK/$NS_S.sock
DocumentRoot "$WORK/htdocs"
DirectoryIndex index.php
LogFormat "%h \"%r\" %>s tcpcrypt=%{TCP_CRYPT_SESSID}e" tcpcrypt
CustomLog $WORK/logs/access.log tcpcrypt
<FilesMatch \.php$>
  SetHandler application/x-httpd-php
</FilesMatch>
EOF
if ! in_ns $NS_S apache2 -f "$WORK/httpd.conf" -k start; then
  echo "demo: Apache did not start:" >&2; cat "$WORK/logs/error.log" >&2 || true; exit 1
fi
for _ in $(seq 100); do [[ -s $WORK/httpd.pid ]] && break; sleep 0.1; done
[[ -s $WORK/httpd.pid ]] || { echo "demo: Apache did not start:" >&2; cat "$WORK/logs/error.log" >&2; exit 1; }

say "Capturing on the router while the client fetches http://$S_IP/"
in_ns $NS_R tcpdump -i r-s -U -w "$WORK/wire.pcap" -s 200 "tcp port 80" >/dev/null 2>&1 &
CAP=$!
PIDS+=($CAP)
sleep 1

fetch() {
  in_ns $NS_C env TCPCRYPT_CONTROL="$WORK/$NS_C.sock" "$TARGET/tcpcrypt" fetch \
    --sessid-header X-Tcpcrypt-Client-Sessid "http://$S_IP/"
}
fetch >"$WORK/page1.txt" 2>"$WORK/client1.txt"
sleep 0.5
kill $CAP 2>/dev/null; wait $CAP 2>/dev/null || true

client_sid() { sed -n 's/^tcpcrypt: session id \([0-9a-fA-F]*\).*/\1/p' "$1" | tr a-f A-F; }
server_sid() { sed -n 's/^server: TCP_CRYPT_SESSID = \([0-9A-F]*\).*/\1/p' "$1"; }

echo "The page says:"; sed 's/^/    /' "$WORK/page1.txt"
S1=$(server_sid "$WORK/page1.txt"); C1=$(client_sid "$WORK/client1.txt")
echo "session ID seen by the web app:        ${S1:-<none>}"
echo "session ID of the client's connection: ${C1:-<none>}"
if [[ -n $S1 && $S1 == "$C1" ]]; then
  echo "RESULT: equal session IDs without the relay"
else
  echo "RESULT: session IDs differ or missing without the relay (unexpected)"; cat "$WORK/client1.txt"; exit 1
fi

say "A data segment as the router saw it (first bytes of its TCP payload):"
# Print the payload of the first server->client segment that carries data:
# frames of ciphertext, not the HTML.
PAYLOAD="(ip[2:2] - ((ip[0]&0xf)<<2) - ((tcp[12]&0xf0)>>2)) > 100"
tcpdump -r "$WORK/wire.pcap" -nn -c 1 -X "src host $S_IP and $PAYLOAD" 2>/dev/null | sed -n '1,8p' | sed 's/^/    /'
if tcpdump -r "$WORK/wire.pcap" -nn -A 2>/dev/null | grep -q "TCP_CRYPT_SESSID ="; then
  echo "RESULT: plaintext seen on the wire (unexpected)"; exit 1
else
  echo "(the page's text never appears on the wire)"
fi

say "Now a man in the middle: the router redirects port 80 to a relay of its own, itself running tcpcryptd"
start_tcpcryptd $NS_R
in_ns $NS_R iptables -t nat -A PREROUTING -i r-c -p tcp --dport 80 -j REDIRECT --to-ports 8080
in_ns $NS_R python3 "$ROOT/scripts/demo-relay.py" 8080 >"$WORK/relay.log" 2>&1 &
PIDS+=($!)
sleep 1
fetch >"$WORK/page2.txt" 2>"$WORK/client2.txt"
echo "The page says:"; sed 's/^/    /' "$WORK/page2.txt"
S2=$(server_sid "$WORK/page2.txt"); C2=$(client_sid "$WORK/client2.txt")
echo "session ID seen by the web app:        ${S2:-<none>}"
echo "session ID of the client's connection: ${C2:-<none>}"
if [[ -n $S2 && -n $C2 && $S2 != "$C2" ]] && grep -q "verdict: DIFFERENT" "$WORK/page2.txt"; then
  echo "RESULT: different session IDs through the relay: the man in the middle is visible"
else
  echo "RESULT: the relay went unnoticed (unexpected)"; exit 1
fi

say "Done; removing the namespaces and everything the demo started"
