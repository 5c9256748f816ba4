//! The binary's modes: `--once` (and `--dry-run`), config file, `/metrics`
//! and `/healthz`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use serde_json::json;

fn get(ns: &netns_fixtures::Netns, addr: &str, path: &str) -> (u16, String) {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let path = path.to_string();
    ns.enter(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let code = out
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (code, out.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
    })
    .unwrap()
}

#[test]
fn once_dry_run_config_file_metrics_and_healthz() {
    netns_fixtures::skip_unless_root!();
    let mut c = Cluster::new();
    c.add_pod("pod-a", "10.244.0.2");
    c.put(service(
        "web",
        "10.96.0.50",
        json!([{"name": "p", "port": 80}]),
    ));
    c.put(slice("web", 8080, "TCP", &[("10.244.0.2", "node-a")]));
    let bin = env!("CARGO_BIN_EXE_podnet-proxy");

    // --dry-run prints the plan and programs nothing.
    let out = c
        .node
        .sh(&format!(
            "{bin} --store {} --node-name node-a --cluster-cidr 10.244.0.0/16 --once --dry-run",
            c.store_url()
        ))
        .unwrap();
    assert!(
        out.contains("table ip podnet {")
            && out.contains("10.96.0.50 . tcp . 80 : goto pick-cluster-1"),
        "{out}"
    );
    assert!(c.node.sh("nft list tables").unwrap().trim().is_empty());

    // --once with flags from a config file: programs, reports, exits.
    let conf = c.dir.path().join("proxy.yaml");
    std::fs::write(
        &conf,
        format!(
            "store: {}\nnode-name: node-a\ncluster-cidr: 10.244.0.0/16\n",
            c.store_url()
        ),
    )
    .unwrap();
    let out = c
        .node
        .sh(&format!("{bin} --config {} --once", conf.display()))
        .unwrap();
    assert!(
        out.starts_with("full sync in ") && out.contains("1 service ports, 1 endpoints"),
        "{out}"
    );
    assert_eq!(
        fetch(c.pod("pod-a"), "10.96.0.50:80").unwrap(),
        format!("pod-a {GATEWAY}")
    );

    // The daemon serves /metrics and /healthz.
    c.start_proxy(&[
        "--metrics-addr",
        "127.0.0.1:10249",
        "--healthz-addr",
        "127.0.0.1:10256",
    ]);
    let ok = netns_fixtures::wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        c.node.sh("curl -sf http://127.0.0.1:10256/healthz").is_ok()
    });
    assert!(ok, "healthz never became healthy:\n{}", c.proxy_log());
    c.put(slice(
        "web",
        8080,
        "TCP",
        &[("10.244.0.2", "node-a"), ("10.244.0.3", "node-b")],
    ));
    c.wait_map("service-ips", "pick-cluster-2", true);
    let (code, metrics) = get(&c.node, "127.0.0.1:10249", "/metrics");
    assert_eq!(code, 200);
    for needle in [
        "podnet_proxy_full_syncs_total 1",
        "podnet_proxy_partial_syncs_total 1",
        "podnet_proxy_sync_duration_seconds_count 2",
        "podnet_proxy_sync_failures_total 0",
        "podnet_proxy_services 1",
        "podnet_proxy_endpoints 2",
    ] {
        assert!(metrics.contains(needle), "no {needle:?} in\n{metrics}");
    }
    let (code, body) = get(&c.node, "127.0.0.1:10249", "/healthz");
    assert_eq!(code, 200, "{body}");
}
