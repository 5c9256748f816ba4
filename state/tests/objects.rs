//! Parsing and decoding of real `kubectl get -o yaml` output, defaults and validation.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use podnet_state::object::{decode, decode_json, ClusterConfig, DecodeError, TypedObject};
use podnet_state::parse::{parse_objects, ParseError};
use podnet_state::{Kind, ObjectKey};

fn data(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn service(v: &serde_json::Value) -> podnet_state::object::Service {
    match decode(Kind::Service, v).unwrap() {
        TypedObject::Service(s) => s,
        o => panic!("not a service: {o:?}"),
    }
}

#[test]
fn kubectl_service_list_parses_with_defaults() {
    let objs = parse_objects(&data("services.yaml"), "services.yaml").unwrap();
    let keys: Vec<String> = objs.iter().map(|o| o.key.to_string()).collect();
    assert_eq!(
        keys,
        [
            "services/kube-system/kube-dns",
            "services/default/db",
            "services/default/upstream",
            "services/shop/web",
            "services/shop/ingress"
        ]
    );
    assert!(objs.iter().all(|o| o.warnings.is_empty()));
    assert_eq!(objs[0].source.item, Some(0));
    // managedFields are server bookkeeping and are dropped.
    assert!(objs[0].value.pointer("/metadata/managedFields").is_none());
    assert_eq!(objs[0].value["metadata"]["resourceVersion"], "233");

    let dns = service(&objs[0].value);
    let spec = dns.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.10"));
    let ports = spec.ports.unwrap();
    assert_eq!(ports.len(), 3);
    assert_eq!(ports[0].protocol.as_deref(), Some("UDP"));

    let db = service(&objs[1].value).spec.unwrap();
    assert_eq!(db.cluster_ip.as_deref(), Some("None"));
    assert_eq!(db.ip_families.as_deref().map(|f| f.len()), Some(2));
    assert_eq!(db.publish_not_ready_addresses, Some(true));
    let p = &db.ports.unwrap()[0];
    assert_eq!(p.target_port, Some(IntOrString::String("pg".into())));

    let up = service(&objs[2].value).spec.unwrap();
    assert_eq!(up.type_.as_deref(), Some("ExternalName"));
    assert_eq!(up.external_name.as_deref(), Some("api.example.com"));

    let web = service(&objs[3].value).spec.unwrap();
    assert_eq!(web.external_traffic_policy.as_deref(), Some("Local"));
    let ports = web.ports.unwrap();
    // The https port has no protocol in the input: TCP by default.
    assert_eq!(ports[1].protocol.as_deref(), Some("TCP"));
    assert_eq!(ports[1].node_port, Some(30443));
    assert_eq!(
        web.session_affinity_config
            .unwrap()
            .client_ip
            .unwrap()
            .timeout_seconds,
        Some(10800)
    );

    let lb = service(&objs[4].value);
    let ingress = lb.status.unwrap().load_balancer.unwrap().ingress.unwrap();
    assert_eq!(ingress[0].ip.as_deref(), Some("198.51.100.7"));
    let spec = lb.spec.unwrap();
    assert_eq!(spec.external_ips.unwrap(), vec!["192.0.2.10".to_string()]);
    assert_eq!(spec.cluster_ips.unwrap().len(), 2);
}

#[test]
fn service_defaults_protocol_target_port_and_type() {
    let v = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "bare", "namespace": "default"},
        "spec": {"ports": [{"port": 8080}, {"port": 53, "protocol": "UDP", "targetPort": 5353}]}
    });
    let spec = service(&v).spec.unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(spec.session_affinity.as_deref(), Some("None"));
    let ports = spec.ports.unwrap();
    assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
    assert_eq!(ports[0].target_port, Some(IntOrString::Int(8080)));
    assert_eq!(ports[1].target_port, Some(IntOrString::Int(5353)));
}

#[test]
fn invalid_services_are_rejected() {
    for (spec, what) in [
        (
            serde_json::json!({"ports": [{"port": 70000}]}),
            "outside 1-65535",
        ),
        (
            serde_json::json!({"ports": [{"port": 80, "protocol": "ICMP"}]}),
            "ICMP",
        ),
        (serde_json::json!({"type": "ExternalName"}), "externalName"),
        (serde_json::json!({"type": "Weird"}), "Weird"),
        (serde_json::json!({"ports": "80"}), "invalid type"),
    ] {
        let v = serde_json::json!({"metadata": {"name": "x"}, "spec": spec});
        let e = decode(Kind::Service, &v).unwrap_err();
        assert!(matches!(e, DecodeError::Invalid { .. }), "{e}");
        assert!(e.to_string().contains(what), "{e} lacks {what}");
    }
}

