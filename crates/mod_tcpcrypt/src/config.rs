//! The module's directives as validated values, and how per-server and
//! per-directory settings combine.
//!
//! Parsing lives here (not in the FFI layer) so that every message an admin
//! can see from `apachectl -t` is covered by a unit test.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A lookup that has not finished by then is abandoned and the request served
/// without the variables. Small, because a worker waits this long at most
/// once per connection when the daemon hangs.
pub const DEFAULT_LOOKUP_TIMEOUT: LookupTimeout = LookupTimeout(200);

/// The control protocol's own ceiling on `wait_ms`.
pub const MAX_LOOKUP_TIMEOUT_MS: u32 = 10_000;

/// `sun_path` in `struct sockaddr_un` holds 108 bytes including the NUL.
const MAX_SOCKET_PATH_BYTES: usize = 107;

/// Why a directive's argument was rejected. The text is what `apachectl -t`
/// prints after "Syntax error on line N of FILE:".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectiveError {
    TimeoutNotANumber { given: String },
    TimeoutOutOfRange { given: u64 },
    SocketPathNotAbsolute { given: String },
    SocketPathTooLong { given: String, bytes: usize },
}

impl fmt::Display for DirectiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TimeoutNotANumber { given } => write!(
                f,
                "TcpcryptLookupTimeout: expected a whole number of milliseconds \
                 (1 to {MAX_LOOKUP_TIMEOUT_MS}), got '{given}'"
            ),
            Self::TimeoutOutOfRange { given } => write!(
                f,
                "TcpcryptLookupTimeout: {given} ms is out of range; \
                 expected 1 to {MAX_LOOKUP_TIMEOUT_MS} milliseconds"
            ),
            Self::SocketPathNotAbsolute { given } => write!(
                f,
                "TcpcryptControlSocket: expected an absolute path to tcpcryptd's \
                 control socket, got '{given}'"
            ),
            Self::SocketPathTooLong { given, bytes } => write!(
                f,
                "TcpcryptControlSocket: path '{given}' is {bytes} bytes long; \
                 a Unix socket path may have at most {MAX_SOCKET_PATH_BYTES}"
            ),
        }
    }
}

impl std::error::Error for DirectiveError {}

/// How long one session lookup may take, in whole milliseconds (at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupTimeout(u32);

impl LookupTimeout {
    /// Parses the argument of `TcpcryptLookupTimeout`.
    pub fn parse(arg: &str) -> Result<Self, DirectiveError> {
        let trimmed = arg.trim();
        if trimmed.is_empty() || !trimmed.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DirectiveError::TimeoutNotANumber {
                given: arg.to_owned(),
            });
        }
        // All digits but too many for u64 is still "out of range", not "not a number".
        let value: u64 = trimmed.parse().unwrap_or(u64::MAX);
        match u32::try_from(value) {
            Ok(ms) if (1..=MAX_LOOKUP_TIMEOUT_MS).contains(&ms) => Ok(Self(ms)),
            _ => Err(DirectiveError::TimeoutOutOfRange { given: value }),
        }
    }

    pub fn millis(self) -> u32 {
        self.0
    }

    pub fn duration(self) -> Duration {
        Duration::from_millis(u64::from(self.0))
    }
}

/// An absolute path short enough for `sockaddr_un`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlSocketPath(PathBuf);

impl ControlSocketPath {
    /// Parses the argument of `TcpcryptControlSocket`.
    pub fn parse(arg: &str) -> Result<Self, DirectiveError> {
        if !arg.starts_with('/') {
            return Err(DirectiveError::SocketPathNotAbsolute {
                given: arg.to_owned(),
            });
        }
        if arg.len() > MAX_SOCKET_PATH_BYTES {
            return Err(DirectiveError::SocketPathTooLong {
                given: arg.to_owned(),
                bytes: arg.len(),
            });
        }
        Ok(Self(PathBuf::from(arg)))
    }

    pub fn as_path(&self) -> &Path {
        &self.0
    }
}

