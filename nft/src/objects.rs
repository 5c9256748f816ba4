//! nf_tables objects (tables, chains, sets/maps, set elements, rules) and
//! their attribute encodings. Attribute order follows libnftnl so our
//! messages compare byte-for-byte with what `nft` sends.

use std::net::IpAddr;
use std::time::Duration;

use crate::attr::AttrWriter;
use crate::error::{Error, Result};
use crate::expr::{put_verdict, Expr};
use crate::sys;
use crate::types::{encode_concat, DataType, Family, TypeConcat, Val, Verdict};
use crate::udata::{self, Udata};

/// An nf_tables table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub family: Family,
    pub name: String,
    pub comment: Option<String>,
}

impl Table {
    pub fn new(family: Family, name: impl Into<String>) -> Table {
        Table {
            family,
            name: name.into(),
            comment: None,
        }
    }

    pub fn comment(mut self, c: impl Into<String>) -> Table {
        self.comment = Some(c.into());
        self
    }

    pub(crate) fn encode_new(&self, w: &mut AttrWriter) {
        w.put_str(sys::NFTA_TABLE_NAME, &self.name);
        w.put_u32_be(sys::NFTA_TABLE_FLAGS, 0);
        if let Some(c) = &self.comment {
            w.put(
                sys::NFTA_TABLE_USERDATA,
                &udata::comment_blob(sys::UDATA_TABLE_COMMENT, c),
            );
        }
    }
}

/// Chain types for base chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainType {
    Filter,
    Nat,
    Route,
}

impl ChainType {
    pub fn as_str(self) -> &'static str {
        match self {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
            ChainType::Route => "route",
        }
    }
}

/// Netfilter hook points. Numbers are the same for ip/ip6/inet/bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPoint {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
    /// netdev/inet ingress (needs `device` for netdev).
    Ingress,
}

impl HookPoint {
    fn raw(self, family: Family) -> u32 {
        match self {
            HookPoint::Prerouting => 0,
            HookPoint::Input => 1,
            HookPoint::Forward => 2,
            HookPoint::Output => 3,
            HookPoint::Postrouting => 4,
            HookPoint::Ingress if family == Family::Netdev => 0,
            HookPoint::Ingress => 5,
        }
    }
}

/// Named priorities nft uses (ip/ip6/inet values; see `bridge_priority`).
pub mod priority {
    pub const RAW: i32 = -300;
    pub const MANGLE: i32 = -150;
    pub const DSTNAT: i32 = -100;
    pub const FILTER: i32 = 0;
    pub const SECURITY: i32 = 50;
    pub const SRCNAT: i32 = 100;
}

/// Named priorities of the bridge family.
pub mod bridge_priority {
    pub const DSTNAT: i32 = -300;
    pub const FILTER: i32 = -200;
    pub const OUT: i32 = 100;
    pub const SRCNAT: i32 = 300;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Accept,
    Drop,
}

/// Base chain properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub kind: ChainType,
    pub hook: HookPoint,
    pub priority: i32,
    pub policy: Option<Policy>,
    /// Interface for netdev-family ingress chains.
    pub device: Option<String>,
}

/// A chain; a base chain when `hook` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub family: Family,
    pub table: String,
    pub name: String,
    pub hook: Option<Hook>,
    pub comment: Option<String>,
}

impl Chain {
    /// A regular chain (reached by jump/goto).
    pub fn new(family: Family, table: impl Into<String>, name: impl Into<String>) -> Chain {
        Chain {
            family,
            table: table.into(),
            name: name.into(),
            hook: None,
            comment: None,
        }
    }

    /// Makes this a base chain.
    pub fn base(
        mut self,
        kind: ChainType,
        hook: HookPoint,
        priority: i32,
        policy: Policy,
    ) -> Chain {
        self.hook = Some(Hook {
            kind,
            hook,
            priority,
            policy: Some(policy),
            device: None,
        });
        self
    }

    pub fn comment(mut self, c: impl Into<String>) -> Chain {
        self.comment = Some(c.into());
        self
    }

