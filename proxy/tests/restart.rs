//! Restarting podnet-proxy while a client loops connections loses none of
//! them (startup replaces the table in one transaction, exit leaves rules);
//! an unreachable store leaves the rules in place.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use serde_json::json;

#[test]
fn restart_loses_no_connections_and_store_loss_keeps_rules() {
    netns_fixtures::skip_unless_root!();
    let mut c = Cluster::new();
    c.add_pod("pod-a", "10.244.0.2");
    c.add_pod("pod-b", "10.244.0.3");
    c.add_pod("client", "10.244.0.10");
    c.put(service(
        "web",
        "10.96.0.40",
        json!([{"name": "p", "port": 80}]),
    ));
    c.put(slice(
        "web",
        8080,
        "TCP",
        &[("10.244.0.2", "node-a"), ("10.244.0.3", "node-b")],
    ));
    c.start_proxy(&[]);
    c.wait_map("service-ips", "10.96.0.40 . tcp . 80", true);

    // A client looping connections (bounded: at most 3000, stops when told).
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    // Owned here, so the cluster can be changed while the client loops.
    let (_, _, client_ns) = c.pods.pop().unwrap();
    let client = &client_ns;
    let addr = "10.96.0.40:80".parse().unwrap();
    std::thread::scope(|s| {
        let looper = s.spawn(move || {
            client
                .enter(move || {
                    let (mut ok, mut failed) = (0usize, Vec::new());
                    for _ in 0..3000 {
                        if stop2.load(Ordering::Relaxed) {
                            break;
                        }
                        match fetch_here(addr) {
                            Ok(_) => ok += 1,
                            Err(e) => failed.push(e.to_string()),
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    (ok, failed)
                })
                .unwrap()
        });
        // Three restarts: SIGTERM (rules stay), start again (atomic replacement).
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(300));
            let mut old = c.proxy.take().unwrap();
            old.signal(Signal::SIGTERM).unwrap();
            assert!(netns_fixtures::wait_until(
                Duration::from_secs(5),
                Duration::from_millis(10),
                || !old.is_running()
            ));
            c.start_proxy(&[]);
            let starts = |log: &str| log.matches("full sync").count();
            let before = starts(&c.proxy_log());
            assert!(netns_fixtures::wait_until(
                Duration::from_secs(10),
                Duration::from_millis(10),
                || starts(&c.proxy_log()) > before
            ));
        }
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        let (ok, failed) = looper.join().unwrap();
        assert!(ok > 100, "only {ok} connections made");
        assert!(
            failed.is_empty(),
            "{} of {} connections failed across restarts: {:?}",
            failed.len(),
            ok + failed.len(),
            &failed[..failed.len().min(5)]
        );
    });

    // Store unreachable while running: the store directory disappears; the
    // informer keeps its last snapshot and the rules stay.
    let store_dir = c.dir.path().join("store");
    let moved = c.dir.path().join("store-gone");
    std::fs::rename(&store_dir, &moved).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        c.proxy.as_mut().unwrap().is_running(),
        "proxy died when the store went away:\n{}",
        c.proxy_log()
    );
    let answers = fetch_many(&client_ns, "10.96.0.40:80", 20);
    assert!(answers.iter().all(|a| a.is_ok()), "{answers:?}");

    // Restart against a store that cannot be reached at all: rules still stay.
    c.proxy.take().unwrap().signal(Signal::SIGTERM).unwrap();
    c.start_proxy_with_store("etcd://127.0.0.1:9", &[]);
    std::thread::sleep(Duration::from_millis(500));
    let answers = fetch_many(&client_ns, "10.96.0.40:80", 20);
    assert!(answers.iter().all(|a| a.is_ok()), "{answers:?}");
    let table = c.node.sh("nft list map ip podnet service-ips").unwrap();
    assert!(table.contains("10.96.0.40 . tcp . 80"), "{table}");
}