#[test]
fn kubectl_endpoint_slices_conditions_hostnames_and_orphans() {
    let objs = parse_objects(&data("endpointslices.yaml"), "eps.yaml").unwrap();
    assert_eq!(objs.len(), 3);
    // Stored, but consumers will ignore it: warned at apply, left out by decode.
    assert!(objs[0].warnings.is_empty());
    assert_eq!(objs[2].warnings.len(), 1);
    assert!(objs[2].warnings[0].contains("kubernetes.io/service-name"));
    let e = decode(Kind::EndpointSlice, &objs[2].value).unwrap_err();
    assert!(matches!(e, DecodeError::Ignored { .. }), "{e}");

    let TypedObject::EndpointSlice(dns) = decode(Kind::EndpointSlice, &objs[0].value).unwrap()
    else {
        panic!()
    };
    assert_eq!(dns.address_type, "IPv4");
    let e0 = &dns.endpoints[0];
    assert_eq!(e0.node_name.as_deref(), Some("node-a"));
    assert_eq!(e0.zone.as_deref(), Some("zone-1"));
    assert_eq!(
        e0.target_ref.as_ref().unwrap().name.as_deref(),
        Some("coredns-5d78c9869d-8x7kq")
    );
    let c1 = dns.endpoints[1].conditions.as_ref().unwrap();
    assert_eq!(
        (c1.ready, c1.serving, c1.terminating),
        (Some(false), Some(true), Some(true))
    );
    assert_eq!(
        dns.ports.as_ref().unwrap()[1].protocol.as_deref(),
        Some("UDP")
    );

    let TypedObject::EndpointSlice(db) = decode(Kind::EndpointSlice, &objs[1].value).unwrap()
    else {
        panic!()
    };
    assert_eq!(db.address_type, "IPv6");
    assert_eq!(db.endpoints[0].hostname.as_deref(), Some("db-0"));
    // Unset conditions: ready (and so serving), not terminating.
    let c = db.endpoints[0].conditions.as_ref().unwrap();
    assert_eq!(
        (c.ready, c.serving, c.terminating),
        (Some(true), Some(true), Some(false))
    );
    // ready: false alone: serving follows ready.
    let c = db.endpoints[1].conditions.as_ref().unwrap();
    assert_eq!(
        (c.ready, c.serving, c.terminating),
        (Some(false), Some(false), Some(false))
    );
    // Port protocol defaults to TCP.
    assert_eq!(
        db.ports.as_ref().unwrap()[0].protocol.as_deref(),
        Some("TCP")
    );
}

#[test]
fn multi_document_yaml_with_cluster_config_node_pod_namespace() {
    let objs = parse_objects(&data("cluster.yaml"), "cluster.yaml").unwrap();
    let keys: Vec<ObjectKey> = objs.iter().map(|o| o.key.clone()).collect();
    assert_eq!(
        keys,
        [
            ObjectKey::new(Kind::ClusterConfig, None, "default"),
            ObjectKey::new(Kind::Node, None, "node-a"),
            ObjectKey::new(Kind::Pod, Some("default"), "db-0"),
            ObjectKey::new(Kind::Namespace, None, "shop"),
        ]
    );
    assert_eq!(
        objs.iter().map(|o| o.source.document).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(objs[0].source.line, 2);
    assert_eq!(objs[1].source.line, 15);

    let TypedObject::ClusterConfig(cc) = decode(Kind::ClusterConfig, &objs[0].value).unwrap()
    else {
        panic!()
    };
    assert_eq!(cc.cluster_cidr_v4().unwrap().to_string(), "10.244.0.0/16");
    assert_eq!(
        cc.cluster_cidr_v6().unwrap().to_string(),
        "fd00:10:244::/48"
    );
    assert_eq!(cc.spec.subnet_len_v6, 64);
    assert_eq!(cc.spec.vni, 4096);
    assert_eq!(cc.spec.backend, podnet_state::object::Backend::Vxlan);

    let TypedObject::Node(n) = decode(Kind::Node, &objs[1].value).unwrap() else {
        panic!()
    };
    assert_eq!(n.spec.unwrap().pod_cidrs.unwrap().len(), 2);
    let ann = n.metadata.annotations.unwrap();
    assert_eq!(
        ann[podnet_state::object::ANNOTATION_VTEP_MAC],
        "8e:2a:11:07:3c:01"
    );
    let addrs = n.status.unwrap().addresses.unwrap();
    assert_eq!(addrs[0].address, "192.168.50.11");

    let TypedObject::Pod(p) = decode(Kind::Pod, &objs[2].value).unwrap() else {
        panic!()
    };
    assert_eq!(p.status.unwrap().pod_ips.unwrap().len(), 2);
    assert_eq!(p.spec.unwrap().subdomain.as_deref(), Some("db"));
}

#[test]
fn json_input_single_and_list() {
    let single = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"team-a"}}"#;
    let objs = parse_objects(single, "ns.json").unwrap();
    assert_eq!(objs[0].key, ObjectKey::new(Kind::Namespace, None, "team-a"));
    let list = r#"{"apiVersion":"v1","kind":"ServiceList","items":[
        {"metadata":{"name":"a","namespace":"x"},"spec":{"ports":[{"port":1}]}},
        {"metadata":{"name":"b"},"spec":{"ports":[{"port":2}]}}]}"#;
    let objs = parse_objects(list, "svcs.json").unwrap();
    // Items of a typed list carry no kind; namespace defaults to "default".
    assert_eq!(objs[0].key, ObjectKey::new(Kind::Service, Some("x"), "a"));
    assert_eq!(
        objs[1].key,
        ObjectKey::new(Kind::Service, Some("default"), "b")
    );
    assert_eq!(objs[1].value["metadata"]["namespace"], "default");
    assert_eq!(objs[1].value["apiVersion"], "v1");
}