    pub(crate) fn encode_new(&self, w: &mut AttrWriter) -> Result<()> {
        w.put_str(sys::NFTA_CHAIN_TABLE, &self.table);
        w.put_str(sys::NFTA_CHAIN_NAME, &self.name);
        if let Some(h) = &self.hook {
            w.put_str(sys::NFTA_CHAIN_TYPE, h.kind.as_str());
            if let Some(p) = h.policy {
                w.put_u32_be(
                    sys::NFTA_CHAIN_POLICY,
                    match p {
                        Policy::Accept => 1,
                        Policy::Drop => 0,
                    },
                );
            }
            let n = w.nest(sys::NFTA_CHAIN_HOOK);
            w.put_u32_be(sys::NFTA_HOOK_HOOKNUM, h.hook.raw(self.family));
            w.put_u32_be(sys::NFTA_HOOK_PRIORITY, h.priority as u32);
            if let Some(d) = &h.device {
                w.put_str(sys::NFTA_HOOK_DEV, d);
            }
            w.end(n)?;
        }
        if let Some(c) = &self.comment {
            w.put(
                sys::NFTA_CHAIN_USERDATA,
                &udata::comment_blob(sys::UDATA_CHAIN_COMMENT, c),
            );
        }
        Ok(())
    }
}

/// Set flags the caller chooses; `map`, `anonymous` and `concat` are derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetFlags {
    pub constant: bool,
    pub interval: bool,
    pub timeout: bool,
    /// `dynamic`: updated from the packet path (dynset).
    pub dynamic: bool,
}

/// A named or anonymous set or map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub family: Family,
    pub table: String,
    pub name: String,
    pub key: TypeConcat,
    /// Map data type; `DataType::Verdict` alone makes a verdict map.
    pub data: Option<TypeConcat>,
    pub flags: SetFlags,
    pub anonymous: bool,
    /// Default element timeout (requires `flags.timeout`).
    pub timeout: Option<Duration>,
    pub gc_interval: Option<Duration>,
    /// Maximum number of elements (`size`).
    pub size: Option<u32>,
    pub comment: Option<String>,
}

impl Set {
    /// A named set with the given key type.
    pub fn new(
        family: Family,
        table: impl Into<String>,
        name: impl Into<String>,
        key: impl Into<TypeConcat>,
    ) -> Set {
        Set {
            family,
            table: table.into(),
            name: name.into(),
            key: key.into(),
            data: None,
            flags: SetFlags::default(),
            anonymous: false,
            timeout: None,
            gc_interval: None,
            size: None,
            comment: None,
        }
    }

    /// Makes this a map with `data` values (`DataType::Verdict` for a vmap).
    pub fn map(mut self, data: impl Into<TypeConcat>) -> Set {
        self.data = Some(data.into());
        self
    }

    /// An anonymous constant set bound to one rule, as nft creates for
    /// `{ 0 : goto a, 1 : goto b }`. `Batch::add_anonymous_set` names it.
    pub fn anonymous(family: Family, table: impl Into<String>, key: impl Into<TypeConcat>) -> Set {
        let mut s = Set::new(family, table, String::new(), key);
        s.anonymous = true;
        s.flags.constant = true;
        s
    }

    pub fn flags(mut self, flags: SetFlags) -> Set {
        self.flags = flags;
        self
    }

    pub fn timeout(mut self, t: Duration) -> Set {
        self.flags.timeout = true;
        self.timeout = Some(t);
        self
    }

    pub fn comment(mut self, c: impl Into<String>) -> Set {
        self.comment = Some(c.into());
        self
    }

    pub fn size(mut self, n: u32) -> Set {
        self.size = Some(n);
        self
    }

    pub fn is_map(&self) -> bool {
        self.data.is_some()
    }

    pub fn is_vmap(&self) -> bool {
        self.data
            .as_ref()
            .is_some_and(|d| d.0 == [DataType::Verdict])
    }

    pub(crate) fn kernel_flags(&self) -> u32 {
        let mut f = 0;
        if self.anonymous {
            f |= sys::NFT_SET_ANONYMOUS;
        }
        if self.flags.constant {
            f |= sys::NFT_SET_CONSTANT;
        }
        if self.flags.interval {
            f |= sys::NFT_SET_INTERVAL;
        }
        if self.is_map() {
            f |= sys::NFT_SET_MAP;
        }
        if self.flags.timeout {
            f |= sys::NFT_SET_TIMEOUT;
        }
        if self.flags.dynamic {
            f |= sys::NFT_SET_EVAL;
        }
        if self.flags.interval && self.key.is_concat() {
            f |= sys::NFT_SET_CONCAT;
        }
        f
    }

