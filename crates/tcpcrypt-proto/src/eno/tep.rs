//! The one-byte building blocks of an ENO option: TEP identifiers, TEP bytes
//! (identifier plus `v` bit) and the global suboption (RFC 8547 sections 4.1
//! and 4.2).

use thiserror::Error;

/// The `v` bit of an initial suboption byte: set when suboption data follows.
const V_BIT: u8 = 0x80;
/// First `glt` value that names a TEP; below it are global suboptions and
/// length bytes.
const FIRST_TEP_ID: u8 = 0x20;

/// A 7-bit TEP identifier, always in `0x20..=0x7F` (RFC 8547 section 4.1).
///
/// The IANA registry assigns the values (0x21..=0x24 are tcpcrypt's); this
/// type only guarantees that the value can stand in a suboption byte as a TEP
/// rather than as a global suboption or a length byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TepId(u8);

/// A value that cannot be a TEP identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("TEP identifier {0:#04x} is outside 0x20..=0x7f")]
pub struct InvalidTepId(pub u8);

impl TepId {
    /// Accepts `0x20..=0x7F`.
    pub const fn new(id: u8) -> Result<TepId, InvalidTepId> {
        if id >= FIRST_TEP_ID && id < V_BIT {
            Ok(TepId(id))
        } else {
            Err(InvalidTepId(id))
        }
    }

    /// The identifier as a number (`v` bit clear).
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl std::fmt::Display for TepId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#04x}", self.0)
    }
}

/// A TEP identifier together with its `v` bit, i.e. the byte that starts a
/// TEP suboption on the wire.
///
/// The negotiated TEP is reported in this form because the session ID's first
/// byte is exactly the byte host B sent (RFC 8547 section 5.1), e.g. `0x23`
/// for a fresh tcpcrypt Curve25519 session and `0xA3` for a resumed one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TepByte {
    id: TepId,
    v: bool,
}

impl TepByte {
    /// A TEP byte from its parts.
    pub const fn new(id: TepId, v: bool) -> TepByte {
        TepByte { id, v }
    }

    /// Reads a suboption byte as a TEP byte; `None` for global suboptions
    /// (0x00..=0x1F) and length bytes (0x80..=0x9F).
    pub const fn from_byte(byte: u8) -> Option<TepByte> {
        match TepId::new(byte & !V_BIT) {
            Ok(id) => Some(TepByte {
                id,
                v: byte & V_BIT != 0,
            }),
            Err(_) => None,
        }
    }

    /// The byte as it appears on the wire.
    pub const fn to_byte(self) -> u8 {
        if self.v { self.id.0 | V_BIT } else { self.id.0 }
    }

    /// The TEP identifier, without the `v` bit.
    pub const fn id(self) -> TepId {
        self.id
    }

    /// Whether the `v` bit is set (suboption data follows).
    pub const fn v(self) -> bool {
        self.v
    }
}

impl std::fmt::Display for TepByte {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#04x}", self.to_byte())
    }
}

/// The global suboption (RFC 8547 section 4.2): the passive role bit `b` and
/// the application-aware bit `a`.
///
/// The reserved bits z1..z3 are dropped on parsing and always sent as zero,
/// so they are not represented. A SYN without a global suboption counts as
/// carrying [`GlobalSuboption::IMPLICIT`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GlobalSuboption {
    /// Passive role bit: 1 on every passive opener; the host with `b = 1`
    /// plays role B.
    pub b: bool,
    /// Application-aware bit, an out-of-band signal between applications.
    pub a: bool,
}

const B_BIT: u8 = 0x01;
const A_BIT: u8 = 0x02;

impl GlobalSuboption {
    /// The value a SYN without an explicit global suboption carries (0x00).
    pub const IMPLICIT: GlobalSuboption = GlobalSuboption { b: false, a: false };

    /// Reads a global suboption byte (0x00..=0x1F), ignoring the reserved
    /// bits; `None` for any byte outside that range.
    pub const fn from_byte(byte: u8) -> Option<GlobalSuboption> {
        if byte < FIRST_TEP_ID {
            Some(GlobalSuboption {
                b: byte & B_BIT != 0,
                a: byte & A_BIT != 0,
            })
        } else {
            None
        }
    }

    /// The byte to send, reserved bits zero.
    pub const fn to_byte(self) -> u8 {
        (if self.b { B_BIT } else { 0 }) | (if self.a { A_BIT } else { 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tep_id_accepts_exactly_0x20_to_0x7f() {
        assert_eq!(TepId::new(0x1f), Err(InvalidTepId(0x1f)));
        assert_eq!(TepId::new(0x20).map(TepId::get), Ok(0x20));
        assert_eq!(TepId::new(0x7f).map(TepId::get), Ok(0x7f));
        assert_eq!(TepId::new(0x80), Err(InvalidTepId(0x80)));
        assert_eq!(TepId::new(0xa3), Err(InvalidTepId(0xa3)));
    }

    #[test]
    fn tep_byte_keeps_the_v_bit_apart_from_the_id() {
        let resumed = TepByte::from_byte(0xa3).expect("0xa3 is a TEP byte");
        assert!(resumed.v());
        assert_eq!(resumed.id().get(), 0x23);
        assert_eq!(resumed.to_byte(), 0xa3);
        let fresh = TepByte::from_byte(0x23).expect("0x23 is a TEP byte");
        assert!(!fresh.v());
        assert_eq!(fresh.id(), resumed.id());
    }

    #[test]
    fn global_and_length_bytes_are_not_tep_bytes() {
        for byte in (0x00..=0x1f).chain(0x80..=0x9f) {
            assert_eq!(TepByte::from_byte(byte), None, "{byte:#04x}");
        }
    }

    #[test]
    fn global_suboption_ignores_reserved_bits_on_receipt() {
        let g = GlobalSuboption::from_byte(0x1f).expect("0x1f is global");
        assert_eq!(g, GlobalSuboption { b: true, a: true });
        assert_eq!(g.to_byte(), 0x03);
        assert_eq!(
            GlobalSuboption::from_byte(0x1c),
            Some(GlobalSuboption::IMPLICIT)
        );
    }

    #[test]
    fn global_suboption_encodes_b_as_bit_0_and_a_as_bit_1() {
        assert_eq!(GlobalSuboption { b: true, a: false }.to_byte(), 0x01);
        assert_eq!(GlobalSuboption { b: false, a: true }.to_byte(), 0x02);
        assert_eq!(GlobalSuboption::IMPLICIT.to_byte(), 0x00);
        assert_eq!(GlobalSuboption::from_byte(0x20), None);
    }
}
