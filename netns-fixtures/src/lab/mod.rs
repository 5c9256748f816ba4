//! `podnet-lab`: a whole simulated cluster on one machine, inside namespaces.
//!
//! `up` builds, step by step and recording each step in `record` so that
//! `down` can always undo it: a switch namespace and N node namespaces on an
//! underlay, the store (a shared directory, or etcd in a control namespace),
//! `podnet-node` + `podnet-proxy` per node, pods made through the CNI binaries
//! exactly as a runtime calls them (`cni_exec`), HTTP servers in them, the
//! Services `web`, `web-headless` and `kube-dns` with their EndpointSlices, and
//! `podnet-dns` as a pod behind `kube-dns`. `manifests` renders the objects.

pub mod cni_exec;
pub mod manifests;
pub mod record;

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::netns::run_checked;
use cni_exec::{add_list, del_list, first_ipv4, CniCall};
use record::{lab_dir, ns_prefix, DaemonRecord, LabRecord, NodeRecord, PodRecord};

/// Underlay addresses: node i is 10.90.0.i, the control namespace (etcd) .254.
/// A private test range that only exists inside the lab's switch namespace.
const UNDERLAY_PREFIX: &str = "10.90.0";
const CONTROL_IP: &str = "10.90.0.254";
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
pub const DNS_SERVICE_IP: &str = "10.96.0.10";
pub const WEB_SERVICE_IP: &str = "10.96.0.80";
pub const WEB_NODE_PORT: u16 = 30080;
const PROXY_HEALTHZ: &str = "127.0.0.1:10256";
const PROXY_METRICS: &str = "127.0.0.1:10249";
const DNS_HEALTH: &str = "0.0.0.0:8080";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    HostGw,
    Vxlan,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::HostGw => "host-gw",
            Backend::Vxlan => "vxlan",
        }
    }
    fn plugin(self) -> &'static str {
        match self {
            Backend::HostGw => "podnet-host-gw",
            Backend::Vxlan => "podnet-vxlan",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    Dir,
    Etcd,
}

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub nodes: usize,
    pub backend: Backend,
    pub store: StoreKind,
    pub pods_per_node: usize,
    /// Where the podnet binaries are (default: beside podnet-lab).
    pub bin_dir: PathBuf,
}

pub fn default_bin_dir() -> PathBuf {
    std::env::var_os("PODNET_BIN_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
        })
        .unwrap_or_else(|| PathBuf::from("/usr/local/bin"))
}

/// CNI DEL of `pod`'s attachment with its node's conflist, as the runtime would.
fn cni_del(node: &NodeRecord, pod: &PodRecord, cni_path: &str) -> Result<()> {
    let bytes = std::fs::read(&node.cni_conf)
        .with_context(|| format!("reading {}", node.cni_conf.display()))?;
    let conflist: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("parsing {}", node.cni_conf.display()))?;
    let netns_path = Path::new("/run/netns").join(&pod.netns);
    del_list(
        &conflist,
        &CniCall {
            host_netns: &node.netns,
            container_id: &pod.container_id,
            netns_path: &netns_path,
            ifname: "eth0",
            cni_path,
        },
    )
}

struct Lab {
    rec: LabRecord,
    bin_dir: PathBuf,
}

impl Lab {
    fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    fn cni_path(&self) -> String {
        format!("{}:/usr/lib/cni:/opt/cni/bin", self.bin_dir.display())
    }

    fn add_netns(&mut self, name: &str) -> Result<()> {
        run_checked(Command::new("ip").args(["netns", "add", name]))
            .with_context(|| format!("creating namespace {name}"))?;
        self.rec.namespaces.push(name.to_string());
        self.rec.save()?;
        ns_sh(name, "ip link set lo up")?;
        Ok(())
    }

    /// Starts a daemon inside `netns`, detached (own session, output to a log
    /// file) so that it outlives `podnet-lab up`; its PID goes into the record.
    fn start_daemon(
        &mut self,
        name: &str,
        netns: &str,
        program: &Path,
        args: &[String],
        healthz: Option<&str>,
    ) -> Result<()> {
        let log = lab_dir().join("logs").join(format!("{name}.log"));
        std::fs::create_dir_all(log.parent().unwrap())?;
        let out = OpenOptions::new().create(true).append(true).open(&log)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns])
            .arg(program)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // SAFETY: setsid is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        self.rec.daemons.push(DaemonRecord {
            name: name.to_string(),
            netns: netns.to_string(),
            pid: child.id(),
            log,
            healthz: healthz.map(str::to_string),
        });
        self.rec.save()?;
        Ok(())
    }
}

