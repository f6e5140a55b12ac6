//! `tcpcrypt passwd` and `tcpcrypt keygen`: the files they write, what they
//! keep, and what they refuse. No daemon and no network needed; `fetch
//! --user/--key` are tested end to end in mod_tcpcrypt's tests/auth_login.rs,
//! and refused without tcpcrypt below.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Command;

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tcpcrypt-cli-auth-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).expect("temp dir");
    d
}

fn tcpcrypt(args: &[&str], password: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tcpcrypt"))
        .args(args)
        .env("PW", password)
        .output()
        .expect("run tcpcrypt");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn passwd(file: &str, user: &str, password: &str) -> (i32, String, String) {
    tcpcrypt(
        &[
            "passwd",
            file,
            user,
            "--iterations",
            "4096",
            "--password-env",
            "PW",
        ],
        password,
    )
}

#[test]
fn passwd_adds_and_updates_lines_and_keeps_the_files_mode() {
    let d = dir("passwd");
    let file = d.join("users");
    let f = file.to_string_lossy().into_owned();
    let (code, out, err) = passwd(&f, "alice", "one");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("added alice"), "{out}");
    assert_eq!(fs::metadata(&file).expect("file").mode() & 0o777, 0o640);
    let first = fs::read_to_string(&file).expect("read");
    assert!(first.starts_with("alice:SCRAM-SHA-256$4096:"), "{first}");
    assert!(!first.contains("one"), "the password is not stored");

    // An admin opens it to a group; updates keep that.
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).expect("chmod");
    assert_eq!(passwd(&f, "bob", "two").0, 0);
    let (code, out, _) = passwd(&f, "alice", "three");
    assert_eq!(code, 0);
    assert!(out.contains("updated alice"), "{out}");
    assert_eq!(fs::metadata(&file).expect("file").mode() & 0o777, 0o644);
    let text = fs::read_to_string(&file).expect("read");
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(!text.contains(first.trim()), "alice's old verifier is gone");
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn passwd_refuses_bad_names_counts_and_missing_passwords() {
    let d = dir("refuse");
    let f = d.join("users").to_string_lossy().into_owned();
    assert_eq!(passwd(&f, "a:b", "x").0, 1);
    assert_eq!(passwd(&f, "has space", "x").0, 1);
    let (code, _, err) = tcpcrypt(
        &[
            "passwd",
            &f,
            "u",
            "--iterations",
            "10",
            "--password-env",
            "PW",
        ],
        "x",
    );
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = tcpcrypt(
        &["passwd", &f, "u", "--password-env", "UNSET_FOR_THIS_TEST"],
        "x",
    );
    assert_eq!(code, 1);
    assert!(err.contains("UNSET_FOR_THIS_TEST"), "{err}");
    assert_eq!(passwd(&f, "u", "").0, 1, "empty password");
    assert!(!d.join("users").exists());
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn keygen_writes_a_private_key_and_its_line_and_refuses_to_overwrite() {
    let d = dir("keygen");
    let key = d.join("id");
    let k = key.to_string_lossy().into_owned();
    let (code, out, err) = tcpcrypt(&["keygen", &k, "--name", "carol"], "");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("tcpcrypt-ed25519 ") && out.trim_end().ends_with(" carol"),
        "{out}"
    );
    assert_eq!(fs::metadata(&key).expect("key").mode() & 0o777, 0o600);
    assert_eq!(fs::read_to_string(d.join("id.pub")).expect("pub"), out);
    let (code, _, err) = tcpcrypt(&["keygen", &k, "--name", "carol"], "");
    assert_eq!(code, 1);
    assert!(err.contains("--force"), "{err}");
    let (code, again, _) = tcpcrypt(&["keygen", &k, "--name", "carol", "--force"], "");
    assert_eq!(code, 0);
    assert_ne!(again, out, "a new key");
    let _ = fs::remove_dir_all(&d);
}

#[test]
fn fetch_with_a_login_refuses_a_connection_without_tcpcrypt() {
    // Nothing listens on the control socket: no session to bind to, so no
    // login is attempted (the request is never sent with credentials), and
    // the exit status is the plain fetch's "unreachable".
    let d = dir("fetch");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    let sock = d.join("none.sock").to_string_lossy().into_owned();
    let (code, _, err) = tcpcrypt(
        &[
            "--control",
            &sock,
            "fetch",
            "--user",
            "alice",
            "--password-env",
            "PW",
            "--wait",
            "0",
            &url,
        ],
        "pw",
    );
    assert_eq!(code, 2, "tcpcryptd unreachable: {err}");
    assert!(err.contains("cannot ask tcpcryptd"), "{err}");
    let _ = fs::remove_dir_all(&d);
}
