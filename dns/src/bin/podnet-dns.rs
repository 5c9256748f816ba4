//! `podnet-dns`: flags in, `podnet_dns::config::run` until SIGTERM.

use clap::Parser;

// jemalloc, not glibc malloc: it keeps small objects in per-size slabs and,
// with no decay delay, gives freed pages back at once, so what stays
// resident after the initial list is close to the live data. At 10k
// services: 25 MB resident, against 35 MB with glibc (31 MB after a
// `malloc_trim`), whose per-thread arenas keep the list's freed pages
// between live objects. (With an informer that held every raw list value
// at once, glibc's thread cache even gave the freed value chunks to the
// long-lived objects decoded next: 72 MB.)
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options (read at its start): pages back to the kernel as soon
/// as they are free; one arena (the few threads each keep a small cache).
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"dirty_decay_ms:0,muzzy_decay_ms:0,narenas:1\0";

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = podnet_dns::config::Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(podnet_dns::config::run(args))?;
    Ok(())
}
