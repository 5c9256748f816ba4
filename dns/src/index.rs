//! The record index: an immutable structure of pre-encoded records for the
//! cluster zone and the reverse names of cluster addresses, and `lookup`,
//! which turns a (lowercased) question into an answer without locks or
//! per-record encoding. `build` makes and updates indexes from snapshots.
//!
//! Layout follows the name structure instead of a flat name table:
//! `<ep>.<svc>.<ns>.svc.<zone>` is namespaces -> services -> endpoints, so a
//! change to one service replaces one `Arc<Service>` and clones one
//! namespace's map of `Arc`s.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::wire::{self, RrList, TYPE_A, TYPE_AAAA, TYPE_ANY, TYPE_CNAME, TYPE_NS, TYPE_PTR};
use crate::wire::{TYPE_AXFR, TYPE_IXFR, TYPE_SOA, TYPE_SRV, TYPE_TXT};

/// How `a-b-c-d.<ns>.pod.<zone>` is answered (CoreDNS's `pods` option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PodMode {
    /// Any well-formed name answers with the address in it.
    #[default]
    Insecure,
    /// Only when a pod with that address exists in that namespace.
    Verified,
    /// Pod names do not exist.
    Disabled,
}

/// Zone-wide settings that every built record depends on.
#[derive(Debug, Clone)]
pub struct ZoneConfig {
    /// Lowercase wire form of the cluster domain, e.g. `\x07cluster\x05local\x00`.
    pub zone: Vec<u8>,
    pub ttl: u32,
    pub negative_ttl: u32,
    pub pods: PodMode,
    /// Addresses answered for `ns.dns.<zone>`, the NS target.
    pub ns_ips: Vec<IpAddr>,
}

impl ZoneConfig {
    pub fn new(
        zone: &str,
        ttl: u32,
        negative_ttl: u32,
        pods: PodMode,
        ns_ips: Vec<IpAddr>,
    ) -> Option<ZoneConfig> {
        Some(ZoneConfig {
            zone: wire::text_to_wire(zone)?,
            ttl,
            negative_ttl,
            pods,
            ns_ips,
        })
    }
    /// Wire form of `prefix.<zone>` (prefix in text, may be empty).
    pub fn name(&self, prefix: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.zone.len() + 32);
        for l in prefix {
            v.push(l.len() as u8);
            v.extend(l.iter().map(|b| b.to_ascii_lowercase()));
        }
        v.extend_from_slice(&self.zone);
        v
    }
}

/// What a service name answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKind {
    /// ClusterIP service: its addresses.
    Cluster { a: RrList, aaaa: RrList },
    /// Headless: the ready endpoints' addresses (none ready: NXDOMAIN).
    Headless { a: RrList, aaaa: RrList },
    /// ExternalName: a CNAME; `target` is the lowercase wire target.
    External { cname: RrList, target: Vec<u8> },
}

/// The address records of one endpoint name under a service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointRecords {
    pub a: RrList,
    pub aaaa: RrList,
}

/// SRV records of one `_<port>._<proto>` name with their targets' addresses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SrvRecords {
    pub srv: RrList,
    pub additional: RrList,
}

/// The SRV records of `_<port>._<proto>` (labels lowercase, with the `_`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvName {
    pub port: Box<[u8]>,
    pub proto: Box<[u8]>,
    pub records: SrvRecords,
}

/// Endpoint names (hostname or dashed IP, lowercase labels) and their
/// records, sorted by label: 16 bytes for the many services without
/// endpoints, where a `HashMap` takes 48.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Endpoints(Box<[(Box<[u8]>, EndpointRecords)]>);

impl Endpoints {
    pub fn get(&self, label: &[u8]) -> Option<&EndpointRecords> {
        self.0
            .binary_search_by(|(l, _)| (**l).cmp(label))
            .ok()
            .map(|i| &self.0[i].1)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &EndpointRecords)> {
        self.0.iter().map(|(l, r)| (&**l, r))
    }
}

