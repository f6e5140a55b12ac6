//! The tcpcrypt AEAD algorithms (RFC 8548 sections 6 and 7, table 5) and the
//! traffic keys they run under (section 3.6, figure 4).

use std::fmt;

use aws_lc_rs::aead::{self, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroize;

/// ae_nonce_len of every tcpcrypt AEAD (RFC 8548 table 3).
pub const AE_NONCE_LEN: usize = 12;

/// Authentication tag length of every tcpcrypt AEAD (RFC 5116, RFC 8439).
pub const TAG_LEN: usize = 16;

/// A tcpcrypt AEAD algorithm, named by its 2-byte `sym_cipher` identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Aead {
    /// AEAD_AES_128_GCM (0x0001), REQUIRED.
    Aes128Gcm,
    /// AEAD_AES_256_GCM (0x0002), RECOMMENDED.
    Aes256Gcm,
    /// AEAD_CHACHA20_POLY1305 (0x0010), RECOMMENDED.
    ChaCha20Poly1305,
}

impl Aead {
    /// Every AEAD this crate implements, mandatory one first.
    pub const ALL: [Aead; 3] = [Aead::Aes128Gcm, Aead::Aes256Gcm, Aead::ChaCha20Poly1305];

    /// The `sym_cipher` identifier (sent big-endian, project decision 2).
    pub fn id(self) -> u16 {
        match self {
            Aead::Aes128Gcm => 0x0001,
            Aead::Aes256Gcm => 0x0002,
            Aead::ChaCha20Poly1305 => 0x0010,
        }
    }

    pub fn from_id(id: u16) -> Option<Aead> {
        match id {
            0x0001 => Some(Aead::Aes128Gcm),
            0x0002 => Some(Aead::Aes256Gcm),
            0x0010 => Some(Aead::ChaCha20Poly1305),
            _ => None,
        }
    }

    /// The IANA name, e.g. `"AEAD_AES_128_GCM"`.
    pub fn name(self) -> &'static str {
        match self {
            Aead::Aes128Gcm => "AEAD_AES_128_GCM",
            Aead::Aes256Gcm => "AEAD_AES_256_GCM",
            Aead::ChaCha20Poly1305 => "AEAD_CHACHA20_POLY1305",
        }
    }

    /// Parses an IANA name (ASCII case ignored).
    pub fn from_name(name: &str) -> Option<Aead> {
        Aead::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    /// ae_key_len (RFC 8548 table 3).
    pub fn key_len(self) -> usize {
        match self {
            Aead::Aes128Gcm => 16,
            Aead::Aes256Gcm | Aead::ChaCha20Poly1305 => 32,
        }
    }

    /// ae_key_len + ae_nonce_len: the length of k_ab\[j\] and k_ba\[j\].
    pub fn traffic_key_len(self) -> usize {
        self.key_len() + AE_NONCE_LEN
    }

    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Aead::Aes128Gcm => &aead::AES_128_GCM,
            Aead::Aes256Gcm => &aead::AES_256_GCM,
            Aead::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }
}

