//! SCRAM-SHA-256 (RFC 5802 with RFC 7677's hash), both sides, as state
//! machines over the SCRAM message texts. HTTP framing is in `http`.
//!
//! Passwords are used as their UTF-8 bytes; SASLprep is not applied (the
//! same program, `tcpcrypt`, makes the verifier and the proof, so both sides
//! agree), which matters only for passwords with characters SASLprep maps.

use std::num::NonZeroU32;
use std::ops::RangeInclusive;

use aws_lc_rs::{constant_time, digest, hmac, pbkdf2};

use crate::AuthError;
use crate::binding::{self, BINDING_TYPE, ChannelBinding};
use crate::encoding::{b64, unb64, unb64_exact};

/// The HTTP authentication scheme and SASL mechanism name.
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// RFC 7677's floor.
pub const MIN_ITERATIONS: u32 = 4096;
/// What `tcpcrypt passwd` uses unless told otherwise: OWASP's 2023 advice
/// for PBKDF2-HMAC-SHA256. Only the client and `passwd` pay it; the server
/// stores the derived keys and never runs PBKDF2.
pub const DEFAULT_ITERATIONS: u32 = 600_000;
/// A client refuses counts above this, so a hostile server cannot make it
/// spin for minutes.
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// Longest user name, nonce, salt text or proof the parsers accept.
const MAX_FIELD: usize = 512;

const KEY_LEN: usize = 32;
type Key = [u8; KEY_LEN];

/// What the server keeps per user: never the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub iterations: NonZeroU32,
    pub salt: Vec<u8>,
    pub stored_key: Key,
    pub server_key: Key,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("iterations", &self.iterations)
            .field("salt", &b64(&self.salt))
            .finish_non_exhaustive()
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Key {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

fn sha256(data: &[u8]) -> Key {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(d.as_ref());
    out
}

fn xor(a: &Key, b: &Key) -> Key {
    std::array::from_fn(|i| a[i] ^ b[i])
}

fn salted_password(password: &str, salt: &[u8], iterations: NonZeroU32) -> Key {
    let mut out = [0u8; KEY_LEN];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password.as_bytes(),
        &mut out,
    );
    out
}

fn client_key(salted: &Key) -> Key {
    hmac(salted, b"Client Key")
}

impl Credentials {
    /// Derives the verifier of `password` (what `tcpcrypt passwd` stores).
    pub fn derive(password: &str, salt: &[u8], iterations: NonZeroU32) -> Self {
        let salted = salted_password(password, salt, iterations);
        Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key(&salted)),
            server_key: hmac(&salted, b"Server Key"),
        }
    }

    /// Stand-in credentials for a user that does not exist, the same on
    /// every request for that name, so the server's first answer does not
    /// tell who has an account. No proof matches them (the keys are not
    /// derived from any password).
    fn decoy(secret: &[u8; 32], user: &str) -> Self {
        let salt = hmac(secret, format!("salt\0{user}").as_bytes());
        Self {
            iterations: NonZeroU32::new(DEFAULT_ITERATIONS).unwrap_or(NonZeroU32::MIN),
            salt: salt[..16].to_vec(),
            stored_key: hmac(secret, format!("stored\0{user}").as_bytes()),
            server_key: hmac(secret, format!("server\0{user}").as_bytes()),
        }
    }
}

