//! Partial syncs end in exactly the ruleset a full sync of the same state
//! programs (compared as normalized `nft -j list table` output).

use std::sync::Arc;

use netns_fixtures::Netns;
use podnet_proxy::metrics::Metrics;
use podnet_proxy::plan::Layout;
use podnet_proxy::sync::{Proxier, ProxyConfig};
use podnet_state::compact::{EndpointSlice, Service};
use podnet_state::{Change, ChangeType, Kind, NamespacedName, ObjectKey, Snapshot};
use serde_json::{json, Value};

fn cfg() -> ProxyConfig {
    ProxyConfig {
        node_name: "node-a".into(),
        cluster_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
        service_cidrs: vec![],
        nodeport_addresses: vec![],
        masquerade_all: false,
        layout: Layout::Podnet,
    }
}

fn svc(name: &str, ip: &str, port: u16, extra: Value) -> Service {
    let mut v = json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": ip, "clusterIPs": [ip], "type": "NodePort",
                 "ports": [{"name": "p", "port": port, "protocol": "TCP", "nodePort": 30000 + port}]}
    });
    if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    Service::from_k8s(serde_json::from_value(v).unwrap()).unwrap()
}

fn slice(svc: &str, eps: &[(&str, &str)]) -> EndpointSlice {
    EndpointSlice::from_k8s(serde_json::from_value(json!({
        "metadata": {"name": format!("{svc}-1"), "namespace": "default", "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "p", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps.iter().map(|(ip, node)| json!({"addresses": [ip], "nodeName": node})).collect::<Vec<_>>()
    }))
    .unwrap())
    .unwrap()
}

/// `nft -j list table ip podnet` without handles, with every list sorted.
fn normalized(ns: &Netns) -> Value {
    fn norm(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("handle");
                for x in m.values_mut() {
                    norm(x);
                }
            }
            Value::Array(a) => {
                for x in a.iter_mut() {
                    norm(x);
                }
                a.sort_by_key(|x| x.to_string());
            }
            _ => {}
        }
    }
    let out = ns.sh("nft -j list table ip podnet").unwrap();
    let mut v: Value = serde_json::from_str(&out).unwrap();
    norm(&mut v);
    v
}

