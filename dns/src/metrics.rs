//! Metrics without locks on the answer path: per-worker shards of atomic
//! counters and histogram buckets, summed when Prometheus scrapes through a
//! `prometheus-client` `Collector`; and the small HTTP server for
//! `/metrics`, `/healthz` and `/ready`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::wire::{self, Rcode};

const QTYPES: [(u16, &str); 10] = [
    (wire::TYPE_A, "A"),
    (wire::TYPE_AAAA, "AAAA"),
    (wire::TYPE_SRV, "SRV"),
    (wire::TYPE_PTR, "PTR"),
    (wire::TYPE_TXT, "TXT"),
    (wire::TYPE_CNAME, "CNAME"),
    (wire::TYPE_SOA, "SOA"),
    (wire::TYPE_NS, "NS"),
    (wire::TYPE_ANY, "ANY"),
    (wire::TYPE_AXFR, "AXFR"),
];
const N_QTYPES: usize = QTYPES.len() + 1;
const RCODES: [Rcode; 6] = [
    Rcode::NoError,
    Rcode::FormErr,
    Rcode::ServFail,
    Rcode::NxDomain,
    Rcode::NotImp,
    Rcode::Refused,
];
/// Upper bounds (seconds) of the query latency buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.05, 0.25, 1.0,
];
/// Upper bounds (seconds) of the index programming latency buckets.
const PROGRAMMING_BUCKETS: [f64; 10] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Udp = 0,
    Tcp = 1,
}

#[derive(Debug)]
struct AtomicHistogram<const N: usize> {
    buckets: [AtomicU64; N],
    over: AtomicU64,
    sum_nanos: AtomicU64,
}

impl<const N: usize> Default for AtomicHistogram<N> {
    fn default() -> Self {
        AtomicHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            over: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> AtomicHistogram<N> {
    fn observe(&self, bounds: &[f64; N], d: Duration) {
        let s = d.as_secs_f64();
        match bounds.iter().position(|b| s <= *b) {
            Some(i) => self.buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.over.fetch_add(1, Ordering::Relaxed),
        };
        self.sum_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
}

/// One worker's counters, on its own cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Shard {
    queries: [[[AtomicU64; RCODES.len()]; N_QTYPES]; 2],
    latency: AtomicHistogram<{ LATENCY_BUCKETS.len() }>,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    forwarded: AtomicU64,
    upstream_failures: AtomicU64,
    dropped: AtomicU64,
}

impl Shard {
    pub fn query(&self, proto: Proto, qtype: u16, rcode: Rcode, took: Duration) {
        let t = QTYPES
            .iter()
            .position(|(t, _)| *t == qtype)
            .unwrap_or(QTYPES.len());
        let r = RCODES.iter().position(|r| *r == rcode).unwrap_or(0);
        self.queries[proto as usize][t][r].fetch_add(1, Ordering::Relaxed);
        self.latency.observe(&LATENCY_BUCKETS, took);
    }
    pub fn cache_hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
    }
    pub fn cache_miss(&self) {
        self.cache_misses.fetch_add(1, Ordering::Relaxed);
    }
    pub fn forwarded(&self) {
        self.forwarded.fetch_add(1, Ordering::Relaxed);
    }
    pub fn upstream_failure(&self) {
        self.upstream_failures.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// All metrics of one server.
#[derive(Debug)]
pub struct Metrics {
    shards: Box<[Shard]>,
    programming: AtomicHistogram<{ PROGRAMMING_BUCKETS.len() }>,
    services: AtomicU64,
    revision: AtomicU64,
    cache_entries: AtomicU64,
    pub ready: AtomicBool,
}

impl Metrics {
    pub fn new(shards: usize) -> Arc<Metrics> {
        Arc::new(Metrics {
            shards: (0..shards.max(1)).map(|_| Shard::default()).collect(),
            programming: AtomicHistogram::default(),
            services: AtomicU64::new(0),
            revision: AtomicU64::new(0),
            cache_entries: AtomicU64::new(0),
            ready: AtomicBool::new(false),
        })
    }
    /// The shard of worker `i` (wraps around).
    pub fn shard(&self, i: usize) -> &Shard {
        &self.shards[i % self.shards.len()]
    }
    pub fn programmed(&self, took: Duration, services: usize, revision: u64) {
        self.programming.observe(&PROGRAMMING_BUCKETS, took);
        self.services.store(services as u64, Ordering::Relaxed);
        self.revision.store(revision, Ordering::Relaxed);
    }
    pub fn set_cache_entries(&self, n: usize) {
        self.cache_entries.store(n as u64, Ordering::Relaxed);
    }
    fn sum(&self, f: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|s| f(s).load(Ordering::Relaxed))
            .sum()
    }
    pub fn total_queries(&self) -> u64 {
        let mut n = 0;
        for s in self.shards.iter() {
            for p in &s.queries {
                for t in p {
                    for r in t {
                        n += r.load(Ordering::Relaxed);
                    }
                }
            }
        }
        n
    }
    pub fn registry(self: &Arc<Self>) -> Registry {
        let mut r = Registry::default();
        r.register_collector(Box::new(self.clone()));
        r
    }
}

fn encode_hist<const N: usize>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    bounds: &[f64; N],
    hs: &[&AtomicHistogram<N>],
) -> Result<(), std::fmt::Error> {
    // prometheus-client takes per-bucket counts and accumulates them itself.
    let mut total = 0u64;
    let mut buckets = Vec::with_capacity(N + 1);
    let mut sum = 0u64;
    for (i, b) in bounds.iter().enumerate() {
        let n = hs
            .iter()
            .map(|h| h.buckets[i].load(Ordering::Relaxed))
            .sum::<u64>();
        total += n;
        buckets.push((*b, n));
    }
    let over = hs
        .iter()
        .map(|h| h.over.load(Ordering::Relaxed))
        .sum::<u64>();
    total += over;
    buckets.push((f64::INFINITY, over));
    for h in hs {
        sum += h.sum_nanos.load(Ordering::Relaxed);
    }
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    m.encode_histogram::<NoLabelSet>(sum as f64 / 1e9, total, &buckets, None)
}

fn encode_counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    m.encode_counter::<NoLabelSet, _, u64>(&v, None)
}

