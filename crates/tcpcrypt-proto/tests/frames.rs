//! Frame sealing and the streaming reader: round trips, chunking, tampering,
//! replay, FINp/URGp and the rekey rules.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use tcpcrypt_proto::frame::{
    FrameError, FramePayload, FrameReader, FrameWriter, MAX_FRAME_DATA, MAX_FRAME_DATA_URGENT,
    MAX_FRAME_LEN, ReceivedFrame, RekeyError, RekeyResponse,
};
use tcpcrypt_proto::schedule::{MasterKey, SessionSecret};
use tcpcrypt_proto::{Aead, Role};

fn mk0() -> MasterKey {
    SessionSecret::from_bytes([7; 32]).master_key(&[])
}

fn pair(aead: Aead, offset: u64) -> (FrameWriter, FrameReader) {
    let mk = mk0();
    (
        FrameWriter::new(&mk, aead, Role::A, offset),
        FrameReader::new(&mk, aead, Role::A, offset),
    )
}

fn data(d: &[u8]) -> FramePayload<'_> {
    FramePayload {
        fin: false,
        urgent: None,
        data: d,
    }
}

fn read_all(reader: &mut FrameReader, wire: &[u8]) -> Result<Vec<ReceivedFrame>, FrameError> {
    let mut out = Vec::new();
    reader.feed(wire, &mut out).map(|()| out)
}

#[test]
fn frame_layout_is_header_flags_data_tag() {
    let (mut w, _) = pair(Aead::Aes128Gcm, 0);
    let mut wire = Vec::new();
    let (offset, len) = w.seal(&data(b"abc"), &mut wire).unwrap();
    assert_eq!((offset, len), (0, 3 + 1 + 3 + 16));
    assert_eq!(wire[..3], [0x00, 0x00, 20]);
    assert_eq!(w.next_offset(), len as u64);
}

#[test]
fn fin_and_urgent_survive_the_round_trip() {
    let (mut w, mut r) = pair(Aead::ChaCha20Poly1305, 10);
    let mut wire = Vec::new();
    let p = FramePayload {
        fin: true,
        urgent: Some(2),
        data: b"urgent!",
    };
    w.seal(&p, &mut wire).unwrap();
    let frames = read_all(&mut r, &wire).unwrap();
    assert_eq!(frames[0].urgent, Some(2));
    assert!(frames[0].fin);
    assert_eq!(frames[0].offset, 10);
    assert!(r.fin_received());
}

#[test]
fn urgent_must_point_into_the_data() {
    let (mut w, _) = pair(Aead::Aes128Gcm, 0);
    let p = FramePayload {
        fin: false,
        urgent: Some(3),
        data: b"abc",
    };
    assert!(matches!(
        w.seal(&p, &mut Vec::new()),
        Err(FrameError::UrgentOutOfRange {
            urgent: 3,
            data_len: 3,
            ..
        })
    ));
}

#[test]
fn oversized_data_is_refused() {
    let (mut w, _) = pair(Aead::Aes128Gcm, 0);
    let big = vec![0u8; MAX_FRAME_DATA + 1];
    assert!(matches!(
        w.seal(&data(&big), &mut Vec::new()),
        Err(FrameError::DataTooLong { .. })
    ));
    let ok = vec![0u8; MAX_FRAME_DATA];
    let mut wire = Vec::new();
    w.seal(&data(&ok), &mut wire).unwrap();
    assert_eq!(wire.len(), MAX_FRAME_LEN);
    let urgent = FramePayload {
        fin: false,
        urgent: Some(0),
        data: &ok[..MAX_FRAME_DATA_URGENT + 1],
    };
    assert!(matches!(
        w.seal(&urgent, &mut Vec::new()),
        Err(FrameError::DataTooLong { .. })
    ));
}

#[test]
fn nothing_may_follow_fin() {
    let (mut w, mut r) = pair(Aead::Aes128Gcm, 0);
    let mut wire = Vec::new();
    w.seal(
        &FramePayload {
            fin: true,
            urgent: None,
            data: b"",
        },
        &mut wire,
    )
    .unwrap();
    assert_eq!(
        w.seal(&data(b"x"), &mut Vec::new()),
        Err(FrameError::FinAlreadySent)
    );
    let end = wire.len() as u64;
    wire.push(0);
    assert_eq!(
        read_all(&mut r, &wire).unwrap_err(),
        FrameError::DataAfterFin { offset: end }
    );
}

