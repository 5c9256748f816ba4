//! Node pod-subnet allocation on top of any `Store`.
//!
//! A node owns a block of the cluster CIDR (`subnetLen` for IPv4,
//! `subnetLenV6` for IPv6) while the `SubnetLease` object named after the
//! block (`leases/10.244.3.0-24`) exists with its name in `spec.node`. Claims
//! are made with `create_if_absent`, so two nodes racing for a block never
//! both get it: the loser moves on to the next free block. The object is bound
//! to a store lease, so the block returns to the pool when the node stops
//! renewing; a restarted node finds its block by its name and rebinds it.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

use crate::object::{
    self, subnet_lease_name, ClusterConfig, SubnetLease, SubnetLeaseSpec, TypedObject,
};
use crate::store::{Kind, Lease, ObjectKey, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SubnetError {
    #[error(
        "no free /{len} block left in cluster CIDR {cidr} for node {node} ({leased} blocks leased)"
    )]
    Exhausted {
        node: String,
        cidr: IpNetwork,
        len: u8,
        leased: usize,
    },
    #[error("cannot allocate subnets: ClusterConfig is invalid: {0}")]
    BadConfig(String),
    #[error("{doing} for node {node}: {source}")]
    Store {
        node: String,
        doing: String,
        #[source]
        source: StoreError,
    },
}

/// Number of `/len` blocks in `cidr` (saturating at `u128::MAX`).
pub fn block_count(cidr: &IpNetwork, len: u8) -> u128 {
    let shift = u32::from(len.saturating_sub(cidr.prefix()));
    1u128.checked_shl(shift).unwrap_or(u128::MAX)
}

