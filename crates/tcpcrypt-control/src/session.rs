//! What the daemon knows about a connection, as types that only hold values
//! the control protocol allows: the session and its parts, the answer about
//! one connection, a row of `list`, and the per-socket policy words.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// Length in bytes of an RFC 8548 session ID: the TEP byte plus `K_LEN` (32)
/// bytes of CPRF output (RFC 8548 section 3.4).
pub const SESSION_ID_LEN: usize = 33;

/// An RFC 8548 session ID: 33 bytes, the first being the TEP byte host B sent.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId([u8; SESSION_ID_LEN]);

/// Why a string is not a session ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionIdError {
    #[error("expected {expected} hex digits, got {got}", expected = 2 * SESSION_ID_LEN)]
    Length { got: usize },
    #[error("expected hex digits, found {found:?} at position {position}")]
    NotHex { position: usize, found: char },
}

impl SessionId {
    pub fn from_bytes(bytes: [u8; SESSION_ID_LEN]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; SESSION_ID_LEN] {
        &self.0
    }

    /// Lower-case hex, as the control protocol writes it.
    pub fn to_hex(&self) -> String {
        hex(&self.0, b"0123456789abcdef")
    }

    /// Upper-case hex, as the original mod_tcpcrypt put it in
    /// `TCP_CRYPT_SESSID`.
    pub fn to_upper_hex(&self) -> String {
        hex(&self.0, b"0123456789ABCDEF")
    }

    /// The first `bytes` bytes in lower-case hex, for tables read by people.
    pub fn short_hex(&self, bytes: usize) -> String {
        self.0
            .iter()
            .take(bytes)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// `bytes` in hex with the given digits: a web server formats an ID per
/// connection, so this avoids a `format!` per byte.
fn hex(bytes: &[u8], digits: &[u8; 16]) -> String {
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        out.push(char::from(digits[usize::from(b >> 4)]));
        out.push(char::from(digits[usize::from(b & 0xf)]));
    }
    out
}

impl FromStr for SessionId {
    type Err = SessionIdError;

    /// Accepts upper- or lower-case hex.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let chars: Vec<char> = s.chars().collect();
        if chars.len() != 2 * SESSION_ID_LEN {
            return Err(SessionIdError::Length { got: chars.len() });
        }
        let mut bytes = [0u8; SESSION_ID_LEN];
        for (i, (out, pair)) in bytes.iter_mut().zip(chars.chunks_exact(2)).enumerate() {
            let mut value = 0u8;
            for (j, &c) in pair.iter().enumerate() {
                let digit = c.to_digit(16).ok_or(SessionIdError::NotHex {
                    position: 2 * i + j,
                    found: c,
                })?;
                // to_digit(16) is below 16, so the cast cannot truncate.
                value = (value << 4) | digit as u8;
            }
            *out = value;
        }
        Ok(Self(bytes))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.to_hex())
    }
}

