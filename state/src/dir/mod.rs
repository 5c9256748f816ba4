//! The embedded store: one directory tree, shared by every process on the
//! machine that opens it.
//!
//! ```text
//! <root>/<kind plural>/<namespace>/<name>.yaml   namespaced kinds (services, endpointslices, pods)
//! <root>/<kind plural>/<name>.yaml               cluster-scoped kinds (.json is read too)
//! <root>/.lock                                   flock held for every operation
//! <root>/.journal                                revisions: see `journal`
//! <root>/.leases/<id>.json                       emulated leases (expiry + bound keys)
//! ```
//!
//! The store writes its files as (pretty) JSON, which is also YAML, under
//! the `.yaml` name: parsing YAML is ten times slower than JSON and the
//! informer's first list of 20,000 objects has to take well under a second.
//! Such a file is handed out as its text, unparsed beyond a check of its
//! name. Files written by hand may be YAML or JSON.
//!
//! Every operation runs under the flock after catching up with the journal,
//! so revisions are allocated in order across processes. Files changed by
//! hand are noticed by comparing their stat (and then content hash) with the
//! journal — on list, get, and by watchers through inotify — and get a fresh
//! revision. Object files are written to a temp file and renamed into place.

mod journal;
mod lease;
mod watch;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::Value;

use crate::object::check_object_name;
use crate::store::{
    Kind, Lease, ObjectKey, Store, StoreError, StoreResult, StoredObject, WatchStream,
};
use journal::{FileStat, Record};

pub use lease::DirLease;

/// Tunables; the defaults suit a machine-local cluster.
#[derive(Debug, Clone)]
pub struct DirOptions {
    /// Revisions of history kept when compacting the journal: a watcher that
    /// fell further behind than this relists.
    pub journal_retain: u64,
    /// Compact when the journal holds this many records more than live keys.
    pub compact_slack: usize,
    /// How often expired leases are looked for (by a thread per open store).
    pub lease_check_interval: Duration,
}

impl Default for DirOptions {
    fn default() -> Self {
        DirOptions {
            journal_retain: 10_000,
            compact_slack: 20_000,
            lease_check_interval: Duration::from_millis(500),
        }
    }
}

#[derive(Clone)]
pub struct DirStore {
    core: Arc<Core>,
}

/// Object file extensions in order of precedence: `a.yaml` wins over
/// `a.yml` and `a.json`.
const OBJECT_EXTS: [&str; 3] = ["yaml", "yml", "json"];

/// Result of comparing a kind's files with the journal.
#[derive(Default)]
struct KindScan {
    changed: Vec<StoredObject>,
    /// (key, index in `OBJECT_EXTS`, revision, stat) of files the journal
    /// already describes.
    unchanged: Vec<(ObjectKey, usize, u64, FileStat)>,
}

struct Entry {
    rev: u64,
    hash: u64,
    stat: FileStat,
}

/// What this process knows of the journal.
#[derive(Default)]
struct State {
    reader: journal::Reader,
    current: u64,
    horizon: u64,
    records: usize,
    live: HashMap<ObjectKey, Entry>,
}

struct Core {
    root: PathBuf,
    opts: DirOptions,
    state: Mutex<State>,
    lock_file: File,
    /// Malformed files already reported, so one bad file is one warning.
    reported: Mutex<HashMap<PathBuf, FileStat>>,
}

/// Held while an operation runs: the in-process mutex and the flock.
struct Locked<'a> {
    core: &'a Core,
    st: MutexGuard<'a, State>,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // SAFETY: flock on an fd we own; unlocking cannot break memory safety.
        unsafe { libc::flock(self.core.lock_file.as_raw_fd(), libc::LOCK_UN) };
    }
}

