//! High-level rule building: statement-sized helpers on `Rule` that emit the
//! same expression sequences nft generates (each statement starts again at
//! the first data register, like nft does).

use std::net::IpAddr;
use std::time::Duration;

use crate::error::Result;
use crate::expr::{
    load_concat, CmpOp, CtDir, CtKey, DynsetOp, Expr, Field, MetaKey, NatKind, NumgenKind, Reject,
    SetRef,
};
use crate::objects::Rule;
use crate::types::{Family, Reg, Val, Verdict};

impl Rule {
    /// Appends a raw expression.
    pub fn expr(mut self, e: Expr) -> Rule {
        self.exprs.push(e);
        self
    }

    /// Appends raw expressions.
    pub fn exprs(mut self, e: impl IntoIterator<Item = Expr>) -> Rule {
        self.exprs.extend(e);
        self
    }

    pub fn comment(mut self, c: impl Into<String>) -> Rule {
        self.comment = Some(c.into());
        self
    }

    /// `<field> <op> <value>`, e.g. `ip saddr 10.0.0.1`, `meta l4proto tcp`.
    pub fn cmp(self, field: Field, op: CmpOp, value: Val) -> Rule {
        let r = Reg::first();
        self.expr(field.load(r)).expr(Expr::Cmp {
            sreg: r,
            op,
            data: value.bytes(),
        })
    }

    /// `<field> == <value>`.
    pub fn eq(self, field: Field, value: Val) -> Rule {
        self.cmp(field, CmpOp::Eq, value)
    }

    /// `<field> != <value>`.
    pub fn neq(self, field: Field, value: Val) -> Rule {
        self.cmp(field, CmpOp::Neq, value)
    }

    /// `iifname "prefix*"` / `oifname "prefix*"`: compares only the prefix.
    pub fn ifname_prefix(self, field: Field, prefix: &str) -> Rule {
        let r = Reg::first();
        self.expr(field.load(r)).expr(Expr::Cmp {
            sreg: r,
            op: CmpOp::Eq,
            data: prefix.as_bytes().to_vec(),
        })
    }

    /// `ct [original|reply] <key> <op> <value>`, e.g. `ct original ip daddr
    /// 10.96.0.1` (`CtKey::DstIp`, `Some(CtDir::Original)`).
    pub fn ct_cmp(self, key: CtKey, dir: Option<CtDir>, op: CmpOp, value: Val) -> Rule {
        let r = Reg::first();
        self.expr(Expr::Ct { dreg: r, key, dir }).expr(Expr::Cmp {
            sreg: r,
            op,
            data: value.bytes(),
        })
    }

    /// `<field> from-to` (inclusive), encoded like nft as two comparisons.
    pub fn in_range(self, field: Field, from: Val, to: Val) -> Rule {
        let r = Reg::first();
        self.expr(field.load(r))
            .expr(Expr::Cmp {
                sreg: r,
                op: CmpOp::Gte,
                data: from.bytes(),
            })
            .expr(Expr::Cmp {
                sreg: r,
                op: CmpOp::Lte,
                data: to.bytes(),
            })
    }

    /// `<field> != from-to`, encoded like nft with the range expression.
    pub fn not_in_range(self, field: Field, from: Val, to: Val) -> Rule {
        let r = Reg::first();
        self.expr(field.load(r)).expr(Expr::Range {
            sreg: r,
            neq: true,
            from: from.bytes(),
            to: to.bytes(),
        })
    }

    /// `<field> & mask != 0` (mask = host-order u32 bits). For the flag
    /// types `ct state`/`ct status` this is nft's `ct state new,established`;
    /// for others (`meta mark & 0x4000 != 0`) nft encodes an explicit
    /// binary operation, reproduced here.
    pub fn any_bits(self, field: Field, mask: u32) -> Rule {
        let r = Reg::first();
        let (mask, xor) = (mask.to_ne_bytes().to_vec(), vec![0; 4]);
        let bitwise = match field {
            Field::CtState | Field::CtStatus => Expr::Bitwise {
                sreg: r,
                dreg: r,
                mask,
                xor,
            },
            _ => Expr::BitwiseStmt {
                sreg: r,
                dreg: r,
                mask,
                xor,
            },
        };
        self.expr(field.load(r)).expr(bitwise).expr(Expr::Cmp {
            sreg: r,
            op: CmpOp::Neq,
            data: vec![0; 4],
        })
    }

    /// `ct state <bits>` (see `expr::ct_state`).
    pub fn ct_state(self, bits: u32) -> Rule {
        self.any_bits(Field::CtState, bits)
    }

