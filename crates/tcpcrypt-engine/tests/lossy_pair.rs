//! The simulated pair under random loss, duplication and reordering, as
//! property tests. Whatever the schedule, each application must get
//! exactly the bytes the other wrote, both ends must agree on the session,
//! and no plaintext may cross the wire.
//!
//! The kernels retransmit on their own timer (`Kernel::retransmit`) and
//! the engines on theirs; `Sim::drive` moves simulated time from one
//! deadline to the next. Loss is random but fair: a given segment is lost
//! at most [`MAX_LOSSES_PER_SEGMENT`] times, so every timer eventually
//! wins. Giving up (handshake timeout, Init retries exhausted) has its own
//! tests; here it would only be noise.

#![allow(clippy::unwrap_used)]

mod harness;

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use harness::{Fate, Side, Sim, WireFilter};
use proptest::prelude::*;
use tcpcrypt_engine::wire::{Packet, TcpFlags, TcpOption};
use tcpcrypt_engine::{EngineConfig, Event, Lookup, SessionInfo};
use tcpcrypt_proto::{Aead, Role, Tep};

/// Linux's smallest retransmission timeout.
const KERNEL_RTO: Duration = Duration::from_millis(200);
/// Simulated time a case may take: below the engine's handshake timeout
/// (75 s), so a stalled handshake fails the case instead of being
/// forgotten.
const TIME_LIMIT: Duration = Duration::from_secs(60);
const MAX_LOSSES_PER_SEGMENT: u8 = 3;

/// SplitMix64: small, seedable, and good enough to schedule impairments.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Chances in percent that a packet sent one way is lost, delivered
/// twice, held back until the wire is otherwise quiet (reordered), or
/// held back until after the next timeout (stale).
#[derive(Clone, Copy, Debug)]
struct Impairments {
    drop: u8,
    duplicate: u8,
    delay: u8,
    late: u8,
}

#[derive(Clone, Debug)]
struct Schedule {
    from_a: Impairments,
    from_b: Impairments,
    seed: u64,
}

/// What identifies a segment across retransmissions: timestamps change
/// every time, so options are left out.
type SegmentKey = (bool, u32, u32, u16, Vec<u8>);

impl Schedule {
    /// A wire filter playing this schedule while `on` is set.
    fn filter(&self, on: Rc<Cell<bool>>) -> WireFilter {
        let (from_a, from_b) = (self.from_a, self.from_b);
        let mut rng = SplitMix(self.seed);
        let mut losses: HashMap<SegmentKey, u8> = HashMap::new();
        Box::new(move |from, p| {
            if !on.get() {
                return Fate::Pass;
            }
            let imp = match from {
                Side::A => from_a,
                Side::B => from_b,
            };
            let roll = (rng.next() % 100) as u8;
            if roll < imp.drop {
                let Ok(pkt) = Packet::parse(p) else {
                    return Fate::Drop;
                };
                let t = pkt.tcp;
                let key = (
                    from == Side::A,
                    t.seq,
                    t.ack,
                    t.flags.bits(),
                    t.payload.to_vec(),
                );
                let lost = losses.entry(key).or_default();
                if *lost < MAX_LOSSES_PER_SEGMENT {
                    *lost += 1;
                    return Fate::Drop;
                }
                return Fate::Pass;
            }
            let mut roll = roll - imp.drop;
            for (chance, fate) in [
                (imp.duplicate, Fate::Duplicate),
                (imp.delay, Fate::Delay),
                (imp.late, Fate::Late),
            ] {
                if roll < chance {
                    return fate;
                }
                roll -= chance;
            }
            Fate::Pass
        })
    }
}

/// What one kernel puts in its SYN.
#[derive(Clone, Copy, Debug)]
struct SynChoice {
    mss: u16,
    sack: bool,
    timestamps: bool,
}

