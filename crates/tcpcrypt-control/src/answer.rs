//! Answers: written by the daemon from typed values, read back by clients
//! into the same types. A successful answer carries `"v":1,"ok":true`; a
//! refusal is a [`Refusal`](crate::Refusal).

use std::fmt::Display;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::VERSION;
use crate::error::{AnswerError, ErrorCode, ProtocolError};
use crate::json::{FieldError, Fields, Object};
use crate::session::{Aead, Connection, DaemonVersion, Lookup, Phase, Role, Session, Tep};

/// A successful answer, one variant per operation. `R` is the plain-TCP
/// reason's type (see [`Lookup`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<R = String> {
    Lookup(Lookup<R>),
    List(Vec<Connection<R>>),
    Version(DaemonVersion),
    /// How many resumption secrets `flush_resumption` forgot.
    Flushed(u64),
    PolicySet,
    /// Whether `clear_policy` found a registration.
    PolicyCleared(bool),
}

impl<R: Display> Answer<R> {
    /// The answer line, without its newline.
    pub fn to_line(&self) -> String {
        match self {
            Answer::List(rows) => list_line(rows.iter().map(Connection::by_ref)),
            _ => {
                let mut line = String::new();
                let mut o = ok_object(&mut line);
                match self {
                    Answer::Lookup(lookup) => {
                        lookup_fields(&mut o, lookup);
                    }
                    Answer::Version(v) => {
                        let supported: Vec<String> =
                            v.supported.iter().map(u64::to_string).collect();
                        o.str("daemon", &v.daemon)
                            .raw("supported", &format!("[{}]", supported.join(",")));
                    }
                    Answer::Flushed(n) => {
                        o.u64("flushed", *n);
                    }
                    Answer::PolicySet | Answer::List(_) => {}
                    Answer::PolicyCleared(cleared) => {
                        o.bool("cleared", *cleared);
                    }
                }
                o.close();
                line
            }
        }
    }
}

/// The `list` answer line for `rows`, without its newline; for a caller
/// whose rows are not [`Connection`]s already, so it need not collect them.
pub fn list_line<R: Display>(rows: impl IntoIterator<Item = Connection<R>>) -> String {
    let mut entries = String::from("[");
    for (i, row) in rows.into_iter().enumerate() {
        if i > 0 {
            entries.push(',');
        }
        entries.push_str(&connection_object(&row));
    }
    entries.push(']');
    let mut line = String::new();
    let mut o = ok_object(&mut line);
    o.raw("connections", &entries);
    o.close();
    line
}

/// One `list` entry as a JSON object: the fields of a lookup answer for the
/// connection plus its addresses, phase, counters and age.
pub fn connection_object<R: Display>(c: &Connection<R>) -> String {
    let mut out = String::new();
    let mut o = Object::open(&mut out);
    o.addr("local", c.local).addr("remote", c.remote);
    lookup_fields(&mut o, &c.lookup);
    o.str("phase", c.phase.name())
        .u64("bytes_sent", c.bytes_sent)
        .u64("bytes_received", c.bytes_received)
        .u64(
            "age_ms",
            u64::try_from(c.age.as_millis()).unwrap_or(u64::MAX),
        );
    o.close();
    out
}

/// A lookup answer's fields behind the connection's addresses, as a JSON
/// object: what `tcpcrypt lookup --json` prints.
pub fn lookup_object<R: Display>(
    local: SocketAddr,
    remote: SocketAddr,
    lookup: &Lookup<R>,
) -> String {
    let mut out = String::new();
    let mut o = Object::open(&mut out);
    o.addr("local", local).addr("remote", remote);
    lookup_fields(&mut o, lookup);
    o.close();
    out
}

fn ok_object(line: &mut String) -> Object<'_> {
    let mut o = Object::open(line);
    o.u64("v", VERSION).bool("ok", true);
    o
}