impl From<HashMap<Box<[u8]>, EndpointRecords>> for Endpoints {
    fn from(m: HashMap<Box<[u8]>, EndpointRecords>) -> Endpoints {
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Endpoints(v.into_boxed_slice())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    pub kind: ServiceKind,
    pub endpoints: Endpoints,
    /// Named ports (a service has few: a slice beats a map in memory and time).
    pub srv: Box<[SrvName]>,
}

impl ServiceEntry {
    /// The addresses this service has PTR records for: its cluster IPs and
    /// its endpoints' addresses (derived rather than stored: 10k services
    /// would keep 10k more allocations).
    pub fn ptr_ips(&self) -> Vec<IpAddr> {
        let mut lists: Vec<&RrList> = Vec::new();
        if let ServiceKind::Cluster { a, aaaa } = &self.kind {
            lists.extend([a, aaaa]);
        }
        for (_, e) in self.endpoints.iter() {
            lists.extend([&e.a, &e.aaaa]);
        }
        let mut ips: Vec<IpAddr> = lists
            .iter()
            .flat_map(|l| l.records())
            .filter_map(|r| match *wire::record_rdata(r) {
                [a, b, c, d] => Some(IpAddr::from([a, b, c, d])),
                ref v6 => <[u8; 16]>::try_from(v6).ok().map(IpAddr::from),
            })
            .collect();
        ips.sort();
        ips.dedup();
        ips
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceEntry {
    pub services: HashMap<Box<[u8]>, Arc<ServiceEntry>>,
}

/// One immutable view of everything podnet-dns answers from the cluster.
#[derive(Debug, Clone)]
pub struct Index {
    pub config: Arc<ZoneConfig>,
    /// False until the informer's first full list: cluster names SERVFAIL.
    pub synced: bool,
    /// Known namespaces (from Namespace objects and from services).
    pub namespaces: Arc<HashMap<Box<[u8]>, Arc<NamespaceEntry>>>,
    /// PTR records (owner = question) per address.
    pub ptr: Arc<HashMap<IpAddr, Arc<RrList>>>,
    /// Pod addresses -> namespaces (lowercase) of the pods with them.
    pub pods: Arc<HashMap<IpAddr, Vec<Box<[u8]>>>>,
    pub soa: RrList,
    pub apex_ns: RrList,
    pub ns_glue: RrList,
    pub ns_host: EndpointRecords,
    pub version_txt: RrList,
    pub services_total: usize,
}

/// The outcome of looking a question up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// NOERROR with records (answer may be empty only with `NoData`).
    Answer {
        answer: Vec<Cow<'a, RrList>>,
        additional: Vec<Cow<'a, RrList>>,
    },
    /// The name exists, the type does not: NOERROR, SOA in authority.
    NoData,
    /// NXDOMAIN, SOA in authority.
    NxDomain,
    /// A cluster name before the first full sync: SERVFAIL.
    NotSynced,
    /// Zone transfer: REFUSED.
    Refused,
    /// Not a name this index is authoritative for: forward it.
    Outside,
    /// An ExternalName chain (A/AAAA/TXT) that leaves the zone: `answer` (its
    /// CNAMEs) is completed by the records of `target` (lowercase wire) for
    /// the question's type, looked up through forwarding; it stands alone
    /// when that lookup fails or cannot be made (CoreDNS's backend lookup).
    Chase {
        answer: Vec<Cow<'a, RrList>>,
        target: &'a [u8],
    },
}

/// What a name inside the zone resolves to before ExternalName chains are
/// followed.
enum Found<'a> {
    Done(Lookup<'a>),
    /// An ExternalName service: its CNAME (owner = question) and target.
    Alias {
        cname: &'a RrList,
        target: &'a [u8],
    },
}

/// Most CNAMEs in one answer (CoreDNS stops adding at 8 previous records).
pub const MAX_CNAME_CHAIN: usize = 8;

impl<'a> Lookup<'a> {
    fn records(answer: &'a RrList) -> Lookup<'a> {
        if answer.is_empty() {
            Lookup::NoData
        } else {
            Lookup::Answer {
                answer: vec![Cow::Borrowed(answer)],
                additional: Vec::new(),
            }
        }
    }
    fn two(a: &'a RrList, b: &'a RrList) -> Lookup<'a> {
        let answer: Vec<_> = [a, b]
            .into_iter()
            .filter(|l| !l.is_empty())
            .map(Cow::Borrowed)
            .collect();
        if answer.is_empty() {
            Lookup::NoData
        } else {
            Lookup::Answer {
                answer,
                additional: Vec::new(),
            }
        }
    }
}

fn addresses<'a>(qtype: u16, a: &'a RrList, aaaa: &'a RrList) -> Lookup<'a> {
    match qtype {
        TYPE_A => Lookup::records(a),
        TYPE_AAAA => Lookup::records(aaaa),
        TYPE_ANY => Lookup::two(a, aaaa),
        _ => Lookup::NoData,
    }
}

/// Names with up to this many labels are split on the stack (zeroing a
/// 128-slot array per query would cost more than the lookup); longer ones,
/// rare, use a Vec.
const STACK_LABELS: usize = 16;

impl Index {
    /// Answers `qtype` for `qname` (lowercase wire form).
    pub fn lookup(&self, qname: &wire::LowerName, qtype: u16) -> Lookup<'_> {
        let mut stack: [&[u8]; STACK_LABELS] = [&[]; STACK_LABELS];
        let mut heap: Vec<&[u8]> = Vec::new();
        let mut n = 0;
        for l in qname.labels() {
            if n < STACK_LABELS {
                stack[n] = l;
            } else {
                if heap.is_empty() {
                    heap.extend_from_slice(&stack);
                }
                heap.push(l);
            }
            n += 1;
        }
        let labels: &[&[u8]] = if n <= STACK_LABELS {
            &stack[..n]
        } else {
            &heap
        };
        let zone_labels = count_labels(&self.config.zone);
        if n >= zone_labels
            && qname.wire().ends_with(&self.config.zone)
            && suffix_is_aligned(qname.wire(), self.config.zone.len())
        {
            if matches!(qtype, TYPE_AXFR | TYPE_IXFR) {
                return Lookup::Refused;
            }
            if !self.synced {
                return Lookup::NotSynced;
            }
            return match self.lookup_zone(&labels[..n - zone_labels], qtype) {
                Found::Done(l) => l,
                Found::Alias { cname, target } => self.follow(qname.wire(), cname, target, qtype),
            };
        }
        if let Some(ip) = wire::parse_reverse(labels) {
            if let Some(ptr) = self.ptr.get(&ip) {
                return match qtype {
                    TYPE_PTR | TYPE_ANY => Lookup::records(ptr),
                    _ => Lookup::NoData,
                };
            }
        }
        Lookup::Outside
    }

