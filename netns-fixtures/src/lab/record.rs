//! What `podnet-lab up` made, written down as it goes so that `down` (and a
//! later `up` after a crash) can remove exactly that.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The lab instance: `lab` unless `PODNET_LAB_INSTANCE` names another, so
/// that end-to-end tests can run several labs side by side.
pub fn instance() -> String {
    std::env::var("PODNET_LAB_INSTANCE")
        .ok()
        .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or_else(|| "lab".to_string())
}

/// All state of the instance lives under here; it is tmpfs, like the
/// namespaces it describes (`/run/podnet-lab` by default).
pub fn lab_dir() -> PathBuf {
    PathBuf::from(format!("/run/podnet-{}", instance()))
}

/// Every namespace of the instance starts with this (`pnlab-` by default),
/// and nothing else of podnet's does.
pub fn ns_prefix() -> String {
    format!("pn{}-", instance())
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LabRecord {
    pub backend: String,
    pub store_kind: String,
    pub store_url: String,
    pub complete: bool,
    pub namespaces: Vec<String>,
    pub daemons: Vec<DaemonRecord>,
    pub nodes: Vec<NodeRecord>,
    pub pods: Vec<PodRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonRecord {
    pub name: String,
    pub netns: String,
    pub pid: u32,
    pub log: PathBuf,
    /// `host:port` of its health endpoint inside `netns`, when it has one.
    pub healthz: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    pub netns: String,
    pub underlay_ip: String,
    pub cni_conf: PathBuf,
    pub lease_file: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    pub name: String,
    pub namespace: String,
    pub node: String,
    pub netns: String,
    pub container_id: String,
    pub ip: String,
}

impl LabRecord {
    pub fn path() -> PathBuf {
        lab_dir().join("lab.json")
    }

    pub fn load() -> Result<Option<LabRecord>> {
        let p = Self::path();
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(
                serde_json::from_slice(&b).with_context(|| format!("parsing {}", p.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    /// Written after every step (temp + rename), so a crash leaves a usable record.
    pub fn save(&self) -> Result<()> {
        let p = Self::path();
        let dir = lab_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = p.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &p).with_context(|| format!("renaming to {}", p.display()))?;
        Ok(())
    }

    pub fn pod(&self, name: &str) -> Option<&PodRecord> {
        self.pods.iter().find(|p| p.name == name)
    }
}
