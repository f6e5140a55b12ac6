//! ENO negotiation (RFC 8547 sections 4.3 to 4.6, 4.8, 6; digest sections
//! 1.9, 1.10 and 1.14).

use tcpcrypt_proto::Role;
use tcpcrypt_proto::eno::{
    DisableReason, EnoConfig, EnoScan, Origin, PlainTeps, SynOptionError, TepId, TepRejection,
    TepRejections, TepRules, TepSuboption, negotiate, passive_reply, scan_options,
};

const P256: u8 = 0x21;
const P521: u8 = 0x22;
const X25519: u8 = 0x23;
const X448: u8 = 0x24;

fn id(v: u8) -> TepId {
    TepId::new(v).expect("test uses valid TEP ids")
}

fn plain(ids: &[u8]) -> EnoConfig {
    EnoConfig::new(ids.iter().map(|&v| TepSuboption::plain(id(v))).collect())
}

/// Rules shaped like tcpcrypt's: `v = 1` data of 9 to 17 bytes is a
/// resumption offer, `v = 0` carries nothing, no repetition.
struct ResumptionShaped;

impl TepRules for ResumptionShaped {
    fn validate(&self, s: &TepSuboption, _origin: Origin) -> bool {
        if s.tep().v() {
            (9..=17).contains(&s.data().len())
        } else {
            s.data().is_empty()
        }
    }
    fn allows_repeat(&self, _id: TepId) -> bool {
        false
    }
}

// ---- the worked examples ----

#[test]
fn digest_example_passive_opener_answers_45_04_01_23() {
    let a_syn = [0x45, 0x04, 0x23, 0x21];
    let reply = passive_reply(&plain(&[X25519]), &a_syn, &PlainTeps).expect("negotiates");
    assert_eq!(reply.option(), &[0x45, 0x04, 0x01, 0x23]);
    assert_eq!(reply.negotiated().tep().to_byte(), 0x23);
    assert_eq!(reply.negotiated().role(), Role::B);
}

#[test]
fn digest_example_active_opener_negotiates_curve25519_as_a() {
    let a_syn = [0x45, 0x04, 0x23, 0x21];
    let b_syn_ack = [0x45, 0x04, 0x01, 0x23];
    let n = negotiate(&plain(&[X25519, P256]), &a_syn, &b_syn_ack, &PlainTeps).expect("ok");
    assert_eq!(n.tep().to_byte(), 0x23);
    assert_eq!(n.role(), Role::A);
    assert_eq!(
        n.transcript().as_bytes(),
        &[0x45, 0x04, 0x23, 0x21, 0x45, 0x04, 0x01, 0x23]
    );
}

#[test]
fn digest_transcript_example_puts_a_first_on_both_hosts() {
    let a = [0x45, 0x03, 0x23];
    let b = [0x45, 0x04, 0x01, 0x23];
    let expected = [0x45, 0x03, 0x23, 0x45, 0x04, 0x01, 0x23];
    let at_a = negotiate(&plain(&[X25519]), &a, &b, &PlainTeps).expect("ok");
    let at_b = negotiate(&plain(&[X25519]), &b, &a, &PlainTeps).expect("ok");
    assert_eq!(at_a.transcript().as_bytes(), &expected);
    assert_eq!(at_b.transcript().as_bytes(), &expected);
}

#[test]
fn transcript_keeps_the_peer_option_exactly_as_received() {
    // B used a redundant length byte; the transcript must not re-encode it.
    let a = [
        0x45, 0x03, 0xa3, 0x09, 0x09, 0x09, 0x09, 0x09, 0x09, 0x09, 0x09, 0x09,
    ];
    let a = {
        let mut v = a.to_vec();
        v[1] = u8::try_from(v.len()).expect("short");
        v
    };
    let mut b = vec![0x45, 0x00, 0x01, 0x88, 0xa3];
    b.extend([7u8; 9]);
    b[1] = u8::try_from(b.len()).expect("short");
    let n = negotiate(
        &EnoConfig::new(vec![TepSuboption::with_data(id(X25519), vec![9; 9])]),
        &a,
        &b,
        &ResumptionShaped,
    )
    .expect("ok");
    assert_eq!(n.transcript().b_option(), &b[..]);
    assert_eq!(n.transcript().a_option(), &a[..]);
}

