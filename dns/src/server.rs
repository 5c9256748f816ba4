//! The running server: UDP worker threads (one SO_REUSEPORT socket each,
//! blocking receive loops, the fast path), a TCP listener with bounded
//! connections and an idle timeout, forwarding tasks, the informer feed that
//! publishes new indexes (`ArcSwap`: the answer path never locks), the
//! metrics endpoint, and shutdown.

use std::io::{self, ErrorKind};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ipnetwork::IpNetwork;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::answer::{answer_query, answer_with_target, Outcome};
use crate::build::IndexBuilder;
use crate::forward::Forwarder;
use crate::index::Index;
use crate::metrics::{Metrics, Proto, Shard};
use crate::mmsg::{self, Batch};
use crate::wire::{self, LowerName, Query, Rcode, Reject};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("binding {proto} socket on {addr}: {source}")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("starting UDP worker thread {index}: {source}")]
    Thread {
        index: usize,
        #[source]
        source: io::Error,
    },
    #[error("opening store {url}: {source}")]
    Store {
        url: String,
        #[source]
        source: podnet_state::StoreError,
    },
    #[error("configuration: {0}")]
    Config(String),
    #[error("installing the {0} signal handler: {1}")]
    Signal(&'static str, #[source] io::Error),
}

/// Everything the server needs besides the index.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub udp_sockets: usize,
    /// Datagrams taken per recvmmsg call (1 = one at a time).
    pub udp_batch: usize,
    pub tcp_max_connections: usize,
    pub tcp_idle_timeout: Duration,
    /// Clients allowed to use forwarding; others get REFUSED for outside names.
    pub allow_recursion: Vec<IpNetwork>,
    pub upstreams: Vec<SocketAddr>,
    pub upstream_timeout: Duration,
    pub cache_entries: usize,
    pub cache_max_ttl: u32,
    pub metrics_addr: Option<SocketAddr>,
}

/// Forwarded queries in flight at once; beyond this, SERVFAIL at once.
const MAX_FORWARDS_IN_FLIGHT: usize = 4096;
const UDP_RECV_TIMEOUT: Duration = Duration::from_millis(200);
const LOOP_PROBE_INTERVAL: Duration = Duration::from_secs(30);

pub struct Shared {
    index: ArcSwap<Index>,
    pub metrics: Arc<Metrics>,
    forwarder: Option<Arc<Forwarder>>,
    allow: Vec<IpNetwork>,
    stop: AtomicBool,
    forwards: Arc<Semaphore>,
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

impl Shared {
    fn recursion_for(&self, peer: IpAddr) -> bool {
        let peer = canonical(peer);
        self.forwarder.is_some() && self.allow.iter().any(|n| n.contains(peer))
    }

    /// Publishes a new index; answers use it from the next query on.
    pub fn publish(&self, idx: Arc<Index>) {
        self.metrics.ready.store(idx.synced, Ordering::Relaxed);
        self.index.store(idx);
    }

    pub fn index(&self) -> Arc<Index> {
        self.index.load_full()
    }
}

pub struct Server {
    pub shared: Arc<Shared>,
    udp_threads: Vec<JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    shutdown_tx: watch::Sender<bool>,
    /// Where DNS is served (with the real port when the config said 0).
    pub local_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
}

fn udp_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(false)?;
    }
    // Bursts wait in the kernel instead of being dropped; best effort.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    s.set_read_timeout(Some(UDP_RECV_TIMEOUT))?;
    Ok(s.into())
}

fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(false)?;
    }
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

