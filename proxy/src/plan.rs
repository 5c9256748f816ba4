//! Ruleset plan: the nftables objects (chains with rules, sets and maps with
//! elements) of one family's `podnet` table, computed from the desired model.
//! Pure. `render` turns a plan into `nft` syntax, `diff` compares two plans and
//! `apply` encodes them as netlink.
//!
//! Layout (`Layout::Podnet`): the number of chains does not grow with the
//! number of services. Service traffic is classified by verdict maps keyed by
//! `daddr . l4proto . dport` (`service-ips`) and `l4proto . dport`
//! (`service-nodeports`) that jump to a shared `pick-<class>-<N>` chain (one
//! per traffic class and endpoint count N in use), which DNATs through a data
//! map keyed by the same key plus `numgen random mod N`. Only services that need
//! per-connection state or special source handling (session affinity,
//! `externalTrafficPolicy: Local`) get kube-proxy's per-service-port chains.
//! `loadBalancerSourceRanges` are elements too: `firewall-ips` (filtered LB
//! IP . proto . port) and the interval set `firewall-allow` (the same key
//! plus a source range), checked before DNAT by two fixed chains.
//! `Layout::KubeProxy` gives every service port those chains, i.e. the layout of
//! kube-proxy's nftables mode; it exists for comparison benchmarks.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::model::{Endpoint, Family, Protocol, ServicePort, ServicePortName};

/// Name of our table in both families.
pub const TABLE: &str = "podnet";
/// Packet mark bit that asks `masquerading` to SNAT (kube-proxy's bit 14).
pub const MASQ_MARK: u32 = 0x4000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChainType {
    Filter,
    Nat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BaseChain {
    pub ty: ChainType,
    pub hook: Hook,
    pub priority: i32,
}

/// Priorities as nftables names them.
pub const PRIO_DSTNAT: i32 = -100;
pub const PRIO_SRCNAT: i32 = 100;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Jump(String),
    Goto(String),
    Return,
    Drop,
    Accept,
}

impl Verdict {
    pub fn chain(&self) -> Option<&str> {
        match self {
            Verdict::Jump(c) | Verdict::Goto(c) => Some(c),
            _ => None,
        }
    }
}

/// A piece of a (possibly concatenated) lookup key taken from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyExpr {
    Saddr,
    Daddr,
    L4proto,
    ThDport,
    /// `numgen random mod N`
    Numgen(u32),
}

/// One statement of a rule (matches, then at most one action/verdict).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Stmt {
    CtStateNew,
    CtStatusDnat,
    /// `ip saddr [!=] CIDR`
    Saddr {
        net: IpNetwork,
        negate: bool,
    },
    /// `ip daddr [!=] CIDR`
    Daddr {
        net: IpNetwork,
        negate: bool,
    },
    /// `meta l4proto P th dport N` (kube-proxy's `tcp dport N`)
    Dport {
        proto: Protocol,
        port: u16,
    },
    /// `meta l4proto P`
    L4Proto(Protocol),
    /// `fib daddr type local`
    FibDaddrLocal,
    /// `fib saddr type local`
    FibSaddrLocal,
    /// `meta mark & M == 0`
    MarkUnset(u32),
    /// `meta mark set meta mark | M`
    MarkOr(u32),
    /// `meta mark set meta mark ^ M`
    MarkXor(u32),
    /// `KEY @set`
    InSet {
        key: Vec<KeyExpr>,
        set: String,
    },
    /// `KEY vmap @map`
    Vmap {
        key: Vec<KeyExpr>,
        map: String,
    },
    /// `numgen random mod N vmap { 0 : V0, 1 : V1, ... }` (anonymous map)
    NumgenVmap(Vec<Verdict>),
    /// `dnat to KEY map @map` whose data is `addr . port`
    DnatMap {
        key: Vec<KeyExpr>,
        map: String,
    },
    /// `meta l4proto P dnat to EP`
    Dnat {
        proto: Protocol,
        to: Endpoint,
    },
    /// `update @set { ip saddr }` (session affinity)
    UpdateSaddr(String),
    MasqueradeFullyRandom,
    /// `reject with tcp reset` (after `meta l4proto tcp`).
    RejectTcpReset,
    /// `reject`: ICMP port unreachable (ICMPv6 in ip6).
    Reject,
    Verdict(Verdict),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    pub stmts: Vec<Stmt>,
    pub comment: Option<String>,
}

impl Rule {
    pub fn new(stmts: Vec<Stmt>) -> Rule {
        Rule {
            stmts,
            comment: None,
        }
    }
    pub fn with_comment(stmts: Vec<Stmt>, comment: &str) -> Rule {
        Rule {
            stmts,
            comment: Some(comment.to_string()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub base: Option<BaseChain>,
    pub comment: Option<String>,
    pub rules: Vec<Rule>,
}

/// Type of one field of a set key or map value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldType {
    Ipv4,
    Ipv6,
    InetProto,
    InetService,
    /// The 32-bit host-order result of `numgen` (an endpoint index).
    Index,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SetData {
    Verdict,
    Fields(Vec<FieldType>),
}

/// One field value of an element key or value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Value {
    Ip(IpAddr),
    Proto(Protocol),
    Port(u16),
    Index(u32),
    /// A network in an interval set's key (the range from its first to its
    /// last address).
    Net(IpNetwork),
}

/// An element's key or map value: up to `Fields::MAX` values stored inline
/// (the longest key is `addr . proto . port . index`), so tens of thousands
/// of elements need no allocation each. Compares and hashes as the slice.
#[derive(Clone, Copy)]
pub struct Fields {
    len: u8,
    vals: [Value; Fields::MAX],
}

impl Fields {
    pub const MAX: usize = 4;
    const FILLER: Value = Value::Index(0);

    /// Panics with more than `MAX` values: no plan element has more.
    pub fn new(vals: &[Value]) -> Fields {
        let mut f = Fields {
            len: 0,
            vals: [Self::FILLER; Fields::MAX],
        };
        for v in vals {
            f.push(*v);
        }
        f
    }

    pub fn push(&mut self, v: Value) {
        assert!(
            (self.len as usize) < Fields::MAX,
            "more than {} fields",
            Fields::MAX
        );
        self.vals[self.len as usize] = v;
        self.len += 1;
    }
}

impl<const N: usize> From<[Value; N]> for Fields {
    fn from(vals: [Value; N]) -> Fields {
        Fields::new(&vals)
    }
}

impl std::ops::Deref for Fields {
    type Target = [Value];
    fn deref(&self) -> &[Value] {
        &self.vals[..self.len as usize]
    }
}

impl PartialEq for Fields {
    fn eq(&self, other: &Fields) -> bool {
        **self == **other
    }
}

impl Eq for Fields {}

impl PartialOrd for Fields {
    fn partial_cmp(&self, other: &Fields) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Fields {
    fn cmp(&self, other: &Fields) -> std::cmp::Ordering {
        (**self).cmp(&**other)
    }
}

impl std::hash::Hash for Fields {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (**self).hash(h)
    }
}

impl std::fmt::Debug for Fields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ElemData {
    Verdict(Verdict),
    Values(Fields),
}

/// The definition of a set or map (everything but the elements).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SetDef {
    pub key: Vec<FieldType>,
    pub data: Option<SetData>,
    /// Element timeout in seconds (dynamic affinity sets).
    pub timeout: Option<u32>,
    /// Updated from the packet path (`update @set`).
    pub dynamic: bool,
    /// Keys hold ranges (`flags interval`; the last field is a `Value::Net`).
    pub interval: bool,
    pub comment: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub def: SetDef,
    pub elements: BTreeMap<Fields, Option<ElemData>>,
}

/// The whole table of one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePlan {
    pub family: Family,
    pub comment: String,
    pub chains: BTreeMap<String, Chain>,
    pub sets: BTreeMap<String, Set>,
}

