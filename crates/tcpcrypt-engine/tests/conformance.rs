//! RFC 8547 / RFC 8548 requirements that docs/conformance.md cites: SYN
//! data (RFC 8547 section 4.7), simultaneous open, the `b` bit, a peer that
//! breaks a MUST, and peers that differ from ours where the RFCs allow it.
//!
//! A peer "without engine" is the harness's scripted kernel whose SYN
//! options and SYN data the test chooses: it plays another ENO
//! implementation (or a broken one) byte by byte. Peers that differ only in
//! what the RFCs leave to configuration (TEP order, AEAD preference,
//! global suboption, rekey timing, cache contents) are our engine with
//! another configuration: rewriting their SYN options on the link instead
//! would change the ENO transcript and rightly break the keys.

#![allow(clippy::unwrap_used)]

mod harness;

use harness::{Fate, Side, Sim};
use tcpcrypt_engine::wire::{Packet, TcpFlags, TcpOption};
use tcpcrypt_engine::{EngineConfig, Lookup, PlainReason, SessionInfo, Verdict};
use tcpcrypt_proto::{Aead, Role, Tep};

const ENO: u8 = 69;
const FAST_OPEN: u8 = 34;
const CURVE25519: u8 = 0x23;
/// A TEP identifier no RFC assigns.
const UNKNOWN_TEP: u8 = 0x30;

fn eno(data: &[u8]) -> TcpOption {
    TcpOption::Other {
        kind: ENO,
        data: data.to_vec(),
    }
}

fn fast_open_cookie() -> TcpOption {
    TcpOption::Other {
        kind: FAST_OPEN,
        data: vec![1, 2, 3, 4, 5, 6, 7, 8],
    }
}

fn has_eno(p: &Packet) -> bool {
    p.tcp.options.iter().any(|o| o.kind() == ENO)
}

fn session(sim: &Sim, side: Side) -> SessionInfo {
    match sim.lookup(side) {
        Lookup::Tcpcrypt(info) => info,
        other => panic!("{side:?}: expected tcpcrypt, got {other:?}"),
    }
}

/// The first packet `side` put on the wire whose flags are exactly these
/// among SYN and ACK.
fn first_on_wire(sim: &Sim, side: Side, syn: bool, ack: bool) -> Packet<'_> {
    sim.tap
        .iter()
        .filter(|(s, _)| *s == side)
        .filter_map(|(_, p)| Packet::parse(p).ok())
        .find(|p| {
            p.tcp.flags.contains(TcpFlags::SYN) == syn && p.tcp.flags.contains(TcpFlags::ACK) == ack
        })
        .expect("such a packet crossed the wire")
}

/// The SYN as B's kernel got it (after B's engine).
fn syn_at_b_kernel(sim: &Sim) -> Packet<'_> {
    sim.b
        .kernel
        .inbox_log
        .iter()
        .find(|p| p.tcp.flags.contains(TcpFlags::SYN))
        .cloned()
        .expect("B's kernel got the SYN")
}

/// A client without our engine whose SYN carries `options` (after the
/// usual ones) and `data`, talking to a server with our engine.
fn client_with_syn_data(options: Vec<TcpOption>, data: &[u8]) -> Sim {
    let mut sim = Sim::new("10.0.0.1:40000", "10.0.0.2:80", (false, true));
    sim.a.kernel.syn_options.extend(options);
    sim.a.kernel.syn_data = data.to_vec();
    sim
}

/// Runs the SYN data case: the data must cross the wire on the SYN, never
/// reach B's kernel with it, be acknowledged as the SYN alone, and arrive
/// exactly once when the client's TCP sends it again.
fn assert_syn_data_discarded(mut sim: Sim) {
    let data = sim.a.kernel.syn_data.clone();
    sim.a.kernel.connect();
    sim.run();
    let syn = first_on_wire(&sim, Side::A, true, false);
    assert_eq!(syn.tcp.payload, data, "the peer did put data on its SYN");
    assert!(has_eno(&syn));
    assert!(syn_at_b_kernel(&sim).tcp.payload.is_empty());
    assert!(sim.b.kernel.received.is_empty());
    let syn_ack = first_on_wire(&sim, Side::B, true, true);
    assert_eq!(
        syn_ack.tcp.ack,
        sim.a.kernel.isn.wrapping_add(1),
        "only the SYN is acknowledged"
    );
    // The peer sends no ENO on its ACK (it plays no tcpcrypt here): plain
    // TCP, whose data comes only from non-SYN segments.
    sim.a.kernel.push();
    sim.run();
    assert!(matches!(sim.lookup(Side::B), Lookup::Plain(_)));
    assert_eq!(sim.b.kernel.received, data);
}

