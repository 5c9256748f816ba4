//! One sync: snapshot -> model -> plans -> diffs -> one netlink transaction,
//! then conntrack cleanup. Keeps what is installed so the next sync can be
//! partial; any failure makes the next one a full, atomic replacement.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use podnet_nft::{Batch, Nft};
use podnet_state::compact::{self, EndpointSlice, Service};
use podnet_state::{Change, Kind, NamespacedName, Snapshot};

use crate::apply::{self, ApplyError};
use crate::conntrack::{self, Conntrack, FlowFilter};
use crate::diff;
use crate::metrics::Metrics;
use crate::model::{AddrKey, Family, HealthCheck, Model, ModelConfig, Protocol, ServiceModel};
use crate::plan::{self, Fragment, Layout, Pick, PlanConfig, TablePlan};
use rustc_hash::FxHashMap;

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
    let (mc, pcs) = plan_configs(cfg, snap);
    let model = Model::build(snap, &mc);
    let plans = pcs
        .iter()
        .map(|(fam, pc)| (*fam, plan::build(pc, model.family(*fam).values())))
        .collect();
    (model, plans)
}

/// This node's InternalIPs from its Node object (none without one).
fn node_ips(cfg: &ProxyConfig, snap: &Snapshot) -> Vec<IpAddr> {
    let Some(node) = snap.nodes.get(&cfg.node_name) else {
        return Vec::new();
    };
    let addrs = node.status.as_ref().and_then(|s| s.addresses.as_ref());
    addrs
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect()
}

fn family_of(n: &IpNetwork) -> Family {
    Family::of(&n.ip())
}

/// What one service was last programmed from: the objects themselves,
/// shared with the snapshot. When the service changes, its old rules are
/// computed again from these instead of being kept for every service.
#[derive(Debug, Clone, Default)]
struct Inputs {
    /// `None` while only EndpointSlices name the service.
    service: Option<Arc<Service>>,
    slices: Vec<Arc<EndpointSlice>>,
}

/// The model and fragments of one service (both families), computed during
/// a sync and dropped after it.
struct ServiceState {
    model: ServiceModel,
    /// One per service port and family, in the model's order.
    frags: Vec<(Family, Fragment)>,
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
    model_config: ModelConfig,
    /// Every service with a Service object or an EndpointSlice naming it.
    services: BTreeMap<NamespacedName, Inputs>,
    /// EndpointSlice -> the slice as last programmed (its label names the
    /// service it counted for).
    slices: BTreeMap<NamespacedName, Arc<EndpointSlice>>,
    shared: BTreeMap<Family, Shared>,
    /// The shared sets' sizes and element counts, per family.
    room: BTreeMap<Family, BTreeMap<String, Room>>,
    health_checks: BTreeMap<u16, HealthCheck>,
    /// Every claimant of each service address, sorted: the first owns it.
    claims: Claims,
    totals: Totals,
}

type Claims = FxHashMap<AddrKey, Vec<NamespacedName>>;

fn owner<'a>(claims: &'a Claims, k: &AddrKey) -> Option<&'a NamespacedName> {
    claims.get(k).and_then(|v| v.first())
}

/// A shared set's size in the kernel (its element limit, see
/// `apply::set_capacity`) and how many elements it holds.
#[derive(Debug, Clone, Copy)]
struct Room {
    capacity: u32,
    elements: usize,
}

/// The shared sets' counts once `d` is applied.
fn room_after(room: &BTreeMap<String, Room>, d: &diff::Diff) -> BTreeMap<String, Room> {
    let mut next = room.clone();
    for op in &d.ops {
        match op {
            diff::Op::AddElements(set, e) => {
                if let Some(r) = next.get_mut(*set) {
                    r.elements += e.len();
                }
            }
            diff::Op::DeleteElements(set, e) => {
                if let Some(r) = next.get_mut(*set) {
                    r.elements = r.elements.saturating_sub(e.len());
                }
            }
            _ => {}
        }
    }
    next
}