    fn userdata(&self) -> Vec<u8> {
        let mut u = Udata::default();
        u.put_u32(sys::UDATA_SET_KEYBYTEORDER, self.key.byteorder());
        if let Some(d) = &self.data {
            u.put_u32(sys::UDATA_SET_DATABYTEORDER, d.byteorder());
        }
        if self.key.is_concat() && !self.anonymous {
            udata::put_typeof(&mut u, sys::UDATA_SET_KEY_TYPEOF, sys::EXPR_CONCAT);
        }
        if !self.anonymous && self.data.as_ref().is_some_and(|d| d.is_concat()) {
            udata::put_typeof(&mut u, sys::UDATA_SET_DATA_TYPEOF, sys::EXPR_CONCAT);
        }
        if self.anonymous && self.is_vmap() {
            udata::put_typeof(&mut u, sys::UDATA_SET_DATA_TYPEOF, sys::EXPR_VERDICT);
        }
        if self.is_map() {
            u.put_u32(sys::UDATA_SET_DATA_INTERVAL, 0);
        }
        if let Some(c) = &self.comment {
            u.put_strz(sys::UDATA_SET_COMMENT, c);
        }
        u.0
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let what = || format!("set {} {} {}", self.family, self.table, self.name);
        if self.key.is_empty() {
            return Err(Error::Invalid(format!("{}: empty key type", what())));
        }
        if self.key.len() > 64 {
            return Err(Error::Invalid(format!(
                "{}: key of {} bytes exceeds the 64-byte register file",
                what(),
                self.key.len()
            )));
        }
        if self.timeout.is_some() && !self.flags.timeout {
            return Err(Error::Invalid(format!(
                "{}: default timeout needs the timeout flag",
                what()
            )));
        }
        Ok(())
    }

    pub(crate) fn encode_new(&self, w: &mut AttrWriter, id: u32, elem_count: usize) -> Result<()> {
        w.put_str(sys::NFTA_SET_TABLE, &self.table);
        w.put_str(sys::NFTA_SET_NAME, &self.name);
        w.put_u32_be(sys::NFTA_SET_FLAGS, self.kernel_flags());
        w.put_u32_be(sys::NFTA_SET_KEY_TYPE, self.key.nft_type());
        w.put_u32_be(sys::NFTA_SET_KEY_LEN, self.key.len() as u32);
        if let Some(d) = &self.data {
            if self.is_vmap() {
                w.put_u32_be(sys::NFTA_SET_DATA_TYPE, sys::NFT_DATA_VERDICT);
                w.put_u32_be(sys::NFTA_SET_DATA_LEN, 0);
            } else {
                w.put_u32_be(sys::NFTA_SET_DATA_TYPE, d.nft_type());
                w.put_u32_be(sys::NFTA_SET_DATA_LEN, d.len() as u32);
            }
        }
        w.put_u32_be(sys::NFTA_SET_ID, id);
        let size = self.size.or(if self.anonymous {
            Some(elem_count as u32)
        } else {
            None
        });
        let concat_desc = self.flags.interval && self.key.is_concat();
        if size.is_some() || concat_desc {
            let d = w.nest(sys::NFTA_SET_DESC);
            if let Some(s) = size {
                w.put_u32_be(sys::NFTA_SET_DESC_SIZE, s);
            }
            if concat_desc {
                let c = w.nest(sys::NFTA_SET_DESC_CONCAT);
                for t in &self.key.0 {
                    let e = w.nest(sys::NFTA_LIST_ELEM);
                    w.put_u32_be(sys::NFTA_SET_FIELD_LEN, t.size() as u32);
                    w.end(e)?;
                }
                w.end(c)?;
            }
            w.end(d)?;
        }
        if let Some(t) = self.timeout {
            w.put_u64_be(sys::NFTA_SET_TIMEOUT, t.as_millis() as u64);
        }
        if let Some(t) = self.gc_interval {
            w.put_u32_be(sys::NFTA_SET_GC_INTERVAL, t.as_millis() as u32);
        }
        w.put(sys::NFTA_SET_USERDATA, &self.userdata());
        Ok(())
    }
}

