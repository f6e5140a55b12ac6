//! A minimal HTTP/1.1 client over one keep-alive TCP connection, so a test
//! knows its connection's address (what tcpcryptd is asked about) and can
//! send several requests on it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct Response {
    pub status: u16,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// Lines `NAME=value` of the test pages as a map; a line `NAME unset`
    /// maps to `None`.
    pub fn vars(&self) -> BTreeMap<String, Option<String>> {
        self.body
            .lines()
            .filter_map(|line| {
                if let Some((name, value)) = line.split_once('=') {
                    Some((name.trim().to_owned(), Some(value.trim().to_owned())))
                } else {
                    line.strip_suffix(" unset")
                        .map(|name| (name.trim().to_owned(), None))
                }
            })
            .collect()
    }

    /// The value a page reported for `name` (`None` when it said unset).
    pub fn var(&self, name: &str) -> Option<String> {
        match self.vars().get(name) {
            Some(v) => v.clone(),
            None => panic!("page did not report {name}; body:\n{}", self.body),
        }
    }
}

pub struct HttpConn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    local: SocketAddr,
}

impl HttpConn {
    pub fn connect(port: u16) -> Self {
        Self::connect_to(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    pub fn connect_to(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect to httpd at {addr}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap_or_else(|e| panic!("set_read_timeout: {e}"));
        let local = stream
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"));
        let writer = stream
            .try_clone()
            .unwrap_or_else(|e| panic!("clone stream: {e}"));
        Self {
            reader: BufReader::new(stream),
            writer,
            local,
        }
    }

    /// This side's address: the `remote` tcpcryptd is asked about.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.try_get(path, &[])
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub fn try_get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Response, String> {
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        self.writer
            .write_all(request.as_bytes())
            .map_err(|e| format!("send: {e}"))?;
        self.read_response()
    }

    fn read_line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed by httpd".to_owned());
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }

    fn read_response(&mut self) -> Result<Response, String> {
        let status_line = self.read_line()?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let mut headers = BTreeMap::new();
        loop {
            let line = self.read_line()?;
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let body = if headers
            .get("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"))
        {
            self.read_chunked()?
        } else if let Some(len) = headers.get("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| format!("bad content-length {len}"))?;
            let mut body = vec![0u8; len];
            self.reader
                .read_exact(&mut body)
                .map_err(|e| format!("read body: {e}"))?;
            body
        } else {
            Vec::new()
        };
        Ok(Response {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    fn read_chunked(&mut self) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        loop {
            let size_line = self.read_line()?;
            let size_hex = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| format!("bad chunk size {size_line:?}"))?;
            if size == 0 {
                // Trailers, then the empty line.
                while !self.read_line()?.is_empty() {}
                return Ok(body);
            }
            let start = body.len();
            body.resize(start + size, 0);
            self.reader
                .read_exact(&mut body[start..])
                .map_err(|e| format!("read chunk: {e}"))?;
            self.read_line()?;
        }
    }
}