    /// `rel` = the labels left of the zone, left to right.
    fn lookup_zone(&self, rel: &[&[u8]], qtype: u16) -> Found<'_> {
        let Some((&top, rest)) = rel.split_last() else {
            return Found::Done(match qtype {
                TYPE_SOA => Lookup::records(&self.soa),
                TYPE_NS => Lookup::Answer {
                    answer: vec![Cow::Borrowed(&self.apex_ns)],
                    additional: vec![Cow::Borrowed(&self.ns_glue)],
                },
                TYPE_ANY => Lookup::two(&self.soa, &self.apex_ns),
                _ => Lookup::NoData,
            });
        };
        let done = match top {
            b"dns-version" if rest.is_empty() => match qtype {
                TYPE_TXT | TYPE_ANY => Lookup::records(&self.version_txt),
                _ => Lookup::NoData,
            },
            b"dns" => match rest {
                [] => Lookup::NoData,
                [b"ns"] => addresses(qtype, &self.ns_host.a, &self.ns_host.aaaa),
                _ => Lookup::NxDomain,
            },
            b"svc" => return self.lookup_svc(rest, qtype),
            b"pod" => self.lookup_pod(rest, qtype),
            _ => Lookup::NxDomain,
        };
        Found::Done(done)
    }

    fn lookup_svc(&self, rest: &[&[u8]], qtype: u16) -> Found<'_> {
        let Some((&ns, rest)) = rest.split_last() else {
            return Found::Done(Lookup::NoData);
        };
        let Some(nse) = self.namespaces.get(ns) else {
            return Found::Done(Lookup::NxDomain);
        };
        let Some((&svc, rest)) = rest.split_last() else {
            return Found::Done(Lookup::NoData);
        };
        let Some(se) = nse.services.get(svc) else {
            return Found::Done(Lookup::NxDomain);
        };
        if let ([], ServiceKind::External { cname, target }) = (rest, &se.kind) {
            return Found::Alias { cname, target };
        }
        Found::Done(match rest {
            [] => match &se.kind {
                ServiceKind::Cluster { a, aaaa } => addresses(qtype, a, aaaa),
                ServiceKind::Headless { a, aaaa } => {
                    if a.is_empty() && aaaa.is_empty() {
                        Lookup::NxDomain
                    } else {
                        addresses(qtype, a, aaaa)
                    }
                }
                ServiceKind::External { .. } => unreachable!("returned as Found::Alias above"),
            },
            [ep] if !ep.starts_with(b"_") => match se.endpoints.get(ep) {
                Some(e) => addresses(qtype, &e.a, &e.aaaa),
                None => Lookup::NxDomain,
            },
            [proto] => match se.srv.iter().any(|s| &*s.proto == *proto) {
                true => Lookup::NoData,
                false => Lookup::NxDomain,
            },
            [port, proto] => match se
                .srv
                .iter()
                .find(|s| &*s.proto == *proto && &*s.port == *port)
            {
                Some(s) => match qtype {
                    TYPE_SRV | TYPE_ANY => Lookup::Answer {
                        answer: vec![Cow::Borrowed(&s.records.srv)],
                        additional: vec![Cow::Borrowed(&s.records.additional)],
                    },
                    _ => Lookup::NoData,
                },
                None => Lookup::NxDomain,
            },
            _ => Lookup::NxDomain,
        })
    }

    /// Follows an ExternalName chain from `qname` the way CoreDNS's backend
    /// lookup (`plugin.A`/`AAAA`/`TXT`) does: a CNAME query gets the first
    /// CNAME alone; otherwise each hop adds its CNAME, a target inside the
    /// zone is looked up in the index and the chain is kept only when it
    /// ends in records (else NODATA), a target outside ends the chain
    /// (`Chase` for A/AAAA/TXT). A CNAME to its own name or below it, a
    /// target seen before (a loop) or a hop past `MAX_CNAME_CHAIN` ends the
    /// chain without records, so NODATA.
    fn follow<'s>(
        &'s self,
        qname: &[u8],
        mut cname: &'s RrList,
        mut target: &'s [u8],
        qtype: u16,
    ) -> Lookup<'s> {
        if qtype == TYPE_CNAME {
            return Lookup::records(cname);
        }
        let mut answer: Vec<Cow<'s, RrList>> = Vec::new();
        let mut seen: Vec<&'s [u8]> = Vec::new();
        loop {
            let owner = seen.last().copied().unwrap_or(qname);
            if in_or_under(target, owner) || seen.len() >= MAX_CNAME_CHAIN || seen.contains(&target)
            {
                return Lookup::NoData;
            }
            answer.push(match seen.last() {
                None => Cow::Borrowed(cname),
                Some(owner) => Cow::Owned(cname.reowned(owner)),
            });
            seen.push(target);
            let Some(inside) = self.in_zone_name(target) else {
                return match qtype {
                    TYPE_A | TYPE_AAAA | TYPE_TXT => Lookup::Chase { answer, target },
                    _ => Lookup::Answer {
                        answer,
                        additional: Vec::new(),
                    },
                };
            };
            let labels: Vec<&[u8]> = inside.labels().collect();
            let zone_labels = count_labels(&self.config.zone);
            match self.lookup_zone(&labels[..labels.len() - zone_labels], qtype) {
                Found::Done(Lookup::Answer { answer: more, .. }) => {
                    answer.extend(more.iter().map(|l| Cow::Owned(l.reowned(target))));
                    return Lookup::Answer {
                        answer,
                        additional: Vec::new(),
                    };
                }
                Found::Done(_) => return Lookup::NoData,
                Found::Alias {
                    cname: next,
                    target: next_target,
                } => {
                    cname = next;
                    target = next_target;
                }
            }
        }
    }

    /// `name` (lowercase wire) parsed, when it is inside the zone.
    fn in_zone_name(&self, name: &[u8]) -> Option<wire::LowerName> {
        let zone = &self.config.zone;
        if !in_or_under(name, zone) {
            return None;
        }
        wire::LowerName::from_wire(name)
    }

    fn lookup_pod(&self, rest: &[&[u8]], qtype: u16) -> Lookup<'_> {
        if self.config.pods == PodMode::Disabled {
            return if rest.is_empty() {
                Lookup::NoData
            } else {
                Lookup::NxDomain
            };
        }
        let Some((&ns, rest)) = rest.split_last() else {
            return Lookup::NoData;
        };
        let [dashed] = rest else {
            let exists = self.namespaces.contains_key(ns) || self.config.pods == PodMode::Insecure;
            return if rest.is_empty() && exists {
                Lookup::NoData
            } else {
                Lookup::NxDomain
            };
        };
        let Some(ip) = parse_dashed_ip(dashed) else {
            return Lookup::NxDomain;
        };
        if self.config.pods == PodMode::Verified {
            let found = self
                .pods
                .get(&ip)
                .is_some_and(|nss| nss.iter().any(|n| &**n == ns));
            if !found {
                return Lookup::NxDomain;
            }
        }
        let matches = match ip {
            IpAddr::V4(_) => matches!(qtype, TYPE_A | TYPE_ANY),
            IpAddr::V6(_) => matches!(qtype, TYPE_AAAA | TYPE_ANY),
        };
        if !matches {
            return Lookup::NoData;
        }
        let mut l = RrList::new();
        l.push_ip(&wire::PTR_TO_QNAME, self.config.ttl, ip);
        Lookup::Answer {
            answer: vec![Cow::Owned(l)],
            additional: Vec::new(),
        }
    }
}

