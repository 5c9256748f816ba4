//! podnet-node and the meta plugins at their edges: bad ClusterConfigs are
//! refused with a clear error and nothing programmed; traffic leaving the
//! cluster is masqueraded; without a lease the plugins say "try again" (ADD
//! code 11, STATUS code 50).

mod multinode_common;

use std::time::Duration;

use multinode_common::{Backend, Lab, Opts};
use netns_fixtures::{skip_unless_root, wait_until};
use podnet_state::{Kind, ObjectKey};
use serde_json::{json, Value};

fn lab(nodes: usize, backend: Backend) -> Lab {
    Lab::new(Opts {
        nodes,
        backend,
        etcd: false,
        ipv6: false,
    })
}

/// Starts node `i`'s agent and expects it to exit non-zero with `reason` in
/// its log, having programmed nothing.
fn expect_refusal(lab: &mut Lab, i: usize, reason: &str) {
    lab.start_agent(i);
    let node = &mut lab.cluster.nodes[i];
    let exited = wait_until(Duration::from_secs(15), Duration::from_millis(20), || {
        !node.agent_running()
    });
    let log = node.log();
    assert!(exited, "agent kept running on a bad config:\n{log}");
    let status = node.stop_agent(Duration::from_secs(1));
    assert!(
        status.map(|s| !s.success()).unwrap_or(true),
        "agent exited 0 on a bad config:\n{log}"
    );
    assert!(log.contains(reason), "log does not say {reason:?}:\n{log}");
    assert!(!node.lease_file().exists(), "a lease file was written");
    let links = node.ns.sh("ip -o link show").unwrap();
    assert!(!links.contains("podnet."), "{links}");
    assert_eq!(node.ns.sh("ip route show proto 112").unwrap(), "");
    assert!(!node
        .ns
        .sh("nft list tables")
        .unwrap()
        .contains("podnet-node"));
    let name = node.name.clone();
    let obj = lab
        .rt
        .block_on(lab.store.get(&ObjectKey::new(Kind::Node, None, &name)))
        .unwrap();
    assert!(obj.is_none(), "node object was published: {obj:?}");
}

#[test]
fn overlapping_cluster_and_service_cidrs_are_refused() {
    skip_unless_root!();
    let mut lab = lab(1, Backend::Vxlan);
    lab.put_config(json!({
        "clusterCIDRs": ["10.96.0.0/12"], "serviceCIDRs": ["10.96.0.0/16"], "backend": "vxlan"
    }));
    expect_refusal(&mut lab, 0, "overlaps service CIDR");
}

#[test]
fn subnet_len_larger_than_the_cluster_cidr_is_refused() {
    skip_unless_root!();
    let mut lab = lab(1, Backend::HostGw);
    lab.put_config(json!({ "clusterCIDRs": ["10.244.0.0/16"], "subnetLen": 8 }));
    expect_refusal(&mut lab, 0, "subnetLen 8");
}

#[test]
fn underlay_inside_the_cluster_cidr_is_refused() {
    skip_unless_root!();
    let mut lab = lab(1, Backend::HostGw);
    lab.put_config(json!({ "clusterCIDRs": ["10.0.0.0/8"], "subnetLen": 24 }));
    expect_refusal(&mut lab, 0, "contains this node's underlay address");
}

#[test]
fn exhausted_cluster_cidr_is_refused_for_the_node_that_finds_no_block() {
    skip_unless_root!();
    let mut lab = lab(2, Backend::Vxlan);
    lab.put_config(
        json!({ "clusterCIDRs": ["10.244.0.0/24"], "subnetLen": 24, "backend": "vxlan" }),
    );
    lab.start_agent(0);
    lab.wait_lease(0);
    expect_refusal(&mut lab, 1, "no free /24 block");
    // The first node is unaffected.
    assert!(lab.cluster.nodes[0].agent_running());
}

#[test]
fn traffic_leaving_the_cluster_is_masqueraded_pod_to_pod_is_not() {
    skip_unless_root!();
    let mut lab = lab(2, Backend::Vxlan);
    lab.default_config(false);
    lab.start_all();
    let a = lab.add_pod(0);
    let b = lab.add_pod(1);
    lab.assert_all_reach_eventually();
    // An "outside" host: an address on the switch itself, with an echo server.
    let sw = lab.cluster.switch();
    sw.sh("ip addr add 10.90.0.200/24 dev br0").unwrap();
    let mut echo = std::process::Command::new("socat");
    echo.args([
        "TCP4-LISTEN:7001,fork,reuseaddr",
        "SYSTEM:echo $SOCAT_PEERADDR",
    ]);
    let _echo = sw.spawn(echo).unwrap();
    wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
        sw.sh("ss -Hltn 'sport = :7001' | grep -q .").is_ok()
    });
    let seen = lab.pods[a]
        .ns
        .sh("socat -T2 - TCP4:10.90.0.200:7001 </dev/null")
        .unwrap();
    assert_eq!(
        seen.trim(),
        lab.cluster.nodes[0].ip,
        "outside host must see the node address"
    );
    lab.reach(a, b, false).unwrap();
    let rules = lab.cluster.nodes[0]
        .ns
        .sh("nft list table ip podnet-node")
        .unwrap();
    assert!(rules.contains("masquerade"), "{rules}");
}

