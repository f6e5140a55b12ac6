//! The SYN-form and non-SYN-form ENO option codec (RFC 8547 sections 4.1,
//! 4.2 and 4.4; byte examples from the spec digest section 1.14).

use tcpcrypt_proto::eno::{
    EncodeError, GlobalSuboption, NON_SYN_OPTION, Suboption, SynOption, SynOptionError, TepId,
    TepSuboption,
};

fn id(v: u8) -> TepId {
    TepId::new(v).expect("test uses valid TEP ids")
}

fn parse(bytes: &[u8]) -> SynOption {
    SynOption::parse(bytes).expect("test option is well formed")
}

fn tep_bytes(option: &SynOption) -> Vec<u8> {
    option.teps().iter().map(|t| t.tep().to_byte()).collect()
}

// ---- parsing: suboption forms ----

#[test]
fn fresh_offer_without_global_has_implicit_global_zero() {
    let o = parse(&[0x45, 0x04, 0x23, 0x21]);
    assert_eq!(o.explicit_global(), None);
    assert_eq!(o.global(), GlobalSuboption::IMPLICIT);
    assert_eq!(tep_bytes(&o), [0x23, 0x21]);
    assert!(o.teps().iter().all(|t| t.data().is_empty()));
}

#[test]
fn explicit_global_sets_b_and_a() {
    let o = parse(&[0x45, 0x04, 0x03, 0x23]);
    assert_eq!(o.global(), GlobalSuboption { b: true, a: true });
}

#[test]
fn only_the_first_global_suboption_counts() {
    let o = parse(&[0x45, 0x05, 0x01, 0x02, 0x23]);
    assert_eq!(o.global(), GlobalSuboption { b: true, a: false });
    assert_eq!(
        o.suboptions(),
        &[
            Suboption::Global(GlobalSuboption { b: true, a: false }),
            Suboption::Global(GlobalSuboption { b: false, a: true }),
            Suboption::Tep(id(0x23)),
        ]
    );
}

#[test]
fn global_suboption_after_a_tep_still_counts_when_first() {
    let o = parse(&[0x45, 0x04, 0x23, 0x01]);
    assert!(o.global().b);
}

#[test]
fn reserved_global_bits_are_ignored() {
    let o = parse(&[0x45, 0x04, 0x1d, 0x23]);
    assert_eq!(o.global(), GlobalSuboption { b: true, a: false });
}

#[test]
fn tep_with_v_bit_takes_data_to_the_end_of_the_option() {
    let o = parse(&[0x45, 0x06, 0x21, 0xa3, 0xaa, 0xbb]);
    assert_eq!(tep_bytes(&o), [0x21, 0xa3]);
    assert_eq!(o.teps()[1].data(), &[0xaa, 0xbb]);
    assert_eq!(
        o.suboptions()[1],
        Suboption::TepToEnd {
            id: id(0x23),
            data: vec![0xaa, 0xbb]
        }
    );
}

#[test]
fn tep_with_v_bit_last_may_carry_no_data() {
    let o = parse(&[0x45, 0x03, 0xa3]);
    assert_eq!(o.teps(), &[TepSuboption::with_data(id(0x23), vec![])]);
}

#[test]
fn length_byte_gives_data_length_nnnnn_plus_one() {
    // 0x81: two data bytes, then a plain 0x21 suboption follows.
    let o = parse(&[0x45, 0x07, 0x81, 0xa3, 0xaa, 0xbb, 0x21]);
    assert_eq!(
        o.teps(),
        &[
            TepSuboption::with_data(id(0x23), vec![0xaa, 0xbb]),
            TepSuboption::plain(id(0x21)),
        ]
    );
    assert!(matches!(o.suboptions()[0], Suboption::TepWithLength { .. }));
}

#[test]
fn length_byte_0x9f_announces_32_bytes() {
    let mut bytes = vec![0x45, 36, 0x9f, 0xa3];
    bytes.extend([7u8; 32]);
    let o = parse(&bytes);
    assert_eq!(o.teps()[0].data(), &[7u8; 32]);
}

#[test]
fn redundant_length_byte_on_the_last_suboption_is_accepted() {
    let o = parse(&[0x45, 0x05, 0x80, 0xa3, 0x11]);
    assert_eq!(o.teps(), &[TepSuboption::with_data(id(0x23), vec![0x11])]);
}