fn lookup_fields<R: Display>(o: &mut Object<'_>, lookup: &Lookup<R>) {
    o.str("state", lookup.state_name());
    match lookup {
        Lookup::Tcpcrypt(s) => {
            o.str("session_id", &s.session_id.to_hex())
                .str("role", s.role.name())
                .str("tep", s.tep.name())
                .u64("tep_byte", u64::from(s.tep.byte()))
                .str("aead", s.aead.name())
                .bool("resumed", s.resumed)
                .bool("peer_app_aware", s.peer_app_aware);
        }
        Lookup::Plain { reason } => {
            o.display("reason", reason);
        }
        Lookup::Pending | Lookup::Unknown => {}
    }
}

/// Reads a `lookup` answer.
pub fn decode_lookup(line: &[u8]) -> Result<Lookup, AnswerError> {
    let map = parse_ok(line)?;
    Ok(lookup(&Fields(&map))?)
}

/// Reads a `list` answer.
pub fn decode_list(line: &[u8]) -> Result<Vec<Connection>, AnswerError> {
    let map = parse_ok(line)?;
    let entries = match map.get("connections") {
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(invalid("connections", "an array").into()),
        None => return Err(missing("connections").into()),
    };
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let Value::Object(row) = entry else {
                return Err(invalid(&format!("connections[{i}]"), "an object").into());
            };
            // An error inside an entry names its index, so one bad row out
            // of 10,000 is findable.
            connection(&Fields(row)).map_err(|e| within(&format!("connections[{i}]"), e).into())
        })
        .collect()
}

/// Reads a `version` answer.
pub fn decode_version(line: &[u8]) -> Result<DaemonVersion, AnswerError> {
    let map = parse_ok(line)?;
    let fields = Fields(&map);
    let daemon = fields.str("daemon").map_err(named("daemon"))?;
    let expected = "an array of version numbers";
    let supported = match fields.get("supported") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_u64().ok_or_else(|| invalid("supported", expected)))
            .collect::<Result<Vec<u64>, _>>()?,
        Some(_) => return Err(invalid("supported", expected).into()),
        None => return Err(missing("supported").into()),
    };
    Ok(DaemonVersion {
        daemon: daemon.to_string(),
        supported,
    })
}

/// Reads a `set_policy` answer: `ok` is all it says.
pub fn decode_set_policy(line: &[u8]) -> Result<(), AnswerError> {
    parse_ok(line).map(|_| ())
}

/// Reads a `clear_policy` answer: whether there was a registration.
pub fn decode_cleared(line: &[u8]) -> Result<bool, AnswerError> {
    let map = parse_ok(line)?;
    Ok(Fields(&map).bool("cleared").map_err(named("cleared"))?)
}

/// Reads a `flush_resumption` answer: how many secrets were forgotten.
pub fn decode_flushed(line: &[u8]) -> Result<u64, AnswerError> {
    let map = parse_ok(line)?;
    Ok(Fields(&map).u64("flushed").map_err(named("flushed"))?)
}

/// Parses an answer line and checks its version, turning `"ok":false` into
/// [`AnswerError::Refused`].
fn parse_ok(line: &[u8]) -> Result<Map<String, Value>, AnswerError> {
    let text = std::str::from_utf8(line).map_err(|_| ProtocolError::NotUtf8)?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| ProtocolError::NotJson(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(ProtocolError::NotAnObject.into());
    };
    let fields = Fields(&map);
    match fields.get("v") {
        Some(v) if v.as_u64() == Some(VERSION) => {}
        Some(_) => return Err(invalid("v", "the number 1").into()),
        None => return Err(missing("v").into()),
    }
    if fields.bool("ok").map_err(named("ok"))? {
        return Ok(map);
    }
    let code = ErrorCode::from_word(fields.str("error").map_err(named("error"))?);
    let message = fields.str("message").unwrap_or("").to_string();
    Err(AnswerError::Refused { code, message })
}

