//! Per-socket policies between two simulated hosts: a registration for a
//! local endpoint changes what that socket's next connection offers,
//! accepts and caches (RFC 8548 section 3.5), and which `a` bit its SYN or
//! SYN-ACK carries (RFC 8547 section 4.2).

#![allow(clippy::unwrap_used)]

mod harness;

use std::net::SocketAddr;

use harness::{Side, Sim};
use tcpcrypt_engine::wire::{Packet, TcpFlags, TcpOption};
use tcpcrypt_engine::{AppAware, ConnectionPolicy, Lookup, PolicyScope, SessionInfo};
use tcpcrypt_proto::eno::{ENO_KIND, GlobalSuboption, SynOption};

fn session(sim: &Sim, side: Side) -> SessionInfo {
    match sim.lookup(side) {
        Lookup::Tcpcrypt(info) => info,
        other => panic!("{side:?}: expected tcpcrypt, got {other:?}"),
    }
}

/// Whether any segment on the wire carried payload. Before the
/// applications write, that can only be an Init1/Init2 message: a resumed
/// session has none.
fn init_messages_crossed(sim: &Sim) -> bool {
    sim.tap
        .iter()
        .any(|(_, p)| Packet::parse(p).is_ok_and(|p| !p.tcp.payload.is_empty()))
}

fn set(sim: &mut Sim, side: Side, scope: PolicyScope, local: &str, policy: ConnectionPolicy) {
    let now = sim.now;
    let local: SocketAddr = local.parse().unwrap();
    sim.host(side)
        .engine
        .as_mut()
        .unwrap()
        .set_policy(now, scope, local, policy)
        .unwrap();
}

const NO_RESUMPTION: ConnectionPolicy = ConnectionPolicy {
    ignore_resumption: true,
    no_cache: false,
    app_aware: None,
};
const NO_CACHE: ConnectionPolicy = ConnectionPolicy {
    ignore_resumption: false,
    no_cache: true,
    app_aware: None,
};

/// Connects once (client port 40000), then again from `port`; returns
/// whether the second session resumed and whether Init messages crossed.
fn second_connection(sim: &mut Sim, port: u16) -> (bool, bool) {
    sim.next_connection(port);
    sim.connect();
    let (a, b) = (session(sim, Side::A), session(sim, Side::B));
    assert_eq!(a.session_id, b.session_id);
    assert_eq!(a.resumed, b.resumed);
    (a.resumed, init_messages_crossed(sim))
}

#[test]
fn without_a_policy_the_second_connection_resumes() {
    let mut sim = Sim::v4();
    sim.connect();
    assert!(init_messages_crossed(&sim));
    assert_eq!(second_connection(&mut sim, 40001), (true, false));
}

#[test]
fn no_resumption_on_the_client_socket_forces_a_fresh_key_exchange() {
    let mut sim = Sim::v4();
    sim.connect();
    set(
        &mut sim,
        Side::A,
        PolicyScope::Connect,
        "10.0.0.1:40001",
        NO_RESUMPTION,
    );
    assert_eq!(second_connection(&mut sim, 40001), (false, true));
}

#[test]
fn a_client_registration_is_used_up_by_its_connection() {
    let mut sim = Sim::v4();
    sim.connect();
    set(
        &mut sim,
        Side::A,
        PolicyScope::Connect,
        "10.0.0.1:40001",
        NO_RESUMPTION,
    );
    assert_eq!(second_connection(&mut sim, 40001), (false, true));
    assert_eq!(sim.a.engine.as_ref().unwrap().policy_count(), 0);
    // The fresh session was cached (only resumption was refused), so the
    // next socket, with no registration, resumes from it.
    assert_eq!(second_connection(&mut sim, 40002), (true, false));
}

#[test]
fn a_wildcard_client_registration_matches_the_chosen_source_address() {
    let mut sim = Sim::v4();
    sim.connect();
    set(
        &mut sim,
        Side::A,
        PolicyScope::Connect,
        "0.0.0.0:40001",
        NO_RESUMPTION,
    );
    assert_eq!(second_connection(&mut sim, 40001), (false, true));
}

#[test]
fn no_resumption_on_another_port_changes_nothing() {
    let mut sim = Sim::v4();
    sim.connect();
    set(
        &mut sim,
        Side::A,
        PolicyScope::Connect,
        "10.0.0.1:40009",
        NO_RESUMPTION,
    );
    assert_eq!(second_connection(&mut sim, 40001), (true, false));
}

