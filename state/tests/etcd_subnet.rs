//! Subnet allocation over the etcd store, against a real etcd: many nodes
//! claiming pod subnets at the same time through compare-and-create txns.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ipnetwork::IpNetwork;
use netns_fixtures::etcd::EtcdServer;
use podnet_state::etcd::EtcdStore;
use podnet_state::object::ClusterConfig;
use podnet_state::subnet::{claim_subnets, list_leases, release_subnets};
use podnet_state::Store;
use serde_json::json;

const NODES: usize = 50;

fn config() -> ClusterConfig {
    serde_json::from_value(json!({
        "apiVersion": "podnet.dev/v1",
        "kind": "ClusterConfig",
        "metadata": {"name": "default"},
        "spec": {
            "clusterCIDRs": ["10.244.0.0/16", "fd00:10:244::/56"],
            "serviceCIDRs": ["10.96.0.0/12"],
            "subnetLen": 24,
            "subnetLenV6": 64
        }
    }))
    .expect("valid ClusterConfig")
}

/// node -> its leased subnets, as the store holds them.
async fn leases_by_node(store: &dyn Store) -> BTreeMap<String, BTreeSet<IpNetwork>> {
    let mut m: BTreeMap<String, BTreeSet<IpNetwork>> = BTreeMap::new();
    for l in list_leases(store).await.unwrap() {
        m.entry(l.spec.node.clone())
            .or_default()
            .insert(l.spec.subnet);
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_racing_nodes_get_distinct_subnets() {
    let etcd = EtcdServer::start().unwrap();
    let cfg = Arc::new(config());
    let mut tasks = Vec::new();
    for i in 0..NODES {
        let endpoint = etcd.endpoint();
        let cfg = cfg.clone();
        // One client per node, as on separate machines.
        tasks.push(tokio::spawn(async move {
            let store = EtcdStore::connect(vec![endpoint]).await.unwrap();
            let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
            let node = format!("node-{i:02}");
            let got = claim_subnets(&store, &node, &cfg, lease.as_ref())
                .await
                .unwrap_or_else(|e| panic!("{node}: {e}"));
            (node, got, lease)
        }));
    }
    let mut claims = BTreeMap::new();
    let mut leases = BTreeMap::new();
    for t in tasks {
        let (node, got, lease) = t.await.unwrap();
        assert_eq!(got.len(), 2, "{node} got one v4 and one v6 block: {got:?}");
        assert!(got[0].is_ipv4() && got[1].is_ipv6(), "{node}: {got:?}");
        assert_eq!((got[0].prefix(), got[1].prefix()), (24, 64));
        claims.insert(node.clone(), got);
        leases.insert(node, lease);
    }
    let v4: BTreeSet<_> = claims.values().map(|g| g[0]).collect();
    let v6: BTreeSet<_> = claims.values().map(|g| g[1]).collect();
    assert_eq!(v4.len(), NODES, "IPv4 blocks are distinct");
    assert_eq!(v6.len(), NODES, "IPv6 blocks are distinct");
    let cidr4: IpNetwork = "10.244.0.0/16".parse().unwrap();
    assert!(v4.iter().all(|b| cidr4.contains(b.network())));

    // The store agrees: exactly the claimed blocks, each owned by its node.
    let store = EtcdStore::connect(vec![etcd.endpoint()]).await.unwrap();
    let stored = leases_by_node(&store).await;
    let claimed: BTreeMap<String, BTreeSet<IpNetwork>> = claims
        .iter()
        .map(|(n, g)| (n.clone(), g.iter().copied().collect()))
        .collect();
    assert_eq!(stored, claimed);

    // A restarted node (new store lease) keeps its blocks.
    let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    let again = claim_subnets(&store, "node-07", &cfg, lease.as_ref())
        .await
        .unwrap();
    assert_eq!(again, claims["node-07"]);
    // Its old lease no longer holds the keys: revoking it keeps them.
    leases["node-07"].revoke().await.unwrap();
    assert_eq!(leases_by_node(&store).await["node-07"], claimed["node-07"]);

    // A node whose lease is revoked (it stopped renewing) loses its blocks;
    // they are the lowest free ones now, so a newcomer gets exactly them.
    leases["node-03"].revoke().await.unwrap();
    let after = leases_by_node(&store).await;
    assert!(!after.contains_key("node-03"));
    let newcomer = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    let got = claim_subnets(&store, "node-new", &cfg, newcomer.as_ref())
        .await
        .unwrap();
    assert_eq!(got, claims["node-03"]);

    // Removing a node releases its blocks.
    let released = release_subnets(&store, "node-11").await.unwrap();
    assert_eq!(
        released.into_iter().collect::<BTreeSet<_>>(),
        claimed["node-11"]
    );
    assert!(!leases_by_node(&store).await.contains_key("node-11"));
}
