//! Network configuration (stdin) parsing: the spec's well-known keys typed, everything
//! else kept raw so each plugin deserializes its own fields from [`NetConf::raw`].

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::env::is_valid_name;
use super::{CniError, CniResult, Command, Dns, SpecVersion};

/// The versions every podnet plugin accepts, oldest first.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The version podnet implements.
pub const CURRENT_VERSION: &str = "1.1.0";

/// One `(containerID, ifname)` pair of a GC request's valid-attachments list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    #[serde(default)]
    cni_version: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, rename = "type")]
    plugin_type: Option<String>,
    #[serde(default)]
    ipam: Option<Value>,
    #[serde(default)]
    dns: Option<Dns>,
    #[serde(default)]
    prev_result: Option<Value>,
    #[serde(default)]
    runtime_config: Option<Value>,
    #[serde(default)]
    args: Option<Value>,
}

/// A parsed plugin network configuration as received on stdin.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// `cniVersion` exactly as given.
    pub cni_version: String,
    /// The parsed `cniVersion`; `None` when it is missing or not a version string.
    pub version: Option<SpecVersion>,
    /// `name`, validated against the spec's pattern.
    pub name: String,
    /// `type`.
    pub plugin_type: String,
    /// `ipam` as raw JSON (its `type` via [`NetConf::ipam_type`]).
    pub ipam: Option<Value>,
    /// `dns`.
    pub dns: Option<Dns>,
    /// `prevResult` as raw JSON (typed via [`NetConf::prev_result`]).
    pub prev_result: Option<Value>,
    /// `runtimeConfig` as raw JSON.
    pub runtime_config: Option<Value>,
    /// `args` as raw JSON (e.g. `args.cni.ips`).
    pub args: Option<Value>,
    /// The whole document (plugin-specific fields live here).
    pub raw: Value,
    /// The stdin bytes unchanged — what is passed to a delegate.
    pub bytes: Vec<u8>,
}

impl NetConf {
    /// Parses stdin: not a JSON object or wrong types for well-known keys → code 6;
    /// missing/invalid `name` → code 7. The version is *not* checked here (see
    /// [`NetConf::negotiate`]) so errors can still be reported under it.
    pub fn parse(bytes: &[u8]) -> Result<Self, CniError> {
        let raw: Value = serde_json::from_slice(bytes)
            .map_err(|e| CniError::decode(format!("parsing network config from stdin: {e}")))?;
        if !raw.is_object() {
            return Err(CniError::decode(
                "parsing network config from stdin: not a JSON object",
            ));
        }
        let w = Wire::deserialize(&raw)
            .map_err(|e| CniError::decode(format!("parsing network config from stdin: {e}")))?;
        let cni_version = w.cni_version.unwrap_or_default();
        let version = cni_version.parse::<SpecVersion>().ok();
        let name = w.name.unwrap_or_default();
        let conf = NetConf {
            version: if cni_version.is_empty() {
                None
            } else {
                version
            },
            cni_version,
            name,
            plugin_type: w.plugin_type.unwrap_or_default(),
            ipam: w.ipam,
            dns: w.dns,
            prev_result: w.prev_result,
            runtime_config: w.runtime_config,
            args: w.args,
            raw,
            bytes: bytes.to_vec(),
        };
        conf.validate_name()?;
        Ok(conf)
    }

    fn validate_name(&self) -> Result<(), CniError> {
        if self.name.is_empty() {
            return Err(CniError::invalid_config("missing network name"));
        }
        if !is_valid_name(&self.name) {
            return Err(CniError::invalid_config(format!(
                "invalid characters in network name {:?} (must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$)",
                self.name
            )));
        }
        Ok(())
    }

    /// Checks the config's version against `supported` and the command's floor
    /// (CHECK needs ≥ 0.4.0, STATUS/GC ≥ 1.1.0); code 1 otherwise.
    pub fn negotiate(&self, command: Command, supported: &[&str]) -> Result<SpecVersion, CniError> {
        let version = self
            .version
            .filter(|v| {
                supported
                    .iter()
                    .any(|s| s.parse::<SpecVersion>().ok() == Some(*v))
            })
            .ok_or_else(|| {
                CniError::incompatible_version(format!(
                    "config cniVersion {:?} is not supported; plugin supports {supported:?}",
                    self.cni_version
                ))
            })?;
        let floor = match command {
            Command::Check => Some("0.4.0"),
            Command::Status | Command::Gc => Some("1.1.0"),
            _ => None,
        };
        if let Some(floor) = floor {
            let floor_v: SpecVersion = floor.parse().map_err(|_| {
                CniError::incompatible_version(format!("internal floor {floor} unparsable"))
            })?;
            if version < floor_v {
                return Err(CniError::incompatible_version(format!(
                    "config version {version} does not allow {command} (needs ≥ {floor})"
                )));
            }
        }
        Ok(version)
    }

