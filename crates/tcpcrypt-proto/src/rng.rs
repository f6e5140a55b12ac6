//! Randomness injected into the protocol core: nonces and ephemeral keys
//! come only from an [`Rng`] the caller passes in.

use aws_lc_rs::digest;

/// The OS RNG failed; tcpcrypt must not run without randomness
/// (RFC 8547 section 4.6).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("random number generator failed: {0}")]
pub struct RngError(pub String);

/// A source of cryptographically secure random bytes.
pub trait Rng {
    /// Fills `dest` entirely with random bytes.
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), RngError>;
}

/// The operating system's RNG (`getrandom`), for production.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRng;

impl Rng for OsRng {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), RngError> {
        getrandom::fill(dest).map_err(|e| RngError(e.to_string()))
    }
}

/// A deterministic RNG for tests and simulations: SHA-256 in counter mode
/// over a seed. Never use it for real connections.
#[derive(Debug, Clone)]
pub struct TestRng {
    seed: u64,
    counter: u64,
}

impl TestRng {
    pub fn new(seed: u64) -> TestRng {
        TestRng { seed, counter: 0 }
    }
}

impl Rng for TestRng {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), RngError> {
        for chunk in dest.chunks_mut(digest::SHA256_OUTPUT_LEN) {
            let mut input = [0u8; 16];
            input[..8].copy_from_slice(&self.seed.to_be_bytes());
            input[8..].copy_from_slice(&self.counter.to_be_bytes());
            self.counter = self.counter.wrapping_add(1);
            let block = digest::digest(&digest::SHA256, &input);
            let n = chunk.len();
            chunk.copy_from_slice(&block.as_ref()[..n]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_rng_is_deterministic_per_seed() {
        let (mut a, mut b, mut c) = (TestRng::new(1), TestRng::new(1), TestRng::new(2));
        let (mut x, mut y, mut z) = ([0u8; 70], [0u8; 70], [0u8; 70]);
        a.fill(&mut x).unwrap();
        b.fill(&mut y).unwrap();
        c.fill(&mut z).unwrap();
        assert_eq!(x, y);
        assert_ne!(x, z);
    }

    #[test]
    fn os_rng_fills() {
        let mut buf = [0u8; 64];
        OsRng.fill(&mut buf).unwrap();
        assert_ne!(buf, [0u8; 64]);
    }
}