fn io_err(doing: &str, path: &Path, source: io::Error) -> StoreError {
    StoreError::Io {
        doing: doing.to_string(),
        path: path.display().to_string(),
        source,
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Objects per batch of `Store::list_in_batches`: enough to keep the
/// consumer busy, few enough that little raw text is in flight.
const LIST_BATCH: usize = 256;

impl DirStore {
    /// Open (creating if needed) the store rooted at `root`.
    pub fn open(root: impl AsRef<Path>) -> StoreResult<DirStore> {
        Self::open_with(root, DirOptions::default())
    }

    pub fn open_with(root: impl AsRef<Path>, opts: DirOptions) -> StoreResult<DirStore> {
        let root = root.as_ref().to_path_buf();
        for kind in Kind::ALL {
            let d = root.join(kind.plural());
            fs::create_dir_all(&d).map_err(|e| io_err("creating store directory", &d, e))?;
        }
        let leases = root.join(".leases");
        fs::create_dir_all(&leases).map_err(|e| io_err("creating store directory", &leases, e))?;
        let lock_path = root.join(".lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err("opening lock file", &lock_path, e))?;
        let jpath = root.join(".journal");
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&jpath)
            .map_err(|e| io_err("creating journal", &jpath, e))?;
        let core = Arc::new(Core {
            root,
            opts,
            state: Mutex::new(State::default()),
            lock_file,
            reported: Mutex::new(HashMap::new()),
        });
        core.lock()?;
        lease::spawn_reaper(Arc::downgrade(&core));
        Ok(DirStore { core })
    }

    pub fn root(&self) -> &Path {
        &self.core.root
    }

    /// The current revision (after catching up with the journal).
    pub fn revision(&self) -> StoreResult<u64> {
        Ok(self.core.lock()?.st.current)
    }

    /// Look at every file of `kind` now and journal what changed by hand.
    pub fn rescan(&self, kind: Kind) -> StoreResult<()> {
        let mut l = self.core.lock()?;
        l.reconcile_kind(kind).map(|_| ())
    }
}

impl Core {
    fn journal_path(&self) -> PathBuf {
        self.root.join(".journal")
    }

    /// Take the mutex and the flock, then catch up with the journal.
    fn lock(&self) -> StoreResult<Locked<'_>> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: flock on an fd we own.
        loop {
            let r = unsafe { libc::flock(self.lock_file.as_raw_fd(), libc::LOCK_EX) };
            if r == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(io_err("locking", &self.root.join(".lock"), e));
            }
        }
        let mut l = Locked { core: self, st };
        l.catch_up()?;
        Ok(l)
    }

    /// All objects of `kind` at the returned revision, sorted by key.
    fn list(&self, kind: Kind) -> StoreResult<(Vec<StoredObject>, u64)> {
        let mut out = Vec::new();
        let rev = self.list_batches(kind, |batch| {
            out.extend(batch);
            true
        })?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok((out, rev))
    }

    /// All objects of `kind` at the returned revision, handed to `emit`
    /// `LIST_BATCH` at a time (it returns false to stop early). Files the
    /// journal already describes are read after the lock is released (so
    /// that lists of several kinds parse in parallel); one that changed in
    /// between is looked at again under the lock and comes with its new
    /// revision (the watch from the list revision then repeats it, which is
    /// harmless).
    fn list_batches(
        &self,
        kind: Kind,
        mut emit: impl FnMut(Vec<StoredObject>) -> bool,
    ) -> StoreResult<u64> {
        let (scan, rev) = {
            let mut l = self.lock()?;
            let scan = l.reconcile_kind(kind)?;
            (scan, l.st.current)
        };
        let mut batch = scan.changed;
        let mut redo = Vec::new();
        for (key, ext, mod_revision, stat) in scan.unchanged {
            if batch.len() >= LIST_BATCH && !emit(std::mem::take(&mut batch)) {
                return Ok(rev);
            }
            let path = self.object_path(&key, ext);
            let read = File::open(&path).and_then(|mut f| {
                let meta = f.metadata()?;
                let mut data = Vec::with_capacity(meta.len() as usize);
                io::Read::read_to_end(&mut f, &mut data)?;
                Ok((meta, data))
            });
            match read {
                Ok((meta, data)) if FileStat::of(&meta) == stat => match decode_file(&key, data) {
                    Ok(raw) => batch.push(StoredObject {
                        key,
                        mod_revision,
                        raw,
                    }),
                    Err(e) => self.report_malformed(&path, stat, &e),
                },
                Ok(_) => redo.push(key),
                // Deleted since the scan: the watch from `rev` brings the delete.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("reading", &path, e)),
            }
        }
        if !redo.is_empty() {
            let mut l = self.lock()?;
            for key in redo {
                if let Some(o) = l.reconcile_key(&key)? {
                    batch.push(o);
                }
            }
        }
        if !batch.is_empty() {
            emit(batch);
        }
        Ok(rev)
    }

    fn kind_dir(&self, kind: Kind) -> PathBuf {
        self.root.join(kind.plural())
    }

    fn dir_of(&self, key: &ObjectKey) -> PathBuf {
        match &key.namespace {
            Some(ns) => self.kind_dir(key.kind).join(ns),
            None => self.kind_dir(key.kind),
        }
    }

    /// The file of `key` with extension `OBJECT_EXTS[ext]`.
    fn object_path(&self, key: &ObjectKey, ext: usize) -> PathBuf {
        self.dir_of(key)
            .join(format!("{}.{}", key.name, OBJECT_EXTS[ext]))
    }

    /// The file holding `key`, if any (`.yaml` wins over `.yml` and `.json`).
    fn find_file(&self, key: &ObjectKey) -> Option<(PathBuf, fs::Metadata)> {
        let dir = self.dir_of(key);
        for ext in OBJECT_EXTS {
            let p = dir.join(format!("{}.{ext}", key.name));
            if let Ok(m) = fs::metadata(&p) {
                if m.is_file() {
                    return Some((p, m));
                }
            }
        }
        None
    }

    /// Warn about a malformed file once per version of it.
    fn report_malformed(&self, path: &Path, stat: FileStat, err: &str) {
        let mut r = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        if r.get(path) != Some(&stat) {
            tracing::warn!(path = %path.display(), error = err, "skipping malformed object file");
            r.insert(path.to_path_buf(), stat);
        }
    }
}

