//! Our sending direction: local kernel segments → frames on the wire.
//!
//! The store keeps, in wire order, every frame the peer has not yet
//! acknowledged completely, with the local byte range it carries. A kernel
//! segment is resolved against it: bytes below `local_next` were framed
//! before and are resent as the stored wire bytes of every frame they touch
//! (whole frames, byte-identical); bytes from `local_next` on become new
//! frames. Because every lookup is a binary search in a deque trimmed from
//! the front by ACKs, the work per segment is linear in the bytes it sends.

use std::collections::VecDeque;
use std::ops::Range;

use tcpcrypt_proto::frame::{FramePayload, FrameWriter, MAX_FRAME_DATA, MAX_FRAME_DATA_URGENT};

use crate::error::EngineError;
use crate::seq::SeqSpace;

/// One frame we sent and the peer has not fully acknowledged.
#[derive(Debug, Clone)]
pub struct OutFrame {
    /// Local (plaintext) offsets the frame's data came from; empty for a
    /// frame with no data (bare FINp, rekey answer).
    pub local: Range<u64>,
    /// Where its bytes sit in the wire stream.
    pub wire: Range<u64>,
    /// The sealed frame exactly as first sent.
    pub bytes: Vec<u8>,
    pub fin: bool,
}

/// Where the FIN sits in both spaces once the kernel sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinPos {
    pub local: u64,
    pub wire: u64,
}

/// What to put on the wire for one kernel segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutPlan {
    /// Send the stored frames at indices `frames` (their bytes are read
    /// with [`OutStream::frame_bytes`] before the stream next changes),
    /// which begin at wire offset `start`, then a FIN if `fin`.
    Send {
        start: u64,
        frames: Range<usize>,
        fin: bool,
    },
    /// The data was kept until the session keys exist.
    Held,
    /// Every byte and the FIN (if any) were already acknowledged by the
    /// peer: nothing to send.
    AlreadyAcked,
    /// The segment carries neither data nor FIN.
    Empty,
}

#[derive(Debug)]
pub struct OutStream {
    space: SeqSpace,
    /// Init message bytes (wire offsets 0..len) while not acknowledged.
    init: Option<Vec<u8>>,
    frames: VecDeque<OutFrame>,
    /// Buffers of acknowledged frames, reused for new ones (a bulk sender
    /// would otherwise allocate one per frame). Never more of them than
    /// frames still in flight, so memory stays within twice the store and
    /// an idle connection keeps none.
    spare: Vec<Vec<u8>>,
    local_next: u64,
    wire_next: u64,
    wire_acked: u64,
    local_acked: u64,
    fin: Option<FinPos>,
    fin_acked: bool,
    /// Kernel data from `local_next` on, kept until keys exist.
    held: Vec<u8>,
    held_fin: bool,
    writer: Option<FrameWriter>,
    /// Application bytes framed so far.
    bytes_framed: u64,
    /// Rekey before the next frame once this many wire bytes were sealed
    /// under the current key (`None`: only follow the peer's rekeys).
    rekey_after: Option<u64>,
    /// Wire bytes sealed since the writer's generation last changed, and
    /// the generation they count for.
    sealed_under_key: (u64, u64),
}

impl OutStream {
    pub fn new(isn: u32) -> OutStream {
        OutStream {
            space: SeqSpace::new(isn),
            init: None,
            frames: VecDeque::new(),
            spare: Vec::new(),
            local_next: 0,
            wire_next: 0,
            wire_acked: 0,
            local_acked: 0,
            fin: None,
            fin_acked: false,
            held: Vec::new(),
            held_fin: false,
            writer: None,
            bytes_framed: 0,
            rekey_after: None,
            sealed_under_key: (0, 0),
        }
    }

    /// Makes us initiate a rekey (RFC 8548 section 3.8) on the first frame
    /// after `bytes` wire bytes were sealed under one key.
    pub fn set_rekey_after(&mut self, bytes: Option<u64>) {
        self.rekey_after = bytes;
    }

    pub fn space(&self) -> SeqSpace {
        self.space
    }

    /// Places our Init message at the start of the wire stream.
    pub fn set_init(&mut self, init: Vec<u8>) {
        self.wire_next = init.len() as u64;
        self.init = Some(init);
    }

