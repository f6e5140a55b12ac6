//! `AuthType tcpcrypt`: what to answer a request for a protected location,
//! decided without httpd so every branch is unit-tested; `ffi::authn` only
//! reads the request and applies the [`Decision`].
//!
//! SCRAM needs state between its two round trips. It is kept in the
//! connection (one [`PendingSlot`] per client connection, at most one
//! exchange in it, dropped after [`PENDING_TTL`] or when used), so it is
//! bounded, cannot be reached from another connection, and a final message
//! can be answered only once.

use std::fs::File;
use std::io::Read as _;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tcpcrypt::Session;
use tcpcrypt_auth::http::{self, Credentials as HeaderCredentials};
use tcpcrypt_auth::scram::{self, ClientFirst, Server};
use tcpcrypt_auth::{AuthError, ChannelBinding, key, random, verifier};

/// The `AuthType` this module answers.
pub const AUTH_TYPE: &str = "tcpcrypt";
/// How long a client may take between SCRAM's two messages.
pub const PENDING_TTL: Duration = Duration::from_secs(60);

/// A SCRAM exchange waiting for its final message.
#[derive(Debug)]
struct Pending {
    sid: String,
    server: Server,
    started: Instant,
}

/// The per-connection room for one pending SCRAM exchange.
#[derive(Debug, Default)]
pub struct PendingSlot(Mutex<Option<Pending>>);

impl PendingSlot {
    fn put(&self, p: Pending) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(p);
        }
    }

    /// Takes the exchange named `sid` if it is there and fresh; any other
    /// pending exchange stays.
    fn take(&self, sid: &str, now: Instant) -> Result<Server, &'static str> {
        let Ok(mut slot) = self.0.lock() else {
            return Err("no SCRAM exchange is pending on this connection");
        };
        match slot.take() {
            None => Err("no SCRAM exchange is pending on this connection"),
            Some(p) if p.sid != sid => {
                *slot = Some(p);
                Err("the sid names no SCRAM exchange of this connection")
            }
            Some(p) if now.saturating_duration_since(p.started) > PENDING_TTL => {
                Err("the SCRAM exchange expired")
            }
            Some(p) => Ok(p.server),
        }
    }
}

/// What a request to a protected location brings.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub authorization: Option<&'a str>,
    /// `AuthName`, the realm of the challenges.
    pub realm: &'a str,
    pub user_file: Option<&'a Path>,
    pub key_file: Option<&'a Path>,
    /// The connection's tcpcrypt session (`None`: plain TCP, or unknown).
    pub session: Option<&'a Session>,
}

/// Which log level a message deserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Info,
}

/// The answer, for the FFI layer to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Set `REMOTE_USER` (r->user) and go on to authorization.
    Granted {
        user: String,
        scheme: &'static str,
        /// `Authentication-Info` (SCRAM's server signature).
        info: Option<String>,
    },
    /// 401 with these `WWW-Authenticate` values.
    Unauthorized {
        challenges: Vec<String>,
        log: Option<(Level, String)>,
    },
    /// 400: a header we cannot parse.
    BadRequest { log: String },
    /// 403: no tcpcrypt on this connection, so nothing to bind to.
    Forbidden { log: String },
    /// 500: the configuration or the server is broken.
    ServerError { log: String },
}

fn challenges(req: &Request<'_>) -> Vec<String> {
    let mut out = Vec::new();
    if req.user_file.is_some() {
        out.push(http::scram_challenge(req.realm));
    }
    if req.key_file.is_some() {
        out.push(http::key_challenge(req.realm));
    }
    out
}

fn unauthorized(req: &Request<'_>, log: Option<(Level, String)>) -> Decision {
    Decision::Unauthorized {
        challenges: challenges(req),
        log,
    }
}

fn read_bounded(path: &Path, max: usize) -> Result<String, String> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(max as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() > max {
        return Err(format!("{} is larger than {max} bytes", path.display()));
    }
    Ok(text)
}

/// A per-process secret for the decoy salts of unknown users.
fn decoy_secret() -> Option<&'static [u8; 32]> {
    static SECRET: OnceLock<Option<[u8; 32]>> = OnceLock::new();
    SECRET.get_or_init(|| random::bytes().ok()).as_ref()
}