#[test]
fn syn_data_with_eno_never_reaches_the_kernel_and_only_the_syn_is_acknowledged() {
    assert_syn_data_discarded(client_with_syn_data(vec![eno(&[CURVE25519])], b"early"));
}

#[test]
fn syn_data_with_eno_and_a_fast_open_cookie_is_discarded() {
    let sim = client_with_syn_data(vec![eno(&[CURVE25519]), fast_open_cookie()], b"tfo data");
    assert_syn_data_discarded(sim);
}

#[test]
fn syn_data_is_discarded_when_eno_fails_on_the_syn() {
    // No TEP we know: negotiation fails at once, the data must still go.
    assert_syn_data_discarded(client_with_syn_data(vec![eno(&[UNKNOWN_TEP])], b"early"));
}

#[test]
fn syn_data_is_discarded_when_the_syn_carries_two_eno_options() {
    let sim = client_with_syn_data(vec![eno(&[CURVE25519]), eno(&[CURVE25519])], b"x");
    assert_syn_data_discarded(sim);
}

#[test]
fn syn_data_without_eno_is_left_to_the_kernel() {
    // Plain Fast Open is not ENO's business: the data passes untouched.
    let data = b"tfo request";
    let mut sim = client_with_syn_data(vec![fast_open_cookie()], data);
    sim.a.kernel.connect();
    sim.run();
    assert_eq!(syn_at_b_kernel(&sim).tcp.payload, data);
    let syn_ack = first_on_wire(&sim, Side::B, true, true);
    assert_eq!(
        syn_ack.tcp.ack,
        sim.a.kernel.isn.wrapping_add(1 + data.len() as u32)
    );
    assert_eq!(sim.b.kernel.received, data);
}

#[test]
fn our_kernels_syn_data_goes_out_without_eno_and_arrives_once() {
    let data = b"fast open from our side";
    let mut sim = Sim::v4();
    sim.a.kernel.syn_options.push(fast_open_cookie());
    sim.a.kernel.syn_data = data.to_vec();
    sim.connect();
    let syn = first_on_wire(&sim, Side::A, true, false);
    assert!(!has_eno(&syn), "no ENO on a SYN carrying data");
    assert_eq!(syn.tcp.payload, data);
    assert_eq!(sim.lookup(Side::A), Lookup::Plain(PlainReason::SynData));
    assert!(matches!(sim.lookup(Side::B), Lookup::Plain(_)));
    sim.a.kernel.push();
    sim.run();
    assert_eq!(sim.b.kernel.received, data);
}

#[test]
fn syn_ack_data_from_an_eno_peer_never_reaches_the_kernel() {
    // A server without our engine that answers with ENO and puts data on
    // its SYN-ACK (added on the link: the option bytes stay as sent).
    let mut sim = Sim::new("10.0.0.1:40000", "10.0.0.2:80", (true, false));
    sim.b.kernel.syn_options.push(eno(&[0x01, CURVE25519]));
    sim.filter = Some(Box::new(|from, p| {
        if from == Side::B {
            let mut q = Packet::parse(p).unwrap();
            if q.tcp.flags.contains(TcpFlags::SYN) {
                q.tcp.payload = b"synack data".into();
                *p = q.to_bytes().unwrap();
            }
        }
        Fate::Pass
    }));
    sim.a.kernel.connect();
    sim.run();
    let at_kernel = sim
        .a
        .kernel
        .inbox_log
        .iter()
        .find(|p| p.tcp.flags.contains(TcpFlags::SYN))
        .unwrap();
    assert!(at_kernel.tcp.payload.is_empty());
    assert!(sim.a.kernel.received.is_empty());
    let ack = first_on_wire(&sim, Side::A, false, true);
    assert_eq!(ack.tcp.ack, sim.b.kernel.isn.wrapping_add(1));
}

