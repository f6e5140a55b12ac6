//! The test vectors of section 2.17 of the spec digest
//! (/work/shared/spec/tcpcrypt-protocol.md), reproduced byte for byte.

#![allow(clippy::unwrap_used)]

use tcpcrypt_proto::frame::{
    FramePayload, FrameReader, FrameWriter, first_frame_offset, seal_frame,
};
use tcpcrypt_proto::init::{Init1, Init2};
use tcpcrypt_proto::kex::EphemeralKey;
use tcpcrypt_proto::schedule::SessionSecret;
use tcpcrypt_proto::{Aead, Role, Tep};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const TRANSCRIPT: &str = "45032345040123";
const A_PRIV: &str = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
const B_PRIV: &str = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb";
const INIT1: &str = "15101a0e0000004b010001000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
const INIT2: &str = "097105e00000004a0001202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3fde9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f";
const ES: &str = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";
const PRK: &str = "57b451fb5d9a89f812be6014167252a32a16a9b5759ae39754c372c48c7940fb";

fn nonce(start: u8) -> [u8; 32] {
    std::array::from_fn(|i| start + i as u8)
}

fn keys() -> (EphemeralKey, EphemeralKey) {
    (
        EphemeralKey::from_private_bytes(Tep::X25519, &hex(A_PRIV)).unwrap(),
        EphemeralKey::from_private_bytes(Tep::X25519, &hex(B_PRIV)).unwrap(),
    )
}

fn ss0() -> SessionSecret {
    SessionSecret::extract(
        &nonce(0),
        &hex(TRANSCRIPT),
        &hex(INIT1),
        &hex(INIT2),
        &hex(ES),
    )
}

#[test]
fn init1_encodes_byte_for_byte() {
    let (a, _) = keys();
    let init1 = Init1::new(
        vec![Aead::Aes128Gcm.id()],
        nonce(0x00),
        a.public_key().clone(),
    );
    assert_eq!(init1.encode().unwrap(), hex(INIT1));
    assert_eq!(Init1::decode(Tep::X25519, &hex(INIT1)).unwrap(), init1);
}

#[test]
fn init2_encodes_byte_for_byte() {
    let (_, b) = keys();
    let init2 = Init2::new(Aead::Aes128Gcm, nonce(0x20), b.public_key().clone());
    assert_eq!(init2.encode().unwrap(), hex(INIT2));
    assert_eq!(Init2::decode(Tep::X25519, &hex(INIT2)).unwrap(), init2);
}

#[test]
fn both_sides_compute_es() {
    let (a, b) = keys();
    let init1 = Init1::decode(Tep::X25519, &hex(INIT1)).unwrap();
    let init2 = Init2::decode(Tep::X25519, &hex(INIT2)).unwrap();
    assert_eq!(a.agree(&init2.public_key).unwrap().as_bytes(), &hex(ES)[..]);
    assert_eq!(b.agree(&init1.public_key).unwrap().as_bytes(), &hex(ES)[..]);
}

#[test]
fn prk_is_ss0() {
    assert_eq!(ss0().as_bytes().to_vec(), hex(PRK));
}

#[test]
fn fresh_session_id() {
    let id = ss0().session_id(Tep::X25519, false, &[]);
    assert_eq!(
        id.to_string(),
        "2360583ca04231aa3be00fb3d3e878f7f5a8e610875816bebcb7cecca7780e386f"
    );
}

