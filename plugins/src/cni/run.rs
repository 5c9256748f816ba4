//! The plugin entry point: env + stdin → dispatch → result/error JSON on stdout.

use std::io::{Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde_json::{json, Value};

use super::conf::{CURRENT_VERSION, SUPPORTED_VERSIONS};
use super::{render_result, CniEnv, CniError, CniResult, Command, NetConf, SpecVersion};

/// Everything a plugin needs for one call.
#[derive(Debug, Clone)]
pub struct Request {
    pub env: CniEnv,
    pub conf: NetConf,
    /// The negotiated version (the config's), which the result is rendered in.
    pub version: SpecVersion,
}

/// A CNI plugin. `run` has already validated the env, decoded the config, checked the
/// version (and its per-command floor) before any method is called.
pub trait Plugin {
    /// Versions this plugin accepts; VERSION reports them.
    fn supported_versions(&self) -> &[&'static str] {
        &SUPPORTED_VERSIONS
    }
    /// ADD: set up the attachment and return its result (rendered by `run`).
    fn add(&self, req: &Request) -> Result<CniResult, CniError>;
    /// DEL: tear down; must succeed when things are already gone.
    fn del(&self, req: &Request) -> Result<(), CniError>;
    /// CHECK: verify the attachment still matches `prevResult`.
    fn check(&self, req: &Request) -> Result<(), CniError>;
    /// STATUS: `Ok` if ADD could succeed now (code 50/51 otherwise).
    fn status(&self, req: &Request) -> Result<(), CniError>;
    /// GC: release everything not in `req.conf.gc_attachments()`.
    fn gc(&self, req: &Request) -> Result<(), CniError>;
}

/// Code for a panic inside a plugin (the reference's "internal error").
const INTERNAL: u32 = 999;

/// Runs `plugin` as the process's CNI plugin: reads env and stdin, writes stdout,
/// returns the exit code (0 success, 1 error). A binary's `main` is
/// `std::process::exit(cni::run(&MyPlugin))`.
pub fn run<P: Plugin + ?Sized>(plugin: &P) -> i32 {
    init_logging();
    let mut stdout = std::io::stdout().lock();
    run_with(
        plugin,
        |k| std::env::var(k).ok(),
        &mut std::io::stdin().lock(),
        &mut stdout,
    )
}

/// Logs go to stderr (stdout is the protocol); level from `PODNET_LOG` (default warn).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PODNET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Runtimes store plugin stderr in their logs; no terminal colours there.
        .with_ansi(false)
        .try_init();
}

/// [`run`] with injectable env lookup and streams (for tests and in-process runtimes).
pub fn run_with<P: Plugin + ?Sized>(
    plugin: &P,
    lookup: impl Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
) -> i32 {
    let (out, code) = match dispatch(plugin, lookup, stdin) {
        Ok(v) => (v, 0),
        Err((version, e)) => {
            tracing::warn!(code = e.code, msg = %e.msg, details = %e.details, "CNI call failed");
            (Some(e.to_json(&version)), 1)
        }
    };
    if let Some(out) = out {
        // Nothing sensible is left to do if stdout is gone; the exit code still tells.
        let _ = writeln!(stdout, "{out}");
        let _ = stdout.flush();
    }
    code
}

type Failure = (String, CniError);

