//! The install script: stages the module and Debian's mods-available files
//! under DESTDIR, and `a2enmod` (pointed at the staged tree) enables it.

mod support;

use std::path::Path;
use std::process::Command;

use support::httpd::{TempDir, module_path};

fn apxs_query(var: &str) -> String {
    let out = Command::new("apxs")
        .args(["-q", var])
        .output()
        .unwrap_or_else(|e| panic!("apxs (install apache2-dev): {e}"));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn install_into(destdir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("install.sh");
    let out = Command::new(&script)
        .arg(module_path())
        .env("DESTDIR", destdir)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "install.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn install_copies_the_module_into_the_apxs_module_dir() {
    let stage = TempDir::new("install");
    install_into(stage.path());
    let installed = stage
        .path()
        .join(apxs_query("LIBEXECDIR").trim_start_matches('/'))
        .join("mod_tcpcrypt.so");
    let built = std::fs::read(module_path()).unwrap_or_default();
    let copied = std::fs::read(&installed).unwrap_or_default();
    assert!(
        !built.is_empty() && built == copied,
        "{} differs",
        installed.display()
    );
}

#[test]
fn install_writes_a_load_file_naming_the_installed_module() {
    let stage = TempDir::new("install");
    install_into(stage.path());
    let available = stage
        .path()
        .join(apxs_query("SYSCONFDIR").trim_start_matches('/'))
        .join("mods-available");
    let load = std::fs::read_to_string(available.join("tcpcrypt.load")).unwrap_or_default();
    assert_eq!(
        load.trim(),
        format!(
            "LoadModule tcpcrypt_module {}/mod_tcpcrypt.so",
            apxs_query("LIBEXECDIR")
        )
    );
    let conf = std::fs::read_to_string(available.join("tcpcrypt.conf")).unwrap_or_default();
    assert!(conf.contains("<IfModule mod_tcpcrypt.c>"), "{conf}");
}

#[test]
fn install_puts_the_header_for_other_modules_next_to_httpds() {
    let stage = TempDir::new("install");
    install_into(stage.path());
    let header = stage
        .path()
        .join(apxs_query("INCLUDEDIR").trim_start_matches('/'))
        .join("mod_tcpcrypt.h");
    let text = std::fs::read_to_string(&header).unwrap_or_default();
    assert!(text.contains("tcpcrypt_conn_var"), "{}", header.display());
}

#[test]
fn a2enmod_enables_the_staged_module() {
    let stage = TempDir::new("install");
    install_into(stage.path());
    let confdir = stage
        .path()
        .join(apxs_query("SYSCONFDIR").trim_start_matches('/'));
    std::fs::create_dir_all(confdir.join("mods-enabled"))
        .unwrap_or_else(|e| panic!("mkdir mods-enabled: {e}"));
    let out = Command::new("a2enmod")
        .arg("-q")
        .arg("tcpcrypt")
        .env("APACHE_CONFDIR", &confdir)
        .output()
        .unwrap_or_else(|e| panic!("running a2enmod: {e}"));
    assert!(
        out.status.success(),
        "a2enmod failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for file in ["tcpcrypt.load", "tcpcrypt.conf"] {
        let link = confdir.join("mods-enabled").join(file);
        assert!(link.exists(), "{} missing after a2enmod", link.display());
    }
}
