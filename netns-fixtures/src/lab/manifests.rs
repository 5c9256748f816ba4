//! The objects and configs of the lab cluster, rendered as a user would write
//! them (Kubernetes YAML for the store, a CNI conflist per node).

use std::path::Path;

use serde_json::{json, Value};

use super::record::PodRecord;
use super::{Backend, CLUSTER_CIDR, DNS_SERVICE_IP, SERVICE_CIDR, WEB_NODE_PORT, WEB_SERVICE_IP};

pub fn cluster_config(backend: Backend) -> String {
    format!(
        "apiVersion: podnet.dev/v1
kind: ClusterConfig
metadata:
  name: default
spec:
  clusterCIDRs: [\"{CLUSTER_CIDR}\"]
  serviceCIDRs: [\"{SERVICE_CIDR}\"]
  subnetLen: 24
  backend: {}
  vni: 1
  clusterDomain: cluster.local
---
apiVersion: v1
kind: Namespace
metadata:
  name: default
",
        backend.as_str()
    )
}

/// The node's `/etc/cni/net.d/10-podnet.conflist`: the meta plugin of the
/// backend (it reads the agent's lease file and sets up the bridge), then the
/// reference portmap plugin as on a real node.
pub fn conflist(backend: Backend, lease_file: &Path, node_dir: &Path) -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": "podnet",
        "plugins": [{
            "type": backend.plugin(),
            "leaseFile": lease_file.display().to_string(),
            "dataDir": node_dir.join("ipam").display().to_string(),
            "hairpinMode": true,
        }]
    })
}

pub fn pod(p: &PodRecord) -> String {
    let app = if p.name.starts_with("web-") {
        "web"
    } else {
        "kube-dns"
    };
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  labels:
    app: {app}
spec:
  nodeName: {node}
  hostname: {name}
  subdomain: web-headless
  containers:
  - name: main
    image: busybox
status:
  phase: Running
  podIP: {ip}
  podIPs:
  - ip: {ip}
",
        name = p.name,
        ns = p.namespace,
        node = p.node,
        ip = p.ip,
    )
}

fn endpoints(pods: &[PodRecord], with_hostnames: bool) -> String {
    let mut s = String::new();
    for p in pods {
        s.push_str(&format!(
            "- addresses: [\"{ip}\"]
  conditions:
    ready: true
    serving: true
    terminating: false
  nodeName: {node}
{host}  targetRef:
    kind: Pod
    namespace: {ns}
    name: {name}
",
            ip = p.ip,
            node = p.node,
            ns = p.namespace,
            name = p.name,
            host = if with_hostnames {
                format!("  hostname: {}\n", p.name)
            } else {
                String::new()
            },
        ));
    }
    s
}

/// `web` (ClusterIP + NodePort), `web-headless` (StatefulSet-style hostnames),
/// `kube-dns` (the DNS pod), each with its EndpointSlice.
pub fn services(web: &[PodRecord], dns: &PodRecord) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  type: NodePort
  clusterIP: {WEB_SERVICE_IP}
  clusterIPs: [\"{WEB_SERVICE_IP}\"]
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: 80
    protocol: TCP
    nodePort: {WEB_NODE_PORT}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-lab
  namespace: default
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
- name: http
  port: 80
  protocol: TCP
endpoints:
{web_eps}---
apiVersion: v1
kind: Service
metadata:
  name: web-headless
  namespace: default
spec:
  clusterIP: None
  selector:
    app: web
  ports:
  - name: http
    port: 80
    protocol: TCP
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-headless-lab
  namespace: default
  labels:
    kubernetes.io/service-name: web-headless
addressType: IPv4
ports:
- name: http
  port: 80
  protocol: TCP
endpoints:
{headless_eps}---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: default
spec:
  clusterIP: {DNS_SERVICE_IP}
  clusterIPs: [\"{DNS_SERVICE_IP}\"]
  ports:
  - name: dns
    port: 53
    protocol: UDP
  - name: dns-tcp
    port: 53
    protocol: TCP
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-lab
  namespace: default
  labels:
    kubernetes.io/service-name: kube-dns
addressType: IPv4
ports:
- name: dns
  port: 53
  protocol: UDP
- name: dns-tcp
  port: 53
  protocol: TCP
endpoints:
{dns_eps}",
        web_eps = endpoints(web, false),
        headless_eps = endpoints(web, true),
        dns_eps = endpoints(std::slice::from_ref(dns), false),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_rec(name: &str, node: &str, ip: &str) -> PodRecord {
        PodRecord {
            name: name.into(),
            namespace: "default".into(),
            node: node.into(),
            netns: format!("pnlab-pod-{name}"),
            container_id: format!("lab{name}"),
            ip: ip.into(),
        }
    }

    #[test]
    fn services_yaml_is_six_documents_with_every_endpoint() {
        let web = vec![
            pod_rec("web-0", "node1", "10.244.1.2"),
            pod_rec("web-1", "node2", "10.244.2.2"),
        ];
        let dns = pod_rec("podnet-dns", "node1", "10.244.1.3");
        let y = services(&web, &dns);
        let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&y)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 6);
        let headless = &docs[3]["endpoints"];
        assert_eq!(headless[1]["hostname"].as_str(), Some("web-1"));
        assert_eq!(headless[1]["addresses"][0].as_str(), Some("10.244.2.2"));
        assert!(docs[1]["endpoints"][0].get("hostname").is_none());
        assert_eq!(
            docs[5]["endpoints"][0]["addresses"][0].as_str(),
            Some("10.244.1.3")
        );
        assert_eq!(docs[4]["spec"]["clusterIP"].as_str(), Some(DNS_SERVICE_IP));
    }

    #[test]
    fn pod_and_cluster_config_parse() {
        let p: serde_yaml::Value =
            serde_yaml::from_str(&pod(&pod_rec("web-3", "node2", "10.244.2.9"))).unwrap();
        assert_eq!(p["status"]["podIP"].as_str(), Some("10.244.2.9"));
        assert_eq!(p["spec"]["nodeName"].as_str(), Some("node2"));
        let docs = serde_yaml::Deserializer::from_str(&cluster_config(Backend::Vxlan)).count();
        assert_eq!(docs, 2);
        let c = conflist(
            Backend::HostGw,
            Path::new("/x/subnet.json"),
            Path::new("/x"),
        );
        assert_eq!(c["plugins"][0]["type"], "podnet-host-gw");
    }
}