impl TablePlan {
    pub fn element_count(&self) -> usize {
        self.sets
            .values()
            .filter(|s| !s.def.dynamic)
            .map(|s| s.elements.len())
            .sum()
    }
    pub fn rule_count(&self) -> usize {
        self.chains.values().map(|c| c.rules.len()).sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Podnet,
    KubeProxy,
}

/// Settings of one family's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanConfig {
    pub family: Family,
    /// Pod network of this family; traffic from elsewhere to a ClusterIP is masqueraded.
    pub cluster_cidr: Option<IpNetwork>,
    pub masquerade_all: bool,
    /// Where NodePorts answer: empty = every local address except loopback.
    pub nodeport_cidrs: Vec<IpNetwork>,
    pub layout: Layout,
}

// Fixed object names (kube-proxy's where it has one).
pub const SERVICES: &str = "services";
pub const SERVICE_IPS: &str = "service-ips";
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
pub const SERVICE_ENDPOINTS: &str = "service-endpoints";
pub const NODEPORT_ENDPOINTS: &str = "nodeport-endpoints";
pub const ENDPOINTS_CHECK: &str = "endpoints-check";
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
pub const REJECT_CHAIN: &str = "reject-chain";
pub const MARK_MASQ: &str = "mark-for-masquerade";
pub const MASQUERADING: &str = "masquerading";
pub const HAIRPIN: &str = "hairpin-endpoints";
pub const FIREWALL_CHECK: &str = "firewall-check";
pub const FIREWALL_ALLOW_CHECK: &str = "firewall-allow-check";
pub const FIREWALL_IPS: &str = "firewall-ips";
pub const FIREWALL_ALLOW: &str = "firewall-allow";

/// Traffic classes of the shared `pick-*` chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// To a ClusterIP: masquerade only traffic from outside the pod network.
    Cluster,
    /// To an externalIP / LB IP: always masquerade (the endpoint may be remote).
    External,
    /// To a NodePort: always masquerade.
    NodePort,
}

impl Class {
    fn chain(self, n: usize) -> String {
        match self {
            Class::Cluster => format!("pick-cluster-{n}"),
            Class::External => format!("pick-external-{n}"),
            Class::NodePort => format!("pick-nodeport-{n}"),
        }
    }
}

fn addr_type(f: Family) -> FieldType {
    match f {
        Family::V4 => FieldType::Ipv4,
        Family::V6 => FieldType::Ipv6,
    }
}

fn host_net(ip: IpAddr) -> IpNetwork {
    IpNetwork::from(ip)
}

fn loopback(f: Family) -> IpNetwork {
    match f {
        Family::V4 => "127.0.0.0/8".parse().expect("literal"),
        Family::V6 => "::1/128".parse().expect("literal"),
    }
}

/// 8 base32 characters of a 64-bit FNV-1a hash: makes per-service names
/// unique and visually distinct (kube-proxy uses a SHA-256 prefix the same way).
fn hash8(s: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (0..8)
        .map(|i| ALPHABET[((h >> (i * 5)) & 31) as usize] as char)
        .collect()
}

/// nftables object names are at most 255 bytes; kube-proxy keeps prefixes <= 16.
const NAME_BASE_MAX: usize = 240;

fn name_base(s: String) -> String {
    let mut name = format!("{}-{}", hash8(&s), s);
    if name.len() > NAME_BASE_MAX {
        let mut cut = NAME_BASE_MAX - 3;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
        name.push_str("...");
    }
    name
}

/// `HASH-ns/name/proto/port`, kube-proxy's per-service-port chain name base.
pub fn service_port_base(n: &ServicePortName) -> String {
    name_base(format!(
        "{}/{}/{}/{}",
        n.service.namespace,
        n.service.name,
        n.protocol.name(),
        n.port
    ))
}

/// `HASH-ns/name/proto/port__ip/port`, kube-proxy's per-endpoint name base.
pub fn endpoint_base(n: &ServicePortName, ep: &Endpoint) -> String {
    name_base(format!(
        "{}/{}/{}/{}__{}/{}",
        n.service.namespace,
        n.service.name,
        n.protocol.name(),
        n.port,
        ep.ip.to_string().replace(':', "."),
        ep.port
    ))
}

/// One element: key and (for maps) value.
pub type Element = (Fields, Option<ElemData>);

/// Elements of the shared sets and maps, each with its set's name.
pub type Elements = Vec<(&'static str, Element)>;

/// What one service port contributes to its family's table. A table is the
/// skeleton plus the union of its fragments; partial syncs diff fragments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fragment {
    /// Elements of the shared maps (`service-ips`, `service-endpoints`, ...).
    pub elements: Elements,
    /// Own chains (kube-proxy style per-service-port and endpoint chains).
    pub chains: BTreeMap<String, Chain>,
    /// Own sets (affinity).
    pub sets: BTreeMap<String, Set>,
    /// Shared `pick-*` chains this service port jumps to.
    pub picks: BTreeSet<Pick>,
    /// Endpoint addresses that need hairpin masquerade.
    pub hairpins: BTreeSet<IpAddr>,
}

impl Fragment {
    pub fn element_count(&self) -> usize {
        self.elements.len()
    }
}

/// A shared pick chain: traffic class and endpoint count.
pub type Pick = (Class, usize);

struct Builder<'a> {
    cfg: &'a PlanConfig,
    plan: TablePlan,
    elems: Elements,
    picks: BTreeSet<Pick>,
    hairpins: BTreeSet<IpAddr>,
}