impl Server {
    /// Binds every socket and starts serving `initial` (must be called
    /// inside a multi-threaded tokio runtime).
    pub async fn start(cfg: &ServerConfig, initial: Arc<Index>) -> Result<Server, ServerError> {
        let n_udp = cfg.udp_sockets.max(1);
        let metrics = Metrics::new(n_udp + 1);
        let forwarder = (!cfg.upstreams.is_empty()).then(|| {
            Arc::new(Forwarder::new(
                cfg.upstreams.clone(),
                cfg.upstream_timeout,
                cfg.cache_entries,
                cfg.cache_max_ttl,
            ))
        });
        let shared = Arc::new(Shared {
            index: ArcSwap::new(initial.clone()),
            metrics,
            forwarder,
            allow: cfg.allow_recursion.clone(),
            stop: AtomicBool::new(false),
            forwards: Arc::new(Semaphore::new(MAX_FORWARDS_IN_FLIGHT)),
        });
        shared.publish(initial);
        // The first socket decides the port (config port 0 = any free port);
        // the others and TCP share it.
        let first = udp_socket(cfg.listen).map_err(|source| ServerError::Bind {
            proto: "UDP",
            addr: cfg.listen,
            source,
        })?;
        let local_addr = first.local_addr().map_err(|source| ServerError::Bind {
            proto: "UDP",
            addr: cfg.listen,
            source,
        })?;
        let mut sockets = vec![first];
        for _ in 1..n_udp {
            sockets.push(udp_socket(local_addr).map_err(|source| ServerError::Bind {
                proto: "UDP",
                addr: local_addr,
                source,
            })?);
        }
        let tcp = tcp_listener(local_addr)
            .and_then(TcpListener::from_std)
            .map_err(|source| ServerError::Bind {
                proto: "TCP",
                addr: local_addr,
                source,
            })?;
        let rt = tokio::runtime::Handle::current();
        let mut udp_threads = Vec::new();
        for (i, sock) in sockets.into_iter().enumerate() {
            let shared = shared.clone();
            let rt = rt.clone();
            let batch = cfg.udp_batch;
            let h = std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || udp_worker(i, sock, batch, shared, rt))
                .map_err(|source| ServerError::Thread { index: i, source })?;
            udp_threads.push(h);
        }
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let tcp_limit = Arc::new(Semaphore::new(cfg.tcp_max_connections.max(1)));
        tasks.push(tokio::spawn(tcp_accept(
            tcp,
            shared.clone(),
            tcp_limit,
            cfg.tcp_idle_timeout,
            shutdown_rx.clone(),
            n_udp,
        )));
        if let Some(fwd) = shared.forwarder.clone() {
            let mut stop = shutdown_rx.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    fwd.probe_loops().await;
                    tokio::select! {
                        _ = tokio::time::sleep(LOOP_PROBE_INTERVAL) => {}
                        _ = stop.changed() => return,
                    }
                }
            }));
        }
        let mut metrics_addr = None;
        if let Some(addr) = cfg.metrics_addr {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind {
                    proto: "HTTP",
                    addr,
                    source,
                })?;
            metrics_addr = l.local_addr().ok();
            tasks.push(tokio::spawn(crate::metrics::http_server(
                l,
                shared.metrics.clone(),
                shutdown_rx.clone(),
            )));
        }
        tracing::info!(%local_addr, udp_sockets = n_udp, upstreams = ?cfg.upstreams, "serving DNS");
        Ok(Server {
            shared,
            udp_threads,
            tasks,
            shutdown_tx,
            local_addr,
            metrics_addr,
        })
    }

    /// Stops accepting, lets the workers finish their current packet, and waits for them.
    pub async fn shutdown(self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let _ = self.shutdown_tx.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let threads = self.udp_threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// What the UDP and TCP paths do with a packet after the index: send `out`
/// (with this rcode; `None`: send nothing), forward it, or complete an
/// ExternalName chain with the target's records (`out` holds the reply
/// without them, for when that lookup cannot be made).
enum Step {
    Done(Option<Rcode>),
    Forward,
    Chase(Box<LowerName>),
}

fn answer_packet(
    shared: &Shared,
    packet: &[u8],
    peer: IpAddr,
    udp: bool,
    out: &mut Vec<u8>,
) -> (Step, u16) {
    let idx = shared.index.load();
    match wire::parse_query(packet) {
        Ok(q) => {
            let limit = if udp { q.udp_limit() } else { 65535 };
            let recursion = shared.recursion_for(peer);
            match answer_query(&idx, &q, recursion, limit, out) {
                Outcome::Reply(rc) => (Step::Done(Some(rc)), q.qtype),
                Outcome::Drop => (Step::Done(None), q.qtype),
                // As CoreDNS, whether or not this client may recurse: the
                // target is the cluster's configuration, not the client's choice.
                Outcome::Chase(target) if shared.forwarder.is_some() => {
                    (Step::Chase(target), q.qtype)
                }
                Outcome::Chase(_) => (Step::Done(Some(Rcode::NoError)), q.qtype),
                Outcome::Forward => {
                    if shared.forwarder.as_ref().is_some_and(|f| f.detect_loop(&q)) {
                        wire::write_error(out, &q, Rcode::ServFail, true);
                        return (Step::Done(Some(Rcode::ServFail)), q.qtype);
                    }
                    (Step::Forward, q.qtype)
                }
            }
        }
        Err(Reject::Drop) => (Step::Done(None), 0),
        Err(rej) => {
            wire::write_reject(out, packet, &rej);
            let rc = match rej {
                Reject::Reply { rcode, .. } => rcode,
                Reject::Drop => Rcode::FormErr,
            };
            (Step::Done(Some(rc)), 0)
        }
    }
}

fn udp_worker(
    i: usize,
    sock: UdpSocket,
    batch_size: usize,
    shared: Arc<Shared>,
    rt: tokio::runtime::Handle,
) {
    let sock = Arc::new(sock);
    let fd = sock.as_raw_fd();
    let batch_size = batch_size.clamp(1, 256);
    let mut batch = Batch::new(batch_size);
    let mut outs: Vec<Vec<u8>> = (0..batch_size).map(|_| Vec::with_capacity(1500)).collect();
    let mut reply: Vec<bool> = vec![false; batch_size];
    while !shared.stop.load(Ordering::Relaxed) {
        let n = match batch.recv(fd) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                tracing::warn!("UDP receive: {e}");
                continue;
            }
        };
        let t0 = Instant::now();
        let shard = shared.metrics.shard(i);
        for k in 0..n {
            reply[k] = false;
            let Some(peer) = batch.peer(k) else {
                continue;
            };
            let packet = batch.packet(k);
            let (step, qtype) = answer_packet(&shared, packet, peer.ip(), true, &mut outs[k]);
            match step {
                Step::Done(Some(rc)) => {
                    reply[k] = true;
                    shard.query(Proto::Udp, qtype, rc, t0.elapsed());
                }
                Step::Done(None) => shard.dropped(),
                Step::Forward | Step::Chase(_) => spawn_forward(
                    i,
                    &shared,
                    &sock,
                    &rt,
                    Job {
                        packet,
                        peer,
                        t0,
                        step,
                    },
                    &mut outs[k],
                    &mut reply[k],
                ),
            }
        }
        let msgs: Vec<(&[u8], &libc::sockaddr_storage)> = (0..n)
            .filter(|k| reply[*k])
            .map(|k| (outs[k].as_slice(), batch.raw_addr(k)))
            .collect();
        if let Err(e) = mmsg::send_all(fd, &msgs) {
            tracing::debug!("UDP send: {e}");
        }
    }
}

