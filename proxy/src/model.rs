//! Desired model: what the cluster asks of this node's proxy, per IP family and
//! service port, after validation. Pure: built from an informer `Snapshot` and
//! the proxy configuration, no I/O. Bad objects are skipped (and reported in
//! `Model::skipped`, which the caller logs) while everything else is kept.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use podnet_state::compact::{self, AddressType, EndpointSlice, Service, ServiceType, Str};
use podnet_state::{NamespacedName, Snapshot};

/// Affinity timeout Kubernetes uses when `sessionAffinityConfig` is absent (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT_SECS: u32 = 10800;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
    /// nftables family keyword (`ip`, `ip6`), also the payload keyword.
    pub fn nft(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }
    /// The EndpointSlice `addressType` of this family.
    pub fn address_type(self) -> AddressType {
        match self {
            Family::V4 => AddressType::IPv4,
            Family::V6 => AddressType::IPv6,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl From<compact::Protocol> for Protocol {
    fn from(p: compact::Protocol) -> Protocol {
        match p {
            compact::Protocol::Tcp => Protocol::Tcp,
            compact::Protocol::Udp => Protocol::Udp,
            compact::Protocol::Sctp => Protocol::Sctp,
        }
    }
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
    /// IP protocol number (`meta l4proto`).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }
}

/// `namespace/name:portName`, the identity of one service port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePortName {
    pub service: NamespacedName,
    /// The port's `name` (may be empty for single-port services).
    pub port: String,
    pub protocol: Protocol,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.service, self.port, self.protocol.name())
    }
}

/// One endpoint address + target port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V4(ip) => write!(f, "{}:{}", ip, self.port),
            IpAddr::V6(ip) => write!(f, "[{}]:{}", ip, self.port),
        }
    }
}

/// Everything the ruleset needs to know about one service port in one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: ServicePortName,
    pub cluster_ip: IpAddr,
    pub port: u16,
    pub node_port: Option<u16>,
    pub external_ips: Vec<IpAddr>,
    pub load_balancer_ips: Vec<IpAddr>,
    /// Endpoints for cluster-wide policy: ready ones, or serving+terminating
    /// ones when none is ready. Sorted, deduplicated.
    pub cluster_endpoints: Vec<Endpoint>,
    /// The subset of endpoints on this node (same ready/fallback rule applied
    /// to the local endpoints alone).
    pub local_endpoints: Vec<Endpoint>,
    /// Endpoints whose node is this one or unknown: the hairpin candidates.
    pub maybe_local_endpoints: Vec<Endpoint>,
    /// `sessionAffinity: ClientIP` timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// `externalTrafficPolicy: Local` on an externally reachable service.
    pub external_policy_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_policy_local: bool,
    pub health_check_node_port: Option<u16>,
    /// `loadBalancerSourceRanges` of this family (networks): when not empty,
    /// only these sources may reach the load balancer IPs.
    pub source_ranges: Vec<IpNetwork>,
    /// A source range holds a node IP: the node may also reach the LB IPs
    /// with an LB IP as source (kube-proxy's rule for VIPs the node has as a
    /// local address, where the traffic loops back instead of passing the LB).
    pub source_ranges_allow_node: bool,
}

impl ServicePort {
    /// Reachable from outside through NodePort, externalIPs or LB IPs.
    pub fn externally_accessible(&self) -> bool {
        self.node_port.is_some()
            || !self.external_ips.is_empty()
            || !self.load_balancer_ips.is_empty()
    }
    /// Endpoints that ClusterIP traffic may use.
    pub fn internal_endpoints(&self) -> &[Endpoint] {
        if self.internal_policy_local {
            &self.local_endpoints
        } else {
            &self.cluster_endpoints
        }
    }
    /// Endpoints that external traffic from outside the cluster may use.
    pub fn external_endpoints(&self) -> &[Endpoint] {
        if self.external_policy_local {
            &self.local_endpoints
        } else {
            &self.cluster_endpoints
        }
    }
    pub fn has_endpoints(&self) -> bool {
        !self.cluster_endpoints.is_empty() || !self.local_endpoints.is_empty()
    }
    /// Every address that steers traffic to this service port besides NodePorts.
    pub fn service_ips(&self) -> impl Iterator<Item = &IpAddr> {
        std::iter::once(&self.cluster_ip)
            .chain(self.external_ips.iter())
            .chain(self.load_balancer_ips.iter())
    }
}

