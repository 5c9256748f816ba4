//! Network namespaces by path, and sysctls as a namespace sees them.
//!
//! `setns(CLONE_NEWNET)` affects only the calling thread, so work for another namespace
//! runs on a short-lived thread that joins it; the caller's thread never moves.
//! `/proc/sys/net/*` is resolved against the netns of the thread doing the lookup, so a
//! sysctl written from such a thread lands in the target namespace.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

/// `NSFS_MAGIC` from `linux/magic.h`: the filesystem of namespace files.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Why a namespace could not be opened or entered.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// Nothing at that path (e.g. the container is gone).
    #[error("network namespace {0} does not exist")]
    NotFound(PathBuf),
    /// Something is there but it is not a namespace file.
    #[error("{0} is not a network namespace")]
    NotNetns(PathBuf),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("running a task in network namespace {0}: the thread panicked")]
    Panicked(PathBuf),
}

/// An open network namespace (`/var/run/netns/<name>`, `/proc/<pid>/ns/net`).
/// Keeping the file open keeps the namespace alive while we work in it.
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
}

impl Netns {
    /// Opens the namespace at `path`, checking it really is a namespace file.
    pub fn open(path: impl AsRef<Path>) -> Result<Netns, NetnsError> {
        let path = path.as_ref().to_path_buf();
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(NetnsError::NotFound(path))
            }
            Err(source) => {
                return Err(NetnsError::Io {
                    op: "opening",
                    path,
                    source,
                })
            }
        };
        // SAFETY: fstatfs only writes into the zeroed struct we hand it.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
            return Err(NetnsError::Io {
                op: "statfs of",
                path,
                source: io::Error::last_os_error(),
            });
        }
        // A bind-mounted netns (`ip netns add`) is an nsfs file; `/proc/PID/ns/net` too.
        #[allow(clippy::unnecessary_cast)]
        if st.f_type as i64 != NSFS_MAGIC {
            return Err(NetnsError::NotNetns(path));
        }
        Ok(Netns { file, path })
    }

    /// The calling thread's own network namespace.
    pub fn current() -> Result<Netns, NetnsError> {
        Netns::open("/proc/thread-self/ns/net")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `(device, inode)` of the namespace: equal for the same namespace.
    pub fn id(&self) -> Result<(u64, u64), NetnsError> {
        use std::os::unix::fs::MetadataExt;
        let m = self.file.metadata().map_err(|source| NetnsError::Io {
            op: "stat of",
            path: self.path.clone(),
            source,
        })?;
        Ok((m.dev(), m.ino()))
    }

    /// Runs `f` on a new thread that has joined this namespace and returns its value.
    pub fn run<T, F>(&self, f: F) -> Result<T, NetnsError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(&self.file, CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::Io {
                    op: "joining",
                    path: self.path.clone(),
                    source: io::Error::from(e),
                })?;
                // The thread ends here, so it never has to go back.
                Ok(f())
            })
            .join()
            .map_err(|_| NetnsError::Panicked(self.path.clone()))?
        })
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

fn sysctl_path(key: &str) -> PathBuf {
    // Keys are given with `/` separators (`net/ipv6/conf/eth0.100/accept_dad`), since
    // interface names may contain dots; a leading `/` is tolerated.
    Path::new("/proc/sys").join(key.trim_start_matches('/'))
}

/// Writes a sysctl in the calling thread's network namespace.
pub fn sysctl_write(key: &str, value: &str) -> io::Result<()> {
    let p = sysctl_path(key);
    std::fs::write(&p, value).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("writing {value:?} to {}: {e}", p.display()),
        )
    })
}

/// Reads a sysctl (trimmed) in the calling thread's network namespace.
pub fn sysctl_read(key: &str) -> io::Result<String> {
    let p = sysctl_path(key);
    std::fs::read_to_string(&p)
        .map(|s| s.trim().to_string())
        .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", p.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_keys_map_to_proc_sys() {
        assert_eq!(
            sysctl_path("net/ipv6/conf/eth0.100/accept_dad"),
            Path::new("/proc/sys/net/ipv6/conf/eth0.100/accept_dad")
        );
        assert_eq!(
            sysctl_path("/net/ipv4/ip_forward"),
            Path::new("/proc/sys/net/ipv4/ip_forward")
        );
    }

    #[test]
    fn opening_missing_or_non_namespace_paths_fails_clearly() {
        let missing = Netns::open("/nonexistent/netns/x").unwrap_err();
        assert!(matches!(missing, NetnsError::NotFound(_)), "{missing}");
        let not_ns = Netns::open("/proc/self/status").unwrap_err();
        assert!(matches!(not_ns, NetnsError::NotNetns(_)), "{not_ns}");
        let me = Netns::current().unwrap();
        assert_eq!(me.id().unwrap(), Netns::current().unwrap().id().unwrap());
    }
}
