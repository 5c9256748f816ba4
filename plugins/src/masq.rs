//! nftables state of the bridge plugin: masquerade (`ipMasq`) and MAC spoof checks
//! (`macspoofchk`), keyed so DEL and GC find their entries with no local state.
//!
//! Layout (one table per family, shared by every network on the node):
//!
//! ```text
//! table ip podnet-cni {                       (ip6: same, with ff00::/8)
//!   map masq { type ipv4_addr : verdict; }    pod IP -> jump masq-<subnet>,
//!                                             element comment "<net>/<containerID>/<ifname>"
//!   chain masq-10.22.0.0-16 {                 one per pod subnet, same rules every time
//!     ip daddr 10.22.0.0/16 return
//!     ip daddr 224.0.0.0/4 return
//!     masquerade
//!   }
//!   chain postrouting { type nat hook postrouting priority srcnat; ip saddr vmap @masq }
//! }
//! table bridge podnet-cni {
//!   set ports   { type ifname; }              host veths under the check
//!   set allowed { type ifname . ether_addr; } (host veth, pod MAC)
//!   chain macspoof { type filter hook prerouting priority -300;
//!                    iifname @ports iifname . ether saddr != @allowed drop }
//! }
//! ```
//!
//! Like the reference's per-container chains, traffic from a pod to its own subnet (and
//! multicast) is not masqueraded, whatever other networks exist. Every ADD is one
//! transaction: the pod's elements, plus whatever of the fixed layout a rule listing
//! shows missing (declared with a chain flush + the same rules: idempotent, and atomic
//! for concurrent ADDs). DEL and GC list the elements, pick them by comment and destroy
//! them in one transaction. All of a call goes through one [`Session`].

use std::net::IpAddr;

use std::collections::{HashMap, HashSet};

use podnet_nft::{
    Batch, Chain, ChainType, DataType, Family, Field, HookPoint, Nft, Policy, Rule, RuleInfo, Set,
    SetElem, SetRef, Table, Val, Verdict,
};

use crate::cni::ipnet::IpNet;

/// Table name in the `ip`, `ip6` and `bridge` families.
pub const TABLE: &str = "podnet-cni";
/// Pod IP -> per-subnet masquerade chain.
pub const MASQ_MAP: &str = "masq";
const POSTROUTING: &str = "postrouting";
const MACSPOOF: &str = "macspoof";
/// Host veths under the spoof check.
pub const SPOOF_PORTS: &str = "ports";
/// (host veth, pod MAC) pairs allowed through.
pub const SPOOF_ALLOWED: &str = "allowed";
/// nft's `srcnat` priority.
/// The reference spoof checker's priority: before anything else on the bridge.
const BRIDGE_FIRST: i32 = podnet_nft::priority::RAW;
/// Comments beyond this are replaced by a stable hash (nft's limit is 128 bytes).
const MAX_COMMENT: usize = 120;

/// Errors of the nftables side: what was being done, and why.
#[derive(Debug, thiserror::Error)]
pub enum MasqError {
    #[error("{what}: {source}")]
    Nft {
        what: String,
        #[source]
        source: podnet_nft::Error,
    },
}

fn nft(what: impl Into<String>) -> impl FnOnce(podnet_nft::Error) -> MasqError {
    let what = what.into();
    move |source| MasqError::Nft { what, source }
}

/// Who an entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
}

impl Owner<'_> {
    /// The element comment: `<network>/<containerID>/<ifname>`, or when that is too
    /// long for nft, `<network>/#<hash of containerID/ifname>` (network names are
    /// short; GC needs the network readable).
    pub fn comment(&self) -> String {
        let full = format!("{}/{}/{}", self.network, self.container_id, self.ifname);
        if full.len() <= MAX_COMMENT {
            return full;
        }
        let key = format!("{}/{}", self.container_id, self.ifname);
        let net: String = self.network.chars().take(MAX_COMMENT - 18).collect();
        format!("{net}/#{:016x}", fnv1a(key.as_bytes()))
    }
}

