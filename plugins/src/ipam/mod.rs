//! `podnet-ipam`: a host-local-compatible IPAM plugin with an O(1) store.
//!
//! - `config`: the `ipam` section (ranges, subnet shorthand, rangeStart/End, gateway,
//!   routes, dataDir, resolvConf, bootIdPath) and requested addresses.
//! - `alloc`: pure range arithmetic and round-robin candidate search.
//! - `plan`: which address each range set contributes (existing, requested, next free).
//! - `store`: the flock-protected, crash-safe file store (see its docs for the layout).
//!
//! Error codes: bad config 7 (6 for wrong JSON types), I/O 5, exhausted range set or
//! requested address taken 999 (what host-local reports), CHECK without a reservation
//! 3, STATUS with a full range set 50. DEL never fails for a missing reservation.

pub mod alloc;
pub mod config;
pub mod plan;
pub mod store;

use std::collections::HashSet;
use std::net::IpAddr;

use crate::cni::ipnet::IpNet;
use crate::cni::{CniError, CniResult, IpConfig, Plugin, Request};
use alloc::RangeSet;
use config::{requested_ips, store_config, IpamConfig};
use store::Store;

/// The plugin (stateless; everything lives in the store).
#[derive(Debug, Default, Clone, Copy)]
pub struct IpamPlugin;

impl plan::View for Store {
    fn is_taken(&mut self, ip: IpAddr) -> Result<bool, CniError> {
        self.is_reserved(ip)
    }
    fn reserved_in(&mut self, set: &RangeSet) -> Result<u64, CniError> {
        Store::reserved_in(self, set)
    }
    fn last_reserved(&self, set: &RangeSet) -> Option<IpAddr> {
        Store::last_reserved(self, set)
    }
    fn recount(&mut self) -> Result<(), CniError> {
        Store::recount(self)
    }
}

fn require_owner(req: &Request) -> Result<(), CniError> {
    // run() validated these for ADD/DEL/CHECK already; be explicit for direct callers.
    if req.env.container_id.is_empty() || req.env.ifname.is_empty() {
        return Err(CniError::invalid_env(
            "CNI_CONTAINERID and CNI_IFNAME are required",
        ));
    }
    Ok(())
}

/// The result for `ips` (one per set, in set order).
fn result(cfg: &IpamConfig, choices: &[plan::Choice]) -> Result<CniResult, CniError> {
    let mut ips = Vec::with_capacity(choices.len());
    for c in choices {
        let range = cfg.range_sets[c.set].range_for(c.ip).ok_or_else(|| {
            CniError::io(format!(
                "internal: {} not in range set {}",
                c.ip, cfg.range_sets[c.set]
            ))
        })?;
        let address = IpNet::new(c.ip, range.subnet.prefix_len())
            .map_err(|e| CniError::io(format!("internal: building address {}: {e}", c.ip)))?;
        ips.push(IpConfig {
            interface: None,
            address,
            gateway: Some(range.gateway),
        });
    }
    Ok(CniResult {
        interfaces: Vec::new(),
        ips,
        routes: cfg.routes.clone(),
        dns: cfg.dns.clone(),
    })
}

impl Plugin for IpamPlugin {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        require_owner(req)?;
        let cfg = IpamConfig::parse(&req.conf)?;
        let requested = requested_ips(&req.conf, &req.env)?;
        let (id, ifname) = (req.env.container_id.as_str(), req.env.ifname.as_str());
        let mut store = Store::open(&cfg.store)?;
        let existing = store.owner_ips(id, ifname)?;
        let choices = plan::plan(&cfg.range_sets, &requested, &existing, &mut store)?;
        let new: Vec<(IpAddr, &RangeSet)> = choices
            .iter()
            .filter(|c| c.new)
            .map(|c| (c.ip, &cfg.range_sets[c.set]))
            .collect();
        if new.is_empty() {
            tracing::debug!(
                container = id,
                ifname,
                "ADD retry: returning existing reservation"
            );
        } else {
            let mut all = existing.clone();
            all.extend(new.iter().map(|(ip, _)| *ip));
            store.reserve(id, ifname, &all, &new)?;
        }
        result(&cfg, &choices)
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        require_owner(req)?;
        // Only the store location matters: a DEL with a broken range config still
        // releases what the container holds.
        let cfg = store_config(&req.conf);
        if !Store::exists(&cfg) {
            return Ok(());
        }
        let mut store = Store::open(&cfg)?;
        let released = store.release(&req.env.container_id, &req.env.ifname)?;
        tracing::debug!(container = %req.env.container_id, ?released, "DEL");
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        require_owner(req)?;
        let cfg = IpamConfig::parse(&req.conf)?;
        let store = Store::open(&cfg.store)?;
        let held = store.owner_ips(&req.env.container_id, &req.env.ifname)?;
        for set in &cfg.range_sets {
            if !held.iter().any(|ip| set.is_allocatable(*ip)) {
                return Err(CniError::unknown_container(format!(
                    "container {} ifname {} holds no address in range set {set} of network {}",
                    req.env.container_id, req.env.ifname, cfg.store.network
                )));
            }
        }
        // If the runtime passed the previous result, its addresses must be ours.
        if let Some(prev) = req.conf.prev_result()? {
            for ipc in prev.ips {
                let a = ipc.address.addr();
                if cfg.range_sets.iter().any(|s| s.is_allocatable(a)) && !held.contains(&a) {
                    return Err(CniError::unknown_container(format!(
                        "prevResult address {a} is not reserved for container {} ifname {}",
                        req.env.container_id, req.env.ifname
                    )));
                }
            }
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let cfg = IpamConfig::parse(&req.conf)?;
        let mut store = Store::open(&cfg.store)?;
        let mut recounted = false;
        for set in &cfg.range_sets {
            let fresh = !store.has_count(set);
            recounted |= fresh;
            if u128::from(store.reserved_in(set)?) >= set.capacity() {
                return Err(CniError::not_available(format!(
                    "no IP addresses available in range set {set} of network {}",
                    cfg.store.network
                )));
            }
        }
        if recounted {
            store.save_counts()?;
        }
        Ok(())
    }

    fn gc(&self, req: &Request) -> Result<(), CniError> {
        let valid: HashSet<(String, String)> = req
            .conf
            .gc_attachments()?
            .into_iter()
            .map(|a| (a.container_id, a.ifname))
            .collect();
        let mut store = Store::open(&store_config(&req.conf))?;
        let removed = store.gc(&valid)?;
        tracing::info!(network = %req.conf.name, ?removed, "GC released stale reservations");
        Ok(())
    }
}