#[test]
fn partial_syncs_match_a_full_sync() {
    netns_fixtures::skip_unless_root!();
    let inc = Netns::new("pxi").unwrap();
    let fresh = Netns::new("pxf").unwrap();
    let mut p = inc
        .enter(|| Proxier::new(cfg(), Arc::new(Metrics::new())).unwrap())
        .unwrap();
    let mut snap = Snapshot {
        synced: true,
        ..Default::default()
    };
    let key = |k: Kind, n: &str| ObjectKey::new(k, Some("default"), n);
    let nn = |n: &str| NamespacedName::new("default", n);
    snap.services
        .insert(nn("a"), Arc::new(svc("a", "10.96.0.1", 80, json!({}))));
    snap.endpoint_slices.insert(
        nn("a-1"),
        Arc::new(slice(
            "a",
            &[("10.244.0.2", "node-a"), ("10.244.1.2", "node-b")],
        )),
    );
    let r = inc.enter(|| p.sync(&snap, None).unwrap()).unwrap();
    assert!(r.full);

    let sticky = json!({"sessionAffinity": "ClientIP", "externalTrafficPolicy": "Local"});
    // Each step changes the snapshot and returns the changed keys.
    type Step = Box<dyn Fn(&mut Snapshot) -> Vec<(Kind, String)>>;
    let steps: Vec<Step> = vec![
        // new service b sharing pod-a (hairpin element refcounted)
        Box::new(move |s| {
            s.services
                .insert(nn("b"), Arc::new(svc("b", "10.96.0.2", 81, json!({}))));
            s.endpoint_slices
                .insert(nn("b-1"), Arc::new(slice("b", &[("10.244.0.2", "node-a")])));
            vec![
                (Kind::Service, "b".into()),
                (Kind::EndpointSlice, "b-1".into()),
            ]
        }),
        // a loses an endpoint (moves to pick-*-1, pick-*-2 goes away)
        Box::new(move |s| {
            s.endpoint_slices
                .insert(nn("a-1"), Arc::new(slice("a", &[("10.244.1.2", "node-b")])));
            vec![(Kind::EndpointSlice, "a-1".into())]
        }),
        // b becomes sticky + Local (per-service chains, affinity sets)
        Box::new(move |s| {
            s.services
                .insert(nn("b"), Arc::new(svc("b", "10.96.0.2", 81, sticky.clone())));
            vec![(Kind::Service, "b".into())]
        }),
        // b's endpoints change while sticky
        Box::new(move |s| {
            s.endpoint_slices.insert(
                nn("b-1"),
                Arc::new(slice(
                    "b",
                    &[("10.244.0.3", "node-a"), ("10.244.1.3", "node-b")],
                )),
            );
            vec![(Kind::EndpointSlice, "b-1".into())]
        }),
        // a's slice deleted: a has no endpoints (reject)
        Box::new(move |s| {
            s.endpoint_slices.remove(&nn("a-1"));
            vec![(Kind::EndpointSlice, "a-1".into())]
        }),
        // b deleted entirely
        Box::new(move |s| {
            s.services.remove(&nn("b"));
            s.endpoint_slices.remove(&nn("b-1"));
            vec![
                (Kind::Service, "b".into()),
                (Kind::EndpointSlice, "b-1".into()),
            ]
        }),
        // c's slice arrives before c
        Box::new(move |s| {
            s.endpoint_slices
                .insert(nn("c-1"), Arc::new(slice("c", &[("10.244.1.7", "node-b")])));
            vec![(Kind::EndpointSlice, "c-1".into())]
        }),
        Box::new(move |s| {
            s.services
                .insert(nn("c"), Arc::new(svc("c", "10.96.0.3", 82, json!({}))));
            vec![(Kind::Service, "c".into())]
        }),
        // a slice relabeled: c-1 now counts for a (a gets c's pod, c none)
        Box::new(move |s| {
            s.endpoint_slices
                .insert(nn("c-1"), Arc::new(slice("a", &[("10.244.1.7", "node-b")])));
            vec![(Kind::EndpointSlice, "c-1".into())]
        }),
        // Last: 300 new services in one sync outgrow the shared sets' size
        // (256), so the sync replaces the tables with larger ones.
        Box::new(move |s| {
            let mut keys = Vec::new();
            for i in 0..300u16 {
                let name = format!("many-{i}");
                let ip = format!("10.96.{}.{}", 1 + i / 250, i % 250 + 1);
                s.services
                    .insert(nn(&name), Arc::new(svc(&name, &ip, 1000 + i, json!({}))));
                let sl = format!("{name}-1");
                s.endpoint_slices
                    .insert(nn(&sl), Arc::new(slice(&name, &[("10.244.1.8", "node-b")])));
                keys.push((Kind::Service, name));
                keys.push((Kind::EndpointSlice, sl));
            }
            keys
        }),
    ];
    let last = steps.len() - 1;
    for (i, step) in steps.iter().enumerate() {
        let changed: Vec<Change> = step(&mut snap)
            .into_iter()
            .map(|(k, n)| Change {
                key: key(k, &n),
                change: ChangeType::Modified,
            })
            .collect();
        let r = inc
            .enter(|| p.sync(&snap, Some(&changed)).unwrap())
            .unwrap();
        assert_eq!(r.full, i == last, "step {i}: full {}", r.full);
        let full = fresh
            .enter(|| {
                Proxier::new(cfg(), Arc::new(Metrics::new()))
                    .unwrap()
                    .sync(&snap, None)
                    .unwrap()
            })
            .unwrap();
        assert_eq!(normalized(&inc), normalized(&fresh), "after step {i}");
        assert_eq!(
            (r.elements, r.service_ports, r.endpoints),
            (full.elements, full.service_ports, full.endpoints),
            "counts after step {i}"
        );
    }
}

