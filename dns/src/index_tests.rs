//! The spec checklist against the index, decoded with hickory-proto (an
//! independent decoder of what `wire` writes).

use std::sync::Arc;

use hickory_proto::op::{Message, ResponseCode};
use podnet_state::{Change, ChangeSet, ChangeType, Kind, NamespacedName, ObjectKey, Snapshot};

use crate::answer::{answer_with_target, handle_packet, Outcome};
use crate::build::IndexBuilder;
use crate::fixtures::{self, Ep};
use crate::index::{Index, PodMode, ZoneConfig};
use crate::wire::{self, TYPE_OPT};

fn cfg(pods: PodMode) -> ZoneConfig {
    ZoneConfig::new(
        "cluster.local",
        5,
        7,
        pods,
        vec!["10.96.0.10".parse().unwrap()],
    )
    .unwrap()
}

fn nn(ns: &str, n: &str) -> NamespacedName {
    NamespacedName::new(ns, n)
}

/// A cluster with one of everything.
fn snapshot() -> Snapshot {
    let mut s = Snapshot {
        revision: 42,
        synced: true,
        ..Default::default()
    };
    for ns in ["default", "kube-system", "empty"] {
        s.namespaces
            .insert(ns.into(), Arc::new(fixtures::namespace(ns)));
    }
    s.services.insert(
        nn("default", "kubernetes"),
        Arc::new(fixtures::service(
            "default",
            "kubernetes",
            &["10.96.0.1"],
            &[("https", 443, "TCP")],
        )),
    );
    s.services.insert(
        nn("default", "dual"),
        Arc::new(fixtures::service(
            "default",
            "dual",
            &["10.96.0.5", "fd00:96::5"],
            &[("dns", 53, "UDP"), ("", 80, "TCP")],
        )),
    );
    s.services.insert(
        nn("default", "db"),
        Arc::new(fixtures::headless("default", "db", &[("pg", 5432, "TCP")])),
    );
    s.endpoint_slices.insert(
        nn("default", "db-abc"),
        Arc::new(fixtures::slice(
            "default",
            "db",
            "db",
            "IPv4",
            &[
                Ep::named("10.244.1.10", "db-0"),
                Ep::ready("10.244.1.11"),
                Ep::not_ready("10.244.1.12"),
                Ep {
                    addresses: vec!["10.244.1.13".into()],
                    hostname: None,
                    ready: None,
                },
            ],
            &[("pg", 5432, "TCP")],
        )),
    );
    s.endpoint_slices.insert(
        nn("default", "db-v6"),
        Arc::new(fixtures::slice(
            "default",
            "db-v6",
            "db",
            "IPv6",
            &[Ep::named("fd00:244::10", "db-0")],
            &[("pg", 5432, "TCP")],
        )),
    );
    s.services.insert(
        nn("default", "down"),
        Arc::new(fixtures::headless("default", "down", &[])),
    );
    s.endpoint_slices.insert(
        nn("default", "down-1"),
        Arc::new(fixtures::slice(
            "default",
            "down-1",
            "down",
            "IPv4",
            &[Ep::not_ready("10.244.2.1")],
            &[],
        )),
    );
    s.services.insert(
        nn("default", "ext"),
        Arc::new(fixtures::external("default", "ext", "www.example.com")),
    );
    s.services.insert(
        nn("default", "alias"),
        Arc::new(fixtures::external(
            "default",
            "alias",
            "kubernetes.default.svc.cluster.local",
        )),
    );
    s.pods.insert(
        nn("default", "p1"),
        Arc::new(fixtures::pod(
            "default",
            "p1",
            &["10.244.1.10", "fd00:244::10"],
        )),
    );
    s
}

fn index_with(pods: PodMode, snap: &Snapshot) -> Arc<Index> {
    IndexBuilder::new(cfg(pods)).full(snap)
}

fn query(name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
    let mut v = vec![0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    // Keep the caller's case in the question.
    for label in name.trim_end_matches('.').split('.') {
        v.push(label.len() as u8);
        v.extend_from_slice(label.as_bytes());
    }
    v.push(0);
    v.extend_from_slice(&qtype.to_be_bytes());
    v.extend_from_slice(&1u16.to_be_bytes());
    if let Some(sz) = edns {
        v[11] = 1;
        v.push(0);
        v.extend_from_slice(&TYPE_OPT.to_be_bytes());
        v.extend_from_slice(&sz.to_be_bytes());
        v.extend_from_slice(&[0; 6]);
    }
    v
}

struct Reply {
    msg: Message,
    size: usize,
}

impl Reply {
    fn rcode(&self) -> ResponseCode {
        self.msg.metadata.response_code
    }
    fn answers(&self) -> Vec<String> {
        self.msg
            .answers
            .iter()
            .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data))
            .collect()
    }
    fn authority(&self) -> Vec<String> {
        self.msg
            .authorities
            .iter()
            .map(|r| format!("{} {} {}", r.name, r.ttl, r.record_type()))
            .collect()
    }
    fn additional(&self) -> Vec<String> {
        self.msg
            .additionals
            .iter()
            .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
            .collect()
    }
}

