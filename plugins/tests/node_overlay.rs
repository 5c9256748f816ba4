//! The overlay's kernel side in namespaces: VXLAN device creation and repair,
//! applying a diff, reading it back, idempotence, cleanup of removed nodes,
//! foreign routes left alone, and real traffic over both data paths.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use netns_fixtures::{skip_unless_root, Netns, Underlay};
use podnet_plugins::overlay::kernel::{Kernel, VxlanSpec};
use podnet_plugins::overlay::{
    desired, diff, vxlan_device_name, DataPath, Mac, Mode, Op, RemoteNode,
};

/// Runs `f` with a Kernel whose socket lives in `ns`.
fn in_ns<R: Send>(ns: &Netns, f: impl AsyncFnOnce(Kernel) -> R + Send) -> R {
    ns.enter(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let k = Kernel::connect().unwrap();
            f(k).await
        })
    })
    .unwrap()
}

fn net(s: &str) -> IpNetwork {
    s.parse().unwrap()
}
fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn remote(name: &str, addr: &str, subnets: &[&str]) -> RemoteNode {
    RemoteNode {
        name: name.into(),
        addresses: vec![ip(addr)],
        subnets: subnets.iter().map(|s| net(s)).collect(),
        vtep_mac: Some(Mac::derived(name, 1)),
    }
}

fn spec(node: &str, local: &str, underlay_index: u32, subnet0: &str) -> VxlanSpec {
    VxlanSpec {
        name: vxlan_device_name(1),
        vni: 1,
        port: 4789,
        local: ip(local),
        underlay_index,
        mtu: 1450,
        mac: Mac::derived(node, 1),
        addresses: vec![ip(subnet0)],
    }
}

/// Creates the VXLAN device in `ns` and programs `remotes`; returns what the kernel then holds.
fn program(
    ns: &Netns,
    node: &str,
    local: &str,
    subnet0: &str,
    remotes: Vec<RemoteNode>,
) -> (DataPath, DataPath) {
    let local = local.to_string();
    let subnet0 = subnet0.to_string();
    let node = node.to_string();
    in_ns(ns, async move |k| {
        let under = k.link_with_address(ip(&local)).await.unwrap().unwrap();
        let vx = k
            .ensure_vxlan(&spec(&node, &local, under, &subnet0))
            .await
            .unwrap();
        let mode = Mode::Vxlan {
            local_underlay: ip(&local),
        };
        let (want, skipped) = desired(mode, &[], &remotes);
        assert!(skipped.is_empty(), "{skipped:?}");
        let actual = k.read(Some(vx)).await.unwrap();
        let errs = k.apply(&diff(&want, &actual), Some(vx)).await;
        assert!(errs.is_empty(), "{errs:?}");
        (want, k.read(Some(vx)).await.unwrap())
    })
}

fn two_nodes() -> (Netns, Netns, Underlay) {
    let a = Netns::new("ova").unwrap();
    let b = Netns::new("ovb").unwrap();
    let u = Underlay::veth(&a, "10.90.0.1/24", &b, "10.90.0.2/24").unwrap();
    for ns in [&a, &b] {
        ns.sh("sysctl -qw net.ipv4.ip_forward=1").unwrap();
    }
    (a, b, u)
}

#[test]
fn vxlan_entries_apply_read_back_and_second_pass_is_a_no_op() {
    skip_unless_root!();
    let (a, _b, _u) = two_nodes();
    let remotes = vec![
        remote("b", "10.90.0.2", &["10.244.2.0/24", "fd00:244:2::/64"]),
        remote("c", "10.90.0.3", &["10.244.3.0/24"]),
    ];
    let (want, got) = program(&a, "a", "10.90.0.1", "10.244.1.0", remotes.clone());
    assert_eq!(got, want);
    assert_eq!(want.len(), 3 + 2 + 3);

    // Kernel view matches the `ip` tools' view, in the documented shape.
    let routes = a.sh("ip route show proto 112").unwrap();
    assert!(
        routes.contains("10.244.2.0/24 via 10.244.2.0 dev podnet.1 onlink"),
        "{routes}"
    );
    let fdb = a.sh("bridge fdb show dev podnet.1").unwrap();
    assert!(
        fdb.contains(&format!("{} dst 10.90.0.2", Mac::derived("b", 1))),
        "{fdb}"
    );
    let neigh = a.sh("ip neigh show dev podnet.1").unwrap();
    assert!(
        neigh.contains("10.244.3.0 lladdr") && neigh.contains("PERMANENT"),
        "{neigh}"
    );
    let link = a.sh("ip -d link show podnet.1").unwrap();
    assert!(
        link.contains("mtu 1450") && link.contains("nolearning") && link.contains("dstport 4789"),
        "{link}"
    );

    // Second pass (a restart with the same state): nothing to do, device kept.
    let index_before = a.sh("ip -o link show podnet.1 | cut -d: -f1").unwrap();
    let ops = in_ns(&a, async move |k| {
        let under = k.link_with_address(ip("10.90.0.1")).await.unwrap().unwrap();
        let vx = k
            .ensure_vxlan(&spec("a", "10.90.0.1", under, "10.244.1.0"))
            .await
            .unwrap();
        let (want, _) = desired(
            Mode::Vxlan {
                local_underlay: ip("10.90.0.1"),
            },
            &[],
            &remotes,
        );
        diff(&want, &k.read(Some(vx)).await.unwrap())
    });
    assert_eq!(ops, vec![]);
    let index_after = a.sh("ip -o link show podnet.1 | cut -d: -f1").unwrap();
    assert_eq!(
        index_before, index_after,
        "the device must not be recreated"
    );
}

