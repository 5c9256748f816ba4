//! One transaction with an N-element concatenated verdict map
//! (`ipv4_addr . inet_proto . inet_service : verdict`, elements goto one of
//! 64 chains) into a fresh network namespace: time to build the objects, to
//! encode the datagram, and for the kernel to validate and commit it (sendmsg
//! to last ACK). Then, against that loaded map, the latency of small update
//! transactions (delete one element + add it with another verdict), as a
//! service proxy sends on an endpoint change, and of one-element updates of a
//! plain (non-verdict) set in the same table. The kernel re-validates every
//! chain reachable from base chains, walking verdict maps, whenever a
//! transaction adds a jump/goto; plain set updates skip that. For reference, the same ruleset
//! loaded with `nft -f` (process start included). Needs root; prints a table.
//!
//! Run: `cargo bench -p podnet-nft --bench commit`

use std::io::Write;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use netns_fixtures::Netns;
use podnet_nft::*;

const RUNS: usize = 5;
const CHAINS: u32 = 64;
const F: Family = Family::Ip;
const T: &str = "bench";

fn elem_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a60_0000 + i)
}

fn build(n: u32) -> Result<Batch> {
    let mut b = Batch::new();
    b.add_table(&Table::new(F, T));
    for c in 0..CHAINS {
        b.add_chain(&Chain::new(F, T, format!("ep-{c}")))?;
    }
    b.add_chain(&Chain::new(F, T, "pre").base(
        ChainType::Nat,
        HookPoint::Prerouting,
        priority::DSTNAT,
        Policy::Accept,
    ))?;
    b.add_set(
        &Set::new(
            F,
            T,
            "service-ips",
            [
                DataType::Ipv4Addr,
                DataType::InetProto,
                DataType::InetService,
            ],
        )
        .map(DataType::Verdict),
    )?;
    let elems: Vec<SetElem> = (0..n)
        .map(|i| {
            SetElem::new(&[Val::Ipv4(elem_ip(i)), Val::Proto(6), Val::Port(80)])
                .verdict(Verdict::Goto(format!("ep-{}", i % CHAINS)))
        })
        .collect();
    b.add_elements(F, T, "service-ips", &elems)?;
    b.add_set(&Set::new(F, T, "plain", DataType::Ipv4Addr))?;
    b.add_rule(&Rule::new(F, T, "pre").vmap(
        &[Field::IpDaddr, Field::L4Proto, Field::ThDport],
        SetRef::named("service-ips"),
    )?)?;
    Ok(b)
}

