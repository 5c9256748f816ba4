//! Value types shared by objects and expressions: families, verdicts,
//! nft datatypes (for set keys/data), literal values and registers.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::sys;

/// nf_tables address family (`NFPROTO_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Inet,
    Ip,
    Arp,
    Netdev,
    Bridge,
    Ip6,
}

impl Family {
    pub fn nfproto(self) -> u8 {
        match self {
            Family::Inet => 1,
            Family::Ip => 2,
            Family::Arp => 3,
            Family::Netdev => 5,
            Family::Bridge => 7,
            Family::Ip6 => 10,
        }
    }

    pub fn from_nfproto(v: u8) -> Option<Family> {
        Some(match v {
            1 => Family::Inet,
            2 => Family::Ip,
            3 => Family::Arp,
            5 => Family::Netdev,
            7 => Family::Bridge,
            10 => Family::Ip6,
            _ => return None,
        })
    }

    /// The keyword `nft` uses for this family.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Arp => "arp",
            Family::Netdev => "netdev",
            Family::Bridge => "bridge",
            Family::Ip6 => "ip6",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verdict, as an immediate statement or as map data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    Accept,
    Drop,
    Continue,
    Return,
    Jump(String),
    Goto(String),
}

impl Verdict {
    pub(crate) fn code(&self) -> i32 {
        match self {
            Verdict::Accept => sys::NF_ACCEPT,
            Verdict::Drop => sys::NF_DROP,
            Verdict::Continue => sys::NFT_CONTINUE,
            Verdict::Return => sys::NFT_RETURN,
            Verdict::Jump(_) => sys::NFT_JUMP,
            Verdict::Goto(_) => sys::NFT_GOTO,
        }
    }

    pub(crate) fn chain(&self) -> Option<&str> {
        match self {
            Verdict::Jump(c) | Verdict::Goto(c) => Some(c),
            _ => None,
        }
    }

    pub(crate) fn from_code(code: i32, chain: Option<String>) -> Option<Verdict> {
        Some(match (code, chain) {
            (sys::NF_ACCEPT, _) => Verdict::Accept,
            (sys::NF_DROP, _) => Verdict::Drop,
            (sys::NFT_CONTINUE, _) => Verdict::Continue,
            (sys::NFT_RETURN, _) => Verdict::Return,
            (sys::NFT_JUMP, Some(c)) => Verdict::Jump(c),
            (sys::NFT_GOTO, Some(c)) => Verdict::Goto(c),
            _ => return None,
        })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Continue => f.write_str("continue"),
            Verdict::Return => f.write_str("return"),
            Verdict::Jump(c) => write!(f, "jump {c}"),
            Verdict::Goto(c) => write!(f, "goto {c}"),
        }
    }
}

/// nft datatypes usable as set keys and map data. The numeric ids are nft's
/// (`enum datatypes` in nftables' datatype.h); the kernel stores them
/// opaquely and `nft list` uses them to print elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Verdict,
    NfProto,
    /// Host-order 32-bit integer (e.g. `numgen` results).
    Integer32,
    Ipv4Addr,
    Ipv6Addr,
    EtherAddr,
    /// Ethertype (`meta protocol`), big-endian u16.
    EtherType,
    InetProto,
    InetService,
    Mark,
    IfIndex,
    IfName,
    CtState,
    FibAddrType,
}

impl DataType {
    pub fn nft_id(self) -> u32 {
        match self {
            DataType::Verdict => 1,
            DataType::NfProto => 2,
            DataType::Integer32 => 4,
            DataType::Ipv4Addr => 7,
            DataType::Ipv6Addr => 8,
            DataType::EtherAddr => 9,
            DataType::EtherType => 10,
            DataType::InetProto => 12,
            DataType::InetService => 13,
            DataType::Mark => 19,
            DataType::IfIndex => 20,
            DataType::CtState => 26,
            DataType::FibAddrType => 38,
            DataType::IfName => 41,
        }
    }

    /// Length in bytes of one value.
    pub fn size(self) -> usize {
        match self {
            DataType::Verdict => 4,
            DataType::NfProto | DataType::InetProto => 1,
            DataType::InetService | DataType::EtherType => 2,
            DataType::Ipv4Addr
            | DataType::Integer32
            | DataType::Mark
            | DataType::IfIndex
            | DataType::CtState
            | DataType::FibAddrType => 4,
            DataType::EtherAddr => 6,
            DataType::Ipv6Addr | DataType::IfName => 16,
        }
    }

