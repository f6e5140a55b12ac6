//! Fuzzes the ENO option parser, the options-area scanner and negotiation
//! against a fixed configuration. Besides "no panic", it checks that what
//! parses re-encodes to the same meaning and that negotiation results are
//! consistent with the bytes they came from.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tcpcrypt_proto::Role;
use tcpcrypt_proto::eno::{
    EnoConfig, EnoScan, PlainTeps, SynOption, TepId, TepSuboption, negotiate, passive_reply,
    scan_options,
};

/// The fixed configuration and the SYN option it sends, built once.
fn config() -> &'static (EnoConfig, Vec<u8>) {
    static CONFIG: OnceLock<(EnoConfig, Vec<u8>)> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let teps = [0x23, 0x21, 0x24]
            .iter()
            .filter_map(|&v| TepId::new(v).ok())
            .map(TepSuboption::plain)
            .collect();
        let config = EnoConfig::new(teps);
        let active = config.active_syn_option().expect("the fixed offer fits");
        (config, active)
    })
}

fn check_option(option: &[u8]) {
    let Ok(parsed) = SynOption::parse(option) else {
        return;
    };
    let again = SynOption::parse(&parsed.to_bytes()).expect("a parsed option re-encodes");
    assert_eq!(again.global(), parsed.global());
    assert_eq!(again.teps(), parsed.teps());

    let (config, active) = config();
    if let Ok(n) = negotiate(config, active, option, &PlainTeps) {
        assert_eq!(n.role(), Role::A);
        assert_eq!(n.transcript().a_option(), &active[..]);
        assert_eq!(n.transcript().b_option(), option);
        assert!(parsed.global().b);
    }
    if let Ok(reply) = passive_reply(config, option, &PlainTeps) {
        let n = reply.negotiated();
        assert_eq!(n.role(), Role::B);
        assert_eq!(n.transcript().a_option(), option);
        assert_eq!(n.transcript().b_option(), reply.option());
        assert!(parsed.teps().iter().any(|t| t.id() == n.tep().id()));
    }
}

fuzz_target!(|data: &[u8]| {
    // The input as an options area.
    let scan = scan_options(data);
    if let EnoScan::One(range) = &scan {
        let option = data
            .get(range.clone())
            .expect("scan ranges lie inside the area");
        check_option(option);
    }
    let _ = scan.syn_option(data);

    // The input as the whole option, and as option contents behind a
    // correct kind and length, so the fuzzer reaches suboption parsing fast.
    check_option(data);
    if let Ok(len) = u8::try_from(data.len() + 2) {
        let mut option = vec![69, len];
        option.extend_from_slice(data);
        check_option(&option);
    }
});
