//! Delegation through the protocol layer to real IPAM binaries: podnet-ipam (every
//! version and command) and the reference host-local from containernetworking-plugins
//! (interop: its results parse and re-render; its errors come back unchanged).

use std::collections::HashMap;
use std::path::Path;

use podnet_plugins::cni::{
    delegate_add, delegate_check, delegate_del, delegate_gc, delegate_status, render_result,
    CniEnv, SpecVersion,
};
use serde_json::{json, Value};

const REFERENCE_DIR: &str = "/usr/lib/cni";

fn env(cmd: &str, id: &str, path: &str) -> CniEnv {
    let vars: HashMap<&str, String> = [
        ("CNI_COMMAND", cmd.to_string()),
        ("CNI_CONTAINERID", id.to_string()),
        ("CNI_NETNS", "/var/run/netns/unused".to_string()),
        ("CNI_IFNAME", "eth0".to_string()),
        ("CNI_PATH", path.to_string()),
    ]
    .into_iter()
    .collect();
    CniEnv::from_lookup(|k| vars.get(k).cloned()).expect("valid env")
}

fn our_bin_dir() -> String {
    Path::new(env!("CARGO_BIN_EXE_podnet-ipam"))
        .parent()
        .expect("bin dir")
        .display()
        .to_string()
}

fn conf(version: &str, ipam_type: &str, dir: &Path, extra: Value) -> Vec<u8> {
    let mut ipam = json!({
        "type": ipam_type,
        "subnet": "10.70.0.0/29",
        "dataDir": dir.join("data"),
        "bootIdPath": dir.join("boot"),
    });
    // `null` in `extra` removes the key (host-local rejects explicit nulls).
    let obj = ipam.as_object_mut().expect("object");
    for (k, v) in extra.as_object().expect("object") {
        if v.is_null() {
            obj.remove(k);
        } else {
            obj.insert(k.clone(), v.clone());
        }
    }
    let c = json!({"cniVersion": version, "name": "deleg", "type": "podnet-bridge", "ipam": ipam,
        "cni.dev/valid-attachments": []});
    c.to_string().into_bytes()
}

#[test]
fn delegating_to_podnet_ipam_in_every_version() {
    let path = format!("/nonexistent:{}", our_bin_dir());
    for ver in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("boot"), "b1\n").expect("boot");
        let c = conf(ver, "podnet-ipam", dir.path(), json!({}));
        let r = delegate_add("podnet-ipam", &c, &env("ADD", "ctr", &path)).expect("ADD");
        assert_eq!(r.ips.len(), 1, "{ver}");
        assert_eq!(r.ips[0].address.to_string(), "10.70.0.2/29");
        assert_eq!(
            r.ips[0].gateway.map(|g| g.to_string()).as_deref(),
            Some("10.70.0.1")
        );
        // Rendered back in the config's version, the shape matches that version.
        let v: SpecVersion = ver.parse().expect("version");
        let shown = render_result(&r, v);
        assert_eq!(shown["cniVersion"], ver);
        assert_eq!(
            shown["ips"][0].get("version").is_some(),
            ver.starts_with("0.")
        );
        if ver >= "0.4.0" {
            delegate_check("podnet-ipam", &c, &env("CHECK", "ctr", &path)).expect("CHECK");
        }
        if ver == "1.1.0" {
            delegate_status("podnet-ipam", &c, &env("STATUS", "", &path)).expect("STATUS");
            // GC with an empty valid list releases the reservation.
            delegate_gc("podnet-ipam", &c, &env("GC", "", &path)).expect("GC");
            let e = delegate_check("podnet-ipam", &c, &env("CHECK", "ctr", &path))
                .expect_err("gone after GC");
            assert_eq!(e.code, 3);
        }
        delegate_del("podnet-ipam", &c, &env("DEL", "ctr", &path)).expect("DEL");
        delegate_del("podnet-ipam", &c, &env("DEL", "ctr", &path)).expect("second DEL");
    }
}

#[test]
fn delegate_errors_come_back_unchanged() {
    let path = our_bin_dir();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("boot"), "b1\n").expect("boot");
    // /29: .2-.6 allocatable; fill it, then the next ADD fails inside the delegate.
    let c = conf("1.0.0", "podnet-ipam", dir.path(), json!({}));
    for i in 0..5 {
        delegate_add("podnet-ipam", &c, &env("ADD", &format!("c{i}"), &path)).expect("ADD");
    }
    let e = delegate_add("podnet-ipam", &c, &env("ADD", "c9", &path)).expect_err("exhausted");
    assert_eq!(e.code, 999);
    assert!(e.msg.contains("no IP addresses available"), "{e}");
    let bad = conf(
        "1.0.0",
        "podnet-ipam",
        dir.path(),
        json!({"subnet": "10.70.0.1/29"}),
    );
    let e = delegate_add("podnet-ipam", &bad, &env("ADD", "c9", &path)).expect_err("bad");
    assert_eq!(e.code, 7);
    assert!(e.details.contains("host bits"), "{e}");
    let e = delegate_add("no-such-ipam", &c, &env("ADD", "c9", &path)).expect_err("missing");
    assert_eq!(e.code, 7);
}

#[test]
fn reference_host_local_interop() {
    let host_local = Path::new(REFERENCE_DIR).join("host-local");
    assert!(
        host_local.exists(),
        "{} missing: install Debian's containernetworking-plugins",
        host_local.display()
    );
    // Debian's host-local (1.1.1) speaks up to 1.0.0.
    for ver in ["0.3.0", "0.3.1", "0.4.0", "1.0.0"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = conf(
            ver,
            "host-local",
            dir.path(),
            json!({"subnet": null, "ranges": [[{"subnet": "10.71.0.0/24"}], [{"subnet": "fd00:71::/64"}]],
                   "routes": [{"dst": "0.0.0.0/0"}]}),
        );
        let r = delegate_add("host-local", &c, &env("ADD", "ctr", REFERENCE_DIR)).expect("ADD");
        let addrs: Vec<String> = r.ips.iter().map(|i| i.address.to_string()).collect();
        assert_eq!(addrs, vec!["10.71.0.2/24", "fd00:71::2/64"], "{ver}");
        assert_eq!(r.routes.len(), 1);
        // host-local's result converts between every shape we speak.
        for out in ["0.3.1", "1.1.0"] {
            let shown = render_result(&r, out.parse().expect("version"));
            assert_eq!(shown["ips"][1]["address"], "fd00:71::2/64");
            assert_eq!(
                shown["ips"][1].get("version").is_some(),
                out.starts_with("0.")
            );
        }
        if ver >= "0.4.0" {
            delegate_check("host-local", &c, &env("CHECK", "ctr", REFERENCE_DIR)).expect("CHECK");
        }
        delegate_del("host-local", &c, &env("DEL", "ctr", REFERENCE_DIR)).expect("DEL");
    }
    // A host-local error (version it does not speak) comes back with its own code.
    let dir = tempfile::tempdir().expect("tempdir");
    let c = conf("1.1.0", "host-local", dir.path(), json!({}));
    let e = delegate_add("host-local", &c, &env("ADD", "ctr", REFERENCE_DIR)).expect_err("1.1.0");
    assert_eq!(e.code, 1, "{e}");
}
