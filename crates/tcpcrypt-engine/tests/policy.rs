//! Per-socket resumption policies (RFC 8548 section 3.5) between two
//! simulated hosts: a registration for a local endpoint changes what that
//! socket's next connection offers, accepts and caches.

#![allow(clippy::unwrap_used)]

mod harness;

use std::net::SocketAddr;

use harness::{Side, Sim};
use tcpcrypt_engine::wire::Packet;
use tcpcrypt_engine::{ConnectionPolicy, Lookup, PolicyScope, SessionInfo};

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
