//! podnet-dns against NSD with dnsperf on loopback, both serving the same
//! 1,000 services (written to a temp dir store; the NSD zone file is
//! generated from the same objects); then 10,000 services: RSS and time to
//! the first answer after start; then store-event-to-answer latency.
//!
//! Run: `cargo bench -p podnet-dns --bench dnsperf` (or dns/bench/run.sh).
//! Needs `dnsperf` and `nsd` (Debian packages). Every process it starts is
//! killed by PID; everything lives in temp dirs and on 127.0.0.1 high ports.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use podnet_dns::fixtures;
use podnet_state::{Kind, ObjectKey, Store};
use serde_json::Value;

const RUNS: usize = 5;
const RUN_SECONDS: u32 = 10;
const SERVICES: usize = 1000;
const BIG: usize = 10_000;

fn free_port() -> u16 {
    loop {
        let p = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

fn service_ip(i: usize) -> String {
    format!("10.{}.{}.{}", 96 + i / 62500, (i / 250) % 250, i % 250 + 1)
}

fn services(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            fixtures::service_json(
                "default",
                &format!("svc{i}"),
                &[&service_ip(i)],
                &[("http", 80, "TCP")],
            )
        })
        .collect()
}

struct Proc {
    child: Child,
    what: &'static str,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first so NSD takes its server children down with it.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop on SIGTERM; killing", self.what);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_store(rt: &tokio::runtime::Runtime, dir: &Path, objs: &[Value]) -> Arc<dyn Store> {
    let store = rt
        .block_on(podnet_state::open_store(&format!(
            "dir://{}",
            dir.display()
        )))
        .expect("opening the dir store");
    rt.block_on(async {
        store
            .put(
                &ObjectKey::new(Kind::Namespace, None, "default"),
                &fixtures::namespace_json("default"),
            )
            .await
            .unwrap();
        for o in objs {
            let key = ObjectKey::new(
                Kind::Service,
                Some("default"),
                o["metadata"]["name"].as_str().unwrap(),
            );
            store.put(&key, o).await.expect("writing a service");
        }
    });
    store
}

fn start_podnet(store: &Path, port: u16, sockets: usize) -> Proc {
    start_podnet_with(store, port, sockets, 32)
}

