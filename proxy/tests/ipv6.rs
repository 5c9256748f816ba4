//! IPv6 and dual-stack services with real connections: ClusterIP from a pod
//! and from the node, NodePort from another node, source preserved for pod
//! traffic, hairpin, reject without endpoints, UDP, and an IPv6-only service
//! next to a dual-stack one.

mod common;

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use netns_fixtures::Netns;
use serde_json::json;

const GATEWAY6: &str = "fd00:10:244::1";
const NODE6: &str = "fd00:90::1";
const NODE2_6: &str = "fd00:90::2";

/// The underlay interface of `ns` (the one holding its 10.90.0.x address).
fn underlay_iface(ns: &Netns, ip: &str) -> String {
    let out = ns
        .sh(&format!("ip -o -4 addr show to {ip}"))
        .expect("listing underlay address");
    out.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no interface with {ip}: {out:?}"))
        .to_string()
}

/// IPv6 next to the IPv4 set-up of `Cluster`: pod network fd00:10:244::/64 on
/// cbr0, underlay fd00:90::/64, node2 routing pods and VIPs through the node.
fn add_ipv6(c: &Cluster) {
    let ul = underlay_iface(&c.node, NODE_IP);
    c.node
        .sh(&format!(
            "sysctl -qw net.ipv6.conf.all.forwarding=1 && \
             ip -6 addr add {GATEWAY6}/64 dev cbr0 nodad && \
             ip -6 addr add {NODE6}/64 dev {ul} nodad && \
             ip -6 route add default via {NODE2_6}"
        ))
        .expect("node IPv6");
    let ul2 = underlay_iface(&c.node2, NODE2_IP);
    c.node2
        .sh(&format!(
            "ip -6 addr add {NODE2_6}/64 dev {ul2} nodad && \
             ip -6 route add fd00:10:244::/64 via {NODE6} && \
             ip -6 route add fd00:10:96::/112 via {NODE6}"
        ))
        .expect("node2 IPv6");
}

/// Gives pod `name` the IPv6 address `ip6` and serves TCP 8080 / UDP 5353 on
/// it, answering like the IPv4 servers of `common` ("<name> <peer ip>").
fn add_pod_ipv6(c: &Cluster, name: &str, ip6: &str) {
    let pod = c.pod(name);
    pod.sh(&format!(
        "ip -6 addr add {ip6}/64 dev eth0 nodad && ip -6 route add default via {GATEWAY6}"
    ))
    .expect("pod IPv6 address");
    let tcp_addr: SocketAddr = format!("[{ip6}]:8080").parse().unwrap();
    let udp_addr: SocketAddr = format!("[{ip6}]:5353").parse().unwrap();
    let listener = pod
        .enter(move || TcpListener::bind(tcp_addr))
        .unwrap()
        .expect("bind IPv6 tcp");
    let udp = pod
        .enter(move || UdpSocket::bind(udp_addr))
        .unwrap()
        .expect("bind IPv6 udp");
    let tcp_name = name.to_string();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let peer = s
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let _ = writeln!(s, "{tcp_name} {peer}");
        }
    });
    let udp_name = name.to_string();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((_, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(udp_name.as_bytes(), from);
        }
    });
}

fn count(answers: &[std::io::Result<String>], pod: &str) -> usize {
    answers
        .iter()
        .filter(|r| r.as_deref().ok() == Some(pod))
        .count()
}

