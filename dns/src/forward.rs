//! Forwarding names outside the cluster zone: upstreams in order (failover
//! on timeout, error, SERVFAIL or REFUSED), UDP first and TCP when the UDP
//! answer is truncated, responses cached (`cache`), and loop detection: a
//! query that comes back to us while we are forwarding it means the
//! upstream points at us; that upstream is then no longer used.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::cache::{Cache, CacheKey};
use crate::metrics::Shard;
use crate::wire::{self, LowerName, Query, Rcode};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("reading upstream list {path}: {source}")]
    ReadResolvConf {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("upstream {0:?} is neither a resolv.conf path nor IP:PORT[,IP:PORT...]")]
    BadList(String),
}

/// `nameserver` lines of a resolv.conf (port 53; a `%zone` suffix is dropped).
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "nameserver").then_some(())?;
            let addr = w.next()?.split('%').next()?;
            addr.parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        })
        .collect()
}

/// `--upstream`: a list `IP:PORT,IP:PORT` (or bare IPs, port 53), or a resolv.conf path.
pub fn parse_upstreams(spec: &str) -> Result<Vec<SocketAddr>, UpstreamError> {
    let items: Vec<&str> = spec
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let as_addrs: Option<Vec<SocketAddr>> = items
        .iter()
        .map(|s| {
            s.parse::<SocketAddr>()
                .ok()
                .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
        })
        .collect();
    if let Some(v) = as_addrs.filter(|v| !v.is_empty()) {
        return Ok(v);
    }
    if items.len() != 1 || !spec.contains('/') {
        return Err(UpstreamError::BadList(spec.to_string()));
    }
    let text = std::fs::read_to_string(spec).map_err(|source| UpstreamError::ReadResolvConf {
        path: spec.to_string(),
        source,
    })?;
    Ok(parse_resolv_conf(&text))
}

/// Drops upstreams that are this server itself (the static half of loop detection).
pub fn without_self(upstreams: Vec<SocketAddr>, listen: SocketAddr) -> Vec<SocketAddr> {
    upstreams
        .into_iter()
        .filter(|u| {
            let is_self = u.port() == listen.port()
                && (u.ip() == listen.ip() || (listen.ip().is_unspecified() && (u.ip().is_loopback() || u.ip().is_unspecified())));
            if is_self {
                tracing::warn!(upstream = %u, "upstream is this server itself (forwarding loop); not using it");
            }
            !is_self
        })
        .collect()
}

type InflightKey = (u16, Vec<u8>, u16);

pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    looped: Vec<AtomicBool>,
    attempt_timeout: Duration,
    cache: Cache,
    /// Queries being forwarded right now -> index of the upstream being tried.
    inflight: Mutex<HashMap<InflightKey, usize>>,
    /// Random probe names sent to each upstream (CoreDNS `loop` style): if
    /// one reaches us, that upstream forwards back to us, however many
    /// servers (each with its own query ids) sit in between.
    probes: Mutex<HashMap<Vec<u8>, usize>>,
}

fn random_id() -> u16 {
    let mut b = [0u8; 2];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 2 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return (t.subsec_nanos() ^ (t.subsec_nanos() >> 16)) as u16;
    }
    u16::from_ne_bytes(b)
}

enum Attempt {
    Ok(Vec<u8>, wire::ResponseInfo),
    Failed,
}

impl Forwarder {
    pub fn new(
        upstreams: Vec<SocketAddr>,
        attempt_timeout: Duration,
        cache_entries: usize,
        cache_max_ttl: u32,
    ) -> Forwarder {
        Forwarder {
            looped: upstreams.iter().map(|_| AtomicBool::new(false)).collect(),
            upstreams,
            attempt_timeout,
            cache: Cache::new(cache_entries, cache_max_ttl),
            inflight: Mutex::new(HashMap::new()),
            probes: Mutex::new(HashMap::new()),
        }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }

    /// True (and the upstream is marked unusable) when `q` is one of our own
    /// forwarded queries coming back to us.
    pub fn detect_loop(&self, q: &Query<'_>) -> bool {
        let name = q.qname.wire();
        let probe = self.probes.lock().ok().and_then(|m| m.get(name).copied());
        let inflight = || {
            let key = (q.id, name.to_vec(), q.qtype);
            self.inflight.lock().ok().and_then(|m| m.get(&key).copied())
        };
        let Some(i) = probe.or_else(inflight) else {
            return false;
        };
        if !self.looped[i].swap(true, Ordering::Relaxed) {
            tracing::error!(upstream = %self.upstreams[i], name = ?q.qname,
                "forwarding loop: this upstream sends our queries back to us; not using it any more");
        }
        true
    }

    /// True when a loop was found through upstream `i`.
    pub fn is_looped(&self, i: usize) -> bool {
        self.looped[i].load(Ordering::Relaxed)
    }

