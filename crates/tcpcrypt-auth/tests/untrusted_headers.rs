//! Every header value a client or server can send is parsed without a
//! panic, and what the builders emit parses back to the same message.

use proptest::prelude::*;
use tcpcrypt_auth::http::{self, Credentials};
use tcpcrypt_auth::scram::ClientFirst;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_authorization_values_never_panic(value in "\\PC{0,300}") {
        let _ = http::parse_authorization(&value);
        let _ = http::parse_scram_continue(&value);
        let _ = http::parse_scram_success(&value);
    }

    #[test]
    fn header_like_values_never_panic(
        scheme in prop::sample::select(vec!["SCRAM-SHA-256", "Tcpcrypt-Ed25519", "scram-sha-256", "Basic"]),
        params in prop::collection::vec(("[a-z]{1,5}", "[A-Za-z0-9+/=\",\\\\ ]{0,40}"), 0..6),
    ) {
        let body: Vec<String> = params.iter().map(|(n, v)| format!("{n}={v}")).collect();
        let value = format!("{scheme} {}", body.join(", "));
        if let Ok(Some(Credentials::ScramFirst { client_first })) = http::parse_authorization(&value) {
            let _ = ClientFirst::parse(&client_first, true);
        }
    }

    #[test]
    fn built_values_parse_back(sid in "[A-Za-z0-9]{1,32}", message in "[ -~]{1,200}") {
        prop_assert_eq!(
            http::parse_authorization(&http::scram_final_authorization(&sid, &message)),
            Ok(Some(Credentials::ScramFinal { sid: sid.clone(), client_final: message.clone() }))
        );
        prop_assert_eq!(
            http::parse_scram_continue(&http::scram_continue(&sid, &message)),
            Ok(Some((sid.clone(), message.clone())))
        );
    }

    #[test]
    fn arbitrary_scram_messages_never_panic(message in "[ -~]{0,200}") {
        let _ = ClientFirst::parse(&message, true);
        let _ = ClientFirst::parse(&message, false);
    }
}
