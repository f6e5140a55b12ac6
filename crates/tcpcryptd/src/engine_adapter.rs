//! The one place that knows `tcpcrypt-engine`'s own types: it implements
//! [`PacketEngine`] for the real engine and builds it from the daemon's
//! configuration.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tcpcrypt_engine as eng;

use crate::config::Config;
use crate::engine_api::{
    ConnectionView, Direction, EngineEvent, EngineStats, LookupState, PacketEngine, PacketMeta,
    Phase, PolicyError, PolicyScope, Session, Transmit, Verdict,
};
use tcpcrypt_control as control;
use tcpcrypt_engine::ConnectionPolicy;
use tcpcrypt_proto::{Aead, Role, Tep};

/// Builds one packet thread's engine with the operating system's RNG.
/// Every engine of the daemon gets the same `tally`, so the table-wide
/// limits hold for the host, whichever thread a connection lands on.
pub fn build(config: &Config, tally: &Arc<eng::SharedTally>) -> eng::Engine {
    let engine = eng::EngineConfig {
        shared_tally: Some(tally.clone()),
        ..engine_config(config)
    };
    eng::Engine::new(engine, Box::new(tcpcrypt_proto::OsRng))
}

/// The settings of a packet thread's engine that the daemon's
/// configuration determines; the rest keep the engine's defaults.
pub fn engine_config(config: &Config) -> eng::EngineConfig {
    let limits = &config.limits;
    eng::EngineConfig {
        teps: config.teps.clone(),
        aeads: config.aeads.clone(),
        cleanup_delay: config.cleanup_delay,
        rekey_after_bytes: config.rekey_after,
        half_open_timeout: limits.half_open_timeout,
        max_half_open: limits.max_half_open,
        max_connections: limits.max_connections,
        max_out_of_order_pieces: limits.max_out_of_order_pieces,
        max_out_of_order_bytes_total: limits.max_out_of_order_bytes,
        ..eng::EngineConfig::default()
    }
}

/// The engine's session facts as the control protocol reports them: the
/// one place they cross from the crypto crates' types into the protocol's.
/// The matches are exhaustive so a TEP or AEAD added to the protocol crate
/// cannot reach a client unnamed.
fn session(info: eng::SessionInfo) -> Session {
    Session {
        session_id: control::SessionId::from_bytes(*info.session_id.as_bytes()),
        role: match info.role {
            Role::A => control::Role::A,
            Role::B => control::Role::B,
        },
        tep: match info.tep {
            Tep::P256 => control::Tep::EcdheP256,
            Tep::P521 => control::Tep::EcdheP521,
            Tep::X25519 => control::Tep::EcdheCurve25519,
            Tep::X448 => control::Tep::EcdheCurve448,
        },
        aead: match info.aead {
            Aead::Aes128Gcm => control::Aead::Aes128Gcm,
            Aead::Aes256Gcm => control::Aead::Aes256Gcm,
            Aead::ChaCha20Poly1305 => control::Aead::ChaCha20Poly1305,
        },
        resumed: info.resumed,
        peer_app_aware: info.peer_app_aware,
    }
}

fn state(l: eng::Lookup) -> LookupState {
    match l {
        eng::Lookup::Tcpcrypt(info) => LookupState::Tcpcrypt(session(info)),
        eng::Lookup::Plain(reason) => LookupState::Plain { reason },
        eng::Lookup::Pending => LookupState::Pending,
        eng::Lookup::Unknown => LookupState::Unknown,
    }
}

impl PacketEngine for eng::Engine {
    fn handle_timeout(&mut self, now: Instant) {
        eng::Engine::handle_timeout(self, now)
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        eng::Engine::poll_transmit(self)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        eng::Engine::poll_timeout(self)
    }

    fn poll_event(&mut self) -> Option<EngineEvent> {
        eng::Engine::poll_event(self).map(|ev| match ev {
            eng::Event::Guarding { local, remote } => EngineEvent::Guarding { local, remote },
            eng::Event::Established {
                local,
                remote,
                info,
                keylog,
            } => EngineEvent::Established {
                local,
                remote,
                session: session(info),
                secrets: Some(keylog),
            },
            eng::Event::Plain {
                local,
                remote,
                reason,
            } => EngineEvent::Plain {
                local,
                remote,
                reason,
            },
            eng::Event::Aborted {
                local,
                remote,
                reason,
            } => EngineEvent::Aborted {
                local,
                remote,
                reason,
            },
            eng::Event::Closed { local, remote } => EngineEvent::Closed { local, remote },
            eng::Event::Forgotten { local, remote } => EngineEvent::Forgotten { local, remote },
        })
    }

