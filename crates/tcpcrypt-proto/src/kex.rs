//! Ephemeral key agreement for the four tcpcrypt TEPs (RFC 8548 section 5):
//! X25519, ECDH P-256 and P-521 from aws-lc-rs, X448 from RustCrypto's
//! `x448`. Peer keys are validated and all-zero X25519/X448 results refused.

use std::fmt;

use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey};
use aws_lc_rs::encoding::{AsBigEndian, EcPublicKeyCompressedBin};
use zeroize::{Zeroize, Zeroizing};

use crate::init::PublicKeyBytes;
use crate::rng::{Rng, RngError};
use crate::tep::Tep;

/// Private scalars drawn that the curve library rejected (out of range)
/// before giving up; for P-256 one rejection has probability about 2^-32.
const MAX_KEYGEN_ATTEMPTS: usize = 16;

/// Why key agreement failed. Every variant means "abort the connection".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KexError {
    #[error("{tep}: peer public key is not a valid curve point")]
    InvalidPeerKey { tep: Tep },
    #[error("{tep}: peer public key is for {found}, expected {tep}")]
    WrongTep { tep: Tep, found: Tep },
    #[error("{tep}: shared secret is all zero (low-order peer key)")]
    AllZeroSharedSecret { tep: Tep },
    #[error("{tep}: private key bytes have length {found}, expected {expected}")]
    BadPrivateKey {
        tep: Tep,
        found: usize,
        expected: usize,
    },
    #[error("{tep}: could not generate a key pair")]
    KeyGeneration { tep: Tep },
    #[error(transparent)]
    Rng(#[from] RngError),
}

/// The ephemeral secret ES (RFC 8548 section 3.3): X25519/X448 output, or
/// the fixed-length big-endian x-coordinate for the NIST curves (project
/// decision 3). Wiped on drop.
pub struct SharedSecret(Zeroizing<Vec<u8>>);

impl SharedSecret {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret(..)")
    }
}

enum PrivateInner {
    AwsLc(PrivateKey),
    X448(Zeroizing<[u8; 56]>),
}

/// A short-lived key pair for one connection's Init message.
pub struct EphemeralKey {
    tep: Tep,
    private: PrivateInner,
    public: PublicKeyBytes,
}

impl fmt::Debug for EphemeralKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EphemeralKey({}, public {:?})", self.tep, self.public)
    }
}

fn aws_alg(tep: Tep) -> Option<&'static agreement::Algorithm> {
    match tep {
        Tep::P256 => Some(&agreement::ECDH_P256),
        Tep::P521 => Some(&agreement::ECDH_P521),
        Tep::X25519 => Some(&agreement::X25519),
        Tep::X448 => None,
    }
}

/// Private key length for each scheme.
pub fn private_key_len(tep: Tep) -> usize {
    match tep {
        Tep::P256 => 32,
        Tep::P521 => 66,
        Tep::X25519 => 32,
        Tep::X448 => 56,
    }
}

/// Private key bytes drawn for a key pair not computed yet. Drawing is
/// cheap; computing the public key is the costly step, so a passive opener
/// draws when it answers a SYN and computes only once the peer's Init1
/// shows the three-way handshake really completed: spoofed SYNs then cost
/// no public-key operation.
pub struct DrawnKey {
    tep: Tep,
    bytes: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for DrawnKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DrawnKey({})", self.tep)
    }
}

impl DrawnKey {
    /// Draws private key bytes for `tep` from `rng`.
    pub fn draw(tep: Tep, rng: &mut dyn Rng) -> Result<DrawnKey, KexError> {
        let mut bytes = Zeroizing::new(vec![0u8; private_key_len(tep)]);
        rng.fill(&mut bytes)?;
        if tep == Tep::P521 {
            // A P-521 scalar has 521 bits: keep one bit of the top byte.
            if let Some(top) = bytes.first_mut() {
                *top &= 0x01;
            }
        }
        Ok(DrawnKey { tep, bytes })
    }

    /// The key pair. Fails only for a P-256/P-521 draw that is not a valid
    /// scalar (zero or not below the group order), which happens with
    /// negligible probability.
    pub fn compute(self) -> Result<EphemeralKey, KexError> {
        EphemeralKey::from_private_bytes(self.tep, &self.bytes)
    }
}