/// Map element data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ElemData {
    Verdict(Verdict),
    Value(Vec<u8>),
}

/// A set or map element.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SetElem {
    pub key: Vec<u8>,
    /// End of the range for interval sets (inclusive, as nft 1.0's
    /// NFTA_SET_ELEM_KEY_END for concatenated ranges).
    pub key_end: Option<Vec<u8>>,
    pub data: Option<ElemData>,
    pub timeout: Option<Duration>,
    /// Raw element userdata; `comment()` writes nft's comment TLV.
    pub userdata: Option<Vec<u8>>,
    /// Marks the (exclusive) end of a range in a non-concatenated interval
    /// set (NFT_SET_ELEM_INTERVAL_END); see `prefix_elems`.
    pub interval_end: bool,
}

impl SetElem {
    /// An element with a (possibly concatenated) key.
    pub fn new(key: &[Val]) -> SetElem {
        SetElem {
            key: encode_concat(key),
            ..Default::default()
        }
    }

    /// An element from already-encoded key bytes.
    pub fn raw(key: Vec<u8>) -> SetElem {
        SetElem {
            key,
            ..Default::default()
        }
    }

    pub fn verdict(mut self, v: Verdict) -> SetElem {
        self.data = Some(ElemData::Verdict(v));
        self
    }

    /// Map data (e.g. `ipv4_addr . inet_service` for a dnat map).
    pub fn data(mut self, vals: &[Val]) -> SetElem {
        self.data = Some(ElemData::Value(encode_concat(vals)));
        self
    }

    pub fn key_end(mut self, key: &[Val]) -> SetElem {
        self.key_end = Some(encode_concat(key));
        self
    }

    pub fn timeout(mut self, t: Duration) -> SetElem {
        self.timeout = Some(t);
        self
    }

    /// nft-compatible comment (`nft list` shows it as `comment "..."`).
    pub fn comment(mut self, c: &str) -> SetElem {
        self.userdata = Some(udata::comment_blob(sys::UDATA_SET_ELEM_COMMENT, c));
        self
    }

    pub fn userdata(mut self, u: Vec<u8>) -> SetElem {
        self.userdata = Some(u);
        self
    }

    /// Flags this element as the exclusive end of a range.
    pub fn interval_end(mut self) -> SetElem {
        self.interval_end = true;
        self
    }

    /// Encodes one list entry. The kernel ignores the entry's attribute type;
    /// libnftnl numbers entries 1, 2, 3... (`index`), and so do we so that
    /// messages compare equal. `with_data` is false for deletions, which only
    /// need the key.
    pub(crate) fn encode(&self, w: &mut AttrWriter, index: u16, with_data: bool) -> Result<()> {
        let e = w.nest(index);
        if self.interval_end {
            w.put_u32_be(sys::NFTA_SET_ELEM_FLAGS, sys::NFT_SET_ELEM_INTERVAL_END);
        }
        if with_data {
            if let Some(t) = self.timeout {
                w.put_u64_be(sys::NFTA_SET_ELEM_TIMEOUT, t.as_millis() as u64);
            }
        }
        let k = w.nest(sys::NFTA_SET_ELEM_KEY);
        w.put(sys::NFTA_DATA_VALUE, &self.key);
        w.end(k)?;
        if let Some(end) = &self.key_end {
            let k = w.nest(sys::NFTA_SET_ELEM_KEY_END);
            w.put(sys::NFTA_DATA_VALUE, end);
            w.end(k)?;
        }
        if with_data {
            match &self.data {
                Some(ElemData::Verdict(v)) => put_verdict(w, sys::NFTA_SET_ELEM_DATA, v)?,
                Some(ElemData::Value(b)) => {
                    let d = w.nest(sys::NFTA_SET_ELEM_DATA);
                    w.put(sys::NFTA_DATA_VALUE, b);
                    w.end(d)?;
                }
                None => {}
            }
            if let Some(u) = &self.userdata {
                w.put(sys::NFTA_SET_ELEM_USERDATA, u);
            }
        }
        w.end(e)
    }
}

