//! The DNS wire format, as much of it as an authoritative + forwarding server
//! needs: parsing one query, encoding names and records, and assembling a
//! response under a size limit (setting TC when the answer does not fit).
//!
//! Answers are kept pre-encoded in the record index (`RrList`); records owned
//! by the query name start with the compression pointer `C0 0C` (the question
//! always sits at offset 12), so a reply is header + the question bytes copied
//! from the query (which keeps the query's letter case) + those bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_MX: u16 = 15;
pub const TYPE_TXT: u16 = 16;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_IXFR: u16 = 251;
pub const TYPE_AXFR: u16 = 252;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;
pub const CLASS_ANY: u16 = 255;

/// Compression pointer to the question name at offset 12.
pub const PTR_TO_QNAME: [u8; 2] = [0xC0, 0x0C];
/// Largest UDP payload this server sends or advertises (DNS flag day 2020).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// Non-EDNS UDP limit (RFC 1035 4.2.1).
pub const PLAIN_UDP_LIMIT: usize = 512;
pub const HEADER_LEN: usize = 12;
const OPT_RR_LEN: usize = 11;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    NoError = 0,
    FormErr = 1,
    ServFail = 2,
    NxDomain = 3,
    NotImp = 4,
    Refused = 5,
}

impl Rcode {
    pub fn from_u8(v: u8) -> Option<Rcode> {
        Some(match v {
            0 => Rcode::NoError,
            1 => Rcode::FormErr,
            2 => Rcode::ServFail,
            3 => Rcode::NxDomain,
            4 => Rcode::NotImp,
            5 => Rcode::Refused,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Rcode::NoError => "NOERROR",
            Rcode::FormErr => "FORMERR",
            Rcode::ServFail => "SERVFAIL",
            Rcode::NxDomain => "NXDOMAIN",
            Rcode::NotImp => "NOTIMP",
            Rcode::Refused => "REFUSED",
        }
    }
}

/// EDNS(0) data of a query's OPT record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    pub udp_size: u16,
    pub version: u8,
    pub dnssec_ok: bool,
}

/// A name in wire format, ASCII-lowercased, at most 255 bytes.
#[derive(Clone, Copy)]
pub struct LowerName {
    buf: [u8; 255],
    len: u8,
}

impl LowerName {
    /// Wire bytes including the final zero octet.
    pub fn wire(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }
    /// Labels from left to right, without the root label.
    pub fn labels(&self) -> Labels<'_> {
        Labels {
            wire: self.wire(),
            pos: 0,
        }
    }
    pub fn from_wire(wire: &[u8]) -> Option<LowerName> {
        let mut r = Reader { buf: wire, pos: 0 };
        let n = r.name_uncompressed().ok()?;
        (r.pos == wire.len()).then_some(n)
    }
}

impl PartialEq for LowerName {
    fn eq(&self, other: &LowerName) -> bool {
        self.wire() == other.wire()
    }
}

impl Eq for LowerName {}

impl std::fmt::Debug for LowerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&wire_to_text(self.wire()))
    }
}

pub struct Labels<'a> {
    wire: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Labels<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let len = *self.wire.get(self.pos)? as usize;
        if len == 0 {
            return None;
        }
        let l = &self.wire[self.pos + 1..self.pos + 1 + len];
        self.pos += 1 + len;
        Some(l)
    }
}

/// Why a packet cannot be answered normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// Not worth a reply (shorter than a header, or a response).
    Drop,
    /// Reply with this rcode, echoing the header (and question when it parsed).
    Reply {
        id: u16,
        flags: u16,
        rcode: Rcode,
        /// Byte range of the question in the packet, when it parsed.
        question: Option<(usize, usize)>,
        edns: Option<Edns>,
        /// BADVERS needs the extended rcode 16 in the OPT record.
        bad_version: bool,
    },
}

/// One parsed query. Borrows the packet it came from.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    pub id: u16,
    /// The request flags word (opcode, RD, CD ... as sent).
    pub flags: u16,
    /// The question exactly as received: name (in the client's case), type, class.
    pub question: &'a [u8],
    pub qname: LowerName,
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
}

