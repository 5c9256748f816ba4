//! The overlay's I/O: read podnet's data-path entries from the kernel, apply
//! [`Op`]s, and create/repair the VXLAN device. Works through one rtnetlink
//! handle, which talks to the network namespace its socket was opened in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::{Handle, LinkGetRequest, LinkUnspec, LinkVxlan, RouteMessageBuilder};

use super::{DataPath, Fdb, Mac, Neigh, Op, Route, RTPROT_PODNET};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("{doing}: {source}")]
    Netlink {
        doing: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("opening a netlink route socket: {0}")]
    Connect(#[source] std::io::Error),
    #[error("{0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, KernelError>;

fn nl(doing: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> KernelError {
    let doing = doing.into();
    move |source| KernelError::Netlink { doing, source }
}

/// The errno of a netlink error reply, if that is what `e` is.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

/// What the VXLAN device must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    /// Local underlay address (source of the outer packets).
    pub local: IpAddr,
    /// Underlay device index the tunnel is bound to.
    pub underlay_index: u32,
    pub mtu: u32,
    pub mac: Mac,
    /// Addresses kept on the device: the `.0` of each local pod subnet as a
    /// host address, so that traffic the node itself sends through the tunnel
    /// has a source the remote nodes route back (as flannel does).
    pub addresses: Vec<IpAddr>,
}

/// Link facts the agent needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfoSummary {
    pub index: u32,
    pub mtu: u32,
    pub mac: Option<Mac>,
    pub up: bool,
    pub vxlan: Option<VxlanAttrs>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VxlanAttrs {
    pub vni: Option<u32>,
    pub port: Option<u16>,
    pub local: Option<IpAddr>,
    pub link: Option<u32>,
    pub learning: Option<bool>,
}

/// rtnetlink access to one network namespace (the one the handle's socket lives in).
#[derive(Clone)]
pub struct Kernel {
    handle: Handle,
}

impl Kernel {
    pub fn new(handle: Handle) -> Kernel {
        Kernel { handle }
    }

    /// Opens a route socket in the calling thread's current network namespace
    /// and spawns its connection task on the current tokio runtime.
    pub fn connect() -> Result<Kernel> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(KernelError::Connect)?;
        tokio::spawn(conn);
        Ok(Kernel { handle })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// The link called `name`, or `None` when there is none.
    pub async fn link(&self, name: &str) -> Result<Option<LinkInfoSummary>> {
        let req = self.handle.link().get().match_name(name.to_string());
        self.one_link(req, || format!("looking up link {name}"))
            .await
    }

    /// The link with index `index`.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<LinkInfoSummary>> {
        let req = self.handle.link().get().match_index(index);
        self.one_link(req, || format!("looking up link #{index}"))
            .await
    }

    /// The first link `req` finds; `None` when the kernel says there is no such device.
    async fn one_link(
        &self,
        req: LinkGetRequest,
        what: impl Fn() -> String,
    ) -> Result<Option<LinkInfoSummary>> {
        match req.execute().try_collect::<Vec<_>>().await {
            Ok(m) => Ok(m.first().map(summarize)),
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(nl(what())(e)),
        }
    }

    /// The index of the link that holds address `ip`.
    pub async fn link_with_address(&self, ip: IpAddr) -> Result<Option<u32>> {
        // Read the whole dump: dropping the stream early leaves replies the
        // connection can no longer deliver.
        let addrs: Vec<_> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(nl("listing addresses"))?;
        Ok(addrs
            .iter()
            .find(|a| {
                a.attributes.iter().any(|at| {
                    matches!(at, AddressAttribute::Address(x) | AddressAttribute::Local(x) if *x == ip)
                })
            })
            .map(|a| a.header.index))
    }

    /// Podnet's entries as the kernel has them now. `vxlan` is the index of
    /// the VXLAN device when there is one (its neighbours and FDB are ours).
    pub async fn read(&self, vxlan: Option<u32>) -> Result<DataPath> {
        let mut out = DataPath::default();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut q = RouteMessage::default();
            q.header.address_family = family;
            let mut routes = self.handle.route().get(q).execute();
            while let Some(r) = routes.try_next().await.map_err(nl("listing routes"))? {
                if let Some(route) = parse_route(&r, vxlan) {
                    out.routes.insert(route.dst, route);
                }
            }
        }
        let Some(vx) = vxlan else { return Ok(out) };
        let mut neighs = self.handle.neighbours().get().execute();
        while let Some(n) = neighs.try_next().await.map_err(nl("listing neighbours"))? {
            if n.header.ifindex != vx || n.header.state != NeighbourState::Permanent {
                continue;
            }
            if let (Some(ip), Some(mac)) = (neigh_ip(&n), neigh_mac(&n)) {
                out.neighs.insert(ip, Neigh { ip, mac });
            }
        }
        let mut fdb = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute();
        while let Some(n) = fdb.try_next().await.map_err(nl("listing FDB entries"))? {
            if n.header.ifindex != vx {
                continue;
            }
            if let (Some(dst), Some(mac)) = (neigh_ip(&n), neigh_mac(&n)) {
                out.fdb.insert(mac, Fdb { mac, dst });
            }
        }
        Ok(out)
    }

    /// Applies `ops` in order. A failing op does not stop the others (one bad
    /// node must not cut off the rest); the failures are returned.
    pub async fn apply(&self, ops: &[Op], vxlan: Option<u32>) -> Vec<KernelError> {
        let mut errors = Vec::new();
        for op in ops {
            if let Err(e) = self.apply_one(op, vxlan).await {
                errors.push(e);
            }
        }
        errors
    }

    async fn apply_one(&self, op: &Op, vxlan: Option<u32>) -> Result<()> {
        let need_vx = || {
            vxlan.ok_or_else(|| {
                KernelError::Invalid(format!(
                    "{op:?} needs the VXLAN device, which does not exist"
                ))
            })
        };
        match *op {
            Op::SetRoute(r) => {
                let mut m = route_message(&r)?;
                if r.vxlan {
                    m.attributes.push(RouteAttribute::Oif(need_vx()?));
                    m.header.flags |= netlink_packet_route::route::RouteFlags::Onlink;
                }
                self.handle
                    .route()
                    .add(m)
                    .replace()
                    .execute()
                    .await
                    .map_err(nl(format!("setting route {} via {}", r.dst, r.via)))
            }
            Op::DelRoute(r) => {
                let m = route_message(&r)?;
                match self.handle.route().del(m).execute().await {
                    Err(e) if errno(&e) == Some(libc::ESRCH) => Ok(()),
                    res => res.map_err(nl(format!("deleting route {} via {}", r.dst, r.via))),
                }
            }
            Op::SetNeigh(n) => self
                .handle
                .neighbours()
                .add(need_vx()?, n.ip)
                .link_layer_address(&n.mac.0)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(nl(format!("setting neighbour {} lladdr {}", n.ip, n.mac))),
            Op::DelNeigh(n) => {
                let mut m = NeighbourMessage::default();
                m.header.family = family_of(n.ip);
                m.header.ifindex = need_vx()?;
                m.attributes
                    .push(NeighbourAttribute::Destination(neigh_address(n.ip)));
                match self.handle.neighbours().del(m).execute().await {
                    Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(()),
                    res => res.map_err(nl(format!("deleting neighbour {}", n.ip))),
                }
            }
            Op::SetFdb(f) => self
                .handle
                .neighbours()
                .add_bridge(need_vx()?, &f.mac.0)
                .flags(NeighbourFlags::Own)
                .destination(f.dst)
                .replace()
                .execute()
                .await
                .map_err(nl(format!("setting FDB entry {} dst {}", f.mac, f.dst))),
            Op::DelFdb(f) => {
                let mut m = NeighbourMessage::default();
                m.header.family = AddressFamily::Bridge;
                m.header.ifindex = need_vx()?;
                m.header.flags = NeighbourFlags::Own;
                m.header.state = NeighbourState::Permanent;
                m.attributes
                    .push(NeighbourAttribute::LinkLayerAddress(f.mac.0.to_vec()));
                m.attributes
                    .push(NeighbourAttribute::Destination(neigh_address(f.dst)));
                match self.handle.neighbours().del(m).execute().await {
                    Err(e) if errno(&e) == Some(libc::ENOENT) => Ok(()),
                    res => res.map_err(nl(format!("deleting FDB entry {} dst {}", f.mac, f.dst))),
                }
            }
        }
    }

    /// Makes the VXLAN device match `spec` and returns its index. An existing
    /// device with the right tunnel parameters is kept as it is (restarts do
    /// not flap it); one with a different VNI, port, local address, underlay
    /// or learning setting is recreated; MTU, MAC, up state and addresses are
    /// corrected in place.
    pub async fn ensure_vxlan(&self, spec: &VxlanSpec) -> Result<u32> {
        let existing = self.link(&spec.name).await?;
        let index = match existing {
            Some(l) if vxlan_matches(&l, spec) => {
                if l.mtu != spec.mtu || l.mac != Some(spec.mac) || !l.up {
                    let mut b = LinkUnspec::new_with_index(l.index).mtu(spec.mtu).up();
                    if l.mac != Some(spec.mac) {
                        b = b.address(spec.mac.0.to_vec());
                    }
                    self.handle
                        .link()
                        .set(b.build())
                        .execute()
                        .await
                        .map_err(nl(format!("updating {}", spec.name)))?;
                }
                l.index
            }
            other => {
                if let Some(l) = other {
                    tracing::info!(device = %spec.name, "recreating VXLAN device with changed parameters");
                    self.handle
                        .link()
                        .del(l.index)
                        .execute()
                        .await
                        .map_err(nl(format!("deleting outdated {}", spec.name)))?;
                }
                let mut b = LinkVxlan::new(&spec.name, spec.vni)
                    .port(spec.port)
                    .dev(spec.underlay_index)
                    .learning(false)
                    .mtu(spec.mtu)
                    .address(spec.mac.0.to_vec())
                    .up();
                b = match spec.local {
                    IpAddr::V4(a) => b.local(a),
                    IpAddr::V6(a) => b.local6(a),
                };
                self.handle
                    .link()
                    .add(b.build())
                    .execute()
                    .await
                    .map_err(nl(format!(
                        "creating VXLAN device {} (vni {}, port {}, local {})",
                        spec.name, spec.vni, spec.port, spec.local
                    )))?;
                self.link(&spec.name)
                    .await?
                    .ok_or_else(|| {
                        KernelError::Invalid(format!("{} vanished right after creation", spec.name))
                    })?
                    .index
            }
        };
        self.sync_addresses(index, &spec.name, &spec.addresses)
            .await?;
        Ok(index)
    }

    /// Host addresses on `index` become exactly `want`.
    async fn sync_addresses(&self, index: u32, name: &str, want: &[IpAddr]) -> Result<()> {
        let mut have = Vec::new();
        let mut addrs = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(a) = addrs
            .try_next()
            .await
            .map_err(nl(format!("listing addresses of {name}")))?
        {
            if a.header.index != index {
                continue;
            }
            for at in &a.attributes {
                if let AddressAttribute::Address(ip) = at {
                    // Kernel-made IPv6 link-local addresses are not ours to manage.
                    if !matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80) {
                        have.push((*ip, a.clone()));
                    }
                }
            }
        }
        for (ip, msg) in &have {
            if !want.contains(ip) {
                self.handle
                    .address()
                    .del(msg.clone())
                    .execute()
                    .await
                    .map_err(nl(format!("removing stale address {ip} from {name}")))?;
            }
        }
        for ip in want {
            if have.iter().any(|(h, _)| h == ip) {
                continue;
            }
            let len = if ip.is_ipv4() { 32 } else { 128 };
            let mut req = self.handle.address().add(index, *ip, len);
            if ip.is_ipv6() {
                // No DAD on a point-to-multipoint tunnel address: it would
                // keep the address tentative (unusable) for a second.
                req.message_mut().attributes.push(AddressAttribute::Flags(
                    netlink_packet_route::address::AddressFlags::Nodad,
                ));
            }
            req.replace()
                .execute()
                .await
                .map_err(nl(format!("adding {ip}/{len} to {name}")))?;
        }
        Ok(())
    }

    /// Deletes the link called `name` if it exists.
    pub async fn delete_link(&self, name: &str) -> Result<()> {
        if let Some(l) = self.link(name).await? {
            match self.handle.link().del(l.index).execute().await {
                Err(e) if errno(&e) == Some(libc::ENODEV) => {}
                res => res.map_err(nl(format!("deleting link {name}")))?,
            }
        }
        Ok(())
    }
}