/// A set or map element by reference, with its key (and map data) already
/// encoded as `SetElem::new` / `SetElem::data` would (`encode_concat_into`
/// can put many into one buffer). `Batch::add_elements_ref` writes these
/// straight into the message: no `SetElem`, and no allocation, per element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElemRef<'a> {
    pub key: &'a [u8],
    pub data: Option<ElemDataRef<'a>>,
}

/// Map data of an `ElemRef`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemDataRef<'a> {
    Verdict(&'a Verdict),
    Value(&'a [u8]),
}

/// An element as one entry of an element list message.
pub(crate) trait EncodeElem {
    fn encode(&self, w: &mut AttrWriter, index: u16, with_data: bool) -> Result<()>;
}

impl EncodeElem for SetElem {
    fn encode(&self, w: &mut AttrWriter, index: u16, with_data: bool) -> Result<()> {
        SetElem::encode(self, w, index, with_data)
    }
}

impl EncodeElem for ElemRef<'_> {
    /// Like `SetElem::encode` of the same key and data.
    fn encode(&self, w: &mut AttrWriter, index: u16, with_data: bool) -> Result<()> {
        let e = w.nest(index);
        let k = w.nest(sys::NFTA_SET_ELEM_KEY);
        w.put(sys::NFTA_DATA_VALUE, self.key);
        w.end(k)?;
        if with_data {
            match self.data {
                Some(ElemDataRef::Verdict(v)) => put_verdict(w, sys::NFTA_SET_ELEM_DATA, v)?,
                Some(ElemDataRef::Value(b)) => {
                    let d = w.nest(sys::NFTA_SET_ELEM_DATA);
                    w.put(sys::NFTA_DATA_VALUE, b);
                    w.end(d)?;
                }
                None => {}
            }
        }
        w.end(e)
    }
}

/// A rule: a list of expressions in a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub family: Family,
    pub table: String,
    pub chain: String,
    pub exprs: Vec<Expr>,
    pub comment: Option<String>,
    /// Handle of the rule to replace (`Batch::replace_rule`) or delete.
    pub handle: Option<u64>,
    /// Handle of the rule to insert before / append after.
    pub position: Option<u64>,
}

impl Rule {
    pub fn new(family: Family, table: impl Into<String>, chain: impl Into<String>) -> Rule {
        Rule {
            family,
            table: table.into(),
            chain: chain.into(),
            exprs: Vec::new(),
            comment: None,
            handle: None,
            position: None,
        }
    }

    pub(crate) fn encode_new(&self, w: &mut AttrWriter) -> Result<()> {
        w.put_str(sys::NFTA_RULE_TABLE, &self.table);
        w.put_str(sys::NFTA_RULE_CHAIN, &self.chain);
        if let Some(h) = self.handle {
            w.put_u64_be(sys::NFTA_RULE_HANDLE, h);
        }
        if let Some(p) = self.position {
            w.put_u64_be(sys::NFTA_RULE_POSITION, p);
        }
        let l = w.nest(sys::NFTA_RULE_EXPRESSIONS);
        for e in &self.exprs {
            e.encode(w)?;
        }
        w.end(l)?;
        if let Some(c) = &self.comment {
            w.put(
                sys::NFTA_RULE_USERDATA,
                &udata::comment_blob(sys::UDATA_RULE_COMMENT, c),
            );
        }
        Ok(())
    }
}

