//! CNI benchmark: podnet-bridge + podnet-ipam against Debian's reference bridge +
//! host-local (containernetworking-plugins), side by side, same namespaces and config
//! shape. Prints a table; asserts nothing about speed.
//!
//! `cargo bench -p podnet-plugins --bench cni` (root: it creates network namespaces).
//! `PODNET_BENCH_PODS` sets the pods per sequential scenario (default 60).
//!
//! Plugins are spawned from a thread that has joined the node's namespace (children
//! inherit it), so neither side pays for `ip netns exec`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netns_fixtures::{require_root, unique_name, Netns};
use serde_json::{json, Value};

const SUBNET: &str = "10.100.0.0/16";
const RESERVATIONS: usize = 5_000;
const PARALLEL: usize = 100;
const IPAM_SAMPLES: usize = 30;

struct Side {
    name: &'static str,
    bridge: PathBuf,
    ipam: &'static str,
    cni_path: String,
}

fn sides() -> [Side; 2] {
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_podnet-bridge"));
    let dir = ours.parent().expect("bin dir").display().to_string();
    [
        Side {
            name: "podnet",
            bridge: ours,
            ipam: "podnet-ipam",
            cni_path: dir,
        },
        Side {
            name: "reference",
            bridge: PathBuf::from("/usr/lib/cni/bridge"),
            ipam: "host-local",
            cni_path: "/usr/lib/cni".into(),
        },
    ]
}

fn conf(side: &Side, data: &Path, masq: bool) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "bench",
        "type": side.bridge.file_name().unwrap().to_str().unwrap(),
        "bridge": "cni0",
        "isGateway": true,
        "ipMasq": masq,
        "ipam": {"type": side.ipam, "subnet": SUBNET, "dataDir": data.display().to_string()},
    })
}

/// Starts `binary` (from the calling thread's namespace) with the CNI env.
fn start(binary: &Path, side: &Side, cmd: &str, conf: &Value, id: &str, netns: &Path) -> Child {
    let mut child = Command::new(binary)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &side.cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", binary.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    child
}

fn finish(child: Child, what: &str) {
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{what} failed: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn timed(binary: &Path, side: &Side, cmd: &str, conf: &Value, id: &str, netns: &Path) -> Duration {
    let t = Instant::now();
    finish(
        start(binary, side, cmd, conf, id, netns),
        &format!("{} {cmd}", side.name),
    );
    t.elapsed()
}

fn pct(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i].as_secs_f64() * 1e3
}

/// Sequential ADD then DEL of `n` pods; returns (ADD samples, DEL samples).
fn add_del(side: &Side, n: usize, masq: bool) -> (Vec<Duration>, Vec<Duration>) {
    let host = Netns::new("bh").expect("host netns");
    let data = tempfile::tempdir().unwrap();
    let c = conf(side, data.path(), masq);
    let pods: Vec<Netns> = (0..n)
        .map(|_| Netns::new("bp").expect("pod netns"))
        .collect();
    let ids: Vec<String> = (0..n).map(|_| unique_name("b")).collect();
    host.enter(|| {
        let adds: Vec<Duration> = pods
            .iter()
            .zip(&ids)
            .map(|(p, id)| timed(&side.bridge, side, "ADD", &c, id, p.path()))
            .collect();
        let dels: Vec<Duration> = pods
            .iter()
            .zip(&ids)
            .map(|(p, id)| timed(&side.bridge, side, "DEL", &c, id, p.path()))
            .collect();
        (adds, dels)
    })
    .expect("enter host")
}

/// Wall time of `PARALLEL` concurrent ADDs (then parallel DELs, untimed).
fn parallel(side: &Side) -> Duration {
    let host = Netns::new("bh").expect("host netns");
    let data = tempfile::tempdir().unwrap();
    let c = conf(side, data.path(), false);
    let pods: Vec<Netns> = (0..PARALLEL)
        .map(|_| Netns::new("bp").expect("pod netns"))
        .collect();
    let ids: Vec<String> = (0..PARALLEL).map(|_| unique_name("b")).collect();
    host.enter(|| {
        let t = Instant::now();
        let children: Vec<Child> = pods
            .iter()
            .zip(&ids)
            .map(|(p, id)| start(&side.bridge, side, "ADD", &c, id, p.path()))
            .collect();
        for ch in children {
            finish(ch, &format!("{} parallel ADD", side.name));
        }
        let wall = t.elapsed();
        let children: Vec<Child> = pods
            .iter()
            .zip(&ids)
            .map(|(p, id)| start(&side.bridge, side, "DEL", &c, id, p.path()))
            .collect();
        for ch in children {
            finish(ch, &format!("{} parallel DEL", side.name));
        }
        wall
    })
    .expect("enter host")
}

