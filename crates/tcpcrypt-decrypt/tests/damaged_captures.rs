//! Truncated and corrupted captures and key logs give errors and reports,
//! never panics: a capture of a tcpcrypt-looking connection (ENO options in
//! both SYNs, an Init1-shaped start, frame-shaped data) is cut and flipped
//! at random and pushed through reading, decryption and writing.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use tcpcrypt_decrypt::{Capture, KeyLog, Outcome, Record, decrypt};
use tcpcrypt_engine::wire::ip::IpLayer;
use tcpcrypt_engine::wire::{Packet, TcpFlags, TcpOption, TcpRepr};

fn segment(
    from_client: bool,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    eno: Option<Vec<u8>>,
    payload: &[u8],
) -> Record {
    let (c, s): (IpAddr, IpAddr) = (
        Ipv4Addr::new(10, 0, 0, 1).into(),
        Ipv4Addr::new(10, 0, 0, 2).into(),
    );
    let (src, dst, sp, dp) = if from_client {
        (c, s, 40000, 80)
    } else {
        (s, c, 80, 40000)
    };
    let mut options = vec![TcpOption::Mss(1460)];
    if let Some(data) = eno {
        options.push(TcpOption::Other { kind: 69, data });
    }
    let packet = Packet {
        ip: IpLayer::new_minimal(src, dst),
        tcp: TcpRepr {
            src_port: sp,
            dst_port: dp,
            seq,
            ack,
            flags,
            window: 1000,
            urgent: 0,
            options,
            payload: payload.to_vec().into(),
        },
    };
    let mut data = vec![0u8; 12];
    data.extend_from_slice(&[0x08, 0x00]);
    data.extend_from_slice(&packet.to_bytes().expect("emit"));
    Record {
        ts_sec: 1,
        ts_usec: 2,
        orig_len: data.len() as u32,
        data,
    }
}

/// A handshake and a little data of an X25519 tcpcrypt connection (the
/// messages are shaped right; their keys are nobody's).
fn sample() -> Vec<u8> {
    let syn = TcpFlags::SYN;
    let ack = TcpFlags::ACK;
    let mut init1 = 0x1510_1a0e_u32.to_be_bytes().to_vec();
    init1.extend_from_slice(&(9u32 + 2 + 32 + 32).to_be_bytes());
    init1.extend_from_slice(&[1, 0, 1]);
    init1.extend_from_slice(&[7; 64]);
    let mut init2 = 0x0971_05e0_u32.to_be_bytes().to_vec();
    init2.extend_from_slice(&(10u32 + 32 + 32).to_be_bytes());
    init2.extend_from_slice(&[0, 1]);
    init2.extend_from_slice(&[8; 64]);
    let mut frame = vec![0u8, 0, 20];
    frame.extend_from_slice(&[9; 20]);
    let mut reply = init2.clone();
    reply.extend_from_slice(&frame);
    let records = vec![
        segment(true, 100, 0, syn, Some(vec![0x23]), &[]),
        segment(false, 500, 101, syn | ack, Some(vec![0x01, 0x23]), &[]),
        segment(true, 101, 501, ack, Some(vec![]), &init1),
        segment(false, 501, 101 + init1.len() as u32, ack, None, &reply),
        segment(
            true,
            101 + init1.len() as u32,
            501 + reply.len() as u32,
            ack | TcpFlags::FIN,
            None,
            &frame,
        ),
    ];
    Capture {
        linktype: 1,
        records,
        damage: None,
    }
    .to_pcap()
    .expect("pcap")
}

fn keylog() -> KeyLog {
    KeyLog::parse(&format!(
        "TCPCRYPT_SS 23{} {}\nTCPCRYPT_ES 23{} {}\n",
        "11".repeat(32),
        "22".repeat(32),
        "11".repeat(32),
        "33".repeat(32)
    ))
    .expect("key log")
}

fn run(bytes: &[u8]) {
    if let Ok(capture) = Capture::read(bytes) {
        let result = decrypt(&capture, &keylog());
        for c in &result.connections {
            // No key fits: nothing may come out decrypted.
            assert!(
                !matches!(c.outcome, Outcome::Decrypted { .. }),
                "{:?}",
                c.outcome
            );
        }
        result.output.to_pcap().expect("write");
    }
}

#[test]
fn the_sample_is_read_and_reported_not_decrypted() {
    let capture = Capture::read(&sample()).expect("read");
    assert_eq!(capture.records.len(), 5);
    let result = decrypt(&capture, &keylog());
    assert_eq!(result.connections.len(), 1);
    // It got as far as looking for keys: tcpcrypt was negotiated.
    match &result.connections[0].outcome {
        Outcome::NotDecrypted(why) => assert!(why.contains("no key-log entry"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(result.output.records, capture.records, "copied as captured");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn truncated_captures_never_panic(cut in 0usize..2000) {
        let bytes = sample();
        run(&bytes[..cut.min(bytes.len())]);
    }

    #[test]
    fn corrupted_captures_never_panic(flips in proptest::collection::vec((0usize..2000, any::<u8>()), 1..12)) {
        let mut bytes = sample();
        let len = bytes.len();
        for (at, x) in flips {
            bytes[at % len] ^= x | 1;
        }
        run(&bytes);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        run(&bytes);
        let _ = KeyLog::parse(&String::from_utf8_lossy(&bytes));
    }
}
