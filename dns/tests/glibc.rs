//! A pod's view: glibc's resolver with the kubelet-style resolv.conf
//! (`search <ns>.svc.<zone> svc.<zone> <zone>`, `ndots:5`) against
//! podnet-dns on port 53, inside a test network namespace.

mod common;

use std::process::Command;
use std::time::Duration;

use common::TestStore;
use netns_fixtures::Netns;
use podnet_dns::fixtures;

/// `/etc/netns/<name>/`: `ip netns exec` bind-mounts its resolv.conf over
/// /etc/resolv.conf for the commands it runs. Removed on drop.
struct NetnsEtc(std::path::PathBuf);

impl NetnsEtc {
    fn new(ns: &Netns, resolv_conf: &str) -> NetnsEtc {
        let dir = std::path::Path::new("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("resolv.conf"), resolv_conf).unwrap();
        NetnsEtc(dir)
    }
}

impl Drop for NetnsEtc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn glibc_search_path_in_a_pod_namespace() {
    netns_fixtures::skip_unless_root!();
    let store = TestStore::new();
    store.put(&fixtures::namespace_json("default"));
    store.put(&fixtures::namespace_json("team"));
    store.put(&fixtures::service_json(
        "default",
        "web",
        &["10.96.0.80"],
        &[],
    ));
    store.put(&fixtures::service_json("team", "api", &["10.96.1.81"], &[]));
    let ns = Netns::new("dnsg").unwrap();
    let _etc = NetnsEtc::new(
        &ns,
        "nameserver 127.0.0.1\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:2 attempts:1\n",
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_podnet-dns"));
    cmd.args([
        "--store",
        &store.url(),
        "--listen",
        "127.0.0.1:53",
        "--upstream",
        "",
        "--metrics-addr",
        "off",
        "--udp-sockets",
        "1",
    ]);
    let _dns = ns.spawn(cmd).unwrap();
    let up = common::wait(Duration::from_secs(20), || {
        ns.exec(&[
            "dig",
            "@127.0.0.1",
            "+short",
            "+tries=1",
            "+time=1",
            "web.default.svc.cluster.local",
        ])
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("10.96.0.80"))
        .unwrap_or(false)
    });
    assert!(up, "podnet-dns did not answer inside the namespace");
    let getent = |name: &str| {
        let o = ns.exec(&["getent", "hosts", name]).unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).to_string(),
        )
    };
    let (code, out) = getent("web");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("10.96.0.80") && out.contains("web.default.svc.cluster.local"),
        "{out}"
    );
    // <svc>.<ns>: the first search domain gives NXDOMAIN, the second answers.
    let (code, out) = getent("api.team");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("10.96.1.81") && out.contains("api.team.svc.cluster.local"),
        "{out}"
    );
    let (code, out) = getent("web.default.svc.cluster.local");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("10.96.0.80"), "{out}");
    // Unknown names: not found (exit code 2), after every search domain.
    let (code, out) = getent("nope");
    assert_eq!(code, Some(2), "{out}");
}