/// Settings of one virtual host (`RSRC_CONF` directives). `None` means "not
/// set here", so a vhost inherits what the main server set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerConfig {
    pub control_socket: Option<ControlSocketPath>,
    pub lookup_timeout: Option<LookupTimeout>,
}

impl ServerConfig {
    /// A vhost's own settings win; what it leaves unset comes from `base`.
    pub fn merge(base: &Self, vhost: &Self) -> Self {
        Self {
            control_socket: vhost
                .control_socket
                .clone()
                .or_else(|| base.control_socket.clone()),
            lookup_timeout: vhost.lookup_timeout.or(base.lookup_timeout),
        }
    }

    /// The configured socket; `None` leaves the choice to the client library
    /// (`$TCPCRYPT_CONTROL` in httpd's environment, else the default path).
    pub fn control_socket(&self) -> Option<&Path> {
        self.control_socket.as_ref().map(ControlSocketPath::as_path)
    }

    pub fn lookup_timeout(&self) -> LookupTimeout {
        self.lookup_timeout.unwrap_or(DEFAULT_LOOKUP_TIMEOUT)
    }
}

/// Settings of one directory, location or `.htaccess` (`Tcpcrypt On|Off`,
/// and the files of `AuthType tcpcrypt`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirConfig {
    pub export_variables: Option<bool>,
    /// `TcpcryptAuthUserFile`: SCRAM verifiers (`tcpcrypt passwd`).
    pub auth_user_file: Option<PathBuf>,
    /// `TcpcryptAuthKeyFile`: Ed25519 public keys with user names.
    pub auth_key_file: Option<PathBuf>,
}

impl DirConfig {
    /// The more specific section (`child`) wins where it says something.
    pub fn merge(parent: &Self, child: &Self) -> Self {
        Self {
            export_variables: child.export_variables.or(parent.export_variables),
            auth_user_file: child
                .auth_user_file
                .clone()
                .or_else(|| parent.auth_user_file.clone()),
            auth_key_file: child
                .auth_key_file
                .clone()
                .or_else(|| parent.auth_key_file.clone()),
        }
    }

