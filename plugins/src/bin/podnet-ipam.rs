//! `podnet-ipam`: CNI IPAM plugin (host-local compatible config, O(1) store).

fn main() {
    std::process::exit(podnet_plugins::cni::run(&podnet_plugins::ipam::IpamPlugin));
}