impl Query<'_> {
    pub fn recursion_desired(&self) -> bool {
        self.flags & 0x0100 != 0
    }
    /// Response size limit over UDP: 512 without EDNS, else the client's
    /// size clamped to [512, MAX_UDP_PAYLOAD].
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            None => PLAIN_UDP_LIMIT,
            Some(e) => (e.udp_size.clamp(512, MAX_UDP_PAYLOAD)) as usize,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireError;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, WireError> {
        let v = *self.buf.get(self.pos).ok_or(WireError)?;
        self.pos += 1;
        Ok(v)
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes([
            self.u8()?,
            self.u8()?,
            self.u8()?,
            self.u8()?,
        ]))
    }
    fn skip(&mut self, n: usize) -> Result<(), WireError> {
        if self.buf.len() - self.pos < n {
            return Err(WireError);
        }
        self.pos += n;
        Ok(())
    }
    /// A name without compression pointers (as in a query's question),
    /// lowercased; enforces the 63-byte label and 255-byte name limits.
    fn name_uncompressed(&mut self) -> Result<LowerName, WireError> {
        let mut out = LowerName {
            buf: [0; 255],
            len: 0,
        };
        let mut n = 0usize;
        loop {
            let len = self.u8()? as usize;
            if len & 0xC0 != 0 {
                return Err(WireError);
            }
            if n + 1 + len > 255 {
                return Err(WireError);
            }
            out.buf[n] = len as u8;
            n += 1;
            if len == 0 {
                break;
            }
            let label = self.buf.get(self.pos..self.pos + len).ok_or(WireError)?;
            for (i, b) in label.iter().enumerate() {
                out.buf[n + i] = b.to_ascii_lowercase();
            }
            n += len;
            self.pos += len;
        }
        out.len = n as u8;
        Ok(out)
    }
    /// Skips a possibly compressed name (in records of other sections).
    fn skip_name(&mut self) -> Result<(), WireError> {
        loop {
            let len = self.u8()?;
            match len & 0xC0 {
                0x00 if len == 0 => return Ok(()),
                0x00 => self.skip(len as usize)?,
                0xC0 => {
                    self.u8()?;
                    return Ok(());
                }
                _ => return Err(WireError),
            }
        }
    }
}

fn header_reject(buf: &[u8], rcode: Rcode, question: Option<(usize, usize)>) -> Reject {
    Reject::Reply {
        id: u16::from_be_bytes([buf[0], buf[1]]),
        flags: u16::from_be_bytes([buf[2], buf[3]]),
        rcode,
        question,
        edns: None,
        bad_version: false,
    }
}

/// Parses a query: exactly one question, only an OPT record in the
/// additional section (others are skipped), opcode QUERY.
pub fn parse_query(buf: &[u8]) -> Result<Query<'_>, Reject> {
    if buf.len() < HEADER_LEN {
        return Err(Reject::Drop);
    }
    let flags = u16::from_be_bytes([buf[2], buf[3]]);
    if flags & 0x8000 != 0 {
        return Err(Reject::Drop);
    }
    let opcode = (flags >> 11) & 0xF;
    let qdcount = u16::from_be_bytes([buf[4], buf[5]]);
    let ancount = u16::from_be_bytes([buf[6], buf[7]]);
    let nscount = u16::from_be_bytes([buf[8], buf[9]]);
    let arcount = u16::from_be_bytes([buf[10], buf[11]]);
    if qdcount != 1 {
        let rcode = if opcode != 0 {
            Rcode::NotImp
        } else {
            Rcode::FormErr
        };
        return Err(header_reject(buf, rcode, None));
    }
    let mut r = Reader {
        buf,
        pos: HEADER_LEN,
    };
    let qname = r
        .name_uncompressed()
        .map_err(|_| header_reject(buf, Rcode::FormErr, None))?;
    let qtype = r
        .u16()
        .map_err(|_| header_reject(buf, Rcode::FormErr, None))?;
    let qclass = r
        .u16()
        .map_err(|_| header_reject(buf, Rcode::FormErr, None))?;
    let question = (HEADER_LEN, r.pos);
    if opcode != 0 {
        return Err(header_reject(buf, Rcode::NotImp, Some(question)));
    }
    let formerr = || header_reject(buf, Rcode::FormErr, Some(question));
    for _ in 0..(ancount as u32 + nscount as u32) {
        skip_record(&mut r).map_err(|_| formerr())?;
    }
    let mut edns = None;
    for _ in 0..arcount {
        r.skip_name().map_err(|_| formerr())?;
        let rtype = r.u16().map_err(|_| formerr())?;
        let class = r.u16().map_err(|_| formerr())?;
        let ttl = r.u32().map_err(|_| formerr())?;
        let rdlen = r.u16().map_err(|_| formerr())?;
        r.skip(rdlen as usize).map_err(|_| formerr())?;
        if rtype == TYPE_OPT {
            if edns.is_some() {
                // RFC 6891 6.1.1: more than one OPT is FORMERR.
                return Err(formerr());
            }
            edns = Some(Edns {
                udp_size: class,
                version: (ttl >> 16) as u8,
                dnssec_ok: ttl & 0x8000 != 0,
            });
        }
    }
    if let Some(e) = edns {
        if e.version != 0 {
            return Err(Reject::Reply {
                id: u16::from_be_bytes([buf[0], buf[1]]),
                flags,
                rcode: Rcode::NoError,
                question: Some(question),
                edns: Some(e),
                bad_version: true,
            });
        }
    }
    Ok(Query {
        id: u16::from_be_bytes([buf[0], buf[1]]),
        flags,
        question: &buf[question.0..question.1],
        qname,
        qtype,
        qclass,
        edns,
    })
}

