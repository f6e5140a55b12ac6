//! Encryption frames (RFC 8548 sections 3.6, 3.7 and 4.2): the single-frame
//! codec, the [`FrameWriter`] that seals our direction, and the streaming
//! [`FrameReader`] that authenticates the peer's.
//!
//! A frame is `control(1) ‖ clen(2, big-endian) ‖ ciphertext(clen)`. The
//! associated data is the 3-byte header; the nonce is the frame's offset in
//! the wire stream XORed into NR. The plaintext is `flags(1) ‖ data`, or
//! `flags(1) ‖ urgent(2) ‖ data` when URGp is set.
//!
//! Rekeying lives here too (RFC 8548 section 3.8): the writer holds the
//! local generation, the reader the remote one; each keeps only the key of
//! its current generation, because retransmissions resend stored wire bytes
//! and frames arrive in stream order. The peer follows our generation one
//! rekey bit at a time, so a writer whose generation moved several steps
//! before its next frame announces each step with a frame of its own.

use crate::aead::{Aead, TAG_LEN, TrafficKey};
use crate::role::Role;
use crate::schedule::MasterKey;

/// Length of the frame header (control byte and clen).
pub const FRAME_HEADER_LEN: usize = 3;
/// Largest ciphertext a frame can carry (clen is 16 bits).
pub const MAX_CLEN: usize = 0xffff;
/// Largest data field of a frame without urgent data.
pub const MAX_FRAME_DATA: usize = MAX_CLEN - TAG_LEN - 1;
/// Largest data field of a frame whose URGp is set.
pub const MAX_FRAME_DATA_URGENT: usize = MAX_FRAME_DATA - 2;
/// Bytes a frame adds around its data (header, flags, tag), without urgent.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_LEN + 1 + TAG_LEN;
/// Largest whole frame on the wire.
pub const MAX_FRAME_LEN: usize = FRAME_HEADER_LEN + MAX_CLEN;

/// Project decision 1: a frame's offset counts from the first payload byte
/// of the connection (sequence number ISN+1), so the Init1/Init2 bytes a
/// host sent before its first frame count too. Set to `false` to count from
/// the first frame instead (the other reading of RFC 8548 section 3.6).
pub const INIT_BYTES_COUNT_IN_FRAME_OFFSET: bool = true;

/// Offset of the first frame of a direction whose stream began with an Init
/// message of `init_len` bytes (0 when resumed: no Init message).
pub fn first_frame_offset(init_len: usize) -> u64 {
    if INIT_BYTES_COUNT_IN_FRAME_OFFSET {
        init_len as u64
    } else {
        0
    }
}

const CONTROL_REKEY: u8 = 0x01;
const FLAG_FIN: u8 = 0x01;
const FLAG_URG: u8 = 0x02;

/// What went wrong with a frame, sent or received. Receive-side variants
/// carry the wire offset of the frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame at offset {offset}: AEAD authentication failed")]
    Authentication { offset: u64 },
    #[error(
        "frame at offset {offset}: clen {clen} is below the minimum {min} (flags byte and tag)"
    )]
    CiphertextTooShort {
        offset: u64,
        clen: usize,
        min: usize,
    },
    #[error("frame at offset {offset}: URGp is set but the plaintext has no 2-byte urgent field")]
    UrgentFieldMissing { offset: u64 },
    #[error(
        "frame at offset {offset}: urgent {urgent} does not point into the {data_len}-byte data field"
    )]
    UrgentOutOfRange {
        offset: u64,
        urgent: u16,
        data_len: usize,
    },
    #[error("frame at offset {offset}: data after the frame with FINp")]
    DataAfterFin { offset: u64 },
    #[error("frame data of {len} bytes exceeds the maximum {max}")]
    DataTooLong { len: usize, max: usize },
    #[error("cannot send a frame: FINp was already sent")]
    FinAlreadySent,
    #[error("frame at offset {offset}: the 64-bit stream offset would wrap")]
    OffsetExhausted { offset: u64 },
}

