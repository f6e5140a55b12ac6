//! Nothing a peer sends can panic the handshake glue: arbitrary SYN-form
//! options at both openers (with resumption secrets cached, so the
//! resumption paths run) and arbitrary Init bytes in arbitrary chunks.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use tcpcrypt_proto::handshake::{ConnectionPolicy, Handshake, Host, HostConfig, Step};
use tcpcrypt_proto::init::{INIT1_MAGIC, INIT2_MAGIC};
use tcpcrypt_proto::schedule::SessionSecret;
use tcpcrypt_proto::{Role, Tep, TestRng};

const PEER: u8 = 1;

/// A host with a cached secret for `PEER` under every TEP.
fn host_with_cache() -> Host<u8> {
    let mut host = Host::new(HostConfig::default()).unwrap();
    for (i, tep) in Tep::ALL.into_iter().enumerate() {
        host.cache_mut().insert_fresh(
            PEER,
            tep,
            tcpcrypt_proto::Aead::Aes128Gcm,
            SessionSecret::from_bytes([i as u8; 32]),
            Role::A,
        );
    }
    host
}

/// Mostly well-framed ENO options (kind 69, right length byte) with any
/// contents, sometimes arbitrary bytes.
fn option_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..38).prop_map(|body| {
            let mut o = vec![0x45, (body.len() + 2) as u8];
            o.extend(body);
            o
        }),
        1 => prop::collection::vec(any::<u8>(), 0..42),
    ]
}

/// Bytes that often start like an Init message of `magic`.
fn init_like(magic: u32) -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        0u32..300,
        prop::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(move |(framed, len, body)| {
            if framed {
                let mut m = magic.to_be_bytes().to_vec();
                m.extend_from_slice(&len.to_be_bytes());
                m.extend(body);
                m
            } else {
                body
            }
        })
}

fn chunks(bytes: &[u8], size: usize) -> Vec<&[u8]> {
    bytes.chunks(size.max(1)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn passive_open_survives_any_syn_option(option in option_bytes(), seed in any::<u64>()) {
        let mut host = host_with_cache();
        let mut rng = TestRng::new(seed);
        let _ = host.passive_open(&PEER, &option, ConnectionPolicy::default(), &mut rng);
    }

    #[test]
    fn active_opener_survives_any_syn_ack_option(option in option_bytes(), seed in any::<u64>()) {
        let mut host = host_with_cache();
        let mut rng = TestRng::new(seed);
        let active = host.active_open(&PEER, ConnectionPolicy::default(), &mut rng).unwrap();
        prop_assert!(active.offers_resumption());
        let _ = active.on_peer_syn(&option, &mut rng);
    }

    #[test]
    fn host_b_survives_any_init1_bytes(
        bytes in init_like(INIT1_MAGIC),
        size in 1usize..80,
        tep in prop::sample::select(Tep::ALL.to_vec()),
    ) {
        let mut host = Host::<u8>::new(HostConfig { teps: vec![tep], ..HostConfig::default() }).unwrap();
        let option = [0x45, 0x03, tep.id()];
        let mut rng = TestRng::new(3);
        let (_, hs) = host
            .passive_open(&PEER, &option, ConnectionPolicy::default(), &mut rng)
            .unwrap()
            .into_parts();
        let Handshake::AwaitInit1(mut b) = hs else {
            panic!("a fresh offer makes the passive opener host B");
        };
        for chunk in chunks(&bytes, size) {
            match b.feed(chunk) {
                Ok(Step::NeedMore(next)) => b = next,
                Ok(Step::Established { .. }) | Err(_) => break,
            }
        }
    }

    #[test]
    fn host_a_survives_any_init2_bytes(
        bytes in init_like(INIT2_MAGIC),
        size in 1usize..80,
        tep in prop::sample::select(Tep::ALL.to_vec()),
    ) {
        let mut host = Host::<u8>::new(HostConfig { teps: vec![tep], ..HostConfig::default() }).unwrap();
        let mut rng = TestRng::new(4);
        let active = host.active_open(&PEER, ConnectionPolicy::default(), &mut rng).unwrap();
        let reply = [0x45, 0x04, 0x01, tep.id()];
        let Handshake::SendInit1(mut a) = active.on_peer_syn(&reply, &mut rng).unwrap() else {
            panic!("the active opener is host A");
        };
        for chunk in chunks(&bytes, size) {
            match a.feed(chunk) {
                Ok(Step::NeedMore(next)) => a = next,
                Ok(Step::Established { .. }) | Err(_) => break,
            }
        }
    }
}
