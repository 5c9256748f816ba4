//! Links between namespaces: the "physical" network that nodes sit on.

use std::process::Command;

use anyhow::{bail, Context, Result};
use ipnetwork::Ipv4Network;

use crate::netns::{run_checked, Netns};

/// An underlay network between hosts. Dropping it removes its links (and the
/// switch namespace, if any).
pub struct Underlay {
    /// (namespace name, link name) of one end of every veth we made.
    links: Vec<(String, String)>,
    switch: Option<Netns>,
    /// The interface each attached host got, in attach order.
    pub ifaces: Vec<String>,
    /// The address (with prefix) each attached host got, in attach order.
    pub addrs: Vec<String>,
}

impl Underlay {
    /// A veth pair between `a` and `b` with the given addresses (`10.90.0.1/24`).
    /// Each end is named `ethN`, the first free N in its namespace.
    pub fn veth(a: &Netns, addr_a: &str, b: &Netns, addr_b: &str) -> Result<Underlay> {
        let if_a = free_eth_name(a)?;
        let if_b = free_eth_name(b)?;
        run_checked(Command::new("ip").args([
            "-n",
            a.name(),
            "link",
            "add",
            &if_a,
            "type",
            "veth",
            "peer",
            "name",
            &if_b,
            "netns",
            b.name(),
        ]))
        .with_context(|| format!("creating veth {}:{if_a} <-> {}:{if_b}", a.name(), b.name()))?;
        let under = Underlay {
            links: vec![(a.name().to_string(), if_a.clone())],
            switch: None,
            ifaces: vec![if_a.clone(), if_b.clone()],
            addrs: vec![addr_a.to_string(), addr_b.to_string()],
        };
        configure(a, &if_a, addr_a)?;
        configure(b, &if_b, addr_b)?;
        Ok(under)
    }

    /// A switch: a namespace holding a bridge with one veth to each host.
    /// Host `i` gets address `.(i+1)` of `subnet` (e.g. `10.90.0.0/24`) on its `ethN`.
    pub fn switch(hosts: &[&Netns], subnet: &str) -> Result<Underlay> {
        let net: Ipv4Network = subnet
            .parse()
            .with_context(|| format!("parsing underlay subnet {subnet}"))?;
        if hosts.len() as u64 + 2 > u64::from(net.size()) {
            bail!(
                "underlay subnet {subnet} is too small for {} hosts",
                hosts.len()
            );
        }
        let sw = Netns::new("switch")?;
        sw.exec_checked(&["ip", "link", "add", "br0", "type", "bridge"])?;
        sw.exec_checked(&["ip", "link", "set", "br0", "up"])?;
        let mut under = Underlay {
            links: Vec::new(),
            switch: None,
            ifaces: Vec::new(),
            addrs: Vec::new(),
        };
        for (i, host) in hosts.iter().enumerate() {
            let port = format!("p{i}");
            let ifname = free_eth_name(host)?;
            plug_into_switch(&sw, &port, host, &ifname)?;
            let addr = format!("{}/{}", nth_host(&net, i as u32 + 1)?, net.prefix());
            configure(host, &ifname, &addr)?;
            under.ifaces.push(ifname);
            under.addrs.push(addr);
        }
        under.switch = Some(sw);
        Ok(under)
    }

    /// The switch namespace (for `Underlay::switch`), e.g. to capture traffic.
    pub fn switch_ns(&self) -> Option<&Netns> {
        self.switch.as_ref()
    }

    /// The address of host `i` without the prefix length.
    pub fn ip(&self, i: usize) -> &str {
        self.addrs[i].split('/').next().unwrap_or("")
    }
}

impl Drop for Underlay {
    fn drop(&mut self) {
        for (ns, link) in &self.links {
            let _ = Command::new("ip")
                .args(["-n", ns, "link", "del", link])
                .stderr(std::process::Stdio::null())
                .status();
        }
        // The switch namespace's Drop removes its veths, and with them the host ends.
    }
}

/// A veth from port `port` of the switch's `br0` (up) to `ifname` in `host`
/// (left down for the caller to configure).
pub(crate) fn plug_into_switch(sw: &Netns, port: &str, host: &Netns, ifname: &str) -> Result<()> {
    run_checked(Command::new("ip").args([
        "-n",
        sw.name(),
        "link",
        "add",
        port,
        "type",
        "veth",
        "peer",
        "name",
        ifname,
        "netns",
        host.name(),
    ]))
    .with_context(|| format!("connecting {} to the switch", host.name()))?;
    sw.exec_checked(&["ip", "link", "set", port, "master", "br0", "up"])?;
    Ok(())
}

fn configure(ns: &Netns, ifname: &str, addr: &str) -> Result<()> {
    ns.exec_checked(&["ip", "addr", "add", addr, "dev", ifname])?;
    ns.exec_checked(&["ip", "link", "set", ifname, "up"])?;
    Ok(())
}

fn nth_host(net: &Ipv4Network, n: u32) -> Result<std::net::Ipv4Addr> {
    net.nth(n)
        .with_context(|| format!("{net} has no host number {n}"))
}

fn free_eth_name(ns: &Netns) -> Result<String> {
    let out = ns.exec_checked(&["ip", "-o", "link", "show"])?;
    (0..64)
        .map(|i| format!("eth{i}"))
        .find(|cand| {
            !out.lines().any(|l| {
                l.split(": ")
                    .nth(1)
                    .map(|n| n.split('@').next() == Some(cand.as_str()))
                    .unwrap_or(false)
            })
        })
        .context("no free ethN name")
}
