//! Command-line flags and the optional config file, validated into one
//! [`Config`].
//!
//! Every option can be given as a flag or as a `key = value` line in the
//! file named by `--config` (keys are the long flag names without `--`;
//! `#` starts a comment). Flags win over the file. Both go through the same
//! validators, so an error always names the option and the bad value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Parser;
use tcpcrypt_engine::EngineConfig;
use tcpcrypt_proto::{Aead, Tep};

pub const DEFAULT_CONTROL_SOCKET: &str = "/run/tcpcrypt/control.sock";
pub const DEFAULT_CONTROL_GROUP: &str = "tcpcrypt";
pub const DEFAULT_QUEUE: u16 = 7463;
pub const DEFAULT_MARK: u32 = 0x7463_7270;
/// Seconds a control client has for each request: local clients ask one
/// short question and get the answer in milliseconds, so ten seconds is
/// generous for them and still frees a slot held by a stuck one quickly.
pub const DEFAULT_CONTROL_CLIENT_TIMEOUT: u64 = 10;

/// tcpcryptd: transparent tcpcrypt (RFC 8547/8548) for the TCP connections
/// of this host.
///
/// The daemon installs its own iptables/ip6tables rules that queue TCP
/// packets to it through NFQUEUE, encrypts connections whose peer also
/// speaks tcpcrypt and leaves the others as plain TCP. It removes its rules
/// on SIGINT/SIGTERM, and on start removes rules a crashed instance left.
/// Applications ask it for session IDs over the control socket.
///
/// Every option may also be set in the config file as `name = value` (the
/// long option name without dashes); options on the command line win.
#[derive(Parser, Debug, Default)]
#[command(name = "tcpcryptd", version, about, long_about)]
pub struct Args {
    /// Read options from FILE (`name = value` lines, `#` comments).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Key-exchange protocols to offer, most preferred first, comma-separated:
    /// x25519, x448, p256, p521. [default: x25519,p256]
    #[arg(long, value_name = "LIST")]
    pub tep: Option<String>,

    /// AEAD ciphers to offer, most preferred first, comma-separated:
    /// aes128gcm, aes256gcm, chacha20poly1305.
    /// [default: aes128gcm,aes256gcm,chacha20poly1305]
    #[arg(long, value_name = "LIST")]
    pub aead: Option<String>,

    /// TCP ports whose connections are handled, as a comma-separated list of
    /// ports and ranges (`80,443,8000-8100`), matched against either end of
    /// the connection, or `all`. [default: all]
    #[arg(long, value_name = "LIST")]
    pub ports: Option<String>,

    /// Network interfaces whose TCP traffic is handled, comma-separated, or
    /// `all`. Loopback is never handled. [default: all]
    #[arg(long, value_name = "LIST")]
    pub interfaces: Option<String>,

    /// NFQUEUE number the rules send packets to (0-65535), for when another
    /// program already uses the default one. Queues and rules are per network
    /// namespace; run one daemon per namespace (a second one would replace
    /// the first one's rules). [default: 7463]
    #[arg(long, value_name = "N")]
    pub queue: Option<String>,

    /// Packet threads, each with its own queue (`queue` up to
    /// `queue + threads - 1`) and its own share of the connections (the
    /// limits below hold for all threads together). The kernel spreads packets over the queues by
    /// address pair, so all connections between two hosts share one thread:
    /// more threads help a host with many peers, not one busy pair (1-64,
    /// or `auto`: the number of CPUs, at most 4). [default: auto]
    #[arg(long, value_name = "N|auto")]
    pub threads: Option<String>,

    /// Drop handled packets while no daemon is bound to the queue, instead of
    /// letting them pass as plain TCP (the default, `--queue-bypass`).
    /// Value-less on the command line; `fail-closed = true` in the file.
    #[arg(long)]
    pub fail_closed: bool,

    /// Firewall mark put on packets the daemon injects, so its rules skip
    /// them; decimal or 0x-hex, non-zero, without the bits 0x3000000 (the
    /// marks of the daemon's verdicts). [default: 0x74637270]
    #[arg(long, value_name = "MARK")]
    pub mark: Option<String>,

    /// iptables backend: `auto` (iptables, else iptables-legacy), `nft`
    /// (iptables/ip6tables) or `legacy` (iptables-legacy/ip6tables-legacy).
    /// [default: auto]
    #[arg(long, value_name = "BACKEND")]
    pub iptables: Option<String>,

    /// Path of the control socket. Its directory also holds
    /// `encrypted-connections` (mode 0600), the list of live tcpcrypt
    /// connections that a daemon started after a crash aborts.
    /// [default: /run/tcpcrypt/control.sock]
    #[arg(long, value_name = "PATH")]
    pub control_socket: Option<String>,

    /// Group owning the control socket (mode 0660): its members may read
    /// session data; only root may change daemon state. If the default group
    /// does not exist, the socket gets group root. [default: tcpcrypt]
    #[arg(long, value_name = "GROUP")]
    pub control_group: Option<String>,

