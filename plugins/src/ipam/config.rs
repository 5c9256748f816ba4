//! `podnet-ipam` configuration: host-local-compatible `ipam` section, canonicalized into
//! range sets, plus the addresses a caller requested (runtimeConfig `ips`, `args.cni.ips`,
//! CNI_ARGS `IP=`).

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use super::alloc::{from_u128, to_u128, Range, RangeSet};
use crate::cni::ipnet::IpNet;
use crate::cni::{CniEnv, CniError, Dns, NetConf, Route};

/// host-local's default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
/// Where the kernel publishes the current boot's id.
pub const DEFAULT_BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RangeWire {
    subnet: String,
    #[serde(default)]
    range_start: Option<IpAddr>,
    #[serde(default)]
    range_end: Option<IpAddr>,
    #[serde(default)]
    gateway: Option<IpAddr>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IpamWire {
    #[serde(default)]
    subnet: Option<String>,
    #[serde(default)]
    range_start: Option<IpAddr>,
    #[serde(default)]
    range_end: Option<IpAddr>,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    ranges: Option<Vec<Vec<RangeWire>>>,
    #[serde(default)]
    routes: Option<Vec<Route>>,
    #[serde(default)]
    data_dir: Option<PathBuf>,
    #[serde(default)]
    resolv_conf: Option<PathBuf>,
    /// Not in host-local: file holding the current boot id (tests point it at a temp
    /// file to simulate a reboot).
    #[serde(default)]
    boot_id_path: Option<PathBuf>,
}

/// What the store needs even when the rest of the config is broken (DEL never fails
/// because of a range typo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub network: String,
    pub data_dir: PathBuf,
    pub boot_id_path: PathBuf,
}

/// A canonical `podnet-ipam` config.
#[derive(Debug, Clone, PartialEq)]
pub struct IpamConfig {
    pub store: StoreConfig,
    pub range_sets: Vec<RangeSet>,
    pub routes: Vec<Route>,
    pub dns: Option<Dns>,
}

fn ipam_value(conf: &NetConf) -> Result<&Value, CniError> {
    conf.ipam.as_ref().filter(|v| v.is_object()).ok_or_else(|| {
        CniError::invalid_config(format!("network {:?}: missing \"ipam\" object", conf.name))
    })
}

fn wire(conf: &NetConf) -> Result<IpamWire, CniError> {
    IpamWire::deserialize(ipam_value(conf)?).map_err(|e| {
        CniError::decode(format!(
            "network {:?}: decoding ipam config: {e}",
            conf.name
        ))
    })
}

/// Only the store location: tolerant of everything else in the `ipam` section.
pub fn store_config(conf: &NetConf) -> StoreConfig {
    let ipam = conf.ipam.as_ref();
    let path = |key: &str, default: &str| {
        ipam.and_then(|v| v.get(key))
            .and_then(Value::as_str)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(default))
    };
    StoreConfig {
        network: conf.name.clone(),
        data_dir: path("dataDir", DEFAULT_DATA_DIR),
        boot_id_path: path("bootIdPath", DEFAULT_BOOT_ID_PATH),
    }
}

