//! The ENO TCP option, kind 69, in its SYN form (a list of suboptions) and
//! its non-SYN form (a bare acknowledgment), RFC 8547 sections 4.1 to 4.4.
//!
//! Only kind 69 exists here: the pre-RFC experimental encoding (kind 253 with
//! ExID 0x454E) is neither produced nor recognised, so such an option is just
//! another unknown option to the scanner.

use thiserror::Error;

use super::tep::{GlobalSuboption, TepByte, TepId};

/// TCP option kind of TCP-ENO (IANA, RFC 8547 section 11).
pub const ENO_KIND: u8 = 69;

/// The non-SYN-form ENO option a host sends: kind 69, length 2, no contents.
/// tcpcrypt gives non-SYN contents no meaning, so this is the only form sent
/// and any contents received are ignored.
pub const NON_SYN_OPTION: [u8; 2] = [ENO_KIND, 2];

/// The whole TCP option space (60-byte header limit minus the fixed 20
/// bytes). No option we build may be longer.
pub const MAX_OPTIONS_LEN: usize = 40;

/// The most data a length byte can announce (`nnnnn + 1` with five bits).
pub const MAX_LENGTH_BYTE_DATA: usize = 32;

/// Length bytes are `100nnnnn`.
const LENGTH_BYTE_TAG: u8 = 0x80;
const LENGTH_BYTE_MASK: u8 = 0xE0;
const LENGTH_BITS: u8 = 0x1F;

/// One TEP suboption as the negotiation sees it: the TEP byte and its data.
///
/// A suboption with `v = 0` never carries data; one with `v = 1` carries
/// whatever its TEP defines (possibly nothing when it is last in the option).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TepSuboption {
    tep: TepByte,
    data: Vec<u8>,
}

impl TepSuboption {
    /// A suboption without data (`v = 0`), e.g. a fresh tcpcrypt offer.
    pub fn plain(id: TepId) -> TepSuboption {
        TepSuboption {
            tep: TepByte::new(id, false),
            data: Vec::new(),
        }
    }

    /// A suboption with data (`v = 1`), e.g. a tcpcrypt resumption offer.
    pub fn with_data(id: TepId, data: Vec<u8>) -> TepSuboption {
        TepSuboption {
            tep: TepByte::new(id, true),
            data,
        }
    }

    /// The TEP byte as it appears on the wire (identifier and `v` bit).
    pub fn tep(&self) -> TepByte {
        self.tep
    }

    /// The TEP identifier.
    pub fn id(&self) -> TepId {
        self.tep.id()
    }

    /// The suboption data (empty when `v = 0`).
    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

/// One suboption exactly as encoded in a SYN-form option (RFC 8547 Table 1).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Suboption {
    /// A global suboption byte (0x00..=0x1F).
    Global(GlobalSuboption),
    /// A TEP identifier without data (0x20..=0x7F).
    Tep(TepId),
    /// A length byte (0x80..=0x9F) followed by a TEP byte with `v = 1` and
    /// 1 to 32 data bytes.
    TepWithLength { id: TepId, data: Vec<u8> },
    /// A TEP byte with `v = 1` (0xA0..=0xFF) whose data runs to the end of
    /// the option; always the last suboption.
    TepToEnd { id: TepId, data: Vec<u8> },
}

impl Suboption {
    /// The TEP suboption this encodes, if it is one.
    pub fn tep_suboption(&self) -> Option<TepSuboption> {
        match self {
            Suboption::Global(_) => None,
            Suboption::Tep(id) => Some(TepSuboption::plain(*id)),
            Suboption::TepWithLength { id, data } | Suboption::TepToEnd { id, data } => {
                Some(TepSuboption::with_data(*id, data.clone()))
            }
        }
    }

    fn encoded_len(&self) -> usize {
        match self {
            Suboption::Global(_) | Suboption::Tep(_) => 1,
            Suboption::TepWithLength { data, .. } => 2 + data.len(),
            Suboption::TepToEnd { data, .. } => 1 + data.len(),
        }
    }
}

/// Why bytes are not a SYN-form ENO option.
///
/// Every variant means the same thing to the handshake (RFC 8547 section
/// 4.4): ignore this option and disable ENO for the connection. The variants
/// only say what was wrong, for logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum SynOptionError {
    #[error("ENO option is {len} bytes long, shorter than its kind and length bytes")]
    TooShort { len: usize },
    #[error("option kind is {kind}, expected {ENO_KIND} (TCP-ENO)")]
    NotEno { kind: u8 },
    #[error("ENO option length byte says {declared} bytes, but {actual} bytes were given")]
    LengthMismatch { declared: u8, actual: usize },
    #[error(
        "length byte at offset {offset} announces {data_len} data bytes, but only {available} bytes follow its TEP byte in the option"
    )]
    LengthByteOverrun {
        offset: usize,
        data_len: usize,
        available: usize,
    },
    #[error(
        "length byte at offset {offset} is followed by {found:#04x}, expected a TEP byte with v = 1 (0xa0..=0xff)"
    )]
    LengthByteWithoutTep { offset: usize, found: u8 },
}