    /// The version string errors are reported under: the config's if it parsed, else
    /// the current one.
    pub fn reported_version(&self) -> String {
        match self.version {
            Some(v) => v.to_string(),
            None => CURRENT_VERSION.to_string(),
        }
    }

    /// Deserializes the whole document into a plugin's own config type; shape errors
    /// are code 6 (decode), with serde's path in the details.
    pub fn plugin_config<T: DeserializeOwned>(&self) -> Result<T, CniError> {
        T::deserialize(&self.raw).map_err(|e| {
            CniError::decode(format!(
                "decoding {} config of network {:?}: {e}",
                self.plugin_type, self.name
            ))
        })
    }

    /// `ipam.type`, if any.
    pub fn ipam_type(&self) -> Option<&str> {
        self.ipam.as_ref()?.get("type")?.as_str()
    }

    /// `prevResult` parsed from whichever version shape it has (code 6 if malformed).
    pub fn prev_result(&self) -> Result<Option<CniResult>, CniError> {
        self.prev_result
            .as_ref()
            .map(|v| super::result::parse_result_value(v.clone()))
            .transpose()
    }

    /// A `runtimeConfig` key (capability argument), e.g. `"ips"`, `"mac"`.
    pub fn runtime(&self, key: &str) -> Option<&Value> {
        self.runtime_config.as_ref()?.get(key)
    }