/// Two services claim the same externalIP / LB IP and port: the first in
/// name order owns it in full and partial syncs alike, and losing or
/// changing the owner hands it to the next claimant.
#[test]
fn shared_addresses_go_to_the_first_claimant_in_partial_syncs_too() {
    netns_fixtures::skip_unless_root!();
    let inc = Netns::new("pxi").unwrap();
    let fresh = Netns::new("pxf").unwrap();
    let mut p = inc
        .enter(|| Proxier::new(cfg(), Arc::new(Metrics::new())).unwrap())
        .unwrap();
    let nn = |n: &str| NamespacedName::new("default", n);
    let key = |k: Kind, n: &str| ObjectKey::new(k, Some("default"), n);
    // ClusterIP services on port 80 with the given externalIPs.
    let ext = |name: &str, ip: &str, externals: &[&str]| {
        Arc::new(svc(
            name,
            ip,
            80,
            json!({"type": "ClusterIP", "externalIPs": externals,
                   "ports": [{"name": "p", "port": 80, "protocol": "TCP"}]}),
        ))
    };
    // A LoadBalancer service with ingress IP 198.51.100.9 and source ranges.
    let lb = |name: &str, ip: &str, ranges: &[&str]| {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ip, "clusterIPs": [ip], "type": "LoadBalancer",
                     "loadBalancerSourceRanges": ranges,
                     "ports": [{"name": "p", "port": 80, "protocol": "TCP", "nodePort": 31000 + ip.len() as u16}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.9"}]}}
        });
        v["metadata"]["name"] = json!(name);
        Arc::new(Service::from_k8s(serde_json::from_value(v).unwrap()).unwrap())
    };
    let mut snap = Snapshot {
        synced: true,
        ..Default::default()
    };
    for (name, ip, ep) in [
        ("x", "10.96.0.11", "10.244.1.11"),
        ("y", "10.96.0.12", "10.244.1.12"),
        ("z", "10.96.0.13", "10.244.1.13"),
        ("lb-a", "10.96.0.21", "10.244.1.21"),
        ("lb-b", "10.96.0.222", "10.244.1.22"),
    ] {
        snap.endpoint_slices.insert(
            nn(&format!("{name}-1")),
            Arc::new(slice(name, &[(ep, "node-b")])),
        );
        let s = match name {
            "x" | "y" => ext(name, ip, &["192.0.2.1"]),
            "z" => ext(name, ip, &["192.0.2.1", "192.0.2.2"]),
            "lb-a" => lb(name, ip, &["203.0.113.0/24"]),
            _ => lb(name, ip, &["10.90.0.0/16", "2001:db8::/32"]),
        };
        snap.services.insert(nn(name), s);
    }
    // IPv6: the interval set's key is 40 bytes there.
    let lb6 = json!({
        "metadata": {"name": "lb-6", "namespace": "default"},
        "spec": {"clusterIP": "fd00:96::21", "clusterIPs": ["fd00:96::21"], "type": "LoadBalancer",
                 "loadBalancerSourceRanges": ["2001:db8:1::/48", "2001:db8:1:2::/64", "2001:db8:7::1/128"],
                 "ports": [{"name": "p", "port": 80, "protocol": "TCP", "nodePort": 31100}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "2001:db8::9"}]}}
    });
    snap.services.insert(
        nn("lb-6"),
        Arc::new(Service::from_k8s(serde_json::from_value(lb6).unwrap()).unwrap()),
    );
    let r = inc.enter(|| p.sync(&snap, None).unwrap()).unwrap();
    assert!(r.full);
    assert_eq!(
        r.skipped, 3,
        "y and z yield 192.0.2.1, lb-b yields the LB IP"
    );
    let allow6 = inc.sh("nft list set ip6 podnet firewall-allow").unwrap();
    assert!(
        allow6.contains("2001:db8::9 . tcp . 80 . 2001:db8:1::/48")
            && allow6.contains("2001:db8::9 . tcp . 80 . 2001:db8:7::1")
            && !allow6.contains("2001:db8:1:2::/64"),
        "{allow6}"
    );
    assert!(r.full);
    assert_eq!(
        r.skipped, 3,
        "y and z yield 192.0.2.1, lb-b yields the LB IP"
    );
    let (_, plans) = p.plans(&snap);
    let ips = podnet_proxy::render::table(&plans[&podnet_proxy::model::Family::V4]);
    assert!(
        ips.contains("203.0.113.0/24") && !ips.contains("10.90.0.0/16"),
        "dry run: lb-a owns the LB IP and its ranges apply:\n{ips}"
    );
    assert_eq!(normalized_after_full(&fresh, &snap), normalized(&inc));

    type Step = Box<dyn Fn(&mut Snapshot) -> Vec<(Kind, String)>>;
    let steps: Vec<Step> = vec![
        // the owner goes: y (next in name order) takes 192.0.2.1
        Box::new(move |s| {
            s.services.remove(&nn("x"));
            vec![(Kind::Service, "x".into())]
        }),
        // x comes back and takes it again
        Box::new(move |s| {
            s.services
                .insert(nn("x"), ext("x", "10.96.0.11", &["192.0.2.1"]));
            vec![(Kind::Service, "x".into())]
        }),
        // x and y both change their externalIPs away: z is the only claimant
        Box::new(move |s| {
            s.services
                .insert(nn("x"), ext("x", "10.96.0.11", &["192.0.2.7"]));
            s.services.insert(nn("y"), ext("y", "10.96.0.12", &[]));
            vec![(Kind::Service, "x".into()), (Kind::Service, "y".into())]
        }),
        // only an endpoint of z changes: its address stays its own
        Box::new(move |s| {
            s.endpoint_slices.insert(
                nn("z-1"),
                Arc::new(slice("z", &[("10.244.1.99", "node-b")])),
            );
            vec![(Kind::EndpointSlice, "z-1".into())]
        }),
        // the LB IP's owner changes its ranges
        Box::new(move |s| {
            s.services.insert(
                nn("lb-a"),
                lb("lb-a", "10.96.0.21", &["203.0.114.0/24", "10.1.0.0/16"]),
            );
            vec![(Kind::Service, "lb-a".into())]
        }),
        // the owner of the LB IP goes: lb-b's ranges apply
        Box::new(move |s| {
            s.services.remove(&nn("lb-a"));
            s.endpoint_slices.remove(&nn("lb-a-1"));
            vec![
                (Kind::Service, "lb-a".into()),
                (Kind::EndpointSlice, "lb-a-1".into()),
            ]
        }),
        // lb-b drops its ranges
        Box::new(move |s| {
            s.services
                .insert(nn("lb-b"), lb("lb-b", "10.96.0.222", &[]));
            vec![(Kind::Service, "lb-b".into())]
        }),
    ];
    for (i, step) in steps.iter().enumerate() {
        let changed: Vec<Change> = step(&mut snap)
            .into_iter()
            .map(|(k, n)| Change {
                key: key(k, &n),
                change: ChangeType::Modified,
            })
            .collect();
        let r = inc
            .enter(|| p.sync(&snap, Some(&changed)).unwrap())
            .unwrap();
        assert!(!r.full, "step {i}");
        let full = fresh
            .enter(|| {
                Proxier::new(cfg(), Arc::new(Metrics::new()))
                    .unwrap()
                    .sync(&snap, None)
                    .unwrap()
            })
            .unwrap();
        assert_eq!(normalized(&inc), normalized(&fresh), "after step {i}");
        assert_eq!(
            (r.elements, r.service_ports, r.skipped),
            (full.elements, full.service_ports, full.skipped),
            "counts after step {i}"
        );
    }
}

fn normalized_after_full(ns: &Netns, snap: &Snapshot) -> Value {
    ns.enter(|| {
        Proxier::new(cfg(), Arc::new(Metrics::new()))
            .unwrap()
            .sync(snap, None)
            .unwrap()
    })
    .unwrap();
    normalized(ns)
}
