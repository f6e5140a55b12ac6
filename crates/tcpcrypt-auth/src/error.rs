//! Why a login message was refused. The text goes to the server's error log
//! and the client's stderr, so it names what was wrong without echoing
//! secrets.

/// A refused or malformed authentication message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The message does not follow the syntax (a bad attribute, bad base64,
    /// a missing field, too long).
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
    /// The client offered no channel binding or a different type.
    #[error("channel binding required: client sent gs2 header {got:?}, expected p={expected}")]
    BindingNotUsed { got: String, expected: &'static str },
    /// The client bound its proof to another tcpcrypt session: a relay in
    /// the middle, or a proof replayed from another connection.
    #[error(
        "channel-binding mismatch: the client's proof is bound to session {client}, this connection is session {ours}"
    )]
    BindingMismatch { client: String, ours: String },
    /// The nonce in the final message is not the one of this exchange.
    #[error("nonce mismatch: the final message does not continue this exchange")]
    NonceMismatch,
    /// Wrong password, unknown user or a bad signature (deliberately one
    /// case towards the client).
    #[error("authentication failed: {0}")]
    Rejected(&'static str),
    /// The server's signature in SCRAM's last message is wrong: the client
    /// is not talking to a server that knows its verifier.
    #[error("the server could not prove that it knows the password verifier")]
    ServerNotAuthentic,
    /// The server asked for more PBKDF2 iterations than the client allows.
    #[error("the server asks for {asked} PBKDF2 iterations; this client allows {min} to {max}")]
    IterationCount { asked: u32, min: u32, max: u32 },
    /// The server answered with an error attribute (`e=`).
    #[error("the server refused the login: {0}")]
    ServerError(String),
}

impl AuthError {
    pub(crate) fn malformed(what: &'static str, why: impl Into<String>) -> Self {
        Self::Malformed {
            what,
            why: why.into(),
        }
    }
}