    /// nft's byte order for this type (set userdata).
    pub(crate) fn byteorder(self) -> u32 {
        match self {
            DataType::Verdict => sys::BYTEORDER_INVALID,
            DataType::NfProto
            | DataType::Integer32
            | DataType::Mark
            | DataType::IfIndex
            | DataType::IfName
            | DataType::CtState
            | DataType::FibAddrType => sys::BYTEORDER_HOST,
            DataType::Ipv4Addr
            | DataType::Ipv6Addr
            | DataType::EtherAddr
            | DataType::EtherType
            | DataType::InetProto
            | DataType::InetService => sys::BYTEORDER_BIG,
        }
    }

    pub fn from_nft_id(id: u32) -> Option<DataType> {
        Some(match id {
            1 => DataType::Verdict,
            2 => DataType::NfProto,
            4 => DataType::Integer32,
            7 => DataType::Ipv4Addr,
            8 => DataType::Ipv6Addr,
            9 => DataType::EtherAddr,
            10 => DataType::EtherType,
            12 => DataType::InetProto,
            13 => DataType::InetService,
            19 => DataType::Mark,
            20 => DataType::IfIndex,
            26 => DataType::CtState,
            38 => DataType::FibAddrType,
            41 => DataType::IfName,
            _ => return None,
        })
    }
}

/// A (possibly concatenated) type: `ipv4_addr . inet_proto . inet_service`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TypeConcat(pub Vec<DataType>);

/// nft packs concatenated type ids 6 bits each (`TYPE_BITS`).
const TYPE_BITS: u32 = 6;

impl TypeConcat {
    pub fn new(types: &[DataType]) -> Self {
        TypeConcat(types.to_vec())
    }

    pub fn is_concat(&self) -> bool {
        self.0.len() > 1
    }

    /// The value of NFTA_SET_KEY_TYPE / NFTA_SET_DATA_TYPE.
    pub fn nft_type(&self) -> u32 {
        if self.0.len() == 1 {
            return self.0[0].nft_id();
        }
        self.0
            .iter()
            .fold(0u32, |acc, t| (acc << TYPE_BITS) | t.nft_id())
    }

    /// Decodes NFTA_SET_KEY_TYPE; `None` for ids this crate doesn't know.
    pub fn from_nft_type(mut v: u32, key_len: u32) -> Option<TypeConcat> {
        if let Some(t) = DataType::from_nft_id(v) {
            if t.size() as u32 == key_len || t == DataType::Verdict {
                return Some(TypeConcat(vec![t]));
            }
        }
        let mut parts = Vec::new();
        while v != 0 {
            parts.push(DataType::from_nft_id(v & ((1 << TYPE_BITS) - 1))?);
            v >>= TYPE_BITS;
        }
        parts.reverse();
        Some(TypeConcat(parts))
    }

    /// Key length: a single type uses its own length; concatenations pad
    /// every field to a 32-bit register.
    pub fn len(&self) -> usize {
        if self.0.len() == 1 {
            self.0[0].size()
        } else {
            self.0.iter().map(|t| round4(t.size())).sum()
        }
    }

    /// Whether the type is empty (never true for a valid set).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn byteorder(&self) -> u32 {
        if self.0.len() == 1 {
            self.0[0].byteorder()
        } else {
            sys::BYTEORDER_INVALID
        }
    }
}

impl From<DataType> for TypeConcat {
    fn from(t: DataType) -> Self {
        TypeConcat(vec![t])
    }
}

impl From<&[DataType]> for TypeConcat {
    fn from(t: &[DataType]) -> Self {
        TypeConcat(t.to_vec())
    }
}

impl<const N: usize> From<[DataType; N]> for TypeConcat {
    fn from(t: [DataType; N]) -> Self {
        TypeConcat(t.to_vec())
    }
}

pub(crate) const fn round4(n: usize) -> usize {
    (n + 3) & !3
}

/// A literal value as matched or stored in sets, encoded the way the kernel
/// compares it with register contents.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Val {
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    /// `inet_proto` / `meta l4proto` (one byte).
    Proto(u8),
    /// Any other one-byte value (`meta nfproto`, ...).
    U8(u8),
    /// `inet_service` (big-endian u16).
    Port(u16),
    /// Host-order u32: marks, numgen results, ct state bits, fib type.
    U32(u32),
    /// Interface name, NUL-padded to IFNAMSIZ (16).
    IfName(String),
    Ether([u8; 6]),
    /// Raw bytes, used as given.
    Bytes(Vec<u8>),
}