#[test]
fn no_cache_on_the_first_connection_leaves_the_next_nothing_to_resume() {
    let mut sim = Sim::v4();
    set(
        &mut sim,
        Side::A,
        PolicyScope::Connect,
        "10.0.0.1:40000",
        NO_CACHE,
    );
    sim.connect();
    assert!(!session(&sim, Side::A).resumed);
    assert_eq!(sim.a.engine.as_ref().unwrap().resumption_cache_len(), 0);
    assert_eq!(second_connection(&mut sim, 40001), (false, true));
}

#[test]
fn no_resumption_on_a_listening_port_refuses_the_peers_offer() {
    let mut sim = Sim::v4();
    set(
        &mut sim,
        Side::B,
        PolicyScope::Listen,
        "0.0.0.0:80",
        NO_RESUMPTION,
    );
    sim.connect();
    assert_eq!(second_connection(&mut sim, 40001), (false, true));
    // It stays for every later peer SYN, until cleared.
    assert_eq!(second_connection(&mut sim, 40002), (false, true));
    let b = sim.b.engine.as_mut().unwrap();
    assert!(b.clear_policy(PolicyScope::Listen, "0.0.0.0:80".parse().unwrap()));
    assert_eq!(second_connection(&mut sim, 40003), (true, false));
}

#[test]
fn no_cache_on_a_listening_port_keeps_the_server_from_caching() {
    let mut sim = Sim::v4();
    set(
        &mut sim,
        Side::B,
        PolicyScope::Listen,
        "10.0.0.2:80",
        NO_CACHE,
    );
    sim.connect();
    assert_eq!(sim.b.engine.as_ref().unwrap().resumption_cache_len(), 0);
    // The client cached and offers; the server has nothing to match.
    assert_eq!(second_connection(&mut sim, 40001), (false, true));
}

fn app_aware(mode: AppAware) -> ConnectionPolicy {
    ConnectionPolicy {
        app_aware: Some(mode),
        ..ConnectionPolicy::default()
    }
}

/// The global suboption of the ENO option in the SYN (or, with `syn_ack`,
/// the SYN-ACK) `side` put on the wire; `None` when it carried no ENO.
fn eno_global(sim: &Sim, side: Side, syn_ack: bool) -> Option<GlobalSuboption> {
    let syn = sim
        .tap
        .iter()
        .filter(|(s, _)| *s == side)
        .filter_map(|(_, p)| Packet::parse(p).ok())
        .find(|p| {
            p.tcp.flags.contains(TcpFlags::SYN) && p.tcp.flags.contains(TcpFlags::ACK) == syn_ack
        })
        .unwrap_or_else(|| panic!("{side:?} sent no SYN (syn_ack: {syn_ack})"));
    syn.tcp.options.iter().find_map(|o| match o {
        TcpOption::Other { kind, data } if *kind == ENO_KIND => {
            let mut whole = vec![ENO_KIND, u8::try_from(data.len() + 2).unwrap()];
            whole.extend_from_slice(data);
            Some(SynOption::parse(&whole).unwrap().global())
        }
        _ => None,
    })
}

fn a_bit(sim: &Sim, side: Side, syn_ack: bool) -> bool {
    eno_global(sim, side, syn_ack)
        .unwrap_or_else(|| panic!("{side:?}'s SYN carried no ENO option"))
        .a
}

fn is_plain(sim: &Sim, side: Side) -> bool {
    matches!(sim.lookup(side), Lookup::Plain(_))
}

#[test]
fn an_app_aware_listening_socket_sets_a_in_its_syn_ack_and_the_client_sees_it() {
    let mut sim = Sim::v4();
    set(
        &mut sim,
        Side::B,
        PolicyScope::Listen,
        "0.0.0.0:80",
        app_aware(AppAware::On),
    );
    sim.connect();
    assert!(!a_bit(&sim, Side::A, false), "the client asked for nothing");
    assert!(a_bit(&sim, Side::B, true));
    assert!(session(&sim, Side::A).peer_app_aware);
    assert!(!session(&sim, Side::B).peer_app_aware);
    // A listening registration stays for every later connection.
    sim.next_connection(40001);
    sim.connect();
    assert!(a_bit(&sim, Side::B, true));
    assert!(session(&sim, Side::A).peer_app_aware);
}

