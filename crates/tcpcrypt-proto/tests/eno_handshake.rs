//! The ENO handshake rules of RFC 8547 section 4.6, through the examples of
//! section 6 (Figures 9 to 12).

use tcpcrypt_proto::eno::{
    DisableReason, EnoConfig, EnoHandshake, EnoStatus, NON_SYN_OPTION, PlainTeps, SegmentFlags,
    TepId, TepSuboption, negotiate, passive_reply,
};

const DATA: SegmentFlags = SegmentFlags::ACK;

fn config() -> EnoConfig {
    EnoConfig::new(vec![TepSuboption::plain(
        TepId::new(0x23).expect("valid id"),
    )])
}

fn assert_pending(h: &EnoHandshake) {
    assert_eq!(h.status(), EnoStatus::Pending);
}

/// Figure 9: SYN ENO<Y>, SYN-ACK ENO<b=1,Y>, ACK ENO<>.
#[test]
fn three_way_handshake_with_eno_enables_both_sides() {
    let cfg = config();
    let (mut a, mut b) = (EnoHandshake::new(), EnoHandshake::new());

    let syn = cfg.active_syn_option().expect("fits");
    assert!(a.must_send_eno());
    a.on_sent(SegmentFlags::SYN, true);
    b.on_received(SegmentFlags::SYN, true);
    let reply = passive_reply(&cfg, &syn, &PlainTeps);
    let syn_ack = reply
        .as_ref()
        .map(|r| r.option().to_vec())
        .expect("negotiates");
    b.on_negotiated(reply.map(|r| r.negotiated().clone()));
    assert!(b.must_send_eno());
    b.on_sent(SegmentFlags::SYN_ACK, true);
    assert_pending(&b);

    a.on_received(SegmentFlags::SYN_ACK, true);
    a.on_negotiated(negotiate(&cfg, &syn, &syn_ack, &PlainTeps));
    assert!(
        a.must_send_eno(),
        "the third segment carries {NON_SYN_OPTION:?}"
    );
    a.on_sent(SegmentFlags::ACK, true);
    assert!(matches!(a.status(), EnoStatus::Enabled(_)));

    assert_pending(&b);
    b.on_received(SegmentFlags::ACK, true);
    assert!(matches!(b.status(), EnoStatus::Enabled(_)));
}

#[test]
fn eno_is_sent_until_a_non_syn_segment_arrives() {
    let mut b = EnoHandshake::new();
    b.on_received(SegmentFlags::SYN, true);
    b.on_sent(SegmentFlags::SYN_ACK, true);
    assert!(b.must_send_eno());
    b.on_received(SegmentFlags::ACK, true);
    assert!(!b.must_send_eno());
}

/// Figure 10: the SYN-ACK comes back without ENO.
#[test]
fn syn_ack_without_eno_disables() {
    let mut a = EnoHandshake::new();
    a.on_sent(SegmentFlags::SYN, true);
    a.on_received(SegmentFlags::SYN_ACK, false);
    assert_eq!(
        a.status(),
        EnoStatus::Disabled(&DisableReason::SegmentWithoutEno { segment: "SYN-ACK" })
    );
    assert!(!a.must_send_eno());
}

/// Figure 11: B's ENO was stripped, so A's ACK carries none and B gives up.
#[test]
fn first_ack_without_eno_disables_the_passive_opener() {
    let mut b = EnoHandshake::new();
    b.on_received(SegmentFlags::SYN, true);
    b.on_sent(SegmentFlags::SYN_ACK, true);
    b.on_received(SegmentFlags::ACK, false);
    assert!(matches!(
        b.status(),
        EnoStatus::Disabled(DisableReason::SegmentWithoutEno { segment: "ACK" })
    ));
}

#[test]
fn segments_after_the_first_ack_need_no_eno() {
    let cfg = config();
    let syn = cfg.active_syn_option().expect("fits");
    let mut b = EnoHandshake::new();
    b.on_received(SegmentFlags::SYN, true);
    b.on_negotiated(passive_reply(&cfg, &syn, &PlainTeps).map(|r| r.negotiated().clone()));
    b.on_sent(SegmentFlags::SYN_ACK, true);
    b.on_received(SegmentFlags::ACK, true);
    b.on_received(DATA, false);
    assert!(matches!(b.status(), EnoStatus::Enabled(_)));
}

#[test]
fn failed_negotiation_disables_with_its_reason() {
    let mut a = EnoHandshake::new();
    a.on_sent(SegmentFlags::SYN, true);
    a.on_received(SegmentFlags::SYN_ACK, true);
    a.on_negotiated(Err(DisableReason::PeerVacuous));
    assert_eq!(a.status(), EnoStatus::Disabled(&DisableReason::PeerVacuous));
    assert!(!a.must_send_eno());
}

#[test]
fn acks_with_eno_but_no_negotiation_result_stay_pending() {
    let mut a = EnoHandshake::new();
    a.on_sent(SegmentFlags::SYN, true);
    a.on_received(SegmentFlags::SYN_ACK, true);
    a.on_sent(SegmentFlags::ACK, true);
    assert_pending(&a);
}

#[test]
fn dropping_eno_from_a_retransmitted_syn_disables() {
    let mut a = EnoHandshake::new();
    a.on_sent(SegmentFlags::SYN, true);
    a.on_sent(SegmentFlags::SYN, false);
    assert!(matches!(
        a.status(),
        EnoStatus::Disabled(DisableReason::Local(_))
    ));
}

#[test]
fn first_disable_reason_is_kept() {
    let mut a = EnoHandshake::new();
    a.disable(DisableReason::NoEnoOption);
    a.disable(DisableReason::PeerVacuous);
    a.on_received(SegmentFlags::SYN_ACK, false);
    assert_eq!(a.status(), EnoStatus::Disabled(&DisableReason::NoEnoOption));
}

/// Figure 12: each host sends SYN then SYN-ACK with the same option.
#[test]
fn simultaneous_open_enables_after_both_syn_acks_and_acks() {
    let cfg_a = config();
    let cfg_b = config().with_passive_role_bit(true);
    let (opt_a, opt_b) = (
        cfg_a.active_syn_option().expect("fits"),
        cfg_b.active_syn_option().expect("fits"),
    );
    let (mut a, mut b) = (EnoHandshake::new(), EnoHandshake::new());
    a.on_sent(SegmentFlags::SYN, true);
    b.on_sent(SegmentFlags::SYN, true);
    a.on_received(SegmentFlags::SYN, true);
    b.on_received(SegmentFlags::SYN, true);
    a.on_negotiated(negotiate(&cfg_a, &opt_a, &opt_b, &PlainTeps));
    b.on_negotiated(negotiate(&cfg_b, &opt_b, &opt_a, &PlainTeps));
    a.on_sent(SegmentFlags::SYN_ACK, true);
    b.on_sent(SegmentFlags::SYN_ACK, true);
    assert_pending(&a);
    a.on_received(SegmentFlags::SYN_ACK, true);
    b.on_received(SegmentFlags::SYN_ACK, true);
    assert!(matches!(a.status(), EnoStatus::Enabled(_)));
    assert!(matches!(b.status(), EnoStatus::Enabled(_)));
}
