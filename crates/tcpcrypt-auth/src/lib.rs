//! Logins bound to one tcpcrypt connection: SCRAM-SHA-256 over HTTP with
//! the `tcpcrypt-unique` channel binding, and Ed25519 key logins signed over
//! the session ID. See the README for what this crate owns and must not do,
//! and `docs/channel-bound-auth.md` for the message flow.

pub mod binding;
mod encoding;
mod error;
pub mod http;
pub mod key;
pub mod random;
pub mod scram;
pub mod verifier;

pub use binding::{BINDING_TYPE, ChannelBinding};
pub use error::AuthError;
pub use tcpcrypt_control::{Role, SESSION_ID_LEN, SessionId};