    /// The Init bytes while the peer has not acknowledged all of them.
    pub fn unacked_init(&self) -> Option<&[u8]> {
        self.init.as_deref()
    }

    pub fn has_keys(&self) -> bool {
        self.writer.is_some()
    }

    pub fn wire_next(&self) -> u64 {
        self.wire_next
    }

    pub fn local_next(&self) -> u64 {
        self.local_next
    }

    pub fn wire_acked(&self) -> u64 {
        self.wire_acked
    }

    pub fn fin(&self) -> Option<FinPos> {
        self.fin
    }

    pub fn fin_acked(&self) -> bool {
        self.fin_acked
    }

    pub fn bytes_framed(&self) -> u64 {
        self.bytes_framed
    }

    /// Bytes of wire data kept for retransmission (frames and Init).
    pub fn stored_bytes(&self) -> usize {
        self.frames.iter().map(|f| f.bytes.len()).sum::<usize>()
            + self.init.as_ref().map_or(0, Vec::len)
    }

    /// Installs the frame writer; returns the plan for data held so far
    /// (framed in pieces of at most `chunk` bytes so each fits a packet).
    pub fn set_writer(
        &mut self,
        writer: FrameWriter,
        chunk: usize,
    ) -> Result<Option<OutPlan>, EngineError> {
        self.writer = Some(writer);
        let held = std::mem::take(&mut self.held);
        let fin = std::mem::replace(&mut self.held_fin, false);
        if held.is_empty() && !fin {
            return Ok(None);
        }
        let first = self.frames.len();
        let start = self.wire_next;
        let pieces: Vec<&[u8]> = if held.is_empty() {
            vec![&[][..]]
        } else {
            held.chunks(chunk.max(1)).collect()
        };
        let n = pieces.len();
        for (i, piece) in pieces.into_iter().enumerate() {
            self.push_frame(piece, fin && i + 1 == n, None)?;
        }
        Ok(Some(self.plan_from(first, start)))
    }

    /// Seals and stores one new frame at the end of both streams.
    fn push_frame(
        &mut self,
        data: &[u8],
        fin: bool,
        urgent: Option<u16>,
    ) -> Result<(), EngineError> {
        let writer = self.writer.as_mut().ok_or(EngineError::NoKeys)?;
        let (generation, sealed) = &mut self.sealed_under_key;
        if writer.local_generation() != *generation {
            // The peer's rekey moved us to a new key as well.
            *generation = writer.local_generation();
            *sealed = 0;
        }
        if self.rekey_after.is_some_and(|limit| *sealed >= limit) && writer.initiate_rekey().is_ok()
        {
            // Refused only while our previous rekey is unanswered or after
            // FINp; then the next frame tries again.
            *generation = writer.local_generation();
            *sealed = 0;
        }
        let mut bytes = self.spare.pop().unwrap_or_default();
        bytes.clear();
        bytes.reserve(data.len() + 22);
        let (_, len) = writer.seal(&FramePayload { fin, urgent, data }, &mut bytes)?;
        *sealed += len as u64;
        let local = self.local_next..self.local_next + data.len() as u64;
        let wire = self.wire_next..self.wire_next + len as u64;
        self.local_next = local.end;
        self.wire_next = wire.end;
        self.bytes_framed += data.len() as u64;
        if fin {
            self.fin = Some(FinPos {
                local: local.end,
                wire: wire.end,
            });
        }
        self.frames.push_back(OutFrame {
            local,
            wire,
            bytes,
            fin,
        });
        Ok(())
    }

    /// An empty frame to send at once (the answer to a peer's rekey).
    pub fn push_empty_frame(&mut self) -> Result<OutPlan, EngineError> {
        let first = self.frames.len();
        let start = self.wire_next;
        self.push_frame(&[], false, None)?;
        Ok(self.plan_from(first, start))
    }

    pub fn writer_mut(&mut self) -> Option<&mut FrameWriter> {
        self.writer.as_mut()
    }

    /// Sends the stored frames from index `first` to the end.
    fn plan_from(&self, first: usize, start: u64) -> OutPlan {
        let frames = first.min(self.frames.len())..self.frames.len();
        let fin = self.ends_with_fin(&frames);
        OutPlan::Send { start, frames, fin }
    }

