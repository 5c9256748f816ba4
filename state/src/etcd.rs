//! The etcd backend of `Store` (multi-node clusters), via `etcd-client`.
//!
//! Layout: every object is a JSON value under `ObjectKey::etcd_key()`, i.e.
//! `/podnet/<kind>/<namespace>/<name>` (cluster-scoped kinds without the
//! namespace; subnet leases are `/podnet/leases/<a.b.c.d-len>`). A kind is
//! listed and watched by its prefix `/podnet/<kind>/`.
//!
//! Connection handling: one client is kept and shared by all calls. A call that
//! fails because etcd cannot be reached drops that client, so that the next call
//! builds a fresh one (tonic's channel can otherwise stay stuck on a dead
//! connection); such calls return `StoreError::Unreachable` carrying the store
//! URL. Requests that are safe to repeat are retried a few times with
//! exponential backoff before giving up; a compare-and-create is retried only
//! when the connection was refused (nothing was sent), so a caller never
//! mistakes its own lost-reply write for someone else's.
//!
//! Pure helpers (key encoding/decoding, error classification, prefix ranges)
//! are at the bottom and unit-tested without an etcd.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions,
    Txn, TxnOp, WatchOptions, WatchResponse,
};
use serde_json::value::RawValue;
use tokio::sync::Mutex;

use crate::store::{
    Kind, Lease, ObjectKey, Store, StoreError, StoreResult, StoredObject, WatchEvent, WatchStream,
};

/// Root of every podnet key.
pub const KEY_ROOT: &str = "/podnet/";
/// Objects per range request when listing: few round trips, yet a response
/// stays far below `MAX_LIST_RESPONSE` even for large objects.
const LIST_PAGE: i64 = 1000;
/// Largest list response accepted (gRPC's default of 4 MiB could be hit by
/// a page of 1000 Nodes with big annotations).
const MAX_LIST_RESPONSE: usize = 64 << 20;
/// etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;

/// Tunables of the client side. `Default` suits a LAN cluster.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Upper bound for one unary request (and for a watch to be created).
    pub request_timeout: Duration,
    /// Upper bound for establishing the TCP/HTTP2 connection.
    pub connect_timeout: Duration,
    /// Attempts per retriable request before `Unreachable` is returned.
    pub attempts: u32,
    /// First retry delay; doubles per attempt up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// HTTP/2 keep-alive ping interval, so a silently dead peer is noticed
    /// by long-running watches.
    pub keep_alive_interval: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            attempts: 4,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            keep_alive_interval: Duration::from_secs(10),
        }
    }
}

/// A `Store` backed by an etcd cluster. Cheap to clone (shared connection).
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    url: String,
    options: EtcdOptions,
    /// The shared client and a generation number, so that a failed call only
    /// drops the client it used, not a fresh one another call already made.
    conn: Mutex<Conn>,
}

#[derive(Default)]
struct Conn {
    client: Option<Client>,
    generation: u64,
}

/// How a failed call may be retried.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads and idempotent writes: retry on any connectivity failure.
    Idempotent,
    /// Only when the request provably did not reach etcd.
    NotSent,
}

impl EtcdStore {
    /// Connects to the given endpoints (`host:port` or `http://host:port`).
    /// The connection itself is made lazily: this succeeds while etcd is down,
    /// and the first call then reports `Unreachable`.
    pub async fn connect(endpoints: Vec<String>) -> StoreResult<EtcdStore> {
        Self::connect_with_options(endpoints, EtcdOptions::default()).await
    }

    pub async fn connect_with_options(
        endpoints: Vec<String>,
        options: EtcdOptions,
    ) -> StoreResult<EtcdStore> {
        let url = store_url(&endpoints);
        if endpoints.is_empty() || endpoints.iter().any(|e| e.trim().is_empty()) {
            return Err(StoreError::BadUrl {
                url,
                reason: "an etcd endpoint list needs at least one non-empty host:port".into(),
            });
        }
        let store = EtcdStore {
            inner: Arc::new(Inner {
                endpoints,
                url,
                options,
                conn: Mutex::new(Conn::default()),
            }),
        };
        // Builds the client once, which validates the endpoint syntax.
        store.inner.client().await?;
        Ok(store)
    }

