//! Changes take effect: endpoints added/removed, port changed, service
//! deleted; established connections to endpoints that stay are untouched;
//! UDP flows to removed endpoints (via ClusterIP and NodePort) are cleared
//! from conntrack.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use podnet_state::Kind;
use serde_json::json;

#[test]
fn endpoint_and_service_changes_take_effect() {
    netns_fixtures::skip_unless_root!();
    let mut c = Cluster::new();
    c.add_pod("pod-a", "10.244.0.2");
    c.add_pod("pod-b", "10.244.0.3");
    c.add_pod("client", "10.244.0.10");
    c.put(service(
        "web",
        "10.96.0.30",
        json!([{"name": "p", "port": 80}]),
    ));
    c.put(slice("web", 8080, "TCP", &[("10.244.0.2", "node-a")]));
    c.start_proxy(&[]);
    c.wait_map("service-ips", "10.96.0.30 . tcp . 80", true);
    assert_eq!(
        fetch(c.pod("client"), "10.96.0.30:80").unwrap(),
        "pod-a 10.244.0.10"
    );

    // A long-lived connection to pod-a.
    let addr: SocketAddr = "10.96.0.30:80".parse().unwrap();
    let conn = c
        .pod("client")
        .enter(move || {
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s
        })
        .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut greeting = String::new();
    reader.read_line(&mut greeting).unwrap();
    assert!(greeting.starts_with("pod-a"));

    // Endpoint added: pod-b shows up.
    c.put(slice(
        "web",
        8080,
        "TCP",
        &[("10.244.0.2", "node-a"), ("10.244.0.3", "node-b")],
    ));
    let r = fetch_until(c.pod("client"), "10.96.0.30:80", |r| {
        r.as_ref().is_ok_and(|l| l.starts_with("pod-b"))
    });
    assert!(r.as_ref().is_ok_and(|l| l.starts_with("pod-b")), "{r:?}");

    // Endpoint removed (pod-b again only): all traffic goes to pod-b...
    c.put(slice("web", 8080, "TCP", &[("10.244.0.3", "node-b")]));
    c.wait_map("service-ips", "goto pick-cluster-1", true);
    let answers = fetch_many(c.pod("client"), "10.96.0.30:80", 20);
    assert!(
        answers.iter().all(|a| a.as_deref().ok() == Some("pod-b")),
        "{answers:?}"
    );
    // ...and the established connection to pod-a (still running) is untouched.
    let mut w = conn.try_clone().unwrap();
    writeln!(w, "still there").unwrap();
    let mut echo = String::new();
    reader.read_line(&mut echo).unwrap();
    assert_eq!(echo, "still there\n");

    // Port changed 80 -> 81.
    c.put(service(
        "web",
        "10.96.0.30",
        json!([{"name": "p", "port": 81}]),
    ));
    c.wait_map("service-ips", "10.96.0.30 . tcp . 81", true);
    c.wait_map("service-ips", "10.96.0.30 . tcp . 80", false);
    assert!(fetch(c.pod("client"), "10.96.0.30:81")
        .unwrap()
        .starts_with("pod-b"));
    assert!(
        fetch(c.pod("client"), "10.96.0.30:80").is_err(),
        "old port still answers"
    );

    // Service deleted.
    c.delete(Kind::Service, "web");
    c.wait_map("service-ips", "10.96.0.30", false);
    assert!(fetch(c.pod("client"), "10.96.0.30:81").is_err());
    let log = c.proxy_log();
    assert!(log.contains("partial sync"), "{log}");
}

#[test]
fn udp_flows_to_removed_endpoints_are_cleared() {
    netns_fixtures::skip_unless_root!();
    let mut c = Cluster::new();
    c.add_pod("dns-a", "10.244.0.2");
    c.add_pod("dns-b", "10.244.0.3");
    c.add_pod("client", "10.244.0.10");
    c.put(service(
        "dns",
        "10.96.0.53",
        json!([{"name": "p", "port": 53, "protocol": "UDP", "targetPort": 5353, "nodePort": 30053}]),
    ));
    c.put(slice("dns", 5353, "UDP", &[("10.244.0.2", "node-a")]));
    c.start_proxy(&[]);
    c.wait_map("service-ips", "10.96.0.53 . udp . 53", true);
    // The same source port every time: one conntrack flow each, to the
    // ClusterIP from a pod and to the NodePort from the other node.
    let node_port = format!("{NODE_IP}:30053");
    let flows = [
        (c.pod("client"), "10.96.0.53:53", 40000),
        (&c.node2, node_port.as_str(), 40001),
    ];
    for (ns, addr, port) in flows {
        for _ in 0..2 {
            assert_eq!(udp_ask(ns, addr, port).unwrap(), "dns-a", "{addr}");
        }
    }

    c.put(slice("dns", 5353, "UDP", &[("10.244.0.3", "node-b")]));
    c.wait_map("service-endpoints", "10.244.0.2", false);
    // Without the conntrack cleanup these flows would stay NATed to dns-a forever.
    for (ns, addr, port) in flows {
        let mut last = udp_ask(ns, addr, port);
        for _ in 0..20 {
            if last.as_deref().ok() == Some("dns-b") {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            last = udp_ask(ns, addr, port);
        }
        assert_eq!(last.unwrap(), "dns-b", "{addr}");
    }
    let log = c.proxy_log();
    assert!(log.contains("2 conntrack entries deleted"), "{log}");
}
