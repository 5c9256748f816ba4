//! Runs a CNI network configuration list the way a container runtime does
//! (libcni's `AddNetworkList` / `DelNetworkList`): each plugin in turn, with
//! the list's `name` and `cniVersion` injected and the previous plugin's
//! result passed on as `prevResult`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

pub struct CniCall<'a> {
    /// Namespace playing the node: plugins run inside it, as a runtime would on the host.
    pub host_netns: &'a str,
    pub container_id: &'a str,
    pub netns_path: &'a Path,
    pub ifname: &'a str,
    /// `CNI_PATH`: where plugin binaries are looked up.
    pub cni_path: &'a str,
}

/// ADD through the whole list; returns the last plugin's result.
pub fn add_list(conflist: &Value, call: &CniCall) -> Result<Value> {
    let mut prev: Option<Value> = None;
    for conf in plugin_confs(conflist)? {
        let mut conf = conf;
        if let Some(p) = &prev {
            conf["prevResult"] = p.clone();
        }
        let out = exec_plugin("ADD", &conf, call)?;
        prev = Some(out);
    }
    prev.context("conflist has no plugins")
}

/// DEL through the list in reverse order. Errors are collected, not fatal,
/// so that one broken plugin does not leave the others' state behind.
pub fn del_list(conflist: &Value, call: &CniCall) -> Result<()> {
    let mut errors = Vec::new();
    for conf in plugin_confs(conflist)?.into_iter().rev() {
        if let Err(e) = exec_plugin("DEL", &conf, call) {
            errors.push(format!("{e:#}"));
        }
    }
    if !errors.is_empty() {
        bail!("CNI DEL: {}", errors.join("; "));
    }
    Ok(())
}

fn plugin_confs(conflist: &Value) -> Result<Vec<Value>> {
    let name = conflist["name"].clone();
    let version = conflist["cniVersion"].clone();
    let plugins = conflist["plugins"]
        .as_array()
        .context("conflist has no plugins array")?;
    Ok(plugins
        .iter()
        .map(|p| {
            let mut c = p.clone();
            c["name"] = name.clone();
            c["cniVersion"] = version.clone();
            c
        })
        .collect())
}

fn exec_plugin(command: &str, conf: &Value, call: &CniCall) -> Result<Value> {
    let ty = conf["type"]
        .as_str()
        .context("plugin config without type")?;
    let binary = call
        .cni_path
        .split(':')
        .map(|d| Path::new(d).join(ty))
        .find(|p| p.exists())
        .with_context(|| format!("CNI plugin {ty} not found on {}", call.cni_path))?;
    let mut child = Command::new("ip")
        .args(["netns", "exec", call.host_netns])
        .arg(&binary)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", call.container_id)
        .env("CNI_NETNS", call.netns_path)
        .env("CNI_IFNAME", call.ifname)
        .env("CNI_PATH", call.cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", binary.display()))?;
    child
        .stdin
        .take()
        .context("plugin stdin")?
        .write_all(&serde_json::to_vec(conf)?)?;
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{ty} {command} for {} failed ({}): {} {}",
            call.container_id,
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if stdout.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&stdout)
        .with_context(|| format!("parsing {ty} {command} result {stdout:?}"))
}

/// The first IPv4 address (without prefix) of a CNI result.
pub fn first_ipv4(result: &Value) -> Option<String> {
    result["ips"].as_array()?.iter().find_map(|ip| {
        let addr = ip["address"].as_str()?.split('/').next()?.to_string();
        addr.contains('.').then_some(addr)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn confs_get_list_name_and_version() {
        let list =
            json!({"cniVersion":"1.0.0","name":"lab","plugins":[{"type":"a"},{"type":"b","x":1}]});
        let confs = plugin_confs(&list).unwrap();
        assert_eq!(confs.len(), 2);
        assert_eq!(
            confs[1],
            json!({"type":"b","x":1,"name":"lab","cniVersion":"1.0.0"})
        );
    }

    #[test]
    fn first_ipv4_skips_v6() {
        let r = json!({"ips":[{"address":"fd00::5/64"},{"address":"10.244.1.5/24"}]});
        assert_eq!(first_ipv4(&r).as_deref(), Some("10.244.1.5"));
        assert_eq!(first_ipv4(&json!({})), None);
    }
}