    /// Seconds a control-socket client has to send each complete request
    /// (from connecting or from its previous answer) and to read each
    /// answer; then it is disconnected (1-3600). [default: 10]
    #[arg(long, value_name = "SECONDS")]
    pub control_client_timeout: Option<String>,

    /// Log level: error, warn, info (one line per connection outcome),
    /// debug or trace. [default: info]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Seconds a closed connection stays in the table, so late
    /// retransmissions are still mapped, before it is forgotten. [default: 30]
    #[arg(long, value_name = "SECONDS")]
    pub cleanup_delay: Option<String>,

    /// Append session secrets to FILE (mode 0600) for decrypting captures,
    /// like SSLKEYLOGFILE. Anyone who can read FILE can decrypt the
    /// connections. Off by default.
    #[arg(long, value_name = "FILE")]
    pub keylog: Option<String>,

    /// Start a rekey (RFC 8548 section 3.8) once this many bytes went out
    /// under one key: a size with an optional K, M or G suffix (powers of
    /// 1024), at least 64K, or `off`. The peer's rekeys are always
    /// followed. [default: off]
    #[arg(long, value_name = "BYTES")]
    pub rekey_after: Option<String>,

    /// Take large segments (GSO/GRO) from the queue whole and encrypt them
    /// in one pass, rather than have the kernel cut them into packets
    /// before queueing: `on` or `off`. Off costs most of the throughput;
    /// it is there to rule this path out when chasing a problem.
    /// [default: on]
    #[arg(long, value_name = "on|off")]
    pub large_segments: Option<String>,

    // The limits below print their defaults from `EngineConfig::default()`
    // rather than from the text, so the help cannot drift from the engine.
    #[arg(long, value_name = "SECONDS", help = with_default(
        "Seconds a connection opened by a peer's SYN may take to complete its \
         three-way handshake before it is forgotten (1-3600).",
        EngineConfig::default().half_open_timeout.as_secs(),
    ))]
    pub half_open_timeout: Option<String>,

    #[arg(long, value_name = "N", help = with_default(
        "Most connections opened by a peer's SYN and not yet through their \
         three-way handshake; past it new SYNs pass untouched, as plain TCP.",
        EngineConfig::default().max_half_open,
    ))]
    pub max_half_open: Option<String>,

    #[arg(long, value_name = "N", help = with_default(
        "Most connections tracked at once; past it new connections are plain TCP.",
        EngineConfig::default().max_connections,
    ))]
    pub max_connections: Option<String>,

    #[arg(long, value_name = "N", help = with_default(
        "Most out-of-order pieces of wire data kept per connection; later \
         pieces are dropped and the peer retransmits them.",
        EngineConfig::default().max_out_of_order_pieces,
    ))]
    pub max_out_of_order_pieces: Option<String>,

    #[arg(long, value_name = "BYTES", help = with_default(
        "Most out-of-order wire bytes kept across all connections; a number \
         with an optional K, M or G suffix (powers of 1024).",
        EngineConfig::default().max_out_of_order_bytes_total,
    ))]
    pub max_out_of_order_bytes: Option<String>,
}

fn with_default(text: &str, default: impl std::fmt::Display) -> String {
    format!("{text} [default: {default}]")
}

/// The engine's resource limits, as configured (defaults from
/// [`EngineConfig::default`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub half_open_timeout: std::time::Duration,
    pub max_half_open: usize,
    pub max_connections: usize,
    pub max_out_of_order_pieces: usize,
    pub max_out_of_order_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        let e = EngineConfig::default();
        Limits {
            half_open_timeout: e.half_open_timeout,
            max_half_open: e.max_half_open,
            max_connections: e.max_connections,
            max_out_of_order_pieces: e.max_out_of_order_pieces,
            max_out_of_order_bytes: e.max_out_of_order_bytes_total,
        }
    }
}

/// The iptables command family to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IptablesBackend {
    Auto,
    Nft,
    Legacy,
}

/// A set of TCP ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSet {
    All,
    /// Inclusive ranges, each with `lo <= hi`, non-empty list.
    Ranges(Vec<(u16, u16)>),
}

/// A set of interfaces (never loopback; the rules exclude it anyway).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InterfaceSet {
    All,
    Named(Vec<String>),
}

/// Where the control socket's group comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlGroup {
    /// The default group; fall back to root's group if it does not exist.
    Default,
    /// A group the operator named; it must exist.
    Named(String),
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub teps: Vec<Tep>,
    pub aeads: Vec<Aead>,
    pub ports: PortSet,
    pub interfaces: InterfaceSet,
    pub queue: u16,
    /// Packet threads, one queue each from `queue` on.
    pub threads: u16,
    pub fail_closed: bool,
    pub mark: u32,
    pub iptables: IptablesBackend,
    pub control_socket: PathBuf,
    pub control_group: ControlGroup,
    pub control_client_timeout: std::time::Duration,
    pub log_level: log::LevelFilter,
    pub cleanup_delay: std::time::Duration,
    pub keylog: Option<PathBuf>,
    /// Rekey after this many bytes under one key; `None`: only follow the
    /// peer's rekeys.
    pub rekey_after: Option<u64>,
    /// Ask the queue for GSO/GRO packets whole.
    pub large_segments: bool,
    pub limits: Limits,
}