/// `name` of `name.yaml|yml|json`, skipping hidden, temp and editor files.
fn object_file_name(file: &str) -> Option<&str> {
    if file.starts_with('.') {
        return None;
    }
    let name = file
        .strip_suffix(".yaml")
        .or_else(|| file.strip_suffix(".yml"))
        .or_else(|| file.strip_suffix(".json"))?;
    check_object_name(name).ok()?;
    Some(name)
}

/// The head of an object file, enough to tell whether its metadata
/// already names the object as its path does.
#[derive(serde::Deserialize)]
struct FileHead<'a> {
    #[serde(borrow)]
    metadata: Option<FileMeta<'a>>,
}

#[derive(serde::Deserialize)]
struct FileMeta<'a> {
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    namespace: Option<Cow<'a, str>>,
}

/// Parse an object file (YAML or JSON) into the stored JSON text, with the
/// name and namespace taken from its path (a copied file is a new object).
/// A JSON file that already agrees with its path (every file the store
/// writes) is kept as it is, without building a JSON tree.
fn decode_file(key: &ObjectKey, mut data: Vec<u8>) -> Result<Box<RawValue>, String> {
    let first = data.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'{') && agrees_with_path(key, &data) {
        // RawValue holds no surrounding whitespace; the file ends in a newline.
        let end = data
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |p| p + 1);
        data.truncate(end);
        let start = data.iter().position(|b| !b.is_ascii_whitespace());
        data.drain(..start.unwrap_or(0));
        let json = String::from_utf8(data).map_err(|e| e.to_string())?;
        return RawValue::from_string(json).map_err(|e| e.to_string());
    }
    let mut v: Value = if first == Some(&b'{') {
        serde_json::from_slice(&data).map_err(|e| e.to_string())?
    } else {
        serde_yaml::from_slice(&data).map_err(|e| e.to_string())?
    };
    let map = v
        .as_object_mut()
        .ok_or_else(|| "the file does not hold an object (a mapping)".to_string())?;
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    let meta = meta
        .as_object_mut()
        .ok_or_else(|| "metadata is not a mapping".to_string())?;
    meta.insert("name".into(), Value::String(key.name.clone()));
    if let Some(ns) = &key.namespace {
        meta.insert("namespace".into(), Value::String(ns.clone()));
    }
    serde_json::value::to_raw_value(&v).map_err(|e| e.to_string())
}