fn connection(f: &Fields<'_>) -> Result<Connection, ProtocolError> {
    let phases = "one of handshake, established, closing, closed";
    Ok(Connection {
        local: f.addr("local").map_err(named("local"))?,
        remote: f.addr("remote").map_err(named("remote"))?,
        lookup: lookup(f)?,
        phase: required(f.word("phase", Phase::from_name, phases), "phase")?,
        bytes_sent: f.u64("bytes_sent").map_err(named("bytes_sent"))?,
        bytes_received: f.u64("bytes_received").map_err(named("bytes_received"))?,
        age: Duration::from_millis(f.u64("age_ms").map_err(named("age_ms"))?),
    })
}

fn lookup(f: &Fields<'_>) -> Result<Lookup, ProtocolError> {
    match f.str("state").map_err(named("state"))? {
        "tcpcrypt" => Ok(Lookup::Tcpcrypt(session(f)?)),
        "plain" => Ok(Lookup::Plain {
            reason: f.str("reason").unwrap_or("").to_string(),
        }),
        "pending" => Ok(Lookup::Pending),
        "unknown" => Ok(Lookup::Unknown),
        _ => Err(invalid("state", "one of tcpcrypt, plain, pending, unknown")),
    }
}

fn session(f: &Fields<'_>) -> Result<Session, ProtocolError> {
    let session_id = f.str("session_id").map_err(named("session_id"))?.parse()?;
    let role = required(f.word("role", Role::from_name, "\"A\" or \"B\""), "role")?;
    let tep = required(f.word("tep", Tep::from_name, "an RFC 8548 TEP name"), "tep")?;
    let tep_byte = f.u64("tep_byte").map_err(named("tep_byte"))?;
    if tep_byte != u64::from(tep.byte()) {
        return Err(ProtocolError::TepMismatch {
            tep: tep.name(),
            byte: tep_byte,
        });
    }
    let aead = required(
        f.word("aead", Aead::from_name, "an RFC 8548 AEAD name"),
        "aead",
    )?;
    Ok(Session {
        session_id,
        role,
        tep,
        aead,
        resumed: f.bool("resumed").map_err(named("resumed"))?,
        peer_app_aware: f.bool("peer_app_aware").map_err(named("peer_app_aware"))?,
    })
}

/// A word field the answer must have.
fn required<T>(read: Result<Option<T>, FieldError>, field: &str) -> Result<T, ProtocolError> {
    read.map_err(named(field))?.ok_or_else(|| missing(field))
}

fn named(field: &str) -> impl Fn(FieldError) -> ProtocolError + '_ {
    move |e| match e {
        FieldError::Missing => missing(field),
        FieldError::Invalid(expected) => invalid(field, expected),
    }
}

/// The same error with its field named as part of `outer`.
fn within(outer: &str, e: ProtocolError) -> ProtocolError {
    match e {
        ProtocolError::Missing { field } => missing(&format!("{outer}.{field}")),
        ProtocolError::Invalid { field, expected } => {
            invalid(&format!("{outer}.{field}"), expected)
        }
        other => other,
    }
}

fn missing(field: &str) -> ProtocolError {
    ProtocolError::Missing {
        field: field.to_string(),
    }
}