#[test]
fn a_simultaneous_open_falls_back_to_plain_tcp_and_data_flows_intact() {
    let mut sim = Sim::v4();
    sim.a.kernel.connect();
    sim.b.kernel.connect();
    sim.run();
    assert!(sim.a.kernel.established && sim.b.kernel.established);
    for side in [Side::A, Side::B] {
        assert_eq!(
            sim.lookup(side),
            Lookup::Plain(PlainReason::Negotiation("simultaneous open".to_string())),
            "{side:?}"
        );
        // Both SYNs offered ENO; the SYN-ACKs carry none, which tells an
        // RFC 8547 peer to disable as well (section 4.6).
        assert!(has_eno(&first_on_wire(&sim, side, true, false)));
        assert!(!has_eno(&first_on_wire(&sim, side, true, true)));
    }
    let (to_b, to_a) = (vec![7u8; 5000], b"reply in plain".to_vec());
    sim.a.kernel.write(&to_b);
    sim.a.kernel.push();
    sim.b.kernel.write(&to_a);
    sim.b.kernel.push();
    sim.run();
    assert_eq!(sim.b.kernel.received, to_b);
    assert_eq!(sim.a.kernel.received, to_a);
    // Nothing was held, dropped or rewritten after the SYNs: plain TCP.
    for h in [&sim.a, &sim.b] {
        assert!(
            h.verdicts
                .iter()
                .skip(2)
                .all(|(_, v)| *v == Verdict::Accept)
        );
    }
    sim.a.kernel.close();
    sim.b.kernel.close();
    sim.run();
    assert!(sim.a.kernel.fin_received && sim.b.kernel.fin_received);
}

/// A server without our engine whose SYN-ACK carries `option`; the client
/// runs our engine. The client must end in plain TCP with data intact.
fn client_meets_server_option(option: Vec<TcpOption>) -> Sim {
    let mut sim = Sim::new("10.0.0.1:40000", "10.0.0.2:80", (true, false));
    sim.b.kernel.syn_options.extend(option);
    sim.connect();
    match sim.lookup(Side::A) {
        Lookup::Plain(PlainReason::Negotiation(_)) => {}
        other => panic!("expected a failed negotiation, got {other:?}"),
    }
    assert!(!has_eno(&first_on_wire(&sim, Side::A, false, true)));
    sim.a.kernel.write(b"plain request");
    sim.a.kernel.push();
    sim.b.kernel.write(b"plain answer");
    sim.b.kernel.push();
    sim.run();
    assert_eq!(sim.b.kernel.received, b"plain request");
    assert_eq!(sim.a.kernel.received, b"plain answer");
    sim
}

#[test]
fn a_passive_peer_answering_with_b_zero_leaves_plain_tcp() {
    // Breaks the passive opener's MUST to set b = 1: same b on both sides.
    client_meets_server_option(vec![eno(&[CURVE25519])]);
}

#[test]
fn a_passive_peer_choosing_a_tep_we_did_not_offer_leaves_plain_tcp() {
    client_meets_server_option(vec![eno(&[0x01, UNKNOWN_TEP])]);
}

#[test]
fn a_passive_peer_sending_two_eno_options_leaves_plain_tcp() {
    client_meets_server_option(vec![eno(&[0x01, CURVE25519]), eno(&[0x01, CURVE25519])]);
}

#[test]
fn a_passive_peer_sending_a_vacuous_option_leaves_plain_tcp() {
    client_meets_server_option(vec![eno(&[0x01])]);
}

#[test]
fn an_active_peer_with_b_one_meets_our_passive_b_one_and_gets_plain_tcp() {
    // RFC 8547 section 4.3: b = 1 on an active open against a passive
    // opener fails by design.
    let mut sim = Sim::new("10.0.0.1:40000", "10.0.0.2:80", (false, true));
    sim.a.kernel.syn_options.push(eno(&[0x01, CURVE25519]));
    sim.connect();
    assert!(matches!(
        sim.lookup(Side::B),
        Lookup::Plain(PlainReason::Negotiation(_))
    ));
    let syn_ack = first_on_wire(&sim, Side::B, true, true);
    assert!(!has_eno(&syn_ack));
}

