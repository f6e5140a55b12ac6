//! The traffic of each measurement, over std sockets and threads so the
//! benchmark needs no load generator: one bulk stream, a connection-rate
//! run, and a pile of idle connections. Nothing here knows whether the
//! port it is given is handled by the daemons; the caller picks the port
//! and checks the outcome.
//!
//! Every blocking call has a short socket timeout and is retried while the
//! peer still makes progress, so a stall becomes a reported failure and an
//! interrupt is noticed within a second.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tcpcrypt_testnet::Netns;

use crate::interrupt;

/// Why a measurement produced no number.
#[derive(Debug)]
pub enum Failure {
    /// The user stopped the run; not a problem to report.
    Interrupted,
    /// The traffic itself failed, with what was being done.
    Broken(String),
}

impl Failure {
    fn broken(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Failure {
        Failure::Broken(format!("{what}: {e}"))
    }
}

pub type Outcome<T> = Result<T, Failure>;

/// How long a socket call blocks before the loop looks at the interrupt
/// flag again.
const POLL: Duration = Duration::from_secs(1);
/// How long a transfer may make no progress at all before it counts as
/// stalled. Generous: the machine may be busy with other builds.
const STALL: Duration = Duration::from_secs(30);
/// Connect timeout for every client socket.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Size of each write and read of a bulk stream: large, so system-call
/// overhead is small next to the per-packet work being measured.
const CHUNK: usize = 256 << 10;

/// Where the client and server run, and the server's address.
#[derive(Clone, Copy)]
pub struct Ends<'a> {
    pub client: &'a Netns,
    pub server: &'a Netns,
    pub server_ip: IpAddr,
}

impl Ends<'_> {
    fn listen(&self, port: u16) -> Outcome<TcpListener> {
        let addr = SocketAddr::new(self.server_ip, port);
        self.server
            .run(|| TcpListener::bind(addr))
            .map_err(|e| Failure::broken(format_args!("listening on {addr}"), e))
    }

    fn connect(&self, port: u16) -> Outcome<TcpStream> {
        let addr = SocketAddr::new(self.server_ip, port);
        let s = self
            .client
            .run(|| TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT))
            .map_err(|e| Failure::broken(format_args!("connecting to {addr}"), e))?;
        with_timeouts(&s)?;
        Ok(s)
    }
}

fn with_timeouts(s: &TcpStream) -> Outcome<()> {
    s.set_read_timeout(Some(POLL))
        .and_then(|()| s.set_write_timeout(Some(POLL)))
        .map_err(|e| Failure::broken("setting socket timeouts", e))
}

fn retryable(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

/// Waits out one timed-out socket call: an error once interrupted or once
/// nothing moved for [`STALL`] since `progress`.
fn patience(progress: Instant, what: &str) -> Outcome<()> {
    if interrupt::requested() {
        return Err(Failure::Interrupted);
    }
    if progress.elapsed() > STALL {
        return Err(Failure::Broken(format!(
            "{what}: no progress for {}s",
            STALL.as_secs()
        )));
    }
    Ok(())
}

/// One `read`, retried across timeouts; `Ok(0)` is end of stream.
fn read_some(mut s: &TcpStream, buf: &mut [u8], what: &str) -> Outcome<usize> {
    let since = Instant::now();
    loop {
        match s.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if retryable(&e) => patience(since, what)?,
            Err(e) => return Err(Failure::broken(what, e)),
        }
    }
}

/// `write_all`, but across timeouts, counting every partial write as
/// progress so the data accounting stays exact.
fn write_all(mut s: &TcpStream, mut buf: &[u8], what: &str) -> Outcome<()> {
    let mut since = Instant::now();
    while !buf.is_empty() {
        match s.write(buf) {
            Ok(0) => return Err(Failure::Broken(format!("{what}: connection closed"))),
            Ok(n) => {
                buf = &buf[n..];
                since = Instant::now();
            }
            Err(e) if retryable(&e) => patience(since, what)?,
            Err(e) => return Err(Failure::broken(what, e)),
        }
    }
    Ok(())
}

