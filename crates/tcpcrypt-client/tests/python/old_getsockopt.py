"""The original libtcpcrypt call from Python through ctypes.

usage: old_getsockopt.py LIBTCPCRYPT_SO HOST PORT [hold]
Prints "sessid HEX" or "sessid error errno=N", like the C test program.
"""
import ctypes
import socket
import sys

IPPROTO_TCP = 6
TCP_CRYPT_SESSID = 2

lib = ctypes.CDLL(sys.argv[1], use_errno=True)
lib.tcpcrypt_getsockopt.argtypes = [
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint),
]
lib.tcpcrypt_getsockopt.restype = ctypes.c_int

sock = socket.create_connection((sys.argv[2], int(sys.argv[3])))
buf = ctypes.create_string_buffer(256)
length = ctypes.c_uint(len(buf))
rc = lib.tcpcrypt_getsockopt(
    sock.fileno(), IPPROTO_TCP, TCP_CRYPT_SESSID, buf, ctypes.byref(length)
)
if rc == 0:
    print("sessid " + buf.raw[: length.value].hex(), flush=True)
else:
    print("sessid error errno=%d" % ctypes.get_errno(), flush=True)

if len(sys.argv) > 4 and sys.argv[4] == "hold":
    sock.settimeout(20)
    while sock.recv(4096):
        pass
sock.close()
