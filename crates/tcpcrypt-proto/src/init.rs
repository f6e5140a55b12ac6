//! Init1 and Init2, the key-exchange messages at the start of A's and B's
//! data streams (RFC 8548 sections 3.3 and 4.1).
//!
//! Decoding is strict: the input must be exactly one message (its length is
//! `message_len`), every field must fit, and the public key must have the
//! form the TEP prescribes. Bytes after the public key ("ignored") are kept
//! byte-exact so a re-encoding reproduces what was received.

use crate::aead::Aead;
use crate::tep::{NONCE_LEN, Tep};

/// INIT1_MAGIC (RFC 8548 section 4.3).
pub const INIT1_MAGIC: u32 = 0x1510_1a0e;
/// INIT2_MAGIC (RFC 8548 section 4.3).
pub const INIT2_MAGIC: u32 = 0x0971_05e0;

/// Largest `message_len` this implementation accepts. The longest Init
/// message a sender may build (255 ciphers, P-521) is 620 bytes; the rest
/// of the allowance is for the trailing bytes receivers must tolerate, while
/// keeping the buffer a peer can make us hold small.
pub const MAX_INIT_MESSAGE_LEN: usize = 2048;

/// Bytes needed to read the magic and `message_len`.
pub const INIT_HEADER_LEN: usize = 8;

/// A big-endian u16 from exactly two bytes.
pub(crate) fn be_u16(bytes: &[u8]) -> Option<u16> {
    bytes.try_into().ok().map(u16::from_be_bytes)
}

/// A big-endian u32 from exactly four bytes.
pub(crate) fn be_u32(bytes: &[u8]) -> Option<u32> {
    bytes.try_into().ok().map(u32::from_be_bytes)
}

/// Which of the two messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InitKind {
    Init1,
    Init2,
}

impl InitKind {
    pub fn magic(self) -> u32 {
        match self {
            InitKind::Init1 => INIT1_MAGIC,
            InitKind::Init2 => INIT2_MAGIC,
        }
    }

    /// The shortest well-formed message of this kind for `tep` (one cipher
    /// for Init1, no ignored bytes).
    pub fn min_len(self, tep: Tep) -> usize {
        match self {
            InitKind::Init1 => 9 + 2 + NONCE_LEN + tep.public_key_field_len(),
            InitKind::Init2 => 10 + NONCE_LEN + tep.public_key_field_len(),
        }
    }
}

impl std::fmt::Display for InitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InitKind::Init1 => "Init1",
            InitKind::Init2 => "Init2",
        })
    }
}

/// What is wrong with an Init message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitError {
    #[error("{kind}: magic is {found:#010x}, expected {expected:#010x}")]
    BadMagic {
        kind: InitKind,
        found: u32,
        expected: u32,
    },
    #[error("{kind}: message_len {len} is below the {min} bytes the fields need")]
    MessageTooShort {
        kind: InitKind,
        len: usize,
        min: usize,
    },
    #[error("{kind}: message_len {len} exceeds this implementation's limit of {max}")]
    MessageTooLong {
        kind: InitKind,
        len: usize,
        max: usize,
    },
    #[error("{kind}: got {got} bytes but message_len says {declared}")]
    LengthMismatch {
        kind: InitKind,
        declared: usize,
        got: usize,
    },
    #[error("Init1: nciphers is 0, expected at least one sym_cipher")]
    NoCiphers,
    #[error("{kind}: {field} does not fit in message_len {len}")]
    Truncated {
        kind: InitKind,
        field: &'static str,
        len: usize,
    },
    #[error("Init2: sym_cipher {id:#06x} is not a known AEAD algorithm")]
    UnknownCipher { id: u16 },
    #[error("{kind}: pubkey_len is {found}, expected {expected} for a compressed {tep} point")]
    BadPublicKeyLength {
        kind: InitKind,
        tep: Tep,
        found: usize,
        expected: usize,
    },
    #[error(
        "{kind}: {tep} public key starts with {found:#04x}, expected 0x02 or 0x03 (compressed point)"
    )]
    NotCompressedPoint { kind: InitKind, tep: Tep, found: u8 },
    #[error("{kind}: {what} (encode)")]
    Unencodable { kind: InitKind, what: &'static str },
}

/// A public key as carried in an Init message, without the length prefix the
/// NIST curves add on the wire. Its length always matches its TEP.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct PublicKeyBytes {
    tep: Tep,
    bytes: Vec<u8>,
}

