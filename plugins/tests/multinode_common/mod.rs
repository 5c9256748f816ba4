//! Shared harness of the multi-node tests: a `Cluster` of node namespaces,
//! a store (dir or etcd), `podnet-node` agents, and pods made through the
//! real CNI binaries (podnet-host-gw / podnet-vxlan → bridge → podnet-ipam),
//! as a runtime would call them.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netns_fixtures::cluster::{Cluster, ClusterOptions};
use netns_fixtures::etcd::EtcdServer;
use netns_fixtures::{wait_until, ChildGuard, Netns};
use podnet_state::{open_store, Kind, ObjectKey, Store};
use serde_json::{json, Value};

pub const CLUSTER_V4: &str = "10.244.0.0/16";
pub const CLUSTER_V6: &str = "fd00:10:244::/56";
/// Generous bound for propagation waits (the benchmark measures real times).
pub const SETTLE: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Backend {
    HostGw,
    Vxlan,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::HostGw => "host-gw",
            Backend::Vxlan => "vxlan",
        }
    }
    pub fn plugin(self) -> PathBuf {
        match self {
            Backend::HostGw => PathBuf::from(env!("CARGO_BIN_EXE_podnet-host-gw")),
            Backend::Vxlan => PathBuf::from(env!("CARGO_BIN_EXE_podnet-vxlan")),
        }
    }
}

pub fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_podnet-node"))
}

/// Directory of the CNI binaries (CNI_PATH): podnet-ipam lives beside the plugins.
pub fn cni_path() -> PathBuf {
    agent_bin().parent().unwrap().to_path_buf()
}

pub struct PodHandle {
    pub name: String,
    pub node: usize,
    pub ns: Netns,
    pub v4: String,
    pub v6: Option<String>,
    /// TCP server that answers every connection with the peer address it sees.
    pub _echo: Vec<ChildGuard>,
}

pub struct Lab {
    pub cluster: Cluster,
    pub backend: Backend,
    pub store_url: String,
    pub store: Arc<dyn Store>,
    pub rt: tokio::runtime::Runtime,
    pub pods: Vec<PodHandle>,
    pub etcd: Option<EtcdServer>,
    pub resync: &'static str,
}

pub struct Opts {
    pub nodes: usize,
    pub backend: Backend,
    pub etcd: bool,
    pub ipv6: bool,
}

impl Lab {
    pub fn new(o: Opts) -> Lab {
        let mut cluster = Cluster::new(
            o.nodes,
            ClusterOptions {
                ipv6: o.ipv6,
                mtu: 1500,
            },
        )
        .expect("building the cluster");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (store_url, etcd) = if o.etcd {
            let e = EtcdServer::start().expect("starting etcd");
            cluster
                .expose_root_port(e.client_port())
                .expect("relaying etcd into the nodes");
            (e.url(), Some(e))
        } else {
            (cluster.dir_store_url(), None)
        };
        let store = rt
            .block_on(open_store(&store_url))
            .expect("opening the store");
        Lab {
            cluster,
            backend: o.backend,
            store_url,
            store,
            rt,
            pods: Vec::new(),
            etcd,
            resync: "1s",
        }
    }

    pub fn put_config(&self, spec: Value) {
        let v = json!({
            "apiVersion": "podnet.dev/v1",
            "kind": "ClusterConfig",
            "metadata": {"name": "default"},
            "spec": spec,
        });
        self.rt
            .block_on(
                self.store
                    .put(&ObjectKey::new(Kind::ClusterConfig, None, "default"), &v),
            )
            .expect("writing the ClusterConfig");
    }

    pub fn default_config(&self, ipv6: bool) {
        let mut cidrs = vec![CLUSTER_V4];
        if ipv6 {
            cidrs.push(CLUSTER_V6);
        }
        self.put_config(json!({
            "clusterCIDRs": cidrs,
            "serviceCIDRs": ["10.96.0.0/16"],
            "subnetLen": 24,
            "subnetLenV6": 64,
            "backend": self.backend.name(),
            "vni": 1,
        }));
    }

    pub fn agent_args(&self, i: usize) -> Vec<String> {
        let n = &self.cluster.nodes[i];
        let mut a = vec![
            "--store".to_string(),
            self.store_url.clone(),
            "--node-name".into(),
            n.name.clone(),
            "--underlay-ip".into(),
            n.ip.clone(),
            "--lease-file".into(),
            n.lease_file().display().to_string(),
            "--resync-period".into(),
            self.resync.into(),
            "--config-timeout".into(),
            "30s".into(),
        ];
        if let Some(v6) = &n.ip6 {
            a.push("--underlay-ip".into());
            a.push(v6.clone());
        }
        a
    }

