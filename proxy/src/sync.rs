//! One sync: snapshot -> model -> plans -> diffs -> one netlink transaction,
//! then conntrack cleanup. Keeps what is installed so the next sync can be
//! partial; any failure makes the next one a full, atomic replacement.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use podnet_nft::{Batch, Nft};
use podnet_state::compact::EndpointSlice;
use podnet_state::{Change, Kind, NamespacedName, Snapshot};

use crate::apply::{self, ApplyError};
use crate::conntrack::{self, Conntrack, FlowFilter};
use crate::diff;
use crate::metrics::Metrics;
use crate::model::{Family, HealthCheck, Model, ModelConfig, Protocol};
use crate::plan::{self, Fragment, Layout, Pick, PlanConfig, TablePlan};

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
    pub chains: usize,
    pub elements_added: usize,
    pub elements_deleted: usize,
    pub chains_changed: usize,
    pub skipped: usize,
    pub conntrack_deleted: usize,
    pub duration: Duration,
    /// Part of `duration` spent encoding the batch.
    pub encode: Duration,
    /// Part of `duration` spent in the kernel (sending the transaction and
    /// waiting for its verdict).
    pub kernel: Duration,
}

impl fmt::Display for SyncReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} sync in {:.2?} (encode {:.2?}, kernel {:.2?}): {} service ports, {} endpoints, {} chains, {} elements \
             (+{} -{} elements, {} chains changed), {} objects skipped, {} conntrack entries deleted",
            if self.full { "full" } else { "partial" },
            self.duration,
            self.encode,
            self.kernel,
            self.service_ports,
            self.endpoints,
            self.chains,
            self.elements,
            self.elements_added,
            self.elements_deleted,
            self.chains_changed,
            self.skipped,
            self.conntrack_deleted
        )
    }
}

/// Pod and service CIDRs: the flags, or the store's ClusterConfig.
fn effective_cidrs(cfg: &ProxyConfig, snap: &Snapshot) -> (Vec<IpNetwork>, Vec<IpNetwork>) {
    let cc = snap
        .cluster_configs
        .get("default")
        .or_else(|| snap.cluster_configs.values().next());
    let pick =
        |flag: &Vec<IpNetwork>,
         from_store: fn(&podnet_state::object::ClusterConfig) -> Vec<IpNetwork>| {
            if flag.is_empty() {
                cc.map(|c| from_store(c)).unwrap_or_default()
            } else {
                flag.clone()
            }
        };
    (
        pick(&cfg.cluster_cidrs, |c| c.spec.cluster_cidrs.clone()),
        pick(&cfg.service_cidrs, |c| c.spec.service_cidrs.clone()),
    )
}

/// The model and both families' plans for `snap` (pure).
pub fn plans(cfg: &ProxyConfig, snap: &Snapshot) -> (Model, BTreeMap<Family, TablePlan>) {
    let (cluster, service) = effective_cidrs(cfg, snap);
    let model = Model::build(
        snap,
        &ModelConfig {
            node_name: cfg.node_name.clone(),
            service_cidrs: service,
        },
    );
    let mut plans = BTreeMap::new();
    for fam in [Family::V4, Family::V6] {
        let pc = PlanConfig {
            family: fam,
            cluster_cidr: cluster.iter().find(|c| family_of(c) == fam).copied(),
            masquerade_all: cfg.masquerade_all,
            nodeport_cidrs: cfg.nodeport_addresses.clone(),
            layout: cfg.layout,
        };
        plans.insert(fam, plan::build(&pc, model.family(fam).values()));
    }
    (model, plans)
}

fn family_of(n: &IpNetwork) -> Family {
    Family::of(&n.ip())
}

/// Installed state of one service (both families).
struct ServiceState {
    model: Model,
    frags: BTreeMap<Family, Vec<Fragment>>,
}

/// Reference counts of shared objects in one family's table.
#[derive(Default)]
struct Shared {
    picks: BTreeMap<Pick, usize>,
    hairpins: BTreeMap<IpAddr, usize>,
}

/// What is installed, kept so that a change touches only what it affects.
struct Installed {
    configs: BTreeMap<Family, PlanConfig>,
    services: BTreeMap<NamespacedName, ServiceState>,
    shared: BTreeMap<Family, Shared>,
    /// EndpointSlice -> the service it belongs to (its label when last seen).
    slice_owner: HashMap<NamespacedName, NamespacedName>,
    service_slices: HashMap<NamespacedName, BTreeSet<NamespacedName>>,
    health_checks: BTreeMap<u16, HealthCheck>,
    totals: Totals,
}