/// A service address: (IP, protocol, port). externalIPs and LB IPs are not
/// unique, so two services may claim one; the first in NamespacedName order
/// owns it (`ServiceModel::yield_claims`).
pub type AddrKey = (IpAddr, Protocol, u16);

/// Settings the model depends on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelConfig {
    pub node_name: String,
    /// Service ClusterIP ranges; a ClusterIP outside them is rejected. Empty
    /// for a family = no check for it.
    pub service_cidrs: Vec<IpNetwork>,
    /// This node's addresses (its Node object's InternalIPs).
    pub node_ips: Vec<IpAddr>,
}

/// An object (or part of one) that was left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub object: String,
    pub reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.object, self.reason)
    }
}

/// A healthCheckNodePort responder: which service and how many local endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub service: NamespacedName,
    pub local_endpoints: usize,
}

/// The desired state of one service: its ports in both families.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceModel {
    /// Per valid port in spec order, one entry per family it has a
    /// ClusterIP in (IPv4 first).
    pub ports: Vec<ServicePort>,
    /// healthCheckNodePort and its responder state (eTP=Local services).
    pub health_check: Option<(u16, HealthCheck)>,
    pub skipped: Vec<Skipped>,
}

/// The desired state of both families.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    pub v4: BTreeMap<ServicePortName, ServicePort>,
    pub v6: BTreeMap<ServicePortName, ServicePort>,
    /// healthCheckNodePort -> responder state (eTP=Local services).
    pub health_checks: BTreeMap<u16, HealthCheck>,
    pub skipped: Vec<Skipped>,
}

impl Model {
    pub fn family(&self, f: Family) -> &BTreeMap<ServicePortName, ServicePort> {
        match f {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    /// Builds the model from a snapshot.
    pub fn build(snapshot: &Snapshot, cfg: &ModelConfig) -> Model {
        let mut model = Model::default();
        let slices = slices_by_service(snapshot);
        // Services come in name order: the first claimant of an address owns it.
        let mut owners: HashMap<AddrKey, &NamespacedName> = HashMap::new();
        for (name, svc) in &snapshot.services {
            let slices = slices.get(name).map(Vec::as_slice).unwrap_or(&[]);
            let mut sm = ServiceModel::build(name, svc, slices, cfg);
            for k in sm.claims() {
                owners.entry(k).or_insert(name);
            }
            sm.yield_claims(name, |k| owners.get(k).copied());
            model.add(sm);
        }
        model
    }

    fn add(&mut self, sm: ServiceModel) {
        for sp in sm.ports {
            let map = match Family::of(&sp.cluster_ip) {
                Family::V4 => &mut self.v4,
                Family::V6 => &mut self.v6,
            };
            map.insert(sp.name.clone(), sp);
        }
        self.health_checks.extend(sm.health_check);
        self.skipped.extend(sm.skipped);
    }
}

impl ServiceModel {
    /// The ports of `f`.
    pub fn family(&self, f: Family) -> impl Iterator<Item = &ServicePort> {
        self.ports
            .iter()
            .filter(move |sp| Family::of(&sp.cluster_ip) == f)
    }

    /// The port of `f` named `name`.
    pub fn port(&self, f: Family, name: &ServicePortName) -> Option<&ServicePort> {
        self.family(f).find(|sp| sp.name == *name)
    }

    /// The addresses the ports steer (ClusterIPs, externalIPs, LB IPs), as
    /// built, before `yield_claims`.
    pub fn claims(&self) -> impl Iterator<Item = AddrKey> + '_ {
        self.ports.iter().flat_map(|sp| {
            sp.service_ips()
                .map(move |ip| (*ip, sp.name.protocol, sp.port))
        })
    }

    /// Leaves out the addresses `owner` gives to another service: an
    /// externalIP / LB IP is dropped, a port whose ClusterIP is taken is
    /// dropped in that family. Each is reported in `skipped`.
    pub fn yield_claims<'a>(
        &mut self,
        name: &NamespacedName,
        owner: impl Fn(&AddrKey) -> Option<&'a NamespacedName>,
    ) {
        let mut skipped = Vec::new();
        self.ports.retain_mut(|sp| {
            let (proto, port) = (sp.name.protocol, sp.port);
            let port_name = &sp.name.port;
            let taken = |ip: IpAddr| owner(&(ip, proto, port)).filter(|o| *o != name);
            let mut skip = |kind: &str, ip: IpAddr, o: &NamespacedName| {
                skipped.push(Skipped {
                    object: format!("service {name} port {port_name:?} ({port})"),
                    reason: format!(
                        "{kind} {ip} port {port}/{} already used by {o}",
                        proto.name()
                    ),
                });
            };
            if let Some(o) = taken(sp.cluster_ip) {
                skip("clusterIP", sp.cluster_ip, o);
                return false;
            }
            for (kind, ips) in [
                ("externalIP", &mut sp.external_ips),
                ("load balancer IP", &mut sp.load_balancer_ips),
            ] {
                ips.retain(|ip| match taken(*ip) {
                    Some(o) => {
                        skip(kind, *ip, o);
                        false
                    }
                    None => true,
                });
            }
            true
        });
        self.skipped.extend(skipped);
    }

