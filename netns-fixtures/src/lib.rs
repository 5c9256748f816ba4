//! Network-namespace fixtures for podnet's tests, demos and benchmarks.
//!
//! - `netns`: RAII network namespaces (`Netns`, with `Host`/`Pod` as names for the
//!   two roles), running commands and closures inside them, unique names, cleanup
//!   on drop and of leftovers from crashed runs.
//! - `underlay`: links between namespaces (a veth pair, or a switch namespace with a bridge).
//! - `cluster`: several nodes on an underlay, each with its own CNI and agent state.
//! - `etcd`: a throw-away etcd server on loopback.
//! - `util`: root check, free ports, polling.
//!
//! Nothing here changes the root namespace: every link, address and route is
//! created inside a namespace that this crate made.

pub mod cluster;
pub mod etcd;
pub mod lab;
pub mod netns;
pub mod underlay;
pub mod util;

pub use netns::{unique_name, ChildGuard, Host, Netns, Pod};
pub use underlay::Underlay;
pub use util::{free_port, require_root, wait_until};

/// Put at the top of a test that needs root: returns early (the test passes
/// with a printed skip note) when not running as root.
#[macro_export]
macro_rules! skip_unless_root {
    () => {
        if !$crate::require_root() {
            return;
        }
    };
}
