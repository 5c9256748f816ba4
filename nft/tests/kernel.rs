//! Behaviour against the real kernel, each test in its own fresh network
//! namespace: transaction atomicity and error attribution, large batches in
//! one datagram, destroy semantics, element userdata read-back (the bridge
//! plugin's GC), rule handles (replace/insert/delete), flushes, dumps.

use std::net::Ipv4Addr;
use std::time::Duration;

use netns_fixtures::Netns;
use podnet_nft::*;

const F: Family = Family::Ip;
const ENOENT: i32 = 2;
const EOPNOTSUPP: i32 = 95;
const T: &str = "podnet";

/// Runs `f` with a socket inside a fresh namespace; returns the namespace
/// too so the test can inspect it with `nft`.
fn in_netns<R: Send>(f: impl FnOnce(&mut Nft) -> R + Send) -> (Netns, R) {
    let ns = Netns::new("nftk").expect("create netns");
    let r = ns
        .enter(|| {
            let mut n = Nft::new().expect("open nftables socket");
            f(&mut n)
        })
        .expect("enter netns");
    (ns, r)
}

fn base_batch() -> Batch {
    let mut b = Batch::new();
    b.add_table(&Table::new(F, T));
    b.add_chain(&Chain::new(F, T, "a")).unwrap();
    b.add_chain(&Chain::new(F, T, "b")).unwrap();
    b
}

fn svc_map(name: &str) -> Set {
    Set::new(
        F,
        T,
        name,
        [
            DataType::Ipv4Addr,
            DataType::InetProto,
            DataType::InetService,
        ],
    )
    .map(DataType::Verdict)
}

fn svc_elem(i: u32, chain: &str) -> SetElem {
    let ip = Ipv4Addr::from(0x0a60_0000 + i);
    SetElem::new(&[Val::Ipv4(ip), Val::Proto(6), Val::Port(80)])
        .verdict(Verdict::Goto(chain.into()))
}

#[test]
fn failed_transaction_applies_nothing_and_names_the_failing_message() {
    netns_fixtures::skip_unless_root!();
    let (ns, (err, exists)) = in_netns(|n| {
        let mut b = base_batch();
        b.add_set(&svc_map("svc")).unwrap();
        // Goto a chain that does not exist: ENOENT on message 4.
        b.add_elements(F, T, "svc", &[svc_elem(1, "a"), svc_elem(2, "missing")])
            .unwrap();
        b.add_chain(&Chain::new(F, T, "c")).unwrap();
        let err = n.apply(&b).unwrap_err();
        (err, n.table_exists(F, T).unwrap())
    });
    match &err {
        Error::Kernel {
            index, what, errno, ..
        } => {
            assert_eq!(*index, 4, "{err}");
            assert_eq!(*errno, ENOENT, "{err}");
            assert!(what.starts_with("add element ip podnet svc"), "{err}");
        }
        other => panic!("expected a kernel error, got {other}"),
    }
    assert!(err.to_string().contains("add element ip podnet svc"));
    assert!(!exists, "table must not exist after a failed transaction");
    assert_eq!(ns.sh("nft list ruleset").unwrap().trim(), "");
}

#[test]
fn unsupported_rule_in_hook_is_reported_with_its_chain() {
    netns_fixtures::skip_unless_root!();
    let (_ns, err) = in_netns(|n| {
        let mut b = Batch::new();
        b.add_table(&Table::new(F, T));
        b.add_chain(&Chain::new(F, T, "post").base(
            ChainType::Nat,
            HookPoint::Postrouting,
            priority::SRCNAT,
            Policy::Accept,
        ))
        .unwrap();
        // reject is only valid in input/forward/output: EOPNOTSUPP.
        b.add_rule(
            &Rule::new(F, T, "post")
                .reject(Reject::TcpReset)
                .comment("bad"),
        )
        .unwrap();
        n.apply(&b).unwrap_err()
    });
    let msg = err.to_string();
    assert_eq!(err.errno(), Some(EOPNOTSUPP), "{msg}");
    assert!(msg.contains("add rule ip podnet post"), "{msg}");
    assert!(msg.contains("comment \"bad\""), "{msg}");
}

