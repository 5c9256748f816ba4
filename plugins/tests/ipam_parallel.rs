//! 100 concurrent ADDs on one network get 100 distinct addresses; 100 concurrent DELs
//! leave the store empty (the flock serializes calls; nothing is lost or doubled).

mod ipam_support;

use std::collections::HashSet;

use ipam_support::{run, Net};
use serde_json::json;

#[test]
fn hundred_parallel_adds_then_dels() {
    let net = Net::new("par");
    let conf = net.conf("1.1.0", json!({"subnet": "10.60.0.0/24"}));
    let ids: Vec<String> = (0..100).map(|i| format!("ctr{i}")).collect();
    let ips: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = ids
            .iter()
            .map(|id| {
                let conf = &conf;
                s.spawn(move || {
                    let out = run("ADD", id, "eth0", conf);
                    let ips = out.ips();
                    out.ok();
                    ips
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("ADD thread"))
            .collect()
    });
    assert_eq!(ips.len(), 100);
    let distinct: HashSet<&String> = ips.iter().collect();
    assert_eq!(distinct.len(), 100, "every container got its own address");
    assert_eq!(net.reserved().len(), 100);
    assert_eq!(net.owners().len(), 100);

    std::thread::scope(|s| {
        for id in &ids {
            let conf = &conf;
            s.spawn(move || run("DEL", id, "eth0", conf).ok());
        }
    });
    assert!(net.reserved().is_empty(), "left: {:?}", net.reserved());
    assert!(net.owners().is_empty());
    assert!(ipam_support::list(&net.store().join("tmp")).is_empty());
    // Counters agree: a full /24 minus gateway is available again.
    run("STATUS", "", "", &conf).ok();
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(net.store().join("state.json")).expect("state"),
    )
    .expect("state json");
    let counts = state["counts"].as_object().expect("counts");
    assert!(counts.values().all(|n| n == 0), "{state}");
}
