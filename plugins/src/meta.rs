//! The `podnet-host-gw` and `podnet-vxlan` meta plugins (flannel's CNI
//! plugin, two types): read the node lease written by `podnet-node`, turn the
//! user's config into a `podnet-bridge` config with the node subnet as the
//! IPAM range and the lease MTU, and run the bridge logic with it. On ADD the
//! node-level device (VXLAN) is created if the agent has not made it yet.
//!
//! The generated config is saved per attachment on ADD, so DEL, CHECK and GC
//! use exactly what ADD used even if the lease changed or vanished since.
//! No lease yet: ADD fails with code 11 (try again later), STATUS with 50.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::bridge::{self, BridgeConf};
use crate::cni::{CniError, CniResult, NetConf, Plugin, Request};
use crate::lease::{lease_path, LeaseBackend, NodeLease};
use crate::overlay::kernel::Kernel;

/// Bridge the meta plugins put pods on unless the config names another.
pub const DEFAULT_BRIDGE: &str = "podnet0";
/// Where generated bridge configs are kept unless `dataDir` is given.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/podnet";

/// Which of the two plugins this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaPlugin {
    pub backend: LeaseBackend,
}

impl MetaPlugin {
    pub const HOST_GW: MetaPlugin = MetaPlugin {
        backend: LeaseBackend::HostGw,
    };
    pub const VXLAN: MetaPlugin = MetaPlugin {
        backend: LeaseBackend::Vxlan,
    };
}

/// The meta plugin's own keys; everything else of the user's config
/// (hairpinMode, promiscMode, macspoofchk, ...) is passed to the bridge.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Wire {
    lease_file: Option<PathBuf>,
    data_dir: Option<PathBuf>,
}

/// Keys the meta plugin decides itself and never passes through.
const OWN_KEYS: &[&str] = &[
    "type",
    "leaseFile",
    "dataDir",
    "ipam",
    "mtu",
    "ipMasq",
    "isGateway",
];

