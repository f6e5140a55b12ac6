//! Logging in to a server with `AuthType tcpcrypt` (mod_tcpcrypt), for any
//! HTTP client: these types make and check the header values; the caller
//! sends the requests on its own connection. Feature `auth`.
//!
//! Password mode, on one keep-alive connection whose [`Session`] the caller
//! looked up (e.g. [`crate::Client::lookup_fd_wait`]):
//!
//! ```no_run
//! # fn send(_: &str) -> (u16, Vec<(String, String)>) { unimplemented!() }
//! # let session: tcpcrypt::Session = unimplemented!();
//! use tcpcrypt::login::PasswordLogin;
//! let (login, authorization) = PasswordLogin::start(&session, "alice")?;
//! let (_, headers) = send(&authorization); // 401 with WWW-Authenticate
//! let challenges = headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("www-authenticate"));
//! let (proof, authorization) = login.answer(challenges.map(|(_, v)| v.as_str()), "secret")?;
//! let (_, headers) = send(&authorization); // 200 with Authentication-Info
//! let info = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("authentication-info"));
//! proof.verify(info.map(|(_, v)| v.as_str()))?; // the server knew the verifier
//! # Ok::<(), tcpcrypt::login::LoginError>(())
//! ```

use std::ops::RangeInclusive;

pub use tcpcrypt_auth::AuthError;
use tcpcrypt_auth::http;
use tcpcrypt_auth::key::PrivateKey;
use tcpcrypt_auth::scram::{self, Client as ScramClient, ClientAwaitingServer};
use tcpcrypt_auth::{ChannelBinding, random};

use tcpcrypt_control::Session;

/// PBKDF2 counts a client accepts from a server by default.
pub const ITERATIONS: RangeInclusive<u32> = scram::MIN_ITERATIONS..=scram::MAX_ITERATIONS;

/// Why a login could not go on.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Random(#[from] random::RandomError),
    /// The 401 carried no SCRAM continuation (`sid` and `data`).
    #[error("the server's answer carries no SCRAM-SHA-256 challenge to continue")]
    NoChallenge,
    /// The final answer had no `Authentication-Info`, so the server did
    /// not prove itself.
    #[error(
        "the server sent no Authentication-Info, so it did not prove that it knows the verifier"
    )]
    NoServerProof,
    /// `Authentication-Info` names another exchange.
    #[error("the server's Authentication-Info belongs to another exchange")]
    WrongExchange,
}

/// A password login after its first message.
#[derive(Debug)]
pub struct PasswordLogin {
    scram: ScramClient,
}

/// A password login after the proof, waiting for the server's.
#[derive(Debug)]
pub struct PasswordProof {
    awaiting: ClientAwaitingServer,
    sid: String,
}

impl PasswordLogin {
    /// Starts a login as `user` on the connection whose session (as this
    /// host's tcpcryptd reports it) is `session`. Returns the
    /// `Authorization` value of the first request.
    pub fn start(session: &Session, user: &str) -> Result<(Self, String), LoginError> {
        let nonce = random::nonce()?;
        let (scram, first) = ScramClient::start(
            user,
            &nonce,
            Some(ChannelBinding::new(session.role, session.session_id)),
        )?;
        Ok((
            Self { scram },
            http::scram_first_authorization(None, &first),
        ))
    }

    /// Answers the server's 401: `www_authenticate` are its
    /// `WWW-Authenticate` values. Returns the `Authorization` value of the
    /// second request, which carries the proof.
    pub fn answer<'a>(
        self,
        www_authenticate: impl IntoIterator<Item = &'a str>,
        password: &str,
    ) -> Result<(PasswordProof, String), LoginError> {
        let mut found = None;
        for value in www_authenticate {
            if let Some(c) = http::parse_scram_continue(value)? {
                found = Some(c);
                break;
            }
        }
        let (sid, server_first) = found.ok_or(LoginError::NoChallenge)?;
        let (awaiting, last) = self.scram.answer(&server_first, password, ITERATIONS)?;
        Ok((
            PasswordProof {
                awaiting,
                sid: sid.clone(),
            },
            http::scram_final_authorization(&sid, &last),
        ))
    }
}

impl PasswordProof {
    /// Checks the server's `Authentication-Info` on the success response.
    /// Until this passes, treat the response as coming from an impostor.
    pub fn verify(self, authentication_info: Option<&str>) -> Result<(), LoginError> {
        let value = authentication_info.ok_or(LoginError::NoServerProof)?;
        let (sid, server_final) = http::parse_scram_success(value)?;
        if sid != self.sid {
            return Err(LoginError::WrongExchange);
        }
        self.awaiting.verify(&server_final)?;
        Ok(())
    }
}

