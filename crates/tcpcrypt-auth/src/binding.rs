//! The `tcpcrypt-unique` channel binding: what a login is tied to.
//!
//! Its data is the SCRAM client's tcpcrypt role letter (`A` or `B`, as the
//! client's own tcpcryptd reports it; the server uses the opposite of its
//! own role) followed by the 33-byte RFC 8548 session ID of the
//! connection. Both ends compute the same bytes, and a relay in the middle,
//! terminating two tcpcrypt connections, has two different session IDs; so
//! a proof made over one connection's binding is refused on any other.
//!
//! The session ID alone would already defeat the relay. The role is bound
//! too because RFC 8547 (section 5.1) asks applications to authenticate
//! with both, and because it makes the binding a statement of one side:
//! SCRAM's client proof and server signature are made with different keys
//! and cannot stand in for one another, but a deployment that also runs a
//! login in the other direction on the same connection (the server as SCRAM
//! client) gets a different binding, so no message of one exchange fits the
//! other.

use tcpcrypt_control::{Role, SESSION_ID_LEN, SessionId};

use crate::AuthError;
use crate::encoding::{b64, unb64};

/// The channel binding type name, as it appears in the gs2 header
/// (`p=tcpcrypt-unique`). Not registered with IANA; named after RFC 5929's
/// `tls-unique`, whose role it plays for tcpcrypt.
pub const BINDING_TYPE: &str = "tcpcrypt-unique";

/// Length of the binding data: role letter and session ID.
pub const BINDING_LEN: usize = 1 + SESSION_ID_LEN;

/// The binding of one connection: the SCRAM client's role and the session
/// ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelBinding {
    client_role: Role,
    session_id: SessionId,
}

impl ChannelBinding {
    /// `client_role` is the tcpcrypt role of the end that logs in: on the
    /// client its own role, on the server the opposite of its own.
    pub fn new(client_role: Role, session_id: SessionId) -> Self {
        Self {
            client_role,
            session_id,
        }
    }

    pub fn session_id(&self) -> &SessionId {
        &self.session_id
    }

    /// The channel binding data (RFC 5056's term).
    pub fn data(&self) -> [u8; BINDING_LEN] {
        let mut out = [0u8; BINDING_LEN];
        out[0] = self.client_role.name().as_bytes()[0];
        out[1..].copy_from_slice(self.session_id.as_bytes());
        out
    }

    /// How a log line names this binding: role and session ID in hex.
    fn describe(&self) -> String {
        format!(
            "{} (client role {})",
            self.session_id.to_upper_hex(),
            self.client_role
        )
    }
}

/// The gs2 header a binding client sends (no authzid).
pub fn gs2_header() -> String {
    format!("p={BINDING_TYPE},,")
}

/// The `c=` attribute value of SCRAM's final client message: base64 of the
/// gs2 header followed by the binding data (none without a binding).
pub fn cbind_attribute(gs2_header: &str, binding: Option<&ChannelBinding>) -> String {
    let mut input = gs2_header.as_bytes().to_vec();
    if let Some(b) = binding {
        input.extend_from_slice(&b.data());
    }
    b64(&input)
}

/// The binding a client's `c=` attribute claims, for the log line of a
/// mismatch: `Some` when it decodes as header, role letter and 33 bytes.
pub fn claimed(gs2_header: &str, c_attr: &str) -> Option<String> {
    let bytes = unb64("c", c_attr).ok()?;
    let rest = bytes.strip_prefix(gs2_header.as_bytes())?;
    let (&role, id) = rest.split_first()?;
    let role = Role::from_name(std::str::from_utf8(&[role]).ok()?)?;
    let id: [u8; SESSION_ID_LEN] = id.try_into().ok()?;
    Some(ChannelBinding::new(role, SessionId::from_bytes(id)).describe())
}

/// Checks a client's `c=` attribute against this connection's binding,
/// naming both sessions when they differ.
pub fn check(gs2_header: &str, c_attr: &str, ours: &ChannelBinding) -> Result<(), AuthError> {
    if c_attr == cbind_attribute(gs2_header, Some(ours)) {
        return Ok(());
    }
    Err(AuthError::BindingMismatch {
        client: claimed(gs2_header, c_attr).unwrap_or_else(|| "<undecodable>".to_owned()),
        ours: ours.describe(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(fill: u8) -> ChannelBinding {
        ChannelBinding::new(Role::A, SessionId::from_bytes([fill; SESSION_ID_LEN]))
    }

    #[test]
    fn binding_input_is_header_then_role_then_session_id() {
        let c = cbind_attribute(&gs2_header(), Some(&sid(0xab)));
        let decoded = unb64("c", &c).expect("base64");
        assert_eq!(&decoded[..19], b"p=tcpcrypt-unique,,");
        assert_eq!(decoded[19], b'A');
        assert_eq!(&decoded[20..], &[0xab; SESSION_ID_LEN]);
    }

    #[test]
    fn without_binding_the_attribute_is_the_header_alone() {
        // "n,," is "biws" in base64, as in RFC 5802's examples.
        assert_eq!(cbind_attribute("n,,", None), "biws");
    }

    #[test]
    fn same_session_passes_and_another_session_is_a_named_mismatch() {
        let h = gs2_header();
        let c = cbind_attribute(&h, Some(&sid(1)));
        assert_eq!(check(&h, &c, &sid(1)), Ok(()));
        match check(&h, &c, &sid(2)) {
            Err(AuthError::BindingMismatch { client, ours }) => {
                assert!(client.starts_with(&"01".repeat(SESSION_ID_LEN)), "{client}");
                assert!(ours.starts_with(&"02".repeat(SESSION_ID_LEN)), "{ours}");
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
    }

    #[test]
    fn the_same_session_under_the_other_role_does_not_bind_alike() {
        let h = gs2_header();
        let id = SessionId::from_bytes([3; SESSION_ID_LEN]);
        let as_a = ChannelBinding::new(Role::A, id);
        let as_b = ChannelBinding::new(Role::B, id);
        assert!(matches!(
            check(&h, &cbind_attribute(&h, Some(&as_a)), &as_b),
            Err(AuthError::BindingMismatch { .. })
        ));
    }

    #[test]
    fn sessions_differing_in_one_byte_do_not_bind_alike() {
        let h = gs2_header();
        let mut bytes = [7u8; SESSION_ID_LEN];
        let a = ChannelBinding::new(Role::A, SessionId::from_bytes(bytes));
        bytes[SESSION_ID_LEN - 1] ^= 1;
        let b = ChannelBinding::new(Role::A, SessionId::from_bytes(bytes));
        assert!(check(&h, &cbind_attribute(&h, Some(&a)), &b).is_err());
    }
}