fn dispatch<P: Plugin + ?Sized>(
    plugin: &P,
    lookup: impl Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
) -> Result<Option<Value>, Failure> {
    let current = || CURRENT_VERSION.to_string();
    let env = CniEnv::from_lookup(lookup).map_err(|e| (current(), e))?;
    if env.command == Command::Version {
        // Like the reference skel, VERSION does not read stdin.
        return Ok(Some(json!({
            "cniVersion": CURRENT_VERSION,
            "supportedVersions": plugin.supported_versions(),
        })));
    }
    let mut bytes = Vec::new();
    stdin.read_to_end(&mut bytes).map_err(|e| {
        (
            current(),
            CniError::io(format!("reading network config from stdin: {e}")),
        )
    })?;
    let conf = NetConf::parse(&bytes).map_err(|e| (current(), e))?;
    let reported = conf.reported_version();
    let version = conf
        .negotiate(env.command, plugin.supported_versions())
        .map_err(|e| (reported.clone(), e))?;
    let req = Request { env, conf, version };
    tracing::debug!(command = %req.env.command, container = %req.env.container_id,
        ifname = %req.env.ifname, network = %req.conf.name, "CNI call");
    let outcome = catch_unwind(AssertUnwindSafe(|| match req.env.command {
        Command::Add => plugin.add(&req).map(|r| Some(render_result(&r, version))),
        Command::Del => plugin.del(&req).map(|()| None),
        Command::Check => plugin.check(&req).map(|()| None),
        Command::Status => plugin.status(&req).map(|()| None),
        Command::Gc => plugin.gc(&req).map(|()| None),
        Command::Version => Ok(None),
    }));
    match outcome {
        Ok(r) => r.map_err(|e| (reported, e)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err((
                reported,
                CniError::plugin(
                    INTERNAL,
                    "internal error",
                    format!("plugin panicked: {what}"),
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Records calls; ADD returns a fixed result, GC echoes attachments into `seen`.
    #[derive(Default)]
    struct Fake {
        seen: Mutex<Vec<String>>,
    }

    impl Plugin for Fake {
        fn add(&self, req: &Request) -> Result<CniResult, CniError> {
            self.seen
                .lock()
                .expect("lock")
                .push(format!("add {}", req.env.container_id));
            super::super::parse_result(
                br#"{"ips":[{"address":"10.9.0.2/24","gateway":"10.9.0.1"}]}"#,
            )
        }
        fn del(&self, _: &Request) -> Result<(), CniError> {
            Ok(())
        }
        fn check(&self, _: &Request) -> Result<(), CniError> {
            Err(CniError::plugin(101, "check failed", "because"))
        }
        fn status(&self, _: &Request) -> Result<(), CniError> {
            Err(CniError::not_available("full"))
        }
        fn gc(&self, req: &Request) -> Result<(), CniError> {
            let list = req.conf.gc_attachments()?;
            self.seen
                .lock()
                .expect("lock")
                .push(format!("gc {}", list.len()));
            if list.is_empty() {
                panic!("boom");
            }
            Ok(())
        }
    }

    fn call(cmd: &str, stdin: &str) -> (i32, Value) {
        let vars: HashMap<&str, &str> = [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/nonexistent"),
        ]
        .into_iter()
        .collect();
        let mut out = Vec::new();
        let code = run_with(
            &Fake::default(),
            |k| vars.get(k).map(|s| s.to_string()),
            &mut stdin.as_bytes(),
            &mut out,
        );
        let v = if out.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&out).expect("stdout is JSON")
        };
        (code, v)
    }

    fn conf(ver: &str) -> String {
        json!({"cniVersion": ver, "name": "n", "type": "fake",
               "cni.dev/valid-attachments": [{"containerID":"a","ifname":"eth0"}]})
        .to_string()
    }

    #[test]
    fn add_renders_in_config_version() {
        let (code, v) = call("ADD", &conf("0.3.1"));
        assert_eq!(code, 0);
        assert_eq!(v["cniVersion"], "0.3.1");
        assert_eq!(v["ips"][0]["version"], "4");
        let (code, v) = call("ADD", &conf("1.1.0"));
        assert_eq!(code, 0);
        assert_eq!(v["cniVersion"], "1.1.0");
        assert!(v["ips"][0].get("version").is_none());
    }

    #[test]
    fn del_prints_nothing() {
        assert_eq!(call("DEL", &conf("1.0.0")), (0, Value::Null));
    }

    #[test]
    fn errors_are_json_with_code_and_version() {
        let (code, v) = call("CHECK", &conf("1.0.0"));
        assert_eq!(code, 1);
        assert_eq!(
            v,
            json!({"cniVersion":"1.0.0","code":101,"msg":"check failed","details":"because"})
        );
        let (code, v) = call("STATUS", &conf("1.1.0"));
        assert_eq!((code, v["code"].clone()), (1, json!(50)));
        // Version floors.
        assert_eq!(call("CHECK", &conf("0.3.1")).1["code"], 1);
        assert_eq!(call("STATUS", &conf("1.0.0")).1["code"], 1);
        assert_eq!(call("GC", &conf("1.0.0")).1["code"], 1);
        // Unknown version → 1, reported under current.
        let (_, v) = call("ADD", &conf("9.9.9"));
        assert_eq!(
            (v["code"].clone(), v["cniVersion"].clone()),
            (json!(1), json!("9.9.9"))
        );
        // Malformed JSON → 6; empty stdin → 6.
        assert_eq!(call("ADD", "{not json").1["code"], 6);
        assert_eq!(call("ADD", "").1["code"], 6);
        // Bad name → 7.
        assert_eq!(
            call("ADD", r#"{"cniVersion":"1.0.0","name":"-bad"}"#).1["code"],
            7
        );
        // Bad command → 4.
        assert_eq!(call("BOGUS", &conf("1.0.0")).1["code"], 4);
    }

    #[test]
    fn version_lists_supported() {
        let (code, v) = call("VERSION", "");
        assert_eq!(code, 0);
        assert_eq!(
            v,
            json!({"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]})
        );
    }

    #[test]
    fn gc_and_panics() {
        assert_eq!(call("GC", &conf("1.1.0")), (0, Value::Null));
        let empty =
            json!({"cniVersion":"1.1.0","name":"n","cni.dev/valid-attachments":[]}).to_string();
        let (code, v) = call("GC", &empty);
        assert_eq!(code, 1);
        assert_eq!(v["code"], 999);
        assert!(v["details"].as_str().expect("details").contains("boom"));
    }
}
