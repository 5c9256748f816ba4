//! The compact forms of the numerous kinds (Services, EndpointSlices, Pods)
//! that the informer keeps in its snapshots.
//!
//! A cluster has tens of thousands of these, and the proxy and DNS server keep
//! every one in memory: a decoded `k8s-openapi` Service plus its EndpointSlice
//! take ~8 KB (wide structs of `Option`s, a 500-byte `BTreeMap` node per label
//! map), these forms ~1 KB. They hold only what a consumer reads, with the
//! Kubernetes defaults already applied and the values already validated by
//! `object::decode` (protocols, port ranges, service types), so consumers need
//! not re-check them. Address strings stay strings: a consumer that cannot
//! parse one reports that object and keeps the rest.
//!
//! Few-per-cluster kinds (Node, Namespace, ClusterConfig, SubnetLease) stay in
//! their full types.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::object::{default_endpoint_slice, default_service, SERVICE_NAME_LABEL};

/// An immutable string: 16 bytes, one allocation (none when empty).
pub type Str = Box<str>;

/// Annotations that can be large and that no consumer reads.
const DROPPED_ANNOTATIONS: [&str; 1] = ["kubectl.kubernetes.io/last-applied-configuration"];

/// Labels or annotations, sorted by key. A slice of pairs instead of a
/// `BTreeMap`, which allocates a ~500-byte node even for one entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pairs(Box<[(Str, Str)]>);

impl Pairs {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.0[i].1)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<BTreeMap<String, String>> for Pairs {
    fn from(m: BTreeMap<String, String>) -> Self {
        // A BTreeMap iterates sorted, which `get`'s binary search relies on.
        Pairs(m.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }
}

impl<const N: usize> From<[(&str, &str); N]> for Pairs {
    fn from(pairs: [(&str, &str); N]) -> Self {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        m.into()
    }
}

/// What is kept of `metadata`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub name: Str,
    /// `default` when the object had none.
    pub namespace: Str,
    pub labels: Pairs,
    /// Without `kubectl.kubernetes.io/last-applied-configuration`.
    pub annotations: Pairs,
}

