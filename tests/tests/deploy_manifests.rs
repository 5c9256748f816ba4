//! The manifests in deploy/ parse as the Kubernetes objects they claim to be,
//! reference only each other's names, and pass our binaries flags they accept.

use std::collections::BTreeSet;
use std::process::Command;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use podnet_tests::{bin, workspace_root};
use serde::Deserialize;

fn docs(file: &str) -> Vec<serde_yaml::Value> {
    let path = workspace_root().join("deploy").join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap_or_else(|e| panic!("{file}: {e}")))
        .collect()
}

fn typed<T: serde::de::DeserializeOwned>(v: &serde_yaml::Value) -> T {
    serde_yaml::from_value(v.clone()).unwrap_or_else(|e| panic!("{:?}: {e}", v.get("kind")))
}

fn by_kind<'a>(all: &'a [serde_yaml::Value], kind: &str) -> Vec<&'a serde_yaml::Value> {
    all.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

fn all_docs() -> Vec<serde_yaml::Value> {
    [
        "configmap.yaml",
        "rbac.yaml",
        "node-daemonset.yaml",
        "dns.yaml",
    ]
    .iter()
    .flat_map(|f| docs(f))
    .collect()
}

/// Every `--flag` a container passes is one the binary's `--help` lists.
fn assert_flags_accepted(c: &Container) {
    let program = c
        .command
        .as_ref()
        .and_then(|c| c.first())
        .expect("container command");
    let name = program.rsplit('/').next().unwrap();
    let help = Command::new(bin(name))
        .arg("--help")
        .output()
        .unwrap_or_else(|e| {
            panic!("running {name} --help (build with `cargo build --workspace --bins`): {e}")
        });
    assert!(help.status.success(), "{name} --help failed");
    let help = String::from_utf8_lossy(&help.stdout);
    for arg in c.args.iter().flatten() {
        let flag = arg.split('=').next().unwrap();
        if flag.starts_with("--") {
            assert!(
                help.contains(flag),
                "{name} does not accept {flag} (manifest container {})",
                c.name
            );
        }
    }
}

#[test]
fn every_document_parses_as_its_kind() {
    let all = all_docs();
    let kinds: BTreeSet<&str> = all.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "ConfigMap",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
        "Deployment",
        "Service",
    ] {
        assert!(kinds.contains(kind), "no {kind} in deploy/");
    }
    for d in &all {
        match d["kind"].as_str().unwrap() {
            "ConfigMap" => drop(typed::<ConfigMap>(d)),
            "ServiceAccount" => drop(typed::<ServiceAccount>(d)),
            "ClusterRole" => drop(typed::<ClusterRole>(d)),
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(d)),
            "DaemonSet" => drop(typed::<DaemonSet>(d)),
            "Deployment" => drop(typed::<Deployment>(d)),
            "Service" => drop(typed::<Service>(d)),
            other => panic!("unexpected kind {other} in deploy/"),
        }
    }
}

#[test]
fn configmap_carries_a_valid_cluster_config_and_conflist() {
    let all = all_docs();
    let cm: ConfigMap = typed(by_kind(&all, "ConfigMap")[0]);
    let data = cm.data.expect("configmap data");
    let cc: podnet_state::object::ClusterConfig =
        serde_yaml::from_str(&data["cluster-config.yaml"]).expect("ClusterConfig parses");
    assert_eq!(cc.spec.cluster_domain, "cluster.local");
    assert!(!cc.spec.cluster_cidrs.is_empty());
    let conflist: serde_json::Value =
        serde_json::from_str(&data["10-podnet.conflist"]).expect("conflist is JSON");
    let first = &conflist["plugins"][0]["type"];
    assert!(
        first == "podnet-vxlan" || first == "podnet-host-gw",
        "{first}"
    );
    assert!(
        bin(first.as_str().unwrap()).exists(),
        "conflist names a plugin we do not build: {first}"
    );
    assert!(data["store"].starts_with("etcd://") || data["store"].starts_with("dir://"));
}

