//! The Kubernetes DNS spec checklist against the real binary over UDP and
//! TCP with `dig`, plus truncation, updates, bad input, metrics, sockets,
//! TCP limits and shutdown.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::{Dns, TestStore};
use podnet_dns::fixtures::{self, Ep};
use podnet_state::Kind;

fn cluster(store: &TestStore) {
    for ns in ["default", "empty"] {
        store.put(&fixtures::namespace_json(ns));
    }
    store.put(&fixtures::service_json(
        "default",
        "kubernetes",
        &["10.96.0.1"],
        &[("https", 443, "TCP")],
    ));
    store.put(&fixtures::service_json(
        "default",
        "dual",
        &["10.96.0.5", "fd00:96::5"],
        &[("dns", 53, "UDP")],
    ));
    store.put(&fixtures::service_json(
        "default",
        "db",
        &[],
        &[("pg", 5432, "TCP")],
    ));
    store.put(&fixtures::slice_json(
        "default",
        "db-1",
        "db",
        "IPv4",
        &[
            Ep::named("10.244.1.10", "db-0"),
            Ep::ready("10.244.1.11"),
            Ep::not_ready("10.244.1.12"),
        ],
        &[("pg", 5432, "TCP")],
    ));
    store.put(&fixtures::slice_json(
        "default",
        "db-2",
        "db",
        "IPv6",
        &[Ep::named("fd00:244::10", "db-0")],
        &[("pg", 5432, "TCP")],
    ));
    store.put(&fixtures::service_json("default", "down", &[], &[]));
    store.put(&fixtures::slice_json(
        "default",
        "down-1",
        "down",
        "IPv4",
        &[Ep::not_ready("10.244.2.1")],
        &[],
    ));
    store.put(&fixtures::external_json(
        "default",
        "ext",
        "www.example.com",
    ));
    store.put(&fixtures::pod_json("default", "p1", &["10.244.1.10"]));
}

/// One checklist item: query, expected status, expected sorted rdata
/// (None: only the status and SOA are checked).
struct Item {
    q: &'static str,
    status: &'static str,
    data: Option<Vec<&'static str>>,
}

