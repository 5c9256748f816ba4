//! Informer benchmark: 10,000 Services + 10,000 EndpointSlices (2 endpoints
//! each, 20,000 endpoints) from the dir store and from a real etcd.
//!
//! `cargo bench -p podnet-state --bench informer` prints a table of
//! - initial list: `Informer::start` until `wait_synced()` returns,
//! - memory: VmRSS growth of the measuring process over that list,
//! - propagation: one write → a subscriber's `next()` returns a change set
//!   with that key (p50/p99/max over `CHANGES` single-object changes),
//!
//! and breakdown rows: each store's own list (time, peak RSS), the
//! informer's list CPU time and live heap, and the same objects held as
//! k8s-openapi types or compact forms alone (no store, no informer).
//!
//! Each measurement runs in a fresh child process (this binary re-executed),
//! so the memory of populating the store does not pollute the RSS numbers.
//! Targets: initial list ≤ 1 s, propagation p99 ≤ 20 ms from etcd, memory ≤ 60 MB.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netns_fixtures::etcd::EtcdServer;
use podnet_state::compact;
use podnet_state::etcd::EtcdStore;
use podnet_state::object::{self, TypedObject};
use podnet_state::{DirStore, Informer, Kind, ObjectKey, Store};
use serde_json::{json, Value};

const SERVICES: usize = 10_000;
const NAMESPACES: usize = 100;
/// Single-object changes timed per backend (alternating Service / EndpointSlice).
const CHANGES: usize = 300;
/// Pause between timed changes, so that each is its own change set.
const CHANGE_GAP: Duration = Duration::from_millis(3);

const ENV_BACKEND: &str = "PODNET_BENCH_CHILD";
const ENV_TARGET: &str = "PODNET_BENCH_TARGET";
/// `list` (the store's list of both kinds alone) or `informer`.
const ENV_MODE: &str = "PODNET_BENCH_MODE";

