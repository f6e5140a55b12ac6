//! The command line as an operator meets it; no root needed.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tcpcryptd");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run tcpcryptd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_explains_every_option() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for opt in [
        "--config",
        "--tep",
        "--aead",
        "--ports",
        "--interfaces",
        "--queue",
        "--fail-closed",
        "--mark",
        "--iptables",
        "--control-socket",
        "--control-group",
        "--log-level",
        "--cleanup-delay",
        "--keylog",
    ] {
        assert!(out.contains(opt), "--help does not mention {opt}");
    }
    assert!(out.contains("x25519,p256"), "TEP default missing");
    assert!(out.contains("/run/tcpcrypt/control.sock"));
}

#[test]
fn bad_value_exits_non_zero_naming_option_and_value() {
    let (code, _, err) = run(&["--aead", "aes128gcm,rot13"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("option aead") && err.contains("rot13"),
        "{err}"
    );
}

#[test]
fn missing_config_file_is_reported_with_its_path() {
    let (code, _, err) = run(&["--config", "/nonexistent/tcpcryptd.conf"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/tcpcryptd.conf"), "{err}");
}
