//! Diff: what to send to go from the installed plan to the desired one. Pure.
//!
//! A partial update touches only changed elements and chains, ordered so that
//! every message in the one transaction is valid when the kernel reaches it:
//! new sets/chains first (empty), then element deletions, chain flushes, rules,
//! element additions, and deletions of chains/sets nothing references any more.
//! A full sync replaces the table atomically: `add table; delete table; add
//! table; add everything`, which also works when a previous run left a table.

use std::collections::BTreeMap;

use crate::plan::{Chain, ElemData, Fields, Fragment, Set, SetDef, TablePlan};
use rustc_hash::FxHashSet;

/// One operation on the table, in transaction order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op<'a> {
    /// `add table` (no-op when it exists).
    AddTable,
    /// `delete table` (with everything in it).
    DeleteTable,
    AddSet(&'a str, &'a SetDef),
    /// `add chain` (a base chain also gets its hook).
    AddChain(&'a str, &'a Chain),
    DeleteElements(&'a str, Vec<&'a Fields>),
    FlushChain(&'a str),
    /// Appends all rules of the chain.
    AddRules(&'a str, &'a Chain),
    AddElements(&'a str, Vec<(&'a Fields, &'a Option<ElemData>)>),
    DeleteChain(&'a str),
    DeleteSet(&'a str),
}

/// The change set for one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff<'a> {
    pub full: bool,
    pub ops: Vec<Op<'a>>,
}

impl Diff<'_> {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    /// Elements the diff adds to `set`.
    pub fn elements_of(&self, set: &str) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                Op::AddElements(s, e) if *s == set => e.len(),
                _ => 0,
            })
            .sum()
    }
    /// (elements added, elements deleted, chains added/flushed/deleted).
    pub fn counts(&self) -> (usize, usize, usize) {
        let (mut add, mut del, mut chains) = (0, 0, 0);
        for op in &self.ops {
            match op {
                Op::AddElements(_, e) => add += e.len(),
                Op::DeleteElements(_, e) => del += e.len(),
                Op::AddChain(..) | Op::FlushChain(_) | Op::DeleteChain(_) => chains += 1,
                _ => {}
            }
        }
        (add, del, chains)
    }
}

/// Replace whatever is installed by `desired`, atomically.
pub fn full(desired: &TablePlan) -> Diff<'_> {
    let mut ops = vec![Op::AddTable, Op::DeleteTable, Op::AddTable];
    for (name, s) in &desired.sets {
        ops.push(Op::AddSet(name, &s.def));
    }
    for (name, c) in &desired.chains {
        ops.push(Op::AddChain(name, c));
    }
    for (name, c) in &desired.chains {
        if !c.rules.is_empty() {
            ops.push(Op::AddRules(name, c));
        }
    }
    for (name, s) in &desired.sets {
        if !s.elements.is_empty() && !s.def.dynamic {
            ops.push(Op::AddElements(name, s.elements.iter().collect()));
        }
    }
    Diff { full: true, ops }
}

