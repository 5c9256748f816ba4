//! Many pods: 100 parallel ADDs then DELs on one network, and GC with a
//! valid-attachments list.

mod bridge_support;

use std::collections::HashSet;

use bridge_support::{cid, pod, result_ip, Node};
use netns_fixtures::skip_unless_root;
use serde_json::json;

#[test]
fn hundred_parallel_adds_get_distinct_addresses_and_dels_clean_up() {
    skip_unless_root!();
    const N: usize = 100;
    let node = Node::new();
    let conf = node.conf("1.1.0", "10.40.0.0/24", json!({"ipMasq": true}));
    let pods: Vec<_> = (0..N).map(|_| (cid(), pod())).collect();

    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .map(|(id, p)| {
                let (node, conf) = (&node, &conf);
                s.spawn(move || node.add(conf, id, p))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("ADD thread"))
            .collect()
    });
    let ips: HashSet<String> = results.iter().map(result_ip).collect();
    assert_eq!(ips.len(), N, "addresses are not distinct");
    assert_eq!(node.reservations().len(), N);
    assert_eq!(node.host_veths().len(), N);
    let rules = node.ruleset();
    for ip in &ips {
        assert!(
            rules.contains(ip.as_str()),
            "no masquerade element for {ip}"
        );
    }

    std::thread::scope(|s| {
        for (id, p) in &pods {
            let (node, conf) = (&node, &conf);
            s.spawn(move || node.del(conf, id, p));
        }
    });
    assert!(node.reservations().is_empty(), "{:?}", node.reservations());
    assert!(node.host_veths().is_empty(), "{:?}", node.host_veths());
    let rules = node.ruleset();
    for ip in &ips {
        assert!(
            !rules.contains(&format!("{ip} ")),
            "element for {ip} left behind"
        );
    }
}

#[test]
fn gc_removes_exactly_the_attachments_not_listed() {
    skip_unless_root!();
    let node = Node::new();
    let conf = node.conf(
        "1.1.0",
        "10.41.0.0/24",
        json!({"ipMasq": true, "macspoofchk": true}),
    );
    let pods: Vec<_> = (0..3).map(|_| (cid(), pod())).collect();
    let results: Vec<_> = pods.iter().map(|(id, p)| node.add(&conf, id, p)).collect();
    // Another network's entries on the same node are not this GC's business.
    let other = {
        let mut c = node.conf("1.1.0", "10.42.0.0/24", json!({"ipMasq": true}));
        c["name"] = json!("other-net");
        c["bridge"] = json!("cni1");
        c
    };
    let (other_id, other_pod) = (cid(), pod());
    let other_result = node.add(&other, &other_id, &other_pod);

    let keep = &pods[0].0;
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": keep, "ifname": "eth0"}]);
    node.call("GC", &gc, "", None, "").expect_ok("GC");

    let reserved = node.reservations();
    assert!(reserved.contains(&result_ip(&results[0])), "{reserved:?}");
    assert!(!reserved.contains(&result_ip(&results[1])), "{reserved:?}");
    assert!(!reserved.contains(&result_ip(&results[2])), "{reserved:?}");
    assert!(reserved.contains(&result_ip(&other_result)), "{reserved:?}");
    let rules = node.ruleset();
    assert!(
        rules.contains(&format!("podnet-test/{keep}/eth0")),
        "{rules}"
    );
    for (id, _) in &pods[1..] {
        assert!(
            !rules.contains(&format!("podnet-test/{id}/eth0")),
            "{rules}"
        );
    }
    assert!(
        rules.contains(&format!("other-net/{other_id}/eth0")),
        "{rules}"
    );
    let kept_veth = results[0]["interfaces"][1]["name"].as_str().unwrap();
    assert!(
        rules.contains(kept_veth),
        "spoof-check entry of the kept pod: {rules}"
    );

    // The older key works too.
    let mut gc = conf.clone();
    gc["cni.dev/attachments"] = json!([]);
    node.call("GC", &gc, "", None, "")
        .expect_ok("GC with cni.dev/attachments");
    assert!(!node.ruleset().contains(&format!("podnet-test/{keep}/eth0")));
    assert!(!node.reservations().contains(&result_ip(&results[0])));
}