#[test]
fn missing_name_reports_file_document_and_line() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ok\n---\n# second\napiVersion: v1\nkind: Service\nmetadata:\n  namespace: x\n";
    let e = parse_objects(text, "in.yaml").unwrap_err();
    let ParseError::Invalid { at, reason } = &e else {
        panic!("{e}")
    };
    assert_eq!((at.document, at.line), (2, 7));
    assert!(reason.contains("metadata.name"), "{reason}");
    assert_eq!(
        e.to_string(),
        "in.yaml: document 2 (line 7): Service has no metadata.name"
    );
    // Inside a List the item index is given too.
    let text =
        "kind: List\nitems:\n- kind: Node\n  metadata: {name: a}\n- kind: Node\n  metadata: {}\n";
    let e = parse_objects(text, "l.yaml").unwrap_err().to_string();
    assert!(
        e.starts_with("l.yaml: document 1 (line 1), items[1]:"),
        "{e}"
    );
}

#[test]
fn syntax_errors_report_the_file_line() {
    let text =
        "kind: Namespace\nmetadata:\n  name: a\n---\nkind: Namespace\nmetadata:\n  name: [b\n";
    let e = parse_objects(text, "bad.yaml").unwrap_err();
    let ParseError::Syntax { file, line, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(file, "bad.yaml");
    assert!((7..=8).contains(line), "line {line}: {e}");
    let e = parse_objects("{\"kind\": \"Node\",\n \"metadata\": {]}", "bad.json").unwrap_err();
    assert!(matches!(e, ParseError::Syntax { line: 2, .. }), "{e}");
}

#[test]
fn unsupported_kinds_and_versions_are_errors() {
    let e = parse_objects(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
        "d.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unsupported kind \"Deployment\""), "{e}");
    let e = parse_objects(
        "apiVersion: discovery.k8s.io/v1beta1\nkind: EndpointSlice\nmetadata: {name: x}\naddressType: IPv4\nendpoints: []\n",
        "e.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("v1beta1"), "{e}");
    let e = parse_objects("kind: Node\nmetadata: {name: a/b}\n", "n.yaml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("contains '/'"), "{e}");
    // Empty documents and comments are fine.
    assert!(parse_objects("---\n# nothing\n---\n", "e.yaml")
        .unwrap()
        .is_empty());
}

fn cc(spec: serde_json::Value) -> Result<(), String> {
    let c: ClusterConfig =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}, "spec": spec}))
            .unwrap();
    c.validate()
}

#[test]
fn cluster_config_validation() {
    assert_eq!(
        cc(serde_json::json!({"clusterCIDRs": ["10.244.0.0/16"]})),
        Ok(())
    );
    let bad = [
        (serde_json::json!({"clusterCIDRs": []}), "empty"),
        (
            serde_json::json!({"clusterCIDRs": ["10.244.0.0/16", "10.245.0.0/16"]}),
            "at most one per family",
        ),
        (
            serde_json::json!({"clusterCIDRs": ["10.244.1.0/16"]}),
            "host bits",
        ),
        (
            serde_json::json!({"clusterCIDRs": ["10.244.0.0/16"], "subnetLen": 12}),
            "subnetLen 12",
        ),
        (
            serde_json::json!({"clusterCIDRs": ["10.244.0.0/16"], "subnetLen": 31}),
            "subnetLen 31",
        ),
        (
            serde_json::json!({"clusterCIDRs": ["fd00::/48"], "subnetLenV6": 40}),
            "subnetLenV6 40",
        ),
        (
            serde_json::json!({"clusterCIDRs": ["10.0.0.0/8"], "serviceCIDRs": ["10.96.0.0/12"]}),
            "overlaps",
        ),
        (
            serde_json::json!({"clusterCIDRs": ["fd00::/48"], "serviceCIDRs": ["fd00::/112"]}),
            "overlaps",
        ),
        (
            serde_json::json!({"clusterCIDRs": ["10.244.0.0/16"], "vni": 0}),
            "vni",
        ),
        (
            serde_json::json!({"clusterCIDRs": ["10.244.0.0/16"], "mtu": 100}),
            "mtu",
        ),
    ];
    for (spec, what) in bad {
        let e = cc(spec.clone()).unwrap_err();
        assert!(e.contains(what), "{spec}: {e} lacks {what}");
    }
    // Different families never overlap.
    assert_eq!(
        cc(serde_json::json!({"clusterCIDRs": ["10.244.0.0/16"], "serviceCIDRs": ["fd00::/112"]})),
        Ok(())
    );
}

