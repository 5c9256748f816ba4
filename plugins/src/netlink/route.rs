//! Routes of the main table: add, list, delete.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::RouteMessageBuilder;

use super::{Handle, NetlinkError};

/// A unicast route of the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    /// Destination network address (host bits zero) and prefix length.
    pub dst: IpAddr,
    pub prefix_len: u8,
    pub gateway: Option<IpAddr>,
    /// Output interface.
    pub oif: Option<u32>,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.dst, self.prefix_len)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if let Some(oif) = self.oif {
            write!(f, " dev #{oif}")?;
        }
        Ok(())
    }
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

impl Route {
    fn message(&self) -> Result<RouteMessage, NetlinkError> {
        // rtnetlink does not export its builder's error type; keep its message.
        let bad = |detail: String| NetlinkError::Protocol {
            op: format!("building route {self}"),
            detail,
        };
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(self.dst, self.prefix_len)
            .map_err(|e| bad(e.to_string()))?;
        if let Some(gw) = self.gateway {
            b = b.gateway(gw).map_err(|e| bad(e.to_string()))?;
        } else {
            // No next hop: the destination is on the link.
            b = b.scope(RouteScope::Link);
        }
        if let Some(oif) = self.oif {
            b = b.output_interface(oif);
        }
        Ok(b.build())
    }

    fn from_message(m: &RouteMessage) -> Option<Route> {
        let v4 = match m.header.address_family {
            AddressFamily::Inet => true,
            AddressFamily::Inet6 => false,
            _ => return None,
        };
        let mut r = Route {
            dst: if v4 {
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
            },
            prefix_len: m.header.destination_prefix_length,
            gateway: None,
            oif: None,
        };
        for a in &m.attributes {
            match a {
                RouteAttribute::Destination(d) => r.dst = ip_of(d)?,
                RouteAttribute::Gateway(g) => r.gateway = ip_of(g),
                RouteAttribute::Oif(o) => r.oif = Some(*o),
                _ => {}
            }
        }
        Some(r)
    }
}

fn table_of(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(m.header.table as u32)
}

impl Handle {
    /// Adds `route` to the main table; `EEXIST` when a route to that destination exists.
    pub fn route_add(&self, route: &Route) -> Result<(), NetlinkError> {
        let msg = route.message()?;
        self.request(
            || format!("adding route {route}"),
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Deletes `route`; absent is fine.
    pub fn route_del(&self, route: &Route) -> Result<(), NetlinkError> {
        let msg = route.message()?;
        match self.request(
            || format!("deleting route {route}"),
            RouteNetlinkMessage::DelRoute(msg),
            0,
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Unicast routes of the main table (IPv4 when `v4`, else IPv6).
    pub fn routes(&self, v4: bool) -> Result<Vec<Route>, NetlinkError> {
        let mut req = RouteMessage::default();
        req.header.address_family = if v4 {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        req.header.table = RouteHeader::RT_TABLE_MAIN;
        let replies = self.dump(
            || format!("listing IPv{} routes", if v4 { 4 } else { 6 }),
            RouteNetlinkMessage::GetRoute(req),
        )?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r)
                    if r.header.kind == RouteType::Unicast
                        && table_of(r) == RouteHeader::RT_TABLE_MAIN as u32 =>
                {
                    Route::from_message(r)
                }
                _ => None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_message_round_trip() {
        let r = Route {
            dst: "0.0.0.0".parse().unwrap(),
            prefix_len: 0,
            gateway: Some("10.22.0.1".parse().unwrap()),
            oif: Some(3),
        };
        let m = r.message().unwrap();
        assert_eq!(m.header.scope, RouteScope::Universe);
        let back = Route::from_message(&m).unwrap();
        assert_eq!(back, r);
        assert_eq!(r.to_string(), "0.0.0.0/0 via 10.22.0.1 dev #3");

        let onlink = Route {
            dst: "fd00:1::".parse().unwrap(),
            prefix_len: 64,
            gateway: None,
            oif: Some(2),
        };
        let m = onlink.message().unwrap();
        assert_eq!(m.header.scope, RouteScope::Link);
        assert_eq!(Route::from_message(&m).unwrap(), onlink);
    }
}
