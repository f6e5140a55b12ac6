//! In-memory handshakes between a host A and a host B built from this
//! crate, for every TEP × AEAD: fresh, with rekeys from each side, then
//! resumed.

#![allow(clippy::unwrap_used)]

use tcpcrypt_proto::frame::{FramePayload, RekeyResponse};
use tcpcrypt_proto::handshake::{ConnectionPolicy, Handshake, Host, HostConfig, Step};
use tcpcrypt_proto::session::Session;
use tcpcrypt_proto::{Aead, Role, Tep, TestRng};

const CLIENT: u8 = 1;
const SERVER: u8 = 2;

fn host(tep: Tep, aead: Aead) -> Host<u8> {
    Host::new(HostConfig {
        teps: vec![tep],
        aeads: vec![aead],
        ..HostConfig::default()
    })
    .unwrap()
}

/// Runs SYN, SYN-ACK and the Init exchange; feeds Init messages one byte at
/// a time to exercise collection. Returns (client session, server session).
fn connect(client: &mut Host<u8>, server: &mut Host<u8>, rng: &mut TestRng) -> (Session, Session) {
    let policy = ConnectionPolicy::default();
    let active = client.active_open(&SERVER, policy, rng).unwrap();
    let passive = server
        .passive_open(&CLIENT, active.syn_option(), policy, rng)
        .unwrap();
    let (reply, hs_b) = passive.into_parts();
    let hs_a = active.on_peer_syn(&reply, rng).unwrap();
    let (mut a, mut b) = match (hs_a, hs_b) {
        (Handshake::SendInit1(mut a), Handshake::AwaitInit1(mut b)) => {
            let init1 = a.init1().to_vec();
            let mut b_done = None;
            for byte in init1.chunks(1) {
                match b.feed(byte).unwrap() {
                    Step::NeedMore(next) => b = next,
                    Step::Established {
                        session,
                        consumed,
                        send,
                    } => {
                        assert_eq!(consumed, 1);
                        b_done = Some((session, send));
                        break;
                    }
                }
            }
            let (sb, init2) = b_done.expect("Init1 completes B's handshake");
            let mut a_done = None;
            for byte in init2.chunks(1) {
                match a.feed(byte).unwrap() {
                    Step::NeedMore(next) => a = next,
                    Step::Established { session, .. } => {
                        a_done = Some(session);
                        break;
                    }
                }
            }
            (*a_done.expect("Init2 completes A's handshake"), *sb)
        }
        (Handshake::Resumed(a), Handshake::Resumed(b)) => (a, b),
        (a, b) => panic!("mismatched handshakes: {a:?} / {b:?}"),
    };
    client.on_established(&SERVER, &mut a);
    server.on_established(&CLIENT, &mut b);
    (a, b)
}

/// `from` seals `data`; `to` reads it in one chunk. Returns the frame info.
fn send(from: &mut Session, to: &mut Session, data: &[u8]) -> tcpcrypt_proto::frame::ReceivedFrame {
    let mut wire = Vec::new();
    let payload = FramePayload {
        fin: false,
        urgent: None,
        data,
    };
    from.writer().seal(&payload, &mut wire).unwrap();
    let mut frames = Vec::new();
    to.reader().feed(&wire, &mut frames).unwrap();
    assert_eq!(frames.len(), 1);
    let frame = frames.remove(0);
    assert_eq!(frame.data, data);
    frame
}

/// `initiator` rekeys; the peer must answer with its own rekey frame, after
/// which the initiator owes nothing.
fn rekey_from(initiator: &mut Session, responder: &mut Session) {
    let start = initiator.writer().local_generation();
    initiator.writer().initiate_rekey().unwrap();
    let frame = send(initiator, responder, b"after rekey");
    assert!(frame.rekey);
    assert_eq!(frame.generation, start + 1);
    assert_eq!(
        responder.writer().on_peer_generation(frame.generation),
        RekeyResponse::SendFrameNow
    );
    let answer = send(responder, initiator, b"");
    assert!(answer.rekey);
    assert_eq!(answer.generation, start + 1);
    assert_eq!(
        initiator.writer().on_peer_generation(answer.generation),
        RekeyResponse::None
    );
    send(initiator, responder, b"more");
    send(responder, initiator, b"more back");
}