/// Whether a JSON file's `metadata` has exactly the name and namespace of
/// its path (false also when it cannot be read as such).
fn agrees_with_path(key: &ObjectKey, data: &[u8]) -> bool {
    serde_json::from_slice::<FileHead>(data).is_ok_and(|h| {
        h.metadata.is_some_and(|m| {
            m.name.as_deref() == Some(key.name.as_str())
                && m.namespace.as_deref() == key.namespace.as_deref()
        })
    })
}

fn check_key(key: &ObjectKey) -> StoreResult<()> {
    let bad = |reason: String| StoreError::Malformed {
        key: key.to_string(),
        reason,
    };
    check_object_name(&key.name).map_err(bad)?;
    if let Some(ns) = &key.namespace {
        check_object_name(ns).map_err(|e| bad(format!("namespace: {e}")))?;
    }
    if key.kind.namespaced() != key.namespace.is_some() {
        return Err(bad(
            "namespace given for a cluster-scoped kind or missing".into()
        ));
    }
    Ok(())
}

impl Locked<'_> {
    fn catch_up(&mut self) -> StoreResult<()> {
        let path = self.core.journal_path();
        let out = self
            .st
            .reader
            .read_new(&path)
            .map_err(|e| io_err("reading journal", &path, e))?;
        let st = &mut *self.st;
        if out.reset {
            st.current = 0;
            st.horizon = 0;
            st.records = 0;
            st.live.clear();
        }
        for l in &out.bad_lines {
            tracing::warn!(journal = %path.display(), line = %l, "skipping unreadable journal line");
        }
        st.records += out.records.len();
        for r in out.records {
            apply(st, r);
        }
        Ok(())
    }

    fn append(&mut self, rec: Record) -> StoreResult<()> {
        let path = self.core.journal_path();
        let mut line = rec.to_line();
        if self.st.reader.has_partial_line() {
            // A writer died mid-line; start ours on a fresh line.
            line.insert(0, '\n');
            self.st.reader.drop_partial_line();
        }
        let mut f = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| io_err("opening journal", &path, e))?;
        f.write_all(line.as_bytes())
            .map_err(|e| io_err("appending to journal", &path, e))?;
        // Our own line is read back (idempotently) by the next catch_up.
        apply(&mut self.st, rec);
        self.st.records += 1;
        Ok(())
    }

    fn next_rev(&self) -> u64 {
        self.st.current + 1
    }

    /// Write `value` as the file of `key` and journal it.
    fn write_object(&mut self, key: &ObjectKey, value: &Value) -> StoreResult<u64> {
        let dir = self.core.dir_of(key);
        fs::create_dir_all(&dir).map_err(|e| io_err("creating directory", &dir, e))?;
        let mut data = serde_json::to_string_pretty(value).map_err(|e| StoreError::Malformed {
            key: key.to_string(),
            reason: format!("cannot be written as JSON: {e}"),
        })?;
        data.push('\n');
        let path = dir.join(format!("{}.yaml", key.name));
        let tmp = dir.join(format!(
            ".{}.tmp-{}-{}",
            key.name,
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::write(&tmp, data.as_bytes()).map_err(|e| io_err("writing", &tmp, e))?;
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("renaming temp file to", &path, e));
        }
        for ext in ["yml", "json"] {
            let _ = fs::remove_file(dir.join(format!("{}.{ext}", key.name)));
        }
        let meta = fs::metadata(&path).map_err(|e| io_err("stat", &path, e))?;
        let rev = self.next_rev();
        self.append(Record::Put {
            rev,
            key: key.clone(),
            hash: journal::fnv1a(data.as_bytes()),
            stat: FileStat::of(&meta),
        })?;
        self.maybe_compact()?;
        Ok(rev)
    }

    fn remove_object(&mut self, key: &ObjectKey) -> StoreResult<Option<u64>> {
        let dir = self.core.dir_of(key);
        let mut existed = self.st.live.contains_key(key);
        for ext in ["yaml", "yml", "json"] {
            let p = dir.join(format!("{}.{ext}", key.name));
            match fs::remove_file(&p) {
                Ok(()) => existed = true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("removing", &p, e)),
            }
        }
        if !existed {
            return Ok(None);
        }
        let rev = self.next_rev();
        self.append(Record::Delete {
            rev,
            key: key.clone(),
        })?;
        self.maybe_compact()?;
        Ok(Some(rev))
    }

    /// Bring the journal in line with the file of `key` (hand edits) and
    /// return its current content.
    fn reconcile_key(&mut self, key: &ObjectKey) -> StoreResult<Option<StoredObject>> {
        match self.core.find_file(key) {
            None => {
                if self.st.live.contains_key(key) {
                    let rev = self.next_rev();
                    self.append(Record::Delete {
                        rev,
                        key: key.clone(),
                    })?;
                }
                Ok(None)
            }
            Some((path, meta)) => Ok(self.reconcile_file(key, &path, FileStat::of(&meta))?),
        }
    }

    /// Read the file of `key`, journal it if it differs from what the journal
    /// says, and return it; `None` when it is malformed (reported) or gone.
    fn reconcile_file(
        &mut self,
        key: &ObjectKey,
        path: &Path,
        stat: FileStat,
    ) -> StoreResult<Option<StoredObject>> {
        let data = match fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading", path, e)),
        };
        let hash = journal::fnv1a(&data);
        let raw = match decode_file(key, data) {
            Ok(v) => v,
            Err(e) => {
                self.core.report_malformed(path, stat, &e);
                return Ok(None);
            }
        };
        let rev = match self.st.live.get_mut(key) {
            Some(e) if e.stat == stat => e.rev,
            Some(e) if e.hash == hash => {
                // Same content, new stat (touch, or rewritten identically).
                e.stat = stat;
                e.rev
            }
            _ => {
                let rev = self.next_rev();
                tracing::debug!(key = %key, rev, path = %path.display(), "journaling changed file");
                self.append(Record::Put {
                    rev,
                    key: key.clone(),
                    hash,
                    stat,
                })?;
                rev
            }
        };
        Ok(Some(StoredObject {
            key: key.clone(),
            mod_revision: rev,
            raw,
        }))
    }

    /// Compare every file of `kind` with the journal, journaling hand edits.
    /// Returns the changed files' objects (read anyway to hash them) and the
    /// unchanged files, which `list` reads after releasing the lock.
    fn reconcile_kind(&mut self, kind: Kind) -> StoreResult<KindScan> {
        let kdir = self.core.kind_dir(kind);
        let namespaces: Vec<Option<String>> = if kind.namespaced() {
            let mut v = Vec::new();
            for (path, meta) in read_dir(&kdir)? {
                if meta.is_dir() {
                    if let Some(ns) = path.file_name().and_then(|n| n.to_str()) {
                        if check_object_name(ns).is_ok() {
                            v.push(Some(ns.to_string()));
                        }
                    }
                }
            }
            v
        } else {
            vec![None]
        };
        let mut files: HashMap<ObjectKey, (usize, FileStat)> = HashMap::new();
        for ns in namespaces {
            let dir = match &ns {
                Some(ns) => kdir.join(ns),
                None => kdir.clone(),
            };
            for (name, ext, stat) in object_files(&dir)? {
                let key = ObjectKey::new(kind, ns.as_deref(), &name);
                match files.get(&key) {
                    Some((e, _)) if *e <= ext => {}
                    _ => {
                        files.insert(key, (ext, stat));
                    }
                }
            }
        }
        let gone: Vec<ObjectKey> = self
            .st
            .live
            .keys()
            .filter(|k| k.kind == kind && !files.contains_key(*k))
            .cloned()
            .collect();
        let mut scan = KindScan::default();
        for (key, (ext, stat)) in files {
            if let Some(e) = self.st.live.get(&key).filter(|e| e.stat == stat) {
                scan.unchanged.push((key, ext, e.rev, stat));
                continue;
            }
            let path = self.core.object_path(&key, ext);
            if let Some(o) = self.reconcile_file(&key, &path, stat)? {
                scan.changed.push(o);
            }
        }
        for key in gone {
            let rev = self.next_rev();
            self.append(Record::Delete { rev, key })?;
        }
        Ok(scan)
    }

    /// Rewrite the journal without history older than `journal_retain`
    /// revisions (keeping the last write of every live key).
    fn maybe_compact(&mut self) -> StoreResult<()> {
        let st = &self.st;
        if st.records <= st.live.len() + self.core.opts.compact_slack {
            return Ok(());
        }
        let horizon = st.current.saturating_sub(self.core.opts.journal_retain);
        let path = self.core.journal_path();
        let mut fresh = journal::Reader::default();
        let all = fresh
            .read_new(&path)
            .map_err(|e| io_err("reading journal", &path, e))?
            .records;
        let mut text = Record::Header {
            horizon,
            current: st.current,
        }
        .to_line();
        let mut kept = 0;
        for r in all {
            let keep = match &r {
                Record::Header { .. } => false,
                Record::Delete { rev, .. } => *rev > horizon,
                Record::Put { rev, key, .. } => {
                    *rev > horizon || st.live.get(key).is_some_and(|e| e.rev == *rev)
                }
            };
            if keep {
                text.push_str(&r.to_line());
                kept += 1;
            }
        }
        let tmp = self.core.root.join(".journal.tmp");
        fs::write(&tmp, text).map_err(|e| io_err("writing", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| io_err("replacing journal", &path, e))?;
        tracing::debug!(horizon, kept, "compacted journal");
        self.catch_up()
    }
}