    fn skip(&mut self, object: impl fmt::Display, reason: impl Into<String>) {
        self.skipped.push(Skipped {
            object: object.to_string(),
            reason: reason.into(),
        });
    }

    /// The model of service `name` with the EndpointSlices that name it
    /// (`&EndpointSlice`s or `Arc`s).
    pub fn build<S: Borrow<EndpointSlice>>(
        name: &NamespacedName,
        svc: &Service,
        slices: &[S],
        cfg: &ModelConfig,
    ) -> ServiceModel {
        let mut m = ServiceModel::default();
        m.add_service(name, svc, slices, cfg);
        m
    }

    fn add_service<S: Borrow<EndpointSlice>>(
        &mut self,
        name: &NamespacedName,
        svc: &Service,
        slices: &[S],
        cfg: &ModelConfig,
    ) {
        let spec = &svc.spec;
        if spec.type_ == ServiceType::ExternalName {
            return; // DNS-only; nothing to proxy.
        }
        let ip_strings = &spec.cluster_ips;
        if ip_strings.is_empty() || ip_strings.iter().any(|s| &**s == "None" || s.is_empty()) {
            return; // headless (or not allocated yet): nothing to proxy.
        }
        // The first ClusterIP of each family, IPv4 first.
        let mut cluster_ips: [Option<IpAddr>; 2] = [None, None];
        for s in ip_strings.iter() {
            let ip: IpAddr = match s.parse() {
                Ok(ip) => ip,
                Err(_) => {
                    self.skip(
                        format!("service {name}"),
                        format!("clusterIP {s:?} is not an IP address"),
                    );
                    return;
                }
            };
            let fam = Family::of(&ip);
            let mut cidrs = cfg
                .service_cidrs
                .iter()
                .filter(|c| Family::of(&c.ip()) == fam)
                .peekable();
            if cidrs.peek().is_some() && !cidrs.clone().any(|c| c.contains(ip)) {
                self.skip(
                    format!("service {name}"),
                    format!(
                        "clusterIP {ip} is outside the service CIDR {}",
                        cidrs.map(|c| c.to_string()).collect::<Vec<_>>().join(",")
                    ),
                );
                return;
            }
            cluster_ips[fam as usize].get_or_insert(ip);
        }
        let external_ips = self.parse_ips(name, "externalIP", spec.external_ips.iter());
        let lb_ips = if spec.type_ == ServiceType::LoadBalancer {
            self.parse_ips(
                name,
                "load balancer ingress IP",
                svc.load_balancer_ingress_ips.iter(),
            )
        } else {
            Vec::new()
        };
        let source_ranges = if spec.type_ == ServiceType::LoadBalancer {
            self.parse_ranges(name, &spec.load_balancer_source_ranges)
        } else {
            Vec::new()
        };
        let affinity_timeout = spec.session_affinity_client_ip.then(|| {
            spec.session_affinity_timeout_seconds
                .filter(|t| *t > 0)
                .map(|t| t as u32)
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_SECS)
        });
        let etp_local = spec.external_traffic_policy_local;
        let itp_local = spec.internal_traffic_policy_local;
        let node_ports_allowed = matches!(
            spec.type_,
            ServiceType::NodePort | ServiceType::LoadBalancer
        );

