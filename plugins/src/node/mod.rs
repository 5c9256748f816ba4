//! The `podnet-node` agent: one per node.
//!
//! Start-up, in order (nothing is programmed before the config is known good):
//! read and check `ClusterConfig` → find the underlay → claim the node's
//! subnets (state `subnet`, bound to a store lease that is kept alive) →
//! create/repair the VXLAN device → publish the Node object (addresses,
//! podCIDRs, backend and VTEP MAC annotations) → write the lease file →
//! masquerade rules. Then it reconciles the data path for every remote node
//! on each informer change set and every `resync_period` (which also repairs
//! entries deleted by hand). The first reconcile waits for a complete node
//! list, so a restart never removes entries of nodes that still exist.
//!
//! `model` holds the pure decisions; this module does the I/O.

pub mod masq;
pub mod model;

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressScope};
use podnet_state::object::{self, Backend, ClusterConfig, TypedObject};
use podnet_state::subnet::{claim_subnets, SubnetError};
use podnet_state::{open_store, Informer, Kind, Lease, ObjectKey, Store, StoreError};

use crate::overlay::kernel::{Kernel, KernelError};
use crate::overlay::{desired, diff, Mac, Mode};
use model::LocalNode;

/// Name of the ClusterConfig object the agent reads.
pub const CLUSTER_CONFIG_NAME: &str = "default";

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub store: String,
    pub node_name: String,
    /// Underlay interface; its global addresses are the node's addresses.
    pub iface: Option<String>,
    /// Underlay addresses (at most one per family); the interface holding
    /// the first one is the underlay. Wins over `iface`.
    pub underlay_ips: Vec<IpAddr>,
    pub lease_file: PathBuf,
    pub resync_period: Duration,
    /// TTL of the store lease that holds the node's subnet claims.
    pub lease_ttl: Duration,
    /// Masquerade pod traffic that leaves the cluster networks.
    pub ip_masq: bool,
    /// How long to wait for a ClusterConfig to appear before giving up
    /// (`None`: wait until shut down).
    pub config_timeout: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("opening store {url}: {source}")]
    Store {
        url: String,
        #[source]
        source: StoreError,
    },
    #[error("{doing}: {source}")]
    StoreOp {
        doing: String,
        #[source]
        source: StoreError,
    },
    #[error("ClusterConfig {CLUSTER_CONFIG_NAME} is invalid, nothing was programmed: {0}")]
    BadConfig(String),
    #[error("no ClusterConfig {CLUSTER_CONFIG_NAME:?} appeared in the store within {0:?}")]
    NoConfig(Duration),
    #[error("claiming pod subnets, nothing was programmed: {0}")]
    Subnet(#[from] SubnetError),
    #[error("finding the underlay: {0}")]
    Underlay(String),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Lease(#[from] crate::lease::LeaseError),
    #[error("lost this node's pod subnets: {0}")]
    LostSubnet(String),
    #[error("installing masquerade rules: {0}")]
    Masq(String),
}

/// The underlay as found in the kernel.
#[derive(Debug, Clone)]
struct Underlay {
    index: u32,
    mtu: u32,
    addresses: Vec<IpAddr>,
}

/// Runs the agent until `shutdown` resolves (then returns `Ok`, leaving the
/// data path in place so pods keep talking while the agent is away).
pub async fn run(opts: AgentOptions, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    tokio::pin!(shutdown);
    let store = tokio::select! {
        s = open_store_retrying(&opts.store) => s?,
        _ = &mut shutdown => return Ok(()),
    };
    let cfg = tokio::select! {
        c = wait_for_config(&*store, opts.config_timeout) => c?,
        _ = &mut shutdown => return Ok(()),
    };
    cfg.validate().map_err(AgentError::BadConfig)?;
    let kernel = Kernel::connect()?;
    let under = find_underlay(&kernel, &opts).await?;
    model::check_node_against_config(&cfg, &under.addresses).map_err(AgentError::BadConfig)?;

    let store_lease: Arc<dyn Lease> =
        Arc::from(store.grant_lease(opts.lease_ttl).await.map_err(|source| {
            AgentError::StoreOp {
                doing: format!("granting a {:?} store lease", opts.lease_ttl),
                source,
            }
        })?);
    let subnets = claim_subnets(&*store, &opts.node_name, &cfg, &*store_lease).await?;
    let mut keepalive = tokio::spawn(keep_alive(
        store.clone(),
        store_lease,
        opts.lease_ttl,
        opts.node_name.clone(),
        cfg.clone(),
        subnets.clone(),
    ));

    let local = LocalNode {
        name: opts.node_name.clone(),
        addresses: under.addresses.clone(),
        subnets,
        backend: cfg.spec.backend,
        vtep_mac: (cfg.spec.backend == Backend::Vxlan)
            .then(|| Mac::derived(&opts.node_name, cfg.spec.vni)),
    };
    let tunnel = local
        .tunnel_address()
        .ok_or_else(|| AgentError::Underlay("the underlay has no address".into()))?;
    let mtu = model::pod_mtu(&cfg, under.mtu, tunnel);
    let lease = model::lease(&cfg, &local, mtu, opts.ip_masq);
    let vx_spec = lease.vxlan_spec(under.index);
    let mut vx_index = match &vx_spec {
        Some(s) => Some(kernel.ensure_vxlan(s).await?),
        None => None,
    };
    publish_node(&*store, &local).await?;
    if lease.write(&opts.lease_file)? {
        tracing::info!(path = %opts.lease_file.display(), subnets = ?local.subnets, mtu, "wrote lease file");
    }
    if opts.ip_masq {
        masq::install(&cfg.spec.cluster_cidrs)
            .await
            .map_err(AgentError::Masq)?;
    }

    let mode = match cfg.spec.backend {
        Backend::HostGw => Mode::HostGw,
        Backend::Vxlan => Mode::Vxlan {
            local_underlay: tunnel,
        },
    };
    let informer = Informer::start(store.clone(), &[Kind::Node]);
    let mut sub = informer.subscribe();
    tokio::select! {
        _ = informer.wait_synced() => {}
        _ = &mut shutdown => { keepalive.abort(); return Ok(()) }
    }
    tracing::info!(node = %local.name, backend = model::backend_name(cfg.spec.backend), "node list synced, reconciling");
    let mut resync = tokio::time::interval(opts.resync_period);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let full = tokio::select! {
            cs = sub.next() => match cs {
                Some(cs) => cs.full_resync,
                None => break,
            },
            _ = resync.tick() => true,
            _ = &mut shutdown => break,
            lost = &mut keepalive => {
                return Err(lost.unwrap_or_else(|e| AgentError::LostSubnet(format!("the lease renewal task ended: {e}"))));
            }
        };
        if full {
            if let Some(s) = &vx_spec {
                match kernel.ensure_vxlan(s).await {
                    Ok(i) => vx_index = Some(i),
                    Err(e) => tracing::warn!(error = %e, "repairing the VXLAN device"),
                }
            }
        }
        let snap = informer.snapshot();
        if !snap.synced {
            continue;
        }
        reconcile(
            &kernel,
            mode,
            &local,
            vx_index,
            snap.nodes.values().map(|n| &**n),
        )
        .await;
    }
    keepalive.abort();
    tracing::info!("shutting down; data path left in place");
    Ok(())
}