fn apply(st: &mut State, r: Record) {
    match r {
        Record::Header { horizon, current } => {
            st.horizon = st.horizon.max(horizon);
            st.current = st.current.max(current);
        }
        Record::Put {
            rev,
            key,
            hash,
            stat,
        } => {
            st.current = st.current.max(rev);
            st.live.insert(key, Entry { rev, hash, stat });
        }
        Record::Delete { rev, key } => {
            st.current = st.current.max(rev);
            st.live.remove(&key);
        }
    }
}

/// The entries of `dir`; none when it does not exist (yet).
fn dir_entries(dir: &Path) -> StoreResult<impl Iterator<Item = StoreResult<fs::DirEntry>> + '_> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => Some(rd),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err("listing", dir, e)),
    };
    Ok(rd
        .into_iter()
        .flatten()
        .map(move |e| e.map_err(|e| io_err("listing", dir, e))))
}

fn read_dir(dir: &Path) -> StoreResult<Vec<(PathBuf, fs::Metadata)>> {
    let mut v = Vec::new();
    for e in dir_entries(dir)? {
        let e = e?;
        // metadata follows symlinks, so a symlinked object file works.
        if let Ok(m) = fs::metadata(e.path()) {
            v.push((e.path(), m));
        }
    }
    Ok(v)
}