fn ask_idx(
    idx: &Index,
    name: &str,
    qtype: u16,
    edns: Option<u16>,
    recursion: bool,
) -> Option<Reply> {
    let pkt = query(name, qtype, edns);
    let mut out = Vec::new();
    match handle_packet(idx, &pkt, || recursion, true, &mut out) {
        Outcome::Reply(_) | Outcome::Chase(_) => {
            let msg = Message::from_vec(&out).expect("response decodes");
            assert_eq!(msg.metadata.id, 0xABCD);
            Some(Reply {
                msg,
                size: out.len(),
            })
        }
        Outcome::Forward => None,
        Outcome::Drop => panic!("query dropped"),
    }
}

fn ask(idx: &Index, name: &str, qtype: u16) -> Reply {
    ask_idx(idx, name, qtype, None, false).expect("answered, not forwarded")
}

fn assert_negative(r: &Reply, rcode: ResponseCode) {
    assert_eq!(r.rcode(), rcode, "{:?}", r.answers());
    assert!(r.msg.answers.is_empty());
    assert_eq!(r.authority(), vec!["cluster.local. 7 SOA".to_string()]);
    assert!(r.msg.metadata.authoritative);
}

const A: u16 = wire::TYPE_A;
const AAAA: u16 = wire::TYPE_AAAA;
const SRV: u16 = wire::TYPE_SRV;
const PTR: u16 = wire::TYPE_PTR;
const TXT: u16 = wire::TYPE_TXT;
const MX: u16 = 15;

#[test]
fn dns_version_txt() {
    let idx = index_with(PodMode::Insecure, &snapshot());
    let r = ask(&idx, "dns-version.cluster.local", TXT);
    assert_eq!(r.answers(), vec!["dns-version.cluster.local. 5 TXT 1.1.0"]);
    assert_negative(
        &ask(&idx, "dns-version.cluster.local", A),
        ResponseCode::NoError,
    );
}

#[test]
fn cluster_ip_a_and_aaaa_case_insensitive_keeping_query_case() {
    let idx = index_with(PodMode::Insecure, &snapshot());
    let r = ask(&idx, "kubernetes.default.svc.cluster.local", A);
    assert_eq!(r.rcode(), ResponseCode::NoError);
    assert!(r.msg.metadata.authoritative);
    assert_eq!(
        r.answers(),
        vec!["kubernetes.default.svc.cluster.local. 5 A 10.96.0.1"]
    );
    let r = ask(&idx, "KuberNetes.DEFAULT.svc.Cluster.Local", A);
    assert_eq!(
        r.answers(),
        vec!["KuberNetes.DEFAULT.svc.Cluster.Local. 5 A 10.96.0.1"]
    );
    assert_eq!(
        r.msg.queries[0].name().to_string(),
        "KuberNetes.DEFAULT.svc.Cluster.Local."
    );
    assert_eq!(
        ask(&idx, "dual.default.svc.cluster.local", AAAA).answers(),
        vec!["dual.default.svc.cluster.local. 5 AAAA fd00:96::5"]
    );
    assert_eq!(
        ask(&idx, "dual.default.svc.cluster.local", A).answers(),
        vec!["dual.default.svc.cluster.local. 5 A 10.96.0.5"]
    );
    // A v4-only service has no AAAA: NODATA.
    assert_negative(
        &ask(&idx, "kubernetes.default.svc.cluster.local", AAAA),
        ResponseCode::NoError,
    );
    assert_negative(
        &ask(&idx, "kubernetes.default.svc.cluster.local", MX),
        ResponseCode::NoError,
    );
}

#[test]
fn headless_answers_ready_endpoints_and_nxdomain_when_none_ready() {
    let idx = index_with(PodMode::Insecure, &snapshot());
    let mut a = ask(&idx, "db.default.svc.cluster.local", A).answers();
    a.sort();
    assert_eq!(
        a,
        vec![
            "db.default.svc.cluster.local. 5 A 10.244.1.10",
            "db.default.svc.cluster.local. 5 A 10.244.1.11",
            "db.default.svc.cluster.local. 5 A 10.244.1.13",
        ],
        "not-ready 10.244.1.12 is left out; absent conditions.ready counts as ready"
    );
    assert_eq!(
        ask(&idx, "db.default.svc.cluster.local", AAAA).answers(),
        vec!["db.default.svc.cluster.local. 5 AAAA fd00:244::10"]
    );
    assert_negative(
        &ask(&idx, "down.default.svc.cluster.local", A),
        ResponseCode::NXDomain,
    );
}