fn skip_record(r: &mut Reader<'_>) -> Result<(), WireError> {
    r.skip_name()?;
    r.skip(8)?;
    let rdlen = r.u16()?;
    r.skip(rdlen as usize)
}

/// Converts `a.b.c` (with or without the final dot) into lowercase wire form.
pub fn text_to_wire(name: &str) -> Option<Vec<u8>> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut out = Vec::with_capacity(name.len() + 2);
    if !name.is_empty() {
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return None;
            }
            out.push(label.len() as u8);
            out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
    }
    out.push(0);
    (out.len() <= 255).then_some(out)
}

/// Wire name to dotted text (for logs and tests), always ending with `.`.
pub fn wire_to_text(wire: &[u8]) -> String {
    let mut s = String::new();
    let mut pos = 0;
    while let Some(&len) = wire.get(pos) {
        if len == 0 {
            break;
        }
        let label = wire.get(pos + 1..pos + 1 + len as usize).unwrap_or(&[]);
        s.push_str(&String::from_utf8_lossy(label));
        s.push('.');
        pos += 1 + len as usize;
    }
    if s.is_empty() {
        s.push('.');
    }
    s
}

/// A set of encoded resource records, each complete. Records are
/// self-delimiting (owner name, fixed fields, RDLENGTH), so boundaries are
/// found by walking them instead of being stored: this keeps per-service
/// memory small.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RrList {
    bytes: Vec<u8>,
    count: u16,
}

/// End of the owner name of the record starting at `start` (a pointer or
/// an uncompressed name, as everything this module writes).
fn owner_end(bytes: &[u8], start: usize) -> usize {
    let mut p = start;
    loop {
        let l = bytes[p];
        if l & 0xC0 == 0xC0 {
            return p + 2;
        }
        p += 1;
        if l == 0 {
            return p;
        }
        p += l as usize;
    }
}

/// End of the record starting at `start`.
fn record_end(bytes: &[u8], start: usize) -> usize {
    let p = owner_end(bytes, start);
    p + 10 + u16::from_be_bytes([bytes[p + 8], bytes[p + 9]]) as usize
}

pub struct Records<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Records<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.pos >= self.bytes.len() {
            return None;
        }
        let end = record_end(self.bytes, self.pos);
        let r = &self.bytes[self.pos..end];
        self.pos = end;
        Some(r)
    }
}

/// The RDATA of one record written by `RrList::push`.
pub fn record_rdata(record: &[u8]) -> &[u8] {
    &record[owner_end(record, 0) + 10..]
}

impl RrList {
    pub fn new() -> RrList {
        RrList::default()
    }
    pub fn len(&self) -> usize {
        self.count as usize
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn records(&self) -> Records<'_> {
        Records {
            bytes: &self.bytes,
            pos: 0,
        }
    }
    /// Appends one record: owner (wire, may be `PTR_TO_QNAME`), type, class IN, ttl, rdata.
    pub fn push(&mut self, owner: &[u8], rtype: u16, ttl: u32, rdata: &[u8]) {
        self.bytes.extend_from_slice(owner);
        self.bytes.extend_from_slice(&rtype.to_be_bytes());
        self.bytes.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.bytes.extend_from_slice(&ttl.to_be_bytes());
        self.bytes
            .extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        self.bytes.extend_from_slice(rdata);
        self.count += 1;
    }
    pub fn push_ip(&mut self, owner: &[u8], ttl: u32, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => self.push(owner, TYPE_A, ttl, &v4.octets()),
            IpAddr::V6(v6) => self.push(owner, TYPE_AAAA, ttl, &v6.octets()),
        }
    }
    pub fn extend(&mut self, other: &RrList) {
        self.bytes.extend_from_slice(&other.bytes);
        self.count += other.count;
    }
    /// The same records with the owner pointer `C0 0C` replaced by `owner`
    /// (for records that appear under another name, e.g. after a CNAME).
    pub fn reowned(&self, owner: &[u8]) -> RrList {
        let mut out = RrList::new();
        for r in self.records() {
            if r.starts_with(&PTR_TO_QNAME) {
                out.bytes.extend_from_slice(owner);
                out.bytes.extend_from_slice(&r[2..]);
            } else {
                out.bytes.extend_from_slice(r);
            }
            out.count += 1;
        }
        out
    }
    pub fn shrink(&mut self) {
        self.bytes.shrink_to_fit();
    }
}

