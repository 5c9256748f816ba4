//! The on-disk reservation store of one network, O(1) per ADD/DEL/STATUS.
//!
//! Layout of `<dataDir>/<network>/`:
//! - `lock`: `flock`ed exclusively for the whole call (all calls of a network serialize).
//! - `ips/<ip>`: one file per reserved address: `containerID\nifname\nbootID\n`. Created
//!   complete and exclusively: written under `tmp/`, then `link(2)`ed into place
//!   (fails if the address is taken), so a crash never leaves a half-written reservation.
//! - `owners/<containerID>@<ifname>`: the owner index, one address per line, replaced
//!   atomically (`rename(2)`); DEL reads it instead of walking `ips/`. A container ID
//!   never contains `@`, so the name splits unambiguously.
//! - `state.json`: per range-set reservation counts (STATUS and "is it full?" in O(1))
//!   and the last reserved address (round robin), keyed by [`RangeSet::key`]. A
//!   mutating call removes it first and rewrites it last: after a crash in between it
//!   is missing and the counts are rebuilt by one scan of `ips/`; a set never counted
//!   before (new config) is counted by one scan the first time.
//! - `boot_id`: the boot the store was last reconciled in. When it differs from the
//!   current boot id, every reservation made in another boot is released (containers
//!   do not survive a reboot), once, then the marker is updated.
//!
//! Writes are not fsynced (like host-local): the guarantee is consistency after a
//! process crash; after a power loss, lost or stale files are reclaimed by the boot-id
//! rule.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::alloc::RangeSet;
use super::config::StoreConfig;
use crate::cni::CniError;

/// Who holds a reservation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub container_id: String,
    pub ifname: String,
    pub boot_id: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    #[serde(default)]
    counts: BTreeMap<String, u64>,
    #[serde(default)]
    last: BTreeMap<String, IpAddr>,
}