/// Rekey requests the protocol forbids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RekeyError {
    #[error(
        "a rekey is outstanding: local generation {local} is ahead of remote generation {remote}"
    )]
    Outstanding { local: u64, remote: u64 },
    #[error("cannot rekey after sending FINp")]
    AfterFin,
}

/// The plaintext fields of a frame.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FramePayload<'a> {
    /// FINp: this is the sender's last frame.
    pub fin: bool,
    /// URGp and the urgent field: the position of the last urgent byte,
    /// counted from the first byte of this frame's data (project decision 4).
    pub urgent: Option<u16>,
    pub data: &'a [u8],
}

fn check_urgent(offset: u64, urgent: Option<u16>, data_len: usize) -> Result<(), FrameError> {
    match urgent {
        Some(u) if usize::from(u) >= data_len => Err(FrameError::UrgentOutOfRange {
            offset,
            urgent: u,
            data_len,
        }),
        _ => Ok(()),
    }
}

/// Seals one frame at `offset` with `key`, appending its wire bytes to `out`;
/// returns the frame length. The `rekey` bit goes into the control byte.
pub fn seal_frame(
    key: &TrafficKey,
    offset: u64,
    rekey: bool,
    payload: &FramePayload<'_>,
    out: &mut Vec<u8>,
) -> Result<usize, FrameError> {
    let max = if payload.urgent.is_some() {
        MAX_FRAME_DATA_URGENT
    } else {
        MAX_FRAME_DATA
    };
    if payload.data.len() > max {
        return Err(FrameError::DataTooLong {
            len: payload.data.len(),
            max,
        });
    }
    check_urgent(offset, payload.urgent, payload.data.len())?;
    let plen = 1 + if payload.urgent.is_some() { 2 } else { 0 } + payload.data.len();
    let clen = plen + TAG_LEN;
    let total = FRAME_HEADER_LEN + clen;
    if offset.checked_add(total as u64).is_none() {
        return Err(FrameError::OffsetExhausted { offset });
    }
    let control = if rekey { CONTROL_REKEY } else { 0 };
    let header = [control, (clen >> 8) as u8, clen as u8];
    let start = out.len();
    out.reserve(total);
    out.extend_from_slice(&header);
    let flags =
        (u8::from(payload.fin) * FLAG_FIN) | (u8::from(payload.urgent.is_some()) * FLAG_URG);
    out.push(flags);
    if let Some(u) = payload.urgent {
        out.extend_from_slice(&u.to_be_bytes());
    }
    out.extend_from_slice(payload.data);
    let body = start + FRAME_HEADER_LEN;
    let sealed = match out.get_mut(body..) {
        Some(plaintext) => key.seal(offset, &header, plaintext),
        None => Err(crate::aead::AeadFailure),
    };
    match sealed {
        Ok(tag) => {
            out.extend_from_slice(&tag);
            Ok(total)
        }
        Err(_) => {
            out.truncate(start);
            Err(FrameError::Authentication { offset })
        }
    }
}

/// An authenticated frame from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedFrame {
    /// Wire-stream offset of the frame's first header byte.
    pub offset: u64,
    /// Length of the whole frame on the wire.
    pub wire_len: usize,
    /// The remote generation the frame was encrypted under.
    pub generation: u64,
    /// The frame carried rekey = 1 (its generation is new).
    pub rekey: bool,
    pub fin: bool,
    pub urgent: Option<u16>,
    pub data: Vec<u8>,
}

/// Total length of the frame whose first bytes are `prefix`, once its header
/// is there.
pub fn frame_len(prefix: &[u8]) -> Option<usize> {
    match prefix {
        [_, hi, lo, ..] => Some(FRAME_HEADER_LEN + usize::from(u16::from_be_bytes([*hi, *lo]))),
        _ => None,
    }
}

