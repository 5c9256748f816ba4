//! Encodes a diff of plans as `podnet-nft` batch messages: the only place that
//! knows how plan statements map to nf_tables expressions. Building the batch
//! is pure; `Nft::apply` (in `sync`) sends it as one transaction.

use std::time::Duration;

use podnet_nft::expr::Field;
use podnet_nft::{
    ct_state, ct_status, encode_concat_into, fib_type, icmp_code, nat_flags, Batch,
    ChainType as NftChainType, CmpOp, DataType, DynsetOp, ElemDataRef, ElemRef, Expr, HookPoint,
    NatKind, NumgenKind, Policy, Reg, Reject, Rule as NftRule, Set as NftSet, SetElem, SetFlags,
    SetRef, Table, TypeConcat, Val, Verdict as NftVerdict,
};

use crate::diff::{Diff, Op};
use crate::model::Family;
use crate::plan::{
    Chain, ChainType, ElemData, FieldType, Fields, Hook, KeyExpr, Rule, SetData, SetDef, Stmt,
    Value, Verdict, TABLE,
};
use rustc_hash::FxHashMap;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("encoding {what} for table {family} {TABLE}: {source}")]
    Encode {
        what: String,
        family: &'static str,
        #[source]
        source: Box<podnet_nft::Error>,
    },
}

pub fn nft_family(f: Family) -> podnet_nft::Family {
    match f {
        Family::V4 => podnet_nft::Family::Ip,
        Family::V6 => podnet_nft::Family::Ip6,
    }
}

fn data_type(t: FieldType) -> DataType {
    match t {
        FieldType::Ipv4 => DataType::Ipv4Addr,
        FieldType::Ipv6 => DataType::Ipv6Addr,
        FieldType::InetProto => DataType::InetProto,
        FieldType::InetService => DataType::InetService,
        // A named 32-bit host-order type, so `nft list` can print the key
        // (a bare integer in a concatenation has no size for nft to show).
        FieldType::Index => DataType::Mark,
    }
}

fn val(v: &Value) -> Val {
    match v {
        Value::Ip(ip) => Val::ip(*ip),
        Value::Proto(p) => Val::Proto(p.number()),
        Value::Port(p) => Val::Port(*p),
        Value::Index(i) => Val::U32(*i),
        Value::Net(n) => Val::ip(n.network()),
    }
}

/// An interval set's element: the key with its network as the range's first
/// address, and the key with the network's last address as `key_end`
/// (concatenated ranges end inclusively).
fn interval_elem(k: &Fields) -> SetElem {
    let first: Vec<Val> = k.iter().map(val).collect();
    let last: Vec<Val> = k
        .iter()
        .map(|v| match v {
            Value::Net(n) => Val::ip(n.broadcast()),
            v => val(v),
        })
        .collect();
    SetElem::new(&first).key_end(&last)
}

fn verdict(v: &Verdict) -> NftVerdict {
    match v {
        Verdict::Jump(c) => NftVerdict::Jump(c.clone()),
        Verdict::Goto(c) => NftVerdict::Goto(c.clone()),
        Verdict::Return => NftVerdict::Return,
        Verdict::Drop => NftVerdict::Drop,
        Verdict::Accept => NftVerdict::Accept,
    }
}

fn saddr(f: Family) -> Field {
    match f {
        Family::V4 => Field::IpSaddr,
        Family::V6 => Field::Ip6Saddr,
    }
}

fn daddr(f: Family) -> Field {
    match f {
        Family::V4 => Field::IpDaddr,
        Family::V6 => Field::Ip6Daddr,
    }
}

