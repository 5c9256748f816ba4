//! The server library in-process with indexes published by hand: SERVFAIL
//! and /ready 503 before the first full sync, answers right after it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use podnet_dns::build::IndexBuilder;
use podnet_dns::fixtures;
use podnet_dns::index::{PodMode, ZoneConfig};
use podnet_dns::server::{Server, ServerConfig};
use podnet_state::{NamespacedName, Snapshot};

fn http_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    r.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_and_not_ready_until_the_first_sync() {
    let zone = ZoneConfig::new("cluster.local", 5, 5, PodMode::Insecure, vec![]).unwrap();
    let mut builder = IndexBuilder::new(zone);
    let cfg = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        udp_sockets: 2,
        udp_batch: 8,
        tcp_max_connections: 16,
        tcp_idle_timeout: Duration::from_secs(5),
        allow_recursion: vec![],
        upstreams: vec![],
        upstream_timeout: Duration::from_secs(1),
        cache_entries: 100,
        cache_max_ttl: 60,
        metrics_addr: Some("127.0.0.1:0".parse().unwrap()),
    };
    let server = Server::start(&cfg, builder.index()).await.unwrap();
    let addr = server.local_addr;
    let maddr = server.metrics_addr.unwrap();
    let (d, ready) = tokio::task::spawn_blocking(move || {
        (
            common::dig(addr, "web.default.svc.cluster.local A"),
            http_status(maddr, "/ready"),
        )
    })
    .await
    .unwrap();
    assert_eq!(d.status, "SERVFAIL", "{}", d.raw);
    assert_eq!(ready, 503);

    let mut snap = Snapshot {
        revision: 3,
        synced: true,
        ..Default::default()
    };
    snap.services.insert(
        NamespacedName::new("default", "web"),
        Arc::new(fixtures::service("default", "web", &["10.96.0.80"], &[])),
    );
    server.shared.publish(builder.full(&snap));
    let (d, dt, ready) = tokio::task::spawn_blocking(move || {
        (
            common::dig(addr, "web.default.svc.cluster.local A"),
            common::dig(addr, "web.default.svc.cluster.local A +tcp"),
            http_status(maddr, "/ready"),
        )
    })
    .await
    .unwrap();
    assert_eq!(d.data(), ["10.96.0.80"], "{}", d.raw);
    assert_eq!(dt.data(), ["10.96.0.80"], "{}", dt.raw);
    assert_eq!(ready, 200);
    server.shutdown().await;
}
