//! Transactions: an ordered list of nf_tables messages framed by
//! NFNL_MSG_BATCH_BEGIN/END, encoded into one buffer for one `sendmsg`.
//! Every message gets its own sequence number and NLM_F_ACK, and remembers a
//! description (`add set ip podnet service-ips`) so kernel errors can be
//! reported against the object that caused them. Pure: no I/O here.

use std::collections::HashMap;

use netlink_packet_core::{
    NetlinkBuffer, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};

use crate::attr::AttrWriter;
use crate::error::{Error, Result};
use crate::expr::SetRef;
use crate::objects::{Chain, ElemRef, EncodeElem, Rule, Set, SetElem, Table};
use crate::sys;
use crate::types::Family;

/// Element list nests carry a 16-bit length; split element messages well
/// below that.
const MAX_ELEMS_NEST: usize = 60_000;
const NLMSG_HDR: usize = 16;
const NFGENMSG: usize = 4;

#[derive(Debug, Clone)]
pub(crate) struct Msg {
    pub(crate) ty: u16,
    pub(crate) flags: u16,
    pub(crate) family: Family,
    pub(crate) attrs: Vec<u8>,
    pub(crate) what: String,
}

/// A transaction under construction. Apply it with `Nft::apply`; the kernel
/// commits all of it or nothing.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    pub(crate) msgs: Vec<Msg>,
    next_set_id: u32,
    /// Sets created in this batch: (family, table, name) -> NFTA_SET_ID, so
    /// rules and elements in the same batch can reference them like nft does.
    set_ids: HashMap<(Family, String, String), u32>,
    bytes: usize,
}

/// The encoded transaction: one buffer and, per message, its sequence number.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub buf: Vec<u8>,
    /// Sequence number of BATCH_BEGIN; message `i` has `first_seq + 1 + i`,
    /// BATCH_END has `first_seq + 1 + len`.
    pub first_seq: u32,
    pub len: usize,
}