fn invalid(field: &str, expected: &'static str) -> ProtocolError {
    ProtocolError::Invalid {
        field: field.to_string(),
        expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::SessionId;

    const ID: &str = "2360583ca04231aa3be00fb3d3e878f7f5a8e610875816bebcb7cecca7780e386f";

    fn session() -> Session {
        Session {
            session_id: ID.parse().expect("valid id"),
            role: Role::B,
            tep: Tep::EcdheCurve25519,
            aead: Aead::Aes128Gcm,
            resumed: false,
            peer_app_aware: false,
        }
    }

    fn tcpcrypt_answer() -> String {
        Answer::<String>::Lookup(Lookup::Tcpcrypt(session())).to_line()
    }

    fn malformed(result: Result<Lookup, AnswerError>) -> ProtocolError {
        match result {
            Err(AnswerError::Malformed(e)) => e,
            other => panic!("expected a malformed answer, got {other:?}"),
        }
    }

    fn row(lookup: Lookup) -> Connection {
        Connection {
            local: "10.0.0.2:80".parse().expect("literal"),
            remote: "[fd00::1]:5".parse().expect("literal"),
            lookup,
            phase: Phase::Established,
            bytes_sent: 1234,
            bytes_received: 5678,
            age: Duration::from_millis(8123),
        }
    }

    #[test]
    fn a_tcpcrypt_answer_is_written_in_the_documented_order() {
        assert_eq!(
            tcpcrypt_answer(),
            format!(
                r#"{{"v":1,"ok":true,"state":"tcpcrypt","session_id":"{ID}","role":"B","tep":"TCPCRYPT_ECDHE_Curve25519","tep_byte":35,"aead":"AEAD_AES_128_GCM","resumed":false,"peer_app_aware":false}}"#
            )
        );
    }

    #[test]
    fn every_lookup_state_reads_back_as_itself() {
        for lookup in [
            Lookup::Tcpcrypt(session()),
            Lookup::Plain {
                reason: "peer sent no ENO option".into(),
            },
            Lookup::Pending,
            Lookup::Unknown,
        ] {
            let line = Answer::Lookup(lookup.clone()).to_line();
            assert_eq!(decode_lookup(line.as_bytes()), Ok(lookup), "{line}");
        }
    }

    #[test]
    fn a_typed_reason_is_written_through_display() {
        struct Why;
        impl std::fmt::Display for Why {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("no \"room\"")
            }
        }
        let line = Answer::Lookup(Lookup::Plain { reason: Why }).to_line();
        assert_eq!(
            decode_lookup(line.as_bytes()),
            Ok(Lookup::Plain {
                reason: "no \"room\"".into()
            })
        );
    }

    #[test]
    fn list_rows_read_back_with_their_counters() {
        let rows = vec![
            row(Lookup::Tcpcrypt(session())),
            Connection {
                phase: Phase::Closing,
                ..row(Lookup::Plain { reason: "x".into() })
            },
        ];
        let line = Answer::List(rows.clone()).to_line();
        assert_eq!(decode_list(line.as_bytes()), Ok(rows));
        assert_eq!(
            decode_list(br#"{"v":1,"ok":true,"connections":[]}"#),
            Ok(vec![])
        );
    }

    #[test]
    fn other_answers_read_back_as_themselves() {
        let version = DaemonVersion {
            daemon: "tcpcryptd 0.1.0".into(),
            supported: vec![1],
        };
        let line = Answer::<String>::Version(version.clone()).to_line();
        assert_eq!(
            line,
            r#"{"v":1,"ok":true,"daemon":"tcpcryptd 0.1.0","supported":[1]}"#
        );
        assert_eq!(decode_version(line.as_bytes()), Ok(version));
        let line = Answer::<String>::Flushed(7).to_line();
        assert_eq!(decode_flushed(line.as_bytes()), Ok(7));
        let line = Answer::<String>::PolicyCleared(true).to_line();
        assert_eq!(decode_cleared(line.as_bytes()), Ok(true));
        let line = Answer::<String>::PolicySet.to_line();
        assert_eq!(line, r#"{"v":1,"ok":true}"#);
        assert_eq!(decode_set_policy(line.as_bytes()), Ok(()));
    }

    #[test]
    fn a_refusal_becomes_a_typed_error() {
        let line = crate::Refusal::bad_field("local", "ADDR:PORT").to_line();
        assert_eq!(
            decode_lookup(line.as_bytes()),
            Err(AnswerError::Refused {
                code: ErrorCode::BadRequest,
                message: "field \"local\": expected ADDR:PORT".into()
            })
        );
        assert_eq!(
            decode_cleared(br#"{"v":1,"ok":false,"error":"table_full","message":"x"}"#),
            Err(AnswerError::Refused {
                code: ErrorCode::TableFull,
                message: "x".into()
            })
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let line = tcpcrypt_answer().replace(r#""ok":true"#, r#""ok":true,"future":[1,2]"#);
        assert_eq!(
            decode_lookup(line.as_bytes()),
            Ok(Lookup::Tcpcrypt(session()))
        );
    }

    #[test]
    fn a_missing_session_id_is_named() {
        let line = tcpcrypt_answer().replace(&format!(r#""session_id":"{ID}","#), "");
        assert_eq!(
            malformed(decode_lookup(line.as_bytes())),
            ProtocolError::Missing {
                field: "session_id".into()
            }
        );
    }

    #[test]
    fn a_short_session_id_is_rejected() {
        let line = tcpcrypt_answer().replace(ID, "2360");
        assert!(matches!(
            malformed(decode_lookup(line.as_bytes())),
            ProtocolError::SessionId(_)
        ));
    }

    #[test]
    fn an_unknown_state_role_or_ill_typed_flag_is_rejected() {
        assert_eq!(
            malformed(decode_lookup(br#"{"v":1,"ok":true,"state":"maybe"}"#)),
            ProtocolError::Invalid {
                field: "state".into(),
                expected: "one of tcpcrypt, plain, pending, unknown"
            }
        );
        let line = tcpcrypt_answer().replace(r#""role":"B""#, r#""role":"C""#);
        assert!(matches!(
            malformed(decode_lookup(line.as_bytes())),
            ProtocolError::Invalid { field, .. } if field == "role"
        ));
        let line = tcpcrypt_answer().replace(r#""resumed":false"#, r#""resumed":"no""#);
        assert!(matches!(
            malformed(decode_lookup(line.as_bytes())),
            ProtocolError::Invalid { field, .. } if field == "resumed"
        ));
    }

    #[test]
    fn tep_byte_must_match_the_tep_name() {
        let line = tcpcrypt_answer().replace(r#""tep_byte":35"#, r#""tep_byte":33"#);
        assert!(matches!(
            malformed(decode_lookup(line.as_bytes())),
            ProtocolError::TepMismatch { byte: 33, .. }
        ));
    }

    #[test]
    fn another_version_or_a_non_object_is_rejected() {
        let line = tcpcrypt_answer().replace(r#""v":1"#, r#""v":2"#);
        assert!(matches!(
            malformed(decode_lookup(line.as_bytes())),
            ProtocolError::Invalid { field, .. } if field == "v"
        ));
        assert!(matches!(
            malformed(decode_lookup(b"hello\n")),
            ProtocolError::NotJson(_)
        ));
        assert_eq!(
            malformed(decode_lookup(b"[1,2]")),
            ProtocolError::NotAnObject
        );
        assert_eq!(
            malformed(decode_lookup(b"{\"v\":1,\xff}")),
            ProtocolError::NotUtf8
        );
    }

    #[test]
    fn a_bad_list_entry_is_named_by_index() {
        let line = br#"{"v":1,"ok":true,"connections":[{"local":"10.0.0.2:80","remote":"nowhere","state":"unknown","phase":"closed","bytes_sent":0,"bytes_received":0,"age_ms":0}]}"#;
        assert_eq!(
            decode_list(line),
            Err(AnswerError::Malformed(ProtocolError::Invalid {
                field: "connections[0].remote".into(),
                expected: "ADDR:PORT"
            }))
        );
        assert!(matches!(
            decode_list(br#"{"v":1,"ok":true,"connections":[7]}"#),
            Err(AnswerError::Malformed(ProtocolError::Invalid { field, .. })) if field == "connections[0]"
        ));
    }

    #[test]
    fn a_missing_count_is_named() {
        let err = decode_flushed(br#"{"v":1,"ok":true}"#).expect_err("missing");
        assert!(err.to_string().contains("flushed"), "{err}");
    }

    #[test]
    fn lookup_object_is_the_answer_behind_its_addresses() {
        let local = "10.0.0.2:80".parse().expect("literal");
        let remote = "10.0.0.1:40312".parse().expect("literal");
        let object = lookup_object(local, remote, &Lookup::<String>::Pending);
        assert_eq!(
            object,
            r#"{"local":"10.0.0.2:80","remote":"10.0.0.1:40312","state":"pending"}"#
        );
        let id: SessionId = ID.parse().expect("valid id");
        assert!(
            lookup_object(local, remote, &Lookup::<String>::Tcpcrypt(session()))
                .contains(&format!(r#""session_id":"{id}""#))
        );
    }
}