/// Everything about a case that is not the wire's doing.
#[derive(Clone, Debug)]
struct Setup {
    v6: bool,
    tep: Tep,
    aead: Aead,
    isns: (u32, u32),
    syns: (SynChoice, SynChoice),
    engine_seeds: (u64, u64),
    /// Largest segment each kernel hands its engine at once (0: one MSS),
    /// and whether receivers merge in-order segments (GRO).
    gso: (usize, usize),
    gro: bool,
}

impl Setup {
    fn sim(&self) -> Sim {
        let mut sim = if self.v6 { Sim::v6() } else { Sim::v4() };
        let config = EngineConfig {
            teps: vec![self.tep],
            aeads: vec![self.aead],
            ..EngineConfig::default()
        };
        sim.a.engine = Some(harness::engine_with(self.engine_seeds.0, config.clone()));
        sim.b.engine = Some(harness::engine_with(self.engine_seeds.1, config));
        self.set_kernels(&mut sim);
        sim.gro = self.gro;
        sim
    }

    /// Applies the ISNs and SYN options to the current pair of kernels.
    fn set_kernels(&self, sim: &mut Sim) {
        for (k, isn, syn, gso) in [
            (&mut sim.a.kernel, self.isns.0, self.syns.0, self.gso.0),
            (&mut sim.b.kernel, self.isns.1, self.syns.1, self.gso.1),
        ] {
            k.isn = isn;
            k.gso = gso;
            k.mss = usize::from(syn.mss);
            k.syn_options = harness::default_syn_options(syn.mss);
            k.syn_options.retain(|o| match o {
                TcpOption::SackPermitted => syn.sack,
                TcpOption::Timestamps { .. } => syn.timestamps,
                _ => true,
            });
        }
    }
}

fn impairments(max_drop: u8, max_other: u8) -> impl Strategy<Value = Impairments> {
    (0..=max_drop, 0..=max_other, 0..=max_other, 0..=max_other).prop_map(
        |(drop, duplicate, delay, late)| Impairments {
            drop,
            duplicate,
            delay,
            late,
        },
    )
}

fn schedule(max_drop: u8, max_other: u8) -> impl Strategy<Value = Schedule> {
    (
        impairments(max_drop, max_other),
        impairments(max_drop, max_other),
        any::<u64>(),
    )
        .prop_map(|(from_a, from_b, seed)| Schedule {
            from_a,
            from_b,
            seed,
        })
}

fn syn_choice() -> impl Strategy<Value = SynChoice> {
    (
        prop::sample::select(vec![536u16, 1220, 1460, 8960]),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(mss, sack, timestamps)| SynChoice {
            mss,
            sack,
            timestamps,
        })
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        any::<bool>(),
        prop::sample::select(Tep::ALL.to_vec()),
        prop::sample::select(Aead::ALL.to_vec()),
        any::<(u32, u32)>(),
        (syn_choice(), syn_choice()),
        any::<(u64, u64)>(),
        (gso_choice(), gso_choice(), any::<bool>()),
    )
        .prop_map(
            |(v6, tep, aead, isns, syns, engine_seeds, (ga, gb, gro))| Setup {
                v6,
                tep,
                aead,
                isns,
                syns,
                engine_seeds,
                gso: (ga, gb),
                gro,
            },
        )
}

fn gso_choice() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![0usize, 0, 6000, 20_000, 64_000])
}

/// Application data: pseudo-random bytes with `marker` at the start of
/// every 256-byte block, so plaintext on the wire is easy to spot.
fn app_data(len: usize, seed: u64, marker: &[u8]) -> Vec<u8> {
    let mut rng = SplitMix(seed);
    let mut data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    for block in data.chunks_mut(256) {
        if block.len() >= marker.len() {
            block[..marker.len()].copy_from_slice(marker);
        }
    }
    data
}

const MARKER_A: &[u8] = b"<plaintext A->B>";
const MARKER_B: &[u8] = b"<plaintext B->A>";