    /// `Tcpcrypt` defaults to On.
    pub fn exports_variables(&self) -> bool {
        self.export_variables.unwrap_or(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_accepts_milliseconds_in_range() {
        assert_eq!(LookupTimeout::parse("1").map(LookupTimeout::millis), Ok(1));
        assert_eq!(
            LookupTimeout::parse("10000").map(LookupTimeout::millis),
            Ok(10_000)
        );
        assert_eq!(
            LookupTimeout::parse("250").map(LookupTimeout::duration),
            Ok(Duration::from_millis(250))
        );
    }

    #[test]
    fn timeout_rejects_zero_and_values_above_the_protocol_limit() {
        assert_eq!(
            LookupTimeout::parse("0"),
            Err(DirectiveError::TimeoutOutOfRange { given: 0 })
        );
        assert_eq!(
            LookupTimeout::parse("10001"),
            Err(DirectiveError::TimeoutOutOfRange { given: 10_001 })
        );
        assert_eq!(
            LookupTimeout::parse("99999999999999999999999"),
            Err(DirectiveError::TimeoutOutOfRange { given: u64::MAX })
        );
    }

    #[test]
    fn timeout_rejects_units_signs_and_fractions() {
        for bad in ["", "250ms", "-5", "+5", "1.5", "0x10", "ten"] {
            assert_eq!(
                LookupTimeout::parse(bad),
                Err(DirectiveError::TimeoutNotANumber {
                    given: bad.to_owned()
                }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn timeout_error_names_the_directive_and_the_range() {
        let msg = match LookupTimeout::parse("fast") {
            Err(e) => e.to_string(),
            Ok(t) => panic!("'fast' parsed as {t:?}"),
        };
        assert!(msg.starts_with("TcpcryptLookupTimeout:"), "{msg}");
        assert!(
            msg.contains("'fast'") && msg.contains("1 to 10000"),
            "{msg}"
        );
    }

    #[test]
    fn default_timeout_is_well_under_a_second() {
        assert!(DEFAULT_LOOKUP_TIMEOUT.duration() < Duration::from_millis(500));
    }

    #[test]
    fn socket_path_must_be_absolute() {
        assert_eq!(
            ControlSocketPath::parse("run/control.sock"),
            Err(DirectiveError::SocketPathNotAbsolute {
                given: "run/control.sock".to_owned()
            })
        );
        let ok = ControlSocketPath::parse("/run/x.sock");
        assert_eq!(
            ok.as_ref().map(ControlSocketPath::as_path),
            Ok(Path::new("/run/x.sock"))
        );
    }

    #[test]
    fn socket_path_must_fit_in_sockaddr_un() {
        let longest = format!("/{}", "a".repeat(106));
        assert!(ControlSocketPath::parse(&longest).is_ok());
        let too_long = format!("/{}", "a".repeat(107));
        assert_eq!(
            ControlSocketPath::parse(&too_long),
            Err(DirectiveError::SocketPathTooLong {
                given: too_long.clone(),
                bytes: 108
            })
        );
    }

    #[test]
    fn server_defaults_apply_when_nothing_is_set() {
        let cfg = ServerConfig::default();
        assert_eq!(cfg.control_socket(), None);
        assert_eq!(cfg.lookup_timeout(), DEFAULT_LOOKUP_TIMEOUT);
    }

    #[test]
    fn vhost_inherits_unset_server_settings() {
        let base = ServerConfig {
            control_socket: ControlSocketPath::parse("/base.sock").ok(),
            lookup_timeout: LookupTimeout::parse("50").ok(),
        };
        let merged = ServerConfig::merge(&base, &ServerConfig::default());
        assert_eq!(merged, base);
    }

    #[test]
    fn vhost_settings_override_the_server() {
        let base = ServerConfig {
            control_socket: ControlSocketPath::parse("/base.sock").ok(),
            lookup_timeout: LookupTimeout::parse("50").ok(),
        };
        let vhost = ServerConfig {
            control_socket: ControlSocketPath::parse("/vhost.sock").ok(),
            lookup_timeout: None,
        };
        let merged = ServerConfig::merge(&base, &vhost);
        assert_eq!(merged.control_socket(), Some(Path::new("/vhost.sock")));
        assert_eq!(merged.lookup_timeout().millis(), 50);
    }

    #[test]
    fn variables_are_exported_by_default() {
        assert!(DirConfig::default().exports_variables());
    }

    #[test]
    fn inner_directory_off_overrides_outer_on() {
        let on = DirConfig {
            export_variables: Some(true),
            ..DirConfig::default()
        };
        let off = DirConfig {
            export_variables: Some(false),
            ..DirConfig::default()
        };
        assert!(!DirConfig::merge(&on, &off).exports_variables());
        assert!(DirConfig::merge(&off, &on).exports_variables());
    }

    #[test]
    fn directory_without_the_directive_keeps_the_outer_setting() {
        let off = DirConfig {
            export_variables: Some(false),
            ..DirConfig::default()
        };
        assert!(!DirConfig::merge(&off, &DirConfig::default()).exports_variables());
    }

    #[test]
    fn auth_files_are_inherited_and_overridden_one_by_one() {
        let outer = DirConfig {
            auth_user_file: Some(PathBuf::from("/outer.scram")),
            auth_key_file: Some(PathBuf::from("/outer.keys")),
            ..DirConfig::default()
        };
        let inner = DirConfig {
            auth_user_file: Some(PathBuf::from("/inner.scram")),
            ..DirConfig::default()
        };
        let merged = DirConfig::merge(&outer, &inner);
        assert_eq!(merged.auth_user_file, Some(PathBuf::from("/inner.scram")));
        assert_eq!(merged.auth_key_file, Some(PathBuf::from("/outer.keys")));
    }
}