/// Splits `a=value` and checks the attribute letter.
fn attr<'a>(part: Option<&'a str>, name: char, what: &'static str) -> Result<&'a str, AuthError> {
    let part = part.ok_or_else(|| AuthError::malformed(what, format!("missing {name}=")))?;
    let mut chars = part.chars();
    if chars.next() != Some(name) || chars.next() != Some('=') {
        return Err(AuthError::malformed(
            what,
            format!("expected {name}=, found {:?}", truncate(part)),
        ));
    }
    let value = &part[2..];
    if value.len() > MAX_FIELD {
        return Err(AuthError::malformed(
            what,
            format!("{name}= longer than {MAX_FIELD} bytes"),
        ));
    }
    Ok(value)
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

/// A nonce is printable ASCII without commas.
fn check_nonce(nonce: &str, what: &'static str) -> Result<(), AuthError> {
    if nonce.is_empty()
        || !nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
    {
        return Err(AuthError::malformed(
            what,
            "nonce must be printable ASCII without commas",
        ));
    }
    Ok(())
}

/// SCRAM's escaping of user names: `=` and `,` as `=3D` and `=2C`.
fn encode_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

fn decode_name(text: &str) -> Result<String, AuthError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let code = rest.get(at..at + 3);
        match code {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(AuthError::malformed("user name", "bad =XX escape")),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    if out.is_empty() {
        return Err(AuthError::malformed("user name", "empty"));
    }
    Ok(out)
}

/// What the client is bound to, and how it says so.
fn gs2_for(binding: Option<&ChannelBinding>) -> String {
    match binding {
        Some(_) => binding::gs2_header(),
        None => "n,,".to_owned(),
    }
}

// ---------------------------------------------------------------- client

/// A client that has sent its first message.
#[derive(Debug)]
pub struct Client {
    gs2: String,
    first_bare: String,
    nonce: String,
    binding: Option<ChannelBinding>,
}

/// A client that has sent its proof and waits for the server's signature.
#[derive(Debug)]
pub struct ClientAwaitingServer {
    server_signature: Key,
}

impl Client {
    /// Starts an exchange for `user` with the client nonce `nonce` (see
    /// [`crate::random::nonce`]). `binding` is `None` only for exchanges
    /// outside tcpcrypt (RFC test vectors); servers here require one.
    /// Returns the client-first message.
    pub fn start(
        user: &str,
        nonce: &str,
        binding: Option<ChannelBinding>,
    ) -> Result<(Self, String), AuthError> {
        if user.is_empty() || user.len() > MAX_FIELD {
            return Err(AuthError::malformed("user name", "empty or too long"));
        }
        check_nonce(nonce, "client nonce")?;
        let gs2 = gs2_for(binding.as_ref());
        let first_bare = format!("n={},r={nonce}", encode_name(user));
        let message = format!("{gs2}{first_bare}");
        Ok((
            Self {
                gs2,
                first_bare,
                nonce: nonce.to_owned(),
                binding,
            },
            message,
        ))
    }

    /// Answers the server-first message with the proof (the client-final
    /// message). `iterations` is the range of PBKDF2 counts the client
    /// accepts from the server.
    pub fn answer(
        self,
        server_first: &str,
        password: &str,
        iterations: RangeInclusive<u32>,
    ) -> Result<(ClientAwaitingServer, String), AuthError> {
        const WHAT: &str = "server-first message";
        if let Some(e) = server_first.strip_prefix("e=") {
            return Err(AuthError::ServerError(truncate(e)));
        }
        let mut parts = server_first.split(',');
        let nonce = attr(parts.next(), 'r', WHAT)?;
        check_nonce(nonce, WHAT)?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(AuthError::NonceMismatch);
        }
        let salt = unb64(WHAT, attr(parts.next(), 's', WHAT)?)?;
        if salt.is_empty() {
            return Err(AuthError::malformed(WHAT, "empty salt"));
        }
        let count_text = attr(parts.next(), 'i', WHAT)?;
        let asked: u32 = count_text
            .parse()
            .map_err(|_| AuthError::malformed(WHAT, "i= is not a number"))?;
        if !iterations.contains(&asked) {
            return Err(AuthError::IterationCount {
                asked,
                min: *iterations.start(),
                max: *iterations.end(),
            });
        }
        let count = NonZeroU32::new(asked).ok_or(AuthError::IterationCount {
            asked,
            min: *iterations.start(),
            max: *iterations.end(),
        })?;
        let without_proof = format!(
            "c={},r={nonce}",
            binding::cbind_attribute(&self.gs2, self.binding.as_ref())
        );
        let auth_message = format!("{},{server_first},{without_proof}", self.first_bare);
        let salted = salted_password(password, &salt, count);
        let client_key = client_key(&salted);
        let signature = hmac(&sha256(&client_key), auth_message.as_bytes());
        let proof = xor(&client_key, &signature);
        let server_signature = hmac(&hmac(&salted, b"Server Key"), auth_message.as_bytes());
        Ok((
            ClientAwaitingServer { server_signature },
            format!("{without_proof},p={}", b64(&proof)),
        ))
    }
}

impl ClientAwaitingServer {
    /// Checks the server-final message: the server proves it holds this
    /// user's verifier and saw the same exchange (binding included).
    pub fn verify(self, server_final: &str) -> Result<(), AuthError> {
        const WHAT: &str = "server-final message";
        if let Some(e) = server_final.strip_prefix("e=") {
            return Err(AuthError::ServerError(truncate(e)));
        }
        let v = attr(server_final.split(',').next(), 'v', WHAT)?;
        let got: Key = unb64_exact(WHAT, v)?;
        constant_time::verify_slices_are_equal(&got, &self.server_signature)
            .map_err(|_| AuthError::ServerNotAuthentic)
    }
}

// ---------------------------------------------------------------- server

/// A parsed client-first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    gs2: String,
    user: String,
    nonce: String,
    bare: String,
}

