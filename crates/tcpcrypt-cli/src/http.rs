//! Just enough HTTP/1.1 for `fetch`: an `http://` URL, a GET request, a
//! response head, and a body framed by Content-Length, chunked encoding or
//! the end of the connection. Works on any `BufRead`/`Write`, so it is
//! tested without a network.

use std::io::{self, BufRead, Read, Write};

/// Header lines, status line and chunk-size lines longer than this are
/// refused, so a hostile server cannot make us buffer without end.
const MAX_LINE: usize = 16 * 1024;
const MAX_HEADERS: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Host as written, without brackets for IPv6.
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub target: String,
}

/// Parses `http://host[:port][/path][?query][#fragment]`.
pub fn parse_url(url: &str) -> Result<Url, String> {
    let Some(scheme_end) = url.find("://") else {
        return Err(format!("{url:?} is not a URL (expected http://HOST/PATH)"));
    };
    let scheme = &url[..scheme_end];
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(format!(
            "only http:// URLs are supported, not {scheme}:// (tcpcrypt works below TLS; use plain HTTP)"
        ));
    }
    let rest = &url[scheme_end + 3..];
    let rest = rest.split('#').next().unwrap_or_default();
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(auth_end);
    if authority.contains('@') {
        return Err("user names in URLs are not supported".to_string());
    }
    let target = match target {
        "" => "/".to_string(),
        t if t.starts_with('?') => format!("/{t}"),
        t => t.to_string(),
    };
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err(format!("unclosed [ in {authority:?}"));
        };
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("unexpected {p:?} after ]"))?,
            ),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("no host in {url:?}"));
    }
    let port = match port {
        None | Some("") => 80,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("port {p:?} is not a number from 0 to 65535"))?,
    };
    Ok(Url {
        host: host.to_string(),
        port,
        target,
    })
}

impl Url {
    /// The Host header value: brackets around IPv6, port only if not 80.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The GET request, with any extra `(name, value)` header lines.
    pub fn request(&self, extra: &[(String, String)]) -> String {
        self.request_on(extra, false)
    }