/// A configuration error naming the option, the bad value and where it came
/// from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("option {option}: bad value {value:?} ({source_desc}): {expected}")]
    BadValue {
        option: String,
        value: String,
        source_desc: String,
        expected: String,
    },
    #[error("{file}:{line}: unknown option {key:?}")]
    UnknownKey {
        file: String,
        line: usize,
        key: String,
    },
    #[error("{file}:{line}: expected `name = value`, got {text:?}")]
    Syntax {
        file: String,
        line: usize,
        text: String,
    },
    #[error("reading config file {file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
}

const FILE_KEYS: &[&str] = &[
    "tep",
    "aead",
    "ports",
    "interfaces",
    "queue",
    "threads",
    "fail-closed",
    "mark",
    "iptables",
    "control-socket",
    "control-group",
    "control-client-timeout",
    "log-level",
    "cleanup-delay",
    "keylog",
    "rekey-after",
    "large-segments",
    "half-open-timeout",
    "max-half-open",
    "max-connections",
    "max-out-of-order-pieces",
    "max-out-of-order-bytes",
];

/// A raw value and where it came from, for error messages.
struct Raw {
    value: String,
    origin: String,
}

impl Config {
    /// Validates parsed flags, reading the config file they name.
    pub fn from_args(args: &Args) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_config_file(path)?,
            None => BTreeMap::new(),
        };
        let pick = |key: &str, flag: &Option<String>| -> Option<Raw> {
            match flag {
                Some(v) => Some(Raw {
                    value: v.clone(),
                    origin: "command line".into(),
                }),
                None => file.get(key).map(|(v, origin)| Raw {
                    value: v.clone(),
                    origin: origin.clone(),
                }),
            }
        };

        let teps = match pick("tep", &args.tep) {
            Some(r) => parse_list(&r, "tep", "x25519, x448, p256 or p521", parse_tep)?,
            None => vec![Tep::X25519, Tep::P256],
        };
        let aeads = match pick("aead", &args.aead) {
            Some(r) => parse_list(
                &r,
                "aead",
                "aes128gcm, aes256gcm or chacha20poly1305",
                parse_aead,
            )?,
            None => vec![Aead::Aes128Gcm, Aead::Aes256Gcm, Aead::ChaCha20Poly1305],
        };
        let ports = match pick("ports", &args.ports) {
            Some(r) => parse_ports(&r)?,
            None => PortSet::All,
        };
        let interfaces = match pick("interfaces", &args.interfaces) {
            Some(r) => parse_interfaces(&r)?,
            None => InterfaceSet::All,
        };
        let queue = match pick("queue", &args.queue) {
            Some(r) => r
                .value
                .trim()
                .parse::<u16>()
                .map_err(|_| bad(&r, "queue", "a queue number from 0 to 65535"))?,
            None => DEFAULT_QUEUE,
        };
        let threads = match pick("threads", &args.threads) {
            Some(r) if r.value.trim() == "auto" => default_threads(),
            Some(r) => r
                .value
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|n| (1..=MAX_THREADS).contains(n))
                .ok_or_else(|| bad(&r, "threads", "auto, or a number of threads from 1 to 64"))?,
            None => default_threads(),
        };
        if u32::from(queue) + u32::from(threads) - 1 > u32::from(u16::MAX) {
            let r = pick("threads", &args.threads)
                .or_else(|| pick("queue", &args.queue))
                .unwrap_or_else(|| Raw {
                    value: threads.to_string(),
                    origin: "the default".into(),
                });
            return Err(bad(
                &r,
                "threads",
                &format!(
                    "at most {} threads from queue {queue}, one queue each (the last \
                     queue is 65535)",
                    65536 - u32::from(queue)
                ),
            ));
        }
        let fail_closed = if args.fail_closed {
            true
        } else {
            match file.get("fail-closed") {
                Some((v, origin)) => {
                    let r = Raw {
                        value: v.clone(),
                        origin: origin.clone(),
                    };
                    parse_bool(&r, "fail-closed")?
                }
                None => false,
            }
        };
        let mark = match pick("mark", &args.mark) {
            Some(r) => parse_mark(&r)?,
            None => DEFAULT_MARK,
        };
        let iptables = match pick("iptables", &args.iptables) {
            Some(r) => match r.value.trim() {
                "auto" => IptablesBackend::Auto,
                "nft" => IptablesBackend::Nft,
                "legacy" => IptablesBackend::Legacy,
                _ => return Err(bad(&r, "iptables", "auto, nft or legacy")),
            },
            None => IptablesBackend::Auto,
        };
        let control_socket = match pick("control-socket", &args.control_socket) {
            Some(r) => {
                let p = r.value.trim();
                if p.is_empty() || !p.starts_with('/') || p.len() > 100 {
                    return Err(bad(
                        &r,
                        "control-socket",
                        "an absolute path of at most 100 bytes",
                    ));
                }
                PathBuf::from(p)
            }
            None => PathBuf::from(DEFAULT_CONTROL_SOCKET),
        };
        let control_group = match pick("control-group", &args.control_group) {
            Some(r) => {
                let g = r.value.trim();
                if g.is_empty() || g.contains(|c: char| c.is_whitespace() || c == ':') {
                    return Err(bad(&r, "control-group", "a group name"));
                }
                ControlGroup::Named(g.to_string())
            }
            None => ControlGroup::Default,
        };
        let control_client_timeout =
            match pick("control-client-timeout", &args.control_client_timeout) {
                Some(r) => r
                    .value
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|s| (1..=3600).contains(s))
                    .map(std::time::Duration::from_secs)
                    .ok_or_else(|| {
                        bad(&r, "control-client-timeout", "whole seconds from 1 to 3600")
                    })?,
                None => std::time::Duration::from_secs(DEFAULT_CONTROL_CLIENT_TIMEOUT),
            };
        let log_level = match pick("log-level", &args.log_level) {
            Some(r) => r
                .value
                .trim()
                .parse::<log::LevelFilter>()
                .map_err(|_| bad(&r, "log-level", "error, warn, info, debug or trace"))?,
            None => log::LevelFilter::Info,
        };
        let cleanup_delay = match pick("cleanup-delay", &args.cleanup_delay) {
            Some(r) => r
                .value
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|s| *s <= 3600)
                .map(std::time::Duration::from_secs)
                .ok_or_else(|| bad(&r, "cleanup-delay", "whole seconds from 0 to 3600"))?,
            None => std::time::Duration::from_secs(30),
        };
        let keylog = match pick("keylog", &args.keylog) {
            Some(r) => {
                let p = r.value.trim();
                if p.is_empty() {
                    return Err(bad(&r, "keylog", "a file path"));
                }
                Some(PathBuf::from(p))
            }
            None => None,
        };
        let rekey_after = match pick("rekey-after", &args.rekey_after) {
            Some(r) if r.value.trim().eq_ignore_ascii_case("off") => None,
            Some(r) => Some(
                parse_size(&r.value)
                    .filter(|n| (MIN_REKEY_AFTER..=MAX_OUT_OF_ORDER_BYTES_LIMIT).contains(n))
                    .ok_or_else(|| {
                        bad(
                            &r,
                            "rekey-after",
                            "off, or a size from 64K to 64G: a whole number, optionally \
                             followed by K, M or G",
                        )
                    })? as u64,
            ),
            None => None,
        };
        let large_segments = match pick("large-segments", &args.large_segments) {
            Some(r) => parse_bool(&r, "large-segments")?,
            None => true,
        };
        let limits = parse_limits(&pick, args)?;
        Ok(Config {
            teps,
            aeads,
            ports,
            interfaces,
            queue,
            threads,
            fail_closed,
            mark,
            iptables,
            control_socket,
            control_group,
            control_client_timeout,
            log_level,
            cleanup_delay,
            keylog,
            rekey_after,
            large_segments,
            limits,
        })
    }
}

