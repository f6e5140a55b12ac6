//! The environment variables a tcpcrypt connection exports, and their values.
//!
//! Names and formats are the module's public contract with web applications:
//! `TCP_CRYPT_SESSID` is upper-case hex without separators, as the original
//! mod_tcpcrypt wrote it, so existing applications keep working.

use tcpcrypt::{Role, Session};

use crate::lookup::Outcome;

/// The RFC 8548 session ID, upper-case hex (66 characters).
pub const SESSID: &str = "TCP_CRYPT_SESSID";
/// This server's role in the handshake, `A` or `B`.
pub const ROLE: &str = "TCP_CRYPT_ROLE";
/// The negotiated key-exchange protocol by its RFC 8548 name.
pub const TEP: &str = "TCP_CRYPT_TEP";
/// The negotiated AEAD algorithm by its RFC 8548 name.
pub const AEAD: &str = "TCP_CRYPT_AEAD";
/// `1` if the session was resumed from a cached secret, else `0`.
pub const RESUMED: &str = "TCP_CRYPT_RESUMED";

/// Every variable the module sets, in the order it sets them.
pub const ALL: [&str; 5] = [SESSID, ROLE, TEP, AEAD, RESUMED];

/// The value of one variable for a session; `None` for a name that is not
/// one of [`ALL`].
pub fn value(session: &Session, name: &str) -> Option<String> {
    let value = match name {
        SESSID => session.session_id.to_upper_hex(),
        ROLE => role_letter(session.role).to_owned(),
        TEP => session.tep.name().to_owned(),
        AEAD => session.aead.name().to_owned(),
        RESUMED => if session.resumed { "1" } else { "0" }.to_owned(),
        _ => return None,
    };
    Some(value)
}

/// All variables of a session as (name, value) pairs.
pub fn all(session: &Session) -> Vec<(&'static str, String)> {
    ALL.iter()
        .filter_map(|&name| value(session, name).map(|v| (name, v)))
        .collect()
}

/// The variables a connection with this lookup outcome exports: all of them
/// for a tcpcrypt session, none at all otherwise (never empty values).
pub fn for_outcome(outcome: &Outcome) -> Vec<(&'static str, String)> {
    outcome.session().map(all).unwrap_or_default()
}

fn role_letter(role: Role) -> &'static str {
    match role {
        Role::A => "A",
        Role::B => "B",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcpcrypt::{Aead, SessionId, Tep};

    /// The example session ID of docs/control-protocol.md.
    const DOC_ID_LOWER: &str = "2360583ca04231aa3be00fb3d3e878f7f5a8e610875816bebcb7cecca7780e386f";
    const DOC_ID_UPPER: &str = "2360583CA04231AA3BE00FB3D3E878F7F5A8E610875816BEBCB7CECCA7780E386F";

    fn session(resumed: bool) -> Session {
        let id: Result<SessionId, _> = DOC_ID_LOWER.parse();
        Session {
            session_id: id.unwrap_or_else(|e| panic!("doc example id must parse: {e}")),
            role: Role::B,
            tep: Tep::EcdheCurve25519,
            aead: Aead::Aes128Gcm,
            resumed,
            peer_app_aware: false,
        }
    }

    #[test]
    fn session_id_is_upper_case_hex_without_separators() {
        assert_eq!(
            value(&session(false), SESSID).as_deref(),
            Some(DOC_ID_UPPER)
        );
    }

    #[test]
    fn session_id_of_all_zero_and_all_ff_bytes() {
        let mut s = session(false);
        s.session_id = SessionId::from_bytes([0; 33]);
        assert_eq!(value(&s, SESSID), Some("00".repeat(33)));
        s.session_id = SessionId::from_bytes([0xff; 33]);
        assert_eq!(value(&s, SESSID), Some("FF".repeat(33)));
    }

    #[test]
    fn role_is_the_letter_of_this_hosts_role() {
        let mut s = session(false);
        assert_eq!(value(&s, ROLE).as_deref(), Some("B"));
        s.role = Role::A;
        assert_eq!(value(&s, ROLE).as_deref(), Some("A"));
    }

    #[test]
    fn tep_and_aead_use_the_rfc_names() {
        let mut s = session(false);
        assert_eq!(value(&s, TEP).as_deref(), Some("TCPCRYPT_ECDHE_Curve25519"));
        assert_eq!(value(&s, AEAD).as_deref(), Some("AEAD_AES_128_GCM"));
        s.tep = Tep::EcdheP521;
        s.aead = Aead::ChaCha20Poly1305;
        assert_eq!(value(&s, TEP).as_deref(), Some("TCPCRYPT_ECDHE_P521"));
        assert_eq!(value(&s, AEAD).as_deref(), Some("AEAD_CHACHA20_POLY1305"));
    }

    #[test]
    fn resumed_is_zero_or_one() {
        assert_eq!(value(&session(false), RESUMED).as_deref(), Some("0"));
        assert_eq!(value(&session(true), RESUMED).as_deref(), Some("1"));
    }

    #[test]
    fn unknown_names_have_no_value() {
        assert_eq!(value(&session(false), "TCP_CRYPT_PEER"), None);
        assert_eq!(value(&session(false), "tcp_crypt_sessid"), None);
    }

    #[test]
    fn tcpcrypt_outcome_exports_every_variable() {
        let pairs = for_outcome(&Outcome::Tcpcrypt(session(false)));
        assert_eq!(pairs, all(&session(false)));
        assert!(pairs.contains(&(SESSID, DOC_ID_UPPER.to_owned())));
    }

    #[test]
    fn plain_or_failed_outcome_exports_nothing() {
        assert!(for_outcome(&Outcome::NoSession).is_empty());
        assert!(for_outcome(&Outcome::Failed).is_empty());
    }

    #[test]
    fn all_lists_every_variable_once_and_none_is_empty() {
        let pairs = all(&session(true));
        let names: Vec<&str> = pairs.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ALL);
        assert!(pairs.iter().all(|(_, v)| !v.is_empty()));
    }
}
