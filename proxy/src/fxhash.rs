//! FxHash, the multiply-rotate hasher rustc uses: several times faster than
//! the standard SipHash on small keys, without its resistance to chosen
//! collisions. For maps and sets of values the proxy derived itself during
//! one sync (set element keys, verdicts), where the speed matters and an
//! attacker's collisions could at worst slow that sync down.

use std::hash::{BuildHasherDefault, Hasher};

#[derive(Debug, Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const K: u64 = 0x517c_c1b7_2722_0a95;

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(K);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.hash
    }
}

pub type FxBuildHasher = BuildHasherDefault<FxHasher>;
pub type FxHashMap<K, V> = std::collections::HashMap<K, V, FxBuildHasher>;
pub type FxHashSet<K> = std::collections::HashSet<K, FxBuildHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    fn h(v: impl Hash) -> u64 {
        FxBuildHasher::default().hash_one(v)
    }

    #[test]
    fn equal_values_hash_equal_and_small_changes_differ() {
        assert_eq!(h(("10.96.0.1", 80u16)), h(("10.96.0.1", 80u16)));
        assert_ne!(h(("10.96.0.1", 80u16)), h(("10.96.0.1", 81u16)));
        assert_ne!(h([1u8, 2, 3]), h([1u8, 2, 4]));
        // Bytes past the last full word count too.
        assert_ne!(h(*b"123456789"), h(*b"12345678A"));
        let mut s = FxHashSet::default();
        assert!(s.insert(7u32) && !s.insert(7u32));
    }
}
