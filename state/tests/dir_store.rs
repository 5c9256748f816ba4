//! The dir store: revisions, watch resume, hand edits, malformed files,
//! leases, compaction, and several processes writing at once.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use podnet_state::dir::{DirOptions, DirStore};
use podnet_state::{Kind, ObjectKey, Store, StoreError, WatchEvent, WatchStream};
use serde_json::json;

fn svc(name: &str, port: u16) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "default"},
           "spec": {"ports": [{"port": port}]}})
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Service, Some("default"), name)
}

/// The next `n` events, failing after 10 s.
async fn take(w: &mut WatchStream, n: usize) -> Vec<WatchEvent> {
    let mut v = Vec::new();
    while v.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
            Ok(Some(Ok(ev))) => v.push(ev),
            Ok(Some(Err(e))) => panic!("watch error: {e}"),
            Ok(None) => panic!("watch ended after {v:?}"),
            Err(_) => panic!(
                "timed out waiting for event {} of {n}; got {v:?}",
                v.len() + 1
            ),
        }
    }
    v
}

/// Asserts nothing more arrives within `d`.
async fn quiet(w: &mut WatchStream, d: Duration) {
    if let Ok(Some(ev)) = tokio::time::timeout(d, w.next()).await {
        panic!("unexpected event {ev:?}");
    }
}

fn summary(evs: &[WatchEvent]) -> Vec<(String, u64, &'static str)> {
    evs.iter()
        .map(|e| {
            let t = if matches!(e, WatchEvent::Put(_)) {
                "put"
            } else {
                "delete"
            };
            (e.key().name.clone(), e.revision(), t)
        })
        .collect()
}

