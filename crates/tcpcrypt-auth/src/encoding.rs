//! Base64 (standard alphabet, padded: RFC 5802 and RFC 7804 both use it).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::AuthError;

pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub fn unb64(what: &'static str, text: &str) -> Result<Vec<u8>, AuthError> {
    STANDARD
        .decode(text)
        .map_err(|e| AuthError::malformed(what, format!("not base64: {e}")))
}

/// Decodes base64 that must hold exactly `N` bytes.
pub fn unb64_exact<const N: usize>(what: &'static str, text: &str) -> Result<[u8; N], AuthError> {
    let bytes = unb64(what, text)?;
    let got = bytes.len();
    bytes
        .try_into()
        .map_err(|_| AuthError::malformed(what, format!("expected {N} bytes, got {got}")))
}