/// Far more packet threads than any host has cores for.
const MAX_THREADS: u16 = 64;

/// One packet thread per CPU, up to four: past that the kernel's queue
/// work, not the engine, is what the cores spend their time on.
fn default_threads() -> u16 {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().min(4))
        .try_into()
        .unwrap_or(1)
}

/// Below this a rekey would follow nearly every frame: each costs the peer a
/// key derivation, for no gain.
const MIN_REKEY_AFTER: usize = 64 << 10;

/// Upper bounds of the counts: far above any sane setting, low enough that
/// a typo (an extra digit or two) is caught instead of letting the tables
/// grow until the host runs out of memory.
const MAX_CONNECTIONS_LIMIT: usize = 16 << 20;
const MAX_PIECES_LIMIT: usize = 1 << 20;
const MAX_OUT_OF_ORDER_BYTES_LIMIT: usize = 64 << 30;

fn parse_limits(
    pick: &dyn Fn(&str, &Option<String>) -> Option<Raw>,
    args: &Args,
) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    let half_open_timeout = match pick("half-open-timeout", &args.half_open_timeout) {
        Some(r) => r
            .value
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|s| (1..=3600).contains(s))
            .map(std::time::Duration::from_secs)
            .ok_or_else(|| bad(&r, "half-open-timeout", "whole seconds from 1 to 3600"))?,
        None => d.half_open_timeout,
    };
    let count = |option: &str, flag: &Option<String>, max: usize, default: usize| match pick(
        option, flag,
    ) {
        Some(r) => r
            .value
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| bad(&r, option, &format!("a whole number from 1 to {max}"))),
        None => Ok(default),
    };
    let max_connections = count(
        "max-connections",
        &args.max_connections,
        MAX_CONNECTIONS_LIMIT,
        d.max_connections,
    )?;
    let max_half_open = count(
        "max-half-open",
        &args.max_half_open,
        MAX_CONNECTIONS_LIMIT,
        d.max_half_open,
    )?;
    let max_out_of_order_pieces = count(
        "max-out-of-order-pieces",
        &args.max_out_of_order_pieces,
        MAX_PIECES_LIMIT,
        d.max_out_of_order_pieces,
    )?;
    let max_out_of_order_bytes = match pick("max-out-of-order-bytes", &args.max_out_of_order_bytes)
    {
        Some(r) => parse_size(&r.value)
            .filter(|n| (1..=MAX_OUT_OF_ORDER_BYTES_LIMIT).contains(n))
            .ok_or_else(|| {
                bad(
                    &r,
                    "max-out-of-order-bytes",
                    "a size from 1 byte to 64G: a whole number, optionally followed by K, M or G",
                )
            })?,
        None => d.max_out_of_order_bytes,
    };
    Ok(Limits {
        half_open_timeout,
        max_half_open,
        max_connections,
        max_out_of_order_pieces,
        max_out_of_order_bytes,
    })
}

