//! List + watch turned into immutable snapshots and coalesced change sets.
//!
//! CONTRACT (other crates code against exactly this API):
//! - `Informer::start(store, kinds)` spawns the list/watch tasks on the current tokio runtime.
//! - `snapshot()` is the latest complete snapshot (never a half-applied change set).
//! - `subscribe()` gives a `Subscription` whose `next()` returns everything that changed
//!   since the previous call as one `ChangeSet` (the first call: everything, `full_resync`).
//! - while the store is unreachable the last snapshot stays; after reconnecting the
//!   informer resumes from the last revision, or relists and diffs after compaction.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::object::{ClusterConfig, EndpointSlice, Namespace, Node, Pod, Service, SubnetLease};
use crate::store::{Kind, ObjectKey, Store};

/// `namespace/name` of a namespaced object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamespacedName {
    pub namespace: String,
    pub name: String,
}

impl NamespacedName {
    pub fn new(namespace: &str, name: &str) -> Self {
        NamespacedName {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for NamespacedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// An immutable, complete view of the cluster at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Highest store revision reflected here.
    pub revision: u64,
    /// True once every watched kind has been listed successfully.
    pub synced: bool,
    pub nodes: BTreeMap<String, Arc<Node>>,
    pub services: BTreeMap<NamespacedName, Arc<Service>>,
    pub endpoint_slices: BTreeMap<NamespacedName, Arc<EndpointSlice>>,
    pub pods: BTreeMap<NamespacedName, Arc<Pod>>,
    pub namespaces: BTreeMap<String, Arc<Namespace>>,
    pub cluster_configs: BTreeMap<String, Arc<ClusterConfig>>,
    pub leases: BTreeMap<String, Arc<SubnetLease>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: ObjectKey,
    pub change: ChangeType,
}

/// Everything that changed since a subscriber's previous `next()`, with the
/// snapshot that already contains all of it.
#[derive(Debug, Clone)]
pub struct ChangeSet {
    pub snapshot: Arc<Snapshot>,
    /// Keys changed (coalesced: one entry per key).
    pub changes: Vec<Change>,
    /// True on the first change set and after a relist: treat as "everything may have changed".
    pub full_resync: bool,
}

pub struct Informer {
    _priv: (),
}

pub struct Subscription {
    _priv: (),
}

impl Informer {
    pub fn start(_store: Arc<dyn Store>, _kinds: &[Kind]) -> Informer {
        todo!("implemented by the state work")
    }
    pub fn snapshot(&self) -> Arc<Snapshot> {
        todo!()
    }
    pub fn subscribe(&self) -> Subscription {
        todo!()
    }
    /// Resolves once every kind has been listed once.
    pub async fn wait_synced(&self) {
        todo!()
    }
}

impl Subscription {
    /// Waits for the next coalesced change set; `None` once the informer is dropped.
    pub async fn next(&mut self) -> Option<ChangeSet> {
        todo!()
    }
}