#[test]
fn endpoint_hostname_and_dashed_ip_names() {
    let idx = index_with(PodMode::Insecure, &snapshot());
    assert_eq!(
        ask(&idx, "db-0.db.default.svc.cluster.local", A).answers(),
        vec!["db-0.db.default.svc.cluster.local. 5 A 10.244.1.10"]
    );
    assert_eq!(
        ask(&idx, "db-0.db.default.svc.cluster.local", AAAA).answers(),
        vec!["db-0.db.default.svc.cluster.local. 5 AAAA fd00:244::10"]
    );
    assert_eq!(
        ask(&idx, "10-244-1-11.db.default.svc.cluster.local", A).answers(),
        vec!["10-244-1-11.db.default.svc.cluster.local. 5 A 10.244.1.11"]
    );
    assert_negative(
        &ask(&idx, "10-244-1-12.db.default.svc.cluster.local", A),
        ResponseCode::NXDomain,
    );
    assert_negative(
        &ask(&idx, "db-9.db.default.svc.cluster.local", A),
        ResponseCode::NXDomain,
    );
}

#[test]
fn srv_for_named_ports_with_addresses_in_additional() {
    let idx = index_with(PodMode::Insecure, &snapshot());
    let r = ask(
        &idx,
        "_https._tcp.kubernetes.default.svc.cluster.local",
        SRV,
    );
    assert_eq!(r.answers(), vec!["_https._tcp.kubernetes.default.svc.cluster.local. 5 SRV 0 100 443 kubernetes.default.svc.cluster.local."]);
    assert_eq!(
        r.additional(),
        vec!["kubernetes.default.svc.cluster.local. A 10.96.0.1"]
    );
    let r = ask(&idx, "_dns._udp.dual.default.svc.cluster.local", SRV);
    assert_eq!(r.answers().len(), 1);
    assert_eq!(r.additional().len(), 2, "A and AAAA of the target");
    // Unnamed port: no SRV name at all.
    assert_negative(
        &ask(&idx, "_80._tcp.dual.default.svc.cluster.local", SRV),
        ResponseCode::NXDomain,
    );
    // Wrong protocol.
    assert_negative(
        &ask(
            &idx,
            "_https._udp.kubernetes.default.svc.cluster.local",
            SRV,
        ),
        ResponseCode::NXDomain,
    );
    // The `_tcp` name exists (an empty non-terminal).
    assert_negative(
        &ask(&idx, "_tcp.kubernetes.default.svc.cluster.local", SRV),
        ResponseCode::NoError,
    );
    // Headless: one SRV per ready endpoint name x port, targets the endpoint names.
    let r = ask(&idx, "_pg._tcp.db.default.svc.cluster.local", SRV);
    let mut targets: Vec<String> = r
        .answers()
        .iter()
        .map(|a| a.rsplit(' ').next().unwrap().to_string())
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        vec![
            "10-244-1-11.db.default.svc.cluster.local.",
            "10-244-1-13.db.default.svc.cluster.local.",
            "db-0.db.default.svc.cluster.local.",
        ]
    );
    let mut add = r.additional();
    add.sort();
    assert_eq!(
        add,
        vec![
            "10-244-1-11.db.default.svc.cluster.local. A 10.244.1.11",
            "10-244-1-13.db.default.svc.cluster.local. A 10.244.1.13",
            "db-0.db.default.svc.cluster.local. A 10.244.1.10",
            "db-0.db.default.svc.cluster.local. AAAA fd00:244::10",
        ]
    );
}