#[test]
fn thirty_thousand_elements_go_in_one_transaction() {
    netns_fixtures::skip_unless_root!();
    let n_elems = 30_000u32;
    let mut b = base_batch();
    b.add_set(&svc_map("svc")).unwrap();
    let elems: Vec<SetElem> = (0..n_elems)
        .map(|i| svc_elem(i, if i % 2 == 0 { "a" } else { "b" }))
        .collect();
    b.add_elements(F, T, "svc", &elems).unwrap();
    // Far beyond the 128 KiB at which nftnl's send path splits batches, and
    // spread over several NEWSETELEM messages (16-bit nest lengths).
    assert!(b.encoded_len() > 1 << 20, "{}", b.encoded_len());
    assert!(b.len() > 4 + 10, "{} messages", b.len());
    let (ns, listed) = in_netns(|n| {
        n.apply(&b).unwrap();
        n.list_elements(F, T, "svc").unwrap()
    });
    assert_eq!(listed.len(), n_elems as usize);
    let first = svc_elem(0, "a");
    assert!(listed.iter().any(
        |e| e.key == first.key && e.data == Some(ElemData::Verdict(Verdict::Goto("a".into())))
    ));
    let text = ns
        .sh("nft list map ip podnet svc | grep -c ' : goto '")
        .unwrap();
    assert!(text.trim().parse::<u32>().unwrap() > 0);
}

#[test]
fn destroy_ignores_missing_objects_delete_does_not() {
    netns_fixtures::skip_unless_root!();
    let (_ns, (destroy, delete, elem_destroy)) = in_netns(|n| {
        let mut b = Batch::new();
        b.destroy_table(F, "nothing-here");
        let destroy = n.apply(&b);
        let mut b = Batch::new();
        b.delete_table(F, "nothing-here");
        let delete = n.apply(&b);
        let mut b = base_batch();
        b.add_set(&svc_map("svc")).unwrap();
        n.apply(&b).unwrap();
        let mut b = Batch::new();
        b.destroy_elements(F, T, "svc", &[svc_elem(7, "a")])
            .unwrap();
        b.destroy_chain(F, T, "not-a-chain");
        b.destroy_set(F, T, "not-a-set");
        let elem_destroy = n.apply(&b);
        (destroy, delete, elem_destroy)
    });
    destroy.expect("destroy of a missing table succeeds");
    elem_destroy.expect("destroy of missing element/chain/set succeeds");
    let e = delete.unwrap_err();
    assert_eq!(e.errno(), Some(ENOENT), "{e}");
    assert!(
        e.to_string().contains("delete table ip nothing-here"),
        "{e}"
    );
}

#[test]
fn startup_replaces_an_existing_table_atomically() {
    netns_fixtures::skip_unless_root!();
    let (ns, _) = in_netns(|n| {
        let mut b = base_batch();
        b.add_rule(&Rule::new(F, T, "a").comment("old rule").accept())
            .unwrap();
        n.apply(&b).unwrap();
        // add (so destroy never fails) + delete + recreate, in one batch.
        let mut b = Batch::new();
        b.add_table(&Table::new(F, T));
        b.delete_table(F, T);
        b.add_table(&Table::new(F, T).comment("generation 2"));
        b.add_chain(&Chain::new(F, T, "fresh")).unwrap();
        b.add_rule(&Rule::new(F, T, "fresh").comment("new rule").drop())
            .unwrap();
        n.apply(&b).unwrap();
        let t = n.list_tables(Some(F)).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].comment.as_deref(), Some("generation 2"));
        let chains: Vec<String> = n
            .list_chains(F, T)
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(chains, vec!["fresh".to_string()]);
    });
    let text = ns.sh("nft list ruleset").unwrap();
    assert!(text.contains("drop comment \"new rule\""), "{text}");
    assert!(!text.contains("old rule"), "{text}");
}