/// SRV rdata: priority, weight, port, target (uncompressed, RFC 2782).
pub fn srv_rdata(priority: u16, weight: u16, port: u16, target: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(6 + target.len());
    v.extend_from_slice(&priority.to_be_bytes());
    v.extend_from_slice(&weight.to_be_bytes());
    v.extend_from_slice(&port.to_be_bytes());
    v.extend_from_slice(target);
    v
}

/// TXT rdata with one character-string.
pub fn txt_rdata(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut v = Vec::with_capacity(b.len() + 1);
    v.push(b.len().min(255) as u8);
    v.extend_from_slice(&b[..b.len().min(255)]);
    v
}

pub struct Soa<'a> {
    pub mname: &'a [u8],
    pub rname: &'a [u8],
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub minimum: u32,
}

pub fn soa_rdata(s: &Soa<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(s.mname);
    v.extend_from_slice(s.rname);
    for n in [s.serial, s.refresh, s.retry, s.expire, s.minimum] {
        v.extend_from_slice(&n.to_be_bytes());
    }
    v
}

/// Reverse lookup name of an address: `d.c.b.a.in-addr.arpa` or the 32
/// nibbles of an IPv6 address under `ip6.arpa`, in wire form.
pub fn reverse_name(ip: IpAddr) -> Vec<u8> {
    let mut out = Vec::new();
    match ip {
        IpAddr::V4(v4) => {
            for o in v4.octets().iter().rev() {
                let s = o.to_string();
                out.push(s.len() as u8);
                out.extend_from_slice(s.as_bytes());
            }
            out.extend_from_slice(b"\x07in-addr\x04arpa\x00");
        }
        IpAddr::V6(v6) => {
            for o in v6.octets().iter().rev() {
                for nib in [o & 0xF, o >> 4] {
                    out.push(1);
                    out.push(b"0123456789abcdef"[nib as usize]);
                }
            }
            out.extend_from_slice(b"\x03ip6\x04arpa\x00");
        }
    }
    out
}

/// The address a reverse name stands for, given its labels left to right.
pub fn parse_reverse(labels: &[&[u8]]) -> Option<IpAddr> {
    let n = labels.len();
    if n == 6 && labels[4] == b"in-addr" && labels[5] == b"arpa" {
        let mut o = [0u8; 4];
        for (i, l) in labels[..4].iter().enumerate() {
            if l.is_empty() || l.len() > 3 || (l.len() > 1 && l[0] == b'0') {
                return None;
            }
            let s = std::str::from_utf8(l).ok()?;
            o[3 - i] = s.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(o)));
    }
    if n == 34 && labels[32] == b"ip6" && labels[33] == b"arpa" {
        let mut o = [0u8; 16];
        for (i, l) in labels[..32].iter().enumerate() {
            if l.len() != 1 {
                return None;
            }
            let nib = (l[0] as char).to_digit(16)? as u8;
            let byte = 15 - i / 2;
            if i % 2 == 0 {
                o[byte] |= nib;
            } else {
                o[byte] |= nib << 4;
            }
        }
        return Some(IpAddr::V6(Ipv6Addr::from(o)));
    }
    None
}

/// Everything that goes into one response.
#[derive(Debug, Default)]
pub struct Sections<'a> {
    pub rcode: Option<Rcode>,
    pub authoritative: bool,
    pub answer: Vec<&'a RrList>,
    pub authority: Vec<&'a RrList>,
    /// Optional records: dropped silently (no TC) when they do not fit.
    pub additional: Vec<&'a RrList>,
}

/// Response header flags: QR, echoed opcode 0 + RD + CD, and AA/RA/TC as given.
fn response_flags(req_flags: u16, aa: bool, tc: bool, ra: bool, rcode: u8) -> u16 {
    let mut f = 0x8000 | (req_flags & 0x0100) | (req_flags & 0x0010);
    if aa {
        f |= 0x0400;
    }
    if tc {
        f |= 0x0200;
    }
    if ra {
        f |= 0x0080;
    }
    f | (rcode as u16 & 0xF)
}

fn put_opt(out: &mut Vec<u8>, ext_rcode: u8) {
    out.push(0);
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&MAX_UDP_PAYLOAD.to_be_bytes());
    out.extend_from_slice(&[ext_rcode, 0, 0, 0]);
    out.extend_from_slice(&0u16.to_be_bytes());
}

/// Appends whole records of `lists` while they fit in `limit` bytes (keeping
/// `reserve` free). Returns (records written, everything fit).
fn put_records(out: &mut Vec<u8>, lists: &[&RrList], limit: usize, reserve: usize) -> (u16, bool) {
    let mut n = 0u16;
    for l in lists {
        // Fast path: the whole list fits.
        if out.len() + l.bytes().len() + reserve <= limit {
            out.extend_from_slice(l.bytes());
            n += l.len() as u16;
            continue;
        }
        for r in l.records() {
            if out.len() + r.len() + reserve > limit {
                return (n, false);
            }
            out.extend_from_slice(r);
            n += 1;
        }
    }
    (n, true)
}

