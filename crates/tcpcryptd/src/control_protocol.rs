//! The control protocol, version 1 (`docs/control-protocol.md`): request
//! parsing and response rendering, with no I/O.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Map, Value, json};

use tcpcrypt_engine::wire::canonical;

use crate::engine_api::{
    AppAware, ConnectionPolicy, ConnectionView, LookupState, PolicyScope, SessionView,
};

pub const VERSION: u64 = 1;
/// Longest request line, newline included.
pub const MAX_LINE: usize = 4096;
/// Longest wait a lookup may ask for; larger values are capped to it.
pub const MAX_WAIT: Duration = Duration::from_millis(10_000);

/// A valid request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Lookup {
        local: SocketAddr,
        remote: SocketAddr,
        wait: Duration,
    },
    List,
    Version,
    FlushResumption,
    /// RFC 8548 section 3.5 controls and the RFC 8547 section 4.2
    /// application-aware mode for the socket bound to `local`.
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

impl Request {
    /// Whether only uid 0 may ask. Flushing the cache touches every
    /// application's sessions. A policy mostly makes the sessions of one
    /// socket slower or less cached, never weaker, so the control group
    /// may set one; but mandatory application-aware mode turns encryption
    /// off for every peer that does not send `a = 1`, and the daemon cannot
    /// tell whether the asker owns the socket, so that takes uid 0.
    pub fn needs_root(&self) -> bool {
        match self {
            Request::FlushResumption => true,
            Request::SetPolicy { update, .. } => update.app_aware == Some(AppAware::Mandatory),
            _ => false,
        }
    }
}

/// The fields a `set_policy` names; a field left out keeps its value from
/// the registration being replaced (false if none). That lets the C ABI
/// map one `setsockopt` option to one request without the library having
/// to remember the other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyUpdate {
    pub no_resumption: Option<bool>,
    pub no_cache: Option<bool>,
    pub app_aware: Option<AppAware>,
}

impl PolicyUpdate {
    pub fn apply(self, base: ConnectionPolicy) -> ConnectionPolicy {
        ConnectionPolicy {
            ignore_resumption: self.no_resumption.unwrap_or(base.ignore_resumption),
            no_cache: self.no_cache.unwrap_or(base.no_cache),
            app_aware: self.app_aware.or(base.app_aware),
        }
    }
}

/// A request that cannot be served, with the protocol's error code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
    /// The connection must be closed after the answer (unparseable input).
    pub close: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    UnsupportedVersion,
    UnknownOp,
    PermissionDenied,
    /// A bounded table (the policy registrations) is full.
    TableFull,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::TableFull => "table_full",
            ErrorCode::Internal => "internal",
        }
    }
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ProtocolError {
        ProtocolError {
            code,
            message: message.into(),
            close: false,
        }
    }

    fn bad_field(field: &str, expected: &str) -> ProtocolError {
        ProtocolError::new(
            ErrorCode::BadRequest,
            format!("field \"{field}\": expected {expected}"),
        )
    }

    /// The error as a response line (without newline).
    pub fn to_line(&self) -> String {
        let mut v = json!({
            "v": VERSION,
            "ok": false,
            "error": self.code.as_str(),
            "message": self.message,
        });
        if self.code == ErrorCode::UnsupportedVersion {
            v["supported"] = json!([VERSION]);
        }
        v.to_string()
    }
}

/// Parses one request line (without its newline).
pub fn parse_request(line: &str) -> Result<Request, ProtocolError> {
    let value: Value = serde_json::from_str(line).map_err(|e| ProtocolError {
        code: ErrorCode::BadRequest,
        message: format!("malformed JSON: {e}"),
        close: true,
    })?;
    let Value::Object(obj) = value else {
        return Err(ProtocolError {
            code: ErrorCode::BadRequest,
            message: "expected a JSON object".into(),
            close: true,
        });
    };
    match obj.get("v") {
        None => return Err(ProtocolError::bad_field("v", "the protocol version 1")),
        Some(v) => match v.as_u64() {
            Some(VERSION) => {}
            Some(other) => {
                return Err(ProtocolError::new(
                    ErrorCode::UnsupportedVersion,
                    format!("version {other} is not supported"),
                ));
            }
            None => {
                return Err(ProtocolError::bad_field("v", "a protocol version number"));
            }
        },
    }
    let op = match obj.get("op") {
        Some(Value::String(s)) => s.as_str(),
        _ => return Err(ProtocolError::bad_field("op", "a string")),
    };
    match op {
        "lookup" => parse_lookup(&obj),
        "list" => Ok(Request::List),
        "version" => Ok(Request::Version),
        "flush_resumption" => Ok(Request::FlushResumption),
        "set_policy" => parse_set_policy(&obj),
        "clear_policy" => Ok(Request::ClearPolicy {
            scope: parse_scope(&obj)?,
            local: parse_local(&obj)?,
        }),
        other => Err(ProtocolError::new(
            ErrorCode::UnknownOp,
            format!("unknown op {other:?}"),
        )),
    }
}

