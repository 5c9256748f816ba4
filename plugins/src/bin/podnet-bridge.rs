//! `podnet-bridge`: the CNI bridge plugin. Everything is in `podnet_plugins::bridge`;
//! the protocol (env, stdin, result/error JSON) in `podnet_plugins::cni::run`.

fn main() {
    std::process::exit(podnet_plugins::cni::run(
        &podnet_plugins::bridge::BridgePlugin,
    ));
}
