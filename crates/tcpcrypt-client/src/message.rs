//! Control protocol v1 messages (docs/control-protocol.md): requests
//! written as JSON lines, answers read into typed values. No I/O here.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::addr;
use crate::error::{DaemonErrorCode, Error, ProtocolError};
use crate::session::{
    Aead, AppAware, Connection, DaemonVersion, Lookup, Phase, PolicyScope, Role, Session, Tep,
};

pub const PROTOCOL_VERSION: u64 = 1;

/// The daemon caps `wait_ms` at this many milliseconds.
pub const MAX_WAIT: Duration = Duration::from_millis(10_000);

/// A request the client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Lookup {
        local: SocketAddr,
        remote: SocketAddr,
        wait: Duration,
    },
    List,
    Version,
    /// Forget every cached resumption secret (root only).
    FlushResumption,
    /// Controls for the socket bound to `local`.
    SetPolicy {
        scope: PolicyScope,
        local: SocketAddr,
        update: PolicyUpdate,
    },
    ClearPolicy {
        scope: PolicyScope,
        local: SocketAddr,
    },
}

/// The fields of a `set_policy`; one that is `None` is not sent, so the
/// daemon keeps its registered value. That lets the C ABI set one option
/// per call without knowing the others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyUpdate {
    pub no_resumption: Option<bool>,
    pub no_cache: Option<bool>,
    pub app_aware: Option<AppAware>,
}

impl From<crate::session::Policy> for PolicyUpdate {
    /// Every field, so the registration is exactly `policy`.
    fn from(policy: crate::session::Policy) -> PolicyUpdate {
        PolicyUpdate {
            no_resumption: Some(policy.no_resumption),
            no_cache: Some(policy.no_cache),
            app_aware: Some(policy.app_aware),
        }
    }
}

impl Request {
    /// One JSON line, newline included.
    pub fn encode(&self) -> String {
        let value = match self {
            Request::Lookup {
                local,
                remote,
                wait,
            } => {
                let mut v = json!({
                    "v": PROTOCOL_VERSION,
                    "op": "lookup",
                    "local": addr::to_wire(*local),
                    "remote": addr::to_wire(*remote),
                });
                let wait_ms = wait.min(&MAX_WAIT).as_millis();
                if wait_ms > 0 {
                    v["wait_ms"] = json!(wait_ms as u64);
                }
                v
            }
            Request::List => json!({"v": PROTOCOL_VERSION, "op": "list"}),
            Request::Version => json!({"v": PROTOCOL_VERSION, "op": "version"}),
            Request::FlushResumption => json!({"v": PROTOCOL_VERSION, "op": "flush_resumption"}),
            Request::SetPolicy {
                scope,
                local,
                update,
            } => {
                let mut v = json!({
                    "v": PROTOCOL_VERSION,
                    "op": "set_policy",
                    "scope": scope.word(),
                    "local": addr::to_wire(*local),
                });
                if let Some(b) = update.no_resumption {
                    v["no_resumption"] = json!(b);
                }
                if let Some(b) = update.no_cache {
                    v["no_cache"] = json!(b);
                }
                if let Some(m) = update.app_aware {
                    v["app_aware"] = json!(m.word());
                }
                v
            }
            Request::ClearPolicy { scope, local } => json!({
                "v": PROTOCOL_VERSION,
                "op": "clear_policy",
                "scope": scope.word(),
                "local": addr::to_wire(*local),
            }),
        };
        let mut line = value.to_string();
        line.push('\n');
        line
    }
}

/// Parses an answer line, turning `"ok": false` into [`Error::Daemon`].
fn parse_ok(line: &[u8]) -> Result<Map<String, Value>, Error> {
    let text = std::str::from_utf8(line).map_err(|_| ProtocolError::NotUtf8)?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| ProtocolError::NotJson(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(ProtocolError::NotAnObject.into());
    };
    match map.get("v") {
        Some(v) if v.as_u64() == Some(PROTOCOL_VERSION) => {}
        Some(_) => return Err(invalid("v", "the number 1").into()),
        None => return Err(missing("v").into()),
    }
    if bool_field(&map, "ok")? {
        return Ok(map);
    }
    let code = DaemonErrorCode::from_word(str_field(&map, "error")?);
    let message = map
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    Err(Error::Daemon { code, message })
}

pub fn decode_lookup(line: &[u8]) -> Result<Lookup, Error> {
    let map = parse_ok(line)?;
    Ok(lookup_fields(&map)?)
}