#[derive(Default, Clone, Copy)]
struct Totals {
    /// Own chains of all fragments (per-service-port chains).
    own_chains: usize,
    service_ports: usize,
    endpoints: usize,
    elements: usize,
    skipped: usize,
}

pub struct Proxier {
    cfg: ProxyConfig,
    nft: Nft,
    installed: Option<Installed>,
    metrics: std::sync::Arc<Metrics>,
}

fn slice_service(slice: &EndpointSlice, key: &NamespacedName) -> NamespacedName {
    NamespacedName::new(&key.namespace, &slice.service_name)
}

fn plan_configs(cfg: &ProxyConfig, snap: &Snapshot) -> (ModelConfig, BTreeMap<Family, PlanConfig>) {
    let (cluster, service) = effective_cidrs(cfg, snap);
    let mc = ModelConfig {
        node_name: cfg.node_name.clone(),
        service_cidrs: service,
    };
    let pcs = [Family::V4, Family::V6]
        .into_iter()
        .map(|fam| {
            (
                fam,
                PlanConfig {
                    family: fam,
                    cluster_cidr: cluster.iter().find(|c| family_of(c) == fam).copied(),
                    masquerade_all: cfg.masquerade_all,
                    nodeport_cidrs: cfg.nodeport_addresses.clone(),
                    layout: cfg.layout,
                },
            )
        })
        .collect();
    (mc, pcs)
}

/// The slices of one service, by the index.
fn slices_of<'s>(
    snap: &'s Snapshot,
    names: Option<&BTreeSet<NamespacedName>>,
) -> Vec<&'s EndpointSlice> {
    names
        .into_iter()
        .flatten()
        .filter_map(|k| snap.endpoint_slices.get(k).map(|s| s.as_ref()))
        .collect()
}

fn service_state(
    name: &NamespacedName,
    snap: &Snapshot,
    slices: &[&EndpointSlice],
    mc: &ModelConfig,
    pcs: &BTreeMap<Family, PlanConfig>,
) -> Option<ServiceState> {
    let svc = snap.services.get(name)?;
    let model = Model::for_service(name, svc, slices, mc);
    let frags = pcs
        .iter()
        .map(|(fam, pc)| {
            (
                *fam,
                model
                    .family(*fam)
                    .values()
                    .map(|sp| plan::fragment(pc, sp))
                    .collect(),
            )
        })
        .collect();
    Some(ServiceState { model, frags })
}

fn totals_of(st: &ServiceState) -> Totals {
    let m = &st.model;
    let ports = m.v4.values().chain(m.v6.values());
    Totals {
        own_chains: st.frags.values().flatten().map(|f| f.chains.len()).sum(),
        service_ports: m.v4.len() + m.v6.len(),
        endpoints: ports.map(|sp| sp.cluster_endpoints.len()).sum(),
        elements: 0,
        skipped: m.skipped.len(),
    }
}

/// Adjusts reference counts by the fragments that go and come; returns the
/// shared objects that (dis)appear: (picks gone, picks new, hairpins gone, hairpins new).
fn shift_shared(
    shared: &mut Shared,
    old: &[&Fragment],
    new: &[&Fragment],
) -> (
    BTreeSet<Pick>,
    BTreeSet<Pick>,
    BTreeSet<IpAddr>,
    BTreeSet<IpAddr>,
) {
    fn shift<K: Ord + Copy>(
        refs: &mut BTreeMap<K, usize>,
        old: Vec<K>,
        new: Vec<K>,
    ) -> (BTreeSet<K>, BTreeSet<K>) {
        let mut delta: BTreeMap<K, i64> = BTreeMap::new();
        for k in old {
            *delta.entry(k).or_default() -= 1;
        }
        for k in new {
            *delta.entry(k).or_default() += 1;
        }
        let (mut gone, mut came) = (BTreeSet::new(), BTreeSet::new());
        for (k, d) in delta {
            let before = refs.get(&k).copied().unwrap_or(0);
            let after = (before as i64 + d).max(0) as usize;
            if before > 0 && after == 0 {
                gone.insert(k);
            } else if before == 0 && after > 0 {
                came.insert(k);
            }
            if after == 0 {
                refs.remove(&k);
            } else {
                refs.insert(k, after);
            }
        }
        (gone, came)
    }
    let picks = |fs: &[&Fragment]| fs.iter().flat_map(|f| f.picks.iter().copied()).collect();
    let hairpins = |fs: &[&Fragment]| fs.iter().flat_map(|f| f.hairpins.iter().copied()).collect();
    let (pg, pc) = shift(&mut shared.picks, picks(old), picks(new));
    let (hg, hc) = shift(&mut shared.hairpins, hairpins(old), hairpins(new));
    (pg, pc, hg, hc)
}

