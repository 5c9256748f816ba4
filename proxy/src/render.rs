//! Text rendering of a plan in `nft` syntax: the golden-test format, what
//! `podnet-proxy --once --print` shows, and (for the kube-proxy layout) what the
//! comparison benchmark loads with `nft -f`.

use std::fmt::Write;
use std::net::IpAddr;

use crate::diff::{Diff, Op};
use crate::model::Family;
use crate::plan::{
    ChainType, ElemData, FieldType, Fields, KeyExpr, Rule, Set, SetData, Stmt, TablePlan, Value,
    Verdict, TABLE,
};

fn field_type(t: FieldType) -> &'static str {
    match t {
        FieldType::Ipv4 => "ipv4_addr",
        FieldType::Ipv6 => "ipv6_addr",
        FieldType::InetProto => "inet_proto",
        FieldType::InetService => "inet_service",
        FieldType::Index => "integer",
    }
}

/// nft's `typeof` expression for a field (used when a key holds a numgen index,
/// which has no named type).
fn typeof_expr(f: Family, t: FieldType, n: usize) -> String {
    match t {
        FieldType::Ipv4 | FieldType::Ipv6 => format!("{} daddr", f.nft()),
        FieldType::InetProto => "meta l4proto".into(),
        FieldType::InetService => "th dport".into(),
        FieldType::Index => format!("numgen random mod {n}"),
    }
}

pub fn verdict(v: &Verdict) -> String {
    match v {
        Verdict::Jump(c) => format!("jump {c}"),
        Verdict::Goto(c) => format!("goto {c}"),
        Verdict::Return => "return".into(),
        Verdict::Drop => "drop".into(),
        Verdict::Accept => "accept".into(),
    }
}

fn key_expr(f: Family, k: &KeyExpr) -> String {
    match k {
        KeyExpr::Saddr => format!("{} saddr", f.nft()),
        KeyExpr::Daddr => format!("{} daddr", f.nft()),
        KeyExpr::L4proto => "meta l4proto".into(),
        KeyExpr::ThDport => "th dport".into(),
        KeyExpr::Numgen(n) => format!("numgen random mod {n}"),
    }
}

fn key(f: Family, k: &[KeyExpr]) -> String {
    k.iter()
        .map(|k| key_expr(f, k))
        .collect::<Vec<_>>()
        .join(" . ")
}

fn value(v: &Value) -> String {
    match v {
        Value::Ip(ip) => ip.to_string(),
        Value::Proto(p) => p.name().to_string(),
        Value::Port(p) => p.to_string(),
        Value::Index(i) => i.to_string(),
        Value::Net(n) => net(n),
    }
}

fn values(v: &[Value]) -> String {
    v.iter().map(value).collect::<Vec<_>>().join(" . ")
}

fn net(n: &ipnetwork::IpNetwork) -> String {
    if n.prefix() == if n.ip().is_ipv4() { 32 } else { 128 } {
        n.ip().to_string()
    } else {
        format!("{}/{}", n.network(), n.prefix())
    }
}

fn endpoint(ip: &IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(ip) => format!("{ip}:{port}"),
        IpAddr::V6(ip) => format!("[{ip}]:{port}"),
    }
}