pub fn decode_list(line: &[u8]) -> Result<Vec<Connection>, Error> {
    let map = parse_ok(line)?;
    let entries = match map.get("connections") {
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(invalid("connections", "an array").into()),
        None => return Err(missing("connections").into()),
    };
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| connection(i, entry).map_err(Error::from))
        .collect()
}

pub fn decode_version(line: &[u8]) -> Result<DaemonVersion, Error> {
    let map = parse_ok(line)?;
    let daemon = str_field(&map, "daemon")?.to_string();
    let supported = match map.get("supported") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| invalid("supported", "an array of version numbers"))
            })
            .collect::<Result<Vec<u64>, _>>()?,
        Some(_) => return Err(invalid("supported", "an array of version numbers").into()),
        None => return Err(missing("supported").into()),
    };
    Ok(DaemonVersion { daemon, supported })
}

/// A `set_policy` answer: `ok` is all it says.
pub fn decode_set_policy(line: &[u8]) -> Result<(), Error> {
    parse_ok(line).map(|_| ())
}

/// Whether a `clear_policy` answer says there was a registration.
pub fn decode_cleared(line: &[u8]) -> Result<bool, Error> {
    let map = parse_ok(line)?;
    Ok(bool_field(&map, "cleared")?)
}

/// The number of secrets a `flush_resumption` answer says were forgotten.
pub fn decode_flushed(line: &[u8]) -> Result<u64, Error> {
    let map = parse_ok(line)?;
    match map.get("flushed") {
        Some(v) => v
            .as_u64()
            .ok_or_else(|| invalid("flushed", "a non-negative integer").into()),
        None => Err(missing("flushed").into()),
    }
}

fn connection(index: usize, entry: &Value) -> Result<Connection, ProtocolError> {
    // Errors inside an entry name it, so one bad row out of 10,000 is findable.
    let at = |e: ProtocolError| match e {
        ProtocolError::Missing { field } => ProtocolError::Missing {
            field: format!("connections[{index}].{field}"),
        },
        ProtocolError::Invalid { field, expected } => ProtocolError::Invalid {
            field: format!("connections[{index}].{field}"),
            expected,
        },
        other => other,
    };
    let Value::Object(map) = entry else {
        return Err(invalid(&format!("connections[{index}]"), "an object"));
    };
    let build = || -> Result<Connection, ProtocolError> {
        Ok(Connection {
            local: addr_field(map, "local")?,
            remote: addr_field(map, "remote")?,
            lookup: lookup_fields(map)?,
            phase: Phase::from_name(str_field(map, "phase")?).ok_or_else(|| {
                invalid("phase", "one of handshake, established, closing, closed")
            })?,
            bytes_sent: u64_field(map, "bytes_sent")?,
            bytes_received: u64_field(map, "bytes_received")?,
            age: Duration::from_millis(u64_field(map, "age_ms")?),
        })
    };
    build().map_err(at)
}

fn lookup_fields(map: &Map<String, Value>) -> Result<Lookup, ProtocolError> {
    match str_field(map, "state")? {
        "tcpcrypt" => Ok(Lookup::Tcpcrypt(session_fields(map)?)),
        "plain" => Ok(Lookup::Plain {
            reason: map
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        }),
        "pending" => Ok(Lookup::Pending),
        "unknown" => Ok(Lookup::Unknown),
        _ => Err(invalid("state", "one of tcpcrypt, plain, pending, unknown")),
    }
}

fn session_fields(map: &Map<String, Value>) -> Result<Session, ProtocolError> {
    let session_id = str_field(map, "session_id")?.parse()?;
    let role = Role::from_name(str_field(map, "role")?)
        .ok_or_else(|| invalid("role", "\"A\" or \"B\""))?;
    let tep = Tep::from_name(str_field(map, "tep")?)
        .ok_or_else(|| invalid("tep", "an RFC 8548 TEP name"))?;
    let tep_byte = u64_field(map, "tep_byte")?;
    if tep_byte != u64::from(tep.byte()) {
        return Err(ProtocolError::TepMismatch {
            tep: tep.name(),
            byte: tep_byte,
        });
    }
    let aead = Aead::from_name(str_field(map, "aead")?)
        .ok_or_else(|| invalid("aead", "an RFC 8548 AEAD name"))?;
    Ok(Session {
        session_id,
        role,
        tep,
        aead,
        resumed: bool_field(map, "resumed")?,
        peer_app_aware: bool_field(map, "peer_app_aware")?,
    })
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

fn str_field<'a>(map: &'a Map<String, Value>, field: &str) -> Result<&'a str, ProtocolError> {
    map.get(field)
        .ok_or_else(|| missing(field))?
        .as_str()
        .ok_or_else(|| invalid(field, "a string"))
}

