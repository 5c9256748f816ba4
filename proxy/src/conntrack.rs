//! Deleting UDP conntrack entries over ctnetlink (NFNL_SUBSYS_CTNETLINK):
//! dump the family's table, pick the flows a filter matches, delete each by
//! its original tuple (copied verbatim from the dump). The few attributes
//! needed are encoded here; no crate covers ctnetlink.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_sys::{constants::NETLINK_NETFILTER, Socket};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_DST_PORT: u16 = 3;
const NLA_TYPE_MASK: u16 = 0x3fff;
const IPPROTO_UDP: u8 = 17;

#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("conntrack netlink {op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("conntrack netlink {op}: kernel error {errno}")]
    Kernel { op: &'static str, errno: i32 },
}

/// UDP flows originally sent to `orig_dst:dport` (any address of the
/// family when `None`: a NodePort on whichever node address it was reached)
/// whose reply comes from `reply_src` (the endpoint after DNAT), or any reply
/// source when `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowFilter {
    pub ipv6: bool,
    pub orig_dst: Option<IpAddr>,
    pub dport: u16,
    pub reply_src: Option<IpAddr>,
}

impl FlowFilter {
    /// Flows to a service address.
    pub fn to_ip(ip: IpAddr, dport: u16, reply_src: Option<IpAddr>) -> FlowFilter {
        FlowFilter {
            ipv6: ip.is_ipv6(),
            orig_dst: Some(ip),
            dport,
            reply_src,
        }
    }
    /// Flows to a NodePort of the family, on any node address.
    pub fn to_node_port(ipv6: bool, dport: u16, reply_src: Option<IpAddr>) -> FlowFilter {
        FlowFilter {
            ipv6,
            orig_dst: None,
            dport,
            reply_src,
        }
    }
}

/// A parsed tuple: (src, dst, l4 protocol, dst port).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tuple {
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    proto: Option<u8>,
    dport: Option<u16>,
}

fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8], &[u8])> {
    // Yields (type, payload, whole attribute including header).
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let whole = &b[..len];
        let payload = &b[4..len];
        b = &b[len.next_multiple_of(4).min(b.len())..];
        Some((ty, payload, whole))
    })
}

