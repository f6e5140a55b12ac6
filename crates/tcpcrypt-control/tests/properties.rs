//! Properties over generated values: what one side writes the other reads
//! back as the same value, and no line, however broken, makes either side
//! panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use proptest::prelude::*;
use tcpcrypt_control::answer::{
    decode_cleared, decode_flushed, decode_list, decode_lookup, decode_version,
};
use tcpcrypt_control::{
    Aead, Answer, AppAware, Connection, Lookup, MAX_WAIT, Phase, PolicyScope, PolicyUpdate,
    Request, Role, Session, SessionId, Tep, normalize_addr,
};

fn addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

/// An address a policy may name: the protocol refuses port 0 there.
fn policy_addr() -> impl Strategy<Value = SocketAddr> {
    addr().prop_map(|mut a| {
        a.set_port(a.port().max(1));
        a
    })
}

fn app_aware() -> impl Strategy<Value = AppAware> {
    prop_oneof![
        Just(AppAware::Off),
        Just(AppAware::On),
        Just(AppAware::Mandatory)
    ]
}

fn scope() -> impl Strategy<Value = PolicyScope> {
    prop_oneof![Just(PolicyScope::Connect), Just(PolicyScope::Listen)]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (addr(), addr(), 0u64..=MAX_WAIT.as_millis() as u64).prop_map(|(local, remote, ms)| {
            Request::Lookup {
                local,
                remote,
                wait: Duration::from_millis(ms),
            }
        }),
        Just(Request::List),
        Just(Request::Version),
        Just(Request::FlushResumption),
        (
            scope(),
            policy_addr(),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>()),
            proptest::option::of(app_aware()),
        )
            .prop_map(|(scope, local, no_resumption, no_cache, app_aware)| {
                Request::SetPolicy {
                    scope,
                    local,
                    update: PolicyUpdate {
                        no_resumption,
                        no_cache,
                        app_aware,
                    },
                }
            }),
        (scope(), policy_addr()).prop_map(|(scope, local)| Request::ClearPolicy { scope, local }),
    ]
}

fn session() -> impl Strategy<Value = Session> {
    (
        any::<[u8; 32]>(),
        prop_oneof![Just(Role::A), Just(Role::B)],
        proptest::sample::select(Tep::ALL.to_vec()),
        proptest::sample::select(Aead::ALL.to_vec()),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(rest, role, tep, aead, resumed, peer_app_aware)| {
            let mut id = [0u8; 33];
            id[0] = tep.byte() | if resumed { 0x80 } else { 0 };
            id[1..].copy_from_slice(&rest);
            Session {
                session_id: SessionId::from_bytes(id),
                role,
                tep,
                aead,
                resumed,
                peer_app_aware,
            }
        })
}

fn lookup() -> impl Strategy<Value = Lookup> {
    prop_oneof![
        session().prop_map(Lookup::Tcpcrypt),
        any::<String>().prop_map(|reason| Lookup::Plain { reason }),
        Just(Lookup::Pending),
        Just(Lookup::Unknown),
    ]
}

fn connection() -> impl Strategy<Value = Connection> {
    (
        addr(),
        addr(),
        lookup(),
        proptest::sample::select(vec![
            Phase::Handshake,
            Phase::Established,
            Phase::Closing,
            Phase::Closed,
        ]),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(local, remote, lookup, phase, sent, received, age)| Connection {
                local: normalize_addr(local),
                remote: normalize_addr(remote),
                lookup,
                phase,
                bytes_sent: sent,
                bytes_received: received,
                age: Duration::from_millis(age),
            },
        )
}

/// The request as the daemon will know it: addresses normalised.
fn as_read(r: Request) -> Request {
    match r {
        Request::Lookup {
            local,
            remote,
            wait,
        } => Request::Lookup {
            local: normalize_addr(local),
            remote: normalize_addr(remote),
            wait,
        },
        Request::SetPolicy {
            scope,
            local,
            update,
        } => Request::SetPolicy {
            scope,
            local: normalize_addr(local),
            update,
        },
        Request::ClearPolicy { scope, local } => Request::ClearPolicy {
            scope,
            local: normalize_addr(local),
        },
        other => other,
    }
}

proptest! {
    #[test]
    fn a_request_is_read_back_as_written(r in request()) {
        let line = r.encode();
        prop_assert!(line.len() <= tcpcrypt_control::MAX_REQUEST_LINE);
        prop_assert_eq!(Request::parse(line.trim_end()), Ok(as_read(r)));
    }

    #[test]
    fn a_lookup_answer_is_read_back_as_written(l in lookup()) {
        let line = Answer::Lookup(l.clone()).to_line();
        prop_assert!(!line.contains('\n'));
        prop_assert_eq!(decode_lookup(line.as_bytes()), Ok(l));
    }

    #[test]
    fn a_list_answer_is_read_back_as_written(rows in proptest::collection::vec(connection(), 0..4)) {
        let line = Answer::List(rows.clone()).to_line();
        prop_assert_eq!(decode_list(line.as_bytes()), Ok(rows));
    }

    #[test]
    fn no_request_line_makes_the_daemon_side_panic(line in any::<String>()) {
        let _ = Request::parse(&line);
    }

    #[test]
    fn no_answer_line_makes_the_client_side_panic(line in any::<Vec<u8>>()) {
        let _ = decode_lookup(&line);
        let _ = decode_list(&line);
        let _ = decode_version(&line);
        let _ = decode_flushed(&line);
        let _ = decode_cleared(&line);
    }

    #[test]
    fn a_json_object_with_wrong_fields_is_refused_not_panicked_on(
        keys in proptest::collection::vec(
            proptest::sample::select(vec![
                "v", "ok", "op", "state", "session_id", "tep", "tep_byte", "role", "aead",
                "local", "remote", "wait_ms", "connections", "scope", "app_aware",
            ]),
            0..8,
        ),
        values in proptest::collection::vec(
            proptest::sample::select(vec![
                "1", "2", "-1", "true", "null", "\"A\"", "[]", "{}", "\"lookup\"",
                "\"tcpcrypt\"", "\"10.0.0.1:80\"", "1e99", "\"TCPCRYPT_ECDHE_P256\"",
            ]),
            8,
        ),
    ) {
        let fields: Vec<String> = keys
            .iter()
            .zip(&values)
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        let line = format!("{{{}}}", fields.join(","));
        let _ = Request::parse(&line);
        let _ = decode_lookup(line.as_bytes());
        let _ = decode_list(line.as_bytes());
    }
}
