//! Finding a connection's keys: ENO negotiation replayed from the SYN and
//! SYN-ACK options, the Init messages from the start of each stream, and
//! the key-log entry that fits.
//!
//! A fresh session is matched cryptographically: ss\[0\] is recomputed from
//! A's nonce, the transcript, both Init messages and each logged ES, and
//! must equal the logged ss. A resumed session is matched by its resumption
//! identifier halves (which the SYNs carry and every logged ss\[i\] derives).
//! Where neither applies (a key log with only SS lines), each logged secret
//! is tried on the first frame. Its AEAD a resumed session inherited from
//! its chain, which the wire does not repeat: the one that authenticates
//! the first frame is taken.

use tcpcrypt_proto::eno::{EnoConfig, Origin, TepId, TepRules, TepSuboption, negotiate};
use tcpcrypt_proto::frame::{FrameReader, first_frame_offset, frame_len};
use tcpcrypt_proto::init::{Init1, Init2, InitKind, InitProgress, init_progress};
use tcpcrypt_proto::resume::split_resumption_data;
use tcpcrypt_proto::schedule::{MasterKey, RESUME_HALF_LEN, SessionSecret};
use tcpcrypt_proto::{Aead, Role, SessionId, Tep};

use crate::keylog::KeyLog;

/// What a decrypted connection's session was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFacts {
    pub session_id: SessionId,
    pub tep: Tep,
    /// `None` only for a resumed session that carried no frame at all.
    pub aead: Option<Aead>,
    pub resumed: bool,
    /// The ENO role of the host that sent the SYN (the other has the other).
    pub client_role: Role,
}

/// Why a connection is not decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undecryptable {
    /// ENO did not negotiate a TEP: plain TCP, nothing to decrypt.
    Plain(String),
    /// tcpcrypt, but the keys could not be found or rebuilt.
    NoKeys(String),
}

/// The keys of a connection: facts, and a reader per direction
/// (client to server, server to client) with the stream index where its
/// frames start.
pub struct Keys {
    pub facts: SessionFacts,
    pub readers: [Option<(FrameReader, usize)>; 2],
}

/// ENO rules for an observer: every suboption is acceptable, so the TEP is
/// the one the hosts chose; whether they were right to is theirs to judge.
struct Observer;

impl TepRules for Observer {
    fn validate(&self, _suboption: &TepSuboption, _origin: Origin) -> bool {
        true
    }

    fn allows_repeat(&self, _id: TepId) -> bool {
        false
    }
}

fn complete_init(kind: InitKind, tep: Tep, stream: &[u8]) -> Result<usize, Undecryptable> {
    match init_progress(kind, tep, stream) {
        Ok(InitProgress::Complete(len)) => Ok(len),
        Ok(InitProgress::NeedAtLeast(_)) => Err(Undecryptable::NoKeys(format!(
            "the capture does not hold the whole {kind:?} message"
        ))),
        Err(e) => Err(Undecryptable::NoKeys(format!("{kind:?}: {e}"))),
    }
}

/// Whether the first frame of `stream` after `start` authenticates.
fn first_frame_opens(
    mk0: &MasterKey,
    aead: Aead,
    sender_original: Role,
    stream: &[u8],
    start: usize,
) -> Option<bool> {
    let rest = stream.get(start..)?;
    let len = frame_len(rest)?;
    let frame = rest.get(..len)?;
    let mut reader = FrameReader::new(mk0, aead, sender_original, first_frame_offset(start));
    let mut out = Vec::new();
    Some(reader.feed(frame, &mut out).is_ok())
}

