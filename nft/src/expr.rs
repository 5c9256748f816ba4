//! nf_tables expressions: a typed `Expr` per kernel expression (registers
//! explicit), their netlink encoding, and `Field`, the common packet/meta
//! selectors (`ip daddr`, `th dport`, `meta l4proto`, ...) with their load
//! expressions, lengths and set key types.

use std::time::Duration;

use crate::attr::AttrWriter;
use crate::error::Result;
use crate::sys;
use crate::types::{round4, DataType, Reg, Verdict};

/// Payload header base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadBase {
    Link,
    Network,
    Transport,
}

impl PayloadBase {
    fn raw(self) -> u32 {
        match self {
            PayloadBase::Link => 0,
            PayloadBase::Network => 1,
            PayloadBase::Transport => 2,
        }
    }
}

/// `meta` keys (NFT_META_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    Len,
    Protocol,
    Mark,
    Iif,
    Oif,
    IifName,
    OifName,
    IifType,
    NfProto,
    L4Proto,
    PktType,
    Other(u32),
}

impl MetaKey {
    pub(crate) fn from_raw(v: u32) -> MetaKey {
        match v {
            0 => MetaKey::Len,
            1 => MetaKey::Protocol,
            3 => MetaKey::Mark,
            4 => MetaKey::Iif,
            5 => MetaKey::Oif,
            6 => MetaKey::IifName,
            7 => MetaKey::OifName,
            8 => MetaKey::IifType,
            15 => MetaKey::NfProto,
            16 => MetaKey::L4Proto,
            19 => MetaKey::PktType,
            v => MetaKey::Other(v),
        }
    }

    fn raw(self) -> u32 {
        match self {
            MetaKey::Len => 0,
            MetaKey::Protocol => 1,
            MetaKey::Mark => 3,
            MetaKey::Iif => 4,
            MetaKey::Oif => 5,
            MetaKey::IifName => 6,
            MetaKey::OifName => 7,
            MetaKey::IifType => 8,
            MetaKey::NfProto => 15,
            MetaKey::L4Proto => 16,
            MetaKey::PktType => 19,
            MetaKey::Other(v) => v,
        }
    }
}

/// `ct` keys (NFT_CT_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtKey {
    State,
    Direction,
    Status,
    Mark,
    Expiration,
    L3Protocol,
    Src,
    Dst,
    Protocol,
    ProtoSrc,
    ProtoDst,
    SrcIp,
    DstIp,
    SrcIp6,
    DstIp6,
}

impl CtKey {
    pub(crate) fn from_raw(v: u32) -> Option<CtKey> {
        [
            CtKey::State,
            CtKey::Direction,
            CtKey::Status,
            CtKey::Mark,
            CtKey::Expiration,
            CtKey::L3Protocol,
            CtKey::Src,
            CtKey::Dst,
            CtKey::Protocol,
            CtKey::ProtoSrc,
            CtKey::ProtoDst,
            CtKey::SrcIp,
            CtKey::DstIp,
            CtKey::SrcIp6,
            CtKey::DstIp6,
        ]
        .into_iter()
        .find(|k| k.raw() == v)
    }

    fn raw(self) -> u32 {
        match self {
            CtKey::State => 0,
            CtKey::Direction => 1,
            CtKey::Status => 2,
            CtKey::Mark => 3,
            CtKey::Expiration => 5,
            CtKey::L3Protocol => 7,
            CtKey::Src => 8,
            CtKey::Dst => 9,
            CtKey::Protocol => 10,
            CtKey::ProtoSrc => 11,
            CtKey::ProtoDst => 12,
            CtKey::SrcIp => 19,
            CtKey::DstIp => 20,
            CtKey::SrcIp6 => 21,
            CtKey::DstIp6 => 22,
        }
    }
}

/// Conntrack tuple direction for `ct original ...` / `ct reply ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtDir {
    Original,
    Reply,
}