/// A UDP query that needs upstream work (`Step::Forward` or `Step::Chase`).
struct Job<'a> {
    packet: &'a [u8],
    peer: SocketAddr,
    t0: Instant,
    step: Step,
}

/// Hands a query to a forwarding task. When too many are in flight
/// already, answers at once into `out`: SERVFAIL for a forward, the
/// CNAMEs alone (already in `out`) for a chain.
fn spawn_forward(
    i: usize,
    shared: &Arc<Shared>,
    sock: &Arc<UdpSocket>,
    rt: &tokio::runtime::Handle,
    job: Job<'_>,
    out: &mut Vec<u8>,
    reply: &mut bool,
) {
    let Ok(permit) = shared.forwards.clone().try_acquire_owned() else {
        if let Ok(q) = wire::parse_query(job.packet) {
            let rc = match job.step {
                Step::Chase(_) => Rcode::NoError,
                _ => {
                    wire::write_error(out, &q, Rcode::ServFail, true);
                    Rcode::ServFail
                }
            };
            *reply = true;
            shared
                .metrics
                .shard(i)
                .query(Proto::Udp, q.qtype, rc, job.t0.elapsed());
        }
        return;
    };
    let packet = job.packet.to_vec();
    let (peer, t0, step) = (job.peer, job.t0, job.step);
    let shared = shared.clone();
    let sock = sock.clone();
    rt.spawn(async move {
        let _permit = permit;
        let Ok(q) = wire::parse_query(&packet) else {
            return;
        };
        let shard = shared.metrics.shard(i);
        let Some((resp, rc)) =
            upstream_answer(&shared, shard, &q, peer.ip(), q.udp_limit(), step).await
        else {
            return;
        };
        if let Err(e) = sock.send_to(&resp, peer) {
            tracing::debug!(%peer, "UDP send: {e}");
        }
        shard.query(Proto::Udp, q.qtype, rc, t0.elapsed());
    });
}

