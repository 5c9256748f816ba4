//! The whole stack on a simulated cluster: `podnet-lab up`, then what a user
//! checks first — DNS through the kube-dns VIP, HTTP by Service name reaching
//! pods on every node, NodePort from another node, headless pod names,
//! scale-down without failed requests, and `down` leaving nothing behind.
//!
//! Each test runs its own lab instance (`PODNET_LAB_INSTANCE`), so they can
//! run side by side.

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netns_fixtures::skip_unless_root;
use podnet_tests::bin;

struct Lab {
    instance: String,
    up: bool,
}

impl Lab {
    fn cmd(&self) -> Command {
        let mut c = Command::new(bin("podnet-lab"));
        c.env("PODNET_LAB_INSTANCE", &self.instance);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("running podnet-lab")
    }

    fn up(instance: &str, backend: &str, store: &str) -> Lab {
        let mut lab = Lab {
            instance: instance.to_string(),
            up: false,
        };
        let out = lab.run(&["up", "--nodes", "3", "--backend", backend, "--store", store]);
        lab.up = true;
        assert!(
            out.status.success(),
            "podnet-lab up failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        lab
    }

    /// Runs a shell line in a pod or node; (success, stdout).
    fn exec(&self, target: &str, script: &str) -> (bool, String) {
        let out = self.run(&["exec", target, "--", "sh", "-c", script]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    fn exec_ok(&self, target: &str, script: &str) -> String {
        let (ok, out) = self.exec(target, script);
        assert!(ok, "{script:?} in {target} failed: {out}");
        out
    }

    fn down(&mut self) {
        if self.up {
            let out = self.run(&["down"]);
            assert!(
                out.status.success(),
                "down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            self.up = false;
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.up {
            let _ = self.run(&["down"]);
        }
    }
}

fn root_links() -> BTreeSet<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split(": ")
                .nth(1)
                .map(|n| n.split('@').next().unwrap().to_string())
        })
        .collect()
}

fn root_nft_tables() -> String {
    let out = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pod_ip(lab: &Lab, pod: &str) -> String {
    let out = lab.exec_ok(pod, "ip -4 -o addr show dev eth0");
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .expect("pod eth0 address")
        .to_string()
}

fn whole_stack(backend: &str, store: &str) {
    let instance = format!(
        "e{}{}{}",
        &backend[..1],
        &store[..1],
        std::process::id() % 100000
    );
    let links_before = root_links();
    let tables_before = root_nft_tables();
    let mut lab = Lab::up(&instance, backend, store);

    // Pods are spread round-robin: web-0/web-3 on node1, web-1/web-4 on node2, web-2/web-5 on node3.
    // DNS through the kube-dns VIP (10.96.0.10, proxied) from a pod on node1.
    let hosts = lab.exec_ok("web-0", "getent hosts web.default.svc.cluster.local");
    assert!(
        hosts.starts_with("10.96.0.80 "),
        "web resolved to {hosts:?}"
    );
    // Search path + ndots:5 like a real pod: the short name works too.
    let short = lab.exec_ok("web-0", "getent hosts web");
    assert!(
        short.starts_with("10.96.0.80 "),
        "short name resolved to {short:?}"
    );

    // HTTP by name reaches pods on every node over a series of requests.
    let mut nodes_seen = BTreeSet::new();
    for _ in 0..40 {
        let body = lab.exec_ok(
            "web-0",
            "curl -sf --max-time 3 http://web.default.svc.cluster.local/",
        );
        let node = body
            .split(" on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("");
        nodes_seen.insert(node.to_string());
    }
    assert_eq!(
        nodes_seen,
        BTreeSet::from(["node1".to_string(), "node2".into(), "node3".into()]),
        "requests by name did not reach every node"
    );

    // NodePort of node1, from node2.
    let body = lab.exec_ok("node2", "curl -sf --max-time 3 http://10.90.0.1:30080/");
    assert!(body.starts_with("hello from web-"), "{body}");

    // Headless pod name resolves to that pod and reaches it.
    let web1 = pod_ip(&lab, "web-1");
    let h = lab.exec_ok(
        "web-0",
        "getent hosts web-1.web-headless.default.svc.cluster.local",
    );
    assert!(
        h.starts_with(&format!("{web1} ")),
        "web-1.web-headless resolved to {h:?}, pod has {web1}"
    );
    let body = lab.exec_ok(
        "web-0",
        "curl -sf --max-time 3 http://web-1.web-headless.default.svc.cluster.local/",
    );
    assert!(body.starts_with("hello from web-1 "), "{body}");

    // `up` on a running lab is refused and leaves it working.
    let again = lab.run(&["up", "--nodes", "3", "--backend", backend, "--store", store]);
    assert!(!again.status.success(), "second up should be refused");
    lab.exec_ok("web-0", "curl -sf --max-time 3 http://web/ >/dev/null");

    // Scale down while a client keeps requesting: no failed request, and the
    // pod is gone from DNS and from the proxies right after.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let client = {
        let (stop, failures, requests) = (stop.clone(), failures.clone(), requests.clone());
        let instance = instance.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let ok = Command::new(bin("podnet-lab"))
                    .env("PODNET_LAB_INSTANCE", &instance)
                    .args([
                        "exec",
                        "web-0",
                        "--",
                        "curl",
                        "-sf",
                        "--max-time",
                        "3",
                        "-o",
                        "/dev/null",
                        "http://10.96.0.80/",
                    ])
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                requests.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let web5 = pod_ip(&lab, "web-5");
    let out = lab.run(&["delete-pod", "web-5"]);
    assert!(
        out.status.success(),
        "delete-pod: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = Instant::now();
    let gone =
        netns_fixtures::wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            let (_, dns) = lab.exec(
                "web-0",
                "getent hosts web-headless.default.svc.cluster.local",
            );
            !dns.contains(&format!("{web5} ")) && !dns.is_empty()
        });
    eprintln!("scale-down visible in DNS after {:?}", started.elapsed());
    assert!(gone, "web-5 ({web5}) still in DNS");
    for node in ["node1", "node2", "node3"] {
        let rules = lab.exec_ok(node, "nft list table ip podnet");
        assert!(!rules.contains(&web5), "{node}'s proxy still has {web5}");
    }
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    assert!(
        requests.load(Ordering::Relaxed) > 3,
        "client made too few requests"
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed during scale-down"
    );

    // `down` leaves nothing behind.
    lab.down();
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let prefix = format!("pn{instance}-");
    assert!(
        !left.iter().any(|n| n.starts_with(&prefix)),
        "namespaces left: {left:?}"
    );
    assert!(!std::path::Path::new(&format!("/run/podnet-{instance}")).exists());
    assert_eq!(root_links(), links_before, "root namespace links changed");
    assert_eq!(
        root_nft_tables(),
        tables_before,
        "root namespace nftables changed"
    );
}

#[test]
fn host_gw_with_dir_store() {
    skip_unless_root!();
    whole_stack("host-gw", "dir");
}

#[test]
fn vxlan_with_dir_store() {
    skip_unless_root!();
    whole_stack("vxlan", "dir");
}

#[test]
fn host_gw_with_etcd() {
    skip_unless_root!();
    whole_stack("host-gw", "etcd");
}

#[test]
fn vxlan_with_etcd() {
    skip_unless_root!();
    whole_stack("vxlan", "etcd");
}