/// FNV-1a 64: stable across builds and versions (unlike std's hasher).
fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for x in b {
        h ^= u64::from(*x);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Whether a comment belongs to `network` (for GC).
fn comment_network(comment: &str) -> Option<&str> {
    comment.split_once('/').map(|(n, _)| n)
}

/// Name of the masquerade chain of a pod subnet: `masq-10.22.0.0-16`.
pub fn subnet_chain(net: &IpNet) -> String {
    format!("masq-{}-{}", net.network(), net.prefix_len())
}

fn family_of(ip: &IpAddr) -> Family {
    if ip.is_ipv4() {
        Family::Ip
    } else {
        Family::Ip6
    }
}

/// Declares the table, map, postrouting chain and its rule of one IP family.
fn declare_masq_family(b: &mut Batch, fam: Family) -> Result<SetRef, MasqError> {
    let (key, saddr) = match fam {
        Family::Ip6 => (DataType::Ipv6Addr, Field::Ip6Saddr),
        _ => (DataType::Ipv4Addr, Field::IpSaddr),
    };
    b.add_table(&Table::new(fam, TABLE));
    let map = b
        .add_set(&Set::new(fam, TABLE, MASQ_MAP, key).map(DataType::Verdict))
        .map_err(nft("declaring the masquerade map"))?;
    b.add_chain(&Chain::new(fam, TABLE, POSTROUTING).base(
        ChainType::Nat,
        HookPoint::Postrouting,
        podnet_nft::priority::SRCNAT,
        Policy::Accept,
    ))
    .map_err(nft("declaring the postrouting chain"))?;
    b.flush_chain(fam, TABLE, POSTROUTING);
    let rule = Rule::new(fam, TABLE, POSTROUTING)
        .vmap(&[saddr], map.clone())
        .map_err(nft("building the postrouting rule"))?;
    b.add_rule(&rule)
        .map_err(nft("adding the postrouting rule"))?;
    Ok(map)
}

/// Declares the masquerade chain of `subnet` with its fixed rules.
fn declare_subnet_chain(b: &mut Batch, subnet: &IpNet) -> Result<String, MasqError> {
    let fam = family_of(&subnet.addr());
    let name = subnet_chain(subnet);
    let (daddr, mcast, mcast_len): (Field, IpAddr, u8) = match fam {
        Family::Ip6 => (Field::Ip6Daddr, "ff00::".parse().expect("literal"), 8),
        _ => (Field::IpDaddr, "224.0.0.0".parse().expect("literal"), 4),
    };
    b.add_chain(&Chain::new(fam, TABLE, &name))
        .map_err(nft(format!("declaring chain {name}")))?;
    b.flush_chain(fam, TABLE, &name);
    let rules = [
        Rule::new(fam, TABLE, &name)
            .in_prefix(daddr, subnet.network(), subnet.prefix_len())
            .verdict(Verdict::Return),
        Rule::new(fam, TABLE, &name)
            .in_prefix(daddr, mcast, mcast_len)
            .verdict(Verdict::Return),
        Rule::new(fam, TABLE, &name).masquerade(0),
    ];
    for r in &rules {
        b.add_rule(r)
            .map_err(nft(format!("adding a rule to {name}")))?;
    }
    Ok(name)
}

/// Declares the bridge-family spoof check.
fn declare_macspoof(b: &mut Batch) -> Result<(), MasqError> {
    let fam = Family::Bridge;
    b.add_table(&Table::new(fam, TABLE));
    let ports = b
        .add_set(&Set::new(fam, TABLE, SPOOF_PORTS, DataType::IfName))
        .map_err(nft("declaring the spoof-check port set"))?;
    let allowed = b
        .add_set(&Set::new(
            fam,
            TABLE,
            SPOOF_ALLOWED,
            podnet_nft::TypeConcat::new(&[DataType::IfName, DataType::EtherAddr]),
        ))
        .map_err(nft("declaring the spoof-check allowed set"))?;
    b.add_chain(&Chain::new(fam, TABLE, MACSPOOF).base(
        ChainType::Filter,
        HookPoint::Prerouting,
        BRIDGE_FIRST,
        Policy::Accept,
    ))
    .map_err(nft("declaring the macspoof chain"))?;
    b.flush_chain(fam, TABLE, MACSPOOF);
    let rule = Rule::new(fam, TABLE, MACSPOOF)
        .lookup(&[Field::IifName], ports, false)
        .and_then(|r| r.lookup(&[Field::IifName, Field::EtherSaddr], allowed, true))
        .map_err(nft("building the macspoof rule"))?
        .verdict(Verdict::Drop);
    b.add_rule(&rule).map_err(nft("adding the macspoof rule"))
}

/// Which parts of the fixed layout the kernel already has, read from one rule listing
/// per table: a chain counts as declared when it holds the number of rules we put in
/// it. Declaring only what is missing keeps the usual ADD free of rule flushes, whose
/// deferred frees would otherwise make the socket's close wait a grace period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Present {
    /// (family, chain) pairs found complete.
    chains: HashSet<(Family, String)>,
}