/// An open, locked store. The lock is released when this is dropped.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    boot_id: String,
    state: State,
    _lock: File,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> CniError {
    CniError::io(format!("{what} {}: {e}", path.display()))
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Whether the network's store exists at all (DEL of a never-used network is a
    /// no-op and should not create it).
    pub fn exists(cfg: &StoreConfig) -> bool {
        cfg.data_dir.join(&cfg.network).join("ips").is_dir()
    }

    /// Opens (creating) the network's store, takes its lock (blocking), and releases
    /// reservations from previous boots if this is the first call of this boot.
    pub fn open(cfg: &StoreConfig) -> Result<Store, CniError> {
        let dir = cfg.data_dir.join(&cfg.network);
        for sub in ["ips", "owners", "tmp"] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(|e| io_err("creating store directory", &p, e))?;
        }
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err("opening lock file", &lock_path, e))?;
        lock.lock().map_err(|e| io_err("locking", &lock_path, e))?;
        let boot_id = fs::read_to_string(&cfg.boot_id_path)
            .map_err(|e| io_err("reading boot id", &cfg.boot_id_path, e))?
            .trim()
            .to_string();
        if boot_id.is_empty() || boot_id.contains('\n') {
            return Err(CniError::io(format!(
                "boot id in {} is empty or malformed",
                cfg.boot_id_path.display()
            )));
        }
        let state = read_optional(&dir.join("state.json"))?
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        let mut store = Store {
            dir,
            boot_id,
            state,
            _lock: lock,
        };
        let marker = read_optional(&store.dir.join("boot_id"))?;
        if marker.as_deref().map(str::trim) != Some(store.boot_id.as_str()) {
            store.reclaim_other_boots()?;
        }
        Ok(store)
    }

    /// The current boot id reservations are stamped with.
    pub fn boot_id(&self) -> &str {
        &self.boot_id
    }

    fn ip_path(&self, ip: IpAddr) -> PathBuf {
        self.dir.join("ips").join(ip.to_string())
    }

    fn owner_path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir
            .join("owners")
            .join(format!("{container_id}@{ifname}"))
    }

    /// Is `ip` reserved (by anyone)?
    pub fn is_reserved(&self, ip: IpAddr) -> Result<bool, CniError> {
        let p = self.ip_path(ip);
        match fs::symlink_metadata(&p) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("checking reservation", &p, e)),
        }
    }

    /// The owner recorded for `ip`, if reserved.
    pub fn owner_of(&self, ip: IpAddr) -> Result<Option<Owner>, CniError> {
        Ok(read_optional(&self.ip_path(ip))?.and_then(|s| parse_owner(&s)))
    }

    /// Addresses currently reserved by `(container_id, ifname)`: the owner index,
    /// filtered to entries whose reservation file really names this owner.
    pub fn owner_ips(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>, CniError> {
        let Some(list) = read_optional(&self.owner_path(container_id, ifname))? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for ip in list.lines().filter_map(|l| l.trim().parse::<IpAddr>().ok()) {
            if self
                .owner_of(ip)?
                .is_some_and(|o| o.container_id == container_id && o.ifname == ifname)
            {
                out.push(ip);
            }
        }
        Ok(out)
    }

    /// Reservations counted for `set` (O(1); one scan of `ips/` the first time a set
    /// is seen or after a crash).
    pub fn reserved_in(&mut self, set: &RangeSet) -> Result<u64, CniError> {
        let key = set.key();
        if let Some(n) = self.state.counts.get(&key) {
            return Ok(*n);
        }
        let n = self
            .list_ips()?
            .into_iter()
            .filter(|ip| set.is_allocatable(*ip))
            .count() as u64;
        self.state.counts.insert(key, n);
        Ok(n)
    }

    /// Whether `set` already has a persisted count (no scan needed).
    pub fn has_count(&self, set: &RangeSet) -> bool {
        self.state.counts.contains_key(&set.key())
    }

    /// Recounts every known set with one scan (after a stale count was detected).
    pub fn recount(&mut self) -> Result<(), CniError> {
        let ips = self.list_ips()?;
        let keys: Vec<String> = self.state.counts.keys().cloned().collect();
        for key in keys {
            let n = RangeSet::from_key(&key)
                .map(|set| ips.iter().filter(|ip| set.is_allocatable(**ip)).count() as u64);
            match n {
                Some(n) => {
                    self.state.counts.insert(key, n);
                }
                None => {
                    self.state.counts.remove(&key);
                }
            }
        }
        Ok(())
    }

    /// The last address reserved from `set` (round-robin start point).
    pub fn last_reserved(&self, set: &RangeSet) -> Option<IpAddr> {
        self.state.last.get(&set.key()).copied()
    }

    /// Persists counts that were computed by a scan, so the next STATUS is O(1).
    pub fn save_counts(&self) -> Result<(), CniError> {
        self.write_state()
    }

    /// Reserves `new` (each with the set it was allocated from) for the owner, whose
    /// complete address list afterwards is `all`. Nothing is left behind on error.
    pub fn reserve(
        &mut self,
        container_id: &str,
        ifname: &str,
        all: &[IpAddr],
        new: &[(IpAddr, &RangeSet)],
    ) -> Result<(), CniError> {
        self.begin_mutation()?;
        self.write_owner(container_id, ifname, all)?;
        let content = format!("{container_id}\n{ifname}\n{}\n", self.boot_id);
        let mut linked: Vec<IpAddr> = Vec::new();
        for (ip, _) in new {
            if let Err(e) = self.create_exclusive(&self.ip_path(*ip), content.as_bytes()) {
                for done in &linked {
                    let _ = fs::remove_file(self.ip_path(*done));
                }
                let previous: Vec<IpAddr> = all
                    .iter()
                    .copied()
                    .filter(|a| !new.iter().any(|(n, _)| n == a))
                    .collect();
                // Restore the owner index to what it was before this call.
                let _ = if previous.is_empty() {
                    remove_if_present(&self.owner_path(container_id, ifname)).map(drop)
                } else {
                    self.write_owner(container_id, ifname, &previous)
                };
                let _ = self.write_state();
                return Err(e);
            }
            linked.push(*ip);
        }
        for (ip, set) in new {
            self.adjust_counts(*ip, 1);
            self.state.last.insert(set.key(), *ip);
        }
        self.write_state()
    }

    /// Releases everything `(container_id, ifname)` holds; missing is success.
    pub fn release(&mut self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>, CniError> {
        let owner = self.owner_path(container_id, ifname);
        let Some(list) = read_optional(&owner)? else {
            return Ok(Vec::new());
        };
        self.begin_mutation()?;
        let mut released = Vec::new();
        for ip in list.lines().filter_map(|l| l.trim().parse::<IpAddr>().ok()) {
            let mine = self
                .owner_of(ip)?
                .is_some_and(|o| o.container_id == container_id && o.ifname == ifname);
            if mine && remove_if_present(&self.ip_path(ip))? {
                self.adjust_counts(ip, -1);
                released.push(ip);
            }
        }
        remove_if_present(&owner)?;
        self.write_state()?;
        Ok(released)
    }

    /// GC: releases every reservation whose owner is not in `valid`; returns them.
    /// Walks the store (GC is the one O(n) operation, like the spec expects).
    pub fn gc(&mut self, valid: &HashSet<(String, String)>) -> Result<Vec<IpAddr>, CniError> {
        self.begin_mutation()?;
        let mut removed = Vec::new();
        for ip in self.list_ips()? {
            let keep = self
                .owner_of(ip)?
                .is_some_and(|o| valid.contains(&(o.container_id, o.ifname)));
            if !keep && remove_if_present(&self.ip_path(ip))? {
                removed.push(ip);
            }
        }
        let owners_dir = self.dir.join("owners");
        for name in list_dir(&owners_dir)? {
            let keep = name
                .split_once('@')
                .is_some_and(|(id, ifn)| valid.contains(&(id.to_string(), ifn.to_string())));
            if !keep {
                remove_if_present(&owners_dir.join(&name))?;
            }
        }
        self.clear_tmp()?;
        self.recount()?;
        self.write_state()?;
        Ok(removed)
    }

    /// Every reservation (diagnostics and tests).
    pub fn reservations(&self) -> Result<Vec<(IpAddr, Owner)>, CniError> {
        let mut out = Vec::new();
        for ip in self.list_ips()? {
            if let Some(o) = self.owner_of(ip)? {
                out.push((ip, o));
            }
        }
        Ok(out)
    }

    fn reclaim_other_boots(&mut self) -> Result<(), CniError> {
        self.begin_mutation()?;
        let mut stale_owners = HashSet::new();
        for ip in self.list_ips()? {
            match self.owner_of(ip)? {
                Some(o) if o.boot_id == self.boot_id => {}
                other => {
                    if let Some(o) = other {
                        stale_owners.insert((o.container_id, o.ifname));
                    }
                    remove_if_present(&self.ip_path(ip))?;
                    tracing::info!(%ip, "released reservation made before the last reboot");
                }
            }
        }
        for (id, ifname) in stale_owners {
            // The owner may have re-added in this boot only if its index lists current
            // reservations; a stale owner's index is rewritten without the dead ones.
            let live = self.owner_ips(&id, &ifname)?;
            if live.is_empty() {
                remove_if_present(&self.owner_path(&id, &ifname))?;
            } else {
                self.write_owner(&id, &ifname, &live)?;
            }
        }
        self.clear_tmp()?;
        self.recount()?;
        self.write_state()?;
        let marker = self.dir.join("boot_id");
        self.replace_file(&marker, format!("{}\n", self.boot_id).as_bytes())
    }

    fn begin_mutation(&self) -> Result<(), CniError> {
        remove_if_present(&self.dir.join("state.json")).map(drop)
    }

    fn adjust_counts(&mut self, ip: IpAddr, delta: i64) {
        for (key, n) in self.state.counts.iter_mut() {
            if RangeSet::from_key(key).is_some_and(|s| s.is_allocatable(ip)) {
                *n = n.saturating_add_signed(delta);
            }
        }
    }

    fn write_state(&self) -> Result<(), CniError> {
        let bytes = serde_json::to_vec(&self.state)
            .map_err(|e| CniError::io(format!("encoding store state: {e}")))?;
        self.replace_file(&self.dir.join("state.json"), &bytes)
    }

    fn write_owner(
        &self,
        container_id: &str,
        ifname: &str,
        ips: &[IpAddr],
    ) -> Result<(), CniError> {
        let body: String = ips.iter().map(|ip| format!("{ip}\n")).collect();
        self.replace_file(&self.owner_path(container_id, ifname), body.as_bytes())
    }

    fn tmp_file(&self, content: &[u8]) -> Result<PathBuf, CniError> {
        let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let p = self
            .dir
            .join("tmp")
            .join(format!("{}-{seq}", std::process::id()));
        let mut f = File::create(&p).map_err(|e| io_err("creating", &p, e))?;
        f.write_all(content).map_err(|e| io_err("writing", &p, e))?;
        Ok(p)
    }

    /// Atomic replace: complete temp file renamed over `path`.
    fn replace_file(&self, path: &Path, content: &[u8]) -> Result<(), CniError> {
        let tmp = self.tmp_file(content)?;
        fs::rename(&tmp, path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err("replacing", path, e)
        })
    }

    /// Atomic exclusive create: complete temp file hard-linked to `path`.
    fn create_exclusive(&self, path: &Path, content: &[u8]) -> Result<(), CniError> {
        let tmp = self.tmp_file(content)?;
        let r = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        r.map_err(|e| {
            if e.kind() == ErrorKind::AlreadyExists {
                CniError::io(format!("reservation {} already exists", path.display()))
            } else {
                io_err("creating reservation", path, e)
            }
        })
    }

    fn list_ips(&self) -> Result<Vec<IpAddr>, CniError> {
        Ok(list_dir(&self.dir.join("ips"))?
            .into_iter()
            .filter_map(|n| n.parse().ok())
            .collect())
    }

    fn clear_tmp(&self) -> Result<(), CniError> {
        let tmp = self.dir.join("tmp");
        for name in list_dir(&tmp)? {
            remove_if_present(&tmp.join(name))?;
        }
        Ok(())
    }
}