        let mut max_local = 0usize;
        let mut hc_port = None;
        // Services have a handful of ports: small lists, no sets.
        let mut seen: Vec<(Protocol, u16)> = Vec::new();
        let mut seen_names: Vec<&str> = Vec::new();
        let several = spec.ports.len() > 1;
        for p in spec.ports.iter() {
            let port_name: &str = &p.name;
            let protocol = Protocol::from(p.protocol);
            let port = p.port;
            let what = || format!("service {name} port {port_name:?} ({port})");
            if several {
                if seen.contains(&(protocol, port)) {
                    self.skip(what(), format!("duplicate port {port}/{}", protocol.name()));
                    continue;
                }
                seen.push((protocol, port));
                if seen_names.contains(&port_name) {
                    self.skip(what(), format!("duplicate port name {port_name:?}"));
                    continue;
                }
                seen_names.push(port_name);
            }
            let node_port = p.node_port.filter(|_| node_ports_allowed);
            for (fam, cluster_ip) in [Family::V4, Family::V6]
                .into_iter()
                .zip(cluster_ips)
                .filter_map(|(f, ip)| Some((f, ip?)))
            {
                let eps = endpoints_for(slices, fam, port_name, protocol, &cfg.node_name);
                let of_family = |ips: &[IpAddr]| {
                    ips.iter()
                        .filter(|ip| Family::of(ip) == fam)
                        .copied()
                        .collect()
                };
                let mut sp = ServicePort {
                    name: ServicePortName {
                        service: name.clone(),
                        port: port_name.to_string(),
                        protocol,
                    },
                    cluster_ip,
                    port,
                    node_port,
                    external_ips: of_family(&external_ips),
                    load_balancer_ips: of_family(&lb_ips),
                    cluster_endpoints: eps.cluster,
                    local_endpoints: eps.local,
                    maybe_local_endpoints: eps.maybe_local,
                    affinity_timeout,
                    external_policy_local: false,
                    internal_policy_local: itp_local,
                    health_check_node_port: None,
                    source_ranges: Vec::new(),
                    source_ranges_allow_node: false,
                };
                let ranges = disjoint(
                    source_ranges
                        .iter()
                        .filter(|n| Family::of(&n.ip()) == fam)
                        .copied()
                        .collect(),
                );
                sp.source_ranges_allow_node = ranges
                    .iter()
                    .any(|n| cfg.node_ips.iter().any(|ip| n.contains(*ip)));
                sp.source_ranges = ranges;
                if etp_local && sp.externally_accessible() {
                    sp.external_policy_local = true;
                    sp.health_check_node_port = spec.health_check_node_port;
                }
                if let Some(hc) = sp.health_check_node_port {
                    hc_port = Some(hc);
                    max_local = max_local.max(sp.local_endpoints.len());
                }
                self.ports.push(sp);
            }
        }
        if let Some(port) = hc_port {
            // Dual-stack: the same pods appear once per family; count one family.
            self.health_check = Some((
                port,
                HealthCheck {
                    service: name.clone(),
                    local_endpoints: max_local,
                },
            ));
        }
    }

    /// Valid CIDRs (as networks, deduplicated); invalid ones are reported and ignored.
    fn parse_ranges(&mut self, name: &NamespacedName, ranges: &[Str]) -> Vec<IpNetwork> {
        let mut out = Vec::new();
        for s in ranges {
            let net = s
                .trim()
                .parse::<IpNetwork>()
                .ok()
                .and_then(|n| IpNetwork::new(n.network(), n.prefix()).ok());
            match net {
                Some(n) if !out.contains(&n) => out.push(n),
                Some(_) => {}
                None => self.skip(
                    format!("service {name}"),
                    format!("loadBalancerSourceRange {s:?} is not a CIDR (ignored)"),
                ),
            }
        }
        out
    }

    fn parse_ips<'a>(
        &mut self,
        name: &NamespacedName,
        what: &str,
        ips: impl Iterator<Item = &'a Str>,
    ) -> Vec<IpAddr> {
        let mut out = Vec::new();
        for s in ips {
            match s.parse::<IpAddr>() {
                Ok(ip) if !out.contains(&ip) => out.push(ip),
                Ok(_) => {}
                Err(_) => self.skip(
                    format!("service {name}"),
                    format!("{what} {s:?} is not an IP address (ignored)"),
                ),
            }
        }
        out
    }
}

/// CIDRs nest or are disjoint: without those inside another the rest are
/// disjoint, as an interval set needs (the kernel rejects overlapping ranges).
fn disjoint(mut nets: Vec<IpNetwork>) -> Vec<IpNetwork> {
    let all = nets.clone();
    nets.retain(|n| {
        !all.iter()
            .any(|o| o.prefix() < n.prefix() && o.contains(n.network()))
    });
    nets
}

pub fn slices_by_service(snapshot: &Snapshot) -> BTreeMap<NamespacedName, Vec<&EndpointSlice>> {
    let mut out: BTreeMap<NamespacedName, Vec<&EndpointSlice>> = BTreeMap::new();
    for (key, slice) in &snapshot.endpoint_slices {
        out.entry(NamespacedName::new(&key.namespace, &slice.service_name))
            .or_default()
            .push(slice);
    }
    out
}

