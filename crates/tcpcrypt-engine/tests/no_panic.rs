//! No packet, however malformed or hostile, may panic the engine.

#![allow(clippy::unwrap_used)]

mod harness;

use std::time::Duration;

use harness::{Side, Sim};
use proptest::prelude::*;
use tcpcrypt_engine::wire::{IpLayer, Packet, TcpFlags, TcpOption, TcpRepr};
use tcpcrypt_engine::{Direction, Verdict};

fn established() -> Sim {
    let mut sim = Sim::v4();
    sim.connect();
    sim.a.kernel.write(&[7u8; 3000]);
    sim.a.kernel.push();
    sim.run();
    sim
}

fn arb_option() -> impl Strategy<Value = TcpOption> {
    prop_oneof![
        Just(TcpOption::Nop),
        any::<u16>().prop_map(TcpOption::Mss),
        any::<u8>().prop_map(TcpOption::WindowScale),
        Just(TcpOption::SackPermitted),
        proptest::collection::vec((any::<u32>(), any::<u32>()), 1..4).prop_map(TcpOption::Sack),
        (any::<u32>(), any::<u32>())
            .prop_map(|(tsval, tsecr)| TcpOption::Timestamps { tsval, tsecr }),
        proptest::collection::vec(any::<u8>(), 0..12)
            .prop_map(|data| TcpOption::Other { kind: 69, data }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn arbitrary_bytes_never_panic_and_unparsable_ones_pass(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        inbound in any::<bool>(),
    ) {
        let mut e = harness::engine(9);
        let dir = if inbound { Direction::Inbound } else { Direction::Outbound };
        let mut buf = bytes.clone();
        let v = e.handle_packet(std::time::Instant::now(), dir, &mut buf);
        if Packet::parse(&bytes).is_err() {
            prop_assert_eq!(v, Verdict::Accept);
            prop_assert_eq!(buf, bytes);
        }
    }

    #[test]
    fn mutated_packets_of_a_live_connection_never_panic(
        picks in proptest::collection::vec((any::<prop::sample::Index>(), 0usize..120, any::<u8>(), any::<bool>()), 1..40),
    ) {
        let mut sim = established();
        let recorded: Vec<(Side, Vec<u8>)> = sim.tap.clone();
        let now = sim.now;
        for (which, at, value, to_a) in picks {
            let (from, mut p) = recorded[which.index(recorded.len())].clone();
            if let Some(b) = p.get_mut(at) { *b = value; }
            // Deliver to the receiving engine, or echo back to the sender.
            let side = if to_a { Side::A } else { Side::B };
            let dir = if side == from { Direction::Outbound } else { Direction::Inbound };
            let e = sim.host(side).engine.as_mut().unwrap();
            let _ = e.handle_packet(now, dir, &mut p);
            while e.poll_transmit().is_some() {}
        }
        sim.advance(Duration::from_secs(5));
    }

    #[test]
    fn arbitrary_segments_on_a_live_connection_never_panic(
        segs in proptest::collection::vec((
            any::<u32>(), any::<u32>(), any::<u16>(), any::<u16>(),
            proptest::collection::vec(arb_option(), 0..3),
            proptest::collection::vec(any::<u8>(), 0..200),
            any::<bool>(),
        ), 1..30),
    ) {
        let mut sim = established();
        let now = sim.now;
        let a = sim.a.kernel.local;
        let b = sim.a.kernel.remote;
        for (seq_delta, ack, flags, window, options, payload, inbound) in segs {
            let (src, dst, dir, isn) = if inbound {
                (b, a, Direction::Inbound, sim.b.kernel.isn)
            } else {
                (a, b, Direction::Outbound, sim.a.kernel.isn)
            };
            let p = Packet {
                ip: IpLayer::new_minimal(src.ip(), dst.ip()),
                tcp: TcpRepr {
                    src_port: src.port(),
                    dst_port: dst.port(),
                    // Mostly near the real sequence space, sometimes anywhere.
                    seq: if seq_delta % 4 == 0 { seq_delta } else { isn.wrapping_add(seq_delta % 20_000) },
                    ack,
                    flags: TcpFlags::from_bits(flags),
                    window,
                    urgent: 0,
                    options,
                    payload: payload.into(),
                },
            };
            let Ok(mut bytes) = p.to_bytes() else { continue };
            let e = sim.a.engine.as_mut().unwrap();
            let _ = e.handle_packet(now, dir, &mut bytes);
            while e.poll_transmit().is_some() {}
            let _ = e.lookup(a, b);
            let _ = e.connections().count();
        }
        sim.advance(Duration::from_secs(100));
    }
}
