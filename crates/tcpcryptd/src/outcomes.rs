//! The outcome thread: turns engine events into the operator's log lines
//! and key-log records, off the packet thread so file and terminal I/O
//! never delays a packet. (The journal of guarded connections is the
//! packet thread's: its lines must be on disk before certain verdicts.)

use std::sync::mpsc::Receiver;

use crate::engine_api::EngineEvent;
use crate::keylog::KeyLog;

/// The info line for an event.
pub fn describe(ev: &EngineEvent) -> String {
    match ev {
        EngineEvent::Established {
            local,
            remote,
            session,
            ..
        } => format!(
            "tcpcrypt {local} <-> {remote}: role {} tep {} aead {}{}{} session {}",
            session.role,
            session.tep.name(),
            session.aead.name(),
            if session.resumed { " resumed" } else { "" },
            if session.peer_app_aware {
                " peer-app-aware"
            } else {
                ""
            },
            session.session_id
        ),
        EngineEvent::Plain {
            local,
            remote,
            reason,
        } => format!("plain {local} <-> {remote}: {reason}"),
        EngineEvent::Aborted {
            local,
            remote,
            reason,
        } => format!("aborted {local} <-> {remote}: {reason}"),
        EngineEvent::Closed { local, remote } => format!("closed {local} <-> {remote}"),
        EngineEvent::Forgotten { local, remote } => format!("forgot {local} <-> {remote}"),
        EngineEvent::Guarding { local, remote } => {
            format!("negotiated tcpcrypt {local} <-> {remote}")
        }
    }
}

/// Runs until every packet thread dropped its sender.
pub fn run(events: Receiver<Vec<EngineEvent>>, mut keylog: Option<KeyLog>) {
    for ev in events.into_iter().flatten() {
        match &ev {
            EngineEvent::Established {
                session, secrets, ..
            } => {
                log::info!("{}", describe(&ev));
                if let (Some(kl), Some(secrets)) = (keylog.as_mut(), secrets)
                    && let Err(e) = kl.record(&session.session_id, secrets)
                {
                    log::error!("writing key log {}: {e}", kl.path().display());
                }
            }
            EngineEvent::Plain { .. } => log::info!("{}", describe(&ev)),
            EngineEvent::Aborted { .. } => log::warn!("{}", describe(&ev)),
            EngineEvent::Closed { .. }
            | EngineEvent::Guarding { .. }
            | EngineEvent::Forgotten { .. } => {
                log::debug!("{}", describe(&ev))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine_api::Session;
    use tcpcrypt_control::{Aead, Role, SessionId, Tep};

    #[test]
    fn established_line_names_peer_role_tep_aead_and_session() {
        let ev = EngineEvent::Established {
            local: "10.0.0.1:40000".parse().expect("addr"),
            remote: "10.0.0.2:80".parse().expect("addr"),
            session: Session {
                session_id: SessionId::from_bytes({
                    let mut id = [0; 33];
                    id[0] = 0x21;
                    id
                }),
                role: Role::A,
                tep: Tep::EcdheP256,
                aead: Aead::ChaCha20Poly1305,
                resumed: false,
                peer_app_aware: false,
            },
            secrets: None,
        };
        let line = describe(&ev);
        assert!(line.starts_with("tcpcrypt 10.0.0.1:40000 <-> 10.0.0.2:80: role A"));
        assert!(line.contains("TCPCRYPT_ECDHE_P256") && line.contains("AEAD_CHACHA20_POLY1305"));
        assert!(line.ends_with(&format!("session 21{}", "00".repeat(32))));
    }

    #[test]
    fn plain_line_gives_the_reason() {
        let ev = EngineEvent::Plain {
            local: "10.0.0.1:1".parse().expect("addr"),
            remote: "10.0.0.2:2".parse().expect("addr"),
            reason: crate::engine_api::PlainReason::NotSeenFromSyn,
        };
        assert_eq!(
            describe(&ev),
            "plain 10.0.0.1:1 <-> 10.0.0.2:2: connection not seen from its SYN"
        );
    }
}
