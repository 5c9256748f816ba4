//! List + watch turned into immutable snapshots and coalesced change sets.
//!
//! CONTRACT (other crates code against exactly this API):
//! - `Informer::start(store, kinds)` spawns the list/watch tasks on the current tokio runtime.
//! - `snapshot()` is the latest complete snapshot (never a half-applied change set).
//! - `subscribe()` gives a `Subscription` whose `next()` returns everything that changed
//!   since the previous call as one `ChangeSet` (the first call: everything, `full_resync`).
//! - while the store is unreachable the last snapshot stays; after reconnecting the
//!   informer resumes from the last revision, or relists and diffs after compaction.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::compact::{EndpointSlice, Pod, Service};
use crate::object::{ClusterConfig, DecodeError, Namespace, Node, SubnetLease, TypedObject};
use crate::store::{Kind, ObjectKey, Store, StoreError, StoredObject, WatchEvent};

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

/// An immutable, complete view of the cluster at one moment. The numerous
/// kinds are held in their `compact` forms; the few-per-cluster ones whole.
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
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    synced: watch::Receiver<bool>,
}

pub struct Subscription {
    shared: Arc<Shared>,
    id: u64,
    notify: Arc<Notify>,
}

/// State shared by the per-kind tasks and the subscriptions. One mutex: a
/// change set is applied to the snapshot and recorded for every subscriber
/// in one critical section, which is what makes change sets atomic.
struct Shared {
    state: Mutex<State>,
    synced_tx: watch::Sender<bool>,
}

struct State {
    snapshot: Arc<Snapshot>,
    kinds: Vec<Kind>,
    listed: HashSet<Kind>,
    subscribers: HashMap<u64, Pending>,
    next_id: u64,
    closed: bool,
}

/// What a subscriber has not been handed yet.
struct Pending {
    notify: Arc<Notify>,
    /// Before the first full sync nothing is recorded: the first change set
    /// lists the whole snapshot anyway.
    awaiting_sync: bool,
    full_resync: bool,
    changes: BTreeMap<ObjectKey, ChangeType>,
}

impl Pending {
    fn ready(&self) -> bool {
        !self.awaiting_sync && (self.full_resync || !self.changes.is_empty())
    }

    /// Fold `c` into what is pending for its key.
    fn record(&mut self, c: &Change) {
        use ChangeType::*;
        let merged = match (self.changes.get(&c.key), c.change) {
            (None, t) => Some(t),
            (Some(Added), Deleted) => None,
            (Some(Added), _) => Some(Added),
            (Some(Deleted), Added | Modified) => Some(Modified),
            (Some(_), t) => Some(t),
        };
        match merged {
            Some(t) => {
                self.changes.insert(c.key.clone(), t);
            }
            None => {
                self.changes.remove(&c.key);
            }
        }
    }
}

fn all_keys(s: &Snapshot) -> Vec<ObjectKey> {
    fn ns(kind: Kind, n: &NamespacedName) -> ObjectKey {
        ObjectKey::new(kind, Some(&n.namespace), &n.name)
    }
    let mut v = Vec::new();
    v.extend(s.nodes.keys().map(|n| ObjectKey::new(Kind::Node, None, n)));
    v.extend(s.services.keys().map(|n| ns(Kind::Service, n)));
    v.extend(s.endpoint_slices.keys().map(|n| ns(Kind::EndpointSlice, n)));
    v.extend(s.pods.keys().map(|n| ns(Kind::Pod, n)));
    v.extend(
        s.namespaces
            .keys()
            .map(|n| ObjectKey::new(Kind::Namespace, None, n)),
    );
    v.extend(
        s.cluster_configs
            .keys()
            .map(|n| ObjectKey::new(Kind::ClusterConfig, None, n)),
    );
    v.extend(
        s.leases
            .keys()
            .map(|n| ObjectKey::new(Kind::SubnetLease, None, n)),
    );
    v
}

impl Snapshot {
    /// Store `obj` under `key`; true if the key was present before.
    fn insert(&mut self, key: &ObjectKey, obj: Entry) -> bool {
        let nn = || NamespacedName::new(key.namespace.as_deref().unwrap_or(""), &key.name);
        let name = key.name.clone();
        match obj {
            Entry::Node(o) => self.nodes.insert(name, o).is_some(),
            Entry::Service(o) => self.services.insert(nn(), o).is_some(),
            Entry::EndpointSlice(o) => self.endpoint_slices.insert(nn(), o).is_some(),
            Entry::Pod(o) => self.pods.insert(nn(), o).is_some(),
            Entry::Namespace(o) => self.namespaces.insert(name, o).is_some(),
            Entry::ClusterConfig(o) => self.cluster_configs.insert(name, o).is_some(),
            Entry::SubnetLease(o) => self.leases.insert(name, o).is_some(),
        }
    }