impl From<ObjectMeta> for Meta {
    fn from(m: ObjectMeta) -> Self {
        let mut annotations = m.annotations.unwrap_or_default();
        for a in DROPPED_ANNOTATIONS {
            annotations.remove(a);
        }
        Meta {
            name: m.name.unwrap_or_default().into(),
            namespace: m.namespace.unwrap_or_else(|| "default".into()).into(),
            labels: m.labels.unwrap_or_default().into(),
            annotations: annotations.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The Kubernetes spelling; absent means TCP.
    pub fn parse(p: Option<&str>) -> Option<Protocol> {
        match p.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
    /// `TCP`, `UDP`, `SCTP`.
    pub fn k8s(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.k8s())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
    ExternalName,
}

impl ServiceType {
    fn parse(s: &str) -> Option<ServiceType> {
        Some(match s {
            "ClusterIP" => ServiceType::ClusterIP,
            "NodePort" => ServiceType::NodePort,
            "LoadBalancer" => ServiceType::LoadBalancer,
            "ExternalName" => ServiceType::ExternalName,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    /// A named container port, resolved through the EndpointSlice's ports.
    Name(Str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Empty when the port has no name (allowed for single-port services).
    pub name: Str,
    pub protocol: Protocol,
    pub port: u16,
    /// Defaults to `port`.
    pub target_port: TargetPort,
    /// Kept whatever the service type; `None` when unset or 0.
    pub node_port: Option<u16>,
    pub app_protocol: Option<Str>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceSpec {
    pub type_: ServiceType,
    /// `clusterIPs`, or `[clusterIP]` when only that is set; `["None"]` for a
    /// headless service; empty when none is allocated. Unparsed.
    pub cluster_ips: Box<[Str]>,
    pub external_ips: Box<[Str]>,
    /// Set (non-empty) exactly when `type_` is `ExternalName`.
    pub external_name: Option<Str>,
    pub ports: Box<[ServicePort]>,
    /// `sessionAffinity: ClientIP`.
    pub session_affinity_client_ip: bool,
    /// `sessionAffinityConfig.clientIP.timeoutSeconds` as given.
    pub session_affinity_timeout_seconds: Option<i32>,
    /// `externalTrafficPolicy: Local` (`Cluster` otherwise).
    pub external_traffic_policy_local: bool,
    /// `internalTrafficPolicy: Local` (`Cluster` otherwise).
    pub internal_traffic_policy_local: bool,
    pub health_check_node_port: Option<u16>,
    pub publish_not_ready_addresses: bool,
    pub load_balancer_source_ranges: Box<[Str]>,
    pub ip_families: Box<[Str]>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Service {
    pub metadata: Meta,
    pub spec: ServiceSpec,
    /// `status.loadBalancer.ingress[].ip`, unparsed.
    pub load_balancer_ingress_ips: Box<[Str]>,
}

fn strs(v: Option<Vec<String>>) -> Box<[Str]> {
    v.unwrap_or_default().into_iter().map(Str::from).collect()
}

fn port_u16(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

impl Service {
    /// Applies the Kubernetes defaults and checks of `object::default_service`
    /// and keeps what consumers read.
    pub fn from_k8s(mut svc: core::Service) -> Result<Service, String> {
        default_service(&mut svc)?;
        let spec = svc.spec.unwrap_or_default();
        let type_ = ServiceType::parse(spec.type_.as_deref().unwrap_or("ClusterIP"))
            .ok_or_else(|| format!("spec.type {:?} is not supported", spec.type_))?;
        let cluster_ips = match spec.cluster_ips.filter(|ips| !ips.is_empty()) {
            Some(ips) => strs(Some(ips)),
            None => strs(spec.cluster_ip.map(|ip| vec![ip])),
        };
        let mut ports = Vec::new();
        for p in spec.ports.unwrap_or_default() {
            let protocol = Protocol::parse(p.protocol.as_deref())
                .ok_or_else(|| format!("port protocol {:?} is not supported", p.protocol))?;
            let port = port_u16(p.port).ok_or_else(|| format!("port {} out of range", p.port))?;
            let target_port = match p.target_port {
                Some(IntOrString::Int(t)) => TargetPort::Number(
                    port_u16(t).ok_or_else(|| format!("targetPort {t} out of range"))?,
                ),
                Some(IntOrString::String(s)) if !s.is_empty() => TargetPort::Name(s.into()),
                _ => TargetPort::Number(port),
            };
            ports.push(ServicePort {
                name: p.name.unwrap_or_default().into(),
                protocol,
                port,
                target_port,
                node_port: p.node_port.and_then(port_u16),
                app_protocol: p.app_protocol.map(Str::from),
            });
        }
        let load_balancer_ingress_ips = svc
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|i| i.ip.map(Str::from))
            .collect();
        Ok(Service {
            metadata: svc.metadata.into(),
            spec: ServiceSpec {
                type_,
                cluster_ips,
                external_ips: strs(spec.external_ips),
                external_name: spec
                    .external_name
                    .filter(|n| !n.is_empty() && type_ == ServiceType::ExternalName)
                    .map(Str::from),
                ports: ports.into(),
                session_affinity_client_ip: spec.session_affinity.as_deref() == Some("ClientIP"),
                session_affinity_timeout_seconds: spec
                    .session_affinity_config
                    .and_then(|c| c.client_ip)
                    .and_then(|c| c.timeout_seconds),
                external_traffic_policy_local: spec.external_traffic_policy.as_deref()
                    == Some("Local"),
                internal_traffic_policy_local: spec.internal_traffic_policy.as_deref()
                    == Some("Local"),
                health_check_node_port: spec.health_check_node_port.and_then(port_u16),
                publish_not_ready_addresses: spec.publish_not_ready_addresses == Some(true),
                load_balancer_source_ranges: strs(spec.load_balancer_source_ranges),
                ip_families: strs(spec.ip_families),
            },
            load_balancer_ingress_ips,
        })
    }

    /// True for `clusterIP: None`.
    pub fn is_headless(&self) -> bool {
        self.spec.cluster_ips.iter().any(|ip| &**ip == "None")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressType {
    IPv4,
    IPv6,
    Fqdn,
}

impl AddressType {
    /// `IPv4`, `IPv6`, `FQDN`.
    pub fn k8s(self) -> &'static str {
        match self {
            AddressType::IPv4 => "IPv4",
            AddressType::IPv6 => "IPv6",
            AddressType::Fqdn => "FQDN",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPort {
    /// Empty when unnamed.
    pub name: Str,
    pub protocol: Protocol,
    /// `None`: "all ports" in Kubernetes terms; unusable for a proxy.
    pub port: Option<u16>,
    pub app_protocol: Option<Str>,
}

/// A `targetRef` (usually the Pod behind an endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRef {
    pub kind: Str,
    pub namespace: Str,
    pub name: Str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addresses: Box<[Str]>,
    /// Conditions with the Kubernetes defaults: unset ready = true, unset
    /// serving = ready, unset terminating = false.
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub hostname: Option<Str>,
    pub node_name: Option<Str>,
    pub zone: Option<Str>,
    /// `hints.forZones[].name`.
    pub hint_zones: Box<[Str]>,
    pub target_ref: Option<TargetRef>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSlice {
    pub metadata: Meta,
    /// The `kubernetes.io/service-name` label: always present and non-empty
    /// (slices without it are left out of snapshots).
    pub service_name: Str,
    pub address_type: AddressType,
    pub endpoints: Box<[Endpoint]>,
    pub ports: Box<[EndpointPort]>,
}

impl EndpointSlice {
    /// Applies `object::default_endpoint_slice`, requires the service-name
    /// label, and keeps what consumers read.
    pub fn from_k8s(mut eps: discovery::EndpointSlice) -> Result<EndpointSlice, String> {
        default_endpoint_slice(&mut eps)?;
        let service_name: Str = eps
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("it has no {SERVICE_NAME_LABEL} label"))?
            .as_str()
            .into();
        let address_type = match eps.address_type.as_str() {
            "IPv4" => AddressType::IPv4,
            "IPv6" => AddressType::IPv6,
            "FQDN" => AddressType::Fqdn,
            other => return Err(format!("addressType {other:?} is not supported")),
        };
        let mut ports = Vec::new();
        for p in eps.ports.unwrap_or_default() {
            let protocol = Protocol::parse(p.protocol.as_deref())
                .ok_or_else(|| format!("port protocol {:?} is not supported", p.protocol))?;
            ports.push(EndpointPort {
                name: p.name.unwrap_or_default().into(),
                protocol,
                port: p.port.and_then(port_u16),
                app_protocol: p.app_protocol.map(Str::from),
            });
        }
        let endpoints = eps
            .endpoints
            .into_iter()
            .map(|e| {
                let c = e.conditions.unwrap_or_default();
                let ready = c.ready.unwrap_or(true);
                Endpoint {
                    addresses: e.addresses.into_iter().map(Str::from).collect(),
                    ready,
                    serving: c.serving.unwrap_or(ready),
                    terminating: c.terminating.unwrap_or(false),
                    hostname: e.hostname.map(Str::from),
                    node_name: e.node_name.map(Str::from),
                    zone: e.zone.map(Str::from),
                    hint_zones: e
                        .hints
                        .and_then(|h| h.for_zones)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|z| Str::from(z.name))
                        .collect(),
                    target_ref: e.target_ref.map(|r| TargetRef {
                        kind: r.kind.unwrap_or_default().into(),
                        namespace: r.namespace.unwrap_or_default().into(),
                        name: r.name.unwrap_or_default().into(),
                    }),
                }
            })
            .collect();
        Ok(EndpointSlice {
            metadata: eps.metadata.into(),
            service_name,
            address_type,
            endpoints,
            ports: ports.into(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pod {
    pub metadata: Meta,
    /// `status.podIPs`, or `[status.podIP]` when only that is set. Unparsed.
    pub pod_ips: Box<[Str]>,
    pub node_name: Option<Str>,
    pub host_network: bool,
    pub hostname: Option<Str>,
    pub subdomain: Option<Str>,
    /// `status.phase` (`Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`).
    pub phase: Option<Str>,
}

impl Pod {
    pub fn from_k8s(pod: core::Pod) -> Pod {
        let spec = pod.spec.unwrap_or_default();
        let status = pod.status.unwrap_or_default();
        let pod_ips = match status.pod_ips.filter(|v| !v.is_empty()) {
            Some(ips) => ips.into_iter().map(|i| Str::from(i.ip)).collect(),
            None => strs(status.pod_ip.map(|ip| vec![ip])),
        };
        Pod {
            metadata: pod.metadata.into(),
            pod_ips,
            node_name: spec.node_name.map(Str::from),
            host_network: spec.host_network == Some(true),
            hostname: spec.hostname.map(Str::from),
            subdomain: spec.subdomain.map(Str::from),
            phase: status.phase.map(Str::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn service_defaults_and_fields() {
        let svc: core::Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "labels": {"b": "2", "a": "1"},
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "x": "y"}},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.5",
                     "ports": [{"port": 80, "nodePort": 30080}, {"name": "m", "port": 9, "protocol": "UDP", "targetPort": "metrics"}],
                     "sessionAffinity": "ClientIP", "externalTrafficPolicy": "Local", "healthCheckNodePort": 32000},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}, {"hostname": "lb.example"}]}}
        }))
        .unwrap();
        let s = Service::from_k8s(svc).unwrap();
        assert_eq!(&*s.metadata.namespace, "default");
        assert_eq!(s.metadata.labels.get("a"), Some("1"));
        assert_eq!(s.metadata.labels.get("b"), Some("2"));
        assert_eq!(s.metadata.labels.get("c"), None);
        assert_eq!(s.metadata.annotations.len(), 1, "last-applied dropped");
        assert_eq!(s.spec.type_, ServiceType::NodePort);
        assert_eq!(&*s.spec.cluster_ips, &["10.96.0.5".into()]);
        assert_eq!(s.spec.ports[0].protocol, Protocol::Tcp);
        assert_eq!(s.spec.ports[0].target_port, TargetPort::Number(80));
        assert_eq!(s.spec.ports[0].node_port, Some(30080));
        assert_eq!(
            s.spec.ports[1].target_port,
            TargetPort::Name("metrics".into())
        );
        assert!(s.spec.session_affinity_client_ip);
        assert!(s.spec.external_traffic_policy_local);
        assert_eq!(s.spec.health_check_node_port, Some(32000));
        assert_eq!(&*s.load_balancer_ingress_ips, &["192.0.2.1".into()]);
        assert!(!s.is_headless());
    }

    #[test]
    fn service_rejects_what_decode_rejects() {
        let svc: core::Service = serde_json::from_value(json!({
            "metadata": {"name": "bad"},
            "spec": {"ports": [{"port": 80, "protocol": "ICMP"}]}
        }))
        .unwrap();
        assert!(Service::from_k8s(svc).is_err());
    }

    #[test]
    fn endpoint_slice_conditions_default_like_kubernetes() {
        let eps: discovery::EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "ns", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "hostname": "web-0", "nodeName": "n1"},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false, "terminating": true}}
            ]
        }))
        .unwrap();
        let s = EndpointSlice::from_k8s(eps).unwrap();
        assert_eq!(&*s.service_name, "web");
        assert_eq!(s.address_type, AddressType::IPv4);
        assert_eq!(s.ports[0].protocol, Protocol::Tcp);
        assert_eq!(s.ports[0].port, Some(8080));
        let (a, b) = (&s.endpoints[0], &s.endpoints[1]);
        assert!(a.ready && a.serving && !a.terminating);
        assert_eq!(a.hostname.as_deref(), Some("web-0"));
        assert!(!b.ready && !b.serving && b.terminating);
    }

    #[test]
    fn endpoint_slice_without_service_label_is_refused() {
        let eps: discovery::EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "orphan"}, "addressType": "IPv4", "endpoints": []
        }))
        .unwrap();
        assert!(EndpointSlice::from_k8s(eps).is_err());
    }

    #[test]
    fn pod_ips_fall_back_to_pod_ip() {
        let pod: core::Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [], "nodeName": "n1"},
            "status": {"podIP": "10.244.1.5", "phase": "Running"}
        }))
        .unwrap();
        let p = Pod::from_k8s(pod);
        assert_eq!(&*p.pod_ips, &["10.244.1.5".into()]);
        assert_eq!(p.node_name.as_deref(), Some("n1"));
        assert_eq!(p.phase.as_deref(), Some("Running"));
    }
}