/// Assembles a response to `q` into `out` (cleared first). `limit` is the
/// largest allowed size (UDP: `q.udp_limit()`; TCP: 65535).
pub fn write_response(
    out: &mut Vec<u8>,
    q: &Query<'_>,
    s: &Sections<'_>,
    recursion_available: bool,
    limit: usize,
) {
    out.clear();
    out.extend_from_slice(&q.id.to_be_bytes());
    out.extend_from_slice(&[0; 10]);
    out.extend_from_slice(q.question);
    let reserve = if q.edns.is_some() { OPT_RR_LEN } else { 0 };
    let (an, an_all) = put_records(out, &s.answer, limit, reserve);
    let (ns, ns_all) = if an_all {
        put_records(out, &s.authority, limit, reserve)
    } else {
        (0, false)
    };
    let ar = if an_all && ns_all {
        put_records(out, &s.additional, limit, reserve).0
    } else {
        0
    };
    let tc = !(an_all && ns_all);
    let mut arcount = ar;
    if q.edns.is_some() {
        put_opt(out, 0);
        arcount += 1;
    }
    let rcode = s.rcode.unwrap_or(Rcode::NoError) as u8;
    let flags = response_flags(q.flags, s.authoritative, tc, recursion_available, rcode);
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    out[4..6].copy_from_slice(&1u16.to_be_bytes());
    out[6..8].copy_from_slice(&an.to_be_bytes());
    out[8..10].copy_from_slice(&ns.to_be_bytes());
    out[10..12].copy_from_slice(&arcount.to_be_bytes());
}

/// The reply for a packet that `parse_query` rejected, or `None` for `Drop`.
pub fn write_reject(out: &mut Vec<u8>, packet: &[u8], reject: &Reject) -> bool {
    let Reject::Reply {
        id,
        flags,
        rcode,
        question,
        edns,
        bad_version,
    } = reject
    else {
        return false;
    };
    out.clear();
    out.extend_from_slice(&id.to_be_bytes());
    let f = response_flags(*flags, false, false, false, *rcode as u8) | (flags & 0x7800);
    out.extend_from_slice(&f.to_be_bytes());
    let qd = question.is_some() as u16;
    out.extend_from_slice(&qd.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    let ar = (edns.is_some() || *bad_version) as u16;
    out.extend_from_slice(&ar.to_be_bytes());
    if let Some((a, b)) = question {
        out.extend_from_slice(&packet[*a..*b]);
    }
    if ar == 1 {
        // BADVERS = 16: upper 8 bits of the 12-bit rcode go in the OPT TTL.
        put_opt(out, if *bad_version { 1 } else { 0 });
    }
    true
}

/// A minimal error reply (header + question + OPT when the query had EDNS).
pub fn write_error(out: &mut Vec<u8>, q: &Query<'_>, rcode: Rcode, ra: bool) {
    let s = Sections {
        rcode: Some(rcode),
        ..Default::default()
    };
    write_response(out, q, &s, ra, usize::MAX);
}

/// Facts about an upstream's response that the forwarder needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseInfo {
    pub id: u16,
    pub truncated: bool,
    pub rcode: u8,
    pub ancount: u16,
    /// Byte offsets of every TTL field outside the OPT record, to age a cached copy.
    pub ttl_offsets: Vec<usize>,
    /// Smallest TTL among answer/authority/additional records (OPT excluded).
    pub min_ttl: Option<u32>,
    /// SOA MINIMUM (and TTL) of an SOA in the authority section, for negative caching.
    pub soa_negative_ttl: Option<u32>,
    /// End of the question section.
    pub question_end: usize,
    /// Byte range of the OPT record, if any.
    pub opt: Option<(usize, usize)>,
}