impl IpamConfig {
    /// Parses and validates the `ipam` section of `conf` (code 6 shape, code 7 content).
    pub fn parse(conf: &NetConf) -> Result<Self, CniError> {
        let w = wire(conf)?;
        let bad =
            |what: String| CniError::invalid_config(format!("network {:?}: {what}", conf.name));
        let wire_sets: Vec<Vec<RangeWire>> = match (w.ranges, w.subnet) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "ipam has both \"ranges\" and \"subnet\"; use one".into()
                ))
            }
            (Some(r), None) => r,
            (None, Some(subnet)) => vec![vec![RangeWire {
                subnet,
                range_start: w.range_start,
                range_end: w.range_end,
                gateway: w.gateway,
            }]],
            (None, None) => return Err(bad("ipam needs \"ranges\" or \"subnet\"".into())),
        };
        if wire_sets.is_empty() {
            return Err(bad("ipam \"ranges\" is empty".into()));
        }
        let mut range_sets = Vec::with_capacity(wire_sets.len());
        for (i, set) in wire_sets.into_iter().enumerate() {
            if set.is_empty() {
                return Err(bad(format!("range set {i} is empty")));
            }
            let ranges = set
                .into_iter()
                .map(canonical_range)
                .collect::<Result<Vec<_>, String>>()
                .map_err(|e| bad(format!("range set {i}: {e}")))?;
            validate_set(&ranges).map_err(|e| bad(format!("range set {i}: {e}")))?;
            range_sets.push(RangeSet(ranges));
        }
        for (i, a) in range_sets.iter().enumerate() {
            for (j, b) in range_sets.iter().enumerate().skip(i + 1) {
                if a.0.iter().any(|x| b.0.iter().any(|y| overlaps(x, y))) {
                    return Err(bad(format!("range sets {i} and {j} overlap")));
                }
            }
        }
        let dns = match &w.resolv_conf {
            Some(path) => Some(parse_resolv_conf(
                &std::fs::read_to_string(path)
                    .map_err(|e| bad(format!("reading resolvConf {}: {e}", path.display())))?,
            )),
            None => None,
        };
        Ok(IpamConfig {
            store: StoreConfig {
                network: conf.name.clone(),
                data_dir: w
                    .data_dir
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
                boot_id_path: w
                    .boot_id_path
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_BOOT_ID_PATH)),
            },
            range_sets,
            routes: w.routes.unwrap_or_default(),
            dns,
        })
    }
}

/// host-local's canonicalization: subnet without host bits and big enough; start
/// defaults to network+1, end to the last address (IPv4: before broadcast), gateway to
/// network+1; start ≤ end, all inside the subnet.
fn canonical_range(w: RangeWire) -> Result<Range, String> {
    let subnet: IpNet = w
        .subnet
        .parse()
        .map_err(|e| format!("subnet {:?}: {e}", w.subnet))?;
    if subnet.addr() != subnet.network() {
        return Err(format!(
            "subnet {subnet} has host bits set (network address is {})",
            subnet.network()
        ));
    }
    if subnet.prefix_len() + 2 > subnet.max_prefix_len() {
        return Err(format!("subnet {subnet} is too small to allocate from"));
    }
    let network = to_u128(subnet.network());
    let last = to_u128(subnet.broadcast()) - u128::from(subnet.addr().is_ipv4());
    let first = from_u128(network + 1, subnet.addr());
    let start = w.range_start.unwrap_or(first);
    let end = w.range_end.unwrap_or(from_u128(last, subnet.addr()));
    let gateway = w.gateway.unwrap_or(first);
    for (what, ip) in [
        ("rangeStart", start),
        ("rangeEnd", end),
        ("gateway", gateway),
    ] {
        if !subnet.contains(&ip) {
            return Err(format!("{what} {ip} is not in subnet {subnet}"));
        }
    }
    if to_u128(start) > to_u128(end) {
        return Err(format!("rangeStart {start} is after rangeEnd {end}"));
    }
    Ok(Range {
        subnet,
        start,
        end,
        gateway,
    })
}

fn overlaps(a: &Range, b: &Range) -> bool {
    a.start.is_ipv4() == b.start.is_ipv4()
        && to_u128(a.start) <= to_u128(b.end)
        && to_u128(b.start) <= to_u128(a.end)
}

fn validate_set(ranges: &[Range]) -> Result<(), String> {
    let v4 = ranges[0].start.is_ipv4();
    if ranges.iter().any(|r| r.start.is_ipv4() != v4) {
        return Err("mixes IPv4 and IPv6 ranges".into());
    }
    for (i, a) in ranges.iter().enumerate() {
        for b in &ranges[i + 1..] {
            if overlaps(a, b) {
                return Err(format!("ranges {a} and {b} overlap"));
            }
        }
    }
    Ok(())
}

