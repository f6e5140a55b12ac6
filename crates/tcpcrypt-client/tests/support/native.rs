//! Building and running the C and Python test programs against the
//! libtcpcrypt.so cargo just built. Used by the tcpcrypt-client tests and,
//! included by path, by the tcpcrypt-cli tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use super::fake_daemon::temp_dir;

/// The tcpcrypt-client crate directory, whichever crate's test includes this.
pub fn crate_dir() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if here.ends_with("tcpcrypt-client") {
        here
    } else {
        here.join("../tcpcrypt-client")
    }
}

pub fn include_dir() -> PathBuf {
    crate_dir().join("include")
}

/// libtcpcrypt.so next to this test binary's profile directory
/// (target/<profile>/libtcpcrypt.so, or target/<profile>/deps/).
pub fn built_library() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let deps = exe.parent().expect("exe dir").to_path_buf();
    let candidates = [
        deps.parent().map(|p| p.join("libtcpcrypt.so")),
        Some(deps.join("libtcpcrypt.so")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("libtcpcrypt.so not found near {}", deps.display()))
}

/// A private directory holding the library under its link name and its
/// soname, to link against (-L) and load from (LD_LIBRARY_PATH).
pub struct LinkDir {
    pub dir: PathBuf,
    pub library: PathBuf,
}

impl LinkDir {
    pub fn new() -> Self {
        let dir = temp_dir("link");
        let library = built_library();
        for name in ["libtcpcrypt.so", "libtcpcrypt.so.0"] {
            std::os::unix::fs::symlink(&library, dir.join(name)).expect("symlink library");
        }
        Self { dir, library }
    }

    /// Compiles a C file from tests/c against the header and the library.
    pub fn compile(&self, source: &str) -> PathBuf {
        let src = crate_dir().join("tests/c").join(source);
        let out = self.dir.join(source.trim_end_matches(".c"));
        let output = Command::new("cc")
            .args([
                "-std=c99",
                "-D_POSIX_C_SOURCE=200809L",
                "-Wall",
                "-Wextra",
                "-Werror",
            ])
            .arg("-I")
            .arg(include_dir())
            .arg("-o")
            .arg(&out)
            .arg(&src)
            .arg("-L")
            .arg(&self.dir)
            .arg("-ltcpcrypt")
            .output()
            .expect("run cc");
        assert!(
            output.status.success(),
            "cc {} failed:\n{}",
            src.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        out
    }

    /// A command for a compiled program, finding libtcpcrypt.so.0 here.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("LD_LIBRARY_PATH", &self.dir);
        cmd
    }

    /// `python3 tests/python/<script> LIBRARY ...`.
    pub fn python(&self, script: &str) -> Command {
        let mut cmd = Command::new("python3");
        cmd.arg(crate_dir().join("tests/python").join(script))
            .arg(&self.library);
        cmd
    }
}

impl Drop for LinkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The value after `key ` on the line starting with it, from program output.
pub fn field<'a>(output: &'a str, key: &str) -> Option<&'a str> {
    output
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(' '))
}