fn encode_gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    m.encode_gauge(&v)
}

impl Collector for Metrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        {
            let mut m = enc.encode_descriptor(
                "podnet_dns_queries",
                "DNS queries answered, by transport, query type and response code",
                None,
                MetricType::Counter,
            )?;
            for (p, pname) in [(0usize, "udp"), (1, "tcp")] {
                for t in 0..N_QTYPES {
                    let tname = QTYPES.get(t).map_or("other", |q| q.1);
                    for (r, rc) in RCODES.iter().enumerate() {
                        let v: u64 = self
                            .shards
                            .iter()
                            .map(|s| s.queries[p][t][r].load(Ordering::Relaxed))
                            .sum();
                        if v == 0 {
                            continue;
                        }
                        let labels = [("proto", pname), ("qtype", tname), ("rcode", rc.name())];
                        m.encode_family(&labels)?
                            .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
                    }
                }
            }
        }
        let lat: Vec<_> = self.shards.iter().map(|s| &s.latency).collect();
        encode_hist(
            &mut enc,
            "podnet_dns_query_duration_seconds",
            "Time from receiving a query to having its response",
            &LATENCY_BUCKETS,
            &lat,
        )?;
        encode_hist(
            &mut enc,
            "podnet_dns_programming_duration_seconds",
            "Time from receiving an informer change set to answering from the updated index",
            &PROGRAMMING_BUCKETS,
            &[&self.programming],
        )?;
        encode_counter(
            &mut enc,
            "podnet_dns_cache_hits",
            "Forwarded names answered from the cache",
            self.sum(|s| &s.cache_hits),
        )?;
        encode_counter(
            &mut enc,
            "podnet_dns_cache_misses",
            "Forwarded names not in the cache",
            self.sum(|s| &s.cache_misses),
        )?;
        encode_counter(
            &mut enc,
            "podnet_dns_forwarded",
            "Queries sent to an upstream",
            self.sum(|s| &s.forwarded),
        )?;
        encode_counter(
            &mut enc,
            "podnet_dns_upstream_failures",
            "Upstream attempts that timed out, failed or looped",
            self.sum(|s| &s.upstream_failures),
        )?;
        encode_counter(
            &mut enc,
            "podnet_dns_dropped",
            "Packets dropped without a reply",
            self.sum(|s| &s.dropped),
        )?;
        encode_gauge(
            &mut enc,
            "podnet_dns_services",
            "Services in the record index",
            self.services.load(Ordering::Relaxed),
        )?;
        encode_gauge(
            &mut enc,
            "podnet_dns_index_revision",
            "Store revision of the record index",
            self.revision.load(Ordering::Relaxed),
        )?;
        encode_gauge(
            &mut enc,
            "podnet_dns_cache_entries",
            "Entries in the forwarding cache",
            self.cache_entries.load(Ordering::Relaxed),
        )?;
        encode_gauge(
            &mut enc,
            "podnet_dns_ready",
            "1 after the first full sync",
            self.ready.load(Ordering::Relaxed) as u64,
        )?;
        Ok(())
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

async fn serve_http(
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match req.uri().path() {
        "/metrics" => {
            let mut s = String::new();
            match prometheus_client::encoding::text::encode(&mut s, &registry) {
                Ok(()) => {
                    let mut r = text(StatusCode::OK, s);
                    r.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static(
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        ),
                    );
                    r
                }
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("encoding metrics: {e}\n"),
                ),
            }
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/ready" => {
            if metrics.ready.load(Ordering::Relaxed) {
                text(StatusCode::OK, "ready\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "waiting for the first full sync\n".into(),
                )
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    })
}

/// Serves `/metrics`, `/healthz`, `/ready` on `listener` until `shutdown` fires.
pub async fn http_server(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let registry = Arc::new(metrics.registry());
    let mut shutdown = shutdown;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, _peer)) = accepted else {
            continue;
        };
        let metrics = metrics.clone();
        let registry = registry.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                serve_http(metrics.clone(), registry.clone(), req)
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!("metrics connection: {e}");
            }
        });
    }
}