#[test]
fn option_without_contents_is_vacuous() {
    assert!(parse(&[0x45, 0x02]).is_vacuous());
    assert!(parse(&[0x45, 0x03, 0x01]).is_vacuous());
    assert!(!parse(&[0x45, 0x03, 0x23]).is_vacuous());
}

// ---- parsing: malformed forms (all mean "ignore option, disable ENO") ----

#[test]
fn length_byte_pointing_past_the_option_is_malformed() {
    assert_eq!(
        SynOption::parse(&[0x45, 0x05, 0x82, 0xa3, 0xaa]),
        Err(SynOptionError::LengthByteOverrun {
            offset: 2,
            data_len: 3,
            available: 1
        })
    );
}

#[test]
fn length_byte_as_last_byte_is_malformed() {
    assert_eq!(
        SynOption::parse(&[0x45, 0x04, 0x23, 0x80]),
        Err(SynOptionError::LengthByteOverrun {
            offset: 3,
            data_len: 1,
            available: 0
        })
    );
}

#[test]
fn length_byte_followed_by_tep_and_no_data_is_malformed() {
    assert!(matches!(
        SynOption::parse(&[0x45, 0x04, 0x80, 0xa3]),
        Err(SynOptionError::LengthByteOverrun { .. })
    ));
}

#[test]
fn length_byte_followed_by_0x9f_is_malformed() {
    // The boundary one prototype got wrong by testing `< 0x9f`.
    assert_eq!(
        SynOption::parse(&[0x45, 0x05, 0x80, 0x9f, 0xaa]),
        Err(SynOptionError::LengthByteWithoutTep {
            offset: 2,
            found: 0x9f
        })
    );
}

#[test]
fn length_byte_followed_by_tep_without_v_bit_is_malformed() {
    assert_eq!(
        SynOption::parse(&[0x45, 0x05, 0x80, 0x23, 0xaa]),
        Err(SynOptionError::LengthByteWithoutTep {
            offset: 2,
            found: 0x23
        })
    );
}

#[test]
fn length_byte_followed_by_global_suboption_is_malformed() {
    assert!(matches!(
        SynOption::parse(&[0x45, 0x05, 0x80, 0x01, 0xaa]),
        Err(SynOptionError::LengthByteWithoutTep { found: 0x01, .. })
    ));
}

#[test]
fn length_byte_followed_by_0xa0_is_accepted() {
    let o = parse(&[0x45, 0x05, 0x80, 0xa0, 0xaa]);
    assert_eq!(o.teps()[0].tep().to_byte(), 0xa0);
}

#[test]
fn legacy_kind_253_is_not_an_eno_option() {
    assert_eq!(
        SynOption::parse(&[0xfd, 0x05, 0x45, 0x4e, 0x23]),
        Err(SynOptionError::NotEno { kind: 0xfd })
    );
}

#[test]
fn length_field_must_match_the_bytes_given() {
    assert_eq!(
        SynOption::parse(&[0x45, 0x04, 0x23]),
        Err(SynOptionError::LengthMismatch {
            declared: 4,
            actual: 3
        })
    );
    assert_eq!(
        SynOption::parse(&[0x45, 0x01]),
        Err(SynOptionError::LengthMismatch {
            declared: 1,
            actual: 2
        })
    );
}

#[test]
fn fewer_than_two_bytes_is_too_short() {
    assert_eq!(
        SynOption::parse(&[]),
        Err(SynOptionError::TooShort { len: 0 })
    );
    assert_eq!(
        SynOption::parse(&[0x45]),
        Err(SynOptionError::TooShort { len: 1 })
    );
}

// ---- emitting (digest section 1.14) ----

#[test]
fn non_syn_form_is_kind_and_length_only() {
    assert_eq!(NON_SYN_OPTION, [0x45, 0x02]);
}

#[test]
fn fresh_offer_encodes_one_byte_per_tep() {
    let o = SynOption::offer(
        None,
        &[TepSuboption::plain(id(0x23)), TepSuboption::plain(id(0x21))],
    )
    .expect("fits");
    assert_eq!(o.to_bytes(), [0x45, 0x04, 0x23, 0x21]);
}

