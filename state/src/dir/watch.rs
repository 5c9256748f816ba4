//! Watches of the dir store: a thread per watch replays the journal from the
//! requested revision, then follows it. inotify on the kind's directories
//! tells it about files changed by hand, which it journals (under the flock,
//! so each change gets exactly one revision however many watchers see it);
//! inotify on the root tells it about journal appends by other processes.

use std::collections::{HashMap, HashSet};
use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::journal::{self, Record};
use super::{decode_file, io_err, Core};
use crate::object::check_object_name;
use crate::store::{
    Kind, ObjectKey, StoreError, StoreResult, StoredObject, WatchEvent, WatchStream,
};

/// Journal appends by other processes are also noticed by this poll period,
/// in case an inotify event was lost.
const POLL: Duration = Duration::from_millis(1000);

const DIR_MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::CLOSE_WRITE)
    .union(WatchMask::DELETE_SELF);

struct Watcher {
    core: Arc<Core>,
    kind: Kind,
    inotify: Inotify,
    /// Watched directories of the kind: `None` the kind dir, `Some(ns)` a namespace dir.
    dirs: HashMap<WatchDescriptor, Option<String>>,
    reader: journal::Reader,
    /// Highest revision already passed on (or skipped as another kind's).
    pos: u64,
}

fn inotify_err(core: &Core, e: std::io::Error) -> StoreError {
    io_err("watching with inotify", &core.root, e)
}

pub(super) fn start(core: Arc<Core>, kind: Kind, after: u64) -> StoreResult<WatchStream> {
    let inotify = Inotify::init().map_err(|e| inotify_err(&core, e))?;
    inotify
        .watches()
        .add(
            &core.root,
            WatchMask::MODIFY | WatchMask::MOVED_TO | WatchMask::CREATE,
        )
        .map_err(|e| inotify_err(&core, e))?;
    let mut w = Watcher {
        core: core.clone(),
        kind,
        inotify,
        dirs: HashMap::new(),
        reader: journal::Reader::default(),
        pos: after,
    };
    w.add_dirs().map_err(|e| inotify_err(&core, e))?;
    {
        // Files changed while nobody watched get their revision now.
        let mut l = core.lock()?;
        l.reconcile_kind(kind)?;
        if after < l.st.horizon || after > l.st.current {
            return Err(StoreError::Compacted {
                kind,
                revision: after,
                compacted: l.st.horizon,
            });
        }
    }
    let (tx, rx) = mpsc::channel(1024);
    std::thread::Builder::new()
        .name(format!("podnet-dir-watch-{}", kind.plural()))
        .spawn(move || w.run(tx))
        .map_err(|e| StoreError::Other(format!("starting dir watch thread: {e}")))?;
    Ok(Box::pin(ReceiverStream::new(rx)))
}

type Tx = mpsc::Sender<StoreResult<WatchEvent>>;

