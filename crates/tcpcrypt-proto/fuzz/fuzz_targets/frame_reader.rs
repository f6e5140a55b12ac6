//! Fuzzes the streaming frame reader. The input describes a wire stream
//! (genuine frames sealed by a `FrameWriter`, optionally with one byte
//! altered, or raw bytes) and how to cut it into chunks. Genuine streams
//! must come back intact whatever the cuts; altered ones must never yield
//! the altered frame.

#![no_main]

use libfuzzer_sys::arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use tcpcrypt_proto::frame::{FramePayload, FrameReader, FrameWriter, ReceivedFrame};
use tcpcrypt_proto::schedule::SessionSecret;
use tcpcrypt_proto::{Aead, Role};

/// Where the reader's first frame starts (after a 75-byte Init1).
const FIRST_OFFSET: u64 = 75;

#[derive(Debug)]
struct Frame {
    data: Vec<u8>,
    urgent: Option<u16>,
    rekey_before: bool,
}

#[derive(Debug)]
struct Input {
    aead: Aead,
    frames: Vec<Frame>,
    fin: bool,
    flip: Option<(usize, u8)>,
    raw: Vec<u8>,
    cuts: Vec<u16>,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let aead = Aead::ALL[usize::from(u8::arbitrary(u)?) % Aead::ALL.len()];
        let mut frames = Vec::new();
        for _ in 0..u.int_in_range(0..=6)? {
            let len = u.int_in_range(0..=600)?;
            let data = u.bytes(len.min(u.len()))?.to_vec();
            let urgent = if bool::arbitrary(u)? && !data.is_empty() {
                Some(u.int_in_range(0..=u16::try_from(data.len() - 1).unwrap_or(0))?)
            } else {
                None
            };
            frames.push(Frame {
                data,
                urgent,
                rekey_before: bool::arbitrary(u)?,
            });
        }
        let fin = bool::arbitrary(u)?;
        let flip = if bool::arbitrary(u)? {
            Some((usize::arbitrary(u)?, u.int_in_range(1..=255)?))
        } else {
            None
        };
        let raw = if bool::arbitrary(u)? {
            let len = u.int_in_range(0..=300)?;
            u.bytes(len.min(u.len()))?.to_vec()
        } else {
            Vec::new()
        };
        let cuts = Vec::<u16>::arbitrary(u)?;
        Ok(Input {
            aead,
            frames,
            fin,
            flip,
            raw,
            cuts,
        })
    }
}

fuzz_target!(|input: Input| {
    let mk0 = SessionSecret::from_bytes([0x5a; 32]).master_key(&[]);
    let mut writer = FrameWriter::new(&mk0, input.aead, Role::A, FIRST_OFFSET);
    let mut reader = FrameReader::new(&mk0, input.aead, Role::A, FIRST_OFFSET);

    let mut wire = Vec::new();
    let mut sent = Vec::new();
    let count = input.frames.len();
    for (i, frame) in input.frames.iter().enumerate() {
        // A rekey is refused while one is outstanding; that is fine here.
        if frame.rekey_before {
            let _ = writer.initiate_rekey();
        }
        let payload = FramePayload {
            fin: input.fin && i + 1 == count,
            urgent: frame.urgent,
            data: &frame.data,
        };
        // Payloads here are within every limit, so sealing succeeds; should
        // it not, the stream simply ends early.
        let Ok((offset, len)) = writer.seal(&payload, &mut wire) else {
            break;
        };
        sent.push((offset, len, payload.fin, payload.urgent, frame.data.clone()));
    }
    let genuine = wire.len();
    let mut altered_at = None;
    if let Some((pos, mask)) = input.flip
        && !wire.is_empty()
    {
        let pos = pos % wire.len();
        if let Some(byte) = wire.get_mut(pos) {
            *byte ^= mask;
            altered_at = Some(pos);
        }
    }
    wire.extend_from_slice(&input.raw);

    let mut received: Vec<ReceivedFrame> = Vec::new();
    let mut failed = false;
    let mut rest = &wire[..];
    let mut cuts = input.cuts.iter();
    while !rest.is_empty() {
        let take = cuts
            .next()
            .map_or(rest.len(), |&c| usize::from(c) % (rest.len() + 1));
        let (chunk, after) = rest.split_at(take);
        if reader.feed(chunk, &mut received).is_err() {
            failed = true;
            break;
        }
        rest = after;
    }

    // Frames before the altered byte come back exactly as sent; the frame
    // holding it never does.
    for (got, (offset, len, fin, urgent, data)) in received.iter().zip(&sent) {
        if altered_at.is_some_and(|pos| (*offset - FIRST_OFFSET) as usize + len > pos) {
            panic!("a frame with an altered byte was accepted: {got:?}");
        }
        assert_eq!(got.offset, *offset);
        assert_eq!(got.wire_len, *len);
        assert_eq!(got.fin, *fin);
        assert_eq!(got.urgent, *urgent);
        assert_eq!(&got.data, data);
    }
    assert!(received.len() <= sent.len(), "raw bytes never authenticate");
    if altered_at.is_none() && input.raw.is_empty() {
        assert!(!failed, "a genuine stream is accepted");
        assert_eq!(received.len(), sent.len());
        assert_eq!(reader.next_offset(), FIRST_OFFSET + genuine as u64);
    }
});