/// The object files in `dir`: (object name, index in `OBJECT_EXTS`, stat).
/// Other names (hidden, temp and editor files) are skipped without a stat,
/// and regular files are stat'ed relative to the directory, which saves a
/// path walk per file on a list of thousands.
fn object_files(dir: &Path) -> StoreResult<Vec<(String, usize, FileStat)>> {
    let mut v = Vec::new();
    for e in dir_entries(dir)? {
        let e = e?;
        let file = e.file_name();
        let Some(file) = file.to_str() else {
            continue;
        };
        let Some(name) = object_file_name(file) else {
            continue;
        };
        let ext = OBJECT_EXTS
            .iter()
            .position(|x| file.ends_with(x))
            .expect("object_file_name accepts only these extensions");
        let meta = match e.file_type() {
            Ok(t) if t.is_file() => e.metadata(),
            // A symlinked object file works: its target is what counts.
            Ok(t) if t.is_symlink() => fs::metadata(e.path()),
            _ => continue,
        };
        match meta {
            Ok(m) if m.is_file() => v.push((name.to_string(), ext, FileStat::of(&m))),
            // Removed since listed, or a dangling link: not an object.
            _ => {}
        }
    }
    Ok(v)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Other(format!("dir store task failed: {e}")))?
}

#[async_trait::async_trait]
impl Store for DirStore {
    fn url(&self) -> String {
        format!("dir://{}", self.core.root.display())
    }

