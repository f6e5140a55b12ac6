//! The command line, as clap types; the help texts are the documentation.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit status:
  0  success (for lookup and fetch: the connection is encrypted with tcpcrypt)
  1  usage error
  2  tcpcryptd unreachable: not running, permission denied, or no answer in time
  3  the connection is not encrypted (plain, handshake pending, or unknown to tcpcryptd)
  4  other failure: malformed daemon answer, HTTP or network error, output error;
     for decrypt: unreadable input, or a connection or frame not decrypted
  5  fetch --user/--key: the server refused the login or did not prove itself

Control socket: --control, else $TCPCRYPT_CONTROL, else /run/tcpcrypt/control.sock.";

/// Inspect tcpcrypt connections through tcpcryptd's control socket.
#[derive(Debug, Parser)]
#[command(name = "tcpcrypt", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Control socket of tcpcryptd [default: $TCPCRYPT_CONTROL or
    /// /run/tcpcrypt/control.sock]
    #[arg(long, global = true, value_name = "PATH")]
    pub control: Option<PathBuf>,

    /// Time limit for each question to tcpcryptd, in milliseconds
    #[arg(long, global = true, value_name = "MS", default_value_t = 2000)]
    pub timeout: u64,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the connections tcpcryptd tracks, one row each (no truncation)
    ///
    /// Columns: local and remote address, state, phase, this host's role,
    /// key exchange (TEP), AEAD, whether the session was resumed, the first
    /// 8 bytes of the session ID, and application bytes sent and received.
    /// Plain connections are hidden unless --all is given.
    #[command(after_help = EXIT_CODES)]
    Status(StatusArgs),

    /// Show one connection in full, named by its two addresses
    ///
    /// Addresses are as seen on this host: LOCAL is the address of this
    /// host's socket, REMOTE the peer's. Write them as ADDR:PORT or
    /// [IPV6]:PORT.
    #[command(after_help = EXIT_CODES)]
    Lookup(LookupArgs),

    /// GET an http:// URL: body on stdout, this connection's session on stderr
    ///
    /// Makes one HTTP/1.1 GET over a plain TCP connection, prints the
    /// response body on stdout and, on stderr, the tcpcrypt session ID of
    /// that connection as tcpcryptd reports it (or that it was plain).
    /// Compare the ID printed here with what the server's application sees
    /// (e.g. the TCP_CRYPT_SESSID variable a web server sets): equal IDs on
    /// both ends mean no one in between holds the keys. Only http:// URLs.
    #[command(after_help = EXIT_CODES)]
    Fetch(FetchArgs),

    /// Make tcpcryptd forget its cached resumption secrets (root only)
    ///
    /// The next connection to each peer then runs a fresh key exchange
    /// instead of resuming an earlier session. Prints how many secrets were
    /// forgotten. Only root may change daemon state; others get exit 4 with
    /// "permission denied".
    #[command(name = "flush-resumption", after_help = EXIT_CODES)]
    FlushResumption,

    /// Decrypt the tcpcrypt connections of a capture with tcpcryptd's key log
    ///
    /// Reads INPUT (pcap or pcapng) and the key log a tcpcryptd wrote with
    /// --keylog, and writes OUTPUT (pcap) in which every connection it has
    /// keys for is ordinary TCP carrying the application's bytes (ENO options,
    /// Init messages, frame headers and tags removed, sequence numbers mapped,
    /// checksums valid), so `tcpdump -A` or Wireshark's "Follow TCP stream"
    /// show them. Every frame is authenticated; a failure is reported with its
    /// stream offset on stderr. Connections it cannot decrypt are copied as
    /// captured, with a note on stderr, and the exit status is then 4.
    /// --summary prints per connection its addresses, roles, TEP, AEAD,
    /// session ID, fresh or resumed, and per direction bytes, frames, rekeys
    /// and authentication failures. Never share the key log with the capture.
    #[command(after_help = EXIT_CODES)]
    Decrypt(DecryptArgs),

    /// Set or clear per-socket controls: resumption, caching, the `a` bit
    ///
    /// Resumption and caching are the controls of RFC 8548 section 3.5, the
    /// application-aware bit `a` that of RFC 8547 section 4.2.
    ///
    /// tcpcryptd sees packets, not sockets, so a policy names the local
    /// ADDR:PORT a socket is bound to (0.0.0.0:PORT or [::]:PORT for any
    /// local address). Register it before the first SYN: for a client
    /// socket, after bind and before connect (it applies to that one
    /// connection and lapses after 120 s unused); with --listen, for every
    /// connection peers open to a listening port, until cleared. Members
    /// of the control socket's group may do this.
    #[command(subcommand)]
    Policy(PolicyCommand),

    /// Create or update a user's password verifier for AuthType tcpcrypt
    ///
    /// Writes FILE (the file mod_tcpcrypt's TcpcryptAuthUserFile names) with
    /// a SCRAM-SHA-256 verifier for USER: a salted, iterated derivation of
    /// the password, never the password itself. Other users' lines are kept.
    /// The password is read from --password-file, --password-env, or a
    /// prompt (asked twice).
    #[command(after_help = EXIT_CODES)]
    Passwd(crate::auth::PasswdArgs),

    /// Make an Ed25519 key for logging in with `fetch --key`
    ///
    /// Writes the private key to FILE (mode 0600, refuses to overwrite
    /// without --force) and prints the line to add to the server's
    /// TcpcryptAuthKeyFile, which also goes to FILE.pub.
    #[command(after_help = EXIT_CODES)]
    Keygen(crate::auth::KeygenArgs),
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Register controls for the socket bound to LOCAL
    ///
    /// Controls not given are off; this replaces an earlier registration
    /// for the same LOCAL.
    #[command(after_help = EXIT_CODES)]
    Set(PolicySetArgs),

    /// Remove the registration for exactly LOCAL
    #[command(after_help = EXIT_CODES)]
    Clear(PolicyTarget),
}