pub fn stmt(f: Family, s: &Stmt) -> String {
    let ipx = f.nft();
    match s {
        Stmt::CtStateNew => "ct state new".into(),
        Stmt::CtStatusDnat => "ct status dnat".into(),
        Stmt::Saddr { net: n, negate } => {
            format!("{ipx} saddr {}{}", if *negate { "!= " } else { "" }, net(n))
        }
        Stmt::Daddr { net: n, negate } => {
            format!("{ipx} daddr {}{}", if *negate { "!= " } else { "" }, net(n))
        }
        Stmt::Dport { proto, port } => format!("{} dport {port}", proto.name()),
        Stmt::L4Proto(p) => format!("meta l4proto {}", p.name()),
        Stmt::FibDaddrLocal => "fib daddr type local".into(),
        Stmt::FibSaddrLocal => "fib saddr type local".into(),
        Stmt::MarkUnset(m) => format!("meta mark & {m:#010x} == 0x00000000"),
        Stmt::MarkOr(m) => format!("meta mark set meta mark | {m:#010x}"),
        Stmt::MarkXor(m) => format!("meta mark set meta mark ^ {m:#010x}"),
        Stmt::InSet { key: k, set } => format!("{} @{set}", key(f, k)),
        Stmt::Vmap { key: k, map } => format!("{} vmap @{map}", key(f, k)),
        Stmt::NumgenVmap(targets) => {
            let elems: Vec<String> = targets
                .iter()
                .enumerate()
                .map(|(i, v)| format!("{i} : {}", verdict(v)))
                .collect();
            format!(
                "numgen random mod {} vmap {{ {} }}",
                targets.len(),
                elems.join(", ")
            )
        }
        Stmt::DnatMap { key: k, map } => format!("dnat {ipx} to {} map @{map}", key(f, k)),
        Stmt::Dnat { proto, to } => format!(
            "meta l4proto {} dnat {ipx} to {}",
            proto.name(),
            endpoint(&to.ip, to.port)
        ),
        Stmt::UpdateSaddr(set) => format!("update @{set} {{ {ipx} saddr }}"),
        Stmt::MasqueradeFullyRandom => "masquerade fully-random".into(),
        Stmt::RejectTcpReset => "reject with tcp reset".into(),
        Stmt::Reject => "reject".into(),
        Stmt::Verdict(v) => verdict(v),
    }
}

pub fn rule(f: Family, r: &Rule) -> String {
    let mut s = r
        .stmts
        .iter()
        .map(|s| stmt(f, s))
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(c) = &r.comment {
        let _ = write!(s, " comment \"{c}\"");
    }
    s
}

fn set(out: &mut String, f: Family, name: &str, s: &Set) {
    set_def(out, f, name, &s.def, &s.elements);
}

fn set_def(
    out: &mut String,
    f: Family,
    name: &str,
    d: &crate::plan::SetDef,
    elements: &std::collections::BTreeMap<Fields, Option<ElemData>>,
) {
    let kind = if d.data.is_some() { "map" } else { "set" };
    let _ = writeln!(out, "\t{kind} {name} {{");
    // A numgen index has no named type: describe such keys by `typeof`.
    let n_hint = 1;
    if d.key.contains(&FieldType::Index) {
        let k: Vec<String> = d.key.iter().map(|t| typeof_expr(f, *t, n_hint)).collect();
        let data = match &d.data {
            Some(SetData::Fields(v)) => format!(
                " : {}",
                v.iter()
                    .map(|t| typeof_expr(f, *t, n_hint))
                    .collect::<Vec<_>>()
                    .join(" . ")
            ),
            Some(SetData::Verdict) => " : verdict".into(),
            None => String::new(),
        };
        let _ = writeln!(out, "\t\ttypeof {}{data}", k.join(" . "));
    } else {
        let k: Vec<&str> = d.key.iter().map(|t| field_type(*t)).collect();
        let data = match &d.data {
            Some(SetData::Fields(v)) => format!(
                " : {}",
                v.iter()
                    .map(|t| field_type(*t))
                    .collect::<Vec<_>>()
                    .join(" . ")
            ),
            Some(SetData::Verdict) => " : verdict".into(),
            None => String::new(),
        };
        let _ = writeln!(out, "\t\ttype {}{data}", k.join(" . "));
    }
    let mut flags = Vec::new();
    if d.dynamic {
        flags.push("dynamic");
    }
    if d.interval {
        flags.push("interval");
    }
    if d.timeout.is_some() {
        flags.push("timeout");
    }
    if !flags.is_empty() {
        let _ = writeln!(out, "\t\tflags {}", flags.join(","));
    }
    if let Some(t) = d.timeout {
        let _ = writeln!(out, "\t\ttimeout {t}s");
    }
    let _ = writeln!(out, "\t\tcomment \"{}\"", d.comment);
    if !elements.is_empty() {
        let _ = writeln!(out, "\t\telements = {{");
        for (k, v) in elements {
            let v = match v {
                Some(ElemData::Verdict(v)) => format!(" : {}", verdict(v)),
                Some(ElemData::Values(v)) => format!(" : {}", values(v)),
                None => String::new(),
            };
            let _ = writeln!(out, "\t\t\t{}{v},", values(k));
        }
        let _ = writeln!(out, "\t\t}}");
    }
    let _ = writeln!(out, "\t}}");
}