impl EphemeralKey {
    /// Draws a fresh key pair from `rng`.
    pub fn generate(tep: Tep, rng: &mut dyn Rng) -> Result<EphemeralKey, KexError> {
        for _ in 0..MAX_KEYGEN_ATTEMPTS {
            match DrawnKey::draw(tep, rng)?.compute() {
                Ok(key) => return Ok(key),
                Err(KexError::KeyGeneration { .. }) => continue,
                Err(other) => return Err(other),
            }
        }
        Err(KexError::KeyGeneration { tep })
    }

    /// Builds a key pair from private key bytes: the raw scalar for
    /// X25519/X448, a big-endian fixed-length integer below the group order
    /// for P-256/P-521. Meant for test vectors and [`EphemeralKey::generate`].
    pub fn from_private_bytes(tep: Tep, bytes: &[u8]) -> Result<EphemeralKey, KexError> {
        let expected = private_key_len(tep);
        if bytes.len() != expected {
            return Err(KexError::BadPrivateKey {
                tep,
                found: bytes.len(),
                expected,
            });
        }
        let fail = KexError::KeyGeneration { tep };
        match aws_alg(tep) {
            Some(alg) => {
                let private = PrivateKey::from_private_key(alg, bytes).map_err(|_| fail.clone())?;
                let public = private.compute_public_key().map_err(|_| fail.clone())?;
                let wire = if tep == Tep::X25519 {
                    public.as_ref().to_vec()
                } else {
                    let compressed: EcPublicKeyCompressedBin<'_> =
                        public.as_be_bytes().map_err(|_| fail.clone())?;
                    compressed.as_ref().to_vec()
                };
                let public = PublicKeyBytes::new(tep, &wire).ok_or(fail)?;
                Ok(EphemeralKey {
                    tep,
                    private: PrivateInner::AwsLc(private),
                    public,
                })
            }
            None => {
                let mut scalar = Zeroizing::new([0u8; 56]);
                scalar.copy_from_slice(bytes);
                let public = x448::x448(*scalar, x448::X448_BASEPOINT_BYTES).ok_or(fail.clone())?;
                let public = PublicKeyBytes::new(tep, &public).ok_or(fail)?;
                Ok(EphemeralKey {
                    tep,
                    private: PrivateInner::X448(scalar),
                    public,
                })
            }
        }
    }

    pub fn tep(&self) -> Tep {
        self.tep
    }

    /// Our public key as it goes into Init1/Init2.
    pub fn public_key(&self) -> &PublicKeyBytes {
        &self.public
    }