/// Loads a concatenation into consecutive registers from the first one, as
/// nft lays out `a . b . c` (each field padded to 32-bit words); a numgen
/// index takes one word.
fn load_key(f: Family, key: &[KeyExpr]) -> Vec<Expr> {
    let mut word = 0u32;
    let mut out = Vec::with_capacity(key.len());
    for k in key {
        let field = match k {
            KeyExpr::Saddr => saddr(f),
            KeyExpr::Daddr => daddr(f),
            KeyExpr::L4proto => Field::L4Proto,
            KeyExpr::ThDport => Field::ThDport,
            KeyExpr::Numgen(n) => {
                out.push(Expr::Numgen {
                    dreg: Reg::word(word),
                    kind: NumgenKind::Random,
                    modulus: *n,
                    offset: 0,
                });
                word += 1;
                continue;
            }
        };
        let bytes = match k {
            KeyExpr::Saddr | KeyExpr::Daddr if f == Family::V6 => 16,
            KeyExpr::Saddr | KeyExpr::Daddr => 4,
            // l4proto (1 byte) and th dport (2 bytes) are padded to a word.
            _ => 4,
        };
        out.push(field.load(Reg::word(word)));
        word += bytes / 4;
    }
    out
}

fn masked_cmp(field: Field, mask: u32, op: CmpOp, value: u32) -> [Expr; 3] {
    let r = Reg::first();
    [
        field.load(r),
        Expr::Bitwise {
            sreg: r,
            dreg: r,
            mask: mask.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            sreg: r,
            op,
            data: value.to_ne_bytes().to_vec(),
        },
    ]
}

/// Encoding context for one family within one batch.
struct Enc<'b> {
    family: Family,
    batch: &'b mut Batch,
}

