from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

def signature(private_key, role, sid):
    """Ed25519 signature over (label, our role, session ID), hex."""
    return private_key.sign(b"tcpcrypt-sig-v1\0" + role.encode() + sid).hex()
