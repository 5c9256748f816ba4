//! The `podnet-bridge` plugin: a veth pair per pod, the host end on a Linux bridge,
//! addresses from a delegated IPAM plugin, optional masquerade and MAC spoof checks.
//!
//! - `config`: the plugin's keys ([`BridgeConf`]) and the pure gateway/route decisions.
//! - this module: the commands, as a library ([`add`], [`del`], [`check`], [`status`],
//!   [`gc`]) so the meta plugins (`podnet-host-gw`, `podnet-vxlan`) can hand a generated
//!   bridge config to the same code; [`BridgePlugin`] wires them to [`crate::cni::run`].
//!
//! ADD validates everything it can before changing anything (config, container
//! namespace, interface name), then runs IPAM while it makes the bridge and the veth
//! pair, then addresses, routes, gateway, nftables. Any failure after that point undoes
//! what this call made and releases the address (delegated DEL), so a failed ADD leaves
//! the host as it was.

mod config;

pub use config::{
    apply_gateways, family_gateway, first_host, BridgeConf, Gateways, DEFAULT_BRIDGE,
};

use std::net::IpAddr;

use crate::cni::{self, ipnet::IpNet, CniError, CniResult, Interface, Plugin, Request};
use crate::masq::{self, Owner};
use crate::netlink::{self, Address, BridgeSpec, Handle, Link, Netns, NetnsError, Route, VethSpec};

/// The CNI plugin (`type: podnet-bridge`).
pub struct BridgePlugin;

impl Plugin for BridgePlugin {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        add(req, &BridgeConf::from_request(req)?)
    }
    fn del(&self, req: &Request) -> Result<(), CniError> {
        del(req, &BridgeConf::from_request(req)?)
    }
    fn check(&self, req: &Request) -> Result<(), CniError> {
        check(req, &BridgeConf::from_request(req)?)
    }
    fn status(&self, req: &Request) -> Result<(), CniError> {
        status(req, &BridgeConf::from_request(req)?)
    }
    fn gc(&self, req: &Request) -> Result<(), CniError> {
        gc(req, &BridgeConf::from_request(req)?)
    }
}

/// Index of the container interface in the result's `interfaces` (bridge, host veth, pod).
const CONTAINER_IFACE: u32 = 2;
/// Attempts at a free random host veth name before giving up.
const VETH_NAME_ATTEMPTS: usize = 8;

fn nl(e: netlink::NetlinkError) -> CniError {
    CniError::io(e.to_string())
}

fn owner<'a>(req: &'a Request, conf: &'a BridgeConf) -> Owner<'a> {
    Owner {
        network: &conf.network,
        container_id: &req.env.container_id,
        ifname: &req.env.ifname,
    }
}

/// Opens `CNI_NETNS` for ADD/CHECK: missing → code 3 (the container is gone),
/// not a namespace → code 4 (the variable is wrong).
fn open_netns(req: &Request) -> Result<Netns, CniError> {
    let path = req
        .env
        .netns
        .as_ref()
        .ok_or_else(|| CniError::invalid_env("CNI_NETNS is required"))?;
    Netns::open(path).map_err(|e| match e {
        NetnsError::NotFound(_) => CniError::unknown_container(format!("CNI_NETNS: {e}")),
        NetnsError::NotNetns(_) => CniError::invalid_env(format!("CNI_NETNS: {e}")),
        other => CniError::io(format!("opening CNI_NETNS: {other}")),
    })
}

/// What an ADD has changed so far, to undo on failure.
#[derive(Default)]
struct Undo {
    ipam: bool,
    bridge_created: Option<u32>,
    host_veth: Option<String>,
    nft: bool,
}

/// ADD: sets up the pod's interface and returns the result (current layout; `run`
/// renders it in the requested version).
pub fn add(req: &Request, conf: &BridgeConf) -> Result<CniResult, CniError> {
    let ns = open_netns(req)?;
    let pod = Handle::open_in(&ns).map_err(nl)?;
    if pod.link_by_name(&req.env.ifname).map_err(nl)?.is_some() {
        return Err(CniError::invalid_env(format!(
            "CNI_IFNAME {:?} already exists in {}",
            req.env.ifname,
            ns.path().display()
        )));
    }
    let host = Handle::new().map_err(nl)?;
    let mut undo = Undo::default();
    match add_steps(req, conf, &ns, &pod, &host, &mut undo) {
        Ok(r) => Ok(r),
        Err(e) => {
            rollback(req, conf, &host, &undo);
            Err(e)
        }
    }
}

