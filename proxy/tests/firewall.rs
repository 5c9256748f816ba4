//! loadBalancerSourceRanges with real connections: node2 reaches a
//! LoadBalancer IP from an allowed and a disallowed source address, and the
//! ranges change while the proxy runs (partial syncs).

mod common;

use common::*;
use podnet_state::Kind;
use serde_json::{json, Value};

const LB_IP: &str = "198.51.100.1";
/// node2's second address, outside the first ranges.
const NODE2_IP_B: &str = "10.90.0.3";

fn lb_service(ranges: &[&str]) -> Value {
    let mut s = service(
        "lb",
        "10.96.0.50",
        json!([{"name": "p", "port": 80, "targetPort": 8080, "nodePort": 30050}]),
    );
    s["spec"]["type"] = json!("LoadBalancer");
    s["spec"]["loadBalancerSourceRanges"] = json!(ranges);
    s["status"] = json!({"loadBalancer": {"ingress": [{"ip": LB_IP}]}});
    s
}

/// node2 sends to `dst` from `src` (a route with a preferred source).
fn route_from(c: &Cluster, dst: &str, src: &str) {
    c.node2
        .sh(&format!(
            "ip route replace {dst}/32 via {NODE_IP} src {src}"
        ))
        .expect("node2 route");
}

#[test]
fn source_ranges_allow_listed_sources_only_and_follow_changes() {
    netns_fixtures::skip_unless_root!();
    let mut c = Cluster::new();
    c.add_pod("pod-a", "10.244.0.2");
    c.node2
        .sh(&format!(
            "ip addr add {NODE2_IP_B}/24 dev $(ip -o -4 addr show to {NODE2_IP} | awk '{{print $2}}')"
        ))
        .expect("node2 second address");
    c.put(lb_service(&[&format!("{NODE2_IP}/32"), "2001:db8::/32"]));
    c.put(slice("lb", 8080, "TCP", &[("10.244.0.2", "node-a")]));
    c.start_proxy(&[]);
    c.wait_map("service-ips", &format!("{LB_IP} . tcp . 80"), true);
    let lb = format!("{LB_IP}:80");

    route_from(&c, LB_IP, NODE2_IP);
    let line = fetch_until(&c.node2, &lb, |r| r.is_ok()).expect("allowed source");
    assert!(line.starts_with("pod-a"), "{line}");
    route_from(&c, LB_IP, NODE2_IP_B);
    let err = fetch(&c.node2, &lb).expect_err("a source outside the ranges is dropped");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    // Only the LB IP is filtered: the NodePort answers that source.
    route_from(&c, NODE_IP, NODE2_IP_B);
    let line = fetch(&c.node2, &format!("{NODE_IP}:30050")).expect("NodePort is not filtered");
    assert!(line.starts_with("pod-a"), "{line}");

    // The node's own traffic is filtered too (filter-output): with the LB IP
    // as a local address the node connects from it, which only a range
    // holding the node's IP allows.
    c.node
        .sh(&format!("ip addr add {LB_IP}/32 dev lo"))
        .expect("LB IP on the node");
    let err = fetch(&c.node, &lb).expect_err("node IP outside the ranges");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    // A range holds the node's IP, but the proxy does not know it yet (no
    // Node object): the LB IP source stays dropped.
    c.put(lb_service(&[&format!("{NODE2_IP}/32"), "10.90.0.0/31"]));
    c.wait_listing("set ip", "firewall-allow", "10.90.0.0/31", true);
    let err = fetch(&c.node, &lb).expect_err("the LB IP is no allowed source yet");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    c.put(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-a"},
        "status": {"addresses": [{"type": "InternalIP", "address": NODE_IP}]}
    }));
    let line = fetch_until(&c.node, &lb, |r| r.is_ok()).expect("node allowed");
    assert!(line.starts_with("pod-a"), "{line}");
    c.node
        .sh(&format!("ip addr del {LB_IP}/32 dev lo"))
        .unwrap();

    // The ranges change: now only the second address may connect.
    c.put(lb_service(&[&format!("{NODE2_IP_B}/32")]));
    fetch_until(&c.node2, &lb, |r| r.is_ok()).expect("newly allowed source");
    route_from(&c, LB_IP, NODE2_IP);
    fetch_until(&c.node2, &lb, |r| r.is_err()).expect_err("no longer allowed");

    // Without ranges everyone may connect again, and the sets are empty.
    c.put(lb_service(&[]));
    fetch_until(&c.node2, &lb, |r| r.is_ok()).expect("no ranges: open");
    let sets = c
        .node
        .sh("nft list set ip podnet firewall-ips; nft list set ip podnet firewall-allow")
        .unwrap();
    assert!(!sets.contains(LB_IP), "{sets}");

    // Deleting the service with ranges leaves no firewall elements behind.
    c.put(lb_service(&[&format!("{NODE2_IP_B}/32")]));
    c.node2.sh(&format!("ip route del {LB_IP}/32")).unwrap();
    c.wait_listing("set ip", "firewall-allow", NODE2_IP_B, true);
    c.delete(Kind::Service, "lb");
    c.wait_map("service-ips", &format!("{LB_IP} . tcp . 80"), false);
    let sets = c
        .node
        .sh("nft list set ip podnet firewall-ips; nft list set ip podnet firewall-allow")
        .unwrap();
    assert!(!sets.contains(LB_IP), "{sets}");
    let log = c.proxy_log();
    assert!(!log.contains("ERROR"), "{log}");
}
