//! The ADD result: parsed from any supported version's shape, rendered in the shape of
//! the version the config asked for.
//!
//! The typed result is `rscni_types`' current (1.x) layout. 0.3.x/0.4.0 results differ
//! only in `ips[].version` (ignored on input, derived on output) and in lacking the
//! interface fields 1.1.0 added (dropped on output). Routes are carried whole in every
//! version (the reference shares one route type), so 1.1.0 `mtu`/`advmss`/`priority`/
//! `table`/`scope` survive.

use serde_json::Value;

use super::{CniError, CniResult, SpecVersion};
use rscni_types::{legacy, types::CNIResultWithVersion};

/// Parses a result (a delegate's stdout, a `prevResult`) of any supported version.
pub fn parse_result(bytes: &[u8]) -> Result<CniResult, CniError> {
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| CniError::decode(format!("parsing CNI result: {e}")))?;
    parse_result_value(v)
}

/// [`parse_result`] on an already-parsed JSON value.
pub fn parse_result_value(v: Value) -> Result<CniResult, CniError> {
    if let Some(ver) = v.get("cniVersion").and_then(Value::as_str) {
        let parsed: SpecVersion = ver
            .parse()
            .map_err(|_| CniError::decode(format!("CNI result has invalid cniVersion {ver:?}")))?;
        if !parsed.is_supported() {
            return Err(CniError::incompatible_version(format!(
                "CNI result version {ver} is older than 0.3.0 and not supported"
            )));
        }
    }
    serde_json::from_value(v).map_err(|e| CniError::decode(format!("parsing CNI result: {e}")))
}

/// Renders `result` in the shape of `version` (which should be one podnet supports).
pub fn render_result(result: &CniResult, version: SpecVersion) -> Value {
    let rendered = if version.is_legacy() {
        serde_json::to_value(legacy::CNIResult::new(version, result.clone()))
    } else {
        serde_json::to_value(CNIResultWithVersion::new(version, result.clone()))
    };
    // Both types serialize plain strings, numbers and addresses; this cannot fail.
    rendered.unwrap_or_else(|e| {
        CniError::decode(format!("rendering CNI result: {e}")).to_json(&version.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v(s: &str) -> SpecVersion {
        s.parse().expect("version")
    }

    fn sample_11() -> Value {
        json!({
            "cniVersion": "1.1.0",
            "interfaces": [
                {"name": "cni0", "mac": "00:11:22:33:44:55"},
                {"name": "eth0", "mac": "00:11:22:33:44:66", "sandbox": "/run/netns/p", "mtu": 1450}
            ],
            "ips": [
                {"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 1},
                {"address": "fd00::5/64", "gateway": "fd00::1", "interface": 1}
            ],
            "routes": [
                {"dst": "0.0.0.0/0", "gw": "10.1.0.1", "mtu": 1400, "advmss": 1360, "priority": 10, "table": 100, "scope": 0},
                {"dst": "::/0"}
            ],
            "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}
        })
    }

    #[test]
    fn current_versions_round_trip_exactly() {
        let r = parse_result(sample_11().to_string().as_bytes()).expect("parse");
        assert_eq!(render_result(&r, v("1.1.0")), sample_11());
        let mut expect10 = sample_11();
        expect10["cniVersion"] = json!("1.0.0");
        assert_eq!(render_result(&r, v("1.0.0")), expect10);
        assert!(render_result(&r, v("1.0.0"))["ips"][0]
            .get("version")
            .is_none());
    }

    #[test]
    fn converts_1x_to_legacy_shapes() {
        let r = parse_result(sample_11().to_string().as_bytes()).expect("parse");
        for ver in ["0.3.0", "0.3.1", "0.4.0"] {
            let out = render_result(&r, v(ver));
            assert_eq!(out["cniVersion"], ver);
            assert_eq!(out["ips"][0]["version"], "4");
            assert_eq!(out["ips"][1]["version"], "6");
            assert_eq!(out["ips"][0]["interface"], 1);
            assert_eq!(out["ips"][0]["address"], "10.1.0.5/24");
            // 1.1.0-only interface fields are dropped; routes keep what was given.
            assert!(out["interfaces"][1].get("mtu").is_none());
            assert_eq!(out["interfaces"][1]["sandbox"], "/run/netns/p");
            assert_eq!(out["routes"][0]["mtu"], 1400);
            assert_eq!(out["dns"]["nameservers"][0], "10.96.0.10");
        }
    }

    #[test]
    fn parses_legacy_shapes_and_upgrades() {
        let legacy = json!({
            "cniVersion": "0.3.1",
            "ips": [{"version": "4", "address": "10.2.0.7/16", "gateway": "10.2.0.1"}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        });
        let r = parse_result(legacy.to_string().as_bytes()).expect("parse");
        assert_eq!(r.ips.len(), 1);
        assert_eq!(
            render_result(&r, v("1.0.0")),
            json!({"cniVersion": "1.0.0",
                   "ips": [{"address": "10.2.0.7/16", "gateway": "10.2.0.1"}],
                   "routes": [{"dst": "0.0.0.0/0"}]})
        );
        // and back down: legacy layout always carries dns.
        assert_eq!(
            render_result(&r, v("0.4.0")),
            json!({"cniVersion": "0.4.0",
                   "ips": [{"version": "4", "address": "10.2.0.7/16", "gateway": "10.2.0.1"}],
                   "routes": [{"dst": "0.0.0.0/0"}], "dns": {}})
        );
    }

    #[test]
    fn ipam_only_result_without_interfaces() {
        let r = parse_result(br#"{"cniVersion":"1.0.0","ips":[{"address":"10.3.0.2/24"}]}"#)
            .expect("parse");
        assert!(r.interfaces.is_empty());
        assert_eq!(
            render_result(&r, v("1.1.0")),
            json!({"cniVersion":"1.1.0","ips":[{"address":"10.3.0.2/24"}]})
        );
    }

    #[test]
    fn malformed_results() {
        assert_eq!(parse_result(b"nope").expect_err("json").code, 6);
        assert_eq!(
            parse_result(br#"{"ips":[{"address":"not-an-ip"}]}"#)
                .expect_err("addr")
                .code,
            6
        );
        assert_eq!(
            parse_result(br#"{"cniVersion":"0.2.0","ip4":{}}"#)
                .expect_err("old")
                .code,
            1
        );
        assert_eq!(
            parse_result(br#"{"cniVersion":"x.y"}"#)
                .expect_err("ver")
                .code,
            6
        );
    }
}
