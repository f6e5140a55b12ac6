//! One test per error row of section 2.15 of the spec digest, driven
//! through the handshake API the engine uses.

#![allow(clippy::unwrap_used)]

use tcpcrypt_proto::eno::DisableReason;
use tcpcrypt_proto::frame::{FrameError, FramePayload};
use tcpcrypt_proto::handshake::{
    AwaitInit1, AwaitInit2, ConnectionPolicy, Handshake, HandshakeError, Host, HostConfig, Step,
};
use tcpcrypt_proto::init::{Init1, Init2, InitError, PublicKeyBytes};
use tcpcrypt_proto::kex::KexError;
use tcpcrypt_proto::{Aead, Tep, TestRng};

const CLIENT: u8 = 1;
const SERVER: u8 = 2;

fn host(teps: &[Tep], aeads: &[Aead]) -> Host<u8> {
    Host::new(HostConfig {
        teps: teps.to_vec(),
        aeads: aeads.to_vec(),
        ..HostConfig::default()
    })
    .unwrap()
}

fn fresh_pair(
    client_aeads: &[Aead],
    server_aeads: &[Aead],
    rng: &mut TestRng,
) -> (AwaitInit2, AwaitInit1) {
    let mut client = host(&[Tep::X25519], client_aeads);
    let mut server = host(&[Tep::X25519], server_aeads);
    let policy = ConnectionPolicy::default();
    let active = client.active_open(&SERVER, policy, rng).unwrap();
    let (reply, hs_b) = server
        .passive_open(&CLIENT, active.syn_option(), policy, rng)
        .unwrap()
        .into_parts();
    match (active.on_peer_syn(&reply, rng).unwrap(), hs_b) {
        (Handshake::SendInit1(a), Handshake::AwaitInit1(b)) => (a, b),
        other => panic!("expected a fresh exchange, got {other:?}"),
    }
}

fn disabled(result: Result<impl std::fmt::Debug, HandshakeError>) -> DisableReason {
    match result {
        Err(HandshakeError::Disabled(reason)) => reason,
        other => panic!("expected ENO to be disabled, got {other:?}"),
    }
}

#[test]
fn no_common_tep_falls_back_to_plain_tcp() {
    let mut rng = TestRng::new(1);
    let mut client = host(&[Tep::X448], &[Aead::Aes128Gcm]);
    let mut server = host(&[Tep::X25519], &[Aead::Aes128Gcm]);
    let active = client
        .active_open(&SERVER, ConnectionPolicy::default(), &mut rng)
        .unwrap();
    let reason = disabled(server.passive_open(
        &CLIENT,
        active.syn_option(),
        ConnectionPolicy::default(),
        &mut rng,
    ));
    assert!(matches!(reason, DisableReason::NoValidTep(_)));
}

#[test]
fn same_b_bit_falls_back_to_plain_tcp() {
    let mut rng = TestRng::new(2);
    let mut client = Host::<u8>::new(HostConfig {
        passive_role_bit: true,
        ..HostConfig::default()
    })
    .unwrap();
    let mut server = host(&[Tep::X25519], &[Aead::Aes128Gcm]);
    let active = client
        .active_open(&SERVER, ConnectionPolicy::default(), &mut rng)
        .unwrap();
    let reason = disabled(server.passive_open(
        &CLIENT,
        active.syn_option(),
        ConnectionPolicy::default(),
        &mut rng,
    ));
    assert_eq!(reason, DisableReason::SameRoleBit { b: true });
}

#[test]
fn malformed_length_byte_disables_eno() {
    let mut rng = TestRng::new(3);
    let mut server = host(&[Tep::X25519], &[Aead::Aes128Gcm]);
    // Length byte 0x81 (2 data bytes) followed by a v=0 byte.
    let reason = disabled(server.passive_open(
        &CLIENT,
        &[0x45, 0x06, 0x81, 0x23, 0, 0],
        ConnectionPolicy::default(),
        &mut rng,
    ));
    assert!(matches!(reason, DisableReason::PeerOptionMalformed(_)));
}