impl Present {
    /// Records the rules listed for one table, as the (family, chain) of each rule.
    pub fn add_rules<'a>(&mut self, rules: impl IntoIterator<Item = (Family, &'a str)>) {
        let mut counts: HashMap<(Family, &str), usize> = HashMap::new();
        for r in rules {
            *counts.entry(r).or_default() += 1;
        }
        for ((fam, chain), n) in counts {
            let want = if chain == POSTROUTING || chain == MACSPOOF {
                1
            } else if chain.starts_with("masq-") {
                3
            } else {
                continue;
            };
            if n == want {
                self.chains.insert((fam, chain.to_string()));
            }
        }
    }

    fn has(&self, fam: Family, chain: &str) -> bool {
        self.chains.contains(&(fam, chain.to_string()))
    }
}

/// The ADD transaction: what is missing of the layout (see [`Present`]) plus this pod's
/// elements (`ips` = pod addresses with their subnet prefix; `spoof` = host veth and pod
/// MAC).
pub fn add_batch(
    owner: &Owner<'_>,
    ips: &[IpNet],
    spoof: Option<(&str, [u8; 6])>,
    present: &Present,
) -> Result<Batch, MasqError> {
    let mut b = Batch::new();
    let comment = owner.comment();
    for fam in [Family::Ip, Family::Ip6] {
        let mine: Vec<&IpNet> = ips.iter().filter(|n| family_of(&n.addr()) == fam).collect();
        if mine.is_empty() {
            continue;
        }
        if !present.has(fam, POSTROUTING) {
            declare_masq_family(&mut b, fam)?;
        }
        let mut elems = Vec::new();
        for ip in mine {
            let subnet = ip.trunc();
            let chain = subnet_chain(&subnet);
            if !present.has(fam, &chain) {
                declare_subnet_chain(&mut b, &subnet)?;
            }
            elems.push(
                SetElem::new(&[Val::ip(ip.addr())])
                    .verdict(Verdict::Jump(chain))
                    .comment(&comment),
            );
        }
        // An address reused after a missed DEL: replace its old owner's element
        // (destroying an absent element is no error and costs nothing).
        b.destroy_elements(fam, TABLE, MASQ_MAP, &elems)
            .map_err(nft("replacing stale masquerade elements"))?;
        b.add_elements(fam, TABLE, MASQ_MAP, &elems)
            .map_err(nft("adding masquerade elements"))?;
    }
    if let Some((port, mac)) = spoof {
        if !present.has(Family::Bridge, MACSPOOF) {
            declare_macspoof(&mut b)?;
        }
        b.add_elements(
            Family::Bridge,
            TABLE,
            SPOOF_PORTS,
            &[SetElem::new(&[Val::IfName(port.to_string())]).comment(&comment)],
        )
        .map_err(nft("adding the spoof-check port"))?;
        b.add_elements(
            Family::Bridge,
            TABLE,
            SPOOF_ALLOWED,
            &[SetElem::new(&[Val::IfName(port.to_string()), Val::Ether(mac)]).comment(&comment)],
        )
        .map_err(nft("adding the spoof-check allowed pair"))?;
    }
    Ok(b)
}

/// The sets whose elements carry owner comments: (family, set).
const OWNED_SETS: [(Family, &str); 4] = [
    (Family::Ip, MASQ_MAP),
    (Family::Ip6, MASQ_MAP),
    (Family::Bridge, SPOOF_PORTS),
    (Family::Bridge, SPOOF_ALLOWED),
];

/// A listed element: where it is, its key, its owner comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub family: Family,
    pub set: &'static str,
    pub key: Vec<u8>,
    pub comment: Option<String>,
}

