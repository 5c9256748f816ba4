//! Delegation: executing another plugin (normally IPAM) found on `CNI_PATH` with the same
//! env and config, as the spec's "delegated plugins" section describes.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

use super::{parse_result, CniEnv, CniError, CniResult, Command};

/// Finds the executable `plugin_type` in `path` (first match wins). An invalid type name
/// or a missing binary is a configuration error (code 7).
pub fn find_plugin(plugin_type: &str, path: &[PathBuf]) -> Result<PathBuf, CniError> {
    if plugin_type.is_empty()
        || plugin_type.contains('/')
        || plugin_type.contains('\\')
        || plugin_type == "."
        || plugin_type == ".."
    {
        return Err(CniError::invalid_config(format!(
            "invalid plugin type {plugin_type:?}: must be a file name"
        )));
    }
    for dir in path {
        let candidate = dir.join(plugin_type);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    Err(CniError::invalid_config(format!(
        "failed to find plugin {plugin_type:?} in CNI_PATH {:?}",
        path.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    )))
}

/// Executes `binary` with `command`, the `CNI_*` vars of `env` and `conf` on stdin.
/// Returns stdout on success; on failure the delegate's error JSON unchanged, or an
/// I/O error (code 5) if it could not be run or printed no parsable error.
pub fn exec_plugin(
    binary: &Path,
    command: Command,
    conf: &[u8],
    env: &CniEnv,
) -> Result<Vec<u8>, CniError> {
    let mut proc = Process::new(binary);
    for (k, v) in env.to_vars(command) {
        if v.is_empty() {
            proc.env_remove(k);
        } else {
            proc.env(k, v);
        }
    }
    let mut child = proc
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CniError::io(format!("executing delegate {}: {e}", binary.display())))?;
    // Write stdin from a thread so a delegate that prints before reading cannot
    // deadlock us on a full pipe.
    let mut stdin = child.stdin.take();
    let conf = conf.to_vec();
    let writer = std::thread::spawn(move || {
        if let Some(s) = stdin.as_mut() {
            // A delegate that exits without reading stdin is judged by its exit status.
            let _ = s.write_all(&conf);
        }
    });
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::io(format!("waiting for delegate {}: {e}", binary.display())))?;
    let _ = writer.join();
    if !out.stderr.is_empty() {
        // Pass the delegate's logs through to the runtime's log of us.
        let _ = std::io::stderr().write_all(&out.stderr);
    }
    if out.status.success() {
        return Ok(out.stdout);
    }
    if let Some(e) = CniError::from_json(&out.stdout) {
        return Err(e);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    Err(CniError::io(format!(
        "delegate {} {command} failed ({}) without an error result; stdout {:?}; stderr {:?}",
        binary.display(),
        out.status,
        stdout.trim(),
        stderr.trim()
    )))
}

fn delegate(
    plugin_type: &str,
    command: Command,
    conf: &[u8],
    env: &CniEnv,
) -> Result<Vec<u8>, CniError> {
    let binary = find_plugin(plugin_type, &env.path)?;
    exec_plugin(&binary, command, conf, env)
}

/// Delegated ADD: returns the delegate's result (any supported version's shape).
pub fn delegate_add(plugin_type: &str, conf: &[u8], env: &CniEnv) -> Result<CniResult, CniError> {
    let out = delegate(plugin_type, Command::Add, conf, env)?;
    parse_result(&out).map_err(|e| {
        CniError::new(
            e.code,
            e.msg,
            format!("result of delegate {plugin_type} ADD: {}", e.details),
        )
    })
}

/// Delegated DEL.
pub fn delegate_del(plugin_type: &str, conf: &[u8], env: &CniEnv) -> Result<(), CniError> {
    delegate(plugin_type, Command::Del, conf, env).map(drop)
}

/// Delegated CHECK.
pub fn delegate_check(plugin_type: &str, conf: &[u8], env: &CniEnv) -> Result<(), CniError> {
    delegate(plugin_type, Command::Check, conf, env).map(drop)
}