#[test]
fn invalid_peer_public_key_aborts() {
    let mut rng = TestRng::new(4);
    let mut client = host(&[Tep::P256], &[Aead::Aes128Gcm]);
    let mut server = host(&[Tep::P256], &[Aead::Aes128Gcm]);
    let policy = ConnectionPolicy::default();
    let active = client.active_open(&SERVER, policy, &mut rng).unwrap();
    let (_, hs_b) = server
        .passive_open(&CLIENT, active.syn_option(), policy, &mut rng)
        .unwrap()
        .into_parts();
    let Handshake::AwaitInit1(b) = hs_b else {
        panic!("fresh exchange expected")
    };
    let mut x = [0xffu8; 33];
    x[0] = 0x02;
    let init1 = Init1::new(
        vec![1],
        [0; 32],
        PublicKeyBytes::new(Tep::P256, &x).unwrap(),
    );
    assert_eq!(
        b.feed(&init1.encode().unwrap()).unwrap_err(),
        HandshakeError::Kex(KexError::InvalidPeerKey { tep: Tep::P256 })
    );
}

#[test]
fn all_zero_x25519_shared_secret_aborts() {
    let mut rng = TestRng::new(5);
    let (_, b) = fresh_pair(&[Aead::Aes128Gcm], &[Aead::Aes128Gcm], &mut rng);
    let init1 = Init1::new(
        vec![1],
        [0; 32],
        PublicKeyBytes::new(Tep::X25519, &[0; 32]).unwrap(),
    );
    assert_eq!(
        b.feed(&init1.encode().unwrap()).unwrap_err(),
        HandshakeError::Kex(KexError::AllZeroSharedSecret { tep: Tep::X25519 })
    );
}

#[test]
fn init2_cipher_not_offered_aborts() {
    let mut rng = TestRng::new(6);
    let (a, _) = fresh_pair(&[Aead::Aes128Gcm], &[Aead::Aes128Gcm], &mut rng);
    let other = tcpcrypt_proto::kex::EphemeralKey::generate(Tep::X25519, &mut rng).unwrap();
    let init2 = Init2::new(Aead::ChaCha20Poly1305, [9; 32], other.public_key().clone());
    assert_eq!(
        a.feed(&init2.encode().unwrap()).unwrap_err(),
        HandshakeError::CipherNotOffered {
            chosen: Aead::ChaCha20Poly1305
        }
    );
}

#[test]
fn init1_without_common_aead_aborts() {
    let mut rng = TestRng::new(7);
    let (a, b) = fresh_pair(&[Aead::Aes256Gcm], &[Aead::Aes128Gcm], &mut rng);
    assert_eq!(
        b.feed(a.init1()).unwrap_err(),
        HandshakeError::NoCommonAead {
            offered: vec![0x0002]
        }
    );
}

#[test]
fn aead_failure_is_an_error_not_eof() {
    let mut rng = TestRng::new(8);
    let (a, b) = fresh_pair(&[Aead::Aes128Gcm], &[Aead::Aes128Gcm], &mut rng);
    let init1 = a.init1().to_vec();
    let Step::Established {
        session: mut sb,
        send: init2,
        ..
    } = b.feed(&init1).unwrap()
    else {
        panic!()
    };
    let Step::Established {
        session: mut sa, ..
    } = a.feed(&init2).unwrap()
    else {
        panic!()
    };
    let mut wire = Vec::new();
    sb.writer()
        .seal(
            &FramePayload {
                fin: true,
                urgent: None,
                data: b"bye",
            },
            &mut wire,
        )
        .unwrap();
    wire[5] ^= 1;
    let err = sa.reader().feed(&wire, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, FrameError::Authentication { .. }));
    assert!(!sa.reader().fin_received());
}

#[test]
fn tcp_fin_without_finp_is_visible_to_the_engine() {
    // EOF exists only once an authenticated FINp arrived; a reader that has
    // seen frames without FINp tells the engine a TCP FIN is premature.
    let mut rng = TestRng::new(9);
    let (a, b) = fresh_pair(&[Aead::Aes128Gcm], &[Aead::Aes128Gcm], &mut rng);
    let init1 = a.init1().to_vec();
    let Step::Established {
        session: mut sb,
        send: init2,
        ..
    } = b.feed(&init1).unwrap()
    else {
        panic!()
    };
    let Step::Established {
        session: mut sa, ..
    } = a.feed(&init2).unwrap()
    else {
        panic!()
    };
    let mut wire = Vec::new();
    sb.writer()
        .seal(
            &FramePayload {
                fin: false,
                urgent: None,
                data: b"not the end",
            },
            &mut wire,
        )
        .unwrap();
    sa.reader().feed(&wire, &mut Vec::new()).unwrap();
    assert!(!sa.reader().fin_received());
}