/// The links of an attachment, made while IPAM runs.
struct Links {
    bridge: Link,
    host_veth: Link,
    cont: Link,
}

fn add_steps(
    req: &Request,
    conf: &BridgeConf,
    ns: &Netns,
    pod: &Handle,
    host: &Handle,
    undo: &mut Undo,
) -> Result<CniResult, CniError> {
    // IPAM (an exec, the slowest step) and the links do not depend on each other: run
    // them at the same time. A failure of either undoes both.
    let (ipam, links) = std::thread::scope(|s| {
        let ipam = conf
            .ipam_type
            .as_ref()
            .map(|t| s.spawn(move || cni::delegate_add(t, &req.conf.bytes, &req.env)));
        let links = make_links(req, conf, ns, pod, host, undo);
        let ipam = ipam.map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(CniError::io("IPAM delegation thread panicked")))
        });
        (ipam, links)
    });
    let mut result = match ipam {
        Some(r) => {
            let r = r?;
            undo.ipam = true;
            if r.ips.is_empty() {
                return Err(CniError::io(format!(
                    "IPAM plugin {} returned no IP configuration",
                    conf.ipam_type.as_deref().unwrap_or_default()
                )));
            }
            r
        }
        None => CniResult {
            interfaces: Vec::new(),
            ips: Vec::new(),
            routes: Vec::new(),
            dns: None,
        },
    };
    let Links {
        bridge,
        host_veth,
        cont,
    } = links?;
    let host_name = host_veth.name.clone();
    let gateways = apply_gateways(conf, &mut result, CONTAINER_IFACE);

    if !result.ips.is_empty() {
        configure_pod(pod, &cont, &result)?;
    }

    if conf.is_gateway {
        for gw in gateways.v4.iter().chain(gateways.v6.iter()) {
            ensure_bridge_address(host, &bridge, gw, conf.force_address)?;
        }
        if !gateways.v4.is_empty() {
            enable_forwarding("net/ipv4/ip_forward")?;
        }
        if !gateways.v6.is_empty() {
            enable_forwarding("net/ipv6/conf/all/forwarding")?;
        }
    }

    let masq_ips: Vec<IpNet> = if conf.ip_masq {
        result.ips.iter().map(|ip| ip.address).collect()
    } else {
        Vec::new()
    };
    let spoof = if conf.mac_spoof_chk {
        cont.mac.map(|m| (host_name.as_str(), m))
    } else {
        None
    };
    if !masq_ips.is_empty() || spoof.is_some() {
        undo.nft = true;
        // Adding elements defers no frees, so this session closes without waiting.
        masq::Session::open()
            .and_then(|mut s| s.add(&owner(req, conf), &masq_ips, spoof))
            .map_err(|e| CniError::io(e.to_string()))?;
    }

    // The bridge MAC is fixed at creation, but report what the kernel has now.
    let bridge_now = host
        .link_by_index(bridge.index)
        .map_err(nl)?
        .unwrap_or(bridge);
    result.interfaces = vec![
        Interface {
            name: bridge_now.name.clone(),
            mac: bridge_now.mac_string(),
            mtu: None,
            sandbox: None,
            socket_path: None,
            pci_id: None,
        },
        Interface {
            name: host_name,
            mac: host_veth.mac_string(),
            mtu: None,
            sandbox: None,
            socket_path: None,
            pci_id: None,
        },
        Interface {
            name: req.env.ifname.clone(),
            mac: cont.mac_string(),
            mtu: None,
            sandbox: Some(ns.path().display().to_string()),
            socket_path: None,
            pci_id: None,
        },
    ];
    if let Some(dns) = &req.conf.dns {
        let set = !dns.nameservers.is_empty()
            || dns.domain.as_ref().is_some_and(|d| !d.is_empty())
            || dns.search.as_ref().is_some_and(|s| !s.is_empty())
            || dns.options.as_ref().is_some_and(|o| !o.is_empty());
        if set {
            result.dns = Some(dns.clone());
        }
    }
    Ok(result)
}

