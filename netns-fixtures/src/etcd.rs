//! A throw-away etcd server for tests and benchmarks: Debian's `/usr/bin/etcd`
//! on 127.0.0.1 with free client and peer ports and a temporary data directory.
//!
//! Loopback only, so no network namespace is involved. The process is stopped
//! by its PID (never by name); `Drop` kills it and removes the data directory.
//! `stop()` + `restart()` simulate an etcd crash and recovery with the same
//! ports and data, which is what reconnect tests need. `TcpProxy` cuts one
//! client off while etcd keeps running (a partition).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util::free_port;

const ETCD_BIN: &str = "/usr/bin/etcd";
const ETCDCTL_BIN: &str = "/usr/bin/etcdctl";
/// How long a fresh or restarted etcd may take to answer `/health`.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts with new ports when another process grabbed a port between
/// `free_port()` and etcd binding it.
const START_ATTEMPTS: usize = 5;

pub struct EtcdServer {
    client_port: u16,
    peer_port: u16,
    /// Where the etcd data directory and its log file live.
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts a single-member etcd and waits until it reports healthy.
    pub fn start() -> Result<EtcdServer> {
        if !Path::new(ETCD_BIN).exists() {
            bail!("{ETCD_BIN} not found: install the Debian package etcd-server");
        }
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            // tmpfs when available: etcd fsyncs every write, and the tests
            // and benchmarks measure podnet, not the disk.
            let dir = match Path::new("/dev/shm").is_dir() {
                true => tempfile::Builder::new()
                    .prefix("podnet-etcd-")
                    .tempdir_in("/dev/shm"),
                false => tempfile::Builder::new().prefix("podnet-etcd-").tempdir(),
            }
            .context("creating a temporary directory for etcd")?;
            let mut server = EtcdServer {
                client_port: free_port(),
                peer_port: free_port(),
                dir,
                child: None,
            };
            if server.client_port == server.peer_port {
                continue;
            }
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no distinct free ports found")))
            .context(format!("starting etcd ({START_ATTEMPTS} attempts)"))
    }