#[test]
fn master_and_traffic_keys_of_generations_0_and_1() {
    let mk0 = ss0().master_key(&[]);
    assert_eq!(
        mk0.as_bytes().to_vec(),
        hex("3f67b8c27ad91954c6d1e3d52f3b9613f6c97f98b3f523ba37580c4f6145aa12")
    );
    let k_ab = mk0.k_ab(Aead::Aes128Gcm);
    assert_eq!(
        k_ab.key_bytes(),
        &hex("2f92ea21324d987d1fd4d63ac755d03d")[..]
    );
    assert_eq!(
        k_ab.nonce_randomizer(),
        &hex("7ac13d921cab49db0b4d0830")[..]
    );
    let k_ba = mk0.k_ba(Aead::Aes128Gcm);
    assert_eq!(
        k_ba.key_bytes(),
        &hex("6572aa65310eaaaa07f8d65dc1328750")[..]
    );
    assert_eq!(
        k_ba.nonce_randomizer(),
        &hex("57d8dd408b3e77d989ca2cd7")[..]
    );
    let mk1 = mk0.next();
    assert_eq!(
        mk1.as_bytes().to_vec(),
        hex("f94c952748af78c3d8ed778ff7c033f6a844b4a4fbbfc01deebc0698abfd7a7a")
    );
    assert_eq!(
        mk1.k_ab(Aead::Aes128Gcm).as_bytes(),
        &hex("1e83b95785c9ef5956a6bbfcc976f8fd9356c57b381bfa93745160cc")[..]
    );
    assert_eq!(
        mk1.k_ba(Aead::Aes128Gcm).as_bytes(),
        &hex("11d652b5302172c13cc4f1c6a91446b1989c6981a6c24c7c12bf8b1c")[..]
    );
}

const FRAME_AT_75: &str = "0000166794b1565fafcfab8afcab3f0c0960a9627c71abeeaa";
const FRAME_AT_0: &str = "0000167e59311d1edd0526795a2e30199dcb0f07cb2ec4ccb9";

fn hello() -> FramePayload<'static> {
    FramePayload {
        fin: false,
        urgent: None,
        data: b"hello",
    }
}

#[test]
fn example_frame_at_offset_75_literal_reading() {
    let k_ab = ss0().master_key(&[]).k_ab(Aead::Aes128Gcm);
    assert_eq!(
        k_ab.nonce_for_offset(75).to_vec(),
        hex("7ac13d921cab49db0b4d087b")
    );
    let mut out = Vec::new();
    seal_frame(&k_ab, 75, false, &hello(), &mut out).unwrap();
    assert_eq!(out, hex(FRAME_AT_75));
}

#[test]
fn example_frame_at_offset_0_alternative_reading() {
    let k_ab = ss0().master_key(&[]).k_ab(Aead::Aes128Gcm);
    assert_eq!(
        k_ab.nonce_for_offset(0).to_vec(),
        hex("7ac13d921cab49db0b4d0830")
    );
    let mut out = Vec::new();
    seal_frame(&k_ab, 0, false, &hello(), &mut out).unwrap();
    assert_eq!(out, hex(FRAME_AT_0));
}

#[test]
fn project_offset_origin_is_the_75_reading() {
    // A's first frame follows its 75-byte Init1 on the wire.
    let offset = first_frame_offset(hex(INIT1).len());
    assert_eq!(offset, 75);
    let mk0 = ss0().master_key(&[]);
    let mut writer = FrameWriter::new(&mk0, Aead::Aes128Gcm, Role::A, offset);
    let mut out = Vec::new();
    writer.seal(&hello(), &mut out).unwrap();
    assert_eq!(out, hex(FRAME_AT_75));
    let mut reader = FrameReader::new(&mk0, Aead::Aes128Gcm, Role::A, offset);
    let mut frames = Vec::new();
    reader.feed(&out, &mut frames).unwrap();
    assert_eq!(frames[0].data, b"hello");
    let mut at_zero = FrameReader::new(&mk0, Aead::Aes128Gcm, Role::A, offset);
    assert!(at_zero.feed(&hex(FRAME_AT_0), &mut Vec::new()).is_err());
}

// Resumption from the same session with ss[1]; A was A originally.
const SS1: &str = "1665859b0d79b86d0ee80780a5986c6d7524fd1f5509adbd9d06d684de6dc130";