    /// Remove `key`; true if it was present.
    fn remove(&mut self, key: &ObjectKey) -> bool {
        let nn = || NamespacedName::new(key.namespace.as_deref().unwrap_or(""), &key.name);
        match key.kind {
            Kind::Node => self.nodes.remove(&key.name).is_some(),
            Kind::Service => self.services.remove(&nn()).is_some(),
            Kind::EndpointSlice => self.endpoint_slices.remove(&nn()).is_some(),
            Kind::Pod => self.pods.remove(&nn()).is_some(),
            Kind::Namespace => self.namespaces.remove(&key.name).is_some(),
            Kind::ClusterConfig => self.cluster_configs.remove(&key.name).is_some(),
            Kind::SubnetLease => self.leases.remove(&key.name).is_some(),
        }
    }
}

/// One object in the form the snapshot keeps it.
enum Entry {
    Node(Arc<Node>),
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    Pod(Arc<Pod>),
    Namespace(Arc<Namespace>),
    ClusterConfig(Arc<ClusterConfig>),
    SubnetLease(Arc<SubnetLease>),
}

impl Entry {
    /// The snapshot form of a decoded object; `Err` is an `Ignored` reason
    /// (an EndpointSlice without its Service label) or an invalid value.
    fn from_typed(obj: TypedObject) -> Result<Entry, String> {
        Ok(match obj {
            TypedObject::Node(o) => Entry::Node(Arc::new(o)),
            TypedObject::Service(o) => Entry::Service(Arc::new(Service::from_k8s(o)?)),
            TypedObject::EndpointSlice(o) => {
                Entry::EndpointSlice(Arc::new(EndpointSlice::from_k8s(o)?))
            }
            TypedObject::Pod(o) => Entry::Pod(Arc::new(Pod::from_k8s(o))),
            TypedObject::Namespace(o) => Entry::Namespace(Arc::new(o)),
            TypedObject::ClusterConfig(o) => Entry::ClusterConfig(Arc::new(o)),
            TypedObject::SubnetLease(o) => Entry::SubnetLease(Arc::new(o)),
        })
    }
}

/// One decoded update to apply to the snapshot.
enum Update {
    Put(ObjectKey, Entry),
    /// Deleted, or now ignored (an EndpointSlice that lost its Service label).
    Remove(ObjectKey),
}

/// Decode a stored object for the snapshot; `Err` with its key when it is
/// malformed (logged).
fn decode(o: StoredObject) -> Result<Update, ObjectKey> {
    let malformed = |o: StoredObject, e: &dyn fmt::Display| {
        tracing::warn!(key = %o.key, revision = o.mod_revision, error = %e, "skipping malformed object");
        Err(o.key)
    };
    match o.decode() {
        Ok(t) => match Entry::from_typed(t) {
            Ok(e) => Ok(Update::Put(o.key, e)),
            Err(e) => malformed(o, &e),
        },
        Err(e @ DecodeError::Ignored { .. }) => {
            tracing::info!(key = %o.key, revision = o.mod_revision, reason = %e, "leaving object out of the snapshot");
            Ok(Update::Remove(o.key))
        }
        Err(e) => malformed(o, &e),
    }
}

