//! Typed objects: the Kubernetes shapes (from `k8s-openapi`) plus podnet's
//! own `ClusterConfig` and `SubnetLease`; decoding a stored JSON value into
//! its typed form with the defaults and checks consumers rely on.

use ipnetwork::IpNetwork;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

use crate::store::Kind;

pub use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
pub use k8s_openapi::api::discovery::v1::EndpointSlice;

/// apiVersion of podnet's own kinds.
pub const PODNET_API_VERSION: &str = "podnet.dev/v1";
/// Label that ties an EndpointSlice to its Service (as in Kubernetes).
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Node annotations written by podnet-node.
pub const ANNOTATION_BACKEND: &str = "podnet.dev/backend";
pub const ANNOTATION_VTEP_MAC: &str = "podnet.dev/vtep-mac";
pub const ANNOTATION_PUBLIC_IP: &str = "podnet.dev/public-ip";
pub const ANNOTATION_PUBLIC_IP6: &str = "podnet.dev/public-ip6";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Backend {
    #[serde(rename = "host-gw")]
    #[default]
    HostGw,
    #[serde(rename = "vxlan")]
    Vxlan,
}

/// Cluster-wide network settings (one object, conventionally named `default`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfig {
    #[serde(default = "podnet_api_version")]
    pub api_version: String,
    #[serde(default = "cluster_config_kind")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: ClusterConfigSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterConfigSpec {
    /// Pod address space, at most one IPv4 and one IPv6 network.
    #[serde(rename = "clusterCIDRs")]
    pub cluster_cidrs: Vec<IpNetwork>,
    /// Service ClusterIP ranges, at most one per family.
    #[serde(rename = "serviceCIDRs", default)]
    pub service_cidrs: Vec<IpNetwork>,
    /// Prefix length of each node's IPv4 pod subnet (flannel's SubnetLen).
    #[serde(default = "default_subnet_len")]
    pub subnet_len: u8,
    /// Prefix length of each node's IPv6 pod subnet.
    #[serde(default = "default_subnet_len_v6", alias = "subnetLen6")]
    pub subnet_len_v6: u8,
    #[serde(default)]
    pub backend: Backend,
    #[serde(default = "default_vni")]
    pub vni: u32,
    #[serde(default = "default_vxlan_port")]
    pub vxlan_port: u16,
    /// Pod MTU; when absent the node agent derives it from the underlay
    /// (underlay MTU, minus 50 for VXLAN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default = "default_cluster_domain")]
    pub cluster_domain: String,
}

/// A node's claim on one pod subnet. Stored under `leases/<a.b.c.d-len>`,
/// bound to a store lease so a vanished node's claim can expire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubnetLease {
    #[serde(default = "podnet_api_version")]
    pub api_version: String,
    #[serde(default = "subnet_lease_kind")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: SubnetLeaseSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubnetLeaseSpec {
    pub node: String,
    pub subnet: IpNetwork,
}

/// The store name of a lease for `subnet`: `10.244.1.0-24`, `fd00-10-244-1---64`
/// (`:` is not allowed in file names on every filesystem, so it becomes `-`).
pub fn subnet_lease_name(subnet: &IpNetwork) -> String {
    format!("{}-{}", subnet.network(), subnet.prefix()).replace(':', "-")
}

fn podnet_api_version() -> String {
    PODNET_API_VERSION.to_string()
}
fn cluster_config_kind() -> String {
    "ClusterConfig".to_string()
}
fn subnet_lease_kind() -> String {
    "SubnetLease".to_string()
}
fn default_subnet_len() -> u8 {
    24
}
fn default_subnet_len_v6() -> u8 {
    64
}
fn default_vni() -> u32 {
    1
}
fn default_vxlan_port() -> u16 {
    4789
}
fn default_cluster_domain() -> String {
    "cluster.local".to_string()
}

/// One decoded object of any stored kind.
// Unboxed on purpose: a decoded object is moved once, into an `Arc`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum TypedObject {
    Node(Node),
    Service(Service),
    EndpointSlice(EndpointSlice),
    Pod(Pod),
    Namespace(Namespace),
    ClusterConfig(ClusterConfig),
    SubnetLease(SubnetLease),
}

