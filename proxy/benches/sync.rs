//! `cargo bench -p podnet-proxy --bench sync`: sync cost of podnet-proxy vs
//! the same services in kube-proxy's nftables layout loaded with `nft -f`,
//! data-plane connect latency with 10 vs 10,000 services, and proxy RSS at
//! 10k services. Everything runs inside throw-away network namespaces.
//! Needs root; prints tables.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use netns_fixtures::Netns;
use podnet_proxy::diff;
use podnet_proxy::metrics::Metrics;
use podnet_proxy::model::Family;
use podnet_proxy::plan::Layout;
use podnet_proxy::render;
use podnet_proxy::sync::{Proxier, ProxyConfig};
use podnet_state::compact;
use podnet_state::object::SERVICE_NAME_LABEL;
use podnet_state::{Change, ChangeType, Kind, NamespacedName, ObjectKey, Snapshot};

const NODEPORTS: usize = 1000;

fn vip(i: usize) -> String {
    format!("10.96.{}.{}", i / 250, i % 250 + 1)
}

fn ep_ip(i: usize, j: usize) -> String {
    let n = i * 2 + j;
    format!("10.245.{}.{}", n / 250, n % 250 + 1)
}

fn service(i: usize) -> Service {
    let np = i < NODEPORTS;
    Service {
        metadata: ObjectMeta {
            namespace: Some("bench".into()),
            name: Some(format!("svc-{i}")),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(vip(i)),
            cluster_ips: Some(vec![vip(i)]),
            type_: Some(if np { "NodePort" } else { "ClusterIP" }.into()),
            ports: Some(vec![ServicePort {
                name: Some("p".into()),
                port: 80,
                protocol: Some("TCP".into()),
                node_port: np.then_some(30000 + i as i32),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

fn slice(i: usize, ips: &[String], node: &str) -> EndpointSlice {
    EndpointSlice {
        address_type: "IPv4".into(),
        metadata: ObjectMeta {
            namespace: Some("bench".into()),
            name: Some(format!("svc-{i}-1")),
            labels: Some([(SERVICE_NAME_LABEL.to_string(), format!("svc-{i}"))].into()),
            ..Default::default()
        },
        ports: Some(vec![EndpointPort {
            name: Some("p".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        endpoints: ips
            .iter()
            .map(|ip| Endpoint {
                addresses: vec![ip.clone()],
                node_name: Some(node.into()),
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                ..Default::default()
            })
            .collect(),
    }
}

/// The compact form the informer keeps of `slice(..)`.
fn compact_slice(i: usize, ips: &[String], node: &str) -> Arc<compact::EndpointSlice> {
    Arc::new(compact::EndpointSlice::from_k8s(slice(i, ips, node)).unwrap())
}

fn snapshot(n: usize) -> Snapshot {
    let mut s = Snapshot {
        synced: true,
        ..Default::default()
    };
    for i in 0..n {
        s.services.insert(
            NamespacedName::new("bench", &format!("svc-{i}")),
            Arc::new(compact::Service::from_k8s(service(i)).unwrap()),
        );
        s.endpoint_slices.insert(
            NamespacedName::new("bench", &format!("svc-{i}-1")),
            compact_slice(i, &[ep_ip(i, 0), ep_ip(i, 1)], "node-b"),
        );
    }
    s
}

/// Replaces service 0's second endpoint with a new address (generation g).
fn bump_endpoint(s: &mut Snapshot, g: usize) {
    let ips = [ep_ip(0, 0), format!("10.246.{}.{}", g / 250, g % 250 + 1)];
    s.endpoint_slices.insert(
        NamespacedName::new("bench", "svc-0-1"),
        compact_slice(0, &ips, "node-b"),
    );
}

fn config(layout: Layout) -> ProxyConfig {
    ProxyConfig {
        node_name: "node-a".into(),
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        service_cidrs: vec![],
        nodeport_addresses: vec![],
        masquerade_all: false,
        layout,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1.0 {
        format!("{ms:.3} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// Runs `nft -f file` in `ns` and returns how long it took, or why it failed.
fn nft_load(ns: &Netns, script: &str, dir: &std::path::Path) -> Result<Duration, String> {
    let path = dir.join("ruleset.nft");
    std::fs::write(&path, script).unwrap();
    let t = Instant::now();
    let out = ns.exec(&["nft", "-f", path.to_str().unwrap()]).unwrap();
    let took = t.elapsed();
    if out.status.success() {
        Ok(took)
    } else {
        Err(format!(
            "failed after {} ({}{})",
            ms(took),
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .map(|l| format!(": {l}"))
                .unwrap_or_default()
        ))
    }
}

fn show(r: &Result<Duration, String>) -> String {
    match r {
        Ok(d) => ms(*d),
        Err(e) => e.clone(),
    }
}

struct Row {
    n: usize,
    podnet_full: Duration,
    podnet_update: Duration,
    kube_full: Result<Duration, String>,
    kube_update: Result<Duration, String>,
    elements: usize,
    chains_podnet: usize,
    chains_kube: usize,
}

fn sync_row(n: usize, ns: &Netns, dir: &std::path::Path, podnet_only: bool) -> Row {
    let mut snap = snapshot(n);
    // podnet-proxy: full sync from scratch (a fresh proxier), then single updates.
    let (podnet_full, podnet_update, elements, chains_podnet) = ns
        .enter(|| {
            let mut p = Proxier::new(config(Layout::Podnet), Arc::new(Metrics::new())).unwrap();
            let t = Instant::now();
            let r = p.sync(&snap, None).unwrap();
            let full = t.elapsed();
            eprintln!("  {n}: {r}");
            let mut ups = Vec::new();
            let mut s2 = snap.clone();
            let changed = [Change {
                key: ObjectKey::new(Kind::EndpointSlice, Some("bench"), "svc-0-1"),
                change: ChangeType::Modified,
            }];
            for g in 0..9 {
                bump_endpoint(&mut s2, g);
                let t = Instant::now();
                let u = p.sync(&s2, Some(&changed)).unwrap();
                ups.push(t.elapsed());
                assert!(!u.full && u.elements_added > 0, "{u}");
            }
            (full, median(ups), r.elements, r.chains)
        })
        .unwrap();
    ns.exec(&["nft", "delete", "table", "ip", "podnet"])
        .unwrap();
    ns.exec(&["nft", "delete", "table", "ip6", "podnet"])
        .unwrap();
    if podnet_only {
        return Row {
            n,
            podnet_full,
            podnet_update,
            kube_full: Err("skipped".into()),
            kube_update: Err("skipped".into()),
            elements,
            chains_podnet,
            chains_kube: 0,
        };
    }

    // kube-proxy layout via nft -f: full replacement, then the same updates as diffs.
    let kp = config(Layout::KubeProxy);
    let (_, plans) = podnet_proxy::sync::plans(&kp, &snap);
    let plan = &plans[&Family::V4];
    let chains_kube = plan.chains.len();
    let full_script = render::diff_script(Family::V4, &diff::full(plan), &plan.comment);
    let kube_full = nft_load(ns, &full_script, dir);
    if kube_full.is_err() {
        return Row {
            n,
            podnet_full,
            podnet_update,
            kube_full,
            kube_update: Err("not measured".into()),
            elements,
            chains_podnet,
            chains_kube,
        };
    }
    let mut ups = Vec::new();
    let mut prev = plan.clone();
    for g in 0..9 {
        bump_endpoint(&mut snap, g);
        let (_, plans) = podnet_proxy::sync::plans(&kp, &snap);
        let next = plans[&Family::V4].clone();
        let script =
            render::diff_script(Family::V4, &diff::diff(Some(&prev), &next), &next.comment);
        ups.push(nft_load(ns, &script, dir).expect("kube-proxy layout update"));
        prev = next;
    }
    ns.exec(&["nft", "delete", "table", "ip", "podnet"])
        .unwrap();
    Row {
        n,
        podnet_full,
        podnet_update,
        kube_full,
        kube_update: Ok(median(ups)),
        elements,
        chains_podnet,
        chains_kube,
    }
}

/// Mean connect + first byte latency from a client pod to a VIP whose
/// endpoint is a server pod, with `n` services installed.
fn connect_latency(n: usize) -> Duration {
    let node = Netns::new("pxbn").unwrap();
    let server = Netns::new("pxbs").unwrap();
    let client = Netns::new("pxbc").unwrap();
    node.sh("sysctl -qw net.ipv4.ip_forward=1 && ip link add cbr0 type bridge && ip addr add 10.244.0.1/24 dev cbr0 && ip link set cbr0 up")
        .unwrap();
    for (i, (pod, ip)) in [(&server, "10.244.0.2"), (&client, "10.244.0.3")]
        .into_iter()
        .enumerate()
    {
        node.sh(&format!(
            "ip link add vb{i} type veth peer name eth0 netns {} && ip link set vb{i} master cbr0 up",
            pod.name()
        ))
        .unwrap();
        pod.sh(&format!("ip addr add {ip}/24 dev eth0 && ip link set eth0 up && ip route add default via 10.244.0.1"))
            .unwrap();
    }
    let listener = server
        .enter(|| TcpListener::bind("0.0.0.0:8080").unwrap())
        .unwrap();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            use std::io::Write;
            let _ = s.write_all(b"x");
        }
    });
    // n services; the measured one (svc-0) points at the server pod.
    let mut snap = snapshot(n);
    snap.endpoint_slices.insert(
        NamespacedName::new("bench", "svc-0-1"),
        compact_slice(0, &["10.244.0.2".to_string()], "node-a"),
    );
    node.enter(|| {
        Proxier::new(config(Layout::Podnet), Arc::new(Metrics::new()))
            .unwrap()
            .sync(&snap, None)
            .unwrap()
    })
    .unwrap();
    let addr: SocketAddr = format!("{}:80", vip(0)).parse().unwrap();
    client
        .enter(move || {
            let once = || {
                let t = Instant::now();
                let mut s = TcpStream::connect(addr).unwrap();
                let mut b = [0u8; 1];
                s.read_exact(&mut b).unwrap();
                t.elapsed()
            };
            for _ in 0..200 {
                once();
            }
            // Mean of the fastest 90% of 3000 connections (drops scheduler outliers).
            let mut v: Vec<Duration> = (0..3000).map(|_| once()).collect();
            v.sort();
            v.truncate(2700);
            v.iter().sum::<Duration>() / v.len() as u32
        })
        .unwrap()
}

fn vm_rss_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// RSS of the real podnet-proxy binary programming 10k services from a dir store.
fn proxy_rss(n: usize, dir: &std::path::Path) -> (u64, u64, Duration) {
    let store_dir = dir.join("store");
    let url = format!("dir://{}", store_dir.display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let t = Instant::now();
    rt.block_on(async {
        let store = podnet_state::open_store(&url).await.unwrap();
        for i in 0..n {
            let key = ObjectKey::new(Kind::Service, Some("bench"), &format!("svc-{i}"));
            store
                .put(&key, &serde_json::to_value(service(i)).unwrap())
                .await
                .unwrap();
            let key = ObjectKey::new(Kind::EndpointSlice, Some("bench"), &format!("svc-{i}-1"));
            let sl = slice(i, &[ep_ip(i, 0), ep_ip(i, 1)], "node-b");
            store
                .put(&key, &serde_json::to_value(sl).unwrap())
                .await
                .unwrap();
        }
    });
    let fill = t.elapsed();
    let ns = Netns::new("pxbr").unwrap();
    let log = dir.join("proxy.log");
    // A command prefix that keeps the PID (it must exec the proxy), e.g.
    // `env LD_PRELOAD=/usr/lib/heaptrack/libheaptrack_preload.so DUMP_HEAPTRACK_OUTPUT=/tmp/raw`
    // (then `heaptrack_interpret </tmp/raw | gzip >x.gz; heaptrack_print x.gz`).
    let wrap = std::env::var("PODNET_BENCH_PROXY_WRAP").unwrap_or_default();
    let script = format!(
        "exec {wrap} {} --store {url} --node-name node-a --cluster-cidr 10.244.0.0/16 2>{}",
        env!("CARGO_BIN_EXE_podnet-proxy"),
        log.display()
    );
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", &script]);
    let mut child = ns.spawn(cmd).unwrap();
    let ok =
        netns_fixtures::wait_until(Duration::from_secs(120), Duration::from_millis(50), || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("full sync")
        });
    assert!(
        ok,
        "proxy did not sync: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    std::thread::sleep(Duration::from_millis(500));
    let pid = child.id();
    let (rss, hwm) = (vm_rss_kb(pid, "VmRSS:"), vm_rss_kb(pid, "VmHWM:"));
    // SIGTERM first: the proxy exits cleanly (and a profiler gets to finish).
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    netns_fixtures::wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        matches!(child.child_mut().try_wait(), Ok(Some(_)))
    });
    child.kill();
    (rss, hwm, fill)
}

fn main() {
    if !netns_fixtures::require_root() {
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--sizes 10000,30000` and `--podnet-only` for quicker runs while tuning.
    let sizes: Vec<usize> = match args.iter().position(|a| a == "--sizes") {
        Some(i) => args[i + 1].split(',').map(|s| s.parse().unwrap()).collect(),
        None if quick => vec![1000],
        None => vec![1000, 10_000, 30_000],
    };
    let podnet_only = args.iter().any(|a| a == "--podnet-only");
    // `--skip-sync`: only the latency and RSS parts.
    let sizes = if args.iter().any(|a| a == "--skip-sync") {
        Vec::new()
    } else {
        sizes
    };
    let dir = tempfile::tempdir().unwrap();
    let ns = Netns::new("pxb").unwrap();

    println!("\nSync: N services x 2 endpoints (+{NODEPORTS} NodePorts), one transaction each");
    println!(
        "| services | podnet full | podnet 1-endpoint update | kube-proxy layout full (nft -f) | kube-proxy layout update (nft -f) | elements | chains podnet / kube-proxy |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for &n in &sizes {
        let r = sync_row(n, &ns, dir.path(), podnet_only);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} / {} |",
            r.n,
            ms(r.podnet_full),
            ms(r.podnet_update),
            show(&r.kube_full),
            show(&r.kube_update),
            r.elements,
            r.chains_podnet,
            r.chains_kube
        );
    }

    if podnet_only {
        return;
    }
    let few = connect_latency(10);
    let many = connect_latency(if quick { 1000 } else { 10_000 });
    println!(
        "\nConnect latency to a VIP (client pod -> VIP -> server pod, mean of fastest 90% of 3000)"
    );
    println!(
        "| 10 services | {} services | ratio |",
        if quick { 1000 } else { 10_000 }
    );
    println!("|---:|---:|---:|");
    println!(
        "| {:.1} µs | {:.1} µs | {:.3} |",
        few.as_secs_f64() * 1e6,
        many.as_secs_f64() * 1e6,
        many.as_secs_f64() / few.as_secs_f64()
    );

    let n = if quick { 1000 } else { 10_000 };
    let (rss, hwm, fill) = proxy_rss(n, dir.path());
    println!("\npodnet-proxy process with {n} services x 2 endpoints from a dir store (store filled in {fill:.1?})");
    println!("| RSS | peak RSS |");
    println!("|---:|---:|");
    println!(
        "| {:.1} MB | {:.1} MB |",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
}