#[test]
fn passive_choice_encodes_explicit_global_then_tep() {
    let o = SynOption::offer(
        Some(GlobalSuboption { b: true, a: false }),
        &[TepSuboption::plain(id(0x23))],
    )
    .expect("fits");
    assert_eq!(o.to_bytes(), [0x45, 0x04, 0x01, 0x23]);
}

fn seventeen() -> Vec<u8> {
    (1..=17).collect()
}

#[test]
fn resumption_offer_before_another_tep_gets_a_length_byte() {
    let o = SynOption::offer(
        None,
        &[
            TepSuboption::with_data(id(0x23), seventeen()),
            TepSuboption::plain(id(0x21)),
        ],
    )
    .expect("fits");
    let mut expected = vec![0x45, 0x16, 0x90, 0xa3];
    expected.extend(seventeen());
    expected.push(0x21);
    assert_eq!(o.to_bytes(), expected);
}

#[test]
fn resumption_offer_placed_last_runs_to_the_end() {
    let o =
        SynOption::offer(None, &[TepSuboption::with_data(id(0x23), seventeen())]).expect("fits");
    let mut expected = vec![0x45, 0x14, 0xa3];
    expected.extend(seventeen());
    assert_eq!(o.to_bytes(), expected);
}

#[test]
fn resumption_answer_with_global_is_21_bytes() {
    let o = SynOption::offer(
        Some(GlobalSuboption { b: true, a: false }),
        &[TepSuboption::with_data(id(0x23), seventeen())],
    )
    .expect("fits");
    let bytes = o.to_bytes();
    assert_eq!(&bytes[..4], &[0x45, 0x15, 0x01, 0xa3]);
    assert_eq!(bytes.len(), 0x15);
}

#[test]
fn data_over_32_bytes_cannot_precede_another_suboption() {
    assert_eq!(
        SynOption::offer(
            None,
            &[
                TepSuboption::with_data(id(0x23), vec![0; 33]),
                TepSuboption::plain(id(0x21)),
            ],
        ),
        Err(EncodeError::DataNeedsLengthByte {
            id: id(0x23),
            len: 33
        })
    );
}

#[test]
fn empty_data_with_v_bit_cannot_precede_another_suboption() {
    assert_eq!(
        SynOption::offer(
            None,
            &[
                TepSuboption::with_data(id(0x23), vec![]),
                TepSuboption::plain(id(0x21)),
            ],
        ),
        Err(EncodeError::DataNeedsLengthByte {
            id: id(0x23),
            len: 0
        })
    );
}

#[test]
fn option_longer_than_the_tcp_option_space_is_refused() {
    assert_eq!(
        SynOption::offer(None, &[TepSuboption::with_data(id(0x23), vec![0; 38])]),
        Err(EncodeError::TooLong { len: 41 })
    );
    assert!(SynOption::offer(None, &[TepSuboption::with_data(id(0x23), vec![0; 37])]).is_ok());
}

#[test]
fn to_end_suboption_must_be_last() {
    assert_eq!(
        SynOption::from_suboptions(vec![
            Suboption::TepToEnd {
                id: id(0x23),
                data: vec![1]
            },
            Suboption::Tep(id(0x21)),
        ]),
        Err(EncodeError::ToEndNotLast { id: id(0x23) })
    );
}

#[test]
fn at_most_one_global_suboption_is_sent() {
    assert_eq!(
        SynOption::from_suboptions(vec![
            Suboption::Global(GlobalSuboption::IMPLICIT),
            Suboption::Global(GlobalSuboption::IMPLICIT),
        ]),
        Err(EncodeError::SeveralGlobals)
    );
}

#[test]
fn reparsing_an_emitted_option_gives_the_same_suboptions() {
    let o = SynOption::offer(
        Some(GlobalSuboption { b: false, a: true }),
        &[
            TepSuboption::plain(id(0x24)),
            TepSuboption::with_data(id(0x22), vec![9; 32]),
            TepSuboption::with_data(id(0x23), vec![]),
        ],
    )
    .expect("fits");
    assert_eq!(parse(&o.to_bytes()), o);
}