/// This host's role in the tcpcrypt handshake (RFC 8547 section 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    A,
    B,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::A => "A",
            Role::B => "B",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "A" => Some(Role::A),
            "B" => Some(Role::B),
            _ => None,
        }
    }

    pub fn opposite(self) -> Self {
        match self {
            Role::A => Role::B,
            Role::B => Role::A,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A tcpcrypt key-exchange protocol (RFC 8548 section 7, IANA TEP registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tep {
    EcdheP256,
    EcdheP521,
    EcdheCurve25519,
    EcdheCurve448,
}

impl Tep {
    pub const ALL: [Tep; 4] = [
        Tep::EcdheP256,
        Tep::EcdheP521,
        Tep::EcdheCurve25519,
        Tep::EcdheCurve448,
    ];

    /// The RFC 8548 name, as the control protocol writes it.
    pub fn name(self) -> &'static str {
        match self {
            Tep::EcdheP256 => "TCPCRYPT_ECDHE_P256",
            Tep::EcdheP521 => "TCPCRYPT_ECDHE_P521",
            Tep::EcdheCurve25519 => "TCPCRYPT_ECDHE_Curve25519",
            Tep::EcdheCurve448 => "TCPCRYPT_ECDHE_Curve448",
        }
    }

    /// The curve alone, for narrow table columns.
    pub fn short_name(self) -> &'static str {
        match self {
            Tep::EcdheP256 => "P-256",
            Tep::EcdheP521 => "P-521",
            Tep::EcdheCurve25519 => "X25519",
            Tep::EcdheCurve448 => "X448",
        }
    }

    /// The TEP identifier byte without the `v` bit.
    pub fn byte(self) -> u8 {
        match self {
            Tep::EcdheP256 => 0x21,
            Tep::EcdheP521 => 0x22,
            Tep::EcdheCurve25519 => 0x23,
            Tep::EcdheCurve448 => 0x24,
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn from_byte(byte: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.byte() == byte)
    }
}

impl fmt::Display for Tep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A tcpcrypt AEAD algorithm (RFC 8548 section 6, IANA registry ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aead {
    Aes128Gcm,
    Aes256Gcm,
    ChaCha20Poly1305,
}

impl Aead {
    pub const ALL: [Aead; 3] = [Aead::Aes128Gcm, Aead::Aes256Gcm, Aead::ChaCha20Poly1305];

    pub fn name(self) -> &'static str {
        match self {
            Aead::Aes128Gcm => "AEAD_AES_128_GCM",
            Aead::Aes256Gcm => "AEAD_AES_256_GCM",
            Aead::ChaCha20Poly1305 => "AEAD_CHACHA20_POLY1305",
        }
    }

    pub fn short_name(self) -> &'static str {
        match self {
            Aead::Aes128Gcm => "AES-128-GCM",
            Aead::Aes256Gcm => "AES-256-GCM",
            Aead::ChaCha20Poly1305 => "ChaCha20-Poly1305",
        }
    }

    /// The 16-bit algorithm identifier from the tcpcrypt AEAD registry.
    pub fn id(self) -> u16 {
        match self {
            Aead::Aes128Gcm => 0x0001,
            Aead::Aes256Gcm => 0x0002,
            Aead::ChaCha20Poly1305 => 0x0010,
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl fmt::Display for Aead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An encrypted connection's parameters: the one session type the daemon
/// answers with and clients read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub session_id: SessionId,
    pub role: Role,
    pub tep: Tep,
    pub aead: Aead,
    /// Keys came from a cached secret (RFC 8548 section 3.5), not a fresh
    /// key exchange.
    pub resumed: bool,
    /// The peer set the `a` bit in its ENO global suboption.
    pub peer_app_aware: bool,
}

/// The daemon's answer about one connection.
///
/// `R` is the type of the plain-TCP reason: clients read it as a `String`;
/// the daemon keeps its own typed reason until the answer is written, so
/// copying a large table for `list` formats no text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<R = String> {
    Tcpcrypt(Session),
    /// Plain TCP; `reason` is for people and not meant to be parsed.
    Plain {
        reason: R,
    },
    /// Tracked, handshake not finished (and any requested wait ran out).
    Pending,
    /// Not tracked by the daemon.
    Unknown,
}

impl<R> Lookup<R> {
    /// The `state` word the control protocol uses.
    pub fn state_name(&self) -> &'static str {
        match self {
            Lookup::Tcpcrypt(_) => "tcpcrypt",
            Lookup::Plain { .. } => "plain",
            Lookup::Pending => "pending",
            Lookup::Unknown => "unknown",
        }
    }

    pub fn session(&self) -> Option<&Session> {
        match self {
            Lookup::Tcpcrypt(s) => Some(s),
            _ => None,
        }
    }

    /// True once the outcome can no longer change from pending.
    pub fn is_settled(&self) -> bool {
        !matches!(self, Lookup::Pending)
    }

    /// The same answer with its reason converted (for the daemon, typed
    /// reason to text).
    pub fn map_reason<S>(self, f: impl FnOnce(R) -> S) -> Lookup<S> {
        match self {
            Lookup::Tcpcrypt(s) => Lookup::Tcpcrypt(s),
            Lookup::Plain { reason } => Lookup::Plain { reason: f(reason) },
            Lookup::Pending => Lookup::Pending,
            Lookup::Unknown => Lookup::Unknown,
        }
    }

    /// The same answer borrowing its reason, to write it without a copy.
    pub fn by_ref(&self) -> Lookup<&R> {
        match self {
            Lookup::Tcpcrypt(s) => Lookup::Tcpcrypt(*s),
            Lookup::Plain { reason } => Lookup::Plain { reason },
            Lookup::Pending => Lookup::Pending,
            Lookup::Unknown => Lookup::Unknown,
        }
    }
}

/// Where a tracked connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    Handshake,
    Established,
    Closing,
    Closed,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Handshake => "handshake",
            Phase::Established => "established",
            Phase::Closing => "closing",
            Phase::Closed => "closed",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [
            Phase::Handshake,
            Phase::Established,
            Phase::Closing,
            Phase::Closed,
        ]
        .into_iter()
        .find(|p| p.name() == name)
    }
}