#[test]
fn removed_nodes_lose_their_entries_and_foreign_routes_stay() {
    skip_unless_root!();
    let (a, _b, _u) = two_nodes();
    a.sh("ip route add 10.250.0.0/24 via 10.90.0.2").unwrap();
    program(
        &a,
        "a",
        "10.90.0.1",
        "10.244.1.0",
        vec![
            remote("b", "10.90.0.2", &["10.244.2.0/24"]),
            remote("c", "10.90.0.3", &["10.244.3.0/24"]),
        ],
    );
    let (want, got) = program(
        &a,
        "a",
        "10.90.0.1",
        "10.244.1.0",
        vec![remote("b", "10.90.0.2", &["10.244.2.0/24"])],
    );
    assert_eq!(got, want);
    let all = a
        .sh("ip route; ip neigh show dev podnet.1; bridge fdb show dev podnet.1")
        .unwrap();
    assert!(!all.contains("10.244.3.0"), "{all}");
    assert!(!all.contains(&Mac::derived("c", 1).to_string()), "{all}");
    assert!(all.contains("10.250.0.0/24 via 10.90.0.2"), "{all}");
}

#[test]
fn entries_deleted_by_hand_show_up_in_the_diff_and_come_back() {
    skip_unless_root!();
    let (a, _b, _u) = two_nodes();
    let remotes = vec![remote("b", "10.90.0.2", &["10.244.2.0/24"])];
    program(&a, "a", "10.90.0.1", "10.244.1.0", remotes.clone());
    a.sh("ip route del 10.244.2.0/24 && ip neigh del 10.244.2.0 dev podnet.1")
        .unwrap();
    let ops = in_ns(&a, async move |k| {
        let vx = k.link("podnet.1").await.unwrap().unwrap().index;
        let (want, _) = desired(
            Mode::Vxlan {
                local_underlay: ip("10.90.0.1"),
            },
            &[],
            &remotes,
        );
        diff(&want, &k.read(Some(vx)).await.unwrap())
    });
    assert!(
        matches!(ops[..], [Op::SetNeigh(_), Op::SetRoute(_)]),
        "{ops:?}"
    );
    let (want, got) = program(
        &a,
        "a",
        "10.90.0.1",
        "10.244.1.0",
        vec![remote("b", "10.90.0.2", &["10.244.2.0/24"])],
    );
    assert_eq!(got, want);
}

#[test]
fn vxlan_device_with_wrong_parameters_is_recreated_and_mtu_fixed_in_place() {
    skip_unless_root!();
    let (a, _b, _u) = two_nodes();
    a.sh("ip link add podnet.1 type vxlan id 9 dstport 4789 dev eth0 && ip link set podnet.1 up")
        .unwrap();
    program(&a, "a", "10.90.0.1", "10.244.1.0", vec![]);
    let link = a.sh("ip -d link show podnet.1").unwrap();
    assert!(
        link.contains("id 1 ") && link.contains("local 10.90.0.1"),
        "{link}"
    );
    let idx = a.sh("ip -o link show podnet.1 | cut -d: -f1").unwrap();
    a.sh("ip link set podnet.1 mtu 1300 down").unwrap();
    program(&a, "a", "10.90.0.1", "10.244.1.0", vec![]);
    let link = a.sh("ip -d link show podnet.1").unwrap();
    assert!(link.contains("mtu 1450") && link.contains("UP"), "{link}");
    assert_eq!(
        a.sh("ip -o link show podnet.1 | cut -d: -f1").unwrap(),
        idx,
        "MTU fix must not recreate"
    );
    assert!(a
        .sh("ip addr show dev podnet.1")
        .unwrap()
        .contains("10.244.1.0/32"));
}

#[test]
fn traffic_crosses_the_vxlan_overlay_both_ways() {
    skip_unless_root!();
    let (a, b, _u) = two_nodes();
    program(
        &a,
        "a",
        "10.90.0.1",
        "10.244.1.0",
        vec![remote("b", "10.90.0.2", &["10.244.2.0/24"])],
    );
    program(
        &b,
        "b",
        "10.90.0.2",
        "10.244.2.0",
        vec![remote("a", "10.90.0.1", &["10.244.1.0/24"])],
    );
    let out = a.sh("ping -c1 -W2 -I 10.244.1.0 10.244.2.0").unwrap();
    assert!(out.contains("1 received"), "{out}");
}

#[test]
fn traffic_crosses_host_gw_routes() {
    skip_unless_root!();
    let (a, b, _u) = two_nodes();
    b.sh(
        "ip link add pods type bridge && ip addr add 10.244.2.1/24 dev pods && ip link set pods up",
    )
    .unwrap();
    let applied = in_ns(&a, async move |k| {
        let (want, _) = desired(
            Mode::HostGw,
            &[net("10.244.1.0/24")],
            &[remote("b", "10.90.0.2", &["10.244.2.0/24"])],
        );
        let errs = k
            .apply(&diff(&want, &k.read(None).await.unwrap()), None)
            .await;
        assert!(errs.is_empty(), "{errs:?}");
        (want.clone(), k.read(None).await.unwrap())
    });
    assert_eq!(applied.0, applied.1);
    assert!(a
        .sh("ip route show proto 112")
        .unwrap()
        .contains("10.244.2.0/24 via 10.90.0.2 dev eth0"));
    let out = a.sh("ping -c1 -W2 10.244.2.1").unwrap();
    assert!(out.contains("1 received"), "{out}");
}