/// A side's slot in the per-side arrays.
fn index(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

/// How the two engines' answers fit together: `Ok(Some(_))` for the same
/// session with roles A and B (A's view), `Ok(None)` for plain TCP on both
/// ends, an error for anything else (one end encrypted and the other not,
/// different sessions, a handshake still pending).
fn agreed_outcome(sim: &Sim) -> Result<Option<SessionInfo>, String> {
    match (sim.lookup(Side::A), sim.lookup(Side::B)) {
        (Lookup::Tcpcrypt(a), Lookup::Tcpcrypt(b)) => {
            if a.session_id != b.session_id || (a.role, b.role) != (Role::A, Role::B) {
                return Err(format!("different sessions: {a:?} / {b:?}"));
            }
            if (a.tep, a.aead, a.resumed) != (b.tep, b.aead, b.resumed) {
                return Err(format!("different parameters: {a:?} / {b:?}"));
            }
            Ok(Some(a))
        }
        (Lookup::Plain(_), Lookup::Plain(_)) => Ok(None),
        (a, b) => Err(format!("mismatched ends: A {a:?}, B {b:?}")),
    }
}

/// One line on where a case stood when it failed.
fn state(sim: &Sim) -> String {
    let k = |s: &Sim, side| {
        let k = match side {
            Side::A => &s.a.kernel,
            Side::B => &s.b.kernel,
        };
        format!(
            "{side:?}: est={} sent={} una={} fin={:?} got={} fin_in={} rst={}",
            k.established,
            k.send_buf.len(),
            k.snd_una,
            k.fin_sent_at,
            k.received.len(),
            k.fin_received,
            k.rst_received
        )
    };
    format!(
        "{} | {} | A {:?} | B {:?} | {} packets",
        k(sim, Side::A),
        k(sim, Side::B),
        sim.lookup(Side::A),
        sim.lookup(Side::B),
        sim.tap.len()
    )
}

fn aborts(sim: &Sim) -> Vec<&Event> {
    sim.a
        .events
        .iter()
        .chain(&sim.b.events)
        .filter(|e| matches!(e, Event::Aborted { .. }))
        .collect()
}

fn wire_carries(sim: &Sim, side: Side, marker: &[u8]) -> bool {
    sim.wire_payloads(side)
        .windows(marker.len())
        .any(|w| w == marker)
}

/// When an application closes its socket.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Close {
    Never,
    AfterWriting,
    AfterPeerFin,
}

/// Plays both applications: each writes its data once its kernel is
/// established (host A's may well be before the keys exist), then closes
/// as `close` says.
fn applications(data: [Vec<u8>; 2], close: [Close; 2]) -> impl FnMut(&mut Sim) {
    let mut written = [false; 2];
    let mut closed = [false; 2];
    move |sim| {
        for side in [Side::A, Side::B] {
            let i = index(side);
            let k = &mut sim.host(side).kernel;
            if !k.established {
                continue;
            }
            if !written[i] {
                written[i] = true;
                k.write(&data[i]);
                k.push();
            }
            let close_now = match close[i] {
                Close::Never => false,
                Close::AfterWriting => true,
                Close::AfterPeerFin => k.fin_received,
            };
            if close_now && !closed[i] {
                closed[i] = true;
                k.close();
            }
        }
    }
}

/// Each kernel got all the other wrote and knows all its own was received.
fn transfer_done(sim: &Sim, data: &[Vec<u8>; 2]) -> bool {
    [Side::A, Side::B].into_iter().all(|side| {
        let k = match side {
            Side::A => &sim.a.kernel,
            Side::B => &sim.b.kernel,
        };
        k.established
            && k.send_buf.len() == data[index(side)].len()
            && k.all_acked()
            && k.received.len() >= data[index(side.other())].len()
    }) && sim.lookup(Side::A) != Lookup::Pending
        && sim.lookup(Side::B) != Lookup::Pending
}