#[tokio::test]
async fn dir_put_get_list_delete_and_revisions() {
    let d = tempfile::tempdir().unwrap();
    let s = DirStore::open(d.path()).unwrap();
    assert_eq!(s.url(), format!("dir://{}", d.path().display()));
    let r1 = s.put(&key("a"), &svc("a", 80)).await.unwrap();
    let r2 = s.put(&key("b"), &svc("b", 81)).await.unwrap();
    assert!(r2 > r1);
    assert!(d.path().join("services/default/a.yaml").is_file());
    let node = ObjectKey::new(Kind::Node, None, "n1");
    let r3 = s
        .put(&node, &json!({"kind": "Node", "metadata": {"name": "n1"}}))
        .await
        .unwrap();
    assert!(d.path().join("nodes/n1.yaml").is_file());
    let got = s.get(&key("a")).await.unwrap().unwrap();
    assert_eq!(got.mod_revision, r1);
    assert_eq!(got.value().unwrap()["spec"]["ports"][0]["port"], 80);
    let (objs, rev) = s.list(Kind::Service).await.unwrap();
    assert_eq!(rev, r3);
    assert_eq!(
        objs.iter().map(|o| o.key.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    let rd = s.delete(&key("a")).await.unwrap().unwrap();
    assert!(rd > r3);
    assert_eq!(s.delete(&key("a")).await.unwrap(), None);
    assert!(s.get(&key("a")).await.unwrap().is_none());
    // Compare-and-create.
    assert_eq!(
        s.create_if_absent(&key("b"), &svc("b", 1), None)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.get(&key("b")).await.unwrap().unwrap().value().unwrap()["spec"]["ports"][0]["port"],
        81
    );
    let rc = s
        .create_if_absent(&key("c"), &svc("c", 2), None)
        .await
        .unwrap()
        .unwrap();
    assert!(rc > rd);
    // A second handle (as another process would) sees the same revision.
    let s2 = DirStore::open(d.path()).unwrap();
    assert_eq!(s2.revision().unwrap(), rc);
    // Bad keys are refused.
    assert!(s.put(&key("../x"), &svc("x", 1)).await.is_err());
}

#[tokio::test]
async fn dir_watch_restart_resumes_without_missing_or_replaying() {
    let d = tempfile::tempdir().unwrap();
    let s = DirStore::open(d.path()).unwrap();
    let ra = s.put(&key("a"), &svc("a", 1)).await.unwrap();
    let rb = s.put(&key("b"), &svc("b", 1)).await.unwrap();
    let node = ObjectKey::new(Kind::Node, None, "n1");
    s.put(&node, &json!({"metadata": {"name": "n1"}}))
        .await
        .unwrap();
    let rd = s.delete(&key("a")).await.unwrap().unwrap();

    let mut w = s.watch(Kind::Service, ra).await.unwrap();
    let evs = take(&mut w, 2).await;
    assert_eq!(
        summary(&evs),
        [("b".into(), rb, "put"), ("a".into(), rd, "delete")]
    );
    let rc = s.put(&key("c"), &svc("c", 1)).await.unwrap();
    let evs = take(&mut w, 1).await;
    assert_eq!(summary(&evs), [("c".into(), rc, "put")]);
    quiet(&mut w, Duration::from_millis(300)).await;
    drop(w);

    // Changes while no watcher runs, some from another handle.
    let s2 = DirStore::open(d.path()).unwrap();
    let re = s2.put(&key("e"), &svc("e", 1)).await.unwrap();
    let rb2 = s.put(&key("b"), &svc("b", 2)).await.unwrap();
    let mut w = s2.watch(Kind::Service, rc).await.unwrap();
    let evs = take(&mut w, 2).await;
    assert_eq!(
        summary(&evs),
        [("e".into(), re, "put"), ("b".into(), rb2, "put")]
    );
    let WatchEvent::Put(o) = &evs[1] else {
        panic!()
    };
    assert_eq!(o.value().unwrap()["spec"]["ports"][0]["port"], 2);
    quiet(&mut w, Duration::from_millis(300)).await;

    // A revision beyond the store's (a wiped store) forces a relist.
    match s.watch(Kind::Service, rb2 + 100).await {
        Err(StoreError::Compacted { .. }) => {}
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("watch from the future accepted"),
    }
}

#[tokio::test]
async fn dir_hand_edits_are_picked_up_with_fresh_revisions() {
    let d = tempfile::tempdir().unwrap();
    let s = DirStore::open(d.path()).unwrap();
    let r0 = s.put(&key("a"), &svc("a", 80)).await.unwrap();
    // Edited while nobody watches: journaled when the next watch starts.
    std::fs::write(
        d.path().join("services/default/a.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  ports: [{port: 81}]\n",
    )
    .unwrap();
    let mut w = s.watch(Kind::Service, r0).await.unwrap();
    let evs = take(&mut w, 1).await;
    let WatchEvent::Put(o) = &evs[0] else {
        panic!("{evs:?}")
    };
    assert!(o.mod_revision > r0);
    assert_eq!(o.value().unwrap()["spec"]["ports"][0]["port"], 81);
    let mut last = o.mod_revision;

    // An editor writing in place.
    std::fs::write(
        d.path().join("services/default/a.yaml"),
        "kind: Service\nmetadata: {name: a}\nspec:\n  ports: [{port: 82}]\n",
    )
    .unwrap();
    let evs = take(&mut w, 1).await;
    let WatchEvent::Put(o) = &evs[0] else {
        panic!("{evs:?}")
    };
    assert_eq!(o.value().unwrap()["spec"]["ports"][0]["port"], 82);
    assert!(o.mod_revision > last);
    last = o.mod_revision;

    // cp into a new namespace directory: a new object named after the file.
    std::fs::create_dir(d.path().join("services/shop")).unwrap();
    std::fs::copy(
        d.path().join("services/default/a.yaml"),
        d.path().join("services/shop/copy.json.tmp"),
    )
    .unwrap();
    std::fs::rename(
        d.path().join("services/shop/copy.json.tmp"),
        d.path().join("services/shop/copy.yaml"),
    )
    .unwrap();
    let evs = take(&mut w, 1).await;
    let WatchEvent::Put(o) = &evs[0] else {
        panic!("{evs:?}")
    };
    assert_eq!(o.key, ObjectKey::new(Kind::Service, Some("shop"), "copy"));
    assert_eq!(o.value().unwrap()["metadata"]["name"], "copy");
    assert_eq!(o.value().unwrap()["metadata"]["namespace"], "shop");
    assert!(o.mod_revision > last);

    // rm
    std::fs::remove_file(d.path().join("services/default/a.yaml")).unwrap();
    let evs = take(&mut w, 1).await;
    assert!(
        matches!(&evs[0], WatchEvent::Delete { key: k, .. } if *k == key("a")),
        "{evs:?}"
    );
    // Touch without change and editor temp files produce nothing.
    std::fs::write(d.path().join("services/shop/.copy.yaml.swp"), "junk").unwrap();
    std::fs::write(d.path().join("services/shop/copy.yaml~"), "junk").unwrap();
    let content = std::fs::read(d.path().join("services/shop/copy.yaml")).unwrap();
    std::fs::write(d.path().join("services/shop/copy.yaml"), content).unwrap();
    quiet(&mut w, Duration::from_millis(500)).await;
    // Another process's view agrees.
    let (objs, _) = DirStore::open(d.path())
        .unwrap()
        .list(Kind::Service)
        .await
        .unwrap();
    assert_eq!(objs.len(), 1);
    assert_eq!(objs[0].key.name, "copy");
}

#[tokio::test]
async fn dir_malformed_file_is_skipped_and_the_rest_works() {
    let d = tempfile::tempdir().unwrap();
    let s = DirStore::open(d.path()).unwrap();
    let r0 = s.put(&key("good"), &svc("good", 80)).await.unwrap();
    let mut w = s.watch(Kind::Service, r0).await.unwrap();
    let bad = d.path().join("services/default/bad.yaml");
    std::fs::write(&bad, "kind: Service\nmetadata: {name: bad\nspec: [\n").unwrap();
    quiet(&mut w, Duration::from_millis(500)).await;
    let (objs, _) = s.list(Kind::Service).await.unwrap();
    assert_eq!(
        objs.iter().map(|o| o.key.name.as_str()).collect::<Vec<_>>(),
        ["good"]
    );
    assert!(s.get(&key("bad")).await.unwrap().is_none());
    // Writes keep working meanwhile.
    let r1 = s.put(&key("other"), &svc("other", 1)).await.unwrap();
    let evs = take(&mut w, 1).await;
    assert_eq!(summary(&evs), [("other".into(), r1, "put")]);
    // Fixing the file makes it appear.
    std::fs::write(
        &bad,
        "kind: Service\nmetadata: {name: bad}\nspec: {ports: [{port: 9}]}\n",
    )
    .unwrap();
    let evs = take(&mut w, 1).await;
    assert_eq!(evs[0].key().name, "bad");
    assert!(evs[0].revision() > r1);
    // A file that is YAML but not a mapping is malformed too.
    std::fs::write(d.path().join("nodes/list.yaml"), "- a\n- b\n").unwrap();
    let (nodes, _) = s.list(Kind::Node).await.unwrap();
    assert!(nodes.is_empty());
}

#[tokio::test]
async fn dir_lease_bound_keys_go_with_their_lease() {
    let d = tempfile::tempdir().unwrap();
    let opts = DirOptions {
        lease_check_interval: Duration::from_millis(100),
        ..DirOptions::default()
    };
    let s = DirStore::open_with(d.path(), opts).unwrap();
    let lk = |n: &str| ObjectKey::new(Kind::SubnetLease, None, n);
    let v = json!({"metadata": {"name": "x"}, "spec": {"node": "n", "subnet": "10.0.0.0/24"}});

    // Kept alive: survives several TTLs; then left to expire: deleted.
    let lease = s.grant_lease(Duration::from_millis(600)).await.unwrap();
    assert!(s
        .create_if_absent(&lk("kept"), &v, Some(&*lease))
        .await
        .unwrap()
        .is_some());
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        lease.keep_alive().await.unwrap();
    }
    assert!(s.get(&lk("kept")).await.unwrap().is_some());
    let start = std::time::Instant::now();
    while s.get(&lk("kept")).await.unwrap().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "lease-bound key outlived its lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        lease.keep_alive().await.is_err(),
        "keep-alive of an expired lease succeeded"
    );
    assert!(s
        .create_if_absent(&lk("late"), &v, Some(&*lease))
        .await
        .is_err());
    assert!(s.get(&lk("late")).await.unwrap().is_none());

    // Revoked: deleted at once; a key rewritten since binding stays.
    let lease = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    s.create_if_absent(&lk("r1"), &v, Some(&*lease))
        .await
        .unwrap()
        .unwrap();
    s.create_if_absent(&lk("r2"), &v, Some(&*lease))
        .await
        .unwrap()
        .unwrap();
    s.put(&lk("r2"), &v).await.unwrap();
    lease.revoke().await.unwrap();
    assert!(s.get(&lk("r1")).await.unwrap().is_none());
    assert!(s.get(&lk("r2")).await.unwrap().is_some());
}

#[tokio::test]
async fn dir_compaction_keeps_state_and_old_watchers_relist() {
    let d = tempfile::tempdir().unwrap();
    let opts = DirOptions {
        journal_retain: 5,
        compact_slack: 10,
        ..DirOptions::default()
    };
    let s = DirStore::open_with(d.path(), opts).unwrap();
    let r0 = s.put(&key("first"), &svc("first", 1)).await.unwrap();
    for i in 0..60 {
        s.put(&key(&format!("s{}", i % 7)), &svc("x", i))
            .await
            .unwrap();
    }
    s.delete(&key("s0")).await.unwrap();
    let journal = std::fs::read_to_string(d.path().join(".journal")).unwrap();
    assert!(
        journal.lines().count() < 30,
        "journal not compacted:\n{journal}"
    );
    // State survives compaction, also for a fresh reader.
    let (objs, rev) = DirStore::open(d.path())
        .unwrap()
        .list(Kind::Service)
        .await
        .unwrap();
    assert_eq!(objs.len(), 7); // first, s1..s6
    assert_eq!(
        s.get(&key("first")).await.unwrap().unwrap().mod_revision,
        r0
    );
    match s.watch(Kind::Service, r0).await {
        Err(StoreError::Compacted { revision, .. }) => assert_eq!(revision, r0),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("watch from a compacted revision accepted"),
    }
    // Recent history is still there.
    let mut w = s.watch(Kind::Service, rev - 1).await.unwrap();
    let evs = take(&mut w, 1).await;
    assert_eq!(evs[0].revision(), rev);
}

fn podnetctl(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_podnetctl"));
    c.arg("--store")
        .arg(format!("dir://{}", root.display()))
        .args(args);
    c
}

#[tokio::test]
async fn dir_concurrent_writers_from_several_processes() {
    const PROCS: usize = 6;
    const PER: usize = 25;
    let d = tempfile::tempdir().unwrap();
    let s = DirStore::open(d.path()).unwrap();
    let base = s.revision().unwrap();
    let mut w = s.watch(Kind::Service, base).await.unwrap();
    let mut children = Vec::new();
    for p in 0..PROCS {
        let mut yaml = String::new();
        for i in 0..PER {
            yaml.push_str(&format!(
                "---\napiVersion: v1\nkind: Service\nmetadata: {{name: p{p}-s{i}}}\nspec: {{ports: [{{port: {}}}]}}\n",
                i + 1
            ));
        }
        let f = d.path().join(format!("in-{p}.yaml"));
        std::fs::write(&f, yaml).unwrap();
        children.push(
            podnetctl(d.path(), &["apply", "-f", f.to_str().unwrap()])
                .spawn()
                .unwrap(),
        );
    }
    // And this process writes at the same time.
    for i in 0..PER {
        s.put(&key(&format!("local-{i}")), &svc("x", 1))
            .await
            .unwrap();
    }
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let total = (PROCS + 1) * PER;
    let evs = take(&mut w, total).await;
    let revs: Vec<u64> = evs.iter().map(|e| e.revision()).collect();
    assert!(
        revs.windows(2).all(|p| p[0] < p[1]),
        "revisions not strictly increasing: {revs:?}"
    );
    assert_eq!(
        revs,
        ((base + 1)..=(base + total as u64)).collect::<Vec<_>>(),
        "gaps in revisions"
    );
    let names: std::collections::HashSet<_> = evs.iter().map(|e| e.key().name.clone()).collect();
    assert_eq!(names.len(), total);
    quiet(&mut w, Duration::from_millis(300)).await;
    let (objs, rev) = s.list(Kind::Service).await.unwrap();
    assert_eq!(objs.len(), total);
    assert_eq!(rev, base + total as u64);
}

/// `list_in_batches` hands over what `list` returns, in several batches,
/// and keeps each file's text as written when it agrees with its path.
#[tokio::test]
async fn dir_list_in_batches_matches_list() {
    let d = tempfile::tempdir().unwrap();
    let s = DirStore::open(d.path()).unwrap();
    for i in 0..600 {
        s.put(&key(&format!("s{i:03}")), &svc(&format!("s{i:03}"), 80))
            .await
            .unwrap();
    }
    std::fs::write(d.path().join("services/default/hand.json"), "[1, 2]").unwrap();
    let (list, rev) = s.list(Kind::Service).await.unwrap();
    let mut batches = Vec::new();
    let brev = s
        .list_in_batches(Kind::Service, &mut |b| batches.push(b))
        .await
        .unwrap();
    assert_eq!(brev, rev);
    assert!(batches.len() > 1, "{} batch(es)", batches.len());
    let mut got: Vec<_> = batches.into_iter().flatten().collect();
    got.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(got, list);
    assert_eq!(got.len(), 600, "the array file is no object");
    let file = std::fs::read_to_string(d.path().join("services/default/s042.yaml")).unwrap();
    assert_eq!(got[42].json(), file.trim());
}