    /// The wire bytes of a plan's frames, frame by frame: what a packet
    /// carries, written into it without being joined first. Indices past
    /// the store (a plan kept across a change) give nothing.
    pub fn frame_bytes(&self, frames: &Range<usize>) -> impl Iterator<Item = &[u8]> + Clone {
        let end = frames.end.min(self.frames.len());
        let start = frames.start.min(end);
        self.frames.range(start..end).map(|f| f.bytes.as_slice())
    }

    /// Whether the last of `frames` carries the FIN (false for none).
    fn ends_with_fin(&self, frames: &Range<usize>) -> bool {
        self.frames
            .range(frames.clone())
            .next_back()
            .is_some_and(|f| f.fin)
    }

    /// The wire bytes of a plan's frames in one buffer, for a plan that is
    /// cut into several packets.
    pub fn joined(&self, frames: &Range<usize>) -> Vec<u8> {
        self.frame_bytes(frames).collect::<Vec<_>>().concat()
    }

    /// Resolves a kernel segment: sequence number, payload, FIN flag and,
    /// with URG, the local offset of the byte after the urgent data. New
    /// data goes into frames of at most `frame_limit` bytes (clamped to
    /// 1..=`MAX_FRAME_DATA`): a segment no larger becomes one frame.
    pub fn on_kernel_segment(
        &mut self,
        seq: u32,
        data: &[u8],
        fin: bool,
        urgent_end: Option<u64>,
        frame_limit: usize,
    ) -> Result<OutPlan, EngineError> {
        if data.is_empty() && !fin {
            return Ok(OutPlan::Empty);
        }
        let l0 = self.space.offset(seq, self.local_next as i64);
        let Ok(l0) = u64::try_from(l0) else {
            return Ok(OutPlan::Empty);
        };
        let l1 = l0 + data.len() as u64;
        let framed_end = self.local_next;
        if self.writer.is_none() {
            let held_end = framed_end + self.held.len() as u64;
            if l0 <= held_end && l1 > held_end {
                let skip = usize::try_from(held_end - l0).unwrap_or(usize::MAX);
                self.held
                    .extend_from_slice(data.get(skip..).unwrap_or_default());
            }
            if fin && l1 >= held_end {
                self.held_fin = true;
            }
            return Ok(OutPlan::Held);
        }
        if l0 > framed_end {
            // A gap in the kernel's own stream cannot happen; refuse to guess.
            return Ok(OutPlan::Empty);
        }
        // Old part: stored frames touching [l0, min(l1, framed_end)).
        let old_end = l1.min(framed_end);
        // A frame with no data (rekey answer, bare FINp) at l0 comes first
        // in a retransmission from l0: resent frames start at the lowest
        // unacknowledged one, or the peer keeps waiting for it. Not on a
        // segment of new data only, which a frame still in flight must not
        // follow each time.
        let resend_empty = l0 < framed_end || (fin && self.fin.is_some());
        let first_old = self.frames.partition_point(|f| {
            f.local.end < l0 || (f.local.end == l0 && !(resend_empty && f.local.is_empty()))
        });
        let mut last_old = self.frames.partition_point(|f| f.local.start < old_end);
        if fin && self.fin.is_some() {
            last_old = self.frames.len();
        }
        // New part.
        if l1 > framed_end || (fin && self.fin.is_none() && l1 == framed_end) {
            let skip = usize::try_from(framed_end - l0).unwrap_or(usize::MAX);
            let fresh = data.get(skip..).unwrap_or_default();
            let limit = frame_limit.clamp(1, MAX_FRAME_DATA);
            self.frame_new_data(fresh, fin && self.fin.is_none(), urgent_end, limit)?;
            last_old = self.frames.len();
        }
        let first = first_old.min(last_old);
        if first == self.frames.len() {
            // Nothing stored is touched: all acknowledged already, except
            // perhaps a FIN whose frame was acknowledged without it.
            return Ok(match self.fin {
                Some(f) if fin && !self.fin_acked => OutPlan::Send {
                    start: f.wire,
                    frames: self.frames.len()..self.frames.len(),
                    fin: true,
                },
                _ => OutPlan::AlreadyAcked,
            });
        }
        let start = self
            .frames
            .get(first)
            .map_or(self.wire_next, |f| f.wire.start);
        let frames = first..last_old.max(first);
        let wire_fin = self.ends_with_fin(&frames);
        Ok(OutPlan::Send {
            start,
            frames,
            fin: wire_fin,
        })
    }