#[test]
fn ss1_and_resumption_identifier() {
    let ss1 = ss0().next();
    assert_eq!(ss1.as_bytes().to_vec(), hex(SS1));
    assert_eq!(
        ss1.resume_id().to_vec(),
        hex("6c85ba61caecae74aa6a92af908d78d80bac")
    );
    assert_eq!(ss1.resume_half(Role::A).to_vec(), hex("6c85ba61caecae74aa"));
    assert_eq!(ss1.resume_half(Role::B).to_vec(), hex("6a92af908d78d80bac"));
}

#[test]
fn resumed_session_keys_and_id() {
    let ss1 = ss0().next();
    let sn = hex("a0a1a2a3a4a5a6a7b0b1b2b3b4b5b6b7");
    assert_eq!(
        ss1.session_id(Tep::X25519, true, &sn).to_string(),
        "a31f02a1dc80ff5b7c9961e672ff9b7b8fe4d208ae00ada876df6216fa879f0f11"
    );
    let mk0 = ss1.master_key(&sn);
    assert_eq!(
        mk0.as_bytes().to_vec(),
        hex("8dbec8b3d3ad71a7ae0efe6e0ea1b41f03ea4ee0d880d7ae9957a8ad7e6dc4d7")
    );
    assert_eq!(
        mk0.k_ab(Aead::Aes128Gcm).as_bytes(),
        &hex("730b1f7c39f2796da85039d0b132ae1a06752f8f37777e4c7cbe9b58")[..]
    );
    assert_eq!(
        mk0.k_ba(Aead::Aes128Gcm).as_bytes(),
        &hex("0ef8fac7644befc90d8511d2d0f5d16f7abf75a8219a1272404db1e4")[..]
    );
    assert_eq!(
        ss1.next().as_bytes().to_vec(),
        hex("213ea3b50172fba7f34b69e24eda7be2388921b63f23c8a32521218e87483161")
    );
}

/// Hands out fixed bytes, in order: reproduces the vector's nonces.
struct FixedRng(Vec<u8>);

impl tcpcrypt_proto::Rng for FixedRng {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), tcpcrypt_proto::RngError> {
        assert!(dest.len() <= self.0.len(), "vector RNG exhausted");
        let rest = self.0.split_off(dest.len());
        dest.copy_from_slice(&self.0);
        self.0 = rest;
        Ok(())
    }
}

mod resumption_handshake {
    use super::*;
    use tcpcrypt_proto::handshake::{ConnectionPolicy, Handshake, Host, HostConfig};

    const CLIENT: u8 = 1;
    const SERVER: u8 = 2;

    fn host(peer: u8, original_role: Role) -> Host<u8> {
        let mut host = Host::new(HostConfig {
            teps: vec![Tep::X25519],
            aeads: vec![Aead::Aes128Gcm],
            ..HostConfig::default()
        })
        .unwrap();
        let ss1 = SessionSecret::from_bytes(hex(SS1).try_into().unwrap());
        host.cache_mut()
            .insert_fresh(peer, Tep::X25519, Aead::Aes128Gcm, ss1, original_role);
        host
    }