    /// Sends each upstream a query for a random name under `.invalid`
    /// (RFC 6761: never a real answer); see `detect_loop`.
    pub async fn probe_loops(&self) {
        for (i, up) in self.upstreams.iter().enumerate() {
            if self.is_looped(i) {
                continue;
            }
            let name = format!(
                "{:04x}{:04x}{:04x}.loop-probe.podnet.invalid",
                random_id(),
                random_id(),
                random_id()
            );
            let Some(wire_name) = wire::text_to_wire(&name) else {
                continue;
            };
            if let Ok(mut m) = self.probes.lock() {
                m.insert(wire_name.clone(), i);
            }
            let mut question = wire_name.clone();
            question.extend_from_slice(&13u16.to_be_bytes()); // HINFO
            question.extend_from_slice(&wire::CLASS_IN.to_be_bytes());
            let id = random_id();
            let packet = wire::upstream_query(id, &question);
            let _ =
                tokio::time::timeout(self.attempt_timeout, self.udp(*up, id, &packet, &question))
                    .await;
            if let Ok(mut m) = self.probes.lock() {
                m.remove(&wire_name);
            }
        }
    }

    /// The response for the client's query `q` (cached or fresh), at most
    /// `limit` bytes (a bare TC response when the answer is bigger).
    pub async fn resolve(&self, q: &Query<'_>, limit: usize, shard: &Shard) -> (Vec<u8>, Rcode) {
        let key = CacheKey {
            name: q.qname.wire().to_vec(),
            qtype: q.qtype,
            qclass: q.qclass,
        };
        if let Some(p) = self.cache.get(&key, q.id, q.question, Instant::now()) {
            shard.cache_hit();
            return self.finish(p, q, limit);
        }
        shard.cache_miss();
        let id = random_id();
        let packet = wire::upstream_query(id, q.question);
        let ikey = (id, key.name.clone(), q.qtype);
        let mut last: Option<(Vec<u8>, wire::ResponseInfo)> = None;
        for (i, up) in self.upstreams.iter().enumerate() {
            if self.looped[i].load(Ordering::Relaxed) {
                continue;
            }
            if let Ok(mut m) = self.inflight.lock() {
                m.insert(ikey.clone(), i);
            }
            shard.forwarded();
            match self.attempt(*up, id, &packet, q.question).await {
                Attempt::Ok(p, info)
                    if info.rcode != Rcode::ServFail as u8
                        && info.rcode != Rcode::Refused as u8 =>
                {
                    last = Some((p, info));
                    break;
                }
                Attempt::Ok(p, info) => {
                    shard.upstream_failure();
                    last = Some((p, info));
                }
                Attempt::Failed => shard.upstream_failure(),
            }
        }
        if let Ok(mut m) = self.inflight.lock() {
            m.remove(&ikey);
        }
        let Some((p, info)) = last else {
            let mut out = Vec::new();
            wire::write_error(&mut out, q, Rcode::ServFail, true);
            return (out, Rcode::ServFail);
        };
        match wire::strip_trailing_opt(p.clone(), &info) {
            Some(stripped) => {
                self.cache
                    .insert(key, stripped.clone(), &info, Instant::now());
                self.finish(stripped, q, limit)
            }
            None => {
                let mut p = p;
                p[0..2].copy_from_slice(&q.id.to_be_bytes());
                let rcode = Rcode::from_u8(info.rcode).unwrap_or(Rcode::ServFail);
                if p.len() > limit {
                    return (self.truncated(q), rcode);
                }
                (p, rcode)
            }
        }
    }

    /// The response for `name` (lowercase wire) and `qtype`, class IN, as
    /// a client's query for it would get (cache, then upstreams): how the
    /// target of an ExternalName chain leaving the zone is resolved.
    pub async fn lookup(&self, name: &LowerName, qtype: u16, shard: &Shard) -> Vec<u8> {
        let mut question = name.wire().to_vec();
        question.extend_from_slice(&qtype.to_be_bytes());
        question.extend_from_slice(&wire::CLASS_IN.to_be_bytes());
        let packet = wire::upstream_query(random_id(), &question);
        match wire::parse_query(&packet) {
            Ok(q) => self.resolve(&q, usize::from(u16::MAX), shard).await.0,
            Err(_) => Vec::new(),
        }
    }

