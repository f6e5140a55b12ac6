//! Gives libtcpcrypt.so an soname, so programs linked against it record
//! `libtcpcrypt.so.0` and keep working across compatible upgrades.

fn main() {
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os == "linux" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libtcpcrypt.so.0");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
