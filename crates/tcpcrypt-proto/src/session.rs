//! An established tcpcrypt session: what applications and operators may
//! learn about it, the secrets a key log needs, and the frame writer and
//! reader that carry its data.

use std::fmt;

use zeroize::Zeroizing;

use crate::aead::Aead;
use crate::frame::{FrameReader, FrameWriter};
use crate::resume::ChainId;
use crate::role::Role;
use crate::schedule::SessionSecret;
use crate::session_id::SessionId;
use crate::tep::Tep;

/// The public facts of a session (what the control socket reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    pub session_id: SessionId,
    /// Our ENO role on this connection.
    pub role: Role,
    /// Our role in the ss\[0\] session this one derives from (equals `role`
    /// for a fresh session); it decides which traffic keys we send with.
    pub original_role: Role,
    pub tep: Tep,
    pub aead: Aead,
    pub resumed: bool,
    /// The peer's application-aware (`a`) bit.
    pub peer_app_aware: bool,
}

/// The secrets a key log may record for offline decryption: the session
/// secret the connection's keys derive from (ss\[0\] when fresh, ss\[i\] when
/// resumed) and, for a fresh session, the ECDH result ES. The key log's
/// line format is tcpcryptd's (`keylog.rs`), its one writer.
pub struct KeyLogSecrets {
    pub(crate) ss: SessionSecret,
    pub(crate) es: Option<Zeroizing<Vec<u8>>>,
}

impl KeyLogSecrets {
    pub fn session_secret(&self) -> &SessionSecret {
        &self.ss
    }

    /// ES, absent for a resumed session.
    pub fn ephemeral_secret(&self) -> Option<&[u8]> {
        self.es.as_deref().map(|v| v.as_slice())
    }
}

impl fmt::Debug for KeyLogSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyLogSecrets(..)")
    }
}

/// An established session.
///
/// Hand it to [`Host::on_established`](crate::handshake::Host::on_established)
/// once, so the resumption cache learns the next secret (unless the
/// connection's policy says not to cache), then take the writer and reader.
#[derive(Debug)]
pub struct Session {
    pub(crate) info: SessionInfo,
    pub(crate) secrets: KeyLogSecrets,
    pub(crate) writer: FrameWriter,
    pub(crate) reader: FrameReader,
    /// ss\[1\] of a fresh session, still to be cached.
    pub(crate) next_secret: Option<SessionSecret>,
    pub(crate) chain: Option<ChainId>,
    pub(crate) no_cache: bool,
}

impl Session {
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    pub fn session_id(&self) -> SessionId {
        self.info.session_id
    }

    pub fn secrets(&self) -> &KeyLogSecrets {
        &self.secrets
    }

    /// Seals our direction.
    pub fn writer(&mut self) -> &mut FrameWriter {
        &mut self.writer
    }

    /// Authenticates the peer's direction.
    pub fn reader(&mut self) -> &mut FrameReader {
        &mut self.reader
    }

    /// The resumption chain this session used or started, once known; pass
    /// it to [`ResumptionCache::flush_chain`](crate::resume::ResumptionCache::flush_chain)
    /// to forget it.
    pub fn chain(&self) -> Option<ChainId> {
        self.chain
    }

    /// Splits the session for separate use of its two directions.
    pub fn into_parts(self) -> (SessionInfo, KeyLogSecrets, FrameWriter, FrameReader) {
        (self.info, self.secrets, self.writer, self.reader)
    }
}