/// RFC 8547 Figure 12: A sends ENO<Y,X>, B sends ENO<b=1,X,Y,Z>; Y wins.
#[test]
fn simultaneous_open_negotiates_last_valid_tep_of_b() {
    let (x, y, z) = (P256, X25519, X448);
    let config_a = plain(&[x, y]); // wire order reversed: Y, X
    let config_b = plain(&[z, y, x]).with_passive_role_bit(true); // X, Y, Z
    let a_syn = config_a.active_syn_option().expect("fits");
    let b_syn = config_b.active_syn_option().expect("fits");
    assert_eq!(a_syn, [0x45, 0x04, y, x]);
    assert_eq!(b_syn, [0x45, 0x06, 0x01, x, y, z]);

    let at_a = negotiate(&config_a, &a_syn, &b_syn, &PlainTeps).expect("ok");
    let at_b = negotiate(&config_b, &b_syn, &a_syn, &PlainTeps).expect("ok");
    assert_eq!(at_a.tep().to_byte(), y);
    assert_eq!(at_b.tep().to_byte(), y);
    assert_eq!((at_a.role(), at_b.role()), (Role::A, Role::B));
    assert_eq!(at_a.transcript(), at_b.transcript());
}

// ---- roles ----

#[test]
fn both_hosts_with_b_zero_disable_eno() {
    let a = [0x45, 0x03, 0x23];
    assert_eq!(
        negotiate(&plain(&[X25519]), &a, &a, &PlainTeps),
        Err(DisableReason::SameRoleBit { b: false })
    );
}

#[test]
fn both_hosts_with_b_one_disable_eno() {
    let b = [0x45, 0x04, 0x01, 0x23];
    assert_eq!(
        negotiate(&plain(&[X25519]), &b, &b, &PlainTeps),
        Err(DisableReason::SameRoleBit { b: true })
    );
}

#[test]
fn active_opener_with_b_one_is_refused_by_a_passive_opener() {
    let syn = plain(&[X25519])
        .with_passive_role_bit(true)
        .active_syn_option()
        .expect("fits");
    assert_eq!(
        passive_reply(&plain(&[X25519]), &syn, &PlainTeps),
        Err(DisableReason::SameRoleBit { b: true })
    );
}

#[test]
fn host_that_sent_b_one_is_role_b_even_as_active_opener() {
    let ours = [0x45, 0x04, 0x01, 0x23];
    let theirs = [0x45, 0x03, 0x23];
    let n = negotiate(&plain(&[X25519]), &ours, &theirs, &PlainTeps).expect("ok");
    assert_eq!(n.role(), Role::B);
}

// ---- application-aware bit ----

#[test]
fn mandatory_app_aware_disables_when_peer_sent_a_zero() {
    let config = plain(&[X25519]).with_app_aware_mandatory(true);
    assert_eq!(
        passive_reply(&config, &[0x45, 0x03, 0x23], &PlainTeps),
        Err(DisableReason::PeerNotAppAware)
    );
    assert_eq!(
        negotiate(
            &config,
            &[0x45, 0x04, 0x02, 0x23],
            &[0x45, 0x04, 0x01, 0x23],
            &PlainTeps
        ),
        Err(DisableReason::PeerNotAppAware)
    );
}

#[test]
fn mandatory_app_aware_accepts_peer_with_a_one_and_sends_a_one() {
    let config = plain(&[X25519]).with_app_aware_mandatory(true);
    let reply = passive_reply(&config, &[0x45, 0x04, 0x02, 0x23], &PlainTeps).expect("ok");
    assert_eq!(reply.option(), &[0x45, 0x04, 0x03, 0x23]);
    assert!(reply.negotiated().peer_app_aware());
    assert_eq!(
        config.active_syn_option().expect("fits"),
        [0x45, 0x04, 0x02, 0x23]
    );
}

