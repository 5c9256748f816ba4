//! Interface addresses: list, add, delete, flush.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::AddressMessageBuilder;

use super::{Handle, NetlinkError};

/// An address with its prefix length, as on an interface (`10.22.0.5/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address {
    pub ip: IpAddr,
    pub prefix_len: u8,
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix_len)
    }
}

impl Address {
    fn message(&self, index: u32) -> AddressMessage {
        match self.ip {
            IpAddr::V4(v4) => AddressMessageBuilder::<Ipv4Addr>::new()
                .index(index)
                .address(v4, self.prefix_len)
                .build(),
            IpAddr::V6(v6) => AddressMessageBuilder::<Ipv6Addr>::new()
                .index(index)
                .address(v6, self.prefix_len)
                .build(),
        }
    }

    fn from_message(m: &AddressMessage) -> Option<Address> {
        // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on p2p links).
        let mut local = None;
        let mut address = None;
        for a in &m.attributes {
            match a {
                AddressAttribute::Local(ip) => local = Some(*ip),
                AddressAttribute::Address(ip) => address = Some(*ip),
                _ => {}
            }
        }
        local.or(address).map(|ip| Address {
            ip,
            prefix_len: m.header.prefix_len,
        })
    }
}

impl Handle {
    /// Addresses on link `index` (both families when `v4` is `None`). Link-local IPv6
    /// addresses are included when `with_link_local`.
    pub fn addresses(
        &self,
        index: u32,
        v4: Option<bool>,
        with_link_local: bool,
    ) -> Result<Vec<Address>, NetlinkError> {
        let mut req = AddressMessage::default();
        req.header.index = index;
        req.header.family = match v4 {
            None => AddressFamily::Unspec,
            Some(true) => AddressFamily::Inet,
            Some(false) => AddressFamily::Inet6,
        };
        let replies = self.dump(
            || format!("listing addresses of link #{index}"),
            RouteNetlinkMessage::GetAddress(req),
        )?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                    if !with_link_local && a.header.scope == AddressScope::Link {
                        return None;
                    }
                    Address::from_message(a)
                }
                _ => None,
            })
            .collect())
    }

    /// Adds `addr` to link `index`; `EEXIST` when it is already there.
    pub fn address_add(&self, index: u32, addr: Address) -> Result<(), NetlinkError> {
        self.request(
            || format!("adding address {addr} to link #{index}"),
            RouteNetlinkMessage::NewAddress(addr.message(index)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Removes `addr` from link `index`; absent is fine.
    pub fn address_del(&self, index: u32, addr: Address) -> Result<(), NetlinkError> {
        match self.request(
            || format!("removing address {addr} from link #{index}"),
            RouteNetlinkMessage::DelAddress(addr.message(index)),
            0,
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes every global address of link `index`; returns what was removed.
    pub fn address_flush(&self, index: u32) -> Result<Vec<Address>, NetlinkError> {
        let addrs = self.addresses(index, None, false)?;
        for a in &addrs {
            self.address_del(index, *a)?;
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_message_round_trip() {
        let a = Address {
            ip: "10.22.0.5".parse().unwrap(),
            prefix_len: 16,
        };
        let m = a.message(4);
        assert_eq!(m.header.index, 4);
        assert_eq!(m.header.family, AddressFamily::Inet);
        assert_eq!(Address::from_message(&m), Some(a));
        assert_eq!(a.to_string(), "10.22.0.5/16");
        let b = Address {
            ip: "fd00::5".parse().unwrap(),
            prefix_len: 64,
        };
        assert_eq!(Address::from_message(&b.message(1)), Some(b));
    }
}
