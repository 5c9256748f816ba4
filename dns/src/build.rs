//! Building the record index from informer snapshots: `service_entry` turns
//! one Service and its EndpointSlices into pre-encoded records (pure), and
//! `IndexBuilder` keeps what is needed to apply a change set incrementally
//! (which slices belong to which service, who contributes which PTR, pod
//! addresses) and publishes a new immutable `Index` per change set.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use podnet_state::compact::{EndpointSlice, Pod, Protocol, Service, ServiceType};
use podnet_state::{ChangeSet, Kind, NamespacedName, Snapshot};

use crate::index::{
    dashed_ip, EndpointRecords, Endpoints, Index, NamespaceEntry, ServiceEntry, ServiceKind,
    SrvName, SrvRecords, ZoneConfig,
};
use crate::wire::{
    self, RrList, PTR_TO_QNAME, TYPE_CNAME, TYPE_NS, TYPE_PTR, TYPE_SOA, TYPE_SRV, TYPE_TXT,
};

/// The schema version of the Kubernetes DNS specification implemented here.
pub const SCHEMA_VERSION: &str = "1.1.0";
const TOLERATE_UNREADY: &str = "service.alpha.kubernetes.io/tolerate-unready-endpoints";

/// A built service: its entry and the PTR records it contributes
/// (address, target name in wire form).
pub struct BuiltService {
    pub entry: ServiceEntry,
    pub ptrs: Vec<(IpAddr, Vec<u8>)>,
}

/// (port number, endpoint label) of one headless SRV record.
type SrvTarget = (u16, Vec<u8>);

/// `tcp`, `udp`, `sctp`: the `_<proto>` label of SRV names.
fn proto_label(p: Protocol) -> Vec<u8> {
    p.k8s().to_ascii_lowercase().into_bytes()
}

fn label(s: &str) -> Option<Vec<u8>> {
    (!s.is_empty() && s.len() <= 63).then(|| s.to_ascii_lowercase().into_bytes())
}

