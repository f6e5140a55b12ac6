//! Requests: what a client writes and what the daemon reads, one type for
//! both so the two cannot disagree about a field.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::error::{ErrorCode, Refusal};
use crate::json::{FieldError, Fields, Object};
use crate::session::{AppAware, Policy, PolicyScope};
use crate::{MAX_WAIT, VERSION};

/// A request the daemon serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// One connection, by the asking host's own addresses; `wait` is how
    /// long the daemon may hold the answer while the handshake is running.
    Lookup {
        local: SocketAddr,
        remote: SocketAddr,
        wait: Duration,
    },
    List,
    Version,
    /// Forget every cached resumption secret (root only).
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

/// The fields a `set_policy` names; one that is `None` is not sent, and the
/// daemon keeps its value from the registration being replaced. That lets
/// the C ABI map one `setsockopt` option to one request without knowing the
/// others.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PolicyUpdate {
    pub no_resumption: Option<bool>,
    pub no_cache: Option<bool>,
    pub app_aware: Option<AppAware>,
}

impl From<Policy> for PolicyUpdate {
    /// Every field, so the registration is exactly `policy`.
    fn from(policy: Policy) -> PolicyUpdate {
        PolicyUpdate {
            no_resumption: Some(policy.no_resumption),
            no_cache: Some(policy.no_cache),
            app_aware: Some(policy.app_aware),
        }
    }
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