impl PublicKeyBytes {
    /// Accepts `bytes` if its length (and, for NIST curves, its compressed
    /// point tag) fits `tep`; curve membership is checked at key agreement.
    pub fn new(tep: Tep, bytes: &[u8]) -> Option<PublicKeyBytes> {
        let ok_len = bytes.len() == tep.public_key_len();
        let ok_tag =
            !tep.public_key_has_length_prefix() || matches!(bytes.first(), Some(0x02) | Some(0x03));
        (ok_len && ok_tag).then(|| PublicKeyBytes {
            tep,
            bytes: bytes.to_vec(),
        })
    }

    pub fn tep(&self) -> Tep {
        self.tep
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        if self.tep.public_key_has_length_prefix() {
            // Lengths are 33 or 67, always below 2^16.
            out.extend_from_slice(&(self.bytes.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(&self.bytes);
    }

    fn decode(
        kind: InitKind,
        tep: Tep,
        input: &[u8],
        len: usize,
    ) -> Result<(PublicKeyBytes, &[u8]), InitError> {
        let truncated = InitError::Truncated {
            kind,
            field: "public key",
            len,
        };
        let rest = if tep.public_key_has_length_prefix() {
            let (prefix, rest) = input.split_at_checked(2).ok_or(truncated.clone())?;
            let found = be_u16(prefix).map_or(0, usize::from);
            if found != tep.public_key_len() {
                return Err(InitError::BadPublicKeyLength {
                    kind,
                    tep,
                    found,
                    expected: tep.public_key_len(),
                });
            }
            rest
        } else {
            input
        };
        let (key, rest) = rest
            .split_at_checked(tep.public_key_len())
            .ok_or(truncated)?;
        if tep.public_key_has_length_prefix() && !matches!(key.first(), Some(0x02) | Some(0x03)) {
            return Err(InitError::NotCompressedPoint {
                kind,
                tep,
                found: key.first().copied().unwrap_or(0),
            });
        }
        Ok((
            PublicKeyBytes {
                tep,
                bytes: key.to_vec(),
            },
            rest,
        ))
    }
}

/// Init1 = { INIT1_MAGIC, sym_cipher_list, N_A, Pub_A } (RFC 8548 section 4.1).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Init1 {
    /// The sym_cipher identifiers as listed, unknown ones included.
    pub sym_ciphers: Vec<u16>,
    pub nonce: [u8; NONCE_LEN],
    pub public_key: PublicKeyBytes,
    /// Bytes after Pub_A. Senders leave this empty; receivers keep it.
    pub ignored: Vec<u8>,
}

/// Init2 = { INIT2_MAGIC, sym_cipher, N_B, Pub_B } (RFC 8548 section 4.1).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Init2 {
    pub sym_cipher: Aead,
    pub nonce: [u8; NONCE_LEN],
    pub public_key: PublicKeyBytes,
    /// Bytes after Pub_B. Senders leave this empty; receivers keep it.
    pub ignored: Vec<u8>,
}

/// Progress of collecting an Init message from the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitProgress {
    /// At least this many bytes in total (counted from the message start)
    /// are needed before the message can be complete.
    NeedAtLeast(usize),
    /// The message is exactly this many bytes; decode that prefix.
    Complete(usize),
}

/// Tells the collector of an Init message how far it is, from the bytes
/// received so far (starting at the message's first byte).
///
/// It checks the magic as soon as its bytes are present and bounds
/// `message_len` between the TEP's minimum and [`MAX_INIT_MESSAGE_LEN`], so
/// a caller never buffers more than that for a bad or hostile peer.
pub fn init_progress(kind: InitKind, tep: Tep, received: &[u8]) -> Result<InitProgress, InitError> {
    let magic = kind.magic().to_be_bytes();
    let seen = received.len().min(4);
    if received.get(..seen) != magic.get(..seen) {
        let mut found = [0u8; 4];
        found[..seen].copy_from_slice(received.get(..seen).unwrap_or_default());
        return Err(InitError::BadMagic {
            kind,
            found: u32::from_be_bytes(found),
            expected: kind.magic(),
        });
    }
    let Some(len_bytes) = received.get(4..8) else {
        return Ok(InitProgress::NeedAtLeast(INIT_HEADER_LEN));
    };
    let len = be_u32(len_bytes).map_or(usize::MAX, |l| l as usize);
    check_declared_len(kind, tep, len)?;
    if received.len() >= len {
        Ok(InitProgress::Complete(len))
    } else {
        Ok(InitProgress::NeedAtLeast(len))
    }
}

fn check_declared_len(kind: InitKind, tep: Tep, len: usize) -> Result<(), InitError> {
    if len > MAX_INIT_MESSAGE_LEN {
        return Err(InitError::MessageTooLong {
            kind,
            len,
            max: MAX_INIT_MESSAGE_LEN,
        });
    }
    if len < kind.min_len(tep) {
        return Err(InitError::MessageTooShort {
            kind,
            len,
            min: kind.min_len(tep),
        });
    }
    Ok(())
}