fn ns_sh(netns: &str, script: &str) -> Result<String> {
    run_checked(Command::new("ip").args(["netns", "exec", netns, "sh", "-c", script]))
}

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}

/// Builds the cluster. Refuses when a complete lab is already up; a half-made
/// one (crash of an earlier run) is removed first. On any error everything
/// made so far is removed again.
pub fn up(opts: &UpOptions) -> Result<LabRecord> {
    if let Some(rec) = LabRecord::load()? {
        if rec.complete && rec.daemons.iter().all(|d| pid_alive(d.pid)) {
            bail!("a lab is already up (see `podnet-lab status`); run `podnet-lab down` first");
        }
        eprintln!("removing what an earlier, unfinished run left behind");
        down()?;
    }
    if opts.nodes == 0 || opts.nodes > 200 {
        bail!("--nodes must be between 1 and 200");
    }
    for b in [
        "podnet-node",
        "podnet-proxy",
        "podnet-dns",
        "podnetctl",
        opts.backend.plugin(),
    ] {
        if !opts.bin_dir.join(b).exists() {
            bail!(
                "{b} not found in {} (build with `cargo build --workspace --bins`, or set PODNET_BIN_DIR)",
                opts.bin_dir.display()
            );
        }
    }
    let mut lab = Lab {
        rec: LabRecord {
            backend: opts.backend.as_str().into(),
            store_kind: format!("{:?}", opts.store).to_lowercase(),
            ..Default::default()
        },
        bin_dir: opts.bin_dir.clone(),
    };
    std::fs::create_dir_all(lab_dir())?;
    lab.rec.save()?;
    match build(&mut lab, opts) {
        Ok(()) => {
            lab.rec.complete = true;
            lab.rec.save()?;
            Ok(lab.rec)
        }
        Err(e) => {
            let _ = down();
            Err(e.context("podnet-lab up failed; everything it made was removed"))
        }
    }
}

