//! Cluster state for podnet: the Kubernetes object shapes podnet consumes
//! (Nodes, Services, EndpointSlices, Pods, Namespaces, podnet's ClusterConfig),
//! the `Store` trait with its backends (`dir` on one machine, `etcd` for a
//! cluster), and the `Informer` that turns list + watch into snapshots and
//! change sets for the node agent, the proxy and the DNS server.
//!
//! - `store`: the backend-neutral trait and key/event types.
//! - `object`: typed decoding with Kubernetes defaults, `ClusterConfig` checks.
//! - `parse`: user input (kubectl-style YAML/JSON, Lists, multi-doc) to objects.
//! - `dir`, `etcd`: the backends; `open_store` picks one from a URL.
//! - `informer`: snapshots + coalesced change sets over any `Store`, holding
//!   Services, EndpointSlices and Pods in their `compact` forms.
//! - `subnet`: node pod-subnet claims on top of `create_if_absent` + leases.
//! - `ctl`: what the `podnetctl` binary does.
//! - `memory`: glibc allocator policy for processes that keep a snapshot.

pub mod compact;
pub mod ctl;
pub mod dir;
pub mod etcd;
pub mod informer;
pub mod memory;
pub mod object;
mod open;
pub mod parse;
pub mod store;
pub mod subnet;

pub use dir::DirStore;
pub use informer::{
    Change, ChangeSet, ChangeType, Informer, NamespacedName, Snapshot, Subscription,
};
pub use open::{open_store, DEFAULT_STORE, STORE_ENV};
pub use store::{
    Kind, Lease, ObjectKey, Store, StoreError, StoreResult, StoredObject, WatchEvent, WatchStream,
};