fn main() {
    if let Ok(backend) = std::env::var(ENV_BACKEND) {
        let target = std::env::var(ENV_TARGET).expect("child needs the store target");
        let mode = std::env::var(ENV_MODE).expect("child needs a mode");
        match mode.as_str() {
            "list" => child_list(&backend, &target),
            "informer" => child_informer(&backend, &target),
            "typed" => child_typed(),
            "compact" => child_compact(),
            other => panic!("unknown mode {other}"),
        }
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it without,
    // and then only a quick smoke run would make sense: skip entirely.
    if !std::env::args().any(|a| a == "--bench") {
        println!("informer bench: run with `cargo bench -p podnet-state --bench informer`");
        return;
    }
    let objects = objects();
    let mut rows = Vec::new();

    let dir = tempfile::Builder::new()
        .prefix("podnet-bench-dir-")
        .tempdir()
        .expect("temp dir for the dir store");
    let populate = Instant::now();
    {
        let rt = runtime();
        let store = DirStore::open(dir.path()).expect("opening the dir store");
        rt.block_on(async {
            for (k, v) in &objects {
                store.put(k, v).await.expect("writing to the dir store");
            }
        });
    }
    let dir_populate = populate.elapsed();
    let dir_target = dir.path().display().to_string();
    rows.push((
        "dir",
        dir_populate,
        run_child("dir", &dir_target, "list"),
        run_child("dir", &dir_target, "informer"),
    ));

    let etcd = EtcdServer::start().expect("starting etcd");
    let populate = Instant::now();
    {
        let rt = runtime();
        rt.block_on(async {
            let store = EtcdStore::connect(vec![etcd.endpoint()]).await.unwrap();
            store.put_many(&objects).await.expect("writing to etcd");
        });
    }
    let etcd_populate = populate.elapsed();
    rows.push((
        "etcd",
        etcd_populate,
        run_child("etcd", &etcd.endpoint(), "list"),
        run_child("etcd", &etcd.endpoint(), "informer"),
    ));

    println!();
    println!(
        "informer: {SERVICES} Services + {SERVICES} EndpointSlices ({} endpoints), {CHANGES} timed changes",
        SERVICES * 2
    );
    println!("| store | initial list | RSS peak | RSS retained | propagation p50 | p99 | max |");
    println!("|---|---|---|---|---|---|---|");
    for (name, _, _, r) in &rows {
        println!(
            "| {name} | {:.0} ms | {:.1} MB | {:.1} MB | {:.2} ms | {:.2} ms | {:.2} ms |",
            r.list_ms, r.peak_mb, r.retained_mb, r.p50_ms, r.p99_ms, r.max_ms
        );
    }
    println!("| target | ≤ 1000 ms | ≤ 60 MB | ≤ 60 MB | | ≤ 20 ms (etcd) | |");
    println!();
    println!("breakdown: the store alone (populate = writing all objects; list = `Store::list` of both kinds)");
    println!("| store | populate | list | list RSS peak |");
    println!("|---|---|---|---|");
    for (name, pop, l, _) in &rows {
        println!(
            "| {name} | {:.2} s | {:.0} ms | {:.1} MB |",
            pop.as_secs_f64(),
            l.list_ms,
            l.peak_mb
        );
    }
    println!();
    println!("breakdown: the informer's list (CPU = user + system of all threads; heap = allocated and not freed, of what RSS retained counts)");
    println!("| store | list CPU | heap retained |");
    println!("|---|---|---|");
    for (name, _, _, r) in &rows {
        println!("| {name} | {:.0} ms | {:.1} MB |", r.cpu_ms, r.heap_mb);
    }
    let typed = run_child("none", "none", "typed");
    println!(
        "the {} objects as k8s-openapi types alone (no store, no informer): {:.1} MB",
        2 * SERVICES,
        typed.retained_mb
    );
    let compact = run_child("none", "none", "compact");
    println!(
        "the {} objects in their compact forms alone (what a snapshot holds, without keys): {:.1} MB (heap {:.1} MB)",
        2 * SERVICES,
        compact.retained_mb,
        compact.heap_mb
    );
    println!();
    println!("RSS peak: VmHWM growth during the initial list; RSS retained: VmRSS growth with the");
    println!(
        "snapshot alive after malloc_trim (what the informer keeps). Latency: write -> change set."
    );
}

struct Measured {
    list_ms: f64,
    /// CPU time (user + system, all threads) of the list.
    cpu_ms: f64,
    peak_mb: f64,
    retained_mb: f64,
    /// Live heap (allocated, not freed) of what is retained.
    heap_mb: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn run_child(backend: &str, target: &str, mode: &str) -> Measured {
    let exe = std::env::current_exe().expect("own executable");
    let out = Command::new(exe)
        .env(ENV_BACKEND, backend)
        .env(ENV_TARGET, target)
        .env(ENV_MODE, mode)
        .output()
        .expect("running the measuring child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        panic!(
            "{backend} measurement failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line from the {backend} child:\n{stdout}"));
    let v: Value = serde_json::from_str(line).expect("child RESULT is JSON");
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    Measured {
        list_ms: f("list_ms"),
        cpu_ms: f("cpu_ms"),
        peak_mb: f("peak_mb"),
        retained_mb: f("retained_mb"),
        heap_mb: f("heap_mb"),
        p50_ms: f("p50_ms"),
        p99_ms: f("p99_ms"),
        max_ms: f("max_ms"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn open(backend: &str, target: &str) -> Arc<dyn Store> {
    match backend {
        "dir" => Arc::new(DirStore::open(target).expect("opening the dir store")),
        "etcd" => Arc::new(
            EtcdStore::connect(vec![target.to_string()])
                .await
                .expect("connecting to etcd"),
        ),
        other => panic!("unknown backend {other}"),
    }
}

/// Measuring child: the store's own list of both kinds.
fn child_list(backend: &str, target: &str) {
    let rt = runtime();
    rt.block_on(async {
        let store = open(backend, target).await;
        let base = start_memory_window();
        let start = Instant::now();
        let (svcs, _) = store.list(Kind::Service).await.expect("listing Services");
        let (eps, _) = store
            .list(Kind::EndpointSlice)
            .await
            .expect("listing EndpointSlices");
        let list = start.elapsed();
        assert_eq!((svcs.len(), eps.len()), (SERVICES, SERVICES));
        let result = json!({
            "list_ms": list.as_secs_f64() * 1000.0,
            "peak_mb": mb(status_kb("VmHWM:").saturating_sub(base)),
        });
        println!("RESULT {result}");
    });
}

/// Measuring child: the memory of the objects decoded into their
/// k8s-openapi types, without any store: the floor for a snapshot of them.
/// Each object's JSON is dropped right after decoding, so the heap is not
/// fragmented by 20,000 JSON trees.
fn child_typed() {
    let base = start_memory_window();
    let mut typed: Vec<TypedObject> = Vec::with_capacity(2 * SERVICES);
    for i in 0..SERVICES {
        for (k, v) in [service(i), endpoint_slice(i)] {
            typed.push(object::decode(k.kind, &v).expect("bench objects decode"));
        }
    }
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe { libc::malloc_trim(0) };
    let retained = status_kb("VmRSS:").saturating_sub(base);
    assert_eq!(typed.len(), 2 * SERVICES);
    println!("RESULT {}", json!({ "retained_mb": mb(retained) }));
}

/// Measuring child: the objects in the compact forms the informer keeps
/// (in `Arc`s, as in a snapshot), without any store or informer
/// bookkeeping: the floor for the informer's retained memory.
fn child_compact() {
    let base = start_memory_window();
    let base_heap = heap_kb();
    let mut services = Vec::with_capacity(SERVICES);
    let mut slices = Vec::with_capacity(SERVICES);
    for i in 0..SERVICES {
        let (k, v) = service(i);
        let TypedObject::Service(s) = object::decode(k.kind, &v).expect("bench Services decode")
        else {
            unreachable!("a Service decodes as one")
        };
        services.push(Arc::new(
            compact::Service::from_k8s(s).expect("compact Service"),
        ));
        let (k, v) = endpoint_slice(i);
        let TypedObject::EndpointSlice(s) =
            object::decode(k.kind, &v).expect("bench EndpointSlices decode")
        else {
            unreachable!("an EndpointSlice decodes as one")
        };
        slices.push(Arc::new(
            compact::EndpointSlice::from_k8s(s).expect("compact EndpointSlice"),
        ));
    }
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe { libc::malloc_trim(0) };
    let retained = status_kb("VmRSS:").saturating_sub(base);
    let heap = heap_kb().saturating_sub(base_heap);
    assert_eq!(services.len() + slices.len(), 2 * SERVICES);
    println!(
        "RESULT {}",
        json!({ "retained_mb": mb(retained), "heap_mb": mb(heap) })
    );
}

/// Measuring child: informer list, memory, then propagation latency.
fn child_informer(backend: &str, target: &str) {
    let rt = runtime();
    rt.block_on(async {
        let store = open(backend, target).await;
        let writer = open(backend, target).await;
        let base = start_memory_window();
        let base_heap = heap_kb();
        let cpu0 = cpu_ms();
        let start = Instant::now();
        let informer = Informer::start(store, &[Kind::Service, Kind::EndpointSlice]);
        informer.wait_synced().await;
        let list = start.elapsed();
        let list_cpu = cpu_ms() - cpu0;
        let peak = status_kb("VmHWM:").saturating_sub(base);
        let snap = informer.snapshot();
        assert_eq!(snap.services.len(), SERVICES, "all Services listed");
        assert_eq!(
            snap.endpoint_slices.len(),
            SERVICES,
            "all EndpointSlices listed"
        );
        drop(snap);
        // SAFETY: malloc_trim only returns free heap pages to the kernel.
        unsafe { libc::malloc_trim(0) };
        let retained = status_kb("VmRSS:").saturating_sub(base);
        let heap = heap_kb().saturating_sub(base_heap);

        let mut sub = informer.subscribe();
        let first = sub.next().await.expect("initial change set");
        assert!(first.full_resync);
        drop(first);

        let mut lat = Vec::with_capacity(CHANGES);
        for i in 0..CHANGES {
            let idx = (i * 37) % SERVICES;
            let (key, value) = if i % 2 == 0 {
                let (k, mut v) = service(idx);
                v["metadata"]["labels"]["bench-round"] = json!(i.to_string());
                (k, v)
            } else {
                let (k, mut v) = endpoint_slice(idx);
                v["endpoints"][0]["conditions"]["ready"] = json!(i % 4 == 1);
                (k, v)
            };
            let t0 = Instant::now();
            writer.put(&key, &value).await.expect("timed write");
            loop {
                let cs = tokio::time::timeout(Duration::from_secs(10), sub.next())
                    .await
                    .unwrap_or_else(|_| panic!("change {i} ({key}) not seen within 10 s"))
                    .expect("informer running");
                if cs.changes.iter().any(|c| c.key == key) {
                    break;
                }
            }
            lat.push(t0.elapsed());
            tokio::time::sleep(CHANGE_GAP).await;
        }
        lat.sort();
        let pct = |p: f64| {
            let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
            lat[i].as_secs_f64() * 1000.0
        };
        let result = json!({
            "list_ms": list.as_secs_f64() * 1000.0,
            "peak_mb": mb(peak),
            "retained_mb": mb(retained),
            "heap_mb": mb(heap),
            "cpu_ms": list_cpu,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": lat.last().unwrap().as_secs_f64() * 1000.0,
        });
        println!("RESULT {result}");
    });
}

/// A field of /proc/self/status in kB (`VmRSS:`, `VmHWM:`).
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

/// Resets the peak-RSS counter (VmHWM) to the current RSS and returns that
/// RSS: the baseline of one measurement.
fn start_memory_window() -> u64 {
    // SAFETY: as above; gives back what setting up the runtime freed.
    unsafe { libc::malloc_trim(0) };
    std::fs::write("/proc/self/clear_refs", "5")
        .expect("resetting VmHWM via /proc/self/clear_refs");
    status_kb("VmRSS:")
}

/// Bytes the allocator has handed out and not got back, in kB: what is
/// live, as opposed to RSS, which also counts free memory it keeps.
fn heap_kb() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let m = unsafe { libc::mallinfo2() };
    ((m.uordblks + m.hblkhd) / 1024) as u64
}

/// User + system CPU time of the process so far, in ms.
fn cpu_ms() -> f64 {
    // SAFETY: rusage is plain data, all zeroes is a valid value, and
    // getrusage only writes into the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
    ms(ru.ru_utime) + ms(ru.ru_stime)
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn objects() -> Vec<(ObjectKey, Value)> {
    let mut v = Vec::with_capacity(SERVICES * 2);
    for i in 0..SERVICES {
        v.push(service(i));
        v.push(endpoint_slice(i));
    }
    v
}

fn names(i: usize) -> (String, String) {
    (format!("ns-{:03}", i % NAMESPACES), format!("svc-{i:05}"))
}

/// A Service shaped like `kubectl get svc -o json` output.
fn service(i: usize) -> (ObjectKey, Value) {
    let (ns, name) = names(i);
    let ip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
    let v = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": format!("00000000-0000-4000-8000-{i:012}"),
            "resourceVersion": (1000 + i).to_string(),
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"app": name}
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip,
            "clusterIPs": [ip],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster",
            "sessionAffinity": "None",
            "selector": {"app": name},
            "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                {"name": "metrics", "port": 9090, "protocol": "TCP", "targetPort": "metrics"}
            ]
        },
        "status": {"loadBalancer": {}}
    });
    (ObjectKey::new(Kind::Service, Some(&ns), &name), v)
}