/// Elements of an interval set (`flags interval`, key `ipv4_addr` or
/// `ipv6_addr`) holding the given prefixes, in the form nft sends: sorted
/// range starts, each followed by its exclusive end flagged interval-end,
/// plus a leading interval-end at address zero when the first range does not
/// start there. Overlapping or adjacent prefixes are merged. All prefixes
/// must be of one family.
pub fn prefix_elems(prefixes: &[(IpAddr, u8)]) -> Result<Vec<SetElem>> {
    let Some(first) = prefixes.first() else {
        return Ok(Vec::new());
    };
    let v6 = first.0.is_ipv6();
    let bits: u32 = if v6 { 128 } else { 32 };
    let mut ranges: Vec<(u128, u128)> = Vec::with_capacity(prefixes.len());
    for (addr, len) in prefixes {
        if addr.is_ipv6() != v6 {
            return Err(Error::Invalid(format!(
                "prefix {addr}/{len}: mixed address families in one interval set"
            )));
        }
        if u32::from(*len) > bits {
            return Err(Error::Invalid(format!(
                "prefix {addr}/{len}: length over {bits}"
            )));
        }
        let a: u128 = match addr {
            IpAddr::V4(a) => u32::from(*a).into(),
            IpAddr::V6(a) => u128::from(*a),
        };
        let host_bits = bits - u32::from(*len);
        let host_mask: u128 = if host_bits == 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        // Inclusive ends, so ::/0 does not overflow.
        ranges.push((a & !host_mask, a | host_mask));
    }
    ranges.sort();
    let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match merged.last_mut() {
            Some((_, le)) if s <= le.saturating_add(1) => *le = (*le).max(e),
            _ => merged.push((s, e)),
        }
    }
    let max: u128 = if v6 { u128::MAX } else { u32::MAX.into() };
    let key = |v: u128| -> Vec<u8> {
        if v6 {
            v.to_be_bytes().to_vec()
        } else {
            (v as u32).to_be_bytes().to_vec()
        }
    };
    let mut out = Vec::with_capacity(merged.len() * 2 + 1);
    if merged[0].0 != 0 {
        out.push(SetElem::raw(key(0)).interval_end());
    }
    for (s, e) in merged {
        out.push(SetElem::raw(key(s)));
        if e < max {
            out.push(SetElem::raw(key(e + 1)).interval_end());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_become_nft_style_intervals() {
        let e = prefix_elems(&[(v4("192.168.1.7"), 24), (v4("10.0.0.0"), 8)]).unwrap();
        let got: Vec<(Vec<u8>, bool)> = e.iter().map(|e| (e.key.clone(), e.interval_end)).collect();
        assert_eq!(
            got,
            vec![
                (vec![0, 0, 0, 0], true),
                (vec![10, 0, 0, 0], false),
                (vec![11, 0, 0, 0], true),
                (vec![192, 168, 1, 0], false),
                (vec![192, 168, 2, 0], true),
            ]
        );
    }

    #[test]
    fn adjacent_and_overlapping_prefixes_merge_and_top_of_space_has_no_end() {
        let e = prefix_elems(&[
            (v4("10.0.0.0"), 9),
            (v4("10.128.0.0"), 9),
            (v4("10.1.0.0"), 16),
            (v4("255.255.255.0"), 24),
        ])
        .unwrap();
        let got: Vec<(Vec<u8>, bool)> = e.iter().map(|e| (e.key.clone(), e.interval_end)).collect();
        assert_eq!(
            got,
            vec![
                (vec![0, 0, 0, 0], true),
                (vec![10, 0, 0, 0], false),
                (vec![11, 0, 0, 0], true),
                (vec![255, 255, 255, 0], false),
            ]
        );
        let all = prefix_elems(&[(v4("0.0.0.0"), 0)]).unwrap();
        assert_eq!(all.len(), 1);
        assert!(!all[0].interval_end);
        let v6 = prefix_elems(&[("::".parse().unwrap(), 0)]).unwrap();
        assert_eq!(v6.len(), 1);
    }

    #[test]
    fn mixed_families_and_bad_lengths_are_rejected() {
        assert!(prefix_elems(&[(v4("10.0.0.0"), 8), ("fd00::".parse().unwrap(), 8)]).is_err());
        assert!(prefix_elems(&[(v4("10.0.0.0"), 33)]).is_err());
    }

    #[test]
    fn set_flags_and_key_layout() {
        let s = Set::new(
            Family::Inet,
            "t",
            "s",
            [DataType::Ipv4Addr, DataType::InetService],
        )
        .flags(SetFlags {
            interval: true,
            ..Default::default()
        });
        assert_eq!(
            s.kernel_flags(),
            sys::NFT_SET_INTERVAL | sys::NFT_SET_CONCAT
        );
        let m = Set::new(Family::Ip, "t", "m", DataType::Ipv4Addr)
            .map(DataType::Verdict)
            .timeout(Duration::from_secs(5));
        assert!(m.is_vmap());
        assert_eq!(m.kernel_flags(), sys::NFT_SET_MAP | sys::NFT_SET_TIMEOUT);
        let bad = Set {
            timeout: Some(Duration::from_secs(1)),
            ..Set::new(Family::Ip, "t", "x", DataType::Ipv4Addr)
        };
        assert!(bad.validate().is_err());
    }
}
