//! The application-aware mode of one connection (RFC 8547 section 4.2),
//! chosen through its [`ConnectionPolicy`] rather than the host's
//! configuration: the `a` bit each SYN-form option carries, what the peer's
//! session reports, and mandatory mode refusing a peer without the bit.

#![allow(clippy::unwrap_used)]

use tcpcrypt_proto::eno::{AppAware, DisableReason, GlobalSuboption, SynOption};
use tcpcrypt_proto::handshake::{
    ConnectionPolicy, Handshake, HandshakeError, Host, HostConfig, Step,
};
use tcpcrypt_proto::session::Session;
use tcpcrypt_proto::{Aead, Role, Tep, TestRng};

const CLIENT: u8 = 1;
const SERVER: u8 = 2;

fn host(config: HostConfig) -> Host<u8> {
    Host::new(HostConfig {
        teps: vec![Tep::X25519],
        aeads: vec![Aead::Aes128Gcm],
        ..config
    })
    .unwrap()
}

fn mode(m: AppAware) -> ConnectionPolicy {
    ConnectionPolicy {
        app_aware: Some(m),
        ..ConnectionPolicy::default()
    }
}

fn global(option: &[u8]) -> GlobalSuboption {
    SynOption::parse(option).unwrap().global()
}

/// The ENO outcome of one connection: both SYN-form options, or why it
/// was disabled on the side that gave up first.
enum Outcome {
    Encrypted {
        syn: Vec<u8>,
        syn_ack: Vec<u8>,
        client: Box<Session>,
        server: Box<Session>,
    },
    Disabled {
        on: Role,
        why: DisableReason,
    },
}

fn run(
    client: &mut Host<u8>,
    client_policy: ConnectionPolicy,
    server: &mut Host<u8>,
    server_policy: ConnectionPolicy,
) -> Outcome {
    let mut rng = TestRng::new(21);
    let active = client
        .active_open(&SERVER, client_policy, &mut rng)
        .unwrap();
    let syn = active.syn_option().to_vec();
    let passive = match server.passive_open(&CLIENT, &syn, server_policy, &mut rng) {
        Ok(p) => p,
        Err(HandshakeError::Disabled(why)) => return Outcome::Disabled { on: Role::B, why },
        Err(e) => panic!("server: {e}"),
    };
    let (syn_ack, hs_b) = passive.into_parts();
    let hs_a = match active.on_peer_syn(&syn_ack, &mut rng) {
        Ok(h) => h,
        Err(HandshakeError::Disabled(why)) => return Outcome::Disabled { on: Role::A, why },
        Err(e) => panic!("client: {e}"),
    };
    let (Handshake::SendInit1(mut a), Handshake::AwaitInit1(b)) = (hs_a, hs_b) else {
        panic!("expected a fresh key exchange");
    };
    let init1 = a.init1().to_vec();
    let Step::Established {
        session: server_session,
        send: init2,
        ..
    } = b.feed(&init1).unwrap()
    else {
        panic!("Init1 was complete");
    };
    let client_session = loop {
        match a.feed(&init2).unwrap() {
            Step::Established { session, .. } => break session,
            Step::NeedMore(next) => a = next,
        }
    };
    Outcome::Encrypted {
        syn,
        syn_ack,
        client: client_session,
        server: server_session,
    }
}

#[test]
fn a_server_policy_sets_a_in_the_syn_ack_and_the_client_sees_it() {
    let (mut c, mut s) = (host(HostConfig::default()), host(HostConfig::default()));
    let Outcome::Encrypted {
        syn,
        syn_ack,
        client,
        server,
    } = run(
        &mut c,
        ConnectionPolicy::default(),
        &mut s,
        mode(AppAware::On),
    )
    else {
        panic!("ENO must stay on");
    };
    assert!(!global(&syn).a, "the client did not ask for a = 1");
    assert_eq!(global(&syn_ack), GlobalSuboption { b: true, a: true });
    assert!(client.info().peer_app_aware);
    assert!(!server.info().peer_app_aware);
}

#[test]
fn a_client_policy_sets_a_in_the_syn_and_the_server_sees_it() {
    let (mut c, mut s) = (host(HostConfig::default()), host(HostConfig::default()));
    let Outcome::Encrypted {
        syn,
        syn_ack,
        client,
        server,
    } = run(
        &mut c,
        mode(AppAware::On),
        &mut s,
        ConnectionPolicy::default(),
    )
    else {
        panic!("ENO must stay on");
    };
    assert_eq!(global(&syn), GlobalSuboption { b: false, a: true });
    assert!(!global(&syn_ack).a);
    assert!(server.info().peer_app_aware);
    assert!(!client.info().peer_app_aware);
}

#[test]
fn the_policy_changes_one_connection_and_not_the_host() {
    let (mut c, mut s) = (host(HostConfig::default()), host(HostConfig::default()));
    let mut rng = TestRng::new(3);
    let with = c
        .active_open(&SERVER, mode(AppAware::On), &mut rng)
        .unwrap();
    let without = c
        .active_open(&SERVER, ConnectionPolicy::default(), &mut rng)
        .unwrap();
    assert!(global(with.syn_option()).a);
    assert!(!global(without.syn_option()).a);
    assert!(!c.config().app_aware);
    let reply_with = s
        .passive_open(&CLIENT, without.syn_option(), mode(AppAware::On), &mut rng)
        .unwrap();
    let reply_without = s
        .passive_open(
            &CLIENT,
            without.syn_option(),
            ConnectionPolicy::default(),
            &mut rng,
        )
        .unwrap();
    assert!(global(reply_with.reply_option()).a);
    assert!(!global(reply_without.reply_option()).a);
}

