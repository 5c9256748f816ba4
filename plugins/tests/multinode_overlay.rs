//! 3+ nodes × 2 pods through the real binaries, for host-gw and VXLAN: full
//! reachability without NAT (IPv4 and IPv6), node join and removal, agent
//! restart without flaps, a killed agent, hand-deleted entries, dir and etcd stores.

mod multinode_common;

use std::time::Duration;

use multinode_common::{basic_lab, Backend};
use netns_fixtures::skip_unless_root;

fn pods_reach_across_nodes(b: Backend, etcd: bool) {
    let lab = basic_lab(b, etcd, 3);
    // basic_lab already asserted it; once more after a resync period, to show
    // the steady state (not only a transient) is right.
    std::thread::sleep(Duration::from_millis(1200));
    lab.all_reach()
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
}

fn join_then_leave(b: Backend, etcd: bool) {
    let mut lab = basic_lab(b, etcd, 3);
    let i = lab.cluster.add_node().unwrap();
    lab.start_agent(i);
    lab.wait_lease(i);
    let subnet = lab.node_subnet_v4(i);
    let joined = lab.wait_entries(&[0, 1, 2], "route to the new node", |e| e.contains(&subnet));
    eprintln!(
        "{b:?}: node 4's subnet programmed on all others {joined:?} after its lease file appeared"
    );
    lab.add_pod(i);
    lab.add_pod(i);
    lab.assert_all_reach_eventually();

    let name = lab.cluster.remove_node(i);
    lab.delete_node_object(&name);
    let left = lab.wait_entries(&[0, 1, 2], "entries of the removed node gone", |e| {
        !e.contains(&subnet)
    });
    eprintln!("{b:?}: removed node's entries gone from all others {left:?} after the delete");
    if b == Backend::Vxlan {
        let mac = podnet_plugins::overlay::Mac::derived(&name, 1).to_string();
        lab.wait_entries(&[0, 1, 2], "FDB/neighbour of the removed node gone", |e| {
            !e.contains(&mac)
        });
    }
}

/// Lines a restart must not produce: any change to podnet's routes, VXLAN
/// neighbours/FDB or the VXLAN device.
fn ours(line: &str) -> bool {
    line.contains("proto 112") || line.contains("podnet.")
}

fn restart_without_flaps_then_cleanup(b: Backend) {
    let mut lab = basic_lab(b, false, 3);
    let before = lab.entries(0);
    let mon_file = lab.cluster.shared_dir().join("monitor.txt");
    let out = std::fs::File::create(&mon_file).unwrap();
    let mut monitors: Vec<std::process::Child> = [
        ("ip", &["monitor", "route", "neigh", "link"][..]),
        ("bridge", &["monitor", "fdb"][..]),
    ]
    .into_iter()
    .map(|(prog, args)| {
        lab.cluster.nodes[0]
            .ns
            .command(prog)
            .args(args)
            .stdout(out.try_clone().unwrap())
            .spawn()
            .unwrap()
    })
    .collect();
    std::thread::sleep(Duration::from_millis(300));
    let status = lab.cluster.nodes[0].stop_agent(Duration::from_secs(5));
    assert!(
        status.map(|s| s.success()).unwrap_or(false),
        "SIGTERM: clean exit expected, got {status:?}\n{}",
        lab.logs()
    );
    lab.start_agent(0);
    assert!(
        netns_fixtures::wait_until(Duration::from_secs(15), Duration::from_millis(20), || lab
            .synced_count(0)
            >= 2),
        "restarted agent never synced\n{}",
        lab.logs()
    );
    // Two resync periods for anything that would flap to show up.
    std::thread::sleep(Duration::from_millis(2200));
    let ours_so_far = |f: &std::path::Path| -> Vec<String> {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .filter(|l| ours(l))
            .map(str::to_string)
            .collect()
    };
    let changes = ours_so_far(&mon_file);
    assert!(changes.is_empty(), "restart changed entries: {changes:?}");
    assert_eq!(lab.entries(0), before);

    // Node 3 goes away while node 1's agent is down: the restarted agent cleans up.
    lab.cluster.nodes[0].stop_agent(Duration::from_secs(5));
    let gone_subnet = lab.node_subnet_v4(2);
    let gone = lab.cluster.remove_node(2);
    lab.delete_node_object(&gone);
    assert!(
        lab.entries(0).contains(&gone_subnet),
        "precondition: stale entries still there"
    );
    lab.start_agent(0);
    lab.wait_entries(&[0], "entries of the node deleted meanwhile removed", |e| {
        !e.contains(&gone_subnet)
    });
    // The monitor does see our changes (so its silence above meant something).
    std::thread::sleep(Duration::from_millis(200));
    for m in &mut monitors {
        let _ = m.kill();
        let _ = m.wait();
    }
    let seen = ours_so_far(&mon_file);
    assert!(
        seen.iter()
            .any(|l| l.starts_with("Deleted") && l.contains(&gone_subnet)),
        "monitor missed the cleanup: {seen:?}"
    );
}