/// `1234`, `64K`, `64M`, `1G` (powers of 1024; case-insensitive).
fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, shift) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 10),
        (i, 'm' | 'M') => (&s[..i], 20),
        (i, 'g' | 'G') => (&s[..i], 30),
        _ => (s, 0),
    };
    let n = digits.trim().parse::<usize>().ok()?;
    n.checked_mul(1usize << shift)
}

fn bad(raw: &Raw, option: &str, expected: &str) -> ConfigError {
    ConfigError::BadValue {
        option: option.to_string(),
        value: raw.value.clone(),
        source_desc: raw.origin.clone(),
        expected: format!("expected {expected}"),
    }
}

fn read_config_file(path: &Path) -> Result<BTreeMap<String, (String, String)>, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: name.clone(),
        source,
    })?;
    parse_config_text(&text, &name)
}

/// Parses `key = value` lines into key → (value, "file:line").
fn parse_config_text(
    text: &str,
    name: &str,
) -> Result<BTreeMap<String, (String, String)>, ConfigError> {
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let content = line.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let Some((key, value)) = content.split_once('=') else {
            return Err(ConfigError::Syntax {
                file: name.to_string(),
                line: line_no,
                text: line.to_string(),
            });
        };
        let key = key.trim().replace('_', "-");
        if !FILE_KEYS.contains(&key.as_str()) {
            return Err(ConfigError::UnknownKey {
                file: name.to_string(),
                line: line_no,
                key,
            });
        }
        let value = value.trim().trim_matches('"').to_string();
        out.insert(key, (value, format!("{name}:{line_no}")));
    }
    Ok(out)
}

