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