impl Builder<'_> {
    fn chain(&mut self, name: &str, comment: Option<String>) -> &mut Chain {
        self.plan
            .chains
            .entry(name.to_string())
            .or_insert_with(|| Chain {
                base: None,
                comment,
                rules: Vec::new(),
            })
    }
    fn rule(&mut self, chain: &str, rule: Rule) {
        self.chain(chain, None).rules.push(rule);
    }
    fn set(&mut self, name: &str, def: SetDef) {
        self.plan.sets.entry(name.to_string()).or_insert(Set {
            def,
            elements: BTreeMap::new(),
        });
    }
    fn elem(&mut self, set: &'static str, key: Fields, data: Option<ElemData>) {
        self.elems.push((set, (key, data)));
    }
    fn family(&self) -> Family {
        self.cfg.family
    }

    /// Rules that steer NodePort traffic (`fib daddr type local`, restricted
    /// by --nodeport-addresses, never loopback unless a loopback CIDR is given).
    fn nodeport_rules(&self, map: &str) -> Vec<Rule> {
        let key = vec![KeyExpr::L4proto, KeyExpr::ThDport];
        let vmap = Stmt::Vmap {
            key,
            map: map.to_string(),
        };
        let lo = loopback(self.family());
        let cidrs: Vec<IpNetwork> = self
            .cfg
            .nodeport_cidrs
            .iter()
            .filter(|c| Family::of(&c.ip()) == self.family())
            .copied()
            .collect();
        if cidrs.is_empty() {
            if !self.cfg.nodeport_cidrs.is_empty() {
                return Vec::new(); // restricted to the other family only
            }
            return vec![Rule::new(vec![
                Stmt::FibDaddrLocal,
                Stmt::Daddr {
                    net: lo,
                    negate: true,
                },
                vmap,
            ])];
        }
        cidrs
            .into_iter()
            .map(|net| {
                let mut stmts = vec![Stmt::FibDaddrLocal, Stmt::Daddr { net, negate: false }];
                let asks_loopback = lo.contains(net.ip()) && net.prefix() >= lo.prefix();
                if !asks_loopback && net.contains(lo.ip()) {
                    stmts.push(Stmt::Daddr {
                        net: lo,
                        negate: true,
                    });
                }
                stmts.push(vmap.clone());
                Rule::new(stmts)
            })
            .collect()
    }

    fn skeleton(&mut self) {
        let f = self.family();
        let a = addr_type(f);
        let filter = |hook| BaseChain {
            ty: ChainType::Filter,
            hook,
            priority: PRIO_DSTNAT - 10,
        };
        let nat = |hook, priority| BaseChain {
            ty: ChainType::Nat,
            hook,
            priority,
        };
        // loadBalancerSourceRanges are checked before DNAT (filter priority
        // dstnat-10) on the LB IP itself, for traffic arriving and leaving
        // this node's own processes alike (kube-proxy's hooks).
        let bases = [
            (
                "filter-prerouting",
                filter(Hook::Prerouting),
                FIREWALL_CHECK,
                true,
            ),
            ("filter-input", filter(Hook::Input), ENDPOINTS_CHECK, true),
            (
                "filter-forward",
                filter(Hook::Forward),
                ENDPOINTS_CHECK,
                true,
            ),
            ("filter-output", filter(Hook::Output), FIREWALL_CHECK, true),
            (
                "nat-prerouting",
                nat(Hook::Prerouting, PRIO_DSTNAT),
                SERVICES,
                false,
            ),
            (
                "nat-output",
                nat(Hook::Output, PRIO_DSTNAT),
                SERVICES,
                false,
            ),
            (
                "nat-postrouting",
                nat(Hook::Postrouting, PRIO_SRCNAT),
                MASQUERADING,
                false,
            ),
        ];
        for (name, base, target, new_only) in bases {
            let jump = |target: &str| {
                let mut stmts = Vec::new();
                if new_only {
                    stmts.push(Stmt::CtStateNew);
                }
                stmts.push(Stmt::Verdict(Verdict::Jump(target.into())));
                Rule::new(stmts)
            };
            let mut rules = vec![jump(target)];
            if name == "filter-output" {
                rules.push(jump(ENDPOINTS_CHECK));
            }
            self.plan.chains.insert(
                name.into(),
                Chain {
                    base: Some(base),
                    comment: None,
                    rules,
                },
            );
        }
        let vip_key = vec![KeyExpr::Daddr, KeyExpr::L4proto, KeyExpr::ThDport];
        let verdict_map = |key: Vec<FieldType>, comment: &str| SetDef {
            key,
            data: Some(SetData::Verdict),
            timeout: None,
            dynamic: false,
            interval: false,
            comment: comment.into(),
        };
        self.set(
            SERVICE_IPS,
            verdict_map(
                vec![a, FieldType::InetProto, FieldType::InetService],
                "ClusterIP, ExternalIP and LoadBalancer IP traffic",
            ),
        );
        self.set(
            SERVICE_NODEPORTS,
            verdict_map(
                vec![FieldType::InetProto, FieldType::InetService],
                "NodePort traffic",
            ),
        );
        self.set(
            NO_ENDPOINT_SERVICES,
            verdict_map(
                vec![a, FieldType::InetProto, FieldType::InetService],
                "vmap to drop or reject packets to services with no endpoints",
            ),
        );
        self.set(
            NO_ENDPOINT_NODEPORTS,
            verdict_map(
                vec![FieldType::InetProto, FieldType::InetService],
                "vmap to drop or reject packets to service nodeports with no endpoints",
            ),
        );
        self.chain(
            SERVICES,
            Some("dispatch service traffic by destination".into()),
        )
        .rules
        .push(Rule::new(vec![Stmt::Vmap {
            key: vip_key.clone(),
            map: SERVICE_IPS.into(),
        }]));
        for r in self.nodeport_rules(SERVICE_NODEPORTS) {
            self.rule(SERVICES, r);
        }
        self.chain(
            ENDPOINTS_CHECK,
            Some("new connections to service ports without usable endpoints".into()),
        )
        .rules
        .push(Rule::new(vec![Stmt::Vmap {
            key: vip_key.clone(),
            map: NO_ENDPOINT_SERVICES.into(),
        }]));
        for r in self.nodeport_rules(NO_ENDPOINT_NODEPORTS) {
            self.rule(ENDPOINTS_CHECK, r);
        }
        self.set(
            FIREWALL_IPS,
            SetDef {
                key: vec![a, FieldType::InetProto, FieldType::InetService],
                data: None,
                timeout: None,
                dynamic: false,
                interval: false,
                comment: "destinations that are subject to LoadBalancerSourceRanges".into(),
            },
        );
        self.set(
            FIREWALL_ALLOW,
            SetDef {
                key: vec![a, FieldType::InetProto, FieldType::InetService, a],
                data: None,
                timeout: None,
                dynamic: false,
                interval: true,
                comment: "destinations . sources that LoadBalancerSourceRanges allow".into(),
            },
        );
        self.chain(
            FIREWALL_CHECK,
            Some("new connections to load balancer IPs with source ranges".into()),
        )
        .rules
        .push(Rule::new(vec![
            Stmt::InSet {
                key: vip_key.clone(),
                set: FIREWALL_IPS.into(),
            },
            Stmt::Verdict(Verdict::Jump(FIREWALL_ALLOW_CHECK.into())),
        ]));
        let mut allow_key = vip_key.clone();
        allow_key.push(KeyExpr::Saddr);
        self.chain(
            FIREWALL_ALLOW_CHECK,
            Some("drop sources outside the load balancer's source ranges".into()),
        )
        .rules
        .extend([
            Rule::new(vec![
                Stmt::InSet {
                    key: allow_key,
                    set: FIREWALL_ALLOW.into(),
                },
                Stmt::Verdict(Verdict::Return),
            ]),
            Rule::new(vec![Stmt::Verdict(Verdict::Drop)]),
        ]);
        self.chain(
            REJECT_CHAIN,
            Some("helper for @no-endpoint-services / @no-endpoint-nodeports".into()),
        )
        .rules
        .extend([
            // A client's kernel may see the ICMP error while connect() still
            // holds the socket and keep it as a soft error, retrying the SYN
            // a second later; a RST refuses the connection at once.
            Rule::new(vec![Stmt::L4Proto(Protocol::Tcp), Stmt::RejectTcpReset]),
            Rule::new(vec![Stmt::Reject]),
        ]);
        self.chain(
            MARK_MASQ,
            Some("mark the connection for SNAT in masquerading".into()),
        )
        .rules
        .push(Rule::new(vec![Stmt::MarkOr(MASQ_MARK)]));
        self.chain(MASQUERADING, Some("SNAT marked service traffic".into()));
        if self.cfg.layout == Layout::Podnet {
            self.set(
                HAIRPIN,
                SetDef {
                    key: vec![a, a],
                    data: None,
                    timeout: None,
                    dynamic: false,
                    interval: false,
                    comment: "endpoint . endpoint: a pod reaching itself through a service".into(),
                },
            );
            self.rule(
                MASQUERADING,
                Rule::with_comment(
                    vec![
                        Stmt::CtStatusDnat,
                        Stmt::InSet {
                            key: vec![KeyExpr::Saddr, KeyExpr::Daddr],
                            set: HAIRPIN.into(),
                        },
                        Stmt::Verdict(Verdict::Jump(MARK_MASQ.into())),
                    ],
                    "hairpin",
                ),
            );
            let vip_data = SetData::Fields(vec![a, FieldType::InetService]);
            self.set(
                SERVICE_ENDPOINTS,
                SetDef {
                    key: vec![
                        a,
                        FieldType::InetProto,
                        FieldType::InetService,
                        FieldType::Index,
                    ],
                    data: Some(vip_data.clone()),
                    timeout: None,
                    dynamic: false,
                    interval: false,
                    comment: "service IP . protocol . port . endpoint index -> endpoint".into(),
                },
            );
            self.set(
                NODEPORT_ENDPOINTS,
                SetDef {
                    key: vec![
                        FieldType::InetProto,
                        FieldType::InetService,
                        FieldType::Index,
                    ],
                    data: Some(vip_data),
                    timeout: None,
                    dynamic: false,
                    interval: false,
                    comment: "protocol . nodePort . endpoint index -> endpoint".into(),
                },
            );
        }
        for r in [
            Rule::new(vec![
                Stmt::MarkUnset(MASQ_MARK),
                Stmt::Verdict(Verdict::Return),
            ]),
            Rule::new(vec![Stmt::MarkXor(MASQ_MARK)]),
            Rule::new(vec![Stmt::MasqueradeFullyRandom]),
        ] {
            self.rule(MASQUERADING, r);
        }
    }

    fn vip_key(&self, ip: IpAddr, sp: &ServicePort) -> Fields {
        Fields::from([
            Value::Ip(ip),
            Value::Proto(sp.name.protocol),
            Value::Port(sp.port),
        ])
    }
    fn np_key(&self, sp: &ServicePort, np: u16) -> Fields {
        Fields::from([Value::Proto(sp.name.protocol), Value::Port(np)])
    }
    fn no_endpoints(&mut self, sp: &ServicePort, ips: &[IpAddr], nodeport: bool, verdict: Verdict) {
        for ip in ips {
            let k = self.vip_key(*ip, sp);
            self.elem(
                NO_ENDPOINT_SERVICES,
                k,
                Some(ElemData::Verdict(verdict.clone())),
            );
        }
        if let (true, Some(np)) = (nodeport, sp.node_port) {
            let k = self.np_key(sp, np);
            self.elem(NO_ENDPOINT_NODEPORTS, k, Some(ElemData::Verdict(verdict)));
        }
    }

    fn service_port(&mut self, sp: &ServicePort) {
        self.firewall(sp);
        let externals: Vec<IpAddr> = sp
            .external_ips
            .iter()
            .chain(&sp.load_balancer_ips)
            .copied()
            .collect();
        if !sp.has_endpoints() {
            let mut all = vec![sp.cluster_ip];
            all.extend(&externals);
            self.no_endpoints(sp, &all, true, Verdict::Goto(REJECT_CHAIN.into()));
            return;
        }
        let per_service = self.cfg.layout == Layout::KubeProxy
            || sp.affinity_timeout.is_some()
            || sp.external_policy_local;
        if per_service {
            self.per_service_port(sp, &externals);
        } else {
            self.mapped_service_port(sp, &externals);
        }
    }

    /// loadBalancerSourceRanges: each LB IP of the port is filtered, the
    /// ranges (and the LB IP itself when a range holds the node) may pass.
    /// NodePorts and externalIPs are not filtered (as in kube-proxy).
    fn firewall(&mut self, sp: &ServicePort) {
        if sp.source_ranges.is_empty() {
            return;
        }
        for ip in &sp.load_balancer_ips {
            let k = self.vip_key(*ip, sp);
            self.elem(FIREWALL_IPS, k, None);
            // The LB IP as a source, unless a range holds it already (the
            // kernel rejects overlapping ranges).
            let own = (sp.source_ranges_allow_node
                && !sp.source_ranges.iter().any(|n| n.contains(*ip)))
            .then(|| host_net(*ip));
            for net in sp.source_ranges.iter().copied().chain(own) {
                let mut allow = k;
                allow.push(Value::Net(net));
                self.elem(FIREWALL_ALLOW, allow, None);
            }
        }
    }

    fn pick(&mut self, class: Class, n: usize) -> Verdict {
        self.picks.insert((class, n));
        Verdict::Goto(class.chain(n))
    }

    /// The O(1)-in-chains path: map elements only.
    fn mapped_service_port(&mut self, sp: &ServicePort, externals: &[IpAddr]) {
        let internal = sp.internal_endpoints();
        if internal.is_empty() {
            self.no_endpoints(sp, &[sp.cluster_ip], false, Verdict::Drop);
        } else {
            let v = self.pick(Class::Cluster, internal.len());
            let k = self.vip_key(sp.cluster_ip, sp);
            self.elem(SERVICE_IPS, k, Some(ElemData::Verdict(v)));
            self.endpoint_elems(SERVICE_ENDPOINTS, self.vip_key(sp.cluster_ip, sp), internal);
        }
        // externalTrafficPolicy is Cluster on this path.
        let eps = &sp.cluster_endpoints;
        for ip in externals {
            let v = self.pick(Class::External, eps.len());
            let k = self.vip_key(*ip, sp);
            self.elem(SERVICE_IPS, k, Some(ElemData::Verdict(v)));
            self.endpoint_elems(SERVICE_ENDPOINTS, k, eps);
        }
        if let Some(np) = sp.node_port {
            let v = self.pick(Class::NodePort, eps.len());
            let k = self.np_key(sp, np);
            self.elem(SERVICE_NODEPORTS, k, Some(ElemData::Verdict(v)));
            self.endpoint_elems(NODEPORT_ENDPOINTS, k, eps);
        }
        self.hairpins(sp);
    }

    fn hairpins(&mut self, sp: &ServicePort) {
        if self.cfg.layout != Layout::Podnet {
            return;
        }
        self.hairpins
            .extend(sp.maybe_local_endpoints.iter().map(|ep| ep.ip));
    }

    fn endpoint_elems(&mut self, map: &'static str, key: Fields, eps: &[Endpoint]) {
        for (i, ep) in eps.iter().enumerate() {
            let mut k = key;
            k.push(Value::Index(i as u32));
            self.elem(
                map,
                k,
                Some(ElemData::Values(Fields::from([
                    Value::Ip(ep.ip),
                    Value::Port(ep.port),
                ]))),
            );
        }
    }

    /// kube-proxy's per-service-port chains (affinity, eTP=Local, or the
    /// kube-proxy layout).
    fn per_service_port(&mut self, sp: &ServicePort, externals: &[IpAddr]) {
        let f = self.family();
        let base = service_port_base(&sp.name);
        let cluster_chain = format!("service-{base}");
        let local_chain = format!("local-{base}");
        let external_chain = format!("external-{base}");
        let uses_cluster = !sp.cluster_endpoints.is_empty()
            && (!sp.internal_policy_local || sp.externally_accessible());
        let uses_local = !sp.local_endpoints.is_empty()
            && (sp.internal_policy_local || sp.external_policy_local);
        let internal_chain = if sp.internal_policy_local {
            &local_chain
        } else {
            &cluster_chain
        };
        let external_policy_chain = if sp.external_policy_local {
            &local_chain
        } else {
            &cluster_chain
        };
        let name = sp.name.to_string();

        // Elements.
        if sp.internal_endpoints().is_empty() {
            self.no_endpoints(sp, &[sp.cluster_ip], false, Verdict::Drop);
        } else {
            let k = self.vip_key(sp.cluster_ip, sp);
            self.elem(
                SERVICE_IPS,
                k,
                Some(ElemData::Verdict(Verdict::Goto(internal_chain.clone()))),
            );
        }
        let accessible = sp.externally_accessible();
        if accessible {
            for ip in externals {
                let k = self.vip_key(*ip, sp);
                self.elem(
                    SERVICE_IPS,
                    k,
                    Some(ElemData::Verdict(Verdict::Goto(external_chain.clone()))),
                );
            }
            if let Some(np) = sp.node_port {
                let k = self.np_key(sp, np);
                self.elem(
                    SERVICE_NODEPORTS,
                    k,
                    Some(ElemData::Verdict(Verdict::Goto(external_chain.clone()))),
                );
            }
            if sp.external_endpoints().is_empty() {
                self.no_endpoints(sp, externals, true, Verdict::Drop);
            }
        }

        // Endpoint chains and affinity sets.
        let mut eps: BTreeSet<Endpoint> = BTreeSet::new();
        if uses_cluster {
            eps.extend(&sp.cluster_endpoints);
        }
        if uses_local {
            eps.extend(&sp.local_endpoints);
        }
        for ep in &eps {
            let ep_base = endpoint_base(&sp.name, ep);
            let chain = format!("endpoint-{ep_base}");
            let mut rules = Vec::new();
            if self.cfg.layout == Layout::KubeProxy {
                rules.push(Rule::with_comment(
                    vec![
                        Stmt::Saddr {
                            net: host_net(ep.ip),
                            negate: false,
                        },
                        Stmt::Verdict(Verdict::Jump(MARK_MASQ.into())),
                    ],
                    "hairpin",
                ));
            }
            if let Some(timeout) = sp.affinity_timeout {
                let set = format!("affinity-{ep_base}");
                self.set(
                    &set,
                    SetDef {
                        key: vec![addr_type(f)],
                        data: None,
                        timeout: Some(timeout),
                        dynamic: true,
                        interval: false,
                        comment: format!("clients of {name} pinned to {ep}"),
                    },
                );
                rules.push(Rule::new(vec![Stmt::UpdateSaddr(set)]));
            }
            rules.push(Rule::new(vec![Stmt::Dnat {
                proto: sp.name.protocol,
                to: *ep,
            }]));
            self.chain(&chain, Some(format!("{name} endpoint {ep}")))
                .rules = rules;
        }
        self.hairpins(sp);

        // Policy chains.
        let policy = |b: &mut Self, chain: &str, eps: &[Endpoint], what: &str| {
            let mut rules = Vec::new();
            if chain == internal_chain.as_str() {
                let prefix = vec![
                    Stmt::Daddr {
                        net: host_net(sp.cluster_ip),
                        negate: false,
                    },
                    Stmt::Dport {
                        proto: sp.name.protocol,
                        port: sp.port,
                    },
                ];
                rules.extend(masq_non_cluster(b.cfg, prefix));
            }
            if sp.affinity_timeout.is_some() {
                for ep in eps {
                    let ep_base = endpoint_base(&sp.name, ep);
                    rules.push(Rule::with_comment(
                        vec![
                            Stmt::InSet {
                                key: vec![KeyExpr::Saddr],
                                set: format!("affinity-{ep_base}"),
                            },
                            Stmt::Verdict(Verdict::Goto(format!("endpoint-{ep_base}"))),
                        ],
                        "session affinity",
                    ));
                }
            }
            rules.push(Rule::new(vec![Stmt::NumgenVmap(
                eps.iter()
                    .map(|ep| Verdict::Goto(format!("endpoint-{}", endpoint_base(&sp.name, ep))))
                    .collect(),
            )]));
            b.chain(chain, Some(format!("{name}: {what}"))).rules = rules;
        };
        if uses_cluster {
            policy(self, &cluster_chain, &sp.cluster_endpoints, "all endpoints");
        }
        if uses_local {
            policy(
                self,
                &local_chain,
                &sp.local_endpoints,
                "endpoints on this node",
            );
        }

        // External chain.
        if accessible {
            let mut rules = Vec::new();
            if !sp.external_policy_local {
                rules.push(Rule::new(vec![Stmt::Verdict(Verdict::Jump(
                    MARK_MASQ.into(),
                ))]));
            } else if uses_cluster {
                if let Some(cidr) = self.cfg.cluster_cidr {
                    rules.push(Rule::with_comment(
                        vec![
                            Stmt::Saddr {
                                net: cidr,
                                negate: false,
                            },
                            Stmt::Verdict(Verdict::Goto(cluster_chain.clone())),
                        ],
                        "short-circuit pod traffic",
                    ));
                }
                rules.push(Rule::with_comment(
                    vec![
                        Stmt::FibSaddrLocal,
                        Stmt::Verdict(Verdict::Jump(MARK_MASQ.into())),
                    ],
                    "masquerade local traffic",
                ));
                rules.push(Rule::with_comment(
                    vec![
                        Stmt::FibSaddrLocal,
                        Stmt::Verdict(Verdict::Goto(cluster_chain.clone())),
                    ],
                    "short-circuit local traffic",
                ));
            }
            let target_exists = if sp.external_policy_local {
                uses_local
            } else {
                uses_cluster
            };
            if target_exists {
                rules.push(Rule::new(vec![Stmt::Verdict(Verdict::Goto(
                    external_policy_chain.clone(),
                ))]));
            }
            let what = if sp.external_policy_local {
                "external traffic (externalTrafficPolicy Local)"
            } else {
                "external traffic"
            };
            self.chain(&external_chain, Some(format!("{name}: {what}")))
                .rules = rules;
        }
    }
}