/// Authenticates and decrypts one complete frame (`frame` is exactly the
/// frame's wire bytes), using `scratch` as working space.
fn open_frame(
    key: &TrafficKey,
    offset: u64,
    frame: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<(bool, bool, Option<u16>, Vec<u8>), FrameError> {
    let (header, ciphertext) =
        frame
            .split_at_checked(FRAME_HEADER_LEN)
            .ok_or(FrameError::CiphertextTooShort {
                offset,
                clen: 0,
                min: TAG_LEN + 1,
            })?;
    if ciphertext.len() < TAG_LEN + 1 {
        return Err(FrameError::CiphertextTooShort {
            offset,
            clen: ciphertext.len(),
            min: TAG_LEN + 1,
        });
    }
    let rekey = header.first().is_some_and(|c| c & CONTROL_REKEY != 0);
    scratch.clear();
    scratch.extend_from_slice(ciphertext);
    let plen = key
        .open(offset, header, scratch)
        .map_err(|_| FrameError::Authentication { offset })?;
    let plaintext = scratch.get(..plen).unwrap_or_default();
    let (&flags, rest) = plaintext
        .split_first()
        .ok_or(FrameError::CiphertextTooShort {
            offset,
            clen: ciphertext.len(),
            min: TAG_LEN + 1,
        })?;
    let fin = flags & FLAG_FIN != 0;
    let (urgent, data) = if flags & FLAG_URG != 0 {
        let (u, data) = rest
            .split_at_checked(2)
            .ok_or(FrameError::UrgentFieldMissing { offset })?;
        (crate::init::be_u16(u), data)
    } else {
        (None, rest)
    };
    check_urgent(offset, urgent, data.len())?;
    Ok((rekey, fin, urgent, data.to_vec()))
}

/// Seals our direction of a connection: tracks the wire offset, the local
/// generation and the rekey rules.
#[derive(Debug)]
pub struct FrameWriter {
    original_role: Role,
    aead: Aead,
    /// mk\[j\] and our sending key of the local generation j.
    master: MasterKey,
    key: TrafficKey,
    /// While our local generation is ahead of the newest one the peer has
    /// seen a frame of: that generation's mk. The peer counts our
    /// generations by rekey bits, one per frame, so every generation after
    /// it up to the local one still needs its own frame.
    unannounced_after: Option<Box<MasterKey>>,
    next_offset: u64,
    remote_generation: u64,
    fin_sent: bool,
}

/// What a writer must do after the peer's generation advanced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RekeyResponse {
    /// Nothing to send.
    None,
    /// Send a frame now (empty if there is no data): it will carry rekey = 1.
    SendFrameNow,
}

impl FrameWriter {
    /// A writer that starts at generation 0 of `mk0` and puts its first frame
    /// at `first_offset` (see [`first_frame_offset`]). `original_role` is our
    /// role in the ss\[0\] session: it picks k_ab (A) or k_ba (B).
    pub fn new(mk0: &MasterKey, aead: Aead, original_role: Role, first_offset: u64) -> FrameWriter {
        FrameWriter {
            original_role,
            aead,
            master: mk0.clone(),
            key: mk0.sending_key(aead, original_role),
            unannounced_after: None,
            next_offset: first_offset,
            remote_generation: mk0.generation(),
            fin_sent: false,
        }
    }