    pub fn start_agent(&mut self, i: usize) {
        let args = self.agent_args(i);
        self.cluster.nodes[i]
            .start_agent(&agent_bin(), &args, &[("RUST_LOG", "info")])
            .expect("starting podnet-node");
    }

    /// Starts every agent and waits for every lease file.
    pub fn start_all(&mut self) {
        for i in 0..self.cluster.nodes.len() {
            self.start_agent(i);
        }
        for i in 0..self.cluster.nodes.len() {
            self.wait_lease(i);
        }
    }

    pub fn wait_lease(&mut self, i: usize) {
        let lease = self.cluster.nodes[i].lease_file();
        let ok = wait_until(SETTLE, Duration::from_millis(20), || lease.exists());
        let log = self.cluster.nodes[i].log();
        assert!(ok, "node {i} wrote no lease file; agent log:\n{log}");
    }

    /// Runs the backend's CNI plugin in node `node` and returns the parsed output.
    pub fn cni(
        &self,
        node: usize,
        command: &str,
        container: &str,
        netns: Option<&str>,
    ) -> (bool, Value) {
        let n = &self.cluster.nodes[node];
        let conf = json!({
            "cniVersion": "1.1.0",
            "name": "podnet",
            "type": format!("podnet-{}", self.backend.name()),
            "leaseFile": n.lease_file().display().to_string(),
            "dataDir": n.state_dir().display().to_string(),
        });
        let mut cmd = n.ns.command(&self.backend.plugin().to_string_lossy());
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", cni_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(p) = netns {
            cmd.env("CNI_NETNS", p);
        }
        let mut child = cmd.spawn().expect("running the CNI plugin");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if !out.status.success() {
            eprintln!(
                "CNI {command} on node {node} failed: {} {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        (out.status.success(), v)
    }

    /// A pod on node `node` made through CNI ADD, with echo servers on port 7000.
    pub fn add_pod(&mut self, node: usize) -> usize {
        let name = format!("p{}-{}", node, self.pods.len());
        let ns = Netns::new("pod").unwrap();
        let (ok, res) = self.cni(node, "ADD", &name, Some(&ns.path().display().to_string()));
        assert!(ok, "ADD failed: {res}");
        let ips: Vec<String> = res["ips"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                i["address"]
                    .as_str()
                    .unwrap()
                    .split('/')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        let v4 = ips
            .iter()
            .find(|a| !a.contains(':'))
            .cloned()
            .expect("an IPv4 address");
        let v6 = ips.iter().find(|a| a.contains(':')).cloned();
        let mut echo = Vec::new();
        for fam in ["TCP4-LISTEN", "TCP6-LISTEN"] {
            if fam == "TCP6-LISTEN" && v6.is_none() {
                continue;
            }
            let mut c = std::process::Command::new("socat");
            // ipv6only: the IPv4 listener already holds the port's IPv4 side.
            let v6only = if fam == "TCP6-LISTEN" {
                ",ipv6only=1"
            } else {
                ""
            };
            c.arg(format!("{fam}:7000{v6only},fork,reuseaddr"))
                .arg("SYSTEM:echo $SOCAT_PEERADDR")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            echo.push(ns.spawn(c).unwrap());
        }
        wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
            ns.sh("ss -Hltn 'sport = :7000' | grep -q .").is_ok()
        });
        self.pods.push(PodHandle {
            name,
            node,
            ns,
            v4,
            v6,
            _echo: echo,
        });
        self.pods.len() - 1
    }