/// Bridge, veth pair (pod end named `CNI_IFNAME`, up), hairpin and VLAN of the port.
fn make_links(
    req: &Request,
    conf: &BridgeConf,
    ns: &Netns,
    pod: &Handle,
    host: &Handle,
    undo: &mut Undo,
) -> Result<Links, CniError> {
    let (bridge, created) = host
        .bridge_ensure(&BridgeSpec {
            name: &conf.bridge,
            mtu: conf.mtu,
            promisc: conf.promisc_mode,
            vlan_filtering: conf.vlan != 0,
        })
        .map_err(nl)?;
    if created {
        undo.bridge_created = Some(bridge.index);
        // We own the bridge's routes; router advertisements must not add any.
        let _ = netlink::sysctl_write(&format!("net/ipv6/conf/{}/accept_ra", conf.bridge), "0");
    }

    let host_name = create_veth(req, conf, ns, pod, host, bridge.index)?;
    undo.host_veth = Some(host_name.clone());
    let host_veth = host
        .link_by_name(&host_name)
        .map_err(nl)?
        .ok_or_else(|| CniError::io(format!("host veth {host_name} vanished after creation")))?;
    if conf.hairpin_mode {
        host.bridge_port_set_hairpin(host_veth.index, true)
            .map_err(nl)?;
    }
    if conf.vlan != 0 {
        host.bridge_vlan_add(host_veth.index, conf.vlan, true)
            .map_err(nl)?;
    }

    let cont = pod
        .link_by_name(&req.env.ifname)
        .map_err(nl)?
        .ok_or_else(|| {
            CniError::io(format!(
                "container interface {} vanished after creation",
                req.env.ifname
            ))
        })?;
    pod_sysctls(req, conf, ns)?;
    pod.link_set_up(cont.index).map_err(nl)?;
    Ok(Links {
        bridge,
        host_veth,
        cont,
    })
}

