//! The node lease file (flannel's `subnet.env`, as JSON): written by
//! `podnet-node` once it holds its subnets, read by the `podnet-host-gw` and
//! `podnet-vxlan` plugins on every call. Written atomically (temp file in the
//! same directory, fsync, rename), so a reader sees the old or the new lease,
//! never half of one.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::overlay::kernel::VxlanSpec;
use crate::overlay::{vxlan_device_name, Mac};

/// IANA's VXLAN port, used when a lease does not name one.
pub const DEFAULT_VXLAN_PORT: u16 = 4789;

/// Where the lease lives unless configured otherwise.
pub const DEFAULT_LEASE_FILE: &str = "/run/podnet/subnet.json";
/// Environment variable that overrides [`DEFAULT_LEASE_FILE`] (for the agent
/// and the plugins alike), so tests and unusual layouts need no config change.
pub const LEASE_FILE_ENV: &str = "PODNET_LEASE_FILE";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseBackend {
    #[serde(rename = "host-gw")]
    HostGw,
    #[serde(rename = "vxlan")]
    Vxlan,
}

/// What a node's pods need to know about the node's share of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeLease {
    /// Node name the agent registered as.
    pub node: String,
    /// The cluster pod networks (`clusterCIDRs`).
    pub networks: Vec<IpNetwork>,
    /// This node's pod subnets (one per family), as `.0/len`.
    pub subnets: Vec<IpNetwork>,
    /// Pod interface MTU.
    pub mtu: u32,
    pub backend: LeaseBackend,
    /// VXLAN only: the VNI (device `podnet.<vni>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// VXLAN only: UDP destination port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_port: Option<u16>,
    /// The node's underlay address (VXLAN local address / host-gw next hop of others).
    pub underlay: IpAddr,
    /// Whether pod traffic leaving the cluster networks is masqueraded (by the agent).
    #[serde(default)]
    pub ip_masq: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("reading lease file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lease file {path} is not a valid lease: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("writing lease file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The lease path: `explicit` if given, else `$PODNET_LEASE_FILE`, else the default.
pub fn lease_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    match std::env::var_os(LEASE_FILE_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_LEASE_FILE),
    }
}

impl NodeLease {
    /// The lease at `path`; `Ok(None)` when there is none yet (the agent has
    /// not started or not finished claiming), which callers answer with
    /// "try again later".
    pub fn read(path: &Path) -> Result<Option<NodeLease>, LeaseError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LeaseError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| LeaseError::Decode {
                path: path.to_path_buf(),
                source,
            })
    }

    /// Writes the lease atomically, creating the parent directory. Returns
    /// whether the file changed (an identical lease is not rewritten).
    pub fn write(&self, path: &Path) -> Result<bool, LeaseError> {
        let err = |source| LeaseError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut body = serde_json::to_vec_pretty(self).expect("a lease always serializes");
        body.push(b'\n');
        if std::fs::read(path).ok().as_deref() == Some(&body[..]) {
            return Ok(false);
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "lease".into());
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let res = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            return Err(err(e));
        }
        Ok(true)
    }

    /// The VXLAN device this lease implies (`None` for host-gw). The agent and
    /// the plugins both build it from the lease, so they never fight over it.
    pub fn vxlan_spec(&self, underlay_index: u32) -> Option<VxlanSpec> {
        let vni = self.vni.filter(|_| self.backend == LeaseBackend::Vxlan)?;
        Some(VxlanSpec {
            name: vxlan_device_name(vni),
            vni,
            port: self.vxlan_port.unwrap_or(DEFAULT_VXLAN_PORT),
            local: self.underlay,
            underlay_index,
            mtu: self.mtu,
            mac: Mac::derived(&self.node, vni),
            addresses: self.subnets.iter().map(|s| s.network()).collect(),
        })
    }

    /// The subnet of the given family, if the node has one.
    pub fn subnet(&self, v4: bool) -> Option<IpNetwork> {
        self.subnets.iter().copied().find(|s| s.is_ipv4() == v4)
    }
}

/// A dual-stack VXLAN lease for unit tests of this crate.
#[cfg(test)]
pub(crate) fn sample_lease() -> NodeLease {
    NodeLease {
        node: "n1".into(),
        networks: vec!["10.244.0.0/16".parse().unwrap()],
        subnets: vec![
            "10.244.3.0/24".parse().unwrap(),
            "fd00:244:0:3::/64".parse().unwrap(),
        ],
        mtu: 1450,
        backend: LeaseBackend::Vxlan,
        vni: Some(7),
        vxlan_port: Some(4789),
        underlay: "10.90.0.2".parse().unwrap(),
        ip_masq: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_round_trips_and_skips_identical_rewrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/subnet.json");
        assert_eq!(NodeLease::read(&path).unwrap(), None);
        let l = sample_lease();
        assert!(l.write(&path).unwrap());
        assert_eq!(NodeLease::read(&path).unwrap(), Some(l.clone()));
        assert!(!l.write(&path).unwrap());
        let mut l2 = l.clone();
        l2.mtu = 1400;
        assert!(l2.write(&path).unwrap());
        assert_eq!(NodeLease::read(&path).unwrap().unwrap().mtu, 1400);
        // No temp files left behind.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn garbage_is_a_decode_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("subnet.json");
        std::fs::write(&path, "{not json").unwrap();
        let e = NodeLease::read(&path).unwrap_err();
        assert!(matches!(e, LeaseError::Decode { .. }));
        assert!(e.to_string().contains("subnet.json"), "{e}");
    }

    #[test]
    fn json_field_names_are_camel_case() {
        let v = serde_json::to_value(sample_lease()).unwrap();
        assert_eq!(v["backend"], "vxlan");
        assert_eq!(v["ipMasq"], true);
        assert_eq!(v["subnets"][1], "fd00:244:0:3::/64");
    }

    #[test]
    fn explicit_path_wins() {
        assert_eq!(lease_path(Some(Path::new("/x/y"))), PathBuf::from("/x/y"));
    }
}