fn build(lab: &mut Lab, opts: &UpOptions) -> Result<()> {
    // Underlay: one switch, every node (and the control namespace) on it.
    let switch = format!("{}switch", ns_prefix());
    lab.add_netns(&switch)?;
    ns_sh(&switch, "ip link add br0 type bridge && ip link set br0 up")?;
    let attach = |ns: &str, port: &str, ip: &str| -> Result<()> {
        run_checked(Command::new("ip").args([
            "-n", &switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ]))?;
        ns_sh(&switch, &format!("ip link set {port} master br0 up"))?;
        ns_sh(
            ns,
            &format!("ip addr add {ip}/24 dev eth0 && ip link set eth0 up"),
        )?;
        Ok(())
    };

    // Store.
    let store_dir = lab_dir().join("store");
    match opts.store {
        StoreKind::Dir => {
            std::fs::create_dir_all(&store_dir)?;
            lab.rec.store_url = format!("dir://{}", store_dir.display());
        }
        StoreKind::Etcd => {
            let ctl = format!("{}control", ns_prefix());
            lab.add_netns(&ctl)?;
            attach(&ctl, "pctl", CONTROL_IP)?;
            let data = lab_dir().join("etcd");
            std::fs::create_dir_all(&data)?;
            let client = format!("http://{CONTROL_IP}:2379");
            let args = vec![
                "--name".into(),
                "lab".into(),
                "--data-dir".into(),
                data.display().to_string(),
                "--listen-client-urls".into(),
                format!("{client},http://127.0.0.1:2379"),
                "--advertise-client-urls".into(),
                client.clone(),
                "--listen-peer-urls".into(),
                "http://127.0.0.1:2380".into(),
                "--initial-advertise-peer-urls".into(),
                "http://127.0.0.1:2380".into(),
                "--initial-cluster".into(),
                "lab=http://127.0.0.1:2380".into(),
            ];
            lab.start_daemon("etcd", &ctl, Path::new("/usr/bin/etcd"), &args, None)?;
            lab.rec.store_url = format!("etcd://{CONTROL_IP}:2379");
            wait_for("etcd", Duration::from_secs(20), || {
                ns_sh(
                    &ctl,
                    &format!("ETCDCTL_API=3 etcdctl --endpoints={client} endpoint health"),
                )
                .is_ok()
            })?;
        }
    }

    lab.apply(&manifests::cluster_config(opts.backend))?;

    // Nodes and their agents.
    for i in 1..=opts.nodes {
        let name = format!("node{i}");
        let ns = format!("{}{name}", ns_prefix());
        lab.add_netns(&ns)?;
        let ip = format!("{UNDERLAY_PREFIX}.{i}");
        attach(&ns, &format!("p{i}"), &ip)?;
        ns_sh(&ns, "sysctl -qw net.ipv4.ip_forward=1")?;
        let dir = lab_dir().join(&name);
        std::fs::create_dir_all(dir.join("net.d"))?;
        let lease_file = dir.join("subnet.json");
        let conf = dir.join("net.d/10-podnet.conflist");
        std::fs::write(
            &conf,
            serde_json::to_vec_pretty(&manifests::conflist(opts.backend, &lease_file, &dir))?,
        )?;
        let args = vec![
            "--store".into(),
            lab.rec.store_url.clone(),
            "--node-name".into(),
            name.clone(),
            "--underlay-ip".into(),
            ip.clone(),
            "--lease-file".into(),
            lease_file.display().to_string(),
        ];
        lab.start_daemon(
            &format!("podnet-node-{name}"),
            &ns,
            &lab.bin("podnet-node"),
            &args,
            None,
        )?;
        lab.rec.nodes.push(NodeRecord {
            name,
            netns: ns,
            underlay_ip: ip,
            cni_conf: conf,
            lease_file,
        });
        lab.rec.save()?;
    }
    for node in lab.rec.nodes.clone() {
        wait_for(
            &format!("{}'s subnet lease", node.name),
            Duration::from_secs(30),
            || node.lease_file.exists(),
        )?;
        let args = vec![
            "--store".into(),
            lab.rec.store_url.clone(),
            "--node-name".into(),
            node.name.clone(),
            "--cluster-cidr".into(),
            CLUSTER_CIDR.into(),
            "--metrics-addr".into(),
            PROXY_METRICS.into(),
            "--healthz-addr".into(),
            PROXY_HEALTHZ.into(),
        ];
        lab.start_daemon(
            &format!("podnet-proxy-{}", node.name),
            &node.netns,
            &lab.bin("podnet-proxy"),
            &args,
            Some(PROXY_HEALTHZ),
        )?;
    }

    // Pods: web-0 .. web-(N*k-1), spread round-robin like a StatefulSet over nodes.
    let mut web_pods = Vec::new();
    for i in 0..opts.nodes * opts.pods_per_node {
        let node = lab.rec.nodes[i % opts.nodes].clone();
        let pod = make_pod(lab, &format!("web-{i}"), &node)?;
        let www = lab_dir().join("pods").join(&pod.name);
        std::fs::create_dir_all(&www)?;
        std::fs::write(
            www.join("index.html"),
            format!("hello from {} on {} ({})\n", pod.name, node.name, pod.ip),
        )?;
        lab.start_daemon(
            &format!("httpd-{}", pod.name),
            &pod.netns,
            Path::new("/bin/busybox"),
            &[
                "httpd".into(),
                "-f".into(),
                "-p".into(),
                "80".into(),
                "-h".into(),
                www.display().to_string(),
            ],
            None,
        )?;
        web_pods.push(pod);
    }

    // DNS as a pod behind kube-dns.
    let dns_node = lab.rec.nodes[0].clone();
    let dns_pod = make_pod(lab, "podnet-dns", &dns_node)?;
    let dns_args = vec![
        "--store".into(),
        lab.rec.store_url.clone(),
        "--listen".into(),
        "0.0.0.0:53".into(),
        "--zone".into(),
        "cluster.local".into(),
        // Nothing outside the lab exists for it: forward to an address of the
        // lab that does not answer, so outside names fail fast and stay inside.
        "--upstream".into(),
        format!("{CONTROL_IP}:53"),
        "--metrics-addr".into(),
        DNS_HEALTH.into(),
    ];
    lab.start_daemon(
        "podnet-dns",
        &dns_pod.netns,
        &lab.bin("podnet-dns"),
        &dns_args,
        None,
    )?;

    lab.apply(&manifests::services(&web_pods, &dns_pod))?;

    // Every pod resolves through the kube-dns VIP.
    for pod in lab.rec.pods.clone() {
        write_resolv_conf(&pod.netns)?;
    }

    // Ready when a pod on the last node fetches the web Service by name.
    let client = web_pods
        .iter()
        .rev()
        .find(|p| p.node != dns_node.name)
        .unwrap_or(&web_pods[0])
        .clone();
    wait_for(
        "http://web.default.svc.cluster.local from a pod",
        Duration::from_secs(60),
        || {
            ns_sh(
                &client.netns,
                "curl -sf --max-time 2 http://web.default.svc.cluster.local/ >/dev/null",
            )
            .is_ok()
        },
    )?;
    Ok(())
}