fn normalise(s: &str) -> String {
    s.trim()
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

fn parse_tep(s: &str) -> Option<Tep> {
    match normalise(s).as_str() {
        "x25519" | "curve25519" => Some(Tep::X25519),
        "x448" | "curve448" => Some(Tep::X448),
        "p256" => Some(Tep::P256),
        "p521" => Some(Tep::P521),
        _ => Tep::from_name(s.trim()),
    }
}

fn parse_aead(s: &str) -> Option<Aead> {
    match normalise(s).as_str() {
        "aes128gcm" => Some(Aead::Aes128Gcm),
        "aes256gcm" => Some(Aead::Aes256Gcm),
        "chacha20poly1305" => Some(Aead::ChaCha20Poly1305),
        _ => Aead::from_name(s.trim()),
    }
}

fn parse_list<T: PartialEq>(
    raw: &Raw,
    option: &str,
    expected: &str,
    item: fn(&str) -> Option<T>,
) -> Result<Vec<T>, ConfigError> {
    let mut out = Vec::new();
    for part in raw.value.split(',') {
        let Some(v) = item(part) else {
            return Err(bad(
                raw,
                option,
                &format!(
                    "a comma-separated list of {expected}; {:?} is none of them",
                    part.trim()
                ),
            ));
        };
        if out.contains(&v) {
            return Err(bad(
                raw,
                option,
                &format!("no repeats; {:?} appears twice", part.trim()),
            ));
        }
        out.push(v);
    }
    Ok(out)
}

fn parse_ports(raw: &Raw) -> Result<PortSet, ConfigError> {
    if raw.value.trim() == "all" {
        return Ok(PortSet::All);
    }
    let expected = "`all` or a comma-separated list of ports 1-65535 and ranges LO-HI";
    let port = |s: &str| s.trim().parse::<u16>().ok().filter(|p| *p != 0);
    let mut out = Vec::new();
    for part in raw.value.split(',') {
        let range = match part.split_once('-') {
            Some((lo, hi)) => match (port(lo), port(hi)) {
                (Some(lo), Some(hi)) if lo <= hi => (lo, hi),
                _ => return Err(bad(raw, "ports", expected)),
            },
            None => match port(part) {
                Some(p) => (p, p),
                None => return Err(bad(raw, "ports", expected)),
            },
        };
        out.push(range);
    }
    Ok(PortSet::Ranges(out))
}

fn parse_interfaces(raw: &Raw) -> Result<InterfaceSet, ConfigError> {
    if raw.value.trim() == "all" {
        return Ok(InterfaceSet::All);
    }
    let mut out = Vec::new();
    for part in raw.value.split(',') {
        let name = part.trim();
        // Linux interface names: 1-15 bytes, no slash, colon or whitespace.
        let valid = !name.is_empty()
            && name.len() <= 15
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'));
        if !valid {
            return Err(bad(
                raw,
                "interfaces",
                "`all` or a comma-separated list of interface names (at most 15 characters each)",
            ));
        }
        if name == "lo" {
            return Err(bad(
                raw,
                "interfaces",
                "interfaces other than lo (loopback is never handled)",
            ));
        }
        out.push(name.to_string());
    }
    Ok(InterfaceSet::Named(out))
}

fn parse_bool(raw: &Raw, option: &str) -> Result<bool, ConfigError> {
    match raw.value.trim() {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        _ => Err(bad(raw, option, "true or false")),
    }
}

fn parse_mark(raw: &Raw) -> Result<u32, ConfigError> {
    let v = raw.value.trim();
    let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => v.parse::<u32>().ok(),
    };
    // The verdict bits must not make a handled packet look injected, nor
    // an injected one look handled.
    let reserved = crate::firewall::SEEN_MARK | crate::firewall::GUARD_MARK;
    match parsed {
        Some(m) if m != 0 && m & reserved == 0 => Ok(m),
        _ => Err(bad(
            raw,
            "mark",
            "a non-zero 32-bit number, decimal or 0x-hex, without the bits 0x3000000 (the daemon's verdict marks)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        let mut v = vec!["tcpcryptd"];
        v.extend_from_slice(list);
        Args::try_parse_from(v).expect("flags parse")
    }

    fn error_text(list: &[&str]) -> String {
        match Config::from_args(&args(list)) {
            Ok(c) => panic!("accepted {list:?}: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let c = Config::from_args(&args(&[])).expect("defaults valid");
        assert_eq!(c.teps, vec![Tep::X25519, Tep::P256]);
        assert_eq!(
            c.aeads,
            vec![Aead::Aes128Gcm, Aead::Aes256Gcm, Aead::ChaCha20Poly1305]
        );
        assert_eq!(c.ports, PortSet::All);
        assert_eq!(c.interfaces, InterfaceSet::All);
        assert_eq!(c.queue, DEFAULT_QUEUE);
        assert_eq!(c.threads, default_threads());
        assert!((1..=4).contains(&c.threads));
        assert!(!c.fail_closed);
        assert_eq!(
            c.control_socket,
            PathBuf::from("/run/tcpcrypt/control.sock")
        );
        assert_eq!(c.control_group, ControlGroup::Default);
        assert_eq!(c.log_level, log::LevelFilter::Info);
        assert_eq!(c.keylog, None);
        assert_eq!(c.cleanup_delay, std::time::Duration::from_secs(30));
        assert_eq!(
            c.control_client_timeout,
            std::time::Duration::from_secs(DEFAULT_CONTROL_CLIENT_TIMEOUT)
        );
    }

    #[test]
    fn control_client_timeout_is_whole_seconds_from_one() {
        let c = Config::from_args(&args(&["--control-client-timeout", "3"])).expect("valid");
        assert_eq!(c.control_client_timeout, std::time::Duration::from_secs(3));
        for bad in ["0", "3601", "1.5", ""] {
            let e = error_text(&[&format!("--control-client-timeout={bad}")]);
            assert!(e.contains("option control-client-timeout:"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn tep_and_aead_lists_keep_their_order() {
        let c = Config::from_args(&args(&[
            "--tep",
            "p521,X25519",
            "--aead",
            "chacha20-poly1305",
        ]))
        .expect("valid");
        assert_eq!(c.teps, vec![Tep::P521, Tep::X25519]);
        assert_eq!(c.aeads, vec![Aead::ChaCha20Poly1305]);
    }

    #[test]
    fn unknown_tep_is_named_in_the_error() {
        let e = error_text(&["--tep", "x25519,rsa"]);
        assert!(e.contains("option tep"), "{e}");
        assert!(e.contains("\"rsa\""), "{e}");
    }

    #[test]
    fn port_list_accepts_ports_and_ranges() {
        let c = Config::from_args(&args(&["--ports", "80, 443,8000-8100"])).expect("valid");
        assert_eq!(
            c.ports,
            PortSet::Ranges(vec![(80, 80), (443, 443), (8000, 8100)])
        );
    }

    #[test]
    fn reversed_or_zero_port_is_rejected() {
        assert!(error_text(&["--ports", "90-80"]).contains("option ports"));
        assert!(error_text(&["--ports", "0"]).contains("option ports"));
        assert!(error_text(&["--ports", "70000"]).contains("\"70000\""));
    }

    #[test]
    fn loopback_cannot_be_configured() {
        assert!(error_text(&["--interfaces", "eth0,lo"]).contains("option interfaces"));
    }

    #[test]
    fn queue_out_of_range_is_rejected() {
        let e = error_text(&["--queue", "65536"]);
        assert!(e.contains("option queue") && e.contains("65536"), "{e}");
    }

    #[test]
    fn threads_need_a_queue_each() {
        let c = Config::from_args(&args(&["--queue", "100", "--threads", "3"])).expect("valid");
        assert_eq!((c.queue, c.threads), (100, 3));
        for bad in ["0", "65", "two"] {
            let e = error_text(&["--threads", bad]);
            assert!(e.contains("option threads") && e.contains(bad), "{e}");
        }
        let auto = Config::from_args(&args(&["--threads", "auto"])).expect("valid");
        assert_eq!(auto.threads, default_threads());
        let e = error_text(&["--queue", "65534", "--threads", "3"]);
        assert!(
            e.contains("option threads") && e.contains("at most 2 threads"),
            "{e}"
        );
        let c = Config::from_args(&args(&["--queue", "65534", "--threads", "2"])).expect("valid");
        assert_eq!(c.threads, 2);
    }

    #[test]
    fn mark_with_the_verdict_bits_is_rejected() {
        assert!(error_text(&["--mark", "0x1000000"]).contains("option mark"));
        assert!(error_text(&["--mark", "0x2000001"]).contains("0x3000000"));
    }

    #[test]
    fn zero_mark_is_rejected_and_hex_accepted() {
        assert!(error_text(&["--mark", "0"]).contains("option mark"));
        let c = Config::from_args(&args(&["--mark", "0x10"])).expect("valid");
        assert_eq!(c.mark, 16);
    }

    #[test]
    fn relative_control_socket_is_rejected() {
        assert!(error_text(&["--control-socket", "ctl.sock"]).contains("option control-socket"));
    }

    #[test]
    fn config_file_lines_are_read_with_comments_and_underscores() {
        let map = parse_config_text(
            "# a comment\nports = 80,443  # web\ncontrol_socket = \"/tmp/x.sock\"\n\n",
            "f.conf",
        )
        .expect("valid");
        assert_eq!(map.get("ports").map(|v| v.0.as_str()), Some("80,443"));
        assert_eq!(
            map.get("control-socket").map(|v| v.0.as_str()),
            Some("/tmp/x.sock")
        );
        assert_eq!(map.get("ports").map(|v| v.1.as_str()), Some("f.conf:2"));
    }

    #[test]
    fn config_file_unknown_key_names_file_and_line() {
        let e = parse_config_text("ports = 80\nportz = 81\n", "f.conf").expect_err("unknown key");
        assert_eq!(e.to_string(), "f.conf:2: unknown option \"portz\"");
    }

    #[test]
    fn config_file_bad_value_names_its_line() {
        let dir = std::env::temp_dir().join(format!("tcpcryptd-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("bad.conf");
        std::fs::write(&path, "queue = 5\nlog-level = loud\n").expect("write");
        let e = error_text(&["--config", path.to_str().expect("utf-8 path")]);
        std::fs::remove_dir_all(&dir).ok();
        assert!(
            e.contains("option log-level") && e.contains("bad.conf:2"),
            "{e}"
        );
    }

    #[test]
    fn command_line_wins_over_config_file() {
        let dir = std::env::temp_dir().join(format!("tcpcryptd-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("q.conf");
        std::fs::write(&path, "queue = 5\nfail-closed = yes\n").expect("write");
        let c = Config::from_args(&args(&[
            "--config",
            path.to_str().expect("utf-8 path"),
            "--queue",
            "9",
        ]))
        .expect("valid");
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(c.queue, 9);
        assert!(c.fail_closed);
    }

    #[test]
    fn limits_default_to_the_engine_defaults() {
        let c = Config::from_args(&args(&[])).expect("defaults valid");
        let e = EngineConfig::default();
        assert_eq!(c.limits.half_open_timeout, e.half_open_timeout);
        assert_eq!(c.limits.max_half_open, e.max_half_open);
        assert_eq!(c.limits.max_connections, e.max_connections);
        assert_eq!(c.limits.max_out_of_order_pieces, e.max_out_of_order_pieces);
        assert_eq!(
            c.limits.max_out_of_order_bytes,
            e.max_out_of_order_bytes_total
        );
    }

    #[test]
    fn limits_are_read_from_flags() {
        let c = Config::from_args(&args(&[
            "--half-open-timeout",
            "4",
            "--max-half-open",
            "10",
            "--max-connections",
            "100",
            "--max-out-of-order-pieces",
            "7",
            "--max-out-of-order-bytes",
            "3M",
        ]))
        .expect("valid");
        assert_eq!(
            c.limits,
            Limits {
                half_open_timeout: std::time::Duration::from_secs(4),
                max_half_open: 10,
                max_connections: 100,
                max_out_of_order_pieces: 7,
                max_out_of_order_bytes: 3 << 20,
            }
        );
    }

    #[test]
    fn limits_are_read_from_the_config_file() {
        let map = parse_config_text(
            "max_half_open = 12\nmax-out-of-order-bytes = 5k\n",
            "f.conf",
        )
        .expect("valid");
        assert_eq!(map.get("max-half-open").map(|v| v.0.as_str()), Some("12"));
        assert_eq!(
            map.get("max-out-of-order-bytes").map(|v| v.0.as_str()),
            Some("5k")
        );
    }

    #[test]
    fn out_of_range_limits_name_the_option() {
        for (flag, value) in [
            ("--half-open-timeout", "0"),
            ("--half-open-timeout", "3601"),
            ("--max-half-open", "0"),
            ("--max-half-open", "-1"),
            ("--max-connections", "99999999999"),
            ("--max-out-of-order-pieces", "many"),
            ("--max-out-of-order-bytes", "0"),
            ("--max-out-of-order-bytes", "65G"),
            ("--max-out-of-order-bytes", "12X"),
        ] {
            // `=` so that clap takes "-1" as the value, not as a flag.
            let e = error_text(&[&format!("{flag}={value}")]);
            let option = flag.trim_start_matches("--");
            assert!(
                e.contains(&format!("option {option}:")) && e.contains(value),
                "{flag} {value}: {e}"
            );
        }
    }

    #[test]
    fn large_segments_are_on_by_default_and_take_on_or_off() {
        assert!(
            Config::from_args(&args(&[]))
                .expect("defaults")
                .large_segments
        );
        let c = Config::from_args(&args(&["--large-segments", "off"])).expect("off");
        assert!(!c.large_segments);
        let c = Config::from_args(&args(&["--large-segments=on"])).expect("on");
        assert!(c.large_segments);
        let e = error_text(&["--large-segments=sometimes"]);
        assert!(
            e.contains("option large-segments:") && e.contains("sometimes"),
            "{e}"
        );
    }

    #[test]
    fn rekey_after_is_off_by_default_and_takes_sizes() {
        let c = Config::from_args(&args(&[])).expect("defaults");
        assert_eq!(c.rekey_after, None);
        let c = Config::from_args(&args(&["--rekey-after", "1M"])).expect("1M");
        assert_eq!(c.rekey_after, Some(1 << 20));
        assert_eq!(
            engine_adapter_rekey(&c),
            Some(1 << 20),
            "reaches the engine"
        );
        let c = Config::from_args(&args(&["--rekey-after", "OFF"])).expect("off");
        assert_eq!(c.rekey_after, None);
        for value in ["0", "1000", "65G", "soon"] {
            let e = error_text(&[&format!("--rekey-after={value}")]);
            assert!(
                e.contains("option rekey-after:") && e.contains(value),
                "{value}: {e}"
            );
        }
    }

    fn engine_adapter_rekey(c: &Config) -> Option<u64> {
        crate::engine_adapter::engine_config(c).rekey_after_bytes
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("1234"), Some(1234));
        assert_eq!(parse_size("64K"), Some(64 << 10));
        assert_eq!(parse_size(" 2 m"), Some(2 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("K"), None);
        assert_eq!(parse_size(""), None);
        assert_eq!(parse_size("1.5M"), None);
        assert_eq!(parse_size(&format!("{}G", usize::MAX)), None);
    }

    #[test]
    fn help_shows_the_engine_defaults_of_the_limits() {
        use clap::CommandFactory;
        let help = Args::command().render_long_help().to_string();
        let e = EngineConfig::default();
        for (flag, default) in [
            (
                "--half-open-timeout",
                e.half_open_timeout.as_secs() as usize,
            ),
            ("--max-half-open", e.max_half_open),
            ("--max-connections", e.max_connections),
            ("--max-out-of-order-pieces", e.max_out_of_order_pieces),
            ("--max-out-of-order-bytes", e.max_out_of_order_bytes_total),
        ] {
            let start = help.find(flag).unwrap_or_else(|| panic!("{flag} missing"));
            let entry = &help[start..];
            let end = entry[2..].find("\n      --").map_or(entry.len(), |i| i + 2);
            assert!(
                entry[..end].contains(&format!("[default: {default}]")),
                "{flag}: {}",
                &entry[..end]
            );
        }
    }

    #[test]
    fn shipped_config_shows_the_engine_defaults_of_the_limits() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../dist/etc/tcpcryptd.conf");
        let text = std::fs::read_to_string(path).expect("read the shipped config");
        let shown = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("#{key} = ")))
                .map(str::trim)
                .unwrap_or_else(|| panic!("{key} missing from {path}"))
                .to_string()
        };
        let e = EngineConfig::default();
        let raw = |v: String| Raw {
            value: v,
            origin: path.into(),
        };
        assert_eq!(
            shown("half-open-timeout"),
            e.half_open_timeout.as_secs().to_string()
        );
        assert_eq!(shown("max-half-open"), e.max_half_open.to_string());
        assert_eq!(shown("max-connections"), e.max_connections.to_string());
        assert_eq!(
            shown("max-out-of-order-pieces"),
            e.max_out_of_order_pieces.to_string()
        );
        let bytes = raw(shown("max-out-of-order-bytes"));
        assert_eq!(
            parse_size(&bytes.value),
            Some(e.max_out_of_order_bytes_total),
            "max-out-of-order-bytes from {}",
            bytes.origin
        );
    }
}