fn bool_field(map: &Map<String, Value>, field: &str) -> Result<bool, ProtocolError> {
    map.get(field)
        .ok_or_else(|| missing(field))?
        .as_bool()
        .ok_or_else(|| invalid(field, "true or false"))
}

fn u64_field(map: &Map<String, Value>, field: &str) -> Result<u64, ProtocolError> {
    map.get(field)
        .ok_or_else(|| missing(field))?
        .as_u64()
        .ok_or_else(|| invalid(field, "a non-negative integer"))
}

fn addr_field(map: &Map<String, Value>, field: &str) -> Result<SocketAddr, ProtocolError> {
    str_field(map, field)?
        .parse::<SocketAddr>()
        .map(addr::normalize)
        .map_err(|_| invalid(field, "ADDR:PORT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "2360583ca04231aa3be00fb3d3e878f7f5a8e610875816bebcb7cecca7780e386f";

    fn tcpcrypt_answer() -> String {
        format!(
            r#"{{"v":1,"ok":true,"state":"tcpcrypt","session_id":"{ID}","role":"B","tep":"TCPCRYPT_ECDHE_Curve25519","tep_byte":35,"aead":"AEAD_AES_128_GCM","resumed":false,"peer_app_aware":false}}"#
        )
    }

    fn protocol_error(result: Result<Lookup, Error>) -> ProtocolError {
        match result {
            Err(Error::Protocol(e)) => e,
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    #[test]
    fn set_policy_request_matches_the_documented_example() {
        let req = Request::SetPolicy {
            scope: PolicyScope::Connect,
            local: "10.0.0.1:5555".parse().expect("literal"),
            update: PolicyUpdate {
                no_resumption: Some(true),
                no_cache: Some(false),
                app_aware: None,
            },
        };
        let sent: Value = serde_json::from_str(&req.encode()).expect("json");
        let documented: Value = serde_json::from_str(
            r#"{"v":1,"op":"set_policy","scope":"connect","local":"10.0.0.1:5555","no_resumption":true,"no_cache":false}"#,
        )
        .expect("json");
        assert_eq!(sent, documented);
        assert_eq!(decode_set_policy(br#"{"v":1,"ok":true}"#).ok(), Some(()));
    }

    #[test]
    fn a_policy_field_left_unset_is_not_sent() {
        let req = Request::SetPolicy {
            scope: PolicyScope::Listen,
            local: "[::ffff:10.0.0.1]:80".parse().expect("literal"),
            update: PolicyUpdate {
                no_cache: Some(true),
                ..PolicyUpdate::default()
            },
        };
        let sent: Value = serde_json::from_str(&req.encode()).expect("json");
        assert_eq!(sent["local"], "10.0.0.1:80");
        assert_eq!(sent["scope"], "listen");
        assert_eq!(sent["no_cache"], true);
        assert!(sent.get("no_resumption").is_none());
        assert!(sent.get("app_aware").is_none());
    }

    #[test]
    fn app_aware_is_sent_as_its_word() {
        for (mode, word) in [
            (AppAware::Off, "off"),
            (AppAware::On, "on"),
            (AppAware::Mandatory, "mandatory"),
        ] {
            let req = Request::SetPolicy {
                scope: PolicyScope::Listen,
                local: "0.0.0.0:443".parse().expect("literal"),
                update: PolicyUpdate {
                    app_aware: Some(mode),
                    ..PolicyUpdate::default()
                },
            };
            let sent: Value = serde_json::from_str(&req.encode()).expect("json");
            let documented: Value = serde_json::from_str(&format!(
                r#"{{"v":1,"op":"set_policy","scope":"listen","local":"0.0.0.0:443","app_aware":"{word}"}}"#
            ))
            .expect("json");
            assert_eq!(sent, documented);
        }
    }

    #[test]
    fn clear_policy_request_and_answer_match_the_documented_example() {
        let req = Request::ClearPolicy {
            scope: PolicyScope::Listen,
            local: "0.0.0.0:80".parse().expect("literal"),
        };
        let sent: Value = serde_json::from_str(&req.encode()).expect("json");
        let documented: Value = serde_json::from_str(
            r#"{"v":1,"op":"clear_policy","scope":"listen","local":"0.0.0.0:80"}"#,
        )
        .expect("json");
        assert_eq!(sent, documented);
        assert_eq!(
            decode_cleared(br#"{"v":1,"ok":true,"cleared":true}"#).ok(),
            Some(true)
        );
        match decode_cleared(br#"{"v":1,"ok":false,"error":"table_full","message":"x"}"#) {
            Err(Error::Daemon { code, .. }) => assert_eq!(code, DaemonErrorCode::TableFull),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lookup_request_matches_the_documented_example() {
        let req = Request::Lookup {
            local: "10.0.0.2:80".parse().expect("literal"),
            remote: "10.0.0.1:40312".parse().expect("literal"),
            wait: Duration::from_millis(250),
        };
        let sent: Value = serde_json::from_str(&req.encode()).expect("json");
        let documented: Value = serde_json::from_str(
            r#"{"v":1,"op":"lookup","local":"10.0.0.2:80","remote":"10.0.0.1:40312","wait_ms":250}"#,
        )
        .expect("json");
        assert_eq!(sent, documented);
    }

    #[test]
    fn lookup_request_is_one_line() {
        let req = Request::Lookup {
            local: "[fd00::1]:443".parse().expect("literal"),
            remote: "[fd00::2]:50000".parse().expect("literal"),
            wait: Duration::ZERO,
        };
        let line = req.encode();
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1);
        assert!(!line.contains("wait_ms"));
        assert!(line.contains(r#""local":"[fd00::1]:443""#));
    }

    #[test]
    fn lookup_request_caps_wait_at_the_protocol_maximum() {
        let req = Request::Lookup {
            local: "10.0.0.2:80".parse().expect("literal"),
            remote: "10.0.0.1:1".parse().expect("literal"),
            wait: Duration::from_secs(60),
        };
        assert!(req.encode().contains(r#""wait_ms":10000"#));
    }

    #[test]
    fn tcpcrypt_answer_decodes_every_field() {
        let lookup = decode_lookup(tcpcrypt_answer().as_bytes()).expect("decodes");
        let Lookup::Tcpcrypt(s) = lookup else {
            panic!("expected tcpcrypt, got {lookup:?}");
        };
        assert_eq!(s.session_id.to_hex(), ID);
        assert_eq!(s.role, Role::B);
        assert_eq!(s.tep, Tep::EcdheCurve25519);
        assert_eq!(s.aead, Aead::Aes128Gcm);
        assert!(!s.resumed);
        assert!(!s.peer_app_aware);
    }

    #[test]
    fn plain_answer_keeps_the_reason() {
        let lookup = decode_lookup(
            br#"{"v":1,"ok":true,"state":"plain","reason":"peer sent no ENO option"}"#,
        )
        .expect("decodes");
        assert_eq!(
            lookup,
            Lookup::Plain {
                reason: "peer sent no ENO option".into()
            }
        );
    }

    #[test]
    fn pending_and_unknown_answers_decode() {
        assert_eq!(
            decode_lookup(br#"{"v":1,"ok":true,"state":"pending"}"#).expect("decodes"),
            Lookup::Pending
        );
        assert_eq!(
            decode_lookup(br#"{"v":1,"ok":true,"state":"unknown"}"#).expect("decodes"),
            Lookup::Unknown
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let line = tcpcrypt_answer().replace(r#""ok":true"#, r#""ok":true,"future":[1,2]"#);
        assert!(matches!(
            decode_lookup(line.as_bytes()),
            Ok(Lookup::Tcpcrypt(_))
        ));
    }

    #[test]
    fn daemon_error_becomes_a_typed_error() {
        let result = decode_lookup(
            br#"{"v":1,"ok":false,"error":"bad_request","message":"field \"local\": expected ADDR:PORT"}"#,
        );
        match result {
            Err(Error::Daemon { code, message }) => {
                assert_eq!(code, DaemonErrorCode::BadRequest);
                assert!(message.contains("local"));
            }
            other => panic!("expected a daemon error, got {other:?}"),
        }
    }

    #[test]
    fn missing_session_id_is_named() {
        let line = tcpcrypt_answer().replace(&format!(r#""session_id":"{ID}","#), "");
        assert_eq!(
            protocol_error(decode_lookup(line.as_bytes())),
            ProtocolError::Missing {
                field: "session_id".into()
            }
        );
    }

    #[test]
    fn short_session_id_is_rejected() {
        let line = tcpcrypt_answer().replace(ID, "2360");
        assert!(matches!(
            protocol_error(decode_lookup(line.as_bytes())),
            ProtocolError::SessionId(_)
        ));
    }

    #[test]
    fn unknown_state_is_rejected() {
        assert_eq!(
            protocol_error(decode_lookup(br#"{"v":1,"ok":true,"state":"maybe"}"#)),
            ProtocolError::Invalid {
                field: "state".into(),
                expected: "one of tcpcrypt, plain, pending, unknown"
            }
        );
    }

    #[test]
    fn bad_role_is_rejected() {
        let line = tcpcrypt_answer().replace(r#""role":"B""#, r#""role":"C""#);
        assert!(matches!(
            protocol_error(decode_lookup(line.as_bytes())),
            ProtocolError::Invalid { field, .. } if field == "role"
        ));
    }

    #[test]
    fn tep_byte_must_match_tep_name() {
        let line = tcpcrypt_answer().replace(r#""tep_byte":35"#, r#""tep_byte":33"#);
        assert!(matches!(
            protocol_error(decode_lookup(line.as_bytes())),
            ProtocolError::TepMismatch { byte: 33, .. }
        ));
    }

    #[test]
    fn string_where_bool_expected_is_rejected() {
        let line = tcpcrypt_answer().replace(r#""resumed":false"#, r#""resumed":"no""#);
        assert!(matches!(
            protocol_error(decode_lookup(line.as_bytes())),
            ProtocolError::Invalid { field, .. } if field == "resumed"
        ));
    }

    #[test]
    fn wrong_version_is_rejected() {
        let line = tcpcrypt_answer().replace(r#""v":1"#, r#""v":2"#);
        assert!(matches!(
            protocol_error(decode_lookup(line.as_bytes())),
            ProtocolError::Invalid { field, .. } if field == "v"
        ));
    }

    #[test]
    fn non_json_is_rejected() {
        assert!(matches!(
            protocol_error(decode_lookup(b"hello\n")),
            ProtocolError::NotJson(_)
        ));
        assert!(matches!(
            protocol_error(decode_lookup(b"[1,2]")),
            ProtocolError::NotAnObject
        ));
        assert!(matches!(
            protocol_error(decode_lookup(b"{\"v\":1,\xff}")),
            ProtocolError::NotUtf8
        ));
    }

    #[test]
    fn list_entries_decode_with_counters() {
        let line = format!(
            r#"{{"v":1,"ok":true,"connections":[{{"local":"10.0.0.2:80","remote":"10.0.0.1:40312","state":"tcpcrypt","session_id":"{ID}","role":"B","tep":"TCPCRYPT_ECDHE_Curve25519","tep_byte":35,"aead":"AEAD_AES_128_GCM","resumed":false,"peer_app_aware":false,"phase":"established","bytes_sent":1234,"bytes_received":5678,"age_ms":8123}},{{"local":"[fd00::2]:80","remote":"[fd00::1]:5","state":"plain","reason":"x","phase":"closing","bytes_sent":0,"bytes_received":1,"age_ms":2}}]}}"#
        );
        let list = decode_list(line.as_bytes()).expect("decodes");
        assert_eq!(list.len(), 2);
        assert_eq!(
            list[0].local,
            "10.0.0.2:80".parse::<SocketAddr>().expect("literal")
        );
        assert_eq!(list[0].phase, Phase::Established);
        assert_eq!(list[0].bytes_sent, 1234);
        assert_eq!(list[0].bytes_received, 5678);
        assert_eq!(list[0].age, Duration::from_millis(8123));
        assert_eq!(list[1].phase, Phase::Closing);
        assert_eq!(list[1].lookup.state_name(), "plain");
    }

    #[test]
    fn bad_list_entry_is_named_by_index() {
        let line = br#"{"v":1,"ok":true,"connections":[{"local":"10.0.0.2:80","remote":"nowhere","state":"unknown","phase":"closed","bytes_sent":0,"bytes_received":0,"age_ms":0}]}"#;
        match decode_list(line) {
            Err(Error::Protocol(ProtocolError::Invalid { field, .. })) => {
                assert_eq!(field, "connections[0].remote")
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    #[test]
    fn version_answer_decodes() {
        let v = decode_version(br#"{"v":1,"ok":true,"daemon":"tcpcryptd 0.1.0","supported":[1]}"#)
            .expect("decodes");
        assert_eq!(v.daemon, "tcpcryptd 0.1.0");
        assert_eq!(v.supported, vec![1]);
    }
}

#[cfg(test)]
mod flush_tests {
    use super::*;

    #[test]
    fn flush_request_names_the_operation() {
        let line = Request::FlushResumption.encode();
        let v: Value = serde_json::from_str(line.trim_end()).expect("json");
        assert_eq!(v["op"], "flush_resumption");
        assert_eq!(v["v"], 1);
    }

    #[test]
    fn flushed_count_is_read_and_a_missing_count_is_named() {
        assert_eq!(
            decode_flushed(br#"{"v":1,"ok":true,"flushed":7}"#).expect("count"),
            7
        );
        let err = decode_flushed(br#"{"v":1,"ok":true}"#).expect_err("missing");
        assert!(err.to_string().contains("flushed"), "{err}");
    }
}