impl Lab {
    /// podnetctl where the store is reachable: the root namespace for the dir
    /// store, the control namespace for etcd (the root namespace has no route
    /// into the lab's underlay, on purpose).
    fn podnetctl(&self) -> Command {
        if self.rec.store_kind == "etcd" {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &format!("{}control", ns_prefix())])
                .arg(self.bin("podnetctl"));
            c
        } else {
            Command::new(self.bin("podnetctl"))
        }
    }

    /// `podnetctl apply -f -`.
    fn apply(&self, yaml: &str) -> Result<()> {
        let mut child = self
            .podnetctl()
            .args(["--store", &self.rec.store_url, "apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("running podnetctl apply")?;
        child.stdin.take().unwrap().write_all(yaml.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "podnetctl apply failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

impl Lab {
    fn delete_object(&self, kind: &str, name: &str) -> Result<()> {
        let out = self
            .podnetctl()
            .args([
                "--store",
                &self.rec.store_url,
                "delete",
                kind,
                name,
                "-n",
                "default",
            ])
            .output()
            .context("running podnetctl delete")?;
        if !out.status.success() {
            bail!(
                "podnetctl delete {kind} {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

fn make_pod(lab: &mut Lab, name: &str, node: &NodeRecord) -> Result<PodRecord> {
    let netns = format!("{}pod-{name}", ns_prefix());
    lab.add_netns(&netns)?;
    let conflist: Value = serde_json::from_slice(&std::fs::read(&node.cni_conf)?)?;
    let container_id = format!("lab{}", name.replace('-', ""));
    let netns_path = Path::new("/run/netns").join(&netns);
    let cni_path = lab.cni_path();
    let call = CniCall {
        host_netns: &node.netns,
        container_id: &container_id,
        netns_path: &netns_path,
        ifname: "eth0",
        cni_path: &cni_path,
    };
    let result = add_list(&conflist, &call).with_context(|| format!("CNI ADD of pod {name}"))?;
    let ip = first_ipv4(&result)
        .with_context(|| format!("CNI result of {name} has no IPv4: {result}"))?;
    let pod = PodRecord {
        name: name.to_string(),
        namespace: "default".into(),
        node: node.name.clone(),
        netns,
        container_id,
        ip,
    };
    lab.rec.pods.push(pod.clone());
    lab.rec.save()?;
    lab.apply(&manifests::pod(&pod))?;
    Ok(pod)
}

fn write_resolv_conf(netns: &str) -> Result<()> {
    // `ip netns exec` bind-mounts /etc/netns/<name>/resolv.conf over /etc/resolv.conf.
    let dir = Path::new("/etc/netns").join(netns);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("resolv.conf"),
        format!(
            "nameserver {DNS_SERVICE_IP}\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
        ),
    )?;
    Ok(())
}

/// Whether `text` has `ip` as a whole token (so 10.0.0.2 does not match 10.0.0.20).
fn mentions_address(text: &str, ip: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':'))
        .flat_map(|t| t.split(':'))
        .any(|t| t == ip)
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

/// Removes everything a lab made: daemons (by recorded PID), pods (CNI DEL),
/// namespaces, resolv.conf overrides, the lab directory. Works without a
/// record too (after a crash), by the lab's namespace prefix.
pub fn down() -> Result<()> {
    let rec = LabRecord::load().ok().flatten().unwrap_or_default();
    for d in &rec.daemons {
        if pid_alive(d.pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(d.pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while rec.daemons.iter().any(|d| pid_alive(d.pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for d in &rec.daemons {
        if pid_alive(d.pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(d.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    // CNI DEL so the plugins release addresses and rules like on a real node.
    let bin_dir = default_bin_dir();
    let cni_path = format!("{}:/usr/lib/cni:/opt/cni/bin", bin_dir.display());
    for pod in &rec.pods {
        let Some(node) = rec.nodes.iter().find(|n| n.name == pod.node) else {
            continue;
        };
        // Best effort: `down` removes the namespaces whatever the plugins say.
        let _ = cni_del(node, pod, &cni_path);
    }
    // Every namespace of the lab, recorded or not, and whatever still runs in it.
    let mut names: Vec<String> = rec.namespaces.clone();
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&ns_prefix()) && !names.contains(&n) {
                names.push(n);
            }
        }
    }
    for n in names.iter().rev() {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", n]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", n])
            .stderr(Stdio::null())
            .status();
    }
    if let Ok(entries) = std::fs::read_dir("/etc/netns") {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&ns_prefix()) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let _ = std::fs::remove_dir_all(lab_dir());
    Ok(())
}

/// `podnet-lab delete-pod NAME`: what a scale-down does — the pod's endpoints
/// leave the EndpointSlices first, then the runtime tears it down (CNI DEL).
pub fn delete_pod(name: &str) -> Result<()> {
    let mut rec = LabRecord::load()?.context("no lab is up (run `podnet-lab up`)")?;
    let pod = rec
        .pod(name)
        .cloned()
        .with_context(|| format!("no pod {name:?}"))?;
    if !pod.name.starts_with("web-") {
        bail!("only web pods can be deleted (the DNS pod backs kube-dns)");
    }
    let dns = rec
        .pod("podnet-dns")
        .cloned()
        .context("lab record has no DNS pod")?;
    let remaining: Vec<PodRecord> = rec
        .pods
        .iter()
        .filter(|p| p.name.starts_with("web-") && p.name != name)
        .cloned()
        .collect();
    let lab = Lab {
        rec: rec.clone(),
        bin_dir: default_bin_dir(),
    };
    lab.apply(&manifests::services(&remaining, &dns))?;
    // Like a terminating pod's grace period: tear the pod down only once no
    // node's proxy sends new connections to it any more.
    let ip = pod.ip.clone();
    wait_for(
        &format!("every proxy to drop {ip}"),
        Duration::from_secs(10),
        || {
            rec.nodes.iter().all(|n| {
                ns_sh(&n.netns, "nft list table ip podnet")
                    .map(|rules| !mentions_address(&rules, &ip))
                    .unwrap_or(false)
            })
        },
    )?;
    let node = rec
        .nodes
        .iter()
        .find(|n| n.name == pod.node)
        .cloned()
        .context("pod's node")?;
    cni_del(&node, &pod, &lab.cni_path())?;
    for d in rec.daemons.iter().filter(|d| d.netns == pod.netns) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(d.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = Command::new("ip")
        .args(["netns", "del", &pod.netns])
        .status();
    let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&pod.netns));
    rec.daemons.retain(|d| d.netns != pod.netns);
    rec.namespaces.retain(|n| n != &pod.netns);
    rec.pods.retain(|p| p.name != name);
    rec.save()?;
    lab.delete_object("pod", name)?;
    Ok(())
}

/// `podnet-lab exec POD -- CMD...`: runs CMD in the pod's namespace (with its
/// resolv.conf); a node name runs it in the node's namespace.
pub fn exec(target: &str, argv: &[String]) -> Result<i32> {
    let rec = LabRecord::load()?.context("no lab is up (run `podnet-lab up`)")?;
    let netns = rec
        .pod(target)
        .map(|p| p.netns.clone())
        .or_else(|| {
            rec.nodes
                .iter()
                .find(|n| n.name == target)
                .map(|n| n.netns.clone())
        })
        .with_context(|| {
            let pods: Vec<_> = rec.pods.iter().map(|p| p.name.as_str()).collect();
            let nodes: Vec<_> = rec.nodes.iter().map(|n| n.name.as_str()).collect();
            format!("no pod or node {target:?} (pods: {pods:?}, nodes: {nodes:?})")
        })?;
    if argv.is_empty() {
        bail!("nothing to run: podnet-lab exec {target} -- CMD [ARGS...]");
    }
    let status = Command::new("ip")
        .args(["netns", "exec", &netns])
        .args(argv)
        .status()
        .with_context(|| format!("running {argv:?} in {netns}"))?;
    Ok(status.code().unwrap_or(1))
}

/// A human-readable status: nodes, pods, services, daemons and their health.
pub fn status() -> Result<String> {
    let rec = LabRecord::load()?.context("no lab is up (run `podnet-lab up`)")?;
    let mut s = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        s,
        "lab: backend {}, store {}{}",
        rec.backend,
        rec.store_url,
        if rec.complete {
            ""
        } else {
            " (INCOMPLETE: run `podnet-lab down`)"
        }
    );
    let _ = writeln!(s, "\nNODE      UNDERLAY      POD SUBNET");
    for n in &rec.nodes {
        let subnet = std::fs::read(&n.lease_file)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .map(|v| lease_subnet(&v))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(s, "{:<9} {:<13} {}", n.name, n.underlay_ip, subnet);
    }
    let _ = writeln!(s, "\nPOD          NODE      IP");
    for p in &rec.pods {
        let _ = writeln!(s, "{:<12} {:<9} {}", p.name, p.node, p.ip);
    }
    let _ = writeln!(
        s,
        "\nSERVICE       CLUSTER-IP    PORTS\nweb           {WEB_SERVICE_IP}    80/TCP, NodePort {WEB_NODE_PORT}\nweb-headless  None          80/TCP\nkube-dns      {DNS_SERVICE_IP}    53/UDP, 53/TCP"
    );
    let _ = writeln!(s, "\nDAEMON                    PID      STATE");
    for d in &rec.daemons {
        let state = if !pid_alive(d.pid) {
            "DEAD".to_string()
        } else if let Some(h) = &d.healthz {
            match ns_sh(
                &d.netns,
                &format!(
                    "curl -s -o /dev/null -w '%{{http_code}}' --max-time 1 http://{h}/healthz"
                ),
            ) {
                Ok(code) if code.trim() == "200" => "running, healthy".into(),
                Ok(code) => format!("running, healthz {}", code.trim()),
                Err(_) => "running, healthz unreachable".into(),
            }
        } else {
            "running".into()
        };
        let _ = writeln!(s, "{:<25} {:<8} {}", d.name, d.pid, state);
    }
    Ok(s)
}

fn lease_subnet(v: &Value) -> String {
    for key in ["subnet", "subnets", "ipv4Subnet"] {
        match &v[key] {
            Value::String(x) => return x.clone(),
            Value::Array(xs) => {
                return xs
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            }
            _ => {}
        }
    }
    "?".into()
}

/// What `up` prints when it is done.
pub fn summary(rec: &LabRecord) -> String {
    let client = rec
        .pods
        .iter()
        .rev()
        .find(|p| p.name.starts_with("web-"))
        .map(|p| p.name.clone())
        .unwrap_or_default();
    let node2 = rec
        .nodes
        .get(1)
        .or(rec.nodes.first())
        .map(|n| n.name.clone())
        .unwrap_or_default();
    let first_web = rec.pod("web-0").map(|p| p.ip.clone()).unwrap_or_default();
    format!(
        "{status}\nTry:\n  podnet-lab exec {client} -- curl -s http://web.default.svc.cluster.local\n  podnet-lab exec {client} -- getent hosts web-0.web-headless.default.svc.cluster.local\n  podnet-lab exec {client} -- dig +short @{DNS_SERVICE_IP} _http._tcp.web-headless.default.svc.cluster.local SRV\n  podnet-lab exec {node2} -- curl -s http://{}:{WEB_NODE_PORT}\n  podnet-lab exec {node2} -- nft list table ip podnet\n  podnet-lab exec {client} -- ping -c1 {first_web}\n  podnet-lab status\n  podnet-lab down\n",
        rec.nodes.first().map(|n| n.underlay_ip.clone()).unwrap_or_default(),
        status = status().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::mentions_address;

    #[test]
    fn address_tokens_match_whole_addresses_only() {
        let rules = "elements = { 10.244.1.20 . tcp . 80 : goto x }\n dnat ip to 10.244.2.3:80";
        assert!(mentions_address(rules, "10.244.1.20"));
        assert!(mentions_address(rules, "10.244.2.3"));
        assert!(!mentions_address(rules, "10.244.1.2"));
        assert!(!mentions_address(rules, "10.244.2.30"));
    }
}