#[test]
fn ptr_for_cluster_ips_and_ready_endpoints_v4_and_v6() {
    let idx = index_with(PodMode::Insecure, &snapshot());
    assert_eq!(
        ask(&idx, "1.0.96.10.in-addr.arpa", PTR).answers(),
        vec!["1.0.96.10.in-addr.arpa. 5 PTR kubernetes.default.svc.cluster.local."]
    );
    assert_eq!(
        ask(&idx, "10.1.244.10.in-addr.arpa", PTR).answers(),
        vec!["10.1.244.10.in-addr.arpa. 5 PTR db-0.db.default.svc.cluster.local."]
    );
    let v6 = wire::wire_to_text(&wire::reverse_name("fd00:96::5".parse().unwrap()));
    assert_eq!(
        ask(&idx, &v6, PTR).answers(),
        vec![format!("{v6} 5 PTR dual.default.svc.cluster.local.")]
    );
    let v6ep = wire::wire_to_text(&wire::reverse_name("fd00:244::10".parse().unwrap()));
    assert_eq!(
        ask(&idx, &v6ep, PTR).answers(),
        vec![format!("{v6ep} 5 PTR db-0.db.default.svc.cluster.local.")]
    );
    // A known address, another type: NODATA.
    assert_eq!(
        ask(&idx, "1.0.96.10.in-addr.arpa", A).rcode(),
        ResponseCode::NoError
    );
    // Not ready endpoint: not ours, so it is forwarded (or REFUSED without recursion).
    assert!(ask_idx(&idx, "12.1.244.10.in-addr.arpa", PTR, None, true).is_none());
    assert_eq!(
        ask(&idx, "12.1.244.10.in-addr.arpa", PTR).rcode(),
        ResponseCode::Refused
    );
}

#[test]
fn external_name_is_a_cname_followed_inside_the_zone() {
    let idx = index_with(PodMode::Insecure, &snapshot());
    assert_eq!(
        ask(&idx, "ext.default.svc.cluster.local", A).answers(),
        vec!["ext.default.svc.cluster.local. 5 CNAME www.example.com."]
    );
    assert_eq!(
        ask(&idx, "ext.default.svc.cluster.local", AAAA)
            .answers()
            .len(),
        1
    );
    let r = ask(&idx, "alias.default.svc.cluster.local", A);
    assert_eq!(
        r.answers(),
        vec![
            "alias.default.svc.cluster.local. 5 CNAME kubernetes.default.svc.cluster.local.",
            "kubernetes.default.svc.cluster.local. 5 A 10.96.0.1",
        ]
    );
    assert_negative(
        &ask(&idx, "x.ext.default.svc.cluster.local", A),
        ResponseCode::NXDomain,
    );
}

/// `snapshot()` plus ExternalName services `name -> target`.
fn with_aliases(aliases: &[(&str, &str)]) -> Snapshot {
    let mut s = snapshot();
    for (name, target) in aliases {
        s.services.insert(
            nn("default", name),
            Arc::new(fixtures::external("default", name, target)),
        );
    }
    s
}

fn svc_name(name: &str) -> String {
    format!("{name}.default.svc.cluster.local")
}

