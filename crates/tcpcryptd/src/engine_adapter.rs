//! The one place that knows `tcpcrypt-engine`'s own types: it implements
//! [`PacketEngine`] for the real engine and builds it from the daemon's
//! configuration.

use std::net::SocketAddr;
use std::time::Instant;

use tcpcrypt_engine as eng;

use crate::config::Config;
use crate::engine_api::{
    Checksum, ConnectionView, Direction, EngineEvent, LookupState, PacketEngine, Phase,
    SessionView, Transmit, Verdict,
};

/// Builds the engine with the configured TEPs, AEADs and cleanup delay and
/// the operating system's RNG.
pub fn build(config: &Config) -> eng::Engine {
    let engine_config = eng::EngineConfig {
        teps: config.teps.clone(),
        aeads: config.aeads.clone(),
        cleanup_delay: config.cleanup_delay,
        ..eng::EngineConfig::default()
    };
    eng::Engine::new(engine_config, Box::new(tcpcrypt_proto::OsRng))
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
        eng::Lookup::Plain(reason) => LookupState::Plain {
            reason: reason.to_string(),
        },
        eng::Lookup::Pending => LookupState::Pending,
        eng::Lookup::Unknown => LookupState::Unknown,
    }
}

impl PacketEngine for eng::Engine {
    fn handle_packet(&mut self, now: Instant, dir: Direction, packet: &mut Vec<u8>) -> Verdict {
        eng::Engine::handle_packet(self, now, dir, packet)
    }

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

    fn connections(&self, now: Instant) -> Vec<ConnectionView> {
        eng::Engine::connections(self)
            .map(|c| ConnectionView {
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
            .collect()
    }

    fn flush_resumption(&mut self) -> usize {
        eng::Engine::flush_resumption(self)
    }

    fn handle_packet_with(
        &mut self,
        now: Instant,
        dir: Direction,
        csum: Checksum,
        packet: &mut Vec<u8>,
    ) -> Verdict {
        eng::Engine::handle_packet_with(self, now, dir, csum, packet)
    }

    fn last_packet_guarded(&self) -> bool {
        eng::Engine::last_packet_guarded(self)
    }
}