impl TypedObject {
    pub fn kind(&self) -> Kind {
        match self {
            TypedObject::Node(_) => Kind::Node,
            TypedObject::Service(_) => Kind::Service,
            TypedObject::EndpointSlice(_) => Kind::EndpointSlice,
            TypedObject::Pod(_) => Kind::Pod,
            TypedObject::Namespace(_) => Kind::Namespace,
            TypedObject::ClusterConfig(_) => Kind::ClusterConfig,
            TypedObject::SubnetLease(_) => Kind::SubnetLease,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            TypedObject::Node(o) => &o.metadata,
            TypedObject::Service(o) => &o.metadata,
            TypedObject::EndpointSlice(o) => &o.metadata,
            TypedObject::Pod(o) => &o.metadata,
            TypedObject::Namespace(o) => &o.metadata,
            TypedObject::ClusterConfig(o) => &o.metadata,
            TypedObject::SubnetLease(o) => &o.metadata,
        }
    }
}

/// Why a stored value did not become a typed object.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The value cannot be used (wrong shape, missing name, bad field).
    #[error("{kind} {name:?} is invalid: {reason}")]
    Invalid {
        kind: Kind,
        name: String,
        reason: String,
    },
    /// The value is well-formed but consumers must not use it (e.g. an
    /// EndpointSlice that belongs to no Service); the informer leaves it out.
    #[error("{kind} {name:?} is ignored: {reason}")]
    Ignored {
        kind: Kind,
        name: String,
        reason: String,
    },
}

/// The `apiVersion` a kind is stored with.
pub fn api_version(kind: Kind) -> &'static str {
    match kind {
        Kind::Node | Kind::Service | Kind::Pod | Kind::Namespace => "v1",
        Kind::EndpointSlice => "discovery.k8s.io/v1",
        Kind::ClusterConfig | Kind::SubnetLease => PODNET_API_VERSION,
    }
}

/// Whether `name` can be an object name: it becomes a file name in the dir
/// store and a key segment in etcd, so it must be a single path segment.
pub fn check_object_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name is empty".to_string());
    }
    if name.len() > 253 {
        return Err(format!(
            "name is {} bytes long, at most 253 allowed",
            name.len()
        ));
    }
    if name.starts_with('.') {
        return Err(format!("name {name:?} starts with '.'"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == '\\' || c.is_whitespace() || c.is_control())
    {
        return Err(format!("name {name:?} contains {c:?}"));
    }
    Ok(())
}

/// Decode a stored value of `kind` into its typed form, applying the
/// defaults Kubernetes would have applied on write (Service port protocol
/// TCP, targetPort = port, type ClusterIP; endpoint conditions per the
/// EndpointSlice API: ready unset means ready, serving unset means ready,
/// terminating unset means false) so that consumers never re-implement them.
pub fn decode(kind: Kind, value: &serde_json::Value) -> Result<TypedObject, DecodeError> {
    decode_from(kind, &TreeSource(value))
}

/// `decode` of JSON text, read straight into the typed form without
/// building a `serde_json::Value` first.
pub fn decode_json(kind: Kind, json: &str) -> Result<TypedObject, DecodeError> {
    decode_from(kind, &TextSource(json))
}

/// What `decode_from` reads an object from.
trait Source {
    fn de<T: serde::de::DeserializeOwned>(&self) -> Result<T, String>;
    /// `metadata.name` ("" when absent) and `apiVersion` as given.
    fn header(&self) -> (String, Option<String>);
}

struct TreeSource<'a>(&'a serde_json::Value);
struct TextSource<'a>(&'a str);

fn tree_header(v: &serde_json::Value) -> (String, Option<String>) {
    let name = v.pointer("/metadata/name").and_then(|n| n.as_str());
    let api = v.get("apiVersion").and_then(|v| v.as_str());
    (name.unwrap_or("").to_string(), api.map(str::to_string))
}

impl Source for TreeSource<'_> {
    fn de<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        T::deserialize(self.0).map_err(|e| e.to_string())
    }
    fn header(&self) -> (String, Option<String>) {
        tree_header(self.0)
    }
}

impl Source for TextSource<'_> {
    fn de<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_str(self.0).map_err(|e| e.to_string())
    }
    fn header(&self) -> (String, Option<String>) {
        // Only asked for when the typed read failed: a tree costs nothing then.
        serde_json::from_str(self.0)
            .map(|v| tree_header(&v))
            .unwrap_or_default()
    }
}

/// The name and apiVersion checks, which come before any other complaint.
fn check_header(kind: Kind, name: &str, api: Option<&str>) -> Result<(), DecodeError> {
    let invalid = |reason: String| DecodeError::Invalid {
        kind,
        name: name.to_string(),
        reason,
    };
    check_object_name(name).map_err(|e| invalid(format!("metadata.name: {e}")))?;
    match api {
        Some(v) if v != api_version(kind) => Err(invalid(format!(
            "apiVersion {v:?} is not supported, expected {:?}",
            api_version(kind)
        ))),
        _ => Ok(()),
    }
}

