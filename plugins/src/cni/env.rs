//! The `CNI_*` environment: parsing and validation as the spec (and the reference skel)
//! do it. Which variables are required depends on the command.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::CniError;

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    /// The wire spelling (`ADD`, `DEL`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    /// (containerID, netns, ifname, path) required? — the reference skel's table.
    fn required(self) -> (bool, bool, bool, bool) {
        match self {
            Command::Add | Command::Check => (true, true, true, true),
            Command::Del => (true, false, true, true),
            Command::Status | Command::Gc => (false, false, false, true),
            Command::Version => (false, false, false, false),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Command {
    type Err = CniError;
    fn from_str(s: &str) -> Result<Self, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            other => {
                return Err(CniError::invalid_env(format!(
                "unknown CNI_COMMAND {other:?} (expected ADD, DEL, CHECK, STATUS, GC or VERSION)"
            )))
            }
        })
    }
}

/// The validated `CNI_*` environment of one invocation. Variables a command does not
/// require are still parsed (and validated) when present; absent ones are empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    pub command: Command,
    /// `CNI_CONTAINERID`; empty when absent (STATUS, GC, VERSION).
    pub container_id: String,
    /// `CNI_NETNS`; absent for DEL after the netns is gone, STATUS, GC.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`; empty when absent.
    pub ifname: String,
    /// `CNI_ARGS` as given (for delegation), parsed in [`CniEnv::args`].
    pub args_raw: String,
    /// `CNI_ARGS` parsed: `K=V;K=V`, in order.
    pub args: Vec<(String, String)>,
    /// `CNI_PATH` split on `:`; empty entries dropped.
    pub path: Vec<PathBuf>,
}

impl CniEnv {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, CniError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Parses and validates from any lookup (tests, runtimes assembling an env).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        let Some(cmd) = get("CNI_COMMAND") else {
            return Err(CniError::invalid_env(
                "required env variables [CNI_COMMAND] missing",
            ));
        };
        let command: Command = cmd.parse()?;
        let (need_id, need_netns, need_if, need_path) = command.required();
        let mut missing = Vec::new();
        let container_id = get("CNI_CONTAINERID");
        let netns = get("CNI_NETNS");
        let ifname = get("CNI_IFNAME");
        let path = get("CNI_PATH");
        for (need, val, name) in [
            (need_id, &container_id, "CNI_CONTAINERID"),
            (need_netns, &netns, "CNI_NETNS"),
            (need_if, &ifname, "CNI_IFNAME"),
            (need_path, &path, "CNI_PATH"),
        ] {
            if need && val.is_none() {
                missing.push(name);
            }
        }
        if !missing.is_empty() {
            return Err(CniError::invalid_env(format!(
                "required env variables [{}] missing for {command}",
                missing.join(",")
            )));
        }
        let container_id = container_id.unwrap_or_default();
        if !container_id.is_empty() {
            validate_container_id(&container_id)?;
        }
        let ifname = ifname.unwrap_or_default();
        if !ifname.is_empty() {
            validate_ifname(&ifname)?;
        }
        let args_raw = get("CNI_ARGS").unwrap_or_default();
        let args = parse_cni_args(&args_raw)?;
        let path = path
            .unwrap_or_default()
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        Ok(CniEnv {
            command,
            container_id,
            netns: netns.map(PathBuf::from),
            ifname,
            args_raw,
            args,
            path,
        })
    }

    /// The value of `key` in `CNI_ARGS` (last occurrence wins, like the reference).
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The `CNI_*` variables of this env with `command` as `CNI_COMMAND` — what a
    /// delegate is executed with. Absent values are returned as empty strings so the
    /// caller can clear them from an inherited environment.
    pub fn to_vars(&self, command: Command) -> Vec<(&'static str, String)> {
        vec![
            ("CNI_COMMAND", command.as_str().to_string()),
            ("CNI_CONTAINERID", self.container_id.clone()),
            (
                "CNI_NETNS",
                self.netns
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            ("CNI_IFNAME", self.ifname.clone()),
            ("CNI_ARGS", self.args_raw.clone()),
            (
                "CNI_PATH",
                self.path
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":"),
            ),
        ]
    }
}

/// The spec's name rule, shared by container IDs and network names:
/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub fn is_valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `CNI_CONTAINERID` must match the name rule (code 4 otherwise).
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    if is_valid_name(id) {
        Ok(())
    } else {
        Err(CniError::invalid_env(format!(
            "invalid characters in CNI_CONTAINERID {id:?} (must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$)"
        )))
    }
}

/// Maximum Linux interface name length (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// `CNI_IFNAME`: non-empty, ≤ 15 bytes, not `.`/`..`, no `/`, `:` or whitespace (code 4).
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let bad = |why: &str| Err(CniError::invalid_env(format!("CNI_IFNAME {name:?} {why}")));
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > MAX_IFNAME_LEN {
        return bad(&format!("is longer than {MAX_IFNAME_LEN} characters"));
    }
    if name == "." || name == ".." {
        return bad("is . or ..");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return bad("contains / or : or whitespace");
    }
    Ok(())
}