#[test]
fn a_policy_can_turn_off_the_bit_a_host_sends() {
    let aware = HostConfig {
        app_aware: true,
        ..HostConfig::default()
    };
    let (mut c, mut s) = (host(aware.clone()), host(aware));
    let Outcome::Encrypted {
        syn,
        syn_ack,
        client,
        server,
    } = run(
        &mut c,
        mode(AppAware::Off),
        &mut s,
        ConnectionPolicy::default(),
    )
    else {
        panic!("ENO must stay on");
    };
    assert!(!global(&syn).a);
    assert!(global(&syn_ack).a, "no policy: the host's setting");
    assert!(!server.info().peer_app_aware);
    assert!(client.info().peer_app_aware);
}

#[test]
fn a_mandatory_server_policy_refuses_a_client_without_a() {
    let (mut c, mut s) = (host(HostConfig::default()), host(HostConfig::default()));
    match run(
        &mut c,
        ConnectionPolicy::default(),
        &mut s,
        mode(AppAware::Mandatory),
    ) {
        Outcome::Disabled { on, why } => {
            assert_eq!(on, Role::B);
            assert_eq!(why, DisableReason::PeerNotAppAware);
        }
        Outcome::Encrypted { .. } => panic!("mandatory mode let a = 0 through"),
    }
}

#[test]
fn a_mandatory_client_policy_refuses_a_server_without_a() {
    let (mut c, mut s) = (host(HostConfig::default()), host(HostConfig::default()));
    match run(
        &mut c,
        mode(AppAware::Mandatory),
        &mut s,
        ConnectionPolicy::default(),
    ) {
        Outcome::Disabled { on, why } => {
            // The server agreed (it sent its option), the client backs out.
            assert_eq!(on, Role::A);
            assert_eq!(why, DisableReason::PeerNotAppAware);
        }
        Outcome::Encrypted { .. } => panic!("mandatory mode let a = 0 through"),
    }
}

#[test]
fn mandatory_mode_sends_a_and_accepts_a_peer_that_sends_it() {
    let (mut c, mut s) = (host(HostConfig::default()), host(HostConfig::default()));
    let Outcome::Encrypted {
        syn,
        syn_ack,
        client,
        server,
    } = run(
        &mut c,
        mode(AppAware::Mandatory),
        &mut s,
        mode(AppAware::On),
    )
    else {
        panic!("both ends are application-aware");
    };
    assert!(global(&syn).a);
    assert!(global(&syn_ack).a);
    assert!(client.info().peer_app_aware);
    assert!(server.info().peer_app_aware);
}

/// The global suboption byte an `a = 1` SYN needs is one more than a
/// resumption offer with an 8-byte nonce leaves in the usual 20-byte
/// budget, so such a SYN offers fresh key exchange only, rather than
/// dropping the bit or shortening the nonce.
#[test]
fn an_app_aware_syn_has_no_room_for_a_resumption_offer() {
    let (mut c, mut s) = (host(HostConfig::default()), host(HostConfig::default()));
    let Outcome::Encrypted {
        mut client,
        mut server,
        ..
    } = run(
        &mut c,
        ConnectionPolicy::default(),
        &mut s,
        ConnectionPolicy::default(),
    )
    else {
        panic!("ENO must stay on");
    };
    c.on_established(&SERVER, &mut client);
    s.on_established(&CLIENT, &mut server);
    let mut rng = TestRng::new(5);
    let aware = c
        .active_open(&SERVER, mode(AppAware::On), &mut rng)
        .unwrap();
    assert!(!aware.offers_resumption());
    assert!(global(aware.syn_option()).a);
    let plain = c
        .active_open(&SERVER, ConnectionPolicy::default(), &mut rng)
        .unwrap();
    assert!(plain.offers_resumption(), "the secret was still cached");
}

/// A SYN-ACK always carries its global suboption (`b = 1`), so setting `a`
/// there costs a listening socket nothing: resumption still happens.
#[test]
fn an_app_aware_server_still_resumes() {
    let (mut c, mut s) = (host(HostConfig::default()), host(HostConfig::default()));
    let Outcome::Encrypted {
        mut client,
        mut server,
        ..
    } = run(
        &mut c,
        ConnectionPolicy::default(),
        &mut s,
        mode(AppAware::On),
    )
    else {
        panic!("ENO must stay on");
    };
    c.on_established(&SERVER, &mut client);
    s.on_established(&CLIENT, &mut server);
    let mut rng = TestRng::new(6);
    let active = c
        .active_open(&SERVER, ConnectionPolicy::default(), &mut rng)
        .unwrap();
    assert!(active.offers_resumption());
    let (syn_ack, hs_b) = s
        .passive_open(&CLIENT, active.syn_option(), mode(AppAware::On), &mut rng)
        .unwrap()
        .into_parts();
    assert!(global(&syn_ack).a);
    let (Handshake::Resumed(a), Handshake::Resumed(b)) =
        (active.on_peer_syn(&syn_ack, &mut rng).unwrap(), hs_b)
    else {
        panic!("both ends hold the secret: the session must resume");
    };
    assert!(a.info().peer_app_aware);
    assert!(!b.info().peer_app_aware);
    assert_eq!(a.session_id(), b.session_id());
}