/// Creates the veth pair: host end `veth%08x` on the bridge, peer `CNI_IFNAME` directly
/// in the pod namespace, the host end up. Retries on a host name collision.
fn create_veth(
    req: &Request,
    conf: &BridgeConf,
    ns: &Netns,
    pod: &Handle,
    host: &Handle,
    bridge_index: u32,
) -> Result<String, CniError> {
    let mut last = None;
    for _ in 0..VETH_NAME_ATTEMPTS {
        let name = format!("veth{:08x}", rand::random::<u32>());
        let spec = VethSpec {
            name: &name,
            peer_name: &req.env.ifname,
            peer_netns: Some(ns),
            mtu: conf.mtu,
            peer_mac: conf.mac,
            master: Some(bridge_index),
            up: true,
        };
        match host.veth_create(&spec) {
            Ok(()) => return Ok(name),
            Err(e) if e.is_exists() => {
                // Either our random name is taken on the host, or CNI_IFNAME appeared in
                // the pod since we looked.
                if pod.link_by_name(&req.env.ifname).map_err(nl)?.is_some() {
                    return Err(CniError::invalid_env(format!(
                        "CNI_IFNAME {:?} already exists in {}",
                        req.env.ifname,
                        ns.path().display()
                    )));
                }
                last = Some(e);
            }
            Err(e) => return Err(nl(e)),
        }
    }
    Err(CniError::io(format!(
        "no free host veth name after {VETH_NAME_ATTEMPTS} attempts: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    )))
}

/// DAD and ARP sysctls of the pod interface, set before it comes up (so its link-local
/// address already follows them).
fn pod_sysctls(req: &Request, conf: &BridgeConf, ns: &Netns) -> Result<(), CniError> {
    let ifname = req.env.ifname.clone();
    let enable_dad = conf.enable_dad;
    let failed = |e: &dyn std::fmt::Display| {
        CniError::io(format!("setting sysctls in {}: {e}", ns.path().display()))
    };
    ns.run(move || -> std::io::Result<()> {
        // Without DAD addresses are usable at once (the reference's default). The
        // IPv6 keys are absent when IPv6 is disabled in the pod: not an error.
        let dad = if enable_dad { "1" } else { "0" };
        let _ = netlink::sysctl_write(&format!("net/ipv6/conf/{ifname}/accept_dad"), dad);
        if enable_dad {
            let _ = netlink::sysctl_write(&format!("net/ipv6/conf/{ifname}/enhanced_dad"), "1");
        }
        netlink::sysctl_write(&format!("net/ipv4/conf/{ifname}/arp_notify"), "1")
    })
    .map_err(|e| failed(&e))?
    .map_err(|e| failed(&e))
}

/// Pod side once IPAM has answered: addresses, routes.
fn configure_pod(pod: &Handle, cont: &Link, result: &CniResult) -> Result<(), CniError> {
    for ip in &result.ips {
        let addr = Address {
            ip: ip.address.addr(),
            prefix_len: ip.address.prefix_len(),
        };
        match pod.address_add(cont.index, addr) {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => return Err(nl(e)),
        }
    }
    for r in &result.routes {
        let v4 = r.dst.addr().is_ipv4();
        let route = Route {
            dst: r.dst.network(),
            prefix_len: r.dst.prefix_len(),
            gateway: r.gw.or_else(|| family_gateway(result, v4)),
            oif: Some(cont.index),
        };
        match pod.route_add(&route) {
            Ok(()) => {}
            // Two IPAM routes to the same destination: the first one wins, as the
            // kernel would keep it; CHECK still verifies the destination is routed.
            Err(e) if e.is_exists() => {}
            Err(e) => return Err(nl(e)),
        }
    }
    Ok(())
}

/// Puts `gw` on the bridge. Another address of the same family (IPv4) or an overlapping
/// one (IPv6) is an error unless `force`, in which case it is replaced.
fn ensure_bridge_address(
    host: &Handle,
    bridge: &Link,
    gw: &IpNet,
    force: bool,
) -> Result<(), CniError> {
    let v4 = gw.addr().is_ipv4();
    let want = Address {
        ip: gw.addr(),
        prefix_len: gw.prefix_len(),
    };
    for a in host.addresses(bridge.index, Some(v4), false).map_err(nl)? {
        if a == want {
            return Ok(());
        }
        let theirs = IpNet::new(a.ip, a.prefix_len).map_err(|e| CniError::io(e.to_string()))?;
        if v4 || theirs.contains(&gw.addr()) || gw.contains(&a.ip) {
            if force {
                host.address_del(bridge.index, a).map_err(nl)?;
            } else {
                return Err(CniError::invalid_config(format!(
                    "bridge {} already has address {a}, different from the gateway {want} (set forceAddress to replace it)",
                    bridge.name
                )));
            }
        }
    }
    match host.address_add(bridge.index, want) {
        Ok(()) => Ok(()),
        Err(e) if e.is_exists() => Ok(()),
        Err(e) => Err(nl(e)),
    }
}

fn enable_forwarding(key: &str) -> Result<(), CniError> {
    if netlink::sysctl_read(key).map(|v| v == "1").unwrap_or(false) {
        return Ok(());
    }
    netlink::sysctl_write(key, "1").map_err(|e| CniError::io(format!("enabling forwarding: {e}")))
}

/// Best-effort undo of a failed ADD; errors are logged, the original error is reported.
fn rollback(req: &Request, conf: &BridgeConf, host: &Handle, undo: &Undo) {
    if undo.nft {
        if let Err(e) = masq::Session::open().and_then(|mut s| s.del(&owner(req, conf))) {
            tracing::warn!(error = %e, "rollback: removing nftables entries");
        }
    }
    if let Some(v) = &undo.host_veth {
        // Deleting one end removes the pair, so CNI_IFNAME disappears from the pod too.
        if let Err(e) = host.link_del_by_name(v) {
            tracing::warn!(error = %e, veth = %v, "rollback: deleting veth");
        }
    }
    if let Some(idx) = undo.bridge_created {
        // Only if no other pod has joined the bridge we just made.
        let in_use = host
            .links()
            .map(|ls| ls.iter().any(|l| l.master == Some(idx)))
            .unwrap_or(true);
        if !in_use {
            if let Err(e) = host.link_del(idx) {
                tracing::warn!(error = %e, bridge = %conf.bridge, "rollback: deleting bridge");
            }
        }
    }
    if undo.ipam {
        if let Some(t) = &conf.ipam_type {
            if let Err(e) = cni::delegate_del(t, &req.conf.bytes, &req.env) {
                tracing::warn!(error = %e, "rollback: releasing the address");
            }
        }
    }
}

/// DEL: removes nftables entries, then the pod interface (its veth peer goes with it)
/// while the address is released. Succeeds when any of these is already gone.
pub fn del(req: &Request, conf: &BridgeConf) -> Result<(), CniError> {
    // Kept open until the end: see `masq::Session` on why closing it early would wait.
    let session = if conf.ip_masq || conf.mac_spoof_chk {
        let mut s = masq::Session::open().map_err(|e| CniError::io(e.to_string()))?;
        s.del(&owner(req, conf))
            .map_err(|e| CniError::io(e.to_string()))?;
        Some(s)
    } else {
        None
    };
    // Deleting a veth waits for the kernel's RCU barrier (~20 ms); the IPAM exec runs
    // meanwhile.
    let (ipam, link) = std::thread::scope(|s| {
        let ipam = conf
            .ipam_type
            .as_ref()
            .map(|t| s.spawn(move || cni::delegate_del(t, &req.conf.bytes, &req.env)));
        let link = del_pod_link(req);
        let ipam = ipam.map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(CniError::io("IPAM delegation thread panicked")))
        });
        (ipam, link)
    });
    link?;
    if let Some(r) = ipam {
        r?;
    }
    drop(session);
    Ok(())
}

