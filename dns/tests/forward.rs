//! Forwarding against a second podnet-dns on loopback that serves another
//! zone: answers, negative caching, TCP retry on truncation, failover,
//! cached answers surviving the upstream, fast SERVFAIL, loop detection.

mod common;

use std::time::{Duration, Instant};

use common::{free_port, Dns, TestStore};
use podnet_dns::fixtures::{self, Ep};

fn upstream_store() -> TestStore {
    let s = TestStore::new();
    s.put(&fixtures::service_json(
        "default",
        "web",
        &["10.96.7.7"],
        &[],
    ));
    s.put(&fixtures::service_json(
        "default",
        "short",
        &["10.96.7.8"],
        &[],
    ));
    let eps: Vec<Ep> = (0..100)
        .map(|i| Ep::ready(&format!("10.246.0.{}", i + 1)))
        .collect();
    s.put(&fixtures::service_json("default", "big", &[], &[]));
    s.put(&fixtures::slice_json(
        "default",
        "big-1",
        "big",
        "IPv4",
        &eps,
        &[],
    ));
    s
}

#[test]
fn forwards_caches_retries_over_tcp_fails_over_and_survives_upstream_loss() {
    let ustore = upstream_store();
    let mut up = Dns::start(
        &ustore.url(),
        &["--zone", "example.test", "--negative-ttl", "60"],
    );
    let store = TestStore::new();
    let upstream = up.addr.to_string();
    let dns = Dns::start(&store.url(), &["--upstream", &upstream]);

    let d = dns.dig("web.default.svc.example.test A");
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert_eq!(d.data(), ["10.96.7.7"]);
    assert!(d.has_flag("ra") && !d.has_flag("aa"), "{}", d.raw);
    let d = dns.dig("nope.default.svc.example.test A");
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    assert_eq!(
        d.authority.len(),
        1,
        "SOA of the upstream's negative answer\n{}",
        d.raw
    );
    // A cache hit keeps the asker's case.
    let d = dns.dig("WEB.Default.svc.example.test A");
    assert!(
        d.answer[0].starts_with("WEB.Default.svc.example.test."),
        "{}",
        d.raw
    );

    // 100 records do not fit the 1232-byte UDP answer from the upstream:
    // the forwarder must have retried over TCP to get all of them.
    let d = dns.dig("big.default.svc.example.test A +tcp");
    assert_eq!(d.answer.len(), 100, "{}", d.raw);
    let d = dns.dig("big.default.svc.example.test A +ignore");
    assert!(d.has_flag("tc") && d.size <= 1232, "{}", d.raw);

    // Failover: the first upstream is a closed port.
    let dead = free_port();
    let failover = format!("127.0.0.1:{dead},{upstream}");
    let dns2 = Dns::start(&store.url(), &["--upstream", &failover]);
    assert_eq!(
        dns2.dig("short.default.svc.example.test A").data(),
        ["10.96.7.8"]
    );

    // Upstream gone: cached names (positive and negative) still answer,
    // others SERVFAIL quickly.
    let _ = up.child.kill();
    let _ = up.child.wait();
    assert_eq!(
        dns.dig("web.default.svc.example.test A").data(),
        ["10.96.7.7"]
    );
    assert_eq!(
        dns.dig("nope.default.svc.example.test A").status,
        "NXDOMAIN"
    );
    let t0 = Instant::now();
    let d = dns.dig("short.default.svc.example.test A");
    assert_eq!(d.status, "SERVFAIL", "{}", d.raw);
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "SERVFAIL took {:?}",
        t0.elapsed()
    );
    let (_, metrics) = dns.http("/metrics").unwrap();
    assert!(metrics.contains("podnet_dns_cache_hits_total"), "{metrics}");
    let hits: u64 = metrics
        .lines()
        .find(|l| l.starts_with("podnet_dns_cache_hits_total"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap();
    assert!(hits >= 3, "{metrics}");
}

#[test]
fn expired_cache_entries_are_fetched_again() {
    let ustore = upstream_store();
    let up = Dns::start(&ustore.url(), &["--zone", "example.test", "--ttl", "1"]);
    let store = TestStore::new();
    let upstream = up.addr.to_string();
    let dns = Dns::start(&store.url(), &["--upstream", &upstream]);
    assert_eq!(
        dns.dig("web.default.svc.example.test A").data(),
        ["10.96.7.7"]
    );
    ustore.put(&fixtures::service_json(
        "default",
        "web",
        &["10.96.7.9"],
        &[],
    ));
    let changed = common::wait(Duration::from_secs(5), || {
        up.dig("web.default.svc.example.test A").data() == ["10.96.7.9"]
    });
    assert!(changed);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        dns.dig("web.default.svc.example.test A").data(),
        ["10.96.7.9"]
    );
}

#[test]
fn forwarding_loops_are_detected() {
    let (pa, pb) = (free_port(), free_port());
    let sa = TestStore::new();
    let sb = TestStore::new();
    let up_b = format!("127.0.0.1:{pb}");
    let up_a = format!("127.0.0.1:{pa}");
    let a = Dns::start_at(
        pa,
        &sa.url(),
        &["--upstream", &up_b, "--upstream-timeout", "500ms"],
        true,
    );
    let b = Dns::start_at(
        pb,
        &sb.url(),
        &["--upstream", &up_a, "--upstream-timeout", "500ms"],
        true,
    );
    let t0 = Instant::now();
    let d = a.dig("loop.example.org A");
    assert_eq!(d.status, "SERVFAIL", "{}", d.raw);
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    let logs = format!("{}{}", a.log_text(), b.log_text());
    assert!(logs.contains("forwarding loop"), "{logs}");
    // Both still answer their own zone.
    assert_eq!(a.dig("cluster.local SOA").status, "NOERROR");
    assert_eq!(b.dig("cluster.local SOA").status, "NOERROR");

    // An upstream that is this very server is dropped at start.
    let pc = free_port();
    let own = format!("127.0.0.1:{pc}");
    let c = Dns::start_at(pc, &sa.url(), &["--upstream", &own], true);
    assert!(
        c.log_text().contains("upstream is this server itself"),
        "{}",
        c.log_text()
    );
    assert_eq!(c.dig("loop.example.org A").status, "REFUSED");
}
