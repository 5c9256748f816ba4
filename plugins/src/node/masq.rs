//! Masquerade of pod traffic that leaves the cluster networks, as flannel's
//! `ipMasq`: tables `ip podnet-node` / `ip6 podnet-node` with one srcnat
//! chain. Pod↔pod traffic (source and destination both in a cluster CIDR)
//! and multicast are returned unchanged, so receivers see pod addresses.
//! Installed in one nf_tables transaction that replaces the tables, so a
//! restart never leaves a moment without rules, and re-running is harmless.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use podnet_nft::{
    expr::nat_flags, priority, Batch, Chain, ChainType, Family, Field, HookPoint, Nft, Policy,
    Rule, Table,
};

pub const TABLE: &str = "podnet-node";
pub const CHAIN: &str = "postrouting";

/// The transaction for `cluster_cidrs` (pure; `install` sends it).
pub fn batch(cluster_cidrs: &[IpNetwork]) -> Result<Batch, podnet_nft::Error> {
    let mut b = Batch::new();
    for (family, v4) in [(Family::Ip, true), (Family::Ip6, false)] {
        // Replace, not patch: destroy (ignores absence) + create in one transaction.
        b.destroy_table(family, TABLE);
        let nets: Vec<&IpNetwork> = cluster_cidrs.iter().filter(|c| c.is_ipv4() == v4).collect();
        if nets.is_empty() {
            continue;
        }
        b.add_table(
            &Table::new(family, TABLE)
                .comment("podnet-node: masquerade pod traffic leaving the cluster"),
        );
        b.add_chain(&Chain::new(family, TABLE, CHAIN).base(
            ChainType::Nat,
            HookPoint::Postrouting,
            priority::SRCNAT,
            Policy::Accept,
        ))?;
        let (saddr, daddr) = if v4 {
            (Field::IpSaddr, Field::IpDaddr)
        } else {
            (Field::Ip6Saddr, Field::Ip6Daddr)
        };
        let multicast: (IpAddr, u8) = if v4 {
            ("224.0.0.0".parse().expect("literal"), 4)
        } else {
            ("ff00::".parse().expect("literal"), 8)
        };
        for src in &nets {
            for dst in &nets {
                b.add_rule(
                    &Rule::new(family, TABLE, CHAIN)
                        .in_prefix(saddr, src.network(), src.prefix())
                        .in_prefix(daddr, dst.network(), dst.prefix())
                        .comment("pod to pod: no NAT")
                        .accept(),
                )?;
            }
            b.add_rule(
                &Rule::new(family, TABLE, CHAIN)
                    .in_prefix(saddr, src.network(), src.prefix())
                    .in_prefix(daddr, multicast.0, multicast.1)
                    .comment("multicast: no NAT")
                    .accept(),
            )?;
            b.add_rule(
                &Rule::new(family, TABLE, CHAIN)
                    .in_prefix(saddr, src.network(), src.prefix())
                    .comment("pod leaving the cluster: masquerade")
                    .masquerade(nat_flags::FULLY_RANDOM),
            )?;
        }
    }
    Ok(b)
}

/// Installs (replaces) the masquerade tables in the current network namespace.
pub async fn install(cluster_cidrs: &[IpNetwork]) -> Result<(), String> {
    let b = batch(cluster_cidrs).map_err(|e| format!("encoding the masquerade rules: {e}"))?;
    // The nf_tables socket is blocking; keep it off the async worker.
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut nft = Nft::new().map_err(|e| format!("opening nftables: {e}"))?;
        nft.apply(&b)
            .map_err(|e| format!("applying the {TABLE} tables: {e}"))
    })
    .await
    .map_err(|e| format!("masquerade task: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn described(b: &Batch) -> Vec<String> {
        (0..b.len())
            .map(|i| b.describe(i).unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn dual_stack_batch_replaces_both_tables_with_exempt_then_masquerade_rules() {
        let b = batch(&[
            "10.244.0.0/16".parse().unwrap(),
            "fd00:10:244::/56".parse().unwrap(),
        ])
        .unwrap();
        let d = described(&b);
        // Per family: destroy, table, chain, pod→pod accept, multicast accept, masquerade.
        assert_eq!(d.len(), 12, "{d:?}");
        assert!(d[0].contains("destroy") && d[0].contains("ip "), "{d:?}");
        assert!(d[6].contains("destroy") && d[6].contains("ip6"), "{d:?}");
    }

    #[test]
    fn single_stack_batch_only_removes_the_other_family() {
        let d = described(&batch(&["10.244.0.0/16".parse().unwrap()]).unwrap());
        assert_eq!(d.len(), 7, "{d:?}");
        assert!(d[6].contains("destroy") && d[6].contains("ip6"), "{d:?}");
    }
}