    /// GC's attachment list: `cni.dev/valid-attachments` (spec 1.1), else the older
    /// `cni.dev/attachments`. Code 7 when neither is present — GC without a list
    /// would mean "everything is stale", which we never assume by accident.
    pub fn gc_attachments(&self) -> Result<Vec<Attachment>, CniError> {
        let list = self
            .raw
            .get("cni.dev/valid-attachments")
            .or_else(|| self.raw.get("cni.dev/attachments"))
            .ok_or_else(|| {
                CniError::invalid_config(format!(
                    "GC of network {:?}: config has neither cni.dev/valid-attachments nor cni.dev/attachments",
                    self.name
                ))
            })?;
        if list.is_null() {
            return Ok(Vec::new());
        }
        Vec::<Attachment>::deserialize(list).map_err(|e| {
            CniError::decode(format!(
                "GC of network {:?}: decoding valid-attachments: {e}",
                self.name
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<NetConf, CniError> {
        NetConf::parse(v.to_string().as_bytes())
    }

    #[test]
    fn parses_well_known_and_keeps_the_rest() {
        let c = parse(json!({
            "cniVersion": "1.1.0", "name": "net-1", "type": "podnet-bridge",
            "bridge": "cni0", "ipam": {"type": "podnet-ipam", "subnet": "10.1.0.0/24"},
            "dns": {"nameservers": ["10.96.0.10"]},
            "runtimeConfig": {"ips": ["10.1.0.9/24"]},
            "args": {"cni": {"ips": ["10.1.0.8"]}},
            "prevResult": {"cniVersion": "1.1.0", "ips": [{"address": "10.1.0.2/24"}]}
        }))
        .expect("valid");
        assert_eq!(c.version, Some("1.1.0".parse().expect("v")));
        assert_eq!(c.name, "net-1");
        assert_eq!(c.plugin_type, "podnet-bridge");
        assert_eq!(c.ipam_type(), Some("podnet-ipam"));
        assert_eq!(c.raw["bridge"], "cni0");
        assert_eq!(c.runtime("ips"), Some(&json!(["10.1.0.9/24"])));
        assert_eq!(c.args.as_ref().expect("args")["cni"]["ips"][0], "10.1.0.8");
        assert_eq!(c.dns.as_ref().expect("dns").nameservers, vec!["10.96.0.10"]);
        let prev = c.prev_result().expect("ok").expect("some");
        assert_eq!(prev.ips[0].address.to_string(), "10.1.0.2/24");
        #[derive(Deserialize)]
        struct Mine {
            bridge: String,
        }
        assert_eq!(c.plugin_config::<Mine>().expect("mine").bridge, "cni0");
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Wrong {
            bridge: u32,
        }
        assert_eq!(c.plugin_config::<Wrong>().expect_err("wrong").code, 6);
    }

    #[test]
    fn decode_errors_are_code_6() {
        for bad in [
            &b"{"[..],
            b"",
            b"[1]",
            b"\"s\"",
            br#"{"name":"n","cniVersion":5}"#,
        ] {
            assert_eq!(NetConf::parse(bad).expect_err("bad").code, 6, "{bad:?}");
        }
    }

    #[test]
    fn name_rules_are_code_7() {
        for bad in [
            json!({"cniVersion":"1.0.0"}),
            json!({"cniVersion":"1.0.0","name":""}),
            json!({"cniVersion":"1.0.0","name":"-x"}),
            json!({"cniVersion":"1.0.0","name":"a b"}),
            json!({"cniVersion":"1.0.0","name":"a/b"}),
        ] {
            assert_eq!(parse(bad.clone()).expect_err("bad name").code, 7, "{bad}");
        }
        assert!(parse(json!({"cniVersion":"1.0.0","name":"A0.b_c-d"})).is_ok());
    }

    #[test]
    fn version_negotiation() {
        let conf = |v: &str| parse(json!({"cniVersion": v, "name": "n"})).expect("conf");
        for v in SUPPORTED_VERSIONS {
            assert_eq!(
                conf(v)
                    .negotiate(Command::Add, &SUPPORTED_VERSIONS)
                    .expect(v)
                    .to_string(),
                v
            );
        }
        for bad in ["0.2.0", "0.1.0", "2.0.0", "1.2.0", "abc", ""] {
            let e = conf(bad)
                .negotiate(Command::Add, &SUPPORTED_VERSIONS)
                .expect_err(bad);
            assert_eq!(e.code, 1, "{bad}");
        }
        // CHECK needs 0.4.0+.
        for (v, ok) in [
            ("0.3.0", false),
            ("0.3.1", false),
            ("0.4.0", true),
            ("1.0.0", true),
        ] {
            assert_eq!(
                conf(v)
                    .negotiate(Command::Check, &SUPPORTED_VERSIONS)
                    .is_ok(),
                ok,
                "{v}"
            );
        }
        // STATUS and GC need 1.1.0.
        for cmd in [Command::Status, Command::Gc] {
            assert_eq!(
                conf("1.0.0")
                    .negotiate(cmd, &SUPPORTED_VERSIONS)
                    .expect_err("1.0")
                    .code,
                1
            );
            assert!(conf("1.1.0").negotiate(cmd, &SUPPORTED_VERSIONS).is_ok());
        }
        // A plugin may support fewer versions.
        assert_eq!(
            conf("0.3.1")
                .negotiate(Command::Add, &["1.0.0"])
                .expect_err("narrow")
                .code,
            1
        );
        assert_eq!(conf("abc").reported_version(), CURRENT_VERSION);
        assert_eq!(conf("0.4.0").reported_version(), "0.4.0");
    }

    #[test]
    fn gc_attachments_both_keys() {
        let c = parse(json!({"cniVersion":"1.1.0","name":"n",
            "cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"},{"containerID":"c2","ifname":"net1"}]}))
            .expect("conf");
        assert_eq!(
            c.gc_attachments().expect("list"),
            vec![
                Attachment {
                    container_id: "c1".into(),
                    ifname: "eth0".into()
                },
                Attachment {
                    container_id: "c2".into(),
                    ifname: "net1".into()
                }
            ]
        );
        let old = parse(json!({"cniVersion":"1.1.0","name":"n",
            "cni.dev/attachments":[{"containerID":"c3","ifname":"eth0"}]}))
        .expect("conf");
        assert_eq!(old.gc_attachments().expect("list")[0].container_id, "c3");
        let empty = parse(json!({"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[]}))
            .expect("conf");
        assert!(empty.gc_attachments().expect("empty").is_empty());
        let none = parse(json!({"cniVersion":"1.1.0","name":"n"})).expect("conf");
        assert_eq!(none.gc_attachments().expect_err("missing").code, 7);
        let bad =
            parse(json!({"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[{"x":1}]}))
                .expect("conf");
        assert_eq!(bad.gc_attachments().expect_err("bad").code, 6);
    }
}
