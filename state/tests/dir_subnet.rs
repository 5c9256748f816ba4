//! Subnet allocation over the dir store: racing claimers, restarts, release,
//! exhaustion, and blocks returning when a node's lease expires.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ipnetwork::IpNetwork;
use podnet_state::dir::{DirOptions, DirStore};
use podnet_state::object::ClusterConfig;
use podnet_state::subnet::{claim_subnets, list_leases, release_subnets, SubnetError};
use podnet_state::Store;

fn config(v4: &str, len: u8, v6: Option<&str>) -> ClusterConfig {
    let mut cidrs = vec![v4.to_string()];
    cidrs.extend(v6.map(str::to_string));
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "default"},
        "spec": {"clusterCIDRs": cidrs, "subnetLen": len, "subnetLenV6": 64}
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_racing_nodes_get_distinct_blocks() {
    let d = tempfile::tempdir().unwrap();
    let cfg = Arc::new(config("10.244.0.0/16", 24, Some("fd00:10:244::/48")));
    let mut tasks = Vec::new();
    for n in 0..50 {
        let root = d.path().to_path_buf();
        let cfg = cfg.clone();
        // Each claimer has its own store handle, as separate node agents would.
        tasks.push(tokio::spawn(async move {
            let s = DirStore::open(&root).unwrap();
            let lease = s.grant_lease(Duration::from_secs(60)).await.unwrap();
            let node = format!("node-{n}");
            let got = claim_subnets(&s, &node, &cfg, &*lease).await.unwrap();
            (node, got)
        }));
    }
    let mut v4 = HashSet::new();
    let mut v6 = HashSet::new();
    for t in tasks {
        let (node, got) = t.await.unwrap();
        assert_eq!(got.len(), 2, "{node}: {got:?}");
        assert!(got[0].is_ipv4() && got[0].prefix() == 24, "{got:?}");
        assert!(got[1].is_ipv6() && got[1].prefix() == 64, "{got:?}");
        assert!(v4.insert(got[0]), "{} given twice", got[0]);
        assert!(v6.insert(got[1]), "{} given twice", got[1]);
    }
    // The lowest 50 blocks, and the store agrees with what claimers were told.
    let want: HashSet<IpNetwork> = (0..50)
        .map(|i| format!("10.244.{i}.0/24").parse().unwrap())
        .collect();
    assert_eq!(v4, want);
    let s = DirStore::open(d.path()).unwrap();
    assert_eq!(list_leases(&s).await.unwrap().len(), 100);
}

#[tokio::test]
async fn restart_keeps_the_block_and_release_frees_it() {
    let d = tempfile::tempdir().unwrap();
    let s = DirStore::open(d.path()).unwrap();
    let cfg = config("10.10.0.0/22", 24, None);
    let l1 = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    let a = claim_subnets(&s, "a", &cfg, &*l1).await.unwrap();
    let lb = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    let b = claim_subnets(&s, "b", &cfg, &*lb).await.unwrap();
    assert_eq!(a, ["10.10.0.0/24".parse::<IpNetwork>().unwrap()]);
    assert_eq!(b, ["10.10.1.0/24".parse::<IpNetwork>().unwrap()]);
    // Node a restarts with a new store lease: same block, rebound to the new
    // lease (revoking the old one no longer removes it).
    let l2 = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    assert_eq!(claim_subnets(&s, "a", &cfg, &*l2).await.unwrap(), a);
    l1.revoke().await.unwrap();
    assert_eq!(list_leases(&s).await.unwrap().len(), 2);
    l2.revoke().await.unwrap();
    assert_eq!(list_leases(&s).await.unwrap().len(), 1);
    // Released when the node is removed; the block is free for others.
    assert_eq!(release_subnets(&s, "b").await.unwrap(), b);
    assert!(list_leases(&s).await.unwrap().is_empty());
    let lc = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    assert_eq!(claim_subnets(&s, "c", &cfg, &*lc).await.unwrap(), a);
}

#[tokio::test]
async fn exhausted_cluster_cidr_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let s = DirStore::open(d.path()).unwrap();
    let cfg = config("10.20.0.0/23", 24, None);
    let lease = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    claim_subnets(&s, "a", &cfg, &*lease).await.unwrap();
    claim_subnets(&s, "b", &cfg, &*lease).await.unwrap();
    let e = claim_subnets(&s, "c", &cfg, &*lease).await.unwrap_err();
    assert!(matches!(e, SubnetError::Exhausted { leased: 2, .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "no free /24 block left in cluster CIDR 10.20.0.0/23 for node c (2 blocks leased)"
    );
    let bad = config("10.20.0.0/23", 20, None);
    assert!(matches!(
        claim_subnets(&s, "d", &bad, &*lease).await.unwrap_err(),
        SubnetError::BadConfig(_)
    ));
}

#[tokio::test]
async fn a_dead_nodes_block_returns_when_its_lease_expires() {
    let d = tempfile::tempdir().unwrap();
    let opts = DirOptions {
        lease_check_interval: Duration::from_millis(100),
        ..DirOptions::default()
    };
    let s = DirStore::open_with(d.path(), opts).unwrap();
    let cfg = config("10.30.0.0/24", 24, None);
    let dead = s.grant_lease(Duration::from_millis(300)).await.unwrap();
    claim_subnets(&s, "dead", &cfg, &*dead).await.unwrap();
    let live = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    assert!(claim_subnets(&s, "new", &cfg, &*live).await.is_err());
    let t0 = std::time::Instant::now();
    loop {
        match claim_subnets(&s, "new", &cfg, &*live).await {
            Ok(got) => {
                assert_eq!(got, ["10.30.0.0/24".parse::<IpNetwork>().unwrap()]);
                break;
            }
            Err(SubnetError::Exhausted { .. }) if t0.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
}
