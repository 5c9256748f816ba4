//! podnet's CNI plugins and node agent.
//!
//! - `cni`: the CNI protocol layer shared by every plugin (env, config, versions, results, errors).
//! - `ipam`: the `podnet-ipam` allocator and its crash-safe store.
//! - `netlink`: links, addresses, routes and sysctls inside a target network namespace.
//! - `bridge`: the `podnet-bridge` plugin (veth + bridge + delegated IPAM).
//! - `masq`: nftables rules of the bridge plugin (masquerade, macspoofchk).
//! - `overlay`: cross-node data path (host-gw routes, VXLAN device/FDB/neighbours), desired vs actual.
//! - `lease`: the node lease file (`subnet.json`) written by the agent, read by the meta plugins.
//! - `meta`: the `podnet-host-gw` / `podnet-vxlan` meta plugins.
//! - `node`: the `podnet-node` agent.

pub mod bridge;
pub mod cni;
pub mod ipam;
pub mod lease;
pub mod masq;
pub mod meta;
pub mod netlink;
pub mod node;
pub mod overlay;
