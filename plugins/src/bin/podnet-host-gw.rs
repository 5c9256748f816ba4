//! `podnet-host-gw`: the CNI meta plugin for the host-gw backend. Everything is in
//! `podnet_plugins::meta`; the protocol in `podnet_plugins::cni::run`.

fn main() {
    std::process::exit(podnet_plugins::cni::run(
        &podnet_plugins::meta::MetaPlugin::HOST_GW,
    ));
}