impl Val {
    pub fn ip(addr: IpAddr) -> Val {
        match addr {
            IpAddr::V4(a) => Val::Ipv4(a),
            IpAddr::V6(a) => Val::Ipv6(a),
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        self.write_to(&mut b);
        b
    }

    /// Appends the encoding `bytes` returns.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Val::Ipv4(a) => out.extend_from_slice(&a.octets()),
            Val::Ipv6(a) => out.extend_from_slice(&a.octets()),
            Val::Proto(p) | Val::U8(p) => out.push(*p),
            Val::Port(p) => out.extend_from_slice(&p.to_be_bytes()),
            Val::U32(v) => out.extend_from_slice(&v.to_ne_bytes()),
            Val::IfName(n) => {
                let at = out.len();
                out.extend_from_slice(n.as_bytes());
                out.resize(at + 16, 0);
            }
            Val::Ether(m) => out.extend_from_slice(m),
            Val::Bytes(b) => out.extend_from_slice(b),
        }
    }
}

impl From<Ipv4Addr> for Val {
    fn from(a: Ipv4Addr) -> Self {
        Val::Ipv4(a)
    }
}

impl From<Ipv6Addr> for Val {
    fn from(a: Ipv6Addr) -> Self {
        Val::Ipv6(a)
    }
}

impl From<IpAddr> for Val {
    fn from(a: IpAddr) -> Self {
        Val::ip(a)
    }
}

/// Encodes a key or data value: one value as is, a concatenation with every
/// field padded to 4 bytes (one 32-bit register each).
pub fn encode_concat(vals: &[Val]) -> Vec<u8> {
    let mut out = Vec::with_capacity(vals.len() * 4);
    encode_concat_into(vals, &mut out);
    out
}

/// Appends what `encode_concat` returns (padding relative to where it starts).
pub fn encode_concat_into(vals: &[Val], out: &mut Vec<u8>) {
    let start = out.len();
    if let [one] = vals {
        one.write_to(out);
        return;
    }
    for v in vals {
        v.write_to(out);
        out.resize(start + round4(out.len() - start), 0);
    }
}

/// An nf_tables register. Data registers are addressed in 32-bit words;
/// word 0 is the start of the register file. Encoded like nft does: words
/// that start a 128-bit register use the legacy numbers NFT_REG_1..4 for
/// compatibility, the others NFT_REG32_xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reg(u32);

impl Reg {
    /// The verdict register.
    pub const VERDICT: Reg = Reg(0);

    /// The register starting at 32-bit word `word` (0..16).
    pub const fn word(word: u32) -> Reg {
        if word & 3 == 0 {
            Reg(1 + word / 4)
        } else {
            Reg(8 + word)
        }
    }

    /// The first data register (NFT_REG_1).
    pub const fn first() -> Reg {
        Reg::word(0)
    }

    /// The kernel register number.
    pub fn raw(self) -> u32 {
        self.0
    }

    /// A register from its kernel number (as found in dumps).
    pub fn from_raw(raw: u32) -> Reg {
        Reg(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_type_matches_nft() {
        // nft: type ipv4_addr . inet_proto . inet_service => 0x730d, len 12
        let t = TypeConcat::new(&[
            DataType::Ipv4Addr,
            DataType::InetProto,
            DataType::InetService,
        ]);
        assert_eq!(t.nft_type(), 0x730d);
        assert_eq!(t.len(), 12);
        assert_eq!(TypeConcat::from_nft_type(0x730d, 12), Some(t));
        let single = TypeConcat::from(DataType::InetService);
        assert_eq!(single.len(), 2);
        assert_eq!(TypeConcat::from_nft_type(13, 2), Some(single));
        let br = TypeConcat::new(&[DataType::IfName, DataType::EtherAddr]);
        assert_eq!(br.len(), 24);
    }

    #[test]
    fn registers_use_nft_numbering() {
        assert_eq!(Reg::word(0).raw(), 1);
        assert_eq!(Reg::word(1).raw(), 9);
        assert_eq!(Reg::word(2).raw(), 10);
        assert_eq!(Reg::word(4).raw(), 2);
        assert_eq!(Reg::word(5).raw(), 13);
    }

    #[test]
    fn concat_values_are_padded() {
        let k = encode_concat(&[
            Val::Ipv4(Ipv4Addr::new(10, 96, 0, 10)),
            Val::Proto(6),
            Val::Port(53),
        ]);
        assert_eq!(k, vec![10, 96, 0, 10, 6, 0, 0, 0, 0, 53, 0, 0]);
        assert_eq!(encode_concat(&[Val::Port(80)]), vec![0, 80]);
        // Appending pads relative to where the value starts.
        let mut buf = vec![0xff; 3];
        encode_concat_into(&[Val::Proto(17), Val::Port(53)], &mut buf);
        assert_eq!(buf, vec![0xff, 0xff, 0xff, 17, 0, 0, 0, 0, 53, 0, 0]);
    }
}
