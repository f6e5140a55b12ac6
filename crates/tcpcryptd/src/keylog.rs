//! The key log (issue 3 item 4): like TLS's SSLKEYLOGFILE, one line per
//! secret so captures can be decrypted while debugging.
//!
//! `TCPCRYPT_SS <session-id-hex> <ss-hex>` for every established session,
//! followed for a fresh key exchange by `TCPCRYPT_ES <session-id-hex>
//! <es-hex>`. Lower-case hex; the file is created with mode 0600. This is
//! the one place the line format is written: the protocol crate only hands
//! out the secrets.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tcpcrypt_control::SessionId;

use crate::engine_api::KeylogSecrets;

pub struct KeyLog {
    file: File,
    path: PathBuf,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key-log lines for one session, newline-terminated.
pub fn lines(session_id: &SessionId, secrets: &KeylogSecrets) -> String {
    let mut out = format!("TCPCRYPT_SS {session_id} {}\n", hex(&secrets.ss));
    if let Some(es) = &secrets.es {
        out.push_str(&format!("TCPCRYPT_ES {session_id} {}\n", hex(es)));
    }
    out
}

impl KeyLog {
    /// Opens `path` for appending, creating it with mode 0600; an existing
    /// file is narrowed to 0600 too.
    pub fn open(path: &Path) -> io::Result<KeyLog> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        Ok(KeyLog {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one session's lines in a single write.
    pub fn record(&mut self, session_id: &SessionId, secrets: &KeylogSecrets) -> io::Result<()> {
        self.file.write_all(lines(session_id, secrets).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn sid() -> SessionId {
        let mut bytes = [0x0f; 33];
        bytes[0] = 0x23;
        SessionId::from_bytes(bytes)
    }

    #[test]
    fn fresh_session_logs_ss_then_es_in_lower_case_hex() {
        let s = KeylogSecrets {
            ss: vec![0xAB, 0x01],
            es: Some(vec![0xCD]),
        };
        let id = format!("23{}", "0f".repeat(32));
        assert_eq!(
            lines(&sid(), &s),
            format!("TCPCRYPT_SS {id} ab01\nTCPCRYPT_ES {id} cd\n")
        );
    }

    #[test]
    fn resumed_session_logs_only_ss() {
        let s = KeylogSecrets {
            ss: vec![0x10],
            es: None,
        };
        assert_eq!(lines(&sid(), &s).lines().count(), 1);
    }

    #[test]
    fn file_is_created_with_mode_0600_and_appended() {
        let dir = std::env::temp_dir().join(format!("tcpcryptd-keylog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("keys");
        let s = KeylogSecrets {
            ss: vec![1],
            es: None,
        };
        KeyLog::open(&path)
            .expect("open")
            .record(&sid(), &s)
            .expect("write");
        KeyLog::open(&path)
            .expect("reopen")
            .record(&sid(), &s)
            .expect("write");
        let mode = std::fs::metadata(&path).expect("meta").mode() & 0o777;
        let text = std::fs::read_to_string(&path).expect("read");
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(mode, 0o600);
        assert_eq!(text.lines().count(), 2);
    }
}