fn parse_tuple(b: &[u8]) -> Tuple {
    let mut t = Tuple::default();
    for (ty, p, _) in attrs(b) {
        match ty {
            CTA_TUPLE_IP => {
                for (ity, ip, _) in attrs(p) {
                    let addr = match (ity, ip.len()) {
                        (CTA_IP_V4_SRC | CTA_IP_V4_DST, 4) => {
                            IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]))
                        }
                        (CTA_IP_V6_SRC | CTA_IP_V6_DST, 16) => {
                            let mut o = [0u8; 16];
                            o.copy_from_slice(ip);
                            IpAddr::V6(Ipv6Addr::from(o))
                        }
                        _ => continue,
                    };
                    if ity == CTA_IP_V4_SRC || ity == CTA_IP_V6_SRC {
                        t.src = Some(addr);
                    } else {
                        t.dst = Some(addr);
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (pty, pp, _) in attrs(p) {
                    match (pty, pp.len()) {
                        (CTA_PROTO_NUM, 1) => t.proto = Some(pp[0]),
                        (CTA_PROTO_DST_PORT, 2) => {
                            t.dport = Some(u16::from_be_bytes([pp[0], pp[1]]))
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    t
}

fn matches(f: &FlowFilter, orig: &Tuple, reply: &Tuple) -> bool {
    orig.proto == Some(IPPROTO_UDP)
        && f.orig_dst.is_none_or(|d| orig.dst == Some(d))
        && orig.dport == Some(f.dport)
        && f.reply_src.is_none_or(|r| reply.src == Some(r))
}

fn message(ty: u16, flags: u16, seq: u32, family: u8, attrs: &[u8]) -> Vec<u8> {
    let len = 16 + 4 + attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | ty).to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[family, 0, 0, 0]); // nfgenmsg: family, NFNETLINK_V0, res_id
    m.extend_from_slice(attrs);
    m
}

pub struct Conntrack {
    sock: Socket,
    seq: u32,
}

impl Conntrack {
    pub fn new() -> Result<Conntrack, ConntrackError> {
        let io = |op| move |source| ConntrackError::Io { op, source };
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(io("open socket"))?;
        sock.bind_auto().map_err(io("bind socket"))?;
        Ok(Conntrack { sock, seq: 1 })
    }

    fn recv_all(
        &mut self,
        op: &'static str,
        mut each: impl FnMut(u16, &[u8]),
    ) -> Result<(), ConntrackError> {
        loop {
            let (buf, _) = self
                .sock
                .recv_from_full()
                .map_err(|source| ConntrackError::Io { op, source })?;
            let mut b = &buf[..];
            while b.len() >= 16 {
                let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
                let ty = u16::from_ne_bytes([b[4], b[5]]);
                if len < 16 || len > b.len() {
                    return Ok(());
                }
                let payload = &b[16..len];
                match ty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let errno =
                            i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
                        if errno == 0 {
                            return Ok(()); // ACK
                        }
                        return Err(ConntrackError::Kernel { op, errno: -errno });
                    }
                    _ => each(ty, payload),
                }
                b = &b[len.next_multiple_of(4).min(b.len())..];
            }
        }
    }

    /// Deletes every UDP flow matching one of `filters`; returns how many.
    pub fn delete_udp(&mut self, filters: &[FlowFilter]) -> Result<usize, ConntrackError> {
        let mut deleted = 0;
        for (family, v4) in [(libc::AF_INET as u8, true), (libc::AF_INET6 as u8, false)] {
            let fs: Vec<&FlowFilter> = filters.iter().filter(|f| f.ipv6 != v4).collect();
            if fs.is_empty() {
                continue;
            }
            self.seq += 1;
            let req = message(
                IPCTNL_MSG_CT_GET,
                NLM_F_REQUEST | NLM_F_DUMP,
                self.seq,
                family,
                &[],
            );
            self.sock
                .send(&req, 0)
                .map_err(|source| ConntrackError::Io {
                    op: "dump request",
                    source,
                })?;
            let mut victims: Vec<Vec<u8>> = Vec::new();
            self.recv_all("dump", |_, payload| {
                if payload.len() < 4 {
                    return;
                }
                let (mut orig, mut reply, mut raw) = (Tuple::default(), Tuple::default(), None);
                for (ty, p, whole) in attrs(&payload[4..]) {
                    match ty {
                        CTA_TUPLE_ORIG => {
                            orig = parse_tuple(p);
                            raw = Some(whole.to_vec());
                        }
                        CTA_TUPLE_REPLY => reply = parse_tuple(p),
                        _ => {}
                    }
                }
                if let Some(raw) = raw.filter(|_| fs.iter().any(|f| matches(f, &orig, &reply))) {
                    victims.push(raw);
                }
            })?;
            for tuple in victims {
                self.seq += 1;
                let req = message(
                    IPCTNL_MSG_CT_DELETE,
                    NLM_F_REQUEST | NLM_F_ACK,
                    self.seq,
                    family,
                    &tuple,
                );
                self.sock
                    .send(&req, 0)
                    .map_err(|source| ConntrackError::Io {
                        op: "delete request",
                        source,
                    })?;
                match self.recv_all("delete", |_, _| {}) {
                    Ok(()) => deleted += 1,
                    // Gone in the meantime (timed out or deleted by someone else).
                    Err(ConntrackError::Kernel { errno, .. }) if errno == libc::ENOENT => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = ((4 + payload.len()) as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        while !v.len().is_multiple_of(4) {
            v.push(0);
        }
        v
    }

    #[test]
    fn parses_tuples_and_matches_filters() {
        let ip = [
            nla(CTA_IP_V4_SRC, &[10, 244, 0, 9]),
            nla(CTA_IP_V4_DST, &[10, 96, 0, 53]),
        ]
        .concat();
        let proto = [
            nla(CTA_PROTO_NUM, &[17]),
            nla(CTA_PROTO_DST_PORT, &53u16.to_be_bytes()),
        ]
        .concat();
        let orig_body = [
            nla(CTA_TUPLE_IP | 0x8000, &ip),
            nla(CTA_TUPLE_PROTO | 0x8000, &proto),
        ]
        .concat();
        let orig = parse_tuple(&orig_body);
        assert_eq!(orig.dst, Some("10.96.0.53".parse().unwrap()));
        assert_eq!(orig.proto, Some(17));
        assert_eq!(orig.dport, Some(53));
        let reply = Tuple {
            src: Some("10.244.1.5".parse().unwrap()),
            ..Default::default()
        };
        let f = FlowFilter::to_ip(
            "10.96.0.53".parse().unwrap(),
            53,
            Some("10.244.1.5".parse().unwrap()),
        );
        assert!(matches(&f, &orig, &reply));
        assert!(!matches(&FlowFilter { dport: 54, ..f }, &orig, &reply));
        assert!(!matches(
            &FlowFilter {
                reply_src: Some("10.244.1.6".parse().unwrap()),
                ..f
            },
            &orig,
            &reply
        ));
        assert!(matches(
            &FlowFilter {
                reply_src: None,
                ..f
            },
            &orig,
            &reply
        ));
        // A NodePort filter matches whatever node address the flow was sent to.
        let np = FlowFilter::to_node_port(false, 53, Some("10.244.1.5".parse().unwrap()));
        assert!(matches(&np, &orig, &reply));
        assert!(!matches(&FlowFilter { dport: 30053, ..np }, &orig, &reply));
    }
}
