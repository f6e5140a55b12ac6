//! The one place that knows `tcpcrypt-engine`'s own types: it implements
//! [`PacketEngine`] for the real engine and builds it from the daemon's
//! configuration.

use std::net::SocketAddr;
use std::time::Instant;

use tcpcrypt_engine as eng;

use crate::config::Config;
use crate::engine_api::{
    ConnectionView, Direction, EngineEvent, EngineStats, LookupState, PacketEngine, PacketMeta,
    Phase, PolicyError, PolicyScope, SessionView, Transmit, Verdict,
};
use tcpcrypt_engine::ConnectionPolicy;

/// Builds the engine with the operating system's RNG.
pub fn build(config: &Config) -> eng::Engine {
    eng::Engine::new(engine_config(config), Box::new(tcpcrypt_proto::OsRng))
}

/// The engine settings the daemon's configuration determines; the rest
/// keep the engine's defaults.
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

fn session(info: eng::SessionInfo) -> SessionView {
    SessionView {
        session_id: info.session_id,
        role: info.role,
        tep: info.tep,
        aead: info.aead,
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
                reason: reason.to_string(),
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
            local: c.local,
            remote: c.remote,
            state: state(c.state),
            phase: match c.phase {
                eng::ConnPhase::Handshake => Phase::Handshake,
                eng::ConnPhase::Established => Phase::Established,
                eng::ConnPhase::Closing => Phase::Closing,
                eng::ConnPhase::Closed => Phase::Closed,
            },
            bytes_sent: c.bytes_sent,
            bytes_received: c.bytes_received,
            age: now.saturating_duration_since(c.first_seen),
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

    fn handle_packet_with(
        &mut self,
        now: Instant,
        dir: Direction,
        meta: PacketMeta,
        packet: &mut Vec<u8>,
    ) -> Verdict {
        eng::Engine::handle_packet_with(self, now, dir, meta, packet)
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
        ])
        .expect("flags parse");
        let config = Config::from_args(&args).expect("valid");
        let e = engine_config(&config);
        assert_eq!(e.half_open_timeout, std::time::Duration::from_secs(3));
        assert_eq!(e.max_half_open, 5);
        assert_eq!(e.max_connections, 50);
        assert_eq!(e.max_out_of_order_pieces, 6);
        assert_eq!(e.max_out_of_order_bytes_total, 2048);
    }
}