/// `ct state` bits (host order u32), combine with `|`.
pub mod ct_state {
    pub const INVALID: u32 = 1;
    pub const ESTABLISHED: u32 = 2;
    pub const RELATED: u32 = 4;
    pub const NEW: u32 = 8;
    pub const UNTRACKED: u32 = 64;
}

/// `ct status` bits (host order u32).
pub mod ct_status {
    pub const EXPECTED: u32 = 1;
    pub const SEEN_REPLY: u32 = 2;
    pub const ASSURED: u32 = 4;
    pub const CONFIRMED: u32 = 8;
    pub const SNAT: u32 = 16;
    pub const DNAT: u32 = 32;
}

/// `fib` address types (RTN_*), the value `fib ... type` yields.
pub mod fib_type {
    pub const UNICAST: u32 = 1;
    pub const LOCAL: u32 = 2;
    pub const BROADCAST: u32 = 3;
    pub const ANYCAST: u32 = 4;
    pub const MULTICAST: u32 = 5;
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
}

impl CmpOp {
    pub(crate) fn from_raw(v: u32) -> Option<CmpOp> {
        [
            CmpOp::Eq,
            CmpOp::Neq,
            CmpOp::Lt,
            CmpOp::Lte,
            CmpOp::Gt,
            CmpOp::Gte,
        ]
        .into_iter()
        .find(|o| o.raw() == v)
    }

    fn raw(self) -> u32 {
        match self {
            CmpOp::Eq => 0,
            CmpOp::Neq => 1,
            CmpOp::Lt => 2,
            CmpOp::Lte => 3,
            CmpOp::Gt => 4,
            CmpOp::Gte => 5,
        }
    }
}

/// `numgen` kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumgenKind {
    Incremental,
    Random,
}

/// `fib` result kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FibResult {
    Oif,
    OifName,
    AddrType,
}

/// `fib` flags (which packet fields key the lookup).
pub mod fib_flags {
    pub const SADDR: u32 = 1 << 0;
    pub const DADDR: u32 = 1 << 1;
    pub const MARK: u32 = 1 << 2;
    pub const IIF: u32 = 1 << 3;
    pub const OIF: u32 = 1 << 4;
    pub const PRESENT: u32 = 1 << 5;
}

/// NAT range flags (`NF_NAT_RANGE_*`), for `Nat` and `Masquerade`.
pub mod nat_flags {
    pub const MAP_IPS: u32 = 1 << 0;
    pub const PROTO_SPECIFIED: u32 = 1 << 1;
    pub const RANDOM: u32 = 1 << 2;
    pub const PERSISTENT: u32 = 1 << 3;
    pub const FULLY_RANDOM: u32 = 1 << 4;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    Snat,
    Dnat,
}

/// `reject` variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// `reject with icmp <code>` (ip) / `icmpv6 <code>` (ip6).
    Icmp(u8),
    /// `reject with tcp reset`.
    TcpReset,
    /// `reject with icmpx <code>` (inet/bridge families), see `icmpx`.
    Icmpx(u8),
}

/// `icmpx` codes for `Reject::Icmpx`.
pub mod icmpx {
    pub const NO_ROUTE: u8 = 0;
    pub const PORT_UNREACH: u8 = 1;
    pub const HOST_UNREACH: u8 = 2;
    pub const ADMIN_PROHIBITED: u8 = 3;
}

/// ICMP (v4) unreachable codes for `Reject::Icmp` in the ip family.
pub mod icmp_code {
    pub const NET_UNREACH: u8 = 0;
    pub const HOST_UNREACH: u8 = 1;
    pub const PROT_UNREACH: u8 = 2;
    pub const PORT_UNREACH: u8 = 3;
    pub const NET_PROHIBITED: u8 = 9;
    pub const HOST_PROHIBITED: u8 = 10;
    pub const ADMIN_PROHIBITED: u8 = 13;
}

/// `dynset` operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DynsetOp {
    Add,
    Update,
    Delete,
}

