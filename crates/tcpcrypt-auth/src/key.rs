//! The key mode: a client proves it holds an Ed25519 key by signing a
//! fixed context, its own role and the session ID of the connection; the
//! server looks the public key up in an `authorized_keys`-style file.
//!
//! The role is signed because, unlike SCRAM's two directional proofs, a
//! signature reads the same in both directions: if both ends of one
//! connection ever sign with the same key, neither end's signature can be
//! reflected back as the other's.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair as _};
use tcpcrypt_control::{Role, SessionId};

use crate::AuthError;
use crate::encoding::{b64, unb64, unb64_exact};
use crate::http::KEY_SCHEME;

pub const PUBLIC_KEY_LEN: usize = 32;
pub const SIGNATURE_LEN: usize = 64;
/// What every key login signs first, so the signature means nothing in
/// any other protocol that might use the same key.
pub const CONTEXT: &[u8] = b"tcpcrypt channel-bound HTTP key login, version 1\0";
/// The word in front of a public key in the authorized-keys file.
pub const KEY_TYPE: &str = "tcpcrypt-ed25519";
const PRIVATE_TYPE: &str = "tcpcrypt-ed25519-private";
/// Longest authorized-keys file a server reads.
pub const MAX_KEYS_FILE: usize = 1 << 20;

/// The bytes a client signs: context, the signer's role letter, session ID.
pub fn signed_message(signer: Role, session: &SessionId) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + 1 + session.as_bytes().len());
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(signer.name().as_bytes());
    m.extend_from_slice(session.as_bytes());
    m
}

/// What a key login carries in its `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLogin {
    pub public_key: [u8; PUBLIC_KEY_LEN],
    pub signature: [u8; SIGNATURE_LEN],
    /// The session ID (upper-case hex) the client says it signed: only for
    /// naming a mismatch in the log; verification uses the server's own.
    pub claimed_session: Option<String>,
}

impl KeyLogin {
    /// The `Authorization` header value.
    pub fn authorization(&self) -> String {
        let session = self
            .claimed_session
            .as_deref()
            .map(|s| format!(", session={s}"))
            .unwrap_or_default();
        format!(
            "{KEY_SCHEME} key=\"{}\", sig=\"{}\"{session}",
            b64(&self.public_key),
            b64(&self.signature)
        )
    }
}

/// A client's private key.
pub struct PrivateKey(Ed25519KeyPair);

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({})", b64(self.public_key().as_slice()))
    }
}

impl PrivateKey {
    /// A new key from the system's random generator, and the text of its
    /// key file (keep it private: mode 0600).
    pub fn generate() -> Result<(Self, String), crate::random::RandomError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| crate::random::RandomError)?;
        let text = format!("{PRIVATE_TYPE} {}\n", b64(pkcs8.as_ref()));
        let pair =
            Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| crate::random::RandomError)?;
        Ok((Self(pair), text))
    }

    /// Reads a key file written by [`PrivateKey::generate`].
    pub fn from_file_text(text: &str) -> Result<Self, AuthError> {
        const WHAT: &str = "private key file";
        let line = text.trim();
        let b64_text = line
            .strip_prefix(PRIVATE_TYPE)
            .map(str::trim)
            .ok_or_else(|| {
                AuthError::malformed(WHAT, format!("does not start with {PRIVATE_TYPE}"))
            })?;
        let der = unb64(WHAT, b64_text)?;
        Ed25519KeyPair::from_pkcs8(&der)
            .map(Self)
            .map_err(|_| AuthError::malformed(WHAT, "not an Ed25519 PKCS#8 key"))
    }

    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        let mut out = [0u8; PUBLIC_KEY_LEN];
        out.copy_from_slice(self.0.public_key().as_ref());
        out
    }

    /// The line for the server's authorized-keys file.
    pub fn authorized_line(&self, name: &str) -> String {
        format!("{KEY_TYPE} {} {name}", b64(&self.public_key()))
    }

    /// Signs a login on the connection where this host has role `own_role`
    /// and session ID `session`.
    pub fn sign_login(&self, own_role: Role, session: &SessionId) -> KeyLogin {
        let sig = self.0.sign(&signed_message(own_role, session));
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(sig.as_ref());
        KeyLogin {
            public_key: self.public_key(),
            signature,
            claimed_session: Some(session.to_upper_hex()),
        }
    }
}

/// One line of the authorized-keys file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizedKey {
    pub public_key: [u8; PUBLIC_KEY_LEN],
    pub name: String,
}