fn parse_addr(obj: &Map<String, Value>, field: &str) -> Result<SocketAddr, ProtocolError> {
    let s = match obj.get(field) {
        Some(Value::String(s)) => s,
        _ => return Err(ProtocolError::bad_field(field, "ADDR:PORT")),
    };
    let a: SocketAddr = s
        .parse()
        .map_err(|_| ProtocolError::bad_field(field, "ADDR:PORT"))?;
    Ok(canonical(a))
}

/// The local endpoint a policy is for: port 0 names no socket.
fn parse_local(obj: &Map<String, Value>) -> Result<SocketAddr, ProtocolError> {
    let local = parse_addr(obj, "local")?;
    if local.port() == 0 {
        return Err(ProtocolError::bad_field(
            "local",
            "the ADDR:PORT the socket is bound to (port 0 names no socket)",
        ));
    }
    Ok(local)
}

/// `scope`: `"connect"` (the default) or `"listen"`.
fn parse_scope(obj: &Map<String, Value>) -> Result<PolicyScope, ProtocolError> {
    match obj.get("scope") {
        None | Some(Value::Null) => Ok(PolicyScope::Connect),
        Some(Value::String(s)) if s == "connect" => Ok(PolicyScope::Connect),
        Some(Value::String(s)) if s == "listen" => Ok(PolicyScope::Listen),
        Some(_) => Err(ProtocolError::bad_field(
            "scope",
            "\"connect\" or \"listen\"",
        )),
    }
}

fn parse_flag(obj: &Map<String, Value>, field: &str) -> Result<Option<bool>, ProtocolError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ProtocolError::bad_field(field, "true or false")),
    }
}

/// `app_aware`: `"off"`, `"on"` or `"mandatory"`; absent keeps the
/// registered value.
fn parse_app_aware(obj: &Map<String, Value>) -> Result<Option<AppAware>, ProtocolError> {
    match obj.get("app_aware") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "off" => Ok(Some(AppAware::Off)),
        Some(Value::String(s)) if s == "on" => Ok(Some(AppAware::On)),
        Some(Value::String(s)) if s == "mandatory" => Ok(Some(AppAware::Mandatory)),
        Some(_) => Err(ProtocolError::bad_field(
            "app_aware",
            "\"off\", \"on\" or \"mandatory\"",
        )),
    }
}

fn parse_set_policy(obj: &Map<String, Value>) -> Result<Request, ProtocolError> {
    Ok(Request::SetPolicy {
        scope: parse_scope(obj)?,
        local: parse_local(obj)?,
        update: PolicyUpdate {
            no_resumption: parse_flag(obj, "no_resumption")?,
            no_cache: parse_flag(obj, "no_cache")?,
            app_aware: parse_app_aware(obj)?,
        },
    })
}

fn parse_lookup(obj: &Map<String, Value>) -> Result<Request, ProtocolError> {
    let local = parse_addr(obj, "local")?;
    let remote = parse_addr(obj, "remote")?;
    let wait = match obj.get("wait_ms") {
        None | Some(Value::Null) => Duration::ZERO,
        Some(v) => match v.as_u64() {
            Some(ms) => Duration::from_millis(ms).min(MAX_WAIT),
            None => {
                return Err(ProtocolError::bad_field(
                    "wait_ms",
                    "a non-negative integer",
                ));
            }
        },
    };
    Ok(Request::Lookup {
        local,
        remote,
        wait,
    })
}

fn session_fields(m: &mut Map<String, Value>, s: &SessionView) {
    m.insert("session_id".into(), json!(s.session_id.to_string()));
    m.insert("role".into(), json!(s.role.as_str()));
    m.insert("tep".into(), json!(s.tep.name()));
    m.insert("tep_byte".into(), json!(s.tep.id()));
    m.insert("aead".into(), json!(s.aead.name()));
    m.insert("resumed".into(), json!(s.resumed));
    m.insert("peer_app_aware".into(), json!(s.peer_app_aware));
}