fn check_pair(a: &Session, b: &Session, tep: Tep, aead: Aead, resumed: bool) {
    assert_eq!(a.session_id(), b.session_id());
    assert_eq!(a.info().role, Role::A);
    assert_eq!(b.info().role, Role::B);
    for s in [a, b] {
        assert_eq!(s.info().tep, tep);
        assert_eq!(s.info().aead, aead);
        assert_eq!(s.info().resumed, resumed);
        assert_eq!(s.session_id().as_bytes()[0], tep.byte(resumed));
    }
}

#[test]
fn every_tep_and_aead_handshakes_rekeys_and_resumes() {
    let mut rng = TestRng::new(2026);
    for tep in Tep::ALL {
        for aead in Aead::ALL {
            let mut client = host(tep, aead);
            let mut server = host(tep, aead);
            let (mut a, mut b) = connect(&mut client, &mut server, &mut rng);
            check_pair(&a, &b, tep, aead, false);
            send(&mut a, &mut b, b"hello from A");
            send(&mut b, &mut a, b"hello from B");
            rekey_from(&mut a, &mut b);
            rekey_from(&mut b, &mut a);

            let (mut ra, mut rb) = connect(&mut client, &mut server, &mut rng);
            check_pair(&ra, &rb, tep, aead, true);
            assert_ne!(ra.session_id(), a.session_id());
            send(&mut ra, &mut rb, b"resumed A");
            send(&mut rb, &mut ra, b"resumed B");
            rekey_from(&mut rb, &mut ra);
        }
    }
}

#[test]
fn resumption_chain_continues_and_each_secret_is_used_once() {
    let mut rng = TestRng::new(5);
    let (mut client, mut server) = (
        host(Tep::X25519, Aead::Aes128Gcm),
        host(Tep::X25519, Aead::Aes128Gcm),
    );
    let (first, _) = connect(&mut client, &mut server, &mut rng);
    let mut ids = vec![first.session_id()];
    for _ in 0..3 {
        let (a, b) = connect(&mut client, &mut server, &mut rng);
        assert!(a.info().resumed);
        assert_eq!(a.session_id(), b.session_id());
        ids.push(a.session_id());
    }
    ids.sort_by_key(|id| *id.as_bytes());
    ids.dedup();
    assert_eq!(ids.len(), 4);
}

#[test]
fn server_as_original_b_can_resume_as_active_opener() {
    let mut rng = TestRng::new(6);
    let (mut h1, mut h2) = (
        host(Tep::X25519, Aead::ChaCha20Poly1305),
        host(Tep::X25519, Aead::ChaCha20Poly1305),
    );
    // h1 opens to h2: h1 is A, h2 is B. Then h2 opens to h1 with resumption;
    // it keeps sending with k_ba, as in the original session.
    let (_a, _b) = connect(&mut h1, &mut h2, &mut rng);
    let policy = ConnectionPolicy::default();
    let active = h2.active_open(&CLIENT, policy, &mut rng).unwrap();
    assert!(active.offers_resumption());
    let passive = h1
        .passive_open(&SERVER, active.syn_option(), policy, &mut rng)
        .unwrap();
    let (reply, hs_b) = passive.into_parts();
    let hs_a = active.on_peer_syn(&reply, &mut rng).unwrap();
    let (Handshake::Resumed(mut now_a), Handshake::Resumed(mut now_b)) = (hs_a, hs_b) else {
        panic!("expected resumption both ways");
    };
    assert_eq!(now_a.info().role, Role::A);
    assert_eq!(now_a.info().original_role, Role::B);
    assert_eq!(now_b.info().original_role, Role::A);
    assert_eq!(now_a.session_id(), now_b.session_id());
    send(&mut now_a, &mut now_b, b"x");
    send(&mut now_b, &mut now_a, b"y");
}