    /// `<address field> <net>/<len>`, e.g. `ip saddr 10.0.0.0/8`. Like nft,
    /// a byte-aligned prefix of a payload field loads only the prefix bytes
    /// and needs no mask.
    pub fn in_prefix(self, field: Field, net: IpAddr, prefix_len: u8) -> Rule {
        let r = Reg::first();
        let bytes = Val::ip(net).bytes();
        let plen = (prefix_len as usize).min(bytes.len() * 8);
        let load = field.load(r);
        if plen.is_multiple_of(8) {
            if let Expr::Payload {
                dreg, base, offset, ..
            } = load
            {
                let n = plen / 8;
                return self
                    .expr(Expr::Payload {
                        dreg,
                        base,
                        offset,
                        len: n as u32,
                    })
                    .expr(Expr::Cmp {
                        sreg: r,
                        op: CmpOp::Eq,
                        data: bytes[..n].to_vec(),
                    });
            }
        }
        let mut mask = vec![0u8; bytes.len()];
        for (i, m) in mask.iter_mut().enumerate() {
            let bits = plen.saturating_sub(i * 8).min(8);
            *m = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
        }
        let masked: Vec<u8> = bytes.iter().zip(&mask).map(|(b, m)| b & m).collect();
        self.expr(load)
            .expr(Expr::Bitwise {
                sreg: r,
                dreg: r,
                mask,
                xor: vec![0; bytes.len()],
            })
            .expr(Expr::Cmp {
                sreg: r,
                op: CmpOp::Eq,
                data: masked,
            })
    }

    /// `! <prefix>`: like `in_prefix` but negated.
    pub fn not_in_prefix(mut self, field: Field, net: IpAddr, prefix_len: u8) -> Rule {
        self = self.in_prefix(field, net, prefix_len);
        if let Some(Expr::Cmp { op, .. }) = self.exprs.last_mut() {
            *op = CmpOp::Neq;
        }
        self
    }

    /// `a . b . c @set` (or `!= @set` with `invert`).
    pub fn lookup(self, fields: &[Field], set: SetRef, invert: bool) -> Result<Rule> {
        let (loads, sreg) = load_concat(fields)?;
        Ok(self.exprs(loads).expr(Expr::Lookup {
            sreg,
            set,
            dreg: None,
            invert,
        }))
    }

    /// `a . b . c vmap @map`.
    pub fn vmap(self, fields: &[Field], map: SetRef) -> Result<Rule> {
        let (loads, sreg) = load_concat(fields)?;
        Ok(self.exprs(loads).expr(Expr::Lookup {
            sreg,
            set: map,
            dreg: Some(Reg::VERDICT),
            invert: false,
        }))
    }

    /// `numgen random mod <modulus> vmap @map` (map keyed by `Integer32`).
    pub fn numgen_vmap(self, kind: NumgenKind, modulus: u32, map: SetRef) -> Rule {
        let r = Reg::first();
        self.expr(Expr::Numgen {
            dreg: r,
            kind,
            modulus,
            offset: 0,
        })
        .expr(Expr::Lookup {
            sreg: r,
            set: map,
            dreg: Some(Reg::VERDICT),
            invert: false,
        })
    }

    /// `dnat ip to a . b map @map`: looks `fields` up in a map whose data is
    /// `ipv4_addr . inet_service` (or ipv6) and DNATs to the result.
    pub fn dnat_map(self, family: Family, fields: &[Field], map: SetRef) -> Result<Rule> {
        let (loads, sreg) = load_concat(fields)?;
        let addr_words = if family == Family::Ip6 { 4 } else { 1 };
        Ok(self
            .exprs(loads)
            .expr(Expr::Lookup {
                sreg,
                set: map,
                dreg: Some(Reg::first()),
                invert: false,
            })
            .expr(Expr::Nat {
                kind: NatKind::Dnat,
                family,
                addr_min: Some(Reg::first()),
                addr_max: None,
                proto_min: Some(Reg::word(addr_words)),
                proto_max: None,
                // The kernel sets PROTO_SPECIFIED itself when a proto
                // register is given; nft sends no flags here.
                flags: 0,
            }))
    }

    /// `dnat to <addr>[:<port>]` (`snat` with `NatKind::Snat`).
    pub fn nat_to(self, kind: NatKind, addr: IpAddr, port: Option<u16>) -> Rule {
        let family = match addr {
            IpAddr::V4(_) => Family::Ip,
            IpAddr::V6(_) => Family::Ip6,
        };
        // nft puts the address in NFT_REG_1 and the port in NFT_REG_2
        // (32-bit word 4) for both families; matching it keeps golden
        // comparisons exact.
        let addr_reg = Reg::first();
        let port_reg = Reg::word(4);
        let mut r = self.expr(Expr::Immediate {
            dreg: addr_reg,
            data: Val::ip(addr).bytes(),
        });
        let mut flags = 0;
        if let Some(p) = port {
            r = r.expr(Expr::Immediate {
                dreg: port_reg,
                data: Val::Port(p).bytes(),
            });
            flags |= crate::expr::nat_flags::PROTO_SPECIFIED;
        }
        r.expr(Expr::Nat {
            kind,
            family,
            addr_min: Some(addr_reg),
            addr_max: None,
            proto_min: port.map(|_| port_reg),
            proto_max: None,
            flags,
        })
    }