#[test]
fn external_name_chains_follow_coredns() {
    // c0 -> c1 -> ... -> c7 -> kubernetes: 8 CNAMEs and the address.
    let mut aliases: Vec<(String, String)> = (0..8)
        .map(|i| (format!("c{i}"), svc_name(&format!("c{}", i + 1))))
        .collect();
    aliases[7].1 = svc_name("kubernetes");
    // d0 -> ... -> d8 -> kubernetes: one CNAME too many.
    aliases.extend((0..9).map(|i| (format!("d{i}"), svc_name(&format!("d{}", i + 1)))));
    aliases.push(("d9".into(), svc_name("kubernetes")));
    // o0 -> ... -> o7 -> www.example.com: 8 CNAMEs, then outside.
    aliases.extend((0..7).map(|i| (format!("o{i}"), svc_name(&format!("o{}", i + 1)))));
    aliases.push(("o7".into(), "www.example.com".into()));
    // p0 -> o0 -> ...: a ninth CNAME.
    aliases.push(("p0".into(), svc_name("o0")));
    let extra: Vec<(&str, &str)> = vec![
        ("self", "self.default.svc.cluster.local"),
        ("below", "x.below.default.svc.cluster.local"),
        ("ping", "pong.default.svc.cluster.local"),
        ("pong", "ping.default.svc.cluster.local"),
        ("gone", "nothing.default.svc.cluster.local"),
        ("toext", "ext.default.svc.cluster.local"),
    ];
    let mut all: Vec<(&str, &str)> = aliases
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    all.extend(extra);
    let idx = index_with(PodMode::Insecure, &with_aliases(&all));

    // (EDNS: 9 records with full names do not fit 512 bytes.)
    let r = ask_idx(&idx, &svc_name("c0"), A, Some(1232), false).unwrap();
    assert!(!r.msg.metadata.truncation);
    let answers = r.answers();
    assert_eq!(answers.len(), 9, "{answers:?}");
    assert!(answers[0].starts_with("c0.default.svc.cluster.local. 5 CNAME c1."));
    assert!(answers[7].starts_with("c7.default.svc.cluster.local. 5 CNAME kubernetes."));
    assert_eq!(
        answers[8],
        "kubernetes.default.svc.cluster.local. 5 A 10.96.0.1"
    );
    // A CNAME question gets the first CNAME only.
    assert_eq!(
        ask(&idx, &svc_name("c0"), wire::TYPE_CNAME).answers(),
        vec!["c0.default.svc.cluster.local. 5 CNAME c1.default.svc.cluster.local."]
    );
    // The chain must end in records: AAAA of a v4-only service is NODATA,
    // as are chains too long, loops, self-references and missing targets.
    for (name, qtype) in [
        ("c0", AAAA),
        ("alias", AAAA),
        ("d0", A),
        ("self", A),
        ("below", A),
        ("ping", A),
        ("gone", A),
        ("p0", A),
    ] {
        assert_negative(&ask(&idx, &svc_name(name), qtype), ResponseCode::NoError);
    }
    // A chain leaving the zone: 8 CNAMEs, then the target's lookup.
    let pkt = query(&svc_name("o0"), A, Some(1232));
    let mut out = Vec::new();
    let Outcome::Chase(target) = handle_packet(&idx, &pkt, || false, true, &mut out) else {
        panic!("o0 should need its target's records");
    };
    assert_eq!(
        target.wire(),
        &wire::text_to_wire("www.example.com").unwrap()[..]
    );
    let m = Message::from_vec(&out).unwrap();
    assert_eq!(
        m.answers.len(),
        8,
        "without the target's records: the CNAMEs"
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    // Through another ExternalName inside the zone.
    let Outcome::Chase(target) = handle_packet(
        &idx,
        &query(&svc_name("toext"), AAAA, None),
        || false,
        true,
        &mut out,
    ) else {
        panic!("toext should need its target's records");
    };
    assert_eq!(wire::wire_to_text(target.wire()), "www.example.com.");
    // MX is not completed from outside (CoreDNS: only A, AAAA, TXT).
    assert_eq!(
        handle_packet(
            &idx,
            &query(&svc_name("ext"), MX, None),
            || false,
            true,
            &mut out
        ),
        Outcome::Reply(wire::Rcode::NoError)
    );
}

/// A response from an upstream for `name` A: a CNAME to `www.example.net`
/// and its address, names compressed against the question.
fn upstream_response(name: &str) -> Vec<u8> {
    let mut v = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0];
    v.extend(wire::text_to_wire(name).unwrap());
    v.extend_from_slice(&[0, 1, 0, 1]);
    // www.example.com CNAME www.example.net (the "example" label written, then a pointer).
    v.extend_from_slice(&[0xC0, 0x0C, 0, 5, 0, 1, 0, 0, 0, 60]);
    let rdata = [&[3u8][..], b"www", &[7], b"example", &[3], b"net", &[0]].concat();
    v.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    let target_at = v.len();
    v.extend_from_slice(&rdata);
    v.extend_from_slice(&[
        0xC0 | (target_at >> 8) as u8,
        target_at as u8,
        0,
        1,
        0,
        1,
        0,
        0,
        0,
        30,
        0,
        4,
    ]);
    v.extend_from_slice(&[192, 0, 2, 7]);
    v
}

#[test]
fn chains_leaving_the_zone_are_completed_with_the_targets_records() {
    let idx = index_with(PodMode::Insecure, &snapshot());
    let pkt = query("Ext.default.svc.cluster.local", A, None);
    let q = wire::parse_query(&pkt).unwrap();
    let mut out = Vec::new();
    let rc = answer_with_target(
        &idx,
        &q,
        true,
        512,
        &upstream_response("www.example.com"),
        &mut out,
    );
    assert_eq!(rc, wire::Rcode::NoError);
    let m = Message::from_vec(&out).unwrap();
    let answers: Vec<String> = m
        .answers
        .iter()
        .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data))
        .collect();
    assert_eq!(
        answers,
        vec![
            "Ext.default.svc.cluster.local. 5 CNAME www.example.com.",
            "www.example.com. 60 CNAME www.example.net.",
            "www.example.net. 30 A 192.0.2.7",
        ]
    );
    assert!(m.metadata.authoritative);
    // A failed lookup (SERVFAIL without records) or a response to some
    // other question leaves the CNAME alone.
    let mut servfail = upstream_response("www.example.com");
    servfail.truncate(12 + 17 + 4);
    servfail[3] = 0x82;
    servfail[7] = 0;
    for resp in [
        servfail,
        upstream_response("www.example.org"),
        vec![1, 2, 3],
    ] {
        answer_with_target(&idx, &q, true, 512, &resp, &mut out);
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.len(), 1, "{:?}", m.answers);
    }
    // Not a chain (any more): answered from the index as usual.
    let pkt = query("kubernetes.default.svc.cluster.local", A, None);
    let q = wire::parse_query(&pkt).unwrap();
    answer_with_target(
        &idx,
        &q,
        true,
        512,
        &upstream_response("www.example.com"),
        &mut out,
    );
    assert_eq!(Message::from_vec(&out).unwrap().answers.len(), 1);
}

