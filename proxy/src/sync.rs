//! One sync: snapshot -> model -> plans -> diffs -> one netlink transaction,
//! then conntrack cleanup. Keeps what is installed so the next sync can be
//! partial; any failure makes the next one a full, atomic replacement.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use podnet_nft::{Batch, Nft};
use podnet_state::Snapshot;

use crate::apply::{self, ApplyError};
use crate::conntrack::{self, Conntrack, FlowFilter};
use crate::diff;
use crate::metrics::Metrics;
use crate::model::{Family, HealthCheck, Model, ModelConfig, Protocol};
use crate::plan::{self, Layout, PlanConfig, TablePlan};

/// Proxy settings (from flags / config file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    pub node_name: String,
    /// Pod networks (one per family). Empty: taken from the store's ClusterConfig.
    pub cluster_cidrs: Vec<IpNetwork>,
    /// Service ClusterIP ranges. Empty: taken from the store's ClusterConfig.
    pub service_cidrs: Vec<IpNetwork>,
    pub nodeport_addresses: Vec<IpNetwork>,
    pub masquerade_all: bool,
    pub layout: Layout,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("opening the nf_tables netlink socket: {0}")]
    Socket(#[source] Box<podnet_nft::Error>),
    #[error(transparent)]
    Encode(#[from] ApplyError),
    #[error("programming tables ip/ip6 {} ({} ops): {source}", plan::TABLE, .ops)]
    Apply {
        ops: usize,
        #[source]
        source: Box<podnet_nft::Error>,
    },
}

/// What one sync did.
#[derive(Debug, Clone, Default)]
pub struct SyncReport {
    pub full: bool,
    pub service_ports: usize,
    pub endpoints: usize,
    pub elements: usize,
    pub rules: usize,
    pub chains: usize,
    pub elements_added: usize,
    pub elements_deleted: usize,
    pub chains_changed: usize,
    pub skipped: usize,
    pub conntrack_deleted: usize,
    pub duration: Duration,
}

impl fmt::Display for SyncReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} sync in {:.2?}: {} service ports, {} endpoints, {} chains, {} rules, {} elements \
             (+{} -{} elements, {} chains changed), {} objects skipped, {} conntrack entries deleted",
            if self.full { "full" } else { "partial" },
            self.duration,
            self.service_ports,
            self.endpoints,
            self.chains,
            self.rules,
            self.elements,
            self.elements_added,
            self.elements_deleted,
            self.chains_changed,
            self.skipped,
            self.conntrack_deleted
        )
    }
}

pub struct Proxier {
    cfg: ProxyConfig,
    nft: Nft,
    installed: BTreeMap<Family, TablePlan>,
    model: Option<Model>,
    logged_skips: BTreeSet<String>,
    metrics: std::sync::Arc<Metrics>,
}

fn family_of(n: &IpNetwork) -> Family {
    Family::of(&n.ip())
}

impl Proxier {
    /// Opens the netlink socket in the current network namespace.
    pub fn new(cfg: ProxyConfig, metrics: std::sync::Arc<Metrics>) -> Result<Proxier, SyncError> {
        Ok(Proxier {
            cfg,
            nft: Nft::new().map_err(|e| SyncError::Socket(Box::new(e)))?,
            installed: BTreeMap::new(),
            model: None,
            logged_skips: BTreeSet::new(),
            metrics,
        })
    }

    /// healthCheckNodePort responders the last successful sync asks for.
    pub fn health_checks(&self) -> BTreeMap<u16, HealthCheck> {
        self.model
            .as_ref()
            .map(|m| m.health_checks.clone())
            .unwrap_or_default()
    }

    /// Forgets what is installed: the next sync replaces the tables.
    pub fn force_full(&mut self) {
        self.installed.clear();
    }

    fn effective_cidrs(&self, snap: &Snapshot) -> (Vec<IpNetwork>, Vec<IpNetwork>) {
        let cc = snap
            .cluster_configs
            .get("default")
            .or_else(|| snap.cluster_configs.values().next());
        let cluster = if self.cfg.cluster_cidrs.is_empty() {
            cc.map(|c| c.spec.cluster_cidrs.clone()).unwrap_or_default()
        } else {
            self.cfg.cluster_cidrs.clone()
        };
        let service = if self.cfg.service_cidrs.is_empty() {
            cc.map(|c| c.spec.service_cidrs.clone()).unwrap_or_default()
        } else {
            self.cfg.service_cidrs.clone()
        };
        (cluster, service)
    }

    /// Builds the plans for `snap` without touching the kernel.
    pub fn plans(&self, snap: &Snapshot) -> (Model, BTreeMap<Family, TablePlan>) {
        let (cluster, service) = self.effective_cidrs(snap);
        let model = Model::build(
            snap,
            &ModelConfig {
                node_name: self.cfg.node_name.clone(),
                service_cidrs: service,
            },
        );
        let mut plans = BTreeMap::new();
        for fam in [Family::V4, Family::V6] {
            let pc = PlanConfig {
                family: fam,
                cluster_cidr: cluster.iter().find(|c| family_of(c) == fam).copied(),
                masquerade_all: self.cfg.masquerade_all,
                nodeport_cidrs: self.cfg.nodeport_addresses.clone(),
                layout: self.cfg.layout,
            };
            plans.insert(fam, plan::build(&pc, model.family(fam).values()));
        }
        (model, plans)
    }