impl Proxier {
    /// Opens the netlink socket in the current network namespace.
    pub fn new(cfg: ProxyConfig, metrics: std::sync::Arc<Metrics>) -> Result<Proxier, SyncError> {
        Ok(Proxier {
            cfg,
            nft: Nft::new().map_err(|e| SyncError::Socket(Box::new(e)))?,
            installed: None,
            metrics,
        })
    }

    /// healthCheckNodePort responders the installed state asks for.
    pub fn health_checks(&self) -> BTreeMap<u16, HealthCheck> {
        self.installed
            .as_ref()
            .map(|i| i.health_checks.clone())
            .unwrap_or_default()
    }

    /// Forgets what is installed: the next sync replaces the tables.
    pub fn force_full(&mut self) {
        self.installed = None;
    }

    /// Builds the plans for `snap` without touching the kernel.
    pub fn plans(&self, snap: &Snapshot) -> (Model, BTreeMap<Family, TablePlan>) {
        plans(&self.cfg, snap)
    }

    /// Programs `snap`. `changes` (keys changed since the last sync) allows
    /// a partial sync; `None` replaces the tables. On failure nothing
    /// changed in the kernel and the next sync is a full one.
    pub fn sync(
        &mut self,
        snap: &Snapshot,
        changes: Option<&[Change]>,
    ) -> Result<SyncReport, SyncError> {
        let start = Instant::now();
        let res = self.sync_inner(snap, changes, start);
        self.metrics
            .sync_duration
            .observe(start.elapsed().as_secs_f64());
        if res.is_err() {
            self.metrics.sync_failures.inc();
            self.installed = None;
        }
        res
    }

