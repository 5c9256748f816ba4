//! Leases emulated on a directory: `<root>/.leases/<id>.json` holds the TTL,
//! the expiry (wall clock, shared by every process on the machine) and the
//! keys bound to it with the revision they were written at. Any process with
//! the store open deletes the keys of expired leases (a thread per store);
//! a key rewritten since it was bound (another revision) is left alone, as
//! an etcd put without the lease would detach it.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{io_err, Core, Locked};
use crate::store::{Lease, ObjectKey, StoreError, StoreResult};

#[derive(Debug, Serialize, Deserialize)]
struct LeaseFile {
    ttl_ms: u64,
    expires_ms: u64,
    keys: Vec<BoundKey>,
}

#[derive(Debug, Serialize, Deserialize)]
struct BoundKey {
    key: ObjectKey,
    rev: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn gone(id: i64) -> StoreError {
    StoreError::Other(format!("lease {id} has expired or was revoked"))
}

impl Core {
    fn lease_path(&self, id: i64) -> PathBuf {
        self.root.join(".leases").join(format!("{id}.json"))
    }
}

impl Locked<'_> {
    fn lease_read(&self, id: i64) -> StoreResult<Option<LeaseFile>> {
        let path = self.core.lease_path(id);
        match fs::read(&path) {
            Ok(data) => {
                serde_json::from_slice(&data)
                    .map(Some)
                    .map_err(|e| StoreError::Malformed {
                        key: path.display().to_string(),
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("reading lease", &path, e)),
        }
    }

    fn lease_write(&self, id: i64, lf: &LeaseFile) -> StoreResult<()> {
        let path = self.core.lease_path(id);
        let tmp = path.with_extension("tmp");
        let data = serde_json::to_vec(lf).expect("lease file serializes");
        fs::write(&tmp, data).map_err(|e| io_err("writing lease", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| io_err("writing lease", &path, e))
    }

    pub(super) fn lease_grant(&mut self, ttl: Duration) -> StoreResult<i64> {
        let ttl_ms = ttl.as_millis().max(1) as u64;
        // Unique among live leases; the nanosecond clock and pid make
        // collisions rare, the existence check under the flock makes them impossible.
        let mut id = ((SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0) as u64)
            ^ ((std::process::id() as u64) << 40))
            & (i64::MAX as u64);
        while id == 0 || self.core.lease_path(id as i64).exists() {
            id = (id + 1) & (i64::MAX as u64);
        }
        let id = id as i64;
        self.lease_write(
            id,
            &LeaseFile {
                ttl_ms,
                expires_ms: now_ms() + ttl_ms,
                keys: Vec::new(),
            },
        )?;
        Ok(id)
    }

    /// Err unless lease `id` exists and has not expired (an expired one is reaped).
    pub(super) fn lease_check_alive(&mut self, id: i64) -> StoreResult<()> {
        match self.lease_read(id)? {
            None => Err(gone(id)),
            Some(lf) if lf.expires_ms < now_ms() => {
                self.lease_expire(id, lf)?;
                Err(gone(id))
            }
            Some(_) => Ok(()),
        }
    }

    pub(super) fn lease_bind(&mut self, id: i64, key: &ObjectKey, rev: u64) -> StoreResult<()> {
        let mut lf = self.lease_read(id)?.ok_or_else(|| gone(id))?;
        lf.keys.push(BoundKey {
            key: key.clone(),
            rev,
        });
        self.lease_write(id, &lf)
    }

    fn lease_keep_alive(&mut self, id: i64) -> StoreResult<()> {
        self.lease_check_alive(id)?;
        let mut lf = self.lease_read(id)?.ok_or_else(|| gone(id))?;
        lf.expires_ms = now_ms() + lf.ttl_ms;
        self.lease_write(id, &lf)
    }

    /// Delete the lease's keys that still hold the revision it bound, then the lease.
    fn lease_expire(&mut self, id: i64, lf: LeaseFile) -> StoreResult<()> {
        for b in lf.keys {
            if self.st.live.get(&b.key).is_some_and(|e| e.rev == b.rev) {
                tracing::info!(lease = id, key = %b.key, "deleting key of ended lease");
                self.remove_object(&b.key)?;
            }
        }
        let path = self.core.lease_path(id);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing lease", &path, e)),
        }
    }

    fn lease_revoke(&mut self, id: i64) -> StoreResult<()> {
        match self.lease_read(id)? {
            Some(lf) => self.lease_expire(id, lf),
            None => Err(gone(id)),
        }
    }

    /// Expire every lease past its expiry.
    fn lease_reap(&mut self) -> StoreResult<()> {
        let dir = self.core.root.join(".leases");
        let now = now_ms();
        for (path, _) in super::read_dir(&dir)? {
            let Some(id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<i64>().ok())
            else {
                continue;
            };
            match self.lease_read(id) {
                Ok(Some(lf)) if lf.expires_ms < now => self.lease_expire(id, lf)?,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping unreadable lease file")
                }
            }
        }
        Ok(())
    }
}

/// Expires leases while the store is open; stops when the store is dropped.
pub(super) fn spawn_reaper(core: Weak<Core>) {
    let spawned = std::thread::Builder::new()
        .name("podnet-dir-leases".into())
        .spawn(move || loop {
            let interval = match core.upgrade() {
                Some(c) => c.opts.lease_check_interval,
                None => return,
            };
            std::thread::sleep(interval);
            let Some(core) = core.upgrade() else { return };
            let leases = core.root.join(".leases");
            let any = fs::read_dir(&leases)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false);
            if !any {
                continue;
            }
            let r = core.lock().and_then(|mut l| l.lease_reap());
            if let Err(e) = r {
                tracing::warn!(root = %core.root.display(), error = %e, "expiring leases failed");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the lease expiry thread; leases expire only on use");
    }
}

/// A lease of the dir store.
pub struct DirLease {
    core: Arc<Core>,
    id: i64,
}

impl DirLease {
    pub(super) fn new(core: Arc<Core>, id: i64) -> DirLease {
        DirLease { core, id }
    }
}

#[async_trait::async_trait]
impl Lease for DirLease {
    fn id(&self) -> i64 {
        self.id
    }

    async fn keep_alive(&self) -> StoreResult<()> {
        let (core, id) = (self.core.clone(), self.id);
        super::blocking(move || core.lock()?.lease_keep_alive(id)).await
    }

    async fn revoke(&self) -> StoreResult<()> {
        let (core, id) = (self.core.clone(), self.id);
        super::blocking(move || core.lock()?.lease_revoke(id)).await
    }
}
