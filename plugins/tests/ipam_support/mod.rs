//! Runs the real `podnet-ipam` binary the way a container runtime does, against a
//! temporary `dataDir` and a fake boot id file (config knob `bootIdPath`).

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

pub const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// One test network: its own data dir and boot id file.
pub struct Net {
    pub dir: tempfile::TempDir,
    pub name: String,
}

/// A plugin invocation's outcome.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub json: Value,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Asserts success and returns the JSON (Null for commands without output).
    pub fn ok(self) -> Value {
        assert_eq!(
            self.code, 0,
            "plugin failed: {} / {}",
            self.stdout, self.stderr
        );
        self.json
    }

    /// Asserts failure with the given CNI code; returns the error JSON.
    pub fn err(self, code: u64) -> Value {
        assert_ne!(self.code, 0, "expected failure, got {}", self.stdout);
        assert_eq!(
            self.json["code"], code,
            "wrong code: {} / {}",
            self.stdout, self.stderr
        );
        assert!(self.json["msg"].is_string(), "{}", self.stdout);
        self.json
    }

    /// The addresses (without prefix) of an ADD result.
    pub fn ips(&self) -> Vec<String> {
        self.json["ips"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| {
                        i["address"]
                            .as_str()
                            .and_then(|s| s.split('/').next())
                            .unwrap_or_default()
                            .to_string()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Net {
    pub fn new(name: &str) -> Net {
        let dir = tempfile::tempdir().expect("tempdir");
        let net = Net {
            dir,
            name: name.to_string(),
        };
        net.set_boot_id("boot-one");
        net
    }

    pub fn boot_path(&self) -> PathBuf {
        self.dir.path().join("boot_id")
    }

    pub fn set_boot_id(&self, id: &str) {
        std::fs::write(self.boot_path(), format!("{id}\n")).expect("write boot id");
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn store(&self) -> PathBuf {
        self.data_dir().join(&self.name)
    }

    /// A network config at `version` whose `ipam` is `ipam` plus type/dataDir/bootIdPath.
    pub fn conf(&self, version: &str, ipam: Value) -> Value {
        let mut ipam = ipam;
        let obj = ipam.as_object_mut().expect("ipam object");
        obj.insert("type".into(), json!("podnet-ipam"));
        obj.insert("dataDir".into(), json!(self.data_dir()));
        obj.insert("bootIdPath".into(), json!(self.boot_path()));
        json!({"cniVersion": version, "name": self.name, "type": "podnet-bridge", "ipam": ipam})
    }

    /// Reserved addresses (file names under ips/), sorted.
    pub fn reserved(&self) -> Vec<String> {
        list(&self.store().join("ips"))
    }

    /// Owner index entries, sorted.
    pub fn owners(&self) -> Vec<String> {
        list(&self.store().join("owners"))
    }
}

pub fn list(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| {
                e.expect("dirent")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Runs the plugin with `cmd`; `id`/`ifname` empty = not set. `extra` env overrides.
pub fn call(cmd: &str, id: &str, ifname: &str, stdin: &str, extra: &[(&str, &str)]) -> Out {
    let bin = env!("CARGO_BIN_EXE_podnet-ipam");
    let mut c = Command::new(bin);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", cmd)
        .env("CNI_NETNS", "/var/run/netns/not-used-by-ipam")
        .env(
            "CNI_PATH",
            Path::new(bin)
                .parent()
                .expect("bin dir")
                .display()
                .to_string(),
        );
    if !id.is_empty() {
        c.env("CNI_CONTAINERID", id);
    }
    if !ifname.is_empty() {
        c.env("CNI_IFNAME", ifname);
    }
    for (k, v) in extra {
        if v.is_empty() {
            c.env_remove(k);
        } else {
            c.env(k, v);
        }
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn podnet-ipam");
    // A plugin rejecting its env exits without reading stdin (like the reference
    // skel); a broken pipe here is expected then, and judged by the output below.
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes());
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("stdout not JSON ({e}): {stdout}"))
    };
    Out {
        code: out.status.code().unwrap_or(-1),
        json,
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `call` with a JSON config.
pub fn run(cmd: &str, id: &str, ifname: &str, conf: &Value) -> Out {
    call(cmd, id, ifname, &conf.to_string(), &[])
}
