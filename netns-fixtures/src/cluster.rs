//! Several nodes on one underlay, each with its own CNI config dir, state
//! dir, lease file path and (optionally) an agent process.
//!
//! The underlay is a switch: a namespace with a bridge and one veth per node,
//! so nodes can join later (`add_node`) the way a machine is plugged in.
//! Node `i` (0-based) gets `10.90.0.(i+1)/24` and, with IPv6, `fd90::(i+1)/64`
//! on `eth0`: test ranges that only exist inside this cluster's namespaces,
//! so parallel clusters never see each other. Everything goes away on drop:
//! agents are killed by PID, then the node and switch namespaces are deleted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::netns::Netns;
use crate::underlay::plug_into_switch;
use crate::util::wait_until;

const UNDERLAY_V4: &str = "10.90.0";
const UNDERLAY_V6: &str = "fd90:";
/// Most nodes a cluster can hold (addresses .1 .. .250 of the underlay /24).
pub const MAX_NODES: usize = 250;

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Also give every node an IPv6 underlay address (`fd90::N/64`).
    pub ipv6: bool,
    /// Underlay MTU of each node's `eth0`.
    pub mtu: u32,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            ipv6: true,
            mtu: 1500,
        }
    }
}

/// One node: its namespace, addresses and private directories.
pub struct ClusterNode {
    /// The node name (`node1`, `node2`, ...), as it appears in the store.
    pub name: String,
    pub ns: Netns,
    /// Underlay interface inside the node (`eth0`).
    pub iface: String,
    pub ip: String,
    pub ip6: Option<String>,
    /// The node's own directory: `net.d/` (CNI configs), `state/`, `subnet.json`.
    pub dir: PathBuf,
    agent: Option<Agent>,
}

