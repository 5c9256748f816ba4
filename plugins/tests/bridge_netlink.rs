//! The netlink layer under podnet-bridge, in namespaces: every handle here is opened
//! inside a test namespace (never the machine's), and results are checked with `ip`.

use netns_fixtures::{skip_unless_root, Netns};
use podnet_plugins::netlink::{
    sysctl_read, sysctl_write, Address, BridgeSpec, Handle, Netns as NlNetns, Route, VethSpec,
};

fn open(ns: &Netns) -> (NlNetns, Handle) {
    let n = NlNetns::open(ns.path()).expect("open netns");
    let h = Handle::open_in(&n).expect("handle in netns");
    (n, h)
}

#[test]
fn veth_peer_is_created_directly_in_the_other_namespace() {
    skip_unless_root!();
    let host = Netns::new("nlh").unwrap();
    let pod = Netns::new("nlp").unwrap();
    let (_hn, h) = open(&host);
    let (pn, p) = open(&pod);

    let (br, created) = h
        .bridge_ensure(&BridgeSpec {
            name: "br-t",
            mtu: Some(1400),
            promisc: false,
            vlan_filtering: false,
        })
        .unwrap();
    assert!(created);
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    assert!(br.up);
    assert_eq!(br.mtu, 1400);
    let (again, created) = h
        .bridge_ensure(&BridgeSpec {
            name: "br-t",
            mtu: None,
            promisc: false,
            vlan_filtering: false,
        })
        .unwrap();
    assert!(!created);
    assert_eq!(again.index, br.index);
    // Kernels built without CONFIG_BRIDGE_VLAN_FILTERING answer EOPNOTSUPP.
    let vlan = match h.bridge_ensure(&BridgeSpec {
        name: "br-t",
        mtu: None,
        promisc: false,
        vlan_filtering: true,
    }) {
        Ok((l, _)) => {
            assert_eq!(l.vlan_filtering, Some(true));
            true
        }
        Err(e) if e.errno() == Some(libc::EOPNOTSUPP) => {
            eprintln!("kernel lacks bridge VLAN filtering: VLAN steps not exercised");
            false
        }
        Err(e) => panic!("enabling VLAN filtering: {e}"),
    };

    let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
    h.veth_create(&VethSpec {
        name: "vethtest0",
        peer_name: "eth7",
        peer_netns: Some(&pn),
        mtu: Some(1400),
        peer_mac: Some(mac),
        master: Some(br.index),
        up: true,
    })
    .unwrap();
    let hv = h.link_by_name("vethtest0").unwrap().expect("host end");
    assert_eq!(hv.master, Some(br.index));
    assert!(hv.up);
    assert!(
        h.link_by_name("eth7").unwrap().is_none(),
        "peer must not be on the host"
    );
    let pv = p.link_by_name("eth7").unwrap().expect("peer in pod");
    assert_eq!(pv.mac, Some(mac));
    assert_eq!(pv.mtu, 1400);
    assert_eq!(pv.peer_index, Some(hv.index));
    assert!(pod
        .sh("ip -o link show eth7")
        .unwrap()
        .contains("02:11:22:33:44:55"));

    // A second pair with the same peer name collides in the pod: EEXIST.
    let e = h
        .veth_create(&VethSpec {
            name: "vethtest1",
            peer_name: "eth7",
            peer_netns: Some(&pn),
            mtu: None,
            peer_mac: None,
            master: None,
            up: false,
        })
        .unwrap_err();
    assert!(e.is_exists(), "{e}");
    assert!(h.link_by_name("vethtest1").unwrap().is_none());

    h.bridge_port_set_hairpin(hv.index, true).unwrap();
    assert_eq!(
        h.link_by_index(hv.index).unwrap().unwrap().hairpin,
        Some(true)
    );
    assert!(host
        .sh("ip -d link show vethtest0")
        .unwrap()
        .contains("hairpin on"));
    if vlan {
        h.bridge_vlan_add(hv.index, 42, true).unwrap();
        let vl = host.sh("bridge vlan show dev vethtest0").unwrap();
        assert!(vl.contains("42 PVID Egress Untagged"), "{vl}");
        h.bridge_vlan_del(hv.index, 42).unwrap();
        h.bridge_vlan_del(hv.index, 42).unwrap();
    }

    h.link_set_promisc(br.index, true).unwrap();
    assert!(h.link_by_index(br.index).unwrap().unwrap().promisc);

    // Addresses and routes inside the pod.
    p.link_set_up(pv.index).unwrap();
    let a = Address {
        ip: "10.77.0.5".parse().unwrap(),
        prefix_len: 24,
    };
    p.address_add(pv.index, a).unwrap();
    assert!(p.address_add(pv.index, a).unwrap_err().is_exists());
    assert_eq!(p.addresses(pv.index, Some(true), false).unwrap(), vec![a]);
    let default = Route {
        dst: "0.0.0.0".parse().unwrap(),
        prefix_len: 0,
        gateway: Some("10.77.0.1".parse().unwrap()),
        oif: Some(pv.index),
    };
    p.route_add(&default).unwrap();
    assert!(p.routes(true).unwrap().contains(&default));
    assert!(pod
        .sh("ip route show default")
        .unwrap()
        .contains("via 10.77.0.1 dev eth7"));
    p.route_del(&default).unwrap();
    p.route_del(&default).unwrap();
    assert_eq!(p.address_flush(pv.index).unwrap(), vec![a]);
    assert!(p.addresses(pv.index, None, false).unwrap().is_empty());

    // Deleting one end removes both.
    assert!(p.link_del_by_name("eth7").unwrap());
    assert!(!p.link_del_by_name("eth7").unwrap());
    assert!(h.link_by_name("vethtest0").unwrap().is_none());
}