fn vxlan_matches(l: &LinkInfoSummary, spec: &VxlanSpec) -> bool {
    let Some(v) = &l.vxlan else { return false };
    v.vni == Some(spec.vni)
        && v.port == Some(spec.port)
        && v.local == Some(spec.local)
        && v.link == Some(spec.underlay_index)
        && v.learning == Some(false)
}

fn summarize(m: &LinkMessage) -> LinkInfoSummary {
    let mut s = LinkInfoSummary {
        index: m.header.index,
        mtu: 0,
        mac: None,
        up: m.header.flags.contains(LinkFlags::Up),
        vxlan: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::Mtu(x) => s.mtu = *x,
            LinkAttribute::Address(b) => s.mac = Mac::from_slice(b),
            LinkAttribute::LinkInfo(infos) => {
                let is_vxlan = infos
                    .iter()
                    .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Vxlan)));
                if !is_vxlan {
                    continue;
                }
                let mut v = VxlanAttrs::default();
                for i in infos {
                    if let LinkInfo::Data(InfoData::Vxlan(attrs)) = i {
                        for x in attrs {
                            match x {
                                InfoVxlan::Id(id) => v.vni = Some(*id),
                                InfoVxlan::Port(p) => v.port = Some(*p),
                                InfoVxlan::Local(a) => v.local = Some(IpAddr::V4(*a)),
                                InfoVxlan::Local6(a) => v.local = Some(IpAddr::V6(*a)),
                                InfoVxlan::Link(l) => v.link = Some(*l),
                                InfoVxlan::Learning(b) => v.learning = Some(*b),
                                _ => {}
                            }
                        }
                    }
                }
                s.vxlan = Some(v);
            }
            _ => {}
        }
    }
    s
}