impl Installed {
    fn index_slice(&mut self, key: &NamespacedName, slice: &Arc<EndpointSlice>) {
        self.services
            .entry(slice_service(slice, key))
            .or_default()
            .slices
            .push(slice.clone());
        self.slices.insert(key.clone(), slice.clone());
    }

    fn unindex_slice(&mut self, key: &NamespacedName) {
        let Some(old) = self.slices.remove(key) else {
            return;
        };
        let owner = slice_service(&old, key);
        if let Some(inputs) = self.services.get_mut(&owner) {
            inputs.slices.retain(|s| !Arc::ptr_eq(s, &old));
            if inputs.service.is_none() && inputs.slices.is_empty() {
                self.services.remove(&owner);
            }
        }
    }
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

impl Totals {
    fn add(&mut self, o: &Totals) {
        self.own_chains += o.own_chains;
        self.service_ports += o.service_ports;
        self.endpoints += o.endpoints;
        self.skipped += o.skipped;
    }
    fn sub(&mut self, o: &Totals) {
        self.own_chains -= o.own_chains;
        self.service_ports -= o.service_ports;
        self.endpoints -= o.endpoints;
        self.skipped -= o.skipped;
    }
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

/// Every service of the snapshot with its EndpointSlices, and services that
/// only slices name, sorted by name: a merge of the (sorted) services with
/// the slices sorted by the service they name, cheaper than hashing names.
fn group_inputs(snap: &Snapshot) -> Vec<(NamespacedName, Inputs)> {
    let mut slices: Vec<((&str, &str), &Arc<EndpointSlice>)> = snap
        .endpoint_slices
        .iter()
        .map(|(k, s)| ((k.namespace.as_str(), &*s.service_name), s))
        .collect();
    slices.sort_by(|a, b| a.0.cmp(&b.0));
    let mut services = snap.services.iter().peekable();
    let mut slices = slices.into_iter().peekable();
    let mut out = Vec::with_capacity(snap.services.len());
    loop {
        let next_service = services
            .peek()
            .map(|(k, _)| (k.namespace.as_str(), k.name.as_str()));
        let next_slice = slices.peek().map(|(k, _)| *k);
        let key = match (next_service, next_slice) {
            (None, None) => break,
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (Some(a), Some(b)) => a.min(b),
        };
        let mut inputs = Inputs::default();
        let name = match services.next_if(|(k, _)| (k.namespace.as_str(), k.name.as_str()) == key) {
            Some((k, svc)) => {
                inputs.service = Some(svc.clone());
                k.clone()
            }
            None => NamespacedName::new(key.0, key.1),
        };
        while let Some((_, s)) = slices.next_if(|(k, _)| *k == key) {
            inputs.slices.push(s.clone());
        }
        out.push((name, inputs));
    }
    out
}

fn plan_configs(cfg: &ProxyConfig, snap: &Snapshot) -> (ModelConfig, BTreeMap<Family, PlanConfig>) {
    let (cluster, service) = effective_cidrs(cfg, snap);
    let mc = ModelConfig {
        node_name: cfg.node_name.clone(),
        service_cidrs: service,
        node_ips: node_ips(cfg, snap),
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

fn model_of(name: &NamespacedName, inputs: &Inputs, mc: &ModelConfig) -> Option<ServiceModel> {
    let svc = inputs.service.as_deref()?;
    Some(ServiceModel::build(name, svc, &inputs.slices, mc))
}

/// The state of service `name` from its model as built; `owner` says who
/// owns each address it claims.
fn service_state<'a>(
    name: &NamespacedName,
    mut model: ServiceModel,
    pcs: &BTreeMap<Family, PlanConfig>,
    owner: impl Fn(&AddrKey) -> Option<&'a NamespacedName>,
) -> ServiceState {
    model.yield_claims(name, owner);
    let frags = model
        .ports
        .iter()
        .filter_map(|sp| {
            let fam = Family::of(&sp.cluster_ip);
            Some((fam, plan::fragment(pcs.get(&fam)?, sp)))
        })
        .collect();
    ServiceState { model, frags }
}

fn frags_of(st: &ServiceState, fam: Family) -> impl Iterator<Item = &Fragment> {
    st.frags
        .iter()
        .filter(move |(f, _)| *f == fam)
        .map(|(_, frag)| frag)
}

fn has_udp(svc: &Service) -> bool {
    svc.spec
        .ports
        .iter()
        .any(|p| p.protocol == compact::Protocol::Udp)
}

fn totals_of(st: &ServiceState) -> Totals {
    let m = &st.model;
    Totals {
        own_chains: st.frags.iter().map(|(_, f)| f.chains.len()).sum(),
        service_ports: m.ports.len(),
        endpoints: m.ports.iter().map(|sp| sp.cluster_endpoints.len()).sum(),
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

/// Moves a fragment into `all` (one family's fragments of a full sync) and
/// counts its shared objects.
fn absorb(all: &mut Fragment, shared: &mut Shared, mut f: Fragment) {
    for p in &f.picks {
        *shared.picks.entry(*p).or_default() += 1;
    }
    for h in &f.hairpins {
        *shared.hairpins.entry(*h).or_default() += 1;
    }
    all.elements.append(&mut f.elements);
    all.chains.extend(f.chains);
    all.sets.extend(f.sets);
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
        let res = self.sync_inner(snap, changes, start, Vec::new());
        self.metrics
            .sync_duration
            .observe(start.elapsed().as_secs_f64());
        match &res {
            Ok(r) if r.full => podnet_state::memory::release_freed(),
            Ok(_) => {}
            Err(_) => {
                self.metrics.sync_failures.inc();
                self.installed = None;
            }
        }
        res
    }

    /// `carried`: (old, new) models of services whose UDP flows still need
    /// checking, from a partial sync that turned into this full one.
    fn sync_inner(
        &mut self,
        snap: &Snapshot,
        changes: Option<&[Change]>,
        start: Instant,
        carried: Vec<(ServiceModel, ServiceModel)>,
    ) -> Result<SyncReport, SyncError> {
        let (mc, pcs) = plan_configs(&self.cfg, snap);
        let partial = match (&mut self.installed, changes) {
            (Some(inst), Some(ch)) if inst.configs == pcs && inst.model_config == mc => {
                Some((inst, ch))
            }
            _ => None,
        };
        let mut batch = Batch::new();
        let mut report = SyncReport::default();
        let mut encode_time = Duration::ZERO;
        let mut conntrack_pairs: Vec<(ServiceModel, ServiceModel)> = carried;
        let installed = match partial {
            Some((inst, ch)) => {
                // Which services are affected: a changed Service, and the
                // services a changed slice counted for before and does now.
                let mut affected: BTreeSet<NamespacedName> = BTreeSet::new();
                let mut changed_slices: Vec<NamespacedName> = Vec::new();
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
                            if let Some(old) = inst.slices.get(&key) {
                                affected.insert(slice_service(old, &key));
                            }
                            if let Some(new) = snap.endpoint_slices.get(&key) {
                                affected.insert(slice_service(new, &key));
                            }
                            changed_slices.push(key);
                        }
                        _ => {}
                    }
                }
                // What the affected services were programmed from, taken
                // before the index moves on to the snapshot's slices.
                let before: Vec<(NamespacedName, Inputs)> = affected
                    .into_iter()
                    .map(|n| {
                        let i = inst.services.get(&n).cloned().unwrap_or_default();
                        (n, i)
                    })
                    .collect();
                for key in &changed_slices {
                    inst.unindex_slice(key);
                    if let Some(new) = snap.endpoint_slices.get(key) {
                        inst.index_slice(key, new);
                    }
                }
                // Models as built from the old and the new inputs.
                let mut models: Vec<(NamespacedName, Option<ServiceModel>, Option<ServiceModel>)> =
                    Vec::new();
                for (name, old_inputs) in before {
                    let old = model_of(&name, &old_inputs, &inst.model_config);
                    let svc = snap.services.get(&name).cloned();
                    let new = match inst.services.get_mut(&name) {
                        Some(inputs) => {
                            inputs.service = svc;
                            let m = model_of(&name, inputs, &mc);
                            if inputs.service.is_none() && inputs.slices.is_empty() {
                                inst.services.remove(&name);
                            }
                            m
                        }
                        None if svc.is_some() => {
                            let inputs = Inputs {
                                service: svc,
                                slices: Vec::new(),
                            };
                            let m = model_of(&name, &inputs, &mc);
                            inst.services.insert(name.clone(), inputs);
                            m
                        }
                        None => None,
                    };
                    models.push((name, old, new));
                }
                // Move the affected services' claims; where an address changes
                // owner, the services that lose or gain it are planned again.
                let mut old_owners: FxHashMap<AddrKey, Option<NamespacedName>> =
                    FxHashMap::default();
                for (name, old, new) in &models {
                    for k in old.iter().flat_map(|m| m.claims()) {
                        old_owners
                            .entry(k)
                            .or_insert_with(|| owner(&inst.claims, &k).cloned());
                        if let Some(v) = inst.claims.get_mut(&k) {
                            v.retain(|n| n != name);
                            if v.is_empty() {
                                inst.claims.remove(&k);
                            }
                        }
                    }
                    for k in new.iter().flat_map(|m| m.claims()) {
                        old_owners
                            .entry(k)
                            .or_insert_with(|| owner(&inst.claims, &k).cloned());
                    }
                }
                for (name, _, new) in &models {
                    for k in new.iter().flat_map(|m| m.claims()) {
                        let v = inst.claims.entry(k).or_default();
                        if let Err(at) = v.binary_search(name) {
                            v.insert(at, name.clone());
                        }
                    }
                }
                let affected: BTreeSet<&NamespacedName> =
                    models.iter().map(|(n, _, _)| n).collect();
                let mut handed: BTreeSet<NamespacedName> = BTreeSet::new();
                for (k, was) in &old_owners {
                    let now = owner(&inst.claims, k);
                    if was.as_ref() != now {
                        handed.extend(
                            [was.as_ref(), now]
                                .into_iter()
                                .flatten()
                                .filter(|n| !affected.contains(n))
                                .cloned(),
                        );
                    }
                }
                for name in handed {
                    let m = inst
                        .services
                        .get(&name)
                        .and_then(|i| model_of(&name, i, &mc));
                    models.push((name, m.clone(), m));
                }
                let claims = &inst.claims;
                let old_owner = |k: &AddrKey| match old_owners.get(k) {
                    Some(o) => o.as_ref(),
                    None => owner(claims, k),
                };
                let changed: Vec<(NamespacedName, Option<ServiceState>, Option<ServiceState>)> =
                    models
                        .into_iter()
                        .map(|(name, old, new)| {
                            let old = old.map(|m| service_state(&name, m, &pcs, old_owner));
                            let new =
                                new.map(|m| service_state(&name, m, &pcs, |k| owner(claims, k)));
                            (name, old, new)
                        })
                        .collect();
                for (fam, pc) in &pcs {
                    let skel = plan::skeleton(pc);
                    let shared_sets = || TablePlan {
                        chains: BTreeMap::new(),
                        ..skel.clone()
                    };
                    let old_f: Vec<&Fragment> = changed
                        .iter()
                        .filter_map(|(_, o, _)| o.as_ref())
                        .flat_map(|o| frags_of(o, *fam))
                        .collect();
                    let new_f: Vec<&Fragment> = changed
                        .iter()
                        .filter_map(|(_, _, n)| n.as_ref())
                        .flat_map(|n| frags_of(n, *fam))
                        .collect();
                    let shared = inst.shared.entry(*fam).or_default();
                    let (pg, pn, hg, hn) = shift_shared(shared, &old_f, &new_f);
                    let mut old_mini = shared_sets();
                    plan::merge(pc, &mut old_mini, old_f, Some(&pg), Some(&hg));
                    let mut new_mini = shared_sets();
                    plan::merge(pc, &mut new_mini, new_f, Some(&pn), Some(&hn));
                    let d = diff::diff(Some(&old_mini), &new_mini);
                    let room = inst.room.entry(*fam).or_default();
                    let next = room_after(room, &d);
                    if d.full || next.values().any(|r| r.elements > r.capacity as usize) {
                        // A changed set definition (affinity timeout), or a
                        // shared set outgrowing its size: replace the tables.
                        let carried = changed
                            .into_iter()
                            .filter_map(|(_, o, n)| {
                                Some((o?.model, n.map(|n| n.model).unwrap_or_default()))
                            })
                            .collect();
                        self.installed = None;
                        return self.sync_inner(snap, None, start, carried);
                    }
                    *room = next;
                    let (add, del, chains) = d.counts();
                    report.elements_added += add;
                    report.elements_deleted += del;
                    report.chains_changed += chains;
                    let t = Instant::now();
                    apply::encode(&mut batch, *fam, &d, &skel.comment, &|_| None)?;
                    encode_time += t.elapsed();
                }
                let mut t = inst.totals;
                t.elements =
                    (t.elements + report.elements_added).saturating_sub(report.elements_deleted);
                for (_, old, new) in changed {
                    if let Some(o) = &old {
                        t.sub(&totals_of(o));
                        if let Some((port, _)) = &o.model.health_check {
                            inst.health_checks.remove(port);
                        }
                    }
                    if let Some(n) = &new {
                        t.add(&totals_of(n));
                        inst.health_checks.extend(n.model.health_check.clone());
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
                    if let Some(o) = old {
                        conntrack_pairs.push((o.model, new.map(|n| n.model).unwrap_or_default()));
                    }
                }
                inst.totals = t;
                None
            }
            None => {
                // Full: rebuild everything from the snapshot. Each service's
                // model and fragments live only until their elements and
                // chains are moved into one fragment per family.
                let mut inst = Installed {
                    configs: pcs.clone(),
                    model_config: mc.clone(),
                    services: BTreeMap::new(),
                    slices: snap.endpoint_slices.clone(),
                    shared: BTreeMap::new(),
                    room: BTreeMap::new(),
                    health_checks: BTreeMap::new(),
                    claims: Claims::default(),
                    totals: Totals::default(),
                };
                let grouped = group_inputs(snap);
                let mut all: BTreeMap<Family, Fragment> = BTreeMap::new();
                // New models of UDP services, for conntrack cleanup against
                // what an earlier installation had.
                let mut udp_models: HashMap<NamespacedName, ServiceModel> = HashMap::new();
                for (name, inputs) in &grouped {
                    let Some(model) = model_of(name, inputs, &mc) else {
                        continue;
                    };
                    // In name order: each list of claimants stays sorted.
                    for k in model.claims() {
                        let v = inst.claims.entry(k).or_default();
                        if v.last() != Some(name) {
                            v.push(name.clone());
                        }
                    }
                    let st = service_state(name, model, &pcs, |k| owner(&inst.claims, k));
                    for sk in &st.model.skipped {
                        tracing::warn!("skipping invalid object: {sk}");
                    }
                    inst.totals.add(&totals_of(&st));
                    inst.health_checks.extend(st.model.health_check.clone());
                    for (fam, f) in st.frags {
                        let acc = all.entry(fam).or_default();
                        absorb(acc, inst.shared.entry(fam).or_default(), f);
                    }
                    if self.installed.is_some() && inputs.service.as_deref().is_some_and(has_udp) {
                        udp_models.insert(name.clone(), st.model);
                    }
                }
                inst.services = grouped.into_iter().collect();
                for (fam, pc) in &pcs {
                    let shared = inst.shared.entry(*fam).or_default();
                    let mut base = plan::skeleton(pc);
                    let picks: BTreeSet<Pick> = shared.picks.keys().copied().collect();
                    let hairpins: BTreeSet<IpAddr> = shared.hairpins.keys().copied().collect();
                    plan::merge(pc, &mut base, [], Some(&picks), Some(&hairpins));
                    let frag = all.remove(fam).unwrap_or_default();
                    let (d, elements) = diff::full_from_fragments(&base, &[&frag]);
                    let (add, _, chains) = d.counts();
                    report.elements_added += add;
                    report.chains_changed += chains;
                    inst.totals.elements += elements;
                    let room: BTreeMap<String, Room> = base
                        .sets
                        .iter()
                        .filter(|(_, s)| !s.def.dynamic)
                        .map(|(name, _)| {
                            let elements = d.elements_of(name);
                            let capacity = apply::set_capacity(elements);
                            (name.clone(), Room { capacity, elements })
                        })
                        .collect();
                    let t = Instant::now();
                    apply::encode(&mut batch, *fam, &d, &base.comment, &|name| {
                        room.get(name).map(|r| r.capacity)
                    })?;
                    inst.room.insert(*fam, room);
                    encode_time += t.elapsed();
                }
                if let Some(old) = self.installed.take() {
                    for (name, o) in &old.services {
                        if !o.service.as_deref().is_some_and(has_udp) {
                            continue;
                        }
                        if let Some(om) = model_of(name, o, &old.model_config) {
                            let nm = udp_models.remove(name).unwrap_or_default();
                            conntrack_pairs.push((om, nm));
                        }
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
        if let Some(inst) = installed {
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
    fn clear_stale_udp(&self, old: &ServiceModel, new: &ServiceModel) -> usize {
        let mut filters = Vec::new();
        for fam in [Family::V4, Family::V6] {
            let ipv6 = fam == Family::V6;
            for osp in old
                .family(fam)
                .filter(|sp| sp.name.protocol == Protocol::Udp)
            {
                let nsp = new.port(fam, &osp.name);
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
            for nsp in new
                .family(fam)
                .filter(|sp| sp.name.protocol == Protocol::Udp)
            {
                let had = old.port(fam, &nsp.name).is_some_and(|o| o.has_endpoints());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::{slice, snapshot, svc};

    #[test]
    fn inputs_group_slices_under_their_services_and_keep_orphans() {
        let one =
            |svc: &str, suffix: &str| slice("ns", svc, suffix, "IPv4", &[("p", "TCP", 80)], &[]);
        let s = snapshot(
            vec![
                svc("ns", "a", "10.96.0.1", &[("p", "TCP", 80, 0)]),
                svc("ns", "c", "10.96.0.3", &[("p", "TCP", 80, 0)]),
            ],
            vec![one("c", "1"), one("b", "1"), one("a", "2"), one("a", "1")],
        );
        let got: Vec<(String, bool, Vec<String>)> = group_inputs(&s)
            .into_iter()
            .map(|(n, i)| {
                let slices = i
                    .slices
                    .iter()
                    .map(|s| s.metadata.name.to_string())
                    .collect();
                (n.to_string(), i.service.is_some(), slices)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "ns/a".to_string(),
                    true,
                    vec!["a-1".to_string(), "a-2".to_string()]
                ),
                ("ns/b".to_string(), false, vec!["b-1".to_string()]),
                ("ns/c".to_string(), true, vec!["c-1".to_string()]),
            ]
        );
    }

    #[test]
    fn room_counts_follow_added_and_deleted_elements() {
        let k = |i: u16| plan::Fields::from([plan::Value::Port(i)]);
        let (k1, k2, k3) = (k(1), k(2), k(3));
        let none = None;
        let d = diff::Diff {
            full: false,
            ops: vec![
                diff::Op::DeleteElements("s", vec![&k1]),
                diff::Op::AddElements("s", vec![(&k2, &none), (&k3, &none)]),
                diff::Op::AddElements("dynamic", vec![(&k1, &none)]),
            ],
        };
        let room: BTreeMap<String, Room> = [(
            "s".to_string(),
            Room {
                capacity: 256,
                elements: 10,
            },
        )]
        .into();
        let next = room_after(&room, &d);
        assert_eq!(next["s"].elements, 11);
        assert_eq!(next.len(), 1, "sets without a size are not tracked");
    }
}