    /// Writes many objects with as few round trips as possible (transactions of
    /// up to `MAX_TXN_OPS` puts). Returns the revision of the last transaction.
    pub async fn put_many(&self, objects: &[(ObjectKey, serde_json::Value)]) -> StoreResult<u64> {
        let mut revision = 0;
        for chunk in objects.chunks(MAX_TXN_OPS) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|(k, v)| TxnOp::put(k.etcd_key(), v.to_string(), None))
                .collect();
            let doing = format!("writing {} objects starting at {}", chunk.len(), chunk[0].0);
            let resp = self
                .inner
                .call(&doing, Retry::Idempotent, |mut c| {
                    let txn = Txn::new().and_then(ops.clone());
                    async move { c.txn(txn).await }
                })
                .await?;
            revision = header_revision(resp.header());
        }
        Ok(revision)
    }

    /// Compacts the history up to `revision`: watches from older revisions
    /// then fail with `StoreError::Compacted`.
    pub async fn compact(&self, revision: u64) -> StoreResult<()> {
        let doing = format!("compacting history up to revision {revision}");
        self.inner
            .call(&doing, Retry::Idempotent, |mut c| async move {
                c.compact(
                    revision as i64,
                    Some(etcd_client::CompactionOptions::new().with_physical()),
                )
                .await
            })
            .await
            .map(|_| ())
    }

    /// The current revision of the whole store.
    pub async fn current_revision(&self) -> StoreResult<u64> {
        let resp = self
            .inner
            .call(
                "reading the current revision",
                Retry::Idempotent,
                |mut c| async move {
                    c.get(KEY_ROOT, Some(GetOptions::new().with_count_only()))
                        .await
                },
            )
            .await?;
        Ok(header_revision(resp.header()))
    }
}

