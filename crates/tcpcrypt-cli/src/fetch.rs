//! `tcpcrypt fetch`: GET a URL over a plain `TcpStream` and report, on
//! stderr, what tcpcryptd says about that very connection.

use std::io::{BufReader, BufWriter, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use tcpcrypt::{Client, Lookup};

use crate::cli::FetchArgs;
use crate::exit::{Failure, Outcome};
use crate::http;

pub fn run(client: &Client, args: &FetchArgs) -> Result<Outcome, Failure> {
    if args.login.requested() {
        return crate::auth::fetch(client, args);
    }
    let url = http::parse_url(&args.url).map_err(Failure::Usage)?;
    let net_timeout = Duration::from_millis(args.net_timeout.max(1));
    let stream = connect(&url, net_timeout)?;
    let http_err = |what: &str, e: std::io::Error| Failure::Http(format!("{what}: {e}"));
    stream
        .set_read_timeout(Some(net_timeout))
        .and_then(|()| stream.set_write_timeout(Some(net_timeout)))
        .map_err(|e| http_err("socket options", e))?;
    // Ask while the connection is surely open; the wait covers a handshake
    // that is still running right after connect. With --sessid-header the
    // answer must be known before the request goes out.
    let wait = Duration::from_millis(args.wait);
    let (lookup, extra) = match &args.sessid_header {
        Some(name) => {
            let lookup = client.lookup_fd_wait(&stream, wait);
            let extra = match &lookup {
                Ok(Lookup::Tcpcrypt(s)) => vec![(name.clone(), s.session_id.to_upper_hex())],
                _ => Vec::new(),
            };
            (Some(lookup), extra)
        }
        None => (None, Vec::new()),
    };
    (&stream)
        .write_all(url.request(&extra).as_bytes())
        .map_err(|e| http_err("sending the request", e))?;
    let lookup = lookup.unwrap_or_else(|| client.lookup_fd_wait(&stream, wait));
    let daemon_outcome = report(&lookup);

    let mut input = BufReader::with_capacity(1 << 16, &stream);
    let head = http::read_head(&mut input).map_err(|e| http_err("reading the response", e))?;
    if !(200..300).contains(&head.status) {
        eprintln!("tcpcrypt: server answered {}", head.status_line);
    }
    let framing = http::framing(&head).map_err(|e| http_err("response framing", e))?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    http::copy_body(&mut input, framing, &mut out).map_err(|e| http_err("reading the body", e))?;
    out.flush().map_err(Failure::Output)?;
    Ok(daemon_outcome)
}

pub(crate) fn connect(url: &http::Url, timeout: Duration) -> Result<TcpStream, Failure> {
    let addrs: Vec<_> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| Failure::Http(format!("cannot resolve {}: {e}", url.host)))?
        .collect();
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(format!("cannot connect to {addr}: {e}")),
        }
    }
    Err(Failure::Http(last.unwrap_or_else(|| {
        format!("{} has no addresses", url.host)
    })))
}

/// Prints the session (or its absence) on stderr; returns the exit outcome
/// the daemon's answer implies.
pub(crate) fn report(lookup: &Result<Lookup, tcpcrypt::Error>) -> Outcome {
    match lookup {
        Ok(Lookup::Tcpcrypt(s)) => {
            eprintln!(
                "tcpcrypt: encrypted: role {}, {}, {}{}",
                s.role,
                s.tep,
                s.aead,
                if s.resumed { ", resumed" } else { "" }
            );
            eprintln!("tcpcrypt: session id {}", s.session_id);
            eprintln!(
                "tcpcrypt: as a web server shows it: TCP_CRYPT_SESSID={}",
                s.session_id.to_upper_hex()
            );
            Outcome::Ok
        }
        Ok(Lookup::Plain { reason }) => {
            eprintln!("tcpcrypt: plain: this connection is not encrypted ({reason})");
            Outcome::NotEncrypted
        }
        Ok(Lookup::Pending) => {
            eprintln!("tcpcrypt: pending: the handshake had not finished when the wait ran out");
            Outcome::NotEncrypted
        }
        Ok(Lookup::Unknown) => {
            eprintln!("tcpcrypt: unknown: tcpcryptd does not track this connection");
            Outcome::NotEncrypted
        }
        Err(e) => {
            eprintln!("tcpcrypt: cannot ask tcpcryptd about this connection: {e}");
            if e.is_unreachable() {
                Outcome::Unreachable
            } else {
                Outcome::Failed
            }
        }
    }
}
