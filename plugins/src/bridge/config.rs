//! The bridge plugin's own config keys (the reference bridge plugin's names), and the
//! pure decisions made from them and the IPAM result: gateways, default routes.

use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;

use crate::cni::{ipnet::IpNet, CniError, CniResult, Request, Route};
use crate::netlink::parse_mac;

/// The reference plugin's default bridge name.
pub const DEFAULT_BRIDGE: &str = "cni0";

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Wire {
    bridge: Option<String>,
    #[serde(default)]
    is_gateway: bool,
    #[serde(default)]
    is_default_gateway: bool,
    #[serde(default)]
    force_address: bool,
    #[serde(default)]
    ip_masq: bool,
    #[serde(default)]
    hairpin_mode: bool,
    #[serde(default)]
    promisc_mode: bool,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default, rename = "macspoofchk")]
    mac_spoof_chk: bool,
    #[serde(default)]
    vlan: Option<i64>,
    #[serde(default, rename = "enabledad")]
    enable_dad: bool,
}

/// A validated bridge configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeConf {
    /// Network name (keys the nftables entries).
    pub network: String,
    /// Bridge device name (`bridge`, default `cni0`).
    pub bridge: String,
    /// Put the gateway address on the bridge (`isGateway`; implied by `isDefaultGateway`).
    pub is_gateway: bool,
    /// Add a default route via the gateway in the container (`isDefaultGateway`).
    pub is_default_gateway: bool,
    /// Replace a different address already on the bridge (`forceAddress`).
    pub force_address: bool,
    /// Masquerade traffic from the pod leaving the network's subnets (`ipMasq`).
    pub ip_masq: bool,
    /// Hairpin mode on the host-side bridge port (`hairpinMode`).
    pub hairpin_mode: bool,
    /// Promiscuous bridge (`promiscMode`).
    pub promisc_mode: bool,
    /// MTU of the bridge and both veth ends (`mtu`; 0 / absent = kernel default).
    pub mtu: Option<u32>,
    /// Drop frames from the pod with a source MAC other than its own (`macspoofchk`).
    pub mac_spoof_chk: bool,
    /// Access VLAN of the pod's bridge port (`vlan`; 0 = none).
    pub vlan: u16,
    /// Keep IPv6 duplicate address detection on (`enabledad`).
    pub enable_dad: bool,
    /// MAC for the container interface: `runtimeConfig.mac` > `args.cni.mac` > `CNI_ARGS MAC`.
    pub mac: Option<[u8; 6]>,
    /// Has an `ipam` section (layer 3); without one the pod gets a bare L2 port.
    pub ipam_type: Option<String>,
}

impl BridgeConf {
    /// Reads and validates the bridge keys of `req` (code 6 for wrong JSON types,
    /// 7 for invalid values).
    pub fn from_request(req: &Request) -> Result<BridgeConf, CniError> {
        let w: Wire = req.conf.plugin_config()?;
        let invalid =
            |m: String| CniError::invalid_config(format!("network {:?}: {m}", req.conf.name));
        if w.hairpin_mode && w.promisc_mode {
            return Err(invalid(
                "cannot set hairpinMode and promiscMode at the same time".into(),
            ));
        }
        let vlan = w.vlan.unwrap_or(0);
        if !(0..=4094).contains(&vlan) {
            return Err(invalid(format!(
                "invalid vlan {vlan} (must be between 0 and 4094)"
            )));
        }
        if vlan != 0 && (w.is_gateway || w.is_default_gateway) {
            // The reference gives such networks a gateway veth "<bridge>.<vlan>"; podnet
            // does not, and says so rather than putting the gateway on the untagged bridge.
            return Err(invalid(
                "isGateway/isDefaultGateway together with vlan is not supported".into(),
            ));
        }
        let bridge = w.bridge.unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
        crate::cni::validate_ifname(&bridge)
            .map_err(|_| invalid(format!("invalid bridge name {bridge:?}")))?;
        let mac = mac_of(req)?;
        Ok(BridgeConf {
            network: req.conf.name.clone(),
            bridge,
            is_gateway: w.is_gateway || w.is_default_gateway,
            is_default_gateway: w.is_default_gateway,
            force_address: w.force_address,
            ip_masq: w.ip_masq,
            hairpin_mode: w.hairpin_mode,
            promisc_mode: w.promisc_mode,
            mtu: w.mtu.filter(|m| *m != 0),
            mac_spoof_chk: w.mac_spoof_chk,
            vlan: vlan as u16,
            enable_dad: w.enable_dad,
            mac,
            ipam_type: req.conf.ipam_type().map(str::to_string),
        })
    }
}