impl Shared {
    /// Apply one change set of `kind` and hand it to every subscriber.
    /// `relist`: the updates come from a list (the caller turned it into
    /// puts of changed keys and removes of vanished ones).
    fn publish(&self, kind: Kind, updates: Vec<Update>, revision: u64, relist: bool) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.closed {
            return;
        }
        let first_list = relist && !st.listed.contains(&kind);
        let mut changes = Vec::new();
        {
            let snap = Arc::make_mut(&mut st.snapshot);
            for u in updates {
                match u {
                    Update::Put(k, obj) => {
                        let existed = snap.insert(&k, obj);
                        changes.push(Change {
                            key: k,
                            change: if existed {
                                ChangeType::Modified
                            } else {
                                ChangeType::Added
                            },
                        });
                    }
                    Update::Remove(k) => {
                        if snap.remove(&k) {
                            changes.push(Change {
                                key: k,
                                change: ChangeType::Deleted,
                            });
                        }
                    }
                }
            }
            snap.revision = snap.revision.max(revision);
            if first_list {
                st.listed.insert(kind);
            }
        }
        let newly_synced = !st.snapshot.synced && st.kinds.iter().all(|k| st.listed.contains(k));
        if newly_synced {
            Arc::make_mut(&mut st.snapshot).synced = true;
        }
        let everything = if newly_synced {
            all_keys(&st.snapshot)
        } else {
            Vec::new()
        };
        for p in st.subscribers.values_mut() {
            if newly_synced && p.awaiting_sync {
                p.awaiting_sync = false;
                p.full_resync = true;
                p.changes = everything
                    .iter()
                    .map(|k| (k.clone(), ChangeType::Added))
                    .collect();
            } else if !p.awaiting_sync {
                for c in &changes {
                    p.record(c);
                }
                if relist && !first_list {
                    p.full_resync = true;
                }
            } else {
                continue;
            }
            if p.ready() {
                p.notify.notify_one();
            }
        }
        drop(st);
        if newly_synced {
            self.synced_tx.send_replace(true);
        }
    }
}

impl Informer {
    /// Start listing and watching `kinds` on the current tokio runtime.
    pub fn start(store: Arc<dyn Store>, kinds: &[Kind]) -> Informer {
        let mut kinds: Vec<Kind> = kinds.to_vec();
        kinds.sort();
        kinds.dedup();
        let (synced_tx, synced) = watch::channel(false);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                snapshot: Arc::new(Snapshot {
                    synced: kinds.is_empty(),
                    ..Snapshot::default()
                }),
                kinds: kinds.clone(),
                listed: HashSet::new(),
                subscribers: HashMap::new(),
                next_id: 0,
                closed: false,
            }),
            synced_tx,
        });
        if kinds.is_empty() {
            shared.synced_tx.send_replace(true);
        }
        let tasks = kinds
            .iter()
            .map(|&kind| tokio::spawn(run_kind(store.clone(), kind, shared.clone())))
            .collect();
        Informer {
            shared,
            tasks,
            synced,
        }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot
            .clone()
    }

    /// A new subscriber. Its first `next()` returns the whole snapshot (all
    /// keys as `Added`, `full_resync`) once every kind has been listed.
    pub fn subscribe(&self) -> Subscription {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let id = st.next_id;
        st.next_id += 1;
        let notify = Arc::new(Notify::new());
        let synced = st.snapshot.synced;
        let changes = if synced {
            all_keys(&st.snapshot)
                .into_iter()
                .map(|k| (k, ChangeType::Added))
                .collect()
        } else {
            BTreeMap::new()
        };
        st.subscribers.insert(
            id,
            Pending {
                notify: notify.clone(),
                awaiting_sync: !synced,
                full_resync: synced,
                changes,
            },
        );
        Subscription {
            shared: self.shared.clone(),
            id,
            notify,
        }
    }

    /// Resolves once every kind has been listed once.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.clone();
        // The sender lives in `shared`, which `self` keeps alive.
        let _ = rx.wait_for(|s| *s).await;
    }
}

impl Drop for Informer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.closed = true;
        for p in st.subscribers.values() {
            p.notify.notify_one();
        }
    }
}

impl Subscription {
    /// Waits for the next coalesced change set; `None` once the informer is dropped.
    pub async fn next(&mut self) -> Option<ChangeSet> {
        loop {
            {
                let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
                if st.closed {
                    return None;
                }
                let snapshot = st.snapshot.clone();
                let p = st.subscribers.get_mut(&self.id)?;
                if p.ready() {
                    let changes = std::mem::take(&mut p.changes)
                        .into_iter()
                        .map(|(key, change)| Change { key, change })
                        .collect();
                    let full_resync = std::mem::take(&mut p.full_resync);
                    return Some(ChangeSet {
                        snapshot,
                        changes,
                        full_resync,
                    });
                }
            }
            // notify_one keeps a permit, so a publish between the check
            // above and this await is not lost.
            self.notify.notified().await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.subscribers.remove(&self.id);
    }
}

/// Exponential backoff for reconnecting: 100 ms doubling up to 5 s.
struct Backoff(Duration);

impl Backoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);
    fn new() -> Self {
        Backoff(Self::MIN)
    }
    fn reset(&mut self) {
        self.0 = Self::MIN;
    }
    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Self::MAX);
    }
}

