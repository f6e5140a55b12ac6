//! The peer's sending direction: wire segments → authenticated plaintext
//! for the local kernel.
//!
//! Wire bytes are consumed strictly in order: first the peer's Init message
//! (collected here, handed to the key exchange), then frames through the
//! protocol crate's `FrameReader`. Segments ahead of the consumed point wait
//! in a bounded out-of-order store. Each authenticated frame gets the next
//! local (plaintext) range and stays in `delivered` until the kernel ACKs
//! all of it, so a peer retransmission can be answered from it and a kernel
//! ACK maps back to the wire end of the last frame it covers completely.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;

use tcpcrypt_proto::Tep;
use tcpcrypt_proto::frame::{FrameReader, ReceivedFrame};
use tcpcrypt_proto::init::{InitKind, InitProgress, init_progress};

use crate::error::EngineError;
use crate::outbound::FinPos;
use crate::seq::SeqSpace;

/// Most wire bytes kept ahead of a gap, per connection.
pub const MAX_OUT_OF_ORDER_BYTES: usize = 4 << 20;

/// What one segment may add to the out-of-order store.
#[derive(Debug, Clone, Copy)]
pub struct OooLimits {
    /// Wire offset past which nothing is kept: the right edge of the window
    /// we advertised (the kernel would drop data beyond its window too).
    pub right: u64,
    /// Most separate pieces kept (adjacent and overlapping ones merge).
    pub max_pieces: usize,
    /// Bytes this connection may still add, from the engine-wide budget.
    pub budget: usize,
}

impl OooLimits {
    /// No limit but the per-connection byte bound, for unit tests.
    pub fn unlimited() -> OooLimits {
        OooLimits {
            right: u64::MAX,
            max_pieces: usize::MAX,
            budget: usize::MAX,
        }
    }
}

/// A frame we authenticated and handed (or will hand) to the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFrame {
    pub local: Range<u64>,
    pub wire: Range<u64>,
    /// Shared with the copy kept in `delivered` until the kernel ACKs it.
    pub data: Arc<Vec<u8>>,
    pub fin: bool,
    /// Index of the last urgent byte within `data` (URGp).
    pub urgent: Option<u16>,
    pub rekey_generation: Option<u64>,
}

#[derive(Debug)]
enum Phase {
    /// Collecting the peer's Init message.
    Init {
        kind: InitKind,
        tep: Tep,
        buf: Vec<u8>,
    },
    /// Init message complete; frames wait for the keys.
    AwaitKeys,
    Frames {
        reader: FrameReader,
        /// Wire offset minus reader offset (non-zero only if frame offsets
        /// do not count the Init bytes).
        shift: u64,
    },
}

/// What one inbound segment produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct InOutcome {
    /// The peer's complete Init message, the first time it is complete.
    pub init: Option<Vec<u8>>,
    /// Frames authenticated by this segment, in order.
    pub frames: Vec<InFrame>,
    /// The segment held nothing we had not consumed already.
    pub duplicate: bool,
    /// The segment lies beyond a gap and was kept for later.
    pub stored_ahead: bool,
    /// The segment lies beyond a gap and was not kept: a limit was reached.
    pub refused_ahead: bool,
}

#[derive(Debug)]
pub struct InStream {
    space: SeqSpace,
    phase: Phase,
    /// Wire bytes below this offset were consumed (Init or frames).
    consumed: u64,
    ooo: BTreeMap<u64, Vec<u8>>,
    ooo_bytes: usize,
    /// The contiguous run of kept segments the latest one belongs to (wire
    /// offsets), reported to the peer as a SACK block.
    sack_hint: Option<(u64, u64)>,
    delivered: VecDeque<InFrame>,
    local_next: u64,
    /// What the kernel's ACKs map to on the wire (starts past the Init).
    wire_acked: u64,
    local_acked: u64,
    fin: Option<FinPos>,
    fin_acked: bool,
    bytes_received: u64,
}

impl InStream {
    /// A stream that starts with the peer's Init message of `kind`.
    pub fn with_init(isn: u32, kind: InitKind, tep: Tep) -> InStream {
        InStream::new(
            isn,
            Phase::Init {
                kind,
                tep,
                buf: Vec::new(),
            },
        )
    }