fn start_podnet_with(store: &Path, port: u16, sockets: usize, batch: usize) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_podnet-dns"))
        .args(["--store", &format!("dir://{}", store.display())])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--upstream",
            "",
            "--metrics-addr",
            "off",
        ])
        .args([
            "--udp-sockets",
            &sockets.to_string(),
            "--udp-batch",
            &batch.to_string(),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("starting podnet-dns");
    Proc {
        child,
        what: "podnet-dns",
    }
}

fn nsd_zone(objs: &[Value]) -> String {
    let mut z = String::from(
        "$ORIGIN cluster.local.\n$TTL 5\n@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5\n@ IN NS ns.dns.cluster.local.\nns.dns IN A 127.0.0.1\ndns-version IN TXT \"1.1.0\"\n",
    );
    for o in objs {
        let name = o["metadata"]["name"].as_str().unwrap();
        let ns = o["metadata"]["namespace"].as_str().unwrap();
        let ip = o["spec"]["clusterIP"].as_str().unwrap();
        z.push_str(&format!("{name}.{ns}.svc IN A {ip}\n"));
        for p in o["spec"]["ports"].as_array().into_iter().flatten() {
            if let Some(pn) = p["name"].as_str() {
                let proto = p["protocol"].as_str().unwrap_or("TCP").to_lowercase();
                z.push_str(&format!("_{pn}._{proto}.{name}.{ns}.svc IN SRV 0 100 {} {name}.{ns}.svc.cluster.local.\n", p["port"]));
            }
        }
    }
    z
}

fn start_nsd(dir: &Path, objs: &[Value], port: u16) -> Proc {
    std::fs::write(dir.join("cluster.local.zone"), nsd_zone(objs)).unwrap();
    let d = dir.display();
    let conf = format!(
        "server:\n  ip-address: 127.0.0.1@{port}\n  server-count: 2\n  reuseport: yes\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  database: \"\"\n  xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  logfile: \"{d}/nsd.log\"\n  hide-version: yes\nremote-control:\n  control-enable: no\nzone:\n  name: cluster.local\n  zonefile: cluster.local.zone\n"
    );
    std::fs::write(dir.join("nsd.conf"), conf).unwrap();
    let child = Command::new("nsd")
        .args(["-d", "-c"])
        .arg(dir.join("nsd.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting nsd");
    Proc { child, what: "nsd" }
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut v = id.to_be_bytes().to_vec();
    v.extend_from_slice(&[0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    v.extend(podnet_dns::wire::text_to_wire(name).unwrap());
    v.extend_from_slice(&[0, 1, 0, 1]);
    v
}

/// The first A record's address in a response, if the answer is NOERROR with one.
fn answer_ip(resp: &[u8]) -> Option<[u8; 4]> {
    if resp.len() < 16 || resp[3] & 0x0F != 0 || u16::from_be_bytes([resp[6], resp[7]]) == 0 {
        return None;
    }
    resp.get(resp.len() - 4..).and_then(|s| s.try_into().ok())
}

/// Polls `addr` with a query for `name` until the answer's address is `want`
/// (or, with `want` None, until any NOERROR answer); returns the time taken.
fn poll_answer(
    addr: SocketAddr,
    name: &str,
    want: Option<[u8; 4]>,
    timeout: Duration,
) -> Option<Duration> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    let q = query(0x4242, name);
    let t0 = Instant::now();
    let mut buf = [0u8; 1500];
    while t0.elapsed() < timeout {
        let _ = sock.send_to(&q, addr);
        if let Ok(n) = sock.recv(&mut buf) {
            if let Some(ip) = answer_ip(&buf[..n]) {
                if want.is_none_or(|w| w == ip) {
                    return Some(t0.elapsed());
                }
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    None
}

struct PerfResult {
    qps: f64,
    latency_ms: f64,
    lost: f64,
}

fn dnsperf(port: u16, queries: &Path) -> PerfResult {
    let out = Command::new("dnsperf")
        .args(["-s", "127.0.0.1", "-p", &port.to_string(), "-d"])
        .arg(queries)
        .args([
            "-l",
            &RUN_SECONDS.to_string(),
            "-c",
            "4",
            "-T",
            "1",
            "-q",
            "200",
            "-Q",
            "2000000",
        ])
        .output()
        .expect("running dnsperf");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| -> f64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.trim_end_matches('%').trim_start_matches('(').parse().ok())
            .unwrap_or_else(|| panic!("dnsperf output has no {key:?}:\n{text}"))
    };
    let lost = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Queries lost:"))
        .and_then(|r| r.split('(').nth(1))
        .and_then(|p| p.trim_end_matches([')', '%']).parse().ok())
        .unwrap_or(0.0);
    PerfResult {
        qps: field("Queries per second:"),
        latency_ms: field("Average Latency (s):") * 1000.0,
        lost,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("dnsperf benchmark: run it with `cargo bench -p podnet-dns --bench dnsperf`");
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();

    // 1. QPS and latency, 1,000 services.
    let objs = services(SERVICES);
    let store_dir = root.join("store1k");
    let store = write_store(&rt, &store_dir, &objs);
    let qfile: PathBuf = root.join("queries.txt");
    let mut q = String::new();
    for i in 0..SERVICES {
        q.push_str(&format!("svc{i}.default.svc.cluster.local A\n"));
    }
    std::fs::write(&qfile, q).unwrap();
    let nsd_dir = root.join("nsd");
    std::fs::create_dir_all(&nsd_dir).unwrap();
    let (pport, nport, uport) = (free_port(), free_port(), free_port());
    let podnet = start_podnet(&store_dir, pport, 2);
    let unbatched = start_podnet_with(&store_dir, uport, 2, 1);
    let nsd = start_nsd(&nsd_dir, &objs, nport);
    let last = format!("svc{}.default.svc.cluster.local", SERVICES - 1);
    for (port, what) in [
        (pport, "podnet-dns"),
        (nport, "nsd"),
        (uport, "podnet-dns --udp-batch 1"),
    ] {
        let ok = poll_answer(
            format!("127.0.0.1:{port}").parse().unwrap(),
            &last,
            None,
            Duration::from_secs(20),
        );
        assert!(ok.is_some(), "{what} does not answer {last}");
    }
    let mut rows: Vec<(&str, Vec<PerfResult>)> = vec![
        ("podnet-dns (2 SO_REUSEPORT sockets)", vec![]),
        ("nsd (server-count 2, reuseport)", vec![]),
        ("podnet-dns (2 sockets, --udp-batch 1)", vec![]),
    ];
    let ports = [pport, nport, uport];
    for run in 0..RUNS {
        // Rotate who goes first so no one always gets a warmer machine.
        let order = [run % 3, (run + 1) % 3, (run + 2) % 3];
        for i in order {
            let port = ports[i];
            let r = dnsperf(port, &qfile);
            eprintln!(
                "run {} {}: {:.0} qps, {:.3} ms, {:.2}% lost",
                run + 1,
                rows[i].0,
                r.qps,
                r.latency_ms,
                r.lost
            );
            rows[i].1.push(r);
        }
    }
    let podnet_rss = rss_kb(podnet.child.id());
    let nsd_rss = rss_kb(nsd.child.id());
    let unbatched_rss = rss_kb(unbatched.child.id());
    drop(unbatched);

    // 2. Store event -> answer latency (1,000 services loaded).
    let paddr: SocketAddr = format!("127.0.0.1:{pport}").parse().unwrap();
    let mut lat = Vec::new();
    for i in 0..20 {
        let name = format!("new{i}");
        let ip = format!("10.99.0.{}", i + 1);
        let obj = fixtures::service_json("default", &name, &[&ip], &[]);
        let t0 = Instant::now();
        rt.block_on(store.put(&ObjectKey::new(Kind::Service, Some("default"), &name), &obj))
            .unwrap();
        let want = [10, 99, 0, i as u8 + 1];
        let seen = poll_answer(
            paddr,
            &format!("{name}.default.svc.cluster.local"),
            Some(want),
            Duration::from_secs(5),
        );
        match seen {
            Some(_) => lat.push(t0.elapsed().as_secs_f64() * 1000.0),
            None => panic!("new service {name} never answered"),
        }
    }
    drop(podnet);
    drop(nsd);

    // 3. 10,000 services: time to first answer after start, RSS.
    let big = services(BIG);
    let big_dir = root.join("store10k");
    write_store(&rt, &big_dir, &big);
    let port = free_port();
    let t0 = Instant::now();
    let p = start_podnet(&big_dir, port, 2);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let first = poll_answer(
        addr,
        &format!("svc{}.default.svc.cluster.local", BIG - 1),
        None,
        Duration::from_secs(30),
    )
    .map(|_| t0.elapsed());
    std::thread::sleep(Duration::from_millis(500));
    let big_rss = rss_kb(p.child.id());
    drop(p);
    let big_nsd_dir = root.join("nsd10k");
    std::fs::create_dir_all(&big_nsd_dir).unwrap();
    let nport = free_port();
    let t0 = Instant::now();
    let n = start_nsd(&big_nsd_dir, &big, nport);
    let nsd_first = poll_answer(
        format!("127.0.0.1:{nport}").parse().unwrap(),
        &format!("svc{}.default.svc.cluster.local", BIG - 1),
        None,
        Duration::from_secs(30),
    )
    .map(|_| t0.elapsed());
    std::thread::sleep(Duration::from_millis(500));
    let nsd_big_rss = rss_kb(n.child.id());
    drop(n);

    println!();
    println!("## dnsperf, {SERVICES} services, A queries, {RUNS} runs x {RUN_SECONDS} s (dnsperf -c 4 -q 200), median");
    println!();
    println!("| server | QPS | avg latency ms | lost % | RSS MB |");
    println!("|---|---:|---:|---:|---:|");
    let pq = median(rows[0].1.iter().map(|r| r.qps).collect());
    let nq = median(rows[1].1.iter().map(|r| r.qps).collect());
    for (i, (name, rs)) in rows.iter().enumerate() {
        let rss = [podnet_rss, nsd_rss, unbatched_rss][i];
        println!(
            "| {name} | {:.0} | {:.3} | {:.2} | {:.1} |",
            median(rs.iter().map(|r| r.qps).collect()),
            median(rs.iter().map(|r| r.latency_ms).collect()),
            median(rs.iter().map(|r| r.lost).collect()),
            rss as f64 / 1024.0
        );
    }
    println!();
    println!("podnet-dns / nsd QPS: {:.2}x (target >= 1.0x)", pq / nq);
    println!();
    println!("## {BIG} services");
    println!();
    println!("| server | first answer after start | RSS MB |");
    println!("|---|---:|---:|");
    let ms = |d: Option<Duration>| {
        d.map_or("none".to_string(), |d| {
            format!("{:.0} ms", d.as_secs_f64() * 1000.0)
        })
    };
    println!(
        "| podnet-dns | {} | {:.1} |",
        ms(first),
        big_rss as f64 / 1024.0
    );
    println!(
        "| nsd | {} | {:.1} |",
        ms(nsd_first),
        nsd_big_rss as f64 / 1024.0
    );
    println!();
    println!("targets: podnet-dns RSS <= 30 MB, first answer <= 1000 ms");
    println!();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("## store put -> new service answered (1,000 services loaded, 20 services, polled every 0.5 ms)");
    println!();
    println!("| median ms | p90 ms | max ms |");
    println!("|---:|---:|---:|");
    println!(
        "| {:.1} | {:.1} | {:.1} |",
        lat[lat.len() / 2],
        lat[lat.len() * 9 / 10],
        lat[lat.len() - 1]
    );
    println!();
    println!("target: <= 50 ms");
}