/// One entry of the daemon's connection list (`R` as for [`Lookup`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection<R = String> {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub lookup: Lookup<R>,
    pub phase: Phase,
    /// Application bytes, before encryption.
    pub bytes_sent: u64,
    /// Application bytes, after decryption.
    pub bytes_received: u64,
    /// Time since the daemon first saw the connection.
    pub age: Duration,
}

impl<R> Connection<R> {
    /// The same row borrowing its reason, to write it without a copy.
    pub fn by_ref(&self) -> Connection<&R> {
        Connection {
            local: self.local,
            remote: self.remote,
            lookup: self.lookup.by_ref(),
            phase: self.phase,
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
            age: self.age,
        }
    }
}

/// The daemon's answer to `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonVersion {
    /// Free text, e.g. `tcpcryptd 0.1.0`.
    pub daemon: String,
    /// Control protocol versions the daemon speaks.
    pub supported: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_STYLE_ID: &str = "2360583ca04231aa3be00fb3d3e878f7f5a8e610875816bebcb7cecca7780e386f";

    #[test]
    fn session_id_hex_round_trips() {
        let id: SessionId = RFC_STYLE_ID.parse().expect("valid id");
        assert_eq!(id.to_hex(), RFC_STYLE_ID);
        assert_eq!(id.as_bytes()[0], 0x23);
        assert_eq!(id.to_upper_hex(), RFC_STYLE_ID.to_uppercase());
    }

    #[test]
    fn session_id_accepts_upper_case() {
        let upper: SessionId = RFC_STYLE_ID.to_uppercase().parse().expect("valid id");
        assert_eq!(upper.to_hex(), RFC_STYLE_ID);
    }

    #[test]
    fn session_id_rejects_wrong_length() {
        assert_eq!(
            "abcd".parse::<SessionId>(),
            Err(SessionIdError::Length { got: 4 })
        );
    }

    #[test]
    fn session_id_rejects_non_hex() {
        let mut s = RFC_STYLE_ID.to_string();
        s.replace_range(10..11, "g");
        assert_eq!(
            s.parse::<SessionId>(),
            Err(SessionIdError::NotHex {
                position: 10,
                found: 'g'
            })
        );
    }

    #[test]
    fn session_id_rejects_multibyte_characters_without_panicking() {
        let s = "é".repeat(66);
        assert!(matches!(
            s.parse::<SessionId>(),
            Err(SessionIdError::NotHex { position: 0, .. })
        ));
    }

    #[test]
    fn tep_bytes_match_the_iana_registry() {
        // RFC 8548 section 7, TEP identifiers.
        assert_eq!(
            Tep::from_name("TCPCRYPT_ECDHE_P256").map(Tep::byte),
            Some(0x21)
        );
        assert_eq!(
            Tep::from_name("TCPCRYPT_ECDHE_P521").map(Tep::byte),
            Some(0x22)
        );
        assert_eq!(
            Tep::from_name("TCPCRYPT_ECDHE_Curve25519").map(Tep::byte),
            Some(0x23)
        );
        assert_eq!(
            Tep::from_name("TCPCRYPT_ECDHE_Curve448").map(Tep::byte),
            Some(0x24)
        );
        assert_eq!(Tep::from_name("TCPCRYPT_ECDHE_P384"), None);
    }

    #[test]
    fn aead_ids_match_the_iana_registry() {
        // RFC 8548 section 7, AEAD algorithm identifiers.
        assert_eq!(Aead::from_name("AEAD_AES_128_GCM").map(Aead::id), Some(1));
        assert_eq!(Aead::from_name("AEAD_AES_256_GCM").map(Aead::id), Some(2));
        assert_eq!(
            Aead::from_name("AEAD_CHACHA20_POLY1305").map(Aead::id),
            Some(0x10)
        );
        assert_eq!(Aead::from_name("AEAD_AES_128_CCM"), None);
    }

    #[test]
    fn roles_are_opposite() {
        assert_eq!(Role::A.opposite(), Role::B);
        assert_eq!(Role::B.opposite(), Role::A);
        assert_eq!(Role::from_name("a"), None);
    }
}