/// The checks every case ends with: exact data both ways, no reset, and
/// either one session on both ends with the parameters in `session` and no
/// plaintext on the wire, or (`session` is `None`) plain TCP on both ends.
/// The wire never changes a packet it delivers, so it can never turn one
/// outcome into the other.
fn check_exchange(
    sim: &Sim,
    data: &[Vec<u8>; 2],
    session: Option<(Tep, Aead)>,
) -> Result<(), TestCaseError> {
    prop_assert!(
        sim.b.kernel.received == data[0],
        "B got {} bytes, not A's {}",
        sim.b.kernel.received.len(),
        data[0].len()
    );
    prop_assert!(
        sim.a.kernel.received == data[1],
        "A got {} bytes, not B's {}",
        sim.a.kernel.received.len(),
        data[1].len()
    );
    let outcome = agreed_outcome(sim).map_err(TestCaseError::fail)?;
    match (outcome, session) {
        (Some(info), Some(expected)) => {
            prop_assert_eq!((info.tep, info.aead), expected);
            prop_assert!(
                !wire_carries(sim, Side::A, MARKER_A),
                "A's plaintext on the wire"
            );
            prop_assert!(
                !wire_carries(sim, Side::B, MARKER_B),
                "B's plaintext on the wire"
            );
        }
        (None, None) => {}
        (outcome, _) => prop_assert!(false, "expected {:?}, got {:?}", session, outcome),
    }
    prop_assert!(aborts(sim).is_empty(), "aborted: {:?}", aborts(sim));
    prop_assert!(!sim.a.kernel.rst_received && !sim.b.kernel.rst_received);
    Ok(())
}