#[test]
fn daemonset_and_deployment_wire_up_to_real_binaries_and_objects() {
    let all = all_docs();
    let ds: DaemonSet = typed(by_kind(&all, "DaemonSet")[0]);
    let spec = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        spec.host_network,
        Some(true),
        "node daemons need the host network"
    );
    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["podnet-node", "podnet-proxy"]);
    for c in &spec.containers {
        let caps = c
            .security_context
            .as_ref()
            .and_then(|s| s.capabilities.as_ref())
            .and_then(|c| c.add.clone());
        assert!(
            caps.unwrap_or_default().iter().any(|c| c == "NET_ADMIN"),
            "{} lacks NET_ADMIN",
            c.name
        );
        assert_flags_accepted(c);
    }
    let init = spec.init_containers.expect("install-cni init container");
    let script = init[0].args.as_ref().unwrap().join(" ");
    for plugin in [
        "podnet-bridge",
        "podnet-ipam",
        "podnet-host-gw",
        "podnet-vxlan",
    ] {
        assert!(
            script.contains(plugin),
            "install-cni does not copy {plugin}"
        );
        assert!(bin(plugin).exists(), "{plugin} is not built");
    }
    let sa: ServiceAccount = typed(by_kind(&all, "ServiceAccount")[0]);
    assert_eq!(
        spec.service_account_name.as_deref(),
        sa.metadata.name.as_deref()
    );

    let dep: Deployment = typed(by_kind(&all, "Deployment")[0]);
    let dspec = dep.spec.unwrap();
    let pod = dspec.template.spec.unwrap();
    assert_flags_accepted(&pod.containers[0]);
    let svc: Service = typed(by_kind(&all, "Service")[0]);
    let sspec = svc.spec.unwrap();
    assert_eq!(svc.metadata.name.as_deref(), Some("kube-dns"));
    assert_eq!(sspec.cluster_ip.as_deref(), Some("10.96.0.10"));
    assert_eq!(
        sspec.selector,
        dspec.template.metadata.unwrap().labels,
        "kube-dns selects the DNS pods"
    );
    let protos: BTreeSet<String> = sspec
        .ports
        .unwrap()
        .iter()
        .filter(|p| p.port == 53)
        .filter_map(|p| p.protocol.clone())
        .collect();
    assert_eq!(
        protos,
        BTreeSet::from(["TCP".to_string(), "UDP".to_string()])
    );
}

#[test]
fn example_conflist_matches_the_configmap_one() {
    let all = all_docs();
    let cm: ConfigMap = typed(by_kind(&all, "ConfigMap")[0]);
    let in_cm: serde_json::Value =
        serde_json::from_str(&cm.data.unwrap()["10-podnet.conflist"]).unwrap();
    let file = std::fs::read_to_string(workspace_root().join("deploy/10-podnet.conflist")).unwrap();
    let file: serde_json::Value = serde_json::from_str(&file).unwrap();
    assert_eq!(in_cm, file);
}

#[test]
fn make_install_puts_plugins_conflist_and_daemons_under_destdir() {
    let dest = tempfile::tempdir().unwrap();
    let target = podnet_tests::bin_dir();
    let out = Command::new("make")
        .current_dir(workspace_root())
        .arg("install-only")
        .arg(format!("DESTDIR={}", dest.path().display()))
        .arg(format!("TARGET_DIR={}", target.display()))
        .output()
        .expect("running make");
    assert!(
        out.status.success(),
        "make install-only failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in [
        "podnet-bridge",
        "podnet-ipam",
        "podnet-host-gw",
        "podnet-vxlan",
    ] {
        let f = dest.path().join("opt/cni/bin").join(p);
        assert!(f.exists(), "{} missing", f.display());
    }
    for p in [
        "podnet-node",
        "podnet-proxy",
        "podnet-dns",
        "podnetctl",
        "podnet-lab",
    ] {
        assert!(
            dest.path().join("usr/local/bin").join(p).exists(),
            "{p} missing"
        );
    }
    assert!(dest
        .path()
        .join("etc/cni/net.d/10-podnet.conflist")
        .exists());
}
