//! Pure allocation logic: ranges, range sets, capacity, round-robin candidate search.
//! No I/O: the store answers "is this address taken?" through a closure.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::cni::ipnet::IpNet;

/// An address as a number (IPv4 in the low 32 bits) for range arithmetic.
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Inverse of [`to_u128`] for the family of `like`.
pub fn from_u128(n: u128, like: IpAddr) -> IpAddr {
    match like {
        // Callers only pass numbers inside an IPv4 range here; truncation cannot occur.
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// One allocation range: `[start, end]` inside `subnet`, with its gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet (host bits zero); its prefix length is the one handed out.
    pub subnet: IpNet,
    pub start: IpAddr,
    pub end: IpAddr,
    /// Reported in results and never allocated.
    pub gateway: IpAddr,
}

impl Range {
    fn network(&self) -> u128 {
        to_u128(self.subnet.network())
    }

    /// IPv4 broadcast (never allocated); `None` for IPv6.
    fn broadcast(&self) -> Option<u128> {
        match self.subnet {
            IpNet::V4(n) => Some(u128::from(u32::from(n.broadcast()))),
            IpNet::V6(_) => None,
        }
    }

    /// `ip` lies in `[start, end]` (same family).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.start.is_ipv4()
            && (to_u128(self.start)..=to_u128(self.end)).contains(&to_u128(ip))
    }

    /// `ip` may be handed out: in range, not the gateway, network or broadcast address.
    pub fn is_allocatable(&self, ip: IpAddr) -> bool {
        let n = to_u128(ip);
        self.contains(ip)
            && ip != self.gateway
            && n != self.network()
            && Some(n) != self.broadcast()
    }

    /// Number of allocatable addresses.
    pub fn capacity(&self) -> u128 {
        let (s, e) = (to_u128(self.start), to_u128(self.end));
        let mut excluded: Vec<u128> = [
            Some(to_u128(self.gateway)),
            Some(self.network()),
            self.broadcast(),
        ]
        .into_iter()
        .flatten()
        .filter(|x| (s..=e).contains(x))
        .collect();
        excluded.sort_unstable();
        excluded.dedup();
        // Unsigned: a range is never empty (start ≤ end is validated), and each excluded
        // address is distinct and inside it, so this cannot underflow.
        (e - s)
            .saturating_add(1)
            .saturating_sub(excluded.len() as u128)
    }

    /// `subnet|start|end|gateway`: a stable, parseable identity (see [`RangeSet::key`]).
    fn key(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.subnet, self.start, self.end, self.gateway
        )
    }

    fn parse_key(s: &str) -> Option<Range> {
        let mut it = s.split('|');
        let r = Range {
            subnet: it.next()?.parse().ok()?,
            start: it.next()?.parse().ok()?,
            end: it.next()?.parse().ok()?,
            gateway: it.next()?.parse().ok()?,
        };
        it.next().is_none().then_some(r)
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// A set of ranges of one family; an ADD gets one address per set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet(pub Vec<Range>);

impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// Outcome of [`RangeSet::next_free`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Found(IpAddr),
    /// Every allocatable address is reserved.
    Exhausted,
    /// More taken addresses were probed than the reservation count allows: the count
    /// is stale (the caller recounts and retries).
    CountStale,
}