#[test]
fn mismatched_resumption_half_in_syn_ack_disables_eno() {
    let mut rng = TestRng::new(10);
    let mut client = host(&[Tep::X25519], &[Aead::Aes128Gcm]);
    client.cache_mut().insert_fresh(
        SERVER,
        Tep::X25519,
        Aead::Aes128Gcm,
        tcpcrypt_proto::schedule::SessionSecret::from_bytes([3; 32]),
        tcpcrypt_proto::Role::A,
    );
    let active = client
        .active_open(&SERVER, ConnectionPolicy::default(), &mut rng)
        .unwrap();
    assert!(active.offers_resumption());
    // B answers with a resumption suboption naming some other secret.
    let mut reply = vec![0x45, 0x0c, 0x01, 0xa3];
    reply.extend_from_slice(&[0x55; 9]);
    reply[1] = reply.len() as u8;
    let reason = disabled(active.on_peer_syn(&reply, &mut rng));
    assert!(matches!(reason, DisableReason::NoValidTep(_)));
}

#[test]
fn bad_init_magic_aborts() {
    let mut rng = TestRng::new(11);
    let (a, b) = fresh_pair(&[Aead::Aes128Gcm], &[Aead::Aes128Gcm], &mut rng);
    let mut init1 = a.init1().to_vec();
    init1[0] ^= 0xff;
    assert!(matches!(
        b.feed(&init1),
        Err(HandshakeError::Init(InitError::BadMagic { .. }))
    ));
}

#[test]
fn bad_init_length_aborts() {
    let mut rng = TestRng::new(12);
    let (a, b) = fresh_pair(&[Aead::Aes128Gcm], &[Aead::Aes128Gcm], &mut rng);
    let mut init1 = a.init1().to_vec();
    init1[4..8].copy_from_slice(&10u32.to_be_bytes());
    assert!(matches!(
        b.feed(&init1),
        Err(HandshakeError::Init(InitError::MessageTooShort {
            len: 10,
            ..
        }))
    ));
    let mut huge = a.init1().to_vec();
    huge[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    let (_, b2) = fresh_pair(&[Aead::Aes128Gcm], &[Aead::Aes128Gcm], &mut rng);
    assert!(matches!(
        b2.feed(&huge),
        Err(HandshakeError::Init(InitError::MessageTooLong { .. }))
    ));
}

#[test]
fn mandatory_app_aware_mode_refuses_a_peer_without_a() {
    let mut rng = TestRng::new(13);
    let mut client = host(&[Tep::X25519], &[Aead::Aes128Gcm]);
    let mut server = Host::<u8>::new(HostConfig {
        app_aware_mandatory: true,
        ..HostConfig::default()
    })
    .unwrap();
    let active = client
        .active_open(&SERVER, ConnectionPolicy::default(), &mut rng)
        .unwrap();
    let reason = disabled(server.passive_open(
        &CLIENT,
        active.syn_option(),
        ConnectionPolicy::default(),
        &mut rng,
    ));
    assert_eq!(reason, DisableReason::PeerNotAppAware);
}

#[test]
fn two_eno_options_in_a_syn_disable_eno() {
    let mut rng = TestRng::new(14);
    let mut client = host(&[Tep::X25519], &[Aead::Aes128Gcm]);
    let active = client
        .active_open(&SERVER, ConnectionPolicy::default(), &mut rng)
        .unwrap();
    let mut area = active.syn_option().to_vec();
    area.extend_from_slice(active.syn_option());
    let scan = tcpcrypt_proto::eno::scan_options(&area);
    assert_eq!(
        scan.syn_option(&area),
        Err(DisableReason::SeveralEnoOptions)
    );
}