fn decode_from(kind: Kind, src: &impl Source) -> Result<TypedObject, DecodeError> {
    let read = match kind {
        Kind::Node => src.de().map(TypedObject::Node),
        Kind::Pod => src.de().map(TypedObject::Pod),
        Kind::Namespace => src.de().map(TypedObject::Namespace),
        Kind::Service => src.de().map(TypedObject::Service),
        Kind::EndpointSlice => src.de().map(TypedObject::EndpointSlice),
        Kind::ClusterConfig => src.de().map(TypedObject::ClusterConfig),
        Kind::SubnetLease => src.de().map(TypedObject::SubnetLease),
    };
    let mut obj = match read {
        Ok(o) => o,
        Err(reason) => {
            // A wrong apiVersion or a missing name explains a failed read
            // better than the decoder's message does.
            let (name, api) = src.header();
            check_header(kind, &name, api.as_deref())?;
            return Err(DecodeError::Invalid { kind, name, reason });
        }
    };
    let name = obj.metadata().name.clone().unwrap_or_default();
    // k8s-openapi's types check their apiVersion while reading; podnet's
    // default theirs.
    let api = match &obj {
        TypedObject::ClusterConfig(o) => Some(o.api_version.as_str()),
        TypedObject::SubnetLease(o) => Some(o.api_version.as_str()),
        _ => None,
    };
    check_header(kind, &name, api)?;
    let invalid = |reason: String| DecodeError::Invalid {
        kind,
        name: name.clone(),
        reason,
    };
    match &mut obj {
        TypedObject::Service(svc) => default_service(svc).map_err(invalid)?,
        TypedObject::EndpointSlice(eps) => {
            default_endpoint_slice(eps).map_err(invalid)?;
            let has_service = eps
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .is_some_and(|s| !s.is_empty());
            if !has_service {
                return Err(DecodeError::Ignored {
                    kind,
                    name,
                    reason: format!(
                        "it has no {SERVICE_NAME_LABEL} label, so it belongs to no Service"
                    ),
                });
            }
        }
        TypedObject::ClusterConfig(cc) => cc.validate().map_err(invalid)?,
        _ => {}
    }
    Ok(obj)
}

const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];

fn check_protocol(p: &str) -> Result<(), String> {
    if PROTOCOLS.contains(&p) {
        Ok(())
    } else {
        Err(format!("protocol {p:?} is not one of TCP, UDP, SCTP"))
    }
}

fn check_port(what: &str, p: i32) -> Result<(), String> {
    if (1..=65535).contains(&p) {
        Ok(())
    } else {
        Err(format!("{what} {p} is outside 1-65535"))
    }
}

/// Service defaults and the checks the proxy and DNS rely on.
pub fn default_service(svc: &mut Service) -> Result<(), String> {
    let spec = svc.spec.get_or_insert_with(Default::default);
    let ty = spec.type_.get_or_insert_with(|| "ClusterIP".to_string());
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&ty.as_str()) {
        return Err(format!(
            "spec.type {ty:?} is not ClusterIP, NodePort, LoadBalancer or ExternalName"
        ));
    }
    if ty == "ExternalName" && spec.external_name.as_deref().unwrap_or("").is_empty() {
        return Err("spec.type is ExternalName but spec.externalName is empty".to_string());
    }
    spec.session_affinity
        .get_or_insert_with(|| "None".to_string());
    for (i, port) in spec.ports.iter_mut().flatten().enumerate() {
        let proto = port.protocol.get_or_insert_with(|| "TCP".to_string());
        check_protocol(proto).map_err(|e| format!("spec.ports[{i}]: {e}"))?;
        check_port(&format!("spec.ports[{i}].port"), port.port)?;
        if let Some(np) = port.node_port {
            check_port(&format!("spec.ports[{i}].nodePort"), np)?;
        }
        match &port.target_port {
            None => port.target_port = Some(IntOrString::Int(port.port)),
            Some(IntOrString::Int(t)) => check_port(&format!("spec.ports[{i}].targetPort"), *t)?,
            Some(IntOrString::String(s)) if s.is_empty() => {
                port.target_port = Some(IntOrString::Int(port.port))
            }
            Some(IntOrString::String(_)) => {}
        }
    }
    Ok(())
}

