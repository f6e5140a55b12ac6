//! The engine's error type: why a connection had to be aborted or a packet
//! could not be handled.

use tcpcrypt_proto::frame::FrameError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    #[error("no session keys yet")]
    NoKeys,
    #[error("packet: {0}")]
    Wire(#[from] crate::wire::WireError),
    #[error("key exchange: {0}")]
    Keying(String),
}