#[test]
fn elements_are_found_and_removed_by_userdata() {
    netns_fixtures::skip_unless_root!();
    let (ns, remaining) = in_netns(|n| {
        let mut b = Batch::new();
        b.add_table(&Table::new(F, T));
        b.add_set(&Set::new(F, T, "ctrs", DataType::Ipv4Addr).comment("container IPs"))
            .unwrap();
        let elems: Vec<SetElem> = (1..=6u8)
            .map(|i| {
                SetElem::new(&[Val::Ipv4(Ipv4Addr::new(10, 88, 0, i))])
                    .comment(&format!("ctr-{}", i % 3))
            })
            .collect();
        b.add_elements(F, T, "ctrs", &elems).unwrap();
        n.apply(&b).unwrap();

        let listed = n.list_elements(F, T, "ctrs").unwrap();
        assert_eq!(listed.len(), 6);
        let stale: Vec<SetElem> = listed
            .iter()
            .filter(|e| e.comment().as_deref() == Some("ctr-1"))
            .map(|e| SetElem::raw(e.key.clone()))
            .collect();
        assert_eq!(stale.len(), 2);
        let mut b = Batch::new();
        b.delete_elements(F, T, "ctrs", &stale).unwrap();
        n.apply(&b).unwrap();
        let sets = n.list_sets(F, T).unwrap();
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0].comment.as_deref(), Some("container IPs"));
        assert_eq!(sets[0].key, Some(TypeConcat::from(DataType::Ipv4Addr)));
        n.list_elements(F, T, "ctrs").unwrap()
    });
    let mut comments: Vec<String> = remaining.iter().filter_map(|e| e.comment()).collect();
    comments.sort();
    assert_eq!(comments, vec!["ctr-0", "ctr-0", "ctr-2", "ctr-2"]);
    let text = ns.sh("nft list set ip podnet ctrs").unwrap();
    assert!(text.contains("10.88.0.2 comment \"ctr-2\""), "{text}");
    assert!(!text.contains("10.88.0.1 "), "{text}");
}

#[test]
fn rules_by_handle_insert_replace_delete() {
    netns_fixtures::skip_unless_root!();
    let (ns, _) = in_netns(|n| {
        let mut b = base_batch();
        for c in ["one", "two", "three"] {
            b.add_rule(&Rule::new(F, T, "a").counter().comment(c))
                .unwrap();
        }
        n.apply(&b).unwrap();
        let rules = n.list_rules(F, T, Some("a")).unwrap();
        let names: Vec<_> = rules.iter().map(|r| r.comment.clone().unwrap()).collect();
        assert_eq!(names, ["one", "two", "three"]);
        assert_eq!(rules[0].exprs, ["counter"]);
        let (h1, h2, h3) = (rules[0].handle, rules[1].handle, rules[2].handle);

        let mut b = Batch::new();
        let mut rep = Rule::new(F, T, "a").drop().comment("two-replaced");
        rep.handle = Some(h2);
        b.replace_rule(&rep).unwrap();
        let mut ins = Rule::new(F, T, "a").accept().comment("before-three");
        ins.position = Some(h3);
        b.insert_rule(&ins).unwrap();
        b.insert_rule(&Rule::new(F, T, "a").accept().comment("head"))
            .unwrap();
        b.delete_rule(F, T, "a", h1);
        n.apply(&b).unwrap();
        let names: Vec<_> = n
            .list_rules(F, T, Some("a"))
            .unwrap()
            .into_iter()
            .map(|r| r.comment.unwrap())
            .collect();
        assert_eq!(names, ["head", "two-replaced", "before-three", "three"]);

        let mut b = Batch::new();
        b.flush_chain(F, T, "a");
        n.apply(&b).unwrap();
        assert!(n.list_rules(F, T, Some("a")).unwrap().is_empty());
    });
    assert!(!ns
        .sh("nft list chain ip podnet a")
        .unwrap()
        .contains("comment"));
}