    fn lookup(&self, local: SocketAddr, remote: SocketAddr) -> LookupState {
        state(eng::Engine::lookup(self, local, remote))
    }

    fn connection_keys(&self) -> Vec<(SocketAddr, SocketAddr)> {
        eng::Engine::connection_keys(self)
    }

    fn connection(
        &self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Option<ConnectionView> {
        eng::Engine::connection(self, local, remote).map(|c| ConnectionView {
            conn: tcpcrypt_control::Connection {
                local: c.local,
                remote: c.remote,
                lookup: state(c.state),
                phase: match c.phase {
                    eng::ConnPhase::Handshake => Phase::Handshake,
                    eng::ConnPhase::Established => Phase::Established,
                    eng::ConnPhase::Closing => Phase::Closing,
                    eng::ConnPhase::Closed => Phase::Closed,
                },
                bytes_sent: c.bytes_sent,
                bytes_received: c.bytes_received,
                age: now.saturating_duration_since(c.first_seen),
            },
            guarded: c.guarded,
        })
    }

    fn flush_resumption(&mut self) -> usize {
        eng::Engine::flush_resumption(self)
    }

    fn set_policy(
        &mut self,
        now: Instant,
        scope: PolicyScope,
        local: SocketAddr,
        policy: ConnectionPolicy,
    ) -> Result<(), PolicyError> {
        eng::Engine::set_policy(self, now, scope, local, policy)
    }

    fn clear_policy(&mut self, scope: PolicyScope, local: SocketAddr) -> bool {
        eng::Engine::clear_policy(self, scope, local)
    }

    fn policy(
        &self,
        now: Instant,
        scope: PolicyScope,
        local: SocketAddr,
    ) -> Option<ConnectionPolicy> {
        eng::Engine::policy(self, now, scope, local)
    }

    fn handle_packet_into(
        &mut self,
        now: Instant,
        dir: Direction,
        meta: PacketMeta,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Verdict {
        eng::Engine::handle_packet_into(self, now, dir, meta, input, out)
    }

    fn tracks_reported(&self, packet: &[u8]) -> Option<bool> {
        let report = eng::wire::icmp::TooBig::parse(packet)?;
        let tracked = eng::Engine::lookup(self, report.quoted_src, report.quoted_dst);
        Some(!matches!(tracked, eng::Lookup::Unknown))
    }

    fn last_packet_guarded(&self) -> bool {
        eng::Engine::last_packet_guarded(self)
    }

    fn stats(&self) -> EngineStats {
        eng::Engine::stats(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Args;
    use clap::Parser;

    #[test]
    fn session_facts_keep_their_names_bytes_and_id() {
        for tep in Tep::ALL {
            for aead in Aead::ALL {
                for (role, resumed) in [(Role::A, false), (Role::B, true)] {
                    let id = tcpcrypt_proto::SessionId::new(tep, resumed, [0x5a; 32]);
                    let s = session(eng::SessionInfo {
                        session_id: id,
                        role,
                        original_role: role.peer(),
                        tep,
                        aead,
                        resumed,
                        peer_app_aware: resumed,
                    });
                    assert_eq!(s.session_id.to_hex(), id.to_string());
                    assert_eq!(s.role.name(), role.as_str());
                    assert_eq!(s.tep.name(), tep.name());
                    assert_eq!(s.tep.byte(), tep.id());
                    assert_eq!(s.aead.name(), aead.name());
                    assert_eq!(s.aead.id(), aead.id());
                    assert_eq!((s.resumed, s.peer_app_aware), (resumed, resumed));
                }
            }
        }
    }

    #[test]
    fn configured_limits_reach_the_engine() {
        let args = Args::try_parse_from([
            "tcpcryptd",
            "--half-open-timeout",
            "3",
            "--max-half-open",
            "5",
            "--max-connections",
            "50",
            "--max-out-of-order-pieces",
            "6",
            "--max-out-of-order-bytes",
            "2K",
            "--threads",
            "2",
        ])
        .expect("flags parse");
        let config = Config::from_args(&args).expect("valid");
        // Both packet threads' engines get the whole limits and one tally
        // to count them in.
        let tally = Arc::new(eng::SharedTally::default());
        let engines = [build(&config, &tally), build(&config, &tally)];
        for engine in &engines {
            let e = engine.config();
            assert_eq!(e.half_open_timeout, std::time::Duration::from_secs(3));
            assert_eq!(e.max_half_open, 5);
            assert_eq!(e.max_connections, 50);
            assert_eq!(e.max_out_of_order_pieces, 6);
            assert_eq!(e.max_out_of_order_bytes_total, 2048);
            let shared = e.shared_tally.as_ref().expect("a shared tally");
            assert!(Arc::ptr_eq(shared, &tally));
        }
    }
}
