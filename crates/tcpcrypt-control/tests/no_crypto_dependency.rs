//! The Apache module and libtcpcrypt reach this crate through
//! tcpcrypt-client; neither may pull in a crypto library just to ask the
//! daemon a question. Their direct dependencies are checked here against a
//! short list, so adding one is a decision someone makes on purpose. (The
//! client's optional `auth` feature is such a decision: logins need HMAC
//! and signatures; a default build has no crypto.)

fn dependencies(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_section = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_section = line == "[dependencies]";
        } else if in_section && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.']).next().unwrap_or("").trim();
            names.push(name.to_string());
        }
    }
    names
}

fn manifest(krate: &str) -> String {
    let path = format!("{}/../{krate}/Cargo.toml", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_protocol_crate_and_the_client_library_depend_on_no_crypto() {
    for (krate, allowed) in [
        // siphasher is a dependency-free hash for the session table's
        // buckets, not a crypto library.
        (
            "tcpcrypt-control",
            &["serde_json", "siphasher", "thiserror"][..],
        ),
        (
            "tcpcrypt-client",
            &["libc", "tcpcrypt-control", "thiserror", "tcpcrypt-auth"][..],
        ),
    ] {
        let deps = dependencies(&manifest(krate));
        assert!(!deps.is_empty(), "{krate}: no [dependencies] found");
        for dep in &deps {
            assert!(
                allowed.contains(&dep.as_str()),
                "{krate} depends on {dep}, which is not on its list"
            );
        }
    }
}

/// The client library's one crypto dependency is the opt-in `auth`
/// feature: a default build stays free of it.
#[test]
fn the_client_library_takes_crypto_only_as_an_optional_feature() {
    let manifest = manifest("tcpcrypt-client");
    let line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("tcpcrypt-auth"))
        .unwrap_or_else(|| panic!("tcpcrypt-client has no tcpcrypt-auth line"));
    assert!(line.contains("optional = true"), "{line}");
    let default = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("default"))
        .unwrap_or_else(|| panic!("tcpcrypt-client declares no default features"));
    assert!(!default.contains("auth"), "{default}");
}

#[test]
fn dependency_names_are_read_from_the_dependencies_section_only() {
    let toml = "[package]\nname = \"x\"\n[dependencies]\n# why\nlibc = \"0.2\"\n\
                thiserror.workspace = true\n[dev-dependencies]\naws-lc-rs = \"1\"\n";
    assert_eq!(dependencies(toml), vec!["libc", "thiserror"]);
}