/// Records of one service. `None` when the service cannot be named
/// (e.g. an ExternalName that is not a valid DNS name).
pub fn service_entry(
    cfg: &ZoneConfig,
    svc: &Service,
    slices: &[&EndpointSlice],
) -> Option<BuiltService> {
    let name = label(&svc.metadata.name)?;
    let ns = label(&svc.metadata.namespace)?;
    let svc_name = cfg.name(&[&name, &ns, b"svc"]);
    let spec = &svc.spec;
    let ttl = cfg.ttl;
    if spec.type_ == ServiceType::ExternalName {
        let target = wire::text_to_wire(spec.external_name.as_deref()?)?;
        if target.len() <= 1 {
            return None;
        }
        let mut cname = RrList::new();
        cname.push(&PTR_TO_QNAME, TYPE_CNAME, ttl, &target);
        return Some(BuiltService {
            entry: ServiceEntry {
                kind: ServiceKind::External { cname, target },
                endpoints: Endpoints::default(),
                srv: Box::default(),
            },
            ptrs: Vec::new(),
        });
    }
    let mut cluster_ips: Vec<IpAddr> = spec
        .cluster_ips
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    cluster_ips.dedup();
    let headless = cluster_ips.is_empty();
    let publish_unready = spec.publish_not_ready_addresses
        || svc.metadata.annotations.get(TOLERATE_UNREADY) == Some("true");

    let mut ptrs = Vec::new();
    // Ready endpoints: (label, ip), in slice order, deduplicated.
    let mut seen: HashSet<(Vec<u8>, IpAddr)> = HashSet::new();
    let mut endpoints: HashMap<Box<[u8]>, EndpointRecords> = HashMap::new();
    let mut svc_a = RrList::new();
    let mut svc_aaaa = RrList::new();
    let mut seen_ips: HashSet<IpAddr> = HashSet::new();
    // (proto, port name) -> (port number, endpoint label) pairs, for headless SRV.
    let mut srv_targets: BTreeMap<(Vec<u8>, Vec<u8>), Vec<SrvTarget>> = BTreeMap::new();
    for slice in slices {
        let mut slice_labels: Vec<Vec<u8>> = Vec::new();
        for ep in &slice.endpoints {
            if !ep.ready && !publish_unready {
                continue;
            }
            for addr in &ep.addresses {
                let Ok(ip) = addr.parse::<IpAddr>() else {
                    continue;
                };
                let ep_label = match ep.hostname.as_deref().and_then(label) {
                    Some(h) => h,
                    None => dashed_ip(ip).into_bytes(),
                };
                if !seen.insert((ep_label.clone(), ip)) {
                    continue;
                }
                let target = cfg.name(&[&ep_label, &name, &ns, b"svc"]);
                let rec = endpoints
                    .entry(ep_label.clone().into_boxed_slice())
                    .or_default();
                match ip {
                    IpAddr::V4(_) => rec.a.push_ip(&PTR_TO_QNAME, ttl, ip),
                    IpAddr::V6(_) => rec.aaaa.push_ip(&PTR_TO_QNAME, ttl, ip),
                }
                ptrs.push((ip, target));
                if headless && seen_ips.insert(ip) {
                    match ip {
                        IpAddr::V4(_) => svc_a.push_ip(&PTR_TO_QNAME, ttl, ip),
                        IpAddr::V6(_) => svc_aaaa.push_ip(&PTR_TO_QNAME, ttl, ip),
                    }
                }
                if !slice_labels.contains(&ep_label) {
                    slice_labels.push(ep_label);
                }
            }
        }
        if headless {
            for p in slice.ports.iter() {
                let (Some(pname), Some(port)) = (label(&p.name), p.port) else {
                    continue;
                };
                let proto = proto_label(p.protocol);
                let list = srv_targets.entry((proto, pname)).or_default();
                for l in &slice_labels {
                    let item = (port, l.clone());
                    if !list.contains(&item) {
                        list.push(item);
                    }
                }
            }
        }
    }

    let mut srv: Vec<SrvName> = Vec::new();
    let mut add_srv = |proto: &[u8], port_name: &[u8], mut records: SrvRecords| {
        let underscored = |l: &[u8]| -> Box<[u8]> { [b"_", l].concat().into_boxed_slice() };
        records.srv.shrink();
        records.additional.shrink();
        srv.push(SrvName {
            port: underscored(port_name),
            proto: underscored(proto),
            records,
        });
    };
    let kind = if headless {
        for ((proto, pname), targets) in &srv_targets {
            if targets.is_empty() {
                continue;
            }
            let weight = (100 / targets.len()).max(1) as u16;
            let mut recs = SrvRecords::default();
            let mut glued: HashSet<&[u8]> = HashSet::new();
            for (port, ep_label) in targets {
                let target = cfg.name(&[ep_label, &name, &ns, b"svc"]);
                recs.srv.push(
                    &PTR_TO_QNAME,
                    TYPE_SRV,
                    ttl,
                    &wire::srv_rdata(0, weight, *port, &target),
                );
                if glued.insert(ep_label) {
                    if let Some(e) = endpoints.get(&ep_label[..]) {
                        recs.additional.extend(&e.a.reowned(&target));
                        recs.additional.extend(&e.aaaa.reowned(&target));
                    }
                }
            }
            add_srv(proto, pname, recs);
        }
        ServiceKind::Headless {
            a: svc_a,
            aaaa: svc_aaaa,
        }
    } else {
        let mut a = RrList::new();
        let mut aaaa = RrList::new();
        for ip in &cluster_ips {
            match ip {
                IpAddr::V4(_) => a.push_ip(&PTR_TO_QNAME, ttl, *ip),
                IpAddr::V6(_) => aaaa.push_ip(&PTR_TO_QNAME, ttl, *ip),
            }
            ptrs.push((*ip, svc_name.clone()));
        }
        let mut glue = a.reowned(&svc_name);
        glue.extend(&aaaa.reowned(&svc_name));
        for p in spec.ports.iter() {
            let Some(pname) = label(&p.name) else {
                continue;
            };
            let proto = proto_label(p.protocol);
            let mut recs = SrvRecords::default();
            recs.srv.push(
                &PTR_TO_QNAME,
                TYPE_SRV,
                ttl,
                &wire::srv_rdata(0, 100, p.port, &svc_name),
            );
            recs.additional = glue.clone();
            add_srv(&proto, &pname, recs);
        }
        ServiceKind::Cluster { a, aaaa }
    };
    let mut kind = kind;
    match &mut kind {
        ServiceKind::Cluster { a, aaaa } | ServiceKind::Headless { a, aaaa } => {
            a.shrink();
            aaaa.shrink();
        }
        ServiceKind::External { cname, .. } => cname.shrink(),
    }
    for e in endpoints.values_mut() {
        e.a.shrink();
        e.aaaa.shrink();
    }
    Some(BuiltService {
        entry: ServiceEntry {
            kind,
            endpoints: endpoints.into(),
            srv: srv.into_boxed_slice(),
        },
        ptrs,
    })
}