    #[test]
    fn syn_and_syn_ack_options_and_resumed_keys() {
        let mut client = host(SERVER, Role::A);
        let mut server = host(CLIENT, Role::B);
        let policy = ConnectionPolicy::default();
        let active = client
            .active_open(&SERVER, policy, &mut FixedRng(hex("a0a1a2a3a4a5a6a7")))
            .unwrap();
        assert_eq!(
            active.syn_option(),
            &hex("4514a36c85ba61caecae74aaa0a1a2a3a4a5a6a7")[..]
        );
        let passive = server
            .passive_open(
                &CLIENT,
                active.syn_option(),
                policy,
                &mut FixedRng(hex("b0b1b2b3b4b5b6b7")),
            )
            .unwrap();
        assert_eq!(
            passive.reply_option(),
            &hex("451501a36a92af908d78d80bacb0b1b2b3b4b5b6b7")[..]
        );
        let (reply, hs_b) = passive.into_parts();
        let hs_a = active
            .on_peer_syn(&reply, &mut FixedRng(Vec::new()))
            .unwrap();
        let (Handshake::Resumed(mut a), Handshake::Resumed(mut b)) = (hs_a, hs_b) else {
            panic!("both sides must resume");
        };
        let expected_id = "a31f02a1dc80ff5b7c9961e672ff9b7b8fe4d208ae00ada876df6216fa879f0f11";
        assert_eq!(a.session_id().to_string(), expected_id);
        assert_eq!(b.session_id().to_string(), expected_id);
        let k_ab = hex("730b1f7c39f2796da85039d0b132ae1a06752f8f37777e4c7cbe9b58");
        let k_ba = hex("0ef8fac7644befc90d8511d2d0f5d16f7abf75a8219a1272404db1e4");
        assert_eq!(a.writer().current_key().as_bytes(), &k_ab[..]);
        assert_eq!(b.writer().current_key().as_bytes(), &k_ba[..]);
        // Resumed frames start at offset 0 under both readings.
        assert_eq!(a.writer().next_offset(), 0);
        assert_eq!(b.reader().next_offset(), 0);

        let ss2 = SessionSecret::from_bytes(
            hex("213ea3b50172fba7f34b69e24eda7be2388921b63f23c8a32521218e87483161")
                .try_into()
                .unwrap(),
        );
        let next = client
            .cache_mut()
            .take_offer(&SERVER, Tep::X25519, vec![])
            .unwrap();
        assert_eq!(next.claimed.secret, ss2);
        assert_eq!(next.claimed.index, 2);
    }
}

/// The whole fresh handshake of the vector driven through the engine-facing
/// API: the ENO options it emits, the transcript order and the Init bytes it
/// feeds into the PRK must give the vector's session ID, and A's first frame
/// must be the vector's frame at offset 75.
mod fresh_handshake {
    use super::*;
    use tcpcrypt_proto::handshake::{ConnectionPolicy, Handshake, Host, HostConfig, Step};

    fn host() -> Host<u8> {
        Host::new(HostConfig {
            teps: vec![Tep::X25519],
            aeads: vec![Aead::Aes128Gcm],
            ..HostConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn handshake_api_reproduces_the_fresh_vector() {
        let (mut client, mut server) = (host(), host());
        let policy = ConnectionPolicy::default();
        // Each side draws its private key, then its nonce.
        let mut a_rng = FixedRng([hex(A_PRIV), nonce(0x00).to_vec()].concat());
        let mut b_rng = FixedRng([hex(B_PRIV), nonce(0x20).to_vec()].concat());
        let active = client.active_open(&2, policy, &mut a_rng).unwrap();
        assert_eq!(active.syn_option(), &hex("450323")[..]);
        let (reply, hs_b) = server
            .passive_open(&1, active.syn_option(), policy, &mut b_rng)
            .unwrap()
            .into_parts();
        assert_eq!(reply, hex("45040123"));
        let (Handshake::SendInit1(a), Handshake::AwaitInit1(b)) =
            (active.on_peer_syn(&reply, &mut a_rng).unwrap(), hs_b)
        else {
            panic!("a fresh exchange with the client as A");
        };
        assert_eq!(a.init1(), &hex(INIT1)[..]);
        let Step::Established {
            session: sb,
            send: init2,
            ..
        } = b.feed(&hex(INIT1)).unwrap()
        else {
            panic!("Init1 was complete");
        };
        assert_eq!(init2, hex(INIT2));
        let Step::Established {
            session: mut sa, ..
        } = a.feed(&init2).unwrap()
        else {
            panic!("Init2 was complete");
        };
        let expected = "2360583ca04231aa3be00fb3d3e878f7f5a8e610875816bebcb7cecca7780e386f";
        assert_eq!(sa.session_id().to_string(), expected);
        assert_eq!(sb.session_id().to_string(), expected);
        let mut wire = Vec::new();
        sa.writer().seal(&hello(), &mut wire).unwrap();
        assert_eq!(wire, hex(FRAME_AT_75));
    }
}