    /// A stream whose frames start at once (resumed session).
    pub fn without_init(isn: u32) -> InStream {
        InStream::new(isn, Phase::AwaitKeys)
    }

    fn new(isn: u32, phase: Phase) -> InStream {
        InStream {
            space: SeqSpace::new(isn),
            phase,
            consumed: 0,
            ooo: BTreeMap::new(),
            ooo_bytes: 0,
            sack_hint: None,
            delivered: VecDeque::new(),
            local_next: 0,
            wire_acked: 0,
            local_acked: 0,
            fin: None,
            fin_acked: false,
            bytes_received: 0,
        }
    }

    pub fn space(&self) -> SeqSpace {
        self.space
    }

    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    pub fn local_next(&self) -> u64 {
        self.local_next
    }

    pub fn fin(&self) -> Option<FinPos> {
        self.fin
    }

    pub fn bytes_received(&self) -> u64 {
        self.bytes_received
    }

    pub fn has_keys(&self) -> bool {
        matches!(self.phase, Phase::Frames { .. })
    }

    /// Wire bytes of frames started but not complete, plus out-of-order
    /// bytes: what we hold without having acknowledged it.
    pub fn held_bytes(&self) -> usize {
        let partial = match &self.phase {
            Phase::Frames { reader, .. } => reader.buffered(),
            Phase::Init { buf, .. } => buf.len(),
            Phase::AwaitKeys => 0,
        };
        partial + self.ooo_bytes
    }

    /// Installs the frame reader once the keys exist; frames whose bytes
    /// already arrived are authenticated now.
    pub fn set_reader(
        &mut self,
        reader: FrameReader,
        first_frame_wire: u64,
    ) -> Result<InOutcome, EngineError> {
        let shift = first_frame_wire.saturating_sub(reader.next_offset());
        self.phase = Phase::Frames { reader, shift };
        let mut out = InOutcome::default();
        self.drain(&mut out)?;
        Ok(out)
    }

    /// Wire bytes held beyond a gap.
    pub fn out_of_order_bytes(&self) -> usize {
        self.ooo_bytes
    }

    /// The next wire offset the peer's segments should start at, as the
    /// receiving TCP would see it: past every byte consumed and past the
    /// peer's FIN once it arrived.
    pub fn rcv_nxt(&self) -> i64 {
        match self.fin {
            Some(f) if self.consumed >= f.wire => f.wire as i64 + 1,
            _ => self.consumed as i64,
        }
    }

    /// Takes the payload of one wire segment.
    pub fn on_segment(
        &mut self,
        seq: u32,
        data: &[u8],
        limits: &OooLimits,
    ) -> Result<InOutcome, EngineError> {
        let mut out = InOutcome::default();
        if data.is_empty() {
            return Ok(out);
        }
        let w0 = self.space.offset(seq, self.consumed as i64);
        let w1 = w0 + data.len() as i64;
        self.recheck_partial_frame(w0, data);
        let consumed = self.consumed as i64;
        if w1 <= consumed {
            out.duplicate = true;
            return Ok(out);
        }
        if w0 > consumed {
            let (a, b) = (w0 as u64, (w1 as u64).min(limits.right));
            let ahead = usize::try_from(w0 - consumed).unwrap_or(usize::MAX);
            let len = usize::try_from(b.saturating_sub(a)).unwrap_or(usize::MAX);
            let fits = len > 0
                && ahead < MAX_OUT_OF_ORDER_BYTES
                && self.ooo_bytes.saturating_add(len) <= MAX_OUT_OF_ORDER_BYTES
                && len <= limits.budget;
            if fits && self.store(a, &data[..len], limits.max_pieces) {
                self.sack_hint = match self.sack_hint {
                    Some((l, r)) if a <= r && b >= l => Some((l.min(a), r.max(b))),
                    _ => Some((a, b)),
                };
                out.stored_ahead = true;
            } else {
                out.refused_ahead = true;
            }
            return Ok(out);
        }
        let skip = usize::try_from(consumed - w0).unwrap_or(usize::MAX);
        self.feed(data.get(skip..).unwrap_or_default(), &mut out)?;
        self.drain(&mut out)?;
        if self.sack_hint.is_some_and(|(l, _)| l <= self.consumed) {
            self.sack_hint = None;
        }
        Ok(out)
    }