#[test]
fn ignore_resumption_policy_forces_fresh_exchange() {
    let mut rng = TestRng::new(7);
    let (mut client, mut server) = (
        host(Tep::X25519, Aead::Aes128Gcm),
        host(Tep::X25519, Aead::Aes128Gcm),
    );
    connect(&mut client, &mut server, &mut rng);
    let policy = ConnectionPolicy {
        ignore_resumption: true,
        ..ConnectionPolicy::default()
    };
    let active = client.active_open(&SERVER, policy, &mut rng).unwrap();
    assert!(!active.offers_resumption());
    // The server side ignores a resumption request under the same policy.
    let offering = client
        .active_open(&SERVER, ConnectionPolicy::default(), &mut rng)
        .unwrap();
    assert!(offering.offers_resumption());
    let passive = server
        .passive_open(&CLIENT, offering.syn_option(), policy, &mut rng)
        .unwrap();
    assert!(matches!(passive.into_parts().1, Handshake::AwaitInit1(_)));
}

#[test]
fn no_cache_policy_leaves_nothing_to_resume() {
    let mut rng = TestRng::new(8);
    let (mut client, mut server) = (
        host(Tep::X25519, Aead::Aes128Gcm),
        host(Tep::X25519, Aead::Aes128Gcm),
    );
    let policy = ConnectionPolicy {
        no_cache: true,
        ..ConnectionPolicy::default()
    };
    let active = client.active_open(&SERVER, policy, &mut rng).unwrap();
    let passive = server
        .passive_open(&CLIENT, active.syn_option(), policy, &mut rng)
        .unwrap();
    let (reply, hs_b) = passive.into_parts();
    let (Handshake::SendInit1(a), Handshake::AwaitInit1(b)) =
        (active.on_peer_syn(&reply, &mut rng).unwrap(), hs_b)
    else {
        panic!("expected a fresh exchange");
    };
    let init1 = a.init1().to_vec();
    let Step::Established { mut session, .. } = b.feed(&init1).unwrap() else {
        panic!("Init1 was complete");
    };
    server.on_established(&CLIENT, &mut session);
    assert!(server.cache().is_empty());
}

#[test]
fn flush_forgets_what_a_session_produced() {
    let mut rng = TestRng::new(9);
    let (mut client, mut server) = (
        host(Tep::X25519, Aead::Aes128Gcm),
        host(Tep::X25519, Aead::Aes128Gcm),
    );
    let (a, _) = connect(&mut client, &mut server, &mut rng);
    assert!(client.cache().can_offer(&SERVER, Tep::X25519));
    client.flush(&a);
    assert!(!client.cache().can_offer(&SERVER, Tep::X25519));
    let (a2, _) = connect(&mut client, &mut server, &mut rng);
    assert!(!a2.info().resumed);
}

#[test]
fn server_that_forgot_answers_with_fresh_exchange() {
    let mut rng = TestRng::new(10);
    let (mut client, mut server) = (
        host(Tep::X448, Aead::Aes256Gcm),
        host(Tep::X448, Aead::Aes256Gcm),
    );
    connect(&mut client, &mut server, &mut rng);
    server.cache_mut().clear();
    let (a, b) = connect(&mut client, &mut server, &mut rng);
    assert!(!a.info().resumed && !b.info().resumed);
    assert_eq!(a.session_id(), b.session_id());
}

#[test]
fn frames_following_init2_in_the_same_chunk_are_left_for_the_reader() {
    let mut rng = TestRng::new(11);
    let (client, server) = (
        host(Tep::X25519, Aead::Aes128Gcm),
        host(Tep::X25519, Aead::Aes128Gcm),
    );
    let (mut client, mut server) = (client, server);
    let policy = ConnectionPolicy::default();
    let active = client.active_open(&SERVER, policy, &mut rng).unwrap();
    let passive = server
        .passive_open(&CLIENT, active.syn_option(), policy, &mut rng)
        .unwrap();
    let (reply, hs_b) = passive.into_parts();
    let (Handshake::SendInit1(a), Handshake::AwaitInit1(b)) =
        (active.on_peer_syn(&reply, &mut rng).unwrap(), hs_b)
    else {
        panic!("expected a fresh exchange");
    };
    let init1 = a.init1().to_vec();
    let Step::Established {
        session: mut sb,
        send: mut b_wire,
        ..
    } = b.feed(&init1).unwrap()
    else {
        panic!("Init1 was complete");
    };
    let init2_len = b_wire.len();
    sb.writer()
        .seal(
            &FramePayload {
                fin: true,
                urgent: None,
                data: b"early data",
            },
            &mut b_wire,
        )
        .unwrap();
    let Step::Established {
        session: mut sa,
        consumed,
        ..
    } = a.feed(&b_wire).unwrap()
    else {
        panic!("Init2 was complete");
    };
    assert_eq!(consumed, init2_len);
    let mut frames = Vec::new();
    sa.reader().feed(&b_wire[consumed..], &mut frames).unwrap();
    assert_eq!(frames[0].data, b"early data");
    assert_eq!(frames[0].offset, init2_len as u64);
    assert!(frames[0].fin && sa.reader().fin_received());
}