/// `ip saddr != CIDR jump mark-for-masquerade` (or unconditional with
/// --masquerade-all); None when neither applies.
fn masq_non_cluster(cfg: &PlanConfig, mut prefix: Vec<Stmt>) -> Option<Rule> {
    if cfg.masquerade_all {
        prefix.push(Stmt::Verdict(Verdict::Jump(MARK_MASQ.into())));
        return Some(Rule::with_comment(prefix, "masquerade all service traffic"));
    }
    let cidr = cfg.cluster_cidr?;
    prefix.push(Stmt::Saddr {
        net: cidr,
        negate: true,
    });
    prefix.push(Stmt::Verdict(Verdict::Jump(MARK_MASQ.into())));
    Some(Rule::with_comment(
        prefix,
        "masquerade traffic from outside the pod network",
    ))
}

/// The shared chain for `pick`: masquerade as the class needs, then DNAT
/// through the endpoint map with `numgen random mod N`.
pub fn pick_chain(cfg: &PlanConfig, (class, n): Pick) -> (String, Chain) {
    let vip = vec![KeyExpr::Daddr, KeyExpr::L4proto, KeyExpr::ThDport];
    let np = vec![KeyExpr::L4proto, KeyExpr::ThDport];
    let always = || {
        Some(Rule::new(vec![Stmt::Verdict(Verdict::Jump(
            MARK_MASQ.into(),
        ))]))
    };
    let (what, masq, mut key, map) = match class {
        Class::Cluster => (
            "ClusterIP",
            masq_non_cluster(cfg, Vec::new()),
            vip,
            SERVICE_ENDPOINTS,
        ),
        Class::External => ("externalIP/LoadBalancer", always(), vip, SERVICE_ENDPOINTS),
        Class::NodePort => ("NodePort", always(), np, NODEPORT_ENDPOINTS),
    };
    key.push(KeyExpr::Numgen(n as u32));
    let mut rules: Vec<Rule> = masq.into_iter().collect();
    rules.push(Rule::new(vec![Stmt::DnatMap {
        key,
        map: map.into(),
    }]));
    (
        class.chain(n),
        Chain {
            base: None,
            comment: Some(format!(
                "{what} traffic to a service port with {n} endpoint(s): pick one at random"
            )),
            rules,
        },
    )
}

