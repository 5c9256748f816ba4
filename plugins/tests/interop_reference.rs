//! Interop with Debian's reference plugins (containernetworking-plugins): podnet-bridge
//! with `host-local` as its IPAM, and `portmap`, `tuning`, `bandwidth` chained after it
//! accepting its result as their prevResult.

mod bridge_support;

use std::path::Path;

use bridge_support::{cid, pod, pod_sh, result_ip, Node, REFERENCE_DIR};
use netns_fixtures::skip_unless_root;
use serde_json::{json, Value};

fn reference(name: &str) -> std::path::PathBuf {
    Path::new(REFERENCE_DIR).join(name)
}

#[test]
fn podnet_bridge_works_with_host_local_ipam() {
    skip_unless_root!();
    let node = Node::new();
    let conf = node.conf_host_local("1.0.0", "10.50.0.0/24", json!({"isDefaultGateway": true}));
    let p = pod();
    let id = cid();
    let r = node.add(&conf, &id, &p);
    let ip = result_ip(&r);
    assert!(ip.starts_with("10.50.0."), "{r}");
    assert!(
        node.reservations().contains(&ip),
        "{:?}",
        node.reservations()
    );
    assert!(pod_sh(&p, "ip route show default").contains("via 10.50.0.1"));
    let mut c = conf.clone();
    c["prevResult"] = r;
    node.call("CHECK", &c, &id, Some(p.path()), "eth0")
        .expect_ok("CHECK with host-local");
    node.del(&c, &id, &p);
    assert!(!node.reservations().contains(&ip));
    node.del(&c, &id, &p);
}

/// A chained plugin's config: its own keys, the chain's name/version, our result.
fn chained(kind: &str, prev: &Value, extra: Value) -> Value {
    let mut c = json!({
        "cniVersion": "1.0.0",
        "name": "podnet-test",
        "type": kind,
        "prevResult": prev,
    });
    bridge_support::merge(&mut c, extra);
    c
}

#[test]
fn portmap_tuning_and_bandwidth_accept_our_result() {
    skip_unless_root!();
    let node = Node::new();
    let conf = node.conf("1.0.0", "10.51.0.0/24", json!({"isDefaultGateway": true}));
    let p = pod();
    let id = cid();
    let ours = node.add(&conf, &id, &p);
    let host_veth = ours["interfaces"][1]["name"].as_str().unwrap().to_string();

    let chain = [
        (
            "portmap",
            json!({"capabilities": {"portMappings": true},
                   "runtimeConfig": {"portMappings": [
                       {"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]}}),
        ),
        (
            "tuning",
            json!({"sysctl": {"net.ipv4.conf.eth0.arp_accept": "1"}}),
        ),
        (
            "bandwidth",
            json!({"ingressRate": 8_000_000, "ingressBurst": 1_000_000,
                   "egressRate": 8_000_000, "egressBurst": 1_000_000}),
        ),
    ];
    let mut prev = ours.clone();
    let mut confs = Vec::new();
    for (kind, extra) in &chain {
        let c = chained(kind, &prev, extra.clone());
        let out = node
            .call_bin(&reference(kind), "ADD", &c, &id, Some(p.path()), "eth0")
            .expect_ok(&format!("{kind} ADD after podnet-bridge"));
        // Each passes our interfaces and IPs on.
        assert_eq!(out["ips"], ours["ips"], "{kind}: {out}");
        assert_eq!(
            out["interfaces"][2]["sandbox"],
            ours["interfaces"][2]["sandbox"]
        );
        confs.push((kind, c));
        prev = out;
    }
    assert!(
        node.sh("iptables -t nat -S").contains("18080"),
        "portmap rule missing"
    );
    assert_eq!(
        pod_sh(&p, "cat /proc/sys/net/ipv4/conf/eth0/arp_accept").trim(),
        "1"
    );
    let qdisc = node.sh(&format!("tc qdisc show dev {host_veth}"));
    assert!(
        qdisc.contains("tbf"),
        "bandwidth found no host veth in our result: {qdisc}"
    );

    // CHECK along the chain with the final result, then DEL in reverse order.
    for (kind, c) in &confs {
        if **kind == "portmap" {
            // portmap 1.1.1's CHECK also looks for an IPv6 DNAT chain that its ADD
            // never creates for an IPv4-only pod (it fails the same after the reference
            // bridge plugin).
            continue;
        }
        let mut c = c.clone();
        c["prevResult"] = prev.clone();
        node.call_bin(&reference(kind), "CHECK", &c, &id, Some(p.path()), "eth0")
            .expect_ok(&format!("{kind} CHECK"));
    }
    let mut ours_conf = conf.clone();
    ours_conf["prevResult"] = prev.clone();
    node.call("CHECK", &ours_conf, &id, Some(p.path()), "eth0")
        .expect_ok("podnet-bridge CHECK with the chain's result");
    for (kind, c) in confs.iter().rev() {
        let mut c = c.clone();
        c["prevResult"] = prev.clone();
        node.call_bin(&reference(kind), "DEL", &c, &id, Some(p.path()), "eth0")
            .expect_ok(&format!("{kind} DEL"));
    }
    node.del(&ours_conf, &id, &p);
    assert!(!node.sh("iptables -t nat -S").contains("18080"));
    assert!(node.host_veths().is_empty());
}
