#![no_main]

use std::num::NonZeroU32;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tcpcrypt_auth::scram::{Client, ClientFirst, Credentials, Server};
use tcpcrypt_auth::{ChannelBinding, Role, SESSION_ID_LEN, SessionId, http};

/// Derived once, with one iteration: the target checks parsers, not PBKDF2.
fn credentials() -> &'static Credentials {
    static CREDS: OnceLock<Credentials> = OnceLock::new();
    CREDS.get_or_init(|| Credentials::derive("pw", b"salt", NonZeroU32::MIN))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = http::parse_authorization(&text);
    let _ = http::parse_scram_continue(&text);
    let _ = http::parse_scram_success(&text);
    let _ = ClientFirst::parse(&text, true);
    let _ = ClientFirst::parse(&text, false);

    let binding = ChannelBinding::new(Role::A, SessionId::from_bytes([7; SESSION_ID_LEN]));
    // The server after a valid first message, fed the input as the final one.
    if let Ok(first) = ClientFirst::parse("p=tcpcrypt-unique,,n=fuzz,r=abc", true) {
        if let Ok((server, _)) = Server::start(first, Some(credentials().clone()), &[1; 32], "def") {
            let _ = server.finish(&text, Some(&binding));
        }
    }
    // The client reading the input as the server's first message (counts
    // capped low so the target stays fast).
    if let Ok((client, _)) = Client::start("fuzz", "abc", Some(binding)) {
        let _ = client.answer(&text, "pw", 1..=4);
    }
});