#[test]
fn dumps_report_chains_sets_and_timeouts() {
    netns_fixtures::skip_unless_root!();
    let (_ns, _) = in_netns(|n| {
        let mut b = base_batch();
        b.add_chain(
            &Chain::new(F, T, "pre")
                .base(
                    ChainType::Nat,
                    HookPoint::Prerouting,
                    priority::DSTNAT,
                    Policy::Accept,
                )
                .comment("entry"),
        )
        .unwrap();
        b.add_set(&svc_map("svc").comment("services")).unwrap();
        let mut aff = Set::new(F, T, "aff", DataType::Ipv4Addr).timeout(Duration::from_secs(3600));
        aff.flags.dynamic = true;
        b.add_set(&aff).unwrap();
        b.add_elements(
            F,
            T,
            "aff",
            &[SetElem::new(&[Val::Ipv4(Ipv4Addr::new(1, 2, 3, 4))])
                .timeout(Duration::from_secs(60))],
        )
        .unwrap();
        b.add_rule(
            &Rule::new(F, T, "pre")
                .dynset(
                    DynsetOp::Update,
                    &[Field::IpSaddr],
                    SetRef::named("aff"),
                    None,
                )
                .unwrap(),
        )
        .unwrap();
        n.apply(&b).unwrap();

        let chains = n.list_chains(F, T).unwrap();
        let pre = chains.iter().find(|c| c.name == "pre").unwrap();
        assert_eq!(pre.hook, Some((0, -100)));
        assert_eq!(pre.chain_type.as_deref(), Some("nat"));
        assert_eq!(pre.comment.as_deref(), Some("entry"));
        assert!(chains.iter().any(|c| c.name == "a" && c.hook.is_none()));

        let sets = n.list_sets(F, T).unwrap();
        let svc = sets.iter().find(|s| s.name == "svc").unwrap();
        assert_eq!(
            svc.key,
            Some(TypeConcat::new(&[
                DataType::Ipv4Addr,
                DataType::InetProto,
                DataType::InetService
            ]))
        );
        assert_eq!(svc.comment.as_deref(), Some("services"));
        let aff = sets.iter().find(|s| s.name == "aff").unwrap();
        assert_eq!(aff.timeout, Some(Duration::from_secs(3600)));

        let elems = n.list_elements(F, T, "aff").unwrap();
        assert_eq!(elems.len(), 1);
        assert_eq!(elems[0].timeout, Some(Duration::from_secs(60)));
        let left = elems[0].expires.unwrap();
        assert!(
            left <= Duration::from_secs(60) && left > Duration::from_secs(30),
            "{left:?}"
        );

        assert!(n.table_exists(F, T).unwrap());
        assert!(!n.table_exists(Family::Ip6, T).unwrap());

        let mut b = Batch::new();
        b.flush_set(F, T, "aff");
        b.flush_table(F, T);
        n.apply(&b).unwrap();
        assert!(n.list_elements(F, T, "aff").unwrap().is_empty());
        assert!(n.list_rules(F, T, None).unwrap().is_empty());
    });
}