#[test]
fn every_flipped_bit_is_rejected() {
    let (mut w, _) = pair(Aead::Aes128Gcm, 75);
    let mut wire = Vec::new();
    w.seal(&data(b"hello"), &mut wire).unwrap();
    for byte in 0..wire.len() {
        for bit in 0..8 {
            let mut bad = wire.clone();
            bad[byte] ^= 1 << bit;
            // Pad so that a frame whose clen grew is complete too.
            bad.extend_from_slice(&[0u8; 300]);
            let (_, mut r) = pair(Aead::Aes128Gcm, 75);
            let mut out = Vec::new();
            let result = r.feed(&bad, &mut out);
            assert!(out.is_empty(), "byte {byte} bit {bit} yielded a frame");
            if byte != 1 {
                // A high clen bit makes the frame longer than the padding.
                assert!(result.is_err(), "byte {byte} bit {bit} accepted");
            }
        }
    }
}

#[test]
fn frame_replayed_at_another_offset_is_rejected() {
    let (mut w, _) = pair(Aead::Aes256Gcm, 0);
    let mut first = Vec::new();
    w.seal(&data(b"one"), &mut first).unwrap();
    let mut second = Vec::new();
    w.seal(&data(b"two"), &mut second).unwrap();
    // Replaying the first frame where the second belongs.
    let (_, mut r) = pair(Aead::Aes256Gcm, 0);
    read_all(&mut r, &first).unwrap();
    assert_eq!(
        read_all(&mut r, &first).unwrap_err(),
        FrameError::Authentication {
            offset: first.len() as u64
        }
    );
    // A reader that expects the stream elsewhere rejects even the first.
    let (_, mut shifted) = pair(Aead::Aes256Gcm, 1);
    assert!(matches!(
        read_all(&mut shifted, &first),
        Err(FrameError::Authentication { offset: 1 })
    ));
}

#[test]
fn reader_recovers_at_the_failed_frame() {
    let (mut w, mut r) = pair(Aead::Aes128Gcm, 0);
    let mut good = Vec::new();
    w.seal(&data(b"genuine"), &mut good).unwrap();
    let mut forged = good.clone();
    let last = forged.len() - 1;
    forged[last] ^= 0x80;
    assert!(read_all(&mut r, &forged).is_err());
    assert_eq!(r.next_offset(), 0);
    assert_eq!(r.buffered(), 0);
    let frames = read_all(&mut r, &good).unwrap();
    assert_eq!(frames[0].data, b"genuine");
}

#[test]
fn too_short_ciphertext_is_rejected() {
    let (_, mut r) = pair(Aead::Aes128Gcm, 0);
    let wire = [0u8, 0, 16]
        .iter()
        .copied()
        .chain([0u8; 16])
        .collect::<Vec<_>>();
    assert!(matches!(
        read_all(&mut r, &wire),
        Err(FrameError::CiphertextTooShort { clen: 16, .. })
    ));
}

#[test]
fn buffering_is_bounded_by_one_frame() {
    let (mut w, mut r) = pair(Aead::Aes128Gcm, 0);
    let mut wire = Vec::new();
    w.seal(&data(&vec![1u8; MAX_FRAME_DATA]), &mut wire)
        .unwrap();
    w.seal(&data(b"next"), &mut wire).unwrap();
    let mut out = Vec::new();
    r.feed(&wire[..MAX_FRAME_LEN - 1], &mut out).unwrap();
    assert!(out.is_empty());
    assert_eq!(r.buffered(), MAX_FRAME_LEN - 1);
    r.feed(&wire[MAX_FRAME_LEN - 1..], &mut out).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(r.buffered(), 0);
}

#[test]
fn rekey_frame_moves_the_reader_to_the_next_generation() {
    let (mut w, mut r) = pair(Aead::Aes128Gcm, 0);
    let mut wire = Vec::new();
    w.seal(&data(b"gen0"), &mut wire).unwrap();
    w.initiate_rekey().unwrap();
    w.seal(&data(b"gen1"), &mut wire).unwrap();
    w.seal(&data(b"still gen1"), &mut wire).unwrap();
    let frames = read_all(&mut r, &wire).unwrap();
    let gens: Vec<(u64, bool)> = frames.iter().map(|f| (f.generation, f.rekey)).collect();
    assert_eq!(gens, vec![(0, false), (1, true), (1, false)]);
    assert_eq!(r.remote_generation(), 1);
}

#[test]
fn second_rekey_waits_for_the_answer() {
    let (mut w, _) = pair(Aead::Aes128Gcm, 0);
    w.initiate_rekey().unwrap();
    assert_eq!(
        w.initiate_rekey(),
        Err(RekeyError::Outstanding {
            local: 1,
            remote: 0
        })
    );
    assert_eq!(w.on_peer_generation(1), RekeyResponse::None);
    w.initiate_rekey().unwrap();
    assert_eq!(w.local_generation(), 2);
}