impl Inner {
    /// The shared client, building one when there is none.
    async fn client(&self) -> StoreResult<(Client, u64)> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = &conn.client {
            return Ok((c.clone(), conn.generation));
        }
        let opts = ConnectOptions::new()
            .with_connect_timeout(self.options.connect_timeout)
            .with_keep_alive(
                self.options.keep_alive_interval,
                self.options.request_timeout,
            )
            .with_keep_alive_while_idle(true);
        let client = Client::connect(&self.endpoints, Some(opts))
            .await
            .map_err(|e| match e {
                etcd_client::Error::InvalidUri(_) | etcd_client::Error::InvalidArgs(_) => {
                    StoreError::BadUrl {
                        url: self.url.clone(),
                        reason: e.to_string(),
                    }
                }
                e => self.unreachable("connecting", e),
            })?;
        conn.generation += 1;
        conn.client = Some(client.clone());
        tracing::debug!(url = %self.url, generation = conn.generation, "etcd client created");
        Ok((client, conn.generation))
    }

    /// Drops the client of `generation` after it failed; the next call makes a new one.
    async fn invalidate(&self, generation: u64) {
        let mut conn = self.conn.lock().await;
        if conn.generation == generation && conn.client.take().is_some() {
            tracing::debug!(url = %self.url, generation, "etcd client dropped after a failure");
        }
    }

    fn unreachable(&self, doing: &str, source: impl Into<ErrorSource>) -> StoreError {
        StoreError::Unreachable {
            url: self.url.clone(),
            doing: doing.to_string(),
            source: source.into().0,
        }
    }

    /// Runs one request with timeout, reconnect and backoff.
    async fn call<T, F, Fut>(&self, doing: &str, retry: Retry, f: F) -> StoreResult<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.call_on(doing, retry, f).await.map(|(v, _)| v)
    }

    /// `call`, also returning the generation of the client that answered
    /// (streams keep it to drop that client when they break).
    async fn call_on<T, F, Fut>(&self, doing: &str, retry: Retry, f: F) -> StoreResult<(T, u64)>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let opts = &self.options;
        let mut backoff = opts.initial_backoff;
        let mut attempt = 1;
        loop {
            let (client, generation) = self.client().await?;
            let outcome = tokio::time::timeout(opts.request_timeout, f(client)).await;
            let (err, retriable) = match outcome {
                Ok(Ok(v)) => return Ok((v, generation)),
                Ok(Err(e)) => match classify(&e) {
                    Failure::Refused => (ErrorSource::from(e), true),
                    Failure::Connectivity => (ErrorSource::from(e), retry == Retry::Idempotent),
                    Failure::Other => return Err(self.other(doing, e)),
                },
                Err(_elapsed) => (
                    ErrorSource::from(format!("no answer within {:?}", opts.request_timeout)),
                    retry == Retry::Idempotent,
                ),
            };
            self.invalidate(generation).await;
            if !retriable || attempt >= opts.attempts {
                return Err(self.unreachable(doing, err));
            }
            tracing::debug!(url = %self.url, attempt, "{doing} failed, retrying in {backoff:?}: {}", err.0);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(opts.max_backoff);
            attempt += 1;
        }
    }

    /// An error etcd answered with (the request reached it).
    fn other(&self, doing: &str, e: etcd_client::Error) -> StoreError {
        StoreError::Other(format!("{doing} on {}: {e}", self.url))
    }

    /// All objects of `kind` at one revision, paged; starts over when that
    /// revision gets compacted between pages.
    async fn list_kind(&self, kind: Kind) -> StoreResult<(Vec<StoredObject>, u64)> {
        loop {
            let mut objects = Vec::new();
            match self
                .list_pages(kind, &mut |page| objects.extend(page))
                .await
            {
                Ok(revision) => return Ok((objects, revision)),
                Err(StoreError::Compacted { revision, .. }) => {
                    tracing::info!(%kind, revision, "list revision compacted while paging, relisting");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// All objects of `kind` at one revision, handed to `each` a page at a
    /// time. Each page is decoded while the next one is being fetched, and
    /// only one page of raw bytes is held at a time. `Compacted` when the
    /// revision of the first page got compacted before the last one was read.
    async fn list_pages(
        &self,
        kind: Kind,
        each: &mut (dyn FnMut(Vec<StoredObject>) + Send),
    ) -> StoreResult<u64> {
        let prefix = kind_prefix(kind).into_bytes();
        let end = prefix_end(&prefix);
        let doing = format!("listing {kind}");
        let mut revision: u64 = 0;
        let mut resp = self.fetch_page(&doing, prefix.clone(), &end, 0).await;
        loop {
            let mut page = match resp {
                Ok(r) => r,
                Err(StoreError::Other(msg)) if revision > 0 && msg.contains("compacted") => {
                    return Err(StoreError::Compacted {
                        kind,
                        revision,
                        // etcd does not say up to where; past the list's revision.
                        compacted: revision + 1,
                    });
                }
                Err(e) => return Err(e),
            };
            if revision == 0 {
                // Later pages are read at the first page's revision: one consistent list.
                revision = header_revision(page.header());
            }
            let more = page.more();
            let kvs = page.take_kvs();
            let next_from = kvs.last().filter(|_| more).map(|last| {
                let mut from = last.key().to_vec();
                from.push(0);
                from
            });
            let decode = async {
                each(
                    kvs.into_iter()
                        .filter_map(|kv| {
                            let rev = kv.mod_revision();
                            let (key, value) = kv.into_key_value();
                            decode_kv(kind, &key, rev, value)
                        })
                        .collect(),
                )
            };
            match next_from {
                Some(from) => {
                    // `join!` polls the fetch first, so the request is on its way
                    // before this task spends its time decoding.
                    let (next, ()) =
                        tokio::join!(self.fetch_page(&doing, from, &end, revision), decode);
                    resp = next;
                }
                None => {
                    decode.await;
                    return Ok(revision);
                }
            }
        }
    }

    /// One range request of a list: up to `LIST_PAGE` keys from `from` to `end`.
    async fn fetch_page(
        &self,
        doing: &str,
        from: Vec<u8>,
        end: &[u8],
        revision: u64,
    ) -> StoreResult<etcd_client::GetResponse> {
        let mut opts = GetOptions::new()
            .with_range(end.to_vec())
            .with_limit(LIST_PAGE);
        if revision > 0 {
            opts = opts.with_revision(revision as i64);
        }
        self.call(doing, Retry::Idempotent, |c| {
            let (from, opts) = (from.clone(), opts.clone());
            async move {
                c.kv_client()
                    .max_decoding_message_size(MAX_LIST_RESPONSE)
                    .get(from, Some(opts))
                    .await
            }
        })
        .await
    }
}

/// Boxed error carried by `StoreError::Unreachable`.
struct ErrorSource(Box<dyn std::error::Error + Send + Sync>);

impl From<etcd_client::Error> for ErrorSource {
    fn from(e: etcd_client::Error) -> Self {
        ErrorSource(Box::new(e))
    }
}

impl From<String> for ErrorSource {
    fn from(s: String) -> Self {
        ErrorSource(s.into())
    }
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> u64 {
    h.map(|h| h.revision().max(0) as u64).unwrap_or(0)
}

/// Turns one etcd key-value into a `StoredObject`; `None` (logged) for keys
/// that are not podnet object keys or values that are not JSON.
fn decode_kv(kind: Kind, key: &[u8], mod_revision: i64, value: Vec<u8>) -> Option<StoredObject> {
    let Some(key) = decode_key(kind, key) else {
        tracing::warn!(%kind, key = %String::from_utf8_lossy(key), "skipping etcd key that is not a podnet object key");
        return None;
    };
    let raw = String::from_utf8(value)
        .map_err(|e| e.to_string())
        .and_then(|text| RawValue::from_string(text).map_err(|e| e.to_string()));
    match raw {
        Ok(raw) => Some(StoredObject {
            key,
            mod_revision: mod_revision.max(0) as u64,
            raw,
        }),
        Err(e) => {
            tracing::warn!(%key, "skipping etcd value that is not JSON: {e}");
            None
        }
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    fn url(&self) -> String {
        self.inner.url.clone()
    }

    async fn list(&self, kind: Kind) -> StoreResult<(Vec<StoredObject>, u64)> {
        self.inner.list_kind(kind).await
    }

    async fn list_in_batches(
        &self,
        kind: Kind,
        each: &mut (dyn FnMut(Vec<StoredObject>) + Send),
    ) -> StoreResult<u64> {
        self.inner.list_pages(kind, each).await
    }

    async fn watch(&self, kind: Kind, after_revision: u64) -> StoreResult<WatchStream> {
        let inner = self.inner.clone();
        let prefix = kind_prefix(kind);
        let doing = format!("watching {kind} after revision {after_revision}");
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(after_revision as i64 + 1);
        let (stream, generation) = inner
            .call_on(&doing, Retry::Idempotent, |c| {
                let (prefix, opts) = (prefix.clone(), opts.clone());
                async move { c.watch_client().watch(prefix, Some(opts)).await }
            })
            .await?;
        let state = WatchState {
            inner,
            kind,
            after_revision,
            doing,
            stream,
            generation,
            pending: VecDeque::new(),
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(
            state,
            |mut st| async move {
                let item = st.next_item().await?;
                Some((item, st))
            },
        )))
    }

    async fn get(&self, key: &ObjectKey) -> StoreResult<Option<StoredObject>> {
        let k = key.etcd_key();
        let doing = format!("reading {key}");
        let mut resp = self
            .inner
            .call(&doing, Retry::Idempotent, |mut c| {
                let k = k.clone();
                async move { c.get(k, None).await }
            })
            .await?;
        let kv = resp.take_kvs().into_iter().next();
        Ok(kv.and_then(|kv| {
            let rev = kv.mod_revision();
            let (k, v) = kv.into_key_value();
            decode_kv(key.kind, &k, rev, v)
        }))
    }

    async fn put(&self, key: &ObjectKey, value: &serde_json::Value) -> StoreResult<u64> {
        let k = key.etcd_key();
        let v = value.to_string();
        let doing = format!("writing {key}");
        let resp = self
            .inner
            .call(&doing, Retry::Idempotent, |mut c| {
                let (k, v) = (k.clone(), v.clone());
                async move { c.put(k, v, None).await }
            })
            .await?;
        Ok(header_revision(resp.header()))
    }

    async fn delete(&self, key: &ObjectKey) -> StoreResult<Option<u64>> {
        let k = key.etcd_key();
        let doing = format!("deleting {key}");
        // Not repeated after a lost reply: a repeat would report "did not exist".
        let resp = self
            .inner
            .call(&doing, Retry::NotSent, |mut c| {
                let k = k.clone();
                async move { c.delete(k, None::<DeleteOptions>).await }
            })
            .await?;
        Ok((resp.deleted() > 0).then(|| header_revision(resp.header())))
    }

    async fn create_if_absent(
        &self,
        key: &ObjectKey,
        value: &serde_json::Value,
        lease: Option<&dyn Lease>,
    ) -> StoreResult<Option<u64>> {
        let k = key.etcd_key();
        let v = value.to_string();
        let lease_id = lease.map(|l| l.id());
        let doing = match lease_id {
            Some(id) => format!("creating {key} bound to lease {id:x}"),
            None => format!("creating {key}"),
        };
        let resp = self
            .inner
            .call(&doing, Retry::NotSent, |mut c| {
                let put_opts = lease_id.map(|id| PutOptions::new().with_lease(id));
                let txn = Txn::new()
                    .when([Compare::create_revision(k.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(k.clone(), v.clone(), put_opts)]);
                async move { c.txn(txn).await }
            })
            .await?;
        Ok(resp.succeeded().then(|| header_revision(resp.header())))
    }

    async fn grant_lease(&self, ttl: Duration) -> StoreResult<Box<dyn Lease>> {
        let secs = ttl_seconds(ttl);
        let doing = format!("granting a lease with TTL {secs}s");
        // A repeated grant after a lost reply leaves an unused lease that expires by itself.
        let resp = self
            .inner
            .call(&doing, Retry::Idempotent, |mut c| async move {
                c.lease_grant(secs, None).await
            })
            .await?;
        if !resp.error().is_empty() {
            return Err(StoreError::Other(format!(
                "{doing} on {}: {}",
                self.inner.url,
                resp.error()
            )));
        }
        Ok(Box::new(EtcdLease {
            inner: self.inner.clone(),
            id: resp.id(),
        }))
    }
}

/// An etcd lease; keys created with it vanish when it expires or is revoked.
pub struct EtcdLease {
    inner: Arc<Inner>,
    id: i64,
}

#[async_trait::async_trait]
impl Lease for EtcdLease {
    fn id(&self) -> i64 {
        self.id
    }

    async fn keep_alive(&self) -> StoreResult<()> {
        let id = self.id;
        let doing = format!("renewing lease {id:x}");
        // `lease_keep_alive` sends one renewal and waits for its answer; it fails
        // with "lease not found" when the lease already expired.
        self.inner
            .call(&doing, Retry::Idempotent, |mut c| async move {
                c.lease_keep_alive(id).await.map(|_| ())
            })
            .await
    }

    async fn revoke(&self) -> StoreResult<()> {
        let id = self.id;
        let doing = format!("revoking lease {id:x}");
        match self
            .inner
            .call(&doing, Retry::Idempotent, |mut c| async move {
                c.lease_revoke(id).await
            })
            .await
        {
            Ok(_) => Ok(()),
            // Already expired (or revoked by a repeated request): its keys are gone.
            Err(StoreError::Other(msg)) if msg.contains("lease not found") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// State of one watch stream handed to the caller.
struct WatchState {
    inner: Arc<Inner>,
    kind: Kind,
    after_revision: u64,
    doing: String,
    stream: etcd_client::WatchStream,
    generation: u64,
    pending: VecDeque<WatchEvent>,
    done: bool,
}

impl WatchState {
    async fn next_item(&mut self) -> Option<StoreResult<WatchEvent>> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(Ok(ev));
            }
            if self.done {
                return None;
            }
            let msg = match self.stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => {
                    self.done = true;
                    self.inner.invalidate(self.generation).await;
                    return Some(Err(self.inner.unreachable(
                        &self.doing,
                        "etcd closed the watch stream".to_string(),
                    )));
                }
                Err(e) => {
                    self.done = true;
                    self.inner.invalidate(self.generation).await;
                    return Some(Err(self.inner.unreachable(&self.doing, e)));
                }
            };
            if let Some(err) = self.check_response(&msg) {
                self.done = true;
                return Some(Err(err));
            }
            for ev in msg.events() {
                let Some(kv) = ev.kv() else { continue };
                match ev.event_type() {
                    EventType::Put => {
                        if let Some(obj) =
                            decode_kv(self.kind, kv.key(), kv.mod_revision(), kv.value().to_vec())
                        {
                            self.pending.push_back(WatchEvent::Put(obj));
                        }
                    }
                    EventType::Delete => match decode_key(self.kind, kv.key()) {
                        Some(key) => self.pending.push_back(WatchEvent::Delete {
                            key,
                            revision: kv.mod_revision().max(0) as u64,
                        }),
                        None => {
                            tracing::warn!(kind = %self.kind, key = %String::from_utf8_lossy(kv.key()), "skipping deletion of a non-podnet key")
                        }
                    },
                }
            }
        }
    }

    /// Compaction or cancellation of the watch, as the error that ends the stream.
    fn check_response(&self, msg: &WatchResponse) -> Option<StoreError> {
        if msg.compact_revision() > 0 {
            return Some(StoreError::Compacted {
                kind: self.kind,
                revision: self.after_revision,
                compacted: msg.compact_revision() as u64,
            });
        }
        if msg.canceled() {
            return Some(StoreError::Other(format!(
                "{} on {}: etcd canceled the watch: {}",
                self.doing,
                self.inner.url,
                msg.cancel_reason()
            )));
        }
        None
    }
}

// ---- pure helpers ----

/// `etcd://h1:p1,h2:p2` for display and error messages.
pub fn store_url(endpoints: &[String]) -> String {
    let hosts: Vec<&str> = endpoints
        .iter()
        .map(|e| {
            e.trim()
                .trim_start_matches("http://")
                .trim_start_matches("https://")
        })
        .collect();
    format!("etcd://{}", hosts.join(","))
}

/// `/podnet/<kind>/`: the prefix under which all objects of `kind` live.
pub fn kind_prefix(kind: Kind) -> String {
    format!("{KEY_ROOT}{}/", kind.plural())
}

/// The end of the key range holding every key that starts with `prefix`
/// (etcd's "prefix + 1" convention).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: the range extends to the end of the keyspace.
    vec![0]
}

/// The inverse of `ObjectKey::etcd_key()` for keys of `kind`.
pub fn decode_key(kind: Kind, key: &[u8]) -> Option<ObjectKey> {
    let key = std::str::from_utf8(key).ok()?;
    let rest = key.strip_prefix(&kind_prefix(kind))?;
    let valid = |s: &str| !s.is_empty() && !s.contains('/');
    if kind.namespaced() {
        let (ns, name) = rest.split_once('/')?;
        (valid(ns) && valid(name)).then(|| ObjectKey::new(kind, Some(ns), name))
    } else {
        valid(rest).then(|| ObjectKey::new(kind, None, rest))
    }
}

/// etcd lease TTLs are whole seconds; round up, at least one.
pub fn ttl_seconds(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    secs.max(1) as i64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The connection could not be made: the request was not sent.
    Refused,
    /// The connection broke or timed out: the request may have been applied.
    Connectivity,
    /// etcd answered with an error.
    Other,
}

/// gRPC status codes (numeric, as in the gRPC spec).
const GRPC_CANCELLED: i32 = 1;
const GRPC_UNKNOWN: i32 = 2;
const GRPC_DEADLINE_EXCEEDED: i32 = 4;
const GRPC_UNAVAILABLE: i32 = 14;

fn classify(e: &etcd_client::Error) -> Failure {
    use etcd_client::Error as E;
    match e {
        E::TransportError(t) => classify_message(&format!("{t:?}")),
        E::IoError(_) => Failure::Connectivity,
        // The request channel of a stream closed: the connection is gone.
        E::WatchError(_) => Failure::Connectivity,
        E::LeaseKeepAliveError(m) if m.contains("lease not found") => Failure::Other,
        E::LeaseKeepAliveError(_) => Failure::Connectivity,
        E::GRpcStatus(s) => {
            let code = s.code() as i32;
            // etcd itself reports these with an "etcdserver:" message (e.g. no
            // leader); they mean the same as a broken connection to us.
            if matches!(
                code,
                GRPC_UNAVAILABLE | GRPC_DEADLINE_EXCEEDED | GRPC_CANCELLED
            ) || (code == GRPC_UNKNOWN && !s.message().starts_with("etcdserver:"))
            {
                classify_message(&format!("{} {:?}", s.message(), s))
            } else {
                Failure::Other
            }
        }
        _ => Failure::Other,
    }
}

fn classify_message(m: &str) -> Failure {
    let m = m.to_ascii_lowercase();
    if m.contains("connection refused") || m.contains("tcp connect error") {
        Failure::Refused
    } else {
        Failure::Connectivity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let cases = [
            ObjectKey::new(Kind::Service, Some("kube-system"), "dns"),
            ObjectKey::new(Kind::EndpointSlice, Some("default"), "web-abc12"),
            ObjectKey::new(Kind::Node, None, "node-1"),
            ObjectKey::new(Kind::SubnetLease, None, "10.244.3.0-24"),
            ObjectKey::new(Kind::ClusterConfig, None, "default"),
        ];
        for k in cases {
            assert_eq!(
                decode_key(k.kind, k.etcd_key().as_bytes()),
                Some(k.clone()),
                "{k}"
            );
        }
        assert_eq!(
            ObjectKey::new(Kind::SubnetLease, None, "10.244.3.0-24").etcd_key(),
            "/podnet/leases/10.244.3.0-24"
        );
    }

    #[test]
    fn foreign_keys_are_rejected() {
        assert_eq!(
            decode_key(Kind::Service, b"/podnet/services/onlyname"),
            None
        );
        assert_eq!(decode_key(Kind::Service, b"/podnet/services/ns/a/b"), None);
        assert_eq!(decode_key(Kind::Service, b"/podnet/services//x"), None);
        assert_eq!(decode_key(Kind::Node, b"/podnet/nodes/a/b"), None);
        assert_eq!(decode_key(Kind::Node, b"/podnet/nodes/"), None);
        assert_eq!(decode_key(Kind::Node, b"/podnet/pods/ns/x"), None);
        assert_eq!(decode_key(Kind::Node, b"/other/nodes/x"), None);
        assert_eq!(decode_key(Kind::Node, &[0xff, 0xfe]), None);
    }

    #[test]
    fn prefix_range_end() {
        assert_eq!(prefix_end(b"/podnet/nodes/"), b"/podnet/nodes0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(kind_prefix(Kind::EndpointSlice), "/podnet/endpointslices/");
    }

    #[test]
    fn urls_and_ttls() {
        assert_eq!(
            store_url(&["127.0.0.1:2379".into(), "http://10.0.0.2:2379".into()]),
            "etcd://127.0.0.1:2379,10.0.0.2:2379"
        );
        assert_eq!(ttl_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(ttl_seconds(Duration::from_secs(3)), 3);
        assert_eq!(ttl_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn failure_classes() {
        let refused = etcd_client::Error::IoError(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "x",
        ));
        assert_eq!(classify(&refused), Failure::Connectivity);
        assert_eq!(
            classify(&etcd_client::Error::LeaseKeepAliveError(
                "lease not found".into()
            )),
            Failure::Other
        );
        assert_eq!(
            classify(&etcd_client::Error::InvalidArgs("bad".into())),
            Failure::Other
        );
        assert_eq!(
            classify_message("tcp connect error: Connection refused (os error 111)"),
            Failure::Refused
        );
        assert_eq!(
            classify_message("h2 protocol error: broken pipe"),
            Failure::Connectivity
        );
    }

    #[tokio::test]
    async fn connect_is_lazy_and_unreachable_names_the_url() {
        // Port 1 on loopback: nothing listens there, the connection is refused.
        let store = EtcdStore::connect_with_options(
            vec!["127.0.0.1:1".into()],
            EtcdOptions {
                attempts: 2,
                initial_backoff: Duration::from_millis(1),
                ..EtcdOptions::default()
            },
        )
        .await
        .expect("connect does not need a running etcd");
        let err = store.list(Kind::Node).await.unwrap_err();
        match &err {
            StoreError::Unreachable { url, doing, .. } => {
                assert_eq!(url, "etcd://127.0.0.1:1");
                assert!(doing.contains("listing nodes"), "{doing}");
            }
            e => panic!("expected Unreachable, got {e:?}"),
        }
        assert!(err.to_string().contains("etcd://127.0.0.1:1"));
        if let StoreError::Unreachable { source, .. } = &err {
            // `classify` relies on how tonic words a refused connection.
            let msg = format!("{source:?}");
            assert_eq!(classify_message(&msg), Failure::Refused, "{msg}");
        }
    }

    #[tokio::test]
    async fn empty_endpoint_list_is_a_bad_url() {
        assert!(matches!(
            EtcdStore::connect(vec![]).await,
            Err(StoreError::BadUrl { .. })
        ));
    }
}