#[test]
fn peer_a_bit_is_reported_without_mandatory_mode() {
    let n = negotiate(
        &plain(&[X25519]),
        &[0x45, 0x03, 0x23],
        &[0x45, 0x04, 0x03, 0x23],
        &PlainTeps,
    )
    .expect("ok");
    assert!(n.peer_app_aware());
    assert!(!n.local_global().a);
}

// ---- vacuous ENO and TEP selection ----

#[test]
fn vacuous_peer_option_disables_eno() {
    assert_eq!(
        negotiate(
            &plain(&[X25519]),
            &[0x45, 0x03, 0x23],
            &[0x45, 0x03, 0x01],
            &PlainTeps
        ),
        Err(DisableReason::PeerVacuous)
    );
    assert_eq!(
        passive_reply(&plain(&[X25519]), &[0x45, 0x02], &PlainTeps),
        Err(DisableReason::PeerVacuous)
    );
}

#[test]
fn vacuous_local_option_disables_eno() {
    assert_eq!(
        negotiate(
            &plain(&[]),
            &[0x45, 0x02],
            &[0x45, 0x04, 0x01, 0x23],
            &PlainTeps
        ),
        Err(DisableReason::LocalVacuous)
    );
}

#[test]
fn vacuous_reply_only_answers_a_syn_that_carried_one_eno_option() {
    let config = plain(&[]);
    let with_eno = scan_options(&[0x45, 0x03, 0x23]);
    assert_eq!(
        config.vacuous_reply(&with_eno),
        Some(vec![0x45, 0x03, 0x01])
    );
    assert_eq!(config.vacuous_reply(&scan_options(&[1, 1, 0])), None);
    assert_eq!(config.vacuous_reply(&EnoScan::Several), None);
}

#[test]
fn no_common_tep_disables_eno_and_says_which_teps_were_tried() {
    let reason = negotiate(
        &plain(&[P256]),
        &[0x45, 0x03, 0x21],
        &[0x45, 0x05, 0x01, 0x24, 0x23],
        &PlainTeps,
    );
    assert_eq!(
        reason,
        Err(DisableReason::NoValidTep(TepRejections(vec![
            (id(X25519), TepRejection::NotOfferedByA),
            (id(X448), TepRejection::NotOfferedByA),
        ])))
    );
    let text = reason.expect_err("disabled").to_string();
    assert!(text.contains("0x23 not offered by host A"), "{text}");
}

#[test]
fn passive_opener_without_common_tep_reports_not_offered_by_a() {
    assert_eq!(
        passive_reply(&plain(&[P521]), &[0x45, 0x03, 0x23], &PlainTeps),
        Err(DisableReason::NoValidTep(TepRejections(vec![(
            id(P521),
            TepRejection::NotOfferedByA
        )])))
    );
}

#[test]
fn negotiated_tep_is_the_last_valid_one_in_b_option_whatever_a_order() {
    let n = negotiate(
        &plain(&[P256]),
        &[0x45, 0x04, 0x23, 0x21],
        &[0x45, 0x05, 0x01, 0x23, 0x21],
        &PlainTeps,
    )
    .expect("ok");
    assert_eq!(n.tep().to_byte(), 0x21);
}

#[test]
fn invalid_last_tep_of_b_falls_back_to_an_earlier_valid_one() {
    // B's last suboption carries data PlainTeps rejects.
    let n = negotiate(
        &plain(&[P256]),
        &[0x45, 0x04, 0x23, 0x21],
        &[0x45, 0x06, 0x01, 0x21, 0xa3, 0x00],
        &PlainTeps,
    )
    .expect("ok");
    assert_eq!(n.tep().to_byte(), 0x21);
}

