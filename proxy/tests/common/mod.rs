//! Test cluster for podnet-proxy: a node namespace with a bridge (`cbr0`,
//! 10.244.0.1/24) and pod namespaces on it, a second node (10.90.0.2) on an
//! underlay veth, a temp dir store, and podnet-proxy running inside the node
//! namespace. Pods run small in-process servers (sockets made inside the pod
//! namespace, served from test threads) that answer with their name and the
//! peer address they saw.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netns_fixtures::{ChildGuard, Netns, Underlay};
use podnet_state::{Kind, ObjectKey, Store};
use serde_json::{json, Value};

pub const NODE_IP: &str = "10.90.0.1";
pub const NODE2_IP: &str = "10.90.0.2";
pub const GATEWAY: &str = "10.244.0.1";

pub struct Cluster {
    pub node: Netns,
    pub node2: Netns,
    _underlay: Underlay,
    pub pods: Vec<(String, String, Netns)>,
    pub dir: tempfile::TempDir,
    pub store: Arc<dyn Store>,
    pub rt: tokio::runtime::Runtime,
    pub proxy: Option<ChildGuard>,
    pub log: std::path::PathBuf,
    next_veth: usize,
}

impl Cluster {
    pub fn new() -> Cluster {
        let node = Netns::new("pxn").expect("node netns");
        let node2 = Netns::new("pxm").expect("node2 netns");
        let underlay = Underlay::veth(
            &node,
            &format!("{NODE_IP}/24"),
            &node2,
            &format!("{NODE2_IP}/24"),
        )
        .expect("underlay");
        node.sh(&format!(
            "sysctl -qw net.ipv4.ip_forward=1 && ip link add cbr0 type bridge && ip addr add {GATEWAY}/24 dev cbr0 && \
             ip link set cbr0 up && ip route add default via {NODE2_IP}"
        ))
        .expect("node bridge");
        // node2 reaches pods and VIPs through the node (for direct pod traffic and replies).
        node2
            .sh(&format!("ip route add 10.244.0.0/16 via {NODE_IP} && ip route add 10.96.0.0/16 via {NODE_IP}"))
            .expect("node2 routes");
        let dir = tempfile::tempdir().expect("temp dir");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let url = format!("dir://{}", dir.path().join("store").display());
        let store = rt
            .block_on(podnet_state::open_store(&url))
            .expect("open dir store");
        let log = dir.path().join("proxy.log");
        Cluster {
            node,
            node2,
            _underlay: underlay,
            pods: Vec::new(),
            dir,
            store,
            rt,
            proxy: None,
            log,
            next_veth: 0,
        }
    }

    pub fn store_url(&self) -> String {
        format!("dir://{}", self.dir.path().join("store").display())
    }

    /// A pod namespace on the bridge with address `ip`; serves TCP 8080 and UDP 5353.
    /// Like CNI bridge plugins, ports are in hairpin mode: with br_netfilter a
    /// hairpinned reply is bridged back out of the port it came in on.
    pub fn add_pod(&mut self, name: &str, ip: &str) -> usize {
        let pod = Netns::new("pxp").expect("pod netns");
        self.next_veth += 1;
        let host_if = format!("veth{}", self.next_veth);
        self.node
            .sh(&format!(
                "ip link add {host_if} type veth peer name eth0 netns {pod} && ip link set {host_if} master cbr0 up && \
                 bridge link set dev {host_if} hairpin on",
                pod = pod.name()
            ))
            .expect("pod veth");
        pod.sh(&format!("ip addr add {ip}/24 dev eth0 && ip link set eth0 up && ip route add default via {GATEWAY}"))
            .expect("pod address");
        serve_tcp(&pod, name, 8080);
        serve_udp(&pod, name, 5353);
        self.pods.push((name.to_string(), ip.to_string(), pod));
        self.pods.len() - 1
    }

    pub fn pod(&self, name: &str) -> &Netns {
        &self
            .pods
            .iter()
            .find(|(n, _, _)| n == name)
            .expect("pod exists")
            .2
    }

    pub fn put(&self, obj: Value) {
        let kind = match obj["kind"].as_str().unwrap() {
            "Service" => Kind::Service,
            "EndpointSlice" => Kind::EndpointSlice,
            "Node" => Kind::Node,
            k => panic!("unexpected kind {k}"),
        };
        let key = ObjectKey::new(
            kind,
            obj["metadata"]["namespace"].as_str(),
            obj["metadata"]["name"].as_str().unwrap(),
        );
        self.rt
            .block_on(self.store.put(&key, &obj))
            .expect("store put");
    }

    pub fn delete(&self, kind: Kind, name: &str) {
        let key = ObjectKey::new(kind, Some("default"), name);
        self.rt
            .block_on(self.store.delete(&key))
            .expect("store delete");
    }

    pub fn start_proxy(&mut self, extra: &[&str]) {
        self.start_proxy_with_store(&self.store_url(), extra);
    }

    pub fn start_proxy_with_store(&mut self, store: &str, extra: &[&str]) {
        // `Netns::spawn` keeps program, args and env but not stdio: redirect
        // in a shell that execs the proxy (same PID, so the guard kills it).
        let mut args: Vec<String> = [
            "--store",
            store,
            "--node-name",
            "node-a",
            "--cluster-cidr",
            "10.244.0.0/16",
            "--service-cidr",
            "10.96.0.0/16",
            "--min-sync-period",
            "50ms",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let script = format!(
            "exec {} {} >/dev/null 2>>{}",
            env!("CARGO_BIN_EXE_podnet-proxy"),
            args.join(" "),
            self.log.display()
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script]).env("RUST_LOG", "info");
        self.proxy = Some(self.node.spawn(cmd).expect("start podnet-proxy"));
    }

