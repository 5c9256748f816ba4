//! podnet-proxy: Kubernetes Services on nftables. See the crate docs.

use clap::Parser;
use podnet_proxy::cli::Cli;

fn main() -> anyhow::Result<()> {
    // Before the runtime starts its threads.
    podnet_state::memory::limit_arenas();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let settings = Cli::parse().resolve()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(podnet_proxy::daemon::run(settings))?;
    Ok(())
}