impl ClientFirst {
    /// Parses a client-first message. With `require_binding`, only a gs2
    /// header naming `tcpcrypt-unique` is accepted.
    pub fn parse(message: &str, require_binding: bool) -> Result<Self, AuthError> {
        const WHAT: &str = "client-first message";
        if message.len() > 4 * MAX_FIELD {
            return Err(AuthError::malformed(WHAT, "too long"));
        }
        let mut parts = message.splitn(3, ',');
        let flag = parts.next().unwrap_or_default();
        let authzid = parts
            .next()
            .ok_or_else(|| AuthError::malformed(WHAT, "no gs2 header"))?;
        let bare = parts
            .next()
            .ok_or_else(|| AuthError::malformed(WHAT, "nothing after the gs2 header"))?;
        if !authzid.is_empty() {
            return Err(AuthError::malformed(
                WHAT,
                "authorization identities (a=) are not supported",
            ));
        }
        match flag {
            "n" | "y" if !require_binding => {}
            f if f == format!("p={BINDING_TYPE}") => {}
            "n" | "y" => {
                return Err(AuthError::BindingNotUsed {
                    got: format!("{flag},,"),
                    expected: BINDING_TYPE,
                });
            }
            f if f.starts_with("p=") => {
                return Err(AuthError::BindingNotUsed {
                    got: format!("{},,", truncate(f)),
                    expected: BINDING_TYPE,
                });
            }
            _ => return Err(AuthError::malformed(WHAT, "bad gs2 channel binding flag")),
        }
        let mut fields = bare.split(',');
        let first = fields.next();
        if first.is_some_and(|f| f.starts_with("m=")) {
            return Err(AuthError::malformed(
                WHAT,
                "mandatory extensions (m=) are not supported",
            ));
        }
        let user = decode_name(attr(first, 'n', WHAT)?)?;
        let nonce = attr(fields.next(), 'r', WHAT)?;
        check_nonce(nonce, WHAT)?;
        Ok(Self {
            gs2: format!("{flag},,"),
            user,
            nonce: nonce.to_owned(),
            bare: bare.to_owned(),
        })
    }

    pub fn user(&self) -> &str {
        &self.user
    }
}

/// A server between its first answer and the client's proof.
#[derive(Debug, Clone)]
pub struct Server {
    first: ClientFirst,
    nonce: String,
    server_first: String,
    credentials: Credentials,
    known_user: bool,
}

/// A successful login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub user: String,
    /// The server-final message (`v=...`) for the client.
    pub server_final: String,
}

impl Server {
    /// Answers a client-first message. `credentials` is the user's entry,
    /// or `None` for an unknown user, who gets a consistent decoy derived
    /// from `decoy_secret` and fails at the proof like a wrong password.
    /// `server_nonce` is appended to the client's nonce.
    pub fn start(
        first: ClientFirst,
        credentials: Option<Credentials>,
        decoy_secret: &[u8; 32],
        server_nonce: &str,
    ) -> Result<(Self, String), AuthError> {
        check_nonce(server_nonce, "server nonce")?;
        let known_user = credentials.is_some();
        let credentials =
            credentials.unwrap_or_else(|| Credentials::decoy(decoy_secret, &first.user));
        let nonce = format!("{}{server_nonce}", first.nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            b64(&credentials.salt),
            credentials.iterations
        );
        Ok((
            Self {
                first,
                nonce,
                server_first: server_first.clone(),
                credentials,
                known_user,
            },
            server_first,
        ))
    }

    pub fn user(&self) -> &str {
        &self.first.user
    }