impl Enc<'_> {
    fn nf(&self) -> podnet_nft::Family {
        nft_family(self.family)
    }

    fn err(&self, what: String) -> impl FnOnce(podnet_nft::Error) -> ApplyError + '_ {
        move |source| ApplyError::Encode {
            what,
            family: self.family.nft(),
            source: Box::new(source),
        }
    }

    fn stmt(&mut self, mut r: NftRule, s: &Stmt, chain: &str) -> Result<NftRule, ApplyError> {
        let f = self.family;
        Ok(match s {
            Stmt::CtStateNew => r.ct_state(ct_state::NEW),
            Stmt::CtStatusDnat => r.any_bits(Field::CtStatus, ct_status::DNAT),
            Stmt::Saddr { net, negate } | Stmt::Daddr { net, negate } => {
                let field = if matches!(s, Stmt::Saddr { .. }) {
                    saddr(f)
                } else {
                    daddr(f)
                };
                if *negate {
                    r.not_in_prefix(field, net.network(), net.prefix())
                } else {
                    r.in_prefix(field, net.network(), net.prefix())
                }
            }
            Stmt::Dport { proto, port } => r
                .eq(Field::L4Proto, Val::Proto(proto.number()))
                .eq(Field::ThDport, Val::Port(*port)),
            Stmt::L4Proto(p) => r.eq(Field::L4Proto, Val::Proto(p.number())),
            Stmt::FibDaddrLocal => r.eq(Field::FibDaddrType, Val::U32(fib_type::LOCAL)),
            Stmt::FibSaddrLocal => r.eq(Field::FibSaddrType, Val::U32(fib_type::LOCAL)),
            Stmt::MarkUnset(m) => r.exprs(masked_cmp(Field::Mark, *m, CmpOp::Eq, 0)),
            Stmt::MarkOr(m) => r.mark_or(*m),
            Stmt::MarkXor(m) => {
                let reg = Reg::first();
                r.expr(Field::Mark.load(reg))
                    .expr(Expr::Bitwise {
                        sreg: reg,
                        dreg: reg,
                        mask: u32::MAX.to_ne_bytes().to_vec(),
                        xor: m.to_ne_bytes().to_vec(),
                    })
                    .expr(Expr::MetaSet {
                        key: podnet_nft::MetaKey::Mark,
                        sreg: reg,
                    })
            }
            Stmt::InSet { key, set } => r.exprs(load_key(f, key)).expr(Expr::Lookup {
                sreg: Reg::first(),
                set: SetRef::named(set.clone()),
                dreg: None,
                invert: false,
            }),
            Stmt::Vmap { key, map } => r.exprs(load_key(f, key)).expr(Expr::Lookup {
                sreg: Reg::first(),
                set: SetRef::named(map.clone()),
                dreg: Some(Reg::VERDICT),
                invert: false,
            }),
            Stmt::NumgenVmap(targets) => {
                let set =
                    NftSet::anonymous(self.nf(), TABLE, DataType::Integer32).map(DataType::Verdict);
                let elems: Vec<SetElem> = targets
                    .iter()
                    .enumerate()
                    .map(|(i, v)| SetElem::new(&[Val::U32(i as u32)]).verdict(verdict(v)))
                    .collect();
                let sref = self
                    .batch
                    .add_anonymous_set(&set, &elems)
                    .map_err(self.err(format!("the endpoint vmap of chain {chain}")))?;
                r.numgen_vmap(NumgenKind::Random, targets.len() as u32, sref)
            }
            Stmt::DnatMap { key, map } => {
                let addr_words = if f == Family::V6 { 4 } else { 1 };
                r.exprs(load_key(f, key))
                    .expr(Expr::Lookup {
                        sreg: Reg::first(),
                        set: SetRef::named(map.clone()),
                        dreg: Some(Reg::first()),
                        invert: false,
                    })
                    .expr(Expr::Nat {
                        kind: NatKind::Dnat,
                        family: self.nf(),
                        addr_min: Some(Reg::first()),
                        addr_max: None,
                        proto_min: Some(Reg::word(addr_words)),
                        proto_max: None,
                        flags: nat_flags::MAP_IPS | nat_flags::PROTO_SPECIFIED,
                    })
            }
            Stmt::Dnat { proto, to } => {
                r = r.eq(Field::L4Proto, Val::Proto(proto.number()));
                r.dnat(to.ip, Some(to.port))
            }
            Stmt::UpdateSaddr(set) => r
                .dynset(
                    DynsetOp::Update,
                    &[saddr(f)],
                    SetRef::named(set.clone()),
                    None,
                )
                .map_err(self.err(format!("the affinity update in chain {chain}")))?,
            Stmt::MasqueradeFullyRandom => r.masquerade(nat_flags::FULLY_RANDOM),
            Stmt::RejectTcpReset => r.reject(Reject::TcpReset),
            Stmt::Reject => r.reject(Reject::Icmp(match f {
                Family::V4 => icmp_code::PORT_UNREACH,
                // ICMPv6 destination unreachable code 4: port unreachable.
                Family::V6 => 4,
            })),
            Stmt::Verdict(v) => r.verdict(verdict(v)),
        })
    }

    fn rule(&mut self, chain: &str, rule: &Rule) -> Result<(), ApplyError> {
        let mut r = NftRule::new(self.nf(), TABLE, chain);
        for s in &rule.stmts {
            r = self.stmt(r, s, chain)?;
        }
        if let Some(c) = &rule.comment {
            r = r.comment(c.clone());
        }
        self.batch
            .add_rule(&r)
            .map_err(self.err(format!("a rule of chain {chain}")))
    }

    fn chain(&mut self, name: &str, c: &Chain) -> Result<(), ApplyError> {
        let mut nc = podnet_nft::Chain::new(self.nf(), TABLE, name);
        if let Some(b) = &c.base {
            let ty = match b.ty {
                ChainType::Filter => NftChainType::Filter,
                ChainType::Nat => NftChainType::Nat,
            };
            let hook = match b.hook {
                Hook::Prerouting => HookPoint::Prerouting,
                Hook::Input => HookPoint::Input,
                Hook::Forward => HookPoint::Forward,
                Hook::Output => HookPoint::Output,
                Hook::Postrouting => HookPoint::Postrouting,
            };
            nc = nc.base(ty, hook, b.priority, Policy::Accept);
        }
        if let Some(cm) = &c.comment {
            nc = nc.comment(cm.clone());
        }
        self.batch
            .add_chain(&nc)
            .map_err(self.err(format!("chain {name}")))
    }

    fn set(&mut self, name: &str, d: &SetDef, size: Option<u32>) -> Result<(), ApplyError> {
        let key: Vec<DataType> = d.key.iter().map(|t| data_type(*t)).collect();
        let mut s =
            NftSet::new(self.nf(), TABLE, name, TypeConcat::new(&key)).comment(d.comment.clone());
        match &d.data {
            Some(SetData::Verdict) => s = s.map(DataType::Verdict),
            Some(SetData::Fields(v)) => {
                let v: Vec<DataType> = v.iter().map(|t| data_type(*t)).collect();
                s = s.map(TypeConcat::new(&v));
            }
            None => {}
        }
        s = s.flags(SetFlags {
            dynamic: d.dynamic,
            timeout: d.timeout.is_some(),
            interval: d.interval,
            ..Default::default()
        });
        if let Some(t) = d.timeout {
            s = s.timeout(Duration::from_secs(u64::from(t)));
        }
        if let Some(n) = size {
            s = s.size(n);
        }
        self.batch
            .add_set(&s)
            .map(|_| ())
            .map_err(self.err(format!("set {name}")))
    }

    /// Elements of an interval set (a handful per service with source
    /// ranges): one `SetElem` each, with its range end.
    fn interval_elements(
        &mut self,
        set: &str,
        keys: &[&Fields],
        add: bool,
    ) -> Result<(), ApplyError> {
        let list: Vec<SetElem> = keys.iter().map(|k| interval_elem(k)).collect();
        let nf = self.nf();
        let res = if add {
            self.batch.add_elements(nf, TABLE, set, &list)
        } else {
            self.batch.delete_elements(nf, TABLE, set, &list)
        };
        res.map_err(self.err(format!("{} elements of {set}", list.len())))
    }

    fn elements<'e>(
        &mut self,
        set: &str,
        elems: impl ExactSizeIterator<Item = (&'e Fields, Option<&'e Option<ElemData>>)>,
        add: bool,
    ) -> Result<(), ApplyError> {
        // Keys and map values are encoded into one buffer and verdicts
        // converted once per distinct verdict; the batch then writes the
        // elements by reference (no allocation per element).
        enum Data {
            None,
            Verdict(usize),
            Value(usize, usize),
        }
        let mut bytes: Vec<u8> = Vec::with_capacity(elems.len() * 24);
        let mut spans: Vec<(usize, usize, Data)> = Vec::with_capacity(elems.len());
        let mut verdicts: Vec<NftVerdict> = Vec::new();
        // Fx, not SipHash: keys the proxy derived itself, hashed by the ten thousand.
        let mut verdict_index: FxHashMap<&'e Verdict, usize> = FxHashMap::default();
        let mut scratch: Vec<Val> = Vec::with_capacity(Fields::MAX);
        let mut put = |vs: &[Value], bytes: &mut Vec<u8>| {
            let start = bytes.len();
            scratch.clear();
            scratch.extend(vs.iter().map(val));
            encode_concat_into(&scratch, bytes);
            (start, bytes.len())
        };
        for (k, d) in elems {
            let (ks, ke) = put(k, &mut bytes);
            let data = match d {
                Some(Some(ElemData::Verdict(v))) => {
                    let i = *verdict_index.entry(v).or_insert_with(|| {
                        verdicts.push(verdict(v));
                        verdicts.len() - 1
                    });
                    Data::Verdict(i)
                }
                Some(Some(ElemData::Values(v))) => {
                    let (s, e) = put(v, &mut bytes);
                    Data::Value(s, e)
                }
                _ => Data::None,
            };
            spans.push((ks, ke, data));
        }
        let list: Vec<ElemRef> = spans
            .iter()
            .map(|(ks, ke, d)| ElemRef {
                key: &bytes[*ks..*ke],
                data: match d {
                    Data::None => None,
                    Data::Verdict(i) => Some(ElemDataRef::Verdict(&verdicts[*i])),
                    Data::Value(s, e) => Some(ElemDataRef::Value(&bytes[*s..*e])),
                },
            })
            .collect();
        let nf = self.nf();
        let res = if add {
            self.batch.add_elements_ref(nf, TABLE, set, &list)
        } else {
            self.batch.delete_elements_ref(nf, TABLE, set, &list)
        };
        res.map_err(self.err(format!("{} elements of {set}", list.len())))
    }
}