/// One pass: desired from the node list, diff against the kernel, apply.
async fn reconcile<'a>(
    kernel: &Kernel,
    mode: Mode,
    local: &LocalNode,
    vx_index: Option<u32>,
    nodes: impl IntoIterator<Item = &'a k8s_openapi::api::core::v1::Node>,
) {
    let started = Instant::now();
    let (remotes, problems) = model::remote_nodes(nodes, &local.name);
    for p in problems {
        tracing::warn!(problem = %p, "ignoring part of a node object");
    }
    let (want, skipped) = desired(mode, &local.subnets, &remotes);
    for s in skipped {
        tracing::debug!(node = %s.node, reason = %s.reason, "node not programmed");
    }
    let actual = match kernel.read(vx_index).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "reading the data path");
            return;
        }
    };
    let ops = diff(&want, &actual);
    if ops.is_empty() {
        return;
    }
    for op in &ops {
        tracing::info!(?op, "data path change");
    }
    let errors = kernel.apply(&ops, vx_index).await;
    for e in &errors {
        tracing::warn!(error = %e, "applying a data path change");
    }
    tracing::info!(
        ops = ops.len(),
        failed = errors.len(),
        entries = want.len(),
        took_ms = started.elapsed().as_millis() as u64,
        "reconciled"
    );
}