    /// Computes ES with the peer's public key, validating it: the point must
    /// lie on the curve (aws-lc-rs decompresses and checks it), and an
    /// X25519/X448 result must not be all zero.
    pub fn agree(&self, peer: &PublicKeyBytes) -> Result<SharedSecret, KexError> {
        let tep = self.tep;
        if peer.tep() != tep {
            return Err(KexError::WrongTep {
                tep,
                found: peer.tep(),
            });
        }
        let secret = match &self.private {
            PrivateInner::AwsLc(private) => {
                let alg = aws_alg(tep).ok_or(KexError::InvalidPeerKey { tep })?;
                // Any 32-byte string is an X25519 public key, so the only
                // way aws-lc refuses X25519 is an all-zero result.
                let refusal = if tep == Tep::X25519 {
                    KexError::AllZeroSharedSecret { tep }
                } else {
                    KexError::InvalidPeerKey { tep }
                };
                agreement::agree(
                    private,
                    UnparsedPublicKey::new(alg, peer.as_bytes()),
                    refusal,
                    |ss| Ok(Zeroizing::new(ss.to_vec())),
                )?
            }
            PrivateInner::X448(scalar) => {
                let mut point = [0u8; 56];
                point.copy_from_slice(peer.as_bytes());
                // `x448` refuses the low-order points, whose result is zero.
                let mut out =
                    x448::x448(**scalar, point).ok_or(KexError::AllZeroSharedSecret { tep })?;
                let secret = Zeroizing::new(out.to_vec());
                out.zeroize();
                secret
            }
        };
        if secret.iter().all(|b| *b == 0) {
            return Err(KexError::AllZeroSharedSecret { tep });
        }
        if secret.len() != tep.shared_secret_len() {
            return Err(KexError::InvalidPeerKey { tep });
        }
        Ok(SharedSecret(secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::TestRng;

    #[test]
    fn both_sides_agree_for_every_tep() {
        let mut rng = TestRng::new(7);
        for tep in Tep::ALL {
            let a = EphemeralKey::generate(tep, &mut rng).unwrap();
            let b = EphemeralKey::generate(tep, &mut rng).unwrap();
            assert_eq!(a.public_key().as_bytes().len(), tep.public_key_len());
            let sa = a.agree(b.public_key()).unwrap();
            let sb = b.agree(a.public_key()).unwrap();
            assert_eq!(sa.as_bytes(), sb.as_bytes(), "{tep}");
            assert_eq!(sa.as_bytes().len(), tep.shared_secret_len());
        }
    }

    #[test]
    fn x25519_zero_point_gives_all_zero_error() {
        let a = EphemeralKey::generate(Tep::X25519, &mut TestRng::new(1)).unwrap();
        let zero = PublicKeyBytes::new(Tep::X25519, &[0; 32]).unwrap();
        assert_eq!(
            a.agree(&zero).unwrap_err(),
            KexError::AllZeroSharedSecret { tep: Tep::X25519 }
        );
    }

    #[test]
    fn x448_low_order_point_rejected() {
        let a = EphemeralKey::generate(Tep::X448, &mut TestRng::new(1)).unwrap();
        let zero = PublicKeyBytes::new(Tep::X448, &[0; 56]).unwrap();
        assert_eq!(
            a.agree(&zero).unwrap_err(),
            KexError::AllZeroSharedSecret { tep: Tep::X448 }
        );
    }

    #[test]
    fn p256_point_off_curve_rejected() {
        let a = EphemeralKey::generate(Tep::P256, &mut TestRng::new(1)).unwrap();
        // About half of all x values have no point on the curve; among
        // eight candidates some must be refused, each as InvalidPeerKey.
        let mut rejected = 0;
        for x in 0u8..8 {
            let mut k = [0u8; 33];
            k[0] = 0x02;
            k[32] = x;
            let key = PublicKeyBytes::new(Tep::P256, &k).unwrap();
            if let Err(e) = a.agree(&key) {
                assert_eq!(e, KexError::InvalidPeerKey { tep: Tep::P256 });
                rejected += 1;
            }
        }
        assert!(rejected > 0);
    }

    #[test]
    fn p256_x_beyond_field_rejected() {
        let a = EphemeralKey::generate(Tep::P256, &mut TestRng::new(1)).unwrap();
        let mut k = [0xffu8; 33];
        k[0] = 0x03;
        let key = PublicKeyBytes::new(Tep::P256, &k).unwrap();
        assert_eq!(
            a.agree(&key).unwrap_err(),
            KexError::InvalidPeerKey { tep: Tep::P256 }
        );
    }

    #[test]
    fn p521_invalid_point_rejected() {
        let a = EphemeralKey::generate(Tep::P521, &mut TestRng::new(1)).unwrap();
        let mut k = [0xffu8; 67];
        k[0] = 0x02;
        let key = PublicKeyBytes::new(Tep::P521, &k).unwrap();
        assert_eq!(
            a.agree(&key).unwrap_err(),
            KexError::InvalidPeerKey { tep: Tep::P521 }
        );
    }

    #[test]
    fn mismatched_tep_rejected() {
        let a = EphemeralKey::generate(Tep::X25519, &mut TestRng::new(1)).unwrap();
        let b = EphemeralKey::generate(Tep::X448, &mut TestRng::new(2)).unwrap();
        assert!(matches!(
            a.agree(b.public_key()),
            Err(KexError::WrongTep { .. })
        ));
    }

    #[test]
    fn rfc7748_x448_vector() {
        // RFC 7748 section 6.2.
        let alice = hex(
            "9a8f4925d1519f5775cf46b04b5800d4ee9ee8bae8bc5565d498c28dd9c9baf574a9419744897391006382a6f127ab1d9ac2d8c0a598726b",
        );
        let bob_pub = hex(
            "3eb7a829b0cd20f5bcfc0b599b6feccf6da4627107bdb0d4f345b43027d8b972fc3e34fb4232a13ca706dcb57aec3dae07bdc1c67bf33609",
        );
        let shared = hex(
            "07fff4181ac6cc95ec1c16a94a0f74d12da232ce40a77552281d282bb60c0b56fd2464c335543936521c24403085d59a449a5037514a879d",
        );
        let a = EphemeralKey::from_private_bytes(Tep::X448, &alice).unwrap();
        let ss = a
            .agree(&PublicKeyBytes::new(Tep::X448, &bob_pub).unwrap())
            .unwrap();
        assert_eq!(ss.as_bytes(), &shared[..]);
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