fn state_fields(m: &mut Map<String, Value>, state: &LookupState) {
    match state {
        LookupState::Tcpcrypt(s) => {
            m.insert("state".into(), json!("tcpcrypt"));
            session_fields(m, s);
        }
        LookupState::Plain { reason } => {
            m.insert("state".into(), json!("plain"));
            m.insert("reason".into(), json!(reason.to_string()));
        }
        LookupState::Pending => {
            m.insert("state".into(), json!("pending"));
        }
        LookupState::Unknown => {
            m.insert("state".into(), json!("unknown"));
        }
    }
}

fn ok_map() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("v".into(), json!(VERSION));
    m.insert("ok".into(), json!(true));
    m
}

pub fn lookup_response(state: &LookupState) -> String {
    let mut m = ok_map();
    state_fields(&mut m, state);
    Value::Object(m).to_string()
}

pub fn list_response(conns: &[ConnectionView]) -> String {
    let list: Vec<Value> = conns
        .iter()
        .map(|c| {
            let mut m = Map::new();
            m.insert("local".into(), json!(c.local.to_string()));
            m.insert("remote".into(), json!(c.remote.to_string()));
            state_fields(&mut m, &c.state);
            m.insert("phase".into(), json!(c.phase.as_str()));
            m.insert("bytes_sent".into(), json!(c.bytes_sent));
            m.insert("bytes_received".into(), json!(c.bytes_received));
            m.insert(
                "age_ms".into(),
                json!(u64::try_from(c.age.as_millis()).unwrap_or(u64::MAX)),
            );
            Value::Object(m)
        })
        .collect();
    let mut m = ok_map();
    m.insert("connections".into(), Value::Array(list));
    Value::Object(m).to_string()
}

pub fn version_response() -> String {
    let mut m = ok_map();
    m.insert(
        "daemon".into(),
        json!(format!("tcpcryptd {}", env!("CARGO_PKG_VERSION"))),
    );
    m.insert("supported".into(), json!([VERSION]));
    Value::Object(m).to_string()
}

pub fn flush_response(flushed: usize) -> String {
    let mut m = ok_map();
    m.insert("flushed".into(), json!(flushed));
    Value::Object(m).to_string()
}

pub fn set_policy_response() -> String {
    Value::Object(ok_map()).to_string()
}

