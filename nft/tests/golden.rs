//! Golden tests: for representative rulesets, (1) the netlink messages our
//! encoder produces equal, attribute for attribute, what `nft --debug=mnl -f`
//! sends for the same ruleset file, and (2) loading our batch into a fresh
//! namespace makes `nft list ruleset` print exactly what it prints after
//! `nft -f` loaded the file in another fresh namespace.
//!
//! Runs only as root; every kernel interaction happens in test namespaces.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use netns_fixtures::Netns;
use podnet_nft::*;

/// One netlink message: type, nfgenmsg and attribute bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    ty: u16,
    nfgen: [u8; 4],
    attrs: Vec<u8>,
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses libmnl's `mnl_nlmsg_fprintf` output (what `nft --debug=mnl`
/// prints) back into messages; only those inside the batch are returned.
fn parse_mnl_dump(text: &str) -> Vec<Msg> {
    let text = strip_ansi(text);
    let mut msgs: Vec<Msg> = Vec::new();
    let mut cur: Option<Msg> = None;
    for line in text.lines() {
        let cols: Vec<&str> = line.split('|').collect();
        if line.contains("| message length |") {
            if let Some(m) = cur.take() {
                msgs.push(m);
            }
            cur = Some(Msg {
                ty: 0,
                nfgen: [0; 4],
                attrs: Vec::new(),
            });
        } else if line.contains("|  type | flags  |") {
            let m = cur.as_mut().expect("type line inside a message");
            m.ty = cols[1].trim().parse().expect("message type");
        } else if line.contains("|  extra header  |") {
            let m = cur.as_mut().expect("extra header inside a message");
            let b: Vec<u8> = cols[1]
                .split_whitespace()
                .map(|h| u8::from_str_radix(h, 16).unwrap())
                .collect();
            m.nfgen.copy_from_slice(&b);
        } else if line.contains("|len |flags| type|") {
            let m = cur.as_mut().expect("attribute inside a message");
            let len: u16 = cols[1].trim().parse().unwrap();
            let flags = cols[2].trim();
            let mut kind: u16 = cols[3].trim().parse().unwrap();
            if flags.contains('N') {
                kind |= 0x8000;
            }
            if flags.contains('B') {
                kind |= 0x4000;
            }
            m.attrs.extend_from_slice(&len.to_ne_bytes());
            m.attrs.extend_from_slice(&kind.to_ne_bytes());
        } else if line.contains("|      data      |") {
            let m = cur.as_mut().expect("data inside a message");
            for h in cols[1].split_whitespace() {
                m.attrs.push(u8::from_str_radix(h, 16).unwrap());
            }
        }
    }
    if let Some(m) = cur.take() {
        msgs.push(m);
    }
    // Keep what lies between BATCH_BEGIN (16) and BATCH_END (17).
    let begin = msgs
        .iter()
        .position(|m| m.ty == 16)
        .expect("batch begin in dump");
    let end = msgs
        .iter()
        .rposition(|m| m.ty == 17)
        .expect("batch end in dump");
    msgs[begin + 1..end].to_vec()
}

/// Splits our encoded batch into messages (without BEGIN/END).
fn split_encoded(buf: &[u8]) -> Vec<Msg> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().unwrap());
        let mut nfgen = [0; 4];
        nfgen.copy_from_slice(&buf[at + 16..at + 20]);
        out.push(Msg {
            ty,
            nfgen,
            attrs: buf[at + 20..at + len].to_vec(),
        });
        at += (len + 3) & !3;
    }
    out[1..out.len() - 1].to_vec()
}