fn cni_code(v: &Value) -> Option<u64> {
    v["code"].as_u64()
}

#[test]
fn without_a_lease_add_says_try_again_and_status_not_available() {
    skip_unless_root!();
    for backend in [Backend::HostGw, Backend::Vxlan] {
        let mut lab = lab(1, backend);
        let pod = netns_fixtures::Netns::new("pod").unwrap();
        let (ok, v) = lab.cni(0, "ADD", "c1", Some(&pod.path().display().to_string()));
        assert!(!ok);
        assert_eq!(cni_code(&v), Some(11), "{v}");
        let (ok, v) = lab.cni(0, "STATUS", "", None);
        assert!(!ok);
        assert_eq!(cni_code(&v), Some(50), "{v}");
        // DEL of something never added still succeeds.
        let (ok, v) = lab.cni(0, "DEL", "c1", Some(&pod.path().display().to_string()));
        assert!(ok, "{v}");
        assert_eq!(pod.sh("ip -o link show | wc -l").unwrap().trim(), "1");

        // Once the agent has written the lease, ADD works, STATUS is fine,
        // and a full DEL releases and removes the pod interface.
        lab.default_config(false);
        lab.start_all();
        let (ok, v) = lab.cni(0, "STATUS", "", None);
        assert!(ok, "{v}");
        let (ok, v) = lab.cni(0, "ADD", "c1", Some(&pod.path().display().to_string()));
        assert!(ok, "{v}");
        let addr = v["ips"][0]["address"].as_str().unwrap().to_string();
        assert!(addr.starts_with("10.244."), "{addr}");
        assert!(pod.sh("ip addr show eth0").unwrap().contains(&addr));
        let (ok, v) = lab.cni(0, "DEL", "c1", Some(&pod.path().display().to_string()));
        assert!(ok, "{v}");
        assert!(pod.sh("ip -o link show eth0").is_err());
    }
}

/// Starts node 0's agent with a 1 s store lease, freezes it (SIGSTOP) until
/// the lease has expired and its subnet claim is gone, runs `meanwhile`,
/// then lets it continue.
fn freeze_past_lease_expiry(lab: &mut Lab, meanwhile: impl FnOnce(&Lab)) -> String {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    lab.default_config(false);
    let mut args = lab.agent_args(0);
    args.extend(["--lease-ttl".to_string(), "1s".to_string()]);
    let bin = multinode_common::agent_bin();
    lab.cluster.nodes[0]
        .start_agent(&bin, &args, &[("RUST_LOG", "info")])
        .unwrap();
    lab.wait_lease(0);
    let subnet = lab.node_subnet_v4(0);
    let pid = Pid::from_raw(lab.cluster.nodes[0].agent_pid().unwrap() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let gone = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lab.rt
            .block_on(podnet_state::subnet::list_leases(&*lab.store))
            .map(|l| l.is_empty())
            .unwrap_or(false)
    });
    assert!(gone, "the expired store lease did not release the subnet");
    meanwhile(lab);
    kill(pid, Signal::SIGCONT).unwrap();
    subnet
}

#[test]
fn expired_store_lease_is_claimed_again_with_the_same_subnet() {
    skip_unless_root!();
    let mut lab = lab(1, Backend::HostGw);
    let subnet = freeze_past_lease_expiry(&mut lab, |_| {});
    let back = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lab.rt
            .block_on(podnet_state::subnet::list_leases(&*lab.store))
            .map(|l| {
                l.iter()
                    .any(|l| l.spec.subnet.to_string() == subnet && l.spec.node == "node1")
            })
            .unwrap_or(false)
    });
    assert!(back, "subnet not claimed again\n{}", lab.logs());
    assert!(lab.cluster.nodes[0].agent_running(), "{}", lab.logs());
}

#[test]
fn subnet_taken_while_the_lease_was_expired_ends_the_agent() {
    skip_unless_root!();
    let mut lab = lab(1, Backend::HostGw);
    freeze_past_lease_expiry(&mut lab, |lab| {
        let rt = &lab.rt;
        rt.block_on(async {
            // Allocation starts at the lowest free block: ours, now that it is free.
            let cfg: podnet_state::object::ClusterConfig = serde_json::from_value(json!({
                "spec": { "clusterCIDRs": ["10.244.0.0/24"], "subnetLen": 24 }
            }))
            .unwrap();
            let l = lab
                .store
                .grant_lease(Duration::from_secs(3600))
                .await
                .unwrap();
            podnet_state::subnet::claim_subnets(&*lab.store, "intruder", &cfg, &*l)
                .await
                .unwrap();
        });
    });
    let node = &mut lab.cluster.nodes[0];
    let exited = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        !node.agent_running()
    });
    assert!(
        exited,
        "agent kept running without its subnet\n{}",
        node.log()
    );
    assert!(
        node.log().contains("lost this node's pod subnets"),
        "{}",
        node.log()
    );
}
