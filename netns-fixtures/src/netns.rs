//! RAII network namespaces.
//!
//! Namespaces are named (`/run/netns/<name>`, as `ip netns add` makes them) so
//! that people debugging a failed test can `ip netns exec` into them, and so that
//! CNI plugins can be handed a netns path exactly as a runtime would.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Every name this crate makes starts with this, followed by the creating
/// process's PID, so leftovers of a crashed run can be recognised and removed.
const NAME_PREFIX: &str = "pn";
const NETNS_DIR: &str = "/run/netns";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `pn-<prefix>-<pid>-<n>`: unique across parallel test processes and within one.
pub fn unique_name(prefix: &str) -> String {
    let prefix: String = prefix
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(8)
        .collect();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{NAME_PREFIX}-{prefix}-{}-{n}", std::process::id())
}

/// A node's namespace.
pub type Host = Netns;
/// A container's namespace.
pub type Pod = Netns;

/// A named network namespace, deleted (with every process still in it) on drop.
pub struct Netns {
    name: String,
    path: PathBuf,
    spawned: Mutex<Vec<u32>>,
}

impl Netns {
    /// Creates `pn-<prefix>-<pid>-<n>` with `lo` up.
    pub fn new(prefix: &str) -> Result<Netns> {
        remove_stale();
        let name = unique_name(prefix);
        run_checked(Command::new("ip").args(["netns", "add", &name]))
            .with_context(|| format!("creating network namespace {name}"))?;
        let ns = Netns {
            path: Path::new(NETNS_DIR).join(&name),
            name,
            spawned: Mutex::new(Vec::new()),
        };
        ns.exec_checked(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`: what a runtime passes as `CNI_NETNS`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A `Command` that runs `program` inside this namespace (`ip netns exec`),
    /// for callers that want to set env, stdin and so on.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `argv` inside the namespace and returns its output, whatever the exit code.
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        let (program, args) = argv.split_first().context("exec needs a program")?;
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {argv:?} in {}", self.name))
    }

    /// Like `exec`, but a non-zero exit is an error carrying stderr.
    pub fn exec_checked(&self, argv: &[&str]) -> Result<String> {
        let out = self.exec(argv)?;
        if !out.status.success() {
            bail!(
                "{argv:?} in {} failed ({}): {}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs a shell command line inside the namespace; stdout on success,
    /// an error with stderr on a non-zero exit.
    pub fn sh(&self, script: &str) -> Result<String> {
        self.exec_checked(&["sh", "-c", script])
    }

    /// Starts `cmd` inside the namespace. The program and arguments of `cmd`
    /// are kept; it is wrapped in `ip netns exec`.
    pub fn spawn(&self, cmd: Command) -> Result<ChildGuard> {
        let mut wrapped = self.command(&cmd.get_program().to_string_lossy());
        wrapped.args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            wrapped.current_dir(dir);
        }
        let child = wrapped
            .spawn()
            .with_context(|| format!("starting {:?} in {}", cmd.get_program(), self.name))?;
        self.spawned.lock().unwrap().push(child.id());
        Ok(ChildGuard { child: Some(child) })
    }

    /// Runs `f` on a fresh thread that has joined this namespace; the calling
    /// thread's namespace is untouched.
    pub fn enter<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let file =
            File::open(&self.path).with_context(|| format!("opening {}", self.path.display()))?;
        std::thread::scope(|s| {
            s.spawn(move || -> Result<R> {
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("joining network namespace {}", self.name))?;
                ensure_not_root_netns()?;
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow::anyhow!("closure run in {} panicked", self.name))?
        })
    }

    /// PIDs of every process whose network namespace is this one.
    pub fn pids(&self) -> Vec<u32> {
        let Ok(target) = std::fs::metadata(&self.path) else {
            return Vec::new();
        };
        let mut pids = Vec::new();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return pids;
        };
        for entry in procs.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Ok(m) = std::fs::metadata(format!("/proc/{pid}/ns/net")) {
                if m.ino() == target.ino() && m.dev() == target.dev() {
                    pids.push(pid);
                }
            }
        }
        pids
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Children we spawned first (politely), then anything else still living in
        // the namespace: only processes of this test can be in a namespace it made.
        for pid in self.spawned.lock().unwrap().drain(..) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        for pid in self.pids() {
            if pid != std::process::id() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// A process started in a namespace; killed by PID (and reaped) on drop.
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    pub fn id(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("child present until drop")
    }

    /// Sends a signal by PID (e.g. SIGTERM for a clean-shutdown test).
    pub fn signal(&self, sig: Signal) -> Result<()> {
        kill(Pid::from_raw(self.id() as i32), sig)
            .with_context(|| format!("sending {sig} to pid {}", self.id()))
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child_mut().try_wait(), Ok(None))
    }

    /// Kills and reaps the process now.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Gives up ownership: the process is no longer killed on drop.
    pub fn into_child(mut self) -> Child {
        self.child.take().expect("child present until drop")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Errors unless the calling thread is in a network namespace other than the
/// machine's own: the guard for code about to change links or rules. The
/// machine's namespace is PID 1's where we may read it; in a sandbox that hides
/// PID 1, it is the one this process's main thread runs in (this crate only
/// ever moves helper threads).
pub fn ensure_not_root_netns() -> Result<()> {
    let own = std::fs::metadata("/proc/thread-self/ns/net").context("reading own netns")?;
    let root = std::fs::metadata("/proc/1/ns/net")
        .or_else(|_| std::fs::metadata("/proc/self/ns/net"))
        .context("reading the machine's netns")?;
    if own.ino() == root.ino() && own.dev() == root.dev() {
        bail!("refusing to change the network: this thread is in the root network namespace");
    }
    Ok(())
}

/// Deletes namespaces that a crashed (killed) earlier test process left:
/// `pn-<prefix>-<pid>-<n>` whose `<pid>` no longer exists.
pub fn remove_stale() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip")
                .args(["netns", "del", &name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The PID encoded in a name made by `unique_name`, if `name` is one.
pub fn owner_pid(name: &str) -> Option<u32> {
    let mut parts = name.split('-');
    if parts.next()? != NAME_PREFIX {
        return None;
    }
    let _prefix = parts.next()?;
    let pid = parts.next()?.parse().ok()?;
    let _n: u32 = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some(pid)
}

pub(crate) fn run_checked(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_distinct_and_parse_back() {
        let a = unique_name("host");
        let b = unique_name("host");
        assert_ne!(a, b);
        assert_eq!(owner_pid(&a), Some(std::process::id()));
        assert_eq!(owner_pid("pn-x-12-3"), Some(12));
        assert_eq!(owner_pid("cni-1234"), None);
        assert_eq!(owner_pid("pn-x-12-3-extra"), None);
    }

    #[test]
    fn prefix_is_sanitised_and_short() {
        let n = unique_name("a/b c-very-long-prefix");
        assert!(n.starts_with("pn-abcveryl-"), "{n}");
    }
}
