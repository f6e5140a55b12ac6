//! Finding the ENO option among the other TCP options of a segment.

use std::ops::Range;

use super::option::ENO_KIND;

const KIND_EOL: u8 = 0;
const KIND_NOP: u8 = 1;

/// What a segment's TCP options area holds in the way of ENO options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnoScan {
    /// No ENO option.
    None,
    /// Exactly one ENO option, at `range` of the options area (kind and
    /// length bytes included), so its bytes can be kept verbatim for the
    /// transcript.
    One(Range<usize>),
    /// Two or more ENO options. In a SYN this counts as no ENO option at all
    /// and disables ENO (RFC 8547 section 4.1); in any other segment it
    /// counts the same as one.
    Several,
}

impl EnoScan {
    /// Whether at least one ENO option is present (what matters for
    /// non-SYN segments).
    pub fn is_present(&self) -> bool {
        !matches!(self, EnoScan::None)
    }

    /// The single ENO option's bytes within `area`, as needed for a SYN.
    pub fn single<'a>(&self, area: &'a [u8]) -> Option<&'a [u8]> {
        match self {
            EnoScan::One(range) => area.get(range.clone()),
            EnoScan::None | EnoScan::Several => None,
        }
    }
}

/// Walks a TCP options area (the header bytes after the fixed 20) and
/// reports its ENO options.
///
/// The walk stops at End of Option List, and also at the first option whose
/// length byte is missing, below 2 or runs past the area, the way common
/// TCP stacks stop parsing options; ENO options before that point count, and
/// a truncated ENO option does not. Kind 253 options are never ENO here,
/// whatever their ExID.
pub fn scan_options(area: &[u8]) -> EnoScan {
    let mut found = EnoScan::None;
    let mut at = 0;
    while let Some(&kind) = area.get(at) {
        match kind {
            KIND_EOL => break,
            KIND_NOP => {
                at += 1;
                continue;
            }
            _ => {}
        }
        let Some(&len) = area.get(at + 1) else { break };
        let len = usize::from(len);
        if len < 2 || at + len > area.len() {
            break;
        }
        if kind == ENO_KIND {
            found = match found {
                EnoScan::None => EnoScan::One(at..at + len),
                EnoScan::One(_) | EnoScan::Several => EnoScan::Several,
            };
        }
        at += len;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_eno_between_other_options_with_its_exact_range() {
        // MSS 1460, NOP, NOP, SACK-permitted, ENO <0x23>, window scale 7.
        let area = [2, 4, 0x05, 0xb4, 1, 1, 4, 2, 69, 3, 0x23, 3, 3, 7, 0, 0];
        assert_eq!(scan_options(&area), EnoScan::One(8..11));
        assert_eq!(scan_options(&area).single(&area), Some(&[69, 3, 0x23][..]));
    }

    #[test]
    fn reports_none_without_eno() {
        assert_eq!(scan_options(&[2, 4, 0x05, 0xb4, 1, 0]), EnoScan::None);
        assert_eq!(scan_options(&[]), EnoScan::None);
    }

    #[test]
    fn reports_several_for_two_eno_options() {
        let area = [69, 3, 0x23, 1, 69, 2];
        assert_eq!(scan_options(&area), EnoScan::Several);
        assert_eq!(scan_options(&area).single(&area), None);
        assert!(scan_options(&area).is_present());
    }

    #[test]
    fn legacy_experimental_eno_is_not_eno() {
        // Kind 253 with ExID 0x454E ("EN") and a Curve25519 offer.
        assert_eq!(scan_options(&[253, 5, 0x45, 0x4e, 0x23]), EnoScan::None);
    }

    #[test]
    fn stops_at_end_of_option_list() {
        assert_eq!(scan_options(&[0, 69, 2]), EnoScan::None);
    }

    #[test]
    fn truncated_eno_option_is_not_counted() {
        assert_eq!(scan_options(&[1, 69, 5, 0x23]), EnoScan::None);
        assert_eq!(scan_options(&[69]), EnoScan::None);
    }

    #[test]
    fn stops_at_an_option_with_length_below_two() {
        assert_eq!(scan_options(&[69, 2, 8, 1, 69, 2]), EnoScan::One(0..2));
        assert_eq!(scan_options(&[8, 0, 69, 2]), EnoScan::None);
    }
}
