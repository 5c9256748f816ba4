use std::path::Path;
use std::process::Command;

use netns_fixtures::{skip_unless_root, Netns, Underlay};

#[test]
fn namespace_exists_with_lo_up_and_is_removed_on_drop() {
    skip_unless_root!();
    let ns = Netns::new("t").unwrap();
    let path = ns.path().to_path_buf();
    assert!(path.exists());
    let lo = ns.sh("ip -o link show lo").unwrap();
    assert!(lo.contains("UP"), "{lo}");
    drop(ns);
    assert!(!path.exists(), "{} still exists", path.display());
}

#[test]
fn removed_on_panic_too() {
    skip_unless_root!();
    let name = std::sync::Mutex::new(String::new());
    let r = std::panic::catch_unwind(|| {
        let ns = Netns::new("panic").unwrap();
        *name.lock().unwrap() = ns.name().to_string();
        panic!("test failure inside a fixture");
    });
    assert!(r.is_err());
    let name = name.into_inner().unwrap();
    assert!(!Path::new("/run/netns").join(&name).exists());
}

#[test]
fn enter_runs_in_the_namespace_not_the_root_one() {
    skip_unless_root!();
    let ns = Netns::new("enter").unwrap();
    ns.sh("ip link add br-t type bridge").unwrap();
    let seen = ns
        .enter(|| {
            std::fs::read_dir("/sys/class/net").is_ok()
                && netns_fixtures::netns::ensure_not_root_netns().is_ok()
        })
        .unwrap();
    assert!(seen);
    // The caller's own namespace is still the root one.
    assert!(netns_fixtures::netns::ensure_not_root_netns().is_err());
    let root_links = String::from_utf8(
        Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(!root_links.contains("br-t"));
}

#[test]
fn spawned_children_are_killed_on_drop() {
    skip_unless_root!();
    let ns = Netns::new("spawn").unwrap();
    let mut cmd = Command::new("sleep");
    cmd.arg("300");
    let child = ns.spawn(cmd).unwrap();
    let pid = child.id();
    std::mem::forget(child); // leave it to the namespace's own cleanup
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    drop(ns);
    let gone = netns_fixtures::wait_until(
        std::time::Duration::from_secs(5),
        std::time::Duration::from_millis(20),
        || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.contains(") Z"))
                .unwrap_or(true)
        },
    );
    assert!(gone, "pid {pid} survived its namespace");
}

#[test]
fn veth_underlay_connects_two_hosts() {
    skip_unless_root!();
    let a = Netns::new("a").unwrap();
    let b = Netns::new("b").unwrap();
    let u = Underlay::veth(&a, "10.90.7.1/24", &b, "10.90.7.2/24").unwrap();
    a.sh("ping -c1 -W2 10.90.7.2").unwrap();
    assert_eq!(u.ip(1), "10.90.7.2");
}

#[test]
fn switch_underlay_connects_three_hosts() {
    skip_unless_root!();
    let hosts: Vec<Netns> = (0..3).map(|_| Netns::new("sw").unwrap()).collect();
    let refs: Vec<&Netns> = hosts.iter().collect();
    let u = Underlay::switch(&refs, "10.90.8.0/24").unwrap();
    assert_eq!(
        u.addrs,
        vec!["10.90.8.1/24", "10.90.8.2/24", "10.90.8.3/24"]
    );
    hosts[0].sh("ping -c1 -W2 10.90.8.3").unwrap();
    hosts[2].sh("ping -c1 -W2 10.90.8.2").unwrap();
    let sw = u.switch_ns().unwrap().path().to_path_buf();
    drop(u);
    assert!(!sw.exists());
}