/// The slices of `svc` (same namespace, `kubernetes.io/service-name` label).
pub fn slices_of<'a>(snap: &'a Snapshot, svc: &NamespacedName) -> Vec<&'a EndpointSlice> {
    let from = NamespacedName::new(&svc.namespace, "");
    snap.endpoint_slices
        .range(from..)
        .take_while(|(k, _)| k.namespace == svc.namespace)
        .filter(|(_, s)| *s.service_name == *svc.name)
        .map(|(_, s)| &**s)
        .collect()
}

fn pod_ips(p: &Pod) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = p.pod_ips.iter().filter_map(|s| s.parse().ok()).collect();
    v.sort();
    v.dedup();
    v
}

/// PTR records for `targets` (sorted, deduplicated: full builds and
/// incremental updates give byte-identical lists).
fn ptr_records(ttl: u32, targets: &mut Vec<Vec<u8>>) -> RrList {
    targets.sort();
    targets.dedup();
    let mut l = RrList::new();
    for t in targets.iter() {
        l.push(&PTR_TO_QNAME, TYPE_PTR, ttl, t);
    }
    l.shrink();
    l
}

/// True when `target` is `svc_name` or a name under it (an endpoint of that service).
fn owned_by(target: &[u8], svc_name: &[u8]) -> bool {
    if target == svc_name {
        return true;
    }
    if !target.ends_with(svc_name) || target.len() == svc_name.len() {
        return false;
    }
    // Label-aligned suffix: walk the labels of `target`.
    let want = target.len() - svc_name.len();
    let mut pos = 0;
    while pos < want {
        pos += 1 + target[pos] as usize;
    }
    pos == want
}

fn lower_key(s: &str) -> Box<[u8]> {
    s.to_ascii_lowercase().into_bytes().into_boxed_slice()
}

/// Keeps the bookkeeping for incremental updates and publishes indexes.
///
/// Memory matters (10k services should stay a few MB): PTR owners are not
/// kept separately; a PTR record belongs to the service whose name its
/// target is or ends with, and each `ServiceEntry` lists its PTR addresses.
pub struct IndexBuilder {
    cfg: Arc<ZoneConfig>,
    current: Index,
    slice_owner: HashMap<NamespacedName, String>,
    pod_addrs: HashMap<NamespacedName, Vec<IpAddr>>,
    ns_objects: HashSet<String>,
}

impl IndexBuilder {
    pub fn new(cfg: ZoneConfig) -> IndexBuilder {
        let cfg = Arc::new(cfg);
        let current = Index {
            config: cfg.clone(),
            synced: false,
            namespaces: Arc::default(),
            ptr: Arc::default(),
            pods: Arc::default(),
            soa: RrList::new(),
            apex_ns: RrList::new(),
            ns_glue: RrList::new(),
            ns_host: EndpointRecords::default(),
            version_txt: RrList::new(),
            services_total: 0,
        };
        let mut b = IndexBuilder {
            cfg,
            current,
            slice_owner: HashMap::new(),
            pod_addrs: HashMap::new(),
            ns_objects: HashSet::new(),
        };
        b.zone_records(0);
        b
    }

    /// The index as it is now (before any snapshot: not synced, so cluster names SERVFAIL).
    pub fn index(&self) -> Arc<Index> {
        Arc::new(self.current.clone())
    }

    fn zone_records(&mut self, revision: u64) {
        let c = &self.cfg;
        let ns_name = c.name(&[b"ns", b"dns"]);
        let mut soa = RrList::new();
        let rname = c.name(&[b"hostmaster"]);
        let rdata = wire::soa_rdata(&wire::Soa {
            mname: &ns_name,
            rname: &rname,
            serial: revision as u32,
            refresh: 7200,
            retry: 1800,
            expire: 86400,
            minimum: c.negative_ttl,
        });
        // The SOA sits in the authority section of negative answers, whose
        // owner is not the question: the zone name is written in full (also
        // valid when it answers an SOA question for the apex).
        soa.push(&c.zone, TYPE_SOA, c.negative_ttl, &rdata);
        let mut apex_ns = RrList::new();
        apex_ns.push(&PTR_TO_QNAME, TYPE_NS, c.ttl, &ns_name);
        let mut ns_host = EndpointRecords::default();
        for ip in &c.ns_ips {
            match ip {
                IpAddr::V4(_) => ns_host.a.push_ip(&PTR_TO_QNAME, c.ttl, *ip),
                IpAddr::V6(_) => ns_host.aaaa.push_ip(&PTR_TO_QNAME, c.ttl, *ip),
            }
        }
        let mut glue = ns_host.a.reowned(&ns_name);
        glue.extend(&ns_host.aaaa.reowned(&ns_name));
        let mut txt = RrList::new();
        txt.push(
            &PTR_TO_QNAME,
            TYPE_TXT,
            c.ttl,
            &wire::txt_rdata(SCHEMA_VERSION),
        );
        let cur = &mut self.current;
        cur.soa = soa;
        cur.apex_ns = apex_ns;
        cur.ns_glue = glue;
        cur.ns_host = ns_host;
        cur.version_txt = txt;
    }