    fn frame_new_data(
        &mut self,
        fresh: &[u8],
        fin: bool,
        urgent_end: Option<u64>,
        frame_limit: usize,
    ) -> Result<(), EngineError> {
        if fresh.is_empty() {
            return self.push_frame(&[], fin, None);
        }
        let mut rest = fresh;
        while !rest.is_empty() {
            let start = self.local_next;
            // Urgent data: the last urgent byte is urgent_end - 1; URGp goes
            // on the frame holding it, as an index into that frame's data.
            let max_plain = rest.len().min(frame_limit);
            let urg = urgent_end
                .filter(|e| *e > start && *e <= start + max_plain as u64)
                .map(|e| e - 1 - start);
            let max = if urg.is_some() {
                MAX_FRAME_DATA_URGENT.min(frame_limit)
            } else {
                frame_limit
            };
            let n = rest.len().min(max);
            let urgent = urg
                .filter(|u| *u < n as u64)
                .and_then(|u| u16::try_from(u).ok());
            let (piece, tail) = rest.split_at(n);
            self.push_frame(piece, fin && tail.is_empty(), urgent)?;
            rest = tail;
        }
        Ok(())
    }

    /// Takes a wire ACK from the peer; returns the local offset to ACK to
    /// the kernel: the end of the last frame the peer has completely, or
    /// one past the FIN once that is acknowledged.
    pub fn on_wire_ack(&mut self, ack: u32) -> i64 {
        let a = self.space.offset(ack, self.wire_acked as i64);
        let limit = self.wire_next as i64 + i64::from(self.fin.is_some());
        if a > self.wire_acked as i64 && a <= limit {
            // Non-negative: a > wire_acked >= 0.
            let a = a as u64;
            if self.init.as_ref().is_some_and(|i| a >= i.len() as u64) {
                self.init = None;
            }
            while let Some(f) = self.frames.front() {
                if f.wire.end > a {
                    break;
                }
                self.local_acked = f.local.end;
                if let Some(f) = self.frames.pop_front() {
                    self.spare.push(f.bytes);
                }
            }
            if self.frames.is_empty() {
                self.spare = Vec::new();
            } else {
                self.spare.truncate(self.frames.len());
            }
            if let Some(f) = self.fin
                && a > f.wire
            {
                self.fin_acked = true;
            }
            self.wire_acked = a;
        }
        self.local_ack()
    }

    /// The local offset the kernel may consider acknowledged.
    pub fn local_ack(&self) -> i64 {
        match self.fin {
            Some(f) if self.fin_acked => f.local as i64 + 1,
            _ => self.local_acked as i64,
        }
    }

    /// Maps a SACK block from wire to local sequence numbers: the frames
    /// lying wholly inside it. `None` if it covers no complete frame.
    pub fn map_sack(&self, left: u32, right: u32, local: &SeqSpace) -> Option<(u32, u32)> {
        let wl = self.space.offset(left, self.wire_acked as i64);
        let wr = self.space.offset(right, self.wire_acked as i64);
        if wr <= wl || wl < self.wire_acked as i64 {
            return None;
        }
        let k = self.frames.partition_point(|f| (f.wire.start as i64) < wl);
        let m = self.frames.partition_point(|f| (f.wire.end as i64) <= wr);
        if k >= m {
            return None;
        }
        let (first, last) = (self.frames.get(k)?, self.frames.get(m - 1)?);
        if first.local.start >= last.local.end {
            return None;
        }
        Some((
            local.seq(first.local.start as i64),
            local.seq(last.local.end as i64),
        ))
    }

