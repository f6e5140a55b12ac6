//! The protocol's error words, the refusal a daemon answers with, and what
//! a client finds wrong in an answer.

use std::fmt;

use crate::VERSION;
use crate::json::Object;
use crate::session::SessionIdError;

/// The `error` word of a refusal (control protocol, "Common fields").
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    UnsupportedVersion,
    UnknownOp,
    PermissionDenied,
    /// A bounded table (the policy registrations) is full.
    TableFull,
    Internal,
    /// A word this side does not know (from a newer daemon); kept verbatim.
    Other(String),
}

impl ErrorCode {
    const KNOWN: [ErrorCode; 6] = [
        ErrorCode::BadRequest,
        ErrorCode::UnsupportedVersion,
        ErrorCode::UnknownOp,
        ErrorCode::PermissionDenied,
        ErrorCode::TableFull,
        ErrorCode::Internal,
    ];

    pub fn from_word(word: &str) -> ErrorCode {
        Self::KNOWN
            .into_iter()
            .find(|c| c.word() == word)
            .unwrap_or_else(|| ErrorCode::Other(word.to_string()))
    }

    pub fn word(&self) -> &str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::TableFull => "table_full",
            ErrorCode::Internal => "internal",
            ErrorCode::Other(word) => word,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// A request the daemon will not serve: the `"ok":false` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    /// For people; for `bad_request` it names the field.
    pub message: String,
    /// The daemon closes the connection after this answer, because the
    /// line could not be read at all (not JSON, too long).
    pub close: bool,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
            close: false,
        }
    }

    /// `bad_request` naming a field and what it should have held.
    pub fn bad_field(field: &str, expected: &str) -> Refusal {
        Refusal::new(
            ErrorCode::BadRequest,
            format!("field \"{field}\": expected {expected}"),
        )
    }

    /// A line that cannot be read as a request: answered, then closed.
    pub fn unreadable(message: impl Into<String>) -> Refusal {
        Refusal {
            close: true,
            ..Refusal::new(ErrorCode::BadRequest, message)
        }
    }

    /// The answer line, without its newline.
    pub fn to_line(&self) -> String {
        let mut line = String::new();
        let mut o = Object::open(&mut line);
        o.u64("v", VERSION)
            .bool("ok", false)
            .str("error", self.code.word())
            .str("message", &self.message);
        if self.code == ErrorCode::UnsupportedVersion {
            o.raw("supported", &format!("[{VERSION}]"));
        }
        o.close();
        line
    }
}

/// How an answer line breaks the control protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("answer is not valid JSON: {0}")]
    NotJson(String),
    #[error("answer is not a JSON object")]
    NotAnObject,
    #[error("field {field:?}: missing")]
    Missing { field: String },
    #[error("field {field:?}: expected {expected}")]
    Invalid {
        field: String,
        expected: &'static str,
    },
    #[error("field \"session_id\": {0}")]
    SessionId(#[from] SessionIdError),
    #[error("field \"tep_byte\": {byte} does not match tep {tep}")]
    TepMismatch { tep: &'static str, byte: u64 },
    #[error("answer line longer than {limit} bytes")]
    TooLong { limit: usize },
    #[error("daemon closed the connection before a complete answer")]
    Truncated,
    #[error("answer line is not UTF-8")]
    NotUtf8,
}

/// Why an answer line gives no value: the daemon refused, or the line is
/// not a valid answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("tcpcryptd refused the request: {code}: {message}")]
    Refused { code: ErrorCode, message: String },
    #[error("malformed answer from tcpcryptd: {0}")]
    Malformed(#[from] ProtocolError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_word_reads_back_as_its_code() {
        for code in ErrorCode::KNOWN {
            assert_eq!(ErrorCode::from_word(code.word()), code);
        }
        assert_eq!(
            ErrorCode::from_word("quota"),
            ErrorCode::Other("quota".into())
        );
    }

    #[test]
    fn unsupported_version_lists_the_supported_ones() {
        let line =
            Refusal::new(ErrorCode::UnsupportedVersion, "version 2 is not supported").to_line();
        assert_eq!(
            line,
            r#"{"v":1,"ok":false,"error":"unsupported_version","message":"version 2 is not supported","supported":[1]}"#
        );
        let other = Refusal::new(ErrorCode::Internal, "x").to_line();
        assert!(!other.contains("supported"), "{other}");
    }
}
