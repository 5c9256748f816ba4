//! `podnet-vxlan`: the CNI meta plugin for the vxlan backend. Everything is in
//! `podnet_plugins::meta`; the protocol in `podnet_plugins::cni::run`.

fn main() {
    std::process::exit(podnet_plugins::cni::run(
        &podnet_plugins::meta::MetaPlugin::VXLAN,
    ));
}