/// Most events applied as one change set: bounds the time the snapshot lock is held.
const MAX_BATCH: usize = 10_000;

/// List + watch one kind forever, publishing change sets into `shared`.
async fn run_kind(store: Arc<dyn Store>, kind: Kind, shared: Arc<Shared>) {
    // Revision of every key of this kind in the snapshot, to tell on a relist
    // what changed meanwhile.
    let mut revs: HashMap<ObjectKey, u64> = HashMap::new();
    let mut last = 0u64;
    let mut need_list = true;
    let mut backoff = Backoff::new();
    loop {
        if need_list {
            let mut updates = Vec::new();
            let mut fresh = HashMap::with_capacity(revs.len());
            // Decoded batch by batch as the store reads them, so that the
            // raw text of the whole list is never held at once.
            let mut take = |batch: Vec<StoredObject>| {
                for o in batch {
                    let unchanged = revs.get(&o.key) == Some(&o.mod_revision);
                    fresh.insert(o.key.clone(), o.mod_revision);
                    if unchanged {
                        continue;
                    }
                    match decode(o) {
                        Ok(u) => updates.push(u),
                        // Malformed now: drop what the snapshot had too,
                        // the list is the truth.
                        Err(key) => updates.push(Update::Remove(key)),
                    }
                }
            };
            match store.list_in_batches(kind, &mut take).await {
                Ok(rev) => {
                    for k in revs.keys() {
                        if !fresh.contains_key(k) {
                            updates.push(Update::Remove(k.clone()));
                        }
                    }
                    let count = fresh.len();
                    revs = fresh;
                    last = rev;
                    need_list = false;
                    tracing::debug!(kind = %kind, objects = count, revision = rev, "listed");
                    shared.publish(kind, updates, rev, true);
                    // The list's JSON text and full typed objects were several
                    // times the compact forms kept; hand their pages back.
                    crate::memory::release_freed();
                    backoff.reset();
                }
                Err(StoreError::Compacted { revision, .. }) => {
                    tracing::info!(kind = %kind, revision, "list revision compacted while listing; listing again");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(kind = %kind, store = %store.url(), error = %e, "list failed; keeping the last snapshot and retrying");
                    backoff.wait().await;
                    continue;
                }
            }
        }
        let mut stream = match store.watch(kind, last).await {
            Ok(s) => s,
            Err(StoreError::Compacted { .. }) => {
                tracing::info!(kind = %kind, revision = last, "watch history compacted; relisting");
                need_list = true;
                continue;
            }
            Err(e) => {
                tracing::warn!(kind = %kind, store = %store.url(), revision = last, error = %e, "watch failed; keeping the last snapshot and retrying");
                backoff.wait().await;
                continue;
            }
        };
        loop {
            let Some(first) = stream.next().await else {
                tracing::debug!(kind = %kind, revision = last, "watch ended; resuming");
                backoff.wait().await;
                break;
            };
            // Everything already delivered goes into the same change set.
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match stream.next().now_or_never() {
                    Some(Some(item)) => batch.push(item),
                    _ => break,
                }
            }
            let mut updates = Vec::new();
            let mut error = None;
            for item in batch {
                match item {
                    Ok(ev) => {
                        let rev = ev.revision();
                        if rev <= last {
                            continue; // already applied (a backend resent it)
                        }
                        last = rev;
                        match ev {
                            WatchEvent::Put(o) => {
                                revs.insert(o.key.clone(), o.mod_revision);
                                if let Ok(u) = decode(o) {
                                    updates.push(u);
                                }
                            }
                            WatchEvent::Delete { key, .. } => {
                                revs.remove(&key);
                                updates.push(Update::Remove(key));
                            }
                        }
                    }
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
            if !updates.is_empty() {
                shared.publish(kind, updates, last, false);
            }
            match error {
                None => backoff.reset(),
                Some(StoreError::Compacted { .. }) => {
                    tracing::info!(kind = %kind, revision = last, "watch history compacted; relisting");
                    need_list = true;
                    break;
                }
                Some(e) => {
                    tracing::warn!(kind = %kind, store = %store.url(), revision = last, error = %e, "watch broke; keeping the last snapshot and resuming");
                    backoff.wait().await;
                    break;
                }
            }
        }
    }
}
