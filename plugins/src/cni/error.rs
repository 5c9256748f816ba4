//! The CNI error result: `{"cniVersion","code","msg","details"}` with the spec's codes.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Error codes defined by the CNI spec (1.1.0, "Error" section). Codes 1-99 are reserved
/// for the spec; plugins use 100 and above for their own.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN: u32 = 11;
    /// STATUS: plugin not available (cannot service ADD).
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: plugin not available, existing containers may have limited connectivity.
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// First code a plugin may define for itself.
    pub const PLUGIN_BASE: u32 = 100;
}

/// A CNI error as printed on stdout by a failing plugin (and read back from a delegate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("CNI error {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    /// Numeric spec code (see [`code`]).
    pub code: u32,
    /// Short message characterizing the error.
    pub msg: String,
    /// Longer message: what was being done, with what.
    #[serde(default)]
    pub details: String,
}

impl CniError {
    /// An error with an explicit code.
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// Code 1: the config's cniVersion is not supported (or not allowed for this command).
    pub fn incompatible_version(details: impl Into<String>) -> Self {
        Self::new(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            details,
        )
    }

    /// Code 2: a configuration field the plugin does not support.
    pub fn unsupported_field(details: impl Into<String>) -> Self {
        Self::new(
            code::UNSUPPORTED_FIELD,
            "unsupported field in network configuration",
            details,
        )
    }

    /// Code 3: the container is unknown or does not exist.
    pub fn unknown_container(details: impl Into<String>) -> Self {
        Self::new(
            code::UNKNOWN_CONTAINER,
            "container unknown or does not exist",
            details,
        )
    }

    /// Code 4: a required `CNI_*` variable is missing or invalid.
    pub fn invalid_env(details: impl Into<String>) -> Self {
        Self::new(
            code::INVALID_ENV,
            "invalid necessary environment variables",
            details,
        )
    }

    /// Code 5: an I/O operation (file, exec, netlink socket) failed.
    pub fn io(details: impl Into<String>) -> Self {
        Self::new(code::IO_FAILURE, "I/O failure", details)
    }

    /// Code 6: stdin (or a delegate's output) is not valid JSON of the expected shape.
    pub fn decode(details: impl Into<String>) -> Self {
        Self::new(code::DECODE, "failed to decode content", details)
    }

    /// Code 7: the network configuration is well-formed JSON but invalid.
    pub fn invalid_config(details: impl Into<String>) -> Self {
        Self::new(code::INVALID_CONFIG, "invalid network config", details)
    }

    /// Code 11: transient condition; the runtime should retry later.
    pub fn try_again(details: impl Into<String>) -> Self {
        Self::new(code::TRY_AGAIN, "try again later", details)
    }

    /// Code 50 (STATUS): the plugin cannot service ADD requests.
    pub fn not_available(details: impl Into<String>) -> Self {
        Self::new(code::NOT_AVAILABLE, "plugin not available", details)
    }

    /// Code 51 (STATUS): not available, and existing containers may be impaired.
    pub fn limited_connectivity(details: impl Into<String>) -> Self {
        Self::new(
            code::LIMITED_CONNECTIVITY,
            "plugin not available, limited connectivity",
            details,
        )
    }

    /// A plugin-defined error; `code` must be ≥ 100 (smaller codes are clamped to 100
    /// so a plugin can never claim a reserved meaning by accident).
    pub fn plugin(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(code.max(code::PLUGIN_BASE), msg, details)
    }

    /// The spec's error JSON, reported under `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> Value {
        json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
    }

    /// Parses a plugin's error output (as printed by a failing delegate). The reference
    /// implementation omits `cniVersion` and sometimes `details`; both are optional here.
    pub fn from_json(bytes: &[u8]) -> Option<Self> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        let code = u32::try_from(v.get("code")?.as_u64()?).ok()?;
        let msg = v.get("msg").and_then(Value::as_str).unwrap_or_default();
        let details = v.get("details").and_then(Value::as_str).unwrap_or_default();
        Some(Self::new(code, msg, details))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_carry_spec_codes() {
        let cases = [
            (CniError::incompatible_version("x"), 1),
            (CniError::unsupported_field("x"), 2),
            (CniError::unknown_container("x"), 3),
            (CniError::invalid_env("x"), 4),
            (CniError::io("x"), 5),
            (CniError::decode("x"), 6),
            (CniError::invalid_config("x"), 7),
            (CniError::try_again("x"), 11),
            (CniError::not_available("x"), 50),
            (CniError::limited_connectivity("x"), 51),
            (CniError::plugin(120, "m", "x"), 120),
            (CniError::plugin(3, "m", "x"), 100),
        ];
        for (e, c) in cases {
            assert_eq!(e.code, c, "{e}");
            assert_eq!(e.details, "x");
        }
    }

    #[test]
    fn error_json_shape_and_round_trip() {
        let e = CniError::invalid_config("no ranges");
        let v = e.to_json("0.4.0");
        assert_eq!(
            v,
            json!({"cniVersion":"0.4.0","code":7,"msg":"invalid network config","details":"no ranges"})
        );
        let back = CniError::from_json(v.to_string().as_bytes()).expect("parses");
        assert_eq!(back, e);
    }

    #[test]
    fn reads_reference_error_without_version_or_details() {
        let e = CniError::from_json(br#"{"code":11,"msg":"busy"}"#).expect("parses");
        assert_eq!(e, CniError::new(11, "busy", ""));
        assert!(CniError::from_json(b"not json").is_none());
        assert!(CniError::from_json(br#"{"msg":"no code"}"#).is_none());
    }

    #[test]
    fn display_mentions_code_msg_details() {
        let s = CniError::io("writing /x: disk full").to_string();
        assert_eq!(s, "CNI error 5: I/O failure: writing /x: disk full");
    }
}