fn killed_agent_then_repairs(b: Backend) {
    let mut lab = basic_lab(b, false, 3);
    lab.cluster.nodes[0].kill_agent();
    // Pods of node 1 keep talking to node 2 and 3 without their agent.
    for other in [2, 4] {
        lab.reach(0, other, false).unwrap();
        lab.reach(other, 0, true).unwrap();
    }
    let s1 = lab.node_subnet_v4(1);
    let ns0 = &lab.cluster.nodes[0].ns;
    ns0.sh(&format!("ip route del {s1}")).unwrap();
    assert!(
        lab.reach(0, 2, false).is_err(),
        "precondition: the deleted route mattered"
    );
    lab.start_agent(0);
    lab.wait_entries(
        &[0],
        "route deleted while the agent was down is back",
        |e| e.contains(&s1),
    );
    lab.reach(0, 2, false).unwrap();

    // With the agent running, the periodic resync repairs a hand deletion.
    let s2 = lab.node_subnet_v4(2);
    lab.cluster.nodes[0]
        .ns
        .sh(&format!("ip route del {s2}"))
        .unwrap();
    if b == Backend::Vxlan {
        let gw = s2.split('/').next().unwrap().to_string();
        lab.cluster.nodes[0]
            .ns
            .sh(&format!("ip neigh del {gw} dev podnet.1"))
            .unwrap();
    }
    lab.wait_entries(&[0], "hand-deleted entries repaired by resync", |e| {
        e.contains(&s2)
    });
    lab.assert_all_reach_eventually();
}

fn address_change(b: Backend) {
    let mut lab = basic_lab(b, false, 3);
    lab.cluster.nodes[1].stop_agent(Duration::from_secs(5));
    let ns = &lab.cluster.nodes[1].ns;
    ns.sh("ip addr del 10.90.0.2/24 dev eth0 && ip addr add 10.90.0.102/24 dev eth0")
        .unwrap();
    lab.cluster.nodes[1].ip = "10.90.0.102".into();
    lab.start_agent(1);
    let what = "others use node 2's new address";
    lab.wait_entries(&[0, 2], what, |e| {
        e.contains("10.90.0.102") && !e.contains("10.90.0.2 ")
    });
    lab.assert_all_reach_eventually();
}

macro_rules! both {
    ($name:ident, $f:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn host_gw() {
                skip_unless_root!();
                $f(Backend::HostGw)
            }
            #[test]
            fn vxlan() {
                skip_unless_root!();
                $f(Backend::Vxlan)
            }
        }
    };
}

both!(pods_reach_dir_store, |b| pods_reach_across_nodes(b, false));
both!(pods_reach_etcd_store, |b| pods_reach_across_nodes(b, true));
both!(node_join_and_leave_dir_store, |b| join_then_leave(b, false));
both!(node_join_and_leave_etcd_store, |b| join_then_leave(b, true));
both!(
    agent_restart_no_flaps_and_cleanup,
    restart_without_flaps_then_cleanup
);
both!(
    agent_killed_traffic_continues_and_repairs,
    killed_agent_then_repairs
);
both!(node_address_change_propagates, address_change);
