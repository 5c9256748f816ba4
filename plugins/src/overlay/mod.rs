//! The cross-node data path: what the kernel of one node should contain so
//! that its pods reach the pods of every other node, and how to get there.
//!
//! - this module (pure): the data-path entries (`Route`, `Neigh`, `Fdb`),
//!   [`desired`] (remote nodes → entries for host-gw or VXLAN) and [`diff`]
//!   (desired vs actual → ordered [`Op`]s). Unit-tested without root.
//! - [`kernel`]: reads the actual entries through rtnetlink (only those podnet
//!   owns: routes with protocol [`RTPROT_PODNET`], neighbours and FDB entries
//!   on the VXLAN device), applies ops, and manages the VXLAN device.
//!
//! Ownership: a route is ours when its protocol is [`RTPROT_PODNET`]; every
//! permanent neighbour and every FDB entry on `podnet.<vni>` is ours (the
//! device is). Nothing else is ever read as "ours", so a diff never deletes a
//! route somebody else installed.

pub mod kernel;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnetwork::IpNetwork;

/// Route protocol number that marks podnet's routes (`ip route show proto 112`).
/// Unused by the kernel and by the routing daemons listed in iproute2's
/// `rt_protos` (Calico uses 80, BIRD 12, ...), so it identifies our routes
/// unambiguously.
pub const RTPROT_PODNET: u8 = 0x70;

/// Overhead of VXLAN encapsulation over an IPv4 underlay (outer IPv4 20 +
/// UDP 8 + VXLAN 8 + inner Ethernet 14); IPv6 underlays need 20 more.
pub const VXLAN_OVERHEAD_V4: u32 = 50;
pub const VXLAN_OVERHEAD_V6: u32 = 70;

/// Name of the VXLAN device for `vni` (at most 15 bytes: 7 + 8 digits of a 24-bit VNI).
pub fn vxlan_device_name(vni: u32) -> String {
    format!("podnet.{vni}")
}

/// MTU of the VXLAN device (and so of pods) on an underlay with `underlay_mtu`.
pub fn vxlan_mtu(underlay_mtu: u32, underlay: IpAddr) -> u32 {
    let overhead = match underlay {
        IpAddr::V4(_) => VXLAN_OVERHEAD_V4,
        IpAddr::V6(_) => VXLAN_OVERHEAD_V6,
    };
    underlay_mtu.saturating_sub(overhead)
}

/// An Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// A stable VTEP MAC for `node` on `vni`: the same node name always gives
    /// the same address (so restarts and reboots keep it and remote FDB and
    /// neighbour entries stay valid), locally administered and unicast.
    /// FNV-1a is used because, unlike `DefaultHasher`, its output is fixed forever.
    pub fn derived(node: &str, vni: u32) -> Mac {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in node.as_bytes().iter().chain(b"/").chain(&vni.to_be_bytes()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let b = h.to_be_bytes();
        Mac([(b[2] & 0xfe) | 0x02, b[3], b[4], b[5], b[6], b[7]])
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Mac> {
        <[u8; 6]>::try_from(bytes).ok().map(Mac)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid MAC address {0:?} (expected six hex octets separated by ':')")]
pub struct BadMac(pub String);

impl FromStr for Mac {
    type Err = BadMac;
    fn from_str(s: &str) -> Result<Mac, BadMac> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for o in out.iter_mut() {
            let p = parts.next().ok_or_else(|| BadMac(s.to_string()))?;
            if p.is_empty() || p.len() > 2 {
                return Err(BadMac(s.to_string()));
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| BadMac(s.to_string()))?;
        }
        if parts.next().is_some() {
            return Err(BadMac(s.to_string()));
        }
        Ok(Mac(out))
    }
}

/// Which data path a node programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Route each remote pod subnet via the remote node's underlay address
    /// (all nodes on one L2 segment).
    HostGw,
    /// Encapsulate in VXLAN; FDB destinations use the family of `local_underlay`.
    Vxlan { local_underlay: IpAddr },
}

/// What the local data path needs to know about another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteNode {
    pub name: String,
    /// Underlay addresses (Node `status.addresses` of type InternalIP).
    pub addresses: Vec<IpAddr>,
    /// Pod subnets (Node `spec.podCIDRs`).
    pub subnets: Vec<IpNetwork>,
    /// VTEP MAC (annotation `podnet.dev/vtep-mac`); needed for VXLAN only.
    pub vtep_mac: Option<Mac>,
}

/// Route to a remote pod subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub dst: IpNetwork,
    pub via: IpAddr,
    /// True: `dev podnet.<vni> onlink` (VXLAN). False: the kernel picks the
    /// device that reaches `via` (host-gw).
    pub vxlan: bool,
}