fn name_of_set(set: &Set) -> String {
    if set.anonymous {
        "(anonymous)".to_string()
    } else {
        set.name.clone()
    }
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Number of nf_tables messages (without BEGIN/END).
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// Bytes of the encoded transaction.
    pub fn encoded_len(&self) -> usize {
        self.bytes + 2 * (NLMSG_HDR + NFGENMSG)
    }

    /// Description of message `i` (`add chain ip podnet services`).
    pub fn describe(&self, i: usize) -> Option<&str> {
        self.msgs.get(i).map(|m| m.what.as_str())
    }

    fn push(&mut self, ty: u16, flags: u16, family: Family, attrs: Vec<u8>, what: String) {
        self.bytes += NLMSG_HDR + NFGENMSG + attrs.len();
        self.msgs.push(Msg {
            ty,
            flags,
            family,
            attrs,
            what,
        });
    }

    fn set_id(&self, family: Family, table: &str, name: &str) -> Option<u32> {
        self.set_ids
            .get(&(family, table.to_string(), name.to_string()))
            .copied()
    }

    // ---- tables

    /// `add table` (no error if it exists).
    pub fn add_table(&mut self, t: &Table) {
        self.table_msg(t, NLM_F_CREATE, "add");
    }

    /// `create table` (EEXIST if it exists).
    pub fn create_table(&mut self, t: &Table) {
        self.table_msg(t, NLM_F_CREATE | NLM_F_EXCL, "create");
    }

    fn table_msg(&mut self, t: &Table, flags: u16, verb: &str) {
        let mut w = AttrWriter::with_capacity(64);
        t.encode_new(&mut w);
        self.push(
            sys::NFT_MSG_NEWTABLE,
            flags,
            t.family,
            w.buf,
            format!("{verb} table {} {}", t.family, t.name),
        );
    }

    fn table_name_msg(&mut self, ty: u16, family: Family, name: &str, verb: &str) {
        let mut w = AttrWriter::with_capacity(32);
        w.put_str(sys::NFTA_TABLE_NAME, name);
        self.push(
            ty,
            0,
            family,
            w.buf,
            format!("{verb} table {family} {name}"),
        );
    }

    /// `delete table` (ENOENT if missing).
    pub fn delete_table(&mut self, family: Family, name: &str) {
        self.table_name_msg(sys::NFT_MSG_DELTABLE, family, name, "delete");
    }

    /// `destroy table`: delete, ignoring a missing table (Linux >= 6.3).
    pub fn destroy_table(&mut self, family: Family, name: &str) {
        self.table_name_msg(sys::NFT_MSG_DESTROYTABLE, family, name, "destroy");
    }

    /// `flush table`: delete all rules of all chains of the table.
    pub fn flush_table(&mut self, family: Family, name: &str) {
        let mut w = AttrWriter::with_capacity(32);
        w.put_str(sys::NFTA_RULE_TABLE, name);
        self.push(
            sys::NFT_MSG_DELRULE,
            0,
            family,
            w.buf,
            format!("flush table {family} {name}"),
        );
    }

    // ---- chains

    /// `add chain` (no error if it exists with the same hook).
    pub fn add_chain(&mut self, c: &Chain) -> Result<()> {
        self.chain_msg(c, NLM_F_CREATE, "add")
    }

    /// `create chain` (EEXIST if it exists).
    pub fn create_chain(&mut self, c: &Chain) -> Result<()> {
        self.chain_msg(c, NLM_F_CREATE | NLM_F_EXCL, "create")
    }

    fn chain_msg(&mut self, c: &Chain, flags: u16, verb: &str) -> Result<()> {
        let mut w = AttrWriter::with_capacity(96);
        c.encode_new(&mut w)?;
        self.push(
            sys::NFT_MSG_NEWCHAIN,
            flags,
            c.family,
            w.buf,
            format!("{verb} chain {} {} {}", c.family, c.table, c.name),
        );
        Ok(())
    }

    /// A message that names one object of a table: two string attributes
    /// (the table's and the object's), as delete/destroy/flush requests are.
    fn named_msg(
        &mut self,
        ty: u16,
        family: Family,
        (table_attr, table): (u16, &str),
        (name_attr, name): (u16, &str),
        what: String,
    ) {
        let mut w = AttrWriter::with_capacity(64);
        w.put_str(table_attr, table);
        w.put_str(name_attr, name);
        self.push(ty, 0, family, w.buf, what);
    }

    fn chain_name_msg(&mut self, ty: u16, family: Family, table: &str, name: &str, verb: &str) {
        self.named_msg(
            ty,
            family,
            (sys::NFTA_CHAIN_TABLE, table),
            (sys::NFTA_CHAIN_NAME, name),
            format!("{verb} chain {family} {table} {name}"),
        );
    }

    /// `delete chain` (the chain must be empty and unreferenced).
    pub fn delete_chain(&mut self, family: Family, table: &str, name: &str) {
        self.chain_name_msg(sys::NFT_MSG_DELCHAIN, family, table, name, "delete");
    }

    /// `destroy chain`: ignores a missing chain (Linux >= 6.3).
    pub fn destroy_chain(&mut self, family: Family, table: &str, name: &str) {
        self.chain_name_msg(sys::NFT_MSG_DESTROYCHAIN, family, table, name, "destroy");
    }

    /// `flush chain`: delete all its rules.
    pub fn flush_chain(&mut self, family: Family, table: &str, name: &str) {
        self.named_msg(
            sys::NFT_MSG_DELRULE,
            family,
            (sys::NFTA_RULE_TABLE, table),
            (sys::NFTA_RULE_CHAIN, name),
            format!("flush chain {family} {table} {name}"),
        );
    }

    // ---- sets

    /// `add set`/`add map`. Returns the reference rules use; it carries the
    /// batch-local set id.
    pub fn add_set(&mut self, s: &Set) -> Result<SetRef> {
        self.set_msg(s, 0)
    }

    fn set_msg(&mut self, s: &Set, elem_count: usize) -> Result<SetRef> {
        s.validate()?;
        self.next_set_id += 1;
        let id = self.next_set_id;
        let mut s2;
        let s = if s.anonymous {
            s2 = s.clone();
            s2.name = if s.is_map() { "__map%d" } else { "__set%d" }.to_string();
            &s2
        } else {
            s
        };
        let mut w = AttrWriter::with_capacity(160);
        s.encode_new(&mut w, id, elem_count)?;
        let what = format!(
            "add {} {} {} {}",
            if s.is_map() { "map" } else { "set" },
            s.family,
            s.table,
            name_of_set(s)
        );
        self.push(sys::NFT_MSG_NEWSET, NLM_F_CREATE, s.family, w.buf, what);
        if !s.anonymous {
            self.set_ids
                .insert((s.family, s.table.clone(), s.name.clone()), id);
        }
        Ok(SetRef {
            name: s.name.clone(),
            id: Some(id),
        })
    }

    /// An anonymous constant set/map with its elements, for exactly one rule
    /// (`numgen random mod 2 vmap { 0 : goto a, 1 : goto b }`). Reference it
    /// from that rule with the returned `SetRef`.
    pub fn add_anonymous_set(&mut self, s: &Set, elems: &[SetElem]) -> Result<SetRef> {
        if !s.anonymous {
            return Err(Error::Invalid(format!(
                "add_anonymous_set: set {} {} {} is not anonymous",
                s.family, s.table, s.name
            )));
        }
        let r = self.set_msg(s, elems.len())?;
        self.elem_msgs(
            sys::NFT_MSG_NEWSETELEM,
            NLM_F_CREATE,
            s.family,
            &s.table,
            &r,
            elems,
            true,
            "add element to anonymous set",
        )?;
        Ok(r)
    }

    fn set_name_msg(&mut self, ty: u16, family: Family, table: &str, name: &str, verb: &str) {
        self.named_msg(
            ty,
            family,
            (sys::NFTA_SET_TABLE, table),
            (sys::NFTA_SET_NAME, name),
            format!("{verb} set {family} {table} {name}"),
        );
    }

    /// `delete set` (must be unreferenced by rules).
    pub fn delete_set(&mut self, family: Family, table: &str, name: &str) {
        self.set_name_msg(sys::NFT_MSG_DELSET, family, table, name, "delete");
    }

    /// `destroy set`: ignores a missing set (Linux >= 6.3).
    pub fn destroy_set(&mut self, family: Family, table: &str, name: &str) {
        self.set_name_msg(sys::NFT_MSG_DESTROYSET, family, table, name, "destroy");
    }

    /// `flush set`: remove all elements.
    pub fn flush_set(&mut self, family: Family, table: &str, name: &str) {
        self.named_msg(
            sys::NFT_MSG_DELSETELEM,
            family,
            (sys::NFTA_SET_ELEM_LIST_TABLE, table),
            (sys::NFTA_SET_ELEM_LIST_SET, name),
            format!("flush set {family} {table} {name}"),
        );
    }

    // ---- elements

    /// `add element` (existing identical elements are no error; an existing
    /// key with different map data is: delete it first in the same batch).
    pub fn add_elements(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
        elems: &[SetElem],
    ) -> Result<()> {
        let r = self.resolve(family, table, set);
        self.elem_msgs(
            sys::NFT_MSG_NEWSETELEM,
            NLM_F_CREATE,
            family,
            table,
            &r,
            elems,
            true,
            "add element",
        )
    }

    /// `create element` (EEXIST if an element exists).
    pub fn create_elements(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
        elems: &[SetElem],
    ) -> Result<()> {
        let r = self.resolve(family, table, set);
        self.elem_msgs(
            sys::NFT_MSG_NEWSETELEM,
            NLM_F_CREATE | NLM_F_EXCL,
            family,
            table,
            &r,
            elems,
            true,
            "create element",
        )
    }

    /// `delete element` (ENOENT if missing). Only keys are sent.
    pub fn delete_elements(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
        elems: &[SetElem],
    ) -> Result<()> {
        let r = self.resolve(family, table, set);
        self.elem_msgs(
            sys::NFT_MSG_DELSETELEM,
            0,
            family,
            table,
            &r,
            elems,
            false,
            "delete element",
        )
    }

    /// `add element` for elements given by reference (see `ElemRef`);
    /// encodes exactly as `add_elements` of the same keys and data.
    pub fn add_elements_ref(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
        elems: &[ElemRef<'_>],
    ) -> Result<()> {
        let r = self.resolve(family, table, set);
        self.elem_msgs(
            sys::NFT_MSG_NEWSETELEM,
            NLM_F_CREATE,
            family,
            table,
            &r,
            elems,
            true,
            "add element",
        )
    }

    /// `delete element` for elements given by reference (keys only are sent).
    pub fn delete_elements_ref(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
        elems: &[ElemRef<'_>],
    ) -> Result<()> {
        let r = self.resolve(family, table, set);
        self.elem_msgs(
            sys::NFT_MSG_DELSETELEM,
            0,
            family,
            table,
            &r,
            elems,
            false,
            "delete element",
        )
    }

    /// `destroy element`: ignores missing elements (Linux >= 6.3).
    pub fn destroy_elements(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
        elems: &[SetElem],
    ) -> Result<()> {
        let r = self.resolve(family, table, set);
        self.elem_msgs(
            sys::NFT_MSG_DESTROYSETELEM,
            0,
            family,
            table,
            &r,
            elems,
            false,
            "destroy element",
        )
    }

    fn resolve(&self, family: Family, table: &str, set: &str) -> SetRef {
        SetRef {
            name: set.to_string(),
            id: self.set_id(family, table, set),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn elem_msgs<E: EncodeElem>(
        &mut self,
        ty: u16,
        flags: u16,
        family: Family,
        table: &str,
        set: &SetRef,
        elems: &[E],
        with_data: bool,
        verb: &str,
    ) -> Result<()> {
        let header = |w: &mut AttrWriter| {
            w.put_str(sys::NFTA_SET_ELEM_LIST_TABLE, table);
            w.put_str(sys::NFTA_SET_ELEM_LIST_SET, &set.name);
            if let Some(id) = set.id {
                w.put_u32_be(sys::NFTA_SET_ELEM_LIST_SET_ID, id);
            }
        };
        let shown = if set.name.starts_with("__") {
            "(anonymous)"
        } else {
            set.name.as_str()
        };
        let mut i = 0;
        while i < elems.len() {
            let first = i;
            let mut w = AttrWriter::with_capacity(MAX_ELEMS_NEST.min(64 + elems.len() * 64) + 128);
            header(&mut w);
            let nest = w.nest(sys::NFTA_SET_ELEM_LIST_ELEMENTS);
            let nest_start = w.len();
            while i < elems.len() {
                let before = w.len();
                elems[i].encode(&mut w, (i - first + 1) as u16, with_data)?;
                if w.len() - nest_start > MAX_ELEMS_NEST {
                    if i == first {
                        return Err(Error::Invalid(format!(
                            "{verb} {family} {table} {shown}: one element encodes to {} bytes",
                            w.len() - before
                        )));
                    }
                    w.buf.truncate(before);
                    break;
                }
                i += 1;
            }
            w.end(nest)?;
            let what = if first == 0 && i == elems.len() {
                format!("{verb} {family} {table} {shown} ({} elements)", elems.len())
            } else {
                format!(
                    "{verb} {family} {table} {shown} (elements {}..{} of {})",
                    first,
                    i,
                    elems.len()
                )
            };
            self.push(ty, flags, family, w.buf, what);
        }
        Ok(())
    }

    // ---- rules

    fn fill_set_ids(&self, r: &Rule) -> Rule {
        let mut r = r.clone();
        for e in &mut r.exprs {
            if let Some(s) = e.set_ref_mut() {
                if s.id.is_none() {
                    s.id = self.set_id(r.family, &r.table, &s.name);
                }
            }
        }
        r
    }

    fn rule_msg(&mut self, r: &Rule, flags: u16, verb: &str) -> Result<()> {
        let r = self.fill_set_ids(r);
        let mut w = AttrWriter::with_capacity(256);
        r.encode_new(&mut w)?;
        let mut what = format!("{verb} rule {} {} {}", r.family, r.table, r.chain);
        if let Some(c) = &r.comment {
            what.push_str(&format!(" (comment {c:?})"));
        }
        self.push(sys::NFT_MSG_NEWRULE, flags, r.family, w.buf, what);
        Ok(())
    }

    /// `add rule`: append at the end of the chain (or after `rule.position`).
    pub fn add_rule(&mut self, r: &Rule) -> Result<()> {
        self.rule_msg(r, NLM_F_CREATE | NLM_F_APPEND, "add")
    }

    /// `insert rule`: at the start of the chain (or before `rule.position`).
    pub fn insert_rule(&mut self, r: &Rule) -> Result<()> {
        self.rule_msg(r, NLM_F_CREATE, "insert")
    }

    /// `replace rule handle H`: `rule.handle` must be set.
    pub fn replace_rule(&mut self, r: &Rule) -> Result<()> {
        if r.handle.is_none() {
            return Err(Error::Invalid(format!(
                "replace rule in {} {} {}: no handle",
                r.family, r.table, r.chain
            )));
        }
        self.rule_msg(r, NLM_F_REPLACE, "replace")
    }

    fn rule_handle_msg(
        &mut self,
        ty: u16,
        family: Family,
        table: &str,
        chain: &str,
        handle: u64,
        verb: &str,
    ) {
        let mut w = AttrWriter::with_capacity(64);
        w.put_str(sys::NFTA_RULE_TABLE, table);
        w.put_str(sys::NFTA_RULE_CHAIN, chain);
        w.put_u64_be(sys::NFTA_RULE_HANDLE, handle);
        self.push(
            ty,
            0,
            family,
            w.buf,
            format!("{verb} rule {family} {table} {chain} handle {handle}"),
        );
    }

    /// `delete rule ... handle H`.
    pub fn delete_rule(&mut self, family: Family, table: &str, chain: &str, handle: u64) {
        self.rule_handle_msg(sys::NFT_MSG_DELRULE, family, table, chain, handle, "delete");
    }

    /// `destroy rule ... handle H` (Linux >= 6.3).
    pub fn destroy_rule(&mut self, family: Family, table: &str, chain: &str, handle: u64) {
        self.rule_handle_msg(
            sys::NFT_MSG_DESTROYRULE,
            family,
            table,
            chain,
            handle,
            "destroy",
        );
    }

    // ---- encoding

    /// Encodes BEGIN, all messages and END into one buffer; message `i` gets
    /// sequence number `first_seq + 1 + i`.
    pub fn encode(&self, first_seq: u32, port: u32) -> Encoded {
        let mut buf = Vec::with_capacity(self.encoded_len());
        let res_id = sys::NFNL_SUBSYS_NFTABLES.to_be_bytes();
        put_msg(
            &mut buf,
            sys::NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            first_seq,
            port,
            [0, sys::NFNETLINK_V0, res_id[0], res_id[1]],
            &[],
        );
        for (i, m) in self.msgs.iter().enumerate() {
            put_msg(
                &mut buf,
                (sys::NFNL_SUBSYS_NFTABLES << 8) | m.ty,
                NLM_F_REQUEST | NLM_F_ACK | m.flags,
                first_seq.wrapping_add(1 + i as u32),
                port,
                [m.family.nfproto(), sys::NFNETLINK_V0, 0, 0],
                &m.attrs,
            );
        }
        put_msg(
            &mut buf,
            sys::NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            first_seq.wrapping_add(1 + self.msgs.len() as u32),
            port,
            [0, sys::NFNETLINK_V0, res_id[0], res_id[1]],
            &[],
        );
        Encoded {
            buf,
            first_seq,
            len: self.msgs.len(),
        }
    }
}

/// Appends one netlink message (header + nfgenmsg + attributes).
pub(crate) fn put_msg(
    buf: &mut Vec<u8>,
    ty: u16,
    flags: u16,
    seq: u32,
    port: u32,
    nfgen: [u8; 4],
    attrs: &[u8],
) {
    let start = buf.len();
    let len = NLMSG_HDR + NFGENMSG + attrs.len();
    buf.resize(start + NLMSG_HDR, 0);
    {
        let mut h = NetlinkBuffer::new(&mut buf[start..start + NLMSG_HDR]);
        h.set_length(len as u32);
        h.set_message_type(ty);
        h.set_flags(flags);
        h.set_sequence_number(seq);
        h.set_port_number(port);
    }
    buf.extend_from_slice(&nfgen);
    buf.extend_from_slice(attrs);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{DataType, Val, Verdict};
    use std::net::Ipv4Addr;

    /// (type, flags, seq, nfgenmsg, attrs) of one message.
    type Parsed = (u16, u16, u32, [u8; 4], Vec<u8>);

    fn split(buf: &[u8]) -> Vec<Parsed> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < buf.len() {
            let b = NetlinkBuffer::new_checked(&buf[at..]).unwrap();
            let len = b.length() as usize;
            let mut nfgen = [0; 4];
            nfgen.copy_from_slice(&buf[at + 16..at + 20]);
            out.push((
                b.message_type(),
                b.flags(),
                b.sequence_number(),
                nfgen,
                buf[at + 20..at + len].to_vec(),
            ));
            at += len;
        }
        out
    }

    fn elems(n: u32) -> Vec<SetElem> {
        (0..n)
            .map(|i| {
                SetElem::new(&[Val::Ipv4(Ipv4Addr::from(i)), Val::Proto(6), Val::Port(80)])
                    .verdict(Verdict::Goto("a-chain-with-a-long-name".into()))
            })
            .collect()
    }

    #[test]
    fn framing_sequence_numbers_and_flags() {
        let mut b = Batch::new();
        b.add_table(&Table::new(Family::Ip, "t"));
        b.delete_chain(Family::Ip, "t", "c");
        let enc = b.encode(100, 7);
        assert_eq!(enc.buf.len(), b.encoded_len());
        let m = split(&enc.buf);
        assert_eq!(m.len(), 4);
        // BEGIN/END: nfgenmsg res_id = NFNL_SUBSYS_NFTABLES, big-endian.
        assert_eq!((m[0].0, m[0].2, m[0].3), (0x10, 100, [0, 0, 0, 10]));
        assert_eq!((m[3].0, m[3].2, m[3].3), (0x11, 103, [0, 0, 0, 10]));
        assert_eq!(m[0].1 & NLM_F_ACK, 0);
        // Messages: subsystem in the high byte, own seq, ACK requested.
        assert_eq!(m[1].0, (10 << 8) | sys::NFT_MSG_NEWTABLE);
        assert_eq!(m[1].1, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE);
        assert_eq!(m[1].2, 101);
        assert_eq!(m[1].3, [2, 0, 0, 0]);
        assert_eq!(m[2].0, (10 << 8) | sys::NFT_MSG_DELCHAIN);
        assert_eq!(m[2].1, NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(m[2].2, 102);
        assert_eq!(b.describe(1), Some("delete chain ip t c"));
    }

    #[test]
    fn large_element_lists_are_split_below_the_nest_limit() {
        let mut b = Batch::new();
        let all = elems(5000);
        b.add_elements(Family::Ip, "t", "svc", &all).unwrap();
        assert!(b.len() > 1, "{} messages", b.len());
        let mut keys = Vec::new();
        for (i, m) in b.msgs.iter().enumerate() {
            let attrs = crate::attr::parse_attrs(&m.attrs).unwrap();
            let list = crate::attr::find(&attrs, sys::NFTA_SET_ELEM_LIST_ELEMENTS).unwrap();
            assert!(list.value.len() + 4 <= u16::MAX as usize);
            for (j, e) in list.nested().unwrap().iter().enumerate() {
                // libnftnl-style numbering restarts in every message.
                assert_eq!(e.kind as usize, j + 1);
                let inner = e.nested().unwrap();
                let key = crate::attr::find(&inner, sys::NFTA_SET_ELEM_KEY).unwrap();
                keys.push(key.nested().unwrap()[0].value.to_vec());
            }
            assert!(b.describe(i).unwrap().contains("of 5000"));
        }
        let want: Vec<Vec<u8>> = all.iter().map(|e| e.key.clone()).collect();
        assert_eq!(keys, want);
    }

    #[test]
    fn elements_by_reference_encode_like_set_elems() {
        use crate::objects::ElemDataRef;
        let owned: Vec<SetElem> = (0..3000u32)
            .map(|i| {
                let key = [Val::Ipv4(Ipv4Addr::from(i)), Val::Proto(6), Val::Port(80)];
                match i % 3 {
                    0 => SetElem::new(&key).verdict(Verdict::Goto(format!("chain-{i}"))),
                    1 => SetElem::new(&key).data(&[Val::Ipv4(Ipv4Addr::from(i)), Val::Port(8080)]),
                    _ => SetElem::new(&key),
                }
            })
            .collect();
        let refs: Vec<ElemRef> = owned
            .iter()
            .map(|e| ElemRef {
                key: &e.key,
                data: match &e.data {
                    Some(crate::objects::ElemData::Verdict(v)) => Some(ElemDataRef::Verdict(v)),
                    Some(crate::objects::ElemData::Value(b)) => Some(ElemDataRef::Value(b)),
                    None => None,
                },
            })
            .collect();
        let (mut a, mut b) = (Batch::new(), Batch::new());
        a.add_elements(Family::Ip, "t", "s", &owned).unwrap();
        a.delete_elements(Family::Ip, "t", "s", &owned).unwrap();
        b.add_elements_ref(Family::Ip, "t", "s", &refs).unwrap();
        b.delete_elements_ref(Family::Ip, "t", "s", &refs).unwrap();
        assert!(a.len() > 2, "the list is split: {} messages", a.len());
        assert_eq!(a.encode(1, 0).buf, b.encode(1, 0).buf);
        for i in 0..a.len() {
            assert_eq!(a.describe(i), b.describe(i));
        }
    }

    #[test]
    fn sets_created_in_the_batch_are_referenced_by_id() {
        let mut b = Batch::new();
        let f = Family::Ip;
        let r1 = b
            .add_set(&Set::new(f, "t", "s1", DataType::Ipv4Addr))
            .unwrap();
        let anon = b
            .add_anonymous_set(
                &Set::anonymous(f, "t", DataType::Integer32).map(DataType::Verdict),
                &[SetElem::new(&[Val::U32(0)]).verdict(Verdict::Accept)],
            )
            .unwrap();
        assert_eq!((r1.id, anon.id), (Some(1), Some(2)));
        assert_eq!(anon.name, "__map%d");
        b.add_elements(f, "t", "s1", &elems(1)).unwrap();
        b.add_elements(f, "t", "elsewhere", &elems(1)).unwrap();
        let has_id = |i: usize| {
            let attrs = crate::attr::parse_attrs(&b.msgs[i].attrs).unwrap();
            crate::attr::find(&attrs, sys::NFTA_SET_ELEM_LIST_SET_ID).map(|a| a.u32_be().unwrap())
        };
        assert_eq!(has_id(3), Some(1));
        assert_eq!(has_id(4), None);
        let rule = Rule::new(f, "t", "c")
            .lookup(&[crate::Field::IpSaddr], SetRef::named("s1"), false)
            .unwrap();
        b.add_rule(&rule).unwrap();
        assert!(b.msgs[5].attrs.windows(4).any(|w| w == [0, 0, 0, 1]));
        assert!(Batch::new()
            .add_anonymous_set(&Set::new(f, "t", "named", DataType::Ipv4Addr), &[])
            .is_err());
        assert!(Batch::new().replace_rule(&Rule::new(f, "t", "c")).is_err());
    }
}
