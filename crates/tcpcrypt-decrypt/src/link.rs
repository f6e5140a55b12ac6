//! Link-layer headers in front of the IP packet, for the link types
//! captures of Linux hosts come in. The decryptor keeps the link header of
//! each record as it was and replaces only the IP packet behind it.

/// LINKTYPE_ values handled.
const NULL: i32 = 0;
const ETHERNET: i32 = 1;
const RAW: i32 = 101;
const LOOP: i32 = 108;
const LINUX_SLL: i32 = 113;
const IPV4: i32 = 228;
const IPV6: i32 = 229;
const LINUX_SLL2: i32 = 276;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: [u16; 3] = [0x8100, 0x88a8, 0x9100];

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

/// Whether the decryptor knows `linktype` at all.
pub fn supported(linktype: i32) -> bool {
    matches!(
        linktype,
        NULL | ETHERNET | RAW | LOOP | LINUX_SLL | IPV4 | IPV6 | LINUX_SLL2
    )
}

/// Length of the link-layer header of `record` when an IP packet follows
/// it; `None` for anything else (ARP, unknown link types, cut records).
pub fn ip_offset(linktype: i32, record: &[u8]) -> Option<usize> {
    let ip_ethertype = |t: u16| t == ETHERTYPE_IPV4 || t == ETHERTYPE_IPV6;
    let offset = match linktype {
        RAW | IPV4 | IPV6 => 0,
        NULL | LOOP => 4,
        ETHERNET => {
            let mut at = 12;
            let mut ethertype = be16(record, at)?;
            while ETHERTYPE_VLAN.contains(&ethertype) {
                at += 4;
                ethertype = be16(record, at)?;
            }
            if !ip_ethertype(ethertype) {
                return None;
            }
            at + 2
        }
        LINUX_SLL => ip_ethertype(be16(record, 14)?).then_some(16)?,
        LINUX_SLL2 => ip_ethertype(be16(record, 0)?).then_some(20)?,
        _ => return None,
    };
    let version = record.get(offset)? >> 4;
    (version == 4 || version == 6).then_some(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_ip_behind_ethernet_vlan_and_sll() {
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x81, 0x00, 0, 5, 0x08, 0x00, 0x45]);
        assert_eq!(ip_offset(ETHERNET, &eth), Some(18));
        let mut arp = vec![0u8; 12];
        arp.extend_from_slice(&[0x08, 0x06, 0x45]);
        assert_eq!(ip_offset(ETHERNET, &arp), None);
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x86, 0xdd, 0x60]);
        assert_eq!(ip_offset(LINUX_SLL, &sll), Some(16));
        assert_eq!(ip_offset(RAW, &[0x45]), Some(0));
        assert_eq!(ip_offset(RAW, &[]), None);
        assert_eq!(ip_offset(999, &[0x45]), None);
    }
}