/// Deletes `CNI_IFNAME` in the pod, if the pod and the interface still exist.
fn del_pod_link(req: &Request) -> Result<(), CniError> {
    let Some(path) = &req.env.netns else {
        return Ok(());
    };
    let ns = match Netns::open(path) {
        Ok(ns) => ns,
        // The namespace is gone, and with it both veth ends.
        Err(NetnsError::NotFound(_)) => return Ok(()),
        Err(e) => return Err(CniError::io(format!("opening CNI_NETNS for DEL: {e}"))),
    };
    let pod = Handle::open_in(&ns).map_err(nl)?;
    if let Some(l) = pod.link_by_name(&req.env.ifname).map_err(nl)? {
        match pod.link_del(l.index) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(nl(e)),
        }
    }
    Ok(())
}

/// STATUS: the bridge itself is made on demand, so readiness is the IPAM's.
pub fn status(req: &Request, conf: &BridgeConf) -> Result<(), CniError> {
    match &conf.ipam_type {
        Some(t) => cni::delegate_status(t, &req.conf.bytes, &req.env),
        None => Ok(()),
    }
}

/// GC: IPAM releases stale reservations; nftables entries of attachments not in the
/// valid list are removed.
pub fn gc(req: &Request, conf: &BridgeConf) -> Result<(), CniError> {
    let valid = req.conf.gc_attachments()?;
    if let Some(t) = &conf.ipam_type {
        cni::delegate_gc(t, &req.conf.bytes, &req.env)?;
    }
    let keep: Vec<(String, String)> = valid
        .into_iter()
        .map(|a| (a.container_id, a.ifname))
        .collect();
    masq::Session::open()
        .and_then(|mut s| s.gc(&conf.network, &keep))
        .map_err(|e| CniError::io(e.to_string()))
}