    /// `dnat to <addr>[:<port>]`.
    pub fn dnat(self, addr: IpAddr, port: Option<u16>) -> Rule {
        self.nat_to(NatKind::Dnat, addr, port)
    }

    /// `masquerade [fully-random ...]` (flags from `expr::nat_flags`).
    pub fn masquerade(self, flags: u32) -> Rule {
        self.expr(Expr::Masquerade {
            flags,
            proto_min: None,
            proto_max: None,
        })
    }

    /// `meta mark set mark | bits`.
    pub fn mark_or(self, bits: u32) -> Rule {
        let r = Reg::first();
        self.expr(Expr::Meta {
            dreg: r,
            key: MetaKey::Mark,
        })
        .expr(Expr::BitwiseStmt {
            sreg: r,
            dreg: r,
            mask: (!bits).to_ne_bytes().to_vec(),
            xor: bits.to_ne_bytes().to_vec(),
        })
        .expr(Expr::MetaSet {
            key: MetaKey::Mark,
            sreg: r,
        })
    }

    /// `meta mark set mark & ~bits`: clears `bits`.
    pub fn mark_clear(self, bits: u32) -> Rule {
        let r = Reg::first();
        self.expr(Expr::Meta {
            dreg: r,
            key: MetaKey::Mark,
        })
        .expr(Expr::BitwiseStmt {
            sreg: r,
            dreg: r,
            mask: (!bits).to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        })
        .expr(Expr::MetaSet {
            key: MetaKey::Mark,
            sreg: r,
        })
    }

    /// `ct mark set <value>`.
    pub fn ct_mark_set(self, value: u32) -> Rule {
        let r = Reg::first();
        self.expr(Expr::Immediate {
            dreg: r,
            data: value.to_ne_bytes().to_vec(),
        })
        .expr(Expr::CtSet {
            key: CtKey::Mark,
            sreg: r,
        })
    }

    /// `masquerade to :min-max`.
    pub fn masquerade_ports(self, min: u16, max: u16, flags: u32) -> Rule {
        let (lo, hi) = (Reg::first(), Reg::word(4));
        self.expr(Expr::Immediate {
            dreg: lo,
            data: Val::Port(min).bytes(),
        })
        .expr(Expr::Immediate {
            dreg: hi,
            data: Val::Port(max).bytes(),
        })
        .expr(Expr::Masquerade {
            flags: flags | crate::expr::nat_flags::PROTO_SPECIFIED,
            proto_min: Some(lo),
            proto_max: Some(hi),
        })
    }

    /// `log [prefix "..."] [group N]`.
    pub fn log(self, prefix: Option<&str>, group: Option<u16>) -> Rule {
        self.expr(Expr::Log {
            prefix: prefix.map(str::to_string),
            group,
        })
    }

    /// `meta mark set <value>`.
    pub fn mark_set(self, value: u32) -> Rule {
        let r = Reg::first();
        self.expr(Expr::Immediate {
            dreg: r,
            data: value.to_ne_bytes().to_vec(),
        })
        .expr(Expr::MetaSet {
            key: MetaKey::Mark,
            sreg: r,
        })
    }

    /// `update @set { a . b timeout T }` / `add @set { ... }`.
    pub fn dynset(
        self,
        op: DynsetOp,
        fields: &[Field],
        set: SetRef,
        timeout: Option<Duration>,
    ) -> Result<Rule> {
        let (loads, sreg) = load_concat(fields)?;
        Ok(self.exprs(loads).expr(Expr::Dynset {
            op,
            sreg_key: sreg,
            sreg_data: None,
            set,
            timeout,
        }))
    }

    pub fn counter(self) -> Rule {
        self.expr(Expr::Counter {
            packets: 0,
            bytes: 0,
        })
    }

    pub fn reject(self, r: Reject) -> Rule {
        self.expr(Expr::Reject(r))
    }

    pub fn verdict(self, v: Verdict) -> Rule {
        self.expr(Expr::Verdict(v))
    }

    pub fn accept(self) -> Rule {
        self.verdict(Verdict::Accept)
    }

    pub fn drop(self) -> Rule {
        self.verdict(Verdict::Drop)
    }

    pub fn jump(self, chain: impl Into<String>) -> Rule {
        self.verdict(Verdict::Jump(chain.into()))
    }

    pub fn goto(self, chain: impl Into<String>) -> Rule {
        self.verdict(Verdict::Goto(chain.into()))
    }
}