#[test]
fn peer_rekey_is_answered_only_when_peer_is_ahead() {
    let (mut w, _) = pair(Aead::Aes128Gcm, 0);
    assert_eq!(w.on_peer_generation(0), RekeyResponse::None);
    assert_eq!(w.on_peer_generation(1), RekeyResponse::SendFrameNow);
    assert_eq!(w.local_generation(), 1);
    let mut wire = Vec::new();
    w.seal(&data(b""), &mut wire).unwrap();
    assert_eq!(wire[0] & 1, 1, "the answer carries rekey = 1");
    let mut next = Vec::new();
    w.seal(&data(b""), &mut next).unwrap();
    assert_eq!(next[0] & 1, 0, "only the first frame of a generation does");
}

#[test]
fn no_rekey_answer_after_fin() {
    let (mut w, _) = pair(Aead::Aes128Gcm, 0);
    w.seal(
        &FramePayload {
            fin: true,
            urgent: None,
            data: b"",
        },
        &mut Vec::new(),
    )
    .unwrap();
    assert_eq!(w.on_peer_generation(1), RekeyResponse::None);
    assert_eq!(w.initiate_rekey(), Err(RekeyError::AfterFin));
}

#[test]
fn reserved_control_bits_are_sent_clear() {
    let (mut w, _) = pair(Aead::Aes128Gcm, 0);
    w.initiate_rekey().unwrap();
    let mut wire = Vec::new();
    w.seal(&data(b"x"), &mut wire).unwrap();
    assert_eq!(wire[0], 0x01);
}

fn stream(aead: Aead, sizes: &[usize], offset: u64) -> (Vec<u8>, Vec<Vec<u8>>) {
    let (mut w, _) = pair(aead, offset);
    let mut wire = Vec::new();
    let mut plain = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let d: Vec<u8> = (0..*size).map(|j| (i * 31 + j) as u8).collect();
        if i == 2 {
            w.initiate_rekey().unwrap();
        }
        w.seal(&data(&d), &mut wire).unwrap();
        plain.push(d);
    }
    (wire, plain)
}

fn aead_strategy() -> impl Strategy<Value = Aead> {
    prop::sample::select(Aead::ALL.to_vec())
}

proptest! {
    #[test]
    fn any_chunking_gives_the_same_frames(
        aead in aead_strategy(),
        sizes in prop::collection::vec(0usize..600, 1..8),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
        offset in 0u64..1_000_000,
    ) {
        let (wire, plain) = stream(aead, &sizes, offset);
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
        points.push(0);
        points.push(wire.len());
        points.sort_unstable();
        let (_, mut r) = pair(aead, offset);
        let mut frames = Vec::new();
        for win in points.windows(2) {
            r.feed(&wire[win[0]..win[1]], &mut frames).unwrap();
        }
        let got: Vec<Vec<u8>> = frames.into_iter().map(|f| f.data).collect();
        prop_assert_eq!(got, plain);
        prop_assert_eq!(r.next_offset(), offset + wire.len() as u64);
    }

    #[test]
    fn seal_then_read_round_trips(
        aead in aead_strategy(),
        body in prop::collection::vec(any::<u8>(), 1..2000),
        fin in any::<bool>(),
        urgent in any::<Option<prop::sample::Index>>(),
        offset in any::<u64>().prop_map(|o| o >> 1),
    ) {
        let (mut w, mut r) = pair(aead, offset);
        let urgent = urgent.map(|i| i.index(body.len()) as u16);
        let mut wire = Vec::new();
        w.seal(&FramePayload { fin, urgent, data: &body }, &mut wire).unwrap();
        let frames = read_all(&mut r, &wire).unwrap();
        prop_assert_eq!(frames.len(), 1);
        prop_assert_eq!(&frames[0].data, &body);
        prop_assert_eq!(frames[0].fin, fin);
        prop_assert_eq!(frames[0].urgent, urgent);
        prop_assert_eq!(frames[0].offset, offset);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_reader(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let (_, mut r) = pair(Aead::Aes128Gcm, 0);
        let mut out = Vec::new();
        let _ = r.feed(&bytes, &mut out);
        prop_assert!(out.is_empty());
    }
}

/// Seals a frame by hand with aws-lc-rs, independently of the crate's
/// sealing code: `control ‖ clen` as AD, nonce = frame ID XOR NR.
fn hand_sealed(control: u8, plaintext: &[u8], offset: u64) -> Vec<u8> {
    use aws_lc_rs::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let key = mk0().k_ab(Aead::Aes128Gcm);
    let clen = (plaintext.len() + 16) as u16;
    let header = [control, (clen >> 8) as u8, clen as u8];
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&offset.to_be_bytes());
    for (n, r) in nonce.iter_mut().zip(key.nonce_randomizer()) {
        *n ^= r;
    }
    let sealer = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, key.key_bytes()).unwrap());
    let mut body = plaintext.to_vec();
    sealer
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(header),
            &mut body,
        )
        .unwrap();
    [header.to_vec(), body].concat()
}