/// Opens the store, retrying with backoff while it is unreachable (an etcd
/// that starts after the agent); other errors (a bad URL) are final.
async fn open_store_retrying(url: &str) -> Result<Arc<dyn Store>, AgentError> {
    let mut delay = Duration::from_millis(100);
    loop {
        match open_store(url).await {
            Ok(s) => return Ok(s),
            Err(e @ StoreError::Unreachable { .. }) => {
                tracing::warn!(error = %e, retry_in = ?delay, "store unreachable");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(source) => {
                return Err(AgentError::Store {
                    url: url.to_string(),
                    source,
                })
            }
        }
    }
}

async fn wait_for_config(
    store: &dyn Store,
    timeout: Option<Duration>,
) -> Result<ClusterConfig, AgentError> {
    let key = ObjectKey::new(Kind::ClusterConfig, None, CLUSTER_CONFIG_NAME);
    let started = Instant::now();
    let mut logged = false;
    loop {
        match store.get(&key).await {
            Ok(Some(o)) => {
                return match object::decode_json(Kind::ClusterConfig, o.json()) {
                    Ok(TypedObject::ClusterConfig(c)) => Ok(c),
                    Ok(other) => Err(AgentError::BadConfig(format!(
                        "{key} decoded as a {:?}",
                        other.kind()
                    ))),
                    Err(e) => Err(AgentError::BadConfig(e.to_string())),
                };
            }
            Ok(None) if !logged => {
                tracing::info!(%key, "waiting for the ClusterConfig to appear");
                logged = true;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "reading the ClusterConfig"),
        }
        if let Some(t) = timeout {
            if started.elapsed() >= t {
                return Err(AgentError::NoConfig(t));
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Renews the store lease that holds the subnet claims. When renewal fails
/// (the lease expired during a long store outage), claims again under a new
/// lease: the same subnets keep everything as it is; different ones end the
/// agent with an error (pods on this node have addresses of the old subnet),
/// so it is restarted with a clean slate. Returns only that error.
async fn keep_alive(
    store: Arc<dyn Store>,
    mut lease: Arc<dyn Lease>,
    ttl: Duration,
    node: String,
    cfg: ClusterConfig,
    subnets: Vec<ipnetwork::IpNetwork>,
) -> AgentError {
    let every = (ttl / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        let Err(e) = lease.keep_alive().await else {
            continue;
        };
        tracing::warn!(error = %e, "renewing the subnet lease; claiming again");
        let fresh: Arc<dyn Lease> = match store.grant_lease(ttl).await {
            Ok(l) => Arc::from(l),
            Err(e) => {
                tracing::warn!(error = %e, "granting a new store lease");
                continue;
            }
        };
        match claim_subnets(&*store, &node, &cfg, &*fresh).await {
            Ok(s) if s == subnets => {
                tracing::info!(subnets = ?s, "subnets claimed again under a new store lease");
                lease = fresh;
            }
            Ok(s) => {
                return AgentError::LostSubnet(format!(
                "held {subnets:?}, but after the store lease expired only {s:?} could be claimed"
            ))
            }
            Err(e) => tracing::warn!(error = %e, "claiming the subnets again"),
        }
    }
}

async fn publish_node(store: &dyn Store, local: &LocalNode) -> Result<(), AgentError> {
    let key = ObjectKey::new(Kind::Node, None, &local.name);
    let existing = store
        .get(&key)
        .await
        .map_err(|source| AgentError::StoreOp {
            doing: format!("reading {key}"),
            source,
        })?
        .and_then(|o| match object::decode_json(Kind::Node, o.json()) {
            Ok(TypedObject::Node(n)) => Some(n),
            _ => None,
        });
    let want = model::node_object(local, existing.as_ref());
    if !model::node_needs_update(existing.as_ref(), &want) {
        return Ok(());
    }
    let mut value = serde_json::to_value(&want).expect("a Node serializes");
    value["apiVersion"] = "v1".into();
    value["kind"] = "Node".into();
    store
        .put(&key, &value)
        .await
        .map_err(|source| AgentError::StoreOp {
            doing: format!("publishing {key}"),
            source,
        })?;
    tracing::info!(node = %local.name, addresses = ?local.addresses, subnets = ?local.subnets, "published node");
    Ok(())
}

/// The underlay link and the node's addresses on it: given addresses first
/// (their link is the underlay), else the given interface, else the link of
/// the IPv4 default route. A missing family is filled in from the link's
/// global addresses.
async fn find_underlay(k: &Kernel, opts: &AgentOptions) -> Result<Underlay, AgentError> {
    let bad = AgentError::Underlay;
    let index = if let Some(ip) = opts.underlay_ips.first() {
        k.link_with_address(*ip)
            .await?
            .ok_or_else(|| bad(format!("no interface holds --underlay-ip {ip}")))?
    } else if let Some(name) = &opts.iface {
        k.link(name)
            .await?
            .ok_or_else(|| bad(format!("--iface {name} does not exist")))?
            .index
    } else {
        default_route_link(k).await?.ok_or_else(|| {
            bad("no --underlay-ip or --iface given and no IPv4 default route".into())
        })?
    };
    let link = k
        .link_by_index(index)
        .await?
        .ok_or_else(|| bad(format!("underlay link #{index} vanished")))?;
    let global = global_addresses(k, index).await?;
    let mut addresses: Vec<IpAddr> = Vec::new();
    for v4 in [true, false] {
        let given = opts.underlay_ips.iter().find(|a| a.is_ipv4() == v4);
        if let Some(a) = given.or_else(|| global.iter().find(|a| a.is_ipv4() == v4)) {
            addresses.push(*a);
        }
    }
    if addresses.is_empty() {
        return Err(bad(format!("underlay link #{index} has no global address")));
    }
    Ok(Underlay {
        index,
        mtu: link.mtu,
        addresses,
    })
}

async fn global_addresses(k: &Kernel, index: u32) -> Result<Vec<IpAddr>, AgentError> {
    let mut out = Vec::new();
    let mut s = k
        .handle()
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(a) = s
        .try_next()
        .await
        .map_err(|e| AgentError::Underlay(format!("listing addresses of link #{index}: {e}")))?
    {
        if a.header.index != index || a.header.scope != AddressScope::Universe {
            continue;
        }
        for at in &a.attributes {
            if let AddressAttribute::Address(ip) = at {
                out.push(*ip);
            }
        }
    }
    Ok(out)
}

async fn default_route_link(k: &Kernel) -> Result<Option<u32>, AgentError> {
    use netlink_packet_route::route::{RouteAttribute, RouteMessage};
    let mut q = RouteMessage::default();
    q.header.address_family = netlink_packet_route::AddressFamily::Inet;
    let mut s = k.handle().route().get(q).execute();
    while let Some(r) = s
        .try_next()
        .await
        .map_err(|e| AgentError::Underlay(format!("listing routes: {e}")))?
    {
        if r.header.destination_prefix_length != 0 || r.header.table != 254 {
            continue;
        }
        if let Some(oif) = r.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(o) => Some(*o),
            _ => None,
        }) {
            return Ok(Some(oif));
        }
    }
    Ok(None)
}