    /// Programs `snap`. On failure nothing changed in the kernel and the next
    /// sync is a full one.
    pub fn sync(&mut self, snap: &Snapshot) -> Result<SyncReport, SyncError> {
        let start = Instant::now();
        let res = self.sync_inner(snap, start);
        self.metrics
            .sync_duration
            .observe(start.elapsed().as_secs_f64());
        if res.is_err() {
            self.metrics.sync_failures.inc();
            self.installed.clear();
        }
        res
    }

    fn sync_inner(&mut self, snap: &Snapshot, start: Instant) -> Result<SyncReport, SyncError> {
        let (model, plans) = self.plans(snap);
        self.log_skips(&model);
        let mut report = SyncReport {
            skipped: model.skipped.len(),
            ..Default::default()
        };
        let mut batch = Batch::new();
        let mut full = false;
        for (fam, p) in &plans {
            let d = diff::diff(self.installed.get(fam), p);
            full |= d.full;
            let (add, del, chains) = d.counts();
            report.elements_added += add;
            report.elements_deleted += del;
            report.chains_changed += chains;
            apply::encode(&mut batch, *fam, &d, &p.comment)?;
        }
        let ops = batch.len();
        self.nft.apply(&batch).map_err(|e| SyncError::Apply {
            ops,
            source: Box::new(e),
        })?;
        drop(batch);

        if let Some(old) = &self.model {
            report.conntrack_deleted = self.clear_stale_udp(old, &model);
        }
        report.full = full;
        report.service_ports = model.v4.len() + model.v6.len();
        report.endpoints = model
            .v4
            .values()
            .chain(model.v6.values())
            .map(|sp| sp.cluster_endpoints.len())
            .sum();
        report.elements = plans.values().map(TablePlan::element_count).sum();
        report.rules = plans.values().map(TablePlan::rule_count).sum();
        report.chains = plans.values().map(|p| p.chains.len()).sum();
        report.duration = start.elapsed();
        let m = &self.metrics;
        if full {
            m.full_syncs.inc();
        } else {
            m.partial_syncs.inc();
        }
        m.services.set(report.service_ports as i64);
        m.endpoints.set(report.endpoints as i64);
        m.elements.set(report.elements as i64);
        m.rules.set(report.rules as i64);
        m.skipped_objects.set(report.skipped as i64);
        m.conntrack_deleted.inc_by(report.conntrack_deleted as u64);
        self.installed = plans;
        self.model = Some(model);
        Ok(report)
    }

    /// Logs each skipped object once (until it is fixed and breaks again).
    fn log_skips(&mut self, model: &Model) {
        let now: BTreeSet<String> = model.skipped.iter().map(|s| s.to_string()).collect();
        for s in now.difference(&self.logged_skips) {
            tracing::warn!("skipping invalid object: {s}");
        }
        self.logged_skips = now;
    }

    /// UDP has no connection end: flows to endpoints that went away, and
    /// flows that hit a service while it had no endpoints (never NATed), would
    /// keep their conntrack entry and stall clients. Delete them.
    fn clear_stale_udp(&self, old: &Model, new: &Model) -> usize {
        let mut filters = Vec::new();
        for fam in [Family::V4, Family::V6] {
            let (old_ports, new_ports) = (old.family(fam), new.family(fam));
            for (name, osp) in old_ports
                .iter()
                .filter(|(n, _)| n.protocol == Protocol::Udp)
            {
                let nsp = new_ports.get(name);
                let still: BTreeSet<_> = nsp
                    .map(|n| {
                        n.cluster_endpoints
                            .iter()
                            .chain(&n.local_endpoints)
                            .map(|e| e.ip)
                            .collect()
                    })
                    .unwrap_or_default();
                let before: BTreeSet<_> = osp
                    .cluster_endpoints
                    .iter()
                    .chain(&osp.local_endpoints)
                    .map(|e| e.ip)
                    .collect();
                for gone in before.difference(&still) {
                    for vip in osp.service_ips() {
                        filters.push(FlowFilter {
                            orig_dst: *vip,
                            dport: osp.port,
                            reply_src: Some(*gone),
                        });
                    }
                }
            }
            for (name, nsp) in new_ports
                .iter()
                .filter(|(n, _)| n.protocol == Protocol::Udp)
            {
                let had = old_ports.get(name).is_some_and(|o| o.has_endpoints());
                if !had && nsp.has_endpoints() {
                    for vip in nsp.service_ips() {
                        filters.push(FlowFilter {
                            orig_dst: *vip,
                            dport: nsp.port,
                            reply_src: None,
                        });
                    }
                }
            }
        }
        if filters.is_empty() {
            return 0;
        }
        match Conntrack::new().and_then(|mut ct| ct.delete_udp(&filters)) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("clearing stale UDP conntrack entries: {e}");
                0
            }
        }
    }
}

pub use conntrack::ConntrackError;
