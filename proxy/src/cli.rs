//! Command line and config file of `podnet-proxy`. Every flag may also be set
//! in a YAML config file (`--config`), under the flag's name; flags win.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use ipnetwork::IpNetwork;
use serde::Deserialize;

#[derive(Parser, Debug, Default)]
#[command(
    name = "podnet-proxy",
    about = "Kubernetes Service proxy on nftables (podnet)"
)]
pub struct Cli {
    /// YAML file with any of the flags below as keys (e.g. `node-name: a`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Cluster state store: dir:///path or etcd://host:port.
    #[arg(long, env = "PODNET_STORE")]
    pub store: Option<String>,
    /// This node's name (EndpointSlice nodeName); default: the hostname.
    #[arg(long)]
    pub node_name: Option<String>,
    /// Pod network(s), one per family (default: the store's ClusterConfig).
    #[arg(long, value_delimiter = ',')]
    pub cluster_cidr: Option<Vec<IpNetwork>>,
    /// Service ClusterIP range(s); ClusterIPs outside are rejected (default: ClusterConfig).
    #[arg(long, value_delimiter = ',')]
    pub service_cidr: Option<Vec<IpNetwork>>,
    /// Local addresses that accept NodePorts (default: all but loopback).
    #[arg(long, value_delimiter = ',')]
    pub nodeport_addresses: Option<Vec<IpNetwork>>,
    /// SNAT all service traffic.
    #[arg(long)]
    pub masquerade_all: bool,
    /// Minimum time between two syncs (changes in between are coalesced).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub min_sync_period: Option<Duration>,
    /// `/metrics` (and `/healthz`) listen address.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// `/healthz` listen address.
    #[arg(long)]
    pub healthz_addr: Option<SocketAddr>,
    /// `/healthz` fails when changes wait longer than this for a successful sync.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub healthz_bound: Option<Duration>,
    /// Program the current state once, print what was done, exit.
    #[arg(long)]
    pub once: bool,
    /// With --once: print the planned tables in nft syntax instead of programming them.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileConfig {
    store: Option<String>,
    node_name: Option<String>,
    cluster_cidr: Option<String>,
    service_cidr: Option<String>,
    nodeport_addresses: Option<String>,
    masquerade_all: Option<bool>,
    min_sync_period: Option<String>,
    metrics_addr: Option<String>,
    healthz_addr: Option<String>,
    healthz_bound: Option<String>,
}

/// Fully resolved settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub store: String,
    pub node_name: String,
    pub cluster_cidrs: Vec<IpNetwork>,
    pub service_cidrs: Vec<IpNetwork>,
    pub nodeport_addresses: Vec<IpNetwork>,
    pub masquerade_all: bool,
    pub min_sync_period: Duration,
    pub metrics_addr: Option<SocketAddr>,
    pub healthz_addr: Option<SocketAddr>,
    pub healthz_bound: Duration,
    pub once: bool,
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing config file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("config file {path}: {key}: {reason}")]
    Value {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
    #[error("no node name: pass --node-name (the hostname could not be read: {0})")]
    NodeName(std::io::Error),
}

fn cidrs(s: &str) -> Result<Vec<IpNetwork>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|c| c.parse::<IpNetwork>().map_err(|e| format!("{c:?}: {e}")))
        .collect()
}

impl Cli {
    pub fn resolve(self) -> Result<Settings, ConfigError> {
        let (file, path) = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                })?;
                let f: FileConfig =
                    serde_yaml::from_str(&text).map_err(|source| ConfigError::Parse {
                        path: p.clone(),
                        source,
                    })?;
                (f, p.clone())
            }
            None => (FileConfig::default(), PathBuf::new()),
        };
        let bad = |key, reason: String| ConfigError::Value {
            path: path.clone(),
            key,
            reason,
        };
        let file_cidrs =
            |key, v: &Option<String>| v.as_deref().map(cidrs).transpose().map_err(|r| bad(key, r));
        let file_dur = |key, v: &Option<String>| {
            v.as_deref()
                .map(humantime::parse_duration)
                .transpose()
                .map_err(|e| bad(key, e.to_string()))
        };
        let file_addr = |key, v: &Option<String>| {
            v.as_deref()
                .map(|a| a.parse::<SocketAddr>())
                .transpose()
                .map_err(|e| bad(key, e.to_string()))
        };
        let node_name = match self.node_name.or(file.node_name) {
            Some(n) => n,
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .map_err(ConfigError::NodeName)?,
        };
        Ok(Settings {
            store: self
                .store
                .or(file.store)
                .unwrap_or_else(|| podnet_state::DEFAULT_STORE.to_string()),
            node_name,
            cluster_cidrs: match self.cluster_cidr {
                Some(c) => c,
                None => file_cidrs("cluster-cidr", &file.cluster_cidr)?.unwrap_or_default(),
            },
            service_cidrs: match self.service_cidr {
                Some(c) => c,
                None => file_cidrs("service-cidr", &file.service_cidr)?.unwrap_or_default(),
            },
            nodeport_addresses: match self.nodeport_addresses {
                Some(c) => c,
                None => {
                    file_cidrs("nodeport-addresses", &file.nodeport_addresses)?.unwrap_or_default()
                }
            },
            masquerade_all: self.masquerade_all || file.masquerade_all.unwrap_or(false),
            min_sync_period: match self.min_sync_period {
                Some(d) => d,
                None => file_dur("min-sync-period", &file.min_sync_period)?
                    .unwrap_or(Duration::from_millis(100)),
            },
            metrics_addr: match self.metrics_addr {
                Some(a) => Some(a),
                None => file_addr("metrics-addr", &file.metrics_addr)?,
            },
            healthz_addr: match self.healthz_addr {
                Some(a) => Some(a),
                None => file_addr("healthz-addr", &file.healthz_addr)?,
            },
            healthz_bound: match self.healthz_bound {
                Some(d) => d,
                None => file_dur("healthz-bound", &file.healthz_bound)?
                    .unwrap_or(Duration::from_secs(60)),
            },
            once: self.once,
            dry_run: self.dry_run,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.yaml");
        std::fs::write(
            &path,
            "store: dir:///tmp/x\nnode-name: from-file\ncluster-cidr: 10.244.0.0/16,fd00:244::/56\nmin-sync-period: 250ms\nmasquerade-all: true\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "podnet-proxy",
            "--config",
            path.to_str().unwrap(),
            "--node-name",
            "from-flag",
        ]);
        let s = cli.resolve().unwrap();
        assert_eq!(s.node_name, "from-flag");
        assert_eq!(s.store, "dir:///tmp/x");
        assert_eq!(s.cluster_cidrs.len(), 2);
        assert_eq!(s.min_sync_period, Duration::from_millis(250));
        assert!(s.masquerade_all);
        assert_eq!(s.healthz_bound, Duration::from_secs(60));
    }

    #[test]
    fn bad_config_values_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.yaml");
        std::fs::write(&path, "node-name: a\nnodeport-addresses: 10.0.0.0/33\n").unwrap();
        let err = Cli::parse_from(["podnet-proxy", "--config", path.to_str().unwrap()])
            .resolve()
            .unwrap_err();
        assert!(err.to_string().contains("nodeport-addresses"), "{err}");
        std::fs::write(&path, "node-nam: a\n").unwrap();
        assert!(
            Cli::parse_from(["podnet-proxy", "--config", path.to_str().unwrap()])
                .resolve()
                .is_err()
        );
    }
}