/// Reference to a set or map from an expression. For sets created in the
/// same batch `id` must be the one the batch assigned (anonymous sets are
/// only reachable that way); `Batch` fills it in for named sets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SetRef {
    pub name: String,
    pub id: Option<u32>,
}

impl SetRef {
    /// A set that already exists in the kernel (or is added in the same
    /// batch: the batch resolves the id by name).
    pub fn named(name: impl Into<String>) -> SetRef {
        SetRef {
            name: name.into(),
            id: None,
        }
    }
}

/// One nf_tables expression with explicit registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Payload {
        dreg: Reg,
        base: PayloadBase,
        offset: u32,
        len: u32,
    },
    Meta {
        dreg: Reg,
        key: MetaKey,
    },
    MetaSet {
        key: MetaKey,
        sreg: Reg,
    },
    Cmp {
        sreg: Reg,
        op: CmpOp,
        data: Vec<u8>,
    },
    /// `dreg = (sreg & mask) ^ xor` over `mask.len()` bytes.
    Bitwise {
        sreg: Reg,
        dreg: Reg,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// Same operation as `Bitwise`, but also sends NFTA_BITWISE_OP (mask-xor)
    /// like nft does for explicit binary operations (`meta mark set mark |
    /// 0x4000`, `meta mark & 0x4000 != 0`); `Bitwise` is the form nft uses
    /// for prefix and flag matches. The kernel treats both the same.
    BitwiseStmt {
        sreg: Reg,
        dreg: Reg,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// Match `from <= sreg <= to` (or outside with `neq`).
    Range {
        sreg: Reg,
        neq: bool,
        from: Vec<u8>,
        to: Vec<u8>,
    },
    /// Set membership, or map lookup when `dreg` is set (`Reg::VERDICT` for
    /// verdict maps).
    Lookup {
        sreg: Reg,
        set: SetRef,
        dreg: Option<Reg>,
        invert: bool,
    },
    Immediate {
        dreg: Reg,
        data: Vec<u8>,
    },
    Verdict(Verdict),
    Numgen {
        dreg: Reg,
        kind: NumgenKind,
        modulus: u32,
        offset: u32,
    },
    Fib {
        dreg: Reg,
        result: FibResult,
        flags: u32,
    },
    Ct {
        dreg: Reg,
        key: CtKey,
        dir: Option<CtDir>,
    },
    CtSet {
        key: CtKey,
        sreg: Reg,
    },
    /// dnat/snat. `family` is the address family of the address registers
    /// (`Family::Ip`/`Ip6`), required when an address register is given.
    Nat {
        kind: NatKind,
        family: crate::Family,
        addr_min: Option<Reg>,
        addr_max: Option<Reg>,
        proto_min: Option<Reg>,
        proto_max: Option<Reg>,
        flags: u32,
    },
    Masquerade {
        flags: u32,
        proto_min: Option<Reg>,
        proto_max: Option<Reg>,
    },
    Reject(Reject),
    Counter {
        packets: u64,
        bytes: u64,
    },
    /// Add/update an element of a (timeout) set from the packet path, e.g.
    /// session affinity: `update @aff { ip saddr timeout 3h }`.
    Dynset {
        op: DynsetOp,
        sreg_key: Reg,
        sreg_data: Option<Reg>,
        set: SetRef,
        timeout: Option<Duration>,
    },
    Log {
        prefix: Option<String>,
        group: Option<u16>,
    },
    Notrack,
}

fn put_data_value(w: &mut AttrWriter, kind: u16, data: &[u8]) -> Result<()> {
    let n = w.nest(kind);
    w.put(sys::NFTA_DATA_VALUE, data);
    w.end(n)
}

/// Writes NFTA_DATA_VERDICT { CODE, CHAIN? } inside a data nest of `kind`.
pub(crate) fn put_verdict(w: &mut AttrWriter, kind: u16, v: &Verdict) -> Result<()> {
    let d = w.nest(kind);
    let vn = w.nest(sys::NFTA_DATA_VERDICT);
    w.put_u32_be(sys::NFTA_VERDICT_CODE, v.code() as u32);
    if let Some(c) = v.chain() {
        w.put_str(sys::NFTA_VERDICT_CHAIN, c);
    }
    w.end(vn)?;
    w.end(d)
}

fn put_reg(w: &mut AttrWriter, kind: u16, r: Reg) {
    w.put_u32_be(kind, r.raw());
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

impl Expr {
    /// The kernel expression name.
    pub fn name(&self) -> &'static str {
        match self {
            Expr::Payload { .. } => "payload",
            Expr::Meta { .. } | Expr::MetaSet { .. } => "meta",
            Expr::Cmp { .. } => "cmp",
            Expr::Bitwise { .. } | Expr::BitwiseStmt { .. } => "bitwise",
            Expr::Range { .. } => "range",
            Expr::Lookup { .. } => "lookup",
            Expr::Immediate { .. } | Expr::Verdict(_) => "immediate",
            Expr::Numgen { .. } => "numgen",
            Expr::Fib { .. } => "fib",
            Expr::Ct { .. } | Expr::CtSet { .. } => "ct",
            Expr::Nat { .. } => "nat",
            Expr::Masquerade { .. } => "masq",
            Expr::Reject(_) => "reject",
            Expr::Counter { .. } => "counter",
            Expr::Dynset { .. } => "dynset",
            Expr::Log { .. } => "log",
            Expr::Notrack => "notrack",
        }
    }

    /// Writes `NFTA_LIST_ELEM { NFTA_EXPR_NAME, NFTA_EXPR_DATA {...} }`.
    /// Attribute order follows libnftnl so encodings compare byte-for-byte.
    pub(crate) fn encode(&self, w: &mut AttrWriter) -> Result<()> {
        let elem = w.nest(sys::NFTA_LIST_ELEM);
        w.put_str(sys::NFTA_EXPR_NAME, self.name());
        if matches!(self, Expr::Notrack) {
            // libnftnl sends no data nest for notrack (it has no attributes).
            return w.end(elem);
        }
        let data = w.nest(sys::NFTA_EXPR_DATA);
        match self {
            Expr::Payload {
                dreg,
                base,
                offset,
                len,
            } => {
                put_reg(w, sys::NFTA_PAYLOAD_DREG, *dreg);
                w.put_u32_be(sys::NFTA_PAYLOAD_BASE, base.raw());
                w.put_u32_be(sys::NFTA_PAYLOAD_OFFSET, *offset);
                w.put_u32_be(sys::NFTA_PAYLOAD_LEN, *len);
            }
            Expr::Meta { dreg, key } => {
                w.put_u32_be(sys::NFTA_META_KEY, key.raw());
                put_reg(w, sys::NFTA_META_DREG, *dreg);
            }
            Expr::MetaSet { key, sreg } => {
                w.put_u32_be(sys::NFTA_META_KEY, key.raw());
                put_reg(w, sys::NFTA_META_SREG, *sreg);
            }
            Expr::Cmp { sreg, op, data } => {
                put_reg(w, sys::NFTA_CMP_SREG, *sreg);
                w.put_u32_be(sys::NFTA_CMP_OP, op.raw());
                put_data_value(w, sys::NFTA_CMP_DATA, data)?;
            }
            Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            }
            | Expr::BitwiseStmt {
                sreg,
                dreg,
                mask,
                xor,
            } => {
                put_reg(w, sys::NFTA_BITWISE_SREG, *sreg);
                put_reg(w, sys::NFTA_BITWISE_DREG, *dreg);
                if matches!(self, Expr::BitwiseStmt { .. }) {
                    w.put_u32_be(sys::NFTA_BITWISE_OP, 0);
                }
                w.put_u32_be(sys::NFTA_BITWISE_LEN, mask.len() as u32);
                put_data_value(w, sys::NFTA_BITWISE_MASK, mask)?;
                put_data_value(w, sys::NFTA_BITWISE_XOR, xor)?;
            }
            Expr::Range {
                sreg,
                neq,
                from,
                to,
            } => {
                put_reg(w, sys::NFTA_RANGE_SREG, *sreg);
                w.put_u32_be(sys::NFTA_RANGE_OP, u32::from(*neq));
                put_data_value(w, sys::NFTA_RANGE_FROM_DATA, from)?;
                put_data_value(w, sys::NFTA_RANGE_TO_DATA, to)?;
            }
            Expr::Lookup {
                sreg,
                set,
                dreg,
                invert,
            } => {
                put_reg(w, sys::NFTA_LOOKUP_SREG, *sreg);
                if let Some(d) = dreg {
                    put_reg(w, sys::NFTA_LOOKUP_DREG, *d);
                }
                w.put_str(sys::NFTA_LOOKUP_SET, &set.name);
                if let Some(id) = set.id {
                    w.put_u32_be(sys::NFTA_LOOKUP_SET_ID, id);
                }
                if *invert {
                    w.put_u32_be(sys::NFTA_LOOKUP_FLAGS, sys::NFT_LOOKUP_F_INV);
                }
            }
            Expr::Immediate { dreg, data } => {
                put_reg(w, sys::NFTA_IMMEDIATE_DREG, *dreg);
                put_data_value(w, sys::NFTA_IMMEDIATE_DATA, data)?;
            }
            Expr::Verdict(v) => {
                put_reg(w, sys::NFTA_IMMEDIATE_DREG, Reg::VERDICT);
                put_verdict(w, sys::NFTA_IMMEDIATE_DATA, v)?;
            }
            Expr::Numgen {
                dreg,
                kind,
                modulus,
                offset,
            } => {
                put_reg(w, sys::NFTA_NG_DREG, *dreg);
                w.put_u32_be(sys::NFTA_NG_MODULUS, *modulus);
                w.put_u32_be(
                    sys::NFTA_NG_TYPE,
                    match kind {
                        NumgenKind::Incremental => 0,
                        NumgenKind::Random => 1,
                    },
                );
                w.put_u32_be(sys::NFTA_NG_OFFSET, *offset);
            }
            Expr::Fib {
                dreg,
                result,
                flags,
            } => {
                w.put_u32_be(sys::NFTA_FIB_FLAGS, *flags);
                w.put_u32_be(
                    sys::NFTA_FIB_RESULT,
                    match result {
                        FibResult::Oif => 1,
                        FibResult::OifName => 2,
                        FibResult::AddrType => 3,
                    },
                );
                put_reg(w, sys::NFTA_FIB_DREG, *dreg);
            }
            Expr::Ct { dreg, key, dir } => {
                w.put_u32_be(sys::NFTA_CT_KEY, key.raw());
                put_reg(w, sys::NFTA_CT_DREG, *dreg);
                if let Some(d) = dir {
                    w.put(
                        sys::NFTA_CT_DIRECTION,
                        &[match d {
                            CtDir::Original => 0,
                            CtDir::Reply => 1,
                        }],
                    );
                }
            }
            Expr::CtSet { key, sreg } => {
                w.put_u32_be(sys::NFTA_CT_KEY, key.raw());
                put_reg(w, sys::NFTA_CT_SREG, *sreg);
            }
            Expr::Nat {
                kind,
                family,
                addr_min,
                addr_max,
                proto_min,
                proto_max,
                flags,
            } => {
                w.put_u32_be(
                    sys::NFTA_NAT_TYPE,
                    match kind {
                        NatKind::Snat => 0,
                        NatKind::Dnat => 1,
                    },
                );
                w.put_u32_be(sys::NFTA_NAT_FAMILY, u32::from(family.nfproto()));
                if let Some(r) = addr_min {
                    put_reg(w, sys::NFTA_NAT_REG_ADDR_MIN, *r);
                }
                if let Some(r) = addr_max {
                    put_reg(w, sys::NFTA_NAT_REG_ADDR_MAX, *r);
                }
                if let Some(r) = proto_min {
                    put_reg(w, sys::NFTA_NAT_REG_PROTO_MIN, *r);
                }
                if let Some(r) = proto_max {
                    put_reg(w, sys::NFTA_NAT_REG_PROTO_MAX, *r);
                }
                if *flags != 0 {
                    w.put_u32_be(sys::NFTA_NAT_FLAGS, *flags);
                }
            }
            Expr::Masquerade {
                flags,
                proto_min,
                proto_max,
            } => {
                if *flags != 0 {
                    w.put_u32_be(sys::NFTA_MASQ_FLAGS, *flags);
                }
                if let Some(r) = proto_min {
                    put_reg(w, sys::NFTA_MASQ_REG_PROTO_MIN, *r);
                }
                if let Some(r) = proto_max {
                    put_reg(w, sys::NFTA_MASQ_REG_PROTO_MAX, *r);
                }
            }
            Expr::Reject(r) => {
                let (ty, code) = match r {
                    Reject::Icmp(c) => (0u32, *c),
                    Reject::TcpReset => (1, 0),
                    Reject::Icmpx(c) => (2, *c),
                };
                w.put_u32_be(sys::NFTA_REJECT_TYPE, ty);
                w.put(sys::NFTA_REJECT_ICMP_CODE, &[code]);
            }
            Expr::Counter { packets, bytes } => {
                // Like nft, start values are only sent when non-zero.
                if *bytes != 0 || *packets != 0 {
                    w.put_u64_be(sys::NFTA_COUNTER_BYTES, *bytes);
                    w.put_u64_be(sys::NFTA_COUNTER_PACKETS, *packets);
                }
            }
            Expr::Dynset {
                op,
                sreg_key,
                sreg_data,
                set,
                timeout,
            } => {
                put_reg(w, sys::NFTA_DYNSET_SREG_KEY, *sreg_key);
                if let Some(r) = sreg_data {
                    put_reg(w, sys::NFTA_DYNSET_SREG_DATA, *r);
                }
                w.put_u32_be(
                    sys::NFTA_DYNSET_OP,
                    match op {
                        DynsetOp::Add => 0,
                        DynsetOp::Update => 1,
                        DynsetOp::Delete => 2,
                    },
                );
                if let Some(t) = timeout {
                    w.put_u64_be(sys::NFTA_DYNSET_TIMEOUT, ms(*t));
                }
                w.put_str(sys::NFTA_DYNSET_SET_NAME, &set.name);
                if let Some(id) = set.id {
                    w.put_u32_be(sys::NFTA_DYNSET_SET_ID, id);
                }
            }
            Expr::Log { prefix, group } => {
                if let Some(p) = prefix {
                    w.put_str(sys::NFTA_LOG_PREFIX, p);
                }
                if let Some(g) = group {
                    w.put(sys::NFTA_LOG_GROUP, &g.to_be_bytes());
                }
            }
            Expr::Notrack => {}
        }
        w.end(data)?;
        w.end(elem)
    }

    pub(crate) fn set_ref_mut(&mut self) -> Option<&mut SetRef> {
        match self {
            Expr::Lookup { set, .. } | Expr::Dynset { set, .. } => Some(set),
            _ => None,
        }
    }
}

