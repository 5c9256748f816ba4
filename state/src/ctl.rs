//! `podnetctl`: apply, get, delete and watch objects in a store, with
//! kubectl's conventions (kinds by singular, plural or short name; tables by
//! default; `-o yaml|json`). The binary only parses arguments and calls `run`;
//! errors are `anyhow` because they end up printed to a user.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use crate::open::{open_store, DEFAULT_STORE, STORE_ENV};
use crate::parse::parse_objects;
use crate::store::{Kind, ObjectKey, Store, StoredObject, WatchEvent};

#[derive(Debug, Parser)]
#[command(
    name = "podnetctl",
    about = "Read and change podnet's cluster state",
    version
)]
pub struct Cli {
    /// Store URL: dir:///path (or a path) or etcd://host:port[,host:port].
    #[arg(long, global = true, env = STORE_ENV, default_value = DEFAULT_STORE)]
    pub store: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Yaml,
    Json,
    Name,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update objects from YAML/JSON files (`-` reads stdin).
    Apply {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
    },
    /// Show objects of a kind, or one object.
    Get {
        kind: String,
        name: Option<String>,
        #[arg(short, long)]
        namespace: Option<String>,
        /// All namespaces (the default namespace is `default`).
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[arg(short, long, value_enum)]
        output: Option<Output>,
    },
    /// Delete one object.
    Delete {
        kind: String,
        name: String,
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Print the objects of a kind, then every change, until interrupted.
    Watch {
        kind: String,
        #[arg(short, long)]
        namespace: Option<String>,
    },
}

/// Parse a kind as a user types it, with the list of kinds on error.
pub fn parse_kind(s: &str) -> Result<Kind> {
    Kind::parse(s).ok_or_else(|| {
        anyhow!(
            "unknown kind {s:?}; known kinds: {}",
            Kind::ALL.map(|k| k.plural()).join(", ")
        )
    })
}

pub async fn run(cli: Cli, out: &mut (dyn Write + Send)) -> Result<()> {
    // Check the arguments before touching the store.
    if let Command::Get { kind, .. } | Command::Delete { kind, .. } | Command::Watch { kind, .. } =
        &cli.command
    {
        parse_kind(kind)?;
    }
    let inputs = match &cli.command {
        Command::Apply { files } => Some(read_inputs(files)?),
        _ => None,
    };
    let store = open_store(&cli.store)
        .await
        .with_context(|| format!("opening store {}", cli.store))?;
    match cli.command {
        Command::Apply { .. } => apply(&*store, inputs.unwrap_or_default(), out).await,
        Command::Get {
            kind,
            name,
            namespace,
            all_namespaces,
            output,
        } => {
            let kind = parse_kind(&kind)?;
            let ns = if all_namespaces {
                None
            } else {
                Some(namespace.unwrap_or_else(|| "default".to_string()))
            };
            get(&*store, kind, name.as_deref(), ns.as_deref(), output, out).await
        }
        Command::Delete {
            kind,
            name,
            namespace,
        } => {
            let kind = parse_kind(&kind)?;
            let key = ObjectKey::new(kind, namespace.as_deref(), &name);
            match store.delete(&key).await? {
                Some(_) => writeln!(out, "{}/{} deleted", kind.kind_name().to_lowercase(), name)?,
                None => bail!("{} not found", describe(&key)),
            }
            Ok(())
        }
        Command::Watch { kind, namespace } => {
            watch(store, parse_kind(&kind)?, namespace.as_deref(), out).await
        }
    }
}

fn describe(key: &ObjectKey) -> String {
    match &key.namespace {
        Some(ns) => format!("{} {:?} in namespace {ns:?}", key.kind.plural(), key.name),
        None => format!("{} {:?}", key.kind.plural(), key.name),
    }
}

/// (file name for messages, contents)
fn read_inputs(files: &[String]) -> Result<Vec<(String, String)>> {
    let mut v = Vec::new();
    for f in files {
        let text = if f == "-" {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading objects from stdin")?;
            s
        } else {
            std::fs::read_to_string(f).with_context(|| format!("reading {f}"))?
        };
        v.push((
            if f == "-" {
                "<stdin>".to_string()
            } else {
                f.clone()
            },
            text,
        ));
    }
    Ok(v)
}

/// Now, to the second (jiff's clock needs its `std` feature, which
/// k8s-openapi does not enable).
fn now() -> Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn now_rfc3339() -> String {
    now().to_string()
}

/// Everything is parsed and checked before the first write, so a typo in the
/// tenth document does not leave nine applied.
async fn apply(
    store: &dyn Store,
    inputs: Vec<(String, String)>,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let mut objs = Vec::new();
    for (file, text) in &inputs {
        objs.extend(parse_objects(text, file)?);
    }
    for o in &objs {
        for w in &o.warnings {
            eprintln!("warning: {}: {w}", o.source);
        }
    }
    for mut o in objs {
        let existing = store
            .get(&o.key)
            .await
            .map_err(anyhow::Error::from)
            .and_then(|e| Ok(e.map(|e| e.value()).transpose()?))
            .with_context(|| format!("reading {}", o.key))?;
        let meta = o
            .value
            .get_mut("metadata")
            .and_then(|m| m.as_object_mut())
            .expect("parse_objects sets metadata");
        if !meta.contains_key("creationTimestamp") {
            let ts = existing
                .as_ref()
                .and_then(|e| e.pointer("/metadata/creationTimestamp").cloned())
                .unwrap_or_else(|| Value::String(now_rfc3339()));
            meta.insert("creationTimestamp".into(), ts);
        }
        let what = o.key.kind.kind_name().to_lowercase();
        let verb = match &existing {
            Some(e) if *e == o.value => "unchanged",
            Some(_) => "configured",
            None => "created",
        };
        if verb != "unchanged" {
            store
                .put(&o.key, &o.value)
                .await
                .with_context(|| format!("writing {}", o.key))?;
        }
        writeln!(out, "{what}/{} {verb}", o.key.name)?;
    }
    Ok(())
}

async fn get(
    store: &dyn Store,
    kind: Kind,
    name: Option<&str>,
    ns: Option<&str>,
    output: Option<Output>,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let stored: Vec<StoredObject> = match name {
        Some(n) => {
            let key = ObjectKey::new(kind, ns, n);
            match store.get(&key).await? {
                Some(o) => vec![o],
                None => bail!("{} not found", describe(&key)),
            }
        }
        None => {
            let (mut objs, _) = store.list(kind).await?;
            if kind.namespaced() {
                if let Some(ns) = ns {
                    objs.retain(|o| o.key.namespace.as_deref() == Some(ns));
                }
            }
            objs
        }
    };
    let objs = stored
        .into_iter()
        .map(|o| {
            let v = o.value().with_context(|| format!("reading {}", o.key))?;
            Ok((o.key, v))
        })
        .collect::<Result<Vec<_>>>()?;
    match output {
        Some(Output::Name) => {
            for o in &objs {
                writeln!(out, "{}/{}", kind.kind_name().to_lowercase(), o.0.name)?;
            }
        }
        Some(fmt @ (Output::Yaml | Output::Json)) => {
            let v = if name.is_some() {
                objs[0].1.clone()
            } else {
                serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": objs.iter().map(|o| o.1.clone()).collect::<Vec<_>>(),
                })
            };
            if fmt == Output::Yaml {
                write!(out, "{}", serde_yaml::to_string(&v)?)?;
            } else {
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            }
        }
        None => {
            if objs.is_empty() {
                match ns {
                    Some(ns) if kind.namespaced() => {
                        eprintln!("No {} found in {ns} namespace.", kind.plural())
                    }
                    _ => eprintln!("No {} found.", kind.plural()),
                }
                return Ok(());
            }
            let with_ns = kind.namespaced() && ns.is_none();
            write!(out, "{}", table(kind, &objs, with_ns, now()))?;
        }
    }
    Ok(())
}