    fn sync_inner(
        &mut self,
        snap: &Snapshot,
        changes: Option<&[Change]>,
        start: Instant,
    ) -> Result<SyncReport, SyncError> {
        let (mc, pcs) = plan_configs(&self.cfg, snap);
        let partial = match (&mut self.installed, changes) {
            (Some(inst), Some(ch)) if inst.configs == pcs => Some((inst, ch)),
            _ => None,
        };
        let mut batch = Batch::new();
        let mut report = SyncReport::default();
        let mut encode_time = Duration::ZERO;
        let mut conntrack_pairs: Vec<(Model, Model)> = Vec::new();
        let installed = match partial {
            Some((inst, ch)) => {
                // Which services are affected; keep the slice index current.
                let mut affected: BTreeSet<NamespacedName> = BTreeSet::new();
                for c in ch {
                    let Some(ns) = c.key.namespace.as_deref() else {
                        continue;
                    };
                    let key = NamespacedName::new(ns, &c.key.name);
                    match c.key.kind {
                        Kind::Service => {
                            affected.insert(key);
                        }
                        Kind::EndpointSlice => {
                            if let Some(old) = inst.slice_owner.remove(&key) {
                                if let Some(set) = inst.service_slices.get_mut(&old) {
                                    set.remove(&key);
                                }
                                affected.insert(old);
                            }
                            if let Some(owner) = snap
                                .endpoint_slices
                                .get(&key)
                                .map(|s| slice_service(s, &key))
                            {
                                inst.service_slices
                                    .entry(owner.clone())
                                    .or_default()
                                    .insert(key.clone());
                                inst.slice_owner.insert(key, owner.clone());
                                affected.insert(owner);
                            }
                        }
                        _ => {}
                    }
                }
                let mut changed: Vec<(NamespacedName, Option<ServiceState>, Option<ServiceState>)> =
                    Vec::new();
                for name in affected {
                    let old = inst.services.remove(&name);
                    let slices = slices_of(snap, inst.service_slices.get(&name));
                    let new = service_state(&name, snap, &slices, &mc, &pcs);
                    changed.push((name, old, new));
                }
                for (fam, pc) in &pcs {
                    let skel = plan::skeleton(pc);
                    let shared_sets = || TablePlan {
                        chains: BTreeMap::new(),
                        ..skel.clone()
                    };
                    let old_f: Vec<&Fragment> = changed
                        .iter()
                        .filter_map(|(_, o, _)| o.as_ref())
                        .flat_map(|o| &o.frags[fam])
                        .collect();
                    let new_f: Vec<&Fragment> = changed
                        .iter()
                        .filter_map(|(_, _, n)| n.as_ref())
                        .flat_map(|n| &n.frags[fam])
                        .collect();
                    let shared = inst.shared.entry(*fam).or_default();
                    let (pg, pn, hg, hn) = shift_shared(shared, &old_f, &new_f);
                    let mut old_mini = shared_sets();
                    plan::merge(pc, &mut old_mini, old_f, Some(&pg), Some(&hg));
                    let mut new_mini = shared_sets();
                    plan::merge(pc, &mut new_mini, new_f, Some(&pn), Some(&hn));
                    let d = diff::diff(Some(&old_mini), &new_mini);
                    if d.full {
                        // Only a changed set definition (affinity timeout) gets here.
                        self.installed = None;
                        return self.sync_inner(snap, None, start);
                    }
                    let (add, del, chains) = d.counts();
                    report.elements_added += add;
                    report.elements_deleted += del;
                    report.chains_changed += chains;
                    let t = Instant::now();
                    apply::encode(&mut batch, *fam, &d, &skel.comment)?;
                    encode_time += t.elapsed();
                }
                let mut t = inst.totals;
                t.elements =
                    (t.elements + report.elements_added).saturating_sub(report.elements_deleted);
                for (name, old, new) in changed {
                    if let Some(o) = &old {
                        let ot = totals_of(o);
                        t.own_chains -= ot.own_chains;
                        t.service_ports -= ot.service_ports;
                        t.endpoints -= ot.endpoints;
                        t.skipped -= ot.skipped;
                        for port in o.model.health_checks.keys() {
                            inst.health_checks.remove(port);
                        }
                    }
                    if let Some(n) = &new {
                        let nt = totals_of(n);
                        t.own_chains += nt.own_chains;
                        t.service_ports += nt.service_ports;
                        t.endpoints += nt.endpoints;
                        t.skipped += nt.skipped;
                        inst.health_checks.extend(n.model.health_checks.clone());
                        let before: BTreeSet<String> = old
                            .iter()
                            .flat_map(|o| o.model.skipped.iter().map(|s| s.to_string()))
                            .collect();
                        for sk in n
                            .model
                            .skipped
                            .iter()
                            .filter(|sk| !before.contains(&sk.to_string()))
                        {
                            tracing::warn!("skipping invalid object: {sk}");
                        }
                    }
                    let new_model = new.as_ref().map(|n| n.model.clone()).unwrap_or_default();
                    if let Some(o) = old {
                        conntrack_pairs.push((o.model, new_model));
                    }
                    if let Some(n) = new {
                        inst.services.insert(name, n);
                    }
                }
                inst.totals = t;
                None
            }
            None => {
                // Full: rebuild everything from the snapshot.
                let mut inst = Installed {
                    configs: pcs.clone(),
                    services: BTreeMap::new(),
                    shared: BTreeMap::new(),
                    slice_owner: HashMap::new(),
                    service_slices: HashMap::new(),
                    health_checks: BTreeMap::new(),
                    totals: Totals::default(),
                };
                // The persistent slice index is built after the transaction
                // (it only serves later partial syncs).
                let by_service = crate::model::slices_by_service(snap);
                for name in snap.services.keys() {
                    let slices = by_service.get(name).map(Vec::as_slice).unwrap_or(&[]);
                    if let Some(st) = service_state(name, snap, slices, &mc, &pcs) {
                        for sk in &st.model.skipped {
                            tracing::warn!("skipping invalid object: {sk}");
                        }
                        let t = totals_of(&st);
                        inst.totals.own_chains += t.own_chains;
                        inst.totals.service_ports += t.service_ports;
                        inst.totals.endpoints += t.endpoints;
                        inst.totals.skipped += t.skipped;
                        inst.health_checks.extend(st.model.health_checks.clone());
                        inst.services.insert(name.clone(), st);
                    }
                }
                for (fam, pc) in &pcs {
                    let frags: Vec<&Fragment> =
                        inst.services.values().flat_map(|s| &s.frags[fam]).collect();
                    let shared = inst.shared.entry(*fam).or_default();
                    shift_shared(shared, &[], &frags);
                    let mut base = plan::skeleton(pc);
                    let picks: BTreeSet<Pick> = shared.picks.keys().copied().collect();
                    let hairpins: BTreeSet<IpAddr> = shared.hairpins.keys().copied().collect();
                    plan::merge(pc, &mut base, [], Some(&picks), Some(&hairpins));
                    let (d, elements) = diff::full_from_fragments(&base, &frags);
                    let (add, _, chains) = d.counts();
                    report.elements_added += add;
                    report.chains_changed += chains;
                    inst.totals.elements += elements;
                    let t = Instant::now();
                    apply::encode(&mut batch, *fam, &d, &base.comment)?;
                    encode_time += t.elapsed();
                }
                if let Some(old) = self.installed.take() {
                    for (name, o) in old.services {
                        let n = inst
                            .services
                            .get(&name)
                            .map(|n| n.model.clone())
                            .unwrap_or_default();
                        conntrack_pairs.push((o.model, n));
                    }
                }
                report.full = true;
                Some(inst)
            }
        };
        report.encode = encode_time;
        let ops = batch.len();
        let kernel_start = Instant::now();
        self.nft.apply(&batch).map_err(|e| SyncError::Apply {
            ops,
            source: Box::new(e),
        })?;
        report.kernel = kernel_start.elapsed();
        // What counts is the time until the rules are in the kernel; the
        // bookkeeping below only serves later syncs.
        report.duration = start.elapsed();
        drop(batch);
        if let Some(mut inst) = installed {
            for (key, slice) in &snap.endpoint_slices {
                let owner = slice_service(slice, key);
                inst.service_slices
                    .entry(owner.clone())
                    .or_default()
                    .insert(key.clone());
                inst.slice_owner.insert(key.clone(), owner);
            }
            self.installed = Some(inst);
        }
        let inst = self
            .installed
            .as_ref()
            .expect("installed after a successful sync");
        report.conntrack_deleted = conntrack_pairs
            .iter()
            .map(|(o, n)| self.clear_stale_udp(o, n))
            .sum();
        report.service_ports = inst.totals.service_ports;
        report.endpoints = inst.totals.endpoints;
        report.elements = inst.totals.elements;
        report.skipped = inst.totals.skipped;
        report.chains = inst
            .configs
            .values()
            .map(|pc| plan::skeleton(pc).chains.len())
            .sum::<usize>()
            + inst.shared.values().map(|s| s.picks.len()).sum::<usize>()
            + inst.totals.own_chains;
        let m = &self.metrics;
        if report.full {
            m.full_syncs.inc();
        } else {
            m.partial_syncs.inc();
        }
        m.services.set(report.service_ports as i64);
        m.endpoints.set(report.endpoints as i64);
        m.elements.set(report.elements as i64);
        m.skipped_objects.set(report.skipped as i64);
        m.conntrack_deleted.inc_by(report.conntrack_deleted as u64);
        Ok(report)
    }

    /// UDP has no connection end: flows to endpoints that went away, and
    /// flows that hit a service while it had no endpoints (never NATed), would
    /// keep their conntrack entry and stall clients. Delete them, for the
    /// service addresses and the NodePort alike (like kube-proxy).
    fn clear_stale_udp(&self, old: &Model, new: &Model) -> usize {
        let mut filters = Vec::new();
        for fam in [Family::V4, Family::V6] {
            let (old_ports, new_ports) = (old.family(fam), new.family(fam));
            let ipv6 = fam == Family::V6;
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
                        filters.push(FlowFilter::to_ip(*vip, osp.port, Some(*gone)));
                    }
                    if let Some(np) = osp.node_port {
                        filters.push(FlowFilter::to_node_port(ipv6, np, Some(*gone)));
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
                        filters.push(FlowFilter::to_ip(*vip, nsp.port, None));
                    }
                    if let Some(np) = nsp.node_port {
                        filters.push(FlowFilter::to_node_port(ipv6, np, None));
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