/// Like `full(base + fragments)` without building the merged plan: the
/// elements are referenced where the fragments keep them, in fragment order
/// (not sorted). `base` is the skeleton with the shared objects (pick
/// chains, hairpin elements). A key two fragments both claim is sent once,
/// the first fragment's (addresses two services claim are already given to
/// one by the model; this covers a port whose externalIP is its own ClusterIP). Returns
/// the diff and its element count.
pub fn full_from_fragments<'a>(base: &'a TablePlan, frags: &[&'a Fragment]) -> (Diff<'a>, usize) {
    let mut ops = vec![Op::AddTable, Op::DeleteTable, Op::AddTable];
    for (name, s) in &base.sets {
        ops.push(Op::AddSet(name, &s.def));
    }
    for f in frags {
        for (name, s) in &f.sets {
            ops.push(Op::AddSet(name, &s.def));
        }
    }
    let chains = || {
        base.chains
            .iter()
            .chain(frags.iter().flat_map(|f| f.chains.iter()))
    };
    for (name, c) in chains() {
        ops.push(Op::AddChain(name, c));
    }
    for (name, c) in chains() {
        if !c.rules.is_empty() {
            ops.push(Op::AddRules(name, c));
        }
    }
    let mut by_set: BTreeMap<&str, Vec<(&'a Fields, &'a Option<ElemData>)>> = base
        .sets
        .iter()
        .filter(|(_, s)| !s.def.dynamic)
        .map(|(name, s)| (name.as_str(), s.elements.iter().collect()))
        .collect();
    for f in frags {
        for (set, (k, v)) in &f.elements {
            if let Some(list) = by_set.get_mut(set) {
                list.push((k, v));
            }
        }
    }
    let mut count = 0;
    for (name, mut elems) in by_set {
        // Keep the first claimant of a duplicate key (order does not
        // matter to the kernel; a hash set is cheaper than sorting).
        // Fx, not SipHash: keys the proxy derived itself, hashed by the ten thousand.
        let mut seen: FxHashSet<&Fields> = FxHashSet::default();
        seen.reserve(elems.len());
        elems.retain(|(k, _)| seen.insert(*k));
        count += elems.len();
        if !elems.is_empty() {
            ops.push(Op::AddElements(name, elems));
        }
    }
    (Diff { full: true, ops }, count)
}

/// Minimal changes from `installed` to `desired`, or a full sync when a change
/// cannot be expressed incrementally (a set's type/flags or a base chain's
/// hook changed, or nothing is installed).
pub fn diff<'a>(installed: Option<&'a TablePlan>, desired: &'a TablePlan) -> Diff<'a> {
    let Some(installed) = installed else {
        return full(desired);
    };
    if installed.comment != desired.comment || installed.family != desired.family {
        return full(desired);
    }
    for (name, s) in &desired.sets {
        if installed.sets.get(name).is_some_and(|old| old.def != s.def) {
            return full(desired);
        }
    }
    for (name, c) in &desired.chains {
        if installed
            .chains
            .get(name)
            .is_some_and(|old| old.base != c.base || old.comment != c.comment)
        {
            return full(desired);
        }
    }

    let mut ops = Vec::new();
    // 1. new sets and chains, empty, so rules and elements below can refer to them.
    for (name, s) in &desired.sets {
        if !installed.sets.contains_key(name) {
            ops.push(Op::AddSet(name, &s.def));
        }
    }
    for (name, c) in &desired.chains {
        if !installed.chains.contains_key(name) {
            ops.push(Op::AddChain(name, c));
        }
    }
    // 2. stale or changed elements of surviving sets (dynamic sets are
    //    filled by the packet path and left alone).
    let mut additions = Vec::new();
    for (name, s) in &desired.sets {
        if s.def.dynamic {
            continue;
        }
        match installed.sets.get(name) {
            Some(old) => {
                let (del, add) = element_delta(old, s);
                if !del.is_empty() {
                    ops.push(Op::DeleteElements(name, del));
                }
                if !add.is_empty() {
                    additions.push(Op::AddElements(name, add));
                }
            }
            None if !s.elements.is_empty() => {
                additions.push(Op::AddElements(name, s.elements.iter().collect()))
            }
            None => {}
        }
    }
    // 3. flush chains whose rules changed and chains about to go (drops their
    //    references to other chains and sets).
    let changed = |name: &String, c: &Chain| {
        installed
            .chains
            .get(name)
            .is_some_and(|old| old.rules != c.rules)
    };
    for (name, c) in &desired.chains {
        if changed(name, c) {
            ops.push(Op::FlushChain(name));
        }
    }
    let gone_chains: Vec<&'a str> = installed
        .chains
        .keys()
        .filter(|n| !desired.chains.contains_key(*n))
        .map(String::as_str)
        .collect();
    for name in &gone_chains {
        ops.push(Op::FlushChain(name));
    }
    // 4. rules of new and changed chains.
    for (name, c) in &desired.chains {
        let new = !installed.chains.contains_key(name);
        if (new && !c.rules.is_empty()) || changed(name, c) {
            ops.push(Op::AddRules(name, c));
        }
    }
    // 5. new elements (their verdicts may point at chains made in step 1).
    ops.extend(additions);
    // 6. chains and sets nothing refers to any more.
    for name in gone_chains {
        ops.push(Op::DeleteChain(name));
    }
    for name in installed
        .sets
        .keys()
        .filter(|n| !desired.sets.contains_key(*n))
    {
        ops.push(Op::DeleteSet(name));
    }
    Diff { full: false, ops }
}

