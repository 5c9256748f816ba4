//! The informer over the etcd store, against a real etcd: outages (etcd
//! killed and restarted, or one client cut off by a proxy while others keep
//! writing and etcd compacts its history).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netns_fixtures::etcd::{EtcdServer, TcpProxy};
use podnet_state::etcd::EtcdStore;
use podnet_state::{Informer, Kind, NamespacedName, ObjectKey, Snapshot, Store, Subscription};
use serde_json::json;

/// How long the informer may take to notice a recovered store and catch up.
const CONVERGE: Duration = Duration::from_secs(30);

fn svc_key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Service, Some("default"), name)
}

/// A ClusterIP Service as `kubectl get -o json` shows it; `version` goes into
/// a label so the test can tell which write a snapshot reflects.
fn service(name: &str, version: u32) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"version": version.to_string()}
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "10.96.0.10",
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]
        }
    })
}

/// name -> version label of every Service in a snapshot.
fn versions(s: &Snapshot) -> BTreeMap<String, String> {
    s.services
        .iter()
        .map(|(nn, svc)| {
            let v = svc
                .metadata
                .labels
                .get("version")
                .unwrap_or_default()
                .to_string();
            (nn.name.clone(), v)
        })
        .collect()
}

fn expected(entries: &[(String, u32)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(n, v)| (n.clone(), v.to_string()))
        .collect()
}

/// Reads change sets until the snapshot shows `want`; returns the union of
/// changed keys and whether any of the change sets was a full resync.
async fn until_snapshot(
    sub: &mut Subscription,
    want: &BTreeMap<String, String>,
) -> (BTreeSet<ObjectKey>, bool) {
    let deadline = Instant::now() + CONVERGE;
    let mut changed = BTreeSet::new();
    let mut resync = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let cs = match tokio::time::timeout(left, sub.next()).await {
            Ok(Some(cs)) => cs,
            Ok(None) => panic!("informer ended"),
            Err(_) => panic!("snapshot did not converge within {CONVERGE:?} to {want:?}"),
        };
        resync |= cs.full_resync;
        changed.extend(cs.changes.iter().map(|c| c.key.clone()));
        if &versions(&cs.snapshot) == want {
            return (changed, resync);
        }
    }
}