/// The table's comment.
pub const TABLE_COMMENT: &str =
    "podnet-proxy: Kubernetes Services (generated; changes are overwritten)";

fn new_builder<'a>(cfg: &'a PlanConfig, comment: &str) -> Builder<'a> {
    Builder {
        cfg,
        plan: TablePlan {
            family: cfg.family,
            comment: comment.to_string(),
            chains: BTreeMap::new(),
            sets: BTreeMap::new(),
        },
        elems: Vec::new(),
        picks: BTreeSet::new(),
        hairpins: BTreeSet::new(),
    }
}

/// The fixed part of a table: base chains, dispatch and masquerade chains,
/// and the shared sets and maps (empty).
pub fn skeleton(cfg: &PlanConfig) -> TablePlan {
    let mut b = new_builder(cfg, TABLE_COMMENT);
    b.skeleton();
    b.plan
}

/// What `sp` adds to the table of `cfg.family`.
pub fn fragment(cfg: &PlanConfig, sp: &ServicePort) -> Fragment {
    let mut b = new_builder(cfg, "");
    if Family::of(&sp.cluster_ip) == cfg.family {
        b.service_port(sp);
    }
    Fragment {
        elements: b.elems,
        chains: b.plan.chains,
        sets: b.plan.sets,
        picks: b.picks,
        hairpins: b.hairpins,
    }
}