/// The `size` to create a shared set with when it gets `elements`: room for
/// as many again (at least 256), rounded up to a power of two. Given a size,
/// the kernel keeps a set in a hash table of fixed size (nft_hash) instead
/// of one that starts at four buckets and doubles while a transaction's
/// elements arrive (rhash, whose inserts then mostly take the slow path:
/// half the kernel's time of a 30k-service full sync). The size is also the
/// set's limit: a partial sync that would pass it becomes a full one, which
/// sizes the sets again.
pub fn set_capacity(elements: usize) -> u32 {
    let want = elements.saturating_mul(2).max(256);
    u32::try_from(want)
        .ok()
        .and_then(u32::checked_next_power_of_two)
        .unwrap_or(1 << 31)
}

/// Keys with a range belong to an interval set (all of its keys have one).
fn is_interval(k: &Fields) -> bool {
    k.iter().any(|v| matches!(v, Value::Net(_)))
}

/// Appends the operations of `diff` (for `family`) to `batch`. Sets it
/// creates get `capacity(name)` as their size (none: unlimited).
pub fn encode(
    batch: &mut Batch,
    family: Family,
    diff: &Diff,
    comment: &str,
    capacity: &dyn Fn(&str) -> Option<u32>,
) -> Result<(), ApplyError> {
    let mut e = Enc { family, batch };
    let nf = e.nf();
    for op in &diff.ops {
        match op {
            Op::AddTable => e.batch.add_table(&Table::new(nf, TABLE).comment(comment)),
            Op::DeleteTable => e.batch.delete_table(nf, TABLE),
            Op::AddSet(name, def) => e.set(name, def, capacity(name))?,
            Op::AddChain(name, c) => e.chain(name, c)?,
            Op::DeleteElements(set, keys) if keys.first().is_some_and(|k| is_interval(k)) => {
                e.interval_elements(set, keys, false)?
            }
            Op::DeleteElements(set, keys) => {
                e.elements(set, keys.iter().map(|k| (*k, None)), false)?
            }
            Op::FlushChain(name) => e.batch.flush_chain(nf, TABLE, name),
            Op::AddRules(name, c) => {
                for r in &c.rules {
                    e.rule(name, r)?;
                }
            }
            Op::AddElements(set, elems) if elems.first().is_some_and(|(k, _)| is_interval(k)) => {
                let keys: Vec<&Fields> = elems.iter().map(|(k, _)| *k).collect();
                e.interval_elements(set, &keys, true)?
            }
            Op::AddElements(set, elems) => {
                e.elements(set, elems.iter().map(|(k, d)| (*k, Some(*d))), true)?
            }
            Op::DeleteChain(name) => e.batch.delete_chain(nf, TABLE, name),
            Op::DeleteSet(name) => e.batch.delete_set(nf, TABLE, name),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_capacity_leaves_room_for_as_many_again() {
        assert_eq!(set_capacity(0), 256);
        assert_eq!(set_capacity(128), 256);
        assert_eq!(set_capacity(129), 512);
        assert_eq!(set_capacity(22_000), 65_536);
        assert_eq!(set_capacity(usize::MAX), 1 << 31);
    }
}