    /// Rebuilds everything from `snap`.
    pub fn full(&mut self, snap: &Snapshot) -> Arc<Index> {
        self.slice_owner.clear();
        self.pod_addrs.clear();
        self.ns_objects = snap.namespaces.keys().cloned().collect();
        let mut namespaces: HashMap<Box<[u8]>, NamespaceEntry> = HashMap::new();
        for ns in &self.ns_objects {
            namespaces.entry(lower_key(ns)).or_default();
        }
        for (k, s) in &snap.endpoint_slices {
            self.slice_owner
                .insert(k.clone(), s.service_name.to_string());
        }
        // Group slices per service once instead of scanning per service
        // (BTreeMap order: the same slice order as `slices_of`).
        let mut by_svc: HashMap<NamespacedName, Vec<&EndpointSlice>> = HashMap::new();
        for (k, s) in &snap.endpoint_slices {
            if let Some(svc) = self.slice_owner.get(k) {
                by_svc
                    .entry(NamespacedName::new(&k.namespace, svc))
                    .or_default()
                    .push(s);
            }
        }
        let mut ptr_targets: HashMap<IpAddr, Vec<Vec<u8>>> = HashMap::new();
        let mut total = 0;
        for (key, svc) in &snap.services {
            let slices = by_svc.get(key).map(|v| v.as_slice()).unwrap_or(&[]);
            let Some(built) = service_entry(&self.cfg, svc, slices) else {
                continue;
            };
            total += 1;
            namespaces
                .entry(lower_key(&key.namespace))
                .or_default()
                .services
                .insert(lower_key(&key.name), Arc::new(built.entry));
            for (ip, target) in built.ptrs {
                ptr_targets.entry(ip).or_default().push(target);
            }
        }
        let ttl = self.cfg.ttl;
        let ptr = ptr_targets
            .into_iter()
            .map(|(ip, mut t)| (ip, Arc::new(ptr_records(ttl, &mut t))))
            .collect();
        let mut pods: HashMap<IpAddr, Vec<Box<[u8]>>> = HashMap::new();
        for (k, p) in &snap.pods {
            let ips = pod_ips(p);
            for ip in &ips {
                pods.entry(*ip).or_default().push(lower_key(&k.namespace));
            }
            self.pod_addrs.insert(k.clone(), ips);
        }
        self.current.namespaces = Arc::new(
            namespaces
                .into_iter()
                .map(|(k, v)| (k, Arc::new(v)))
                .collect(),
        );
        self.current.ptr = Arc::new(ptr);
        self.current.pods = Arc::new(pods);
        self.current.services_total = total;
        self.current.synced = snap.synced;
        self.zone_records(snap.revision);
        self.index()
    }

    /// Replaces the PTR records `key` contributes: drops its old targets at
    /// `old_ips`, adds `new` (address, target) pairs.
    fn replace_ptrs(
        &mut self,
        key: &NamespacedName,
        old_ips: &[IpAddr],
        new: &[(IpAddr, Vec<u8>)],
    ) {
        if old_ips.is_empty() && new.is_empty() {
            return;
        }
        let svc_name = self
            .cfg
            .name(&[key.name.as_bytes(), key.namespace.as_bytes(), b"svc"]);
        let mut touched: Vec<IpAddr> = old_ips.to_vec();
        touched.extend(new.iter().map(|(ip, _)| *ip));
        touched.sort();
        touched.dedup();
        let ttl = self.cfg.ttl;
        let ptr = Arc::make_mut(&mut self.current.ptr);
        for ip in touched {
            let mut targets: Vec<Vec<u8>> = ptr
                .get(&ip)
                .map(|l| {
                    l.records()
                        .map(wire::record_rdata)
                        .filter(|t| !owned_by(t, &svc_name))
                        .map(|t| t.to_vec())
                        .collect()
                })
                .unwrap_or_default();
            targets.extend(new.iter().filter(|(i, _)| *i == ip).map(|(_, t)| t.clone()));
            if targets.is_empty() {
                ptr.remove(&ip);
            } else {
                ptr.insert(ip, Arc::new(ptr_records(ttl, &mut targets)));
            }
        }
    }