async fn synced_informer(store: Arc<dyn Store>) -> (Informer, Subscription) {
    let informer = Informer::start(store, &[Kind::Service]);
    tokio::time::timeout(CONVERGE, informer.wait_synced())
        .await
        .expect("informer synced");
    let sub = informer.subscribe();
    (informer, sub)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn informer_keeps_snapshot_while_etcd_is_down_and_catches_up() {
    let mut etcd = EtcdServer::start().unwrap();
    let writer = EtcdStore::connect(vec![etcd.endpoint()]).await.unwrap();
    let mut state: Vec<(String, u32)> = (0..20).map(|i| (format!("svc-{i:02}"), 1)).collect();
    for (n, v) in &state {
        writer.put(&svc_key(n), &service(n, *v)).await.unwrap();
    }

    let store: Arc<dyn Store> = Arc::new(EtcdStore::connect(vec![etcd.endpoint()]).await.unwrap());
    let (informer, mut sub) = synced_informer(store).await;
    let first = sub.next().await.expect("first change set");
    assert!(first.full_resync);
    assert_eq!(versions(&first.snapshot), expected(&state));
    let rev_before = informer.snapshot().revision;

    tokio::task::block_in_place(|| etcd.stop()).unwrap();
    // Long enough for the informer's watch to fail and its retries to start.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = informer.snapshot();
    assert_eq!(
        versions(&during),
        expected(&state),
        "the last snapshot is served while etcd is down"
    );
    assert!(during.synced);
    assert_eq!(during.revision, rev_before);

    tokio::task::block_in_place(|| etcd.restart()).unwrap();
    // Writes right after the restart race with the informer's reconnect:
    // whatever it is doing then, none of them may be lost.
    let mut touched = BTreeSet::new();
    for i in 0..10 {
        let n = format!("new-{i:02}");
        writer.put(&svc_key(&n), &service(&n, 1)).await.unwrap();
        touched.insert(svc_key(&n));
        state.push((n, 1));
    }
    for (n, v) in state.iter_mut().take(5) {
        *v = 2;
        writer.put(&svc_key(n), &service(n, 2)).await.unwrap();
        touched.insert(svc_key(n));
    }
    for (n, _) in state.drain(5..8) {
        writer.delete(&svc_key(&n)).await.unwrap().expect("existed");
        touched.insert(svc_key(&n));
    }

    let (changed, resync) = until_snapshot(&mut sub, &expected(&state)).await;
    let missing: Vec<_> = touched.difference(&changed).collect();
    assert!(
        missing.is_empty(),
        "changes not reported to the subscriber: {missing:?}"
    );
    if !resync {
        // Resuming the watch reports exactly what changed (a relist may
        // instead announce a full resync).
        let untouched: Vec<_> = changed.difference(&touched).collect();
        assert!(
            untouched.is_empty(),
            "unchanged objects reported as changed: {untouched:?}"
        );
    }

    // And the informer keeps watching normally afterwards.
    writer
        .put(&svc_key("late"), &service("late", 7))
        .await
        .unwrap();
    state.push(("late".into(), 7));
    until_snapshot(&mut sub, &expected(&state)).await;
    assert!(informer
        .snapshot()
        .services
        .contains_key(&NamespacedName::new("default", "late")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn informer_relists_after_compaction_while_cut_off() {
    let etcd = EtcdServer::start().unwrap();
    let writer = EtcdStore::connect(vec![etcd.endpoint()]).await.unwrap();
    let mut state: Vec<(String, u32)> = (0..10).map(|i| (format!("svc-{i}"), 1)).collect();
    for (n, v) in &state {
        writer.put(&svc_key(n), &service(n, *v)).await.unwrap();
    }

    // The informer reaches etcd through a proxy that the test can cut.
    let proxy = TcpProxy::start(&etcd.endpoint()).unwrap();
    let store: Arc<dyn Store> = Arc::new(EtcdStore::connect(vec![proxy.endpoint()]).await.unwrap());
    let (informer, mut sub) = synced_informer(store).await;
    let first = sub.next().await.unwrap();
    assert_eq!(versions(&first.snapshot), expected(&state));

    proxy.cut();
    // While the informer cannot see etcd: deletions, an update, a creation,
    // then a compaction that removes the history it would resume from.
    let mut touched = BTreeSet::new();
    for (n, _) in state.drain(0..4) {
        writer.delete(&svc_key(&n)).await.unwrap().expect("existed");
        touched.insert(svc_key(&n));
    }
    state[0].1 = 5;
    writer
        .put(&svc_key(&state[0].0), &service(&state[0].0, 5))
        .await
        .unwrap();
    touched.insert(svc_key(&state[0].0));
    writer
        .put(&svc_key("added"), &service("added", 1))
        .await
        .unwrap();
    touched.insert(svc_key("added"));
    state.push(("added".into(), 1));
    let rev = writer.current_revision().await.unwrap();
    writer.compact(rev).await.unwrap();

    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        versions(&informer.snapshot()).len(),
        10,
        "nothing changes while cut off"
    );
    proxy.restore();

    let (changed, resync) = until_snapshot(&mut sub, &expected(&state)).await;
    assert!(resync, "a relist is announced as a full resync");
    let missing: Vec<_> = touched.difference(&changed).collect();
    assert!(missing.is_empty(), "relist diff misses {missing:?}");
    let snap = informer.snapshot();
    for gone in ["svc-0", "svc-1", "svc-2", "svc-3"] {
        assert!(!snap
            .services
            .contains_key(&NamespacedName::new("default", gone)));
    }
    assert!(snap.revision >= rev);

    // Watching resumes after the relist.
    writer
        .put(&svc_key("after"), &service("after", 1))
        .await
        .unwrap();
    state.push(("after".into(), 1));
    until_snapshot(&mut sub, &expected(&state)).await;
}
