//! Cluster state for podnet: the Kubernetes object shapes podnet consumes
//! (Nodes, Services, EndpointSlices, Pods, Namespaces, podnet's ClusterConfig),
//! the `Store` trait with its backends (`dir` on one machine, `etcd` for a
//! cluster), and the `Informer` that turns list + watch into snapshots and
//! change sets for the node agent, the proxy and the DNS server.

pub mod etcd;
pub mod informer;
pub mod object;
pub mod store;

pub use informer::{
    Change, ChangeSet, ChangeType, Informer, NamespacedName, Snapshot, Subscription,
};
pub use store::{
    Kind, Lease, ObjectKey, Store, StoreError, StoreResult, StoredObject, WatchEvent, WatchStream,
};
