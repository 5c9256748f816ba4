//! The `Store` trait: what every backend (dir, etcd) offers the rest of podnet.
//!
//! Values are JSON text, kept as read, so that a backend never needs to
//! understand an object and a list never builds JSON trees: typed decoding
//! (`StoredObject::decode`) reads the text straight into the typed form.

use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::object::{self, DecodeError, TypedObject};

/// The kinds of object podnet stores. `SubnetLease` is podnet's own record of a
/// node's claim on a pod subnet (etcd key `/podnet/leases/<a.b.c.d-len>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Node,
    Service,
    EndpointSlice,
    Pod,
    Namespace,
    ClusterConfig,
    SubnetLease,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Node,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Pod,
        Kind::Namespace,
        Kind::ClusterConfig,
        Kind::SubnetLease,
    ];

    /// Path segment / key segment used by every backend: `nodes`, `services`, ...
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Node => "nodes",
            Kind::Service => "services",
            Kind::EndpointSlice => "endpointslices",
            Kind::Pod => "pods",
            Kind::Namespace => "namespaces",
            Kind::ClusterConfig => "clusterconfigs",
            Kind::SubnetLease => "leases",
        }
    }

    /// The `kind:` field of the Kubernetes shape.
    pub fn kind_name(self) -> &'static str {
        match self {
            Kind::Node => "Node",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Pod => "Pod",
            Kind::Namespace => "Namespace",
            Kind::ClusterConfig => "ClusterConfig",
            Kind::SubnetLease => "SubnetLease",
        }
    }

    pub fn namespaced(self) -> bool {
        matches!(self, Kind::Service | Kind::EndpointSlice | Kind::Pod)
    }

    /// Accepts what a user types after `podnetctl get`: singular, plural,
    /// short names (`svc`, `ep`/`eps`, `no`, `ns`, `po`), any case.
    pub fn parse(s: &str) -> Option<Kind> {
        let l = s.to_ascii_lowercase();
        let k = match l.as_str() {
            "node" | "nodes" | "no" => Kind::Node,
            "service" | "services" | "svc" => Kind::Service,
            "endpointslice" | "endpointslices" | "eps" | "ep" => Kind::EndpointSlice,
            "pod" | "pods" | "po" => Kind::Pod,
            "namespace" | "namespaces" | "ns" => Kind::Namespace,
            "clusterconfig" | "clusterconfigs" | "cc" => Kind::ClusterConfig,
            "subnetlease" | "subnetleases" | "lease" | "leases" => Kind::SubnetLease,
            _ => return None,
        };
        Some(k)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.plural())
    }
}

/// Identifies one object. `namespace` is `None` for cluster-scoped kinds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: Option<&str>, name: &str) -> Self {
        ObjectKey {
            kind,
            namespace: if kind.namespaced() {
                Some(namespace.unwrap_or("default").to_string())
            } else {
                None
            },
            name: name.to_string(),
        }
    }

    /// The etcd key of this object: `/podnet/<kind>/<namespace>/<name>`.
    pub fn etcd_key(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("/podnet/{}/{}/{}", self.kind.plural(), ns, self.name),
            None => format!("/podnet/{}/{}", self.kind.plural(), self.name),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{}/{}", self.kind.plural(), ns, self.name),
            None => write!(f, "{}/{}", self.kind.plural(), self.name),
        }
    }
}

/// One stored object with the store revision at which it was last modified.
#[derive(Debug, Clone)]
pub struct StoredObject {
    pub key: ObjectKey,
    pub mod_revision: u64,
    /// The object as JSON text (checked to be JSON). A `serde_json::Value`
    /// of it would take 5-10 times its size in many small allocations, which
    /// is what a list of tens of thousands of objects must not build.
    pub raw: Box<RawValue>,
}

impl StoredObject {
    /// The JSON text.
    pub fn json(&self) -> &str {
        self.raw.get()
    }

    /// The object as a JSON tree (for tools that edit or print it). Fails only
    /// for what a tree cannot hold, such as a number beyond `f64`.
    pub fn value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(self.raw.get())
    }

    /// The typed form of the object, as `object::decode` makes it, read
    /// straight from the text.
    pub fn decode(&self) -> Result<TypedObject, DecodeError> {
        object::decode_json(self.key.kind, self.raw.get())
    }
}

/// Same key, revision and text.
impl PartialEq for StoredObject {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
            && self.mod_revision == other.mod_revision
            && self.raw.get() == other.raw.get()
    }
}

