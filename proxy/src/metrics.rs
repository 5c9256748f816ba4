//! Prometheus metrics of the proxy and the `/healthz` state.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
    pub sync_duration: Histogram,
    pub full_syncs: Counter,
    pub partial_syncs: Counter,
    pub sync_failures: Counter,
    pub services: Gauge,
    pub endpoints: Gauge,
    pub elements: Gauge,
    pub skipped_objects: Gauge,
    pub conntrack_deleted: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("podnet_proxy");
        // 100 µs .. ~3.3 s
        let sync_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let m = Metrics {
            registry: Registry::default(),
            sync_duration,
            full_syncs: Counter::default(),
            partial_syncs: Counter::default(),
            sync_failures: Counter::default(),
            services: Gauge::default(),
            endpoints: Gauge::default(),
            elements: Gauge::default(),
            skipped_objects: Gauge::default(),
            conntrack_deleted: Counter::default(),
        };
        registry.register(
            "sync_duration_seconds",
            "Time to compute and program one sync",
            m.sync_duration.clone(),
        );
        registry.register(
            "full_syncs",
            "Syncs that replaced the whole table",
            m.full_syncs.clone(),
        );
        registry.register(
            "partial_syncs",
            "Syncs that sent only changed elements and chains",
            m.partial_syncs.clone(),
        );
        registry.register(
            "sync_failures",
            "Transactions the kernel rejected or that could not be sent",
            m.sync_failures.clone(),
        );
        registry.register(
            "services",
            "Service ports programmed (all families)",
            m.services.clone(),
        );
        registry.register(
            "endpoints",
            "Endpoints programmed (all families)",
            m.endpoints.clone(),
        );
        registry.register(
            "elements",
            "Set and map elements installed",
            m.elements.clone(),
        );
        registry.register(
            "skipped_objects",
            "Invalid objects or ports left out of the last sync",
            m.skipped_objects.clone(),
        );
        registry.register(
            "conntrack_deleted",
            "UDP conntrack entries deleted for removed endpoints",
            m.conntrack_deleted.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// What `/healthz` reports: unhealthy before the first successful sync and
/// when a change has been waiting longer than `bound` (syncs keep failing).
pub struct Health {
    bound: Duration,
    state: Mutex<HealthState>,
}

#[derive(Default)]
struct HealthState {
    last_success: Option<Instant>,
    pending_since: Option<Instant>,
}

impl Health {
    pub fn new(bound: Duration) -> Health {
        Health {
            bound,
            state: Mutex::new(HealthState::default()),
        }
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    pub fn changed(&self) {
        self.lock().pending_since.get_or_insert_with(Instant::now);
    }
    pub fn synced(&self) {
        let mut s = self.lock();
        s.last_success = Some(Instant::now());
        s.pending_since = None;
    }
    /// (healthy, human-readable reason)
    pub fn check(&self) -> (bool, String) {
        let s = self.lock();
        match (s.last_success, s.pending_since) {
            (None, _) => (false, "no successful sync yet".into()),
            (Some(_), Some(p)) if p.elapsed() > self.bound => (
                false,
                format!(
                    "changes pending for {:.1?} without a successful sync (bound {:?})",
                    p.elapsed(),
                    self.bound
                ),
            ),
            (Some(t), _) => (
                true,
                format!("last successful sync {:.1?} ago", t.elapsed()),
            ),
        }
    }
}
