//! podnet-dns: the cluster DNS server (Kubernetes DNS schema 1.1.0).
//!
//! - `wire`: the DNS wire format (query parsing, pre-encoded records, size-limited responses).
//! - `index`: the immutable record index and `lookup` (pure, lock-free reads).
//! - `build`: index construction from informer snapshots and incremental change sets.
//! - `answer`: one query in, one response out (authoritative part; forwarding decision).
//! - `forward` + `cache`: names outside the zone go to upstream servers, cached by TTL.
//! - `metrics`: counters/histograms without locks on the answer path, `/metrics` `/healthz` `/ready`.
//! - `server`: UDP (several SO_REUSEPORT sockets) and TCP loops, the informer feed, shutdown.
//! - `config`: command-line flags.

pub mod answer;
pub mod build;
pub mod fixtures;
pub mod index;
pub mod wire;

#[cfg(test)]
mod index_tests;