#[test]
fn pod_records_in_each_mode() {
    let snap = snapshot();
    let idx = index_with(PodMode::Insecure, &snap);
    assert_eq!(
        ask(&idx, "1-2-3-4.default.pod.cluster.local", A).answers(),
        vec!["1-2-3-4.default.pod.cluster.local. 5 A 1.2.3.4"]
    );
    assert_eq!(
        ask(&idx, "fd00--1.default.pod.cluster.local", AAAA).answers(),
        vec!["fd00--1.default.pod.cluster.local. 5 AAAA fd00::1"]
    );
    assert_negative(
        &ask(&idx, "1-2-3-4.default.pod.cluster.local", AAAA),
        ResponseCode::NoError,
    );
    assert_negative(
        &ask(&idx, "1-2-3.default.pod.cluster.local", A),
        ResponseCode::NXDomain,
    );
    let idx = index_with(PodMode::Verified, &snap);
    assert_eq!(
        ask(&idx, "10-244-1-10.default.pod.cluster.local", A)
            .answers()
            .len(),
        1
    );
    assert_eq!(
        ask(&idx, "fd00-244--10.default.pod.cluster.local", AAAA)
            .answers()
            .len(),
        1
    );
    assert_negative(
        &ask(&idx, "10-244-1-10.kube-system.pod.cluster.local", A),
        ResponseCode::NXDomain,
    );
    assert_negative(
        &ask(&idx, "1-2-3-4.default.pod.cluster.local", A),
        ResponseCode::NXDomain,
    );
    let idx = index_with(PodMode::Disabled, &snap);
    assert_negative(
        &ask(&idx, "10-244-1-10.default.pod.cluster.local", A),
        ResponseCode::NXDomain,
    );
}

#[test]
fn apex_ns_and_soa() {
    let idx = index_with(PodMode::Insecure, &snapshot());
    let r = ask(&idx, "cluster.local", wire::TYPE_NS);
    assert_eq!(
        r.answers(),
        vec!["cluster.local. 5 NS ns.dns.cluster.local."]
    );
    assert_eq!(r.additional(), vec!["ns.dns.cluster.local. A 10.96.0.10"]);
    let r = ask(&idx, "Cluster.Local", wire::TYPE_SOA);
    assert_eq!(r.msg.answers.len(), 1);
    assert!(
        r.answers()[0].contains("SOA ns.dns.cluster.local. hostmaster.cluster.local. 42 "),
        "{:?}",
        r.answers()
    );
    assert_eq!(
        ask(&idx, "ns.dns.cluster.local", A).answers(),
        vec!["ns.dns.cluster.local. 5 A 10.96.0.10"]
    );
}

#[test]
fn negative_answers_like_coredns() {
    let idx = index_with(PodMode::Insecure, &snapshot());
    for name in [
        "cluster.local",
        "svc.cluster.local",
        "pod.cluster.local",
        "default.svc.cluster.local",
        "empty.svc.cluster.local",
    ] {
        assert_negative(&ask(&idx, name, A), ResponseCode::NoError);
    }
    for name in [
        "nope.default.svc.cluster.local",
        "kubernetes.default.default.svc.cluster.local",
        "kubernetes.default.svc.default.svc.cluster.local",
        "nons.svc.cluster.local",
        "foo.cluster.local",
        "a.b.c.kubernetes.default.svc.cluster.local",
    ] {
        assert_negative(&ask(&idx, name, A), ResponseCode::NXDomain);
    }
}

#[test]
fn zone_transfer_refused_and_servfail_before_sync() {
    let idx = index_with(PodMode::Insecure, &snapshot());
    assert_eq!(
        ask(&idx, "cluster.local", wire::TYPE_AXFR).rcode(),
        ResponseCode::Refused
    );
    assert_eq!(
        ask(&idx, "cluster.local", wire::TYPE_IXFR).rcode(),
        ResponseCode::Refused
    );
    let unsynced = IndexBuilder::new(cfg(PodMode::Insecure)).index();
    let r = ask(&unsynced, "kubernetes.default.svc.cluster.local", A);
    assert_eq!(r.rcode(), ResponseCode::ServFail);
    // Outside names are still forwarded before the sync.
    assert!(ask_idx(&unsynced, "example.com", A, None, true).is_none());
}