/// The response to `q` that needs the forwarder: the upstream's answer
/// (`Step::Forward`), or the ExternalName chain completed with the target's
/// records from the forwarder and its cache (`Step::Chase`).
async fn upstream_answer(
    shared: &Shared,
    shard: &Shard,
    q: &Query<'_>,
    peer: IpAddr,
    limit: usize,
    step: Step,
) -> Option<(Vec<u8>, Rcode)> {
    let fwd = shared.forwarder.as_ref()?;
    let out = match step {
        Step::Forward => fwd.resolve(q, limit, shard).await,
        Step::Chase(target) => {
            let target_resp = fwd.lookup(&target, q.qtype, shard).await;
            let mut out = Vec::new();
            let idx = shared.index();
            let recursion = shared.recursion_for(peer);
            let rc = answer_with_target(&idx, q, recursion, limit, &target_resp, &mut out);
            (out, rc)
        }
        Step::Done(_) => return None,
    };
    shared.metrics.set_cache_entries(fwd.cache_len());
    Some(out)
}

async fn tcp_accept(
    listener: TcpListener,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
    shard: usize,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("TCP accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            // At the connection limit: close at once rather than queue.
            tracing::debug!(%peer, "TCP connection limit reached; closing");
            drop(stream);
            continue;
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = tcp_connection(stream, peer, &shared, idle, shutdown, shard).await {
                tracing::debug!(%peer, "TCP connection: {e}");
            }
        });
    }
}

async fn tcp_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
    shard: usize,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut out = Vec::with_capacity(4096);
    loop {
        let len = tokio::select! {
            r = tokio::time::timeout(idle, stream.read_u16()) => match r {
                Ok(Ok(l)) => l as usize,
                Ok(Err(e)) if e.kind() == ErrorKind::UnexpectedEof => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(()),
            },
            _ = shutdown.changed() => return Ok(()),
        };
        let mut packet = vec![0u8; len];
        match tokio::time::timeout(idle, stream.read_exact(&mut packet)).await {
            Ok(r) => {
                r?;
            }
            Err(_) => return Ok(()),
        }
        let t0 = Instant::now();
        let (step, qtype) = answer_packet(shared, &packet, peer.ip(), false, &mut out);
        let rc = match step {
            Step::Done(Some(rc)) => rc,
            Step::Done(None) => {
                shared.metrics.shard(shard).dropped();
                continue;
            }
            step @ (Step::Forward | Step::Chase(_)) => {
                let Ok(q) = wire::parse_query(&packet) else {
                    continue;
                };
                let metrics = shared.metrics.shard(shard);
                let Some((resp, rc)) =
                    upstream_answer(shared, metrics, &q, peer.ip(), 65535, step).await
                else {
                    continue;
                };
                out = resp;
                rc
            }
        };
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&(out.len() as u16).to_be_bytes());
        framed.extend_from_slice(&out);
        tokio::time::timeout(idle, stream.write_all(&framed))
            .await
            .map_err(|_| io::Error::new(ErrorKind::TimedOut, "writing a TCP response"))??;
        shared
            .metrics
            .shard(shard)
            .query(Proto::Tcp, qtype, rc, t0.elapsed());
    }
}

/// Keeps the index up to date from the informer until it stops.
pub async fn feed(
    shared: Arc<Shared>,
    mut builder: IndexBuilder,
    mut sub: podnet_state::Subscription,
) {
    while let Some(cs) = sub.next().await {
        let t0 = Instant::now();
        let idx = tokio::task::block_in_place(|| builder.apply(&cs));
        let (services, revision, synced) = (idx.services_total, cs.snapshot.revision, idx.synced);
        shared.publish(idx);
        shared.metrics.programmed(t0.elapsed(), services, revision);
        tracing::debug!(
            revision,
            services,
            synced,
            changes = cs.changes.len(),
            full = cs.full_resync,
            "index updated"
        );
    }
    tracing::warn!("informer stopped; serving the last index");
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination() -> Result<&'static str, ServerError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| ServerError::Signal("SIGTERM", e))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| ServerError::Signal("SIGINT", e))?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
