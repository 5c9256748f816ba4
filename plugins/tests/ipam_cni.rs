//! `podnet-ipam` driven through its binary like a runtime: every command and version,
//! dual-stack, requested addresses, ranges, exhaustion, GC, reboot reclaim, bad input.

mod ipam_support;

use ipam_support::{call, run, Net, VERSIONS};
use serde_json::{json, Value};

fn v4() -> Value {
    json!({"subnet": "10.10.0.0/24", "routes": [{"dst": "0.0.0.0/0"}]})
}

#[test]
fn add_check_status_del_in_every_version() {
    for ver in VERSIONS {
        let net = Net::new("net1");
        let conf = net.conf(ver, v4());
        let out = run("ADD", "ctr1", "eth0", &conf);
        let ips = out.ips();
        let r = out.ok();
        assert_eq!(r["cniVersion"], ver);
        assert_eq!(
            ips,
            vec!["10.10.0.2"],
            "{ver}: first address after the gateway"
        );
        assert_eq!(r["ips"][0]["address"], "10.10.0.2/24");
        assert_eq!(r["ips"][0]["gateway"], "10.10.0.1");
        assert_eq!(r["routes"], json!([{"dst": "0.0.0.0/0"}]));
        assert!(r.get("interfaces").is_none(), "IPAM reports no interfaces");
        if ver.starts_with("0.") {
            assert_eq!(r["ips"][0]["version"], "4", "{ver} carries ips[].version");
        } else {
            assert!(
                r["ips"][0].get("version").is_none(),
                "{ver} has no ips[].version"
            );
        }
        assert_eq!(net.reserved(), vec!["10.10.0.2"]);
        assert_eq!(net.owners(), vec!["ctr1@eth0"]);

        let mut with_prev = conf.clone();
        with_prev["prevResult"] = r.clone();
        if ver == "0.3.0" || ver == "0.3.1" {
            run("CHECK", "ctr1", "eth0", &with_prev).err(1);
        } else {
            run("CHECK", "ctr1", "eth0", &with_prev).ok();
            // CHECK for a container that has nothing reserved.
            run("CHECK", "other", "eth0", &conf).err(3);
        }
        if ver == "1.1.0" {
            run("STATUS", "", "", &conf).ok();
        } else {
            run("STATUS", "", "", &conf).err(1);
            run("GC", "", "", &conf).err(1);
        }

        assert_eq!(run("DEL", "ctr1", "eth0", &conf).ok(), Value::Null);
        assert!(net.reserved().is_empty(), "{ver}: DEL released the address");
        assert!(
            net.owners().is_empty(),
            "{ver}: DEL removed the owner index"
        );
        run("DEL", "ctr1", "eth0", &conf).ok();
        run("DEL", "never-added", "eth0", &conf).ok();
        if ver >= "0.4.0" {
            run("CHECK", "ctr1", "eth0", &conf).err(3);
        }
    }
}

#[test]
fn add_retry_returns_same_address_per_ifname() {
    let net = Net::new("net1");
    let conf = net.conf("1.0.0", v4());
    let a = run("ADD", "ctr1", "eth0", &conf).ips();
    let b = run("ADD", "ctr1", "eth0", &conf).ips();
    assert_eq!(a, b, "ADD retry is idempotent");
    let c = run("ADD", "ctr1", "net1", &conf).ips();
    assert_ne!(
        a, c,
        "another ifname of the same container gets its own address"
    );
    assert_eq!(net.reserved().len(), 2);
    run("DEL", "ctr1", "eth0", &conf).ok();
    assert_eq!(net.reserved(), c);
}

#[test]
fn dual_stack_one_address_per_range_set() {
    let net = Net::new("net1");
    let ipam = json!({"ranges": [
        [{"subnet": "10.20.0.0/24"}, {"subnet": "10.21.0.0/24"}],
        [{"subnet": "fd00:20::/64"}]
    ]});
    // Round robin: the second ADD continues after the first's (released) addresses.
    for (ver, n) in [("0.3.1", 2), ("1.1.0", 3)] {
        let conf = net.conf(ver, ipam.clone());
        let out = run("ADD", "ctr1", "eth0", &conf);
        let (a4, a6) = (format!("10.20.0.{n}"), format!("fd00:20::{n}"));
        assert_eq!(out.ips(), vec![a4.clone(), a6.clone()], "{ver}");
        let r = out.ok();
        assert_eq!(r["ips"][1]["address"], format!("{a6}/64"));
        assert_eq!(r["ips"][1]["gateway"], "fd00:20::1");
        if ver == "0.3.1" {
            assert_eq!(r["ips"][1]["version"], "6");
        }
        assert_eq!(net.reserved(), vec![a4, a6]);
        run("DEL", "ctr1", "eth0", &conf).ok();
        assert!(net.reserved().is_empty());
    }
}