/// RFC 8548 section 4.2: receivers ignore the reserved `cres` bits of the
/// control byte (they are still authenticated as associated data).
#[test]
fn reserved_control_bits_are_ignored_on_receipt() {
    let (_, mut r) = pair(Aead::Aes128Gcm, 40);
    let frames = read_all(&mut r, &hand_sealed(0xfe, b"\x00hi", 40)).unwrap();
    assert_eq!(frames.len(), 1);
    assert!(!frames[0].rekey);
    assert_eq!(frames[0].generation, 0);
    assert_eq!(frames[0].data, b"hi");
}

/// RFC 8548 section 4.2.1: receivers ignore the reserved `fres` bits of the
/// flags byte.
#[test]
fn reserved_flag_bits_are_ignored_on_receipt() {
    let (_, mut r) = pair(Aead::Aes128Gcm, 0);
    let frames = read_all(&mut r, &hand_sealed(0x00, b"\xfchi", 0)).unwrap();
    assert_eq!(frames.len(), 1);
    assert!(!frames[0].fin);
    assert_eq!(frames[0].urgent, None);
    assert_eq!(frames[0].data, b"hi");
}

/// A frame with URGp set carries `flags ‖ urgent(2, big-endian) ‖ data`
/// (RFC 8548 section 4.2.1, project decision 2).
#[test]
fn urgent_field_is_read_big_endian_before_the_data() {
    let (_, mut r) = pair(Aead::Aes128Gcm, 0);
    let frames = read_all(&mut r, &hand_sealed(0x00, b"\x02\x00\x01abc", 0)).unwrap();
    assert_eq!(frames[0].urgent, Some(1));
    assert_eq!(frames[0].data, b"abc");
}

/// RFC 8548 section 3.8: the peer learns our generation only from rekey
/// bits, one step per frame. When our local generation moved on twice
/// before we sent anything (our own rekey, not yet used, then a second
/// rekey of the peer that got ahead of it), our frames must still decrypt
/// at the peer: each generation has to be announced by its own frame.
#[test]
fn two_generation_steps_before_sending_are_both_announced() {
    let (mut w, mut r) = pair(Aead::Aes128Gcm, 0);
    w.initiate_rekey().unwrap();
    // The peer rekeyed at the same time (no answer owed), then again.
    assert_eq!(w.on_peer_generation(1), RekeyResponse::None);
    assert_eq!(w.on_peer_generation(2), RekeyResponse::SendFrameNow);
    assert_eq!(w.local_generation(), 2);
    let mut wire = Vec::new();
    let (offset, len) = w.seal(&data(b"x"), &mut wire).unwrap();
    assert_eq!((offset, len), (0, wire.len()));
    assert_eq!(w.next_offset(), wire.len() as u64);
    let frames = read_all(&mut r, &wire).unwrap();
    let last = frames.last().unwrap();
    assert_eq!((last.generation, last.data.as_slice()), (2, &b"x"[..]));
    assert!(frames.iter().all(|f| f.rekey));
    // Later frames stay on generation 2 without the rekey bit.
    let mut more = Vec::new();
    w.seal(&data(b"y"), &mut more).unwrap();
    let next = read_all(&mut r, &more).unwrap();
    assert_eq!((next[0].generation, next[0].rekey), (2, false));
}

/// The same through our own rekeys: a rekey, the peer's answer, and a
/// second rekey, all before our next frame.
#[test]
fn rekey_again_before_sending_announces_every_generation() {
    let (mut w, mut r) = pair(Aead::ChaCha20Poly1305, 5);
    w.initiate_rekey().unwrap();
    assert_eq!(w.on_peer_generation(1), RekeyResponse::None);
    w.initiate_rekey().unwrap();
    let mut wire = Vec::new();
    w.seal(&data(b"z"), &mut wire).unwrap();
    let frames = read_all(&mut r, &wire).unwrap();
    assert_eq!(frames.last().map(|f| f.generation), Some(2));
    assert_eq!(frames.last().map(|f| f.data.clone()), Some(b"z".to_vec()));
}

/// A refused frame (too much data) leaves the writer as it was: nothing
/// appended, same offset, and the pending rekey still goes out next.
#[test]
fn refused_frame_changes_nothing() {
    let (mut w, mut r) = pair(Aead::Aes128Gcm, 0);
    w.initiate_rekey().unwrap();
    let mut wire = Vec::new();
    let big = vec![0u8; MAX_FRAME_DATA + 1];
    assert!(w.seal(&data(&big), &mut wire).is_err());
    assert!(wire.is_empty());
    assert_eq!(w.next_offset(), 0);
    w.seal(&data(b"ok"), &mut wire).unwrap();
    let frames = read_all(&mut r, &wire).unwrap();
    assert_eq!((frames[0].generation, frames[0].rekey), (1, true));
}
