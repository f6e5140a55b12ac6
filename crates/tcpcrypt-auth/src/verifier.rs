//! The password verifier file, one user per line in the manner of an
//! htpasswd file:
//!
//! ```text
//! alice:SCRAM-SHA-256$600000:BASE64(salt)$BASE64(StoredKey):BASE64(ServerKey)
//! ```
//!
//! (the layout PostgreSQL uses for its SCRAM verifiers). It holds no
//! password and nothing that logs in by itself: StoredKey only checks a
//! proof, ServerKey only makes the server's signature. Someone who reads it
//! can still guess passwords offline at the cost of the iteration count.

use std::num::NonZeroU32;

use crate::AuthError;
use crate::encoding::{b64, unb64, unb64_exact};
use crate::key::valid_user_name;
use crate::scram::{Credentials, MECHANISM};

/// Longest verifier file a server reads.
pub const MAX_FILE: usize = 1 << 20;

/// The file's line for `user`.
pub fn format_line(user: &str, c: &Credentials) -> String {
    format!(
        "{user}:{MECHANISM}${}:{}${}:{}",
        c.iterations,
        b64(&c.salt),
        b64(&c.stored_key),
        b64(&c.server_key)
    )
}

/// Parses one line into `(user, credentials)`.
pub fn parse_line(line: &str) -> Result<(&str, Credentials), AuthError> {
    const WHAT: &str = "verifier line";
    let (user, rest) = line
        .split_once(':')
        .ok_or_else(|| AuthError::malformed(WHAT, "no ':' after the user name"))?;
    let rest = rest
        .strip_prefix(MECHANISM)
        .and_then(|r| r.strip_prefix('$'))
        .ok_or_else(|| {
            AuthError::malformed(WHAT, format!("expected {MECHANISM}$ after the user"))
        })?;
    let (params, keys) = rest
        .split_once('$')
        .ok_or_else(|| AuthError::malformed(WHAT, "no '$' before the keys"))?;
    let (count, salt) = params
        .split_once(':')
        .ok_or_else(|| AuthError::malformed(WHAT, "expected ITERATIONS:SALT"))?;
    let (stored, server) = keys
        .split_once(':')
        .ok_or_else(|| AuthError::malformed(WHAT, "expected STOREDKEY:SERVERKEY"))?;
    let iterations = count
        .parse::<u32>()
        .ok()
        .and_then(NonZeroU32::new)
        .ok_or_else(|| AuthError::malformed(WHAT, "iteration count is not a positive number"))?;
    let salt = unb64(WHAT, salt)?;
    if salt.is_empty() {
        return Err(AuthError::malformed(WHAT, "empty salt"));
    }
    Ok((
        user,
        Credentials {
            iterations,
            salt,
            stored_key: unb64_exact(WHAT, stored)?,
            server_key: unb64_exact(WHAT, server)?,
        },
    ))
}

/// The credentials of `user` in a verifier file's text: `Ok(None)` when
/// the user has no line, an error when their line is malformed (other
/// users' lines are not looked at).
pub fn find(text: &str, user: &str) -> Result<Option<Credentials>, AuthError> {
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(user) else {
            continue;
        };
        if !rest.starts_with(':') {
            continue;
        }
        return parse_line(line).map(|(_, c)| Some(c));
    }
    Ok(None)
}

/// The file's text with `user`'s line replaced (or appended).
pub fn upsert(text: &str, user: &str, c: &Credentials) -> Result<String, AuthError> {
    if !valid_user_name(user) {
        return Err(AuthError::malformed(
            "user name",
            "use visible ASCII characters other than ':' (at most 255)",
        ));
    }
    let new_line = format_line(user, c);
    let mut out = String::with_capacity(text.len() + new_line.len() + 1);
    let mut replaced = false;
    for line in text.lines() {
        let mine = line.strip_prefix(user).is_some_and(|r| r.starts_with(':'));
        if mine && !replaced {
            out.push_str(&new_line);
            replaced = true;
        } else if !mine {
            out.push_str(line);
        } else {
            continue;
        }
        out.push('\n');
    }
    if !replaced {
        out.push_str(&new_line);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(pw: &str) -> Credentials {
        Credentials::derive(
            pw,
            b"0123456789abcdef",
            NonZeroU32::new(4096).expect("4096"),
        )
    }

    #[test]
    fn line_round_trips() {
        let line = format_line("alice", &creds("pw"));
        assert!(line.starts_with("alice:SCRAM-SHA-256$4096:"), "{line}");
        assert_eq!(parse_line(&line), Ok(("alice", creds("pw"))));
    }

    #[test]
    fn upsert_replaces_only_that_user_and_find_tells_users_apart() {
        let text = upsert("", "alice", &creds("a")).expect("add alice");
        let text = upsert(&text, "al", &creds("b")).expect("add al");
        let text = upsert(&text, "alice", &creds("c")).expect("update alice");
        assert_eq!(text.lines().count(), 2, "{text}");
        assert_eq!(find(&text, "alice"), Ok(Some(creds("c"))));
        assert_eq!(find(&text, "al"), Ok(Some(creds("b"))));
        assert_eq!(find(&text, "bob"), Ok(None));
    }

    #[test]
    fn bad_names_and_lines_are_refused() {
        assert!(upsert("", "a:b", &creds("x")).is_err());
        assert!(upsert("", "a b", &creds("x")).is_err());
        for bad in [
            "alice",
            "alice:SCRAM-SHA-1$4096:c2FsdA==$AA==:AA==",
            "alice:SCRAM-SHA-256$0:c2FsdA==$AA==:AA==",
            "alice:SCRAM-SHA-256$4096:c2FsdA==$AA==:AA==",
        ] {
            assert!(parse_line(bad).is_err(), "{bad}");
        }
    }
}
