//! RFC 8548 requirements that docs/conformance.md cites and that need a
//! peer other than our own handshake code: Init messages with the extra
//! bytes another implementation may append, and no ENO option without
//! randomness (RFC 8547 section 10).
//!
//! The "other implementation" is rebuilt here from the RFC formulas: it
//! re-encodes our Init message with trailing bytes and computes its own
//! ss[0] = Extract(N_A, transcript || Init1 || Init2 || ES) over the bytes
//! it sent.

#![allow(clippy::unwrap_used)]

use tcpcrypt_proto::handshake::{
    AwaitInit1, AwaitInit2, ConnectionPolicy, Handshake, HandshakeError, Host, HostConfig, Step,
};
use tcpcrypt_proto::init::{Init1, Init2};
use tcpcrypt_proto::kex::KexError;
use tcpcrypt_proto::schedule::SessionSecret;
use tcpcrypt_proto::session::Session;
use tcpcrypt_proto::{Rng, RngError, Tep, TestRng};

const CLIENT: u8 = 1;
const SERVER: u8 = 2;
const EXTRA: &[u8] = b"bytes a later version of tcpcrypt might append";

/// A fresh handshake up to the Init messages, and the ENO transcript.
fn fresh(rng: &mut TestRng) -> (AwaitInit2, AwaitInit1, Vec<u8>) {
    let mut client = Host::<u8>::new(HostConfig::default()).unwrap();
    let mut server = Host::<u8>::new(HostConfig::default()).unwrap();
    let policy = ConnectionPolicy::default();
    let active = client.active_open(&SERVER, policy, rng).unwrap();
    let syn = active.syn_option().to_vec();
    let (reply, hs_b) = server
        .passive_open(&CLIENT, &syn, policy, rng)
        .unwrap()
        .into_parts();
    let transcript = [syn, reply.clone()].concat();
    match (active.on_peer_syn(&reply, rng).unwrap(), hs_b) {
        (Handshake::SendInit1(a), Handshake::AwaitInit1(b)) => (a, b, transcript),
        other => panic!("expected a fresh exchange, got {other:?}"),
    }
}

fn established(step: Step<impl std::fmt::Debug>) -> (Box<Session>, usize, Vec<u8>) {
    match step {
        Step::Established {
            session,
            consumed,
            send,
        } => (session, consumed, send),
        other => panic!("expected an established session, got {other:?}"),
    }
}

fn es(session: &Session) -> Vec<u8> {
    session.secrets().ephemeral_secret().unwrap().to_vec()
}

#[test]
fn our_init_messages_end_with_the_public_key() {
    let mut rng = TestRng::new(1);
    let (a, b, _) = fresh(&mut rng);
    let init1 = Init1::decode(Tep::X25519, a.init1()).unwrap();
    assert!(init1.ignored.is_empty());
    let (_, _, init2) = established(b.feed(a.init1()).unwrap());
    assert!(
        Init2::decode(Tep::X25519, &init2)
            .unwrap()
            .ignored
            .is_empty()
    );
}

#[test]
fn init1_with_extra_bytes_from_another_peer_is_accepted_and_enters_the_keys() {
    let mut rng = TestRng::new(2);
    let (a, b, transcript) = fresh(&mut rng);
    let mut init1 = Init1::decode(Tep::X25519, a.init1()).unwrap();
    init1.ignored = EXTRA.to_vec();
    let longer = init1.encode().unwrap();
    assert_eq!(longer.len(), a.init1().len() + EXTRA.len());
    // Frames may follow in the same bytes: the message length decides.
    let stream = [longer.as_slice(), b"frames follow"].concat();
    let (session, consumed, init2) = established(b.feed(&stream).unwrap());
    assert_eq!(consumed, longer.len());
    // What the other peer computes over the bytes it sent.
    let theirs = SessionSecret::extract(&init1.nonce, &transcript, &longer, &init2, &es(&session));
    assert_eq!(session.secrets().session_secret(), &theirs);
    let without =
        SessionSecret::extract(&init1.nonce, &transcript, a.init1(), &init2, &es(&session));
    assert_ne!(session.secrets().session_secret(), &without);
}