    /// Whether pod `a` reaches `dst` of pod `b` by ping and TCP, and the
    /// receiver saw `a`'s own address as the source.
    pub fn reach(&self, a: usize, b: usize, v6: bool) -> Result<(), String> {
        let (pa, pb) = (&self.pods[a], &self.pods[b]);
        let (src, dst) = if v6 {
            (pa.v6.clone().unwrap(), pb.v6.clone().unwrap())
        } else {
            (pa.v4.clone(), pb.v4.clone())
        };
        let ping = if v6 { "ping -6" } else { "ping" };
        pa.ns
            .sh(&format!("{ping} -c1 -W1 {dst} >/dev/null"))
            .map_err(|e| format!("{} -> {} ping {dst}: {e}", pa.name, pb.name))?;
        let target = if v6 {
            format!("TCP6:[{dst}]:7000")
        } else {
            format!("TCP4:{dst}:7000")
        };
        let seen = pa
            .ns
            .sh(&format!("socat -T2 - {target} </dev/null"))
            .map_err(|e| format!("{} -> {} tcp {dst}: {e}", pa.name, pb.name))?;
        let seen = seen.trim().trim_start_matches('[').trim_end_matches(']');
        let same = seen.parse::<std::net::IpAddr>().ok() == src.parse::<std::net::IpAddr>().ok();
        if !same {
            return Err(format!(
                "{} -> {}: receiver saw source {seen:?}, expected the pod address {src}",
                pa.name, pb.name
            ));
        }
        Ok(())
    }

    /// Every pod reaches every other pod (both families when present).
    pub fn all_reach(&self) -> Result<(), String> {
        for a in 0..self.pods.len() {
            for b in 0..self.pods.len() {
                if a == b {
                    continue;
                }
                self.reach(a, b, false)?;
                if self.pods[a].v6.is_some() && self.pods[b].v6.is_some() {
                    self.reach(a, b, true)?;
                }
            }
        }
        Ok(())
    }

    pub fn assert_all_reach_eventually(&self) {
        let mut last = String::new();
        let ok = wait_until(SETTLE, Duration::from_millis(100), || {
            match self.all_reach() {
                Ok(()) => true,
                Err(e) => {
                    last = e;
                    false
                }
            }
        });
        assert!(
            ok,
            "pods do not all reach each other: {last}\n{}",
            self.logs()
        );
    }

    /// Node `i`'s podnet entries: routes (proto 112), VXLAN neighbours and FDB.
    pub fn entries(&self, i: usize) -> String {
        let ns = &self.cluster.nodes[i].ns;
        let mut s = ns
            .sh("ip route show proto 112; ip -6 route show proto 112")
            .unwrap_or_default();
        if self.backend == Backend::Vxlan {
            s += &ns
                .sh("ip neigh show dev podnet.1 nud permanent; bridge fdb show dev podnet.1 | grep dst || true")
                .unwrap_or_default();
        }
        s
    }

    pub fn node_subnet_v4(&self, i: usize) -> String {
        let l: Value =
            serde_json::from_slice(&std::fs::read(self.cluster.nodes[i].lease_file()).unwrap())
                .unwrap();
        l["subnets"][0].as_str().unwrap().to_string()
    }

    pub fn delete_node_object(&self, name: &str) {
        self.rt
            .block_on(self.store.delete(&ObjectKey::new(Kind::Node, None, name)))
            .expect("deleting the node object");
    }

    /// Waits until `check(entries of node i)` holds for every node in `nodes`;
    /// returns the time it took.
    pub fn wait_entries(
        &self,
        nodes: &[usize],
        what: &str,
        check: impl Fn(&str) -> bool,
    ) -> Duration {
        let t = Instant::now();
        for &i in nodes {
            let ok = wait_until(SETTLE, Duration::from_millis(10), || {
                check(&self.entries(i))
            });
            assert!(
                ok,
                "node {i}: {what}; entries:\n{}\n{}",
                self.entries(i),
                self.logs()
            );
        }
        t.elapsed()
    }

    pub fn logs(&self) -> String {
        self.cluster
            .nodes
            .iter()
            .map(|n| format!("--- {} agent log:\n{}", n.name, tail(&n.log(), 30)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Number of times node `i`'s agent has logged that its node list is synced.
    pub fn synced_count(&self, i: usize) -> usize {
        self.cluster.nodes[i]
            .log()
            .matches("node list synced")
            .count()
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The standard scenario: `nodes` nodes, two pods each, all reaching each other.
pub fn basic_lab(backend: Backend, etcd: bool, nodes: usize) -> Lab {
    let ipv6 = true;
    let mut lab = Lab::new(Opts {
        nodes,
        backend,
        etcd,
        ipv6,
    });
    lab.default_config(ipv6);
    lab.start_all();
    for n in 0..nodes {
        lab.add_pod(n);
        lab.add_pod(n);
    }
    lab.assert_all_reach_eventually();
    lab
}