/// Walks an upstream response, checking it is well formed.
pub fn inspect_response(buf: &[u8]) -> Result<ResponseInfo, WireError> {
    if buf.len() < HEADER_LEN {
        return Err(WireError);
    }
    let flags = u16::from_be_bytes([buf[2], buf[3]]);
    if flags & 0x8000 == 0 {
        return Err(WireError);
    }
    let count = |i: usize| u16::from_be_bytes([buf[i], buf[i + 1]]);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    let mut r = Reader {
        buf,
        pos: HEADER_LEN,
    };
    for _ in 0..qd {
        r.skip_name()?;
        r.skip(4)?;
    }
    let question_end = r.pos;
    let mut info = ResponseInfo {
        id: count(0),
        truncated: flags & 0x0200 != 0,
        rcode: (flags & 0xF) as u8,
        ancount: an,
        ttl_offsets: Vec::new(),
        min_ttl: None,
        soa_negative_ttl: None,
        question_end,
        opt: None,
    };
    let total = an as usize + ns as usize + ar as usize;
    for i in 0..total {
        let rr_start = r.pos;
        r.skip_name()?;
        let rtype = r.u16()?;
        r.skip(2)?;
        let ttl_at = r.pos;
        let ttl = r.u32()?;
        let rdlen = r.u16()? as usize;
        let rdata_at = r.pos;
        r.skip(rdlen)?;
        if rtype == TYPE_OPT {
            info.opt = Some((rr_start, r.pos));
            continue;
        }
        info.ttl_offsets.push(ttl_at);
        info.min_ttl = Some(info.min_ttl.map_or(ttl, |m| m.min(ttl)));
        let in_authority = i >= an as usize && i < an as usize + ns as usize;
        if rtype == TYPE_SOA && in_authority {
            let mut rr = Reader { buf, pos: rdata_at };
            rr.skip_name()?;
            rr.skip_name()?;
            rr.skip(16)?;
            let minimum = rr.u32()?;
            info.soa_negative_ttl = Some(minimum.min(ttl));
        }
    }
    if r.pos != buf.len() {
        return Err(WireError);
    }
    Ok(info)
}

/// Removes the OPT record when it is the last record (where every server
/// puts it), so the copy can be served to clients with or without EDNS.
/// `None` when it sits elsewhere (cutting it out could break compression).
pub fn strip_trailing_opt(mut packet: Vec<u8>, info: &ResponseInfo) -> Option<Vec<u8>> {
    match info.opt {
        None => Some(packet),
        Some((start, end)) if end == packet.len() => {
            packet.truncate(start);
            let ar = u16::from_be_bytes([packet[10], packet[11]]).saturating_sub(1);
            packet[10..12].copy_from_slice(&ar.to_be_bytes());
            Some(packet)
        }
        Some(_) => None,
    }
}

/// Appends this server's OPT record to a response and counts it.
pub fn append_opt(packet: &mut Vec<u8>) {
    put_opt(packet, 0);
    let ar = u16::from_be_bytes([packet[10], packet[11]]).saturating_add(1);
    packet[10..12].copy_from_slice(&ar.to_be_bytes());
}

/// Appends the possibly compressed name at `pos` of `msg` to `out`
/// uncompressed (case kept); returns where the name ends in place. Pointers
/// must point backwards (RFC 1035: to a prior occurrence), which bounds the walk.
fn expand_name(msg: &[u8], mut pos: usize, out: &mut Vec<u8>) -> Result<usize, WireError> {
    let start = out.len();
    let mut end = None;
    loop {
        let len = *msg.get(pos).ok_or(WireError)?;
        match len & 0xC0 {
            0x00 => {
                let label = msg.get(pos + 1..pos + 1 + len as usize).ok_or(WireError)?;
                out.push(len);
                out.extend_from_slice(label);
                if out.len() - start > 255 {
                    return Err(WireError);
                }
                pos += 1 + len as usize;
                if len == 0 {
                    return Ok(end.unwrap_or(pos));
                }
            }
            0xC0 => {
                let low = *msg.get(pos + 1).ok_or(WireError)?;
                let to = ((len as usize & 0x3F) << 8) | low as usize;
                if to >= pos {
                    return Err(WireError);
                }
                end.get_or_insert(pos + 2);
                pos = to;
            }
            _ => return Err(WireError),
        }
    }
}

/// The answer section of `msg`, a response to (`qname`, `qtype`) class IN
/// (checked), as self-contained records: names expanded (in the owner and
/// in the RDATA of the types that may compress them), so they can be
/// copied into another message. Records of other classes are left out.
pub fn answer_records(msg: &[u8], qname: &[u8], qtype: u16) -> Result<RrList, WireError> {
    let info = inspect_response(msg)?;
    if u16::from_be_bytes([msg[4], msg[5]]) != 1 {
        return Err(WireError);
    }
    let mut name = Vec::with_capacity(64);
    let mut pos = expand_name(msg, HEADER_LEN, &mut name)?;
    let mut r = Reader { buf: msg, pos };
    if !name.eq_ignore_ascii_case(qname) || r.u16()? != qtype || r.u16()? != CLASS_IN {
        return Err(WireError);
    }
    pos = r.pos;
    let mut out = RrList::new();
    let mut rdata = Vec::with_capacity(64);
    for _ in 0..info.ancount {
        name.clear();
        pos = expand_name(msg, pos, &mut name)?;
        let mut r = Reader { buf: msg, pos };
        let (rtype, class, ttl, rdlen) = (r.u16()?, r.u16()?, r.u32()?, r.u16()? as usize);
        let (start, end) = (r.pos, r.pos + rdlen);
        let raw = msg.get(start..end).ok_or(WireError)?;
        pos = end;
        rdata.clear();
        // RFC 3597: only the RFC 1035 types may compress names in RDATA.
        let after = match rtype {
            TYPE_CNAME | TYPE_NS | TYPE_PTR => expand_name(msg, start, &mut rdata)?,
            TYPE_MX => {
                rdata.extend_from_slice(raw.get(..2).ok_or(WireError)?);
                expand_name(msg, start + 2, &mut rdata)?
            }
            TYPE_SOA => {
                let p = expand_name(msg, start, &mut rdata)?;
                let p = expand_name(msg, p, &mut rdata)?;
                rdata.extend_from_slice(msg.get(p..p + 20).ok_or(WireError)?);
                p + 20
            }
            _ => {
                rdata.extend_from_slice(raw);
                end
            }
        };
        if after != end {
            return Err(WireError);
        }
        if class == CLASS_IN && rtype != TYPE_OPT {
            out.push(&name, rtype, ttl, &rdata);
        }
    }
    Ok(out)
}