fn family_of(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn neigh_address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}

fn neigh_ip(n: &NeighbourMessage) -> Option<IpAddr> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(x)) => Some(IpAddr::V4(*x)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(x)) => Some(IpAddr::V6(*x)),
        // FDB dumps are AF_BRIDGE, so the parser cannot tell the address family
        // and leaves NDA_DST raw: its length does.
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => match b.len() {
            4 => <[u8; 4]>::try_from(&b[..]).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(&b[..]).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    })
}

fn neigh_mac(n: &NeighbourMessage) -> Option<Mac> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) => Mac::from_slice(b),
        _ => None,
    })
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(x) => Some(IpAddr::V4(*x)),
        RouteAddress::Inet6(x) => Some(IpAddr::V6(*x)),
        _ => None,
    }
}

/// A podnet route from a dump entry; `None` for anything that is not ours.
fn parse_route(r: &RouteMessage, vxlan: Option<u32>) -> Option<Route> {
    if r.header.protocol != RouteProtocol::Other(RTPROT_PODNET) {
        return None;
    }
    let mut table = u32::from(r.header.table);
    let mut dst = None;
    let mut via = None;
    let mut oif = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => dst = route_addr(d),
            RouteAttribute::Gateway(g) => via = route_addr(g),
            RouteAttribute::Oif(o) => oif = Some(*o),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let unspecified = match r.header.address_family {
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let dst = IpNetwork::new(
        dst.unwrap_or(unspecified),
        r.header.destination_prefix_length,
    )
    .ok()?;
    Some(Route {
        dst,
        // A podnet-tagged route without a gateway is not one we would make;
        // an unspecified `via` never equals a desired one, so it gets replaced or removed.
        via: via.unwrap_or(unspecified),
        vxlan: oif.is_some() && oif == vxlan,
    })
}

/// The add/delete message for `r` (without the VXLAN oif, which `apply` adds).
fn route_message(r: &Route) -> Result<RouteMessage> {
    // rtnetlink does not export its builder error type, so only its message is kept.
    let bad = |e: &dyn std::fmt::Display| {
        KernelError::Invalid(format!("route {} via {}: {e}", r.dst, r.via))
    };
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(r.dst.network(), r.dst.prefix())
        .map_err(|e| bad(&e))?
        .protocol(RouteProtocol::Other(RTPROT_PODNET))
        .scope(RouteScope::Universe);
    if !r.via.is_unspecified() {
        b = b.gateway(r.via).map_err(|e| bad(&e))?;
    }
    Ok(b.build())
}
