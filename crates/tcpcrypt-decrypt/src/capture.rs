//! Capture files in and out, with pcap-parser (rusticata's maintained and
//! fuzzed parser): pcap (micro- or nanosecond, either byte order) and pcapng
//! are read; the output is always classic little-endian microsecond pcap,
//! which every tool reads.
//!
//! Reading never fails half-way in silence: records up to the first
//! damaged one are kept and [`Capture::damage`] says what was wrong after
//! them; only a file with no recognisable header is an error.

use pcap_parser::pcapng::Block;
use pcap_parser::{
    LegacyPcapBlock, LegacyPcapSlice, Linktype, PcapBlockOwned, PcapHeader, PcapNGSlice, ToVec,
};

/// Snap length written to the output header: large enough for any record
/// the decryptor makes (plaintext of a frame completed by one segment).
const OUTPUT_SNAPLEN: u32 = 262_144;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    #[error("not a pcap or pcapng file (no valid file header)")]
    NotACapture,
    #[error("record {record}: {what}")]
    Damaged { record: usize, what: String },
    #[error("the pcapng file mixes link types {0} and {1}; the output pcap can hold only one")]
    MixedLinkTypes(i32, i32),
    #[error("writing the output capture: {0}")]
    Write(String),
}

/// One captured packet, link-layer header included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub ts_sec: u32,
    pub ts_usec: u32,
    /// Length on the wire (may exceed `data` when the capture was cut).
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// A capture: one link type and its records in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// The pcap LINKTYPE_ value.
    pub linktype: i32,
    pub records: Vec<Record>,
    /// What stopped reading early, if anything did.
    pub damage: Option<CaptureError>,
}

fn write_error<E: std::fmt::Debug>(e: E) -> CaptureError {
    CaptureError::Write(format!("{e:?}"))
}

fn parse_error<E: std::fmt::Debug>(record: usize, e: E) -> CaptureError {
    CaptureError::Damaged {
        record,
        what: format!("unreadable ({e:?})"),
    }
}

impl Capture {
    /// Reads a pcap or pcapng file held in memory.
    pub fn read(bytes: &[u8]) -> Result<Capture, CaptureError> {
        if let Ok(slice) = PcapNGSlice::from_slice(bytes) {
            return Ok(read_pcapng(slice));
        }
        match LegacyPcapSlice::from_slice(bytes) {
            Ok(slice) => Ok(read_pcap(slice)),
            Err(_) => Err(CaptureError::NotACapture),
        }
    }

    /// The capture as classic pcap bytes.
    pub fn to_pcap(&self) -> Result<Vec<u8>, CaptureError> {
        let mut header = PcapHeader::new();
        header.snaplen = OUTPUT_SNAPLEN;
        header.network = Linktype(self.linktype);
        let mut out = header.to_vec().map_err(write_error)?;
        for r in &self.records {
            let caplen = u32::try_from(r.data.len())
                .map_err(|_| CaptureError::Write("record longer than 4 GiB".into()))?;
            let mut block = LegacyPcapBlock {
                ts_sec: r.ts_sec,
                ts_usec: r.ts_usec,
                caplen,
                origlen: r.orig_len.max(caplen),
                data: &r.data,
            };
            out.extend_from_slice(&block.to_vec().map_err(write_error)?);
        }
        Ok(out)
    }
}

fn read_pcap(slice: LegacyPcapSlice<'_>) -> Capture {
    let nanos = slice.header.is_nanosecond_precision();
    let mut cap = Capture {
        linktype: slice.header.network.0,
        records: Vec::new(),
        damage: None,
    };
    for (index, block) in slice.enumerate() {
        match block {
            Ok(PcapBlockOwned::Legacy(b)) => {
                let data = b.data.get(..b.caplen as usize).unwrap_or(b.data);
                cap.records.push(Record {
                    ts_sec: b.ts_sec,
                    ts_usec: if nanos { b.ts_usec / 1000 } else { b.ts_usec },
                    orig_len: b.origlen,
                    data: data.to_vec(),
                });
            }
            Ok(_) => {}
            Err(e) => {
                cap.damage = Some(parse_error(index + 1, e));
                break;
            }
        }
    }
    cap
}

/// An interface of a pcapng section: link type and time base.
struct Interface {
    linktype: i32,
    units_per_second: u64,
    offset_seconds: i64,
}

fn units_per_second(tsresol: u8) -> Option<u64> {
    let exp = u32::from(tsresol & 0x7f);
    if tsresol & 0x80 == 0 {
        10u64.checked_pow(exp)
    } else {
        1u64.checked_shl(exp)
    }
}