#[test]
fn an_app_aware_registration_for_another_port_leaves_a_clear() {
    let mut sim = Sim::v4();
    set(
        &mut sim,
        Side::B,
        PolicyScope::Listen,
        "10.0.0.2:81",
        app_aware(AppAware::On),
    );
    set(
        &mut sim,
        Side::A,
        PolicyScope::Connect,
        "10.0.0.1:40009",
        app_aware(AppAware::On),
    );
    sim.connect();
    assert!(!a_bit(&sim, Side::A, false));
    assert!(!a_bit(&sim, Side::B, true));
    assert!(!session(&sim, Side::A).peer_app_aware);
    assert!(!session(&sim, Side::B).peer_app_aware);
}

#[test]
fn an_app_aware_client_socket_sets_a_in_its_one_syn() {
    let mut sim = Sim::v4();
    set(
        &mut sim,
        Side::A,
        PolicyScope::Connect,
        "10.0.0.1:40000",
        app_aware(AppAware::On),
    );
    sim.connect();
    assert!(a_bit(&sim, Side::A, false));
    assert!(!a_bit(&sim, Side::B, true));
    assert!(session(&sim, Side::B).peer_app_aware);
    assert!(!session(&sim, Side::A).peer_app_aware);
    // Used up by that SYN; the next socket sends a = 0 again.
    assert_eq!(sim.a.engine.as_ref().unwrap().policy_count(), 0);
    sim.next_connection(40001);
    sim.connect();
    assert!(!a_bit(&sim, Side::A, false));
    assert!(!session(&sim, Side::B).peer_app_aware);
}

#[test]
fn a_mandatory_listening_socket_leaves_a_client_without_a_in_plain_tcp() {
    let mut sim = Sim::v4();
    set(
        &mut sim,
        Side::B,
        PolicyScope::Listen,
        "0.0.0.0:80",
        app_aware(AppAware::Mandatory),
    );
    sim.connect();
    assert_eq!(eno_global(&sim, Side::B, true), None, "SYN-ACK without ENO");
    assert!(is_plain(&sim, Side::A), "{:?}", sim.lookup(Side::A));
    assert!(is_plain(&sim, Side::B), "{:?}", sim.lookup(Side::B));
    sim.a.kernel.write(b"in the clear");
    sim.a.kernel.push();
    sim.run();
    assert_eq!(sim.b.kernel.received, b"in the clear");
    assert_eq!(sim.wire_payloads(Side::A), b"in the clear");
}

#[test]
fn a_mandatory_listening_socket_accepts_an_app_aware_client() {
    let mut sim = Sim::v4();
    set(
        &mut sim,
        Side::B,
        PolicyScope::Listen,
        "0.0.0.0:80",
        app_aware(AppAware::Mandatory),
    );
    set(
        &mut sim,
        Side::A,
        PolicyScope::Connect,
        "10.0.0.1:40000",
        app_aware(AppAware::On),
    );
    sim.connect();
    assert!(a_bit(&sim, Side::A, false));
    assert!(a_bit(&sim, Side::B, true));
    assert!(session(&sim, Side::A).peer_app_aware);
    assert!(session(&sim, Side::B).peer_app_aware);
}

#[test]
fn a_mandatory_client_socket_leaves_a_server_without_a_in_plain_tcp() {
    let mut sim = Sim::v4();
    set(
        &mut sim,
        Side::A,
        PolicyScope::Connect,
        "10.0.0.1:40000",
        app_aware(AppAware::Mandatory),
    );
    sim.connect();
    assert!(a_bit(&sim, Side::A, false));
    // The server answered with ENO; the client's ACK without it turns the
    // server plain too (RFC 8547 section 4.6).
    assert!(!a_bit(&sim, Side::B, true));
    assert!(is_plain(&sim, Side::A), "{:?}", sim.lookup(Side::A));
    sim.b.kernel.write(b"reply");
    sim.b.kernel.push();
    sim.run();
    assert!(is_plain(&sim, Side::B), "{:?}", sim.lookup(Side::B));
    assert_eq!(sim.a.kernel.received, b"reply");
    assert_eq!(sim.wire_payloads(Side::B), b"reply");
}
