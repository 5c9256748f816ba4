//! podnet-dns: the cluster DNS server (Kubernetes DNS schema 1.1.0).
//!
//! - `wire`: the DNS wire format (query parsing, pre-encoded records, size-limited responses).
//! - `index`: the immutable record index and `lookup` (pure, lock-free reads).
//! - `build`: index construction from informer snapshots and incremental change sets.
//! - `answer`: one query in, one response out (authoritative part; forwarding decision).
//! - `forward` + `cache`: names outside the zone go to upstream servers, cached by TTL.
//! - `metrics`: counters/histograms without locks on the answer path, `/metrics` `/healthz` `/ready`.
//! - `server`: UDP (several SO_REUSEPORT sockets) and TCP loops, the informer feed, shutdown;
//!   `mmsg`: batched UDP receive/send for the UDP workers.
//! - `config`: command-line flags and `run`.
//! - `fixtures`: hand-made Kubernetes objects for tests, the benchmark and the fuzz target.
//!
//! hickory-server is not used: its UDP path answers non-EDNS clients with up
//! to 4096 bytes, it has one socket per address (no SO_REUSEPORT workers),
//! and it encodes every record per query; here answers are pre-encoded at
//! index build time and a reply is a header, the copied question and
//! memcpy'd records. hickory-proto decodes our responses in the tests.

pub mod answer;
pub mod build;
pub mod cache;
pub mod config;
pub mod fixtures;
pub mod forward;
pub mod index;
pub mod metrics;
pub mod mmsg;
pub mod server;
pub mod wire;

#[cfg(test)]
mod index_tests;