/// Adds fragments, the pick chains they use and their hairpin elements to
/// `plan` (a skeleton, or just the shared set definitions for a partial
/// update; then `picks`/`hairpins` say which shared objects to include).
pub fn merge<'a>(
    cfg: &PlanConfig,
    plan: &mut TablePlan,
    frags: impl IntoIterator<Item = &'a Fragment>,
    picks: Option<&BTreeSet<Pick>>,
    hairpins: Option<&BTreeSet<IpAddr>>,
) {
    let mut all_picks = BTreeSet::new();
    let mut all_hairpins = BTreeSet::new();
    for f in frags {
        for (set, (k, v)) in &f.elements {
            if let Some(s) = plan.sets.get_mut(*set) {
                s.elements.insert(*k, v.clone());
            }
        }
        plan.chains
            .extend(f.chains.iter().map(|(k, v)| (k.clone(), v.clone())));
        plan.sets
            .extend(f.sets.iter().map(|(k, v)| (k.clone(), v.clone())));
        if picks.is_none() {
            all_picks.extend(f.picks.iter().copied());
        }
        if hairpins.is_none() {
            all_hairpins.extend(f.hairpins.iter().copied());
        }
    }
    for p in picks.unwrap_or(&all_picks) {
        let (name, chain) = pick_chain(cfg, *p);
        plan.chains.insert(name, chain);
    }
    if let Some(h) = plan.sets.get_mut(HAIRPIN) {
        for ip in hairpins.unwrap_or(&all_hairpins) {
            h.elements
                .insert(Fields::from([Value::Ip(*ip), Value::Ip(*ip)]), None);
        }
    }
}

