//! The agent's pure decisions: which remote nodes to program (from Node
//! objects), the local Node object to publish, the pod MTU and the lease file.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeSpec, NodeStatus};
use podnet_state::object::{Backend, ClusterConfig, ANNOTATION_BACKEND, ANNOTATION_VTEP_MAC};

use crate::lease::{LeaseBackend, NodeLease};
use crate::overlay::{self, Mac, RemoteNode};

/// What the agent knows about its own node once it holds its subnets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    pub name: String,
    /// Underlay addresses (first IPv4, then IPv6 if any).
    pub addresses: Vec<IpAddr>,
    pub subnets: Vec<IpNetwork>,
    pub backend: Backend,
    /// VXLAN only.
    pub vtep_mac: Option<Mac>,
}

impl LocalNode {
    /// The address the VXLAN tunnel uses as its source: the IPv4 one when
    /// there is one (an IPv4 underlay carries IPv6 pods too).
    pub fn tunnel_address(&self) -> Option<IpAddr> {
        self.addresses
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| self.addresses.first())
            .copied()
    }
}

pub fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::HostGw => "host-gw",
        Backend::Vxlan => "vxlan",
    }
}

/// The Node object this agent publishes: name, InternalIP addresses,
/// `spec.podCIDRs` (and `podCIDR`, the first one, as Kubernetes keeps both),
/// the backend and VTEP MAC annotations. `existing` keeps what others put on
/// the object (labels, other annotations, addresses of other types).
pub fn node_object(local: &LocalNode, existing: Option<&Node>) -> Node {
    let mut node = existing.cloned().unwrap_or_default();
    node.metadata.name = Some(local.name.clone());
    let ann = node.metadata.annotations.get_or_insert_with(BTreeMap::new);
    ann.insert(
        ANNOTATION_BACKEND.into(),
        backend_name(local.backend).into(),
    );
    match local.vtep_mac {
        Some(m) => {
            ann.insert(ANNOTATION_VTEP_MAC.into(), m.to_string());
        }
        None => {
            ann.remove(ANNOTATION_VTEP_MAC);
        }
    }
    let cidrs: Vec<String> = local.subnets.iter().map(|s| s.to_string()).collect();
    let spec = node.spec.get_or_insert_with(NodeSpec::default);
    spec.pod_cidr = cidrs.first().cloned();
    spec.pod_cidrs = Some(cidrs);
    let status = node.status.get_or_insert_with(NodeStatus::default);
    let mut addrs: Vec<NodeAddress> = status
        .addresses
        .take()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a.type_ != "InternalIP")
        .collect();
    for a in &local.addresses {
        addrs.push(NodeAddress {
            type_: "InternalIP".into(),
            address: a.to_string(),
        });
    }
    status.addresses = Some(addrs);
    node
}

/// Whether publishing `want` over `have` would change anything podnet reads.
pub fn node_needs_update(have: Option<&Node>, want: &Node) -> bool {
    have != Some(want)
}

/// The data-path view of another node's object. Unparsable fields are
/// dropped with the reason, so one bad object never stops the others.
pub fn remote_node(node: &Node) -> (Option<RemoteNode>, Vec<String>) {
    let mut problems = Vec::new();
    let Some(name) = node.metadata.name.clone() else {
        return (None, vec!["node object without a name".into()]);
    };
    let mut subnets = Vec::new();
    let spec = node.spec.as_ref();
    let listed: Vec<&String> = match spec.and_then(|s| s.pod_cidrs.as_ref()) {
        Some(l) if !l.is_empty() => l.iter().collect(),
        _ => spec.and_then(|s| s.pod_cidr.as_ref()).into_iter().collect(),
    };
    for c in listed {
        match c.parse::<IpNetwork>() {
            Ok(n) => subnets.push(overlay::normalize(n)),
            Err(e) => problems.push(format!("{name}: podCIDR {c:?}: {e}")),
        }
    }
    let mut addresses = Vec::new();
    for a in node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
    {
        if a.type_ != "InternalIP" {
            continue;
        }
        match a.address.parse::<IpAddr>() {
            Ok(ip) => addresses.push(ip),
            Err(e) => problems.push(format!("{name}: InternalIP {:?}: {e}", a.address)),
        }
    }
    let vtep_mac = match node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_VTEP_MAC))
    {
        Some(m) => match m.parse::<Mac>() {
            Ok(m) => Some(m),
            Err(e) => {
                problems.push(format!("{name}: {e}"));
                None
            }
        },
        None => None,
    };
    (
        Some(RemoteNode {
            name,
            addresses,
            subnets,
            vtep_mac,
        }),
        problems,
    )
}