/// Accepts one connection within [`STALL`], or fails early once the
/// client side set `give_up` (it failed, so nobody will connect).
fn accept_one(listener: &TcpListener, give_up: &AtomicBool) -> Outcome<TcpStream> {
    listener
        .set_nonblocking(true)
        .map_err(|e| Failure::broken("making the listener non-blocking", e))?;
    let since = Instant::now();
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)
                    .map_err(|e| Failure::broken("making a connection blocking", e))?;
                with_timeouts(&s)?;
                return Ok(s);
            }
            Err(e) if retryable(&e) => {
                if give_up.load(Ordering::Relaxed) {
                    return Err(Failure::Broken("the client side gave up".into()));
                }
                patience(since, "accepting")?;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(Failure::broken("accepting", e)),
        }
    }
}

/// Which way the bulk data flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

impl Direction {
    /// The request byte that tells the server its part.
    fn command(self) -> u8 {
        match self {
            Direction::ClientToServer => b'U',
            Direction::ServerToClient => b'D',
        }
    }
}

/// What a receiver saw of one stream.
#[derive(Clone, Copy, Debug)]
pub struct Bulk {
    /// Bytes that arrived after the first read, and the time from the
    /// first to the last byte: the connection setup and the first read's
    /// bytes are not part of the rate.
    pub timed_bytes: u64,
    pub seconds: f64,
}

impl Bulk {
    /// Throughput in 10^6 bytes per second.
    pub fn megabytes_per_second(&self) -> f64 {
        self.timed_bytes as f64 / self.seconds / 1e6
    }
}

/// The data a sender writes: any bytes do, since nothing inspects them, but
/// not zeros, in case some layer ever special-cases those.
fn payload() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..CHUNK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn send(s: &TcpStream, total: u64) -> Outcome<()> {
    let data = payload();
    let mut left = total;
    while left > 0 {
        let n = left.min(data.len() as u64) as usize;
        write_all(s, &data[..n], "sending the stream")?;
        left -= n as u64;
    }
    Ok(())
}

fn receive(s: &TcpStream, total: u64) -> Outcome<Bulk> {
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    let mut first: Option<(Instant, u64)> = None;
    while got < total {
        let want = (total - got).min(buf.len() as u64) as usize;
        let n = read_some(s, &mut buf[..want], "receiving the stream")?;
        if n == 0 {
            return Err(Failure::Broken(format!(
                "the stream ended after {got} of {total} bytes"
            )));
        }
        if first.is_none() {
            first = Some((Instant::now(), n as u64));
        }
        got += n as u64;
    }
    let end = Instant::now();
    let (start, head) = first.unwrap_or((end, 0));
    Ok(Bulk {
        timed_bytes: total - head,
        seconds: end.duration_since(start).as_secs_f64(),
    })
}

/// Reads until the peer closes, so the closing side is always the same and
/// the last bytes are known to have been consumed.
fn drain(s: &TcpStream) -> Outcome<()> {
    let mut buf = [0u8; 64];
    while read_some(s, &mut buf, "waiting for the peer to close")? > 0 {}
    Ok(())
}