/// Builds one family's table for the given service ports.
pub fn build<'a>(cfg: &PlanConfig, ports: impl IntoIterator<Item = &'a ServicePort>) -> TablePlan {
    let frags: Vec<Fragment> = ports.into_iter().map(|sp| fragment(cfg, sp)).collect();
    let mut plan = skeleton(cfg);
    merge(cfg, &mut plan, &frags, None, None);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::{cfg, slice, snapshot, svc};
    use crate::model::Model;
    use crate::render;
    use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};

    /// Compares with proxy/testdata/NAME; `PODNET_UPDATE_GOLDEN=1` rewrites it.
    fn golden(name: &str, text: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(name);
        if std::env::var_os("PODNET_UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, text).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "reading golden file {}: {e} (run with PODNET_UPDATE_GOLDEN=1)",
                path.display()
            )
        });
        assert!(
            want == text,
            "plan differs from {}:\n{text}",
            path.display()
        );
    }

    pub(crate) fn pcfg(family: Family, layout: Layout) -> PlanConfig {
        PlanConfig {
            family,
            cluster_cidr: Some(match family {
                Family::V4 => "10.244.0.0/16".parse().unwrap(),
                Family::V6 => "fd00:244::/56".parse().unwrap(),
            }),
            masquerade_all: false,
            nodeport_cidrs: vec![],
            layout,
        }
    }

    /// web: ClusterIP, 2 endpoints (one local); api: NodePort + externalIP, 1
    /// endpoint; dns: UDP+TCP, 2 endpoints; empty: no endpoints (reject).
    pub(crate) fn basic_model() -> Model {
        let mut api = svc(
            "default",
            "api",
            "10.96.0.20",
            &[("https", "TCP", 443, 30443)],
        );
        api.spec.as_mut().unwrap().external_ips = Some(vec!["192.0.2.10".into()]);
        let s = snapshot(
            vec![
                svc("default", "web", "10.96.0.10", &[("http", "TCP", 80, 0)]),
                api,
                svc(
                    "kube-system",
                    "dns",
                    "10.96.0.53",
                    &[("dns", "UDP", 53, 0), ("dns-tcp", "TCP", 53, 0)],
                ),
                svc("default", "empty", "10.96.0.99", &[("http", "TCP", 80, 0)]),
            ],
            vec![
                slice(
                    "default",
                    "web",
                    "a",
                    "IPv4",
                    &[("http", "TCP", 8080)],
                    &[
                        ("10.244.0.2", "node-a", true, true, false),
                        ("10.244.1.2", "node-b", true, true, false),
                    ],
                ),
                slice(
                    "default",
                    "api",
                    "a",
                    "IPv4",
                    &[("https", "TCP", 8443)],
                    &[("10.244.1.3", "node-b", true, true, false)],
                ),
                slice(
                    "kube-system",
                    "dns",
                    "a",
                    "IPv4",
                    &[("dns", "UDP", 53), ("dns-tcp", "TCP", 53)],
                    &[
                        ("10.244.0.5", "node-a", true, true, false),
                        ("10.244.1.5", "node-b", true, true, false),
                    ],
                ),
            ],
        );
        let m = Model::build(&s, &cfg());
        assert!(m.skipped.is_empty());
        m
    }

    /// sticky: affinity 60s; lb: LoadBalancer eTP=Local with one local endpoint;
    /// lonely: eTP=Local NodePort with only remote endpoints; itp: iTP=Local
    /// without local endpoints.
    fn policy_model() -> Model {
        let mut sticky = svc("default", "sticky", "10.96.1.1", &[("http", "TCP", 80, 0)]);
        sticky.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
        sticky.spec.as_mut().unwrap().session_affinity_config =
            Some(k8s_openapi::api::core::v1::SessionAffinityConfig {
                client_ip: Some(k8s_openapi::api::core::v1::ClientIPConfig {
                    timeout_seconds: Some(60),
                }),
            });
        let mut lb = svc("default", "lb", "10.96.1.2", &[("http", "TCP", 80, 30080)]);
        lb.spec.as_mut().unwrap().type_ = Some("LoadBalancer".into());
        lb.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
        lb.spec.as_mut().unwrap().health_check_node_port = Some(32100);
        lb.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some("198.51.100.7".into()),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        });
        let mut lonely = svc(
            "default",
            "lonely",
            "10.96.1.3",
            &[("http", "TCP", 80, 30081)],
        );
        lonely.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
        let mut itp = svc("default", "itp", "10.96.1.4", &[("http", "TCP", 80, 0)]);
        itp.spec.as_mut().unwrap().internal_traffic_policy = Some("Local".into());
        let remote = ("10.244.1.9", "node-b", true, true, false);
        let s = snapshot(
            vec![sticky, lb, lonely, itp],
            vec![
                slice(
                    "default",
                    "sticky",
                    "a",
                    "IPv4",
                    &[("http", "TCP", 8080)],
                    &[
                        ("10.244.0.7", "node-a", true, true, false),
                        ("10.244.1.7", "node-b", true, true, false),
                    ],
                ),
                slice(
                    "default",
                    "lb",
                    "a",
                    "IPv4",
                    &[("http", "TCP", 8080)],
                    &[
                        ("10.244.0.8", "node-a", true, true, false),
                        ("10.244.1.8", "node-b", true, true, false),
                    ],
                ),
                slice(
                    "default",
                    "lonely",
                    "a",
                    "IPv4",
                    &[("http", "TCP", 8080)],
                    &[remote],
                ),
                slice(
                    "default",
                    "itp",
                    "a",
                    "IPv4",
                    &[("http", "TCP", 8080)],
                    &[remote],
                ),
            ],
        );
        let m = Model::build(&s, &cfg());
        assert!(m.skipped.is_empty());
        m
    }

    #[test]
    fn golden_basic_v4() {
        let m = basic_model();
        let p = build(&pcfg(Family::V4, Layout::Podnet), m.v4.values());
        golden("basic-v4.nft", &render::table(&p));
        // O(1) in chains: only the fixed chains and one pick chain per class and count.
        let picks: Vec<&String> = p.chains.keys().filter(|c| c.starts_with("pick-")).collect();
        assert_eq!(
            picks,
            [
                "pick-cluster-1",
                "pick-cluster-2",
                "pick-external-1",
                "pick-nodeport-1"
            ]
        );
    }

    /// A LoadBalancer service with ingress IPs and source ranges.
    pub(crate) fn lb_service(
        name: &str,
        cluster_ips: &str,
        ingress: &[&str],
        ranges: &[&str],
    ) -> k8s_openapi::api::core::v1::Service {
        let mut s = svc("default", name, cluster_ips, &[("http", "TCP", 80, 30080)]);
        let spec = s.spec.as_mut().unwrap();
        spec.type_ = Some("LoadBalancer".into());
        spec.load_balancer_source_ranges = Some(ranges.iter().map(|r| r.to_string()).collect());
        s.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(
                    ingress
                        .iter()
                        .map(|ip| LoadBalancerIngress {
                            ip: Some(ip.to_string()),
                            ..Default::default()
                        })
                        .collect(),
                ),
            }),
            ..Default::default()
        });
        s
    }

    /// fw: dual-stack LB with ranges of both families (one holds the node's
    /// IP, one is invalid); open: LB without ranges; local: eTP=Local LB
    /// (per-service chains) with a range.
    #[test]
    fn golden_firewall() {
        let mut fw = lb_service(
            "fw",
            "10.96.0.40,fd00:96::40",
            &["198.51.100.40", "2001:db8::40"],
            &[
                "203.0.113.0/24",
                " 192.168.0.0/24 ",
                "2001:db8:1::/48",
                "10.1.2.3/8",
                "10.20.0.0/16",
                "bogus",
            ],
        );
        fw.spec.as_mut().unwrap().external_ips = Some(vec!["192.0.2.40".into()]);
        let mut local = lb_service(
            "local",
            "10.96.0.41",
            &["198.51.100.41"],
            &["203.0.113.7/32", "192.168.0.0/16", "198.51.100.0/24"],
        );
        local.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
        let eps = |svc: &str, fam: &str, ip: &str| {
            slice(
                "default",
                svc,
                fam,
                fam,
                &[("http", "TCP", 8080)],
                &[(ip, "node-a", true, true, false)],
            )
        };
        let s = snapshot(
            vec![
                fw,
                lb_service("open", "10.96.0.42", &["198.51.100.42"], &[]),
                local,
            ],
            vec![
                eps("fw", "IPv4", "10.244.0.40"),
                eps("fw", "IPv6", "fd00:244::40"),
                eps("open", "IPv4", "10.244.0.42"),
                eps("local", "IPv4", "10.244.0.41"),
            ],
        );
        let m = Model::build(&s, &cfg());
        let skipped: Vec<String> = m.skipped.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            skipped,
            ["service default/fw: loadBalancerSourceRange \"bogus\" is not a CIDR (ignored)"]
        );
        let v4 = build(&pcfg(Family::V4, Layout::Podnet), m.v4.values());
        let v6 = build(&pcfg(Family::V6, Layout::Podnet), m.v6.values());
        golden(
            "firewall.nft",
            &format!("{}\n{}", render::table(&v4), render::table(&v6)),
        );
        let allow = &v4.sets[FIREWALL_ALLOW].elements;
        let lb = |ip: &str, net: &str| {
            Fields::from([
                Value::Ip(ip.parse().unwrap()),
                Value::Proto(Protocol::Tcp),
                Value::Port(80),
                Value::Net(net.parse().unwrap()),
            ])
        };
        assert!(
            allow.contains_key(&lb("198.51.100.40", "10.0.0.0/8")),
            "ranges are stored as networks"
        );
        assert!(
            allow.contains_key(&lb("198.51.100.40", "198.51.100.40/32")),
            "a range holds the node IP: the LB IP may be the source"
        );
        assert!(
            !allow.contains_key(&lb("198.51.100.41", "198.51.100.41/32")),
            "a range of local holds its LB IP already"
        );
        let ips: Vec<String> = v4.sets[FIREWALL_IPS]
            .elements
            .keys()
            .map(|k| format!("{k:?}"))
            .collect();
        assert_eq!(ips.len(), 2, "only LB IPs of services with ranges: {ips:?}");
        assert_eq!(v6.sets[FIREWALL_ALLOW].elements.len(), 1);
    }

    #[test]
    fn golden_policies_v4() {
        let m = policy_model();
        let mut c = pcfg(Family::V4, Layout::Podnet);
        c.nodeport_cidrs = vec![
            "10.90.0.0/24".parse().unwrap(),
            "0.0.0.0/0".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ];
        let p = build(&c, m.v4.values());
        golden("policies-v4.nft", &render::table(&p));
    }

    #[test]
    fn golden_kube_proxy_layout() {
        let m = basic_model();
        let p = build(&pcfg(Family::V4, Layout::KubeProxy), m.v4.values());
        golden("basic-v4-kube-proxy.nft", &render::table(&p));
        assert!(!p.sets.contains_key(SERVICE_ENDPOINTS));
    }

    #[test]
    fn golden_v6_and_masquerade_all() {
        let s = snapshot(
            vec![svc(
                "default",
                "web6",
                "fd00:96::10",
                &[("http", "TCP", 80, 30090)],
            )],
            vec![slice(
                "default",
                "web6",
                "a",
                "IPv6",
                &[("http", "TCP", 8080)],
                &[("fd00:244::2", "node-a", true, true, false)],
            )],
        );
        let m = Model::build(&s, &cfg());
        let mut c = pcfg(Family::V6, Layout::Podnet);
        c.masquerade_all = true;
        let p = build(&c, m.v6.values());
        golden("masq-all-v6.nft", &render::table(&p));
        assert_eq!(
            build(&pcfg(Family::V4, Layout::Podnet), m.v6.values()).element_count(),
            0
        );
    }

    #[test]
    fn chain_count_does_not_grow_with_services() {
        let mk = |n: usize| {
            let mut services = Vec::new();
            let mut slices = Vec::new();
            for i in 0..n {
                let name = format!("s{i}");
                services.push(svc(
                    "bench",
                    &name,
                    &format!("10.96.{}.{}", i / 250, i % 250 + 1),
                    &[("p", "TCP", 80, 0)],
                ));
                slices.push(slice(
                    "bench",
                    &name,
                    "a",
                    "IPv4",
                    &[("p", "TCP", 8080)],
                    &[
                        ("10.244.1.1", "node-b", true, true, false),
                        ("10.244.1.2", "node-b", true, true, false),
                    ],
                ));
            }
            let m = Model::build(&snapshot(services, slices), &cfg());
            build(&pcfg(Family::V4, Layout::Podnet), m.v4.values())
        };
        let (small, big) = (mk(10), mk(1000));
        assert_eq!(small.chains.len(), big.chains.len());
        assert_eq!(big.sets[SERVICE_IPS].elements.len(), 1000);
        assert_eq!(big.sets[SERVICE_ENDPOINTS].elements.len(), 2000);
    }

    #[test]
    fn names_are_stable_and_bounded() {
        let n = ServicePortName {
            service: podnet_state::NamespacedName::new("ns", &"x".repeat(300)),
            port: "p".into(),
            protocol: Protocol::Tcp,
        };
        let b = service_port_base(&n);
        assert!(b.len() <= NAME_BASE_MAX && b.ends_with("..."));
        assert_eq!(b, service_port_base(&n));
        let n2 = ServicePortName {
            port: "q".into(),
            ..n.clone()
        };
        assert_ne!(service_port_base(&n2)[..8], b[..8]);
    }
}
