//! The podnetctl binary against a dir store: apply/get/delete/watch and its
//! error messages.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn ctl(store: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_podnetctl"));
    c.env_remove("PODNET_STORE")
        .arg("--store")
        .arg(store)
        .args(args);
    c
}

fn run(store: &str, args: &[&str]) -> Output {
    ctl(store, args).output().unwrap()
}

fn ok(store: &str, args: &[&str]) -> String {
    let o = run(store, args);
    assert!(
        o.status.success(),
        "podnetctl {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn fails(store: &str, args: &[&str]) -> String {
    let o = run(store, args);
    assert!(!o.status.success(), "podnetctl {args:?} succeeded");
    String::from_utf8(o.stderr).unwrap()
}

fn data(name: &str) -> String {
    format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn url(p: &Path) -> String {
    format!("dir://{}", p.display())
}

#[test]
fn podnetctl_apply_get_delete() {
    let d = tempfile::tempdir().unwrap();
    let s = url(d.path());
    let out = ok(
        &s,
        &[
            "apply",
            "-f",
            &data("services.yaml"),
            "-f",
            &data("cluster.yaml"),
        ],
    );
    assert!(out.contains("service/kube-dns created"), "{out}");
    assert!(out.contains("clusterconfig/default created"), "{out}");
    // Applying again changes nothing.
    let out = ok(&s, &["apply", "-f", &data("services.yaml")]);
    assert_eq!(
        out.lines().filter(|l| l.ends_with("unchanged")).count(),
        5,
        "{out}"
    );

    // Table for one namespace, all namespaces, and by name.
    let out = ok(&s, &["get", "svc", "-n", "shop"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[1].starts_with("ingress ") && lines[1].contains("198.51.100.7,192.0.2.10"),
        "{out}"
    );
    assert!(lines[2].contains("80:30080/TCP,443:30443/TCP"), "{out}");
    let out = ok(&s, &["get", "services", "-A"]);
    assert_eq!(out.lines().count(), 6, "{out}");
    assert!(
        out.lines().next().unwrap().starts_with("NAMESPACE"),
        "{out}"
    );
    let out = ok(&s, &["get", "nodes"]);
    assert!(
        out.contains("node-a") && out.contains("Ready") && out.contains("192.168.50.11"),
        "{out}"
    );

    // -o yaml of one object round-trips through apply.
    let y = ok(&s, &["get", "svc", "web", "-n", "shop", "-o", "yaml"]);
    let v: serde_json::Value = serde_yaml::from_str(&y).unwrap();
    assert_eq!(v["spec"]["ports"][0]["nodePort"], 30080);
    let j = ok(&s, &["get", "svc", "-A", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v["kind"], "List");
    assert_eq!(v["items"].as_array().unwrap().len(), 5);
    let mut child = ctl(&s, &["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(y.replace("30080", "30081").as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "service/web configured"
    );
    let y = ok(&s, &["get", "svc", "web", "-n", "shop", "-o", "yaml"]);
    assert!(y.contains("30081"), "{y}");

    // Delete, then not found.
    assert_eq!(
        ok(&s, &["delete", "svc", "web", "-n", "shop"]).trim(),
        "service/web deleted"
    );
    let e = fails(&s, &["get", "svc", "web", "-n", "shop"]);
    assert!(
        e.contains("services \"web\" in namespace \"shop\" not found"),
        "{e}"
    );
    let e = fails(&s, &["delete", "svc", "web", "-n", "shop"]);
    assert!(e.contains("not found"), "{e}");

    // The store's default comes from PODNET_STORE.
    let o = Command::new(env!("CARGO_BIN_EXE_podnetctl"))
        .env("PODNET_STORE", &s)
        .args(["get", "ns"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("shop"));
}

#[test]
fn podnetctl_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    let s = url(d.path());
    let e = fails(&s, &["get", "deployments"]);
    assert!(
        e.contains("unknown kind \"deployments\"") && e.contains("services"),
        "{e}"
    );
    let bad = d.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "kind: Service\nmetadata:\n  name: a\n---\nkind: Service\nmetadata: {name: [b\n",
    )
    .unwrap();
    let e = fails(&s, &["apply", "-f", bad.to_str().unwrap()]);
    assert!(e.contains(&format!("{}: line ", bad.display())), "{e}");
    // serde_yaml's own positions are lines of the file, not of the document.
    assert!(e.contains("at line 6 column 18"), "{e}");
    // Nothing of a failed apply is written.
    assert!(!d.path().join("services/default/a.yaml").exists());
    std::fs::write(&bad, "kind: Service\nmetadata:\n  namespace: x\n").unwrap();
    let e = fails(&s, &["apply", "-f", bad.to_str().unwrap()]);
    assert!(
        e.contains("document 1 (line 1): Service has no metadata.name"),
        "{e}"
    );
    let e = fails(&s, &["apply", "-f", "/nonexistent/x.yaml"]);
    assert!(e.contains("reading /nonexistent/x.yaml"), "{e}");
    // An etcd nobody listens on: reported as unreachable, not a hang.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t0 = Instant::now();
    let e = fails(&format!("etcd://127.0.0.1:{port}"), &["get", "svc"]);
    assert!(e.contains("unreachable"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(60));
    let e = fails("ftp://x", &["get", "svc"]);
    assert!(e.contains("invalid store URL"), "{e}");
}

#[test]
fn podnetctl_watch_prints_existing_then_changes() {
    let d = tempfile::tempdir().unwrap();
    let s = url(d.path());
    ok(&s, &["apply", "-f", &data("services.yaml")]);
    let mut child = ctl(&s, &["watch", "svc", "-n", "default"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let _guard = Kill(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            if tx.send(l.unwrap()).is_err() {
                return;
            }
        }
    });
    let line = || {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("watch output")
    };
    let first: Vec<String> = (0..2).map(|_| line()).collect();
    assert!(
        first[0].starts_with("ADDED\t") && first[0].ends_with("services/default/db"),
        "{first:?}"
    );
    assert!(first[1].ends_with("services/default/upstream"), "{first:?}");
    ok(&s, &["delete", "svc", "db"]);
    let l = line();
    assert!(
        l.starts_with("DELETED\t") && l.ends_with("services/default/db"),
        "{l}"
    );
    ok(&s, &["delete", "svc", "web", "-n", "shop"]); // other namespace: filtered out
    let f = d.path().join("n.yaml");
    std::fs::write(
        &f,
        "kind: Service\nmetadata: {name: new}\nspec: {ports: [{port: 1}]}\n",
    )
    .unwrap();
    ok(&s, &["apply", "-f", f.to_str().unwrap()]);
    let l = line();
    assert!(
        l.starts_with("ADDED\t") && l.ends_with("services/default/new"),
        "{l}"
    );
    std::fs::write(
        &f,
        "kind: Service\nmetadata: {name: new}\nspec: {ports: [{port: 2}]}\n",
    )
    .unwrap();
    ok(&s, &["apply", "-f", f.to_str().unwrap()]);
    let l = line();
    assert!(l.starts_with("MODIFIED\t"), "{l}");
}
