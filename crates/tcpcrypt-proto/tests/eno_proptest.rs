//! Property tests for the ENO codec and negotiation: round trips and
//! robustness against arbitrary bytes.

use proptest::prelude::*;
use tcpcrypt_proto::eno::{
    EnoConfig, EnoScan, GlobalSuboption, MAX_OPTIONS_LEN, PlainTeps, Suboption, SynOption, TepId,
    TepSuboption, negotiate, passive_reply, scan_options,
};

fn tep_id() -> impl Strategy<Value = TepId> {
    (0x20u8..=0x7f).prop_map(|v| TepId::new(v).expect("in range"))
}

fn global() -> impl Strategy<Value = GlobalSuboption> {
    (any::<bool>(), any::<bool>()).prop_map(|(b, a)| GlobalSuboption { b, a })
}

fn tep_suboption() -> impl Strategy<Value = TepSuboption> {
    prop_oneof![
        tep_id().prop_map(TepSuboption::plain),
        (tep_id(), prop::collection::vec(any::<u8>(), 1..=8))
            .prop_map(|(id, data)| TepSuboption::with_data(id, data)),
    ]
}

/// Any list of wire-form suboptions that encodes (at most one global, only
/// the last running to the end, within the option space).
fn valid_suboptions() -> impl Strategy<Value = Vec<Suboption>> {
    let middle = prop_oneof![
        tep_id().prop_map(Suboption::Tep),
        (tep_id(), prop::collection::vec(any::<u8>(), 1..=32))
            .prop_map(|(id, data)| Suboption::TepWithLength { id, data }),
    ];
    let last = prop::option::of(prop_oneof![
        tep_id().prop_map(Suboption::Tep),
        (tep_id(), prop::collection::vec(any::<u8>(), 0..=12))
            .prop_map(|(id, data)| Suboption::TepToEnd { id, data }),
    ]);
    (
        prop::option::of(global()),
        0..=7usize,
        prop::collection::vec(middle, 0..6),
        last,
    )
        .prop_map(|(g, global_at, mut subs, last)| {
            if let Some(g) = g {
                let at = global_at.min(subs.len());
                subs.insert(at, Suboption::Global(g));
            }
            subs.extend(last);
            subs
        })
        .prop_filter("fits the option space", |subs| {
            SynOption::from_suboptions(subs.clone()).is_ok()
        })
}

proptest! {
    #[test]
    fn parse_of_emit_is_identity(subs in valid_suboptions()) {
        let option = SynOption::from_suboptions(subs).expect("filtered to valid");
        let bytes = option.to_bytes();
        prop_assert!(bytes.len() <= MAX_OPTIONS_LEN);
        prop_assert_eq!(SynOption::parse(&bytes), Ok(option));
    }

    #[test]
    fn offer_round_trips_global_and_teps(
        g in prop::option::of(global()),
        teps in prop::collection::vec(tep_suboption(), 0..5),
    ) {
        if let Ok(option) = SynOption::offer(g, &teps) {
            let parsed = SynOption::parse(&option.to_bytes()).expect("emitted options parse");
            prop_assert_eq!(parsed.explicit_global(), g);
            prop_assert_eq!(parsed.teps(), &teps[..]);
        }
    }

    #[test]
    fn parse_never_panics_and_accepted_bytes_reencode_to_the_same_meaning(
        bytes in prop::collection::vec(any::<u8>(), 0..48),
        fix_header in any::<bool>(),
    ) {
        let mut bytes = bytes;
        if fix_header && bytes.len() >= 2 {
            bytes[0] = 69;
            bytes[1] = u8::try_from(bytes.len()).expect("short");
        }
        if let Ok(parsed) = SynOption::parse(&bytes) {
            let again = SynOption::parse(&parsed.to_bytes()).expect("re-emitted option parses");
            prop_assert_eq!(again.global(), parsed.global());
            prop_assert_eq!(again.teps(), parsed.teps());
        }
    }

    #[test]
    fn scan_never_panics_and_ranges_hold_an_eno_option(
        area in prop::collection::vec(any::<u8>(), 0..60),
    ) {
        if let EnoScan::One(range) = scan_options(&area) {
            let option = area.get(range).expect("range lies inside the area");
            prop_assert_eq!(option.first(), Some(&69));
            prop_assert_eq!(option.get(1).map(|&l| usize::from(l)), Some(option.len()));
        }
    }

    #[test]
    fn negotiation_never_panics_on_arbitrary_peer_bytes(
        bytes in prop::collection::vec(any::<u8>(), 2..40),
    ) {
        let mut bytes = bytes;
        bytes[0] = 69;
        bytes[1] = u8::try_from(bytes.len()).expect("short");
        let config = EnoConfig::new(vec![TepSuboption::plain(TepId::new(0x23).expect("valid"))]);
        let ours = config.active_syn_option().expect("fits");
        let _ = negotiate(&config, &ours, &bytes, &PlainTeps);
        if let Ok(reply) = passive_reply(&config, &bytes, &PlainTeps) {
            let n = reply.negotiated();
            prop_assert_eq!(n.tep().id().get(), 0x23);
            prop_assert_eq!(n.transcript().a_option(), &bytes[..]);
        }
    }
}