/// The EndpointSlice of service `i`, with two ready endpoints.
fn endpoint_slice(i: usize) -> (ObjectKey, Value) {
    let (ns, svc) = names(i);
    let name = format!("{svc}-abcde");
    let endpoint = |j: usize| {
        let pod = format!("{svc}-7d9f8b6c5-{j}");
        json!({
            "addresses": [format!("10.244.{}.{}", (i * 2 + j) / 250 % 256, (i * 2 + j) % 250 + 1)],
            "conditions": {"ready": true, "serving": true, "terminating": false},
            "nodeName": format!("node-{}", (i + j) % 50),
            "targetRef": {"kind": "Pod", "name": pod, "namespace": ns,
                          "uid": format!("00000000-0000-4000-9000-{:012}", i * 2 + j)}
        })
    };
    let v = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {
                "kubernetes.io/service-name": svc,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"
            },
            "resourceVersion": (50_000 + i).to_string()
        },
        "addressType": "IPv4",
        "endpoints": [endpoint(0), endpoint(1)],
        "ports": [
            {"name": "http", "port": 8080, "protocol": "TCP"},
            {"name": "metrics", "port": 9090, "protocol": "TCP"}
        ]
    });
    (ObjectKey::new(Kind::EndpointSlice, Some(&ns), &name), v)
}