/// A query for an upstream: `id`, RD, the client's question, our OPT.
pub fn upstream_query(id: u16, question: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_LEN + question.len() + OPT_RR_LEN);
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]);
    v.extend_from_slice(question);
    put_opt(&mut v, 0);
    v
}

/// True when `resp` carries the same question as `question` (name compared
/// case-insensitively: some servers randomise case, RFC draft 0x20).
pub fn same_question(resp: &[u8], info: &ResponseInfo, question: &[u8]) -> bool {
    let got = match resp.get(HEADER_LEN..info.question_end) {
        Some(g) => g,
        None => return false,
    };
    let n = question.len();
    u16::from_be_bytes([resp[4], resp[5]]) == 1
        && got.len() == n
        && n >= 4
        && got[..n - 4].eq_ignore_ascii_case(&question[..n - 4])
        && got[n - 4..] == question[n - 4..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query_bytes(name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
        let mut v = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        v.extend(text_to_wire(name).unwrap());
        v.extend_from_slice(&qtype.to_be_bytes());
        v.extend_from_slice(&1u16.to_be_bytes());
        if let Some(sz) = edns {
            v[11] = 1;
            v.push(0);
            v.extend_from_slice(&TYPE_OPT.to_be_bytes());
            v.extend_from_slice(&sz.to_be_bytes());
            v.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        v
    }

    #[test]
    fn answer_records_expand_names_and_refuse_bad_pointers() {
        let mut v = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        v.extend(text_to_wire("a.example").unwrap());
        v.extend_from_slice(&[0, 15, 0, 1]);
        // a.example MX 10 mx.<pointer to example>
        v.extend_from_slice(&[
            0xC0, 0x0C, 0, 15, 0, 1, 0, 0, 0, 9, 0, 7, 0, 10, 2, b'm', b'x', 0xC0, 14,
        ]);
        let l = answer_records(&v, &text_to_wire("A.example").unwrap(), TYPE_MX).unwrap();
        let rec = l.records().next().unwrap();
        assert_eq!(&rec[..11], &text_to_wire("a.example").unwrap()[..]);
        assert_eq!(
            record_rdata(rec),
            &[&[0u8, 10][..], &text_to_wire("mx.example").unwrap()].concat()[..]
        );
        assert!(answer_records(&v, &text_to_wire("b.example").unwrap(), TYPE_MX).is_err());
        assert!(answer_records(&v, &text_to_wire("a.example").unwrap(), TYPE_A).is_err());
        // A pointer to itself (a loop) or forward is refused.
        let n = v.len();
        v[n - 1] = (n - 2) as u8;
        assert!(answer_records(&v, &text_to_wire("a.example").unwrap(), TYPE_MX).is_err());
    }

    #[test]
    fn parses_query_and_lowercases_name_keeping_question_bytes() {
        let mut pkt = query_bytes("Web.Default.svc", TYPE_A, Some(4096));
        pkt[13] = b'W';
        let q = parse_query(&pkt).unwrap();
        assert_eq!(q.id, 0x1234);
        assert_eq!(q.qtype, TYPE_A);
        assert_eq!(q.qname.wire(), text_to_wire("web.default.svc").unwrap());
        assert_eq!(&q.question[1..4], b"Web");
        assert_eq!(q.edns.unwrap().udp_size, 4096);
        assert_eq!(q.udp_limit(), MAX_UDP_PAYLOAD as usize);
        let labels: Vec<_> = q.qname.labels().collect();
        assert_eq!(labels, vec![&b"web"[..], b"default", b"svc"]);
    }

    #[test]
    fn rejects_bad_packets() {
        assert_eq!(parse_query(&[0; 5]).unwrap_err(), Reject::Drop);
        let mut resp = query_bytes("a", TYPE_A, None);
        resp[2] |= 0x80;
        assert_eq!(parse_query(&resp).unwrap_err(), Reject::Drop);
        let mut two = query_bytes("a", TYPE_A, None);
        two[5] = 2;
        assert!(matches!(
            parse_query(&two).unwrap_err(),
            Reject::Reply {
                rcode: Rcode::FormErr,
                ..
            }
        ));
        let mut notify = query_bytes("a", TYPE_SOA, None);
        notify[2] |= 4 << 3;
        assert!(matches!(
            parse_query(&notify).unwrap_err(),
            Reject::Reply {
                rcode: Rcode::NotImp,
                question: Some(_),
                ..
            }
        ));
        let trunc = &query_bytes("abc.def", TYPE_A, None)[..16];
        assert!(matches!(
            parse_query(trunc).unwrap_err(),
            Reject::Reply {
                rcode: Rcode::FormErr,
                ..
            }
        ));
        // A name longer than 255 bytes.
        let mut huge = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for _ in 0..5 {
            huge.push(63);
            huge.extend([b'a'; 63]);
        }
        huge.extend([0, 0, 1, 0, 1]);
        assert!(matches!(
            parse_query(&huge).unwrap_err(),
            Reject::Reply {
                rcode: Rcode::FormErr,
                ..
            }
        ));
        let mut badvers = query_bytes("a", TYPE_A, Some(1232));
        let n = badvers.len();
        badvers[n - 5] = 1; // version byte of the OPT TTL
        let rej = parse_query(&badvers).unwrap_err();
        assert!(matches!(
            rej,
            Reject::Reply {
                bad_version: true,
                ..
            }
        ));
        let mut out = Vec::new();
        assert!(write_reject(&mut out, &badvers, &rej));
        let m = hickory_proto::op::Message::from_vec(&out).unwrap();
        assert_eq!(u16::from(m.metadata.response_code), 16);
    }

    #[test]
    fn reverse_names_round_trip() {
        for ip in ["10.96.0.1", "fd00::1:2", "2001:db8::abcd"] {
            let ip: IpAddr = ip.parse().unwrap();
            let wire = reverse_name(ip);
            let n = LowerName::from_wire(&wire).unwrap();
            let labels: Vec<_> = n.labels().collect();
            assert_eq!(parse_reverse(&labels), Some(ip));
        }
        assert_eq!(
            wire_to_text(&reverse_name("10.96.0.1".parse().unwrap())),
            "1.0.96.10.in-addr.arpa."
        );
        let t = wire_to_text(&reverse_name("fd00::1".parse().unwrap()));
        assert!(t.starts_with("1.0.0.0.0.0.0.0"), "{t}");
        assert!(t.ends_with(".0.0.d.f.ip6.arpa."), "{t}");
    }

    #[test]
    fn truncates_at_record_boundary_and_sets_tc() {
        let pkt = query_bytes("h.ns.svc", TYPE_A, None);
        let q = parse_query(&pkt).unwrap();
        let mut l = RrList::new();
        for i in 0..100u8 {
            l.push_ip(&PTR_TO_QNAME, 5, IpAddr::V4(Ipv4Addr::new(10, 0, 0, i)));
        }
        let s = Sections {
            authoritative: true,
            answer: vec![&l],
            ..Default::default()
        };
        let mut out = Vec::new();
        write_response(&mut out, &q, &s, false, q.udp_limit());
        assert!(out.len() <= 512);
        let m = hickory_proto::op::Message::from_vec(&out).unwrap();
        assert!(m.metadata.truncation);
        assert!(m.answers.len() < 100 && !m.answers.is_empty());
        write_response(&mut out, &q, &s, false, 65535);
        let m = hickory_proto::op::Message::from_vec(&out).unwrap();
        assert!(!m.metadata.truncation);
        assert_eq!(m.answers.len(), 100);
    }

    #[test]
    fn inspects_responses_for_ttls() {
        let pkt = query_bytes("x.example", TYPE_A, None);
        let q = parse_query(&pkt).unwrap();
        let mut l = RrList::new();
        l.push_ip(&PTR_TO_QNAME, 30, "192.0.2.1".parse().unwrap());
        l.push_ip(&PTR_TO_QNAME, 20, "192.0.2.2".parse().unwrap());
        let s = Sections {
            answer: vec![&l],
            ..Default::default()
        };
        let mut out = Vec::new();
        write_response(&mut out, &q, &s, true, 512);
        let info = inspect_response(&out).unwrap();
        assert_eq!(info.min_ttl, Some(20));
        assert_eq!(info.ttl_offsets.len(), 2);
        assert_eq!(info.ancount, 2);
        assert!(inspect_response(&out[..out.len() - 1]).is_err());
    }
}