    /// Gives a cached/stripped response the client's id, question and OPT.
    fn finish(&self, mut p: Vec<u8>, q: &Query<'_>, limit: usize) -> (Vec<u8>, Rcode) {
        p[0..2].copy_from_slice(&q.id.to_be_bytes());
        p[wire::HEADER_LEN..wire::HEADER_LEN + q.question.len()].copy_from_slice(q.question);
        // RA: we recurse for this client; RD echoes the query.
        p[3] |= 0x80;
        p[2] = (p[2] & !0x01) | ((q.flags >> 8) as u8 & 0x01);
        // Not authoritative: this is a forwarded (possibly cached) answer.
        p[2] &= !0x04;
        if q.edns.is_some() {
            wire::append_opt(&mut p);
        }
        let rcode = Rcode::from_u8(p[3] & 0x0F).unwrap_or(Rcode::ServFail);
        if p.len() > limit {
            return (self.truncated(q), rcode);
        }
        (p, rcode)
    }

    fn truncated(&self, q: &Query<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        wire::write_response(&mut out, q, &wire::Sections::default(), true, usize::MAX);
        out[2] |= 0x02;
        out
    }

    async fn attempt(&self, up: SocketAddr, id: u16, packet: &[u8], question: &[u8]) -> Attempt {
        match tokio::time::timeout(self.attempt_timeout, self.udp(up, id, packet, question)).await {
            Ok(Ok((p, info))) if !info.truncated => return Attempt::Ok(p, info),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(upstream = %up, "UDP query failed: {e}");
                return Attempt::Failed;
            }
            Err(_) => {
                tracing::debug!(upstream = %up, "UDP query timed out");
                return Attempt::Failed;
            }
        }
        match tokio::time::timeout(self.attempt_timeout, self.tcp(up, id, packet, question)).await {
            Ok(Ok((p, info))) => Attempt::Ok(p, info),
            Ok(Err(e)) => {
                tracing::debug!(upstream = %up, "TCP query failed: {e}");
                Attempt::Failed
            }
            Err(_) => Attempt::Failed,
        }
    }

    async fn udp(
        &self,
        up: SocketAddr,
        id: u16,
        packet: &[u8],
        question: &[u8],
    ) -> io::Result<(Vec<u8>, wire::ResponseInfo)> {
        let bind: SocketAddr = if up.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
            .parse()
            .expect("literal address");
        let sock = UdpSocket::bind(bind).await?;
        // Connected: only the upstream's packets arrive, and a closed port
        // is reported at once (ECONNREFUSED) instead of a timeout.
        sock.connect(up).await?;
        sock.send(packet).await?;
        let mut buf = vec![0u8; 65535];
        loop {
            let n = sock.recv(&mut buf).await?;
            let resp = &buf[..n];
            let Ok(info) = wire::inspect_response(resp) else {
                continue;
            };
            if info.id == id && wire::same_question(resp, &info, question) {
                return Ok((resp.to_vec(), info));
            }
        }
    }

    async fn tcp(
        &self,
        up: SocketAddr,
        id: u16,
        packet: &[u8],
        question: &[u8],
    ) -> io::Result<(Vec<u8>, wire::ResponseInfo)> {
        let mut s = TcpStream::connect(up).await?;
        let mut msg = Vec::with_capacity(packet.len() + 2);
        msg.extend_from_slice(&(packet.len() as u16).to_be_bytes());
        msg.extend_from_slice(packet);
        s.write_all(&msg).await?;
        let len = s.read_u16().await? as usize;
        let mut buf = vec![0u8; len];
        s.read_exact(&mut buf).await?;
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed or mismatched TCP response",
            )
        };
        let info = wire::inspect_response(&buf).map_err(|_| bad())?;
        if info.id != id || !wire::same_question(&buf, &info, question) {
            return Err(bad());
        }
        Ok((buf, info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upstream_lists_and_resolv_conf() {
        assert_eq!(
            parse_upstreams("127.0.0.1:5300, 10.0.0.1").unwrap(),
            vec![
                "127.0.0.1:5300".parse().unwrap(),
                "10.0.0.1:53".parse().unwrap()
            ]
        );
        assert!(parse_upstreams("bogus").is_err());
        let rc = "# c\nsearch x\nnameserver 192.0.2.1\nnameserver fe80::1%eth0\nnameserver bad\noptions ndots:5\n";
        assert_eq!(
            parse_resolv_conf(rc),
            vec![
                "192.0.2.1:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("resolv.conf");
        std::fs::write(&p, rc).unwrap();
        assert_eq!(parse_upstreams(p.to_str().unwrap()).unwrap().len(), 2);
    }

    #[test]
    fn drops_itself_from_upstreams() {
        let listen: SocketAddr = "0.0.0.0:53".parse().unwrap();
        let ups = vec![
            "127.0.0.53:53".parse().unwrap(),
            "192.0.2.1:53".parse().unwrap(),
            "127.0.0.1:5353".parse().unwrap(),
        ];
        assert_eq!(
            without_self(ups, listen),
            vec![
                "192.0.2.1:53".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:5353".parse().unwrap()
            ]
        );
    }
}