fn read_pcapng(slice: PcapNGSlice<'_>) -> Capture {
    let mut cap = Capture {
        linktype: 1,
        records: Vec::new(),
        damage: None,
    };
    let mut linktype: Option<i32> = None;
    let mut interfaces: Vec<Interface> = Vec::new();
    for (index, block) in slice.enumerate() {
        let record = index + 1;
        let block = match block {
            Ok(PcapBlockOwned::NG(b)) => b,
            Ok(_) => continue,
            Err(e) => {
                cap.damage = Some(parse_error(record, e));
                break;
            }
        };
        let damaged = |what: &str| CaptureError::Damaged {
            record,
            what: what.to_string(),
        };
        match block {
            Block::SectionHeader(_) => interfaces.clear(),
            Block::InterfaceDescription(idb) => {
                let Some(units) = units_per_second(idb.if_tsresol).filter(|u| *u > 0) else {
                    cap.damage = Some(damaged("interface with an impossible time resolution"));
                    break;
                };
                match linktype {
                    Some(l) if l != idb.linktype.0 => {
                        cap.damage = Some(CaptureError::MixedLinkTypes(l, idb.linktype.0));
                        break;
                    }
                    _ => linktype = Some(idb.linktype.0),
                }
                interfaces.push(Interface {
                    linktype: idb.linktype.0,
                    units_per_second: units,
                    offset_seconds: idb.if_tsoffset,
                });
            }
            Block::EnhancedPacket(epb) => {
                let Some(iface) = interfaces.get(epb.if_id as usize) else {
                    cap.damage = Some(damaged("packet names an interface not described"));
                    break;
                };
                let ts = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                let secs =
                    (ts / iface.units_per_second).saturating_add_signed(iface.offset_seconds);
                let frac = u128::from(ts % iface.units_per_second) * 1_000_000
                    / u128::from(iface.units_per_second);
                let data = epb.data.get(..epb.caplen as usize).unwrap_or(epb.data);
                cap.records.push(Record {
                    ts_sec: u32::try_from(secs).unwrap_or(u32::MAX),
                    ts_usec: u32::try_from(frac).unwrap_or(0),
                    orig_len: epb.origlen,
                    data: data.to_vec(),
                });
            }
            Block::SimplePacket(spb) => {
                if interfaces.is_empty() {
                    cap.damage = Some(damaged("packet before any interface description"));
                    break;
                }
                cap.records.push(Record {
                    ts_sec: 0,
                    ts_usec: 0,
                    orig_len: spb.origlen,
                    data: spb.data.to_vec(),
                });
            }
            _ => {}
        }
    }
    if let Some(first) = interfaces.first().map(|i| i.linktype).or(linktype) {
        cap.linktype = first;
    }
    cap
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Capture {
        Capture {
            linktype: 101,
            records: vec![
                Record {
                    ts_sec: 5,
                    ts_usec: 7,
                    orig_len: 3,
                    data: vec![0x45, 0, 0],
                },
                Record {
                    ts_sec: 6,
                    ts_usec: 999_999,
                    orig_len: 40,
                    data: vec![0x60; 40],
                },
            ],
            damage: None,
        }
    }

    #[test]
    fn pcap_round_trips() {
        let bytes = sample().to_pcap().unwrap();
        assert_eq!(Capture::read(&bytes).unwrap(), sample());
    }

    #[test]
    fn pcapng_with_nanosecond_stamps_is_read() {
        use pcap_parser::pcapng::{
            EnhancedPacketBlock, InterfaceDescriptionBlock, SectionHeaderBlock,
        };
        let mut shb = SectionHeaderBlock {
            block_type: 0,
            block_len1: 0,
            bom: 0,
            major_version: 1,
            minor_version: 0,
            section_len: -1,
            options: Vec::new(),
            block_len2: 0,
        };
        let mut idb = InterfaceDescriptionBlock {
            block_type: 0,
            block_len1: 0,
            linktype: Linktype(101),
            reserved: 0,
            snaplen: 65535,
            options: Vec::new(),
            block_len2: 0,
            if_tsresol: 9,
            if_tsoffset: 0,
        };
        let ts: u64 = 5_000_000_000 + 123_456_789;
        let data = [0x45u8, 1, 2, 3, 4];
        let mut epb = EnhancedPacketBlock {
            block_type: 0,
            block_len1: 0,
            if_id: 0,
            ts_high: (ts >> 32) as u32,
            ts_low: ts as u32,
            caplen: 5,
            origlen: 60,
            data: &data,
            options: Vec::new(),
            block_len2: 0,
        };
        let mut bytes = shb.to_vec().unwrap();
        bytes.extend(idb.to_vec().unwrap());
        bytes.extend(epb.to_vec().unwrap());
        let cap = Capture::read(&bytes).unwrap();
        assert_eq!(cap.damage, None);
        assert_eq!(cap.linktype, 101);
        assert_eq!(
            cap.records,
            vec![Record {
                ts_sec: 5,
                ts_usec: 123_456,
                orig_len: 60,
                data: data.to_vec(),
            }]
        );
        // A packet naming an interface that was never described.
        epb.if_id = 3;
        bytes.extend(epb.to_vec().unwrap());
        let cap = Capture::read(&bytes).unwrap();
        assert_eq!(cap.records.len(), 1);
        assert!(matches!(
            cap.damage,
            Some(CaptureError::Damaged { record: 4, .. })
        ));
    }

    #[test]
    fn a_cut_record_is_reported_after_the_good_ones() {
        let bytes = sample().to_pcap().unwrap();
        let cut = Capture::read(&bytes[..bytes.len() - 5]).unwrap();
        assert_eq!(cut.records.len(), 1);
        assert!(cut.damage.is_some());
        assert_eq!(Capture::read(b"hello"), Err(CaptureError::NotACapture));
    }
}
