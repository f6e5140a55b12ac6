//! The `tcpcrypt-unique` channel binding: what a login is tied to.
//!
//! Its data is the 33-byte RFC 8548 session ID of the connection. Both ends
//! compute the same value, and a relay in the middle, terminating two
//! tcpcrypt connections, has two different ones; so a proof made over one
//! connection's binding is refused on any other. The role is not part of
//! the SCRAM binding: SCRAM's client proof and server signature are made
//! with different keys and cannot stand in for one another, and the gs2
//! header already says who the client is. The key mode's signature has no
//! such asymmetry and binds the signer's role itself (see `key`).

use tcpcrypt_control::{SESSION_ID_LEN, SessionId};

use crate::AuthError;
use crate::encoding::{b64, unb64};

/// The channel binding type name, as it appears in the gs2 header
/// (`p=tcpcrypt-unique`). Not registered with IANA; named after RFC 5929's
/// `tls-unique`, whose role it plays for tcpcrypt.
pub const BINDING_TYPE: &str = "tcpcrypt-unique";

/// The binding of one connection: its session ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelBinding(SessionId);

impl ChannelBinding {
    pub fn new(session_id: SessionId) -> Self {
        Self(session_id)
    }

    pub fn session_id(&self) -> &SessionId {
        &self.0
    }

    /// The channel binding data (RFC 5056's term): the session ID bytes.
    pub fn data(&self) -> &[u8; SESSION_ID_LEN] {
        self.0.as_bytes()
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
        input.extend_from_slice(b.data());
    }
    b64(&input)
}

/// The session ID a client bound its `c=` attribute to, for the log line of
/// a mismatch: `Some(hex)` when it decodes as header + 33 bytes.
pub fn claimed_session(gs2_header: &str, c_attr: &str) -> Option<String> {
    let bytes = unb64("c", c_attr).ok()?;
    let rest = bytes.strip_prefix(gs2_header.as_bytes())?;
    let id: [u8; SESSION_ID_LEN] = rest.try_into().ok()?;
    Some(SessionId::from_bytes(id).to_upper_hex())
}

/// Checks a client's `c=` attribute against this connection's binding,
/// naming both sessions when they differ.
pub fn check(gs2_header: &str, c_attr: &str, ours: &ChannelBinding) -> Result<(), AuthError> {
    if c_attr == cbind_attribute(gs2_header, Some(ours)) {
        return Ok(());
    }
    Err(AuthError::BindingMismatch {
        client: claimed_session(gs2_header, c_attr).unwrap_or_else(|| "<undecodable>".to_owned()),
        ours: ours.session_id().to_upper_hex(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(fill: u8) -> ChannelBinding {
        ChannelBinding::new(SessionId::from_bytes([fill; SESSION_ID_LEN]))
    }

    #[test]
    fn binding_input_is_header_then_session_id() {
        let c = cbind_attribute(&gs2_header(), Some(&sid(0xab)));
        let decoded = unb64("c", &c).expect("base64");
        assert_eq!(&decoded[..19], b"p=tcpcrypt-unique,,");
        assert_eq!(&decoded[19..], &[0xab; SESSION_ID_LEN]);
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
                assert_eq!(client, "01".repeat(SESSION_ID_LEN));
                assert_eq!(ours, "02".repeat(SESSION_ID_LEN));
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
    }

    #[test]
    fn sessions_differing_in_one_byte_do_not_bind_alike() {
        let h = gs2_header();
        let mut bytes = [7u8; SESSION_ID_LEN];
        let a = ChannelBinding::new(SessionId::from_bytes(bytes));
        bytes[SESSION_ID_LEN - 1] ^= 1;
        let b = ChannelBinding::new(SessionId::from_bytes(bytes));
        assert!(check(&h, &cbind_attribute(&h, Some(&a)), &b).is_err());
    }
}