struct PortEndpoints {
    cluster: Vec<Endpoint>,
    local: Vec<Endpoint>,
    maybe_local: Vec<Endpoint>,
}

#[derive(Default)]
struct Candidates {
    ready: Vec<Endpoint>,
    serving_terminating: Vec<Endpoint>,
}

/// Sorted, without duplicates.
fn sorted(mut v: Vec<Endpoint>) -> Vec<Endpoint> {
    v.sort_unstable();
    v.dedup();
    v
}

impl Candidates {
    /// Ready endpoints, or the serving-terminating ones when none is ready.
    fn usable(self) -> Vec<Endpoint> {
        if self.ready.is_empty() {
            sorted(self.serving_terminating)
        } else {
            sorted(self.ready)
        }
    }
}

fn endpoints_for<S: Borrow<EndpointSlice>>(
    slices: &[S],
    fam: Family,
    port_name: &str,
    protocol: Protocol,
    node: &str,
) -> PortEndpoints {
    let mut all = Candidates::default();
    let mut local = Candidates::default();
    let mut maybe_local = Vec::new();
    for slice in slices.iter().map(Borrow::borrow) {
        if slice.address_type != fam.address_type() {
            continue;
        }
        let target = slice
            .ports
            .iter()
            .find(|p| &*p.name == port_name && Protocol::from(p.protocol) == protocol);
        let Some(port) = target.and_then(|p| p.port) else {
            continue;
        };
        for ep in slice.endpoints.iter() {
            // Conditions come with the Kubernetes defaults applied.
            let (ready, serving, terminating) = (ep.ready, ep.serving, ep.terminating);
            let node_name = ep.node_name.as_deref();
            let is_local = node_name == Some(node);
            // Kubernetes uses only the first address of an endpoint.
            let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
                continue;
            };
            if Family::of(&ip) != fam {
                continue;
            }
            let e = Endpoint { ip, port };
            for c in [&mut all].into_iter().chain(is_local.then_some(&mut local)) {
                if ready {
                    c.ready.push(e);
                } else if serving && terminating {
                    c.serving_terminating.push(e);
                }
            }
            if (ready || (serving && terminating)) && (is_local || node_name.is_none()) {
                maybe_local.push(e);
            }
        }
    }
    PortEndpoints {
        cluster: all.usable(),
        local: local.usable(),
        maybe_local: sorted(maybe_local),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ClientIPConfig, LoadBalancerIngress, LoadBalancerStatus, Service as K8sService,
        ServicePort as K8sPort, ServiceSpec, ServiceStatus, SessionAffinityConfig,
    };
    use k8s_openapi::api::discovery::v1::{
        Endpoint as K8sEndpoint, EndpointConditions, EndpointPort, EndpointSlice as K8sSlice,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use podnet_state::object::SERVICE_NAME_LABEL;
    use std::sync::Arc;

    /// A k8s Service (tests adjust its spec before `snapshot` converts it).
    pub fn svc(ns: &str, name: &str, ip: &str, ports: &[(&str, &str, i32, i32)]) -> K8sService {
        K8sService {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                cluster_ips: Some(ip.split(',').map(String::from).collect()),
                type_: Some(
                    if ports.iter().any(|p| p.3 != 0) {
                        "NodePort"
                    } else {
                        "ClusterIP"
                    }
                    .into(),
                ),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, proto, port, np)| K8sPort {
                            name: Some(n.to_string()),
                            protocol: Some(proto.to_string()),
                            port: *port,
                            node_port: (*np != 0).then_some(*np),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// An endpoint: (ip, node, ready, serving, terminating).
    pub type Ep<'a> = (&'a str, &'a str, bool, bool, bool);

    pub fn slice(
        ns: &str,
        svc: &str,
        suffix: &str,
        fam: &str,
        ports: &[(&str, &str, i32)],
        eps: &[Ep],
    ) -> K8sSlice {
        K8sSlice {
            address_type: fam.into(),
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(format!("{svc}-{suffix}")),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), svc.to_string())].into()),
                ..Default::default()
            },
            ports: Some(
                ports
                    .iter()
                    .map(|(n, proto, port)| EndpointPort {
                        name: Some(n.to_string()),
                        protocol: Some(proto.to_string()),
                        port: Some(*port),
                        ..Default::default()
                    })
                    .collect(),
            ),
            endpoints: eps
                .iter()
                .map(|(ip, node, ready, serving, term)| K8sEndpoint {
                    addresses: vec![ip.to_string()],
                    node_name: (!node.is_empty()).then(|| node.to_string()),
                    conditions: Some(EndpointConditions {
                        ready: Some(*ready),
                        serving: Some(*serving),
                        terminating: Some(*term),
                    }),
                    ..Default::default()
                })
                .collect(),
        }
    }

    /// A snapshot holding the compact forms, as the informer's does.
    pub fn snapshot(services: Vec<K8sService>, slices: Vec<K8sSlice>) -> Snapshot {
        let mut s = Snapshot {
            synced: true,
            ..Default::default()
        };
        for svc in services {
            let svc = Service::from_k8s(svc).unwrap();
            let m = &svc.metadata;
            s.services
                .insert(NamespacedName::new(&m.namespace, &m.name), Arc::new(svc));
        }
        for sl in slices {
            let sl = EndpointSlice::from_k8s(sl).unwrap();
            let m = &sl.metadata;
            s.endpoint_slices
                .insert(NamespacedName::new(&m.namespace, &m.name), Arc::new(sl));
        }
        s
    }

    pub fn cfg() -> ModelConfig {
        ModelConfig {
            node_name: "node-a".into(),
            service_cidrs: vec![
                "10.96.0.0/16".parse().unwrap(),
                "fd00:96::/112".parse().unwrap(),
            ],
            node_ips: vec!["192.168.0.10".parse().unwrap()],
        }
    }

    fn spn(ns: &str, name: &str, port: &str, p: Protocol) -> ServicePortName {
        ServicePortName {
            service: NamespacedName::new(ns, name),
            port: port.into(),
            protocol: p,
        }
    }

    fn ep(s: &str) -> Endpoint {
        let (ip, port) = s.rsplit_once(':').unwrap();
        Endpoint {
            ip: ip.trim_matches(|c| c == '[' || c == ']').parse().unwrap(),
            port: port.parse().unwrap(),
        }
    }

    #[test]
    fn ready_endpoints_and_terminating_fallback() {
        let s = snapshot(
            vec![
                svc("default", "web", "10.96.0.10", &[("http", "TCP", 80, 0)]),
                svc("default", "old", "10.96.0.11", &[("http", "TCP", 80, 0)]),
            ],
            vec![
                slice(
                    "default",
                    "web",
                    "a",
                    "IPv4",
                    &[("http", "TCP", 8080)],
                    &[
                        ("10.244.0.2", "node-a", true, true, false),
                        ("10.244.1.2", "node-b", true, true, false),
                        ("10.244.1.3", "node-b", false, true, true),
                        ("10.244.1.4", "node-b", false, false, false),
                    ],
                ),
                slice(
                    "default",
                    "old",
                    "a",
                    "IPv4",
                    &[("http", "TCP", 8080)],
                    &[
                        ("10.244.1.3", "node-b", false, true, true),
                        ("10.244.1.4", "node-b", false, false, true),
                    ],
                ),
            ],
        );
        let m = Model::build(&s, &cfg());
        assert!(m.skipped.is_empty(), "{:?}", m.skipped);
        let web = &m.v4[&spn("default", "web", "http", Protocol::Tcp)];
        assert_eq!(
            web.cluster_endpoints,
            vec![ep("10.244.0.2:8080"), ep("10.244.1.2:8080")]
        );
        assert_eq!(web.local_endpoints, vec![ep("10.244.0.2:8080")]);
        assert_eq!(web.port, 80);
        let old = &m.v4[&spn("default", "old", "http", Protocol::Tcp)];
        assert_eq!(
            old.cluster_endpoints,
            vec![ep("10.244.1.3:8080")],
            "serving+terminating fallback"
        );
        assert!(m.v6.is_empty());
    }

    #[test]
    fn headless_externalname_and_other_family_skipped_silently() {
        let mut ext = svc("default", "ext", "10.96.0.12", &[("http", "TCP", 80, 0)]);
        ext.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        ext.spec.as_mut().unwrap().external_name = Some("example.org".into());
        let s = snapshot(
            vec![
                svc("default", "headless", "None", &[("http", "TCP", 80, 0)]),
                ext,
                svc("default", "v6only", "fd00:96::5", &[("dns", "UDP", 53, 0)]),
            ],
            vec![],
        );
        let m = Model::build(&s, &cfg());
        assert!(m.skipped.is_empty());
        assert!(m.v4.is_empty());
        assert_eq!(m.v6.len(), 1);
        let v6 = m.v6.values().next().unwrap();
        assert_eq!(v6.cluster_ip, "fd00:96::5".parse::<IpAddr>().unwrap());
        assert!(!v6.has_endpoints());
    }

    #[test]
    fn bad_objects_skipped_rest_kept() {
        let s = snapshot(
            vec![
                svc(
                    "default",
                    "mixed",
                    "10.96.0.20",
                    &[
                        ("http", "TCP", 80, 0),
                        ("http2", "TCP", 80, 0),
                        ("dns", "UDP", 53, 0),
                        ("dns", "TCP", 5353, 0),
                    ],
                ),
                svc(
                    "default",
                    "outside",
                    "192.168.7.7",
                    &[("http", "TCP", 80, 0)],
                ),
                svc("default", "garbage", "10.96.x", &[("http", "TCP", 80, 0)]),
            ],
            vec![],
        );
        let m = Model::build(&s, &cfg());
        let reasons: Vec<String> = m.skipped.iter().map(|s| s.to_string()).collect();
        assert_eq!(m.skipped.len(), 4, "{reasons:#?}");
        assert!(reasons
            .iter()
            .any(|r| r.contains("(5353)") && r.contains("duplicate port name \"dns\"")));
        assert!(reasons
            .iter()
            .any(|r| r.contains("\"http2\"") && r.contains("duplicate port 80/tcp")));
        assert!(reasons
            .iter()
            .any(|r| r.contains("default/outside") && r.contains("outside the service CIDR")));
        assert!(reasons
            .iter()
            .any(|r| r.contains("default/garbage") && r.contains("not an IP")));
        let kept: Vec<String> = m.v4.keys().map(|k| k.to_string()).collect();
        assert_eq!(
            kept,
            vec!["default/mixed:dns/udp", "default/mixed:http/tcp"]
        );
    }

    #[test]
    fn load_balancer_source_ranges_per_family_disjoint_invalid_skipped() {
        let mut lb = svc(
            "default",
            "lb",
            "10.96.0.30,fd00:96::30",
            &[("http", "TCP", 80, 30080)],
        );
        let spec = lb.spec.as_mut().unwrap();
        spec.type_ = Some("LoadBalancer".into());
        spec.load_balancer_source_ranges = Some(
            [
                "10.0.0.0/8",
                "10.20.0.0/16",
                "10.0.0.0/8",
                "192.168.0.7/24",
                "2001:db8::/32",
                "nope/8",
                "",
            ]
            .map(String::from)
            .to_vec(),
        );
        let mut cip = svc("default", "cip", "10.96.0.31", &[("http", "TCP", 80, 0)]);
        cip.spec.as_mut().unwrap().load_balancer_source_ranges =
            Some(vec!["10.0.0.0/8".into(), "bad".into()]);
        let m = Model::build(&snapshot(vec![lb, cip], vec![]), &cfg());
        let skipped: Vec<String> = m.skipped.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            skipped,
            [
                "service default/lb: loadBalancerSourceRange \"nope/8\" is not a CIDR (ignored)",
                "service default/lb: loadBalancerSourceRange \"\" is not a CIDR (ignored)",
            ],
            "ranges of other service types are not looked at"
        );
        let nets =
            |v: &[&str]| -> Vec<IpNetwork> { v.iter().map(|n| n.parse().unwrap()).collect() };
        let lb4 = &m.v4[&spn("default", "lb", "http", Protocol::Tcp)];
        assert_eq!(
            lb4.source_ranges,
            nets(&["10.0.0.0/8", "192.168.0.0/24"]),
            "deduplicated, as networks, nested ranges dropped"
        );
        assert!(
            lb4.source_ranges_allow_node,
            "192.168.0.0/24 holds the node IP"
        );
        let lb6 = &m.v6[&spn("default", "lb", "http", Protocol::Tcp)];
        assert_eq!(lb6.source_ranges, nets(&["2001:db8::/32"]));
        assert!(!lb6.source_ranges_allow_node);
        let cip4 = &m.v4[&spn("default", "cip", "http", Protocol::Tcp)];
        assert!(cip4.source_ranges.is_empty());
    }

    #[test]
    fn shared_addresses_belong_to_the_first_service_in_name_order() {
        let with_ext = |name: &str, ip: &str, ext: &[&str]| {
            let mut s = svc("default", name, ip, &[("http", "TCP", 80, 0)]);
            s.spec.as_mut().unwrap().external_ips =
                Some(ext.iter().map(|e| e.to_string()).collect());
            s
        };
        let s = snapshot(
            vec![
                // inserted out of order: ownership follows names, not input order
                with_ext("c", "10.96.0.3", &["192.0.2.1", "10.96.0.1"]),
                with_ext("b", "10.96.0.2", &["192.0.2.1", "192.0.2.2"]),
                with_ext("a", "10.96.0.1", &[]),
                // d's ClusterIP is b's externalIP: the port goes
                with_ext("d", "192.0.2.2", &[]),
            ],
            vec![],
        );
        let mut c = cfg();
        c.service_cidrs.clear();
        let m = Model::build(&s, &c);
        let reasons: Vec<String> = m.skipped.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            reasons,
            [
                "service default/c port \"http\" (80): externalIP 192.0.2.1 port 80/tcp already used by default/b",
                "service default/c port \"http\" (80): externalIP 10.96.0.1 port 80/tcp already used by default/a",
                "service default/d port \"http\" (80): clusterIP 192.0.2.2 port 80/tcp already used by default/b",
            ]
        );
        let ext = |n: &str| {
            m.v4[&spn("default", n, "http", Protocol::Tcp)]
                .external_ips
                .clone()
        };
        let ips = |v: &[&str]| -> Vec<IpAddr> { v.iter().map(|i| i.parse().unwrap()).collect() };
        assert_eq!(ext("b"), ips(&["192.0.2.1", "192.0.2.2"]));
        assert!(ext("c").is_empty());
        assert!(!m
            .v4
            .contains_key(&spn("default", "d", "http", Protocol::Tcp)));
    }

    #[test]
    fn policies_affinity_lb_and_health_check() {
        let mut lb = svc(
            "default",
            "lb",
            "10.96.0.30,fd00:96::30",
            &[("http", "TCP", 80, 30080)],
        );
        {
            let spec = lb.spec.as_mut().unwrap();
            spec.type_ = Some("LoadBalancer".into());
            spec.external_traffic_policy = Some("Local".into());
            spec.health_check_node_port = Some(32000);
            spec.external_ips = Some(vec!["192.0.2.9".into()]);
            spec.session_affinity = Some("ClientIP".into());
            spec.session_affinity_config = Some(SessionAffinityConfig {
                client_ip: Some(ClientIPConfig {
                    timeout_seconds: Some(60),
                }),
            });
        }
        lb.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some("198.51.100.1".into()),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        });
        let mut internal = svc("default", "int", "10.96.0.31", &[("http", "TCP", 80, 0)]);
        internal.spec.as_mut().unwrap().internal_traffic_policy = Some("Local".into());
        internal.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
        let s = snapshot(
            vec![lb, internal],
            vec![
                slice(
                    "default",
                    "lb",
                    "4",
                    "IPv4",
                    &[("http", "TCP", 8080)],
                    &[
                        ("10.244.0.2", "node-a", true, true, false),
                        ("10.244.1.2", "node-b", true, true, false),
                    ],
                ),
                slice(
                    "default",
                    "lb",
                    "6",
                    "IPv6",
                    &[("http", "TCP", 8080)],
                    &[("fd00:244::2", "node-a", true, true, false)],
                ),
                slice(
                    "default",
                    "int",
                    "4",
                    "IPv4",
                    &[("http", "TCP", 8080)],
                    &[("10.244.1.2", "node-b", true, true, false)],
                ),
            ],
        );
        let m = Model::build(&s, &cfg());
        assert!(m.skipped.is_empty(), "{:?}", m.skipped);
        let lb4 = &m.v4[&spn("default", "lb", "http", Protocol::Tcp)];
        assert_eq!(lb4.affinity_timeout, Some(60));
        assert!(lb4.external_policy_local);
        assert_eq!(lb4.node_port, Some(30080));
        assert_eq!(
            lb4.external_ips,
            vec!["192.0.2.9".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            lb4.load_balancer_ips,
            vec!["198.51.100.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(lb4.external_endpoints(), &[ep("10.244.0.2:8080")]);
        let lb6 = &m.v6[&spn("default", "lb", "http", Protocol::Tcp)];
        assert!(lb6.external_ips.is_empty());
        assert_eq!(lb6.cluster_endpoints, vec![ep("[fd00:244::2]:8080")]);
        assert_eq!(
            m.health_checks[&32000],
            HealthCheck {
                service: NamespacedName::new("default", "lb"),
                local_endpoints: 1
            }
        );
        let int = &m.v4[&spn("default", "int", "http", Protocol::Tcp)];
        assert!(int.internal_policy_local);
        assert!(
            !int.external_policy_local,
            "eTP only matters for externally reachable services"
        );
        assert!(int.internal_endpoints().is_empty());
        assert_eq!(int.cluster_endpoints.len(), 1);
    }
}
