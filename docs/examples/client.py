#!/usr/bin/env python3
"""Log in with a password proof bound to this connection's session ID."""
import ctypes, hashlib, hmac, http.client, sys

class TcpcryptInfo(ctypes.Structure):            # struct tcpcrypt_info
    _fields_ = [("state", ctypes.c_int), ("role", ctypes.c_int),
                ("sessid_len", ctypes.c_uint), ("sessid", ctypes.c_ubyte * 64),
                ("sessid_hex", ctypes.c_char * 129), ("tep", ctypes.c_uint),
                ("tep_name", ctypes.c_char * 32), ("aead", ctypes.c_uint),
                ("aead_name", ctypes.c_char * 32), ("resumed", ctypes.c_int),
                ("peer_app_aware", ctypes.c_int), ("reason", ctypes.c_char * 128)]

lib = ctypes.CDLL("libtcpcrypt.so.0")
lib.tcpcrypt_lookup_fd.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int,
                                   ctypes.c_int, ctypes.POINTER(TcpcryptInfo)]
lib.tcpcrypt_strerror.restype = ctypes.c_char_p

def session_of(sock):
    """(our role, raw session ID) of a connected socket."""
    info = TcpcryptInfo()
    # Wait up to 1 s for a handshake still running right after connect().
    rc = lib.tcpcrypt_lookup_fd(None, sock.fileno(), 1000, 500, ctypes.byref(info))
    if rc < 0:
        raise OSError(-rc, lib.tcpcrypt_strerror(rc).decode())
    if info.state != 3:                          # TCPCRYPT_STATE_ENCRYPTED
        raise RuntimeError("connection is not encrypted with tcpcrypt")
    return ("A" if info.role == 1 else "B"), bytes(info.sessid[:info.sessid_len])

def proof(key, role, sid):
    return hmac.new(key, b"tcpcrypt-auth-v1\0" + role.encode() + sid,
                    hashlib.sha256).hexdigest()

host = sys.argv[1]
path = sys.argv[2] if len(sys.argv) > 2 else "/login.php"
user, password = "alice", "correct horse battery staple"
key = hashlib.pbkdf2_hmac("sha256", password.encode(),
                          b"tcpcrypt-auth-v1:" + user.encode(), 200_000)
conn = http.client.HTTPConnection(host, 80)
conn.connect()
role, sid = session_of(conn.sock)
conn.request("GET", path, headers={
    "X-Tcpcrypt-User": user, "X-Tcpcrypt-Proof": proof(key, role, sid)})
print(conn.getresponse().read().decode(), end="")