#[derive(Debug, Args)]
pub struct PolicyTarget {
    /// The socket's local endpoint, e.g. 10.0.0.1:5555 or [::]:443
    pub local: SocketAddr,

    /// For a listening socket: every connection peers open to LOCAL
    #[arg(long)]
    pub listen: bool,
}

#[derive(Debug, Args)]
pub struct PolicySetArgs {
    #[command(flatten)]
    pub target: PolicyTarget,

    /// Neither offer nor accept resumption: run a fresh key exchange
    #[arg(long)]
    pub no_resumption: bool,

    /// Cache no secret from the session, so no later connection resumes it
    #[arg(long)]
    pub no_cache: bool,

    /// Send the ENO application-aware bit (a = 1), which the peer's
    /// application sees as peer_app_aware. --app-aware=mandatory also
    /// leaves a peer that does not send it in plain TCP (root only: it
    /// turns encryption off). A client socket with the bit offers no
    /// resumption: its SYN has no room for both.
    #[arg(
        long,
        value_enum,
        value_name = "MODE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "on"
    )]
    pub app_aware: Option<AppAwareArg>,
}

/// `--app-aware` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AppAwareArg {
    Off,
    On,
    Mandatory,
}

impl From<AppAwareArg> for tcpcrypt::AppAware {
    fn from(a: AppAwareArg) -> tcpcrypt::AppAware {
        match a {
            AppAwareArg::Off => tcpcrypt::AppAware::Off,
            AppAwareArg::On => tcpcrypt::AppAware::On,
            AppAwareArg::Mandatory => tcpcrypt::AppAware::Mandatory,
        }
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON ({"connections":[...]}) instead of a table
    #[arg(long)]
    pub json: bool,

    /// Include plain (unencrypted) connections
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct LookupArgs {
    /// This host's end of the connection, e.g. 10.0.0.2:80 or [fd00::2]:443
    pub local: SocketAddr,

    /// The peer's end of the connection
    pub remote: SocketAddr,

    /// If the handshake is still running, wait this many milliseconds for
    /// its outcome (at most 10000)
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub wait: u64,

    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The URL to GET (http:// only)
    pub url: String,

    /// How long to wait for this connection's handshake outcome, in
    /// milliseconds
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub wait: u64,

    /// Network time limit for connecting and for each read, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 30000)]
    pub net_timeout: u64,

    /// Ask tcpcryptd before sending the request and send this connection's
    /// session ID (upper-case hex) to the server in the request header NAME,
    /// so a page can compare it with its own TCP_CRYPT_SESSID. Nothing is
    /// sent when the connection is not encrypted.
    #[arg(long, value_name = "NAME", value_parser = parse_header_name)]
    pub sessid_header: Option<String>,

    #[command(flatten)]
    pub login: crate::auth::LoginArgs,
}

/// An HTTP header name: a non-empty token (RFC 9110 tchar characters).
fn parse_header_name(name: &str) -> Result<String, String> {
    let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !name.is_empty() && name.chars().all(tchar) {
        Ok(name.to_string())
    } else {
        Err(format!(
            "{name:?} is not an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)"
        ))
    }
}

#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// The key log tcpcryptd wrote (--keylog)
    #[arg(long, value_name = "FILE")]
    pub keylog: PathBuf,

    /// Print what was found per connection on standard output
    #[arg(long)]
    pub summary: bool,

    /// Capture to read (pcap or pcapng)
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,

    /// Capture to write (pcap); may be left out with --summary
    #[arg(value_name = "OUTPUT")]
    pub output: Option<PathBuf>,
}