#[test]
fn simultaneous_open_with_one_b_bit_handshakes() {
    let mut rng = TestRng::new(12);
    let mut left = host(Tep::X25519, Aead::Aes128Gcm);
    let mut right = Host::<u8>::new(HostConfig {
        teps: vec![Tep::X25519],
        aeads: vec![Aead::Aes128Gcm],
        passive_role_bit: true,
        ..HostConfig::default()
    })
    .unwrap();
    let policy = ConnectionPolicy::default();
    let l = left.active_open(&SERVER, policy, &mut rng).unwrap();
    let r = right.active_open(&CLIENT, policy, &mut rng).unwrap();
    let (l_syn, r_syn) = (l.syn_option().to_vec(), r.syn_option().to_vec());
    let (Handshake::SendInit1(a), Handshake::AwaitInit1(b)) = (
        l.on_peer_syn(&r_syn, &mut rng).unwrap(),
        r.on_peer_syn(&l_syn, &mut rng).unwrap(),
    ) else {
        panic!("the host with b = 1 must be B");
    };
    let init1 = a.init1().to_vec();
    let Step::Established {
        session: sb,
        send: init2,
        ..
    } = b.feed(&init1).unwrap()
    else {
        panic!("Init1 was complete");
    };
    let Step::Established { session: sa, .. } = a.feed(&init2).unwrap() else {
        panic!("Init2 was complete");
    };
    assert_eq!(sa.session_id(), sb.session_id());
    assert_eq!((sa.info().role, sb.info().role), (Role::A, Role::B));
}

#[test]
fn both_ends_hold_the_same_key_log_secrets() {
    let mut rng = TestRng::new(13);
    let (mut client, mut server) = (
        host(Tep::X25519, Aead::Aes128Gcm),
        host(Tep::X25519, Aead::Aes128Gcm),
    );
    let (a, b) = connect(&mut client, &mut server, &mut rng);
    let (sa, sb) = (a.secrets(), b.secrets());
    assert_eq!(
        sa.session_secret().as_bytes(),
        sb.session_secret().as_bytes()
    );
    assert_eq!(sa.session_secret().as_bytes().len(), 32);
    let es = sa.ephemeral_secret().expect("a fresh session has ES");
    assert_eq!(Some(es), sb.ephemeral_secret());
    // A resumed session has no ES.
    let (ra, _) = connect(&mut client, &mut server, &mut rng);
    assert!(ra.secrets().ephemeral_secret().is_none());
}

fn host_with_budget(budget: usize) -> Host<u8> {
    let mut h = Host::new(HostConfig {
        max_syn_option_len: budget,
        ..HostConfig::default()
    })
    .unwrap();
    h.cache_mut().insert_fresh(
        SERVER,
        Tep::X448,
        Aead::Aes128Gcm,
        tcpcrypt_proto::schedule::SessionSecret::from_bytes([1; 32]),
        Role::A,
    );
    h
}

#[test]
fn resumption_offer_displaces_least_preferred_teps_to_fit_the_budget() {
    let mut rng = TestRng::new(14);
    let mut h = host_with_budget(20);
    let active = h
        .active_open(&SERVER, ConnectionPolicy::default(), &mut rng)
        .unwrap();
    assert!(active.offers_resumption());
    assert_eq!(active.syn_option().len(), 20);
    assert_eq!(active.syn_option()[2], 0xa4);

    let mut roomy = host_with_budget(22);
    let active = roomy
        .active_open(&SERVER, ConnectionPolicy::default(), &mut rng)
        .unwrap();
    let opt = active.syn_option();
    assert_eq!(opt.len(), 22);
    // Two fresh offers fit beside it: the most preferred ones (X25519,
    // P-256); wire order is least preferred first, the offer last.
    assert_eq!(&opt[2..5], &[0x21, 0x23, 0xa4]);
}