    /// The GET request; `keep_alive` asks the server to keep the
    /// connection open for another request (a login's second step).
    pub fn request_on(&self, extra: &[(String, String)], keep_alive: bool) -> String {
        let extra: String = extra
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let connection = if keep_alive { "keep-alive" } else { "close" };
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tcpcrypt-fetch/{}\r\nAccept: */*\r\n{extra}Connection: {connection}\r\n\r\n",
            self.target,
            self.host_header(),
            env!("CARGO_PKG_VERSION")
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub status_line: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> impl Iterator<Item = &str> {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How the body of a response is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Chunked,
    Length(u64),
    UntilClose,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn read_line(input: &mut impl BufRead) -> io::Result<String> {
    let mut buf = Vec::new();
    let n = input
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before the response was complete",
        ));
    }
    if n > MAX_LINE {
        return Err(bad(format!("line longer than {MAX_LINE} bytes")));
    }
    if buf.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed in the middle of a line",
        ));
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    String::from_utf8(buf).map_err(|_| bad("header line is not UTF-8"))
}

/// Reads the status line and headers, skipping interim 1xx responses.
pub fn read_head(input: &mut impl BufRead) -> io::Result<Head> {
    loop {
        let status_line = read_line(input)?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(bad(format!("not an HTTP/1.x response: {status_line:?}")));
        }
        let status = parts
            .next()
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|s| (100..1000).contains(s))
            .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = read_line(input)?;
            if line.is_empty() {
                break;
            }
            if headers.len() == MAX_HEADERS {
                return Err(bad(format!("more than {MAX_HEADERS} header lines")));
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| bad(format!("header line without colon: {line:?}")))?;
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        return Ok(Head {
            status,
            status_line,
            headers,
        });
    }
}

/// Works out the body framing of a response to a GET.
pub fn framing(head: &Head) -> io::Result<Framing> {
    if head.status == 204 || head.status == 304 || (100..200).contains(&head.status) {
        return Ok(Framing::None);
    }
    let encodings: Vec<String> = head
        .header("transfer-encoding")
        .flat_map(|v| v.split(','))
        .map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty())
        .collect();
    if let Some(last) = encodings.last() {
        return Ok(if last == "chunked" {
            Framing::Chunked
        } else {
            Framing::UntilClose
        });
    }
    let mut lengths = head.header("content-length").flat_map(|v| v.split(','));
    match lengths.next() {
        None => Ok(Framing::UntilClose),
        Some(first) => {
            let n = first
                .trim()
                .parse::<u64>()
                .map_err(|_| bad(format!("bad Content-Length {first:?}")))?;
            if lengths.any(|other| other.trim().parse::<u64>().ok() != Some(n)) {
                return Err(bad("conflicting Content-Length values"));
            }
            Ok(Framing::Length(n))
        }
    }
}

/// Copies the body to `out`, decoding chunked encoding. Returns its length.
pub fn copy_body(
    input: &mut impl BufRead,
    framing: Framing,
    out: &mut impl Write,
) -> io::Result<u64> {
    match framing {
        Framing::None => Ok(0),
        Framing::UntilClose => io::copy(input, out),
        Framing::Length(n) => {
            let copied = io::copy(&mut input.take(n), out)?;
            if copied < n {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("body ended after {copied} of {n} bytes"),
                ));
            }
            Ok(copied)
        }
        Framing::Chunked => {
            let mut total = 0u64;
            loop {
                let line = read_line(input)?;
                let size_text = line.split(';').next().unwrap_or_default().trim();
                let size = u64::from_str_radix(size_text, 16)
                    .map_err(|_| bad(format!("bad chunk size line {line:?}")))?;
                if size == 0 {
                    // Trailer fields, up to the empty line.
                    while !read_line(input)?.is_empty() {}
                    return Ok(total);
                }
                let copied = io::copy(&mut input.take(size), out)?;
                if copied < size {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed inside a chunk",
                    ));
                }
                total += copied;
                if !read_line(input)?.is_empty() {
                    return Err(bad("chunk not followed by CRLF"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        parse_url(s).expect("valid url")
    }

    #[test]
    fn url_defaults_to_port_80_and_root() {
        assert_eq!(
            url("http://example.org"),
            Url {
                host: "example.org".into(),
                port: 80,
                target: "/".into()
            }
        );
    }

    #[test]
    fn url_keeps_path_and_query_and_drops_fragment() {
        let u = url("HTTP://10.0.0.2:8080/a/b?x=1#top");
        assert_eq!(u.host, "10.0.0.2");
        assert_eq!(u.port, 8080);
        assert_eq!(u.target, "/a/b?x=1");
        assert_eq!(u.host_header(), "10.0.0.2:8080");
    }

    #[test]
    fn url_query_without_path_gets_a_slash() {
        assert_eq!(url("http://h?q").target, "/?q");
    }

    #[test]
    fn url_with_ipv6_literal() {
        let u = url("http://[fd00::2]:81/x");
        assert_eq!(u.host, "fd00::2");
        assert_eq!(u.port, 81);
        assert_eq!(u.host_header(), "[fd00::2]:81");
        assert_eq!(url("http://[fd00::2]/").host_header(), "[fd00::2]");
    }

    #[test]
    fn https_is_refused_with_a_reason() {
        let err = parse_url("https://example.org/").expect_err("https");
        assert!(err.contains("only http://"), "{err}");
    }

    #[test]
    fn bad_urls_are_refused() {
        for bad in [
            "example.org",
            "http://",
            "http://h:99999/",
            "http://[::1/",
            "http://u@h/",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_is_a_minimal_http11_get() {
        let req = url("http://h:8080/p").request(&[]);
        assert!(req.starts_with("GET /p HTTP/1.1\r\nHost: h:8080\r\n"));
        assert!(req.contains("Connection: close\r\n"));
        assert!(req.ends_with("\r\n\r\n"));
    }

    #[test]
    fn request_carries_extra_headers_inside_the_head() {
        let extra = [("X-Sid".to_string(), "23ab".to_string())];
        let req = url("http://h/").request(&extra);
        let head = req.split("\r\n\r\n").next().unwrap_or_default();
        assert!(head.contains("\r\nX-Sid: 23ab"), "{req:?}");
    }

    fn body_of(response: &[u8]) -> io::Result<(Head, Vec<u8>)> {
        let mut input = response;
        let head = read_head(&mut input)?;
        let mut out = Vec::new();
        copy_body(&mut input, framing(&head)?, &mut out)?;
        Ok((head, out))
    }

    #[test]
    fn content_length_body_is_read_exactly() {
        let (head, body) =
            body_of(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA").expect("parse");
        assert_eq!(head.status, 200);
        assert_eq!(body, b"hello");
    }

    #[test]
    fn chunked_body_is_decoded_with_extensions_and_trailers() {
        let response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let (_, body) = body_of(response).expect("parse");
        assert_eq!(body, b"Wikipedia in\r\n\r\nchunks.");
    }

    #[test]
    fn body_without_length_runs_to_close() {
        let (_, body) = body_of(b"HTTP/1.0 200 OK\r\n\r\nall of it").expect("parse");
        assert_eq!(body, b"all of it");
    }

    #[test]
    fn interim_100_continue_is_skipped() {
        let (head, body) = body_of(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno",
        )
        .expect("parse");
        assert_eq!(head.status, 404);
        assert_eq!(body, b"no");
    }

    #[test]
    fn no_content_has_no_body() {
        let (_, body) =
            body_of(b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n").expect("parse");
        assert!(body.is_empty());
    }

    #[test]
    fn short_content_length_body_is_an_error() {
        let err =
            body_of(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort").expect_err("short");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn truncated_chunk_is_an_error() {
        let err = body_of(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc")
            .expect_err("truncated");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn bad_chunk_size_is_an_error() {
        let err = body_of(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
            .expect_err("bad size");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn conflicting_content_lengths_are_an_error() {
        assert!(
            body_of(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
                .is_err()
        );
    }

    #[test]
    fn non_http_response_is_an_error() {
        assert!(body_of(b"SSH-2.0-OpenSSH\r\n").is_err());
    }

    #[test]
    fn endless_header_line_is_refused() {
        let mut response = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        response.extend(std::iter::repeat_n(b'a', MAX_LINE + 10));
        assert!(body_of(&response).is_err());
    }
}
