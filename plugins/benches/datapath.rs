//! Cross-node data path benchmark (namespaces only, bounded; prints tables).
//!
//! Pod-to-pod across two nodes on one switch, in one run:
//! - underlay: node to node directly over the switch (the ceiling);
//! - podnet host-gw and podnet VXLAN: agents + pods made by the real CNI binaries;
//! - flannel-style VXLAN built by hand with `ip`/`bridge` (cni0 bridge,
//!   flannel.1 with nolearning, permanent neighbour + FDB + onlink route),
//!   the reference for VXLAN small-packet pps.
//!
//! Metrics: iperf3 TCP bulk (Gbit/s), iperf3 UDP 64-byte datagrams received
//! per second, ping RTT. Then the control plane: 20 VXLAN nodes started
//! together until every node routes to every other, and a 21st node joining.
//!
//! Run: `cargo bench -p podnet-plugins --bench datapath` (as root).
//! `PODNET_BENCH_SECS` sets the iperf3 duration per run (default 2; each metric is the median of 3 rounds that measure every path in turn).

#[path = "../tests/multinode_common/mod.rs"]
mod multinode_common;

use std::time::{Duration, Instant};

use multinode_common::{Backend, Lab, Opts};
use netns_fixtures::cluster::{Cluster, ClusterOptions};
use netns_fixtures::{wait_until, ChildGuard, Netns};
use serde_json::Value;

struct Row {
    name: &'static str,
    tcp_gbps: f64,
    udp_kpps: f64,
    rtt_us: f64,
}

/// One path under test, kept alive for the whole run: its namespaces, the
/// two endpoints and the server address.
struct Path {
    name: &'static str,
    /// Owns the namespaces (dropped last).
    _keep: Box<dyn std::any::Any>,
    client: Netns,
    /// Kept so the server namespace lives as long as the path.
    _server: Netns,
    ip: String,
    _srv: ChildGuard,
}

fn secs() -> u32 {
    std::env::var("PODNET_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
        .clamp(1, 30)
}

fn iperf_server(ns: &Netns) -> ChildGuard {
    let mut c = std::process::Command::new("iperf3");
    // --logfile: Netns::spawn keeps the program's arguments, not its stdio.
    c.args(["-s", "-p", "5201", "--logfile", "/dev/null"]);
    let g = ns.spawn(c).expect("starting iperf3 -s");
    wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
        ns.sh("ss -Hltn 'sport = :5201' | grep -q .").is_ok()
    });
    g
}

