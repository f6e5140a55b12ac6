//! Fuzzes the Init1/Init2 decoders and the stream collector
//! `init_progress`. Whatever decodes must re-encode to the same bytes (the
//! ignored trailing bytes are kept), and the collector must agree with the
//! decoder on where a message ends.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tcpcrypt_proto::Tep;
use tcpcrypt_proto::init::{
    Init1, Init2, InitKind, InitProgress, MAX_INIT_MESSAGE_LEN, init_progress,
};

fn check(kind: InitKind, tep: Tep, bytes: &[u8]) {
    let progress = init_progress(kind, tep, bytes);
    match progress {
        Ok(InitProgress::Complete(n)) => {
            assert!(n <= bytes.len() && n <= MAX_INIT_MESSAGE_LEN);
            // The prefix the collector cut is what a caller decodes; it must
            // not change the collector's mind.
            let prefix = bytes.get(..n).expect("n <= len");
            assert_eq!(
                init_progress(kind, tep, prefix),
                Ok(InitProgress::Complete(n))
            );
        }
        Ok(InitProgress::NeedAtLeast(n)) => assert!(n > bytes.len() && n <= MAX_INIT_MESSAGE_LEN),
        Err(_) => {}
    }
    let encoded = match kind {
        InitKind::Init1 => Init1::decode(tep, bytes).ok().map(|m| m.encode()),
        InitKind::Init2 => Init2::decode(tep, bytes).ok().map(|m| m.encode()),
    };
    if let Some(encoded) = encoded {
        assert_eq!(encoded.as_deref(), Ok(bytes), "decoded message re-encodes");
        assert_eq!(progress, Ok(InitProgress::Complete(bytes.len())));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let tep = Tep::ALL[usize::from(selector & 3) % Tep::ALL.len()];
    let kind = if selector & 4 == 0 {
        InitKind::Init1
    } else {
        InitKind::Init2
    };
    check(kind, tep, rest);

    // Also behind a correct magic and message_len, so the fuzzer spends its
    // time in the field decoders rather than on the header.
    if selector & 8 != 0 {
        let total = rest.len() + 8;
        if let Ok(len) = u32::try_from(total) {
            let mut msg = Vec::with_capacity(total);
            msg.extend_from_slice(&kind.magic().to_be_bytes());
            msg.extend_from_slice(&len.to_be_bytes());
            msg.extend_from_slice(rest);
            check(kind, tep, &msg);
        }
    }
});