#[test]
fn outside_names_forward_only_with_recursion() {
    let idx = index_with(PodMode::Insecure, &snapshot());
    assert!(ask_idx(&idx, "example.com", A, None, true).is_none());
    let r = ask(&idx, "example.com", A);
    assert_eq!(r.rcode(), ResponseCode::Refused);
    assert!(!r.msg.metadata.recursion_available);
    // "cluster.localx" is not in the zone.
    assert!(ask_idx(&idx, "foo.xcluster.local", A, None, true).is_none());
}

#[test]
fn big_headless_truncates_without_edns_and_fits_edns_size() {
    let mut snap = snapshot();
    let eps: Vec<Ep> = (0..100)
        .map(|i| Ep::ready(&format!("10.250.{}.{}", i / 250, i % 250 + 1)))
        .collect();
    snap.services.insert(
        nn("default", "big"),
        Arc::new(fixtures::headless("default", "big", &[])),
    );
    snap.endpoint_slices.insert(
        nn("default", "big-1"),
        Arc::new(fixtures::slice(
            "default",
            "big-1",
            "big",
            "IPv4",
            &eps,
            &[],
        )),
    );
    let idx = index_with(PodMode::Insecure, &snap);
    let r = ask(&idx, "big.default.svc.cluster.local", A);
    assert!(r.size <= 512, "{}", r.size);
    assert!(r.msg.metadata.truncation);
    let r = ask_idx(&idx, "big.default.svc.cluster.local", A, Some(1000), false).unwrap();
    assert!(r.size <= 1000, "{}", r.size);
    assert!(r.msg.metadata.truncation);
    assert!(r.msg.edns.is_some());
    let r = ask_idx(&idx, "big.default.svc.cluster.local", A, Some(4096), false).unwrap();
    assert!(r.size <= wire::MAX_UDP_PAYLOAD as usize);
    let pkt = query("big.default.svc.cluster.local", A, None);
    let mut out = Vec::new();
    handle_packet(&idx, &pkt, || false, false, &mut out);
    let m = Message::from_vec(&out).unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 100);
}

#[test]
fn bad_packets_get_formerr_or_notimp() {
    let idx = index_with(PodMode::Insecure, &snapshot());
    let mut out = Vec::new();
    let mut two = query("a.cluster.local", A, None);
    two[5] = 2;
    assert_eq!(
        handle_packet(&idx, &two, || true, true, &mut out),
        Outcome::Reply(wire::Rcode::FormErr)
    );
    let mut upd = query("cluster.local", wire::TYPE_SOA, None);
    upd[2] = 5 << 3; // UPDATE
    assert_eq!(
        handle_packet(&idx, &upd, || true, true, &mut out),
        Outcome::Reply(wire::Rcode::NotImp)
    );
    assert_eq!(
        Message::from_vec(&out).unwrap().metadata.response_code,
        ResponseCode::NotImp
    );
    assert_eq!(
        handle_packet(&idx, &[1, 2, 3], || true, true, &mut out),
        Outcome::Drop
    );
    let mut chaos = query("version.bind", TXT, None);
    let n = chaos.len();
    chaos[n - 1] = 3;
    assert_eq!(
        handle_packet(&idx, &chaos, || true, true, &mut out),
        Outcome::Reply(wire::Rcode::Refused)
    );
}

/// Applies `changes` incrementally and checks the result answers exactly
/// like an index built from scratch from the same snapshot.
fn apply_and_compare(
    b: &mut IndexBuilder,
    snap: Snapshot,
    changes: Vec<(Kind, &str, &str)>,
) -> Arc<Index> {
    let cs = ChangeSet {
        snapshot: Arc::new(snap.clone()),
        changes: changes
            .into_iter()
            .map(|(k, ns, n)| Change {
                key: ObjectKey::new(k, Some(ns), n),
                change: ChangeType::Modified,
            })
            .collect(),
        full_resync: false,
    };
    let inc = b.apply(&cs);
    let full = index_with(PodMode::Verified, &snap);
    assert_eq!(
        *inc.namespaces,
        *full.namespaces.clone(),
        "namespaces/services differ"
    );
    assert_eq!(*inc.ptr, *full.ptr, "PTR records differ");
    let mut ip: Vec<_> = inc.pods.iter().collect();
    let mut fp: Vec<_> = full.pods.iter().collect();
    ip.sort();
    fp.sort();
    assert_eq!(ip, fp, "pod addresses differ");
    assert_eq!(inc.services_total, full.services_total);
    inc
}

