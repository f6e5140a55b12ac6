<?php
// $public_key: the client's enrolled 32-byte Ed25519 public key.
function signature_ok(string $public_key, string $sig_hex): bool {
    $sid = $_SERVER['TCP_CRYPT_SESSID'] ?? null;
    $role = $_SERVER['TCP_CRYPT_ROLE'] ?? null;
    if ($sid === null || ($role !== 'A' && $role !== 'B')) return false;
    $peer_role = $role === 'A' ? 'B' : 'A';
    $sig = @hex2bin($sig_hex);
    if ($sig === false || strlen($sig) !== SODIUM_CRYPTO_SIGN_BYTES) return false;
    $msg = "tcpcrypt-sig-v1\0" . $peer_role . hex2bin($sid);
    return sodium_crypto_sign_verify_detached($sig, $msg, $public_key);
}