/// Delegated STATUS.
pub fn delegate_status(plugin_type: &str, conf: &[u8], env: &CniEnv) -> Result<(), CniError> {
    delegate(plugin_type, Command::Status, conf, env).map(drop)
}

/// Delegated GC (the config carries `cni.dev/valid-attachments`).
pub fn delegate_gc(plugin_type: &str, conf: &[u8], env: &CniEnv) -> Result<(), CniError> {
    delegate(plugin_type, Command::Gc, conf, env).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn script(dir: &Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    fn env(path: &Path) -> CniEnv {
        let m: HashMap<&str, String> = [
            ("CNI_COMMAND", "ADD".to_string()),
            ("CNI_CONTAINERID", "ctr1".to_string()),
            ("CNI_NETNS", "/run/netns/x".to_string()),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_ARGS", "IP=10.0.0.9".to_string()),
            ("CNI_PATH", format!("/nonexistent:{}", path.display())),
        ]
        .into_iter()
        .collect();
        CniEnv::from_lookup(|k| m.get(k).cloned()).expect("env")
    }

    #[test]
    fn add_passes_env_and_stdin_and_parses_result() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Echo the env and the stdin back inside the result so we can check both.
        script(
            dir.path(),
            "echo-ipam",
            r#"conf=$(cat)
printf '{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.9/24"}],"dns":{"nameservers":["%s"],"search":["%s","%s","%s","%s"],"domain":%s}}' \
  "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_IFNAME" "$CNI_ARGS" "$CNI_NETNS" "$conf""#,
        );
        let r = delegate_add("echo-ipam", br#""the-conf""#, &env(dir.path())).expect("add");
        assert_eq!(r.ips[0].address.to_string(), "10.0.0.9/24");
        let dns = r.dns.expect("dns");
        assert_eq!(dns.nameservers, vec!["ADD"]);
        assert_eq!(
            dns.search.expect("search"),
            vec!["ctr1", "eth0", "IP=10.0.0.9", "/run/netns/x"]
        );
        assert_eq!(dns.domain.as_deref(), Some("the-conf"));
    }

    #[test]
    fn command_is_overridden_and_errors_pass_through_unchanged() {
        let dir = tempfile::tempdir().expect("tempdir");
        script(
            dir.path(),
            "failer",
            r#"cat >/dev/null; echo "{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"busy $CNI_COMMAND\",\"details\":\"d\"}"; exit 1"#,
        );
        let e = delegate_del("failer", b"{}", &env(dir.path())).expect_err("fails");
        assert_eq!(e, CniError::new(11, "busy DEL", "d"));
        let e = delegate_gc("failer", b"{}", &env(dir.path())).expect_err("fails");
        assert_eq!(e.msg, "busy GC");
    }

    #[test]
    fn missing_plugin_is_code_7_and_garbage_is_code_5() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = delegate_add("nope", b"{}", &env(dir.path())).expect_err("missing");
        assert_eq!(e.code, 7);
        assert!(e.details.contains("nope"), "{e}");
        assert_eq!(
            find_plugin("../x", &[dir.path().into()])
                .expect_err("path")
                .code,
            7
        );
        assert_eq!(
            find_plugin("", &[dir.path().into()])
                .expect_err("empty")
                .code,
            7
        );
        // Not executable → not found.
        std::fs::write(dir.path().join("plain"), "x").expect("write");
        assert_eq!(
            find_plugin("plain", &[dir.path().into()])
                .expect_err("noexec")
                .code,
            7
        );
        script(dir.path(), "crasher", "echo oops >&2; exit 3");
        let e = delegate_status("crasher", b"{}", &env(dir.path())).expect_err("crash");
        assert_eq!(e.code, 5);
        assert!(e.details.contains("oops"), "{e}");
        script(
            dir.path(),
            "badresult",
            "cat >/dev/null; echo '{\"ips\":[{\"address\":\"zz\"}]}'",
        );
        let e = delegate_add("badresult", b"{}", &env(dir.path())).expect_err("bad result");
        assert_eq!(e.code, 6);
        script(dir.path(), "ok", "cat >/dev/null");
        delegate_check("ok", b"{}", &env(dir.path())).expect("check ok");
    }
}