#[test]
fn ipv6_and_dual_stack_services_carry_connections() {
    netns_fixtures::skip_unless_root!();
    let mut c = Cluster::new();
    add_ipv6(&c);
    for (name, v4, v6) in [
        ("pod-a", "10.244.0.2", "fd00:10:244::2"),
        ("pod-b", "10.244.0.3", "fd00:10:244::3"),
        ("client", "10.244.0.10", "fd00:10:244::10"),
    ] {
        c.add_pod(name, v4);
        add_pod_ipv6(&c, name, v6);
    }
    let ports = json!([{"name": "p", "port": 80, "targetPort": 8080, "nodePort": 30080},
                       {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"}]);
    let slice_ports = json!([{"name": "p", "port": 8080, "protocol": "TCP"},
                             {"name": "dns", "port": 5353, "protocol": "UDP"}]);
    c.put(service_with(
        "web",
        &["10.96.0.10", "fd00:10:96::10"],
        "RequireDualStack",
        ports,
    ));
    c.put(slice(
        "web",
        8080,
        "TCP",
        &[("10.244.0.2", "node-a"), ("10.244.0.3", "node-b")],
    ));
    c.put(slice_with(
        "web",
        "v6",
        slice_ports,
        &[("fd00:10:244::2", "node-a"), ("fd00:10:244::3", "node-b")],
    ));
    // IPv6-only, endpoints only on pod-b.
    c.put(service_with(
        "only6",
        &["fd00:10:96::20"],
        "SingleStack",
        json!([{"name": "p", "port": 81, "targetPort": 8080}]),
    ));
    c.put(slice_with(
        "only6",
        "v6",
        json!([{"name": "p", "port": 8080, "protocol": "TCP"}]),
        &[("fd00:10:244::3", "node-b")],
    ));
    // IPv6 service without endpoints.
    c.put(service_with(
        "empty6",
        &["fd00:10:96::30"],
        "SingleStack",
        json!([{"name": "p", "port": 80}]),
    ));
    c.start_proxy(&[
        "--cluster-cidr",
        "fd00:10:244::/56",
        "--service-cidr",
        "fd00:10:96::/112",
    ]);
    c.wait_listing("map ip6", "service-ips", "fd00:10:96::20 . tcp . 81", true);

    // The node must know its pods' IPv6 neighbours before the first DNATed
    // packet: br_netfilter re-bridges a DNATed frame whose target is on the
    // same bridge through a neighbour lookup that drops it while the entry
    // is unresolved (a kernel property, not the proxy's; on a real node the
    // kubelet's probes resolve these entries long before traffic arrives).
    c.node
        .sh("ping -6 -c1 -W1 fd00:10:244::2 && ping -6 -c1 -W1 fd00:10:244::3 && ping -6 -c1 -W1 fd00:10:244::10")
        .expect("node reaches its pods over IPv6");

    // ClusterIP over IPv6 from a pod, spread over both endpoints.
    let answers = fetch_many(c.pod("client"), "[fd00:10:96::10]:80", 200);
    let failures = answers.iter().filter(|a| a.is_err()).count();
    assert_eq!(failures, 0, "{:?}", answers.iter().find(|a| a.is_err()));
    let (a, b) = (count(&answers, "pod-a"), count(&answers, "pod-b"));
    assert_eq!(a + b, 200);
    assert!(
        (60..=140).contains(&a),
        "uneven distribution: pod-a {a}, pod-b {b}"
    );
    // The same service over IPv4 still works (dual-stack).
    let line = fetch(c.pod("client"), "10.96.0.10:80").expect("IPv4 ClusterIP");
    assert!(line.starts_with("pod-"), "{line}");

    // Pod traffic keeps its IPv6 source.
    let line = fetch(c.pod("client"), "[fd00:10:96::10]:80").unwrap();
    assert!(line.ends_with(" fd00:10:244::10"), "{line}");

    // The IPv6-only service reaches its single endpoint.
    let line = fetch(c.pod("client"), "[fd00:10:96::20]:81").expect("IPv6-only service");
    assert!(line.starts_with("pod-b "), "{line}");

    // From the node itself, and the NodePort over IPv6 from the other node
    // (masqueraded: eTP Cluster).
    let line = fetch(&c.node, "[fd00:10:96::10]:80").expect("IPv6 ClusterIP from the node");
    assert!(line.starts_with("pod-"), "{line}");
    let line = fetch(&c.node2, &format!("[{NODE6}]:30080")).expect("IPv6 NodePort from node2");
    assert!(
        line.starts_with("pod-") && !line.ends_with(NODE2_6),
        "{line}"
    );

    // UDP over the IPv6 VIP.
    let vip: SocketAddr = "[fd00:10:96::10]:53".parse().unwrap();
    let answer = c
        .pod("client")
        .enter(move || -> std::io::Result<String> {
            let s = UdpSocket::bind("[::]:0")?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.send_to(b"q", vip)?;
            let mut buf = [0u8; 64];
            let (n, _) = s.recv_from(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        })
        .unwrap()
        .expect("UDP over the IPv6 VIP");
    assert!(answer.starts_with("pod-"), "{answer}");

    // No endpoints: rejected at once, not a timeout.
    let t = Instant::now();
    let err = fetch(c.pod("client"), "[fd00:10:96::30]:80").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    assert!(t.elapsed() < Duration::from_secs(1));

    // Hairpin over IPv6: pod-a reaching itself is masqueraded to the gateway.
    let line = fetch_until(c.pod("pod-a"), "[fd00:10:96::10]:80", |r| {
        r.as_ref().is_ok_and(|l| l.starts_with("pod-a"))
    })
    .unwrap();
    assert_eq!(line, format!("pod-a {GATEWAY6}"));
}