/// Permanent neighbour on the VXLAN device: remote subnet `.0` → remote VTEP MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Neigh {
    pub ip: IpAddr,
    pub mac: Mac,
}

/// FDB entry on the VXLAN device: remote VTEP MAC → remote underlay address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fdb {
    pub mac: Mac,
    pub dst: IpAddr,
}

/// A set of data-path entries, keyed by what the kernel treats as identity
/// (a route by its destination, a neighbour by its IP, an FDB entry by its
/// MAC), so that a changed value is one replace, never a delete + add.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataPath {
    pub routes: BTreeMap<IpNetwork, Route>,
    pub neighs: BTreeMap<IpAddr, Neigh>,
    pub fdb: BTreeMap<Mac, Fdb>,
}

impl DataPath {
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.neighs.is_empty() && self.fdb.is_empty()
    }
    pub fn len(&self) -> usize {
        self.routes.len() + self.neighs.len() + self.fdb.len()
    }
}

/// A remote node (or one of its subnets) left out of the desired state, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub node: String,
    pub reason: String,
}

/// The entries that make every subnet of `remotes` reachable. `local_subnets`
/// are never routed elsewhere; a subnet claimed by two nodes goes to the node
/// whose name sorts first (the other is reported), so the result does not
/// depend on the order of `remotes`.
pub fn desired(
    mode: Mode,
    local_subnets: &[IpNetwork],
    remotes: &[RemoteNode],
) -> (DataPath, Vec<Skipped>) {
    let mut sorted: Vec<&RemoteNode> = remotes.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = DataPath::default();
    let mut skipped = Vec::new();
    let mut owner: BTreeMap<IpNetwork, &str> = BTreeMap::new();

    for node in sorted {
        let skip = |reason: String| Skipped {
            node: node.name.clone(),
            reason,
        };
        let vtep = match mode {
            Mode::HostGw => None,
            Mode::Vxlan { local_underlay } => {
                let Some(mac) = node.vtep_mac else {
                    skipped.push(skip("no VTEP MAC annotation yet".into()));
                    continue;
                };
                let Some(dst) = node
                    .addresses
                    .iter()
                    .find(|a| a.is_ipv4() == local_underlay.is_ipv4())
                else {
                    skipped.push(skip(format!(
                        "no underlay address of the family of the local {local_underlay}"
                    )));
                    continue;
                };
                Some((mac, *dst))
            }
        };
        for subnet in &node.subnets {
            let subnet = normalize(*subnet);
            if let Some(l) = local_subnets
                .iter()
                .find(|l| overlaps(&normalize(**l), &subnet))
            {
                skipped.push(skip(format!("subnet {subnet} overlaps the local {l}")));
                continue;
            }
            if let Some((other, _)) = owner.iter().find(|(o, _)| overlaps(o, &subnet)) {
                skipped.push(skip(format!(
                    "subnet {subnet} overlaps {other} of node {}",
                    owner[other]
                )));
                continue;
            }
            match vtep {
                None => {
                    let Some(gw) = node
                        .addresses
                        .iter()
                        .find(|a| a.is_ipv4() == subnet.is_ipv4())
                    else {
                        skipped.push(skip(format!(
                            "no underlay address of the family of {subnet}"
                        )));
                        continue;
                    };
                    out.routes.insert(
                        subnet,
                        Route {
                            dst: subnet,
                            via: *gw,
                            vxlan: false,
                        },
                    );
                }
                Some((mac, dst)) => {
                    let gw = subnet.network();
                    // One neighbour per subnet, one FDB entry per node.
                    out.neighs.insert(gw, Neigh { ip: gw, mac });
                    out.fdb.insert(mac, Fdb { mac, dst });
                    out.routes.insert(
                        subnet,
                        Route {
                            dst: subnet,
                            via: gw,
                            vxlan: true,
                        },
                    );
                }
            }
            owner.insert(subnet, &node.name);
        }
    }
    (out, skipped)
}

/// One change to the kernel. `Set*` creates or replaces, so applying it twice
/// is harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    DelRoute(Route),
    DelFdb(Fdb),
    DelNeigh(Neigh),
    SetNeigh(Neigh),
    SetFdb(Fdb),
    SetRoute(Route),
}

