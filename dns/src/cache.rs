//! The forwarding cache: upstream responses by (name, type, class), kept
//! for their smallest TTL (negative answers for the SOA's negative TTL,
//! RFC 2308), bounded in entries, sharded so lookups from different workers
//! rarely meet on one lock. Served copies get the client's id and question
//! bytes and TTLs aged by the time spent in the cache.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::wire::{ResponseInfo, HEADER_LEN};

const SHARDS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub name: Vec<u8>,
    pub qtype: u16,
    pub qclass: u16,
}

#[derive(Debug, Clone)]
struct Entry {
    /// The upstream response without its OPT record.
    packet: Vec<u8>,
    ttl_offsets: Vec<usize>,
    question_end: usize,
    stored: Instant,
    expires: Instant,
}

pub struct Cache {
    shards: Vec<Mutex<HashMap<CacheKey, Entry>>>,
    per_shard: usize,
    max_ttl: u32,
}

/// How long a response may be cached, or `None` when it must not be.
pub fn cache_ttl(info: &ResponseInfo, max_ttl: u32) -> Option<u32> {
    let ttl = match info.rcode {
        // NOERROR with answers: the smallest TTL of all records.
        0 if info.ancount > 0 => info.min_ttl?,
        // NODATA / NXDOMAIN: the SOA's negative TTL; without an SOA, do not cache.
        0 | 3 => info.soa_negative_ttl?,
        _ => return None,
    };
    (ttl > 0).then_some(ttl.min(max_ttl))
}

impl Cache {
    pub fn new(max_entries: usize, max_ttl: u32) -> Cache {
        Cache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: max_entries.div_ceil(SHARDS).max(1),
            max_ttl,
        }
    }

    fn shard(&self, key: &CacheKey) -> &Mutex<HashMap<CacheKey, Entry>> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores `packet` (an upstream response, OPT already removed) if cacheable.
    pub fn insert(&self, key: CacheKey, packet: Vec<u8>, info: &ResponseInfo, now: Instant) {
        let Some(ttl) = cache_ttl(info, self.max_ttl) else {
            return;
        };
        let entry = Entry {
            packet,
            ttl_offsets: info.ttl_offsets.clone(),
            question_end: info.question_end,
            stored: now,
            expires: now + Duration::from_secs(ttl as u64),
        };
        let Ok(mut m) = self.shard(&key).lock() else {
            return;
        };
        if m.len() >= self.per_shard && !m.contains_key(&key) {
            m.retain(|_, e| e.expires > now);
            if m.len() >= self.per_shard {
                // Still full of live entries: evict the one closest to expiry.
                if let Some(k) = m
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| k.clone())
                {
                    m.remove(&k);
                }
            }
        }
        m.insert(key, entry);
    }

    /// A response for a query with `id` and `question` (bytes as the client
    /// sent them), if a live entry exists.
    pub fn get(&self, key: &CacheKey, id: u16, question: &[u8], now: Instant) -> Option<Vec<u8>> {
        let mut m = self.shard(key).lock().ok()?;
        let e = m.get(key)?;
        if e.expires <= now {
            m.remove(key);
            return None;
        }
        if e.question_end != HEADER_LEN + question.len() {
            return None;
        }
        let mut p = e.packet.clone();
        let aged = now.duration_since(e.stored).as_secs() as u32;
        let offsets = e.ttl_offsets.clone();
        drop(m);
        p[0..2].copy_from_slice(&id.to_be_bytes());
        p[HEADER_LEN..HEADER_LEN + question.len()].copy_from_slice(question);
        for off in offsets {
            let ttl = u32::from_be_bytes([p[off], p[off + 1], p[off + 2], p[off + 3]]);
            p[off..off + 4].copy_from_slice(&ttl.saturating_sub(aged).to_be_bytes());
        }
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::inspect_response;

    fn response(ttl: u32, rcode: u8, with_soa: bool) -> Vec<u8> {
        let mut v = vec![
            0,
            1,
            0x81,
            0x80 | rcode,
            0,
            1,
            0,
            1,
            0,
            with_soa as u8,
            0,
            0,
        ];
        v.extend_from_slice(b"\x01x\x07example\x00\x00\x01\x00\x01");
        v.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
        v.extend_from_slice(&ttl.to_be_bytes());
        v.extend_from_slice(&[0, 4, 192, 0, 2, 1]);
        if with_soa {
            v.extend_from_slice(&[0xC0, 0x0E, 0, 6, 0, 1]);
            v.extend_from_slice(&100u32.to_be_bytes());
            v.extend_from_slice(&[0, 22, 0, 0]);
            v.extend_from_slice(&[0; 16]);
            v.extend_from_slice(&30u32.to_be_bytes());
        }
        v
    }

    fn key() -> CacheKey {
        CacheKey {
            name: b"\x01x\x07example\x00".to_vec(),
            qtype: 1,
            qclass: 1,
        }
    }

    #[test]
    fn honours_ttls_ages_them_and_keeps_client_case_and_id() {
        let c = Cache::new(100, 3600);
        let p = response(10, 0, false);
        let info = inspect_response(&p).unwrap();
        let t0 = Instant::now();
        c.insert(key(), p, &info, t0);
        let q = b"\x01X\x07ExAmple\x00\x00\x01\x00\x01";
        let got = c
            .get(&key(), 0x7777, q, t0 + Duration::from_secs(3))
            .unwrap();
        assert_eq!(&got[0..2], &[0x77, 0x77]);
        assert_eq!(&got[12..12 + q.len()], q);
        let info2 = inspect_response(&got).unwrap();
        assert_eq!(info2.min_ttl, Some(7));
        assert!(c.get(&key(), 1, q, t0 + Duration::from_secs(10)).is_none());
    }

    #[test]
    fn negative_answers_use_the_soa_negative_ttl_and_servfail_is_not_cached() {
        let nx = response(100, 3, true);
        let mut info = inspect_response(&nx).unwrap();
        assert_eq!(info.soa_negative_ttl, Some(30));
        info.ancount = 0;
        assert_eq!(cache_ttl(&info, 3600), Some(30));
        assert_eq!(cache_ttl(&info, 10), Some(10));
        info.rcode = 2;
        assert_eq!(cache_ttl(&info, 3600), None);
        info.rcode = 3;
        info.soa_negative_ttl = None;
        assert_eq!(cache_ttl(&info, 3600), None);
    }

    #[test]
    fn stays_bounded() {
        let c = Cache::new(32, 3600);
        let p = response(60, 0, false);
        let info = inspect_response(&p).unwrap();
        let now = Instant::now();
        for i in 0..1000u32 {
            let mut k = key();
            k.name = format!("n{i}").into_bytes();
            c.insert(k, p.clone(), &info, now);
        }
        assert!(c.len() <= 32, "{}", c.len());
    }
}