/// Why a SYN-form option cannot be built from the given suboptions.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error(
        "TEP {id} suboption has {len} data bytes but is not last, so it needs a length byte, which carries 1 to 32"
    )]
    DataNeedsLengthByte { id: TepId, len: usize },
    #[error("TEP {id} suboption whose data runs to the end of the option is not last")]
    ToEndNotLast { id: TepId },
    #[error("more than one global suboption (a SYN may carry at most one)")]
    SeveralGlobals,
    #[error(
        "ENO option would be {len} bytes, more than the {MAX_OPTIONS_LEN} bytes of TCP option space"
    )]
    TooLong { len: usize },
}

/// A SYN-form ENO option: the suboptions in wire order.
///
/// Built either by [`SynOption::parse`] from received bytes or by
/// [`SynOption::offer`] / [`SynOption::from_suboptions`] for sending, so it
/// always encodes. For the negotiation transcript keep the option bytes as
/// they were sent or received, never the re-encoding of a parsed value: a
/// peer may have used a different legal encoding.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SynOption {
    suboptions: Vec<Suboption>,
    teps: Vec<TepSuboption>,
}

impl SynOption {
    /// Parses a whole option (kind, length, contents) as SYN-form ENO.
    ///
    /// `option` must be exactly the option's bytes, as found by
    /// [`scan_options`](super::scan_options). Only the first global
    /// suboption counts; later ones are kept in
    /// [`suboptions`](Self::suboptions) but ignored by
    /// [`global`](Self::global).
    pub fn parse(option: &[u8]) -> Result<SynOption, SynOptionError> {
        let (&kind, rest) = option
            .split_first()
            .ok_or(SynOptionError::TooShort { len: option.len() })?;
        let (&declared, contents) = rest
            .split_first()
            .ok_or(SynOptionError::TooShort { len: option.len() })?;
        if kind != ENO_KIND {
            return Err(SynOptionError::NotEno { kind });
        }
        if usize::from(declared) != option.len() {
            return Err(SynOptionError::LengthMismatch {
                declared,
                actual: option.len(),
            });
        }

        let mut suboptions = Vec::new();
        let mut rest = contents;
        // Offsets in errors count from the option's kind byte.
        let offset_of = |rest: &[u8]| option.len() - rest.len();
        while let Some((&first, after)) = rest.split_first() {
            if let Some(global) = GlobalSuboption::from_byte(first) {
                suboptions.push(Suboption::Global(global));
                rest = after;
            } else if first & LENGTH_BYTE_MASK == LENGTH_BYTE_TAG {
                let offset = offset_of(rest);
                let data_len = usize::from(first & LENGTH_BITS) + 1;
                let Some((&tep_byte, data_and_rest)) = after.split_first() else {
                    return Err(SynOptionError::LengthByteOverrun {
                        offset,
                        data_len,
                        available: 0,
                    });
                };
                let id = match TepByte::from_byte(tep_byte) {
                    Some(tep) if tep.v() => tep.id(),
                    _ => {
                        return Err(SynOptionError::LengthByteWithoutTep {
                            offset,
                            found: tep_byte,
                        });
                    }
                };
                if data_and_rest.len() < data_len {
                    return Err(SynOptionError::LengthByteOverrun {
                        offset,
                        data_len,
                        available: data_and_rest.len(),
                    });
                }
                let (data, after_data) = data_and_rest.split_at(data_len);
                suboptions.push(Suboption::TepWithLength {
                    id,
                    data: data.to_vec(),
                });
                rest = after_data;
            } else if let Some(tep) = TepByte::from_byte(first) {
                if tep.v() {
                    suboptions.push(Suboption::TepToEnd {
                        id: tep.id(),
                        data: after.to_vec(),
                    });
                    rest = &[];
                } else {
                    suboptions.push(Suboption::Tep(tep.id()));
                    rest = after;
                }
            } else {
                // Every byte value is a global suboption, a length byte or a
                // TEP byte; this branch exists only to keep the loop total.
                rest = after;
            }
        }
        Ok(SynOption::new_unchecked(suboptions))
    }