#[test]
fn resumption_that_cannot_fit_is_not_offered_and_not_consumed() {
    let mut rng = TestRng::new(15);
    let mut h = host_with_budget(12);
    let active = h
        .active_open(&SERVER, ConnectionPolicy::default(), &mut rng)
        .unwrap();
    assert!(!active.offers_resumption());
    assert_eq!(active.syn_option(), &[0x45, 0x06, 0x22, 0x21, 0x24, 0x23]);
    assert!(h.cache().can_offer(&SERVER, Tep::X448));
}

fn host_with_b_bit(b: bool) -> Host<u8> {
    Host::<u8>::new(HostConfig {
        teps: vec![Tep::X25519],
        aeads: vec![Aead::Aes128Gcm],
        passive_role_bit: b,
        // b = 1 costs a global suboption byte: 21 bytes with a resumption offer.
        max_syn_option_len: 21,
        ..HostConfig::default()
    })
    .unwrap()
}

/// RFC 8548 section 3.2: a resumption suboption also offers fresh key
/// agreement, so when host A offers resumption that host B cannot honour,
/// both ends of a simultaneous open settle on a fresh exchange of that TEP
/// (B must not treat A's offer as invalid while A counts on it).
#[test]
fn simultaneous_open_where_only_a_can_resume_falls_back_to_fresh_on_both_sides() {
    let mut rng = TestRng::new(14);
    let mut left = host_with_b_bit(false);
    let right = host_with_b_bit(true);
    left.cache_mut().insert_fresh(
        SERVER,
        Tep::X25519,
        Aead::Aes128Gcm,
        tcpcrypt_proto::schedule::SessionSecret::from_bytes([7; 32]),
        Role::A,
    );
    let mut right = right;
    let policy = ConnectionPolicy::default();
    let l = left.active_open(&SERVER, policy, &mut rng).unwrap();
    assert!(l.offers_resumption());
    let r = right.active_open(&CLIENT, policy, &mut rng).unwrap();
    let (l_syn, r_syn) = (l.syn_option().to_vec(), r.syn_option().to_vec());
    let l_hs = l.on_peer_syn(&r_syn, &mut rng);
    let r_hs = r.on_peer_syn(&l_syn, &mut rng);
    assert!(
        matches!(
            (&l_hs, &r_hs),
            (Ok(Handshake::SendInit1(_)), Ok(Handshake::AwaitInit1(_)))
        ),
        "both sides must run a fresh exchange: {l_hs:?} / {r_hs:?}"
    );
}

/// The mirror case: host B offers resumption that host A cannot match. B's
/// resumption suboption is then invalid on both ends (RFC 8548 section 3.5:
/// A ignores it), so neither side may go on with that TEP; both must reach
/// the same outcome instead of B aborting while A disables ENO.
#[test]
fn simultaneous_open_where_only_b_can_resume_gives_the_same_outcome_on_both_sides() {
    let mut rng = TestRng::new(15);
    let mut left = host_with_b_bit(false);
    let mut right = host_with_b_bit(true);
    right.cache_mut().insert_fresh(
        CLIENT,
        Tep::X25519,
        Aead::Aes128Gcm,
        tcpcrypt_proto::schedule::SessionSecret::from_bytes([8; 32]),
        Role::B,
    );
    let policy = ConnectionPolicy::default();
    let l = left.active_open(&SERVER, policy, &mut rng).unwrap();
    let r = right.active_open(&CLIENT, policy, &mut rng).unwrap();
    assert!(r.offers_resumption());
    let (l_syn, r_syn) = (l.syn_option().to_vec(), r.syn_option().to_vec());
    let l_hs = l.on_peer_syn(&r_syn, &mut rng);
    let r_hs = r.on_peer_syn(&l_syn, &mut rng);
    use tcpcrypt_proto::eno::DisableReason;
    use tcpcrypt_proto::handshake::HandshakeError;
    assert!(
        matches!(
            (&l_hs, &r_hs),
            (
                Err(HandshakeError::Disabled(DisableReason::NoValidTep(_))),
                Err(HandshakeError::Disabled(DisableReason::NoValidTep(_)))
            )
        ),
        "both sides must disable ENO alike: {l_hs:?} / {r_hs:?}"
    );
}

