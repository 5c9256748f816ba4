//! Links: lookup, veth pairs (peer created directly in another namespace), bridges and
//! their ports (master, hairpin, VLANs), flags, deletion.

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    BridgeVlanInfoFlags, InfoBridge, InfoBridgePort, InfoData, InfoPortData, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage, State,
};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::{LinkBridge, LinkBridgePort, LinkBridgeVlan, LinkUnspec, LinkVeth};

use super::ns::Netns;
use super::{format_mac, Handle, NetlinkError};

/// What we read back about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND` (`veth`, `bridge`, ...), absent for kind-less devices like `lo`.
    pub kind: Option<String>,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    pub promisc: bool,
    /// `IFLA_OPERSTATE` is `UP`.
    pub oper_up: bool,
    /// Index of the bridge (or other master) this link is enslaved to.
    pub master: Option<u32>,
    /// `IFLA_LINK`: for a veth, the peer's index (in the peer's namespace).
    pub peer_index: Option<u32>,
    /// Bridge port hairpin mode (`IFLA_BRPORT_MODE`), for bridge ports.
    pub hairpin: Option<bool>,
    /// Bridge VLAN filtering, for bridges.
    pub vlan_filtering: Option<bool>,
}

impl Link {
    /// The MAC in the reference plugins' notation, or empty.
    pub fn mac_string(&self) -> String {
        self.mac.map(|m| format_mac(&m)).unwrap_or_default()
    }