/// An agent process (`ip netns exec` execs into it, so the PID is the agent's),
/// killed by PID and reaped on drop.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ClusterNode {
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.join("net.d")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }
    pub fn lease_file(&self) -> PathBuf {
        self.dir.join("subnet.json")
    }
    pub fn agent_log(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    /// Starts `program args` inside the node as its agent (stdout and stderr
    /// appended to `agent.log`), replacing (killing) a running one.
    pub fn start_agent(
        &mut self,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Result<()> {
        self.kill_agent();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.agent_log())
            .with_context(|| format!("opening {}", self.agent_log().display()))?;
        let mut cmd = self.ns.command(&program.to_string_lossy());
        cmd.args(args)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(std::process::Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} in {}", program.display(), self.ns.name()))?;
        self.agent = Some(Agent(child));
        Ok(())
    }

    /// PID of the running agent.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(|a| a.0.id())
    }

    /// True while the agent process has not exited.
    pub fn agent_running(&mut self) -> bool {
        matches!(self.agent.as_mut().map(|a| a.0.try_wait()), Some(Ok(None)))
    }

    /// Kills (SIGKILL, by PID) and reaps the agent.
    pub fn kill_agent(&mut self) {
        self.agent.take();
    }

    /// Sends SIGTERM and waits up to `timeout` for the agent to exit; returns
    /// its exit status (`None`, after a SIGKILL, when it did not stop in time).
    pub fn stop_agent(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut a = self.agent.take()?;
        let _ = kill(Pid::from_raw(a.0.id() as i32), Signal::SIGTERM);
        let mut status = None;
        wait_until(timeout, Duration::from_millis(20), || {
            status = a.0.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    /// The agent's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.agent_log()).unwrap_or_default()
    }
}

/// Nodes on a switch. Dropped in order: agents, nodes, switch.
pub struct Cluster {
    pub nodes: Vec<ClusterNode>,
    switch: Netns,
    opts: ClusterOptions,
    /// A directory all nodes share, e.g. for a `dir://` store.
    shared: tempfile::TempDir,
    /// Attachments made so far (also counts removed nodes, so addresses are never reused).
    attached: usize,
    /// `expose_root_port`: (root-namespace port, unix socket, relay processes).
    exposed: Vec<(u16, PathBuf)>,
    relays: Vec<Agent>,
}

impl Cluster {
    /// A switch with `n` nodes attached.
    pub fn new(n: usize, opts: ClusterOptions) -> Result<Cluster> {
        let switch = Netns::new("sw")?;
        switch.exec_checked(&["ip", "link", "add", "br0", "type", "bridge"])?;
        // Forward immediately: STP/forward delay would stall new ports for seconds.
        switch.exec_checked(&[
            "ip",
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
        ])?;
        switch.exec_checked(&["ip", "link", "set", "br0", "up"])?;
        let shared = tempfile::Builder::new()
            .prefix("podnet-cluster-")
            .tempdir()
            .context("creating the cluster's shared directory")?;
        let mut c = Cluster {
            nodes: Vec::new(),
            switch,
            opts,
            shared,
            attached: 0,
            exposed: Vec::new(),
            relays: Vec::new(),
        };
        for _ in 0..n {
            c.add_node()?;
        }
        Ok(c)
    }

    /// Directory shared by every node of this cluster.
    pub fn shared_dir(&self) -> &Path {
        self.shared.path()
    }

    /// `dir://<shared>/store`: a dir-store URL every node can use.
    pub fn dir_store_url(&self) -> String {
        format!("dir://{}", self.shared.path().join("store").display())
    }

    pub fn switch(&self) -> &Netns {
        &self.switch
    }

    /// Plugs a new node into the switch and returns its index in `nodes`.
    pub fn add_node(&mut self) -> Result<usize> {
        if self.attached >= MAX_NODES {
            bail!("a cluster holds at most {MAX_NODES} nodes");
        }
        let k = self.attached + 1;
        self.attached += 1;
        let name = format!("node{k}");
        let ns = Netns::new(&format!("n{k}"))?;
        let port = format!("p{k}");
        plug_into_switch(&self.switch, &port, &ns, "eth0")
            .with_context(|| format!("plugging {name} into the switch"))?;
        let ip = format!("{UNDERLAY_V4}.{k}");
        let mtu = self.opts.mtu.to_string();
        ns.exec_checked(&["ip", "link", "set", "eth0", "mtu", &mtu])?;
        self.switch
            .exec_checked(&["ip", "link", "set", &port, "mtu", &mtu])?;
        ns.exec_checked(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        let ip6 = if self.opts.ipv6 {
            let a = format!("{UNDERLAY_V6}:{k:x}");
            ns.exec_checked(&[
                "ip",
                "addr",
                "add",
                &format!("{a}/64"),
                "dev",
                "eth0",
                "nodad",
            ])?;
            Some(a)
        } else {
            None
        };
        ns.exec_checked(&["ip", "link", "set", "eth0", "up"])?;
        // A node forwards pod traffic (a runtime or the bridge plugin would enable this).
        ns.sh("sysctl -qw net.ipv4.ip_forward=1 && sysctl -qw net.ipv6.conf.all.forwarding=1")?;
        let dir = self.shared.path().join(&name);
        for sub in ["net.d", "state"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        for (port, sock) in self.exposed.clone() {
            self.relays.push(node_relay(&ns, port, &sock)?);
        }
        self.nodes.push(ClusterNode {
            name,
            ns,
            iface: "eth0".into(),
            ip,
            ip6,
            dir,
            agent: None,
        });
        Ok(self.nodes.len() - 1)
    }

    /// Makes `127.0.0.1:<port>` of the root namespace (e.g. an `EtcdServer`)
    /// reachable as `127.0.0.1:<port>` inside every node, present and future.
    /// The hop between namespaces is a unix socket in the shared directory
    /// (socat relays on both ends), so nothing listens on a network address
    /// outside the cluster's namespaces.
    pub fn expose_root_port(&mut self, port: u16) -> Result<()> {
        let sock = self.shared.path().join(format!("relay-{port}.sock"));
        let child = Command::new("socat")
            .arg(format!("UNIX-LISTEN:{},fork", sock.display()))
            .arg(format!("TCP:127.0.0.1:{port}"))
            .stdin(std::process::Stdio::null())
            .spawn()
            .context("starting socat (install the Debian package socat)")?;
        self.relays.push(Agent(child));
        if !wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
            sock.exists()
        }) {
            bail!("socat did not create {}", sock.display());
        }
        for n in &self.nodes {
            self.relays.push(node_relay(&n.ns, port, &sock)?);
        }
        self.exposed.push((port, sock));
        Ok(())
    }

    /// Unplugs node `i` (kills its agent, deletes its namespace) and returns its name.
    pub fn remove_node(&mut self, i: usize) -> String {
        let mut node = self.nodes.remove(i);
        node.kill_agent();
        node.name.clone()
    }
}

fn node_relay(ns: &Netns, port: u16, sock: &Path) -> Result<Agent> {
    let child = ns
        .command("socat")
        .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"))
        .arg(format!("UNIX-CONNECT:{}", sock.display()))
        .stdin(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting a socat relay in {}", ns.name()))?;
    let ready = wait_until(Duration::from_secs(5), Duration::from_millis(10), || {
        ns.sh(&format!("ss -Hltn 'sport = :{port}' | grep -q ."))
            .is_ok()
    });
    if !ready {
        bail!(
            "relay for port {port} in {} did not start listening",
            ns.name()
        );
    }
    Ok(Agent(child))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill_agent();
        }
        self.nodes.clear();
        self.relays.clear();
    }
}