    /// Wire offset the next frame will get.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    pub fn local_generation(&self) -> u64 {
        self.master.generation()
    }

    /// Highest peer generation reported through [`FrameWriter::on_peer_generation`].
    pub fn remote_generation(&self) -> u64 {
        self.remote_generation
    }

    pub fn fin_sent(&self) -> bool {
        self.fin_sent
    }

    /// The traffic key of the current local generation (for key logs and
    /// tests).
    pub fn current_key(&self) -> &TrafficKey {
        &self.key
    }

    /// Seals `payload` into a frame and appends it to `out`; returns the
    /// offset and length of everything appended. The first frame after a
    /// generation change carries rekey = 1. If the local generation moved
    /// more than one step since our last frame, an empty rekey frame for
    /// each skipped generation goes first (RFC 8548 section 3.8: the peer
    /// advances one generation per rekey bit). On error nothing is appended
    /// and the writer is unchanged.
    pub fn seal(
        &mut self,
        payload: &FramePayload<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(u64, usize), FrameError> {
        if self.fin_sent {
            return Err(FrameError::FinAlreadySent);
        }
        let (start_len, start_offset) = (out.len(), self.next_offset);
        let mut offset = start_offset;
        let rekey = self.unannounced_after.is_some();
        let mut sealed = Ok(());
        if let Some(announced) = &self.unannounced_after {
            let mut skipped = MasterKey::clone(announced);
            while sealed.is_ok()
                && skipped.generation().saturating_add(1) < self.master.generation()
            {
                skipped = skipped.next();
                let key = skipped.sending_key(self.aead, self.original_role);
                sealed = seal_frame(&key, offset, true, &FramePayload::default(), out)
                    .map(|len| offset = offset.saturating_add(len as u64));
            }
        }
        let sealed = sealed.and_then(|()| seal_frame(&self.key, offset, rekey, payload, out));
        let len = match sealed {
            Ok(len) => len,
            Err(e) => {
                out.truncate(start_len);
                return Err(e);
            }
        };
        self.next_offset = offset.saturating_add(len as u64);
        self.unannounced_after = None;
        self.fin_sent = payload.fin;
        Ok((start_offset, out.len().saturating_sub(start_len)))
    }

    /// Initiates rekeying: the next frame goes out under generation + 1 with
    /// rekey = 1. Refused while an earlier rekey is unanswered (which also
    /// keeps us from starting a second empty-frame rekey, RFC 8548 section
    /// 3.8) and after FINp.
    pub fn initiate_rekey(&mut self) -> Result<(), RekeyError> {
        if self.fin_sent {
            return Err(RekeyError::AfterFin);
        }
        if self.local_generation() > self.remote_generation {
            return Err(RekeyError::Outstanding {
                local: self.local_generation(),
                remote: self.remote_generation,
            });
        }
        self.advance();
        Ok(())
    }

    fn advance(&mut self) {
        if self.unannounced_after.is_none() {
            self.unannounced_after = Some(Box::new(self.master.clone()));
        }
        self.master = self.master.next();
        self.key = self.master.sending_key(self.aead, self.original_role);
    }

    /// Tells the writer the peer's generation after a received frame (pass
    /// [`ReceivedFrame::generation`]). When the peer got ahead of us we
    /// follow at once and, unless we already sent FINp, must send a frame.
    pub fn on_peer_generation(&mut self, remote: u64) -> RekeyResponse {
        self.remote_generation = self.remote_generation.max(remote);
        if self.remote_generation <= self.local_generation() {
            return RekeyResponse::None;
        }
        while self.local_generation() < self.remote_generation {
            self.advance();
        }
        if self.fin_sent {
            RekeyResponse::None
        } else {
            RekeyResponse::SendFrameNow
        }
    }
}

/// Reads the peer's wire stream, fed in chunks of any size, and yields only
/// authenticated frames.
///
/// At most one incomplete frame is buffered (at most [`MAX_FRAME_LEN`]
/// bytes). When a frame fails, [`FrameReader::feed`] returns the error and
/// the reader drops the failed frame and everything fed after it: its
/// [`FrameReader::next_offset`] is again the failed frame's offset, so a
/// caller that may drop unacknowledged segments can feed a retransmission
/// from there. A caller that aborts simply stops.
#[derive(Debug)]
pub struct FrameReader {
    peer_original_role: Role,
    aead: Aead,
    master: MasterKey,
    key: TrafficKey,
    next_offset: u64,
    partial: Vec<u8>,
    scratch: Vec<u8>,
    fin_received: bool,
}