#[test]
fn requested_addresses_from_every_source() {
    let net = Net::new("net1");
    let ipam = json!({"ranges": [[{"subnet": "10.30.0.0/24"}], [{"subnet": "fd00:30::/64"}]]});
    let conf = net.conf("1.1.0", ipam.clone());

    let out = call(
        "ADD",
        "a",
        "eth0",
        &conf.to_string(),
        &[("CNI_ARGS", "IgnoreUnknown=1;IP=10.30.0.50,fd00:30::50")],
    );
    assert_eq!(out.ips(), vec!["10.30.0.50", "fd00:30::50"]);

    // A requested address also moves the round-robin point (like host-local), so a
    // set without a request continues after the previous reservation.
    let mut rc = conf.clone();
    rc["runtimeConfig"] = json!({"ips": ["10.30.0.60/24"]});
    assert_eq!(
        run("ADD", "b", "eth0", &rc).ips(),
        vec!["10.30.0.60", "fd00:30::51"]
    );

    let mut args = conf.clone();
    args["args"] = json!({"cni": {"ips": ["fd00:30::70"]}});
    assert_eq!(
        run("ADD", "c", "eth0", &args).ips(),
        vec!["10.30.0.61", "fd00:30::70"]
    );

    // Taken by another container: allocation failure, nothing reserved for "d".
    let e = run("ADD", "d", "eth0", &rc).err(999);
    assert!(
        e["msg"].as_str().expect("msg").contains("10.30.0.60"),
        "{e}"
    );
    // Outside every range, the gateway, two in one set: config errors.
    for bad in [
        json!(["10.99.0.1"]),
        json!(["10.30.0.1"]),
        json!(["10.30.0.7", "10.30.0.8"]),
    ] {
        let mut c = conf.clone();
        c["runtimeConfig"] = json!({"ips": bad});
        run("ADD", "d", "eth0", &c).err(7);
    }
    let garbage = call(
        "ADD",
        "d",
        "eth0",
        &conf.to_string(),
        &[("CNI_ARGS", "IP=not-an-ip")],
    );
    garbage.err(4);
    assert!(!net.owners().contains(&"d@eth0".to_string()));
    assert_eq!(net.reserved().len(), 6);
}

#[test]
fn range_start_end_round_robin_exhaustion_and_status() {
    let net = Net::new("net1");
    let ipam =
        json!({"subnet": "10.40.0.0/24", "rangeStart": "10.40.0.10", "rangeEnd": "10.40.0.12"});
    let conf = net.conf("1.1.0", ipam);
    let got: Vec<String> = ["a", "b", "c"]
        .iter()
        .flat_map(|id| run("ADD", id, "eth0", &conf).ips())
        .collect();
    assert_eq!(got, vec!["10.40.0.10", "10.40.0.11", "10.40.0.12"]);

    // Full: STATUS says 50, ADD fails with the reference's code and leaves nothing.
    run("STATUS", "", "", &conf).err(50);
    let before = (net.reserved(), net.owners());
    let e = run("ADD", "d", "eth0", &conf).err(999);
    assert!(
        e["msg"]
            .as_str()
            .expect("msg")
            .contains("10.40.0.10-10.40.0.12"),
        "{e}"
    );
    assert_eq!(
        (net.reserved(), net.owners()),
        before,
        "failed ADD left nothing behind"
    );

    // Free the middle one: round robin continues after .12, wraps, finds .11.
    run("DEL", "b", "eth0", &conf).ok();
    run("STATUS", "", "", &conf).ok();
    assert_eq!(run("ADD", "d", "eth0", &conf).ips(), vec!["10.40.0.11"]);
}

#[test]
fn exhausted_second_set_reserves_nothing_in_the_first() {
    let net = Net::new("net1");
    // 10.50.0.0/30: only .2 is allocatable (.1 gateway, .3 broadcast).
    let ipam = json!({"ranges": [[{"subnet": "fd00:50::/64"}], [{"subnet": "10.50.0.0/30"}]]});
    let conf = net.conf("1.0.0", ipam);
    assert_eq!(
        run("ADD", "a", "eth0", &conf).ips(),
        vec!["fd00:50::2", "10.50.0.2"]
    );
    run("ADD", "b", "eth0", &conf).err(999);
    assert_eq!(net.reserved(), vec!["10.50.0.2", "fd00:50::2"]);
    assert_eq!(net.owners(), vec!["a@eth0"]);
}