    /// Checks the client-final message against this connection's binding
    /// (`None` only outside tcpcrypt, as in [`Client::start`]).
    pub fn finish(
        self,
        client_final: &str,
        binding: Option<&ChannelBinding>,
    ) -> Result<Verified, AuthError> {
        const WHAT: &str = "client-final message";
        if client_final.len() > 4 * MAX_FIELD {
            return Err(AuthError::malformed(WHAT, "too long"));
        }
        let (without_proof, proof_text) = client_final
            .rsplit_once(",p=")
            .ok_or_else(|| AuthError::malformed(WHAT, "no proof (p=)"))?;
        let mut parts = without_proof.split(',');
        let c = attr(parts.next(), 'c', WHAT)?;
        let nonce = attr(parts.next(), 'r', WHAT)?;
        // The binding first: a relay's proof is well-formed and would
        // otherwise be reported as a wrong password.
        match binding {
            Some(b) => binding::check(&self.first.gs2, c, b)?,
            None => {
                if c != binding::cbind_attribute(&self.first.gs2, None) {
                    return Err(AuthError::malformed(
                        WHAT,
                        "c= does not repeat the gs2 header",
                    ));
                }
            }
        }
        if nonce != self.nonce {
            return Err(AuthError::NonceMismatch);
        }
        let proof: Key = unb64_exact(WHAT, proof_text)?;
        let auth_message = format!("{},{},{without_proof}", self.first.bare, self.server_first);
        let signature = hmac(&self.credentials.stored_key, auth_message.as_bytes());
        let client_key = xor(&proof, &signature);
        let matches = constant_time::verify_slices_are_equal(
            &sha256(&client_key),
            &self.credentials.stored_key,
        )
        .is_ok();
        if !self.known_user {
            return Err(AuthError::Rejected("unknown user"));
        }
        if !matches {
            return Err(AuthError::Rejected("wrong password"));
        }
        let server_signature = hmac(&self.credentials.server_key, auth_message.as_bytes());
        Ok(Verified {
            user: self.first.user,
            server_final: format!("v={}", b64(&server_signature)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcpcrypt_control::{Role, SESSION_ID_LEN, SessionId};

    // RFC 7677 section 3: user "user", password "pencil".
    const CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn vector_credentials() -> Credentials {
        let salt = unb64("salt", SALT).expect("salt");
        Credentials::derive("pencil", &salt, NonZeroU32::new(4096).expect("nonzero"))
    }

    fn sid(fill: u8) -> ChannelBinding {
        ChannelBinding::new(Role::A, SessionId::from_bytes([fill; SESSION_ID_LEN]))
    }

    const SECRET: [u8; 32] = [9; 32];

    #[test]
    fn client_reproduces_the_rfc7677_exchange() {
        let (client, first) = Client::start("user", CLIENT_NONCE, None).expect("start");
        assert_eq!(first, CLIENT_FIRST);
        let (awaiting, last) = client
            .answer(SERVER_FIRST, "pencil", MIN_ITERATIONS..=MAX_ITERATIONS)
            .expect("answer");
        assert_eq!(last, CLIENT_FINAL);
        assert_eq!(awaiting.verify(SERVER_FINAL), Ok(()));
    }

    #[test]
    fn server_reproduces_the_rfc7677_exchange() {
        let first = ClientFirst::parse(CLIENT_FIRST, false).expect("parse");
        assert_eq!(first.user(), "user");
        let (server, server_first) =
            Server::start(first, Some(vector_credentials()), &SECRET, SERVER_NONCE).expect("start");
        assert_eq!(server_first, SERVER_FIRST);
        let verified = server.finish(CLIENT_FINAL, None).expect("finish");
        assert_eq!(verified.user, "user");
        assert_eq!(verified.server_final, SERVER_FINAL);
    }

    #[test]
    fn a_binding_server_refuses_the_unbound_rfc_exchange() {
        assert!(matches!(
            ClientFirst::parse(CLIENT_FIRST, true),
            Err(AuthError::BindingNotUsed { .. })
        ));
        assert!(matches!(
            ClientFirst::parse("p=tls-unique,,n=user,r=abc", true),
            Err(AuthError::BindingNotUsed { .. })
        ));
    }

    /// Runs a bound exchange: the client bound to `client_sid`, the server
    /// checking against `server_sid`.
    fn bound_exchange(
        password: &str,
        client_sid: u8,
        server_sid: u8,
    ) -> Result<(Verified, ClientAwaitingServer), AuthError> {
        let (client, first) = Client::start("alice", "cnonce", Some(sid(client_sid)))?;
        let creds =
            Credentials::derive("s3cret", b"salt-salt", NonZeroU32::new(4096).expect("4096"));
        let (server, server_first) = Server::start(
            ClientFirst::parse(&first, true)?,
            Some(creds),
            &SECRET,
            "snonce",
        )?;
        let (awaiting, last) =
            client.answer(&server_first, password, MIN_ITERATIONS..=MAX_ITERATIONS)?;
        Ok((server.finish(&last, Some(&sid(server_sid)))?, awaiting))
    }

    #[test]
    fn bound_exchange_on_one_session_succeeds_both_ways() {
        let (verified, awaiting) = bound_exchange("s3cret", 5, 5).expect("login");
        assert_eq!(verified.user, "alice");
        assert_eq!(awaiting.verify(&verified.server_final), Ok(()));
    }

    #[test]
    fn bound_exchange_across_two_sessions_is_a_binding_mismatch() {
        match bound_exchange("s3cret", 5, 6) {
            Err(AuthError::BindingMismatch { client, ours }) => {
                assert!(client.starts_with(&"05".repeat(SESSION_ID_LEN)), "{client}");
                assert!(ours.starts_with(&"06".repeat(SESSION_ID_LEN)), "{ours}");
            }
            other => panic!("expected a binding mismatch, got {other:?}"),
        }
    }

    #[test]
    fn relay_rewriting_c_to_its_own_session_breaks_the_proof() {
        // A relay that swaps the c= attribute for the server leg's binding
        // passes the binding check but not the proof, which covers c=.
        let (client, first) = Client::start("alice", "cn", Some(sid(1))).expect("start");
        let creds = Credentials::derive("pw", b"salt", NonZeroU32::new(4096).expect("4096"));
        let (server, sf) = Server::start(
            ClientFirst::parse(&first, true).expect("parse"),
            Some(creds),
            &SECRET,
            "sn",
        )
        .expect("server");
        let (_, last) = client
            .answer(&sf, "pw", MIN_ITERATIONS..=MAX_ITERATIONS)
            .expect("answer");
        let forged = last.replace(
            &binding::cbind_attribute(&binding::gs2_header(), Some(&sid(1))),
            &binding::cbind_attribute(&binding::gs2_header(), Some(&sid(2))),
        );
        assert_ne!(forged, last);
        assert_eq!(
            server.finish(&forged, Some(&sid(2))).map(|v| v.user),
            Err(AuthError::Rejected("wrong password"))
        );
    }

    #[test]
    fn wrong_password_is_rejected() {
        assert_eq!(
            bound_exchange("guess", 5, 5).map(|(v, _)| v.user),
            Err(AuthError::Rejected("wrong password"))
        );
    }

    #[test]
    fn unknown_user_gets_a_stable_decoy_and_is_rejected() {
        let first = || ClientFirst::parse("p=tcpcrypt-unique,,n=mallory,r=x", true).expect("parse");
        let (_, a) = Server::start(first(), None, &SECRET, "s1").expect("start");
        let (server, b) = Server::start(first(), None, &SECRET, "s1").expect("start");
        assert_eq!(a, b, "the decoy salt must not change between requests");
        let (client, _) = Client::start("mallory", "x", Some(sid(3))).expect("client");
        let (_, last) = client
            .answer(&b, "any", MIN_ITERATIONS..=MAX_ITERATIONS)
            .expect("answer");
        assert_eq!(
            server.finish(&last, Some(&sid(3))).map(|v| v.user),
            Err(AuthError::Rejected("unknown user"))
        );
    }

    #[test]
    fn client_refuses_a_forged_server_signature_and_odd_counts() {
        let (_, awaiting) = bound_exchange("s3cret", 5, 5).expect("login");
        assert_eq!(
            awaiting.verify("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(AuthError::ServerNotAuthentic)
        );
        let (client, _) = Client::start("user", CLIENT_NONCE, None).expect("start");
        let greedy = SERVER_FIRST.replace("i=4096", "i=4000000000");
        assert!(matches!(
            client.answer(&greedy, "pencil", MIN_ITERATIONS..=MAX_ITERATIONS),
            Err(AuthError::IterationCount { .. })
        ));
    }

    #[test]
    fn client_refuses_a_server_nonce_not_extending_its_own() {
        let (client, _) = Client::start("user", "abc", None).expect("start");
        assert_eq!(
            client
                .answer(
                    "r=xyz,s=c2FsdA==,i=4096",
                    "pw",
                    MIN_ITERATIONS..=MAX_ITERATIONS
                )
                .map(|_| ()),
            Err(AuthError::NonceMismatch)
        );
    }

    #[test]
    fn user_names_with_commas_and_equals_round_trip() {
        let (_, first) = Client::start("a,b=c", "n", Some(sid(1))).expect("start");
        assert!(first.contains("n=a=2Cb=3Dc,"), "{first}");
        assert_eq!(
            ClientFirst::parse(&first, true).expect("parse").user(),
            "a,b=c"
        );
        assert!(ClientFirst::parse("p=tcpcrypt-unique,,n=a=ZZ,r=x", true).is_err());
    }

    #[test]
    fn malformed_client_messages_are_errors() {
        for bad in [
            "",
            "p=tcpcrypt-unique",
            "p=tcpcrypt-unique,,",
            "p=tcpcrypt-unique,a=admin,n=u,r=x",
            "p=tcpcrypt-unique,,m=ext,n=u,r=x",
            "p=tcpcrypt-unique,,n=,r=x",
            "p=tcpcrypt-unique,,n=u",
            "q,,n=u,r=x",
        ] {
            assert!(ClientFirst::parse(bad, true).is_err(), "{bad:?}");
        }
    }
}