    /// Wire offset for the sequence number of a segment without data
    /// (pure ACK, RST) whose local sequence number is `seq`.
    /// A segment below the kernel's own ACK point (a keepalive probe) maps
    /// to one below the wire ACK point, so the peer still answers it.
    pub fn wire_offset_for_control(&self, seq: u32) -> i64 {
        let l = self.space.offset(seq, self.local_next as i64);
        if l < self.local_ack() {
            return self.wire_acked as i64 - 1;
        }
        if let Some(f) = self.fin
            && l > f.local as i64
        {
            return f.wire as i64 + 1;
        }
        if l >= self.local_next as i64 {
            return self.wire_next as i64;
        }
        let i = self.frames.partition_point(|f| (f.local.start as i64) < l);
        self.frames
            .get(i)
            .map_or(self.wire_next as i64, |f| f.wire.start as i64)
    }

    /// The local offset of the frame holding wire offset `wire` (its start),
    /// kept between what the kernel counts as acknowledged and what it sent.
    pub fn local_offset_for_wire(&self, wire: u64) -> u64 {
        let i = self.frames.partition_point(|f| f.wire.end <= wire);
        let local = self
            .frames
            .get(i)
            .map_or(self.local_next, |f| f.local.start);
        let acked = u64::try_from(self.local_ack()).unwrap_or(0);
        local.clamp(acked.min(self.local_next), self.local_next)
    }