fn mac_of(req: &Request) -> Result<Option<[u8; 6]>, CniError> {
    let from_args = req
        .conf
        .args
        .as_ref()
        .and_then(|a| a.get("cni"))
        .and_then(|c| c.get("mac"))
        .and_then(Value::as_str);
    let from_runtime = req.conf.runtime("mac").and_then(Value::as_str);
    let chosen = from_runtime
        .or(from_args)
        .or_else(|| req.env.arg("MAC"))
        .filter(|s| !s.is_empty());
    match chosen {
        None => Ok(None),
        Some(s) => match parse_mac(s) {
            Some(m) if m[0] & 1 == 0 => Ok(Some(m)),
            _ => Err(CniError::invalid_config(format!(
                "invalid container MAC {s:?} (want a unicast aa:bb:cc:dd:ee:ff)"
            ))),
        },
    }
}

/// Gateway address (with the pod's prefix length) to put on the bridge, per family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gateways {
    pub v4: Vec<IpNet>,
    pub v6: Vec<IpNet>,
}

/// The first usable address of `net` (`.1`): the gateway when IPAM gave none.
pub fn first_host(net: &IpNet) -> IpAddr {
    match net.network() {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a).wrapping_add(1)).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a).wrapping_add(1)).into()),
    }
}

/// Like the reference's `calcGateways`: points every IP at the container interface
/// (`interface_index`), fills in missing gateways when `isGateway`, adds a default
/// route per family when `isDefaultGateway` and IPAM gave none, and returns the
/// bridge addresses to ensure.
pub fn apply_gateways(conf: &BridgeConf, result: &mut CniResult, interface_index: u32) -> Gateways {
    let mut gws = Gateways::default();
    let mut default_found = [false, false];
    for ip in result.ips.iter_mut() {
        ip.interface = Some(interface_index);
        let v4 = ip.address.addr().is_ipv4();
        if ip.gateway.is_none() && conf.is_gateway {
            ip.gateway = Some(first_host(&ip.address));
        }
        let fam = usize::from(!v4);
        if conf.is_default_gateway && !default_found[fam] {
            let has_default = result
                .routes
                .iter()
                .any(|r| r.gw.is_some() && r.dst.prefix_len() == 0 && r.dst.addr().is_ipv4() == v4);
            if !has_default {
                let dst: IpNet = if v4 {
                    "0.0.0.0/0".parse().expect("literal")
                } else {
                    "::/0".parse().expect("literal")
                };
                result.routes.push(Route {
                    dst,
                    gw: ip.gateway,
                    mtu: None,
                    advmss: None,
                    priority: None,
                    table: None,
                    scope: None,
                });
            }
            default_found[fam] = true;
        }
        if conf.is_gateway {
            if let Some(gw) = ip.gateway {
                let net = IpNet::new(gw, ip.address.prefix_len()).expect("prefix of a valid net");
                let list = if v4 { &mut gws.v4 } else { &mut gws.v6 };
                if !list.contains(&net) {
                    list.push(net);
                }
            }
        }
    }
    gws
}

