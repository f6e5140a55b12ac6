<?php
// login.php: accept a password proof only if it was made for this very
// connection. $user_keys stands for your user store: 32-byte keys derived
// from each password at enrolment.
$user_keys = ['alice' => hash_pbkdf2('sha256', 'correct horse battery staple',
                                     "tcpcrypt-auth-v1:alice", 200000, 32, true)];

$sid_hex = $_SERVER['TCP_CRYPT_SESSID'] ?? null;   // unset on plain TCP
$role    = $_SERVER['TCP_CRYPT_ROLE'] ?? null;     // this server's role
if ($sid_hex === null || ($role !== 'A' && $role !== 'B')) {
    http_response_code(403);
    exit("this connection is not encrypted with tcpcrypt\n");
}
$peer_role = $role === 'A' ? 'B' : 'A';            // the prover is the client
$user  = $_SERVER['HTTP_X_TCPCRYPT_USER'] ?? '';
$proof = strtolower($_SERVER['HTTP_X_TCPCRYPT_PROOF'] ?? '');
$key   = $user_keys[$user] ?? null;

$msg = "tcpcrypt-auth-v1\0" . $peer_role . hex2bin($sid_hex);
if ($key === null || !hash_equals(hash_hmac('sha256', $msg, $key), $proof)) {
    http_response_code(403);
    exit("proof does not match this connection\n");
}
echo "welcome, $user: no one is in the middle of this connection\n";