    /// The `op` word.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Lookup { .. } => "lookup",
            Request::List => "list",
            Request::Version => "version",
            Request::FlushResumption => "flush_resumption",
            Request::SetPolicy { .. } => "set_policy",
            Request::ClearPolicy { .. } => "clear_policy",
        }
    }

    /// One JSON line, newline included.
    pub fn encode(&self) -> String {
        let mut line = String::new();
        let mut o = Object::open(&mut line);
        o.u64("v", VERSION).str("op", self.op());
        match self {
            Request::Lookup {
                local,
                remote,
                wait,
            } => {
                o.addr("local", *local).addr("remote", *remote);
                // A wait below a millisecond asks for none; one above the
                // maximum would be capped by the daemon anyway.
                let wait_ms = u64::try_from(wait.min(&MAX_WAIT).as_millis()).unwrap_or(0);
                if wait_ms > 0 {
                    o.u64("wait_ms", wait_ms);
                }
            }
            Request::List | Request::Version | Request::FlushResumption => {}
            Request::SetPolicy {
                scope,
                local,
                update,
            } => {
                o.str("scope", scope.word()).addr("local", *local);
                if let Some(b) = update.no_resumption {
                    o.bool("no_resumption", b);
                }
                if let Some(b) = update.no_cache {
                    o.bool("no_cache", b);
                }
                if let Some(m) = update.app_aware {
                    o.str("app_aware", m.word());
                }
            }
            Request::ClearPolicy { scope, local } => {
                o.str("scope", scope.word()).addr("local", *local);
            }
        }
        o.close();
        line.push('\n');
        line
    }

    /// Reads one request line (without its newline), or the refusal to
    /// answer it with.
    pub fn parse(line: &str) -> Result<Request, Refusal> {
        let value: Value = serde_json::from_str(line)
            .map_err(|e| Refusal::unreadable(format!("malformed JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(Refusal::unreadable("expected a JSON object"));
        };
        let fields = Fields(&map);
        match fields.get("v").map(Value::as_u64) {
            None => return Err(Refusal::bad_field("v", "the protocol version 1")),
            Some(Some(VERSION)) => {}
            Some(Some(other)) => {
                return Err(Refusal::new(
                    ErrorCode::UnsupportedVersion,
                    format!("version {other} is not supported"),
                ));
            }
            Some(None) => return Err(Refusal::bad_field("v", "a protocol version number")),
        }
        let op = fields
            .str("op")
            .map_err(|_| Refusal::bad_field("op", "a string"))?;
        match op {
            "lookup" => Ok(Request::Lookup {
                local: addr(&fields, "local")?,
                remote: addr(&fields, "remote")?,
                wait: fields
                    .opt_u64("wait_ms")
                    .map_err(|e| bad(e, "wait_ms", "a non-negative integer"))?
                    .map_or(Duration::ZERO, |ms| Duration::from_millis(ms).min(MAX_WAIT)),
            }),
            "list" => Ok(Request::List),
            "version" => Ok(Request::Version),
            "flush_resumption" => Ok(Request::FlushResumption),
            "set_policy" => Ok(Request::SetPolicy {
                scope: scope(&fields)?,
                local: policy_local(&fields)?,
                update: PolicyUpdate {
                    no_resumption: flag(&fields, "no_resumption")?,
                    no_cache: flag(&fields, "no_cache")?,
                    app_aware: fields
                        .word("app_aware", AppAware::from_word, APP_AWARE_WORDS)
                        .map_err(|e| bad(e, "app_aware", APP_AWARE_WORDS))?,
                },
            }),
            "clear_policy" => Ok(Request::ClearPolicy {
                scope: scope(&fields)?,
                local: policy_local(&fields)?,
            }),
            other => Err(Refusal::new(
                ErrorCode::UnknownOp,
                format!("unknown op {other:?}"),
            )),
        }
    }
}

const APP_AWARE_WORDS: &str = "\"off\", \"on\" or \"mandatory\"";

/// A request's field errors all read `field "x": expected ...`, missing or
/// ill-typed alike.
fn bad(_: FieldError, field: &str, expected: &str) -> Refusal {
    Refusal::bad_field(field, expected)
}

fn addr(fields: &Fields<'_>, field: &str) -> Result<SocketAddr, Refusal> {
    fields.addr(field).map_err(|e| bad(e, field, "ADDR:PORT"))
}

/// The local endpoint a policy is for: port 0 names no socket.
fn policy_local(fields: &Fields<'_>) -> Result<SocketAddr, Refusal> {
    let local = addr(fields, "local")?;
    if local.port() == 0 {
        return Err(Refusal::bad_field(
            "local",
            "the ADDR:PORT the socket is bound to (port 0 names no socket)",
        ));
    }
    Ok(local)
}

fn scope(fields: &Fields<'_>) -> Result<PolicyScope, Refusal> {
    let expected = "\"connect\" or \"listen\"";
    Ok(fields
        .word("scope", PolicyScope::from_word, expected)
        .map_err(|e| bad(e, "scope", expected))?
        .unwrap_or(PolicyScope::Connect))
}

fn flag(fields: &Fields<'_>, field: &str) -> Result<Option<bool>, Refusal> {
    fields
        .opt_bool(field)
        .map_err(|e| bad(e, field, "true or false"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("literal")
    }

    fn refusal(line: &str) -> Refusal {
        Request::parse(line).expect_err(line)
    }

    #[test]
    fn every_request_reads_back_as_itself() {
        let requests = [
            Request::Lookup {
                local: addr("10.0.0.2:80"),
                remote: addr("[fd00::1]:40312"),
                wait: Duration::from_millis(250),
            },
            Request::Lookup {
                local: addr("10.0.0.2:80"),
                remote: addr("10.0.0.1:1"),
                wait: Duration::ZERO,
            },
            Request::List,
            Request::Version,
            Request::FlushResumption,
            Request::SetPolicy {
                scope: PolicyScope::Listen,
                local: addr("[::]:443"),
                update: PolicyUpdate {
                    no_resumption: Some(false),
                    no_cache: None,
                    app_aware: Some(AppAware::Mandatory),
                },
            },
            Request::ClearPolicy {
                scope: PolicyScope::Connect,
                local: addr("10.0.0.1:5555"),
            },
        ];
        for r in requests {
            let line = r.encode();
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            assert_eq!(Request::parse(line.trim_end()), Ok(r), "{line}");
        }
    }

    #[test]
    fn a_mapped_address_is_sent_and_read_as_ipv4() {
        let line = Request::Lookup {
            local: addr("[::ffff:10.0.0.2]:80"),
            remote: addr("10.0.0.1:5"),
            wait: Duration::ZERO,
        }
        .encode();
        assert!(line.contains(r#""local":"10.0.0.2:80""#), "{line}");
        let read = Request::parse(
            r#"{"v":1,"op":"lookup","local":"[::ffff:10.0.0.2]:80","remote":"10.0.0.1:5"}"#,
        );
        assert!(matches!(read, Ok(Request::Lookup { local, .. }) if local == addr("10.0.0.2:80")));
    }

    #[test]
    fn wait_is_capped_at_the_maximum_on_both_sides() {
        let line = Request::Lookup {
            local: addr("10.0.0.2:80"),
            remote: addr("10.0.0.1:1"),
            wait: Duration::from_secs(60),
        }
        .encode();
        assert!(line.contains(r#""wait_ms":10000"#), "{line}");
        let read = Request::parse(
            r#"{"v":1,"op":"lookup","local":"10.0.0.2:80","remote":"10.0.0.1:5","wait_ms":99999}"#,
        );
        assert!(matches!(read, Ok(Request::Lookup { wait, .. }) if wait == MAX_WAIT));
    }

    #[test]
    fn a_policy_field_left_unset_is_not_sent() {
        let update = PolicyUpdate {
            no_cache: Some(true),
            ..PolicyUpdate::default()
        };
        let line = Request::SetPolicy {
            scope: PolicyScope::Connect,
            local: addr("10.0.0.1:5555"),
            update,
        }
        .encode();
        assert!(!line.contains("no_resumption") && !line.contains("app_aware"));
        assert!(line.contains(r#""no_cache":true"#), "{line}");
    }

    #[test]
    fn scope_defaults_to_connect() {
        let read = Request::parse(r#"{"v":1,"op":"clear_policy","local":"10.0.0.1:5555"}"#);
        assert!(matches!(
            read,
            Ok(Request::ClearPolicy {
                scope: PolicyScope::Connect,
                ..
            })
        ));
    }

    #[test]
    fn a_bad_field_is_named_in_the_refusal() {
        let e = refusal(r#"{"v":1,"op":"lookup","local":"10.0.0.2","remote":"10.0.0.1:5"}"#);
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert_eq!(e.message, "field \"local\": expected ADDR:PORT");
        assert!(!e.close);
        let e = refusal(r#"{"v":1,"op":"lookup","local":"10.0.0.2:1"}"#);
        assert_eq!(e.message, "field \"remote\": expected ADDR:PORT");
        let e = refusal(r#"{"v":1,"op":"set_policy","local":"10.0.0.1:1","no_cache":1}"#);
        assert_eq!(e.message, "field \"no_cache\": expected true or false");
        let e = refusal(r#"{"v":1,"op":"set_policy","local":"10.0.0.1:1","scope":"any"}"#);
        assert_eq!(
            e.message,
            "field \"scope\": expected \"connect\" or \"listen\""
        );
        let e = refusal(r#"{"v":1,"op":"set_policy","local":"10.0.0.1:0"}"#);
        assert!(e.message.starts_with("field \"local\""), "{}", e.message);
        let e = refusal(
            r#"{"v":1,"op":"lookup","local":"1.1.1.1:1","remote":"1.1.1.1:2","wait_ms":-1}"#,
        );
        assert_eq!(
            e.message,
            "field \"wait_ms\": expected a non-negative integer"
        );
    }

    #[test]
    fn app_aware_takes_only_its_three_words() {
        for bad in ["true", "1", r#""yes""#, r#""ON""#] {
            let e = refusal(&format!(
                r#"{{"v":1,"op":"set_policy","local":"10.0.0.1:1","app_aware":{bad}}}"#
            ));
            assert_eq!(
                e.message,
                r#"field "app_aware": expected "off", "on" or "mandatory""#
            );
        }
    }

    #[test]
    fn unreadable_lines_are_refused_and_close_the_connection() {
        for line in ["{nope", "[1,2]", "\"v\""] {
            let e = refusal(line);
            assert_eq!(e.code, ErrorCode::BadRequest, "{line}");
            assert!(e.close, "{line}");
        }
    }

    #[test]
    fn version_and_op_problems_have_their_own_codes() {
        let e = refusal(r#"{"v":2,"op":"version"}"#);
        assert_eq!(e.code, ErrorCode::UnsupportedVersion);
        assert!(!e.close);
        assert_eq!(refusal(r#"{"op":"version"}"#).code, ErrorCode::BadRequest);
        assert_eq!(
            refusal(r#"{"v":"1","op":"version"}"#).code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            refusal(r#"{"v":1,"op":"reboot"}"#).code,
            ErrorCode::UnknownOp
        );
        assert_eq!(refusal(r#"{"v":1,"op":7}"#).code, ErrorCode::BadRequest);
    }

    #[test]
    fn only_flush_and_mandatory_app_aware_need_root() {
        assert!(Request::FlushResumption.needs_root());
        assert!(!Request::List.needs_root());
        assert!(!Request::Version.needs_root());
        let set = |app_aware| Request::SetPolicy {
            scope: PolicyScope::Listen,
            local: addr("10.0.0.1:5555"),
            update: PolicyUpdate {
                app_aware,
                ..PolicyUpdate::default()
            },
        };
        assert!(set(Some(AppAware::Mandatory)).needs_root());
        assert!(!set(Some(AppAware::On)).needs_root());
        assert!(!set(None).needs_root());
        let clear = Request::ClearPolicy {
            scope: PolicyScope::Listen,
            local: addr("10.0.0.1:5555"),
        };
        assert!(!clear.needs_root());
    }
}