#[test]
fn incremental_updates_match_full_rebuilds() {
    let mut snap = snapshot();
    let mut b = IndexBuilder::new(cfg(PodMode::Verified));
    b.full(&snap);
    // Service created.
    snap.services.insert(
        nn("default", "new"),
        Arc::new(fixtures::service("default", "new", &["10.96.0.77"], &[])),
    );
    let idx = apply_and_compare(
        &mut b,
        snap.clone(),
        vec![(Kind::Service, "default", "new")],
    );
    assert_eq!(
        ask(&idx, "new.default.svc.cluster.local", A)
            .answers()
            .len(),
        1
    );
    // ExternalName changed, then ExternalName -> ClusterIP.
    snap.services.insert(
        nn("default", "ext"),
        Arc::new(fixtures::external("default", "ext", "other.example.org")),
    );
    let idx = apply_and_compare(
        &mut b,
        snap.clone(),
        vec![(Kind::Service, "default", "ext")],
    );
    assert!(ask(&idx, "ext.default.svc.cluster.local", A).answers()[0]
        .ends_with("CNAME other.example.org."));
    snap.services.insert(
        nn("default", "ext"),
        Arc::new(fixtures::service("default", "ext", &["10.96.0.88"], &[])),
    );
    let idx = apply_and_compare(
        &mut b,
        snap.clone(),
        vec![(Kind::Service, "default", "ext")],
    );
    assert_eq!(
        ask(&idx, "ext.default.svc.cluster.local", A).answers(),
        vec!["ext.default.svc.cluster.local. 5 A 10.96.0.88"]
    );
    // Endpoint becomes not ready.
    snap.endpoint_slices.insert(
        nn("default", "db-abc"),
        Arc::new(fixtures::slice(
            "default",
            "db-abc",
            "db",
            "IPv4",
            &[Ep::not_ready("10.244.1.10")],
            &[("pg", 5432, "TCP")],
        )),
    );
    let idx = apply_and_compare(
        &mut b,
        snap.clone(),
        vec![(Kind::EndpointSlice, "default", "db-abc")],
    );
    assert_eq!(
        ask(&idx, "db.default.svc.cluster.local", A).rcode(),
        ResponseCode::NoError
    );
    assert!(ask(&idx, "db.default.svc.cluster.local", A)
        .answers()
        .is_empty());
    // Slice deleted: the service loses the v6 endpoint too -> NXDOMAIN.
    snap.endpoint_slices.remove(&nn("default", "db-v6"));
    let idx = apply_and_compare(
        &mut b,
        snap.clone(),
        vec![(Kind::EndpointSlice, "default", "db-v6")],
    );
    assert_eq!(
        ask(&idx, "db.default.svc.cluster.local", A).rcode(),
        ResponseCode::NXDomain
    );
    // Service deleted; a service in a new namespace without a Namespace object.
    snap.services.remove(&nn("default", "kubernetes"));
    snap.services.insert(
        nn("team", "api"),
        Arc::new(fixtures::service("team", "api", &["10.96.1.1"], &[])),
    );
    let idx = apply_and_compare(
        &mut b,
        snap.clone(),
        vec![
            (Kind::Service, "default", "kubernetes"),
            (Kind::Service, "team", "api"),
        ],
    );
    assert_eq!(
        ask(&idx, "kubernetes.default.svc.cluster.local", A).rcode(),
        ResponseCode::NXDomain
    );
    assert!(
        ask_idx(&idx, "1.0.96.10.in-addr.arpa", PTR, None, true).is_none(),
        "PTR gone with the service"
    );
    assert_eq!(
        ask(&idx, "team.svc.cluster.local", A).rcode(),
        ResponseCode::NoError
    );
    // Namespace deleted, pod moved.
    snap.namespaces.remove("empty");
    snap.pods.insert(
        nn("default", "p1"),
        Arc::new(fixtures::pod("default", "p1", &["10.244.9.9"])),
    );
    let idx = apply_and_compare(
        &mut b,
        snap.clone(),
        vec![(Kind::Namespace, "", "empty"), (Kind::Pod, "default", "p1")],
    );
    assert_eq!(
        ask(&idx, "empty.svc.cluster.local", A).rcode(),
        ResponseCode::NXDomain
    );
    assert_eq!(
        ask(&idx, "10-244-9-9.default.pod.cluster.local", A)
            .answers()
            .len(),
        1
    );
    assert_eq!(
        ask(&idx, "10-244-1-10.default.pod.cluster.local", A).rcode(),
        ResponseCode::NXDomain
    );
    // The last service of a namespace without an object goes: so does the namespace.
    snap.services.remove(&nn("team", "api"));
    let idx = apply_and_compare(&mut b, snap.clone(), vec![(Kind::Service, "team", "api")]);
    assert_eq!(
        ask(&idx, "team.svc.cluster.local", A).rcode(),
        ResponseCode::NXDomain
    );
}
