//! A private httpd for one test: its own directory, ports, config and logs,
//! started in the foreground and always stopped (with every child it
//! forked) when the guard is dropped, panic or not.

use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::http::HttpConn;

const MODULES: &str = "/usr/lib/apache2/modules";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mpm {
    Event,
    Prefork,
}

impl Mpm {
    fn name(self) -> &'static str {
        match self {
            Mpm::Event => "event",
            Mpm::Prefork => "prefork",
        }
    }
}

/// A directory under /tmp that disappears with the value.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "mod_tcpcrypt-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::AcqRel)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        // httpd's children run as www-data and must reach the pages and the
        // control socket inside.
        set_mode(&path, 0o755);
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

pub fn write_file(path: &Path, contents: &str, mode: u32) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
        set_mode(parent, 0o755);
    }
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    set_mode(path, mode);
}

/// The shared object cargo built for this test run: as a dependency of the
/// integration tests, the library lands next to their executables (in
/// `target/<profile>/deps`), rebuilt whenever its source changed.
pub fn module_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let so = exe.with_file_name("libmod_tcpcrypt.so");
    assert!(so.exists(), "{} not built", so.display());
    so
}

/// `target/<profile>`, where cargo puts workspace binaries (tcpcryptd).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| panic!("no target dir above {}", exe.display()))
}

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests start httpd with User www-data and need root (CI runs them as root)"
    );
}

fn startup_log(root: &Path) -> Stdio {
    let path = root.join("logs/stderr.log");
    fs::File::create(&path)
        .map(Stdio::from)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()))
}

