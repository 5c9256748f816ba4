//! Shared helpers of the integration tests: a temp dir store, the real
//! `podnet-dns` binary on loopback with free ports, and `dig` with its output parsed.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use podnet_state::{Kind, ObjectKey, Store};
use serde_json::Value;

/// A dir store in a temp directory, written through the Store API.
pub struct TestStore {
    pub dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    store: Arc<dyn Store>,
}

impl TestStore {
    pub fn new() -> TestStore {
        let dir = tempfile::tempdir().expect("creating a temp dir for the store");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = format!("dir://{}", dir.path().display());
        let store = rt
            .block_on(podnet_state::open_store(&url))
            .expect("opening the dir store");
        TestStore { dir, rt, store }
    }
    pub fn url(&self) -> String {
        format!("dir://{}", self.dir.path().display())
    }
    pub fn put(&self, v: &Value) {
        let kind = match v["kind"].as_str().unwrap() {
            "Service" => Kind::Service,
            "EndpointSlice" => Kind::EndpointSlice,
            "Pod" => Kind::Pod,
            "Namespace" => Kind::Namespace,
            k => panic!("unexpected kind {k}"),
        };
        let key = ObjectKey::new(
            kind,
            v["metadata"]["namespace"].as_str(),
            v["metadata"]["name"].as_str().unwrap(),
        );
        self.rt
            .block_on(self.store.put(&key, v))
            .expect("writing to the store");
    }
    pub fn delete(&self, kind: Kind, ns: Option<&str>, name: &str) {
        let key = ObjectKey::new(kind, ns, name);
        self.rt
            .block_on(self.store.delete(&key))
            .expect("deleting from the store");
    }
}

/// A running podnet-dns, killed by PID on drop.
pub struct Dns {
    pub child: Child,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
    pub log: PathBuf,
    _logdir: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    // A port free for both TCP and UDP on 127.0.0.1.
    loop {
        let p = netns_fixtures::free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

impl Dns {
    /// Starts the binary with `--store url` and `extra` flags; waits until it answers.
    pub fn start(store_url: &str, extra: &[&str]) -> Dns {
        Dns::start_with(store_url, extra, true)
    }

    pub fn start_with(store_url: &str, extra: &[&str], wait_ready: bool) -> Dns {
        Dns::start_at(free_port(), store_url, extra, wait_ready)
    }

    /// Starts on 127.0.0.1:`port` (UDP and TCP).
    pub fn start_at(port: u16, store_url: &str, extra: &[&str], wait_ready: bool) -> Dns {
        let mport = free_port();
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("podnet-dns.log");
        let logf = std::fs::File::create(&log).unwrap();
        let mut args: Vec<String> = vec![
            "--store".into(),
            store_url.into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--metrics-addr".into(),
            format!("127.0.0.1:{mport}"),
        ];
        if !extra.contains(&"--upstream") {
            args.extend(["--upstream".into(), String::new()]);
        }
        if !extra.contains(&"--udp-sockets") {
            args.extend(["--udp-sockets".into(), "2".into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(env!("CARGO_BIN_EXE_podnet-dns"))
            .args(&args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("starting podnet-dns");
        let dns = Dns {
            child,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            metrics: format!("127.0.0.1:{mport}").parse().unwrap(),
            log,
            _logdir: logdir,
        };
        if wait_ready {
            let ok = wait(Duration::from_secs(20), || {
                dns.http("/ready").map(|(s, _)| s == 200).unwrap_or(false)
            });
            assert!(
                ok,
                "podnet-dns did not become ready; log:\n{}",
                dns.log_text()
            );
        }
        dns
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path` on the metrics server: (status, body).
    pub fn http(&self, path: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&self.metrics, Duration::from_millis(500)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).ok()?;
        let status = resp.split_whitespace().nth(1)?.parse().ok()?;
        let body = resp
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((status, body))
    }

    pub fn dig(&self, args: &str) -> Dig {
        dig(self.addr, args)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `dig` output, parsed.
#[derive(Debug, Clone, Default)]
pub struct Dig {
    pub status: String,
    pub flags: Vec<String>,
    pub answer: Vec<String>,
    pub authority: Vec<String>,
    pub additional: Vec<String>,
    pub size: usize,
    pub raw: String,
}

impl Dig {
    /// Answer records as "name ttl type data" with single spaces.
    pub fn answers(&self) -> Vec<String> {
        self.answer.clone()
    }
    pub fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
    /// The rdata of each answer record (last field(s) after the type).
    pub fn data(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .answer
            .iter()
            .map(|l| l.split_whitespace().skip(3).collect::<Vec<_>>().join(" "))
            .collect();
        v.sort();
        v
    }
}

/// Runs `dig @addr -p port +tries=1 +time=2 <args>` (args split on spaces).
pub fn dig(addr: SocketAddr, args: &str) -> Dig {
    let out = Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["+tries=1", "+time=2", "+nocookie"])
        .args(args.split_whitespace())
        .output()
        .expect("running dig (bind9-dnsutils)");
    parse_dig(&String::from_utf8_lossy(&out.stdout))
}

pub fn parse_dig(raw: &str) -> Dig {
    let mut d = Dig {
        raw: raw.to_string(),
        ..Default::default()
    };
    let mut section = "";
    for line in raw.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            d.status = rest.split(',').next().unwrap_or("").to_string();
        }
        if let Some(rest) = line.strip_prefix(";; flags: ") {
            d.flags = rest
                .split(';')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(String::from)
                .collect();
        }
        if let Some(rest) = line.strip_prefix(";; MSG SIZE  rcvd: ") {
            d.size = rest.trim().parse().unwrap_or(0);
        }
        if line.starts_with(";; ANSWER SECTION") {
            section = "an";
            continue;
        }
        if line.starts_with(";; AUTHORITY SECTION") {
            section = "ns";
            continue;
        }
        if line.starts_with(";; ADDITIONAL SECTION") {
            section = "ar";
            continue;
        }
        if line.trim().is_empty() || line.starts_with(';') {
            if line.trim().is_empty() {
                section = "";
            }
            continue;
        }
        let rec: Vec<&str> = line.split_whitespace().collect();
        // name ttl class type data... -> drop the class
        let norm = if rec.len() >= 4 {
            let mut v = vec![rec[0], rec[1]];
            v.extend(&rec[3..]);
            v.join(" ")
        } else {
            line.to_string()
        };
        match section {
            "an" => d.answer.push(norm),
            "ns" => d.authority.push(norm),
            "ar" => d.additional.push(norm),
            _ => {}
        }
    }
    d
}