    /// Keeps `bytes` (wire offsets from `at`) beyond the gap, merged with
    /// the pieces they touch; bytes already held win, as in TCP. Returns
    /// false, keeping nothing, if that would need more than `max_pieces`
    /// pieces.
    /// Bytes of a frame not complete yet are not authenticated: if a
    /// segment brings other bytes for the same offsets, one of the two was
    /// forged, and keeping the first would stall the stream (a forged
    /// length can make the reader wait for up to 64 KiB that never come).
    /// The later bytes win: a genuine retransmission displaces an earlier
    /// forgery, and a later forgery fails authentication and is displaced
    /// by the next retransmission in turn.
    fn recheck_partial_frame(&mut self, w0: i64, data: &[u8]) {
        let Phase::Frames { reader, shift } = &mut self.phase else {
            return;
        };
        let held = reader.partial();
        if held.is_empty() {
            return;
        }
        let frame_start = (reader.next_offset() + *shift) as i64;
        let from = w0.max(frame_start);
        let to = (w0 + data.len() as i64).min(self.consumed as i64);
        if from >= to {
            return;
        }
        let (Ok(a), Ok(b), Ok(n)) = (
            usize::try_from(from - frame_start),
            usize::try_from(from - w0),
            usize::try_from(to - from),
        ) else {
            return;
        };
        if held.get(a..a + n) != data.get(b..b + n) {
            reader.discard_partial();
            self.consumed = frame_start as u64;
        }
    }

    fn store(&mut self, at: u64, bytes: &[u8], max_pieces: usize) -> bool {
        let mut start = at;
        let mut data = bytes.to_vec();
        // A piece starting at or before `at` that reaches it: extend it.
        if let Some((&p, prev)) = self.ooo.range(..=at).next_back()
            && p + prev.len() as u64 >= at
        {
            let mut merged = prev.clone();
            let overlap = usize::try_from(p + prev.len() as u64 - at).unwrap_or(usize::MAX);
            merged.extend_from_slice(bytes.get(overlap..).unwrap_or_default());
            start = p;
            data = merged;
        }
        // Pieces that start inside or right after it: absorb them.
        let end = start + data.len() as u64;
        let absorbed: Vec<u64> = self.ooo.range(start..=end).map(|(k, _)| *k).collect();
        let merging_pieces = absorbed.len();
        if merging_pieces == 0 && self.ooo.len() >= max_pieces {
            return false;
        }
        for k in absorbed {
            if let Some(piece) = self.ooo.remove(&k) {
                self.ooo_bytes -= piece.len();
                let piece_end = k + piece.len() as u64;
                let end = start + data.len() as u64;
                if piece_end > end {
                    let skip = usize::try_from(end - k).unwrap_or(usize::MAX);
                    data.extend_from_slice(piece.get(skip..).unwrap_or_default());
                }
                // Bytes held before win where they overlap the new ones.
                let from = usize::try_from(k - start).unwrap_or(usize::MAX);
                let n = piece.len().min(data.len().saturating_sub(from));
                if let (Some(dst), Some(src)) = (data.get_mut(from..from + n), piece.get(..n)) {
                    dst.copy_from_slice(src);
                }
            }
        }
        self.ooo_bytes += data.len();
        self.ooo.insert(start, data);
        true
    }

    /// Feeds stored segments that have become contiguous.
    fn drain(&mut self, out: &mut InOutcome) -> Result<(), EngineError> {
        while let Some(entry) = self.ooo.first_entry() {
            if *entry.key() > self.consumed || matches!(self.phase, Phase::AwaitKeys) {
                break;
            }
            let at = *entry.key();
            let bytes = entry.remove();
            self.ooo_bytes -= bytes.len();
            let skip = usize::try_from(self.consumed - at).unwrap_or(usize::MAX);
            if let Some(rest) = bytes.get(skip..) {
                self.feed(rest, out)?;
            }
        }
        Ok(())
    }