/// CHECK: the IPAM's check, then the bridge, the pod interface, its host peer on the
/// bridge, the addresses and the routes of `prevResult` are all still in place.
pub fn check(req: &Request, conf: &BridgeConf) -> Result<(), CniError> {
    let fail = |m: String| CniError::plugin(cni::code::PLUGIN_BASE, "check failed", m);
    if let Some(t) = &conf.ipam_type {
        cni::delegate_check(t, &req.conf.bytes, &req.env)?;
    }
    let prev = req
        .conf
        .prev_result()?
        .ok_or_else(|| CniError::invalid_config("CHECK requires prevResult"))?;
    let ns = open_netns(req)?;
    let sandbox = ns.path().display().to_string();
    let host = Handle::new().map_err(nl)?;

    let br = host
        .link_by_name(&conf.bridge)
        .map_err(nl)?
        .ok_or_else(|| fail(format!("bridge {} not found", conf.bridge)))?;
    if br.kind.as_deref() != Some("bridge") {
        return Err(fail(format!("{} is not a bridge", conf.bridge)));
    }
    if br.promisc != conf.promisc_mode {
        return Err(fail(format!(
            "bridge {} promiscuous mode is {}, config says {}",
            conf.bridge, br.promisc, conf.promisc_mode
        )));
    }
    if let Some(i) = prev.interfaces.iter().find(|i| i.name == conf.bridge) {
        if !i.mac.is_empty() && i.mac != br.mac_string() {
            return Err(fail(format!(
                "bridge {} MAC is {}, prevResult says {}",
                conf.bridge,
                br.mac_string(),
                i.mac
            )));
        }
    }

    let cif = prev
        .interfaces
        .iter()
        .find(|i| i.name == req.env.ifname && i.sandbox.as_deref() == Some(sandbox.as_str()))
        .ok_or_else(|| {
            fail(format!(
                "prevResult has no interface {} in {sandbox}",
                req.env.ifname
            ))
        })?;
    let pod = Handle::open_in(&ns).map_err(nl)?;
    let cont = pod
        .link_by_name(&req.env.ifname)
        .map_err(nl)?
        .ok_or_else(|| {
            fail(format!(
                "interface {} not found in {sandbox}",
                req.env.ifname
            ))
        })?;
    if cont.kind.as_deref() != Some("veth") {
        return Err(fail(format!(
            "{} in {sandbox} is not a veth",
            req.env.ifname
        )));
    }
    if !cif.mac.is_empty() && cif.mac != cont.mac_string() {
        return Err(fail(format!(
            "{} MAC is {}, prevResult says {}",
            req.env.ifname,
            cont.mac_string(),
            cif.mac
        )));
    }
    let peer = cont
        .peer_index
        .and_then(|i| host.link_by_index(i).ok().flatten())
        .ok_or_else(|| fail(format!("host end of {} not found", req.env.ifname)))?;
    if peer.master != Some(br.index) {
        return Err(fail(format!(
            "host veth {} is not on bridge {}",
            peer.name, conf.bridge
        )));
    }
    if !prev
        .interfaces
        .iter()
        .any(|i| i.name == peer.name && i.sandbox.is_none())
    {
        return Err(fail(format!(
            "host veth {} is not in prevResult",
            peer.name
        )));
    }

    let have = pod.addresses(cont.index, None, false).map_err(nl)?;
    for ip in &prev.ips {
        let want = Address {
            ip: ip.address.addr(),
            prefix_len: ip.address.prefix_len(),
        };
        if !have.contains(&want) {
            return Err(fail(format!(
                "address {want} missing on {}",
                req.env.ifname
            )));
        }
    }
    for fam_v4 in [true, false] {
        let wanted: Vec<_> = prev
            .routes
            .iter()
            .filter(|r| r.dst.addr().is_ipv4() == fam_v4)
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let routes = pod.routes(fam_v4).map_err(nl)?;
        for r in wanted {
            let dst: IpAddr = r.dst.network();
            let found = routes.iter().any(|k| {
                k.dst == dst
                    && k.prefix_len == r.dst.prefix_len()
                    && r.gw.is_none_or(|g| k.gateway == Some(g))
            });
            if !found {
                return Err(fail(format!("route {} missing in {sandbox}", r.dst)));
            }
        }
    }
    if conf.ip_masq || conf.mac_spoof_chk {
        check_nft(req, conf, &prev, &peer.name).map_err(fail)?;
    }
    Ok(())
}

/// The pod's nftables entries are there: one masquerade element per IP (`ipMasq`),
/// the port and its allowed pair (`macspoofchk`).
fn check_nft(req: &Request, conf: &BridgeConf, prev: &CniResult, port: &str) -> Result<(), String> {
    let me = owner(req, conf).comment();
    let listed = masq::Session::open()
        .and_then(|mut s| s.list())
        .map_err(|e| e.to_string())?;
    let mine = |set: &str| {
        listed
            .iter()
            .filter(|l| l.set == set && l.comment.as_deref() == Some(me.as_str()))
            .count()
    };
    if conf.ip_masq && mine(masq::MASQ_MAP) != prev.ips.len() {
        return Err(format!(
            "{} masquerade entries for {me}, expected one per address ({})",
            mine(masq::MASQ_MAP),
            prev.ips.len()
        ));
    }
    if conf.mac_spoof_chk && (mine(masq::SPOOF_PORTS) != 1 || mine(masq::SPOOF_ALLOWED) != 1) {
        return Err(format!(
            "MAC spoof check entries of {me} (port {port}) missing"
        ));
    }
    Ok(())
}