/// A transaction destroying every listed element `doomed` picks (None when nothing).
pub fn removal_batch(
    listed: &[Listed],
    doomed: impl Fn(&str) -> bool,
) -> Result<Option<Batch>, MasqError> {
    let mut b = Batch::new();
    for (fam, set) in OWNED_SETS {
        let keys: Vec<SetElem> = listed
            .iter()
            .filter(|l| l.family == fam && l.set == set)
            .filter(|l| l.comment.as_deref().is_some_and(&doomed))
            .map(|l| SetElem::raw(l.key.clone()))
            .collect();
        if !keys.is_empty() {
            b.destroy_elements(fam, TABLE, set, &keys)
                .map_err(nft(format!("removing elements of {fam} {TABLE} {set}")))?;
        }
    }
    Ok(if b.is_empty() { None } else { Some(b) })
}

/// Whether `comment` is GC-able: of `network` and not one of `keep` (containerID, ifname).
pub fn is_stale(comment: &str, network: &str, keep: &[(String, String)]) -> bool {
    if comment_network(comment) != Some(network) {
        return false;
    }
    !keep.iter().any(|(c, i)| {
        Owner {
            network,
            container_id: c,
            ifname: i,
        }
        .comment()
            == comment
    })
}

/// One netfilter socket for a whole CNI call.
///
/// Closing a netfilter socket makes the kernel finish the deferred frees of pending
/// transactions (an RCU grace period, ~10 ms here) before `close` returns. A DEL that
/// removes elements therefore keeps its session until its other work (the veth
/// deletion, the IPAM call) is done, and the wait has passed by then.
pub struct Session {
    nft: Nft,
}

impl Session {
    /// Opens the socket in the calling thread's network namespace.
    pub fn open() -> Result<Session, MasqError> {
        Ok(Session {
            nft: Nft::new().map_err(nft("opening nfnetlink"))?,
        })
    }

    fn rules(&mut self, fam: Family) -> Result<Vec<RuleInfo>, MasqError> {
        match self.nft.list_rules(fam, TABLE, None) {
            Ok(r) => Ok(r),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(Vec::new()),
            Err(e) => Err(nft(format!("listing rules of {fam} {TABLE}"))(e)),
        }
    }

    /// Adds the pod's masquerade and/or spoof-check entries in one transaction
    /// (declaring whatever of the layout is missing in the same transaction).
    pub fn add(
        &mut self,
        owner: &Owner<'_>,
        ips: &[IpNet],
        spoof: Option<(&str, [u8; 6])>,
    ) -> Result<(), MasqError> {
        let mut present = Present::default();
        let mut fams: Vec<Family> = Vec::new();
        if ips.iter().any(|n| n.addr().is_ipv4()) {
            fams.push(Family::Ip);
        }
        if ips.iter().any(|n| n.addr().is_ipv6()) {
            fams.push(Family::Ip6);
        }
        if spoof.is_some() {
            fams.push(Family::Bridge);
        }
        for fam in fams {
            let rules = self.rules(fam)?;
            present.add_rules(rules.iter().map(|r| (r.family, r.chain.as_str())));
        }
        let b = add_batch(owner, ips, spoof, &present)?;
        if b.is_empty() {
            return Ok(());
        }
        self.nft.apply(&b).map_err(nft(format!(
            "adding nftables entries of {}",
            owner.comment()
        )))
    }

    /// Removes every entry of `owner` (none is fine).
    pub fn del(&mut self, owner: &Owner<'_>) -> Result<(), MasqError> {
        let mine = owner.comment();
        let listed = self.list()?;
        match removal_batch(&listed, |c| c == mine)? {
            Some(b) => self
                .nft
                .apply(&b)
                .map_err(nft(format!("removing nftables entries of {mine}"))),
            None => Ok(()),
        }
    }

    /// Removes every entry of `network` whose attachment is not in `keep`.
    pub fn gc(&mut self, network: &str, keep: &[(String, String)]) -> Result<(), MasqError> {
        let listed = self.list()?;
        match removal_batch(&listed, |c| is_stale(c, network, keep))? {
            Some(b) => self.nft.apply(&b).map_err(nft(format!(
                "garbage-collecting nftables entries of {network}"
            ))),
            None => Ok(()),
        }
    }

