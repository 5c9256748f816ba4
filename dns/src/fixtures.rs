//! Hand-made Kubernetes objects (as the store holds them, JSON) for tests,
//! the benchmark and the fuzz target, and the forms informer snapshots hold
//! them in (decoded and compacted as the informer does).

use podnet_state::compact::{EndpointSlice, Pod, Service};
use podnet_state::object::{self, Namespace, TypedObject, SERVICE_NAME_LABEL};
use podnet_state::Kind;
use serde_json::{json, Value};

/// A port: (name, number, protocol). An empty name is an unnamed port.
pub type Port<'a> = (&'a str, u16, &'a str);

fn ports_json(ports: &[Port<'_>]) -> Value {
    Value::Array(
        ports
            .iter()
            .map(|(n, p, proto)| {
                let mut v = json!({"port": p, "protocol": proto});
                if !n.is_empty() {
                    v["name"] = json!(n);
                }
                v
            })
            .collect(),
    )
}

pub fn service_json(ns: &str, name: &str, cluster_ips: &[&str], ports: &[Port<'_>]) -> Value {
    let first = cluster_ips.first().copied().unwrap_or("None");
    let mut spec = json!({"type": "ClusterIP", "clusterIP": first, "ports": ports_json(ports)});
    if !cluster_ips.is_empty() {
        spec["clusterIPs"] = json!(cluster_ips);
    }
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

pub fn external_json(ns: &str, name: &str, target: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"type": "ExternalName", "externalName": target}})
}

/// One endpoint of a slice.
#[derive(Debug, Clone)]
pub struct Ep {
    pub addresses: Vec<String>,
    pub hostname: Option<String>,
    pub ready: Option<bool>,
}

impl Ep {
    pub fn ready(ip: &str) -> Ep {
        Ep {
            addresses: vec![ip.to_string()],
            hostname: None,
            ready: Some(true),
        }
    }
    pub fn named(ip: &str, hostname: &str) -> Ep {
        Ep {
            hostname: Some(hostname.to_string()),
            ..Ep::ready(ip)
        }
    }
    pub fn not_ready(ip: &str) -> Ep {
        Ep {
            ready: Some(false),
            ..Ep::ready(ip)
        }
    }
}

pub fn slice_json(
    ns: &str,
    name: &str,
    svc: &str,
    family: &str,
    eps: &[Ep],
    ports: &[Port<'_>],
) -> Value {
    let endpoints: Vec<Value> = eps
        .iter()
        .map(|e| {
            let mut v = json!({"addresses": e.addresses});
            if let Some(h) = &e.hostname {
                v["hostname"] = json!(h);
            }
            if let Some(r) = e.ready {
                v["conditions"] = json!({"ready": r});
            }
            v
        })
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": name, "namespace": ns, "labels": {SERVICE_NAME_LABEL: svc}},
           "addressType": family, "endpoints": endpoints, "ports": ports_json(ports)})
}

pub fn pod_json(ns: &str, name: &str, ips: &[&str]) -> Value {
    let pod_ips: Vec<Value> = ips.iter().map(|i| json!({"ip": i})).collect();
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
           "status": {"podIP": ips.first(), "podIPs": pod_ips}})
}

pub fn namespace_json(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

/// `value` decoded as the informer decodes a stored object.
fn decoded(kind: Kind, value: Value) -> TypedObject {
    object::decode(kind, &value).expect("fixture JSON is a valid object")
}

pub fn service(ns: &str, name: &str, cluster_ips: &[&str], ports: &[Port<'_>]) -> Service {
    compact_service(service_json(ns, name, cluster_ips, ports))
}
pub fn headless(ns: &str, name: &str, ports: &[Port<'_>]) -> Service {
    compact_service(service_json(ns, name, &[], ports))
}
pub fn external(ns: &str, name: &str, target: &str) -> Service {
    compact_service(external_json(ns, name, target))
}
fn compact_service(v: Value) -> Service {
    let TypedObject::Service(s) = decoded(Kind::Service, v) else {
        unreachable!("decode(Kind::Service) gives a Service")
    };
    Service::from_k8s(s).expect("fixture service is valid")
}
pub fn slice(
    ns: &str,
    name: &str,
    svc: &str,
    family: &str,
    eps: &[Ep],
    ports: &[Port<'_>],
) -> EndpointSlice {
    let TypedObject::EndpointSlice(s) = decoded(
        Kind::EndpointSlice,
        slice_json(ns, name, svc, family, eps, ports),
    ) else {
        unreachable!("decode(Kind::EndpointSlice) gives an EndpointSlice")
    };
    EndpointSlice::from_k8s(s).expect("fixture slice is valid")
}
pub fn pod(ns: &str, name: &str, ips: &[&str]) -> Pod {
    let TypedObject::Pod(p) = decoded(Kind::Pod, pod_json(ns, name, ips)) else {
        unreachable!("decode(Kind::Pod) gives a Pod")
    };
    Pod::from_k8s(p)
}
pub fn namespace(name: &str) -> Namespace {
    let TypedObject::Namespace(n) = decoded(Kind::Namespace, namespace_json(name)) else {
        unreachable!("decode(Kind::Namespace) gives a Namespace")
    };
    n
}