type Delta<'a> = (Vec<&'a Fields>, Vec<(&'a Fields, &'a Option<ElemData>)>);

fn element_delta<'a>(old: &'a Set, new: &'a Set) -> Delta<'a> {
    let mut del = Vec::new();
    let mut add = Vec::new();
    // Both maps are sorted: one merge pass.
    let mut o = old.elements.iter().peekable();
    let mut n = new.elements.iter().peekable();
    loop {
        match (o.peek(), n.peek()) {
            (Some((ok, ov)), Some((nk, nv))) => match ok.cmp(nk) {
                std::cmp::Ordering::Less => {
                    del.push(*ok);
                    o.next();
                }
                std::cmp::Ordering::Greater => {
                    add.push((*nk, *nv));
                    n.next();
                }
                std::cmp::Ordering::Equal => {
                    if ov != nv {
                        del.push(*ok);
                        add.push((*nk, *nv));
                    }
                    o.next();
                    n.next();
                }
            },
            (Some((ok, _)), None) => {
                del.push(*ok);
                o.next();
            }
            (None, Some((nk, nv))) => {
                add.push((*nk, *nv));
                n.next();
            }
            (None, None) => break,
        }
    }
    (del, add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::{cfg, slice, snapshot, svc};
    use crate::model::{Family, Model};
    use crate::plan::{self, Layout, PlanConfig};

    fn pc() -> PlanConfig {
        PlanConfig {
            family: Family::V4,
            cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
            masquerade_all: false,
            nodeport_cidrs: vec![],
            layout: Layout::Podnet,
        }
    }

    fn plan_of(eps: &[&str], sticky: bool, extra_service: bool) -> TablePlan {
        let mut s = svc("default", "web", "10.96.0.10", &[("http", "TCP", 80, 0)]);
        if sticky {
            s.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
        }
        let mut services = vec![s];
        let e: Vec<(&str, &str, bool, bool, bool)> = eps
            .iter()
            .map(|ip| (*ip, "node-b", true, true, false))
            .collect();
        let mut slices = vec![slice(
            "default",
            "web",
            "a",
            "IPv4",
            &[("http", "TCP", 8080)],
            &e,
        )];
        if extra_service {
            services.push(svc(
                "default",
                "other",
                "10.96.0.11",
                &[("http", "TCP", 80, 0)],
            ));
            slices.push(slice(
                "default",
                "other",
                "a",
                "IPv4",
                &[("http", "TCP", 8080)],
                &[("10.244.2.1", "node-b", true, true, false)],
            ));
        }
        let m = Model::build(&snapshot(services, slices), &cfg());
        plan::build(&pc(), m.v4.values())
    }

    fn describe(d: &Diff) -> Vec<String> {
        d.ops
            .iter()
            .map(|op| match op {
                Op::AddTable => "add table".into(),
                Op::DeleteTable => "delete table".into(),
                Op::AddSet(n, _) => format!("add set {n}"),
                Op::AddChain(n, _) => format!("add chain {n}"),
                Op::DeleteElements(n, e) => format!("delete {} from {n}", e.len()),
                Op::FlushChain(n) => format!("flush chain {n}"),
                Op::AddRules(n, c) => format!("add {} rules to {n}", c.rules.len()),
                Op::AddElements(n, e) => format!("add {} to {n}", e.len()),
                Op::DeleteChain(n) => format!("delete chain {n}"),
                Op::DeleteSet(n) => format!("delete set {n}"),
            })
            .collect()
    }

    #[test]
    fn nothing_installed_is_a_full_replacement() {
        let p = plan_of(&["10.244.1.1"], false, false);
        let d = diff(None, &p);
        assert!(d.full);
        assert_eq!(
            describe(&d)[..3],
            ["add table", "delete table", "add table"]
        );
        assert_eq!(d.counts().0, p.element_count());
    }

    #[test]
    fn identical_plans_need_nothing() {
        let p = plan_of(&["10.244.1.1", "10.244.1.2"], true, true);
        assert!(diff(Some(&p), &p.clone()).is_empty());
    }

    #[test]
    fn endpoint_added_touches_only_elements_and_pick_chains() {
        let old = plan_of(&["10.244.1.1"], false, true);
        let new = plan_of(&["10.244.1.1", "10.244.1.2"], false, true);
        let d = diff(Some(&old), &new);
        assert!(!d.full);
        // web moves from pick-cluster-1 (still used by `other`) to the new pick-cluster-2.
        assert_eq!(
            describe(&d),
            [
                "add chain pick-cluster-2",
                "delete 1 from service-ips",
                "add 2 rules to pick-cluster-2",
                "add 1 to service-endpoints",
                "add 1 to service-ips",
            ]
        );
    }

    #[test]
    fn service_removed_deletes_its_elements_and_unused_chain() {
        let old = plan_of(&["10.244.1.1", "10.244.1.2"], false, true);
        let new = plan_of(&["10.244.1.1"], false, false);
        let d = diff(Some(&old), &new);
        assert!(!d.full);
        // Ordering: deletions of stale elements before the chain they point to goes.
        let ops = describe(&d);
        let pos = |s: &str| {
            ops.iter()
                .position(|o| o == s)
                .unwrap_or_else(|| panic!("{s} missing in {ops:?}"))
        };
        assert!(pos("delete 2 from service-ips") < pos("delete chain pick-cluster-2"));
        assert!(pos("flush chain pick-cluster-2") < pos("delete chain pick-cluster-2"));
        assert!(pos("add 1 to service-ips") < pos("delete chain pick-cluster-2"));
    }

    #[test]
    fn affinity_endpoint_removed_flushes_and_deletes_its_chain_and_set() {
        let old = plan_of(&["10.244.1.1", "10.244.1.2"], true, false);
        let new = plan_of(&["10.244.1.1"], true, false);
        let d = diff(Some(&old), &new);
        assert!(!d.full);
        let ops = describe(&d);
        let gone_chain = old
            .chains
            .keys()
            .find(|c| c.starts_with("endpoint-") && c.contains("10.244.1.2"))
            .unwrap();
        let gone_set = old
            .sets
            .keys()
            .find(|s| s.starts_with("affinity-") && s.contains("10.244.1.2"))
            .unwrap();
        let svc_chain = old
            .chains
            .keys()
            .find(|c| c.starts_with("service-"))
            .unwrap();
        let pos = |s: &str| {
            ops.iter()
                .position(|o| o == s)
                .unwrap_or_else(|| panic!("{s} missing in {ops:?}"))
        };
        assert!(
            pos(&format!("flush chain {svc_chain}")) < pos(&format!("delete chain {gone_chain}"))
        );
        assert!(
            pos(&format!("add 3 rules to {svc_chain}")) < pos(&format!("delete set {gone_set}"))
        );
        assert!(
            pos(&format!("delete chain {gone_chain}")) < pos(&format!("delete set {gone_set}"))
        );
        // The surviving endpoint's chain and set are untouched.
        assert_eq!(
            ops.iter().filter(|o| o.contains("10.244.1.1")).count(),
            0,
            "{ops:?}"
        );
    }

    /// Sets, chains with their rules, and elements of a full replacement.
    type Content<'a> = (
        Vec<&'a str>,
        BTreeMap<&'a str, &'a Vec<crate::plan::Rule>>,
        BTreeMap<(&'a str, Fields), &'a Option<ElemData>>,
    );

    fn content<'a>(d: &'a Diff) -> Content<'a> {
        let (mut sets, mut rules, mut elems) = (Vec::new(), BTreeMap::new(), BTreeMap::new());
        for op in &d.ops {
            match op {
                Op::AddSet(n, _) => sets.push(*n),
                Op::AddChain(n, c) => {
                    rules.insert(*n, &c.rules);
                }
                Op::AddElements(n, e) => {
                    for (k, v) in e {
                        assert!(elems.insert((*n, **k), *v).is_none(), "{n} {k:?} twice");
                    }
                }
                _ => {}
            }
        }
        sets.sort();
        (sets, rules, elems)
    }

    #[test]
    fn fragments_give_the_full_replacement_of_their_merged_plan() {
        let mut web = svc("default", "web", "10.96.0.10", &[("http", "TCP", 80, 0)]);
        web.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
        let one = |name: &str, ip: &str| {
            slice(
                "default",
                name,
                "a",
                "IPv4",
                &[("http", "TCP", 8080)],
                &[(ip, "node-b", true, true, false)],
            )
        };
        // `twin` claims the ClusterIP and port of `other`.
        let s = snapshot(
            vec![
                web,
                svc("default", "other", "10.96.0.11", &[("http", "TCP", 80, 0)]),
                svc("default", "twin", "10.96.0.11", &[("http", "TCP", 80, 0)]),
            ],
            vec![
                one("web", "10.244.1.1"),
                one("other", "10.244.2.1"),
                one("twin", "10.244.3.1"),
            ],
        );
        let m = Model::build(&s, &cfg());
        let frags: Vec<Fragment> = m.v4.values().map(|sp| plan::fragment(&pc(), sp)).collect();
        let refs: Vec<&Fragment> = frags.iter().collect();
        let picks = frags.iter().flat_map(|f| f.picks.iter().copied()).collect();
        let hairpins = frags
            .iter()
            .flat_map(|f| f.hairpins.iter().copied())
            .collect();
        let mut base = plan::skeleton(&pc());
        plan::merge(&pc(), &mut base, [], Some(&picks), Some(&hairpins));
        let (d, count) = full_from_fragments(&base, &refs);
        assert!(d.full);
        assert_eq!(
            describe(&d)[..3],
            ["add table", "delete table", "add table"]
        );
        let merged = plan::build(&pc(), m.v4.values());
        let want_diff = full(&merged);
        let (sets, rules, elems) = content(&d);
        let (want_sets, want_rules, mut want_elems) = content(&want_diff);
        assert_eq!((sets, rules), (want_sets, want_rules));
        // The collision: the first fragment (other) wins here, the last in a merge.
        let key = Fields::from([
            plan::Value::Ip("10.96.0.11".parse().unwrap()),
            plan::Value::Proto(crate::model::Protocol::Tcp),
            plan::Value::Port(80),
            plan::Value::Index(0),
        ]);
        let first = Some(ElemData::Values(Fields::from([
            plan::Value::Ip("10.244.2.1".parse().unwrap()),
            plan::Value::Port(8080),
        ])));
        assert_eq!(elems[&(plan::SERVICE_ENDPOINTS, key)], &first);
        want_elems.insert((plan::SERVICE_ENDPOINTS, key), &first);
        assert_eq!(elems, want_elems);
        assert_eq!(count, merged.element_count());
    }

    #[test]
    fn changed_set_definition_forces_full_sync() {
        let old = plan_of(&["10.244.1.1"], true, false);
        let mut new = old.clone();
        for s in new.sets.values_mut().filter(|s| s.def.dynamic) {
            s.def.timeout = Some(5);
        }
        assert!(diff(Some(&old), &new).full);
    }
}