/// Common selectors, each one load into a register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// `ip saddr` (network header offset 12, 4 bytes).
    IpSaddr,
    IpDaddr,
    /// `ip protocol`.
    IpProtocol,
    Ip6Saddr,
    Ip6Daddr,
    /// `th sport` (transport header offset 0, 2 bytes; any L4 protocol).
    ThSport,
    ThDport,
    /// `meta l4proto`.
    L4Proto,
    /// `meta nfproto`.
    NfProto,
    /// `meta protocol` (ethertype, big-endian).
    Protocol,
    IifName,
    OifName,
    Iif,
    Oif,
    /// `meta mark`.
    Mark,
    EtherSaddr,
    EtherDaddr,
    /// `ct state`.
    CtState,
    /// `ct status`.
    CtStatus,
    /// `ct mark`.
    CtMark,
    /// `fib daddr type`.
    FibDaddrType,
    /// `fib saddr type`.
    FibSaddrType,
}

impl Field {
    /// Length in bytes of the loaded value.
    pub fn size(self) -> usize {
        self.dtype().size()
    }

    /// The set key type matching this field.
    pub fn dtype(self) -> DataType {
        match self {
            Field::IpSaddr | Field::IpDaddr => DataType::Ipv4Addr,
            Field::Ip6Saddr | Field::Ip6Daddr => DataType::Ipv6Addr,
            Field::IpProtocol | Field::L4Proto => DataType::InetProto,
            Field::ThSport | Field::ThDport => DataType::InetService,
            Field::NfProto => DataType::NfProto,
            Field::Protocol => DataType::EtherType,
            Field::IifName | Field::OifName => DataType::IfName,
            Field::Iif | Field::Oif => DataType::IfIndex,
            Field::Mark | Field::CtMark => DataType::Mark,
            Field::EtherSaddr | Field::EtherDaddr => DataType::EtherAddr,
            Field::CtState => DataType::CtState,
            Field::CtStatus => DataType::Integer32,
            Field::FibDaddrType | Field::FibSaddrType => DataType::FibAddrType,
        }
    }

