//! End-to-end tests of podnet: the deploy manifests against the real
//! binaries' flags, and whole simulated clusters brought up by `podnet-lab`.
//!
//! The helpers here find the workspace's built binaries; the tests are in `tests/`.

use std::path::PathBuf;

/// `target/debug` (or the profile the tests were built with), where
/// `cargo build --workspace --bins` put every podnet binary.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .expect("target/<profile> directory")
}

pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// The workspace root (for `deploy/`, `README.md`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}
