//! Typed objects: the Kubernetes shapes (from `k8s-openapi`) plus podnet's
//! own `ClusterConfig` and `SubnetLease`.

use ipnetwork::IpNetwork;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

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
    #[serde(default = "default_subnet_len_v6")]
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