impl FrameReader {
    /// A reader for a peer that played `peer_original_role` in the ss\[0\]
    /// session, starting at generation 0 of `mk0` with the peer's first
    /// frame at `first_offset`.
    pub fn new(
        mk0: &MasterKey,
        aead: Aead,
        peer_original_role: Role,
        first_offset: u64,
    ) -> FrameReader {
        FrameReader {
            peer_original_role,
            aead,
            master: mk0.clone(),
            key: mk0.sending_key(aead, peer_original_role),
            next_offset: first_offset,
            partial: Vec::new(),
            scratch: Vec::new(),
            fin_received: false,
        }
    }

    /// Offset of the first wire byte not yet part of an authenticated frame.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Bytes of an incomplete frame held.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// The bytes of the incomplete frame held, from [`FrameReader::next_offset`].
    pub fn partial(&self) -> &[u8] {
        &self.partial
    }

    /// Forgets the incomplete frame, so that its bytes can be fed again
    /// from [`FrameReader::next_offset`] (a caller that learns they were
    /// not the peer's, e.g. a retransmission disagrees with them).
    pub fn discard_partial(&mut self) {
        self.partial.clear();
    }

    /// Offset the next fed byte is taken to have.
    pub fn stream_offset(&self) -> u64 {
        self.next_offset.saturating_add(self.partial.len() as u64)
    }

    pub fn remote_generation(&self) -> u64 {
        self.master.generation()
    }

    /// A frame with FINp has been authenticated: end of stream.
    pub fn fin_received(&self) -> bool {
        self.fin_received
    }

    /// Feeds the next `chunk` of the wire stream; appends every frame it
    /// completes and authenticates to `out`, in order.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<ReceivedFrame>) -> Result<(), FrameError> {
        let result = self.feed_inner(chunk, out);
        if result.is_err() {
            self.partial.clear();
        }
        result
    }

    fn feed_inner(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<ReceivedFrame>,
    ) -> Result<(), FrameError> {
        loop {
            if input.is_empty() {
                return Ok(());
            }
            if self.fin_received {
                return Err(FrameError::DataAfterFin {
                    offset: self.stream_offset(),
                });
            }
            if self.partial.is_empty()
                && let Some(total) = frame_len(input)
                && let Some((frame, rest)) = input.split_at_checked(total)
            {
                self.accept(frame, out)?;
                input = rest;
                continue;
            }
            let target = frame_len(&self.partial).unwrap_or(FRAME_HEADER_LEN);
            let want = target.saturating_sub(self.partial.len()).min(input.len());
            let (head, rest) = input.split_at_checked(want).unwrap_or((input, &[]));
            self.partial.extend_from_slice(head);
            input = rest;
            if let Some(total) = frame_len(&self.partial)
                && self.partial.len() == total
            {
                let frame = std::mem::take(&mut self.partial);
                let accepted = self.accept(&frame, out);
                // Keep the allocation for the next partial frame.
                self.partial = frame;
                self.partial.clear();
                accepted?;
            }
        }
    }

    fn accept(&mut self, frame: &[u8], out: &mut Vec<ReceivedFrame>) -> Result<(), FrameError> {
        let offset = self.next_offset;
        let end = offset
            .checked_add(frame.len() as u64)
            .ok_or(FrameError::OffsetExhausted { offset })?;
        let rekey = frame.first().is_some_and(|c| c & CONTROL_REKEY != 0);
        let (master, key) = if rekey {
            let next = self.master.next();
            let key = next.sending_key(self.aead, self.peer_original_role);
            (Some(next), Some(key))
        } else {
            (None, None)
        };
        let opened = open_frame(
            key.as_ref().unwrap_or(&self.key),
            offset,
            frame,
            &mut self.scratch,
        )?;
        let (_, fin, urgent, data) = opened;
        if let (Some(master), Some(key)) = (master, key) {
            self.master = master;
            self.key = key;
        }
        self.next_offset = end;
        self.fin_received = fin;
        out.push(ReceivedFrame {
            offset,
            wire_len: frame.len(),
            generation: self.master.generation(),
            rekey,
            fin,
            urgent,
            data,
        });
        Ok(())
    }
}
