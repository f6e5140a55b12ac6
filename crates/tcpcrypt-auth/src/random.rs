//! The one place that draws randomness (the OS generator through aws-lc),
//! for the callers at the edges: the protocol functions take nonces and
//! salts as arguments, so tests can fix them.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// Why no random bytes could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

/// `N` random bytes.
pub fn bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| RandomError)?;
    Ok(out)
}

/// A fresh printable SCRAM nonce (24 random bytes, base64).
pub fn nonce() -> Result<String, RandomError> {
    Ok(crate::encoding::b64(&bytes::<24>()?))
}