    /// Applies one change set; a `full_resync` rebuilds from its snapshot.
    pub fn apply(&mut self, cs: &ChangeSet) -> Arc<Index> {
        if cs.full_resync {
            return self.full(&cs.snapshot);
        }
        let snap = &*cs.snapshot;
        let mut services: BTreeSet<NamespacedName> = BTreeSet::new();
        let mut namespaces_changed = false;
        for ch in &cs.changes {
            let key = &ch.key;
            let nn =
                || NamespacedName::new(key.namespace.as_deref().unwrap_or("default"), &key.name);
            match key.kind {
                Kind::Service => {
                    services.insert(nn());
                }
                Kind::EndpointSlice => {
                    let k = nn();
                    if let Some(old) = self.slice_owner.remove(&k) {
                        services.insert(NamespacedName::new(&k.namespace, &old));
                    }
                    if let Some(new) = snap.endpoint_slices.get(&k) {
                        services.insert(NamespacedName::new(&k.namespace, &new.service_name));
                        self.slice_owner.insert(k, new.service_name.to_string());
                    }
                }
                Kind::Pod => self.pod_changed(snap, nn()),
                Kind::Namespace => {
                    namespaces_changed = true;
                    if snap.namespaces.contains_key(&key.name) {
                        self.ns_objects.insert(key.name.clone());
                    } else {
                        self.ns_objects.remove(&key.name);
                    }
                    Arc::make_mut(&mut self.current.namespaces)
                        .entry(lower_key(&key.name))
                        .or_default();
                }
                _ => {}
            }
        }
        for key in &services {
            let built = snap
                .services
                .get(key)
                .and_then(|svc| service_entry(&self.cfg, svc, &slices_of(snap, key)));
            let nss = Arc::make_mut(&mut self.current.namespaces);
            let entry = Arc::make_mut(nss.entry(lower_key(&key.namespace)).or_default());
            let lname = lower_key(&key.name);
            let old_ips = entry
                .services
                .get(&lname)
                .map(|e| e.ptr_ips())
                .unwrap_or_default();
            let new_ptrs = match built {
                Some(b) => {
                    entry.services.insert(lname, Arc::new(b.entry));
                    b.ptrs
                }
                None => {
                    entry.services.remove(&lname);
                    Vec::new()
                }
            };
            self.replace_ptrs(key, &old_ips, &new_ptrs);
        }
        if namespaces_changed || !services.is_empty() {
            // Drop namespaces that neither exist as objects nor hold services.
            let ns_objects = &self.ns_objects;
            let nss = Arc::make_mut(&mut self.current.namespaces);
            nss.retain(|k, v| {
                !v.services.is_empty()
                    || ns_objects
                        .iter()
                        .any(|n| n.as_bytes().eq_ignore_ascii_case(k))
            });
        }
        self.current.services_total = self
            .current
            .namespaces
            .values()
            .map(|n| n.services.len())
            .sum();
        self.current.synced = snap.synced;
        self.zone_records(snap.revision);
        self.index()
    }

    fn pod_changed(&mut self, snap: &Snapshot, k: NamespacedName) {
        let ips = snap.pods.get(&k).map(|p| pod_ips(p)).unwrap_or_default();
        let old = self.pod_addrs.remove(&k).unwrap_or_default();
        if old != ips {
            let pods = Arc::make_mut(&mut self.current.pods);
            let ns = lower_key(&k.namespace);
            for ip in &old {
                if let Some(v) = pods.get_mut(ip) {
                    if let Some(pos) = v.iter().position(|n| *n == ns) {
                        v.remove(pos);
                    }
                    if v.is_empty() {
                        pods.remove(ip);
                    }
                }
            }
            for ip in &ips {
                pods.entry(*ip).or_default().push(ns.clone());
            }
        }
        if !ips.is_empty() {
            self.pod_addrs.insert(k, ips);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptr_ownership_is_label_aligned() {
        let svc = wire::text_to_wire("b.a.svc.cluster.local").unwrap();
        assert!(owned_by(&svc, &svc));
        assert!(owned_by(
            &wire::text_to_wire("x.b.a.svc.cluster.local").unwrap(),
            &svc
        ));
        assert!(!owned_by(
            &wire::text_to_wire("xb.a.svc.cluster.local").unwrap(),
            &svc
        ));
        assert!(!owned_by(
            &wire::text_to_wire("c.a.svc.cluster.local").unwrap(),
            &svc
        ));
    }
}
