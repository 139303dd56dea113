//! A hasher for the maps keyed by the cache's own ids (lifetimes, subscriptions, requests) and by
//! cache keys.
//!
//! Those ids are sequential counters the cache hands out, never chosen by a caller, so they need
//! no protection against collision attacks; std's SipHash costs more than the rest of a lookup.
//! This is FxHash's multiply for one integer. A [`CacheKey`](crate::core::key::CacheKey) (text
//! derived from arguments, which may come from outside) hashes as the one integer it computed
//! from its text with a per-process random seed when it was made, so the seeding protects it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The multiplier of FxHash (rustc's hasher): odd, with well-spread bits.
const K: u64 = 0x517c_c1b7_2722_0a95;

/// Hashes integer ids with one multiplication.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by integer keys; kept correct for any other key.
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(K);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// A `HashMap` keyed by the cache's ids, or by cache keys.
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_spread_over_buckets_and_tags() {
        use std::hash::BuildHasher;
        let build = BuildHasherDefault::<IdHasher>::default();
        let hashes: Vec<u64> = (1..=1024u64).map(|id| build.hash_one(id)).collect();
        let low: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 1023).collect();
        let top: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert_eq!(low.len(), 1024, "distinct bucket indices");
        assert!(top.len() > 100, "hashbrown's 7-bit tags are spread");
    }

    #[test]
    fn keys_written_as_bytes_or_usize_hash_apart_too() {
        use std::hash::BuildHasher;
        let build = BuildHasherDefault::<IdHasher>::default();
        assert_ne!(build.hash_one([1u8, 2]), build.hash_one([2u8, 1]));
        assert_ne!(build.hash_one(1usize), build.hash_one(2usize));
        assert_eq!(build.hash_one(7usize), build.hash_one(7u64));
    }
}