pub fn clear_policy_response(cleared: bool) -> String {
    let mut m = ok_map();
    m.insert("cleared".into(), json!(cleared));
    Value::Object(m).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine_api::Phase;
    use tcpcrypt_proto::{Aead, Role, SessionId, Tep};

    fn parse(v: &str) -> Value {
        serde_json::from_str(v).expect("valid JSON out")
    }

    #[test]
    fn lookup_request_with_wait_parses() {
        let r = parse_request(
            r#"{"v":1,"op":"lookup","local":"10.0.0.2:80","remote":"[fd00::1]:40312","wait_ms":250}"#,
        );
        assert_eq!(
            r,
            Ok(Request::Lookup {
                local: "10.0.0.2:80".parse().expect("addr"),
                remote: "[fd00::1]:40312".parse().expect("addr"),
                wait: Duration::from_millis(250),
            })
        );
    }

    #[test]
    fn mapped_ipv6_address_is_treated_as_ipv4() {
        let r = parse_request(
            r#"{"v":1,"op":"lookup","local":"[::ffff:10.0.0.2]:80","remote":"10.0.0.1:5"}"#,
        );
        match r {
            Ok(Request::Lookup { local, wait, .. }) => {
                assert_eq!(local, "10.0.0.2:80".parse().expect("addr"));
                assert_eq!(wait, Duration::ZERO);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wait_above_the_maximum_is_capped() {
        let r = parse_request(
            r#"{"v":1,"op":"lookup","local":"10.0.0.2:80","remote":"10.0.0.1:5","wait_ms":99999}"#,
        );
        assert!(matches!(r, Ok(Request::Lookup { wait, .. }) if wait == MAX_WAIT));
    }

    #[test]
    fn bad_address_names_the_field() {
        let e = parse_request(r#"{"v":1,"op":"lookup","local":"10.0.0.2","remote":"10.0.0.1:5"}"#)
            .expect_err("bad local");
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert_eq!(e.message, "field \"local\": expected ADDR:PORT");
        assert!(!e.close);
    }

    #[test]
    fn malformed_json_is_bad_request_and_closes() {
        let e = parse_request("{nope").expect_err("malformed");
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.close);
    }

    #[test]
    fn other_version_is_unsupported_and_lists_supported() {
        let e = parse_request(r#"{"v":2,"op":"version"}"#).expect_err("v2");
        let v = parse(&e.to_line());
        assert_eq!(v["error"], "unsupported_version");
        assert_eq!(v["supported"], json!([1]));
        assert_eq!(v["ok"], false);
    }

    #[test]
    fn unknown_op_is_reported() {
        let e = parse_request(r#"{"v":1,"op":"reboot"}"#).expect_err("unknown");
        assert_eq!(e.code, ErrorCode::UnknownOp);
    }

    #[test]
    fn only_flush_resumption_needs_root() {
        assert!(Request::FlushResumption.needs_root());
        assert!(!Request::List.needs_root());
        assert!(!Request::Version.needs_root());
        let local = "10.0.0.1:5555".parse().expect("addr");
        let set = Request::SetPolicy {
            scope: PolicyScope::Connect,
            local,
            update: PolicyUpdate::default(),
        };
        assert!(!set.needs_root());
        let clear = Request::ClearPolicy {
            scope: PolicyScope::Listen,
            local,
        };
        assert!(!clear.needs_root());
    }

    #[test]
    fn set_policy_parses_with_connect_as_the_default_scope() {
        let r = parse_request(
            r#"{"v":1,"op":"set_policy","local":"10.0.0.1:5555","no_resumption":true,"no_cache":false}"#,
        );
        assert_eq!(
            r,
            Ok(Request::SetPolicy {
                scope: PolicyScope::Connect,
                local: "10.0.0.1:5555".parse().expect("addr"),
                update: PolicyUpdate {
                    no_resumption: Some(true),
                    no_cache: Some(false),
                    app_aware: None,
                },
            })
        );
    }

    #[test]
    fn a_field_left_out_keeps_the_registered_value() {
        let base = ConnectionPolicy {
            ignore_resumption: true,
            ..ConnectionPolicy::default()
        };
        let only_cache = PolicyUpdate {
            no_cache: Some(true),
            ..PolicyUpdate::default()
        };
        assert_eq!(
            only_cache.apply(base),
            ConnectionPolicy {
                ignore_resumption: true,
                no_cache: true,
                ..base
            }
        );
        assert_eq!(PolicyUpdate::default().apply(base), base);
    }

    #[test]
    fn set_policy_for_a_listening_wildcard_parses() {
        let r = parse_request(
            r#"{"v":1,"op":"set_policy","scope":"listen","local":"[::]:443","no_cache":true}"#,
        );
        assert_eq!(
            r,
            Ok(Request::SetPolicy {
                scope: PolicyScope::Listen,
                local: "[::]:443".parse().expect("addr"),
                update: PolicyUpdate {
                    no_cache: Some(true),
                    ..PolicyUpdate::default()
                },
            })
        );
    }

    #[test]
    fn set_policy_rejects_port_zero_bad_scope_and_non_boolean_flags() {
        let e =
            parse_request(r#"{"v":1,"op":"set_policy","local":"10.0.0.1:0"}"#).expect_err("port 0");
        assert!(e.message.starts_with("field \"local\""), "{}", e.message);
        let e = parse_request(r#"{"v":1,"op":"set_policy","local":"10.0.0.1:1","scope":"any"}"#)
            .expect_err("scope");
        assert!(e.message.starts_with("field \"scope\""), "{}", e.message);
        let e = parse_request(r#"{"v":1,"op":"set_policy","local":"10.0.0.1:1","no_cache":1}"#)
            .expect_err("flag");
        assert_eq!(e.message, "field \"no_cache\": expected true or false");
        assert_eq!(e.code, ErrorCode::BadRequest);
    }

    #[test]
    fn app_aware_parses_each_mode_and_absent_keeps_the_registered_one() {
        let update = |line: &str| match parse_request(line) {
            Ok(Request::SetPolicy { update, .. }) => update,
            other => panic!("{line}: {other:?}"),
        };
        for (word, mode) in [
            ("off", AppAware::Off),
            ("on", AppAware::On),
            ("mandatory", AppAware::Mandatory),
        ] {
            let line = format!(
                r#"{{"v":1,"op":"set_policy","scope":"listen","local":"0.0.0.0:80","app_aware":"{word}"}}"#
            );
            let u = update(&line);
            assert_eq!(u.app_aware, Some(mode), "{word}");
            assert_eq!((u.no_resumption, u.no_cache), (None, None));
        }
        let older = update(r#"{"v":1,"op":"set_policy","local":"10.0.0.1:5555","no_cache":true}"#);
        assert_eq!(older.app_aware, None);
        let base = ConnectionPolicy {
            app_aware: Some(AppAware::On),
            ..ConnectionPolicy::default()
        };
        let after = older.apply(base);
        assert_eq!(after.app_aware, Some(AppAware::On));
        assert!(after.no_cache);
        let off = update(r#"{"v":1,"op":"set_policy","local":"10.0.0.1:5555","app_aware":"off"}"#);
        assert_eq!(off.apply(base).app_aware, Some(AppAware::Off));
    }

    #[test]
    fn app_aware_rejects_other_values() {
        for bad in ["true", "1", r#""yes""#, r#""ON""#] {
            let line =
                format!(r#"{{"v":1,"op":"set_policy","local":"10.0.0.1:1","app_aware":{bad}}}"#);
            let e = parse_request(&line).expect_err(bad);
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert_eq!(
                e.message,
                r#"field "app_aware": expected "off", "on" or "mandatory""#
            );
        }
    }

    #[test]
    fn only_mandatory_app_aware_mode_needs_root() {
        let local = "10.0.0.1:5555".parse().expect("addr");
        let set = |app_aware| Request::SetPolicy {
            scope: PolicyScope::Listen,
            local,
            update: PolicyUpdate {
                app_aware,
                ..PolicyUpdate::default()
            },
        };
        assert!(set(Some(AppAware::Mandatory)).needs_root());
        assert!(!set(Some(AppAware::On)).needs_root());
        assert!(!set(Some(AppAware::Off)).needs_root());
        assert!(!set(None).needs_root());
    }

    #[test]
    fn clear_policy_parses_and_answers_whether_there_was_one() {
        let r =
            parse_request(r#"{"v":1,"op":"clear_policy","scope":"listen","local":"0.0.0.0:80"}"#);
        assert_eq!(
            r,
            Ok(Request::ClearPolicy {
                scope: PolicyScope::Listen,
                local: "0.0.0.0:80".parse().expect("addr"),
            })
        );
        let v = parse(&clear_policy_response(true));
        assert_eq!(v["ok"], true);
        assert_eq!(v["cleared"], true);
        assert_eq!(parse(&set_policy_response())["ok"], true);
    }

    fn session() -> SessionView {
        SessionView {
            session_id: SessionId::new(Tep::X25519, false, [0xab; 32]),
            role: Role::B,
            tep: Tep::X25519,
            aead: Aead::Aes128Gcm,
            resumed: false,
            peer_app_aware: false,
        }
    }

    #[test]
    fn tcpcrypt_answer_has_every_documented_field() {
        let v = parse(&lookup_response(&LookupState::Tcpcrypt(session())));
        assert_eq!(v["v"], 1);
        assert_eq!(v["ok"], true);
        assert_eq!(v["state"], "tcpcrypt");
        assert_eq!(v["session_id"], format!("23{}", "ab".repeat(32)));
        assert_eq!(v["role"], "B");
        assert_eq!(v["tep"], "TCPCRYPT_ECDHE_Curve25519");
        assert_eq!(v["tep_byte"], 35);
        assert_eq!(v["aead"], "AEAD_AES_128_GCM");
        assert_eq!(v["resumed"], false);
        assert_eq!(v["peer_app_aware"], false);
    }

    #[test]
    fn plain_answer_carries_reason() {
        let reason = crate::engine_api::PlainReason::Negotiation("peer sent no ENO option".into());
        let v = parse(&lookup_response(&LookupState::Plain {
            reason: reason.clone(),
        }));
        assert_eq!(v["state"], "plain");
        assert_eq!(v["reason"], reason.to_string());
        assert!(
            v["reason"]
                .as_str()
                .is_some_and(|r| r.contains("peer sent no ENO option"))
        );
    }

    #[test]
    fn list_entry_adds_phase_counters_and_age() {
        let c = ConnectionView {
            local: "10.0.0.2:80".parse().expect("addr"),
            remote: "[fd00::1]:5".parse().expect("addr"),
            state: LookupState::Pending,
            phase: Phase::Handshake,
            bytes_sent: 3,
            bytes_received: 4,
            age: Duration::from_millis(1500),
            guarded: false,
        };
        let v = parse(&list_response(&[c]));
        let e = &v["connections"][0];
        assert_eq!(e["local"], "10.0.0.2:80");
        assert_eq!(e["remote"], "[fd00::1]:5");
        assert_eq!(e["state"], "pending");
        assert_eq!(e["phase"], "handshake");
        assert_eq!(e["bytes_sent"], 3);
        assert_eq!(e["bytes_received"], 4);
        assert_eq!(e["age_ms"], 1500);
    }

    #[test]
    fn version_answer_names_daemon_and_versions() {
        let v = parse(&version_response());
        assert_eq!(v["supported"], json!([1]));
        assert!(
            v["daemon"]
                .as_str()
                .is_some_and(|d| d.starts_with("tcpcryptd "))
        );
    }
}
