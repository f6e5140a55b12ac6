//! The per-connection cache: one lookup per client connection, made when
//! something first asks (during its first request, so the handshake is
//! over) and shared by every later request and every HTTP/2 stream on it.

use std::ffi::{CString, c_void};
use std::sync::OnceLock;

use super::module::module_ptr;
use super::sys::{
    APLOG_DEBUG, ap_get_module_config, ap_set_module_config, apr_sockaddr_t, conn_rec,
};
use super::{directives, log, pool};
use crate::addr::{self, Family};
use crate::auth::PendingSlot;
use crate::config::ServerConfig;
use crate::lookup::{self, ConnAddrs, ControlSocket, Outcome, Report, SessionSource};

/// Lives in the client connection's pool.
#[derive(Default)]
pub struct ConnState {
    /// Set once, then only read: HTTP/2 worker threads read it concurrently,
    /// and a thread arriving during the lookup waits for it rather than
    /// asking the daemon a second time.
    outcome: OnceLock<Outcome>,
    /// The variables the outcome exports, as C strings: made once, so a
    /// keep-alive connection's requests format nothing.
    variables: OnceLock<Vec<(CString, CString)>>,
    /// A SCRAM exchange of `AuthType tcpcrypt` between its two messages:
    /// it belongs to this connection and no other.
    pub auth: PendingSlot,
}

/// Gives a client connection its (still empty) cache. Proxy backend
/// connections and HTTP/2 stream connections get none: the former are not
/// ours to describe, the latter use their master's.
///
/// # Safety
/// `c` must be a live `conn_rec` in its pre_connection hook.
pub unsafe fn attach(c: *mut conn_rec) {
    // SAFETY: c is live (caller's contract).
    let (master, outgoing, pool, conn_config) =
        unsafe { ((*c).master, (*c).outgoing, (*c).pool, (*c).conn_config) };
    if !master.is_null() || outgoing != 0 {
        return;
    }
    // SAFETY: the state lives exactly as long as the connection's pool,
    // which outlives every request and stream of the connection.
    unsafe {
        let state = pool::boxed(pool, ConnState::default());
        ap_set_module_config(conn_config, module_ptr(), state.cast::<c_void>());
    }
}

/// The cache of the client connection behind `c` (its HTTP/2 master's for
/// a stream). `None` for connections without one (proxy backends).
///
/// # Safety
/// `c` must be null or a live `conn_rec`; the result must not outlive it.
pub unsafe fn state<'a>(c: *mut conn_rec) -> Option<&'a ConnState> {
    // SAFETY: caller's contract.
    unsafe { root_state(c) }.map(|(_, state)| state)
}

/// # Safety
/// As for [`state`].
unsafe fn root_state<'a>(c: *mut conn_rec) -> Option<(*mut conn_rec, &'a ConnState)> {
    if c.is_null() {
        return None;
    }
    let mut root = c;
    // SAFETY: master pointers of live connections point to live connections.
    unsafe {
        while !(*root).master.is_null() {
            root = (*root).master;
        }
    }
    // SAFETY: root is live; its slot is null or the ConnState set in attach.
    let state = unsafe {
        ap_get_module_config((*root).conn_config, module_ptr())
            .cast::<ConnState>()
            .as_ref()
    }?;
    Some((root, state))
}

/// What the client connection behind `c` is, looking it up now if this is
/// the first time anyone asks. `None` for connections without a cache
/// (proxy backends).
///
/// # Safety
/// `c` must be null or a live `conn_rec`; the result must not outlive it.
pub unsafe fn outcome<'a>(c: *mut conn_rec) -> Option<&'a Outcome> {
    // SAFETY: caller's contract.
    let (root, state) = unsafe { root_state(c) }?;
    // SAFETY: as above.
    Some(unsafe { settled(root, state) })
}

/// The outcome held in `state`, looked up on `root` the first time.
///
/// # Safety
/// `root` must be the live client connection `state` belongs to.
unsafe fn settled(root: *mut conn_rec, state: &ConnState) -> &Outcome {
    // SAFETY: root is live for the whole call (caller's contract).
    state.outcome.get_or_init(|| unsafe { look_up(root) })
}

/// The variables of the client connection behind `c` (looked up now if
/// nobody asked before): all of them for a tcpcrypt session, none
/// otherwise. `None` for connections without a cache (proxy backends).
///
/// # Safety
/// As for [`outcome`].
pub unsafe fn variables<'a>(c: *mut conn_rec) -> Option<&'a [(CString, CString)]> {
    // SAFETY: caller's contract.
    let (root, state) = unsafe { root_state(c) }?;
    let vars = state.variables.get_or_init(|| {
        // SAFETY: root is the live connection state belongs to.
        let outcome = unsafe { settled(root, state) };
        crate::vars::for_outcome(outcome)
            .into_iter()
            .filter_map(|(name, value)| Some((CString::new(name).ok()?, CString::new(value).ok()?)))
            .collect()
    });
    Some(vars)
}

/// # Safety
/// `c` must be a live client connection.
unsafe fn look_up(c: *mut conn_rec) -> Outcome {
    // SAFETY: c is live; its address records live in its pool.
    let addrs = unsafe {
        match (socket_addr((*c).local_addr), socket_addr((*c).client_addr)) {
            (Some(local), Some(remote)) => ConnAddrs { local, remote },
            _ => {
                log::conn(
                    c,
                    APLOG_DEBUG,
                    "connection has no IP address pair; no session lookup",
                );
                return Outcome::NoSession;
            }
        }
    };
    let default_config = ServerConfig::default();
    // SAFETY: base_server is the live vhost the connection arrived on.
    let config = unsafe { directives::server_config((*c).base_server) }.unwrap_or(&default_config);
    let source = ControlSocket::new(config.control_socket(), config.lookup_timeout());
    let (outcome, report) = lookup::settle(addrs, source.lookup(addrs));
    // SAFETY: c is live.
    unsafe {
        match report {
            Report::Debug(text) => log::conn(c, APLOG_DEBUG, &text),
            Report::Error(text) => log::conn_failure(c, &text),
        }
    }
    outcome
}

/// # Safety
/// `sa` must be null or a live `apr_sockaddr_t`.
unsafe fn socket_addr(sa: *const apr_sockaddr_t) -> Option<std::net::SocketAddr> {
    // SAFETY: sa is null or live (caller's contract).
    let sa = unsafe { sa.as_ref() }?;
    let len = usize::try_from(sa.ipaddr_len).ok()?;
    if sa.ipaddr_ptr.is_null() || len > 16 {
        return None;
    }
    // SAFETY: APR points ipaddr_ptr at the in_addr/in6_addr inside the same
    // record and sets ipaddr_len to its size (checked above to be small).
    let ip = unsafe { std::slice::from_raw_parts(sa.ipaddr_ptr.cast::<u8>(), len) };
    addr::socket_addr(Family::from_raw(sa.family), ip, sa.port)
}
