//! The etcd `Store` against a real etcd (Debian's etcd-server, started per
//! test on loopback with free ports by `netns_fixtures::etcd::EtcdServer`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use netns_fixtures::etcd::EtcdServer;
use podnet_state::etcd::EtcdStore;
use podnet_state::{Kind, ObjectKey, Store, StoreError, WatchEvent, WatchStream};
use serde_json::json;

async fn store_for(etcd: &EtcdServer) -> EtcdStore {
    EtcdStore::connect(vec![etcd.endpoint()])
        .await
        .expect("connecting to the test etcd")
}

fn svc(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Service, Some("default"), name)
}

/// The next event of a watch, failing the test after 10 s of silence.
async fn next_event(w: &mut WatchStream) -> WatchEvent {
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Ok(ev))) => ev,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within 10 s"),
    }
}

/// Asserts that nothing arrives on the watch for a short while.
async fn assert_quiet(w: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(300), w.next()).await {
        panic!("expected no more events, got {item:?}");
    }
}

#[tokio::test]
async fn put_get_delete_and_key_layout() {
    let etcd = EtcdServer::start().unwrap();
    let store = store_for(&etcd).await;
    assert_eq!(store.url(), etcd.url());

    let key = svc("web");
    assert_eq!(store.get(&key).await.unwrap(), None);
    let rev = store
        .put(&key, &json!({"spec": {"ports": []}}))
        .await
        .unwrap();
    let got = store.get(&key).await.unwrap().expect("stored");
    assert_eq!(got.key, key);
    assert_eq!(got.mod_revision, rev);
    assert_eq!(got.value().unwrap(), json!({"spec": {"ports": []}}));

    // The value is plain JSON at the documented key, readable by etcdctl.
    let raw = etcd
        .etcdctl(&["get", "/podnet/services/default/web", "--print-value-only"])
        .unwrap();
    assert_eq!(raw.trim(), r#"{"spec":{"ports":[]}}"#);
    let node = ObjectKey::new(Kind::Node, None, "node-1");
    store.put(&node, &json!({"n": 1})).await.unwrap();
    let raw = etcd
        .etcdctl(&["get", "/podnet/nodes/node-1", "--print-value-only"])
        .unwrap();
    assert_eq!(raw.trim(), r#"{"n":1}"#);

    let del = store.delete(&key).await.unwrap().expect("existed");
    assert!(del > rev);
    assert_eq!(store.delete(&key).await.unwrap(), None);
    assert_eq!(store.get(&key).await.unwrap(), None);
}

#[tokio::test]
async fn list_is_per_kind_paged_and_skips_foreign_keys() {
    let etcd = EtcdServer::start().unwrap();
    let store = store_for(&etcd).await;
    // More than one list page (500) to exercise paging at a pinned revision.
    let objects: Vec<_> = (0..1203)
        .map(|i| (svc(&format!("s{i:04}")), json!({"i": i})))
        .collect();
    let rev = store.put_many(&objects).await.unwrap();
    store
        .put(&ObjectKey::new(Kind::Pod, Some("default"), "p"), &json!({}))
        .await
        .unwrap();
    // Keys under the services prefix that are not object keys, and a non-JSON value.
    etcd.etcdctl(&["put", "/podnet/services/no-namespace", "{}"])
        .unwrap();
    etcd.etcdctl(&["put", "/podnet/services/default/broken", "not json"])
        .unwrap();

    let (list, list_rev) = store.list(Kind::Service).await.unwrap();
    assert!(list_rev > rev);
    assert_eq!(list.len(), 1203);
    let names: BTreeSet<_> = list.iter().map(|o| o.key.name.clone()).collect();
    assert_eq!(names.len(), 1203);
    assert!(names.contains("s0000") && names.contains("s1202"));
    assert!(list.iter().all(|o| o.key.kind == Kind::Service));
    // The same, page by page.
    let mut pages = Vec::new();
    let pages_rev = store
        .list_in_batches(Kind::Service, &mut |p| pages.push(p))
        .await
        .unwrap();
    assert_eq!(pages_rev, list_rev);
    assert_eq!(pages.len(), 2, "pages of 1000");
    assert_eq!(pages.concat(), list);
    let (pods, _) = store.list(Kind::Pod).await.unwrap();
    assert_eq!(pods.len(), 1);
    assert_eq!(store.list(Kind::Node).await.unwrap().0, vec![]);

    // A watch skips the same foreign keys and values and keeps going.
    let mut w = store.watch(Kind::Service, list_rev).await.unwrap();
    etcd.etcdctl(&["put", "/podnet/services/default/broken", "{still not json"])
        .unwrap();
    etcd.etcdctl(&["put", "/podnet/services/a/b/c", "{}"])
        .unwrap();
    let good = store.put(&svc("good"), &json!({})).await.unwrap();
    match next_event(&mut w).await {
        WatchEvent::Put(o) => assert_eq!((o.key, o.mod_revision), (svc("good"), good)),
        e => panic!("{e:?}"),
    }
}

#[tokio::test]
async fn watch_from_list_revision_and_resume() {
    let etcd = EtcdServer::start().unwrap();
    let store = store_for(&etcd).await;
    store.put(&svc("a"), &json!({"v": 1})).await.unwrap();
    let (list, rev) = store.list(Kind::Service).await.unwrap();
    assert_eq!(list.len(), 1);

    let mut w = store.watch(Kind::Service, rev).await.unwrap();
    // Changes of other kinds never show up in a services watch.
    store
        .put(&ObjectKey::new(Kind::Node, None, "n1"), &json!({}))
        .await
        .unwrap();
    let r_b = store.put(&svc("b"), &json!({"v": 2})).await.unwrap();
    let r_a = store.put(&svc("a"), &json!({"v": 3})).await.unwrap();
    let r_del = store.delete(&svc("b")).await.unwrap().unwrap();

    match next_event(&mut w).await {
        WatchEvent::Put(o) => {
            assert_eq!(
                (o.key.clone(), o.mod_revision, o.value().unwrap()),
                (svc("b"), r_b, json!({"v": 2}))
            )
        }
        e => panic!("{e:?}"),
    }
    match next_event(&mut w).await {
        WatchEvent::Put(o) => assert_eq!((o.key, o.mod_revision), (svc("a"), r_a)),
        e => panic!("{e:?}"),
    }
    assert_eq!(
        next_event(&mut w).await,
        WatchEvent::Delete {
            key: svc("b"),
            revision: r_del
        }
    );
    assert_quiet(&mut w).await;
    drop(w);

    // Changes made while nobody watches arrive when resuming from the last
    // seen revision: all of them, in order, and nothing seen before again.
    let r_c = store.put(&svc("c"), &json!({})).await.unwrap();
    let r_a2 = store.delete(&svc("a")).await.unwrap().unwrap();
    let mut w = store.watch(Kind::Service, r_del).await.unwrap();
    assert_eq!(next_event(&mut w).await.revision(), r_c);
    assert_eq!(
        next_event(&mut w).await,
        WatchEvent::Delete {
            key: svc("a"),
            revision: r_a2
        }
    );
    assert_quiet(&mut w).await;
}

#[tokio::test]
async fn compaction_makes_old_watches_fail_with_compacted() {
    let etcd = EtcdServer::start().unwrap();
    let store = store_for(&etcd).await;
    let first = store.put(&svc("a"), &json!({"v": 1})).await.unwrap();
    // A watch that is already running is not affected by a compaction.
    let mut live = store.watch(Kind::Service, first).await.unwrap();
    for v in 2..6 {
        store.put(&svc("a"), &json!({"v": v})).await.unwrap();
    }
    let last = store.put(&svc("b"), &json!({})).await.unwrap();
    store.compact(last).await.unwrap();

    let mut old = store.watch(Kind::Service, first).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), old.next()).await {
        Ok(Some(Err(StoreError::Compacted {
            kind,
            revision,
            compacted,
        }))) => {
            assert_eq!(kind, Kind::Service);
            assert_eq!(revision, first);
            assert_eq!(compacted, last);
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(
        old.next().await.is_none(),
        "the stream ends after Compacted"
    );

    // Watching from the compaction revision itself still works.
    let mut fresh = store.watch(Kind::Service, last).await.unwrap();
    let r = store.put(&svc("c"), &json!({})).await.unwrap();
    assert_eq!(next_event(&mut fresh).await.revision(), r);

    for _ in 2..6 {
        assert!(matches!(next_event(&mut live).await, WatchEvent::Put(_)));
    }
    assert_eq!(next_event(&mut live).await.revision(), last);
    assert_eq!(next_event(&mut live).await.revision(), r);
}

#[tokio::test]
async fn leases_expire_and_revoke_deletes_keys() {
    let etcd = EtcdServer::start().unwrap();
    let store = store_for(&etcd).await;
    let lease_key = |n: &str| ObjectKey::new(Kind::SubnetLease, None, n);

    // Not kept alive: the key disappears after the TTL (etcd's minimum is ~2 s).
    let short = store.grant_lease(Duration::from_secs(2)).await.unwrap();
    let k1 = lease_key("10.244.1.0-24");
    assert!(store
        .create_if_absent(&k1, &json!({"node": "n1"}), Some(short.as_ref()))
        .await
        .unwrap()
        .is_some());
    assert!(store.get(&k1).await.unwrap().is_some());

    // Kept alive: survives well past its TTL.
    let kept = store.grant_lease(Duration::from_secs(2)).await.unwrap();
    let k2 = lease_key("10.244.2.0-24");
    store
        .create_if_absent(&k2, &json!({"node": "n2"}), Some(kept.as_ref()))
        .await
        .unwrap()
        .unwrap();
    let start = Instant::now();
    let mut expired_after = None;
    while start.elapsed() < Duration::from_secs(6) {
        kept.keep_alive().await.unwrap();
        if expired_after.is_none() && store.get(&k1).await.unwrap().is_none() {
            expired_after = Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let expired_after = expired_after.expect("the lease that was not renewed expired");
    assert!(
        expired_after >= Duration::from_millis(1500),
        "{expired_after:?}"
    );
    assert!(
        store.get(&k2).await.unwrap().is_some(),
        "renewed lease kept its key"
    );
    assert!(
        short.keep_alive().await.is_err(),
        "an expired lease cannot be renewed"
    );

    // Revoking deletes the key right away; revoking twice is harmless.
    kept.revoke().await.unwrap();
    assert_eq!(store.get(&k2).await.unwrap(), None);
    kept.revoke().await.unwrap();
    assert!(kept.keep_alive().await.is_err());
}

#[tokio::test]
async fn create_if_absent_race_has_exactly_one_winner() {
    let etcd = EtcdServer::start().unwrap();
    let store = Arc::new(store_for(&etcd).await);
    let key = ObjectKey::new(Kind::SubnetLease, None, "10.244.7.0-24");
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = store.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let r = store
                .create_if_absent(&key, &json!({ "node": format!("node-{i}") }), None)
                .await
                .unwrap();
            (i, r)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        if let (i, Some(rev)) = t.await.unwrap() {
            winners.push((i, rev));
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let (i, rev) = winners[0];
    let stored = store.get(&key).await.unwrap().unwrap();
    assert_eq!(
        stored.value().unwrap(),
        json!({ "node": format!("node-{i}") })
    );
    assert_eq!(stored.mod_revision, rev);
}

#[tokio::test]
async fn unreachable_etcd_reports_url_and_store_recovers() {
    let mut etcd = EtcdServer::start().unwrap();
    let store = store_for(&etcd).await;
    let r1 = store.put(&svc("a"), &json!({"v": 1})).await.unwrap();
    let mut w = store.watch(Kind::Service, r1).await.unwrap();

    etcd.stop().unwrap();
    // A running watch ends with Unreachable.
    match tokio::time::timeout(Duration::from_secs(15), w.next()).await {
        Ok(Some(Err(StoreError::Unreachable { url, .. }))) => assert_eq!(url, etcd.url()),
        other => panic!("expected Unreachable from the watch, got {other:?}"),
    }
    assert!(w.next().await.is_none());
    // Calls fail (not hang) and name the store.
    let started = Instant::now();
    for result in [
        store.put(&svc("b"), &json!({})).await.map(|_| ()),
        store.list(Kind::Service).await.map(|_| ()),
        store.get(&svc("a")).await.map(|_| ()),
        store.watch(Kind::Service, r1).await.map(|_| ()),
    ] {
        match result {
            Err(StoreError::Unreachable { url, .. }) => assert_eq!(url, etcd.url()),
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "calls against a dead etcd must fail, not hang: {:?}",
        started.elapsed()
    );

    etcd.restart().unwrap();
    // The same store object works again, and resumes the watch without a gap.
    let r2 = store.put(&svc("c"), &json!({})).await.unwrap();
    let mut w = store.watch(Kind::Service, r1).await.unwrap();
    assert_eq!(next_event(&mut w).await.revision(), r2);
    let (list, _) = store.list(Kind::Service).await.unwrap();
    assert_eq!(list.len(), 2);
}
