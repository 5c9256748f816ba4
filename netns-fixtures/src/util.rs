//! Small helpers every namespace test needs.

use std::net::TcpListener;
use std::time::{Duration, Instant};

/// True when running as root. Otherwise prints why the calling test is skipped.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!("skipping: this test creates network namespaces and needs root");
        false
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 to find a free port")
}

/// Polls `check` every `interval` until it returns true or `timeout` passes.
/// Returns whether it became true.
pub fn wait_until(timeout: Duration, interval: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(interval);
    }
}