#[test]
fn an_active_peer_offering_an_unknown_tep_first_gets_one_common_tep_with_b_one() {
    // Several suboptions with a length byte and an unknown TEP first: the
    // server must skip it and pick one TEP both offered. The scripted
    // client runs no key exchange, so the check ends at the SYN-ACK.
    let mut sim = Sim::new("10.0.0.1:40000", "10.0.0.2:80", (false, true));
    sim.a
        .kernel
        .syn_options
        .push(eno(&[0x04, UNKNOWN_TEP, 0x21, CURVE25519]));
    sim.a.kernel.connect();
    sim.run();
    let syn_ack = first_on_wire(&sim, Side::B, true, true);
    let chosen = syn_ack
        .tcp
        .options
        .iter()
        .find_map(|o| match o {
            TcpOption::Other { kind: ENO, data } => Some(data.clone()),
            _ => None,
        })
        .expect("the SYN-ACK carries ENO");
    // Explicit global suboption with b = 1, then one TEP both offered.
    assert_eq!(chosen[0] & 0x01, 0x01);
    assert_eq!(chosen.len(), 2);
    assert!([0x21, CURVE25519].contains(&chosen[1]), "{chosen:x?}");
}

fn config(teps: &[Tep], aeads: &[Aead]) -> EngineConfig {
    EngineConfig {
        teps: teps.to_vec(),
        aeads: aeads.to_vec(),
        ..EngineConfig::default()
    }
}

fn pair(a: EngineConfig, b: EngineConfig) -> Sim {
    let mut sim = Sim::v4();
    sim.a.engine = Some(harness::engine_with(11, a));
    sim.b.engine = Some(harness::engine_with(12, b));
    sim
}

fn exchange(sim: &mut Sim) {
    sim.a.kernel.write(b"from a");
    sim.a.kernel.push();
    sim.b.kernel.write(b"from b");
    sim.b.kernel.push();
    sim.run();
    assert_eq!(sim.b.kernel.received, b"from a");
    assert_eq!(sim.a.kernel.received, b"from b");
    assert!(
        !sim.wire_payloads(Side::A)
            .windows(6)
            .any(|w| w == b"from a")
    );
}

#[test]
fn a_peer_with_another_tep_order_gets_the_servers_preference() {
    let mut sim = pair(
        config(
            &[Tep::P521, Tep::X448, Tep::P256, Tep::X25519],
            &[Aead::Aes128Gcm],
        ),
        config(&[Tep::P256, Tep::X25519, Tep::P521], &[Aead::Aes128Gcm]),
    );
    sim.connect();
    let (a, b) = (session(&sim, Side::A), session(&sim, Side::B));
    assert_eq!(a.session_id, b.session_id);
    assert_eq!((a.role, b.role), (Role::A, Role::B));
    // B picks its most preferred TEP among A's several suboptions.
    assert_eq!((a.tep, b.tep), (Tep::P256, Tep::P256));
    exchange(&mut sim);
}

#[test]
fn a_peer_with_another_aead_preference_meets_on_a_common_one() {
    let mut sim = pair(
        config(&[Tep::X25519], &[Aead::ChaCha20Poly1305, Aead::Aes128Gcm]),
        config(&[Tep::X25519], &[Aead::Aes256Gcm, Aead::Aes128Gcm]),
    );
    sim.connect();
    let (a, b) = (session(&sim, Side::A), session(&sim, Side::B));
    assert_eq!((a.aead, b.aead), (Aead::Aes128Gcm, Aead::Aes128Gcm));
    exchange(&mut sim);
}

#[test]
fn an_app_aware_peer_with_a_global_suboption_interoperates_with_a_default_one() {
    let mut sim = pair(
        EngineConfig {
            app_aware: true,
            ..EngineConfig::default()
        },
        EngineConfig::default(),
    );
    sim.connect();
    assert_eq!(
        session(&sim, Side::A).session_id,
        session(&sim, Side::B).session_id
    );
    exchange(&mut sim);
}