    /// The expression loading this field into `dreg`.
    pub fn load(self, dreg: Reg) -> Expr {
        let payload = |base, offset, len| Expr::Payload {
            dreg,
            base,
            offset,
            len,
        };
        let meta = |key| Expr::Meta { dreg, key };
        let ct = |key| Expr::Ct {
            dreg,
            key,
            dir: None,
        };
        let fib = |flags| Expr::Fib {
            dreg,
            result: FibResult::AddrType,
            flags,
        };
        match self {
            Field::IpSaddr => payload(PayloadBase::Network, 12, 4),
            Field::IpDaddr => payload(PayloadBase::Network, 16, 4),
            Field::IpProtocol => payload(PayloadBase::Network, 9, 1),
            Field::Ip6Saddr => payload(PayloadBase::Network, 8, 16),
            Field::Ip6Daddr => payload(PayloadBase::Network, 24, 16),
            Field::ThSport => payload(PayloadBase::Transport, 0, 2),
            Field::ThDport => payload(PayloadBase::Transport, 2, 2),
            Field::EtherDaddr => payload(PayloadBase::Link, 0, 6),
            Field::EtherSaddr => payload(PayloadBase::Link, 6, 6),
            Field::L4Proto => meta(MetaKey::L4Proto),
            Field::NfProto => meta(MetaKey::NfProto),
            Field::Protocol => meta(MetaKey::Protocol),
            Field::IifName => meta(MetaKey::IifName),
            Field::OifName => meta(MetaKey::OifName),
            Field::Iif => meta(MetaKey::Iif),
            Field::Oif => meta(MetaKey::Oif),
            Field::Mark => meta(MetaKey::Mark),
            Field::CtState => ct(CtKey::State),
            Field::CtStatus => ct(CtKey::Status),
            Field::CtMark => ct(CtKey::Mark),
            Field::FibDaddrType => fib(fib_flags::DADDR),
            Field::FibSaddrType => fib(fib_flags::SADDR),
        }
    }
}

/// Loads a concatenation of fields into consecutive 32-bit registers starting
/// at the first data register, the way nft lays out `a . b . c`. Returns the
/// load expressions and the source register for the lookup. Fails when the
/// concatenation does not fit the 64-byte register file.
pub fn load_concat(fields: &[Field]) -> Result<(Vec<Expr>, Reg)> {
    let mut exprs = Vec::with_capacity(fields.len());
    let mut word = 0u32;
    for f in fields {
        exprs.push(f.load(Reg::word(word)));
        word += (round4(f.size()) / 4) as u32;
    }
    if word > 16 {
        return Err(crate::Error::Invalid(format!(
            "concatenation {fields:?} needs {word} 32-bit registers, only 16 exist"
        )));
    }
    Ok((exprs, Reg::first()))
}