/// The table as `nft -f` input: base chains first, then regular chains, then
/// maps and sets, each group in name order.
pub fn table(p: &TablePlan) -> String {
    let f = p.family;
    let mut out = String::new();
    let _ = writeln!(out, "table {} {TABLE} {{", f.nft());
    let _ = writeln!(out, "\tcomment \"{}\"", p.comment);
    let base = p.chains.iter().filter(|(_, c)| c.base.is_some());
    let regular = p.chains.iter().filter(|(_, c)| c.base.is_none());
    for (name, c) in base.chain(regular) {
        let _ = writeln!(out, "\n\tchain {name} {{");
        if let Some(b) = &c.base {
            let ty = match b.ty {
                ChainType::Filter => "filter",
                ChainType::Nat => "nat",
            };
            let _ = writeln!(
                out,
                "\t\ttype {ty} hook {} priority {}; policy accept;",
                b.hook.name(),
                b.priority
            );
        }
        if let Some(cm) = &c.comment {
            let _ = writeln!(out, "\t\tcomment \"{cm}\"");
        }
        for r in &c.rules {
            let _ = writeln!(out, "\t\t{}", rule(f, r));
        }
        let _ = writeln!(out, "\t}}");
    }
    for (name, s) in &p.sets {
        out.push('\n');
        set(&mut out, f, name, s);
    }
    let _ = writeln!(out, "}}");
    out
}

fn elem(k: &[Value], v: Option<&Option<ElemData>>) -> String {
    match v {
        Some(Some(ElemData::Verdict(v))) => format!("{} : {}", values(k), verdict(v)),
        Some(Some(ElemData::Values(v))) => format!("{} : {}", values(k), values(v)),
        _ => values(k),
    }
}

/// A diff as an `nft -f` script (one transaction when loaded): how
/// kube-proxy's nftables mode would send the same change. Used by the
/// comparison benchmark.
pub fn diff_script(f: Family, d: &Diff, comment: &str) -> String {
    let fam = f.nft();
    let mut out = String::new();
    let empty = std::collections::BTreeMap::new();
    for op in &d.ops {
        match op {
            Op::AddTable => {
                let _ = writeln!(out, "add table {fam} {TABLE} {{ comment \"{comment}\"; }}");
            }
            Op::DeleteTable => {
                let _ = writeln!(out, "delete table {fam} {TABLE}");
            }
            Op::AddSet(name, def) => {
                let _ = writeln!(out, "table {fam} {TABLE} {{");
                set_def(&mut out, f, name, def, &empty);
                let _ = writeln!(out, "}}");
            }
            Op::AddChain(name, c) => {
                let _ = writeln!(out, "table {fam} {TABLE} {{\n\tchain {name} {{");
                if let Some(b) = &c.base {
                    let ty = match b.ty {
                        ChainType::Filter => "filter",
                        ChainType::Nat => "nat",
                    };
                    let _ = writeln!(
                        out,
                        "\t\ttype {ty} hook {} priority {}; policy accept;",
                        b.hook.name(),
                        b.priority
                    );
                }
                let _ = writeln!(out, "\t}}\n}}");
            }
            Op::DeleteElements(set, keys) => {
                let list: Vec<String> = keys.iter().map(|k| values(k)).collect();
                let _ = writeln!(
                    out,
                    "delete element {fam} {TABLE} {set} {{ {} }}",
                    list.join(", ")
                );
            }
            Op::FlushChain(name) => {
                let _ = writeln!(out, "flush chain {fam} {TABLE} {name}");
            }
            Op::AddRules(name, c) => {
                for r in &c.rules {
                    let _ = writeln!(out, "add rule {fam} {TABLE} {name} {}", rule(f, r));
                }
            }
            Op::AddElements(set, elems) => {
                let list: Vec<String> = elems.iter().map(|(k, v)| elem(k, Some(*v))).collect();
                let _ = writeln!(
                    out,
                    "add element {fam} {TABLE} {set} {{ {} }}",
                    list.join(", ")
                );
            }
            Op::DeleteChain(name) => {
                let _ = writeln!(out, "delete chain {fam} {TABLE} {name}");
            }
            Op::DeleteSet(name) => {
                let _ = writeln!(out, "delete set {fam} {TABLE} {name}");
            }
        }
    }
    out
}
