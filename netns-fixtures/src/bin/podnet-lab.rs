//! podnet-lab: a simulated multi-node podnet cluster in network namespaces.

use anyhow::Result;
use clap::{Parser, Subcommand};
use netns_fixtures::lab::{self, Backend, StoreKind, UpOptions};

#[derive(Parser)]
#[command(
    version,
    about = "A simulated multi-node podnet cluster on this machine, inside network namespaces"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the cluster: nodes, agents, proxies, pods, Services, DNS.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, value_enum, default_value = "host-gw")]
        backend: Backend,
        #[arg(long, value_enum, default_value = "dir")]
        store: StoreKind,
        #[arg(long, default_value_t = 2)]
        pods_per_node: usize,
        /// Directory with the podnet binaries (default: beside podnet-lab, or $PODNET_BIN_DIR).
        #[arg(long)]
        bin_dir: Option<std::path::PathBuf>,
    },
    /// Remove everything `up` made (also after a crash).
    Down,
    /// Scale down by one pod: its endpoints leave the Services, then CNI DEL.
    DeletePod { name: String },
    /// Nodes, pods, Services and the health of every daemon.
    Status,
    /// Run a command in a pod's (or node's) namespace: `podnet-lab exec web-0 -- curl -s http://web`.
    Exec {
        target: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("podnet-lab creates network namespaces and needs root");
    }
    match cli.cmd {
        Cmd::Up {
            nodes,
            backend,
            store,
            pods_per_node,
            bin_dir,
        } => {
            let rec = lab::up(&UpOptions {
                nodes,
                backend,
                store,
                pods_per_node,
                bin_dir: bin_dir.unwrap_or_else(lab::default_bin_dir),
            })?;
            print!("{}", lab::summary(&rec));
        }
        Cmd::Down => lab::down()?,
        Cmd::DeletePod { name } => lab::delete_pod(&name)?,
        Cmd::Status => print!("{}", lab::status()?),
        Cmd::Exec { target, command } => std::process::exit(lab::exec(&target, &command)?),
    }
    Ok(())
}