#[test]
fn peer_data_invalid_for_the_tep_disables_when_no_other_tep() {
    assert_eq!(
        negotiate(
            &plain(&[X25519]),
            &[0x45, 0x03, 0x23],
            &[0x45, 0x05, 0x01, 0xa3, 0x00],
            &PlainTeps
        ),
        Err(DisableReason::NoValidTep(TepRejections(vec![(
            id(X25519),
            TepRejection::InvalidData { by: Role::B }
        )])))
    );
}

#[test]
fn repeated_tep_not_allowed_by_its_spec_is_invalid() {
    assert_eq!(
        negotiate(
            &plain(&[X25519]),
            &[0x45, 0x04, 0x23, 0x23],
            &[0x45, 0x04, 0x01, 0x23],
            &PlainTeps
        ),
        Err(DisableReason::NoValidTep(TepRejections(vec![(
            id(X25519),
            TepRejection::Repeated { by: Role::A }
        )])))
    );
}

#[test]
fn repeated_tep_is_valid_when_its_spec_allows_it() {
    struct Repeats;
    impl TepRules for Repeats {
        fn validate(&self, _: &TepSuboption, _: Origin) -> bool {
            true
        }
        fn allows_repeat(&self, _: TepId) -> bool {
            true
        }
    }
    let n = negotiate(
        &plain(&[X25519]),
        &[0x45, 0x04, 0x23, 0x23],
        &[0x45, 0x04, 0x01, 0x23],
        &Repeats,
    )
    .expect("ok");
    assert_eq!(n.local_suboptions().len(), 2);
    assert_eq!(n.peer_suboptions().len(), 1);
}

#[test]
fn rules_are_told_which_host_sent_the_suboption() {
    struct RejectPeerData;
    impl TepRules for RejectPeerData {
        fn validate(&self, s: &TepSuboption, origin: Origin) -> bool {
            origin == Origin::Local || s.data().is_empty()
        }
        fn allows_repeat(&self, _: TepId) -> bool {
            false
        }
    }
    // Our data is fine by these rules, the peer's is not.
    assert!(
        negotiate(
            &plain(&[X25519]),
            &[0x45, 0x04, 0xa3, 0x01],
            &[0x45, 0x04, 0x01, 0x23],
            &RejectPeerData
        )
        .is_ok()
    );
    assert!(
        negotiate(
            &plain(&[X25519]),
            &[0x45, 0x03, 0x23],
            &[0x45, 0x05, 0x01, 0xa3, 0x01],
            &RejectPeerData
        )
        .is_err()
    );
}

#[test]
fn passive_opener_picks_its_most_preferred_common_tep_alone() {
    let a_syn = [0x45, 0x05, 0x21, 0x24, 0x23];
    let reply = passive_reply(&plain(&[P521, X448, X25519]), &a_syn, &PlainTeps).expect("ok");
    assert_eq!(reply.option(), &[0x45, 0x04, 0x01, 0x24]);
    assert_eq!(reply.negotiated().tep().to_byte(), 0x24);
}

#[test]
fn passive_opener_skips_a_tep_whose_offer_data_is_invalid() {
    let a_syn = [0x45, 0x06, 0x21, 0xa3, 0x01, 0x02];
    let reply = passive_reply(&plain(&[X25519, P256]), &a_syn, &PlainTeps).expect("ok");
    assert_eq!(reply.option(), &[0x45, 0x04, 0x01, 0x21]);
}

#[test]
fn malformed_peer_option_disables_eno() {
    assert_eq!(
        passive_reply(&plain(&[X25519]), &[0x45, 0x04, 0x80, 0x23], &PlainTeps),
        Err(DisableReason::PeerOptionMalformed(
            SynOptionError::LengthByteWithoutTep {
                offset: 2,
                found: 0x23
            }
        ))
    );
    assert!(matches!(
        negotiate(
            &plain(&[X25519]),
            &[0x45, 0x03, 0x23],
            &[0x45, 0x05, 0x01, 0x81, 0xa3],
            &PlainTeps
        ),
        Err(DisableReason::PeerOptionMalformed(
            SynOptionError::LengthByteOverrun { .. }
        ))
    ));
}

