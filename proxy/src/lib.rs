//! podnet-proxy: Kubernetes Services on one node with nftables.
//!
//! Pipeline, one module per step (the first four are pure):
//! `model` (informer snapshot -> validated desired state per family and service
//! port) -> `plan` (the `podnet` table's chains, sets, maps and elements) ->
//! `diff` (plan vs installed plan -> minimal change set, or a full atomic
//! replacement) -> `apply` (encodes it as one nf_tables netlink transaction via
//! `podnet-nft`). `render` prints a plan in `nft` syntax (golden tests, debugging).
//! Around it: `sync` (the coalescing sync loop), `conntrack` (flushes UDP flows
//! to removed endpoints), `http` (`/metrics`, `/healthz`, healthCheckNodePort
//! responders), `metrics`, `cli` (flags and config file) and `daemon` (the
//! long-running loop the thin binary calls). The allocator policy comes from
//! `podnet_state::memory`, which keeps the proxy free of `unsafe`.

pub mod apply;
pub mod cli;
pub mod conntrack;
pub mod daemon;
pub mod diff;
pub mod http;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod render;
pub mod sync;