    /// Wire bytes sent but not acknowledged, and their local equivalent.
    pub fn in_flight(&self) -> (u64, u64) {
        (
            self.wire_next.saturating_sub(self.wire_acked),
            self.local_next.saturating_sub(self.local_acked),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcpcrypt_proto::frame::FRAME_OVERHEAD;
    use tcpcrypt_proto::schedule::SessionSecret;
    use tcpcrypt_proto::{Aead, Role};

    fn writer(first: u64) -> FrameWriter {
        let mk = SessionSecret::from_bytes([7; 32]).master_key(&[]);
        FrameWriter::new(&mk, Aead::Aes128Gcm, Role::A, first)
    }

    fn keyed(init_len: usize) -> OutStream {
        let mut s = OutStream::new(1000);
        s.set_init(vec![0xaa; init_len]);
        s.set_writer(writer(init_len as u64), 1400).unwrap();
        s
    }

    fn seq(off: u64) -> u32 {
        1001 + off as u32
    }

    fn send(s: &mut OutStream, off: u64, len: usize) -> OutPlan {
        s.on_kernel_segment(seq(off), &vec![b'x'; len], false, None, MAX_FRAME_DATA)
            .unwrap()
    }

    #[test]
    fn new_data_becomes_one_frame_after_the_init_bytes() {
        let mut s = keyed(75);
        let OutPlan::Send { start, frames, fin } = send(&mut s, 0, 100) else {
            panic!("expected a send")
        };
        let bytes = s.joined(&frames);
        assert_eq!((start, bytes.len(), fin), (75, 100 + FRAME_OVERHEAD, false));
        assert_eq!(s.wire_next(), 75 + 120);
    }

    #[test]
    fn retransmission_with_other_boundaries_resends_whole_stored_frames() {
        let mut s = keyed(0);
        let a = send(&mut s, 0, 100);
        let b = send(&mut s, 100, 100);
        let (OutPlan::Send { frames: fa, .. }, OutPlan::Send { frames: fb, .. }) = (a, b) else {
            panic!("expected sends")
        };
        let (fa, fb) = (s.joined(&fa), s.joined(&fb));
        // The kernel retransmits 50..150: both frames, byte-identical.
        let OutPlan::Send { start, frames, .. } = send(&mut s, 50, 100) else {
            panic!("expected a send")
        };
        let bytes = s.joined(&frames);
        assert_eq!(start, 0);
        assert_eq!(bytes, [fa.clone(), fb].concat());
        // A retransmission merged with new data: old frames then a new one.
        let OutPlan::Send { start, frames, .. } = send(&mut s, 100, 150) else {
            panic!("expected a send")
        };
        let bytes = s.joined(&frames);
        assert_eq!(start, 120);
        assert_eq!(bytes.len(), 120 + 50 + FRAME_OVERHEAD);
        assert_eq!(s.local_next(), 250);
    }

    #[test]
    fn partial_wire_ack_is_not_passed_to_the_kernel() {
        let mut s = keyed(0);
        send(&mut s, 0, 100);
        send(&mut s, 100, 100);
        assert_eq!(s.on_wire_ack(seq(60)), 0, "inside the first frame");
        assert_eq!(s.on_wire_ack(seq(120)), 100, "first frame complete");
        assert_eq!(s.on_wire_ack(seq(239)), 100);
        assert_eq!(s.on_wire_ack(seq(240)), 200);
        // Everything acknowledged: a late retransmission sends nothing.
        assert_eq!(send(&mut s, 0, 200), OutPlan::AlreadyAcked);
    }

    #[test]
    fn an_ack_of_the_init_releases_it_but_acks_no_local_byte() {
        let mut s = keyed(75);
        assert_eq!(s.on_wire_ack(seq(75)), 0);
        assert!(s.unacked_init().is_none());
    }

    #[test]
    fn fin_becomes_an_empty_finp_frame_and_its_ack_maps_one_past() {
        let mut s = keyed(0);
        send(&mut s, 0, 10);
        let OutPlan::Send { start, frames, fin } = s
            .on_kernel_segment(seq(10), &[], true, None, MAX_FRAME_DATA)
            .unwrap()
        else {
            panic!("expected a send")
        };
        let bytes = s.joined(&frames);
        assert_eq!((start, bytes.len(), fin), (30, FRAME_OVERHEAD, true));
        assert_eq!(
            s.fin(),
            Some(FinPos {
                local: 10,
                wire: 50
            })
        );
        assert_eq!(s.on_wire_ack(seq(50)), 10);
        assert_eq!(s.on_wire_ack(seq(51)), 11);
    }

    #[test]
    fn sack_blocks_shrink_to_whole_frames() {
        let mut s = keyed(0);
        for i in 0..4 {
            send(&mut s, i * 100, 100);
        }
        let local = SeqSpace::new(1000);
        // Wire 130..480 holds frames 2 and 3 (120..240 is cut).
        assert_eq!(
            s.map_sack(seq(130), seq(480), &local),
            Some((seq(200), seq(400)))
        );
        assert_eq!(s.map_sack(seq(130), seq(200), &local), None);
    }

    #[test]
    fn data_before_keys_is_held_and_framed_later() {
        let mut s = OutStream::new(1000);
        s.set_init(vec![1; 10]);
        assert_eq!(send(&mut s, 0, 30), OutPlan::Held);
        // A kernel retransmission overlapping what is held adds only the rest.
        assert_eq!(send(&mut s, 20, 30), OutPlan::Held);
        let plan = s.set_writer(writer(10), 20).unwrap();
        let Some(OutPlan::Send { start, frames, .. }) = plan else {
            panic!("expected a send")
        };
        let bytes = s.joined(&frames);
        assert_eq!(start, 10);
        assert_eq!(bytes.len(), 50 + 3 * FRAME_OVERHEAD);
        assert_eq!(s.local_next(), 50);
    }

    #[test]
    fn acknowledged_frames_lend_their_buffers_to_new_ones_while_data_is_in_flight() {
        let mut s = keyed(0);
        for i in 0..4 {
            send(&mut s, i * 100, 100);
        }
        // Frames are 120 wire bytes: the first two are acknowledged.
        assert_eq!(s.on_wire_ack(seq(240)), 200);
        assert_eq!(s.spare.len(), 2, "two buffers kept, two frames in flight");
        let reused = s.spare.last().map(|b| b.as_ptr());
        send(&mut s, 400, 100);
        assert_eq!(s.spare.len(), 1);
        assert_eq!(s.frames.back().map(|f| f.bytes.as_ptr()), reused);
        // The recycled buffer holds the new frame only.
        let OutPlan::Send { frames, .. } = send(&mut s, 400, 100) else {
            panic!("expected a resend")
        };
        assert_eq!(s.joined(&frames).len(), 100 + FRAME_OVERHEAD);
        // Fewer frames in flight than spare buffers: the extra ones go.
        assert_eq!(s.on_wire_ack(seq(480)), 400);
        assert_eq!((s.frames.len(), s.spare.len()), (1, 1));
        // Nothing in flight: an idle connection keeps no buffers.
        assert_eq!(s.on_wire_ack(seq(600)), 500);
        assert_eq!(s.spare.capacity(), 0);
    }
}