/// Compatible resumption suboptions in a simultaneous open resume the
/// session (RFC 8548 section 3.5 allows it once ENO has set the roles).
#[test]
fn simultaneous_open_with_matching_resumption_resumes_on_both_sides() {
    let mut rng = TestRng::new(16);
    let mut left = host_with_b_bit(false);
    let mut right = host_with_b_bit(true);
    let ss1 = || tcpcrypt_proto::schedule::SessionSecret::from_bytes([9; 32]);
    left.cache_mut()
        .insert_fresh(SERVER, Tep::X25519, Aead::Aes128Gcm, ss1(), Role::A);
    right
        .cache_mut()
        .insert_fresh(CLIENT, Tep::X25519, Aead::Aes128Gcm, ss1(), Role::B);
    let policy = ConnectionPolicy::default();
    let l = left.active_open(&SERVER, policy, &mut rng).unwrap();
    let r = right.active_open(&CLIENT, policy, &mut rng).unwrap();
    let (l_syn, r_syn) = (l.syn_option().to_vec(), r.syn_option().to_vec());
    let (Handshake::Resumed(mut a), Handshake::Resumed(mut b)) = (
        l.on_peer_syn(&r_syn, &mut rng).unwrap(),
        r.on_peer_syn(&l_syn, &mut rng).unwrap(),
    ) else {
        panic!("both sides must resume");
    };
    check_pair(&a, &b, Tep::X25519, Aead::Aes128Gcm, true);
    send(&mut a, &mut b, b"x");
    send(&mut b, &mut a, b"y");
}

/// RFC 8548 section 3.5: a `v = 1` suboption with fewer than 9 data bytes
/// is a fresh offer of its TEP; the passive opener answers `v = 0`.
#[test]
fn passive_opener_treats_short_resumption_data_as_a_fresh_offer() {
    let mut rng = TestRng::new(17);
    let mut server = host(Tep::X25519, Aead::Aes128Gcm);
    // 0xa3 with 8 data bytes, running to the end of the option.
    let syn = [0x45, 0x0b, 0xa3, 1, 2, 3, 4, 5, 6, 7, 8];
    let (reply, hs) = server
        .passive_open(&CLIENT, &syn, ConnectionPolicy::default(), &mut rng)
        .unwrap()
        .into_parts();
    assert_eq!(reply, [0x45, 0x04, 0x01, 0x23]);
    assert!(matches!(hs, Handshake::AwaitInit1(_)));
}

/// RFC 8548 section 3.5: the passive opener agrees to resume only when the
/// identifier half names a secret it holds; otherwise it asks for a fresh
/// exchange of the same TEP.
#[test]
fn passive_opener_answers_unknown_resumption_half_with_fresh_offer() {
    let mut rng = TestRng::new(18);
    let mut server = host(Tep::X25519, Aead::Aes128Gcm);
    server.cache_mut().insert_fresh(
        CLIENT,
        Tep::X25519,
        Aead::Aes128Gcm,
        tcpcrypt_proto::schedule::SessionSecret::from_bytes([5; 32]),
        Role::B,
    );
    let mut syn = vec![0x45, 0x00, 0xa3];
    syn.extend_from_slice(&[0x66; 17]);
    syn[1] = syn.len() as u8;
    let (reply, hs) = server
        .passive_open(&CLIENT, &syn, ConnectionPolicy::default(), &mut rng)
        .unwrap()
        .into_parts();
    assert_eq!(reply, [0x45, 0x04, 0x01, 0x23]);
    assert!(matches!(hs, Handshake::AwaitInit1(_)));
    // The cached secret was not spent on the stranger.
    assert!(server.cache().can_offer(&CLIENT, Tep::X25519));
}