/// A port that was free a moment ago, below the kernel's ephemeral range
/// (32768 and up) so the tests' own client sockets cannot take it before
/// httpd binds it.
fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id().wrapping_mul(7919).wrapping_add(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()),
    );
    for _ in 0..1000 {
        let n = seed.wrapping_add(NEXT.fetch_add(1, Ordering::AcqRel).wrapping_mul(104_729));
        let port = 20_000 + (n % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port found between 20000 and 32000");
}

/// Runs `f` on a thread inside network namespace `netns` (or right here
/// when `None`); sockets it makes stay in that namespace.
pub fn in_netns<R: Send>(netns: Option<&str>, f: impl FnOnce() -> R + Send) -> R {
    let Some(name) = netns else { return f() };
    let path = format!("/run/netns/{name}");
    std::thread::scope(|s| {
        let handle = s.spawn(move || {
            let file = fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: setns with a namespace descriptor we opened moves only
            // this (fresh) thread.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        });
        handle
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// How to configure one httpd.
pub struct Config {
    pub mpm: Mpm,
    /// `TcpcryptControlSocket`, if set.
    pub control_socket: Option<PathBuf>,
    /// `TcpcryptLookupTimeout`, if set.
    pub lookup_timeout_ms: Option<u32>,
    /// Server-level lines appended to the generated config.
    pub extra: String,
    /// `LogLevel` line.
    pub log_level: &'static str,
    /// Address of the main `Listen` (the proxy backend always listens on
    /// 127.0.0.1).
    pub listen_ip: IpAddr,
    /// Fixed port for the main `Listen` (else a free one is picked).
    pub port: Option<u16>,
    /// Run httpd inside this network namespace (`ip netns` name).
    pub netns: Option<String>,
    /// Whether mod_tcpcrypt is loaded at all (a baseline for benchmarks;
    /// the directives that need it are then left out).
    pub load_module: bool,
}

impl Config {
    pub fn new(mpm: Mpm) -> Self {
        Self {
            mpm,
            control_socket: None,
            lookup_timeout_ms: None,
            extra: String::new(),
            log_level: "warn",
            listen_ip: IpAddr::from([127, 0, 0, 1]),
            port: None,
            netns: None,
            load_module: true,
        }
    }
}

/// A running httpd; dropping it stops httpd and everything it forked.
pub struct Httpd {
    child: Child,
    pub port: u16,
    pub backend_port: u16,
    listen_ip: IpAddr,
    netns: Option<String>,
    root: PathBuf,
}

impl Httpd {
    /// Writes the site into `root` and starts httpd on fresh ports.
    pub fn start(root: &Path, config: &Config) -> Self {
        require_root();
        write_site(root);
        let mut last_error = String::new();
        // A port picked free may be taken by a parallel test before httpd
        // binds it: try again with new ones.
        for _ in 0..5 {
            let (port, backend_port) = (config.port.unwrap_or_else(free_port), free_port());
            let conf = root.join("conf/httpd.conf");
            write_file(&conf, &render(root, config, port, backend_port), 0o644);
            let _ = fs::remove_file(root.join("logs/error.log"));
            let mut command = match &config.netns {
                Some(ns) => {
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", ns, "apache2"]);
                    c
                }
                None => Command::new("apache2"),
            };
            let child = command
                .arg("-f")
                .arg(&conf)
                .arg("-DFOREGROUND")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                // Startup errors (a port taken, a bad directive) come here
                // before the error log is open.
                .stderr(startup_log(root))
                // Own process group: Drop can reach every child httpd forks.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("spawning apache2 (install apache2): {e}"));
            let mut httpd = Self {
                child,
                port,
                backend_port,
                listen_ip: config.listen_ip,
                netns: config.netns.clone(),
                root: root.to_path_buf(),
            };
            match httpd.wait_ready() {
                Ok(()) => return httpd,
                Err(e) => {
                    last_error = format!(
                        "{e}\nstderr:\n{}\nerror log:\n{}",
                        fs::read_to_string(root.join("logs/stderr.log")).unwrap_or_default(),
                        httpd.error_log()
                    );
                    drop(httpd);
                    if config.port.is_some() || !last_error.contains("Address already in use") {
                        break;
                    }
                }
            }
        }
        panic!("httpd did not start: {last_error}");
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("apache2 exited with {status}"));
            }
            let addr = self.local_addr();
            let answered = in_netns(self.netns.as_deref(), move || {
                std::net::TcpStream::connect(addr).is_ok()
                    && HttpConn::connect_to(addr)
                        .try_get("/ready.txt", &[])
                        .is_ok_and(|r| r.status == 200)
            });
            if answered {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("no answer on its port within 20 s".to_owned())
    }

    pub fn error_log(&self) -> String {
        fs::read_to_string(self.root.join("logs/error.log")).unwrap_or_default()
    }

    pub fn access_log(&self) -> String {
        fs::read_to_string(self.root.join("logs/access.log")).unwrap_or_default()
    }

    /// The access log once it has a line satisfying `wanted` (httpd writes
    /// the line after sending the response), or as it is after 10 s.
    pub fn access_log_with(&self, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.access_log();
            if log.lines().any(&wanted) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Error-log lines written by mod_tcpcrypt at error level.
    pub fn module_errors(&self) -> Vec<String> {
        self.error_log()
            .lines()
            .filter(|l| l.contains("[tcpcrypt:error]"))
            .map(str::to_owned)
            .collect()
    }

    /// Signs of a crashed child or a caught panic in the error log.
    pub fn crash_lines(&self) -> Vec<String> {
        self.error_log()
            .lines()
            .filter(|l| {
                l.contains("AH00052") || l.contains("exit signal") || l.contains("panicked")
            })
            .map(str::to_owned)
            .collect()
    }

    pub fn connect(&self) -> HttpConn {
        HttpConn::connect(self.port)
    }

    /// The server side of connections to the main port.
    pub fn local_addr(&self) -> SocketAddr {
        SocketAddr::new(self.listen_ip, self.port)
    }
}

impl Drop for Httpd {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling the process we spawned, then its group (which
        // holds only processes it forked, as it leads a group of its own).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above; ESRCH when everything is already gone is fine.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

const SHELL_PAGE: &str = r#"#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
for v in TCP_CRYPT_SESSID TCP_CRYPT_ROLE TCP_CRYPT_TEP TCP_CRYPT_AEAD TCP_CRYPT_RESUMED; do
  if val=$(printenv "$v"); then printf '%s=%s\n' "$v" "$val"; else printf '%s unset\n' "$v"; fi
done
"#;

const PYTHON_PAGE: &str = r#"#!/usr/bin/python3
import os
print("Content-Type: text/plain\r\n\r")
for v in ["TCP_CRYPT_SESSID", "TCP_CRYPT_ROLE", "TCP_CRYPT_TEP", "TCP_CRYPT_AEAD", "TCP_CRYPT_RESUMED"]:
    print(f"{v}={os.environ[v]}" if v in os.environ else f"{v} unset")
"#;

const RUBY_PAGE: &str = r##"#!/usr/bin/ruby
print "Content-Type: text/plain\r\n\r\n"
%w[TCP_CRYPT_SESSID TCP_CRYPT_ROLE TCP_CRYPT_TEP TCP_CRYPT_AEAD TCP_CRYPT_RESUMED].each do |v|
  puts(ENV.key?(v) ? "#{v}=#{ENV[v]}" : "#{v} unset")
end
"##;

const PHP_PAGE: &str = r#"<?php
header('Content-Type: text/plain');
foreach (['TCP_CRYPT_SESSID', 'TCP_CRYPT_ROLE', 'TCP_CRYPT_TEP', 'TCP_CRYPT_AEAD', 'TCP_CRYPT_RESUMED'] as $v) {
    echo isset($_SERVER[$v]) ? "$v={$_SERVER[$v]}\n" : "$v unset\n";
}
"#;

/// The proxy backend shows the header the front end forwarded and its own
/// view of its (plain) incoming connection.
const ECHO_PAGE: &str = r#"#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
printf 'FORWARDED=%s\n' "$HTTP_X_TCPCRYPT_SESSID"
if val=$(printenv TCP_CRYPT_SESSID); then printf 'TCP_CRYPT_SESSID=%s\n' "$val"; else printf 'TCP_CRYPT_SESSID unset\n'; fi
"#;

/// Pages each print `NAME=value` or `NAME unset` for the five variables.
fn write_site(root: &Path) {
    for dir in ["conf", "logs", "run", "htdocs"] {
        let d = root.join(dir);
        fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        set_mode(&d, 0o755);
    }
    let docs = root.join("htdocs");
    write_file(&docs.join("static.txt"), "static\n", 0o644);
    write_file(&docs.join("ready.txt"), "ready\n", 0o644);
    write_file(&docs.join("expr/page.txt"), "expr\n", 0o644);
    for page in [
        "env.sh",
        "off/env.sh",
        "htoff/env.sh",
        "private/env.sh",
        "either/env.sh",
    ] {
        write_file(&docs.join(page), SHELL_PAGE, 0o755);
    }
    write_file(&docs.join("htoff/.htaccess"), "Tcpcrypt Off\n", 0o644);
    write_file(&docs.join("env.py"), PYTHON_PAGE, 0o755);
    write_file(&docs.join("env.rb"), RUBY_PAGE, 0o755);
    write_file(&docs.join("env.php"), PHP_PAGE, 0o644);
    write_file(&docs.join("echo/headers.sh"), ECHO_PAGE, 0o755);
}

fn render(root: &Path, config: &Config, port: u16, backend_port: u16) -> String {
    let r = root.display();
    let mpm = config.mpm.name();
    let so = module_path();
    let mut c = String::new();
    let _ = writeln!(c, "ServerRoot {r}");
    let _ = writeln!(c, "LoadModule mpm_{mpm}_module {MODULES}/mod_mpm_{mpm}.so");
    for m in [
        "authz_core",
        "mime",
        "headers",
        "rewrite",
        "http2",
        "setenvif",
    ] {
        let _ = writeln!(c, "LoadModule {m}_module {MODULES}/mod_{m}.so");
    }
    match config.mpm {
        Mpm::Event => {
            let _ = writeln!(c, "LoadModule cgid_module {MODULES}/mod_cgid.so");
            let _ = writeln!(c, "ScriptSock {r}/run/cgid.sock");
            let _ = writeln!(
                c,
                "StartServers 1\nThreadsPerChild 16\nMinSpareThreads 4\nMaxSpareThreads 32\nMaxRequestWorkers 64\nServerLimit 4"
            );
        }
        Mpm::Prefork => {
            let _ = writeln!(c, "LoadModule cgi_module {MODULES}/mod_cgi.so");
            let _ = writeln!(c, "LoadModule php_module {MODULES}/libphp8.2.so");
            let _ = writeln!(
                c,
                "StartServers 2\nMinSpareServers 1\nMaxSpareServers 8\nMaxRequestWorkers 32"
            );
            let _ = writeln!(
                c,
                "<FilesMatch \"\\.php$\">\n  SetHandler application/x-httpd-php\n</FilesMatch>"
            );
        }
    }
    if config.load_module {
        let _ = writeln!(c, "LoadModule tcpcrypt_module {}", so.display());
    }
    let _ = writeln!(
        c,
        "User www-data
Group www-data
Listen {listen}
Listen 127.0.0.1:{backend_port}
ServerName localhost
PidFile {r}/run/httpd.pid
DefaultRuntimeDir {r}/run
ErrorLog {r}/logs/error.log
LogLevel {level}
LogFormat \"%{{TCP_CRYPT_SESSID}}e %a %U %>s\" tcpcrypt
CustomLog {r}/logs/access.log tcpcrypt
TypesConfig /etc/mime.types
DocumentRoot {r}/htdocs
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 30
Timeout 30
Protocols h2c http/1.1
<Directory {r}/htdocs>
  Options +ExecCGI
  AddHandler cgi-script .sh .py .rb
  AllowOverride Options AuthConfig
  Require all granted
</Directory>
<IfModule tcpcrypt_module>
<Location /ready.txt>
  # The readiness probe must not count as a lookup.
  Tcpcrypt Off
</Location>
<Location /off/>
  Tcpcrypt Off
</Location>
<Location /private/>
  Require tcpcrypt
</Location>
<Location /either/>
  <RequireAny>
    Require tcpcrypt
    Require expr \"%{{QUERY_STRING}} == 'letmein'\"
  </RequireAny>
</Location>
<Location /expr/>
  Header always set X-Sessid-Expr \"expr=%{{TCP_CRYPT_SESSID}}\"
  <If \"-n %{{TCP_CRYPT_SESSID}}\">
    Header always set X-If-Tcpcrypt yes
  </If>
</Location>
</IfModule>
<VirtualHost 127.0.0.1:{backend_port}>
  DocumentRoot {r}/htdocs
</VirtualHost>",
        level = config.log_level,
        listen = SocketAddr::new(config.listen_ip, port),
    );
    let _ = writeln!(
        c,
        "LoadModule proxy_module {MODULES}/mod_proxy.so
LoadModule proxy_http_module {MODULES}/mod_proxy_http.so
<Location /proxied/>
  RequestHeader set X-Tcpcrypt-Sessid \"%{{TCP_CRYPT_SESSID}}e\"
  ProxyPass http://127.0.0.1:{backend_port}/echo/
</Location>"
    );
    if config.load_module {
        if let Some(sock) = &config.control_socket {
            let _ = writeln!(c, "TcpcryptControlSocket {}", sock.display());
        }
        if let Some(ms) = config.lookup_timeout_ms {
            let _ = writeln!(c, "TcpcryptLookupTimeout {ms}");
        }
    }
    c.push_str(&config.extra);
    c.push('\n');
    c
}