#[test]
fn init2_with_extra_bytes_from_another_peer_is_accepted_and_enters_the_keys() {
    let mut rng = TestRng::new(3);
    let (a, b, transcript) = fresh(&mut rng);
    let sent_init1 = a.init1().to_vec();
    let (_, _, init2) = established(b.feed(&sent_init1).unwrap());
    let mut message = Init2::decode(Tep::X25519, &init2).unwrap();
    message.ignored = EXTRA.to_vec();
    let longer = message.encode().unwrap();
    // Fed one byte at a time, as segments may cut it anywhere.
    let mut state = a;
    let mut done = None;
    for (i, byte) in longer.iter().enumerate() {
        match state.feed(std::slice::from_ref(byte)).unwrap() {
            Step::NeedMore(next) => state = next,
            step => {
                assert_eq!(i + 1, longer.len());
                done = Some(established(step).0);
                break;
            }
        }
    }
    let session = done.expect("Init2 completed");
    let n_a = Init1::decode(Tep::X25519, &sent_init1).unwrap().nonce;
    let theirs = SessionSecret::extract(&n_a, &transcript, &sent_init1, &longer, &es(&session));
    assert_eq!(session.secrets().session_secret(), &theirs);
}

/// A randomness source that has none to give.
struct NoRandomness;

impl Rng for NoRandomness {
    fn fill(&mut self, _dest: &mut [u8]) -> Result<(), RngError> {
        Err(RngError("no entropy yet".to_string()))
    }
}

#[test]
fn without_randomness_the_passive_opener_gives_no_reply_option() {
    // The active opener's SYN option needs no random bytes unless it offers
    // resumption; the engine asks its source before sending it
    // (tcpcrypt-engine tests/conformance.rs).
    let policy = ConnectionPolicy::default();
    let mut client = Host::<u8>::new(HostConfig::default()).unwrap();
    let syn = client
        .active_open(&SERVER, policy, &mut TestRng::new(4))
        .unwrap()
        .syn_option()
        .to_vec();
    let mut server = Host::<u8>::new(HostConfig::default()).unwrap();
    let refused = server.passive_open(&CLIENT, &syn, policy, &mut NoRandomness);
    assert!(
        matches!(refused, Err(HandshakeError::Kex(KexError::Rng(_)))),
        "{refused:?}"
    );
}

#[test]
fn each_connection_draws_a_new_key_pair_and_nonce() {
    let mut rng = TestRng::new(5);
    let (first, _, _) = fresh(&mut rng);
    let (second, _, _) = fresh(&mut rng);
    let (one, two) = (
        Init1::decode(Tep::X25519, first.init1()).unwrap(),
        Init1::decode(Tep::X25519, second.init1()).unwrap(),
    );
    assert_ne!(one.public_key, two.public_key);
    assert_ne!(one.nonce, two.nonce);
}

#[test]
fn a_peer_replaying_its_syn_and_init1_gets_a_new_session_id_each_time() {
    // A malicious host A that repeats byte for byte what it sent once
    // cannot make our host B agree to the same session ID twice: B's own
    // nonce and key pair enter the ID.
    let mut rng = TestRng::new(6);
    let policy = ConnectionPolicy::default();
    let mut client = Host::<u8>::new(HostConfig::default()).unwrap();
    let active = client.active_open(&SERVER, policy, &mut rng).unwrap();
    let syn = active.syn_option().to_vec();
    let mut server = Host::<u8>::new(HostConfig::default()).unwrap();
    let mut init1 = None;
    let mut active = Some(active);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (reply, hs_b) = server
            .passive_open(&CLIENT, &syn, policy, &mut rng)
            .unwrap()
            .into_parts();
        if let Some(a) = active.take() {
            match a.on_peer_syn(&reply, &mut rng).unwrap() {
                Handshake::SendInit1(a) => init1 = Some(a.init1().to_vec()),
                other => panic!("expected Init1, got {other:?}"),
            }
        }
        let Handshake::AwaitInit1(b) = hs_b else {
            panic!("expected a fresh exchange");
        };
        let (session, _, _) = established(b.feed(init1.as_ref().unwrap()).unwrap());
        ids.push(session.session_id());
    }
    assert_ne!(ids[0], ids[1]);
}

#[test]
fn a_frame_that_would_wrap_the_stream_offset_is_refused() {
    use tcpcrypt_proto::frame::{FrameError, FramePayload, FrameWriter};
    use tcpcrypt_proto::{Aead, Role};
    let mk = SessionSecret::from_bytes([9; 32]).master_key(&[]);
    // Frame IDs (offsets) must never repeat under one key: the writer
    // refuses the frame whose end would pass 2^64 rather than wrap.
    let mut w = FrameWriter::new(&mk, Aead::Aes128Gcm, Role::A, u64::MAX - 10);
    let payload = FramePayload {
        fin: false,
        urgent: None,
        data: b"more than ten bytes of data",
    };
    let mut out = Vec::new();
    assert!(matches!(
        w.seal(&payload, &mut out),
        Err(FrameError::OffsetExhausted { .. })
    ));
    assert!(out.is_empty());
}