/// The subset of resolv.conf host-local reads into the result's `dns`.
pub fn parse_resolv_conf(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let values =
            || -> Vec<String> { line.split_whitespace().skip(1).map(String::from).collect() };
        match words.next() {
            Some("nameserver") => dns.nameservers.extend(values()),
            Some("domain") => dns.domain = words.next().map(String::from),
            Some("search") => dns.search = Some(values()),
            Some("options") => dns.options.get_or_insert_with(Vec::new).extend(values()),
            _ => {}
        }
    }
    dns
}

fn parse_requested(s: &str) -> Option<IpAddr> {
    // runtimeConfig and args give "10.1.0.5/24" or "10.1.0.5"; the prefix is the
    // range's, so only the address counts.
    let addr = s.split_once('/').map_or(s, |(a, _)| a);
    addr.trim().parse().ok()
}

/// Requested addresses, in the order host-local merges them: CNI_ARGS `IP=` (comma
/// separated), `args.cni.ips`, runtimeConfig `ips`. Duplicates collapse.
pub fn requested_ips(conf: &NetConf, env: &CniEnv) -> Result<Vec<IpAddr>, CniError> {
    let mut out: Vec<IpAddr> = Vec::new();
    let mut push = |ip: IpAddr| {
        if !out.contains(&ip) {
            out.push(ip);
        }
    };
    if let Some(list) = env.arg("IP") {
        for s in list.split(',').filter(|s| !s.is_empty()) {
            push(parse_requested(s).ok_or_else(|| {
                CniError::invalid_env(format!("CNI_ARGS IP={list:?}: {s:?} is not an IP address"))
            })?);
        }
    }
    let lists = [
        (
            "args.cni.ips",
            conf.args
                .as_ref()
                .and_then(|a| a.get("cni"))
                .and_then(|c| c.get("ips")),
        ),
        ("runtimeConfig.ips", conf.runtime("ips")),
    ];
    for (what, list) in lists {
        let Some(list) = list else { continue };
        let items = list.as_array().ok_or_else(|| {
            CniError::invalid_config(format!("{what} must be a list of addresses, got {list}"))
        })?;
        for item in items {
            let ip = item.as_str().and_then(parse_requested).ok_or_else(|| {
                CniError::invalid_config(format!("{what}: {item} is not an IP address"))
            })?;
            push(ip);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn conf(ipam: Value) -> NetConf {
        NetConf::parse(
            json!({"cniVersion":"1.1.0","name":"net","ipam":ipam})
                .to_string()
                .as_bytes(),
        )
        .expect("conf")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn subnet_shorthand_defaults() {
        let c = IpamConfig::parse(&conf(json!({"type":"podnet-ipam","subnet":"10.1.0.0/24"})))
            .expect("ok");
        assert_eq!(c.range_sets.len(), 1);
        let r = &c.range_sets[0].0[0];
        assert_eq!(
            (r.start, r.end, r.gateway),
            (ip("10.1.0.1"), ip("10.1.0.254"), ip("10.1.0.1"))
        );
        assert_eq!(c.store.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(c.store.network, "net");
        let v6 = IpamConfig::parse(&conf(json!({"subnet":"fd00::/120"}))).expect("v6");
        let r = &v6.range_sets[0].0[0];
        assert_eq!((r.start, r.end), (ip("fd00::1"), ip("fd00::ff")));
    }

    #[test]
    fn ranges_dual_stack_and_explicit_fields() {
        let c = IpamConfig::parse(&conf(json!({
            "ranges": [
                [{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.10","rangeEnd":"10.1.0.20","gateway":"10.1.0.254"},
                 {"subnet":"10.2.0.0/24"}],
                [{"subnet":"fd00::/64"}]
            ],
            "routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0","gw":"fd00::1"}],
            "dataDir":"/tmp/x", "bootIdPath":"/tmp/boot"
        }))).expect("ok");
        assert_eq!(c.range_sets.len(), 2);
        assert_eq!(c.range_sets[0].0.len(), 2);
        let r = &c.range_sets[0].0[0];
        assert_eq!(
            (r.start, r.end, r.gateway),
            (ip("10.1.0.10"), ip("10.1.0.20"), ip("10.1.0.254"))
        );
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.store.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.store.boot_id_path, PathBuf::from("/tmp/boot"));
    }

    #[test]
    fn invalid_configs_are_code_7() {
        for bad in [
            json!({}),
            json!({"ranges": []}),
            json!({"ranges": [[]]}),
            json!({"subnet":"10.1.0.5/24"}),
            json!({"subnet":"10.1.0.0/31"}),
            json!({"subnet":"fd00::/127"}),
            json!({"subnet":"nonsense"}),
            json!({"subnet":"10.1.0.0/24","rangeStart":"10.2.0.1"}),
            json!({"subnet":"10.1.0.0/24","gateway":"10.9.0.1"}),
            json!({"subnet":"10.1.0.0/24","rangeStart":"10.1.0.9","rangeEnd":"10.1.0.8"}),
            json!({"subnet":"10.1.0.0/24","ranges":[[{"subnet":"10.2.0.0/24"}]]}),
            json!({"ranges":[[{"subnet":"10.1.0.0/24"},{"subnet":"fd00::/64"}]]}),
            json!({"ranges":[[{"subnet":"10.1.0.0/24"},{"subnet":"10.1.0.0/25"}]]}),
            json!({"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"10.1.0.0/24"}]]}),
        ] {
            assert_eq!(
                IpamConfig::parse(&conf(bad.clone())).expect_err("bad").code,
                7,
                "{bad}"
            );
        }
        // Wrong JSON types: decode error.
        assert_eq!(
            IpamConfig::parse(&conf(json!({"ranges":"x"})))
                .expect_err("shape")
                .code,
            6
        );
        let no_ipam = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n"}"#).expect("conf");
        assert_eq!(IpamConfig::parse(&no_ipam).expect_err("no ipam").code, 7);
        assert_eq!(
            store_config(&no_ipam).data_dir,
            PathBuf::from(DEFAULT_DATA_DIR)
        );
    }

    #[test]
    fn requested_from_all_sources() {
        let c = NetConf::parse(
            json!({"cniVersion":"1.1.0","name":"n",
            "args":{"cni":{"ips":["10.1.0.7"]}},
            "runtimeConfig":{"ips":["10.1.0.8/24","fd00::8/64","10.1.0.7"]}})
            .to_string()
            .as_bytes(),
        )
        .expect("conf");
        let vars: HashMap<&str, &str> = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_NETNS", "/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/x"),
            ("CNI_ARGS", "IgnoreUnknown=1;IP=10.1.0.6,fd00::6"),
        ]
        .into_iter()
        .collect();
        let env = CniEnv::from_lookup(|k| vars.get(k).map(|s| s.to_string())).expect("env");
        assert_eq!(
            requested_ips(&c, &env).expect("ok"),
            ["10.1.0.6", "fd00::6", "10.1.0.7", "10.1.0.8", "fd00::8"]
                .map(ip)
                .to_vec()
        );
        let bad =
            NetConf::parse(br#"{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"ips":["zz"]}}"#)
                .expect("conf");
        assert_eq!(requested_ips(&bad, &env).expect_err("bad").code, 7);
    }

    #[test]
    fn resolv_conf() {
        let d = parse_resolv_conf("# c\nnameserver 10.0.0.10\nnameserver fd00::10\nsearch a.b c.d\ndomain x.y\noptions ndots:5 edns0\n");
        assert_eq!(d.nameservers, vec!["10.0.0.10", "fd00::10"]);
        assert_eq!(d.search, Some(vec!["a.b".into(), "c.d".into()]));
        assert_eq!(d.domain.as_deref(), Some("x.y"));
        assert_eq!(d.options, Some(vec!["ndots:5".into(), "edns0".into()]));
    }
}
