//! Session affinity, externalTrafficPolicy Local (source IP kept, health
//! check node port), internalTrafficPolicy Local.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use serde_json::json;

/// GET http://addr/ from inside `ns`: (status code, body).
fn http_get(ns: &netns_fixtures::Netns, addr: &str) -> (u16, String) {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    ns.enter(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .expect("connect health check port");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        write!(s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let code = out
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (code, body)
    })
    .unwrap()
}

#[test]
fn affinity_and_traffic_policies() {
    netns_fixtures::skip_unless_root!();
    let mut c = Cluster::new();
    c.add_pod("pod-a", "10.244.0.2"); // on this node
    c.add_pod("pod-b", "10.244.0.3"); // claims to be on node-b
    c.add_pod("client", "10.244.0.10");
    let eps = [("10.244.0.2", "node-a"), ("10.244.0.3", "node-b")];

    let mut sticky = service("sticky", "10.96.0.20", json!([{"name": "p", "port": 80}]));
    sticky["spec"]["sessionAffinity"] = json!("ClientIP");
    sticky["spec"]["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 60}});
    c.put(sticky);
    c.put(slice("sticky", 8080, "TCP", &eps));

    let mut local = service(
        "local",
        "10.96.0.21",
        json!([{"name": "p", "port": 80, "nodePort": 30081}]),
    );
    local["spec"]["type"] = json!("LoadBalancer");
    local["spec"]["externalTrafficPolicy"] = json!("Local");
    local["spec"]["healthCheckNodePort"] = json!(32081);
    c.put(local);
    c.put(slice("local", 8080, "TCP", &eps));

    let mut remote_only = service(
        "remote",
        "10.96.0.22",
        json!([{"name": "p", "port": 80, "nodePort": 30082}]),
    );
    remote_only["spec"]["type"] = json!("LoadBalancer");
    remote_only["spec"]["externalTrafficPolicy"] = json!("Local");
    remote_only["spec"]["healthCheckNodePort"] = json!(32082);
    c.put(remote_only);
    c.put(slice("remote", 8080, "TCP", &[("10.244.0.3", "node-b")]));

    let mut itp = service("itp", "10.96.0.23", json!([{"name": "p", "port": 80}]));
    itp["spec"]["internalTrafficPolicy"] = json!("Local");
    c.put(itp);
    c.put(slice("itp", 8080, "TCP", &eps));

    c.start_proxy(&[]);
    c.wait_map("service-ips", "10.96.0.23 . tcp . 80", true);

    // Affinity: every connection of the client lands on the first endpoint it got.
    let answers = fetch_many(c.pod("client"), "10.96.0.20:80", 40);
    let first = answers[0].as_ref().expect("sticky service answers").clone();
    assert!(
        answers.iter().all(|a| a.as_ref().ok() == Some(&first)),
        "affinity broken: {answers:?}"
    );
    // ...while another client still gets a random one (both show up over time).
    let others = fetch_many(&c.node2, "10.96.0.20:80", 1);
    assert!(others[0].is_ok(), "{others:?}");

    // eTP=Local from outside: only the local endpoint, client source address kept.
    for _ in 0..20 {
        let line = fetch(&c.node2, &format!("{NODE_IP}:30081")).expect("Local NodePort");
        assert_eq!(line, format!("pod-a {NODE2_IP}"));
    }
    // From a pod the ClusterIP still balances over all endpoints.
    let spread = fetch_many(c.pod("client"), "10.96.0.21:80", 60);
    assert!(
        spread.iter().any(|a| a.as_deref().ok() == Some("pod-b")),
        "{spread:?}"
    );
    // A Local NodePort without local endpoints drops external traffic (no answer).
    assert!(fetch(&c.node2, &format!("{NODE_IP}:30082")).is_err());

    // healthCheckNodePort: kube-proxy's JSON, 200 with local endpoints, 503 without.
    let (code, body) = http_get(&c.node2, &format!("{NODE_IP}:32081"));
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["localEndpoints"], 1);
    assert_eq!(v["service"]["name"], "local");
    let (code, body) = http_get(&c.node2, &format!("{NODE_IP}:32082"));
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"localEndpoints\":0"), "{body}");

    // iTP=Local: ClusterIP traffic only to endpoints on this node.
    let answers = fetch_many(c.pod("client"), "10.96.0.23:80", 30);
    assert!(
        answers.iter().all(|a| a.as_deref().ok() == Some("pod-a")),
        "{answers:?}"
    );
}