/// `CNI_ARGS`: `K=V;K=V`; empty segments are ignored, a segment without `=` is an
/// invalid env (code 4). Values may contain `=`.
pub fn parse_cni_args(raw: &str) -> Result<Vec<(String, String)>, CniError> {
    raw.split(';')
        .filter(|s| !s.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(CniError::invalid_env(format!(
                "CNI_ARGS {raw:?}: pair {pair:?} is not KEY=VALUE"
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Result<CniEnv, CniError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CniEnv::from_lookup(|k| m.get(k).cloned())
    }

    const FULL: &[(&str, &str)] = &[
        ("CNI_CONTAINERID", "abc-1.2_x"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin::/usr/lib/cni"),
        ("CNI_ARGS", "IgnoreUnknown=1;IP=10.0.0.5;;K8S_POD_NAME=a=b"),
    ];

    fn with(cmd: &str, extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, String)> {
        let mut v: Vec<(&str, String)> = vec![("CNI_COMMAND", cmd.to_string())];
        v.extend(extra.iter().map(|(k, val)| (*k, val.to_string())));
        v
    }

    fn env_of(v: &[(&'static str, String)]) -> Result<CniEnv, CniError> {
        let refs: Vec<(&str, &str)> = v.iter().map(|(k, s)| (*k, s.as_str())).collect();
        env(&refs)
    }

    #[test]
    fn full_add_env_parses() {
        let e = env_of(&with("ADD", FULL)).expect("valid");
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.container_id, "abc-1.2_x");
        assert_eq!(e.netns, Some(PathBuf::from("/run/netns/x")));
        assert_eq!(e.ifname, "eth0");
        assert_eq!(
            e.path,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
        assert_eq!(e.arg("IP"), Some("10.0.0.5"));
        assert_eq!(e.arg("K8S_POD_NAME"), Some("a=b"));
        assert_eq!(e.arg("nope"), None);
        assert_eq!(e.args.len(), 3);
    }

    #[test]
    fn required_vars_depend_on_command() {
        // DEL does not need a netns (it may be gone).
        let no_netns: Vec<_> = FULL
            .iter()
            .filter(|(k, _)| *k != "CNI_NETNS")
            .copied()
            .collect();
        assert!(env_of(&with("DEL", &no_netns)).is_ok());
        let e = env_of(&with("ADD", &no_netns)).expect_err("ADD needs netns");
        assert_eq!(e.code, 4);
        assert!(e.details.contains("CNI_NETNS"), "{e}");
        assert_eq!(
            env_of(&with("CHECK", &no_netns)).expect_err("CHECK").code,
            4
        );
        // STATUS and GC need only CNI_PATH.
        for cmd in ["STATUS", "GC"] {
            assert!(env_of(&with(cmd, &[("CNI_PATH", "/x")])).is_ok(), "{cmd}");
            assert_eq!(env_of(&with(cmd, &[])).expect_err(cmd).code, 4);
        }
        // VERSION needs nothing.
        assert!(env_of(&with("VERSION", &[])).is_ok());
        // DEL without container id or ifname.
        for drop in ["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"] {
            let v: Vec<_> = FULL.iter().filter(|(k, _)| *k != drop).copied().collect();
            let e = env_of(&with("DEL", &v)).expect_err(drop);
            assert_eq!(e.code, 4);
            assert!(e.details.contains(drop), "{e}");
        }
    }

    #[test]
    fn missing_or_unknown_command_is_code_4() {
        assert_eq!(env(FULL).expect_err("missing").code, 4);
        assert_eq!(env_of(&with("FOO", FULL)).expect_err("unknown").code, 4);
        assert_eq!(env_of(&with("add", FULL)).expect_err("lowercase").code, 4);
    }

    #[test]
    fn container_id_pattern() {
        for ok in ["a", "0abc", "a.b-c_d", "ABC123"] {
            assert!(validate_container_id(ok).is_ok(), "{ok}");
        }
        for bad in ["-a", ".a", "_a", "a/b", "a b", "a:b", "ä"] {
            assert_eq!(validate_container_id(bad).expect_err(bad).code, 4, "{bad}");
        }
        let mut v = with("ADD", FULL);
        v[1].1 = "bad/id".into();
        assert_eq!(env_of(&v).expect_err("bad id").code, 4);
    }

    #[test]
    fn ifname_rules() {
        for ok in ["eth0", "a", "net1.100", "x-y_z", "abcdefghijklmno"] {
            assert!(validate_ifname(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "abcdefghijklmnop",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "a\nb",
        ] {
            assert_eq!(validate_ifname(bad).expect_err(bad).code, 4, "{bad:?}");
        }
    }

    #[test]
    fn cni_args_parsing() {
        assert_eq!(parse_cni_args("").expect("empty"), vec![]);
        assert_eq!(
            parse_cni_args("A=1;B=;C=x=y;").expect("ok"),
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "".into()),
                ("C".into(), "x=y".into())
            ]
        );
        assert_eq!(parse_cni_args("A=1;junk").expect_err("junk").code, 4);
        assert_eq!(parse_cni_args("=v").expect_err("no key").code, 4);
    }

    #[test]
    fn to_vars_round_trips() {
        let e = env_of(&with("ADD", FULL)).expect("valid");
        let vars = e.to_vars(Command::Del);
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let back = CniEnv::from_lookup(|k| m.get(k).cloned()).expect("round trip");
        assert_eq!(back.command, Command::Del);
        assert_eq!(back.container_id, e.container_id);
        assert_eq!(back.netns, e.netns);
        assert_eq!(back.ifname, e.ifname);
        assert_eq!(back.args, e.args);
        assert_eq!(back.path, e.path);
    }
}