/// Fills the IPAM store with `n` reservations of other containers.
fn prefill(side: &Side, data: &Path, c: &Value, n: usize) {
    if n == 0 {
        return;
    }
    match side.ipam {
        "host-local" => {
            // host-local's disk format: one file per address holding "id\r\nifname",
            // and the round-robin cursor of range set 0.
            let dir = data.join("bench");
            std::fs::create_dir_all(&dir).unwrap();
            let base = u32::from("10.100.0.2".parse::<std::net::Ipv4Addr>().unwrap());
            let mut last = base;
            for i in 0..n as u32 {
                let ip = std::net::Ipv4Addr::from(base + i);
                std::fs::write(dir.join(ip.to_string()), format!("fill{i}\r\neth0")).unwrap();
                last = base + i;
            }
            std::fs::write(
                dir.join("last_reserved_ip.0"),
                std::net::Ipv4Addr::from(last).to_string(),
            )
            .unwrap();
        }
        _ => {
            // podnet-ipam's own code path, in-process: n real ADDs.
            let bytes = c.to_string();
            for i in 0..n {
                let id = format!("fill{i}");
                let vars = [
                    ("CNI_COMMAND", "ADD".to_string()),
                    ("CNI_CONTAINERID", id),
                    ("CNI_NETNS", "/proc/self/ns/net".to_string()),
                    ("CNI_IFNAME", "eth0".to_string()),
                    ("CNI_PATH", side.cni_path.clone()),
                ];
                let mut out = Vec::new();
                let code = podnet_plugins::cni::run_with(
                    &podnet_plugins::ipam::IpamPlugin,
                    |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()),
                    &mut bytes.as_bytes(),
                    &mut out,
                );
                assert_eq!(code, 0, "prefill ADD: {}", String::from_utf8_lossy(&out));
            }
        }
    }
}

/// p50 of the IPAM plugin's own ADD (exec'd directly) with `existing` reservations.
fn ipam_add(side: &Side, existing: usize) -> f64 {
    let data = tempfile::tempdir().unwrap();
    let c = conf(side, data.path(), false);
    prefill(side, data.path(), &c, existing);
    let binary = Path::new(&side.cni_path).join(side.ipam);
    // IPAM touches only its files, but runs in a node namespace like everything here.
    let host = Netns::new("bh").expect("host netns");
    let mut samples: Vec<Duration> = host
        .enter(|| {
            (0..IPAM_SAMPLES)
                .map(|i| timed(&binary, side, "ADD", &c, &format!("s{i}"), host.path()))
                .collect()
        })
        .expect("enter host");
    pct(&mut samples, 0.5)
}

fn row(label: &str, ours: f64, reference: f64) {
    println!(
        "{label:<44} {ours:>10.2} {reference:>11.2} {:>8.2}x",
        ours / reference
    );
}

fn main() {
    if !require_root() {
        return;
    }
    let n: usize = std::env::var("PODNET_BENCH_PODS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let [ours, reference] = sides();
    assert!(
        reference.bridge.exists(),
        "{} missing: install containernetworking-plugins",
        reference.bridge.display()
    );

    let plain: Vec<_> = [&ours, &reference]
        .iter()
        .map(|s| add_del(s, n, false))
        .collect();
    let masq: Vec<_> = [&ours, &reference]
        .iter()
        .map(|s| add_del(s, n, true))
        .collect();
    let ipam_small: Vec<f64> = [&ours, &reference]
        .iter()
        .map(|s| ipam_add(s, 100))
        .collect();
    let ipam_big: Vec<f64> = [&ours, &reference]
        .iter()
        .map(|s| ipam_add(s, RESERVATIONS))
        .collect();
    let par: Vec<f64> = [&ours, &reference]
        .iter()
        .map(|s| parallel(s).as_secs_f64() * 1e3)
        .collect();

    println!();
    println!(
        "podnet-bridge + podnet-ipam vs reference bridge + host-local; {n} pods per sequential scenario"
    );
    println!(
        "{:<44} {:>10} {:>11} {:>9}",
        "metric (ms)", "podnet", "reference", "ratio"
    );
    let (mut a0, mut d0) = plain[0].clone();
    let (mut a1, mut d1) = plain[1].clone();
    row("ADD p50", pct(&mut a0, 0.5), pct(&mut a1, 0.5));
    row("ADD p90", pct(&mut a0, 0.9), pct(&mut a1, 0.9));
    row("DEL p50", pct(&mut d0, 0.5), pct(&mut d1, 0.5));
    row("DEL p90", pct(&mut d0, 0.9), pct(&mut d1, 0.9));
    let (mut a0, mut d0) = masq[0].clone();
    let (mut a1, mut d1) = masq[1].clone();
    row("ADD p50, ipMasq", pct(&mut a0, 0.5), pct(&mut a1, 0.5));
    row("ADD p90, ipMasq", pct(&mut a0, 0.9), pct(&mut a1, 0.9));
    row("DEL p50, ipMasq", pct(&mut d0, 0.5), pct(&mut d1, 0.5));
    let sum = |a: &[Duration], d: &[Duration]| -> Vec<Duration> {
        a.iter().zip(d).map(|(x, y)| *x + *y).collect()
    };
    row(
        "ADD+DEL p50, ipMasq",
        pct(&mut sum(&masq[0].0, &masq[0].1), 0.5),
        pct(&mut sum(&masq[1].0, &masq[1].1), 0.5),
    );
    row(
        "IPAM ADD p50, 100 reservations",
        ipam_small[0],
        ipam_small[1],
    );
    row(
        &format!("IPAM ADD p50, {RESERVATIONS} reservations"),
        ipam_big[0],
        ipam_big[1],
    );
    row(&format!("{PARALLEL} parallel ADDs, wall"), par[0], par[1]);
}