#[test]
fn a_peer_that_rekeys_right_after_the_handshake_is_followed() {
    let mut sim = pair(
        EngineConfig {
            rekey_after_bytes: Some(1),
            ..EngineConfig::default()
        },
        EngineConfig::default(),
    );
    sim.connect();
    exchange(&mut sim);
    sim.a.kernel.write(b" and more");
    sim.a.kernel.push();
    sim.run();
    assert_eq!(sim.b.kernel.received, b"from a and more");
    // A's first frame (one byte under generation 0 is enough) is followed
    // at once by a frame of generation 1; B follows with its own rekey.
    let a = sim.wire_frame_controls(Side::A);
    assert_eq!(a.iter().map(|c| c & 1).collect::<Vec<_>>()[..2], [0, 1]);
    assert!(sim.wire_frame_controls(Side::B).iter().any(|c| c & 1 == 1));
}

#[test]
fn resumption_offered_to_a_server_that_forgot_gives_a_fresh_exchange() {
    let mut sim = Sim::v4();
    sim.connect();
    let first = session(&sim, Side::A);
    // The server restarted: same address, empty cache.
    sim.b.engine = Some(harness::engine(99));
    sim.next_connection(40001);
    sim.connect();
    let syn = first_on_wire(&sim, Side::A, true, false);
    let offered = syn.tcp.options.iter().any(|o| match o {
        TcpOption::Other { kind: ENO, data } => {
            data.iter().any(|b| b & 0x80 != 0 && b & 0x7f >= 0x20)
        }
        _ => false,
    });
    assert!(offered, "A offered resumption");
    let (a, b) = (session(&sim, Side::A), session(&sim, Side::B));
    assert!(!a.resumed && !b.resumed);
    assert_eq!(a.session_id, b.session_id);
    assert_ne!(a.session_id, first.session_id);
    exchange(&mut sim);
}

#[test]
fn a_retransmitted_syn_carries_the_same_eno_option() {
    let mut sim = Sim::v4();
    let mut dropped = false;
    sim.filter = Some(Box::new(move |from, p| {
        let syn = Packet::parse(p).is_ok_and(|q| q.tcp.flags.contains(TcpFlags::SYN));
        if from == Side::A && syn && !dropped {
            dropped = true;
            return Fate::Drop;
        }
        Fate::Pass
    }));
    sim.a.kernel.connect();
    sim.run();
    sim.a.kernel.retransmit(1460);
    sim.run();
    let options: Vec<Vec<TcpOption>> = sim
        .tap
        .iter()
        .filter(|(s, _)| *s == Side::A)
        .filter_map(|(_, p)| Packet::parse(p).ok())
        .filter(|p| p.tcp.flags.contains(TcpFlags::SYN))
        .map(|p| {
            p.tcp
                .options
                .into_iter()
                .filter(|o| o.kind() == ENO)
                .collect()
        })
        .collect();
    assert_eq!(options.len(), 2);
    assert_eq!(options[0], options[1]);
    assert_eq!(
        session(&sim, Side::A).session_id,
        session(&sim, Side::B).session_id
    );
}

/// A randomness source that has none to give (early boot, broken device).
struct NoRandomness;

impl tcpcrypt_proto::Rng for NoRandomness {
    fn fill(&mut self, _dest: &mut [u8]) -> Result<(), tcpcrypt_proto::RngError> {
        Err(tcpcrypt_proto::RngError("no entropy".to_string()))
    }
}

#[test]
fn without_randomness_no_eno_option_is_sent_in_either_role() {
    let mut sim = Sim::v4();
    for h in [&mut sim.a, &mut sim.b] {
        h.engine = Some(tcpcrypt_engine::Engine::new(
            EngineConfig::default(),
            Box::new(NoRandomness),
        ));
    }
    sim.connect();
    assert!(!has_eno(&first_on_wire(&sim, Side::A, true, false)));
    assert!(matches!(sim.lookup(Side::A), Lookup::Plain(_)));
    // The server side, offered ENO by a client that has randomness.
    let mut sim = Sim::v4();
    sim.b.engine = Some(tcpcrypt_engine::Engine::new(
        EngineConfig::default(),
        Box::new(NoRandomness),
    ));
    sim.connect();
    assert!(has_eno(&first_on_wire(&sim, Side::A, true, false)));
    assert!(!has_eno(&first_on_wire(&sim, Side::B, true, true)));
    for side in [Side::A, Side::B] {
        assert!(matches!(sim.lookup(side), Lookup::Plain(_)), "{side:?}");
    }
    exchange_plain(&mut sim);
}