/// One stream of `bytes` on a fresh connection to `port`, timed on the
/// receiver. `inspect` is called with the client's (local, peer) addresses
/// once the connection is up and before any data moves, so the caller can
/// ask the daemons about it.
pub fn bulk(
    ends: Ends<'_>,
    port: u16,
    bytes: u64,
    dir: Direction,
    inspect: impl FnOnce(SocketAddr, SocketAddr),
) -> Outcome<Bulk> {
    let listener = ends.listen(port)?;
    let give_up = Arc::new(AtomicBool::new(false));
    let server_gives_up = Arc::clone(&give_up);
    let server = std::thread::spawn(move || -> Outcome<Option<Bulk>> {
        let s = accept_one(&listener, &server_gives_up)?;
        let mut cmd = [0u8; 1];
        if read_some(&s, &mut cmd, "reading the request")? == 0 {
            return Err(Failure::Broken("the client closed before asking".into()));
        }
        if cmd[0] == Direction::ClientToServer.command() {
            let got = receive(&s, bytes)?;
            write_all(&s, b"k", "acknowledging the stream")?;
            drain(&s)?;
            Ok(Some(got))
        } else {
            send(&s, bytes)?;
            drain(&s)?;
            Ok(None)
        }
    });
    let client = (|| {
        let c = ends.connect(port)?;
        let local = c
            .local_addr()
            .map_err(|e| Failure::broken("getsockname", e))?;
        let peer = c
            .peer_addr()
            .map_err(|e| Failure::broken("getpeername", e))?;
        inspect(local, peer);
        write_all(&c, &[dir.command()], "sending the request")?;
        match dir {
            Direction::ClientToServer => {
                send(&c, bytes)?;
                let mut ack = [0u8; 1];
                if read_some(&c, &mut ack, "waiting for the acknowledgement")? == 0 {
                    return Err(Failure::Broken(
                        "the server closed without acknowledging".into(),
                    ));
                }
                Ok(None)
            }
            Direction::ServerToClient => receive(&c, bytes).map(Some),
        }
        // Dropping `c` closes the client side, which ends the server's drain.
    })();
    if client.is_err() {
        give_up.store(true, Ordering::Relaxed);
    }
    let served = server
        .join()
        .unwrap_or_else(|_| Err(Failure::Broken("the server thread panicked".into())));
    // The client's error is the cause when both failed (the server only
    // saw the connection go away).
    match (client?, served?) {
        (Some(b), _) | (None, Some(b)) => Ok(b),
        (None, None) => Err(Failure::Broken("no side timed the stream".into())),
    }
}

/// The outcome of a connection-rate run.
#[derive(Debug, Default)]
pub struct Rate {
    /// Connections that completed request and reply.
    pub completed: u64,
    /// Connections that failed, and the first reason.
    pub errors: u64,
    pub first_error: Option<String>,
    /// Wall time from the start until the last client finished.
    pub seconds: f64,
    /// Connect start to reply byte, per completed connection.
    pub ttfb: Vec<Duration>,
}

impl Rate {
    pub fn per_second(&self) -> f64 {
        self.completed as f64 / self.seconds
    }
}

/// One server connection of a rate run: a byte in, a byte out, then wait
/// for the client to close.
fn serve_tiny(s: TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut b = [0u8; 1];
    if matches!((&s).read(&mut b), Ok(1)) && (&s).write_all(&b).is_ok() {
        while matches!((&s).read(&mut b), Ok(n) if n > 0) {}
    }
}

/// One client connection of a rate run: returns the time to first byte.
fn tiny_exchange(to: SocketAddr) -> Result<Duration, String> {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&to, CONNECT_TIMEOUT)
        .map_err(|e| format!("connecting to {to}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| format!("setting a read timeout: {e}"))?;
    s.write_all(b"q").map_err(|e| format!("sending: {e}"))?;
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(1) => Ok(start.elapsed()),
        Ok(_) => Err("the server closed without a reply".into()),
        Err(e) => Err(format!("waiting for the reply: {e}")),
    }
    // Dropping `s` closes it: the client closes first, as browsers and
    // most HTTP/1.0 clients do, so TIME-WAIT lands on the client.
}

