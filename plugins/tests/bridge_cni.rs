//! podnet-bridge through its binary, as a runtime calls it: ADD results per cniVersion,
//! CHECK, DEL cleanup and idempotency, DEL after the netns is gone, and bad input each
//! with its spec code and nothing left behind.

mod bridge_support;

use bridge_support::{cid, pod, pod_ipv4, pod_sh, result_ip, Node};
use netns_fixtures::skip_unless_root;
use serde_json::json;
use std::time::Duration;

const SUBNET: &str = "10.22.0.0/24";

#[test]
fn add_check_del_in_every_version() {
    skip_unless_root!();
    let node = Node::new();
    for version in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let conf = node.conf(version, SUBNET, json!({"isDefaultGateway": true}));
        let p = pod();
        let id = cid();
        let r = node.add(&conf, &id, &p);

        assert_eq!(r["cniVersion"], version, "{r}");
        let ifs = r["interfaces"].as_array().expect("interfaces");
        assert_eq!(ifs.len(), 3, "{r}");
        assert_eq!(ifs[0]["name"], "cni0");
        let host_veth = ifs[1]["name"].as_str().unwrap().to_string();
        assert!(
            host_veth.starts_with("veth") && host_veth.len() == 12,
            "{host_veth}"
        );
        assert!(ifs[1].get("sandbox").is_none());
        assert_eq!(ifs[2]["name"], "eth0");
        assert_eq!(ifs[2]["sandbox"], p.path().display().to_string());
        for i in ifs {
            assert_eq!(i["mac"].as_str().unwrap().len(), 17, "{i}");
        }
        let ip0 = &r["ips"][0];
        assert_eq!(ip0["interface"], 2);
        assert_eq!(ip0["gateway"], "10.22.0.1");
        if version.starts_with("0.") {
            assert_eq!(ip0["version"], "4", "{version} results carry ips[].version");
        } else {
            assert!(ip0.get("version").is_none(), "{version}: {r}");
        }
        assert!(r["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|rt| rt["dst"] == "0.0.0.0/0" && rt["gw"] == "10.22.0.1"));

        // The kernel agrees with the result.
        let addr = ip0["address"].as_str().unwrap();
        assert_eq!(pod_ipv4(&p, "eth0"), vec![addr.to_string()]);
        assert!(pod_sh(&p, "ip route show default").contains("via 10.22.0.1 dev eth0"));
        assert!(pod_sh(&p, "ip -o link show eth0").contains(ifs[2]["mac"].as_str().unwrap()));
        assert!(node
            .sh("ip -o -4 addr show dev cni0")
            .contains("10.22.0.1/24"));
        assert!(node
            .sh(&format!("ip -o link show {host_veth}"))
            .contains("master cni0"));
        assert_eq!(node.sh("cat /proc/sys/net/ipv4/ip_forward").trim(), "1");
        assert!(node.reservations().contains(&result_ip(&r)));

        if version != "0.3.0" && version != "0.3.1" {
            let mut c = conf.clone();
            c["prevResult"] = r.clone();
            node.call("CHECK", &c, &id, Some(p.path()), "eth0")
                .expect_ok("CHECK");
            // CHECK notices a removed address.
            pod_sh(&p, &format!("ip addr del {addr} dev eth0"));
            let bad = node.call("CHECK", &c, &id, Some(p.path()), "eth0");
            assert!(!bad.ok, "CHECK passed without the address: {}", bad.json);
        }

        let mut c = conf.clone();
        if version != "0.3.0" && version != "0.3.1" {
            c["prevResult"] = r.clone();
        }
        node.del(&c, &id, &p);
        assert!(!node.host_veths().contains(&host_veth));
        assert!(pod_sh(&p, "ip -o link")
            .lines()
            .all(|l| !l.contains("eth0")));
        assert!(!node.reservations().contains(&result_ip(&r)), "{version}");
        // A second DEL succeeds.
        node.del(&c, &id, &p);
    }
}

#[test]
fn del_after_the_netns_is_gone_releases_the_address() {
    skip_unless_root!();
    let node = Node::new();
    let conf = node.conf("1.0.0", SUBNET, json!({}));
    let id = cid();
    let p = pod();
    let path = p.path().to_path_buf();
    let r = node.add(&conf, &id, &p);
    let ip = result_ip(&r);
    assert!(node.reservations().contains(&ip));
    drop(p); // the runtime tore the sandbox down first
    node.call("DEL", &conf, &id, Some(&path), "eth0")
        .expect_ok("DEL with a vanished netns");
    assert!(node.reservations().is_empty());
    // The kernel destroys a dead namespace's links (and their veth peers) asynchronously.
    assert!(
        netns_fixtures::wait_until(Duration::from_secs(5), Duration::from_millis(20), || node
            .host_veths()
            .is_empty()),
        "host veth outlived the pod namespace: {:?}",
        node.host_veths()
    );
    // And without CNI_NETNS at all.
    node.call("DEL", &conf, &id, None, "eth0")
        .expect_ok("DEL without CNI_NETNS");
}

/// Everything a failed ADD could leave behind on the host.
fn host_state(node: &Node) -> (Vec<String>, String, Vec<String>, String) {
    // Global addresses only: link-local ones come and go with the kernel's addrconf.
    let addrs = node.sh("ip -o addr show scope global");
    let nft = node.ruleset();
    (node.host_veths(), addrs, node.reservations(), nft)
}

#[test]
fn bad_input_fails_with_its_code_and_leaves_nothing() {
    skip_unless_root!();
    let node = Node::new();
    let good = node.conf("1.1.0", SUBNET, json!({"ipMasq": true}));
    let p = pod();
    let before = host_state(&node);

    let check = |what: &str, reply: bridge_support::Reply, code: u64| {
        assert_eq!(
            reply.code(),
            Some(code),
            "{what}: {} (stderr {})",
            reply.json,
            reply.stderr
        );
        assert!(
            reply.json["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
        assert_eq!(host_state(&node), before, "{what} left something behind");
    };

    // Malformed JSON (raw string, not an object).
    check(
        "malformed JSON",
        node.call("ADD", &json!("{not json"), &cid(), Some(p.path()), "eth0"),
        6,
    );
    let mut v = good.clone();
    v["cniVersion"] = json!("9.9.9");
    check(
        "unknown cniVersion",
        node.call("ADD", &v, &cid(), Some(p.path()), "eth0"),
        1,
    );
    check(
        "missing CNI_CONTAINERID",
        node.call("ADD", &good, "", Some(p.path()), "eth0"),
        4,
    );
    check(
        "missing CNI_NETNS",
        node.call("ADD", &good, &cid(), None, "eth0"),
        4,
    );
    check(
        "ifname too long",
        node.call("ADD", &good, &cid(), Some(p.path()), "eth0123456789abc"),
        4,
    );
    check(
        "netns that does not exist",
        node.call(
            "ADD",
            &good,
            &cid(),
            Some(std::path::Path::new("/run/netns/pn-does-not-exist")),
            "eth0",
        ),
        3,
    );
    let mut v = good.clone();
    v["ipam"]["type"] = json!("no-such-ipam");
    check(
        "IPAM not on CNI_PATH",
        node.call("ADD", &v, &cid(), Some(p.path()), "eth0"),
        7,
    );

    // Interface name already present in the pod.
    pod_sh(&p, "ip link add eth0 type veth peer name eth0peer");
    check(
        "ifname already present",
        node.call("ADD", &good, &cid(), Some(p.path()), "eth0"),
        4,
    );
    pod_sh(&p, "ip link del eth0");

    // Subnet exhausted: a /30 has one address besides the gateway.
    let tiny = node.conf("1.1.0", "10.23.0.0/30", json!({"ipMasq": true}));
    let first = pod();
    node.call("STATUS", &tiny, "", None, "")
        .expect_ok("STATUS with free addresses");
    let r = node.add(&tiny, &cid(), &first);
    assert_eq!(result_ip(&r), "10.23.0.2");
    // STATUS is the IPAM's: no address left is code 50.
    assert_eq!(node.call("STATUS", &tiny, "", None, "").code(), Some(50));
    let before = host_state(&node);
    let reply = node.call("ADD", &tiny, &cid(), Some(p.path()), "eth0");
    assert!(!reply.ok);
    assert_eq!(reply.code(), Some(999), "exhausted: {}", reply.json);
    assert_eq!(
        host_state(&node),
        before,
        "exhausted subnet left something behind"
    );
    assert!(pod_sh(&p, "ip -o link")
        .lines()
        .all(|l| !l.contains("eth0")));
}

#[test]
fn runtime_mac_mtu_and_promisc_are_applied() {
    skip_unless_root!();
    let node = Node::new();
    let conf = node.conf(
        "1.1.0",
        SUBNET,
        json!({"mtu": 1400, "promiscMode": true, "runtimeConfig": {"mac": "0a:58:0a:16:00:63"}}),
    );
    let p = pod();
    let id = cid();
    let r = node.add(&conf, &id, &p);
    assert_eq!(r["interfaces"][2]["mac"], "0a:58:0a:16:00:63");
    let link = pod_sh(&p, "ip -o link show eth0");
    assert!(
        link.contains("mtu 1400") && link.contains("0a:58:0a:16:00:63"),
        "{link}"
    );
    let br = node.sh("ip -o link show cni0");
    assert!(br.contains("mtu 1400") && br.contains("PROMISC"), "{br}");
    let mut c = conf.clone();
    c["prevResult"] = r;
    node.call("CHECK", &c, &id, Some(p.path()), "eth0")
        .expect_ok("CHECK");
    node.del(&c, &id, &p);
}

#[test]
fn gateway_conflict_needs_force_address() {
    skip_unless_root!();
    let node = Node::new();
    node.sh(
        "ip link add cni0 type bridge && ip addr add 10.99.0.1/24 dev cni0 && ip link set cni0 up",
    );
    let before = host_state(&node);
    let conf = node.conf("1.0.0", SUBNET, json!({}));
    let p = pod();
    let reply = node.call("ADD", &conf, &cid(), Some(p.path()), "eth0");
    assert_eq!(reply.code(), Some(7), "{}", reply.json);
    assert_eq!(
        host_state(&node),
        before,
        "a refused ADD left something behind"
    );

    let forced = node.conf("1.0.0", SUBNET, json!({"forceAddress": true}));
    node.add(&forced, &cid(), &p);
    let a = node.sh("ip -o -4 addr show dev cni0");
    assert!(
        a.contains("10.22.0.1/24") && !a.contains("10.99.0.1"),
        "{a}"
    );
}

#[test]
fn dual_stack_addresses_routes_gateways_and_masquerade() {
    skip_unless_root!();
    let node = Node::new();
    let mut conf = node.conf(
        "1.1.0",
        SUBNET,
        json!({"isDefaultGateway": true, "ipMasq": true}),
    );
    let ipam = conf["ipam"].as_object_mut().unwrap();
    ipam.remove("subnet");
    ipam.insert(
        "ranges".into(),
        json!([[{"subnet": "10.24.0.0/24"}], [{"subnet": "fd00:24::/64"}]]),
    );
    let p = pod();
    let id = cid();
    let r = node.add(&conf, &id, &p);
    let ips = r["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 2, "{r}");
    let v6 = ips
        .iter()
        .find(|i| i["address"].as_str().unwrap().contains(':'))
        .expect("an IPv6 address");
    assert_eq!(v6["gateway"], "fd00:24::1");
    assert_eq!(v6["interface"], 2);
    let v6_addr = v6["address"].as_str().unwrap();
    assert!(pod_sh(&p, "ip -o -6 addr show dev eth0 scope global").contains(v6_addr));
    assert!(pod_sh(&p, "ip -6 route show default").contains("via fd00:24::1 dev eth0"));
    assert!(pod_sh(&p, "ip route show default").contains("via 10.24.0.1 dev eth0"));
    assert!(node
        .sh("ip -o -6 addr show dev cni0")
        .contains("fd00:24::1/64"));
    assert_eq!(
        node.sh("cat /proc/sys/net/ipv6/conf/all/forwarding").trim(),
        "1"
    );
    let rules = node.ruleset();
    assert!(
        rules.contains("table ip6 podnet-cni")
            && rules.contains(v6_addr.split('/').next().unwrap()),
        "{rules}"
    );
    let mut c = conf.clone();
    c["prevResult"] = r.clone();
    node.call("CHECK", &c, &id, Some(p.path()), "eth0")
        .expect_ok("dual-stack CHECK");
    node.del(&c, &id, &p);
    assert!(!node.ruleset().contains(&format!("podnet-test/{id}/eth0")));
    assert!(node.reservations().is_empty(), "{:?}", node.reservations());
}
