//! ClusterIP / NodePort / reject / hairpin / bad objects, with real
//! connections inside namespaces.

mod common;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[test]
fn cluster_ip_nodeport_reject_hairpin_and_bad_objects() {
    netns_fixtures::skip_unless_root!();
    let mut c = Cluster::new();
    c.add_pod("pod-a", "10.244.0.2");
    c.add_pod("pod-b", "10.244.0.3");
    c.add_pod("client", "10.244.0.10");
    c.put(service(
        "web",
        "10.96.0.10",
        json!([{"name": "p", "port": 80, "targetPort": 8080, "nodePort": 30080}]),
    ));
    c.put(slice(
        "web",
        8080,
        "TCP",
        &[("10.244.0.2", "node-a"), ("10.244.0.3", "node-b")],
    ));
    c.put(service(
        "empty",
        "10.96.0.11",
        json!([{"name": "p", "port": 80}]),
    ));
    // Bad objects: port 0, a ClusterIP outside --service-cidr, an unknown protocol.
    c.put(service(
        "zero",
        "10.96.0.12",
        json!([{"name": "p", "port": 0}]),
    ));
    c.put(service(
        "outside",
        "192.168.99.1",
        json!([{"name": "p", "port": 80}]),
    ));
    c.put(service(
        "weird",
        "10.96.0.13",
        json!([{"name": "p", "port": 80, "protocol": "ICMP"}, {"name": "q", "port": 81}]),
    ));
    c.start_proxy(&[]);
    c.wait_map("service-ips", "10.96.0.10 . tcp . 80", true);

    // ClusterIP from a client pod, spread over both endpoints.
    let answers = fetch_many(c.pod("client"), "10.96.0.10:80", 200);
    let failures = answers.iter().filter(|a| a.is_err()).count();
    assert_eq!(failures, 0, "{:?}", answers.iter().find(|a| a.is_err()));
    let a = answers
        .iter()
        .filter(|r| r.as_deref().ok() == Some("pod-a"))
        .count();
    let b = answers
        .iter()
        .filter(|r| r.as_deref().ok() == Some("pod-b"))
        .count();
    assert_eq!(a + b, 200);
    assert!(
        (60..=140).contains(&a),
        "uneven distribution: pod-a {a}, pod-b {b}"
    );

    // Pod traffic keeps its source address.
    let line = fetch_until(c.pod("client"), "10.96.0.10:80", |r| r.is_ok()).unwrap();
    assert!(line.ends_with(" 10.244.0.10"), "{line}");

    // From the node itself (nat output), masqueraded because it is not pod traffic.
    let line = fetch(&c.node, "10.96.0.10:80").expect("ClusterIP from the node");
    assert!(line.starts_with("pod-"), "{line}");

    // NodePort from the other node: masqueraded (eTP Cluster).
    let line = fetch(&c.node2, &format!("{NODE_IP}:30080")).expect("NodePort from node2");
    assert!(
        line.starts_with("pod-") && !line.ends_with(NODE2_IP),
        "{line}"
    );

    // A service without endpoints is rejected, not blackholed.
    let t = Instant::now();
    let err = fetch(c.pod("client"), "10.96.0.11:80").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    assert!(t.elapsed() < Duration::from_secs(1));
    let err = fetch(&c.node, "10.96.0.11:80").unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::ConnectionRefused,
        "from the node: {err}"
    );

    // Hairpin: pod-a reaching itself through the VIP is masqueraded (it sees
    // the gateway as peer, so its reply goes back through the node).
    let line = fetch_until(c.pod("pod-a"), "10.96.0.10:80", |r| {
        r.as_ref().is_ok_and(|l| l.starts_with("pod-a"))
    })
    .unwrap();
    assert_eq!(line, format!("pod-a {GATEWAY}"));

    // Bad objects are skipped with a log line, the rest is programmed.
    let log = c.proxy_log();
    // (The informer already drops objects that fail Kubernetes validation,
    // like port 0 or protocol ICMP; the proxy drops what is invalid for it.)
    for needle in ["default/zero", "outside the service CIDR", "ICMP"] {
        assert!(log.contains(needle), "no log line with {needle:?}:\n{log}");
    }
    let ips = c.node.sh("nft list map ip podnet service-ips").unwrap();
    assert!(
        !ips.contains("192.168.99.1") && !ips.contains("10.96.0.12"),
        "{ips}"
    );
    assert!(!ips.contains("10.96.0.13"), "{ips}");

    // The table reads like documentation: named, commented objects.
    let table = c.node.sh("nft list table ip podnet").unwrap();
    assert!(
        table.contains("comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\""),
        "{table}"
    );
}
