//! The Apache module and libtcpcrypt reach this crate through
//! tcpcrypt-client; neither may pull in a crypto library just to ask the
//! daemon a question. Their direct dependencies are checked here against a
//! short list, so adding one is a decision someone makes on purpose.

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
        ("tcpcrypt-control", &["serde_json", "thiserror"][..]),
        (
            "tcpcrypt-client",
            &["libc", "tcpcrypt-control", "thiserror"][..],
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

#[test]
fn dependency_names_are_read_from_the_dependencies_section_only() {
    let toml = "[package]\nname = \"x\"\n[dependencies]\n# why\nlibc = \"0.2\"\n\
                thiserror.workspace = true\n[dev-dependencies]\naws-lc-rs = \"1\"\n";
    assert_eq!(dependencies(toml), vec!["libc", "thiserror"]);
}
