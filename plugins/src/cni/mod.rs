//! The CNI protocol layer (spec 1.1.0, accepting configs 0.3.0 … 1.1.0) shared by every
//! podnet plugin.
//!
//! - `env`: `CNI_*` variables, validated per command (code 4).
//! - `conf`: the stdin network config (decode 6, name 7), version negotiation (1),
//!   GC attachment lists.
//! - `result`: the ADD result, parsed from any version and rendered in the requested one.
//! - `error`: [`CniError`] and the spec's codes.
//! - `run`: the [`Plugin`] trait and [`run`], the whole `main` of a plugin binary.
//! - `delegate`: executing IPAM (or any plugin) from `CNI_PATH`.
//!
//! Result/route/interface/DNS types and version parsing come from `rscni-types`
//! (re-exported here), so every plugin and test shares one wire format.

mod conf;
mod delegate;
mod env;
mod error;
mod result;
mod run;

pub use conf::{Attachment, NetConf, CURRENT_VERSION, SUPPORTED_VERSIONS};
pub use delegate::{
    delegate_add, delegate_check, delegate_del, delegate_gc, delegate_status, exec_plugin,
    find_plugin,
};
pub use env::{
    is_valid_name, parse_cni_args, validate_container_id, validate_ifname, CniEnv, Command,
    MAX_IFNAME_LEN,
};
pub use error::{code, CniError};
pub use result::{parse_result, parse_result_value, render_result};
pub use run::{run, run_with, Plugin, Request};

pub use rscni_types::ipnet;
pub use rscni_types::types::{Dns, Interface, IpConfig, Route};
pub use rscni_types::version::SpecVersion;

/// The ADD result (current layout; see [`render_result`] for other versions).
pub type CniResult = rscni_types::types::CNIResult;