impl Watcher {
    /// Watch the kind directory and (namespaced kinds) every namespace directory.
    fn add_dirs(&mut self) -> std::io::Result<()> {
        let kdir = self.core.kind_dir(self.kind);
        if !self.dirs.values().any(|d| d.is_none()) {
            let wd = self.inotify.watches().add(&kdir, DIR_MASK)?;
            self.dirs.insert(wd, None);
        }
        if self.kind.namespaced() {
            for e in std::fs::read_dir(&kdir)? {
                let e = e?;
                let Some(ns) = e.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if !e.path().is_dir() || check_object_name(&ns).is_err() {
                    continue;
                }
                if self.dirs.values().any(|d| d.as_deref() == Some(&ns)) {
                    continue;
                }
                match self.inotify.watches().add(e.path(), DIR_MASK) {
                    Ok(wd) => {
                        self.dirs.insert(wd, Some(ns));
                    }
                    // Removed between listing and watching: nothing to watch.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    fn run(mut self, tx: Tx) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if !self.forward_journal(&tx) {
                return;
            }
            let mut pfd = libc::pollfd {
                fd: self.inotify.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            unsafe { libc::poll(&mut pfd, 1, POLL.as_millis() as i32) };
            if tx.is_closed() {
                return;
            }
            let (mut keys, mut full) = (HashSet::new(), false);
            self.drain(&mut buf, &mut keys, &mut full);
            if keys.is_empty() && !full {
                continue;
            }
            if let Err(e) = self.reconcile(keys, full) {
                tracing::warn!(kind = %self.kind, error = %e, "picking up changed files failed; retrying on the next change");
            }
        }
    }

    /// Journal hand edits of the given keys (or the whole kind).
    fn reconcile(&mut self, keys: HashSet<ObjectKey>, full: bool) -> StoreResult<()> {
        if full {
            self.add_dirs().map_err(|e| inotify_err(&self.core, e))?;
        }
        let mut l = self.core.lock()?;
        if full {
            l.reconcile_kind(self.kind)?;
        } else {
            for k in keys {
                l.reconcile_key(&k)?;
            }
        }
        Ok(())
    }

    /// Collect pending inotify events as keys to look at.
    fn drain(&mut self, buf: &mut [u8], keys: &mut HashSet<ObjectKey>, full: &mut bool) {
        loop {
            let events = match self.inotify.read_events(buf) {
                Ok(ev) => ev,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(error = %e, "reading inotify events failed; rescanning");
                    *full = true;
                    return;
                }
            };
            let mut removed = Vec::new();
            for ev in events {
                if ev.mask.contains(EventMask::Q_OVERFLOW) {
                    *full = true;
                    continue;
                }
                let Some(dir) = self.dirs.get(&ev.wd) else {
                    continue; // the root: journal appends, read every loop anyway
                };
                if ev
                    .mask
                    .intersects(EventMask::DELETE_SELF | EventMask::IGNORED)
                {
                    removed.push(ev.wd.clone());
                    *full = true;
                    continue;
                }
                let Some(name) = ev.name.and_then(|n| n.to_str()) else {
                    continue;
                };
                match dir {
                    None if self.kind.namespaced() => {
                        if ev.mask.contains(EventMask::ISDIR) {
                            // A new (or renamed) namespace directory.
                            *full = true;
                        }
                    }
                    // A file is looked at when it is complete: closed after
                    // writing, or renamed into place (CREATE comes before
                    // the content).
                    _ if ev.mask.contains(EventMask::CREATE) => {}
                    ns => {
                        if let Some(obj) = super::object_file_name(name) {
                            keys.insert(ObjectKey::new(self.kind, ns.as_deref(), obj));
                        }
                    }
                }
            }
            for wd in removed {
                self.dirs.remove(&wd);
            }
        }
    }

    /// Pass on journal records of our kind after `pos`; false once the
    /// receiver is gone or the watch had to end.
    fn forward_journal(&mut self, tx: &Tx) -> bool {
        let path = self.core.journal_path();
        let out = match self.reader.read_new_after(&path, self.pos) {
            Ok(o) => o,
            Err(e) => {
                let _ = tx.blocking_send(Err(StoreError::Unreachable {
                    url: format!("dir://{}", self.core.root.display()),
                    doing: format!("following the journal for {}", self.kind),
                    source: Box::new(e),
                }));
                return false;
            }
        };
        for r in out.records {
            if let Record::Header { horizon, .. } = r {
                if out.reset && horizon > self.pos {
                    // Compacted past what we passed on: deletes may be lost.
                    let _ = tx.blocking_send(Err(StoreError::Compacted {
                        kind: self.kind,
                        revision: self.pos,
                        compacted: horizon,
                    }));
                    return false;
                }
                continue;
            }
            let rev = r.rev();
            if rev <= self.pos {
                continue;
            }
            self.pos = rev;
            let ev = match r {
                Record::Put { key, .. } if key.kind == self.kind => {
                    let Some((p, _)) = self.core.find_file(&key) else {
                        continue; // deleted since; its Delete follows
                    };
                    let raw = match std::fs::read(&p)
                        .map_err(|e| e.to_string())
                        .and_then(|d| decode_file(&key, d))
                    {
                        Ok(v) => v,
                        Err(e) => {
                            // Changed by hand since; the next record (or the
                            // reconcile of that edit) carries the content.
                            tracing::debug!(path = %p.display(), error = %e, "skipping unreadable file in watch");
                            continue;
                        }
                    };
                    WatchEvent::Put(StoredObject {
                        key,
                        mod_revision: rev,
                        raw,
                    })
                }
                Record::Delete { key, rev } if key.kind == self.kind => {
                    WatchEvent::Delete { key, revision: rev }
                }
                _ => continue,
            };
            if tx.blocking_send(Ok(ev)).is_err() {
                return false;
            }
        }
        true
    }
}