fn nft_text(n: u32) -> String {
    let mut s = format!("table ip {T} {{\n");
    for c in 0..CHAINS {
        s.push_str(&format!("  chain ep-{c} {{\n  }}\n"));
    }
    s.push_str("  map service-ips {\n    type ipv4_addr . inet_proto . inet_service : verdict\n    elements = { ");
    for i in 0..n {
        if i > 0 {
            s.push_str(",\n");
        }
        s.push_str(&format!(
            "{} . tcp . 80 : goto ep-{}",
            elem_ip(i),
            i % CHAINS
        ));
    }
    s.push_str(" }\n  }\n  chain pre {\n    type nat hook prerouting priority dstnat; policy accept;\n    ip daddr . meta l4proto . th dport vmap @service-ips\n  }\n}\n");
    s
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

struct Row {
    n: u32,
    messages: usize,
    bytes: usize,
    build: Duration,
    encode: Duration,
    kernel: Duration,
    update: Duration,
    plain_update: Duration,
    nft: Duration,
}

/// Median time of `UPDATES` transactions adding one element to (and
/// removing the previous one from) a plain set.
fn plain_updates(n: &mut Nft) -> Duration {
    let mut times = Vec::with_capacity(UPDATES as usize);
    for k in 0..UPDATES {
        let mut b = Batch::new();
        if k > 0 {
            b.delete_elements(F, T, "plain", &[SetElem::new(&[Val::Ipv4(elem_ip(k - 1))])])
                .expect("encode delete");
        }
        b.add_elements(F, T, "plain", &[SetElem::new(&[Val::Ipv4(elem_ip(k))])])
            .expect("encode add");
        let t = Instant::now();
        n.apply(&b).expect("apply plain update");
        times.push(t.elapsed());
    }
    median(times)
}

const UPDATES: u32 = 50;

/// Median time of `UPDATES` one-element retargeting transactions.
fn updates(n: &mut Nft, size: u32) -> Duration {
    let mut times = Vec::with_capacity(UPDATES as usize);
    for k in 0..UPDATES {
        let i = (k * 7919) % size;
        let key = [Val::Ipv4(elem_ip(i)), Val::Proto(6), Val::Port(80)];
        let mut b = Batch::new();
        b.delete_elements(F, T, "service-ips", &[SetElem::new(&key)])
            .expect("encode delete");
        b.add_elements(
            F,
            T,
            "service-ips",
            &[SetElem::new(&key).verdict(Verdict::Goto(format!("ep-{}", (i + 1) % CHAINS)))],
        )
        .expect("encode add");
        let t = Instant::now();
        n.apply(&b).expect("apply update");
        times.push(t.elapsed());
    }
    median(times)
}

fn measure(n: u32) -> Row {
    let (mut builds, mut encodes, mut kernels, mut nfts) = (vec![], vec![], vec![], vec![]);
    let (mut ups, mut plain) = (vec![], vec![]);
    let (mut messages, mut bytes) = (0, 0);
    for _ in 0..RUNS {
        let t = Instant::now();
        let batch = build(n).expect("build batch");
        builds.push(t.elapsed());
        let ns = Netns::new("nftbench").expect("create netns");
        let (stats, up, pl) = ns
            .enter(|| {
                let mut nft = Nft::new()?;
                let stats = nft.apply_timed(&batch)?;
                Ok::<_, Error>((stats, updates(&mut nft, n), plain_updates(&mut nft)))
            })
            .expect("enter netns")
            .expect("apply batch");
        ups.push(up);
        plain.push(pl);
        messages = stats.messages;
        bytes = stats.bytes;
        encodes.push(stats.encode);
        kernels.push(stats.kernel);
        drop(ns);

        let ns = Netns::new("nftbench").expect("create netns");
        let mut file = tempfile_path(n);
        file.1
            .write_all(nft_text(n).as_bytes())
            .expect("write ruleset");
        let t = Instant::now();
        let out = ns
            .exec(&["nft", "-f", file.0.to_str().unwrap()])
            .expect("run nft");
        nfts.push(t.elapsed());
        assert!(
            out.status.success(),
            "nft -f: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = std::fs::remove_file(&file.0);
    }
    Row {
        n,
        messages,
        bytes,
        build: median(builds),
        encode: median(encodes),
        kernel: median(kernels),
        update: median(ups),
        plain_update: median(plain),
        nft: median(nfts),
    }
}

fn tempfile_path(n: u32) -> (std::path::PathBuf, std::fs::File) {
    let p = std::env::temp_dir().join(format!("podnet-nft-bench-{}-{n}.nft", std::process::id()));
    let f = std::fs::File::create(&p).expect("create ruleset file");
    (p, f)
}

fn main() {
    if !netns_fixtures::require_root() {
        return;
    }
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let sizes = [1_000u32, 10_000, 30_000];
    println!("one transaction: table + {CHAINS} chains + base chain + vmap rule + N-element");
    println!("`ipv4_addr . inet_proto . inet_service : verdict` map; median of {RUNS} runs, fresh netns each");
    println!();
    println!("| elements | messages | datagram KiB | build ms | encode ms | kernel commit ms | encode+commit ms | vmap goto update ms | plain set update ms | nft -f ms |");
    println!("|---------:|---------:|-------------:|---------:|----------:|-----------------:|-----------------:|--------------------:|--------------------:|----------:|");
    for n in sizes {
        let r = measure(n);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.n,
            r.messages,
            r.bytes / 1024,
            ms(r.build),
            ms(r.encode),
            ms(r.kernel),
            ms(r.encode + r.kernel),
            ms(r.update),
            ms(r.plain_update),
            ms(r.nft),
        );
    }
}