/// Checks magic and `message_len` of a complete message and returns the
/// fields after them.
fn decode_header(kind: InitKind, tep: Tep, bytes: &[u8]) -> Result<&[u8], InitError> {
    let (header, body) =
        bytes
            .split_at_checked(INIT_HEADER_LEN)
            .ok_or(InitError::MessageTooShort {
                kind,
                len: bytes.len(),
                min: kind.min_len(tep),
            })?;
    let magic = header.get(..4).and_then(be_u32).unwrap_or(0);
    if magic != kind.magic() {
        return Err(InitError::BadMagic {
            kind,
            found: magic,
            expected: kind.magic(),
        });
    }
    let len = header
        .get(4..)
        .and_then(be_u32)
        .map_or(usize::MAX, |l| l as usize);
    check_declared_len(kind, tep, len)?;
    if len != bytes.len() {
        return Err(InitError::LengthMismatch {
            kind,
            declared: len,
            got: bytes.len(),
        });
    }
    Ok(body)
}

fn take_nonce(
    kind: InitKind,
    input: &[u8],
    len: usize,
) -> Result<([u8; NONCE_LEN], &[u8]), InitError> {
    let (nonce, rest) = input
        .split_at_checked(NONCE_LEN)
        .ok_or(InitError::Truncated {
            kind,
            field: "nonce",
            len,
        })?;
    let mut out = [0u8; NONCE_LEN];
    out.copy_from_slice(nonce);
    Ok((out, rest))
}

fn encode_header(kind: InitKind, total: usize, out: &mut Vec<u8>) -> Result<(), InitError> {
    if total > MAX_INIT_MESSAGE_LEN {
        return Err(InitError::Unencodable {
            kind,
            what: "message longer than MAX_INIT_MESSAGE_LEN",
        });
    }
    out.extend_from_slice(&kind.magic().to_be_bytes());
    out.extend_from_slice(&(total as u32).to_be_bytes());
    Ok(())
}

impl Init1 {
    /// A message as a sender builds it: no ignored bytes.
    pub fn new(sym_ciphers: Vec<u16>, nonce: [u8; NONCE_LEN], public_key: PublicKeyBytes) -> Init1 {
        Init1 {
            sym_ciphers,
            nonce,
            public_key,
            ignored: Vec::new(),
        }
    }

    /// The known AEADs among the offered identifiers, in A's order.
    pub fn offered_aeads(&self) -> impl Iterator<Item = Aead> + '_ {
        self.sym_ciphers.iter().filter_map(|id| Aead::from_id(*id))
    }

    /// Length of the encoding.
    pub fn encoded_len(&self) -> usize {
        9 + 2 * self.sym_ciphers.len()
            + NONCE_LEN
            + self.public_key.tep.public_key_field_len()
            + self.ignored.len()
    }

    /// Encodes the message; fails for an empty or over-long (>255) cipher list.
    pub fn encode(&self) -> Result<Vec<u8>, InitError> {
        let kind = InitKind::Init1;
        let count = u8::try_from(self.sym_ciphers.len()).map_err(|_| InitError::Unencodable {
            kind,
            what: "more than 255 sym_ciphers",
        })?;
        if count == 0 {
            return Err(InitError::NoCiphers);
        }
        let total = self.encoded_len();
        let mut out = Vec::with_capacity(total);
        encode_header(kind, total, &mut out)?;
        out.push(count);
        for id in &self.sym_ciphers {
            out.extend_from_slice(&id.to_be_bytes());
        }
        out.extend_from_slice(&self.nonce);
        self.public_key.encode_into(&mut out);
        out.extend_from_slice(&self.ignored);
        Ok(out)
    }

    /// Decodes exactly one Init1 for the negotiated `tep`.
    pub fn decode(tep: Tep, bytes: &[u8]) -> Result<Init1, InitError> {
        let kind = InitKind::Init1;
        let len = bytes.len();
        let body = decode_header(kind, tep, bytes)?;
        let (&count, rest) = body.split_first().ok_or(InitError::Truncated {
            kind,
            field: "nciphers",
            len,
        })?;
        if count == 0 {
            return Err(InitError::NoCiphers);
        }
        let (list, rest) =
            rest.split_at_checked(2 * count as usize)
                .ok_or(InitError::Truncated {
                    kind,
                    field: "sym_cipher list",
                    len,
                })?;
        let sym_ciphers = list.chunks_exact(2).filter_map(be_u16).collect();
        let (nonce, rest) = take_nonce(kind, rest, len)?;
        let (public_key, ignored) = PublicKeyBytes::decode(kind, tep, rest, len)?;
        Ok(Init1 {
            sym_ciphers,
            nonce,
            public_key,
            ignored: ignored.to_vec(),
        })
    }
}