/// The ops that turn `actual` into `desired`, in an order that never routes
/// into a half-built path: stale routes go first (then their FDB entries and
/// neighbours); new paths are built neighbour → FDB → route, so a route only
/// appears once the entries it depends on exist. Equal states give no ops.
pub fn diff(desired: &DataPath, actual: &DataPath) -> Vec<Op> {
    let mut ops = Vec::new();
    for (k, r) in &actual.routes {
        if !desired.routes.contains_key(k) {
            ops.push(Op::DelRoute(*r));
        }
    }
    for (k, f) in &actual.fdb {
        if !desired.fdb.contains_key(k) {
            ops.push(Op::DelFdb(*f));
        }
    }
    for (k, n) in &actual.neighs {
        if !desired.neighs.contains_key(k) {
            ops.push(Op::DelNeigh(*n));
        }
    }
    for (k, n) in &desired.neighs {
        if actual.neighs.get(k) != Some(n) {
            ops.push(Op::SetNeigh(*n));
        }
    }
    for (k, f) in &desired.fdb {
        if actual.fdb.get(k) != Some(f) {
            ops.push(Op::SetFdb(*f));
        }
    }
    for (k, r) in &desired.routes {
        if actual.routes.get(k) != Some(r) {
            ops.push(Op::SetRoute(*r));
        }
    }
    ops
}

/// `10.244.1.7/24` → `10.244.1.0/24`.
pub fn normalize(n: IpNetwork) -> IpNetwork {
    IpNetwork::new(n.network(), n.prefix()).expect("prefix taken from a valid network")
}