/// Finds the keys of a connection whose SYN carried `client_option` and
/// SYN-ACK `server_option` (whole ENO options), with the reassembled
/// streams `[client to server, server to client]`.
pub fn find_keys(
    client_option: &[u8],
    server_option: &[u8],
    streams: [&[u8]; 2],
    keylog: &KeyLog,
) -> Result<Keys, Undecryptable> {
    let negotiated = negotiate(
        &EnoConfig::new(Vec::new()),
        client_option,
        server_option,
        &Observer,
    )
    .map_err(|why| Undecryptable::Plain(format!("ENO not negotiated: {why}")))?;
    let tep_byte = negotiated.tep();
    let tep = Tep::from_id(tep_byte.id().get()).ok_or_else(|| {
        Undecryptable::NoKeys(format!("negotiated TEP {tep_byte} is not tcpcrypt"))
    })?;
    let client_role = negotiated.role();
    // Index of host A's stream and host B's.
    let (a, b) = match client_role {
        Role::A => (0, 1),
        Role::B => (1, 0),
    };
    let none = || Undecryptable::NoKeys("no key-log entry matches this connection".into());
    if !tep_byte.v() {
        let len1 = complete_init(InitKind::Init1, tep, streams[a])?;
        let len2 = complete_init(InitKind::Init2, tep, streams[b])?;
        let (init1_bytes, init2_bytes) = (&streams[a][..len1], &streams[b][..len2]);
        let init1 = Init1::decode(tep, init1_bytes)
            .map_err(|e| Undecryptable::NoKeys(format!("Init1: {e}")))?;
        let aead = Init2::decode(tep, init2_bytes)
            .map_err(|e| Undecryptable::NoKeys(format!("Init2: {e}")))?
            .sym_cipher;
        let transcript = negotiated.transcript().as_bytes();
        let by_es = keylog.entries().iter().find(|e| {
            e.es.as_ref().is_some_and(|es| {
                SessionSecret::extract(&init1.nonce, transcript, init1_bytes, init2_bytes, es)
                    == e.ss
            })
        });
        let starts = {
            let mut s = [0; 2];
            s[a] = len1;
            s[b] = len2;
            s
        };
        let fits = |ss: &SessionSecret| {
            let mk0 = ss.master_key(&[]);
            let tried: Vec<bool> = [(a, Role::A), (b, Role::B)]
                .iter()
                .filter_map(|&(dir, role)| {
                    first_frame_opens(&mk0, aead, role, streams[dir], starts[dir])
                })
                .collect();
            !tried.is_empty() && tried.iter().all(|ok| *ok)
        };
        let ss = match by_es {
            Some(e) => e.ss.clone(),
            None => keylog
                .entries()
                .iter()
                .find(|e| fits(&e.ss))
                .map(|e| e.ss.clone())
                .ok_or_else(none)?,
        };
        let mk0 = ss.master_key(&[]);
        let mut readers: [Option<(FrameReader, usize)>; 2] = [None, None];
        readers[a] = Some((
            FrameReader::new(&mk0, aead, Role::A, first_frame_offset(len1)),
            len1,
        ));
        readers[b] = Some((
            FrameReader::new(&mk0, aead, Role::B, first_frame_offset(len2)),
            len2,
        ));
        return Ok(Keys {
            facts: SessionFacts {
                session_id: ss.session_id(tep, false, &[]),
                tep,
                aead: Some(aead),
                resumed: false,
                client_role,
            },
            readers,
        });
    }

    // Resumed: the halves of resume[i] and the nonces from the SYNs.
    let (a_subs, b_subs) = match client_role {
        Role::A => (negotiated.local_suboptions(), negotiated.peer_suboptions()),
        Role::B => (negotiated.peer_suboptions(), negotiated.local_suboptions()),
    };
    let request = |subs: &[TepSuboption]| -> Option<(Vec<u8>, Vec<u8>)> {
        subs.iter()
            .find_map(|s| split_resumption_data(s.data()).map(|(h, n)| (h.to_vec(), n.to_vec())))
    };
    let (Some((half_a, nonce_a)), Some((half_b, nonce_b))) = (request(a_subs), request(b_subs))
    else {
        return Err(Undecryptable::NoKeys(
            "resumed, but the SYNs carry no resumption identifiers".into(),
        ));
    };
    let found = keylog.entries().iter().find_map(|e| {
        let id = e.ss.resume_id();
        let (first, second) = id.split_at(RESUME_HALF_LEN);
        if half_a == first && half_b == second {
            Some((e, Role::A))
        } else if half_a == second && half_b == first {
            Some((e, Role::B))
        } else {
            None
        }
    });
    let (entry, a_original) = found.ok_or_else(none)?;
    let sn = match a_original {
        Role::A => [nonce_a, nonce_b].concat(),
        Role::B => [nonce_b, nonce_a].concat(),
    };
    let mk0 = entry.ss.master_key(&sn);
    let original = |dir: usize| {
        if dir == a {
            a_original
        } else {
            a_original.peer()
        }
    };
    let aead = Aead::ALL.into_iter().find(|aead| {
        [0, 1]
            .iter()
            .filter_map(|&dir| first_frame_opens(&mk0, *aead, original(dir), streams[dir], 0))
            .any(|ok| ok)
    });
    let has_frames = streams.iter().any(|s| frame_len(s).is_some());
    if aead.is_none() && has_frames {
        return Err(Undecryptable::NoKeys(
            "the resumption secret matches, but no AEAD authenticates the first frame".into(),
        ));
    }
    let readers = [0, 1].map(|dir| {
        aead.map(|aead| {
            (
                FrameReader::new(&mk0, aead, original(dir), first_frame_offset(0)),
                0,
            )
        })
    });
    Ok(Keys {
        facts: SessionFacts {
            session_id: entry.ss.session_id(tep, true, &sn),
            tep,
            aead,
            resumed: true,
            client_role,
        },
        readers,
    })
}