/// Every node except `local_name`, as data-path input, plus problems to log.
pub fn remote_nodes<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    local_name: &str,
) -> (Vec<RemoteNode>, Vec<String>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for n in nodes {
        if n.metadata.name.as_deref() == Some(local_name) {
            continue;
        }
        let (r, p) = remote_node(n);
        problems.extend(p);
        out.extend(r);
    }
    (out, problems)
}

/// Pod (and VXLAN device) MTU: the configured one, else the underlay's minus
/// the encapsulation overhead for VXLAN.
pub fn pod_mtu(cfg: &ClusterConfig, underlay_mtu: u32, tunnel_address: IpAddr) -> u32 {
    if let Some(m) = cfg.spec.mtu {
        return m;
    }
    match cfg.spec.backend {
        Backend::HostGw => underlay_mtu,
        Backend::Vxlan => overlay::vxlan_mtu(underlay_mtu, tunnel_address),
    }
}

/// Checks that need both the config and this node: the cluster networks must
/// not contain the node's own underlay addresses (pods would shadow the
/// node), and VXLAN needs a 24-bit VNI.
pub fn check_node_against_config(cfg: &ClusterConfig, addresses: &[IpAddr]) -> Result<(), String> {
    for c in &cfg.spec.cluster_cidrs {
        for a in addresses {
            if c.contains(*a) {
                return Err(format!(
                    "cluster CIDR {c} contains this node's underlay address {a}"
                ));
            }
        }
    }
    for s in &cfg.spec.service_cidrs {
        for a in addresses {
            if s.contains(*a) {
                return Err(format!(
                    "service CIDR {s} contains this node's underlay address {a}"
                ));
            }
        }
    }
    Ok(())
}

