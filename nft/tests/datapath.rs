//! Packets through rules built with this crate: in a fresh namespace, a
//! ClusterIP-style service map DNATs connections to two local "endpoints"
//! chosen by `numgen random`, a service without endpoints is rejected with a
//! TCP reset, and a dynset (session-affinity style) records the client.
//! A control run without the ruleset shows the VIPs lead nowhere.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use netns_fixtures::Netns;
use podnet_nft::*;

const F: Family = Family::Ip;
const T: &str = "podnet";
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const VIP_NO_EP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
const EP_A: Ipv4Addr = Ipv4Addr::new(10, 96, 1, 1);
const EP_B: Ipv4Addr = Ipv4Addr::new(10, 96, 1, 2);
const EP_PORT: u16 = 8080;

fn svc_key(ip: Ipv4Addr) -> Vec<Val> {
    vec![Val::Ipv4(ip), Val::Proto(6), Val::Port(80)]
}

fn ruleset() -> Batch {
    let mut b = Batch::new();
    b.add_table(&Table::new(F, T));
    for c in ["svc", "ep-a", "ep-b", "reject-svc"] {
        b.add_chain(&Chain::new(F, T, c)).unwrap();
    }
    b.add_chain(&Chain::new(F, T, "nat-output").base(
        ChainType::Nat,
        HookPoint::Output,
        priority::DSTNAT,
        Policy::Accept,
    ))
    .unwrap();
    b.add_chain(&Chain::new(F, T, "filter-output").base(
        ChainType::Filter,
        HookPoint::Output,
        priority::FILTER,
        Policy::Accept,
    ))
    .unwrap();
    let key = [
        DataType::Ipv4Addr,
        DataType::InetProto,
        DataType::InetService,
    ];
    b.add_set(&Set::new(F, T, "service-ips", key).map(DataType::Verdict))
        .unwrap();
    b.add_elements(
        F,
        T,
        "service-ips",
        &[SetElem::new(&svc_key(VIP)).verdict(Verdict::Goto("svc".into()))],
    )
    .unwrap();
    b.add_set(&Set::new(F, T, "no-endpoint-services", key).map(DataType::Verdict))
        .unwrap();
    b.add_elements(
        F,
        T,
        "no-endpoint-services",
        &[SetElem::new(&svc_key(VIP_NO_EP)).verdict(Verdict::Goto("reject-svc".into()))],
    )
    .unwrap();
    let mut aff = Set::new(F, T, "clients", DataType::Ipv4Addr).timeout(Duration::from_secs(3600));
    aff.flags.dynamic = true;
    b.add_set(&aff).unwrap();

    let ports = [Field::IpDaddr, Field::L4Proto, Field::ThDport];
    b.add_rule(
        &Rule::new(F, T, "nat-output")
            .vmap(&ports, SetRef::named("service-ips"))
            .unwrap(),
    )
    .unwrap();
    b.add_rule(
        &Rule::new(F, T, "filter-output")
            .ct_state(ct_state::NEW)
            .vmap(&ports, SetRef::named("no-endpoint-services"))
            .unwrap(),
    )
    .unwrap();
    b.add_rule(
        &Rule::new(F, T, "reject-svc")
            .eq(Field::L4Proto, Val::Proto(6))
            .reject(Reject::TcpReset),
    )
    .unwrap();
    b.add_rule(
        &Rule::new(F, T, "svc")
            .dynset(
                DynsetOp::Update,
                &[Field::IpSaddr],
                SetRef::named("clients"),
                None,
            )
            .unwrap(),
    )
    .unwrap();
    let eps = b
        .add_anonymous_set(
            &Set::anonymous(F, T, DataType::Integer32).map(DataType::Verdict),
            &[
                SetElem::new(&[Val::U32(0)]).verdict(Verdict::Goto("ep-a".into())),
                SetElem::new(&[Val::U32(1)]).verdict(Verdict::Goto("ep-b".into())),
            ],
        )
        .unwrap();
    b.add_rule(&Rule::new(F, T, "svc").numgen_vmap(NumgenKind::Random, 2, eps))
        .unwrap();
    for (chain, ep) in [("ep-a", EP_A), ("ep-b", EP_B)] {
        b.add_rule(
            &Rule::new(F, T, chain)
                .eq(Field::L4Proto, Val::Proto(6))
                .dnat(ep.into(), Some(EP_PORT)),
        )
        .unwrap();
    }
    b
}

/// Accepts connections forever, answering each with `id`.
fn serve(l: TcpListener, id: u8) {
    for s in l.incoming() {
        match s {
            Ok(mut s) => {
                let _ = s.write_all(&[id]);
            }
            Err(_) => return,
        }
    }
}

#[test]
fn service_map_balances_rejects_and_records_clients() {
    netns_fixtures::skip_unless_root!();
    let ns = Netns::new("nftdp").unwrap();
    // Endpoints are local addresses; the VIPs are only routed (to lo), so
    // without the ruleset connecting to them times out instead of reaching
    // anything.
    ns.sh(&format!(
        "ip addr add {EP_A}/32 dev lo && ip addr add {EP_B}/32 dev lo && \
         ip route add 10.96.0.0/24 dev lo"
    ))
    .unwrap();
    let (hits, refused, clients) = ns
        .enter(|| {
            // Threads spawned here inherit this thread's namespace.
            for (ip, id) in [(EP_A, b'a'), (EP_B, b'b')] {
                let l = TcpListener::bind((ip, EP_PORT)).expect("bind endpoint");
                std::thread::spawn(move || serve(l, id));
            }
            // Control: without rules the VIP does not answer.
            let before = TcpStream::connect_timeout(
                &SocketAddr::from((VIP, 80)),
                Duration::from_millis(300),
            )
            .map(|_| ())
            .map_err(|e| e.kind());
            assert!(before.is_err(), "VIP reachable without rules");
            assert_ne!(before, Err(ErrorKind::ConnectionRefused));

            let mut n = Nft::new().unwrap();
            n.apply(&ruleset()).unwrap();

            let mut hits = [0u32; 2];
            for _ in 0..40 {
                let addr = SocketAddr::from((VIP, 80));
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                    .expect("connect to the service VIP");
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut id = [0u8; 1];
                s.read_exact(&mut id).expect("endpoint answers");
                hits[(id[0] - b'a') as usize] += 1;
            }
            let refused = TcpStream::connect_timeout(
                &SocketAddr::from((VIP_NO_EP, 80)),
                Duration::from_secs(2),
            )
            .map(|_| ())
            .map_err(|e| e.kind());
            let clients = n.list_elements(F, T, "clients").unwrap();
            (hits, refused, clients)
        })
        .unwrap();
    // 40 random picks all landing on one endpoint: probability 2^-39.
    assert!(hits[0] > 0 && hits[1] > 0, "distribution {hits:?}");
    assert_eq!(hits[0] + hits[1], 40);
    assert_eq!(refused, Err(ErrorKind::ConnectionRefused));
    assert_eq!(clients.len(), 1, "{clients:?}");
    // The client's source address is the one the kernel picked for the
    // route via lo.
    assert_eq!(clients[0].key.len(), 4);
    // Added with the set's default timeout: the kernel reports only the
    // time left.
    let left = clients[0].expires.expect("element expires");
    assert!(
        left <= Duration::from_secs(3600) && left > Duration::from_secs(3500),
        "{left:?}"
    );
}