fn addr_bits(ip: IpAddr) -> (u128, u32) {
    match ip {
        IpAddr::V4(a) => (u32::from(a) as u128, 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

/// The `i`-th `/len` block of `cidr`, `None` past the end or if `len` is
/// shorter than the CIDR's prefix or longer than the address.
pub fn nth_block(cidr: &IpNetwork, len: u8, i: u128) -> Option<IpNetwork> {
    let (base, bits) = addr_bits(cidr.network());
    if len < cidr.prefix() || u32::from(len) > bits || i >= block_count(cidr, len) {
        return None;
    }
    let size = 1u128.checked_shl(bits - u32::from(len)).unwrap_or(0);
    let start = base + i * size;
    let ip = if bits == 32 {
        IpAddr::V4(Ipv4Addr::from(start as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(start))
    };
    IpNetwork::new(ip, len).ok()
}

/// Every `/len` block of `cidr`, lowest first.
pub fn candidate_blocks(cidr: IpNetwork, len: u8) -> impl Iterator<Item = IpNetwork> {
    let n = if len < cidr.prefix() {
        0
    } else {
        block_count(&cidr, len)
    };
    (0..n).map_while(move |i| nth_block(&cidr, len, i))
}

/// The lowest block of `cidr` not in `taken`.
pub fn first_free(cidr: IpNetwork, len: u8, taken: &HashSet<IpNetwork>) -> Option<IpNetwork> {
    candidate_blocks(cidr, len).find(|b| !taken.contains(b))
}

fn lease_key(subnet: &IpNetwork) -> ObjectKey {
    ObjectKey::new(Kind::SubnetLease, None, &subnet_lease_name(subnet))
}

fn lease_value(node: &str, subnet: IpNetwork) -> serde_json::Value {
    let mut l = SubnetLease {
        api_version: object::PODNET_API_VERSION.to_string(),
        kind: "SubnetLease".to_string(),
        metadata: Default::default(),
        spec: SubnetLeaseSpec {
            node: node.to_string(),
            subnet,
        },
    };
    l.metadata.name = Some(subnet_lease_name(&subnet));
    serde_json::to_value(&l).expect("SubnetLease serializes")
}

/// All subnet leases in the store (malformed ones skipped with a warning).
pub async fn list_leases(store: &dyn Store) -> Result<Vec<SubnetLease>, StoreError> {
    let (objs, _) = store.list(Kind::SubnetLease).await?;
    let mut out = Vec::new();
    for o in objs {
        match o.decode() {
            Ok(TypedObject::SubnetLease(l)) => out.push(l),
            Ok(_) => {}
            Err(e) => tracing::warn!(key = %o.key, error = %e, "skipping malformed subnet lease"),
        }
    }
    Ok(out)
}

/// Claim (or re-claim after a restart) one block per cluster CIDR for
/// `node`, bound to `lease`; returns the blocks, IPv4 first.
pub async fn claim_subnets(
    store: &dyn Store,
    node: &str,
    config: &ClusterConfig,
    lease: &dyn Lease,
) -> Result<Vec<IpNetwork>, SubnetError> {
    config.validate().map_err(SubnetError::BadConfig)?;
    let st = |doing: &str| {
        let doing = doing.to_string();
        let node = node.to_string();
        move |source| SubnetError::Store {
            node,
            doing,
            source,
        }
    };
    let mut out = Vec::new();
    let mut cidrs: Vec<IpNetwork> = config.spec.cluster_cidrs.clone();
    cidrs.sort_by_key(|c| c.is_ipv6());
    for cidr in cidrs {
        let len = config.subnet_len_for(&cidr);
        let leases = list_leases(store)
            .await
            .map_err(st("listing subnet leases"))?;
        let mut taken = HashSet::new();
        let mut mine = None;
        for l in &leases {
            let s = l.spec.subnet;
            if s.is_ipv4() != cidr.is_ipv4() {
                continue;
            }
            let fits = s.prefix() == len && cidr.contains(s.network()) && s.ip() == s.network();
            if l.spec.node == node {
                if fits && mine.is_none() {
                    mine = Some(s);
                    continue;
                }
                // A second or stale claim of ours (config changed): give it back.
                tracing::info!(node, subnet = %s, "releasing stale subnet lease");
                store
                    .delete(&lease_key(&s))
                    .await
                    .map_err(st("releasing a stale subnet lease"))?;
                continue;
            }
            taken.insert(s);
        }
        if let Some(s) = mine {
            // Rebind to the new lease: the old one belongs to our previous
            // run and would expire. Between delete and create another node
            // could take the block; then we simply allocate a new one.
            let key = lease_key(&s);
            store
                .delete(&key)
                .await
                .map_err(st("rebinding the subnet lease"))?;
            if store
                .create_if_absent(&key, &lease_value(node, s), Some(lease))
                .await
                .map_err(st("rebinding the subnet lease"))?
                .is_some()
            {
                tracing::info!(node, subnet = %s, "kept subnet from the previous run");
                out.push(s);
                continue;
            }
            taken.insert(s);
        }
        let mut got = None;
        for b in candidate_blocks(cidr, len) {
            if taken.contains(&b) {
                continue;
            }
            let created = store
                .create_if_absent(&lease_key(&b), &lease_value(node, b), Some(lease))
                .await
                .map_err(st("claiming a subnet"))?;
            if created.is_some() {
                got = Some(b);
                break;
            }
            // Lost a race for this block; try the next.
            taken.insert(b);
        }
        match got {
            Some(b) => {
                tracing::info!(node, subnet = %b, "claimed subnet");
                out.push(b);
            }
            None => {
                return Err(SubnetError::Exhausted {
                    node: node.to_string(),
                    cidr,
                    len,
                    leased: taken.len(),
                })
            }
        }
    }
    Ok(out)
}

/// Give back every block `node` holds (the node was removed); returns them.
pub async fn release_subnets(store: &dyn Store, node: &str) -> Result<Vec<IpNetwork>, SubnetError> {
    let err = |doing: &str| {
        let (doing, node) = (doing.to_string(), node.to_string());
        move |source| SubnetError::Store {
            node,
            doing,
            source,
        }
    };
    let leases = list_leases(store)
        .await
        .map_err(err("listing subnet leases"))?;
    let mut out = Vec::new();
    for l in leases.into_iter().filter(|l| l.spec.node == node) {
        store
            .delete(&lease_key(&l.spec.subnet))
            .await
            .map_err(err("releasing a subnet lease"))?;
        out.push(l.spec.subnet);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn v4_blocks_in_order() {
        let c = net("10.244.0.0/16");
        assert_eq!(block_count(&c, 24), 256);
        let v: Vec<_> = candidate_blocks(c, 24).take(3).collect();
        assert_eq!(
            v,
            vec![
                net("10.244.0.0/24"),
                net("10.244.1.0/24"),
                net("10.244.2.0/24")
            ]
        );
        assert_eq!(candidate_blocks(c, 24).last(), Some(net("10.244.255.0/24")));
        assert_eq!(candidate_blocks(c, 24).count(), 256);
        assert_eq!(nth_block(&c, 24, 256), None);
        assert_eq!(
            candidate_blocks(net("10.0.0.0/8"), 26).nth(5),
            Some(net("10.0.1.64/26"))
        );
    }

    #[test]
    fn whole_cidr_is_one_block_and_shorter_len_none() {
        let c = net("192.168.5.0/24");
        assert_eq!(candidate_blocks(c, 24).collect::<Vec<_>>(), vec![c]);
        assert_eq!(candidate_blocks(c, 23).count(), 0);
        assert_eq!(nth_block(&c, 33, 0), None);
    }

    #[test]
    fn v6_blocks() {
        let c = net("fd00:10:244::/48");
        assert_eq!(block_count(&c, 64), 65536);
        let v: Vec<_> = candidate_blocks(c, 64).take(2).collect();
        assert_eq!(v, vec![net("fd00:10:244::/64"), net("fd00:10:244:1::/64")]);
        assert_eq!(nth_block(&c, 64, 65535), Some(net("fd00:10:244:ffff::/64")));
        assert_eq!(block_count(&net("::/0"), 128), u128::MAX);
    }

    #[test]
    fn first_free_skips_taken() {
        let c = net("10.1.0.0/22");
        let taken: HashSet<_> = [net("10.1.0.0/24"), net("10.1.2.0/24")].into();
        assert_eq!(first_free(c, 24, &taken), Some(net("10.1.1.0/24")));
        let all: HashSet<_> = candidate_blocks(c, 24).collect();
        assert_eq!(first_free(c, 24, &all), None);
    }

    #[test]
    fn lease_value_decodes() {
        let v = lease_value("node-a", net("10.244.7.0/24"));
        let TypedObject::SubnetLease(l) = object::decode(Kind::SubnetLease, &v).unwrap() else {
            panic!("not a lease")
        };
        assert_eq!(l.spec.node, "node-a");
        assert_eq!(l.metadata.name.as_deref(), Some("10.244.7.0-24"));
    }
}