/// Controls for one socket's connections: the RFC 8548 section 3.5 ones,
/// and the application-aware mode of RFC 8547 section 4.2.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Neither offer nor accept resumption: a fresh key exchange.
    pub no_resumption: bool,
    /// Keep no secret from the session, so no later connection resumes it.
    pub no_cache: bool,
    /// The ENO `a` bit this socket's SYN (or a listener's SYN-ACKs) carries.
    pub app_aware: AppAware,
}

/// Whether a socket tells its peers it is application-aware: the ENO `a`
/// bit (RFC 8547 section 4.2), which the peer's application reads as
/// `peer_app_aware`. The bit changes nothing in the encryption; it lets two
/// applications that both know about tcpcrypt agree to use it (for
/// instance to authenticate the session ID).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AppAware {
    /// Send `a = 0`, as any socket without a policy does.
    #[default]
    Off,
    /// Send `a = 1`.
    On,
    /// Send `a = 1`, and use plain TCP (no tcpcrypt at all) with a peer
    /// that does not send `a = 1`. Only root may ask for this: it turns
    /// encryption off, so the daemon keeps it from other local users.
    Mandatory,
}

impl AppAware {
    /// The control protocol's word for it.
    pub fn word(self) -> &'static str {
        match self {
            AppAware::Off => "off",
            AppAware::On => "on",
            AppAware::Mandatory => "mandatory",
        }
    }

    pub fn from_word(word: &str) -> Option<Self> {
        [AppAware::Off, AppAware::On, AppAware::Mandatory]
            .into_iter()
            .find(|m| m.word() == word)
    }
}

/// Which connections of a local endpoint a policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyScope {
    /// The next connection this host opens from the endpoint; used up by
    /// it, and dropped by the daemon if unused for 120 s.
    Connect,
    /// Every connection a peer opens to the endpoint, until cleared.
    Listen,
}

impl PolicyScope {
    /// The control protocol's word for it.
    pub fn word(self) -> &'static str {
        match self {
            PolicyScope::Connect => "connect",
            PolicyScope::Listen => "listen",
        }
    }

    pub fn from_word(word: &str) -> Option<Self> {
        [PolicyScope::Connect, PolicyScope::Listen]
            .into_iter()
            .find(|s| s.word() == word)
    }
}
