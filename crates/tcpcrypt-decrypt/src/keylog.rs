//! Reading the key log tcpcryptd writes with `--keylog` (its format is
//! defined in tcpcryptd's `keylog` module and the operator guide):
//! `TCPCRYPT_SS <session-id-hex> <ss-hex>` per session, and
//! `TCPCRYPT_ES <session-id-hex> <es-hex>` after a fresh key exchange.
//! Blank lines and `#` comments are skipped; anything else is an error that
//! names its line, so a mangled file is never half-used in silence.

use tcpcrypt_proto::SessionId;
use tcpcrypt_proto::schedule::SessionSecret;
use tcpcrypt_proto::tep::K_LEN;

/// Longest ES accepted (P-521's shared secret is 66 bytes).
const MAX_ES_LEN: usize = 132;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyLogError {
    #[error("key log line {line}: {what}")]
    Line { line: usize, what: String },
}

/// One session of the key log.
#[derive(Debug, Clone)]
pub struct KeyLogEntry {
    pub session_id: SessionId,
    /// ss\[i\]: ss\[0\] of a fresh session, ss\[i\] of a resumed one.
    pub ss: SessionSecret,
    /// The ECDH shared secret, present after a fresh key exchange.
    pub es: Option<Vec<u8>>,
}

/// Every session of a key log, in file order.
#[derive(Debug, Clone, Default)]
pub struct KeyLog {
    entries: Vec<KeyLogEntry>,
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks_exact(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}

impl KeyLog {
    pub fn parse(text: &str) -> Result<KeyLog, KeyLogError> {
        let mut log = KeyLog::default();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let bad = |what: &str| KeyLogError::Line {
                line,
                what: what.to_string(),
            };
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = trimmed.split_ascii_whitespace().collect();
            let [label, sid, secret] = fields.as_slice() else {
                return Err(bad("expected `LABEL <session-id-hex> <secret-hex>`"));
            };
            let session_id = hex_decode(sid)
                .and_then(|b| SessionId::from_bytes(&b))
                .ok_or_else(|| bad("session ID is not 33 bytes of hex with a tcpcrypt TEP byte"))?;
            let secret = hex_decode(secret).ok_or_else(|| bad("secret is not hex"))?;
            match *label {
                "TCPCRYPT_SS" => {
                    let ss: [u8; K_LEN] = secret
                        .try_into()
                        .map_err(|_| bad("TCPCRYPT_SS secret is not 32 bytes"))?;
                    log.entries.push(KeyLogEntry {
                        session_id,
                        ss: SessionSecret::from_bytes(ss),
                        es: None,
                    });
                }
                "TCPCRYPT_ES" => {
                    if secret.is_empty() || secret.len() > MAX_ES_LEN {
                        return Err(bad("TCPCRYPT_ES secret has an impossible length"));
                    }
                    let entry = log
                        .entries
                        .iter_mut()
                        .rev()
                        .find(|e| e.session_id == session_id)
                        .ok_or_else(|| bad("TCPCRYPT_ES before the TCPCRYPT_SS of its session"))?;
                    entry.es = Some(secret);
                }
                _ => return Err(bad("unknown label (expected TCPCRYPT_SS or TCPCRYPT_ES)")),
            }
        }
        Ok(log)
    }

    pub fn entries(&self) -> &[KeyLogEntry] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid() -> String {
        format!("21{}", "ab".repeat(32))
    }

    #[test]
    fn reads_ss_and_es_of_one_session() {
        let text = format!(
            "TCPCRYPT_SS {} {}\nTCPCRYPT_ES {} {}\n\n# note\n",
            sid(),
            "01".repeat(32),
            sid(),
            "02".repeat(32)
        );
        let log = KeyLog::parse(&text).unwrap();
        assert_eq!(log.entries().len(), 1);
        let e = &log.entries()[0];
        assert_eq!(e.session_id.to_string(), sid());
        assert_eq!(e.ss.as_bytes(), &[1u8; 32]);
        assert_eq!(e.es.as_deref(), Some(&[2u8; 32][..]));
    }

    #[test]
    fn errors_name_the_line() {
        let text = format!(
            "TCPCRYPT_SS {} {}\nTCPCRYPT_SS zz 00\n",
            sid(),
            "01".repeat(32)
        );
        let err = KeyLog::parse(&text).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let short = format!("TCPCRYPT_SS {} 0102\n", sid());
        assert!(KeyLog::parse(&short).is_err());
        let orphan = format!("TCPCRYPT_ES {} 0102\n", sid());
        assert!(KeyLog::parse(&orphan).is_err());
    }
}