/// The `Authorization` value of a key login on the connection with
/// `session`, signed with the key in `key_file_text` (from `tcpcrypt
/// keygen`).
pub fn key_authorization(session: &Session, key_file_text: &str) -> Result<String, LoginError> {
    let key = PrivateKey::from_file_text(key_file_text)?;
    Ok(key
        .sign_login(session.role, &session.session_id)
        .authorization())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;
    use tcpcrypt_auth::scram::{ClientFirst, Credentials, Server};
    use tcpcrypt_control::{Aead, Role, SESSION_ID_LEN, SessionId, Tep};

    fn session(role: Role) -> Session {
        Session {
            session_id: SessionId::from_bytes([4; SESSION_ID_LEN]),
            role,
            tep: Tep::from_name("TCPCRYPT_ECDHE_Curve25519").unwrap_or_else(|| panic!("tep")),
            aead: Aead::from_name("AEAD_AES_128_GCM").unwrap_or_else(|| panic!("aead")),
            resumed: false,
            peer_app_aware: false,
        }
    }

    /// The server side of one exchange, as mod_tcpcrypt runs it: returns
    /// the 401's WWW-Authenticate and a closure answering the proof.
    fn serve(first_header: &str) -> (String, impl FnOnce(&str) -> Result<String, AuthError>) {
        let Ok(Some(http::Credentials::ScramFirst { client_first })) =
            http::parse_authorization(first_header)
        else {
            panic!("not a first message: {first_header}")
        };
        let first = ClientFirst::parse(&client_first, true).unwrap_or_else(|e| panic!("{e}"));
        let creds = Credentials::derive(
            "pw",
            b"salty",
            NonZeroU32::new(4096).unwrap_or(NonZeroU32::MIN),
        );
        let (server, server_first) =
            Server::start(first, Some(creds), &[5; 32], "srv").unwrap_or_else(|e| panic!("{e}"));
        let challenge = http::scram_continue("s1", &server_first);
        let server_session = session(Role::B);
        (challenge, move |proof_header: &str| {
            let Ok(Some(http::Credentials::ScramFinal { client_final, .. })) =
                http::parse_authorization(proof_header)
            else {
                panic!("not a final message")
            };
            let binding = ChannelBinding::new(Role::A, server_session.session_id);
            server
                .finish(&client_final, Some(&binding))
                .map(|v| http::scram_success("s1", &v.server_final))
        })
    }

    #[test]
    fn a_login_completes_and_checks_the_server() {
        let (login, first) = PasswordLogin::start(&session(Role::A), "alice").expect("start");
        let (challenge, finish) = serve(&first);
        let other = http::scram_challenge("realm");
        let (proof, last) = login
            .answer([other.as_str(), challenge.as_str()], "pw")
            .expect("answer");
        let info = finish(&last).expect("server accepts");
        assert!(proof.verify(Some(&info)).is_ok());
    }

    #[test]
    fn a_missing_or_foreign_server_proof_is_refused() {
        for info in [None, Some("sid=other, data=\"dj1BQUFB\"")] {
            let (login, first) = PasswordLogin::start(&session(Role::A), "alice").expect("start");
            let (challenge, finish) = serve(&first);
            let (proof, last) = login.answer([challenge.as_str()], "pw").expect("answer");
            assert!(finish(&last).is_ok());
            assert!(matches!(
                proof.verify(info),
                Err(LoginError::NoServerProof | LoginError::WrongExchange)
            ));
        }
    }

    #[test]
    fn a_401_without_a_continuation_is_no_challenge() {
        let (login, _) = PasswordLogin::start(&session(Role::A), "alice").expect("start");
        let plain = http::scram_challenge("realm");
        assert!(matches!(
            login.answer([plain.as_str()], "pw"),
            Err(LoginError::NoChallenge)
        ));
    }

    #[test]
    fn a_client_that_is_role_b_binds_differently() {
        // The server expects the client to be A (it is B itself).
        let (login, first) = PasswordLogin::start(&session(Role::B), "alice").expect("start");
        let (challenge, finish) = serve(&first);
        let (_, last) = login.answer([challenge.as_str()], "pw").expect("answer");
        assert!(matches!(
            finish(&last),
            Err(AuthError::BindingMismatch { .. })
        ));
    }
}