    async fn list(&self, kind: Kind) -> StoreResult<(Vec<StoredObject>, u64)> {
        let core = self.core.clone();
        blocking(move || core.list(kind)).await
    }

    async fn list_in_batches(
        &self,
        kind: Kind,
        each: &mut (dyn FnMut(Vec<StoredObject>) + Send),
    ) -> StoreResult<u64> {
        // Files are read on a blocking thread while the caller consumes the
        // batches; the bounded channel keeps little in flight.
        let core = self.core.clone();
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let reader = tokio::task::spawn_blocking(move || {
            core.list_batches(kind, |batch| tx.blocking_send(batch).is_ok())
        });
        while let Some(batch) = rx.recv().await {
            each(batch);
        }
        reader
            .await
            .map_err(|e| StoreError::Other(format!("dir store task failed: {e}")))?
    }

    async fn watch(&self, kind: Kind, after_revision: u64) -> StoreResult<WatchStream> {
        let core = self.core.clone();
        blocking(move || watch::start(core, kind, after_revision)).await
    }

    async fn get(&self, key: &ObjectKey) -> StoreResult<Option<StoredObject>> {
        check_key(key)?;
        let core = self.core.clone();
        let key = key.clone();
        blocking(move || core.lock()?.reconcile_key(&key)).await
    }

    async fn put(&self, key: &ObjectKey, value: &Value) -> StoreResult<u64> {
        check_key(key)?;
        let core = self.core.clone();
        let (key, value) = (key.clone(), value.clone());
        blocking(move || core.lock()?.write_object(&key, &value)).await
    }

    async fn delete(&self, key: &ObjectKey) -> StoreResult<Option<u64>> {
        check_key(key)?;
        let core = self.core.clone();
        let key = key.clone();
        blocking(move || core.lock()?.remove_object(&key)).await
    }

    async fn create_if_absent(
        &self,
        key: &ObjectKey,
        value: &Value,
        lease: Option<&dyn Lease>,
    ) -> StoreResult<Option<u64>> {
        check_key(key)?;
        let core = self.core.clone();
        let (key, value) = (key.clone(), value.clone());
        let lease_id = lease.map(|l| l.id());
        blocking(move || {
            let mut l = core.lock()?;
            if l.reconcile_key(&key)?.is_some() || l.st.live.contains_key(&key) {
                return Ok(None);
            }
            if let Some(id) = lease_id {
                // Check the lease before writing so a dead lease binds nothing.
                l.lease_check_alive(id)?;
            }
            let rev = l.write_object(&key, &value)?;
            if let Some(id) = lease_id {
                l.lease_bind(id, &key, rev)?;
            }
            Ok(Some(rev))
        })
        .await
    }

    async fn grant_lease(&self, ttl: Duration) -> StoreResult<Box<dyn Lease>> {
        let core = self.core.clone();
        let id = blocking({
            let core = core.clone();
            move || core.lock()?.lease_grant(ttl)
        })
        .await?;
        Ok(Box::new(DirLease::new(core, id)))
    }
}
