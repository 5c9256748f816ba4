//! Shared harness of the bridge/interop tests: a host namespace playing the node, pod
//! namespaces, and CNI calls made exactly like a runtime makes them (`ip netns exec
//! <host> podnet-bridge` with `CNI_*` env and the config on stdin).
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use netns_fixtures::{unique_name, Netns};
use serde_json::{json, Value};

/// `target/<profile>/`: where cargo put podnet-bridge and podnet-ipam.
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_podnet-bridge"))
        .parent()
        .expect("binary has a directory")
        .to_path_buf()
}

/// Debian's reference plugins.
pub const REFERENCE_DIR: &str = "/usr/lib/cni";

/// What a plugin call returned.
#[derive(Debug)]
pub struct Reply {
    pub ok: bool,
    pub json: Value,
    pub stderr: String,
}

impl Reply {
    /// The error code, if the call failed with error JSON.
    pub fn code(&self) -> Option<u64> {
        if self.ok {
            None
        } else {
            self.json["code"].as_u64()
        }
    }

    #[track_caller]
    pub fn expect_ok(self, what: &str) -> Value {
        assert!(
            self.ok,
            "{what} failed: {} (stderr: {})",
            self.json, self.stderr
        );
        self.json
    }
}

/// A node: its namespace and a scratch dir (IPAM data lives there, not in /var/lib).
pub struct Node {
    pub host: Netns,
    pub dir: tempfile::TempDir,
    pub cni_path: String,
    pub bridge_bin: PathBuf,
}

impl Node {
    pub fn new() -> Node {
        Node {
            host: Netns::new("host").expect("host netns"),
            dir: tempfile::tempdir().expect("tempdir"),
            cni_path: format!("{}:{REFERENCE_DIR}", bin_dir().display()),
            bridge_bin: PathBuf::from(env!("CARGO_BIN_EXE_podnet-bridge")),
        }
    }

    /// A bridge network config: podnet-ipam on `subnet`, data in the scratch dir.
    pub fn conf(&self, version: &str, subnet: &str, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": version,
            "name": "podnet-test",
            "type": "podnet-bridge",
            "bridge": "cni0",
            "isGateway": true,
            "ipam": {
                "type": "podnet-ipam",
                "subnet": subnet,
                "dataDir": self.dir.path().join("ipam").display().to_string(),
            }
        });
        merge(&mut c, extra);
        c
    }

    /// The same with the reference `host-local` IPAM.
    pub fn conf_host_local(&self, version: &str, subnet: &str, extra: Value) -> Value {
        let mut c = self.conf(version, subnet, extra);
        c["ipam"]["type"] = json!("host-local");
        c["ipam"]["dataDir"] = json!(self.dir.path().join("host-local").display().to_string());
        c
    }

    /// Runs `binary` in the host namespace with `cmd` and the CNI env. A `conf` that is a
    /// JSON string is written raw (to send malformed input).
    pub fn call_bin(
        &self,
        binary: &Path,
        cmd: &str,
        conf: &Value,
        container_id: &str,
        netns: Option<&Path>,
        ifname: &str,
    ) -> Reply {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.host.name()])
            .arg(binary)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", cmd)
            .env("CNI_PATH", &self.cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if !container_id.is_empty() {
            c.env("CNI_CONTAINERID", container_id);
        }
        if !ifname.is_empty() {
            c.env("CNI_IFNAME", ifname);
        }
        if let Some(p) = netns {
            c.env("CNI_NETNS", p);
        }
        let mut child = c.spawn().expect("spawn plugin");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(
                match conf {
                    Value::String(raw) => raw.clone().into_bytes(),
                    other => other.to_string().into_bytes(),
                }
                .as_slice(),
            )
            .expect("write stdin");
        let out = child.wait_with_output().expect("wait plugin");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let json = if stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("{cmd} printed non-JSON {stdout:?}: {e}"))
        };
        Reply {
            ok: out.status.success(),
            json,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs podnet-bridge.
    pub fn call(
        &self,
        cmd: &str,
        conf: &Value,
        cid: &str,
        pod: Option<&Path>,
        ifname: &str,
    ) -> Reply {
        self.call_bin(&self.bridge_bin, cmd, conf, cid, pod, ifname)
    }

    pub fn add(&self, conf: &Value, cid: &str, pod: &Netns) -> Value {
        self.call("ADD", conf, cid, Some(pod.path()), "eth0")
            .expect_ok(&format!("ADD {cid}"))
    }

    pub fn del(&self, conf: &Value, cid: &str, pod: &Netns) {
        self.call("DEL", conf, cid, Some(pod.path()), "eth0")
            .expect_ok(&format!("DEL {cid}"));
    }

    /// `sh -c` in the host namespace.
    pub fn sh(&self, script: &str) -> String {
        self.host
            .sh(script)
            .unwrap_or_else(|e| panic!("{script}: {e:#}"))
    }

    /// Names of the host's veth links.
    pub fn host_veths(&self) -> Vec<String> {
        self.sh("ip -o link show type veth | awk -F': ' '{print $2}' | cut -d@ -f1")
            .lines()
            .map(str::to_string)
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// The host's nftables ruleset (`nft list ruleset`), for assertions only.
    pub fn ruleset(&self) -> String {
        self.sh("nft list ruleset")
    }

    /// Reserved addresses in the IPAM store: every file name in the data dir that parses
    /// as an IP (both podnet-ipam and host-local keep one entry per address).
    pub fn reservations(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["ipam", "host-local"] {
            let root = self.dir.path().join(sub);
            collect_ips(&root, &mut out);
        }
        out.sort();
        out
    }
}

fn collect_ips(dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_ips(&p, out);
        } else if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
            if n.parse::<std::net::IpAddr>().is_ok() {
                out.push(n.to_string());
            }
        }
    }
}

/// A pod namespace.
pub fn pod() -> Netns {
    Netns::new("pod").expect("pod netns")
}

/// A unique container id.
pub fn cid() -> String {
    unique_name("ctr")
}

/// `ip -o addr` etc. inside a pod.
pub fn pod_sh(pod: &Netns, script: &str) -> String {
    pod.sh(script).unwrap_or_else(|e| panic!("{script}: {e:#}"))
}

/// The pod's IPv4 addresses on `ifname` (`10.22.0.2/24`).
pub fn pod_ipv4(pod: &Netns, ifname: &str) -> Vec<String> {
    pod_sh(
        pod,
        &format!("ip -o -4 addr show dev {ifname} | awk '{{print $4}}'"),
    )
    .lines()
    .map(str::to_string)
    .collect()
}

/// Object merge: `extra`'s keys override `base`'s.
pub fn merge(base: &mut Value, extra: Value) {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        for (k, v) in e {
            b.insert(k, v);
        }
    }
}

/// The ADD result's address of interface 2 (the pod's), without prefix.
pub fn result_ip(result: &Value) -> String {
    let a = result["ips"][0]["address"]
        .as_str()
        .expect("ips[0].address");
    a.split('/').next().expect("address").to_string()
}