/// Whether two networks share any address.
pub fn overlaps(a: &IpNetwork, b: &IpNetwork) -> bool {
    a.is_ipv4() == b.is_ipv4() && (a.contains(b.network()) || b.contains(a.network()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn node(name: &str, addr: &str, subnets: &[&str], mac: Option<&str>) -> RemoteNode {
        RemoteNode {
            name: name.into(),
            addresses: addr.split(',').map(ip).collect(),
            subnets: subnets.iter().map(|s| net(s)).collect(),
            vtep_mac: mac.map(|m| m.parse().unwrap()),
        }
    }
    const VX: Mode = Mode::Vxlan {
        local_underlay: IpAddr::V4(std::net::Ipv4Addr::new(10, 90, 0, 1)),
    };

    #[test]
    fn host_gw_routes_each_subnet_via_its_node_per_family() {
        let remotes = [
            node(
                "b",
                "10.90.0.2,fd90::2",
                &["10.244.2.0/24", "fd00:244:2::/64"],
                None,
            ),
            node(
                "c",
                "10.90.0.3",
                &["10.244.3.0/24", "fd00:244:3::/64"],
                None,
            ),
        ];
        let (d, skipped) = desired(Mode::HostGw, &[net("10.244.1.0/24")], &remotes);
        let routes: Vec<_> = d.routes.values().copied().collect();
        assert_eq!(
            routes,
            vec![
                Route {
                    dst: net("10.244.2.0/24"),
                    via: ip("10.90.0.2"),
                    vxlan: false
                },
                Route {
                    dst: net("10.244.3.0/24"),
                    via: ip("10.90.0.3"),
                    vxlan: false
                },
                Route {
                    dst: net("fd00:244:2::/64"),
                    via: ip("fd90::2"),
                    vxlan: false
                },
            ]
        );
        assert!(d.neighs.is_empty() && d.fdb.is_empty());
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].node, "c");
        assert!(skipped[0].reason.contains("fd00:244:3::/64"), "{skipped:?}");
    }

    #[test]
    fn vxlan_builds_neigh_fdb_and_onlink_route_per_subnet() {
        let remotes = [node(
            "b",
            "10.90.0.2",
            &["10.244.2.0/24", "fd00:244:2::/64"],
            Some("02:00:00:00:00:0b"),
        )];
        let (d, skipped) = desired(VX, &[], &remotes);
        assert!(skipped.is_empty());
        let mac: Mac = "02:00:00:00:00:0b".parse().unwrap();
        assert_eq!(
            d.neighs.values().copied().collect::<Vec<_>>(),
            vec![
                Neigh {
                    ip: ip("10.244.2.0"),
                    mac
                },
                Neigh {
                    ip: ip("fd00:244:2::"),
                    mac
                }
            ]
        );
        assert_eq!(
            d.fdb.values().copied().collect::<Vec<_>>(),
            vec![Fdb {
                mac,
                dst: ip("10.90.0.2")
            }]
        );
        assert_eq!(
            d.routes[&net("fd00:244:2::/64")],
            Route {
                dst: net("fd00:244:2::/64"),
                via: ip("fd00:244:2::"),
                vxlan: true
            }
        );
    }

    #[test]
    fn vxlan_skips_nodes_without_mac_or_matching_underlay_family() {
        let remotes = [
            node("b", "10.90.0.2", &["10.244.2.0/24"], None),
            node(
                "c",
                "fd90::3",
                &["10.244.3.0/24"],
                Some("02:00:00:00:00:0c"),
            ),
        ];
        let (d, skipped) = desired(VX, &[], &remotes);
        assert!(d.is_empty());
        assert_eq!(
            skipped.iter().map(|s| s.node.as_str()).collect::<Vec<_>>(),
            ["b", "c"]
        );
    }

    #[test]
    fn conflicting_and_local_subnets_are_skipped_deterministically() {
        let a = node("a", "10.90.0.2", &["10.244.2.0/24"], None);
        let z = node("z", "10.90.0.9", &["10.244.2.0/23"], None);
        let l = node("l", "10.90.0.8", &["10.244.1.0/24"], None);
        let local = [net("10.244.1.0/24")];
        let (d1, s1) = desired(Mode::HostGw, &local, &[z.clone(), a.clone(), l.clone()]);
        let (d2, s2) = desired(Mode::HostGw, &local, &[l, a, z]);
        assert_eq!(d1, d2);
        assert_eq!(s1, s2);
        assert_eq!(d1.routes.len(), 1);
        assert_eq!(d1.routes[&net("10.244.2.0/24")].via, ip("10.90.0.2"));
        assert_eq!(s1.len(), 2);
    }

    #[test]
    fn host_bits_in_pod_cidrs_are_normalized() {
        let (d, _) = desired(
            Mode::HostGw,
            &[],
            &[node("b", "10.90.0.2", &["10.244.2.9/24"], None)],
        );
        assert!(d.routes.contains_key(&net("10.244.2.0/24")));
    }

    #[test]
    fn diff_of_equal_states_is_empty() {
        let remotes = [node(
            "b",
            "10.90.0.2",
            &["10.244.2.0/24"],
            Some("02:00:00:00:00:0b"),
        )];
        let (d, _) = desired(VX, &[], &remotes);
        assert!(diff(&d, &d).is_empty());
    }

    #[test]
    fn diff_builds_in_dependency_order_and_removes_stale_first() {
        let old = [node(
            "gone",
            "10.90.0.7",
            &["10.244.7.0/24"],
            Some("02:00:00:00:00:07"),
        )];
        let new = [node(
            "b",
            "10.90.0.2",
            &["10.244.2.0/24"],
            Some("02:00:00:00:00:0b"),
        )];
        let (actual, _) = desired(VX, &[], &old);
        let (want, _) = desired(VX, &[], &new);
        let kinds: Vec<&str> = diff(&want, &actual)
            .iter()
            .map(|op| match op {
                Op::DelRoute(_) => "del-route",
                Op::DelFdb(_) => "del-fdb",
                Op::DelNeigh(_) => "del-neigh",
                Op::SetNeigh(_) => "set-neigh",
                Op::SetFdb(_) => "set-fdb",
                Op::SetRoute(_) => "set-route",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "del-route",
                "del-fdb",
                "del-neigh",
                "set-neigh",
                "set-fdb",
                "set-route"
            ]
        );
    }

    #[test]
    fn changed_node_address_is_a_single_replace() {
        let (actual, _) = desired(
            VX,
            &[],
            &[node(
                "b",
                "10.90.0.2",
                &["10.244.2.0/24"],
                Some("02:00:00:00:00:0b"),
            )],
        );
        let (want, _) = desired(
            VX,
            &[],
            &[node(
                "b",
                "10.90.0.22",
                &["10.244.2.0/24"],
                Some("02:00:00:00:00:0b"),
            )],
        );
        assert_eq!(
            diff(&want, &actual),
            vec![Op::SetFdb(Fdb {
                mac: "02:00:00:00:00:0b".parse().unwrap(),
                dst: ip("10.90.0.22")
            })]
        );
    }

    #[test]
    fn derived_mac_is_stable_unicast_and_local() {
        let m = Mac::derived("node-1", 1);
        assert_eq!(m, Mac::derived("node-1", 1));
        assert_ne!(m, Mac::derived("node-2", 1));
        assert_ne!(m, Mac::derived("node-1", 2));
        assert_eq!(m.0[0] & 0x03, 0x02, "{m}");
        // Pinned: a change here would break every existing cluster's FDB.
        assert_eq!(m.to_string(), "0e:f2:4c:e6:df:f7");
        assert_eq!(m.to_string().parse::<Mac>().unwrap(), m);
    }

    #[test]
    fn mac_parse_rejects_garbage() {
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "zz:00:00:00:00:00",
            "002:0:0:0:0:0",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
        assert_eq!(
            "2:a:b:c:d:e".parse::<Mac>().unwrap(),
            Mac([2, 0xa, 0xb, 0xc, 0xd, 0xe])
        );
    }

    #[test]
    fn vxlan_mtu_subtracts_encapsulation() {
        assert_eq!(vxlan_mtu(1500, ip("10.0.0.1")), 1450);
        assert_eq!(vxlan_mtu(1500, ip("fd00::1")), 1430);
        assert_eq!(vxlan_device_name(16_777_215).len(), 15);
    }
}