#[test]
fn syn_without_eno_or_with_two_gives_a_reason() {
    let none = [2, 4, 5, 0xb4];
    assert_eq!(
        scan_options(&none).syn_option(&none),
        Err(DisableReason::NoEnoOption)
    );
    let two = [0x45, 0x03, 0x23, 0x45, 0x03, 0x23];
    assert_eq!(
        scan_options(&two).syn_option(&two),
        Err(DisableReason::SeveralEnoOptions)
    );
    let one = [1, 0x45, 0x03, 0x23];
    assert_eq!(
        scan_options(&one).syn_option(&one),
        Ok(&[0x45, 0x03, 0x23][..])
    );
}

// ---- resumption-shaped suboptions (the TEP byte keeps B's v bit) ----

fn resume_offer(len: usize, fill: u8) -> TepSuboption {
    TepSuboption::with_data(id(X25519), vec![fill; len])
}

#[test]
fn b_answering_with_v_one_yields_tep_byte_with_v_bit() {
    let config_a = EnoConfig::new(vec![resume_offer(17, 0xaa), TepSuboption::plain(id(P256))]);
    let a_syn = config_a.active_syn_option().expect("fits");
    let config_b = EnoConfig::new(vec![resume_offer(17, 0xbb)]);
    let reply = passive_reply(&config_b, &a_syn, &ResumptionShaped).expect("ok");
    assert_eq!(&reply.option()[..4], &[0x45, 0x15, 0x01, 0xa3]);
    assert_eq!(reply.negotiated().tep().to_byte(), 0xa3);

    let n = negotiate(&config_a, &a_syn, reply.option(), &ResumptionShaped).expect("ok");
    assert_eq!(n.tep().to_byte(), 0xa3);
    assert_eq!(n.role(), Role::A);
    assert_eq!(n.local_suboptions(), &[resume_offer(17, 0xaa)]);
    assert_eq!(n.peer_suboptions(), &[resume_offer(17, 0xbb)]);
}

#[test]
fn b_answering_a_resumption_offer_with_v_zero_yields_fresh_tep_byte() {
    let config_a = EnoConfig::new(vec![resume_offer(9, 0xaa)]);
    let a_syn = config_a.active_syn_option().expect("fits");
    let reply = passive_reply(&plain(&[X25519]), &a_syn, &ResumptionShaped).expect("ok");
    assert_eq!(reply.option(), &[0x45, 0x04, 0x01, 0x23]);
    let n = negotiate(&config_a, &a_syn, reply.option(), &ResumptionShaped).expect("ok");
    assert_eq!(n.tep().to_byte(), 0x23);
    assert_eq!(n.local_suboptions(), &[resume_offer(9, 0xaa)]);
    assert_eq!(n.peer_suboptions(), &[TepSuboption::plain(id(X25519))]);
}

#[test]
fn passive_reply_puts_resumption_data_to_the_end_without_length_byte() {
    let config_b = EnoConfig::new(vec![resume_offer(9, 0xbb)]);
    let reply = passive_reply(&config_b, &[0x45, 0x03, 0x23], &ResumptionShaped).expect("ok");
    let mut expected = vec![0x45, 0x0d, 0x01, 0xa3];
    expected.extend([0xbb; 9]);
    assert_eq!(reply.option(), &expected[..]);
}

#[test]
fn disable_reasons_read_as_sentences() {
    assert_eq!(
        DisableReason::SameRoleBit { b: false }.to_string(),
        "both hosts sent b = 0, so no A/B roles"
    );
    assert_eq!(
        DisableReason::PeerOptionMalformed(SynOptionError::LengthByteWithoutTep {
            offset: 2,
            found: 0x9f
        })
        .to_string(),
        "the peer's ENO option is malformed: length byte at offset 2 is followed by 0x9f, expected a TEP byte with v = 1 (0xa0..=0xff)"
    );
}