#[test]
fn bridge_ensure_refuses_a_non_bridge_of_that_name() {
    skip_unless_root!();
    let host = Netns::new("nlb").unwrap();
    host.sh("ip link add notabr type veth peer name notabr1")
        .unwrap();
    let (_n, h) = open(&host);
    let e = h
        .bridge_ensure(&BridgeSpec {
            name: "notabr",
            mtu: None,
            promisc: false,
            vlan_filtering: false,
        })
        .unwrap_err();
    assert!(e.to_string().contains("not a bridge"), "{e}");
}

#[test]
fn sysctls_written_from_a_joined_thread_land_in_that_namespace_only() {
    skip_unless_root!();
    let a = Netns::new("nlsa").unwrap();
    let b = Netns::new("nlsb").unwrap();
    let na = NlNetns::open(a.path()).unwrap();
    let nb = NlNetns::open(b.path()).unwrap();
    na.run(|| sysctl_write("net/ipv4/ip_forward", "1"))
        .unwrap()
        .unwrap();
    assert_eq!(
        na.run(|| sysctl_read("net/ipv4/ip_forward"))
            .unwrap()
            .unwrap(),
        "1"
    );
    assert_eq!(
        nb.run(|| sysctl_read("net/ipv4/ip_forward"))
            .unwrap()
            .unwrap(),
        "0"
    );
    assert_eq!(
        a.sh("cat /proc/sys/net/ipv4/ip_forward").unwrap().trim(),
        "1"
    );
    assert_eq!(
        b.sh("cat /proc/sys/net/ipv4/ip_forward").unwrap().trim(),
        "0"
    );
    // Per-interface keys resolve against the joined namespace's interfaces.
    a.sh("ip link add dummy7 type veth peer name dummy8")
        .unwrap();
    assert!(na
        .run(|| sysctl_read("net/ipv4/conf/dummy7/arp_notify"))
        .unwrap()
        .is_ok());
    assert!(nb
        .run(|| sysctl_read("net/ipv4/conf/dummy7/arp_notify"))
        .unwrap()
        .is_err());
}