    /// `127.0.0.1:PORT`, what etcd clients take as an endpoint.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `etcd://127.0.0.1:PORT`, the podnet store URL of this server.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoint())
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// PID of the running etcd, `None` while stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Kills etcd (SIGKILL, like a crash) and waits for it to exit; the data is kept.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            child
                .kill()
                .with_context(|| format!("killing etcd pid {pid}"))?;
            child
                .wait()
                .with_context(|| format!("waiting for etcd pid {pid} to exit"))?;
        }
        Ok(())
    }

    /// Starts etcd again on the same ports with the same data; waits until healthy.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        let deadline = Instant::now() + START_TIMEOUT;
        // The kernel may briefly keep the old listening socket; retry a few times.
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!("etcd restart attempt failed, retrying: {e:#}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e).context(format!("restarting etcd on {}", self.endpoint())),
            }
        }
    }

    /// Compacts the key-value history up to `revision` (physically, so that a
    /// watch from an older revision fails right away).
    pub fn compact(&self, revision: u64) -> Result<()> {
        self.etcdctl(&["compact", "--physical", &revision.to_string()])
            .map(|_| ())
    }

    /// Runs `etcdctl` against this server and returns its stdout.
    pub fn etcdctl(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(ETCDCTL_BIN)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()))
            .args(args)
            .output()
            .with_context(|| format!("running {ETCDCTL_BIN} {args:?}"))?;
        if !out.status.success() {
            bail!(
                "etcdctl {:?} against {} failed ({}): {}",
                args,
                self.endpoint(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// True when etcd answers `GET /health` with `"health":"true"`.
    pub fn healthy(&self) -> bool {
        health_check(self.client_port).unwrap_or(false)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .with_context(|| format!("opening {}", self.log_path().display()))?;
        let log2 = log.try_clone().context("duplicating the etcd log handle")?;
        let child = Command::new(ETCD_BIN)
            .arg("--name=podnet-test")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=podnet-test={peer}"))
            .arg("--initial-cluster-state=new")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .arg("--log-level=warn")
            // Metrics and other listeners would take fixed default ports.
            .arg(format!(
                "--listen-metrics-urls=http://127.0.0.1:{}",
                free_port()
            ))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .with_context(|| format!("spawning {ETCD_BIN}"))?;
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!(
                    "etcd exited during start-up ({status}) on {}; log tail:\n{}",
                    self.endpoint(),
                    self.log_tail()
                );
            }
            if self.healthy() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let tail = self.log_tail();
                self.stop()?;
                bail!(
                    "etcd on {} not healthy after {START_TIMEOUT:?}; log tail:\n{tail}",
                    self.endpoint()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(self.log_path()) {
            let _ = f.read_to_string(&mut s);
        }
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("etcd harness: {e:#}");
        }
        // The TempDir field removes the data directory after this.
    }
}

/// A loopback TCP forwarder in front of an etcd (or any TCP server) that can be
/// cut and restored: a network partition between one client and the server
/// while the server keeps running for everyone else. Threads, no runtime.
pub struct TcpProxy {
    port: u16,
    shared: Arc<ProxyShared>,
    accept_thread: Option<std::thread::JoinHandle<()>>,
}

struct ProxyShared {
    target: SocketAddr,
    /// False while cut: new connections are closed at once.
    open: AtomicBool,
    stopping: AtomicBool,
    /// Both sockets of every forwarded connection, to shut them down on `cut`
    /// (kept until then: test clients open only a handful of connections).
    conns: Mutex<Vec<TcpStream>>,
}

impl TcpProxy {
    /// Listens on a free 127.0.0.1 port and forwards to `target` (`host:port`).
    pub fn start(target: &str) -> Result<TcpProxy> {
        let target: SocketAddr = target
            .parse()
            .with_context(|| format!("parsing proxy target {target:?}"))?;
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the proxy port")?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(ProxyShared {
            target,
            open: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
            conns: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        let accept_thread = std::thread::Builder::new()
            .name(format!("proxy-{port}"))
            .spawn(move || accept_loop(listener, sh))
            .context("spawning the proxy thread")?;
        Ok(TcpProxy {
            port,
            shared,
            accept_thread: Some(accept_thread),
        })
    }

    /// `127.0.0.1:PORT` of the proxy: give this to the client under test.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Breaks every forwarded connection and refuses new ones until `restore`.
    pub fn cut(&self) {
        self.shared.open.store(false, Ordering::SeqCst);
        let conns = std::mem::take(&mut *self.shared.conns.lock().unwrap());
        for c in conns {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.shared.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.cut();
        // Wakes the blocking accept() so the thread sees `stopping`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, sh: Arc<ProxyShared>) {
    for conn in listener.incoming() {
        if sh.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = conn else { continue };
        if !sh.open.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(server) = TcpStream::connect_timeout(&sh.target, Duration::from_secs(2)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let handles = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        );
        let (Ok(c1), Ok(s1), Ok(c2), Ok(s2)) = handles else {
            continue;
        };
        sh.conns.lock().unwrap().extend([client, server]);
        std::thread::spawn(move || pipe(c1, s1));
        std::thread::spawn(move || pipe(s2, c2));
    }
}

/// Copies one direction until EOF or error, then closes both ends.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

fn health_check(port: u16) -> std::io::Result<bool> {
    let addr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    Ok(resp.contains("\"health\":\"true\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_restart_compact() {
        let mut etcd = EtcdServer::start().expect("etcd starts");
        assert!(etcd.healthy());
        assert!(etcd.url().starts_with("etcd://127.0.0.1:"));
        etcd.etcdctl(&["put", "/a", "1"]).unwrap();
        etcd.etcdctl(&["put", "/a", "2"]).unwrap();
        let old_pid = etcd.pid().unwrap();
        etcd.stop().unwrap();
        assert!(!etcd.healthy());
        assert!(etcd.etcdctl(&["get", "/a"]).is_err());
        etcd.restart().unwrap();
        assert_ne!(etcd.pid(), Some(old_pid));
        let got = etcd.etcdctl(&["get", "/a", "--print-value-only"]).unwrap();
        assert_eq!(got.trim(), "2", "data survives a restart");
        etcd.compact(2).unwrap();
        // Revision 2 is gone now: reading at it fails.
        assert!(etcd.etcdctl(&["get", "/a", "--rev=1"]).is_err());
        // Through a proxy, which can be cut and restored.
        let proxy = TcpProxy::start(&etcd.endpoint()).unwrap();
        let via = |p: &TcpProxy| health_check(p.port).unwrap_or(false);
        assert!(via(&proxy));
        proxy.cut();
        assert!(!via(&proxy));
        proxy.restore();
        assert!(via(&proxy));
        drop(proxy);
        let dir = etcd.data_dir();
        drop(etcd);
        assert!(!dir.exists(), "drop removes the data directory");
    }
}