/// The same result, except that an error read from text may add where in
/// the text it is (`... at line 1 column 49`).
fn assert_same_decode(
    text: Result<TypedObject, DecodeError>,
    tree: Result<TypedObject, DecodeError>,
    what: &str,
) {
    match (&text, &tree) {
        (
            Err(DecodeError::Invalid {
                kind: k1,
                name: n1,
                reason: r1,
            }),
            Err(DecodeError::Invalid {
                kind: k2,
                name: n2,
                reason: r2,
            }),
        ) => assert!(
            k1 == k2 && n1 == n2 && r1.starts_with(r2.as_str()),
            "{what}: {text:?} vs {tree:?}"
        ),
        _ => assert_eq!(text, tree, "{what}"),
    }
}

/// `decode_json` (what the informer uses on stored text) gives what
/// `decode` gives on the tree: the same objects with the same defaults, and
/// the same errors in the same order of precedence.
#[test]
fn decode_json_agrees_with_decode() {
    let mut objs = Vec::new();
    for f in ["services.yaml", "endpointslices.yaml", "cluster.yaml"] {
        objs.extend(parse_objects(&data(f), f).unwrap());
    }
    assert!(objs.len() > 10);
    for o in &objs {
        let text = serde_json::to_string(&o.value).unwrap();
        assert_same_decode(
            decode_json(o.key.kind, &text),
            decode(o.key.kind, &o.value),
            &o.key.to_string(),
        );
    }
    let cases = [
        (
            Kind::Service,
            r#"{"metadata": {"name": "a"}, "spec": {"ports": [{"port": 99999}]}}"#,
        ),
        (
            Kind::Service,
            r#"{"apiVersion": "v2", "metadata": {"name": "a"}}"#,
        ),
        (Kind::Service, r#"{"apiVersion": "v2", "metadata": {}}"#),
        (
            Kind::Service,
            r#"{"metadata": {"name": "a/b"}, "spec": {"ports": "x"}}"#,
        ),
        (
            Kind::Service,
            r#"{"metadata": {"name": "a"}, "spec": {"ports": "x"}}"#,
        ),
        (
            Kind::EndpointSlice,
            r#"{"metadata": {"name": "e"}, "addressType": "IPv4", "endpoints": []}"#,
        ),
        (
            Kind::EndpointSlice,
            r#"{"metadata": {"name": "e"}, "addressType": "AppleTalk", "endpoints": []}"#,
        ),
        (
            Kind::ClusterConfig,
            r#"{"apiVersion": "podnet.dev/v2", "metadata": {"name": "default"}, "spec": {"clusterCIDRs": ["10.244.0.0/16"]}}"#,
        ),
        (
            Kind::ClusterConfig,
            r#"{"metadata": {"name": "default"}, "spec": {"clusterCIDRs": []}}"#,
        ),
        (Kind::Node, r#"{"metadata": {"name": "n1"}}"#),
    ];
    for (kind, text) in cases {
        let tree: serde_json::Value = serde_json::from_str(text).unwrap();
        let want = decode(kind, &tree);
        assert_same_decode(decode_json(kind, text), want.clone(), text);
        // Every case but the Node is one an informer must leave out.
        assert_eq!(want.is_ok(), kind == Kind::Node, "{text}: {want:?}");
    }
    assert!(matches!(
        decode(
            Kind::EndpointSlice,
            &serde_json::from_str(cases[5].1).unwrap()
        ),
        Err(DecodeError::Ignored { .. })
    ));
    let e = decode_json(Kind::Service, cases[1].1).unwrap_err();
    assert!(
        e.to_string().contains("apiVersion \"v2\" is not supported"),
        "{e}"
    );
    let e = decode_json(Kind::Service, cases[2].1).unwrap_err();
    assert!(
        e.to_string().contains("metadata.name: name is empty"),
        "{e}"
    );
    assert!(decode_json(Kind::Service, "{not json").is_err());
}