impl RangeSet {
    /// The range containing `ip` as an allocatable address.
    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.0.iter().find(|r| r.is_allocatable(ip))
    }

    /// Whether `ip` can be allocated from this set.
    pub fn is_allocatable(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }

    /// Allocatable addresses in the set (saturating; IPv6 sets can be huge).
    pub fn capacity(&self) -> u128 {
        self.0
            .iter()
            .fold(0u128, |acc, r| acc.saturating_add(r.capacity()))
    }

    /// A stable, parseable identity of the set, used to key its reservation count and
    /// last-reserved address in the store — independent of the set's position in the
    /// config, so reordering or changing ranges never mixes counters.
    pub fn key(&self) -> String {
        self.0.iter().map(Range::key).collect::<Vec<_>>().join(",")
    }

    /// Parses [`RangeSet::key`].
    pub fn from_key(key: &str) -> Option<RangeSet> {
        key.split(',')
            .map(Range::parse_key)
            .collect::<Option<Vec<_>>>()
            .filter(|v| !v.is_empty())
            .map(RangeSet)
    }

    /// All allocatable addresses in round-robin order: starting right after `last`
    /// (if it lies in the set), through the following ranges, wrapping around, each
    /// address exactly once. Lazy, so huge IPv6 ranges cost nothing until probed.
    pub fn candidates(&self, last: Option<IpAddr>) -> impl Iterator<Item = IpAddr> + '_ {
        let n = self.0.len();
        let (first_range, first_off) = last
            .and_then(|ip| {
                self.0
                    .iter()
                    .position(|r| r.contains(ip))
                    .map(|i| (i, to_u128(ip) + 1 - to_u128(self.0[i].start)))
            })
            .unwrap_or((0, 0));
        // Segments: [first range from offset], following ranges whole, [first range
        // up to offset] — as (range index, from, to) in absolute numbers.
        let mut segments = Vec::with_capacity(n + 1);
        for k in 0..n {
            let i = (first_range + k) % n;
            let r = &self.0[i];
            let (s, e) = (to_u128(r.start), to_u128(r.end));
            if k == 0 {
                if s + first_off <= e {
                    segments.push((i, s + first_off, e));
                }
            } else {
                segments.push((i, s, e));
            }
        }
        if n > 0 && first_off > 0 {
            let r = &self.0[first_range];
            let s = to_u128(r.start);
            segments.push((first_range, s, s + first_off - 1));
        }
        segments.into_iter().flat_map(move |(i, from, to)| {
            let r = &self.0[i];
            (from..=to)
                .map(move |x| from_u128(x, r.start))
                .filter(move |ip| r.is_allocatable(*ip))
        })
    }

    /// The next free address after `last`. `reserved` is how many addresses of this
    /// set the store holds; it bounds the search: with `reserved` taken addresses at
    /// most `reserved + 1` probes are needed, so a full set costs O(1) and a stale count
    /// is detected instead of scanning a /64.
    pub fn next_free(
        &self,
        last: Option<IpAddr>,
        reserved: u128,
        mut is_taken: impl FnMut(IpAddr) -> bool,
    ) -> Next {
        if reserved >= self.capacity() {
            return Next::Exhausted;
        }
        let mut taken = 0u128;
        for ip in self.candidates(last) {
            if !is_taken(ip) {
                return Next::Found(ip);
            }
            taken += 1;
            if taken > reserved {
                return Next::CountStale;
            }
        }
        Next::CountStale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn range(subnet: &str, start: &str, end: &str, gw: &str) -> Range {
        Range {
            subnet: subnet.parse().expect("subnet"),
            start: ip(start),
            end: ip(end),
            gateway: ip(gw),
        }
    }

    fn v4_24() -> RangeSet {
        RangeSet(vec![range(
            "10.1.0.0/24",
            "10.1.0.1",
            "10.1.0.254",
            "10.1.0.1",
        )])
    }

    #[test]
    fn u128_round_trip() {
        for s in [
            "0.0.0.0",
            "10.1.2.3",
            "255.255.255.255",
            "::",
            "fd00::1",
            "ffff::ffff",
        ] {
            assert_eq!(from_u128(to_u128(ip(s)), ip(s)), ip(s));
        }
    }

    #[test]
    fn allocatable_excludes_gateway_network_broadcast() {
        let r = range("10.1.0.0/24", "10.1.0.0", "10.1.0.255", "10.1.0.1");
        assert!(!r.is_allocatable(ip("10.1.0.0")));
        assert!(!r.is_allocatable(ip("10.1.0.1")));
        assert!(!r.is_allocatable(ip("10.1.0.255")));
        assert!(r.is_allocatable(ip("10.1.0.2")));
        assert!(!r.is_allocatable(ip("10.1.1.2")));
        assert!(!r.is_allocatable(ip("fd00::2")));
        assert_eq!(r.capacity(), 253);
        assert_eq!(v4_24().capacity(), 253);
        let v6 = range("fd00::/120", "fd00::1", "fd00::ff", "fd00::1");
        assert_eq!(v6.capacity(), 254); // no broadcast in IPv6
        assert!(v6.is_allocatable(ip("fd00::ff")));
    }

    #[test]
    fn candidates_round_robin_and_wrap() {
        let set = RangeSet(vec![
            range("10.1.0.0/29", "10.1.0.2", "10.1.0.4", "10.1.0.1"),
            range("10.2.0.0/29", "10.2.0.1", "10.2.0.3", "10.2.0.1"),
        ]);
        let all: Vec<String> = set.candidates(None).map(|i| i.to_string()).collect();
        assert_eq!(
            all,
            ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.2.0.2", "10.2.0.3"]
        );
        let after: Vec<String> = set
            .candidates(Some(ip("10.1.0.3")))
            .map(|i| i.to_string())
            .collect();
        assert_eq!(
            after,
            ["10.1.0.4", "10.2.0.2", "10.2.0.3", "10.1.0.2", "10.1.0.3"]
        );
        let after_end: Vec<String> = set
            .candidates(Some(ip("10.2.0.3")))
            .map(|i| i.to_string())
            .collect();
        assert_eq!(
            after_end,
            ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.2.0.2", "10.2.0.3"]
        );
        // A last address outside the set starts from the beginning.
        assert_eq!(set.candidates(Some(ip("192.168.0.1"))).count(), 5);
        assert_eq!(set.capacity(), 5);
    }

    #[test]
    fn next_free_skips_taken_and_detects_full_and_stale() {
        let set = v4_24();
        let taken = [ip("10.1.0.2"), ip("10.1.0.3")];
        assert_eq!(
            set.next_free(None, 2, |i| taken.contains(&i)),
            Next::Found(ip("10.1.0.4"))
        );
        assert_eq!(
            set.next_free(Some(ip("10.1.0.10")), 2, |i| taken.contains(&i)),
            Next::Found(ip("10.1.0.11"))
        );
        assert_eq!(set.next_free(None, 253, |_| true), Next::Exhausted);
        // Count says 1 but 2 were taken before a free one: stale.
        assert_eq!(
            set.next_free(None, 1, |i| taken.contains(&i)),
            Next::CountStale
        );
        assert_eq!(set.next_free(None, 0, |_| true), Next::CountStale);
    }

    #[test]
    fn huge_v6_set_is_lazy() {
        let set = RangeSet(vec![range(
            "fd00::/64",
            "fd00::1",
            "fd00::ffff:ffff:ffff:ffff",
            "fd00::1",
        )]);
        assert_eq!(set.capacity(), (1u128 << 64) - 2);
        assert_eq!(
            set.next_free(None, 0, |_| false),
            Next::Found(ip("fd00::2"))
        );
    }

    #[test]
    fn key_round_trip() {
        let set = RangeSet(vec![
            range("10.1.0.0/24", "10.1.0.10", "10.1.0.20", "10.1.0.1"),
            range("10.3.0.0/16", "10.3.0.1", "10.3.255.254", "10.3.0.1"),
        ]);
        assert_eq!(RangeSet::from_key(&set.key()), Some(set.clone()));
        let v6 = RangeSet(vec![range("fd00::/64", "fd00::1", "fd00::ffff", "fd00::1")]);
        assert_eq!(RangeSet::from_key(&v6.key()), Some(v6));
        assert_eq!(RangeSet::from_key("garbage"), None);
        assert_eq!(RangeSet::from_key(""), None);
        assert_eq!(set.to_string(), "10.1.0.10-10.1.0.20,10.3.0.1-10.3.255.254");
    }
}
