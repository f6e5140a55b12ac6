//! The negotiation transcript (RFC 8547 section 4.8).

/// Host A's SYN-form ENO option followed by host B's, each exactly as it
/// stood in the TCP header (kind and length bytes included).
///
/// Each host uses the bytes it sent for its own option and the bytes it
/// received for the peer's, so tampering in transit yields different
/// transcripts, hence different keys. The bytes are stored as given and are
/// never re-encoded.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Transcript {
    bytes: Vec<u8>,
    a_len: usize,
}

impl Transcript {
    /// The transcript of A's option `a_option` and B's option `b_option`.
    pub fn new(a_option: &[u8], b_option: &[u8]) -> Transcript {
        let mut bytes = Vec::with_capacity(a_option.len() + b_option.len());
        bytes.extend_from_slice(a_option);
        bytes.extend_from_slice(b_option);
        Transcript {
            bytes,
            a_len: a_option.len(),
        }
    }

    /// A's option then B's, the input TEPs feed to their key schedule.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Host A's option.
    pub fn a_option(&self) -> &[u8] {
        self.bytes.get(..self.a_len).unwrap_or_default()
    }

    /// Host B's option.
    pub fn b_option(&self) -> &[u8] {
        self.bytes.get(self.a_len..).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::Transcript;

    /// RFC 8547 section 4.8 via the digest's section 1.9 example.
    #[test]
    fn transcript_is_a_option_then_b_option() {
        let t = Transcript::new(&[0x45, 0x03, 0x23], &[0x45, 0x04, 0x01, 0x23]);
        assert_eq!(
            t.as_bytes(),
            &[0x45, 0x03, 0x23, 0x45, 0x04, 0x01, 0x23][..]
        );
        assert_eq!(t.a_option(), &[0x45, 0x03, 0x23][..]);
        assert_eq!(t.b_option(), &[0x45, 0x04, 0x01, 0x23][..]);
    }
}