/// Decides a request for a location with `AuthType tcpcrypt`.
pub fn decide(req: &Request<'_>, slot: &PendingSlot, now: Instant) -> Decision {
    if req.user_file.is_none() && req.key_file.is_none() {
        return Decision::ServerError {
            log: "AuthType tcpcrypt without TcpcryptAuthUserFile or TcpcryptAuthKeyFile: no way to log in here".to_owned(),
        };
    }
    let Some(session) = req.session else {
        return Decision::Forbidden {
            log: "refused: this connection is not encrypted with tcpcrypt, and AuthType tcpcrypt binds logins to the tcpcrypt session; the client must run tcpcryptd".to_owned(),
        };
    };
    let Some(value) = req.authorization else {
        return unauthorized(req, None);
    };
    let credentials = match http::parse_authorization(value) {
        Ok(Some(c)) => c,
        Ok(None) => {
            return unauthorized(
                req,
                Some((
                    Level::Info,
                    "Authorization header of another scheme; asking for tcpcrypt login".to_owned(),
                )),
            );
        }
        Err(e) => return Decision::BadRequest { log: e.to_string() },
    };
    match credentials {
        HeaderCredentials::ScramFirst { client_first } => {
            scram_first(req, slot, now, &client_first)
        }
        HeaderCredentials::ScramFinal { sid, client_final } => {
            scram_final(req, slot, now, session, &sid, &client_final)
        }
        HeaderCredentials::Key(login) => key_login(req, session, &login),
    }
}

fn failure(req: &Request<'_>, e: AuthError) -> Decision {
    match e {
        AuthError::Malformed { .. } => Decision::BadRequest { log: e.to_string() },
        other => unauthorized(req, Some((Level::Error, other.to_string()))),
    }
}

fn scram_first(req: &Request<'_>, slot: &PendingSlot, now: Instant, message: &str) -> Decision {
    let Some(path) = req.user_file else {
        return unauthorized(
            req,
            Some((
                Level::Error,
                "SCRAM login, but no TcpcryptAuthUserFile here".to_owned(),
            )),
        );
    };
    let first = match ClientFirst::parse(message, true) {
        Ok(f) => f,
        Err(e) => return failure(req, e),
    };
    let text = match read_bounded(path, verifier::MAX_FILE) {
        Ok(t) => t,
        Err(log) => return Decision::ServerError { log },
    };
    let credentials = match verifier::find(&text, first.user()) {
        Ok(c) => c,
        Err(e) => {
            return Decision::ServerError {
                log: format!("{}: user {:?}: {e}", path.display(), first.user()),
            };
        }
    };
    let (Some(secret), Ok(nonce), Ok(sid)) =
        (decoy_secret(), random::nonce(), random::bytes::<12>())
    else {
        return Decision::ServerError {
            log: "no random numbers for a SCRAM exchange".to_owned(),
        };
    };
    let sid: String = sid.iter().map(|b| format!("{b:02x}")).collect();
    match Server::start(first, credentials, secret, &nonce) {
        Ok((server, server_first)) => {
            slot.put(Pending {
                sid: sid.clone(),
                server,
                started: now,
            });
            Decision::Unauthorized {
                challenges: vec![http::scram_continue(&sid, &server_first)],
                log: None,
            }
        }
        Err(e) => failure(req, e),
    }
}

fn scram_final(
    req: &Request<'_>,
    slot: &PendingSlot,
    now: Instant,
    session: &Session,
    sid: &str,
    message: &str,
) -> Decision {
    let server = match slot.take(sid, now) {
        Ok(s) => s,
        Err(why) => {
            return unauthorized(
                req,
                Some((
                    Level::Error,
                    format!(
                        "SCRAM final message refused: {why} (replayed, or sent on another connection)"
                    ),
                )),
            );
        }
    };
    let user = server.user().to_owned();
    match server.finish(
        message,
        Some(&ChannelBinding::new(
            session.role.opposite(),
            session.session_id,
        )),
    ) {
        Ok(v) => Decision::Granted {
            user: v.user,
            scheme: scram::MECHANISM,
            info: Some(http::scram_success(sid, &v.server_final)),
        },
        Err(AuthError::Malformed { what, why }) => Decision::BadRequest {
            log: format!("user {user:?}: malformed {what}: {why}"),
        },
        Err(e) => unauthorized(req, Some((Level::Error, format!("user {user:?}: {e}")))),
    }
}

