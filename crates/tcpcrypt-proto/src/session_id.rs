//! The 33-byte tcpcrypt session ID (RFC 8548 section 3.4, RFC 8547 section 5.1).

use std::fmt;

use crate::tep::{K_LEN, Tep};

/// Length of every tcpcrypt session ID: the TEP byte plus K_LEN bytes.
pub const SESSION_ID_LEN: usize = 1 + K_LEN;

/// A tcpcrypt session ID.
///
/// Byte 0 is the negotiated TEP byte exactly as host B sent it (with `v` set
/// for a resumed session); the rest comes from the key schedule. It can only
/// be built from a [`Tep`] and a resumed flag, so byte 0 is always one a
/// tcpcrypt B can have sent. `Display` gives lower-case hex, `{:X}` upper-case.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId([u8; SESSION_ID_LEN]);

impl SessionId {
    /// Builds an ID from its TEP byte and the CPRF output that follows it.
    pub fn new(tep: Tep, resumed: bool, hash: [u8; K_LEN]) -> SessionId {
        let mut bytes = [0u8; SESSION_ID_LEN];
        bytes[0] = tep.byte(resumed);
        bytes[1..].copy_from_slice(&hash);
        SessionId(bytes)
    }

    /// Parses 33 bytes whose first byte is a tcpcrypt TEP byte.
    pub fn from_bytes(bytes: &[u8]) -> Option<SessionId> {
        let array: [u8; SESSION_ID_LEN] = bytes.try_into().ok()?;
        Tep::from_id(array[0])?;
        Some(SessionId(array))
    }

    /// The TEP named by byte 0.
    pub fn tep(&self) -> Tep {
        // Constructors only admit tcpcrypt TEP bytes; X25519 is unreachable.
        Tep::from_id(self.0[0]).unwrap_or(Tep::X25519)
    }

    /// Whether byte 0 has the `v` bit, i.e. the session was resumed.
    pub fn resumed(&self) -> bool {
        self.0[0] & 0x80 != 0
    }

    pub fn as_bytes(&self) -> &[u8; SESSION_ID_LEN] {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(self, f)
    }
}

impl fmt::LowerHex for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::UpperHex for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02X}"))
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_byte_is_tep_byte_with_v_for_resumed() {
        let fresh = SessionId::new(Tep::X25519, false, [0x11; K_LEN]);
        let resumed = SessionId::new(Tep::X25519, true, [0x11; K_LEN]);
        assert_eq!(fresh.as_bytes()[0], 0x23);
        assert_eq!(resumed.as_bytes()[0], 0xa3);
        assert!(resumed.resumed() && !fresh.resumed());
        assert_eq!(resumed.tep(), Tep::X25519);
    }

    #[test]
    fn hex_forms() {
        let id = SessionId::new(Tep::P256, false, [0xab; K_LEN]);
        let lower = id.to_string();
        assert_eq!(lower.len(), 66);
        assert!(lower.starts_with("21abab"));
        assert!(format!("{id:X}").starts_with("21ABAB"));
    }

    #[test]
    fn from_bytes_rejects_wrong_length_and_foreign_tep() {
        assert!(SessionId::from_bytes(&[0x23; 32]).is_none());
        assert!(SessionId::from_bytes(&[0x30; 33]).is_none());
        assert!(SessionId::from_bytes(&[0x23; 33]).is_some());
    }
}
