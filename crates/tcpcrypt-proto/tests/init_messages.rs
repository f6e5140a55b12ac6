//! Init1/Init2 properties: encode→decode round trips and no panic on any
//! input.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use tcpcrypt_proto::init::{Init1, Init2, InitKind, InitProgress, PublicKeyBytes, init_progress};
use tcpcrypt_proto::{Aead, Tep};

fn tep_strategy() -> impl Strategy<Value = Tep> {
    prop::sample::select(Tep::ALL.to_vec())
}

fn key_for(tep: Tep, seed: u8, odd: bool) -> PublicKeyBytes {
    let mut bytes = vec![seed; tep.public_key_len()];
    if tep.public_key_has_length_prefix() {
        bytes[0] = if odd { 0x03 } else { 0x02 };
    }
    PublicKeyBytes::new(tep, &bytes).unwrap()
}

proptest! {
    #[test]
    fn init1_round_trips(
        tep in tep_strategy(),
        ciphers in prop::collection::vec(any::<u16>(), 1..255),
        nonce in any::<[u8; 32]>(),
        seed in any::<u8>(),
        odd in any::<bool>(),
        ignored in prop::collection::vec(any::<u8>(), 0..100),
    ) {
        let mut m = Init1::new(ciphers, nonce, key_for(tep, seed, odd));
        m.ignored = ignored;
        let bytes = m.encode().unwrap();
        prop_assert_eq!(bytes.len(), m.encoded_len());
        prop_assert_eq!(init_progress(InitKind::Init1, tep, &bytes), Ok(InitProgress::Complete(bytes.len())));
        prop_assert_eq!(Init1::decode(tep, &bytes).unwrap(), m);
    }

    #[test]
    fn init2_round_trips(
        tep in tep_strategy(),
        aead in prop::sample::select(Aead::ALL.to_vec()),
        nonce in any::<[u8; 32]>(),
        seed in any::<u8>(),
        odd in any::<bool>(),
        ignored in prop::collection::vec(any::<u8>(), 0..100),
    ) {
        let mut m = Init2::new(aead, nonce, key_for(tep, seed, odd));
        m.ignored = ignored;
        let bytes = m.encode().unwrap();
        prop_assert_eq!(Init2::decode(tep, &bytes).unwrap(), m);
    }

    #[test]
    fn decoders_never_panic(tep in tep_strategy(), bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = Init1::decode(tep, &bytes);
        let _ = Init2::decode(tep, &bytes);
        let _ = init_progress(InitKind::Init1, tep, &bytes);
        let _ = init_progress(InitKind::Init2, tep, &bytes);
    }

    #[test]
    fn truncated_messages_are_rejected(tep in tep_strategy(), cut in any::<prop::sample::Index>()) {
        let bytes = Init2::new(Aead::Aes128Gcm, [1; 32], key_for(tep, 5, false)).encode().unwrap();
        let cut = cut.index(bytes.len());
        prop_assert!(Init2::decode(tep, &bytes[..cut]).is_err());
        prop_assert_eq!(
            init_progress(InitKind::Init2, tep, &bytes[..cut]),
            Ok(InitProgress::NeedAtLeast(if cut < 8 { 8 } else { bytes.len() }))
        );
    }
}