/// One change seen by a watch. `revision` is the store revision of the change.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    Put(StoredObject),
    Delete { key: ObjectKey, revision: u64 },
}

impl WatchEvent {
    pub fn revision(&self) -> u64 {
        match self {
            WatchEvent::Put(o) => o.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
        }
    }
    pub fn key(&self) -> &ObjectKey {
        match self {
            WatchEvent::Put(o) => &o.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The requested revision is no longer available; the caller must relist.
    #[error("watch of {kind} from revision {revision}: history compacted (oldest kept is {compacted}), relist needed")]
    Compacted {
        kind: Kind,
        revision: u64,
        compacted: u64,
    },
    #[error("store {url} is unreachable while {doing}: {source}")]
    Unreachable {
        url: String,
        doing: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{key} already exists")]
    AlreadyExists { key: ObjectKey },
    #[error("{key} not found")]
    NotFound { key: ObjectKey },
    #[error("{doing} {path}: {source}")]
    Io {
        doing: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("object {key} is malformed: {reason}")]
    Malformed { key: String, reason: String },
    #[error("invalid store URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{0}")]
    Other(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A watch: events in revision order. An `Err(StoreError::Compacted)` item
/// means the caller must relist; `Err(Unreachable)` ends the stream and the
/// caller reconnects with the last revision it saw.
pub type WatchStream = Pin<Box<dyn Stream<Item = StoreResult<WatchEvent>> + Send>>;

/// A lease keeps lease-bound keys alive while it is kept alive (etcd leases;
/// the dir store emulates them with an expiry written beside the object).
#[async_trait::async_trait]
pub trait Lease: Send + Sync {
    fn id(&self) -> i64;
    /// Renew once; callers run this at about a third of the TTL.
    async fn keep_alive(&self) -> StoreResult<()>;
    /// Give the lease up now: its keys are deleted.
    async fn revoke(&self) -> StoreResult<()>;
}

#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// A printable description such as `dir:///var/lib/podnet` or `etcd://127.0.0.1:2379`.
    fn url(&self) -> String;

    /// All objects of one kind and the store revision they were read at.
    async fn list(&self, kind: Kind) -> StoreResult<(Vec<StoredObject>, u64)>;

    /// What `list` returns, handed to `each` batch by batch as it is read
    /// (in no particular order), then the revision. A caller that keeps only
    /// a decoded form of each object thus never holds the whole list. An
    /// error can come after some batches: the caller drops what it got (a
    /// `Compacted` error means: list again).
    async fn list_in_batches(
        &self,
        kind: Kind,
        each: &mut (dyn FnMut(Vec<StoredObject>) + Send),
    ) -> StoreResult<u64> {
        let (objects, revision) = self.list(kind).await?;
        each(objects);
        Ok(revision)
    }

    /// Changes of one kind with revision > `after_revision`, starting
    /// with those already made since then, in order, without gaps.
    async fn watch(&self, kind: Kind, after_revision: u64) -> StoreResult<WatchStream>;

    async fn get(&self, key: &ObjectKey) -> StoreResult<Option<StoredObject>>;

    /// Create or replace; returns the new revision.
    async fn put(&self, key: &ObjectKey, value: &serde_json::Value) -> StoreResult<u64>;

    /// Returns the revision of the deletion, `None` when the key did not exist.
    async fn delete(&self, key: &ObjectKey) -> StoreResult<Option<u64>>;

    /// Compare-and-create: `Ok(Some(rev))` when created, `Ok(None)` when the
    /// key already existed (nothing written).
    async fn create_if_absent(
        &self,
        key: &ObjectKey,
        value: &serde_json::Value,
        lease: Option<&dyn Lease>,
    ) -> StoreResult<Option<u64>>;

    /// Grant a lease with the given TTL.
    async fn grant_lease(&self, ttl: Duration) -> StoreResult<Box<dyn Lease>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_that_no_tree_holds_is_an_error_when_asked_for_as_a_tree() {
        let raw = RawValue::from_string(r#"{"metadata": {"name": "n1"}, "x": 1e400}"#.into())
            .expect("valid JSON text");
        let o = StoredObject {
            key: ObjectKey::new(Kind::Node, None, "n1"),
            mod_revision: 1,
            raw,
        };
        assert!(o.value().is_err());
        // The typed form never looks at the unknown field.
        assert!(matches!(o.decode(), Ok(TypedObject::Node(_))));
        assert_eq!(o, o.clone());
    }
}