async fn watch(
    store: Arc<dyn Store>,
    kind: Kind,
    ns: Option<&str>,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let wanted = |k: &ObjectKey| ns.is_none() || k.namespace.as_deref() == ns;
    let (objs, rev) = store.list(kind).await?;
    let mut known = HashSet::new();
    for o in objs.iter().filter(|o| wanted(&o.key)) {
        writeln!(out, "ADDED\t{}\t{}", o.mod_revision, o.key)?;
        known.insert(o.key.clone());
    }
    out.flush()?;
    let mut stream = store.watch(kind, rev).await?;
    while let Some(ev) = stream.next().await {
        let ev = ev.with_context(|| format!("watching {kind}"))?;
        if !wanted(ev.key()) {
            continue;
        }
        match ev {
            WatchEvent::Put(o) => {
                let t = if known.insert(o.key.clone()) {
                    "ADDED"
                } else {
                    "MODIFIED"
                };
                writeln!(out, "{t}\t{}\t{}", o.mod_revision, o.key)?;
            }
            WatchEvent::Delete { key, revision } => {
                known.remove(&key);
                writeln!(out, "DELETED\t{revision}\t{key}")?;
            }
        }
        out.flush()?;
    }
    bail!("the watch of {kind} ended")
}

/// `45s`, `12m`, `5h`, `3d` like kubectl's AGE column.
pub fn age(created: Option<&str>, now: Timestamp) -> String {
    let Some(t) = created.and_then(|c| c.parse::<Timestamp>().ok()) else {
        return "<unknown>".to_string();
    };
    let s = (now.as_second() - t.as_second()).max(0);
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 120 * 60 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn s(v: &Value, ptr: &str) -> String {
    v.pointer(ptr)
        .and_then(|x| x.as_str())
        .unwrap_or("")
        .to_string()
}

fn or_none(x: String) -> String {
    if x.is_empty() {
        "<none>".to_string()
    } else {
        x
    }
}

fn strings(v: &Value, ptr: &str) -> Vec<String> {
    v.pointer(ptr)
        .and_then(|x| x.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Column headers and cells of one kind's table.
fn columns(kind: Kind, v: &Value) -> (Vec<&'static str>, Vec<String>) {
    match kind {
        Kind::Service => {
            let ty = s(v, "/spec/type");
            let ty = if ty.is_empty() {
                "ClusterIP".to_string()
            } else {
                ty
            };
            let mut ext: Vec<String> = v
                .pointer("/status/loadBalancer/ingress")
                .and_then(|a| a.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|i| i.get("ip").or(i.get("hostname")))
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            ext.extend(strings(v, "/spec/externalIPs"));
            if ty == "ExternalName" {
                ext.push(s(v, "/spec/externalName"));
            }
            let ports: Vec<String> = v
                .pointer("/spec/ports")
                .and_then(|a| a.as_array())
                .map(|a| {
                    a.iter()
                        .map(|p| {
                            let port = p.get("port").and_then(|x| x.as_i64()).unwrap_or(0);
                            let proto = p.get("protocol").and_then(|x| x.as_str()).unwrap_or("TCP");
                            match p.get("nodePort").and_then(|x| x.as_i64()) {
                                Some(np) => format!("{port}:{np}/{proto}"),
                                None => format!("{port}/{proto}"),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            (
                vec!["TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"],
                vec![
                    ty,
                    or_none(s(v, "/spec/clusterIP")),
                    or_none(ext.join(",")),
                    or_none(ports.join(",")),
                ],
            )
        }
        Kind::EndpointSlice => {
            let ports: Vec<String> = v
                .pointer("/ports")
                .and_then(|a| a.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p.get("port").and_then(|x| x.as_i64()))
                        .map(|p| p.to_string())
                        .collect()
                })
                .unwrap_or_default();
            let addrs: Vec<String> = v
                .pointer("/endpoints")
                .and_then(|a| a.as_array())
                .map(|a| a.iter().flat_map(|e| strings(e, "/addresses")).collect())
                .unwrap_or_default();
            let mut eps = addrs.iter().take(3).cloned().collect::<Vec<_>>().join(",");
            if addrs.len() > 3 {
                eps.push_str(&format!(" + {} more...", addrs.len() - 3));
            }
            (
                vec!["ADDRESSTYPE", "PORTS", "ENDPOINTS"],
                vec![s(v, "/addressType"), or_none(ports.join(",")), or_none(eps)],
            )
        }
        Kind::Node => {
            let ready = v
                .pointer("/status/conditions")
                .and_then(|a| a.as_array())
                .and_then(|a| {
                    a.iter()
                        .find(|c| c.get("type").and_then(|t| t.as_str()) == Some("Ready"))
                })
                .and_then(|c| c.get("status").and_then(|x| x.as_str()))
                .map(|st| if st == "True" { "Ready" } else { "NotReady" })
                .unwrap_or("Unknown");
            let ip = v
                .pointer("/status/addresses")
                .and_then(|a| a.as_array())
                .and_then(|a| {
                    a.iter()
                        .find(|x| x.get("type").and_then(|t| t.as_str()) == Some("InternalIP"))
                })
                .and_then(|x| x.get("address").and_then(|a| a.as_str()))
                .unwrap_or("")
                .to_string();
            (
                vec!["STATUS", "INTERNAL-IP", "POD-CIDRS"],
                vec![
                    ready.to_string(),
                    or_none(ip),
                    or_none(strings(v, "/spec/podCIDRs").join(",")),
                ],
            )
        }
        Kind::Pod => (
            vec!["STATUS", "IP", "NODE"],
            vec![
                or_none(s(v, "/status/phase")),
                or_none(s(v, "/status/podIP")),
                or_none(s(v, "/spec/nodeName")),
            ],
        ),
        Kind::Namespace => {
            let phase = s(v, "/status/phase");
            (
                vec!["STATUS"],
                vec![if phase.is_empty() {
                    "Active".into()
                } else {
                    phase
                }],
            )
        }
        Kind::ClusterConfig => (
            vec!["CLUSTER-CIDRS", "SERVICE-CIDRS", "BACKEND"],
            vec![
                or_none(strings(v, "/spec/clusterCIDRs").join(",")),
                or_none(strings(v, "/spec/serviceCIDRs").join(",")),
                {
                    let b = s(v, "/spec/backend");
                    if b.is_empty() {
                        "host-gw".into()
                    } else {
                        b
                    }
                },
            ],
        ),
        Kind::SubnetLease => (
            vec!["NODE", "SUBNET"],
            vec![or_none(s(v, "/spec/node")), or_none(s(v, "/spec/subnet"))],
        ),
    }
}

/// A kubectl-style table: NAME, the kind's columns, AGE (NAMESPACE first with `-A`).
pub fn table(
    kind: Kind,
    objs: &[(ObjectKey, Value)],
    with_namespace: bool,
    now: Timestamp,
) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header: Vec<&str> = Vec::new();
    for (key, value) in objs {
        let (h, cells) = columns(kind, value);
        header = h;
        let mut row = Vec::new();
        if with_namespace {
            row.push(key.namespace.clone().unwrap_or_default());
        }
        row.push(key.name.clone());
        row.extend(cells);
        row.push(age(
            value
                .pointer("/metadata/creationTimestamp")
                .and_then(|x| x.as_str()),
            now,
        ));
        rows.push(row);
    }
    let mut head: Vec<String> = Vec::new();
    if with_namespace {
        head.push("NAMESPACE".into());
    }
    head.push("NAME".into());
    head.extend(header.iter().map(|h| h.to_string()));
    head.push("AGE".into());
    rows.insert(0, head);
    let ncols = rows[0].len();
    let widths: Vec<usize> = (0..ncols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |x| x.len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut outs = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i + 1 == ncols {
                    cell.clone()
                } else {
                    format!("{cell:<w$}", w = widths[i])
                }
            })
            .collect();
        outs.push_str(&line.join("   "));
        outs.push('\n');
    }
    outs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        let now: Timestamp = "2025-01-10T12:00:00Z".parse().unwrap();
        assert_eq!(age(Some("2025-01-10T11:59:15Z"), now), "45s");
        assert_eq!(age(Some("2025-01-10T11:48:00Z"), now), "12m");
        assert_eq!(age(Some("2025-01-10T07:00:00Z"), now), "5h");
        assert_eq!(age(Some("2025-01-07T12:00:00Z"), now), "3d");
        assert_eq!(age(None, now), "<unknown>");
    }

    #[test]
    fn service_table() {
        let now: Timestamp = "2025-01-10T12:00:00Z".parse().unwrap();
        let o = (
            ObjectKey::new(Kind::Service, Some("default"), "web"),
            serde_json::json!({
                "metadata": {"name": "web", "creationTimestamp": "2025-01-10T11:00:00Z"},
                "spec": {"type": "NodePort", "clusterIP": "10.96.0.20",
                         "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}
            }),
        );
        let t = table(Kind::Service, &[o], true, now);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        let cols: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "NAMESPACE",
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE"
            ]
        );
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "default",
                "web",
                "NodePort",
                "10.96.0.20",
                "<none>",
                "80:30080/TCP,53/UDP",
                "60m"
            ]
        );
    }

    #[test]
    fn unknown_kind_lists_known_ones() {
        let e = parse_kind("deployments").unwrap_err().to_string();
        assert!(
            e.contains("\"deployments\"") && e.contains("endpointslices"),
            "{e}"
        );
        assert_eq!(parse_kind("svc").unwrap(), Kind::Service);
    }
}
