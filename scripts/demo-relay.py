#!/usr/bin/env python3
"""The demo's man in the middle: a transparent TCP relay.

Runs on the router namespace behind an iptables REDIRECT. For every
connection it accepts, it opens its own connection to the original
destination and copies bytes both ways. With tcpcryptd on the router, each
leg is a separate tcpcrypt session, so client and server see different
session IDs: exactly what tcpcrypt lets an application detect.
"""
import socket
import struct
import sys
import threading

SO_ORIGINAL_DST = 80


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def handle(client):
    raw = client.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, addr = struct.unpack_from("!2xH4s", raw)
    dest = (socket.inet_ntoa(addr), port)
    print(f"relay: {client.getpeername()} -> {dest}", flush=True)
    upstream = socket.create_connection(dest, timeout=10)
    upstream.settimeout(None)
    t = threading.Thread(target=pump, args=(upstream, client), daemon=True)
    t.start()
    pump(client, upstream)
    t.join(timeout=30)
    client.close()
    upstream.close()


def main():
    port = int(sys.argv[1])
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(16)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