#[test]
fn gc_removes_exactly_the_attachments_not_listed() {
    let net = Net::new("net1");
    let conf = net.conf("1.1.0", v4());
    for id in ["c1", "c2", "c3", "c4"] {
        run("ADD", id, "eth0", &conf).ok();
    }
    run("ADD", "c1", "net1", &conf).ok();
    let ip_of = |id: &str, ifname: &str| run("ADD", id, ifname, &conf).ips()[0].clone();
    let keep = [ip_of("c1", "eth0"), ip_of("c3", "eth0")];

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] =
        json!([{"containerID": "c1", "ifname": "eth0"}, {"containerID": "c3", "ifname": "eth0"}]);
    run("GC", "", "", &gc).ok();
    let mut expect = keep.to_vec();
    expect.sort();
    assert_eq!(net.reserved(), expect);
    assert_eq!(net.owners(), vec!["c1@eth0", "c3@eth0"]);

    // The older key works too; an empty list releases everything.
    let mut old = conf.clone();
    old["cni.dev/attachments"] = json!([{"containerID": "c3", "ifname": "eth0"}]);
    run("GC", "", "", &old).ok();
    assert_eq!(net.owners(), vec!["c3@eth0"]);
    let mut empty = conf.clone();
    empty["cni.dev/valid-attachments"] = json!([]);
    run("GC", "", "", &empty).ok();
    assert!(net.reserved().is_empty() && net.owners().is_empty());
    // No list at all is refused rather than treated as "everything is stale".
    run("ADD", "c5", "eth0", &conf).ok();
    run("GC", "", "", &conf).err(7);
    assert_eq!(net.owners(), vec!["c5@eth0"]);
    // After GC the counters are right: STATUS ok and allocation continues.
    run("STATUS", "", "", &conf).ok();
}

#[test]
fn reservations_from_a_previous_boot_are_released() {
    let net = Net::new("net1");
    let conf = net.conf("1.0.0", v4());
    for id in ["old1", "old2"] {
        run("ADD", id, "eth0", &conf).ok();
    }
    assert_eq!(net.reserved().len(), 2);
    net.set_boot_id("boot-two");
    let fresh = run("ADD", "new1", "eth0", &conf).ips();
    assert_eq!(
        net.reserved(),
        fresh,
        "only this boot's reservation is left"
    );
    assert_eq!(net.owners(), vec!["new1@eth0"]);
    // An old container's DEL (runtime cleaning up after reboot) still succeeds.
    run("DEL", "old1", "eth0", &conf).ok();
    // Same boot: no further reclaim.
    run("ADD", "new2", "eth0", &conf).ok();
    assert_eq!(net.reserved().len(), 2);
}

#[test]
fn del_on_a_never_used_network_creates_nothing() {
    let net = Net::new("net1");
    run("DEL", "ctr1", "eth0", &net.conf("1.0.0", v4())).ok();
    assert!(!net.store().exists());
}

#[test]
fn del_with_broken_ranges_still_releases() {
    let net = Net::new("net1");
    let conf = net.conf("1.0.0", v4());
    run("ADD", "ctr1", "eth0", &conf).ok();
    let broken = net.conf("1.0.0", json!({"subnet": "not-a-subnet"}));
    run("ADD", "ctr2", "eth0", &broken).err(7);
    run("DEL", "ctr1", "eth0", &broken).ok();
    assert!(net.reserved().is_empty());
}

#[test]
fn bad_input_gets_spec_codes_and_leaves_nothing() {
    let net = Net::new("net1");
    let conf = net.conf("1.0.0", v4());
    let s = conf.to_string();
    call("ADD", "c", "eth0", "{\"cniVersion\": ", &[]).err(6);
    call("ADD", "c", "eth0", "", &[]).err(6);
    let mut unknown = conf.clone();
    unknown["cniVersion"] = json!("0.2.0");
    let e = run("ADD", "c", "eth0", &unknown).err(1);
    assert_eq!(e["cniVersion"], "0.2.0");
    unknown["cniVersion"] = json!("7.0.0");
    run("ADD", "c", "eth0", &unknown).err(1);
    call("ADD", "", "eth0", &s, &[]).err(4);
    call("ADD", "c", "", &s, &[]).err(4);
    call("ADD", "c", "eth0", &s, &[("CNI_NETNS", "")]).err(4);
    call("ADD", "c", "eth0", &s, &[("CNI_PATH", "")]).err(4);
    call("", "c", "eth0", &s, &[("CNI_COMMAND", "")]).err(4);
    call("FROB", "c", "eth0", &s, &[]).err(4);
    call("ADD", "c", "averyveryverylongifname", &s, &[]).err(4);
    call("ADD", "c", "eth/0", &s, &[]).err(4);
    call("ADD", "bad id!", "eth0", &s, &[]).err(4);
    let mut bad_name = conf.clone();
    bad_name["name"] = json!("-bad name");
    run("ADD", "c", "eth0", &bad_name).err(7);
    let mut no_ipam = conf.clone();
    no_ipam.as_object_mut().expect("obj").remove("ipam");
    run("ADD", "c", "eth0", &no_ipam).err(7);
    run(
        "ADD",
        "c",
        "eth0",
        &net.conf("1.0.0", json!({"subnet": "10.1.0.0/31"})),
    )
    .err(7);
    run(
        "ADD",
        "c",
        "eth0",
        &net.conf("1.0.0", json!({"ranges": "x"})),
    )
    .err(6);
    assert!(net.reserved().is_empty() && net.owners().is_empty());
}

#[test]
fn version_reports_supported_versions() {
    let v = call("VERSION", "", "", "", &[("CNI_PATH", "")]).ok();
    assert_eq!(
        v,
        json!({"cniVersion": "1.1.0", "supportedVersions": VERSIONS})
    );
}