fn count_labels(wire: &[u8]) -> usize {
    let mut n = 0;
    let mut pos = 0;
    while let Some(&len) = wire.get(pos) {
        if len == 0 {
            break;
        }
        n += 1;
        pos += 1 + len as usize;
    }
    n
}

/// True when `name` is `parent` or a name under it (both lowercase wire).
fn in_or_under(name: &[u8], parent: &[u8]) -> bool {
    name.ends_with(parent) && suffix_is_aligned(name, parent.len())
}

/// True when the last `suffix_len` bytes of `wire` start at a label boundary.
fn suffix_is_aligned(wire: &[u8], suffix_len: usize) -> bool {
    let want = wire.len() - suffix_len;
    let mut pos = 0;
    while pos < want {
        pos += 1 + wire[pos] as usize;
    }
    pos == want
}

/// `10-0-0-1` -> 10.0.0.1; `fd00--1` -> fd00::1 (the CoreDNS pod forms).
pub fn parse_dashed_ip(label: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(label).ok()?;
    if let Ok(v4) = s.replace('-', ".").parse::<std::net::Ipv4Addr>() {
        if s.matches('-').count() == 3 {
            return Some(IpAddr::V4(v4));
        }
    }
    s.replace('-', ":")
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// The label form of an address: `10-0-0-1`, `fd00--1`.
pub fn dashed_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}