/// The `podnet-bridge` config for a pod on the node holding `lease`, derived
/// from the user's config `raw` (pure).
pub fn bridge_config(raw: &Value, lease: &NodeLease, data_dir: Option<&Path>) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(obj) = raw.as_object() {
        for (k, v) in obj {
            if !OWN_KEYS.contains(&k.as_str()) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out.insert("type".into(), "podnet-bridge".into());
    out.entry("bridge").or_insert_with(|| DEFAULT_BRIDGE.into());
    out.entry("isDefaultGateway").or_insert(Value::Bool(true));
    out.insert("isGateway".into(), Value::Bool(true));
    // The agent masquerades for the whole node (one rule set, pod↔pod exempt).
    out.insert("ipMasq".into(), Value::Bool(false));
    out.insert("mtu".into(), lease.mtu.into());
    let ranges: Vec<Value> = lease
        .subnets
        .iter()
        .map(|s| json!([{ "subnet": s.to_string() }]))
        .collect();
    let user_ipam = raw.get("ipam").and_then(Value::as_object);
    let mut ipam = serde_json::Map::new();
    if let Some(u) = user_ipam {
        for (k, v) in u {
            ipam.insert(k.clone(), v.clone());
        }
    }
    ipam.entry("type").or_insert_with(|| "podnet-ipam".into());
    ipam.insert("ranges".into(), Value::Array(ranges));
    if let Some(d) = data_dir {
        ipam.entry("dataDir")
            .or_insert_with(|| d.join("ipam").display().to_string().into());
    }
    out.insert("ipam".into(), Value::Object(ipam));
    Value::Object(out)
}

fn saved_path(data_dir: &Path, req: &Request) -> PathBuf {
    data_dir
        .join("configs")
        .join(&req.conf.name)
        .join(format!("{}-{}.json", req.env.container_id, req.env.ifname))
}

/// A request for the bridge logic: same env and version, the generated config.
fn bridge_request(req: &Request, conf: &Value) -> Result<Request, CniError> {
    let bytes = serde_json::to_vec(conf).expect("JSON values serialize");
    Ok(Request {
        env: req.env.clone(),
        conf: NetConf::parse(&bytes)?,
        version: req.version,
    })
}

impl MetaPlugin {
    fn wire(&self, req: &Request) -> Result<Wire, CniError> {
        req.conf.plugin_config()
    }

    fn data_dir(w: &Wire) -> PathBuf {
        w.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
    }

    /// The lease, or `None` when the agent has not written one yet.
    fn lease(&self, w: &Wire) -> Result<Option<NodeLease>, CniError> {
        let path = lease_path(w.lease_file.as_deref());
        let lease = NodeLease::read(&path).map_err(|e| CniError::io(e.to_string()))?;
        if let Some(l) = &lease {
            if l.backend != self.backend {
                return Err(CniError::invalid_config(format!(
                    "lease {} is for backend {:?}, but this plugin is the {:?} one",
                    path.display(),
                    l.backend,
                    self.backend
                )));
            }
        }
        Ok(lease)
    }

    /// The bridge config ADD saved for this attachment, else one generated
    /// from the current lease, else `None`.
    fn known_config(&self, req: &Request, w: &Wire) -> Result<Option<Value>, CniError> {
        let dir = Self::data_dir(w);
        match std::fs::read(saved_path(&dir, req)) {
            Ok(b) => {
                return serde_json::from_slice(&b).map(Some).map_err(|e| {
                    CniError::decode(format!(
                        "saved config {}: {e}",
                        saved_path(&dir, req).display()
                    ))
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(CniError::io(format!(
                    "reading {}: {e}",
                    saved_path(&dir, req).display()
                )))
            }
        }
        Ok(self
            .lease(w)?
            .map(|l| bridge_config(&req.conf.raw, &l, w.data_dir.as_deref())))
    }
}

/// Makes sure the node-level device exists (VXLAN): the same device the agent
/// makes, built from the same lease, so a pod added before the agent finished
/// starting already has its tunnel.
fn ensure_node_level(lease: &NodeLease) -> Result<(), CniError> {
    if lease.backend != LeaseBackend::Vxlan {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::io(format!("starting a netlink runtime: {e}")))?;
    rt.block_on(async {
        let k = Kernel::connect().map_err(|e| CniError::io(e.to_string()))?;
        let under = k
            .link_with_address(lease.underlay)
            .await
            .map_err(|e| CniError::io(e.to_string()))?
            .ok_or_else(|| {
                CniError::try_again(format!(
                    "no interface holds the lease's underlay address {}",
                    lease.underlay
                ))
            })?;
        if let Some(spec) = lease.vxlan_spec(under) {
            k.ensure_vxlan(&spec)
                .await
                .map_err(|e| CniError::io(format!("making sure the VXLAN device exists: {e}")))?;
        }
        Ok(())
    })
}

impl Plugin for MetaPlugin {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let w = self.wire(req)?;
        let lease = self.lease(&w)?.ok_or_else(|| {
            CniError::try_again(format!(
                "no node lease at {} yet (is podnet-node running?)",
                lease_path(w.lease_file.as_deref()).display()
            ))
        })?;
        ensure_node_level(&lease)?;
        let conf = bridge_config(&req.conf.raw, &lease, w.data_dir.as_deref());
        let breq = bridge_request(req, &conf)?;
        let bconf = BridgeConf::from_request(&breq)?;
        let path = saved_path(&Self::data_dir(&w), req);
        let save = || -> std::io::Result<()> {
            std::fs::create_dir_all(path.parent().expect("saved path has a parent"))?;
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(&conf).expect("JSON serializes"))?;
            std::fs::rename(&tmp, &path)
        };
        save().map_err(|e| CniError::io(format!("saving {}: {e}", path.display())))?;
        match bridge::add(&breq, &bconf) {
            Ok(r) => Ok(r),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let w = self.wire(req)?;
        // DEL never fails for things already gone: with neither a saved
        // config nor a lease there is nothing of ours left to release.
        let Some(conf) = self.known_config(req, &w).unwrap_or(None) else {
            return Ok(());
        };
        let breq = bridge_request(req, &conf)?;
        bridge::del(&breq, &BridgeConf::from_request(&breq)?)?;
        match std::fs::remove_file(saved_path(&Self::data_dir(&w), req)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CniError::io(format!(
                "removing saved config of {}: {e}",
                req.env.container_id
            ))),
            _ => Ok(()),
        }
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let w = self.wire(req)?;
        let conf = self.known_config(req, &w)?.ok_or_else(|| {
            CniError::try_again("no node lease and no saved config for this attachment")
        })?;
        let breq = bridge_request(req, &conf)?;
        bridge::check(&breq, &BridgeConf::from_request(&breq)?)
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let w = self.wire(req)?;
        let lease = self.lease(&w)?.ok_or_else(|| {
            CniError::not_available(format!(
                "no node lease at {} yet (is podnet-node running?)",
                lease_path(w.lease_file.as_deref()).display()
            ))
        })?;
        let conf = bridge_config(&req.conf.raw, &lease, w.data_dir.as_deref());
        let breq = bridge_request(req, &conf)?;
        bridge::status(&breq, &BridgeConf::from_request(&breq)?)
    }

    fn gc(&self, req: &Request) -> Result<(), CniError> {
        let w = self.wire(req)?;
        let valid = req.conf.gc_attachments()?;
        // Saved configs of attachments the runtime no longer knows go too.
        let dir = Self::data_dir(&w).join("configs").join(&req.conf.name);
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let keep = valid
                    .iter()
                    .any(|a| name == format!("{}-{}.json", a.container_id, a.ifname));
                if !keep {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let Some(lease) = self.lease(&w)? else {
            return Ok(());
        };
        let mut conf = bridge_config(&req.conf.raw, &lease, w.data_dir.as_deref());
        for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
            if let Some(v) = req.conf.raw.get(key) {
                conf[key] = v.clone();
            }
        }
        let breq = bridge_request(req, &conf)?;
        bridge::gc(&breq, &BridgeConf::from_request(&breq)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::sample_lease;

    #[test]
    fn bridge_config_uses_lease_subnets_and_mtu_and_keeps_user_options() {
        let user = json!({
            "cniVersion": "1.0.0", "name": "podnet", "type": "podnet-vxlan",
            "leaseFile": "/x", "dataDir": "/d", "hairpinMode": true, "mtu": 9000,
            "ipMasq": true, "runtimeConfig": {"mac": "02:00:00:00:00:01"}
        });
        let c = bridge_config(&user, &sample_lease(), Some(Path::new("/d")));
        assert_eq!(c["type"], "podnet-bridge");
        assert_eq!(c["bridge"], DEFAULT_BRIDGE);
        assert_eq!(c["mtu"], 1450);
        assert_eq!(c["ipMasq"], false);
        assert_eq!(c["isGateway"], true);
        assert_eq!(c["isDefaultGateway"], true);
        assert_eq!(c["hairpinMode"], true);
        assert_eq!(c["cniVersion"], "1.0.0");
        assert_eq!(c["runtimeConfig"]["mac"], "02:00:00:00:00:01");
        assert!(c.get("leaseFile").is_none() && c.get("dataDir").is_none());
        assert_eq!(c["ipam"]["type"], "podnet-ipam");
        assert_eq!(c["ipam"]["dataDir"], "/d/ipam");
        assert_eq!(
            c["ipam"]["ranges"],
            json!([[{"subnet": "10.244.3.0/24"}], [{"subnet": "fd00:244:0:3::/64"}]])
        );
    }

    #[test]
    fn user_ipam_type_and_bridge_name_win_but_ranges_come_from_the_lease() {
        let user = json!({
            "name": "n", "type": "podnet-host-gw", "bridge": "br9", "isDefaultGateway": false,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "192.0.2.0/24"}]], "dataDir": "/u"}
        });
        let c = bridge_config(&user, &sample_lease(), None);
        assert_eq!(c["bridge"], "br9");
        assert_eq!(c["isDefaultGateway"], false);
        assert_eq!(c["ipam"]["type"], "host-local");
        assert_eq!(c["ipam"]["dataDir"], "/u");
        assert_eq!(c["ipam"]["ranges"][0][0]["subnet"], "10.244.3.0/24");
    }
}