/// The lease file content for the plugins.
pub fn lease(cfg: &ClusterConfig, local: &LocalNode, mtu: u32, ip_masq: bool) -> NodeLease {
    NodeLease {
        node: local.name.clone(),
        networks: cfg.spec.cluster_cidrs.clone(),
        subnets: local.subnets.clone(),
        mtu,
        backend: match cfg.spec.backend {
            Backend::HostGw => LeaseBackend::HostGw,
            Backend::Vxlan => LeaseBackend::Vxlan,
        },
        vni: (cfg.spec.backend == Backend::Vxlan).then_some(cfg.spec.vni),
        vxlan_port: (cfg.spec.backend == Backend::Vxlan).then_some(cfg.spec.vxlan_port),
        underlay: local
            .tunnel_address()
            .expect("a local node always has an underlay address"),
        ip_masq,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(spec: serde_json::Value) -> ClusterConfig {
        serde_json::from_value(serde_json::json!({ "spec": spec })).unwrap()
    }

    fn local() -> LocalNode {
        LocalNode {
            name: "n1".into(),
            addresses: vec!["10.90.0.1".parse().unwrap(), "fd90::1".parse().unwrap()],
            subnets: vec![
                "10.244.1.0/24".parse().unwrap(),
                "fd00:244:0:1::/64".parse().unwrap(),
            ],
            backend: Backend::Vxlan,
            vtep_mac: Some(Mac::derived("n1", 1)),
        }
    }

    #[test]
    fn published_node_round_trips_into_a_remote_node() {
        let l = local();
        let obj = node_object(&l, None);
        let (r, problems) = remote_node(&obj);
        assert!(problems.is_empty(), "{problems:?}");
        let r = r.unwrap();
        assert_eq!(r.name, "n1");
        assert_eq!(r.addresses, l.addresses);
        assert_eq!(r.subnets, l.subnets);
        assert_eq!(r.vtep_mac, l.vtep_mac);
        let ann = obj.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann[ANNOTATION_BACKEND], "vxlan");
        assert_eq!(
            obj.spec.as_ref().unwrap().pod_cidr.as_deref(),
            Some("10.244.1.0/24")
        );
        assert!(!node_needs_update(Some(&obj), &node_object(&l, Some(&obj))));
    }

    #[test]
    fn publishing_keeps_foreign_fields() {
        let mut existing = Node::default();
        existing.metadata.labels = Some([("zone".to_string(), "a".to_string())].into());
        existing.status = Some(NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "Hostname".into(),
                    address: "n1".into(),
                },
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: "192.0.2.9".into(),
                },
            ]),
            ..Default::default()
        });
        let obj = node_object(&local(), Some(&existing));
        assert_eq!(obj.metadata.labels, existing.metadata.labels);
        let addrs = obj.status.unwrap().addresses.unwrap();
        assert_eq!(addrs[0].type_, "Hostname");
        assert!(!addrs.iter().any(|a| a.address == "192.0.2.9"));
        assert_eq!(addrs.len(), 3);
    }

    #[test]
    fn kubectl_style_nodes_without_podnet_fields_are_understood() {
        let n: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "w1"},
            "spec": {"podCIDR": "10.244.7.0/24"},
            "status": {"addresses": [
                {"type": "InternalIP", "address": "10.90.0.7"},
                {"type": "InternalIP", "address": "bogus"}
            ]}
        }))
        .unwrap();
        let (r, problems) = remote_node(&n);
        let r = r.unwrap();
        assert_eq!(
            r.subnets,
            vec!["10.244.7.0/24".parse::<IpNetwork>().unwrap()]
        );
        assert_eq!(r.addresses, vec!["10.90.0.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(r.vtep_mac, None);
        assert_eq!(problems.len(), 1, "{problems:?}");
    }

    #[test]
    fn remote_nodes_excludes_self() {
        let a = node_object(&local(), None);
        let mut l2 = local();
        l2.name = "n2".into();
        let b = node_object(&l2, None);
        let (r, _) = remote_nodes([&a, &b], "n1");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].name, "n2");
    }

    #[test]
    fn mtu_and_lease_follow_the_backend() {
        let vx = cfg(
            serde_json::json!({"clusterCIDRs": ["10.244.0.0/16"], "backend": "vxlan", "vni": 4}),
        );
        let hg = cfg(serde_json::json!({"clusterCIDRs": ["10.244.0.0/16"]}));
        let fixed = cfg(
            serde_json::json!({"clusterCIDRs": ["10.244.0.0/16"], "backend": "vxlan", "mtu": 1400}),
        );
        let v4: IpAddr = "10.90.0.1".parse().unwrap();
        assert_eq!(pod_mtu(&vx, 1500, v4), 1450);
        assert_eq!(pod_mtu(&hg, 1500, v4), 1500);
        assert_eq!(pod_mtu(&fixed, 9000, v4), 1400);
        let l = lease(&vx, &local(), 1450, true);
        assert_eq!(l.vni, Some(4));
        assert_eq!(l.backend, LeaseBackend::Vxlan);
        assert_eq!(l.underlay, v4);
        assert_eq!(lease(&hg, &local(), 1500, false).vni, None);
    }

    #[test]
    fn underlay_inside_cluster_or_service_cidr_is_rejected() {
        let c = cfg(
            serde_json::json!({"clusterCIDRs": ["10.0.0.0/8"], "serviceCIDRs": ["192.0.2.0/24"]}),
        );
        let e = check_node_against_config(&c, &["10.90.0.1".parse().unwrap()]).unwrap_err();
        assert!(e.contains("10.0.0.0/8") && e.contains("10.90.0.1"), "{e}");
        assert!(check_node_against_config(&c, &["192.0.2.5".parse().unwrap()]).is_err());
        assert!(check_node_against_config(&c, &["172.16.0.1".parse().unwrap()]).is_ok());
    }
}
