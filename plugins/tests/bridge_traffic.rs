//! Traffic through podnet-bridge: two pods on one bridge, masquerade to an address
//! outside the pod subnet (checked by a listener there), hairpin, MAC spoof checks.

mod bridge_support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use bridge_support::{cid, pod, pod_sh, result_ip, Node};
use netns_fixtures::{skip_unless_root, Netns, Underlay};
use serde_json::json;

#[test]
fn two_pods_ping_each_other_and_hairpin_is_on() {
    skip_unless_root!();
    let node = Node::new();
    let conf = node.conf("1.1.0", "10.30.0.0/24", json!({"hairpinMode": true}));
    let (a, b) = (pod(), pod());
    let ra = node.add(&conf, &cid(), &a);
    let rb = node.add(&conf, &cid(), &b);
    let ip_b = result_ip(&rb);
    pod_sh(&a, &format!("ping -c 2 -W 2 -i 0.2 {ip_b}"));
    pod_sh(&b, &format!("ping -c 2 -W 2 -i 0.2 {}", result_ip(&ra)));
    for r in [&ra, &rb] {
        let veth = r["interfaces"][1]["name"].as_str().unwrap();
        let d = node.sh(&format!("ip -d link show {veth}"));
        assert!(d.contains("hairpin on"), "{d}");
    }
    // Without hairpinMode the port has it off.
    let plain = node.conf("1.1.0", "10.30.0.0/24", json!({}));
    let c = pod();
    let rc = node.add(&plain, &cid(), &c);
    let veth = rc["interfaces"][1]["name"].as_str().unwrap();
    assert!(node
        .sh(&format!("ip -d link show {veth}"))
        .contains("hairpin off"));
}

/// Accepts one TCP connection in `ns` on `addr` and returns the peer address it saw.
fn accept_one(ns: &Netns, addr: &'static str) -> std::thread::JoinHandle<String> {
    let listener = ns
        .enter(move || TcpListener::bind(addr))
        .expect("enter")
        .expect("bind listener");
    std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        let (mut s, peer) = listener.accept().expect("accept");
        let mut line = String::new();
        BufReader::new(s.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        s.write_all(b"ok\n").unwrap();
        peer.ip().to_string()
    })
}

#[test]
fn ip_masq_reaches_an_outside_address_with_the_source_masqueraded() {
    skip_unless_root!();
    let node = Node::new();
    let outside = Netns::new("out").unwrap();
    // The outside namespace knows nothing of the pod subnet: only a masqueraded
    // connection (source = the host's 10.91.0.1) can be answered.
    let _link = Underlay::veth(&node.host, "10.91.0.1/24", &outside, "10.91.0.2/24").unwrap();
    let conf = node.conf(
        "1.1.0",
        "10.31.0.0/24",
        json!({"isDefaultGateway": true, "ipMasq": true}),
    );
    let p = pod();
    let id = cid();
    let r = node.add(&conf, &id, &p);
    let pod_ip = result_ip(&r);
    let rules = node.ruleset();
    assert!(
        rules.contains("podnet-cni") && rules.contains(&pod_ip),
        "{rules}"
    );
    let owner = format!("podnet-test/{id}/eth0");
    assert!(rules.contains(&owner), "{rules}");

    let seen = accept_one(&outside, "10.91.0.2:7777");
    let reply = p
        .enter(|| -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(
                &"10.91.0.2:7777".parse().unwrap(),
                Duration::from_secs(5),
            )?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"hello\n")?;
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line)?;
            Ok(line)
        })
        .unwrap()
        .expect("pod connects out");
    assert_eq!(reply, "ok\n");
    assert_eq!(
        seen.join().unwrap(),
        "10.91.0.1",
        "source was not masqueraded"
    );

    // Pod-to-pod traffic in the subnet keeps its source (no masquerade inside).
    let q = pod();
    let rq = node.add(&conf, &cid(), &q);
    let seen = accept_one(&q, "0.0.0.0:7778");
    let target = format!("{}:7778", result_ip(&rq));
    p.enter(move || {
        let mut s =
            TcpStream::connect_timeout(&target.parse().unwrap(), Duration::from_secs(5)).unwrap();
        s.write_all(b"hi\n").unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
    })
    .unwrap();
    assert_eq!(seen.join().unwrap(), pod_ip);

    // CHECK sees the element, and its absence.
    let mut checked = conf.clone();
    checked["prevResult"] = r.clone();
    node.call("CHECK", &checked, &id, Some(p.path()), "eth0")
        .expect_ok("CHECK with ipMasq");
    node.sh(&format!(
        "nft delete element ip podnet-cni masq '{{ {pod_ip} }}'"
    ));
    let bad = node.call("CHECK", &checked, &id, Some(p.path()), "eth0");
    assert!(!bad.ok, "CHECK passed without the masquerade entry");
    assert!(
        bad.json["details"]
            .as_str()
            .unwrap_or_default()
            .contains("masquerade"),
        "{}",
        bad.json
    );

    // DEL succeeds with the element already gone, and leaves none.
    node.del(&conf, &id, &p);
    let rules = node.ruleset();
    assert!(!rules.contains(&owner), "{rules}");
}

#[test]
fn macspoofchk_drops_frames_with_a_foreign_source_mac() {
    skip_unless_root!();
    let node = Node::new();
    let conf = node.conf("1.1.0", "10.32.0.0/24", json!({"macspoofchk": true}));
    let (a, b) = (pod(), pod());
    let id_a = cid();
    let ra = node.add(&conf, &id_a, &a);
    let rb = node.add(&conf, &cid(), &b);
    let ip_b = result_ip(&rb);
    pod_sh(&a, &format!("ping -c 1 -W 2 {ip_b}"));
    let mut checked = conf.clone();
    checked["prevResult"] = ra.clone();
    node.call("CHECK", &checked, &id_a, Some(a.path()), "eth0")
        .expect_ok("CHECK with macspoofchk");
    let rules = node.ruleset();
    assert!(rules.contains("table bridge podnet-cni"), "{rules}");
    let veth_a = ra["interfaces"][1]["name"].as_str().unwrap();
    assert!(rules.contains(veth_a), "{rules}");
    // Forge a's MAC: its frames no longer pass the bridge.
    pod_sh(&a, "ip link set eth0 address 02:de:ad:be:ef:01");
    pod_sh(&a, "ip neigh flush all");
    let out = a.exec(&["ping", "-c", "2", "-W", "1", &ip_b]).unwrap();
    assert!(!out.status.success(), "a spoofed MAC got through");
    node.del(&conf, &id_a, &a);
    assert!(!node.ruleset().contains(veth_a));
}