fn exchange_plain(sim: &mut Sim) {
    sim.a.kernel.write(b"plain a");
    sim.a.kernel.push();
    sim.b.kernel.write(b"plain b");
    sim.b.kernel.push();
    sim.run();
    assert_eq!(sim.b.kernel.received, b"plain a");
    assert_eq!(sim.a.kernel.received, b"plain b");
}

#[test]
fn contents_of_a_non_syn_eno_option_are_ignored() {
    // Another implementation (or a future TEP) puts bytes in the ENO
    // option of its first ACK; only SYN-form options enter the transcript,
    // so the handshake must still complete with the same keys.
    let mut sim = Sim::v4();
    let rewrites = std::rc::Rc::new(std::cell::Cell::new(0));
    let counter = rewrites.clone();
    sim.filter = Some(Box::new(move |from, p| {
        let mut q = Packet::parse(p).unwrap();
        if from == Side::A && !q.tcp.flags.contains(TcpFlags::SYN) {
            let mut changed = false;
            for o in &mut q.tcp.options {
                if o.kind() == ENO {
                    *o = eno(&[0xab, 0xcd]);
                    changed = true;
                }
            }
            if changed {
                counter.set(counter.get() + 1);
                *p = q.to_bytes().unwrap();
            }
        }
        Fate::Pass
    }));
    sim.connect();
    assert!(rewrites.get() > 0, "A's first ACK carried ENO to rewrite");
    assert_eq!(
        session(&sim, Side::A).session_id,
        session(&sim, Side::B).session_id
    );
    exchange(&mut sim);
}

#[test]
fn eno_goes_on_every_segment_until_a_non_syn_segment_arrives() {
    let mut sim = Sim::v4();
    sim.connect();
    sim.a.kernel.write(b"later data");
    sim.a.kernel.push();
    sim.run();
    // Host A's ACK and Init1 leave before anything but B's SYN-ACK came
    // back: each carries ENO. Once B's first non-SYN segment is in, A's
    // later segments carry none.
    let first_from_b = sim
        .tap
        .iter()
        .position(|(s, p)| {
            *s == Side::B && Packet::parse(p).is_ok_and(|q| !q.tcp.flags.contains(TcpFlags::SYN))
        })
        .unwrap();
    let from_a: Vec<(usize, Packet)> = sim
        .tap
        .iter()
        .enumerate()
        .filter(|(_, (s, _))| *s == Side::A)
        .map(|(i, (_, p))| (i, Packet::parse(p).unwrap()))
        .collect();
    let before: Vec<_> = from_a.iter().filter(|(i, _)| *i < first_from_b).collect();
    assert!(before.len() >= 3, "SYN, ACK and Init1 went out first");
    assert!(before.iter().all(|(_, p)| has_eno(p)));
    let last = &from_a.last().unwrap().1;
    assert!(!last.tcp.payload.is_empty() && !has_eno(last));
}

#[test]
fn an_eno_option_altered_in_transit_gives_no_working_connection() {
    // An on-path attacker strips all but the weakest-looking TEP from A's
    // SYN. Negotiation still succeeds on the altered bytes, but A and B
    // feed different transcripts into the key schedule, so no frame
    // authenticates: no byte reaches the application and both ends reset.
    let mut sim = Sim::v4();
    sim.filter = Some(Box::new(|from, p| {
        let mut q = Packet::parse(p).unwrap();
        if from == Side::A && q.tcp.flags.contains(TcpFlags::SYN) {
            for o in &mut q.tcp.options {
                if let TcpOption::Other { kind: ENO, data } = o {
                    *data = vec![0x21];
                }
            }
            *p = q.to_bytes().unwrap();
        }
        Fate::Pass
    }));
    sim.connect();
    sim.a.kernel.write(b"secret request");
    for _ in 0..20 {
        sim.a.kernel.send_range(0, 14);
        sim.run();
    }
    assert!(sim.b.kernel.received.is_empty());
    assert!(sim.a.kernel.rst_received && sim.b.kernel.rst_received);
    assert!(
        !sim.wire_payloads(Side::A)
            .windows(6)
            .any(|w| w == b"secret")
    );
}

