//! `podnet-node`: the per-node agent (subnet lease, node object, lease file,
//! host-gw routes / VXLAN device, FDB and neighbours, masquerade).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use podnet_plugins::lease::lease_path;
use podnet_plugins::node::{run, AgentOptions};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "podnet node agent: cross-node pod networking (host-gw or VXLAN)"
)]
struct Args {
    /// Cluster store: `dir:///path` or `etcd://host:port[,host:port]`.
    #[arg(long, env = "PODNET_STORE", default_value = podnet_state::DEFAULT_STORE)]
    store: String,
    /// This node's name in the store.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Underlay interface (default: the one holding --underlay-ip, else the IPv4 default route's).
    #[arg(long)]
    iface: Option<String>,
    /// Underlay address(es) of this node, one per family.
    #[arg(long = "underlay-ip")]
    underlay_ip: Vec<IpAddr>,
    /// Lease file the CNI plugins read (default: $PODNET_LEASE_FILE or /run/podnet/subnet.json).
    #[arg(long)]
    lease_file: Option<PathBuf>,
    /// Full resync period (repairs entries changed behind the agent's back).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    resync_period: Duration,
    /// TTL of the store lease that holds this node's subnet claims.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    lease_ttl: Duration,
    /// Do not masquerade pod traffic leaving the cluster networks.
    #[arg(long)]
    no_ip_masq: bool,
    /// Give up if no ClusterConfig appears within this time (default: wait forever).
    #[arg(long, value_parser = humantime::parse_duration)]
    config_timeout: Option<Duration>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    let opts = AgentOptions {
        store: a.store,
        node_name: a.node_name,
        iface: a.iface,
        underlay_ips: a.underlay_ip,
        lease_file: lease_path(a.lease_file.as_deref()),
        resync_period: a.resync_period,
        lease_ttl: a.lease_ttl,
        ip_masq: !a.no_ip_masq,
        config_timeout: a.config_timeout,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        run(opts, shutdown).await.context("podnet-node")
    })
}