fn item(q: &'static str, status: &'static str, data: &[&'static str]) -> Item {
    Item {
        q,
        status,
        data: Some(data.to_vec()),
    }
}

#[test]
fn spec_checklist_over_udp_and_tcp() {
    let store = TestStore::new();
    cluster(&store);
    let dns = Dns::start(&store.url(), &["--pods", "verified", "--negative-ttl", "7"]);
    let v6ptr = podnet_dns::wire::wire_to_text(&podnet_dns::wire::reverse_name(
        "fd00:244::10".parse().unwrap(),
    ));
    let v6q: &'static str = Box::leak(format!("{v6ptr} PTR").into_boxed_str());
    let items = vec![
        item("dns-version.cluster.local TXT", "NOERROR", &["\"1.1.0\""]),
        item(
            "kubernetes.default.svc.cluster.local A",
            "NOERROR",
            &["10.96.0.1"],
        ),
        item(
            "KUBERNETES.Default.SVC.cluster.local A",
            "NOERROR",
            &["10.96.0.1"],
        ),
        item(
            "dual.default.svc.cluster.local AAAA",
            "NOERROR",
            &["fd00:96::5"],
        ),
        item(
            "db.default.svc.cluster.local A",
            "NOERROR",
            &["10.244.1.10", "10.244.1.11"],
        ),
        item(
            "db.default.svc.cluster.local AAAA",
            "NOERROR",
            &["fd00:244::10"],
        ),
        item("down.default.svc.cluster.local A", "NXDOMAIN", &[]),
        item(
            "db-0.db.default.svc.cluster.local A",
            "NOERROR",
            &["10.244.1.10"],
        ),
        item(
            "10-244-1-11.db.default.svc.cluster.local A",
            "NOERROR",
            &["10.244.1.11"],
        ),
        item(
            "_https._tcp.kubernetes.default.svc.cluster.local SRV",
            "NOERROR",
            &["0 100 443 kubernetes.default.svc.cluster.local."],
        ),
        item(
            "_pg._tcp.db.default.svc.cluster.local SRV",
            "NOERROR",
            &[
                "0 50 5432 10-244-1-11.db.default.svc.cluster.local.",
                "0 50 5432 db-0.db.default.svc.cluster.local.",
            ],
        ),
        item(
            "1.0.96.10.in-addr.arpa PTR",
            "NOERROR",
            &["kubernetes.default.svc.cluster.local."],
        ),
        item(
            "10.1.244.10.in-addr.arpa PTR",
            "NOERROR",
            &["db-0.db.default.svc.cluster.local."],
        ),
        item(v6q, "NOERROR", &["db-0.db.default.svc.cluster.local."]),
        item(
            "ext.default.svc.cluster.local A",
            "NOERROR",
            &["www.example.com."],
        ),
        item(
            "10-244-1-10.default.pod.cluster.local A",
            "NOERROR",
            &["10.244.1.10"],
        ),
        item("1-2-3-4.default.pod.cluster.local A", "NXDOMAIN", &[]),
        item("cluster.local NS", "NOERROR", &["ns.dns.cluster.local."]),
        item("kubernetes.default.svc.cluster.local MX", "NOERROR", &[]),
        item("cluster.local A", "NOERROR", &[]),
        item("svc.cluster.local A", "NOERROR", &[]),
        item("pod.cluster.local A", "NOERROR", &[]),
        item("default.svc.cluster.local A", "NOERROR", &[]),
        item("empty.svc.cluster.local A", "NOERROR", &[]),
        item(
            "kubernetes.default.default.svc.cluster.local A",
            "NXDOMAIN",
            &[],
        ),
        item(
            "kubernetes.default.svc.default.svc.cluster.local A",
            "NXDOMAIN",
            &[],
        ),
        item("nope.default.svc.cluster.local A", "NXDOMAIN", &[]),
        Item {
            q: "cluster.local SOA",
            status: "NOERROR",
            data: None,
        },
    ];
    for transport in ["+notcp", "+tcp"] {
        for it in &items {
            let d = dns.dig(&format!("{} {transport}", it.q));
            assert_eq!(d.status, it.status, "{} {transport}:\n{}", it.q, d.raw);
            assert!(
                d.has_flag("aa"),
                "{} {transport}: not authoritative\n{}",
                it.q,
                d.raw
            );
            match &it.data {
                Some(want) if !want.is_empty() => {
                    assert_eq!(d.data(), *want, "{} {transport}:\n{}", it.q, d.raw)
                }
                Some(_) => {
                    assert!(d.answer.is_empty(), "{}: {:?}", it.q, d.answer);
                    assert_eq!(
                        d.authority.len(),
                        1,
                        "{}: SOA in authority\n{}",
                        it.q,
                        d.raw
                    );
                    let soa: Vec<&str> = d.authority[0].split_whitespace().collect();
                    assert_eq!(
                        (soa[0], soa[1], soa[2]),
                        ("cluster.local.", "7", "SOA"),
                        "{}",
                        d.raw
                    );
                }
                None => assert!(
                    d.answer[0].contains("SOA ns.dns.cluster.local. hostmaster.cluster.local."),
                    "{}",
                    d.raw
                ),
            }
        }
    }
    // Answers keep the query's case.
    let d = dns.dig("KUBERNETES.Default.SVC.cluster.local A");
    assert!(
        d.answer[0].starts_with("KUBERNETES.Default.SVC.cluster.local. 5 A"),
        "{}",
        d.raw
    );
    // SRV additional section carries the targets' addresses.
    let d = dns.dig("_pg._tcp.db.default.svc.cluster.local SRV");
    let mut add: Vec<String> = d
        .additional
        .iter()
        .filter(|l| !l.contains("OPT"))
        .cloned()
        .collect();
    add.sort();
    assert_eq!(
        add,
        vec![
            "10-244-1-11.db.default.svc.cluster.local. 5 A 10.244.1.11",
            "db-0.db.default.svc.cluster.local. 5 A 10.244.1.10",
            "db-0.db.default.svc.cluster.local. 5 AAAA fd00:244::10",
        ]
    );
    // AXFR refused (dig AXFR uses TCP).
    let d = dns.dig("cluster.local AXFR");
    assert!(
        d.raw.contains("Transfer failed") || d.status == "REFUSED",
        "{}",
        d.raw
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    sock.send_to(&query(3, "cluster.local", 251), dns.addr)
        .unwrap();
    let mut buf = [0u8; 512];
    sock.recv(&mut buf).unwrap();
    assert_eq!(buf[3] & 0x0F, 5, "IXFR over UDP: REFUSED");
    // Outside the zone without upstreams: REFUSED, no RA.
    let d = dns.dig("example.com A");
    assert_eq!(d.status, "REFUSED", "{}", d.raw);
    assert!(!d.has_flag("ra"));
}

/// Polls until `check` holds; returns how long that took.
fn until(what: &str, dns: &Dns, check: impl Fn(&Dns) -> bool) -> Duration {
    let t0 = Instant::now();
    let ok = common::wait(Duration::from_secs(5), || check(dns));
    assert!(ok, "{what}: not visible after 5 s\n{}", dns.log_text());
    t0.elapsed()
}

#[test]
fn store_changes_show_up_in_answers() {
    let store = TestStore::new();
    store.put(&fixtures::namespace_json("default"));
    store.put(&fixtures::service_json("default", "hl", &[], &[]));
    store.put(&fixtures::slice_json(
        "default",
        "hl-1",
        "hl",
        "IPv4",
        &[Ep::ready("10.244.0.5"), Ep::ready("10.244.0.6")],
        &[],
    ));
    let dns = Dns::start(&store.url(), &[]);
    let a = |d: &Dns, q: &str| d.dig(q).data();
    let mut took = Vec::new();

    store.put(&fixtures::service_json(
        "default",
        "web",
        &["10.96.0.80"],
        &[],
    ));
    took.push((
        "service created",
        until("created", &dns, |d| {
            a(d, "web.default.svc.cluster.local A") == ["10.96.0.80"]
        }),
    ));

    store.put(&fixtures::external_json("default", "ext", "a.example.com"));
    until("external", &dns, |d| {
        a(d, "ext.default.svc.cluster.local A") == ["a.example.com."]
    });
    store.put(&fixtures::external_json("default", "ext", "b.example.com"));
    took.push((
        "ExternalName changed",
        until("ext changed", &dns, |d| {
            a(d, "ext.default.svc.cluster.local A") == ["b.example.com."]
        }),
    ));

    store.put(&fixtures::service_json(
        "default",
        "ext",
        &["10.96.0.81"],
        &[],
    ));
    took.push((
        "ExternalName -> ClusterIP",
        until("ext -> ClusterIP", &dns, |d| {
            a(d, "ext.default.svc.cluster.local A") == ["10.96.0.81"]
        }),
    ));

    store.put(&fixtures::slice_json(
        "default",
        "hl-1",
        "hl",
        "IPv4",
        &[Ep::ready("10.244.0.5"), Ep::not_ready("10.244.0.6")],
        &[],
    ));
    took.push((
        "endpoint not ready",
        until("not ready", &dns, |d| {
            a(d, "hl.default.svc.cluster.local A") == ["10.244.0.5"]
        }),
    ));

    store.delete(Kind::Service, Some("default"), "web");
    took.push((
        "service deleted",
        until("deleted", &dns, |d| {
            d.dig("web.default.svc.cluster.local A").status == "NXDOMAIN"
        }),
    ));
    for (what, t) in took {
        eprintln!(
            "{what}: visible after {:.1} ms (polling with dig)",
            t.as_secs_f64() * 1000.0
        );
    }
}

#[test]
fn hundred_endpoint_headless_truncates_over_udp_and_is_whole_over_tcp() {
    let store = TestStore::new();
    let eps: Vec<Ep> = (0..100)
        .map(|i| Ep::ready(&format!("10.245.{}.{}", i / 200, i % 200 + 1)))
        .collect();
    store.put(&fixtures::service_json("default", "big", &[], &[]));
    store.put(&fixtures::slice_json(
        "default",
        "big-1",
        "big",
        "IPv4",
        &eps,
        &[],
    ));
    let dns = Dns::start(&store.url(), &[]);
    common::wait(Duration::from_secs(5), || {
        dns.dig("big.default.svc.cluster.local A +tcp").answer.len() == 100
    });
    let d = dns.dig("big.default.svc.cluster.local A +noedns +ignore");
    assert!(d.has_flag("tc"), "{}", d.raw);
    assert!(d.size <= 512 && d.size > 0, "{} bytes", d.size);
    let d = dns.dig("big.default.svc.cluster.local A +bufsize=1000 +ignore");
    assert!(d.has_flag("tc"), "{}", d.raw);
    assert!(d.size <= 1000, "{} bytes", d.size);
    let d = dns.dig("big.default.svc.cluster.local A +tcp");
    assert!(!d.has_flag("tc"));
    assert_eq!(d.answer.len(), 100);
}

fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut v = id.to_be_bytes().to_vec();
    v.extend_from_slice(&[0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    v.extend(podnet_dns::wire::text_to_wire(name).unwrap());
    v.extend_from_slice(&qtype.to_be_bytes());
    v.extend_from_slice(&[0, 1]);
    v
}

#[test]
fn bad_packets_get_formerr_or_notimp_and_do_not_crash() {
    let store = TestStore::new();
    store.put(&fixtures::service_json(
        "default",
        "web",
        &["10.96.0.80"],
        &[],
    ));
    let dns = Dns::start(&store.url(), &[]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    sock.connect(dns.addr).unwrap();
    let rcode_of = |pkt: &[u8]| -> Option<u8> {
        sock.send(pkt).unwrap();
        let mut buf = [0u8; 4096];
        sock.recv(&mut buf).ok().map(|_| buf[3] & 0x0F)
    };
    let good = query(7, "web.default.svc.cluster.local", 1);
    let mut two = good.clone();
    two[5] = 2;
    assert_eq!(rcode_of(&two), Some(1), "qdcount 2 -> FORMERR");
    let mut zero = good.clone();
    zero[5] = 0;
    assert_eq!(rcode_of(&zero), Some(1), "qdcount 0 -> FORMERR");
    let mut notify = good.clone();
    notify[2] = 4 << 3;
    assert_eq!(rcode_of(&notify), Some(4), "NOTIFY -> NOTIMP");
    assert_eq!(
        rcode_of(&good[..good.len() - 3]),
        Some(1),
        "truncated question -> FORMERR"
    );
    let mut huge = vec![0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for _ in 0..6 {
        huge.push(63);
        huge.extend([b'a'; 63]);
    }
    huge.extend([0, 0, 1, 0, 1]);
    assert_eq!(rcode_of(&huge), Some(1), "name over 255 bytes -> FORMERR");
    let mut ptr = vec![0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 0x0C, 0, 1, 0, 1];
    assert_eq!(
        rcode_of(&ptr),
        Some(1),
        "compression loop in question -> FORMERR"
    );
    ptr[2] |= 0x80;
    assert_eq!(rcode_of(&ptr), None, "a response is not answered");
    assert_eq!(rcode_of(&[1, 2, 3]), None, "shorter than a header: dropped");
    // Garbage of every length up to 300 bytes (deterministic xorshift).
    let mut x: u32 = 0x1234_5678;
    for len in 0..300usize {
        let pkt: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        sock.send(&pkt).unwrap();
    }
    // Still alive and answering.
    let d = dns.dig("web.default.svc.cluster.local A");
    assert_eq!(d.data(), ["10.96.0.80"], "{}", d.raw);
    let d = dns.dig("web.default.svc.cluster.local A +tcp");
    assert_eq!(d.data(), ["10.96.0.80"]);
}

#[test]
fn metrics_health_ready_sockets_and_sigterm() {
    let store = TestStore::new();
    store.put(&fixtures::service_json(
        "default",
        "web",
        &["10.96.0.80"],
        &[],
    ));
    let mut dns = Dns::start(&store.url(), &["--udp-sockets", "3"]);
    dns.dig("web.default.svc.cluster.local A");
    dns.dig("nope.default.svc.cluster.local A +tcp");
    let (st, _) = dns.http("/healthz").unwrap();
    assert_eq!(st, 200);
    let (st, _) = dns.http("/ready").unwrap();
    assert_eq!(st, 200);
    let (st, body) = dns.http("/metrics").unwrap();
    assert_eq!(st, 200);
    assert!(
        body.contains(r#"podnet_dns_queries_total{proto="udp",qtype="A",rcode="NOERROR"} 1"#),
        "{body}"
    );
    assert!(
        body.contains(r#"podnet_dns_queries_total{proto="tcp",qtype="A",rcode="NXDOMAIN"} 1"#),
        "{body}"
    );
    assert!(
        body.contains("podnet_dns_query_duration_seconds_count 2"),
        "{body}"
    );
    assert!(
        body.contains("podnet_dns_programming_duration_seconds_count"),
        "{body}"
    );
    assert!(body.contains("podnet_dns_services 1"), "{body}");
    // Three UDP sockets on the port, all ours.
    let ss = std::process::Command::new("ss")
        .args(["-Hunap", &format!("sport = :{}", dns.addr.port())])
        .output()
        .unwrap();
    let ss = String::from_utf8_lossy(&ss.stdout);
    let ours = ss
        .lines()
        .filter(|l| l.contains(&format!("pid={},", dns.pid())))
        .count();
    assert_eq!(ours, 3, "{ss}");
    // SIGTERM: exits 0, promptly.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dns.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = dns.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "still running 5 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}\n{}", dns.log_text());
    assert!(dns.log_text().contains("SIGTERM: shutting down"));
}

#[test]
fn tcp_connections_are_bounded_and_idle_ones_closed() {
    use std::io::Read;
    let store = TestStore::new();
    let dns = Dns::start(
        &store.url(),
        &["--tcp-max-connections", "2", "--tcp-idle-timeout", "700ms"],
    );
    let open = || {
        let s = std::net::TcpStream::connect(dns.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s
    };
    let mut a = open();
    let mut b = open();
    std::thread::sleep(Duration::from_millis(100));
    // Third connection: closed by the server at once.
    let mut c = open();
    let t0 = Instant::now();
    let mut buf = [0u8; 16];
    assert_eq!(c.read(&mut buf).unwrap_or(0), 0);
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "over-limit connection not closed at once"
    );
    // Idle ones: closed after the idle timeout.
    let t0 = Instant::now();
    assert_eq!(a.read(&mut buf).unwrap_or(0), 0);
    assert_eq!(b.read(&mut buf).unwrap_or(0), 0);
    let idle = t0.elapsed();
    assert!(
        idle < Duration::from_millis(2500),
        "idle connections kept {idle:?}"
    );
    // Once they are gone, new connections work again.
    let d = dns.dig("cluster.local SOA +tcp");
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
}

#[test]
fn recursion_refused_outside_allowed_networks() {
    let store = TestStore::new();
    store.put(&fixtures::service_json(
        "default",
        "web",
        &["10.96.0.80"],
        &[],
    ));
    // An upstream that is never used: 127.0.0.1 is not in the allowed range.
    let dns = Dns::start(
        &store.url(),
        &[
            "--upstream",
            "127.0.0.1:9",
            "--allow-recursion",
            "10.0.0.0/8",
        ],
    );
    let d = dns.dig("example.com A");
    assert_eq!(d.status, "REFUSED", "{}", d.raw);
    assert!(!d.has_flag("ra"));
    assert_eq!(
        dns.dig("web.default.svc.cluster.local A").data(),
        ["10.96.0.80"]
    );
}