#[test]
fn every_syn_and_syn_ack_we_send_carries_exactly_one_eno_option() {
    let mut sim = Sim::v4();
    sim.connect();
    for side in [Side::A, Side::B] {
        let syn = first_on_wire(&sim, side, true, side == Side::B);
        let n = syn.tcp.options.iter().filter(|o| o.kind() == ENO).count();
        assert_eq!(n, 1, "{side:?}");
    }
}

#[test]
fn the_segment_ending_an_init_message_has_psh() {
    let mut sim = Sim::v4();
    sim.connect();
    // B's Init2 leaves with the banner a server sends at once.
    sim.b.kernel.write(b"220 banner");
    sim.b.kernel.push();
    sim.run();
    for side in [Side::A, Side::B] {
        let stream: Vec<u8> = sim.wire_stream(side).into_iter().map_while(|b| b).collect();
        let init_len = u32::from_be_bytes(stream[4..8].try_into().unwrap());
        let base = match side {
            Side::A => sim.a.kernel.isn,
            Side::B => sim.b.kernel.isn,
        }
        .wrapping_add(1);
        let ending: Vec<Packet> = sim
            .tap
            .iter()
            .filter(|(s, _)| *s == side)
            .filter_map(|(_, p)| Packet::parse(p).ok())
            .filter(|p| {
                let start = p.tcp.seq.wrapping_sub(base);
                let end = start + p.tcp.payload.len() as u32;
                !p.tcp.flags.contains(TcpFlags::SYN) && start < init_len && init_len <= end
            })
            .collect();
        assert!(!ending.is_empty(), "{side:?}: the Init message crossed");
        assert!(
            ending.iter().all(|p| p.tcp.flags.contains(TcpFlags::PSH)),
            "{side:?}: PSH on the segment with the Init message's last byte"
        );
    }
}

/// Rewrites the first data segment `side` sends (its Init message) with
/// `change`; the test plays a peer that breaks a MUST of RFC 8548.
fn rewrite_init(sim: &mut Sim, side: Side, change: fn(&mut Vec<u8>)) {
    let mut done = false;
    sim.filter = Some(Box::new(move |from, p| {
        let mut q = Packet::parse(p).unwrap();
        if from == side && !done && !q.tcp.payload.is_empty() {
            done = true;
            change(q.tcp.payload.to_mut());
            *p = q.to_bytes().unwrap();
        }
        Fate::Pass
    }));
}