/// EndpointSlice defaults (port protocol TCP, endpoint conditions) and checks.
pub fn default_endpoint_slice(eps: &mut EndpointSlice) -> Result<(), String> {
    if !["IPv4", "IPv6", "FQDN"].contains(&eps.address_type.as_str()) {
        return Err(format!(
            "addressType {:?} is not IPv4, IPv6 or FQDN",
            eps.address_type
        ));
    }
    for (i, port) in eps.ports.iter_mut().flatten().enumerate() {
        let proto = port.protocol.get_or_insert_with(|| "TCP".to_string());
        check_protocol(proto).map_err(|e| format!("ports[{i}]: {e}"))?;
        if let Some(p) = port.port {
            check_port(&format!("ports[{i}].port"), p)?;
        }
    }
    for ep in eps.endpoints.iter_mut() {
        let c = ep.conditions.get_or_insert_with(Default::default);
        let ready = *c.ready.get_or_insert(true);
        c.serving.get_or_insert(ready);
        c.terminating.get_or_insert(false);
    }
    Ok(())
}

fn overlaps(a: &IpNetwork, b: &IpNetwork) -> bool {
    a.is_ipv4() == b.is_ipv4() && (a.contains(b.network()) || b.contains(a.network()))
}

impl ClusterConfig {
    /// The IPv4 and IPv6 pod networks.
    pub fn cluster_cidr_v4(&self) -> Option<IpNetwork> {
        self.spec
            .cluster_cidrs
            .iter()
            .copied()
            .find(|n| n.is_ipv4())
    }
    pub fn cluster_cidr_v6(&self) -> Option<IpNetwork> {
        self.spec
            .cluster_cidrs
            .iter()
            .copied()
            .find(|n| n.is_ipv6())
    }
    pub fn service_cidr_v4(&self) -> Option<IpNetwork> {
        self.spec
            .service_cidrs
            .iter()
            .copied()
            .find(|n| n.is_ipv4())
    }
    pub fn service_cidr_v6(&self) -> Option<IpNetwork> {
        self.spec
            .service_cidrs
            .iter()
            .copied()
            .find(|n| n.is_ipv6())
    }
    /// The node subnet prefix length for the family of `net`.
    pub fn subnet_len_for(&self, net: &IpNetwork) -> u8 {
        if net.is_ipv4() {
            self.spec.subnet_len
        } else {
            self.spec.subnet_len_v6
        }
    }

    /// Checks that subnet allocation, the proxy and DNS rely on.
    pub fn validate(&self) -> Result<(), String> {
        let s = &self.spec;
        if s.cluster_cidrs.is_empty() {
            return Err("spec.clusterCIDRs is empty".to_string());
        }
        for (field, nets) in [
            ("spec.clusterCIDRs", &s.cluster_cidrs),
            ("spec.serviceCIDRs", &s.service_cidrs),
        ] {
            let v4 = nets.iter().filter(|n| n.is_ipv4()).count();
            let v6 = nets.len() - v4;
            if v4 > 1 || v6 > 1 {
                return Err(format!(
                    "{field} has {v4} IPv4 and {v6} IPv6 networks, at most one per family allowed"
                ));
            }
            for n in nets.iter() {
                if n.ip() != n.network() {
                    return Err(format!(
                        "{field}: {n} has host bits set, did you mean {}/{}?",
                        n.network(),
                        n.prefix()
                    ));
                }
            }
        }
        if let Some(v4) = self.cluster_cidr_v4() {
            if s.subnet_len < v4.prefix() || s.subnet_len > 30 {
                return Err(format!(
                    "spec.subnetLen {} must be between the cluster CIDR prefix /{} and /30",
                    s.subnet_len,
                    v4.prefix()
                ));
            }
        }
        if let Some(v6) = self.cluster_cidr_v6() {
            if s.subnet_len_v6 < v6.prefix() || s.subnet_len_v6 > 126 {
                return Err(format!(
                    "spec.subnetLenV6 {} must be between the cluster CIDR prefix /{} and /126",
                    s.subnet_len_v6,
                    v6.prefix()
                ));
            }
        }
        for c in &s.cluster_cidrs {
            for v in &s.service_cidrs {
                if overlaps(c, v) {
                    return Err(format!("cluster CIDR {c} overlaps service CIDR {v}"));
                }
            }
        }
        if s.vni == 0 || s.vni > 0xFF_FFFF {
            return Err(format!("spec.vni {} is outside 1-16777215", s.vni));
        }
        if let Some(mtu) = s.mtu {
            let min = if self.cluster_cidr_v6().is_some() {
                1280
            } else {
                576
            };
            if mtu < min || mtu > 65535 {
                return Err(format!("spec.mtu {mtu} is outside {min}-65535"));
            }
        }
        if s.cluster_domain.is_empty() || s.cluster_domain.starts_with('.') {
            return Err(format!(
                "spec.clusterDomain {:?} is not a domain",
                s.cluster_domain
            ));
        }
        Ok(())
    }
}
