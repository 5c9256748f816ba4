//! Links, addresses, routes and sysctls inside a target network namespace.
//!
//! - `ns`: a network namespace opened by path ([`Netns`]), running code on a thread that
//!   has joined it, and per-namespace sysctls (`/proc/sys/net` as seen from that thread).
//! - `socket`: [`Handle`], a synchronous rtnetlink socket. A netlink socket belongs to the
//!   namespace it was created in, so [`Handle::open_in`] creates it on a thread that has
//!   joined the target namespace and then uses it from anywhere; nothing reads `/sys`.
//! - `link`, `addr`, `route`: the requests the plugins need, built with rtnetlink's
//!   message builders and the netlink-packet-route types, sent one request at a time.
//!
//! Synchronous on purpose: a CNI plugin is a short-lived process that does a dozen
//! requests in sequence; a blocking socket needs no runtime or connection task.

mod addr;
mod error;
mod link;
mod ns;
mod route;
mod socket;

pub use addr::Address;
pub use error::NetlinkError;
pub use link::{BridgeSpec, Link, VethSpec};
pub use ns::{sysctl_read, sysctl_write, Netns, NetnsError};
pub use route::Route;
pub use socket::Handle;

/// A MAC address formatted like the reference plugins (`aa:bb:cc:dd:ee:ff`, lower case).
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (either case; `-` separators accepted too).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return None;
        }
        mac[i] = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

/// A random locally administered unicast MAC (for bridges: a MAC set explicitly keeps the
/// kernel from re-deriving the bridge MAC from its ports as they come and go).
pub fn random_mac() -> [u8; 6] {
    let mut mac: [u8; 6] = rand::random();
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip() {
        let mac = [0x0a, 0x58, 0x0a, 0xf4, 0x00, 0xff];
        assert_eq!(format_mac(&mac), "0a:58:0a:f4:00:ff");
        assert_eq!(parse_mac("0A:58:0a:f4:00:FF"), Some(mac));
        assert_eq!(parse_mac("0a-58-0a-f4-00-ff"), Some(mac));
        assert_eq!(parse_mac("0a:58:0a:f4:00"), None);
        assert_eq!(parse_mac("0a:58:0a:f4:00:fff"), None);
        assert_eq!(parse_mac("zz:58:0a:f4:00:ff"), None);
    }

    #[test]
    fn random_mac_is_local_unicast() {
        for _ in 0..64 {
            let m = random_mac();
            assert_eq!(m[0] & 0x01, 0, "multicast bit set in {m:?}");
            assert_eq!(m[0] & 0x02, 0x02, "local bit unset in {m:?}");
        }
    }
}