    /// Builds the option to send from a global suboption (or none, meaning
    /// the implicit 0x00) followed by `teps` in the given order.
    ///
    /// Every TEP suboption with data except the last gets a length byte; the
    /// last one's data runs to the end of the option, the most compact
    /// encoding (RFC 8547 section 4.4).
    pub fn offer(
        global: Option<GlobalSuboption>,
        teps: &[TepSuboption],
    ) -> Result<SynOption, EncodeError> {
        let mut suboptions = Vec::with_capacity(teps.len() + 1);
        suboptions.extend(global.map(Suboption::Global));
        let last = teps.len().checked_sub(1);
        for (i, tep) in teps.iter().enumerate() {
            suboptions.push(if !tep.tep().v() {
                Suboption::Tep(tep.id())
            } else if Some(i) == last {
                Suboption::TepToEnd {
                    id: tep.id(),
                    data: tep.data().to_vec(),
                }
            } else {
                Suboption::TepWithLength {
                    id: tep.id(),
                    data: tep.data().to_vec(),
                }
            });
        }
        SynOption::from_suboptions(suboptions)
    }

    /// Builds the option to send from explicit wire forms, checking that the
    /// list encodes and fits the TCP option space.
    pub fn from_suboptions(suboptions: Vec<Suboption>) -> Result<SynOption, EncodeError> {
        let mut globals = 0;
        for (i, sub) in suboptions.iter().enumerate() {
            match sub {
                Suboption::Global(_) => globals += 1,
                Suboption::Tep(_) => {}
                Suboption::TepWithLength { id, data } => {
                    if !(1..=MAX_LENGTH_BYTE_DATA).contains(&data.len()) {
                        return Err(EncodeError::DataNeedsLengthByte {
                            id: *id,
                            len: data.len(),
                        });
                    }
                }
                Suboption::TepToEnd { id, .. } => {
                    if i + 1 != suboptions.len() {
                        return Err(EncodeError::ToEndNotLast { id: *id });
                    }
                }
            }
        }
        if globals > 1 {
            return Err(EncodeError::SeveralGlobals);
        }
        let len = 2 + suboptions.iter().map(Suboption::encoded_len).sum::<usize>();
        if len > MAX_OPTIONS_LEN {
            return Err(EncodeError::TooLong { len });
        }
        Ok(SynOption::new_unchecked(suboptions))
    }

    fn new_unchecked(suboptions: Vec<Suboption>) -> SynOption {
        let teps = suboptions
            .iter()
            .filter_map(Suboption::tep_suboption)
            .collect();
        SynOption { suboptions, teps }
    }

    /// The suboptions in wire order, including ignored extra global ones.
    pub fn suboptions(&self) -> &[Suboption] {
        &self.suboptions
    }

    /// The first global suboption, if the option carries one.
    pub fn explicit_global(&self) -> Option<GlobalSuboption> {
        self.suboptions.iter().find_map(|s| match s {
            Suboption::Global(g) => Some(*g),
            _ => None,
        })
    }

    /// The global suboption in force: the first one, or the implicit 0x00.
    pub fn global(&self) -> GlobalSuboption {
        self.explicit_global().unwrap_or(GlobalSuboption::IMPLICIT)
    }

    /// The TEP suboptions in wire order.
    pub fn teps(&self) -> &[TepSuboption] {
        &self.teps
    }

    /// Whether the option offers no TEP at all (a "vacuous" ENO option,
    /// RFC 8547 section 4.6), which rules out any negotiated TEP.
    pub fn is_vacuous(&self) -> bool {
        self.teps.is_empty()
    }

    /// Length of the encoded option, kind and length bytes included.
    pub fn encoded_len(&self) -> usize {
        2 + self
            .suboptions
            .iter()
            .map(Suboption::encoded_len)
            .sum::<usize>()
    }

    /// Appends the encoded option (kind, length, contents) to `out`.
    ///
    /// Options longer than 255 bytes cannot exist: parsing reads at most
    /// 255 and building stops at [`MAX_OPTIONS_LEN`].
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(ENO_KIND);
        out.push(u8::try_from(self.encoded_len()).unwrap_or(u8::MAX));
        for sub in &self.suboptions {
            match sub {
                Suboption::Global(g) => out.push(g.to_byte()),
                Suboption::Tep(id) => out.push(TepByte::new(*id, false).to_byte()),
                Suboption::TepWithLength { id, data } => {
                    // `from_suboptions` and `parse` guarantee 1..=32 bytes.
                    let nnnnn = u8::try_from(data.len().saturating_sub(1)).unwrap_or(0);
                    out.push(LENGTH_BYTE_TAG | (nnnnn & LENGTH_BITS));
                    out.push(TepByte::new(*id, true).to_byte());
                    out.extend_from_slice(data);
                }
                Suboption::TepToEnd { id, data } => {
                    out.push(TepByte::new(*id, true).to_byte());
                    out.extend_from_slice(data);
                }
            }
        }
    }

    /// The encoded option.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.emit(&mut out);
        out
    }
}