    pub fn proxy_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `nft list map ip podnet MAP` in the node shows `needle`.
    pub fn wait_map(&self, map: &str, needle: &str, present: bool) {
        self.wait_listing("map ip", map, needle, present);
    }

    /// Waits until `nft list OBJECT podnet NAME` in the node (`OBJECT`:
    /// `map ip`, `set ip6`, ...) shows `needle`, or no longer does.
    pub fn wait_listing(&self, object: &str, name: &str, needle: &str, present: bool) {
        let ok =
            netns_fixtures::wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
                let out = self
                    .node
                    .sh(&format!("nft list {object} podnet {name} 2>/dev/null"))
                    .unwrap_or_default();
                out.contains(needle) == present
            });
        assert!(
            ok,
            "{object} podnet {name} {} {needle:?} in time; proxy log:\n{}",
            if present {
                "never showed"
            } else {
                "still shows"
            },
            self.proxy_log()
        );
    }
}

fn serve_tcp(pod: &Netns, name: &str, port: u16) {
    let l = pod
        .enter(move || TcpListener::bind(("0.0.0.0", port)))
        .unwrap()
        .expect("bind tcp");
    let name = name.to_string();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let name = name.clone();
            std::thread::spawn(move || {
                let peer = s
                    .peer_addr()
                    .map(|a| a.ip().to_string())
                    .unwrap_or_default();
                if writeln!(s, "{name} {peer}").is_err() {
                    return;
                }
                // Then echo lines until EOF (long-lived connection tests).
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    if s.write_all(line.as_bytes()).is_err() {
                        break;
                    }
                    line.clear();
                }
            });
        }
    });
}

fn serve_udp(pod: &Netns, name: &str, port: u16) {
    let sock = pod
        .enter(move || UdpSocket::bind(("0.0.0.0", port)))
        .unwrap()
        .expect("bind udp");
    let name = name.to_string();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((_, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(name.as_bytes(), from);
        }
    });
}

/// One TCP connection from inside `ns` to `addr`: the greeting line
/// ("<pod> <peer ip>"), or the error.
pub fn fetch(ns: &Netns, addr: &str) -> std::io::Result<String> {
    let addr: SocketAddr = addr.parse().unwrap();
    ns.enter(move || fetch_here(addr)).unwrap()
}

pub fn fetch_here(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while s.read(&mut byte)? == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// `n` connections from `ns`; returns the pod names that answered, in order.
pub fn fetch_many(ns: &Netns, addr: &str, n: usize) -> Vec<std::io::Result<String>> {
    let addr: SocketAddr = addr.parse().unwrap();
    ns.enter(move || {
        (0..n)
            .map(|_| fetch_here(addr).map(|l| l.split(' ').next().unwrap_or("").to_string()))
            .collect()
    })
    .unwrap()
}

/// Retries `fetch` until the answer satisfies `want` (for changes that
/// take a sync to land).
pub fn fetch_until(
    ns: &Netns,
    addr: &str,
    want: impl Fn(&std::io::Result<String>) -> bool,
) -> std::io::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = fetch(ns, addr);
        if want(&r) || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A UDP request from `ns` bound to `src_port` (so repeated requests are one
/// conntrack flow); returns the answering pod's name.
pub fn udp_ask(ns: &Netns, addr: &str, src_port: u16) -> std::io::Result<String> {
    let addr: SocketAddr = addr.parse().unwrap();
    ns.enter(move || {
        let s = UdpSocket::bind(("0.0.0.0", src_port))?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        s.send_to(b"q", addr)?;
        let mut buf = [0u8; 64];
        let (n, _) = s.recv_from(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .unwrap()
}

pub fn service(name: &str, ip: &str, ports: Value) -> Value {
    service_with(name, &[ip], "SingleStack", ports)
}

/// A Service with ClusterIPs `ips` (one per family, primary first) and
/// `ipFamilyPolicy` `policy`; NodePort type when a port has a nodePort.
pub fn service_with(name: &str, ips: &[&str], policy: &str, ports: Value) -> Value {
    let families: Vec<&str> = ips
        .iter()
        .map(|ip| if ip.contains(':') { "IPv6" } else { "IPv4" })
        .collect();
    let has_np = ports
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p.get("nodePort").is_some());
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": ips[0], "clusterIPs": ips, "ipFamilies": families,
                 "ipFamilyPolicy": policy,
                 "type": if has_np { "NodePort" } else { "ClusterIP" }, "ports": ports}
    })
}

/// An EndpointSlice `<svc>-1` for `svc` with (ip, node) endpoints, port name "p".
pub fn slice(svc: &str, port: u16, proto: &str, eps: &[(&str, &str)]) -> Value {
    slice_with(
        svc,
        "1",
        json!([{"name": "p", "port": port, "protocol": proto}]),
        eps,
    )
}

/// An EndpointSlice `<svc>-<suffix>` with ready (ip, node) endpoints; the
/// address type follows the first endpoint's address.
pub fn slice_with(svc: &str, suffix: &str, ports: Value, eps: &[(&str, &str)]) -> Value {
    let endpoints: Vec<Value> = eps
        .iter()
        .map(|(ip, node)| json!({"addresses": [ip], "nodeName": node, "conditions": {"ready": true}}))
        .collect();
    let v6 = eps.first().is_some_and(|(ip, _)| ip.contains(':'));
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{svc}-{suffix}"), "namespace": "default",
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": if v6 { "IPv6" } else { "IPv4" },
        "ports": ports,
        "endpoints": endpoints
    })
}
