//! The HTTP side (RFC 7804's framing): SCRAM messages travel base64-encoded
//! in the `data` parameter of `Authorization`, `WWW-Authenticate` and
//! `Authentication-Info`, the server's exchange is named by `sid`; the key
//! mode is one `Authorization` header of its own scheme.
//!
//! Parsing is bounded ([`MAX_HEADER`]) and total: every input gives a value
//! or an error, never a panic (see the proptest and the fuzz target).

use crate::AuthError;
use crate::encoding::{b64, unb64, unb64_exact};
use crate::key::{KeyLogin, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use crate::scram::MECHANISM;

/// The key mode's authentication scheme.
pub const KEY_SCHEME: &str = "Tcpcrypt-Ed25519";
/// Longest authentication header value accepted (a SCRAM final message is
/// about 200 bytes, a key login about 250).
pub const MAX_HEADER: usize = 4096;
/// Longest `sid` accepted.
const MAX_SID: usize = 64;

/// One parsed header value: a scheme and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// The value of parameter `name` (case-insensitive), if given once.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn required(&self, name: &'static str, what: &'static str) -> Result<&str, AuthError> {
        self.param(name)
            .ok_or_else(|| AuthError::malformed(what, format!("no {name} parameter")))
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses `Scheme name=value, name="quoted", ...` (one challenge or
/// credentials value). Unquoted values may hold base64's `/` and `=`, as
/// RFC 7804's examples write them.
pub fn parse(value: &str) -> Result<Challenge, AuthError> {
    const WHAT: &str = "authentication header";
    if value.len() > MAX_HEADER {
        return Err(AuthError::malformed(
            WHAT,
            format!("{} bytes, more than {MAX_HEADER}", value.len()),
        ));
    }
    let value = value.trim_matches([' ', '\t']);
    let scheme_end = value.find([' ', '\t']).unwrap_or(value.len());
    let scheme = &value[..scheme_end];
    if scheme.is_empty() || !scheme.bytes().all(is_tchar) {
        return Err(AuthError::malformed(WHAT, "no authentication scheme"));
    }
    let mut rest = &value.as_bytes()[scheme_end..];
    let mut params: Vec<(String, String)> = Vec::new();
    let skip_ws = |r: &mut &[u8]| {
        while let [b' ' | b'\t', tail @ ..] = *r {
            *r = tail;
        }
    };
    loop {
        skip_ws(&mut rest);
        while let [b',', tail @ ..] = rest {
            rest = tail;
            skip_ws(&mut rest);
        }
        if rest.is_empty() {
            break;
        }
        let name_len = rest.iter().take_while(|b| is_tchar(**b)).count();
        if name_len == 0 {
            return Err(AuthError::malformed(WHAT, "expected a parameter name"));
        }
        let name = String::from_utf8_lossy(&rest[..name_len]).into_owned();
        rest = &rest[name_len..];
        skip_ws(&mut rest);
        let [b'=', tail @ ..] = rest else {
            return Err(AuthError::malformed(
                WHAT,
                format!("parameter {name} has no value"),
            ));
        };
        rest = tail;
        skip_ws(&mut rest);
        let value = if let [b'"', tail @ ..] = rest {
            rest = tail;
            let mut v = Vec::new();
            loop {
                match rest {
                    [b'"', tail @ ..] => {
                        rest = tail;
                        break;
                    }
                    [b'\\', c, tail @ ..] => {
                        v.push(*c);
                        rest = tail;
                    }
                    [c, tail @ ..] => {
                        v.push(*c);
                        rest = tail;
                    }
                    [] => return Err(AuthError::malformed(WHAT, "unterminated quoted string")),
                }
            }
            String::from_utf8(v).map_err(|_| AuthError::malformed(WHAT, "value is not UTF-8"))?
        } else {
            let len = rest
                .iter()
                .take_while(|b| is_tchar(**b) || **b == b'/' || **b == b'=')
                .count();
            let v = String::from_utf8_lossy(&rest[..len]).into_owned();
            rest = &rest[len..];
            v
        };
        if params.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            return Err(AuthError::malformed(
                WHAT,
                format!("parameter {name} given twice"),
            ));
        }
        params.push((name, value));
        skip_ws(&mut rest);
        match rest {
            [] => break,
            [b',', tail @ ..] => rest = tail,
            _ => {
                return Err(AuthError::malformed(
                    WHAT,
                    "expected a comma between parameters",
                ));
            }
        }
    }
    Ok(Challenge {
        scheme: scheme.to_owned(),
        params,
    })
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn check_sid(sid: &str, what: &'static str) -> Result<(), AuthError> {
    if sid.is_empty() || sid.len() > MAX_SID || !sid.bytes().all(is_tchar) {
        return Err(AuthError::malformed(what, "bad sid"));
    }
    Ok(())
}

fn data_text(c: &Challenge, what: &'static str) -> Result<String, AuthError> {
    let bytes = unb64(what, c.required("data", what)?)?;
    String::from_utf8(bytes).map_err(|_| AuthError::malformed(what, "data is not UTF-8"))
}

/// What a client sent in `Authorization`, for the schemes served here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// SCRAM's first message (no `sid` yet).
    ScramFirst { client_first: String },
    /// SCRAM's final message for the exchange `sid`.
    ScramFinal { sid: String, client_final: String },
    /// A key login.
    Key(KeyLogin),
}

/// Parses an `Authorization` value. `Ok(None)`: another scheme (Basic,
/// Bearer, ...), not ours to judge.
pub fn parse_authorization(value: &str) -> Result<Option<Credentials>, AuthError> {
    const WHAT: &str = "Authorization header";
    let scheme = value
        .trim_start_matches([' ', '\t'])
        .split([' ', '\t'])
        .next()
        .unwrap_or_default();
    if !scheme.eq_ignore_ascii_case(MECHANISM) && !scheme.eq_ignore_ascii_case(KEY_SCHEME) {
        // Basic, Bearer, token68 forms: left to other modules.
        if value.len() > MAX_HEADER || scheme.is_empty() {
            return Err(AuthError::malformed(WHAT, "no scheme, or too long"));
        }
        return Ok(None);
    }
    let c = parse(value)?;
    if c.scheme.eq_ignore_ascii_case(MECHANISM) {
        let data = data_text(&c, WHAT)?;
        return Ok(Some(match c.param("sid") {
            None => Credentials::ScramFirst { client_first: data },
            Some(sid) => {
                check_sid(sid, WHAT)?;
                Credentials::ScramFinal {
                    sid: sid.to_owned(),
                    client_final: data,
                }
            }
        }));
    }
    if c.scheme.eq_ignore_ascii_case(KEY_SCHEME) {
        let public_key: [u8; PUBLIC_KEY_LEN] = unb64_exact(WHAT, c.required("key", WHAT)?)?;
        let signature: [u8; SIGNATURE_LEN] = unb64_exact(WHAT, c.required("sig", WHAT)?)?;
        let claimed_session = c
            .param("session")
            .map(|s| s.chars().take(2 * crate::SESSION_ID_LEN).collect());
        return Ok(Some(Credentials::Key(KeyLogin {
            public_key,
            signature,
            claimed_session,
        })));
    }
    Ok(None)
}

/// `WWW-Authenticate` starting a SCRAM login.
pub fn scram_challenge(realm: &str) -> String {
    format!("{MECHANISM} realm={}", quote(realm))
}

/// `WWW-Authenticate` asking for a key login.
pub fn key_challenge(realm: &str) -> String {
    format!("{KEY_SCHEME} realm={}", quote(realm))
}

/// `WWW-Authenticate` carrying the server-first message.
pub fn scram_continue(sid: &str, server_first: &str) -> String {
    format!(
        "{MECHANISM} sid={sid}, data={}",
        quote(&b64(server_first.as_bytes()))
    )
}

/// `Authentication-Info` carrying the server-final message.
pub fn scram_success(sid: &str, server_final: &str) -> String {
    format!("sid={sid}, data={}", quote(&b64(server_final.as_bytes())))
}

/// `Authorization` with the client-first message.
pub fn scram_first_authorization(realm: Option<&str>, client_first: &str) -> String {
    let realm = realm
        .map(|r| format!("realm={}, ", quote(r)))
        .unwrap_or_default();
    format!(
        "{MECHANISM} {realm}data={}",
        quote(&b64(client_first.as_bytes()))
    )
}

/// `Authorization` with the client-final message of exchange `sid`.
pub fn scram_final_authorization(sid: &str, client_final: &str) -> String {
    format!(
        "{MECHANISM} sid={sid}, data={}",
        quote(&b64(client_final.as_bytes()))
    )
}

/// From one `WWW-Authenticate` value: `(sid, server-first message)` if it
/// continues a SCRAM exchange, `None` for any other challenge.
pub fn parse_scram_continue(value: &str) -> Result<Option<(String, String)>, AuthError> {
    const WHAT: &str = "WWW-Authenticate header";
    let c = parse(value)?;
    if !c.scheme.eq_ignore_ascii_case(MECHANISM) {
        return Ok(None);
    }
    let Some(sid) = c.param("sid") else {
        return Ok(None);
    };
    check_sid(sid, WHAT)?;
    Ok(Some((sid.to_owned(), data_text(&c, WHAT)?)))
}

/// From `Authentication-Info`: `(sid, server-final message)`.
pub fn parse_scram_success(value: &str) -> Result<(String, String), AuthError> {
    const WHAT: &str = "Authentication-Info header";
    if value.len() > MAX_HEADER {
        return Err(AuthError::malformed(WHAT, "too long"));
    }
    // No scheme in this header: parse it behind a placeholder one.
    let c = parse(&format!("x {value}"))?;
    let sid = c.required("sid", WHAT)?;
    check_sid(sid, WHAT)?;
    Ok((sid.to_owned(), data_text(&c, WHAT)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7804_style_values_parse() {
        let c = parse("SCRAM-SHA-256 realm=\"a \\\"b\\\"\", data=biwsbj11c2Vy,sid=AAAA")
            .expect("parse");
        assert_eq!(c.scheme, "SCRAM-SHA-256");
        assert_eq!(c.param("realm"), Some("a \"b\""));
        assert_eq!(c.param("DATA"), Some("biwsbj11c2Vy"));
        assert_eq!(c.param("sid"), Some("AAAA"));
    }

    #[test]
    fn scram_headers_round_trip() {
        let first = "p=tcpcrypt-unique,,n=al ice,r=abc";
        assert_eq!(
            parse_authorization(&scram_first_authorization(Some("r\"1"), first)),
            Ok(Some(Credentials::ScramFirst {
                client_first: first.to_owned()
            }))
        );
        assert_eq!(
            parse_authorization(&scram_final_authorization("s1d", "c=x,r=y,p=z")),
            Ok(Some(Credentials::ScramFinal {
                sid: "s1d".to_owned(),
                client_final: "c=x,r=y,p=z".to_owned()
            }))
        );
        assert_eq!(
            parse_scram_continue(&scram_continue("s1d", "r=a,s=b,i=1")),
            Ok(Some(("s1d".to_owned(), "r=a,s=b,i=1".to_owned())))
        );
        assert_eq!(parse_scram_continue(&scram_challenge("realm")), Ok(None));
        assert_eq!(
            parse_scram_success(&scram_success("s1d", "v=abc")),
            Ok(("s1d".to_owned(), "v=abc".to_owned()))
        );
    }

    #[test]
    fn other_schemes_are_not_ours() {
        assert_eq!(parse_authorization("Basic dXNlcjpwYXNz"), Ok(None));
    }

    #[test]
    fn malformed_and_oversized_values_are_errors() {
        let long = format!("SCRAM-SHA-256 data=\"{}\"", "A".repeat(MAX_HEADER));
        for bad in [
            "",
            " ",
            "SCRAM-SHA-256",
            "SCRAM-SHA-256 data",
            "SCRAM-SHA-256 data=\"unterminated",
            "SCRAM-SHA-256 data=abc data=def",
            "SCRAM-SHA-256 data=abc, data=def",
            "SCRAM-SHA-256 data=!!!notbase64",
            "SCRAM-SHA-256 sid=\"bad sid\", data=YQ==",
            "Tcpcrypt-Ed25519 key=AAAA, sig=AAAA",
            "Tcpcrypt-Ed25519 sig=AAAA",
            long.as_str(),
        ] {
            assert!(parse_authorization(bad).is_err(), "{bad:?}");
        }
    }
}