/// Renders attributes as an indented tree for readable diffs.
fn tree(buf: &[u8], depth: usize, out: &mut String) {
    let mut at = 0;
    while at + 4 <= buf.len() {
        let len = u16::from_ne_bytes([buf[at], buf[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([buf[at + 2], buf[at + 3]]);
        if len < 4 || at + len > buf.len() {
            out.push_str(&format!("{}<bad attr len {len}>\n", "  ".repeat(depth)));
            return;
        }
        let val = &buf[at + 4..at + len];
        if kind & 0x8000 != 0 {
            out.push_str(&format!("{}{} {{\n", "  ".repeat(depth), kind & 0x3fff));
            tree(val, depth + 1, out);
            out.push_str(&format!("{}}}\n", "  ".repeat(depth)));
        } else {
            let hex: Vec<String> = val.iter().map(|b| format!("{b:02x}")).collect();
            out.push_str(&format!(
                "{}{} = {}\n",
                "  ".repeat(depth),
                kind,
                hex.join(" ")
            ));
        }
        at += (len + 3) & !3;
    }
}

fn render(m: &Msg) -> String {
    let mut s = format!("type {} nfgen {:02x?}\n", m.ty, m.nfgen);
    tree(&m.attrs, 1, &mut s);
    s
}

fn golden_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// `nft list ruleset` with the element `expires` countdowns removed (they
/// differ by however long the test took).
fn listing(ns: &Netns) -> String {
    let out = ns.sh("nft list ruleset").expect("nft list ruleset");
    let mut cleaned = String::new();
    let mut words = out.split(' ').peekable();
    let mut first = true;
    while let Some(w) = words.next() {
        if w == "expires" {
            words.next();
            continue;
        }
        if !first {
            cleaned.push(' ');
        }
        cleaned.push_str(w);
        first = false;
    }
    cleaned
}

/// Runs the golden comparison for `file` against `batch`.
fn check(file: &str, batch: &Batch, must_contain: &[&str]) {
    let path = golden_file(file);
    let path = path.to_str().unwrap();

    // What nft sends, and what nft lists after loading its own file.
    let nft_ns = Netns::new("nftgold").unwrap();
    let out = nft_ns
        .exec(&["nft", "--debug=mnl", "-f", path])
        .expect("run nft");
    assert!(
        out.status.success(),
        "nft -f {file} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = parse_mnl_dump(&String::from_utf8_lossy(&out.stdout));
    let nft_listing = listing(&nft_ns);
    for s in must_contain {
        assert!(
            nft_listing.contains(s),
            "{file}: nft listing lacks {s:?}:\n{nft_listing}"
        );
    }

    let ours = split_encoded(&batch.encode(1, 0).buf);
    let n = ours.len().max(theirs.len());
    for i in 0..n {
        let (a, b) = (ours.get(i), theirs.get(i));
        if a != b {
            panic!(
                "{file}: message {i} differs ({})\n--- ours\n{}\n--- nft\n{}",
                batch.describe(i).unwrap_or("-"),
                a.map(render).unwrap_or_else(|| "<none>".into()),
                b.map(render).unwrap_or_else(|| "<none>".into()),
            );
        }
    }

    // Our batch through our socket: same listing.
    let our_ns = Netns::new("nftgold").unwrap();
    our_ns
        .enter(|| Nft::new()?.apply(batch))
        .unwrap()
        .unwrap_or_else(|e| panic!("{file}: applying our batch: {e}"));
    let our_listing = listing(&our_ns);
    assert_eq!(our_listing, nft_listing, "{file}: listings differ");
}

fn ip4(s: &str) -> Val {
    Val::Ipv4(s.parse::<Ipv4Addr>().unwrap())
}

fn ip6(s: &str) -> Val {
    Val::Ipv6(s.parse::<Ipv6Addr>().unwrap())
}

fn goto(c: &str) -> Verdict {
    Verdict::Goto(c.into())
}

const SVC_KEY: [DataType; 3] = [
    DataType::Ipv4Addr,
    DataType::InetProto,
    DataType::InetService,
];

#[test]
fn proxy_core_matches_nft() {
    netns_fixtures::skip_unless_root!();
    let (f, t) = (Family::Ip, "podnet");
    let mut b = Batch::new();
    b.add_table(&Table::new(f, t).comment("podnet test"));
    for c in ["svc-a", "ep-a", "ep-b", "services"] {
        b.add_chain(&Chain::new(f, t, c)).unwrap();
    }
    b.add_chain(&Chain::new(f, t, "nat-prerouting").base(
        ChainType::Nat,
        HookPoint::Prerouting,
        priority::DSTNAT,
        Policy::Accept,
    ))
    .unwrap();
    b.add_set(
        &Set::new(f, t, "service-ips", SVC_KEY)
            .map(DataType::Verdict)
            .comment("ClusterIP map"),
    )
    .unwrap();
    b.add_elements(
        f,
        t,
        "service-ips",
        &[
            SetElem::new(&[ip4("10.96.0.10"), Val::Proto(6), Val::Port(53)]).verdict(goto("svc-a")),
            SetElem::new(&[ip4("10.96.0.11"), Val::Proto(17), Val::Port(53)])
                .verdict(Verdict::Jump("svc-a".into())),
        ],
    )
    .unwrap();
    b.add_set(&Set::new(f, t, "cluster-ips", DataType::Ipv4Addr).timeout(Duration::from_secs(10)))
        .unwrap();
    b.add_elements(
        f,
        t,
        "cluster-ips",
        &[SetElem::new(&[ip4("10.0.0.1")]).comment("pod-a")],
    )
    .unwrap();
    let m = b
        .add_anonymous_set(
            &Set::anonymous(f, t, DataType::Integer32).map(DataType::Verdict),
            &[
                SetElem::new(&[Val::U32(0)]).verdict(goto("ep-a")),
                SetElem::new(&[Val::U32(1)]).verdict(goto("ep-b")),
            ],
        )
        .unwrap();
    b.add_rule(&Rule::new(f, t, "svc-a").numgen_vmap(NumgenKind::Random, 2, m))
        .unwrap();
    b.add_rule(
        &Rule::new(f, t, "ep-a")
            .eq(Field::IpSaddr, ip4("10.0.0.1"))
            .mark_or(0x4000)
            .comment("masq hairpin"),
    )
    .unwrap();
    b.add_rule(
        &Rule::new(f, t, "ep-a")
            .eq(Field::L4Proto, Val::Proto(6))
            .dnat("10.0.0.1".parse().unwrap(), Some(8080)),
    )
    .unwrap();
    b.add_rule(
        &Rule::new(f, t, "services")
            .vmap(
                &[Field::IpDaddr, Field::L4Proto, Field::ThDport],
                SetRef::named("service-ips"),
            )
            .unwrap(),
    )
    .unwrap();
    b.add_rule(&Rule::new(f, t, "nat-prerouting").jump("services"))
        .unwrap();
    check(
        "proxy_core.nft",
        &b,
        &[
            "type ipv4_addr . inet_proto . inet_service : verdict",
            "10.96.0.10 . tcp . 53 : goto svc-a",
            "numgen random mod 2 vmap { 0 : goto ep-a, 1 : goto ep-b }",
            "comment \"pod-a\"",
        ],
    );
}

#[test]
fn proxy_extras_match_nft() {
    netns_fixtures::skip_unless_root!();
    let (f, t) = (Family::Ip, "pxe");
    let mut b = Batch::new();
    b.add_table(&Table::new(f, t));
    b.add_chain(&Chain::new(f, t, "c1")).unwrap();
    b.add_set(
        &Set::new(
            f,
            t,
            "dnat-map",
            [DataType::Ipv4Addr, DataType::InetService],
        )
        .map([DataType::Ipv4Addr, DataType::InetService]),
    )
    .unwrap();
    b.add_elements(
        f,
        t,
        "dnat-map",
        &[SetElem::new(&[ip4("10.96.0.1"), Val::Port(80)])
            .data(&[ip4("10.1.0.5"), Val::Port(8080)])],
    )
    .unwrap();
    let mut aff =
        Set::new(f, t, "affinity", DataType::Ipv4Addr).timeout(Duration::from_secs(3 * 3600));
    aff.flags.dynamic = true;
    b.add_set(&aff).unwrap();
    b.add_set(&Set::new(f, t, "local-ips", DataType::Ipv4Addr))
        .unwrap();
    b.add_set(
        &Set::new(
            f,
            t,
            "nodeports",
            [DataType::InetProto, DataType::InetService],
        )
        .map(DataType::Verdict),
    )
    .unwrap();
    let c1 = || Rule::new(f, t, "c1");
    let rules = vec![
        c1().ct_state(ct_state::NEW).counter(),
        c1().eq(Field::FibDaddrType, Val::U32(fib_type::LOCAL))
            .vmap(
                &[Field::L4Proto, Field::ThDport],
                SetRef::named("nodeports"),
            )
            .unwrap(),
        c1().lookup(&[Field::IpSaddr], SetRef::named("local-ips"), true)
            .unwrap()
            .masquerade(nat_flags::FULLY_RANDOM),
        c1().not_in_prefix(Field::IpSaddr, "10.0.0.0".parse().unwrap(), 8)
            .mark_or(0x4000),
        c1().eq(Field::L4Proto, Val::Proto(6))
            .reject(Reject::TcpReset),
        c1().reject(Reject::Icmp(icmp_code::PORT_UNREACH)),
        c1().dynset(
            DynsetOp::Update,
            &[Field::IpSaddr],
            SetRef::named("affinity"),
            Some(Duration::from_secs(3 * 3600)),
        )
        .unwrap(),
        c1().eq(Field::L4Proto, Val::Proto(6))
            .dnat_map(
                Family::Ip,
                &[Field::IpDaddr, Field::ThDport],
                SetRef::named("dnat-map"),
            )
            .unwrap(),
        c1().any_bits(Field::CtStatus, ct_status::DNAT).accept(),
        c1().any_bits(Field::Mark, 0x4000).masquerade(0),
        c1().eq(Field::IpDaddr, ip4("10.96.0.1"))
            .eq(Field::ThDport, Val::Port(80))
            .drop(),
        c1().eq(Field::L4Proto, Val::Proto(17))
            .verdict(Verdict::Return),
    ];
    for r in &rules {
        b.add_rule(r).unwrap();
    }
    check(
        "proxy_extras.nft",
        &b,
        &[
            "fib daddr type local meta l4proto . th dport vmap @nodeports",
            "masquerade fully-random",
            "update @affinity { ip saddr timeout 3h }",
            "dnat ip to ip daddr . tcp dport map @dnat-map",
        ],
    );
}

#[test]
fn ip6_matches_nft() {
    netns_fixtures::skip_unless_root!();
    let (f, t) = (Family::Ip6, "p6");
    let mut b = Batch::new();
    b.add_table(&Table::new(f, t));
    b.add_chain(&Chain::new(f, t, "ep6")).unwrap();
    b.add_chain(&Chain::new(f, t, "svc").base(
        ChainType::Nat,
        HookPoint::Output,
        -100,
        Policy::Accept,
    ))
    .unwrap();
    b.add_set(
        &Set::new(
            f,
            t,
            "svc6",
            [
                DataType::Ipv6Addr,
                DataType::InetProto,
                DataType::InetService,
            ],
        )
        .map(DataType::Verdict),
    )
    .unwrap();
    b.add_elements(
        f,
        t,
        "svc6",
        &[SetElem::new(&[ip6("fd00::10"), Val::Proto(6), Val::Port(80)]).verdict(goto("ep6"))],
    )
    .unwrap();
    b.add_rule(
        &Rule::new(f, t, "ep6")
            .eq(Field::L4Proto, Val::Proto(6))
            .dnat("fd00::1".parse().unwrap(), Some(8080)),
    )
    .unwrap();
    b.add_rule(
        &Rule::new(f, t, "svc")
            .vmap(
                &[Field::Ip6Daddr, Field::L4Proto, Field::ThDport],
                SetRef::named("svc6"),
            )
            .unwrap(),
    )
    .unwrap();
    b.add_rule(
        &Rule::new(f, t, "svc")
            .in_prefix(Field::Ip6Saddr, "fd00::".parse().unwrap(), 64)
            .reject(Reject::Icmp(1)),
    )
    .unwrap();
    check(
        "ip6.nft",
        &b,
        &[
            "ip6 daddr . meta l4proto . th dport vmap @svc6",
            "dnat to [fd00::1]:8080",
        ],
    );
}

#[test]
fn bridge_cni_matches_nft() {
    netns_fixtures::skip_unless_root!();
    let mut b = Batch::new();
    let (f, t) = (Family::Bridge, "pbr");
    b.add_table(&Table::new(f, t));
    b.add_chain(&Chain::new(f, t, "mac-spoof").base(
        ChainType::Filter,
        HookPoint::Prerouting,
        bridge_priority::FILTER,
        Policy::Accept,
    ))
    .unwrap();
    b.add_set(&Set::new(
        f,
        t,
        "macs",
        [DataType::IfName, DataType::EtherAddr],
    ))
    .unwrap();
    b.add_elements(
        f,
        t,
        "macs",
        &[SetElem::new(&[
            Val::IfName("veth1".into()),
            Val::Ether([2, 0, 0, 0, 0, 1]),
        ])],
    )
    .unwrap();
    b.add_rule(
        &Rule::new(f, t, "mac-spoof")
            .lookup(
                &[Field::IifName, Field::EtherSaddr],
                SetRef::named("macs"),
                true,
            )
            .unwrap()
            .drop(),
    )
    .unwrap();
    let (f, t) = (Family::Ip, "pcni");
    b.add_table(&Table::new(f, t));
    b.add_chain(&Chain::new(f, t, "post").base(
        ChainType::Nat,
        HookPoint::Postrouting,
        priority::SRCNAT,
        Policy::Accept,
    ))
    .unwrap();
    b.add_set(&Set::new(f, t, "containers", DataType::Ipv4Addr))
        .unwrap();
    b.add_elements(
        f,
        t,
        "containers",
        &[SetElem::new(&[ip4("10.88.0.2")]).comment("ctr-1")],
    )
    .unwrap();
    b.add_rule(
        &Rule::new(f, t, "post")
            .lookup(&[Field::IpSaddr], SetRef::named("containers"), false)
            .unwrap()
            .not_in_prefix(Field::IpDaddr, "224.0.0.0".parse().unwrap(), 4)
            .masquerade(0),
    )
    .unwrap();
    check(
        "bridge_cni.nft",
        &b,
        &[
            "type ifname . ether_addr",
            "iifname . ether saddr != @macs drop",
            "10.88.0.2 comment \"ctr-1\"",
        ],
    );
}

#[test]
fn inet_filter_matches_nft() {
    netns_fixtures::skip_unless_root!();
    let (f, t) = (Family::Inet, "pin");
    let mut b = Batch::new();
    b.add_table(&Table::new(f, t));
    b.add_chain(&Chain::new(f, t, "fw").base(
        ChainType::Filter,
        HookPoint::Forward,
        priority::FILTER,
        Policy::Drop,
    ))
    .unwrap();
    let r = || Rule::new(f, t, "fw");
    b.add_rule(
        &r().eq(Field::NfProto, Val::U8(2))
            .ct_state(ct_state::ESTABLISHED | ct_state::RELATED)
            .accept(),
    )
    .unwrap();
    b.add_rule(
        &r().ifname_prefix(Field::IifName, "veth")
            .eq(Field::OifName, Val::IfName("eth0".into()))
            .accept(),
    )
    .unwrap();
    b.add_rule(&r().reject(Reject::Icmpx(icmpx::ADMIN_PROHIBITED)))
        .unwrap();
    check(
        "inet.nft",
        &b,
        &[
            "ct state established,related accept",
            "iifname \"veth*\" oifname \"eth0\" accept",
        ],
    );
}

#[test]
fn interval_set_matches_nft() {
    netns_fixtures::skip_unless_root!();
    let (f, t) = (Family::Ip, "piv");
    let mut b = Batch::new();
    b.add_table(&Table::new(f, t));
    b.add_chain(&Chain::new(f, t, "c")).unwrap();
    b.add_set(
        &Set::new(f, t, "cidrs", DataType::Ipv4Addr).flags(SetFlags {
            interval: true,
            ..Default::default()
        }),
    )
    .unwrap();
    let elems = prefix_elems(&[
        ("10.0.0.0".parse().unwrap(), 8),
        ("192.168.1.0".parse().unwrap(), 24),
    ])
    .unwrap();
    b.add_elements(f, t, "cidrs", &elems).unwrap();
    b.add_rule(
        &Rule::new(f, t, "c")
            .lookup(&[Field::IpDaddr], SetRef::named("cidrs"), false)
            .unwrap()
            .accept(),
    )
    .unwrap();
    check(
        "interval.nft",
        &b,
        &[
            "elements = { 10.0.0.0/8, 192.168.1.0/24 }",
            "ip daddr @cidrs accept",
        ],
    );
}

#[test]
fn misc_expressions_match_nft() {
    netns_fixtures::skip_unless_root!();
    let (f, t) = (Family::Ip, "pmisc");
    let mut b = Batch::new();
    b.add_table(&Table::new(f, t));
    b.add_chain(&Chain::new(f, t, "c")).unwrap();
    b.add_chain(&Chain::new(f, t, "post").base(
        ChainType::Nat,
        HookPoint::Postrouting,
        priority::SRCNAT,
        Policy::Accept,
    ))
    .unwrap();
    b.add_chain(&Chain::new(f, t, "raw").base(
        ChainType::Filter,
        HookPoint::Prerouting,
        priority::RAW,
        Policy::Accept,
    ))
    .unwrap();
    let c = || Rule::new(f, t, "c");
    let r1 = Reg::first();
    for r in [
        c().ct_cmp(
            CtKey::DstIp,
            Some(CtDir::Original),
            CmpOp::Eq,
            ip4("10.96.0.1"),
        )
        .accept(),
        c().eq(Field::L4Proto, Val::Proto(17))
            .ct_cmp(
                CtKey::ProtoSrc,
                Some(CtDir::Reply),
                CmpOp::Eq,
                Val::Port(53),
            )
            .accept(),
        c().in_range(Field::ThDport, Val::Port(1000), Val::Port(2000))
            .accept(),
        c().not_in_range(Field::ThDport, Val::Port(3000), Val::Port(4000))
            .drop(),
        c().expr(Expr::Numgen {
            dreg: r1,
            kind: NumgenKind::Incremental,
            modulus: 4,
            offset: 10,
        })
        .expr(Expr::MetaSet {
            key: MetaKey::Mark,
            sreg: r1,
        }),
        c().ct_mark_set(1),
        c().log(Some("podnet: "), Some(2)),
        c().eq(Field::IifName, Val::IfName("veth0".into()))
            .counter(),
        c().ct_state(ct_state::INVALID).drop(),
    ] {
        b.add_rule(&r).unwrap();
    }
    b.add_rule(
        &Rule::new(f, t, "post")
            .eq(Field::L4Proto, Val::Proto(6))
            .masquerade_ports(1024, 2048, 0),
    )
    .unwrap();
    b.add_rule(
        &Rule::new(f, t, "post")
            .eq(Field::IpSaddr, ip4("10.0.0.1"))
            .nat_to(NatKind::Snat, "192.168.0.1".parse().unwrap(), None),
    )
    .unwrap();
    b.add_rule(
        &Rule::new(f, t, "raw")
            .eq(Field::L4Proto, Val::Proto(17))
            .expr(Expr::Notrack),
    )
    .unwrap();
    check(
        "misc.nft",
        &b,
        &[
            "ct original ip daddr 10.96.0.1 accept",
            "th dport != 3000-4000 drop",
            "masquerade to :1024-2048",
            "log prefix \"podnet: \" group 2",
        ],
    );
}

#[test]
fn concat_interval_set_matches_nft() {
    netns_fixtures::skip_unless_root!();
    let (f, t) = (Family::Ip, "pciv");
    let mut b = Batch::new();
    b.add_table(&Table::new(f, t));
    b.add_chain(&Chain::new(f, t, "c")).unwrap();
    b.add_set(
        &Set::new(f, t, "np", [DataType::Ipv4Addr, DataType::InetService]).flags(SetFlags {
            interval: true,
            ..Default::default()
        }),
    )
    .unwrap();
    let one = [ip4("192.168.1.1"), Val::Port(80)];
    b.add_elements(
        f,
        t,
        "np",
        &[
            SetElem::new(&[ip4("10.0.0.0"), Val::Port(30000)])
                .key_end(&[ip4("10.255.255.255"), Val::Port(32767)]),
            SetElem::new(&one).key_end(&one),
        ],
    )
    .unwrap();
    b.add_rule(
        &Rule::new(f, t, "c")
            .lookup(
                &[Field::IpDaddr, Field::ThDport],
                SetRef::named("np"),
                false,
            )
            .unwrap()
            .accept(),
    )
    .unwrap();
    check(
        "concat_interval.nft",
        &b,
        &["10.0.0.0/8 . 30000-32767", "ip daddr . th dport @np accept"],
    );
}