/// A user name as Apache's REMOTE_USER will carry it: visible ASCII
/// without `:` (the verifier file's separator).
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// Finds `key` in an authorized-keys file (`tcpcrypt-ed25519 BASE64 NAME`
/// per line; `#` comments and blank lines skipped). Malformed lines are
/// skipped and counted, so one bad line does not lock everyone out.
pub fn find_key(text: &str, key: &[u8; PUBLIC_KEY_LEN]) -> (Option<String>, usize) {
    let mut bad = 0;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_authorized_line(line) {
            Ok(k) if &k.public_key == key => return (Some(k.name), bad),
            Ok(_) => {}
            Err(_) => bad += 1,
        }
    }
    (None, bad)
}

pub fn parse_authorized_line(line: &str) -> Result<AuthorizedKey, AuthError> {
    const WHAT: &str = "authorized-keys line";
    let mut words = line.split_whitespace();
    if words.next() != Some(KEY_TYPE) {
        return Err(AuthError::malformed(
            WHAT,
            format!("does not start with {KEY_TYPE}"),
        ));
    }
    let public_key = unb64_exact(WHAT, words.next().unwrap_or_default())?;
    let name = words.next().unwrap_or_default();
    if !valid_user_name(name) || words.next().is_some() {
        return Err(AuthError::malformed(
            WHAT,
            "expected one user name after the key",
        ));
    }
    Ok(AuthorizedKey {
        public_key,
        name: name.to_owned(),
    })
}

/// Checks a key login on the server, whose own role and session ID on this
/// connection are `server_role` and `session`.
pub fn verify(login: &KeyLogin, server_role: Role, session: &SessionId) -> Result<(), AuthError> {
    let ours = session.to_upper_hex();
    if let Some(claimed) = &login.claimed_session
        && !claimed.eq_ignore_ascii_case(&ours)
    {
        return Err(AuthError::BindingMismatch {
            client: claimed.clone(),
            ours,
        });
    }
    signature::UnparsedPublicKey::new(&signature::ED25519, &login.public_key)
        .verify(
            &signed_message(server_role.opposite(), session),
            &login.signature,
        )
        .map_err(|_| AuthError::Rejected("bad signature"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcpcrypt_control::SESSION_ID_LEN;

    fn sid(fill: u8) -> SessionId {
        SessionId::from_bytes([fill; SESSION_ID_LEN])
    }

    #[test]
    fn signed_login_verifies_on_the_same_session_only() {
        let (key, _) = PrivateKey::generate().expect("key");
        let login = key.sign_login(Role::A, &sid(1));
        assert_eq!(verify(&login, Role::B, &sid(1)), Ok(()));
        assert!(matches!(
            verify(&login, Role::B, &sid(2)),
            Err(AuthError::BindingMismatch { .. })
        ));
        // A relay that also lies about the session it signed.
        let mut lying = login.clone();
        lying.claimed_session = Some(sid(2).to_upper_hex());
        assert_eq!(
            verify(&lying, Role::B, &sid(2)),
            Err(AuthError::Rejected("bad signature"))
        );
    }

    #[test]
    fn signature_of_one_role_does_not_pass_for_the_other() {
        let (key, _) = PrivateKey::generate().expect("key");
        // Signed as B, checked by a server that is B too (so expects A).
        let login = key.sign_login(Role::B, &sid(1));
        assert_eq!(
            verify(&login, Role::B, &sid(1)),
            Err(AuthError::Rejected("bad signature"))
        );
    }

    #[test]
    fn key_file_and_authorized_line_round_trip() {
        let (key, text) = PrivateKey::generate().expect("key");
        let again = PrivateKey::from_file_text(&text).expect("read back");
        assert_eq!(again.public_key(), key.public_key());
        let file = format!("# team\n\nbogus line\n{}\n", key.authorized_line("alice"));
        assert_eq!(
            find_key(&file, &key.public_key()),
            (Some("alice".to_owned()), 1)
        );
        let (other, _) = PrivateKey::generate().expect("key");
        assert_eq!(find_key(&file, &other.public_key()).0, None);
    }

    #[test]
    fn login_header_round_trips_through_the_parser() {
        let (key, _) = PrivateKey::generate().expect("key");
        let login = key.sign_login(Role::A, &sid(9));
        assert_eq!(
            crate::http::parse_authorization(&login.authorization()),
            Ok(Some(crate::http::Credentials::Key(login)))
        );
    }
}