/// The reason `side`'s engine gave for aborting.
fn abort_reason(sim: &Sim, side: Side) -> String {
    let h = match side {
        Side::A => &sim.a,
        Side::B => &sim.b,
    };
    h.events
        .iter()
        .find_map(|e| match e {
            tcpcrypt_engine::Event::Aborted { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{side:?} did not abort"))
}

fn assert_reset_both_ways_and_nothing_delivered(sim: &mut Sim) {
    sim.a.kernel.write(b"request");
    sim.a.kernel.push();
    sim.b.kernel.write(b"answer");
    sim.b.kernel.push();
    sim.run();
    assert!(sim.a.kernel.received.is_empty() && sim.b.kernel.received.is_empty());
    assert!(sim.a.kernel.rst_received, "A's application sees an error");
    assert!(sim.b.kernel.rst_received, "B's application sees an error");
    for side in [Side::A, Side::B] {
        assert!(
            !sim.wire_payloads(side)
                .windows(6)
                .any(|w| w == b"reques" || w == b"answer")
        );
    }
}

#[test]
fn a_peer_sending_a_malformed_init1_is_reset_and_nothing_is_delivered() {
    let mut sim = Sim::v4();
    rewrite_init(&mut sim, Side::A, |init| init[0] ^= 0xff);
    sim.connect();
    assert_reset_both_ways_and_nothing_delivered(&mut sim);
    assert!(abort_reason(&sim, Side::B).contains("magic"));
}

#[test]
fn a_peer_choosing_a_cipher_we_did_not_offer_is_reset() {
    let mut sim = pair(
        config(&[Tep::X25519], &[Aead::Aes128Gcm]),
        EngineConfig::default(),
    );
    // B's Init2 names AES-256-GCM (sym_cipher is bytes 8..10), which A
    // never offered (RFC 8548 section 3.3: A must abort).
    rewrite_init(&mut sim, Side::B, |init| {
        init[8..10].copy_from_slice(&[0, 2])
    });
    sim.connect();
    assert_reset_both_ways_and_nothing_delivered(&mut sim);
    let reason = abort_reason(&sim, Side::A);
    assert!(
        reason.contains("AES_256_GCM") || reason.contains("offer"),
        "{reason}"
    );
}

#[test]
fn a_peer_sending_a_public_key_that_gives_an_all_zero_secret_is_reset() {
    let mut sim = pair(
        config(&[Tep::X25519], &[Aead::Aes128Gcm]),
        EngineConfig::default(),
    );
    // Init1 ends with Pub_A (32 bytes for X25519, RFC 8548 section 5):
    // the zero point makes every shared secret zero (RFC 7748 section 6).
    rewrite_init(&mut sim, Side::A, |init| {
        let n = init.len();
        init[n - 32..].fill(0);
    });
    sim.connect();
    assert_reset_both_ways_and_nothing_delivered(&mut sim);
    let reason = abort_reason(&sim, Side::B);
    assert!(reason.contains("zero"), "{reason}");
}

#[test]
fn a_simultaneous_open_with_a_peer_that_set_b_one_still_falls_back_safely() {
    // The one case where RFC 8547 would negotiate: the other host chose
    // role B (b = 1) for its active open. We leave ENO off our SYN-ACK,
    // which makes an RFC 8547 peer disable too, and both run plain TCP.
    let mut sim = Sim::new("10.0.0.1:40000", "10.0.0.2:80", (true, false));
    sim.b.kernel.syn_options.push(eno(&[0x01, CURVE25519]));
    sim.a.kernel.connect();
    sim.b.kernel.connect();
    sim.run();
    assert!(sim.a.kernel.established && sim.b.kernel.established);
    assert_eq!(
        sim.lookup(Side::A),
        Lookup::Plain(PlainReason::Negotiation("simultaneous open".to_string()))
    );
    assert!(!has_eno(&first_on_wire(&sim, Side::A, true, true)));
    exchange_plain(&mut sim);
}

#[test]
fn a_peer_that_changes_its_syn_option_on_retransmission_gets_the_same_syn_ack_option() {
    // RFC 8547 section 4.6 forbids changing SYN-form options between
    // retransmissions. Our passive side keeps the negotiation of the first
    // SYN, so its SYN-ACK option never changes either; a peer that really
    // switched would compute other keys and never authenticate.
    let mut sim = Sim::new("10.0.0.1:40000", "10.0.0.2:80", (false, true));
    sim.a.kernel.syn_options.push(eno(&[CURVE25519, 0x21]));
    let mut dropped = false;
    sim.filter = Some(Box::new(move |from, p| {
        let syn_ack = Packet::parse(p).is_ok_and(|q| q.tcp.flags.contains(TcpFlags::SYN));
        if from == Side::B && syn_ack && !dropped {
            dropped = true;
            return Fate::Drop;
        }
        Fate::Pass
    }));
    sim.a.kernel.connect();
    sim.run();
    // The same SYN again, now offering only P-256 (and preferring it).
    let last = sim.a.kernel.syn_options.len() - 1;
    sim.a.kernel.syn_options[last] = eno(&[0x21]);
    sim.a.kernel.retransmit(1460);
    sim.run();
    let syn_acks: Vec<Vec<TcpOption>> = sim
        .tap
        .iter()
        .filter(|(s, _)| *s == Side::B)
        .filter_map(|(_, p)| Packet::parse(p).ok())
        .filter(|p| p.tcp.flags.contains(TcpFlags::SYN))
        .map(|p| {
            p.tcp
                .options
                .into_iter()
                .filter(|o| o.kind() == ENO)
                .collect()
        })
        .collect();
    assert_eq!(syn_acks.len(), 2);
    assert_eq!(syn_acks[0], syn_acks[1]);
    assert!(!syn_acks[0].is_empty());
}