fn parse_owner(s: &str) -> Option<Owner> {
    let mut lines = s.lines();
    Some(Owner {
        container_id: lines.next()?.to_string(),
        ifname: lines.next()?.to_string(),
        boot_id: lines.next().unwrap_or_default().to_string(),
    })
}

fn read_optional(path: &Path) -> Result<Option<String>, CniError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("reading", path, e)),
    }
}

fn remove_if_present(path: &Path) -> Result<bool, CniError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("removing", path, e)),
    }
}

fn list_dir(dir: &Path) -> Result<Vec<String>, CniError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("listing", dir, e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| io_err("listing", dir, e))?;
        if let Some(name) = entry.file_name().to_str() {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::alloc::Range;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn set() -> RangeSet {
        RangeSet(vec![Range {
            subnet: "10.1.0.0/29".parse().expect("subnet"),
            start: ip("10.1.0.1"),
            end: ip("10.1.0.6"),
            gateway: ip("10.1.0.1"),
        }])
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        cfg: StoreConfig,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let boot = dir.path().join("boot");
        fs::write(&boot, "boot-1\n").expect("boot");
        let cfg = StoreConfig {
            network: "net".into(),
            data_dir: dir.path().join("data"),
            boot_id_path: boot,
        };
        Fixture { _dir: dir, cfg }
    }

    #[test]
    fn reserve_release_counts() {
        let f = fixture();
        let s = set();
        let mut st = Store::open(&f.cfg).expect("open");
        assert_eq!(st.reserved_in(&s).expect("count"), 0);
        st.reserve("c1", "eth0", &[ip("10.1.0.2")], &[(ip("10.1.0.2"), &s)])
            .expect("reserve");
        assert!(st.is_reserved(ip("10.1.0.2")).expect("is"));
        assert_eq!(
            st.owner_ips("c1", "eth0").expect("owner"),
            vec![ip("10.1.0.2")]
        );
        assert_eq!(
            st.owner_ips("c1", "eth1").expect("owner"),
            Vec::<IpAddr>::new()
        );
        assert_eq!(st.reserved_in(&s).expect("count"), 1);
        assert_eq!(st.last_reserved(&s), Some(ip("10.1.0.2")));
        // Exclusive: a second reservation of the same address fails and leaves nothing.
        let e = st
            .reserve("c2", "eth0", &[ip("10.1.0.2")], &[(ip("10.1.0.2"), &s)])
            .expect_err("taken");
        assert_eq!(e.code, 5);
        assert_eq!(
            st.owner_ips("c2", "eth0").expect("owner"),
            Vec::<IpAddr>::new()
        );
        assert!(!f.cfg.data_dir.join("net/owners/c2@eth0").exists());
        assert_eq!(st.reserved_in(&s).expect("count"), 1);
        drop(st);
        // State survives reopen.
        let mut st = Store::open(&f.cfg).expect("reopen");
        assert_eq!(st.reserved_in(&s).expect("count"), 1);
        assert_eq!(
            st.release("c1", "eth0").expect("release"),
            vec![ip("10.1.0.2")]
        );
        assert_eq!(
            st.release("c1", "eth0").expect("again"),
            Vec::<IpAddr>::new()
        );
        assert_eq!(st.reserved_in(&s).expect("count"), 0);
        assert!(st.reservations().expect("list").is_empty());
    }

    #[test]
    fn crash_between_steps_rebuilds_counts() {
        let f = fixture();
        let s = set();
        let mut st = Store::open(&f.cfg).expect("open");
        st.reserve("c1", "eth0", &[ip("10.1.0.3")], &[(ip("10.1.0.3"), &s)])
            .expect("reserve");
        drop(st);
        // Simulate a crash mid-mutation: state.json gone.
        fs::remove_file(f.cfg.data_dir.join("net/state.json")).expect("rm");
        let mut st = Store::open(&f.cfg).expect("open");
        assert_eq!(st.reserved_in(&s).expect("count"), 1);
    }

    #[test]
    fn other_boot_reservations_are_reclaimed_once() {
        let f = fixture();
        let s = set();
        let mut st = Store::open(&f.cfg).expect("open");
        st.reserve("old", "eth0", &[ip("10.1.0.2")], &[(ip("10.1.0.2"), &s)])
            .expect("reserve");
        assert_eq!(st.reserved_in(&s).expect("count"), 1);
        drop(st);
        fs::write(&f.cfg.boot_id_path, "boot-2\n").expect("reboot");
        let mut st = Store::open(&f.cfg).expect("open after reboot");
        assert!(st.reservations().expect("list").is_empty());
        assert_eq!(
            st.owner_ips("old", "eth0").expect("owner"),
            Vec::<IpAddr>::new()
        );
        assert!(!f.cfg.data_dir.join("net/owners/old@eth0").exists());
        assert_eq!(st.reserved_in(&s).expect("count"), 0);
        st.reserve("new", "eth0", &[ip("10.1.0.3")], &[(ip("10.1.0.3"), &s)])
            .expect("reserve");
        drop(st);
        // Same boot: nothing reclaimed.
        let st = Store::open(&f.cfg).expect("open");
        assert_eq!(st.reservations().expect("list").len(), 1);
        assert_eq!(st.boot_id(), "boot-2");
    }

    #[test]
    fn gc_keeps_exactly_the_valid() {
        let f = fixture();
        let s = set();
        let mut st = Store::open(&f.cfg).expect("open");
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            let a = ip(&format!("10.1.0.{}", i + 2));
            st.reserve(id, "eth0", &[a], &[(a, &s)]).expect("reserve");
        }
        let valid: HashSet<(String, String)> = [("b".to_string(), "eth0".to_string())]
            .into_iter()
            .collect();
        let mut removed = st.gc(&valid).expect("gc");
        removed.sort();
        assert_eq!(removed, vec![ip("10.1.0.2"), ip("10.1.0.4")]);
        let left: Vec<String> = st
            .reservations()
            .expect("list")
            .into_iter()
            .map(|(_, o)| o.container_id)
            .collect();
        assert_eq!(left, vec!["b"]);
        assert_eq!(st.reserved_in(&s).expect("count"), 1);
        assert_eq!(
            list_dir(&f.cfg.data_dir.join("net/owners")).expect("ls"),
            vec!["b@eth0"]
        );
    }
}