fn json_of(ns: &Netns, cmd: &str) -> Value {
    let out = ns.sh(cmd).unwrap_or_else(|e| panic!("{cmd}: {e}"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{cmd}: bad JSON {e}: {out}"))
}

fn tcp_gbps(p: &Path) -> f64 {
    let tcp = json_of(
        &p.client,
        &format!("iperf3 -c {} -p 5201 -t {} -J", p.ip, secs()),
    );
    tcp["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e9
}

fn udp_kpps(p: &Path) -> f64 {
    let t = secs();
    let udp = json_of(
        &p.client,
        &format!("iperf3 -c {} -p 5201 -u -l 64 -b 0 -t {t} -J", p.ip),
    );
    let sum = &udp["end"]["sum"];
    let packets = sum["packets"].as_f64().unwrap_or(0.0);
    let lost = sum["lost_packets"].as_f64().unwrap_or(0.0);
    let seconds = sum["seconds"].as_f64().unwrap_or(f64::from(t)).max(0.001);
    (packets - lost).max(0.0) / seconds / 1e3
}

fn rtt_us(p: &Path) -> f64 {
    let ping = p
        .client
        .sh(&format!("ping -c 300 -i 0.002 -q {}", p.ip))
        .unwrap_or_default();
    ping.lines()
        .find(|l| l.contains("min/avg/max"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|ms| ms * 1000.0)
        .unwrap_or(f64::NAN)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Measures all paths in rounds (each round: every path once), so that the
/// load other processes put on the machine hits every path alike; reports
/// the median of the rounds.
fn measure_all(paths: &[Path], rounds: usize) -> Vec<Row> {
    for p in paths {
        // Warm-up: neighbour resolution and first-packet costs.
        let _ = p
            .client
            .sh(&format!("ping -c3 -i0.05 -W1 {} >/dev/null", p.ip));
    }
    let mut tcp = vec![Vec::new(); paths.len()];
    let mut udp = vec![Vec::new(); paths.len()];
    let mut rtt = vec![Vec::new(); paths.len()];
    for _ in 0..rounds {
        for (i, p) in paths.iter().enumerate() {
            tcp[i].push(tcp_gbps(p));
            udp[i].push(udp_kpps(p));
            rtt[i].push(rtt_us(p));
        }
    }
    paths
        .iter()
        .enumerate()
        .map(|(i, p)| Row {
            name: p.name,
            tcp_gbps: median(&mut tcp[i]),
            udp_kpps: median(&mut udp[i]),
            rtt_us: median(&mut rtt[i]),
        })
        .collect()
}

fn podnet(backend: Backend) -> Path {
    let mut lab = Lab::new(Opts {
        nodes: 2,
        backend,
        etcd: false,
        ipv6: false,
    });
    lab.default_config(false);
    lab.start_all();
    lab.add_pod(0);
    lab.add_pod(1);
    lab.assert_all_reach_eventually();
    let name = match backend {
        Backend::HostGw => "podnet host-gw (pod→pod)",
        Backend::Vxlan => "podnet VXLAN (pod→pod)",
    };
    let server = lab.pods.pop().unwrap();
    let client = lab.pods.pop().unwrap();
    let srv = iperf_server(&server.ns);
    Path {
        name,
        ip: server.v4.clone(),
        client: client.ns,
        _server: server.ns,
        _srv: srv,
        _keep: Box::new(lab),
    }
}

fn two_nodes() -> Cluster {
    Cluster::new(
        2,
        ClusterOptions {
            ipv6: false,
            mtu: 1500,
        },
    )
    .unwrap()
}

fn underlay() -> Path {
    let mut c = two_nodes();
    let ip = c.nodes[1].ip.clone();
    // The endpoints are the node namespaces themselves: take them out of the
    // cluster (the switch stays in `_keep`).
    let server = c.nodes.pop().unwrap().ns;
    let client = c.nodes.pop().unwrap().ns;
    let srv = iperf_server(&server);
    Path {
        name: "underlay (node→node)",
        ip,
        client,
        _server: server,
        _srv: srv,
        _keep: Box::new(c),
    }
}

/// flannel's VXLAN data path, built with iproute2 exactly as flanneld and
/// its bridge delegate leave it.
fn flannel_by_hand() -> Path {
    let c = two_nodes();
    let macs = ["02:fa:00:00:00:01", "02:fa:00:00:00:02"];
    let mut pods = Vec::new();
    for (i, n) in c.nodes.iter().enumerate() {
        let k = i + 1;
        n.ns.sh(&format!(
            "ip link add cni0 type bridge && ip link set cni0 mtu 1450 up && ip addr add 10.245.{k}.1/24 dev cni0 \
             && ip link add flannel.1 type vxlan id 1 local {ip} dev eth0 dstport 4789 nolearning \
             && ip link set flannel.1 mtu 1450 address {mac} up && ip addr add 10.245.{k}.0/32 dev flannel.1",
            ip = n.ip,
            mac = macs[i]
        ))
        .unwrap();
        let p = Netns::new("fpod").unwrap();
        n.ns.sh(&format!(
            "ip link add veth0 mtu 1450 type veth peer name eth0 netns {} && ip link set veth0 master cni0 up",
            p.name()
        ))
        .unwrap();
        p.sh(&format!(
            "ip link set eth0 mtu 1450 up && ip addr add 10.245.{k}.2/24 dev eth0 && ip route add default via 10.245.{k}.1"
        ))
        .unwrap();
        pods.push(p);
    }
    for (i, n) in c.nodes.iter().enumerate() {
        for (j, m) in c.nodes.iter().enumerate() {
            if i == j {
                continue;
            }
            let r = j + 1;
            n.ns.sh(&format!(
                "ip neigh replace 10.245.{r}.0 lladdr {mac} dev flannel.1 nud permanent \
                 && bridge fdb append {mac} dev flannel.1 dst {ip} \
                 && ip route replace 10.245.{r}.0/24 via 10.245.{r}.0 dev flannel.1 onlink",
                mac = macs[j],
                ip = m.ip
            ))
            .unwrap();
        }
    }
    let server = pods.pop().unwrap();
    let client = pods.pop().unwrap();
    let srv = iperf_server(&server);
    Path {
        name: "flannel-style VXLAN by hand (pod→pod)",
        ip: "10.245.2.2".into(),
        client,
        _server: server,
        _srv: srv,
        _keep: Box::new(c),
    }
}

fn count_routes(lab: &Lab, i: usize) -> usize {
    lab.cluster.nodes[i]
        .ns
        .sh("ip route show proto 112 | wc -l")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn control_plane(nodes: usize) -> Vec<(String, Duration)> {
    let mut out = Vec::new();
    let mut lab = Lab::new(Opts {
        nodes,
        backend: Backend::Vxlan,
        etcd: false,
        ipv6: false,
    });
    lab.default_config(false);
    let t0 = Instant::now();
    lab.start_all();
    for i in 0..nodes {
        let ok = wait_until(Duration::from_secs(60), Duration::from_millis(5), || {
            count_routes(&lab, i) == nodes - 1
        });
        assert!(ok, "node {i} never got all routes\n{}", lab.logs());
    }
    out.push((
        format!("{nodes} agents started together → every node routes to every other"),
        t0.elapsed(),
    ));
    for n in 0..nodes {
        lab.add_pod(n);
    }
    let first_pod = lab.pods.len();
    let i = lab.cluster.add_node().unwrap();
    let t0 = Instant::now();
    lab.start_agent(i);
    lab.wait_lease(i);
    let subnet = lab.node_subnet_v4(i);
    for n in 0..nodes {
        let ok = wait_until(Duration::from_secs(30), Duration::from_millis(2), || {
            lab.entries(n).contains(&subnet)
        });
        assert!(ok, "node {n} never got the new node's route");
    }
    let programmed = t0.elapsed();
    let p = lab.add_pod(i);
    for q in 0..first_pod {
        let ok = wait_until(Duration::from_secs(30), Duration::from_millis(5), || {
            lab.reach(p, q, false).is_ok()
        });
        assert!(ok, "new pod never reached pod {q}");
    }
    out.push((
        format!(
            "node {} joins: agent start → its subnet routed on all {nodes} others",
            nodes + 1
        ),
        programmed,
    ));
    out.push((
        format!(
            "node {} joins: agent start → its new pod (CNI ADD included) reaches pods on all {nodes} nodes (ping + TCP each)",
            nodes + 1
        ),
        t0.elapsed(),
    ));
    out
}

fn main() {
    if !netns_fixtures::require_root() {
        return;
    }
    let paths = vec![
        underlay(),
        podnet(Backend::HostGw),
        podnet(Backend::Vxlan),
        flannel_by_hand(),
    ];
    let rows = measure_all(&paths, 3);
    drop(paths);
    let base = &rows[0];
    let flannel = &rows[3];
    println!(
        "\nPod-to-pod across two nodes (iperf3 {}s per test, 1 stream; UDP 64-byte datagrams, unlimited rate; ping 300 × 2 ms; median of 3 interleaved rounds)\n",
        secs()
    );
    println!(
        "| path | TCP Gbit/s | × underlay | UDP 64 B kpps rx | × underlay | × flannel | ping RTT µs |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.0} |",
            r.name,
            r.tcp_gbps,
            r.tcp_gbps / base.tcp_gbps,
            r.udp_kpps,
            r.udp_kpps / base.udp_kpps,
            r.udp_kpps / flannel.udp_kpps,
            r.rtt_us
        );
    }
    let cp = control_plane(20);
    println!("\nControl plane (VXLAN, dir store, resync 1 s)\n");
    println!("| event | time ms |");
    println!("|---|---:|");
    for (what, d) in cp {
        println!("| {what} | {:.0} |", d.as_secs_f64() * 1000.0);
    }
}
