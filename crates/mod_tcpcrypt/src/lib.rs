//! mod_tcpcrypt: an Apache httpd 2.4 module that tells web applications
//! whether their client's TCP connection is encrypted with tcpcrypt
//! (RFC 8548), and under which session ID.
//!
//! It owns: the directives (`Tcpcrypt`, `TcpcryptControlSocket`,
//! `TcpcryptLookupTimeout`), a per-connection cache of one session lookup,
//! the `TCP_CRYPT_*` environment variables, the `Require tcpcrypt` provider,
//! the variables in `ap_expr`, optional functions for other modules, and
//! `AuthType tcpcrypt` (logins bound to the session: `auth`).
//!
//! It must not: hold protocol logic (sessions come from tcpcryptd through the
//! `tcpcrypt` client library), block a worker longer than
//! `TcpcryptLookupTimeout` once per connection, or panic into httpd.
//!
//! Logic lives in plain modules with unit tests; `ffi` is a thin layer over
//! them that only a running httpd can exercise (see tests/).

pub mod addr;
pub mod auth;
pub mod config;
pub mod lookup;
pub mod ratelimit;
pub mod vars;

#[cfg(not(test))]
mod ffi;