impl fmt::Display for Aead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The AEAD primitive rejected its input: a tag mismatch on open, or (never
/// expected) an internal failure on seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AeadFailure;

/// One traffic key k_ab\[j\] or k_ba\[j\], split into the AEAD key K and the
/// nonce randomizer NR (RFC 8548 section 3.6, figure 4).
pub struct TrafficKey {
    aead: Aead,
    raw: Vec<u8>,
    /// `None` only if the CPRF output had the wrong length, which the key
    /// schedule never produces; such a key then refuses to seal or open.
    key: Option<LessSafeKey>,
}

impl TrafficKey {
    /// Builds the key from the CPRF output, which must be
    /// `aead.traffic_key_len()` bytes long.
    pub(crate) fn new(aead: Aead, raw: Vec<u8>) -> TrafficKey {
        let key = (raw.len() == aead.traffic_key_len())
            .then(|| raw.get(..aead.key_len()))
            .flatten()
            .and_then(|k| UnboundKey::new(aead.algorithm(), k).ok())
            .map(LessSafeKey::new);
        TrafficKey { aead, raw, key }
    }

    pub fn aead(&self) -> Aead {
        self.aead
    }

    /// The AEAD key K (first ae_key_len bytes). Exposed for test vectors and
    /// key logs; never send it anywhere.
    pub fn key_bytes(&self) -> &[u8] {
        self.raw.get(..self.aead.key_len()).unwrap_or_default()
    }

    /// The nonce randomizer NR (last ae_nonce_len bytes).
    pub fn nonce_randomizer(&self) -> &[u8] {
        self.raw.get(self.aead.key_len()..).unwrap_or_default()
    }

    /// The whole traffic key K‖NR as derived.
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// The AEAD nonce for a frame at `offset`: the frame ID (zero bytes then
    /// the 8-byte big-endian offset, RFC 8548 section 4.2.3) XOR NR.
    pub fn nonce_for_offset(&self, offset: u64) -> [u8; AE_NONCE_LEN] {
        let mut nonce = [0u8; AE_NONCE_LEN];
        nonce[AE_NONCE_LEN - 8..].copy_from_slice(&offset.to_be_bytes());
        for (n, r) in nonce.iter_mut().zip(self.nonce_randomizer()) {
            *n ^= r;
        }
        nonce
    }

    /// Encrypts `in_out` in place and returns the tag.
    pub(crate) fn seal(
        &self,
        offset: u64,
        ad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], AeadFailure> {
        let nonce = Nonce::assume_unique_for_key(self.nonce_for_offset(offset));
        let key = self.key.as_ref().ok_or(AeadFailure)?;
        let tag = key
            .seal_in_place_separate_tag(nonce, aead::Aad::from(ad), in_out)
            .map_err(|_| AeadFailure)?;
        tag.as_ref().try_into().map_err(|_| AeadFailure)
    }

    /// Authenticates and decrypts `ciphertext_and_tag` in place; returns the
    /// plaintext length (the tag is left behind it).
    pub(crate) fn open(
        &self,
        offset: u64,
        ad: &[u8],
        ciphertext_and_tag: &mut [u8],
    ) -> Result<usize, AeadFailure> {
        let nonce = Nonce::assume_unique_for_key(self.nonce_for_offset(offset));
        let key = self.key.as_ref().ok_or(AeadFailure)?;
        key.open_in_place(nonce, aead::Aad::from(ad), ciphertext_and_tag)
            .map(|p| p.len())
            .map_err(|_| AeadFailure)
    }
}

impl Drop for TrafficKey {
    fn drop(&mut self) {
        self.raw.zeroize();
    }
}

impl fmt::Debug for TrafficKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrafficKey({}, ..)", self.aead)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_match_rfc8548_table_5() {
        assert_eq!(Aead::Aes128Gcm.id(), 0x0001);
        assert_eq!(Aead::Aes256Gcm.id(), 0x0002);
        assert_eq!(Aead::ChaCha20Poly1305.id(), 0x0010);
        assert_eq!(Aead::from_id(0x0003), None);
        for a in Aead::ALL {
            assert_eq!(Aead::from_id(a.id()), Some(a));
            assert_eq!(Aead::from_name(a.name()), Some(a));
        }
        assert_eq!(Aead::Aes128Gcm.name(), "AEAD_AES_128_GCM");
    }

    #[test]
    fn traffic_key_lengths_match_table_3() {
        assert_eq!(Aead::Aes128Gcm.traffic_key_len(), 28);
        assert_eq!(Aead::Aes256Gcm.traffic_key_len(), 44);
        assert_eq!(Aead::ChaCha20Poly1305.traffic_key_len(), 44);
    }

    #[test]
    fn traffic_key_of_wrong_length_refuses_to_seal() {
        let mut buf = [0u8; 4];
        assert!(
            TrafficKey::new(Aead::Aes128Gcm, vec![0; 27])
                .seal(0, &[], &mut buf)
                .is_err()
        );
        assert!(
            TrafficKey::new(Aead::Aes128Gcm, vec![0; 28])
                .seal(0, &[], &mut buf)
                .is_ok()
        );
    }

    #[test]
    fn nonce_is_offset_xor_randomizer() {
        let mut raw = vec![0u8; 28];
        raw[16..].copy_from_slice(&[0xff; 12]);
        let key = TrafficKey::new(Aead::Aes128Gcm, raw);
        let n = key.nonce_for_offset(0x0102);
        assert_eq!(
            n,
            [
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xfd
            ]
        );
    }
}