/// The gateway for routes without `gw`, per family: the first IP's gateway (as the
/// reference's `ConfigureIface` does).
pub fn family_gateway(result: &CniResult, v4: bool) -> Option<IpAddr> {
    result
        .ips
        .iter()
        .filter(|ip| ip.address.addr().is_ipv4() == v4)
        .find_map(|ip| ip.gateway)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::{parse_result, CniEnv, NetConf};
    use serde_json::json;

    fn req(conf: Value, args: &str) -> Request {
        let env = CniEnv::from_lookup(|k| match k {
            "CNI_COMMAND" => Some("ADD".into()),
            "CNI_CONTAINERID" => Some("c1".into()),
            "CNI_NETNS" => Some("/run/netns/x".into()),
            "CNI_IFNAME" => Some("eth0".into()),
            "CNI_PATH" => Some("/opt/cni/bin".into()),
            "CNI_ARGS" => Some(args.into()),
            _ => None,
        })
        .unwrap();
        let conf = NetConf::parse(conf.to_string().as_bytes()).unwrap();
        Request {
            version: conf.version.unwrap(),
            env,
            conf,
        }
    }

    fn base() -> Value {
        json!({"cniVersion":"1.0.0","name":"net1","type":"podnet-bridge",
               "ipam":{"type":"podnet-ipam"}})
    }

    #[test]
    fn defaults_and_implications() {
        let c = BridgeConf::from_request(&req(base(), "")).unwrap();
        assert_eq!(c.bridge, "cni0");
        assert!(!c.is_gateway && !c.ip_masq && c.mtu.is_none() && c.vlan == 0);
        assert_eq!(c.ipam_type.as_deref(), Some("podnet-ipam"));
        let mut v = base();
        v["isDefaultGateway"] = json!(true);
        v["mtu"] = json!(0);
        let c = BridgeConf::from_request(&req(v, "")).unwrap();
        assert!(c.is_gateway && c.is_default_gateway);
        assert_eq!(c.mtu, None);
    }

    #[test]
    fn invalid_combinations_are_code_7_and_bad_types_code_6() {
        for (k, val) in [
            ("vlan", json!(4095)),
            ("vlan", json!(-1)),
            ("bridge", json!("a-name-longer-than-15")),
        ] {
            let mut v = base();
            v[k] = val;
            assert_eq!(
                BridgeConf::from_request(&req(v, "")).unwrap_err().code,
                7,
                "{k}"
            );
        }
        let mut v = base();
        v["hairpinMode"] = json!(true);
        v["promiscMode"] = json!(true);
        assert_eq!(BridgeConf::from_request(&req(v, "")).unwrap_err().code, 7);
        let mut v = base();
        v["mtu"] = json!("big");
        assert_eq!(BridgeConf::from_request(&req(v, "")).unwrap_err().code, 6);
    }

    #[test]
    fn mac_precedence_runtime_then_args_then_cni_args() {
        let mut v = base();
        let c = BridgeConf::from_request(&req(v.clone(), "MAC=02:00:00:00:00:03")).unwrap();
        assert_eq!(c.mac, Some([2, 0, 0, 0, 0, 3]));
        v["args"] = json!({"cni":{"mac":"02:00:00:00:00:02"}});
        let c = BridgeConf::from_request(&req(v.clone(), "MAC=02:00:00:00:00:03")).unwrap();
        assert_eq!(c.mac, Some([2, 0, 0, 0, 0, 2]));
        v["runtimeConfig"] = json!({"mac":"02:00:00:00:00:01"});
        let c = BridgeConf::from_request(&req(v.clone(), "")).unwrap();
        assert_eq!(c.mac, Some([2, 0, 0, 0, 0, 1]));
        v["runtimeConfig"] = json!({"mac":"03:00:00:00:00:01"});
        assert_eq!(BridgeConf::from_request(&req(v, "")).unwrap_err().code, 7);
    }

    #[test]
    fn gateways_and_default_routes() {
        let mut v = base();
        v["isDefaultGateway"] = json!(true);
        let c = BridgeConf::from_request(&req(v, "")).unwrap();
        let mut r = parse_result(
            br#"{"cniVersion":"1.0.0","ips":[{"address":"10.22.3.4/16"},{"address":"fd00::4/64","gateway":"fd00::fe"}],
                 "routes":[{"dst":"::/0","gw":"fd00::fe"}]}"#,
        )
        .unwrap();
        let g = apply_gateways(&c, &mut r, 2);
        assert_eq!(g.v4, vec!["10.22.0.1/16".parse::<IpNet>().unwrap()]);
        assert_eq!(g.v6, vec!["fd00::fe/64".parse::<IpNet>().unwrap()]);
        assert!(r.ips.iter().all(|ip| ip.interface == Some(2)));
        assert_eq!(r.ips[0].gateway, Some("10.22.0.1".parse().unwrap()));
        // A v4 default was added; the v6 one from IPAM was kept, not duplicated.
        assert_eq!(r.routes.len(), 2);
        assert_eq!(r.routes[1].dst.to_string(), "0.0.0.0/0");
        assert_eq!(r.routes[1].gw, Some("10.22.0.1".parse().unwrap()));
        assert_eq!(family_gateway(&r, false), Some("fd00::fe".parse().unwrap()));

        // Without isGateway nothing is invented.
        let c = BridgeConf::from_request(&req(base(), "")).unwrap();
        let mut r = parse_result(br#"{"ips":[{"address":"10.22.3.4/16"}]}"#).unwrap();
        assert_eq!(apply_gateways(&c, &mut r, 2), Gateways::default());
        assert_eq!(r.ips[0].gateway, None);
        assert!(r.routes.is_empty());
    }
}