/// The example from README.md, applied for real.
#[test]
fn readme_example_applies() {
    netns_fixtures::skip_unless_root!();
    let build = || -> std::result::Result<Batch, Box<dyn std::error::Error>> {
        let (f, t) = (Family::Ip, "podnet");
        let mut b = Batch::new();
        b.add_table(&Table::new(f, t).comment("podnet service proxy"));
        b.add_chain(&Chain::new(f, t, "svc-web"))?;
        b.add_chain(&Chain::new(f, t, "ep-a"))?;
        b.add_chain(&Chain::new(f, t, "ep-b"))?;
        b.add_chain(&Chain::new(f, t, "services").base(
            ChainType::Nat,
            HookPoint::Prerouting,
            priority::DSTNAT,
            Policy::Accept,
        ))?;
        b.add_chain(&Chain::new(f, t, "postrouting").base(
            ChainType::Nat,
            HookPoint::Postrouting,
            priority::SRCNAT,
            Policy::Accept,
        ))?;
        b.add_set(
            &Set::new(
                f,
                t,
                "service-ips",
                [
                    DataType::Ipv4Addr,
                    DataType::InetProto,
                    DataType::InetService,
                ],
            )
            .map(DataType::Verdict)
            .comment("ClusterIP, external IP and LB IP services"),
        )?;
        b.add_elements(
            f,
            t,
            "service-ips",
            &[SetElem::new(&[
                Val::Ipv4(Ipv4Addr::new(10, 96, 0, 10)),
                Val::Proto(6),
                Val::Port(80),
            ])
            .verdict(Verdict::Goto("svc-web".into()))],
        )?;
        b.add_rule(&Rule::new(f, t, "services").vmap(
            &[Field::IpDaddr, Field::L4Proto, Field::ThDport],
            SetRef::named("service-ips"),
        )?)?;
        let eps = b.add_anonymous_set(
            &Set::anonymous(f, t, DataType::Integer32).map(DataType::Verdict),
            &[
                SetElem::new(&[Val::U32(0)]).verdict(Verdict::Goto("ep-a".into())),
                SetElem::new(&[Val::U32(1)]).verdict(Verdict::Goto("ep-b".into())),
            ],
        )?;
        b.add_rule(&Rule::new(f, t, "svc-web").numgen_vmap(NumgenKind::Random, 2, eps))?;
        b.add_rule(
            &Rule::new(f, t, "ep-a")
                .eq(Field::L4Proto, Val::Proto(6))
                .dnat("10.1.0.5".parse()?, Some(8080)),
        )?;
        b.add_rule(
            &Rule::new(f, t, "postrouting")
                .any_bits(Field::Mark, 0x4000)
                .masquerade(nat_flags::FULLY_RANDOM)
                .comment("masquerade marked traffic"),
        )?;
        Ok(b)
    };
    let b = build().unwrap();
    let (ns, rules) = in_netns(|n| {
        n.apply(&b)?;
        n.list_rules(F, T, None)
    });
    let rules = rules.unwrap();
    assert_eq!(rules.len(), 4);
    // Every rule the kernel dumps back decodes into typed expressions.
    for r in &rules {
        assert!(r.expressions.is_some(), "undecodable rule {r:?}");
    }
    let services = rules.iter().find(|r| r.chain == "services").unwrap();
    assert!(matches!(
        services.expressions.as_ref().unwrap().last(),
        Some(Expr::Lookup { dreg: Some(Reg::VERDICT), set, .. }) if set.name == "service-ips"
    ));
    let text = ns.sh("nft list table ip podnet").unwrap();
    for want in [
        "ip daddr . meta l4proto . th dport vmap @service-ips",
        "10.96.0.10 . tcp . 80 : goto svc-web",
        "numgen random mod 2 vmap { 0 : goto ep-a, 1 : goto ep-b }",
        "dnat to 10.1.0.5:8080",
        "meta mark & 0x00004000 != 0x00000000 masquerade fully-random comment \"masquerade marked traffic\"",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn map_element_retargeting_needs_delete_and_add_in_one_batch() {
    netns_fixtures::skip_unless_root!();
    let (_ns, (conflict, listed, create_again)) = in_netns(|n| {
        let mut b = base_batch();
        b.add_set(&svc_map("svc")).unwrap();
        b.add_elements(F, T, "svc", &[svc_elem(1, "a")]).unwrap();
        n.apply(&b).unwrap();
        // Re-adding the same element is idempotent.
        let mut b = Batch::new();
        b.add_table(&Table::new(F, T));
        b.add_elements(F, T, "svc", &[svc_elem(1, "a")]).unwrap();
        n.apply(&b).unwrap();
        // Same key, other verdict: rejected as long as the old one exists.
        let mut b = Batch::new();
        b.add_elements(F, T, "svc", &[svc_elem(1, "b")]).unwrap();
        let conflict = n.apply(&b);
        // Delete + add in one transaction retargets atomically.
        let mut b = Batch::new();
        b.delete_elements(F, T, "svc", &[svc_elem(1, "a")]).unwrap();
        b.add_elements(F, T, "svc", &[svc_elem(1, "b")]).unwrap();
        n.apply(&b).unwrap();
        let listed = n.list_elements(F, T, "svc").unwrap();
        let mut b = Batch::new();
        b.create_table(&Table::new(F, T));
        (conflict, listed, n.apply(&b))
    });
    let e = conflict.unwrap_err();
    assert!(e.to_string().contains("add element ip podnet svc"), "{e}");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].data,
        Some(ElemData::Verdict(Verdict::Goto("b".into())))
    );
    let e = create_again.unwrap_err();
    assert_eq!(e.errno(), Some(17), "{e}"); // EEXIST
    assert!(e.to_string().contains("create table ip podnet"), "{e}");
}