    /// Consumes in-order bytes at `self.consumed`.
    fn feed(&mut self, mut bytes: &[u8], out: &mut InOutcome) -> Result<(), EngineError> {
        while !bytes.is_empty() {
            match &mut self.phase {
                Phase::Init { kind, tep, buf } => {
                    let progress = init_progress(*kind, *tep, buf)
                        .map_err(|e| EngineError::Keying(e.to_string()))?;
                    let need = match progress {
                        InitProgress::NeedAtLeast(n) => n.saturating_sub(buf.len()).max(1),
                        InitProgress::Complete(_) => 0,
                    };
                    let n = need.min(bytes.len());
                    buf.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    self.consumed += n as u64;
                    if let InitProgress::Complete(len) = init_progress(*kind, *tep, buf)
                        .map_err(|e| EngineError::Keying(e.to_string()))?
                    {
                        let mut msg = std::mem::take(buf);
                        msg.truncate(len);
                        self.wire_acked = self.consumed;
                        self.phase = Phase::AwaitKeys;
                        out.init = Some(msg);
                    }
                }
                Phase::AwaitKeys => {
                    // Kept at `consumed` until the reader exists; in order,
                    // so it merges into one piece.
                    self.store(self.consumed, bytes, usize::MAX);
                    return Ok(());
                }
                Phase::Frames { reader, shift } => {
                    let shift = *shift;
                    let mut frames = Vec::new();
                    let result = reader.feed(bytes, &mut frames);
                    let resume_at = reader.next_offset() + shift;
                    for f in frames {
                        self.accept(f, shift, out);
                    }
                    if let Err(e) = result {
                        // Forget everything from the bad frame on: the
                        // genuine bytes will come again, since none of them
                        // was acknowledged.
                        self.consumed = resume_at;
                        self.ooo.clear();
                        self.ooo_bytes = 0;
                        self.sack_hint = None;
                        return Err(e.into());
                    }
                    self.consumed += bytes.len() as u64;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn accept(&mut self, f: ReceivedFrame, shift: u64, out: &mut InOutcome) {
        let wire_start = f.offset + shift;
        let wire = wire_start..wire_start + f.wire_len as u64;
        let local = self.local_next..self.local_next + f.data.len() as u64;
        self.local_next = local.end;
        self.bytes_received += f.data.len() as u64;
        if f.fin {
            self.fin = Some(FinPos {
                local: local.end,
                wire: wire.end,
            });
        }
        let frame = InFrame {
            local,
            wire,
            data: Arc::new(f.data),
            fin: f.fin,
            urgent: f.urgent,
            rekey_generation: f.rekey.then_some(f.generation),
        };
        self.delivered.push_back(frame.clone());
        out.frames.push(frame);
    }

    /// The run of segments kept beyond a gap, as wire sequence numbers.
    pub fn sack_block(&self) -> Option<(u32, u32)> {
        self.sack_hint
            .map(|(l, r)| (self.space.seq(l as i64), self.space.seq(r as i64)))
    }

    /// Frames not yet acknowledged by the kernel that overlap wire offsets
    /// `[w0, w1)`: what to deliver again when the peer retransmits.
    pub fn undelivered_in(&self, seq: u32, len: usize) -> Vec<InFrame> {
        let w0 = self.space.offset(seq, self.consumed as i64);
        let w1 = w0 + len as i64;
        // `delivered` is in wire order: a search, not a scan, since forged
        // duplicates may ask this for every segment.
        let first = self
            .delivered
            .partition_point(|f| (f.wire.end as i64) <= w0);
        self.delivered
            .range(first..)
            .take_while(|f| (f.wire.start as i64) < w1)
            .cloned()
            .collect()
    }

    /// Maps the kernel's ACK to the wire: the end of the last frame whose
    /// plaintext it covers completely, past the FIN once that is covered.
    pub fn on_local_ack(&mut self, ack: u32) -> i64 {
        let l = self.space.offset(ack, self.local_acked as i64);
        if l > self.local_acked as i64 && l <= self.local_next as i64 + 1 {
            while let Some(f) = self.delivered.front() {
                if (f.local.end as i64) > l {
                    break;
                }
                self.wire_acked = f.wire.end;
                self.delivered.pop_front();
            }
            if let Some(f) = self.fin
                && l > f.local as i64
            {
                self.fin_acked = true;
            }
            self.local_acked = l.min(self.local_next as i64).max(0) as u64;
        }
        self.wire_ack()
    }

    /// Local offset for a segment from the peer that brings the kernel no
    /// data (pure ACK, window update, RST): the next byte the kernel
    /// expects, or one past the peer's FIN for a segment the peer sent
    /// after its FIN, since the FIN occupies a sequence number in both
    /// spaces and the kernel discards (or, for a RST, only challenges) a
    /// segment below its next expected number.
    pub fn local_offset_for_control(&self, seq: u32) -> i64 {
        let w = self.space.offset(seq, self.consumed as i64);
        match self.fin {
            Some(f) if w > f.wire as i64 => f.local as i64 + 1,
            _ => self.local_next as i64,
        }
    }

    /// The local offset the kernel expects next as far as its ACKs show:
    /// one past the peer's FIN once it acknowledged that, for segments
    /// the engine makes itself (a RST on abort).
    pub fn local_expected(&self) -> i64 {
        match self.fin {
            Some(f) if self.fin_acked => f.local as i64 + 1,
            _ => self.local_next as i64,
        }
    }

    pub fn wire_ack(&self) -> i64 {
        match self.fin {
            Some(f) if self.fin_acked => f.wire as i64 + 1,
            _ => self.wire_acked as i64,
        }
    }

    /// Whether the kernel has acknowledged everything delivered so far.
    pub fn all_acked_by_kernel(&self) -> bool {
        self.delivered.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcpcrypt_proto::frame::{FramePayload, FrameWriter};
    use tcpcrypt_proto::schedule::SessionSecret;
    use tcpcrypt_proto::{Aead, Role};

    const ISN: u32 = 5000;

    fn keys() -> (FrameWriter, FrameReader) {
        let mk = SessionSecret::from_bytes([3; 32]).master_key(&[]);
        (
            FrameWriter::new(&mk, Aead::Aes128Gcm, Role::A, 0),
            FrameReader::new(&mk, Aead::Aes128Gcm, Role::A, 0),
        )
    }

    fn seq(off: u64) -> u32 {
        ISN + 1 + off as u32
    }

    /// A stream with keys and the wire bytes of frames carrying `datas`.
    fn setup(datas: &[&[u8]]) -> (InStream, Vec<u8>) {
        let (mut w, r) = keys();
        let mut wire = Vec::new();
        for d in datas {
            w.seal(
                &FramePayload {
                    data: d,
                    ..FramePayload::default()
                },
                &mut wire,
            )
            .unwrap();
        }
        let mut s = InStream::without_init(ISN);
        s.set_reader(r, 0).unwrap();
        (s, wire)
    }

    impl InStream {
        fn on_segment_unlimited(
            &mut self,
            seq: u32,
            data: &[u8],
        ) -> Result<InOutcome, EngineError> {
            self.on_segment(seq, data, &OooLimits::unlimited())
        }
    }

    #[test]
    fn adjacent_and_overlapping_pieces_merge_and_old_bytes_win() {
        let (mut s, wire) = setup(&[b"0123456789abcdefghij"]);
        let far = 5u64;
        for i in (0..10u64).rev() {
            let at = (far + i) as usize;
            s.on_segment_unlimited(seq(far + i), &wire[at..at + 1])
                .unwrap();
        }
        assert_eq!(s.ooo.len(), 1, "ten adjacent one-byte pieces are one piece");
        assert_eq!(s.out_of_order_bytes(), 10);
        let mut forged = wire[12..20].to_vec();
        forged[0] ^= 0xff;
        s.on_segment_unlimited(seq(12), &forged).unwrap();
        assert_eq!(s.ooo.len(), 1);
        assert_eq!(s.out_of_order_bytes(), 15, "5..20 held");
        let o = s.on_segment_unlimited(seq(0), &wire[..5]).unwrap();
        assert!(o.frames.is_empty());
        assert_eq!(s.consumed(), 20, "the held piece was drained");
        let o = s.on_segment_unlimited(seq(20), &wire[20..]).unwrap();
        assert_eq!(o.frames.len(), 1, "the bytes held first were kept");
    }

    #[test]
    fn out_of_order_pieces_respect_the_window_the_count_and_the_budget() {
        let (mut s, wire) = setup(&[&[7u8; 400]]);
        let limits = OooLimits {
            right: 300,
            max_pieces: 3,
            budget: 50,
        };
        let keep = |s: &mut InStream, at: u64, len: usize| {
            s.on_segment(seq(at), &wire[at as usize..at as usize + len], &limits)
                .unwrap()
        };
        assert!(keep(&mut s, 10, 5).stored_ahead);
        assert!(keep(&mut s, 30, 5).stored_ahead);
        assert!(keep(&mut s, 50, 5).stored_ahead);
        assert!(keep(&mut s, 70, 5).refused_ahead, "a fourth piece");
        assert!(
            keep(&mut s, 35, 5).stored_ahead,
            "merging needs no new piece"
        );
        assert!(keep(&mut s, 100, 60).refused_ahead, "over the budget");
        assert!(keep(&mut s, 310, 5).refused_ahead, "beyond the window");
        assert_eq!(s.out_of_order_bytes(), 20);
    }

    #[test]
    fn a_frame_split_over_segments_is_delivered_once_complete() {
        let (mut s, wire) = setup(&[b"hello world"]);
        let o = s.on_segment_unlimited(seq(0), &wire[..10]).unwrap();
        assert!(o.frames.is_empty());
        let o = s.on_segment_unlimited(seq(10), &wire[10..]).unwrap();
        assert_eq!(o.frames.len(), 1);
        assert_eq!(*o.frames[0].data, b"hello world");
        assert_eq!(o.frames[0].local, 0..11);
    }

    #[test]
    fn out_of_order_segments_wait_for_the_gap() {
        let (mut s, wire) = setup(&[b"one", b"two"]);
        let o = s.on_segment_unlimited(seq(23), &wire[23..]).unwrap();
        assert!(o.frames.is_empty());
        let o = s.on_segment_unlimited(seq(0), &wire[..23]).unwrap();
        let got: Vec<_> = o.frames.iter().map(|f| f.data.to_vec()).collect();
        assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec()]);
    }

    #[test]
    fn a_corrupted_frame_is_rejected_and_the_genuine_one_accepted_later() {
        let (mut s, wire) = setup(&[b"payload"]);
        let mut bad = wire.clone();
        bad[5] ^= 1;
        assert!(s.on_segment_unlimited(seq(0), &bad).is_err());
        assert_eq!(s.consumed(), 0);
        let o = s.on_segment_unlimited(seq(0), &wire).unwrap();
        assert_eq!(*o.frames[0].data, b"payload");
    }

    #[test]
    fn kernel_acks_map_to_the_end_of_completely_covered_frames() {
        let (mut s, wire) = setup(&[b"aaaa", b"bbbb"]);
        s.on_segment_unlimited(seq(0), &wire).unwrap();
        assert_eq!(s.on_local_ack(seq(2)), 0, "inside the first frame");
        assert_eq!(s.on_local_ack(seq(4)), 24);
        assert_eq!(s.on_local_ack(seq(8)), 48);
        assert!(s.all_acked_by_kernel());
    }

    #[test]
    fn segments_after_the_peers_fin_map_one_past_the_local_fin() {
        let (mut w, r) = keys();
        let mut wire = Vec::new();
        let last = FramePayload {
            data: b"bye",
            fin: true,
            ..FramePayload::default()
        };
        w.seal(&last, &mut wire).unwrap();
        let mut s = InStream::without_init(ISN);
        s.set_reader(r, 0).unwrap();
        s.on_segment_unlimited(seq(0), &wire).unwrap();
        let fin_wire = wire.len() as u64;
        assert_eq!(s.local_offset_for_control(seq(fin_wire)), 3, "the FIN");
        assert_eq!(s.local_offset_for_control(seq(fin_wire + 1)), 4);
        assert_eq!(s.local_expected(), 3, "FIN not yet acknowledged");
        assert_eq!(s.on_local_ack(seq(4)), fin_wire as i64 + 1);
        assert_eq!(s.local_expected(), 4);
    }

    #[test]
    fn a_retransmission_of_unacknowledged_frames_can_be_delivered_again() {
        let (mut s, wire) = setup(&[b"again"]);
        s.on_segment_unlimited(seq(0), &wire).unwrap();
        let o = s.on_segment_unlimited(seq(0), &wire).unwrap();
        assert!(o.duplicate);
        let again = s.undelivered_in(seq(0), wire.len());
        assert_eq!(again.len(), 1);
        assert_eq!(*again[0].data, b"again");
    }
}