/// `clients` threads that each open, use and close connections to `port`
/// back to back for `duration`.
pub fn rate(ends: Ends<'_>, port: u16, clients: usize, duration: Duration) -> Outcome<Rate> {
    let listener = ends.listen(port)?;
    let to = SocketAddr::new(ends.server_ip, port);
    let mut servers = Vec::with_capacity(clients);
    for _ in 0..clients {
        let l = listener
            .try_clone()
            .map_err(|e| Failure::broken("duplicating the listener", e))?;
        servers.push(std::thread::spawn(move || {
            // Ends when the listener is shut down below.
            while let Ok((s, _)) = l.accept() {
                serve_tiny(s);
            }
        }));
    }
    let start = Instant::now();
    let deadline = start + duration;
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            ends.client.spawn_thread(move || {
                let mut tally = Rate::default();
                while Instant::now() < deadline && !interrupt::requested() {
                    match tiny_exchange(to) {
                        Ok(t) => {
                            tally.completed += 1;
                            tally.ttfb.push(t);
                        }
                        Err(e) => {
                            tally.errors += 1;
                            tally.first_error.get_or_insert(e);
                            // Don't spin on a persistent error.
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut total = Rate::default();
    for w in workers {
        match w.join() {
            Ok(t) => {
                total.completed += t.completed;
                total.errors += t.errors;
                if total.first_error.is_none() {
                    total.first_error = t.first_error;
                }
                total.ttfb.extend(t.ttfb);
            }
            Err(_) => {
                total.errors += 1;
                total
                    .first_error
                    .get_or_insert_with(|| "a client thread panicked".into());
            }
        }
    }
    total.seconds = start.elapsed().as_secs_f64();
    wake_acceptors(&listener);
    for s in servers {
        let _ = s.join();
    }
    if interrupt::requested() {
        return Err(Failure::Interrupted);
    }
    Ok(total)
}

/// Makes every thread blocked in `accept` on this listener return with an
/// error: on Linux, shutting down a listening socket for reading takes it
/// out of the listening state and wakes its waiters.
fn wake_acceptors(listener: &TcpListener) {
    // SAFETY: shutdown(2) on a descriptor the listener owns for this whole
    // call; it changes the socket's state, not the descriptor's ownership.
    unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RD) };
}

/// Idle connections held open for a memory measurement. Dropping it
/// closes them, client ends first (the field order), as in the rate run.
pub struct Idle {
    pub clients: Vec<TcpStream>,
    /// Held only so the server ends stay open.
    _servers: Vec<TcpStream>,
}

/// Opens `count` connections to `port` from `parallel` threads and keeps
/// both ends. Fails if any connection fails, so a memory figure is always
/// over the number of connections asked for.
pub fn open_idle(ends: Ends<'_>, port: u16, count: usize, parallel: usize) -> Outcome<Idle> {
    let listener = ends.listen(port)?;
    let give_up = Arc::new(AtomicBool::new(false));
    let acceptor_gives_up = Arc::clone(&give_up);
    let acceptor = std::thread::spawn(move || -> Outcome<Vec<TcpStream>> {
        let mut v = Vec::with_capacity(count);
        while v.len() < count {
            v.push(accept_one(&listener, &acceptor_gives_up)?);
        }
        Ok(v)
    });
    let to = SocketAddr::new(ends.server_ip, port);
    let parallel = parallel.clamp(1, count.max(1));
    let workers: Vec<_> = (0..parallel)
        .map(|i| {
            let mine = count / parallel + usize::from(i < count % parallel);
            ends.client
                .spawn_thread(move || -> Outcome<Vec<TcpStream>> {
                    let mut v = Vec::with_capacity(mine);
                    for _ in 0..mine {
                        if interrupt::requested() {
                            return Err(Failure::Interrupted);
                        }
                        let s = TcpStream::connect_timeout(&to, CONNECT_TIMEOUT)
                            .map_err(|e| Failure::broken(format_args!("connecting to {to}"), e))?;
                        v.push(s);
                    }
                    Ok(v)
                })
        })
        .collect();
    let mut clients = Vec::with_capacity(count);
    let mut failure = None;
    for w in workers {
        match w.join() {
            Ok(Ok(v)) => clients.extend(v),
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(_) => {
                failure = failure.or(Some(Failure::Broken("a client thread panicked".into())))
            }
        }
    }
    if let Some(e) = failure {
        give_up.store(true, Ordering::Relaxed);
        drop(clients);
        let _ = acceptor.join();
        return Err(e);
    }
    let servers = acceptor
        .join()
        .unwrap_or_else(|_| Err(Failure::Broken("the accepting thread panicked".into())))?;
    Ok(Idle {
        clients,
        _servers: servers,
    })
}
