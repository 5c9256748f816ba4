//! `podnetctl`: kubectl-like access to podnet's store; see `podnet_state::ctl`.

use clap::Parser;
use podnet_state::ctl::{run, Cli};

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let mut out = std::io::stdout();
    if let Err(e) = run(cli, &mut out).await {
        // Store errors repeat their source in their message; print each
        // piece of the chain once.
        let mut msg = String::new();
        for cause in e.chain() {
            let c = cause.to_string();
            if !msg.contains(&c) {
                if !msg.is_empty() {
                    msg.push_str(": ");
                }
                msg.push_str(&c);
            }
        }
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}