    /// Every owned element on this node (sets that do not exist yet are empty).
    pub fn list(&mut self) -> Result<Vec<Listed>, MasqError> {
        let mut out = Vec::new();
        for (fam, set) in OWNED_SETS {
            let elems = match self.nft.list_elements(fam, TABLE, set) {
                Ok(v) => v,
                // No table or set yet: nothing was ever added.
                Err(e) if e.errno() == Some(libc::ENOENT) => Vec::new(),
                Err(e) => return Err(nft(format!("listing {fam} {TABLE} {set}"))(e)),
            };
            for elem in elems {
                out.push(Listed {
                    family: fam,
                    set,
                    comment: elem.comment(),
                    key: elem.key,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner<'a>(c: &'a str) -> Owner<'a> {
        Owner {
            network: "net1",
            container_id: c,
            ifname: "eth0",
        }
    }

    #[test]
    fn comments_and_gc_selection() {
        assert_eq!(owner("abc").comment(), "net1/abc/eth0");
        let long = "x".repeat(200);
        let c = owner(&long).comment();
        assert!(c.len() <= MAX_COMMENT && c.starts_with("net1/#"), "{c}");
        assert_eq!(c, owner(&long).comment(), "hash is stable");
        let keep = vec![
            ("abc".to_string(), "eth0".to_string()),
            (long.clone(), "eth0".into()),
        ];
        assert!(!is_stale("net1/abc/eth0", "net1", &keep));
        assert!(!is_stale(&c, "net1", &keep));
        assert!(is_stale("net1/gone/eth0", "net1", &keep));
        assert!(
            !is_stale("net2/gone/eth0", "net1", &keep),
            "other networks are not ours"
        );
    }

    #[test]
    fn subnet_chain_names() {
        assert_eq!(
            subnet_chain(&"10.22.0.0/16".parse().unwrap()),
            "masq-10.22.0.0-16"
        );
        assert_eq!(
            subnet_chain(&"fd00:1::/64".parse().unwrap()),
            "masq-fd00:1::-64"
        );
    }

    #[test]
    fn add_batch_declares_only_what_is_needed() {
        let ips: Vec<IpNet> = vec!["10.22.0.5/16".parse().unwrap()];
        let ops = |b: &Batch| -> Vec<String> {
            (0..b.len())
                .filter_map(|i| b.describe(i).map(str::to_string))
                .collect()
        };
        let none = Present::default();
        let all = ops(&add_batch(&owner("abc"), &ips, None, &none).unwrap());
        assert!(
            all.iter().any(|o| o.contains("masq-10.22.0.0-16")),
            "{all:?}"
        );
        assert!(all.iter().any(|o| o.contains("flush")), "{all:?}");
        assert!(!all.iter().any(|o| o.contains("bridge")), "{all:?}");
        assert!(!all.iter().any(|o| o.contains("ip6")), "{all:?}");

        // With the layout in place only elements are sent: no flush, no rules.
        let rule = |chain: &'static str| (Family::Ip, chain);
        let sub = "masq-10.22.0.0-16";
        let mut present = Present::default();
        present.add_rules([rule(POSTROUTING), rule(sub), rule(sub), rule(sub)]);
        let only = ops(&add_batch(&owner("abc"), &ips, None, &present).unwrap());
        assert!(only.iter().all(|o| o.contains("element")), "{only:?}");
        // A chain missing a rule is declared again.
        let mut partial = Present::default();
        partial.add_rules([rule(POSTROUTING), rule(sub)]);
        let again = ops(&add_batch(&owner("abc"), &ips, None, &partial).unwrap());
        assert!(again.iter().any(|o| o.contains("flush")), "{again:?}");

        let spoof = Some(("veth1", [2, 0, 0, 0, 0, 1]));
        let b = ops(&add_batch(&owner("abc"), &[], spoof, &none).unwrap());
        assert!(b.iter().any(|o| o.contains("macspoof")), "{b:?}");
        assert!(!b.iter().any(|o| o.contains("masq-")), "{b:?}");
    }

    #[test]
    fn removal_picks_by_comment() {
        let l = |fam, set, key: Vec<u8>, c: &str| Listed {
            family: fam,
            set,
            key,
            comment: Some(c.to_string()),
        };
        let listed = vec![
            l(Family::Ip, MASQ_MAP, vec![10, 22, 0, 5], "net1/a/eth0"),
            l(Family::Ip, MASQ_MAP, vec![10, 22, 0, 6], "net1/b/eth0"),
        ];
        assert!(removal_batch(&listed, |c| c == "net1/zzz/eth0")
            .unwrap()
            .is_none());
        let b = removal_batch(&listed, |c| c == "net1/a/eth0")
            .unwrap()
            .unwrap();
        assert_eq!(b.len(), 1);
    }
}