/// One application resets its connection (right after writing more, so
/// the reset may overtake data the wire loses) while the other still has
/// data in flight: the other must learn of it well within the cleanup
/// delay, after which the resetter's engine forgets the connection and
/// its kernel would answer by itself. As with TCP, an idle peer would
/// learn nothing, hence the data in flight.
fn reset_case(
    sim: &mut Sim,
    schedule: &Schedule,
    lens: (usize, usize),
    more: (usize, usize),
    data_seed: u64,
    resetter: Side,
) -> Result<(), TestCaseError> {
    let data = [
        app_data(lens.0, data_seed, MARKER_A),
        app_data(lens.1, !data_seed, MARKER_B),
    ];
    sim.filter = Some(schedule.filter(Rc::new(Cell::new(true))));
    sim.a.kernel.connect();
    let app = applications(data.clone(), [Close::Never; 2]);
    let done = sim.drive(KERNEL_RTO, TIME_LIMIT, app, |s| transfer_done(s, &data));
    prop_assert!(done, "unfinished: {}", state(sim));
    let other = resetter.other();
    let (marker, other_marker) = match resetter {
        Side::A => (MARKER_A, MARKER_B),
        Side::B => (MARKER_B, MARKER_A),
    };
    let k = &mut sim.host(resetter).kernel;
    k.write(&app_data(more.0, data_seed ^ 1, marker));
    k.push();
    k.reset();
    let k = &mut sim.host(other).kernel;
    k.write(&app_data(more.1, data_seed ^ 2, other_marker));
    k.push();
    let told = sim.drive(
        KERNEL_RTO,
        Duration::from_secs(10),
        |_| {},
        |s| {
            let k = match other {
                Side::A => &s.a.kernel,
                Side::B => &s.b.kernel,
            };
            k.rst_received
        },
    );
    prop_assert!(told, "the reset never reached {:?}: {}", other, state(sim));
    prop_assert!(
        sim.host(other)
            .events
            .iter()
            .any(|e| matches!(e, Event::Aborted { .. })),
        "{:?}'s engine did not report the abort",
        other
    );
    for side in [Side::A, Side::B] {
        let written = sim.host(side.other()).kernel.send_buf.clone();
        let got = &sim.host(side).kernel.received;
        prop_assert!(
            written.starts_with(got),
            "{:?} got bytes never written",
            side
        );
    }
    prop_assert!(
        !wire_carries(sim, Side::A, MARKER_A),
        "A's plaintext on the wire"
    );
    prop_assert!(
        !wire_carries(sim, Side::B, MARKER_B),
        "B's plaintext on the wire"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn both_directions_arrive_exactly_and_encrypted_through_loss_duplication_and_reordering(
        schedule in schedule(20, 20),
        setup in setup(),
        lens in (0usize..40_000, 0usize..40_000),
        data_seed in any::<u64>(),
        resume in any::<bool>(),
    ) {
        let mut sim = setup.sim();
        if resume {
            // A clean first connection fills both resumption caches; the
            // impaired one after it resumes.
            sim.connect();
            prop_assert!(matches!(agreed_outcome(&sim), Ok(Some(_))));
            sim.next_connection(40001);
            setup.set_kernels(&mut sim);
        }
        let data = [
            app_data(lens.0, data_seed, MARKER_A),
            app_data(lens.1, !data_seed, MARKER_B),
        ];
        sim.filter = Some(schedule.filter(Rc::new(Cell::new(true))));
        sim.a.kernel.connect();
        let app = applications(data.clone(), [Close::Never; 2]);
        let done = sim.drive(KERNEL_RTO, TIME_LIMIT, app, |s| transfer_done(s, &data));
        prop_assert!(done, "unfinished: {}", state(&sim));
        check_exchange(&sim, &data, Some((setup.tep, setup.aead)))?;
        let resumed = agreed_outcome(&sim).ok().flatten().map(|i| i.resumed);
        prop_assert_eq!(resumed, Some(resume));
    }

    #[test]
    fn both_ends_close_cleanly_through_loss_duplication_and_reordering(
        schedule in schedule(20, 20),
        setup in setup(),
        lens in (0usize..20_000, 0usize..20_000),
        data_seed in any::<u64>(),
        first_closer in prop::sample::select(vec![Some(Side::A), Some(Side::B), None]),
    ) {
        let mut sim = setup.sim();
        let data = [
            app_data(lens.0, data_seed, MARKER_A),
            app_data(lens.1, !data_seed, MARKER_B),
        ];
        // `None`: both close as soon as they have written.
        let close = match first_closer {
            Some(Side::A) => [Close::AfterWriting, Close::AfterPeerFin],
            Some(Side::B) => [Close::AfterPeerFin, Close::AfterWriting],
            None => [Close::AfterWriting; 2],
        };
        sim.filter = Some(schedule.filter(Rc::new(Cell::new(true))));
        sim.a.kernel.connect();
        let app = applications(data.clone(), close);
        let closed = |s: &Sim| {
            transfer_done(s, &data)
                && s.a.kernel.fin_received
                && s.b.kernel.fin_received
                && [&s.a.events, &s.b.events]
                    .iter()
                    .all(|ev| ev.iter().any(|e| matches!(e, Event::Closed { .. })))
        };
        let done = sim.drive(KERNEL_RTO, TIME_LIMIT, app, closed);
        prop_assert!(done, "not closed: {}", state(&sim));
        check_exchange(&sim, &data, Some((setup.tep, setup.aead)))?;
        // Past the cleanup delay both engines have forgotten it.
        sim.advance(EngineConfig::default().cleanup_delay + Duration::from_secs(1));
        prop_assert_eq!(sim.a.engine.as_ref().unwrap().connection_count(), 0);
        prop_assert_eq!(sim.b.engine.as_ref().unwrap().connection_count(), 0);
    }

    #[test]
    fn a_reset_by_one_application_reaches_the_other_through_loss_duplication_and_reordering(
        schedule in schedule(20, 20),
        setup in setup(),
        lens in (0usize..10_000, 0usize..10_000),
        more in (0usize..10_000, 1usize..10_000),
        data_seed in any::<u64>(),
        resetter in prop::sample::select(vec![Side::A, Side::B]),
    ) {
        let mut sim = setup.sim();
        reset_case(&mut sim, &schedule, lens, more, data_seed, resetter)?;
    }

    #[test]
    fn a_failed_negotiation_leaves_both_ends_plain_through_loss_duplication_and_reordering(
        schedule in schedule(20, 20),
        setup in setup(),
        shift in 1usize..Tep::ALL.len(),
        lens in (0usize..20_000, 0usize..20_000),
        data_seed in any::<u64>(),
    ) {
        let mut sim = setup.sim();
        // No TEP in common: B cannot accept A's offer.
        let a_at = Tep::ALL.iter().position(|t| *t == setup.tep).unwrap();
        let b_tep = Tep::ALL[(a_at + shift) % Tep::ALL.len()];
        let b_config = EngineConfig {
            teps: vec![b_tep],
            ..EngineConfig::default()
        };
        sim.b.engine = Some(harness::engine_with(setup.engine_seeds.1, b_config));
        let data = [
            app_data(lens.0, data_seed, MARKER_A),
            app_data(lens.1, !data_seed, MARKER_B),
        ];
        sim.filter = Some(schedule.filter(Rc::new(Cell::new(true))));
        sim.a.kernel.connect();
        let app = applications(data.clone(), [Close::Never; 2]);
        let done = sim.drive(KERNEL_RTO, TIME_LIMIT, app, |s| transfer_done(s, &data));
        prop_assert!(done, "unfinished: {}", state(&sim));
        check_exchange(&sim, &data, None)?;
    }

    #[test]
    fn a_handshake_through_heavy_loss_ends_in_one_session_with_init_backoff(
        schedule in schedule(50, 10),
        setup in setup(),
    ) {
        let mut sim = setup.sim();
        // The wire is impaired only until both ends know the session.
        let impaired = Rc::new(Cell::new(true));
        sim.filter = Some(schedule.filter(impaired.clone()));
        sim.a.kernel.connect();
        let settled = |s: &Sim| {
            s.lookup(Side::A) != Lookup::Pending && s.lookup(Side::B) != Lookup::Pending
        };
        let watch = {
            let impaired = impaired.clone();
            move |s: &mut Sim| impaired.set(!settled(s))
        };
        let done = sim.drive(KERNEL_RTO, TIME_LIMIT, watch, settled);
        prop_assert!(done, "handshake unfinished: {}", state(&sim));
        impaired.set(false);
        let handshake_packets = sim.tap.len();
        let data = [
            app_data(3000, setup.engine_seeds.0, MARKER_A),
            app_data(3000, setup.engine_seeds.1, MARKER_B),
        ];
        let app = applications(data.clone(), [Close::Never; 2]);
        let done = sim.drive(KERNEL_RTO, TIME_LIMIT, app, |s| transfer_done(s, &data));
        prop_assert!(done, "unfinished after the handshake: {}", state(&sim));
        check_exchange(&sim, &data, Some((setup.tep, setup.aead)))?;
        // Each Init message (the only payload at wire offset 0) went out
        // at the engine's retransmission timeouts, doubling each time.
        let config = EngineConfig::default();
        for side in [Side::A, Side::B] {
            let isn = sim.host(side).kernel.isn.wrapping_add(1);
            let sent: Vec<_> = sim.tap[..handshake_packets]
                .iter()
                .zip(&sim.tap_times)
                .filter(|((s, p), _)| {
                    *s == side
                        && Packet::parse(p).is_ok_and(|p| {
                            p.tcp.seq == isn
                                && !p.tcp.payload.is_empty()
                                && !p.tcp.flags.contains(TcpFlags::SYN)
                        })
                })
                .map(|(_, t)| *t)
                .collect();
            prop_assert!(!sent.is_empty(), "{:?} sent no Init", side);
            prop_assert!(sent.len() <= 1 + config.init_max_retries as usize);
            for (k, pair) in sent.windows(2).enumerate() {
                prop_assert_eq!(
                    pair[1] - pair[0],
                    config.init_rto * (1u32 << k),
                    "{:?}'s Init retransmission {}", side, k + 1
                );
            }
        }
    }
}