fn key_login(req: &Request<'_>, session: &Session, login: &key::KeyLogin) -> Decision {
    let Some(path) = req.key_file else {
        return unauthorized(
            req,
            Some((
                Level::Error,
                "key login, but no TcpcryptAuthKeyFile here".to_owned(),
            )),
        );
    };
    let text = match read_bounded(path, key::MAX_KEYS_FILE) {
        Ok(t) => t,
        Err(log) => return Decision::ServerError { log },
    };
    let (name, bad_lines) = key::find_key(&text, &login.public_key);
    let Some(name) = name else {
        let note = if bad_lines > 0 {
            format!(
                " ({bad_lines} malformed lines skipped in {})",
                path.display()
            )
        } else {
            String::new()
        };
        return unauthorized(
            req,
            Some((
                Level::Error,
                format!("key login refused: unknown key{note}"),
            )),
        );
    };
    match key::verify(login, session.role, &session.session_id) {
        Ok(()) => Decision::Granted {
            user: name,
            scheme: http::KEY_SCHEME,
            info: None,
        },
        Err(e) => unauthorized(
            req,
            Some((Level::Error, format!("key of user {name:?}: {e}"))),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;
    use std::path::PathBuf;
    use tcpcrypt::{Aead, Role, SESSION_ID_LEN, SessionId, Tep};
    use tcpcrypt_auth::key::PrivateKey;
    use tcpcrypt_auth::scram::{Client, Credentials, MAX_ITERATIONS, MIN_ITERATIONS};

    fn session(fill: u8) -> Session {
        Session {
            session_id: SessionId::from_bytes([fill; SESSION_ID_LEN]),
            role: Role::B,
            tep: Tep::from_name("TCPCRYPT_ECDHE_Curve25519").unwrap_or_else(|| panic!("tep")),
            aead: Aead::from_name("AEAD_AES_128_GCM").unwrap_or_else(|| panic!("aead")),
            resumed: false,
            peer_app_aware: false,
        }
    }

    /// A directory with a verifier file (alice / "pw") and a key file.
    struct Files {
        dir: PathBuf,
        users: PathBuf,
        keys: PathBuf,
        key: PrivateKey,
    }

    impl Files {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "mod_tcpcrypt-auth-unit-{tag}-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
            let creds = Credentials::derive(
                "pw",
                b"saltsalt",
                NonZeroU32::new(4096).unwrap_or(NonZeroU32::MIN),
            );
            let users = dir.join("users");
            let text = verifier::upsert("", "alice", &creds).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(&users, text).unwrap_or_else(|e| panic!("{e}"));
            let (key, _) = PrivateKey::generate().unwrap_or_else(|e| panic!("{e}"));
            let keys = dir.join("keys");
            std::fs::write(&keys, format!("{}\n", key.authorized_line("carol")))
                .unwrap_or_else(|e| panic!("{e}"));
            Self {
                dir,
                users,
                keys,
                key,
            }
        }

        fn request<'a>(&'a self, auth: Option<&'a str>, s: Option<&'a Session>) -> Request<'a> {
            Request {
                authorization: auth,
                realm: "r",
                user_file: Some(&self.users),
                key_file: Some(&self.keys),
                session: s,
            }
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn continuation(d: &Decision) -> String {
        match d {
            Decision::Unauthorized { challenges, .. } => challenges
                .first()
                .cloned()
                .unwrap_or_else(|| panic!("no challenge")),
            other => panic!("expected a 401, got {other:?}"),
        }
    }

    /// Runs SCRAM's first step through `decide`: the client, its proof's
    /// Authorization value.
    fn scram_to_proof(
        f: &Files,
        slot: &PendingSlot,
        client_session: u8,
        server: &Session,
        password: &str,
    ) -> String {
        let binding = ChannelBinding::new(Role::A, session(client_session).session_id);
        let (client, first) =
            Client::start("alice", "cnonce", Some(binding)).unwrap_or_else(|e| panic!("{e}"));
        let header = http::scram_first_authorization(None, &first);
        let d = decide(
            &f.request(Some(&header), Some(server)),
            slot,
            Instant::now(),
        );
        let (sid, server_first) = http::parse_scram_continue(&continuation(&d))
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no continuation in {d:?}"));
        let (_, last) = client
            .answer(&server_first, password, MIN_ITERATIONS..=MAX_ITERATIONS)
            .unwrap_or_else(|e| panic!("{e}"));
        http::scram_final_authorization(&sid, &last)
    }

    #[test]
    fn plain_connection_is_forbidden_and_no_files_is_a_server_error() {
        let f = Files::new("plain");
        let slot = PendingSlot::default();
        assert!(matches!(
            decide(&f.request(None, None), &slot, Instant::now()),
            Decision::Forbidden { .. }
        ));
        let s = session(1);
        let mut req = f.request(None, Some(&s));
        req.user_file = None;
        req.key_file = None;
        assert!(matches!(
            decide(&req, &slot, Instant::now()),
            Decision::ServerError { .. }
        ));
    }

    #[test]
    fn no_header_gets_both_challenges_and_another_scheme_too() {
        let f = Files::new("challenge");
        let s = session(1);
        let slot = PendingSlot::default();
        for auth in [None, Some("Basic YWxpY2U6cHc=")] {
            match decide(&f.request(auth, Some(&s)), &slot, Instant::now()) {
                Decision::Unauthorized { challenges, .. } => assert_eq!(
                    challenges,
                    vec![http::scram_challenge("r"), http::key_challenge("r")]
                ),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn scram_login_on_one_session_is_granted_with_the_server_proof() {
        let f = Files::new("scram");
        let s = session(1);
        let slot = PendingSlot::default();
        let proof = scram_to_proof(&f, &slot, 1, &s, "pw");
        match decide(&f.request(Some(&proof), Some(&s)), &slot, Instant::now()) {
            Decision::Granted { user, scheme, info } => {
                assert_eq!((user.as_str(), scheme), ("alice", "SCRAM-SHA-256"));
                assert!(info.is_some_and(|i| i.contains("data=")));
            }
            other => panic!("{other:?}"),
        }
        // The same proof again: the exchange was used up.
        match decide(&f.request(Some(&proof), Some(&s)), &slot, Instant::now()) {
            Decision::Unauthorized {
                log: Some((Level::Error, text)),
                ..
            } => {
                assert!(text.contains("no SCRAM exchange is pending"), "{text}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scram_proof_for_another_session_is_a_logged_binding_mismatch() {
        let f = Files::new("relay");
        let server_leg = session(2);
        let slot = PendingSlot::default();
        let proof = scram_to_proof(&f, &slot, 1, &server_leg, "pw");
        match decide(
            &f.request(Some(&proof), Some(&server_leg)),
            &slot,
            Instant::now(),
        ) {
            Decision::Unauthorized {
                log: Some((Level::Error, text)),
                ..
            } => {
                assert!(text.contains("channel-binding mismatch"), "{text}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_password_and_expired_exchange_are_refused() {
        let f = Files::new("wrong");
        let s = session(1);
        let slot = PendingSlot::default();
        let proof = scram_to_proof(&f, &slot, 1, &s, "nope");
        assert!(matches!(
            decide(&f.request(Some(&proof), Some(&s)), &slot, Instant::now()),
            Decision::Unauthorized { log: Some((Level::Error, ref t)), .. } if t.contains("wrong password")
        ));
        let proof = scram_to_proof(&f, &slot, 1, &s, "pw");
        let later = Instant::now() + PENDING_TTL + Duration::from_secs(1);
        assert!(matches!(
            decide(&f.request(Some(&proof), Some(&s)), &slot, later),
            Decision::Unauthorized { log: Some((Level::Error, ref t)), .. } if t.contains("expired")
        ));
    }

    #[test]
    fn a_wrong_sid_leaves_the_pending_exchange_in_place() {
        let f = Files::new("sid");
        let s = session(1);
        let slot = PendingSlot::default();
        let proof = scram_to_proof(&f, &slot, 1, &s, "pw");
        let forged = http::scram_final_authorization("0000", "c=biws,r=x,p=AAAA");
        assert!(matches!(
            decide(&f.request(Some(&forged), Some(&s)), &slot, Instant::now()),
            Decision::Unauthorized { .. }
        ));
        assert!(matches!(
            decide(&f.request(Some(&proof), Some(&s)), &slot, Instant::now()),
            Decision::Granted { .. }
        ));
    }

    #[test]
    fn key_login_is_granted_on_its_session_only() {
        let f = Files::new("key");
        let server = session(1);
        let slot = PendingSlot::default();
        let header = f
            .key
            .sign_login(Role::A, &server.session_id)
            .authorization();
        assert_eq!(
            decide(
                &f.request(Some(&header), Some(&server)),
                &slot,
                Instant::now()
            ),
            Decision::Granted {
                user: "carol".to_owned(),
                scheme: http::KEY_SCHEME,
                info: None
            }
        );
        let other = session(2);
        assert!(matches!(
            decide(&f.request(Some(&header), Some(&other)), &slot, Instant::now()),
            Decision::Unauthorized { log: Some((Level::Error, ref t)), .. } if t.contains("channel-binding mismatch")
        ));
        let (stranger, _) = PrivateKey::generate().unwrap_or_else(|e| panic!("{e}"));
        let header = stranger
            .sign_login(Role::A, &server.session_id)
            .authorization();
        assert!(matches!(
            decide(&f.request(Some(&header), Some(&server)), &slot, Instant::now()),
            Decision::Unauthorized { log: Some((Level::Error, ref t)), .. } if t.contains("unknown key")
        ));
    }

    #[test]
    fn malformed_headers_are_bad_requests() {
        let f = Files::new("bad");
        let s = session(1);
        let slot = PendingSlot::default();
        for bad in [
            "SCRAM-SHA-256 data=%%%",
            "SCRAM-SHA-256 data=\"x",
            "Tcpcrypt-Ed25519 key=AA",
        ] {
            assert!(
                matches!(
                    decide(&f.request(Some(bad), Some(&s)), &slot, Instant::now()),
                    Decision::BadRequest { .. }
                ),
                "{bad}"
            );
        }
    }
}
