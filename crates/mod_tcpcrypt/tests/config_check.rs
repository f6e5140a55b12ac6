//! What an admin sees from `apachectl -t` and `apache2 -L`: directives
//! with help text, and clear errors for bad arguments. Runs httpd only in
//! its config-test mode (no root needed, nothing listens).

mod support;

use std::process::Command;

use support::httpd::{TempDir, module_path, write_file};

/// Runs `apache2 FLAG` on a minimal config ending in `body`; returns
/// (success, stderr+stdout).
fn run_apache2(flag: &str, body: &str) -> (bool, String) {
    let dir = TempDir::new("configtest");
    let conf = dir.path().join("httpd.conf");
    let r = dir.path().display();
    write_file(
        &conf,
        &format!(
            "ServerRoot {r}
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule tcpcrypt_module {so}
Listen 127.0.0.1:1
ServerName localhost
PidFile {r}/httpd.pid
ErrorLog {r}/error.log
DocumentRoot {r}
{body}
",
            so = module_path().display()
        ),
        0o644,
    );
    let out = Command::new("apache2")
        .arg(flag)
        .arg("-f")
        .arg(&conf)
        .output()
        .unwrap_or_else(|e| panic!("running apache2 (install apache2): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    (out.status.success(), text)
}

fn config_test(body: &str) -> (bool, String) {
    run_apache2("-t", body)
}

fn assert_rejected(body: &str, expected: &str) {
    let (ok, text) = config_test(body);
    assert!(!ok, "config was accepted:\n{body}\n{text}");
    assert!(text.contains("Syntax error"), "{text}");
    assert!(text.contains(expected), "want {expected:?} in:\n{text}");
}

#[test]
fn valid_directives_pass_the_config_test() {
    let (ok, text) = config_test(
        "TcpcryptControlSocket /run/tcpcrypt/control.sock\nTcpcryptLookupTimeout 250\nTcpcrypt On\n\
         <Location /x>\n  Tcpcrypt Off\n  Require tcpcrypt\n</Location>\n\
         <Location /y>\n  <RequireAny>\n    Require tcpcrypt\n    Require method GET\n  </RequireAny>\n</Location>",
    );
    assert!(ok, "{text}");
}

#[test]
fn module_answers_to_its_c_file_name() {
    let (ok, text) = config_test(
        "<IfModule !mod_tcpcrypt.c>\n  Error \"mod_tcpcrypt.c not found by name\"\n</IfModule>",
    );
    assert!(ok, "{text}");
}

#[test]
fn lookup_timeout_must_be_a_number_of_milliseconds() {
    assert_rejected(
        "TcpcryptLookupTimeout 250ms",
        "TcpcryptLookupTimeout: expected a whole number of milliseconds (1 to 10000), got '250ms'",
    );
}

#[test]
fn lookup_timeout_must_be_within_range() {
    assert_rejected(
        "TcpcryptLookupTimeout 0",
        "TcpcryptLookupTimeout: 0 ms is out of range",
    );
    assert_rejected(
        "TcpcryptLookupTimeout 20000",
        "TcpcryptLookupTimeout: 20000 ms is out of range",
    );
}

#[test]
fn control_socket_must_be_absolute() {
    assert_rejected(
        "TcpcryptControlSocket run/control.sock",
        "TcpcryptControlSocket: expected an absolute path",
    );
}

#[test]
fn tcpcrypt_takes_on_or_off() {
    assert_rejected("Tcpcrypt yes", "Tcpcrypt must be On or Off");
}

#[test]
fn server_directives_are_refused_inside_a_location() {
    assert_rejected(
        "<Location /x>\n  TcpcryptLookupTimeout 100\n</Location>",
        "TcpcryptLookupTimeout not allowed in <Location> context",
    );
}

#[test]
fn require_tcpcrypt_takes_no_arguments() {
    assert_rejected(
        "<Location /x>\n  Require tcpcrypt please\n</Location>",
        "'Require tcpcrypt' takes no arguments, got 'please'",
    );
}

#[test]
fn every_directive_has_help_text_in_the_directive_list() {
    let (ok, list) = run_apache2("-L", "");
    assert!(ok, "{list}");

    for (directive, help) in [
        (
            "Tcpcrypt (mod_tcpcrypt.c)",
            "On|Off: set the TCP_CRYPT_* environment variables",
        ),
        (
            "TcpcryptControlSocket (mod_tcpcrypt.c)",
            "absolute path of tcpcryptd's control socket",
        ),
        (
            "TcpcryptLookupTimeout (mod_tcpcrypt.c)",
            "milliseconds (1-10000)",
        ),
    ] {
        let at = list
            .find(directive)
            .unwrap_or_else(|| panic!("{directive} missing from apache2 -L:\n{list}"));
        assert!(
            list[at..].lines().nth(1).is_some_and(|l| l.contains(help)),
            "{list}"
        );
    }
}

#[test]
fn auth_directives_pass_in_a_location_and_need_absolute_paths() {
    let load = "LoadModule authn_core_module /usr/lib/apache2/modules/mod_authn_core.so\n\
                LoadModule authz_user_module /usr/lib/apache2/modules/mod_authz_user.so\n";
    let (ok, text) = config_test(&format!(
        "{load}<Location /private>\n  AuthType tcpcrypt\n  AuthName staff\n  \
         TcpcryptAuthUserFile /etc/apache2/tcpcrypt.users\n  TcpcryptAuthKeyFile /etc/apache2/tcpcrypt.keys\n  \
         <RequireAll>\n    Require valid-user\n    Require tcpcrypt\n  </RequireAll>\n</Location>"
    ));
    assert!(ok, "{text}");
    assert_rejected(
        &format!("{load}<Location /p>\n  TcpcryptAuthUserFile users.txt\n</Location>"),
        "TcpcryptAuthUserFile: expected an absolute path, got 'users.txt'",
    );
    assert_rejected(
        &format!("{load}<Location /p>\n  TcpcryptAuthKeyFile keys\n</Location>"),
        "TcpcryptAuthKeyFile: expected an absolute path",
    );
}

#[test]
fn auth_directives_are_listed_with_their_help() {
    let (ok, text) = run_apache2("-L", "");
    assert!(ok, "{text}");
    for directive in ["TcpcryptAuthUserFile", "TcpcryptAuthKeyFile"] {
        assert!(
            text.contains(directive),
            "{directive} missing from -L:\n{text}"
        );
    }
    assert!(text.contains("tcpcrypt passwd"), "{text}");
}
