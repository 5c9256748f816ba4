//! ExternalName services whose target is outside the cluster zone, resolved
//! as CoreDNS's backend lookup does: A/AAAA/TXT get the CNAME chain plus the
//! target's records, looked up through forwarding and its cache; a failed
//! lookup still answers the CNAMEs. Inside a test network namespace: the
//! fake upstream is a second podnet-dns serving `example.test` on
//! 127.0.0.53:53, the server under test listens on 127.0.0.1:53.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{parse_dig, Dig, TestStore};
use netns_fixtures::{ChildGuard, Netns};
use podnet_dns::fixtures;

fn dig_in(ns: &Netns, server: &str, args: &str) -> Dig {
    let mut argv = vec!["dig", server, "+tries=1", "+time=3", "+nocookie"];
    argv.extend(args.split_whitespace());
    let out = ns.exec(&argv).expect("running dig in the namespace");
    parse_dig(&String::from_utf8_lossy(&out.stdout))
}

fn start(ns: &Netns, store: &TestStore, listen: &str, extra: &[&str]) -> ChildGuard {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_podnet-dns"));
    cmd.args(["--store", &store.url(), "--listen", listen])
        .args(["--metrics-addr", "off", "--udp-sockets", "1"])
        .args(extra);
    let child = ns.spawn(cmd).expect("starting podnet-dns in the namespace");
    let server = format!("@{}", listen.split(':').next().unwrap());
    let up = common::wait(Duration::from_secs(20), || {
        dig_in(ns, &server, "dns-version.cluster.local TXT").status == "NOERROR"
            || dig_in(ns, &server, "dns-version.example.test TXT").status == "NOERROR"
    });
    assert!(up, "podnet-dns on {listen} did not answer");
    child
}

#[test]
fn external_names_outside_the_zone_get_the_targets_records() {
    netns_fixtures::skip_unless_root!();
    let upstream_store = TestStore::new();
    upstream_store.put(&fixtures::service_json(
        "default",
        "web",
        &["10.96.7.7"],
        &[],
    ));
    upstream_store.put(&fixtures::external_json(
        "default",
        "alias",
        "web.default.svc.example.test",
    ));
    // Points back into our zone: the upstream answers its CNAME alone.
    upstream_store.put(&fixtures::external_json(
        "default",
        "back",
        "loop.default.svc.cluster.local",
    ));
    let store = TestStore::new();
    store.put(&fixtures::namespace_json("default"));
    for (name, target) in [
        ("ext", "web.default.svc.example.test"),
        ("chain", "alias.default.svc.example.test"),
        ("inner", "ext.default.svc.cluster.local"),
        ("missing", "nope.default.svc.example.test"),
        ("loop", "back.default.svc.example.test"),
        ("later", "later.default.svc.example.test"),
    ] {
        store.put(&fixtures::external_json("default", name, target));
    }

    let ns = Netns::new("dnsx").unwrap();
    let mut upstream = start(
        &ns,
        &upstream_store,
        "127.0.0.53:53",
        &["--zone", "example.test", "--ttl", "300", "--upstream", ""],
    );
    // Loopback is not allowed to recurse: the targets are resolved anyway
    // (they are the cluster's configuration), other outside names are not.
    let _dns = start(
        &ns,
        &store,
        "127.0.0.1:53",
        &[
            "--upstream",
            "127.0.0.53:53",
            "--upstream-timeout",
            "500ms",
            "--allow-recursion",
            "192.0.2.0/24",
        ],
    );
    let ask = |args: &str| dig_in(&ns, "@127.0.0.1", args);

    let d = ask("ext.default.svc.cluster.local A");
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert_eq!(
        d.answers(),
        [
            "ext.default.svc.cluster.local. 5 CNAME web.default.svc.example.test.",
            "web.default.svc.example.test. 300 A 10.96.7.7",
        ],
        "{}",
        d.raw
    );
    assert!(d.has_flag("aa") && !d.has_flag("ra"), "{}", d.raw);
    let d = ask("ext.default.svc.cluster.local A +tcp");
    assert_eq!(d.answer.len(), 2, "{}", d.raw);

    // The upstream's own CNAMEs come along; a chain through our zone first.
    let d = ask("chain.default.svc.cluster.local A");
    assert_eq!(
        d.data(),
        [
            "10.96.7.7",
            "alias.default.svc.example.test.",
            "web.default.svc.example.test."
        ],
        "{}",
        d.raw
    );
    let d = ask("inner.default.svc.cluster.local A");
    assert_eq!(d.answer.len(), 3, "{}", d.raw);
    assert!(
        d.answer[0].starts_with("inner.default.svc.cluster.local. 5 CNAME ext."),
        "{}",
        d.raw
    );

    // No address of that type, or no such name upstream: the CNAME alone.
    for q in [
        "ext.default.svc.cluster.local AAAA",
        "missing.default.svc.cluster.local A",
    ] {
        let d = ask(q);
        assert_eq!(d.status, "NOERROR", "{q}\n{}", d.raw);
        assert_eq!(d.answer.len(), 1, "{q}\n{}", d.raw);
    }
    // A loop through the upstream ends: the upstream does not come back to us.
    let d = ask("loop.default.svc.cluster.local A");
    assert_eq!(
        d.data(),
        [
            "back.default.svc.example.test.",
            "loop.default.svc.cluster.local."
        ],
        "{}",
        d.raw
    );
    // This client may not recurse: the same name asked directly is refused.
    assert_eq!(ask("web.default.svc.example.test A").status, "REFUSED");

    // Upstream gone: cached targets still complete the chain; others get
    // the CNAME alone once the lookup fails.
    upstream.kill();
    let d = ask("ext.default.svc.cluster.local A");
    assert_eq!(d.answer.len(), 2, "from the cache\n{}", d.raw);
    let d = ask("later.default.svc.cluster.local A");
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert_eq!(
        d.answers(),
        ["later.default.svc.cluster.local. 5 CNAME later.default.svc.example.test."],
        "{}",
        d.raw
    );
}