    fn from_message(msg: LinkMessage) -> Link {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            mac: None,
            mtu: 0,
            up: msg.header.flags.contains(LinkFlags::Up),
            promisc: msg.header.flags.contains(LinkFlags::Promisc),
            oper_up: false,
            master: None,
            peer_index: None,
            hairpin: None,
            vlan_filtering: None,
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n,
                LinkAttribute::Address(a) if a.len() == 6 => {
                    link.mac = Some([a[0], a[1], a[2], a[3], a[4], a[5]])
                }
                LinkAttribute::Mtu(m) => link.mtu = m,
                LinkAttribute::OperState(s) => link.oper_up = s == State::Up,
                LinkAttribute::Controller(m) if m != 0 => link.master = Some(m),
                LinkAttribute::Link(p) if p != 0 => link.peer_index = Some(p),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(k) => link.kind = Some(k.to_string()),
                            LinkInfo::Data(InfoData::Bridge(opts)) => {
                                for o in opts {
                                    if let InfoBridge::VlanFiltering(v) = o {
                                        link.vlan_filtering = Some(v);
                                    }
                                }
                            }
                            LinkInfo::PortData(InfoPortData::BridgePort(opts)) => {
                                for o in opts {
                                    if let InfoBridgePort::HairpinMode(v) = o {
                                        link.hairpin = Some(v);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// A veth pair to create in one request. The link named `name` is created in the
/// handle's namespace; `peer_name` goes straight into `peer_netns` (`IFLA_NET_NS_FD` on
/// the peer), so no link ever appears under a temporary name or in the wrong namespace.
#[derive(Debug, Clone, Copy)]
pub struct VethSpec<'a> {
    pub name: &'a str,
    pub peer_name: &'a str,
    /// Where the peer is created; `None` = the handle's namespace.
    pub peer_netns: Option<&'a Netns>,
    /// MTU of both ends (kernel default when `None`).
    pub mtu: Option<u32>,
    /// MAC of the peer (random when `None`).
    pub peer_mac: Option<[u8; 6]>,
    /// Bridge to enslave the local end to, at creation.
    pub master: Option<u32>,
    /// Bring the local end up at creation. (The peer cannot be: the kernel opens it
    /// before the pair is linked, and `veth_open` refuses with ENOTCONN; set it up with a
    /// handle in its namespace.)
    pub up: bool,
}

/// A bridge to make sure of.
#[derive(Debug, Clone, Copy)]
pub struct BridgeSpec<'a> {
    pub name: &'a str,
    pub mtu: Option<u32>,
    pub promisc: bool,
    /// Turn VLAN filtering on (it is never turned off: other networks may rely on it).
    pub vlan_filtering: bool,
}

impl Handle {
    fn get_link(
        &self,
        op: impl FnOnce() -> String,
        msg: LinkMessage,
    ) -> Result<Option<Link>, NetlinkError> {
        match self.request(op, RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
                _ => None,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The link called `name`, if any.
    pub fn link_by_name(&self, name: &str) -> Result<Option<Link>, NetlinkError> {
        self.get_link(
            || format!("looking up link {name}"),
            LinkUnspec::new_with_name(name).build(),
        )
    }

    /// The link with index `index`, if any.
    pub fn link_by_index(&self, index: u32) -> Result<Option<Link>, NetlinkError> {
        self.get_link(
            || format!("looking up link #{index}"),
            LinkUnspec::new_with_index(index).build(),
        )
    }

    /// Every link of the namespace.
    pub fn links(&self) -> Result<Vec<Link>, NetlinkError> {
        let replies = self.dump(
            || "listing links".to_string(),
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(Link::from_message(l)),
                _ => None,
            })
            .collect())
    }

    fn new_link(
        &self,
        op: impl FnOnce() -> String,
        msg: LinkMessage,
        flags: u16,
    ) -> Result<(), NetlinkError> {
        self.request(op, RouteNetlinkMessage::NewLink(msg), flags)
            .map(drop)
    }

    /// Creates a veth pair in one request (see [`VethSpec`]). `EEXIST` means either name
    /// was taken (the local one here, or the peer's in its namespace).
    pub fn veth_create(&self, spec: &VethSpec<'_>) -> Result<(), NetlinkError> {
        let mut peer = LinkUnspec::new_with_name(spec.peer_name);
        if let Some(mtu) = spec.mtu {
            peer = peer.mtu(mtu);
        }
        if let Some(mac) = spec.peer_mac {
            peer = peer.address(mac.to_vec());
        }
        if let Some(ns) = spec.peer_netns {
            use std::os::fd::{AsFd, AsRawFd};
            // The fd is only read by the kernel while handling this request; `ns` outlives it.
            peer = peer.setns_by_fd(ns.as_fd().as_raw_fd());
        }
        let peer = peer.build();
        let mut host = LinkVeth::new(spec.name, spec.peer_name);
        host = host.set_info_data(InfoData::Veth(netlink_packet_route::link::InfoVeth::Peer(
            peer,
        )));
        if spec.up {
            host = host.up();
        }
        if let Some(mtu) = spec.mtu {
            host = host.mtu(mtu);
        }
        if let Some(master) = spec.master {
            host = host.controller(master);
        }
        self.new_link(
            || {
                format!(
                    "creating veth {} with peer {}{}",
                    spec.name,
                    spec.peer_name,
                    spec.peer_netns
                        .map(|n| format!(" in {}", n.path().display()))
                        .unwrap_or_default()
                )
            },
            host.build(),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Makes sure a bridge `spec.name` exists, is up, has the MTU (when given), promisc
    /// (when asked) and VLAN filtering (when asked). Returns it and whether it was created.
    /// Fails if a link of that name exists but is not a bridge.
    pub fn bridge_ensure(&self, spec: &BridgeSpec<'_>) -> Result<(Link, bool), NetlinkError> {
        let mut created = false;
        let existing = self.link_by_name(spec.name)?;
        let link = match existing {
            Some(l) => l,
            None => {
                let mut b = LinkBridge::new(spec.name).address(super::random_mac().to_vec());
                if let Some(mtu) = spec.mtu {
                    b = b.mtu(mtu);
                }
                if spec.vlan_filtering {
                    b = b.vlan_filtering(true);
                }
                if spec.promisc {
                    b = b.promiscuous(true);
                }
                match self.new_link(
                    || format!("creating bridge {}", spec.name),
                    b.build(),
                    NLM_F_CREATE | NLM_F_EXCL,
                ) {
                    Ok(()) => created = true,
                    // Another plugin instance created it in the meantime.
                    Err(e) if e.is_exists() => {}
                    Err(e) => return Err(e),
                }
                self.link_by_name(spec.name)?
                    .ok_or_else(|| NetlinkError::Protocol {
                        op: format!("creating bridge {}", spec.name),
                        detail: "bridge vanished right after creation".into(),
                    })?
            }
        };
        if link.kind.as_deref() != Some("bridge") {
            return Err(NetlinkError::Protocol {
                op: format!("using bridge {}", spec.name),
                detail: format!(
                    "a link of that name exists but is a {}, not a bridge",
                    link.kind.as_deref().unwrap_or("device without kind")
                ),
            });
        }
        let mut change = LinkUnspec::new_with_index(link.index);
        let mut needed = false;
        if !link.up {
            change = change.up();
            needed = true;
        }
        if spec.promisc && !link.promisc {
            change = change.promiscuous(true);
            needed = true;
        }
        if needed {
            self.new_link(
                || format!("setting bridge {} up/promisc", spec.name),
                change.build(),
                0,
            )?;
        }
        if spec.vlan_filtering && link.vlan_filtering != Some(true) {
            let mut msg = LinkBridge::new(spec.name).vlan_filtering(true).build();
            msg.header.index = link.index;
            self.new_link(
                || format!("enabling VLAN filtering on bridge {}", spec.name),
                msg,
                0,
            )?;
            needed = true;
        }
        if needed {
            let link = self
                .link_by_index(link.index)?
                .ok_or_else(|| NetlinkError::Protocol {
                    op: format!("using bridge {}", spec.name),
                    detail: "bridge vanished while being configured".into(),
                })?;
            return Ok((link, created));
        }
        Ok((link, created))
    }

    /// Sets `IFF_UP`.
    pub fn link_set_up(&self, index: u32) -> Result<(), NetlinkError> {
        self.new_link(
            || format!("setting link #{index} up"),
            LinkUnspec::new_with_index(index).up().build(),
            0,
        )
    }

    /// Sets or clears `IFF_PROMISC`.
    pub fn link_set_promisc(&self, index: u32, on: bool) -> Result<(), NetlinkError> {
        self.new_link(
            || format!("setting promisc {on} on link #{index}"),
            LinkUnspec::new_with_index(index).promiscuous(on).build(),
            0,
        )
    }

    /// Enslaves link `index` to `master` (a bridge).
    pub fn link_set_master(&self, index: u32, master: u32) -> Result<(), NetlinkError> {
        self.new_link(
            || format!("enslaving link #{index} to #{master}"),
            LinkUnspec::new_with_index(index).controller(master).build(),
            0,
        )
    }

    /// Hairpin mode of a bridge port (`IFLA_BRPORT_MODE`).
    pub fn bridge_port_set_hairpin(&self, index: u32, on: bool) -> Result<(), NetlinkError> {
        // Port options go through RTM_NEWLINK on the existing port: the kernel routes
        // IFLA_INFO_SLAVE_DATA to the master's (the bridge's) changelink.
        self.new_link(
            || format!("setting hairpin {on} on bridge port #{index}"),
            LinkBridgePort::new(index).hairpin(on).build(),
            0,
        )
    }

    /// Adds VLAN `vid` to bridge port `index` (as PVID and egress-untagged when `access`,
    /// tagged otherwise).
    pub fn bridge_vlan_add(&self, index: u32, vid: u16, access: bool) -> Result<(), NetlinkError> {
        let flags = if access {
            BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged
        } else {
            BridgeVlanInfoFlags::empty()
        };
        self.request(
            || format!("adding VLAN {vid} to bridge port #{index}"),
            RouteNetlinkMessage::SetLink(LinkBridgeVlan::new(index).vlan(vid, flags).build()),
            0,
        )
        .map(drop)
    }

    /// Removes VLAN `vid` from bridge port `index`; absent is fine.
    pub fn bridge_vlan_del(&self, index: u32, vid: u16) -> Result<(), NetlinkError> {
        match self.request(
            || format!("removing VLAN {vid} from bridge port #{index}"),
            RouteNetlinkMessage::DelLink(
                LinkBridgeVlan::new(index)
                    .vlan(vid, BridgeVlanInfoFlags::empty())
                    .build(),
            ),
            0,
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes link `index` (for a veth, both ends go).
    pub fn link_del(&self, index: u32) -> Result<(), NetlinkError> {
        self.request(
            || format!("deleting link #{index}"),
            RouteNetlinkMessage::DelLink(LinkUnspec::new_with_index(index).build()),
            0,
        )
        .map(drop)
    }

    /// Deletes the link called `name`; `Ok(false)` when there was none.
    pub fn link_del_by_name(&self, name: &str) -> Result<bool, NetlinkError> {
        match self.request(
            || format!("deleting link {name}"),
            RouteNetlinkMessage::DelLink(LinkUnspec::new_with_name(name).build()),
            0,
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::InfoKind;

    #[test]
    fn link_is_read_from_a_message() {
        let mut m = LinkMessage::default();
        m.header.index = 7;
        m.header.flags = LinkFlags::Up | LinkFlags::Promisc;
        m.attributes = vec![
            LinkAttribute::IfName("veth0".into()),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]),
            LinkAttribute::Mtu(1450),
            LinkAttribute::OperState(State::Up),
            LinkAttribute::Controller(3),
            LinkAttribute::Link(9),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
                    true,
                )])),
            ]),
        ];
        let l = Link::from_message(m);
        assert_eq!(l.index, 7);
        assert_eq!(l.name, "veth0");
        assert_eq!(l.kind.as_deref(), Some("veth"));
        assert_eq!(l.mac_string(), "02:00:00:00:00:01");
        assert_eq!(l.mtu, 1450);
        assert!(l.up && l.promisc && l.oper_up);
        assert_eq!(l.master, Some(3));
        assert_eq!(l.peer_index, Some(9));
        assert_eq!(l.hairpin, Some(true));
    }
}
