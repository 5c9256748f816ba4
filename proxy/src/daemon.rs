//! The long-running proxy: informer -> coalesced syncs (at most one per
//! `min_sync_period`), HTTP endpoints, healthCheckNodePort responders, clean
//! exit on SIGTERM/SIGINT (rules stay installed so traffic keeps flowing
//! across restarts; the next start replaces them atomically).

use std::sync::Arc;
use std::time::{Duration, Instant};

use podnet_state::{open_store, Change, Informer, Kind, Snapshot, StoreError};
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::Settings;
use crate::http::{self, BindError, HealthCheckServers};
use crate::metrics::{Health, Metrics};
use crate::plan::Layout;
use crate::render;
use crate::sync::{Proxier, ProxyConfig, SyncError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("opening store {url}: {source}")]
    Store {
        url: String,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("installing the {0} handler: {1}")]
    Signal(&'static str, #[source] std::io::Error),
    #[error("the informer stopped before the first snapshot")]
    InformerGone,
}

/// Retry delay after a failed transaction (the retry is a full sync).
const RETRY_AFTER: Duration = Duration::from_secs(1);

fn proxy_config(s: &Settings) -> ProxyConfig {
    ProxyConfig {
        node_name: s.node_name.clone(),
        cluster_cidrs: s.cluster_cidrs.clone(),
        service_cidrs: s.service_cidrs.clone(),
        nodeport_addresses: s.nodeport_addresses.clone(),
        masquerade_all: s.masquerade_all,
        layout: Layout::Podnet,
    }
}

pub async fn run(s: Settings) -> Result<(), DaemonError> {
    let store = open_store(&s.store)
        .await
        .map_err(|source| DaemonError::Store {
            url: s.store.clone(),
            source,
        })?;
    // Nodes: this node's InternalIPs (loadBalancerSourceRanges that hold
    // one let the node reach its LB IPs, as in kube-proxy).
    let informer = Informer::start(
        store,
        &[
            Kind::Service,
            Kind::EndpointSlice,
            Kind::ClusterConfig,
            Kind::Node,
        ],
    );
    let mut sub = informer.subscribe();
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(s.healthz_bound));
    let mut proxier = Proxier::new(proxy_config(&s), metrics.clone())?;

    if s.once {
        let first = sub.next().await.ok_or(DaemonError::InformerGone)?;
        if s.dry_run {
            let (model, plans) = proxier.plans(&first.snapshot);
            for sk in &model.skipped {
                eprintln!("skipped: {sk}");
            }
            for p in plans.values() {
                print!("{}", render::table(p));
            }
            return Ok(());
        }
        let report = tokio::task::block_in_place(|| proxier.sync(&first.snapshot, None))?;
        println!("{report}");
        return Ok(());
    }

    let mut tasks = Vec::new();
    if let Some(addr) = s.metrics_addr {
        tasks.push(http::spawn_metrics(addr, metrics.clone(), health.clone()).await?);
    }
    if let Some(addr) = s.healthz_addr {
        tasks.push(http::spawn_healthz(addr, health.clone()).await?);
    }
    let mut hc = HealthCheckServers::default();
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| DaemonError::Signal("SIGTERM", e))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| DaemonError::Signal("SIGINT", e))?;

    let mut latest: Option<Arc<Snapshot>> = None;
    let mut dirty = false;
    // Keys changed since the last successful sync; None = replace everything.
    let mut pending: Option<Vec<Change>> = None;
    let mut have_synced = false;
    let mut not_before = Instant::now();
    loop {
        let wait = tokio::time::sleep_until(not_before.into());
        tokio::select! {
            cs = sub.next() => match cs {
                Some(cs) => {
                    // Other nodes' Node objects do not change this node's rules.
                    let others_only = have_synced
                        && !cs.full_resync
                        && !cs.changes.is_empty()
                        && cs
                            .changes
                            .iter()
                            .all(|c| c.key.kind == Kind::Node && c.key.name != s.node_name);
                    latest = Some(cs.snapshot);
                    if others_only {
                        continue;
                    }
                    pending = match pending.take() {
                        Some(mut p) if have_synced && !cs.full_resync => {
                            p.extend(cs.changes);
                            Some(p)
                        }
                        None if have_synced && !cs.full_resync && !dirty => Some(cs.changes),
                        _ => None,
                    };
                    dirty = true;
                    health.changed();
                }
                None => break,
            },
            _ = wait, if dirty => {
                let Some(snap) = latest.clone() else { continue };
                let changes = pending.take();
                match tokio::task::block_in_place(|| proxier.sync(&snap, changes.as_deref())) {
                    Ok(report) => {
                        dirty = false;
                        have_synced = true;
                        pending = None;
                        health.synced();
                        tracing::info!("{report}");
                        not_before = Instant::now() + s.min_sync_period;
                        hc.sync(proxier.health_checks()).await;
                    }
                    Err(e) => {
                        // `pending` stays None: the retry is a full sync.
                        tracing::error!("sync failed, retrying with a full sync in {RETRY_AFTER:?}: {e}");
                        not_before = Instant::now() + RETRY_AFTER.max(s.min_sync_period);
                    }
                }
            }
            _ = term.recv() => { tracing::info!("SIGTERM: exiting, rules stay installed"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: exiting, rules stay installed"); break; }
        }
    }
    for t in tasks {
        t.abort();
    }
    Ok(())
}
