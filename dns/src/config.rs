//! Command-line flags of `podnet-dns` and `run`, which wires the store,
//! informer, index builder and server together until SIGTERM.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use ipnetwork::IpNetwork;
use podnet_state::{Informer, Kind};

use crate::build::IndexBuilder;
use crate::forward::{parse_upstreams, without_self};
use crate::index::{PodMode, ZoneConfig};
use crate::server::{feed, termination, Server, ServerConfig, ServerError};

/// Private, loopback and CGNAT ranges: cluster clients, not the internet.
pub const DEFAULT_ALLOW_RECURSION: &str =
    "127.0.0.0/8,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,::1/128,fc00::/7,fe80::/10";

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "podnet-dns",
    about = "Cluster DNS for podnet (Kubernetes DNS schema 1.1.0)"
)]
pub struct Args {
    /// Cluster state store: dir:///path or etcd://host:port[,host:port].
    #[arg(long, env = "PODNET_STORE")]
    pub store: String,
    /// UDP and TCP address to serve DNS on.
    #[arg(long, default_value = "0.0.0.0:53")]
    pub listen: SocketAddr,
    /// The cluster domain.
    #[arg(long, default_value = "cluster.local")]
    pub zone: String,
    /// TTL of cluster records, seconds.
    #[arg(long, default_value_t = 5)]
    pub ttl: u32,
    /// TTL of negative answers (SOA MINIMUM and SOA TTL); defaults to --ttl.
    #[arg(long)]
    pub negative_ttl: Option<u32>,
    /// Upstreams for names outside the zone: a resolv.conf path or IP[:PORT],...
    /// An empty value disables forwarding.
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub upstream: String,
    /// Pod records a-b-c-d.<ns>.pod.<zone>.
    #[arg(long, value_enum, default_value_t = PodMode::Insecure)]
    pub pods: PodMode,
    /// Client networks allowed to use forwarding (others get REFUSED).
    #[arg(long, default_value = DEFAULT_ALLOW_RECURSION, value_delimiter = ',')]
    pub allow_recursion: Vec<IpNetwork>,
    /// Address of /metrics, /healthz and /ready; "off" disables it.
    #[arg(long, default_value = "127.0.0.1:9153")]
    pub metrics_addr: MetricsAddr,
    /// Number of SO_REUSEPORT UDP sockets (one worker thread each); 0 = one per CPU.
    #[arg(long, default_value_t = 0)]
    pub udp_sockets: usize,
    /// Datagrams each UDP worker takes per recvmmsg call (1 = one at a time).
    #[arg(long, default_value_t = 32)]
    pub udp_batch: usize,
    #[arg(long, default_value_t = 1024)]
    pub tcp_max_connections: usize,
    /// Idle TCP connections are closed after this long.
    #[arg(long, default_value = "10s", value_parser = humantime_duration)]
    pub tcp_idle_timeout: Duration,
    /// How long one upstream gets to answer before the next is tried.
    #[arg(long, default_value = "1s", value_parser = humantime_duration)]
    pub upstream_timeout: Duration,
    #[arg(long, default_value_t = 10000)]
    pub cache_entries: usize,
    /// Upper bound of cached TTLs, seconds.
    #[arg(long, default_value_t = 3600)]
    pub cache_max_ttl: u32,
    /// Addresses answered for ns.dns.<zone> (the NS target); defaults to the
    /// --listen address when it is not a wildcard.
    #[arg(long, value_delimiter = ',')]
    pub ns_ip: Vec<std::net::IpAddr>,
}

#[derive(Debug, Clone, Copy)]
pub struct MetricsAddr(pub Option<SocketAddr>);

impl FromStr for MetricsAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "off" || s.is_empty() {
            return Ok(MetricsAddr(None));
        }
        s.parse()
            .map(|a| MetricsAddr(Some(a)))
            .map_err(|e| format!("{s:?}: {e}"))
    }
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).ok_or_else(|| format!("{s:?} is not a duration like 500ms, 2s, 1m"))
}

/// `500ms`, `2s`, `1m`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return None,
    })
}

/// What `run` works from, derived from the flags.
pub struct Settings {
    pub zone: ZoneConfig,
    pub server: ServerConfig,
    pub store: String,
    pub watch_pods: bool,
}

pub fn settings(a: &Args) -> Result<Settings, ServerError> {
    let ns_ips = if a.ns_ip.is_empty() && !a.listen.ip().is_unspecified() {
        vec![a.listen.ip()]
    } else {
        a.ns_ip.clone()
    };
    let zone = ZoneConfig::new(
        &a.zone,
        a.ttl,
        a.negative_ttl.unwrap_or(a.ttl),
        a.pods,
        ns_ips,
    )
    .ok_or_else(|| ServerError::Config(format!("--zone {:?} is not a valid DNS name", a.zone)))?;
    let upstreams = if a.upstream.is_empty() {
        Vec::new()
    } else {
        let ups = parse_upstreams(&a.upstream).map_err(|e| ServerError::Config(e.to_string()))?;
        without_self(ups, a.listen)
    };
    if upstreams.is_empty() {
        tracing::warn!("no upstream servers: names outside {} get REFUSED", a.zone);
    }
    let udp_sockets = if a.udp_sockets == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        a.udp_sockets
    };
    Ok(Settings {
        zone,
        server: ServerConfig {
            listen: a.listen,
            udp_sockets,
            udp_batch: a.udp_batch,
            tcp_max_connections: a.tcp_max_connections,
            tcp_idle_timeout: a.tcp_idle_timeout,
            allow_recursion: a.allow_recursion.clone(),
            upstreams,
            upstream_timeout: a.upstream_timeout,
            cache_entries: a.cache_entries,
            cache_max_ttl: a.cache_max_ttl,
            metrics_addr: a.metrics_addr.0,
        },
        store: a.store.clone(),
        watch_pods: a.pods == PodMode::Verified,
    })
}

/// Serves until SIGTERM/SIGINT, then shuts down cleanly.
pub async fn run(args: Args) -> Result<(), ServerError> {
    let s = settings(&args)?;
    let store = podnet_state::open_store(&s.store)
        .await
        .map_err(|source| ServerError::Store {
            url: s.store.clone(),
            source,
        })?;
    let mut kinds = vec![Kind::Service, Kind::EndpointSlice, Kind::Namespace];
    if s.watch_pods {
        kinds.push(Kind::Pod);
    }
    let builder = IndexBuilder::new(s.zone);
    let server = Server::start(&s.server, builder.index()).await?;
    let informer = Informer::start(store, &kinds);
    let feeder = tokio::spawn(feed(server.shared.clone(), builder, informer.subscribe()));
    let sig = termination().await?;
    tracing::info!("{sig}: shutting down");
    feeder.abort();
    server.shutdown().await;
    drop(informer);
    Ok(())
}
