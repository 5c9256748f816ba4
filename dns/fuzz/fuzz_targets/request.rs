//! The request path: any packet through parse + lookup + response assembly
//! (UDP and TCP limits), and the upstream-response walker used by the
//! forwarder. Invariants: no panic, UDP replies within the client's limit,
//! replies carry the query id.
//!
//! Run: `cd dns/fuzz && cargo +nightly fuzz run request`.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use podnet_dns::answer::{handle_packet, Outcome};
use podnet_dns::build::IndexBuilder;
use podnet_dns::fixtures::{self, Ep};
use podnet_dns::index::{Index, PodMode, ZoneConfig};
use podnet_dns::wire;
use podnet_state::{NamespacedName, Snapshot};

fn index() -> &'static Arc<Index> {
    static INDEX: OnceLock<Arc<Index>> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut s = Snapshot {
            synced: true,
            ..Default::default()
        };
        let nn = NamespacedName::new;
        s.services.insert(nn("default", "web"), Arc::new(fixtures::service("default", "web", &["10.96.0.1", "fd00::1"], &[("http", 80, "TCP")])));
        s.services.insert(nn("default", "db"), Arc::new(fixtures::headless("default", "db", &[("pg", 5432, "TCP")])));
        let eps: Vec<Ep> = (0..60).map(|i| Ep::ready(&format!("10.244.0.{}", i + 1))).collect();
        s.endpoint_slices.insert(nn("default", "db-1"), Arc::new(fixtures::slice("default", "db-1", "db", "IPv4", &eps, &[("pg", 5432, "TCP")])));
        s.services.insert(nn("default", "ext"), Arc::new(fixtures::external("default", "ext", "web.default.svc.cluster.local")));
        let zone = ZoneConfig::new("cluster.local", 5, 5, PodMode::Verified, vec!["10.96.0.10".parse().unwrap()]).unwrap();
        IndexBuilder::new(zone).full(&s)
    })
}

fuzz_target!(|data: &[u8]| {
    let idx = index();
    let mut out = Vec::new();
    for udp in [true, false] {
        match handle_packet(idx, data, || true, udp, &mut out) {
            Outcome::Reply(_) | Outcome::Chase(_) => {
                assert!(out.len() >= wire::HEADER_LEN);
                assert_eq!(out[0..2], data[0..2]);
                if udp {
                    let limit = wire::parse_query(data).map(|q| q.udp_limit()).unwrap_or(wire::MAX_UDP_PAYLOAD as usize);
                    assert!(out.len() <= limit.max(512), "{} > {}", out.len(), limit);
                }
                // What we send must itself be well formed.
                assert!(wire::inspect_response(&out).is_ok());
            }
            Outcome::Drop | Outcome::Forward => {}
        }
    }
    if let Ok(info) = wire::inspect_response(data) {
        let _ = wire::strip_trailing_opt(data.to_vec(), &info);
    }
});