impl Init2 {
    /// A message as a sender builds it: no ignored bytes.
    pub fn new(sym_cipher: Aead, nonce: [u8; NONCE_LEN], public_key: PublicKeyBytes) -> Init2 {
        Init2 {
            sym_cipher,
            nonce,
            public_key,
            ignored: Vec::new(),
        }
    }

    pub fn encoded_len(&self) -> usize {
        10 + NONCE_LEN + self.public_key.tep.public_key_field_len() + self.ignored.len()
    }

    pub fn encode(&self) -> Result<Vec<u8>, InitError> {
        let kind = InitKind::Init2;
        let total = self.encoded_len();
        let mut out = Vec::with_capacity(total);
        encode_header(kind, total, &mut out)?;
        out.extend_from_slice(&self.sym_cipher.id().to_be_bytes());
        out.extend_from_slice(&self.nonce);
        self.public_key.encode_into(&mut out);
        out.extend_from_slice(&self.ignored);
        Ok(out)
    }

    /// Decodes exactly one Init2 for the negotiated `tep`.
    pub fn decode(tep: Tep, bytes: &[u8]) -> Result<Init2, InitError> {
        let kind = InitKind::Init2;
        let len = bytes.len();
        let body = decode_header(kind, tep, bytes)?;
        let (cipher, rest) = body.split_at_checked(2).ok_or(InitError::Truncated {
            kind,
            field: "sym_cipher",
            len,
        })?;
        let id = u16::from_be_bytes([cipher[0], cipher[1]]);
        let sym_cipher = Aead::from_id(id).ok_or(InitError::UnknownCipher { id })?;
        let (nonce, rest) = take_nonce(kind, rest, len)?;
        let (public_key, ignored) = PublicKeyBytes::decode(kind, tep, rest, len)?;
        Ok(Init2 {
            sym_cipher,
            nonce,
            public_key,
            ignored: ignored.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x25519_key() -> PublicKeyBytes {
        PublicKeyBytes::new(Tep::X25519, &[9; 32]).unwrap()
    }

    fn p256_key() -> PublicKeyBytes {
        let mut k = [7u8; 33];
        k[0] = 0x02;
        PublicKeyBytes::new(Tep::P256, &k).unwrap()
    }

    #[test]
    fn sizes_match_digest_table() {
        assert_eq!(InitKind::Init1.min_len(Tep::X25519), 75);
        assert_eq!(InitKind::Init2.min_len(Tep::X25519), 74);
        assert_eq!(InitKind::Init1.min_len(Tep::X448), 99);
        assert_eq!(InitKind::Init2.min_len(Tep::X448), 98);
        assert_eq!(InitKind::Init1.min_len(Tep::P256), 78);
        assert_eq!(InitKind::Init2.min_len(Tep::P256), 77);
        assert_eq!(InitKind::Init1.min_len(Tep::P521), 112);
        assert_eq!(InitKind::Init2.min_len(Tep::P521), 111);
    }

    #[test]
    fn init1_with_ignored_tail_is_kept_byte_exact() {
        let mut m = Init1::new(vec![1, 0x10, 0x7777], [3; 32], p256_key());
        m.ignored = vec![0xee; 5];
        let bytes = m.encode().unwrap();
        let back = Init1::decode(Tep::P256, &bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.encode().unwrap(), bytes);
        assert_eq!(
            back.offered_aeads().collect::<Vec<_>>(),
            vec![Aead::Aes128Gcm, Aead::ChaCha20Poly1305]
        );
    }

    #[test]
    fn init2_round_trips() {
        let m = Init2::new(Aead::Aes256Gcm, [4; 32], x25519_key());
        let bytes = m.encode().unwrap();
        assert_eq!(bytes.len(), 74);
        assert_eq!(Init2::decode(Tep::X25519, &bytes).unwrap(), m);
    }

    #[test]
    fn wrong_magic_is_rejected() {
        let mut bytes = Init2::new(Aead::Aes128Gcm, [0; 32], x25519_key())
            .encode()
            .unwrap();
        assert!(matches!(
            Init1::decode(Tep::X25519, &bytes),
            Err(InitError::BadMagic { .. })
        ));
        bytes[0] ^= 1;
        assert!(matches!(
            Init2::decode(Tep::X25519, &bytes),
            Err(InitError::BadMagic { .. })
        ));
    }

    #[test]
    fn message_len_disagreeing_with_input_is_rejected() {
        let bytes = Init2::new(Aead::Aes128Gcm, [0; 32], x25519_key())
            .encode()
            .unwrap();
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            Init2::decode(Tep::X25519, &longer),
            Err(InitError::LengthMismatch {
                declared: 74,
                got: 75,
                ..
            })
        ));
        assert!(Init2::decode(Tep::X25519, &bytes[..73]).is_err());
    }

    #[test]
    fn message_len_too_small_for_fields_is_rejected() {
        let mut bytes = Init2::new(Aead::Aes128Gcm, [0; 32], x25519_key())
            .encode()
            .unwrap();
        bytes.truncate(60);
        bytes[4..8].copy_from_slice(&60u32.to_be_bytes());
        assert!(matches!(
            Init2::decode(Tep::X25519, &bytes),
            Err(InitError::MessageTooShort {
                len: 60,
                min: 74,
                ..
            })
        ));
    }

    #[test]
    fn zero_ciphers_rejected() {
        let mut bytes = Init1::new(vec![1], [0; 32], x25519_key()).encode().unwrap();
        bytes[8] = 0;
        assert_eq!(
            Init1::decode(Tep::X25519, &bytes),
            Err(InitError::NoCiphers)
        );
    }

    #[test]
    fn cipher_count_beyond_message_is_truncation() {
        let mut bytes = Init1::new(vec![1], [0; 32], x25519_key()).encode().unwrap();
        bytes[8] = 40;
        assert!(matches!(
            Init1::decode(Tep::X25519, &bytes),
            Err(InitError::Truncated { .. })
        ));
    }

    #[test]
    fn unknown_init2_cipher_rejected() {
        let mut bytes = Init2::new(Aead::Aes128Gcm, [0; 32], x25519_key())
            .encode()
            .unwrap();
        bytes[8..10].copy_from_slice(&[0x00, 0x03]);
        assert_eq!(
            Init2::decode(Tep::X25519, &bytes),
            Err(InitError::UnknownCipher { id: 3 })
        );
    }

    #[test]
    fn nist_key_with_wrong_length_prefix_rejected() {
        let mut bytes = Init2::new(Aead::Aes128Gcm, [0; 32], p256_key())
            .encode()
            .unwrap();
        bytes[42..44].copy_from_slice(&65u16.to_be_bytes());
        assert!(matches!(
            Init2::decode(Tep::P256, &bytes),
            Err(InitError::BadPublicKeyLength {
                found: 65,
                expected: 33,
                ..
            })
        ));
    }

    #[test]
    fn nist_key_must_be_compressed() {
        let mut bytes = Init2::new(Aead::Aes128Gcm, [0; 32], p256_key())
            .encode()
            .unwrap();
        bytes[44] = 0x04;
        assert!(matches!(
            Init2::decode(Tep::P256, &bytes),
            Err(InitError::NotCompressedPoint { found: 0x04, .. })
        ));
    }

    #[test]
    fn progress_needs_header_then_declared_length() {
        let bytes = Init1::new(vec![1], [0; 32], x25519_key()).encode().unwrap();
        let k = InitKind::Init1;
        assert_eq!(
            init_progress(k, Tep::X25519, &[]),
            Ok(InitProgress::NeedAtLeast(8))
        );
        assert_eq!(
            init_progress(k, Tep::X25519, &bytes[..3]),
            Ok(InitProgress::NeedAtLeast(8))
        );
        assert_eq!(
            init_progress(k, Tep::X25519, &bytes[..8]),
            Ok(InitProgress::NeedAtLeast(75))
        );
        assert_eq!(
            init_progress(k, Tep::X25519, &bytes),
            Ok(InitProgress::Complete(75))
        );
        let mut more = bytes.clone();
        more.extend_from_slice(&[0; 10]);
        assert_eq!(
            init_progress(k, Tep::X25519, &more),
            Ok(InitProgress::Complete(75))
        );
    }

    #[test]
    fn progress_rejects_bad_magic_early_and_huge_length() {
        assert!(matches!(
            init_progress(InitKind::Init1, Tep::X25519, &[0x15, 0x11]),
            Err(InitError::BadMagic { .. })
        ));
        let mut hdr = INIT1_MAGIC.to_be_bytes().to_vec();
        hdr.extend_from_slice(&(MAX_INIT_MESSAGE_LEN as u32 + 1).to_be_bytes());
        assert!(matches!(
            init_progress(InitKind::Init1, Tep::X25519, &hdr),
            Err(InitError::MessageTooLong { .. })
        ));
    }
}
