//! The tcpcrypt TEP identifiers (RFC 8548 section 7, table 4) and the
//! per-TEP sizes of the key-exchange fields (section 5).

use std::fmt;

/// Nonce length N_A_LEN = N_B_LEN for every tcpcrypt TEP (RFC 8548 section 5).
pub const NONCE_LEN: usize = 32;

/// K_LEN for every tcpcrypt TEP (RFC 8548 section 5).
pub const K_LEN: usize = 32;

/// A tcpcrypt key-agreement scheme, named by its ENO TEP identifier.
///
/// The identifier here never carries the ENO `v` bit; see [`Tep::byte`] for
/// the byte as it appears in a suboption.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tep {
    /// TCPCRYPT_ECDHE_P256 (0x21), OPTIONAL.
    P256,
    /// TCPCRYPT_ECDHE_P521 (0x22), OPTIONAL.
    P521,
    /// TCPCRYPT_ECDHE_Curve25519 (0x23), REQUIRED.
    X25519,
    /// TCPCRYPT_ECDHE_Curve448 (0x24), RECOMMENDED.
    X448,
}

impl Tep {
    /// Every TEP this crate implements, mandatory one first.
    pub const ALL: [Tep; 4] = [Tep::X25519, Tep::X448, Tep::P256, Tep::P521];

    /// The 7-bit TEP identifier (v bit clear).
    pub fn id(self) -> u8 {
        match self {
            Tep::P256 => 0x21,
            Tep::P521 => 0x22,
            Tep::X25519 => 0x23,
            Tep::X448 => 0x24,
        }
    }

    /// The TEP for an identifier; the `v` bit (0x80) is ignored so suboption
    /// bytes can be passed as they are.
    pub fn from_id(byte: u8) -> Option<Tep> {
        match byte & 0x7f {
            0x21 => Some(Tep::P256),
            0x22 => Some(Tep::P521),
            0x23 => Some(Tep::X25519),
            0x24 => Some(Tep::X448),
            _ => None,
        }
    }

    /// The suboption byte for this TEP: with `v` set when it carries data
    /// (a resumption suboption), clear for a fresh offer.
    pub fn byte(self, v: bool) -> u8 {
        if v { self.id() | 0x80 } else { self.id() }
    }

    /// The IANA name, e.g. `"TCPCRYPT_ECDHE_Curve25519"`.
    pub fn name(self) -> &'static str {
        match self {
            Tep::P256 => "TCPCRYPT_ECDHE_P256",
            Tep::P521 => "TCPCRYPT_ECDHE_P521",
            Tep::X25519 => "TCPCRYPT_ECDHE_Curve25519",
            Tep::X448 => "TCPCRYPT_ECDHE_Curve448",
        }
    }

    /// Parses an IANA name (as [`Tep::name`] gives it, ASCII case ignored).
    pub fn from_name(name: &str) -> Option<Tep> {
        Tep::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// Length of the raw public key: the compressed point for the NIST
    /// curves, the u-coordinate for X25519/X448.
    pub fn public_key_len(self) -> usize {
        match self {
            Tep::P256 => 33,
            Tep::P521 => 67,
            Tep::X25519 => 32,
            Tep::X448 => 56,
        }
    }

    /// Whether the public key travels behind a 2-byte length (RFC 8548
    /// section 5: only the NIST curves).
    pub fn public_key_has_length_prefix(self) -> bool {
        matches!(self, Tep::P256 | Tep::P521)
    }

    /// Bytes the public key field occupies in an Init message.
    pub fn public_key_field_len(self) -> usize {
        if self.public_key_has_length_prefix() {
            2 + self.public_key_len()
        } else {
            self.public_key_len()
        }
    }

    /// Length of the ephemeral secret ES this scheme produces.
    pub fn shared_secret_len(self) -> usize {
        match self {
            Tep::P256 => 32,
            Tep::P521 => 66,
            Tep::X25519 => 32,
            Tep::X448 => 56,
        }
    }
}

impl fmt::Display for Tep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::Tep;

    #[test]
    fn identifiers_match_rfc8548_table_4() {
        assert_eq!(Tep::P256.id(), 0x21);
        assert_eq!(Tep::P521.id(), 0x22);
        assert_eq!(Tep::X25519.id(), 0x23);
        assert_eq!(Tep::X448.id(), 0x24);
        assert_eq!(Tep::X25519.name(), "TCPCRYPT_ECDHE_Curve25519");
    }

    #[test]
    fn from_id_ignores_v_bit_and_rejects_other_teps() {
        assert_eq!(Tep::from_id(0xa3), Some(Tep::X25519));
        assert_eq!(Tep::from_id(0x20), None);
        assert_eq!(Tep::from_id(0x25), None);
    }

    #[test]
    fn names_round_trip() {
        for t in Tep::ALL {
            assert_eq!(Tep::from_name(t.name()), Some(t));
            assert_eq!(Tep::from_id(t.id()), Some(t));
        }
    }
}
