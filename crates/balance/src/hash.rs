//! Stable hashing and the Maglev consistent-hash table.
//!
//! Why Maglev rather than a ring with virtual nodes: a lookup is one hash and one array
//! index (no binary search over thousands of ring points), the table gives near-perfect
//! balance (peak/mean close to 1 with a prime table of 65537 slots) with far less memory
//! than a ring needing ~1000 virtual nodes per backend for the same balance, and when a
//! backend leaves only the slots it owned change hands (plus a very small number of
//! others, which the tests bound). The table is built when the snapshot is built, off the
//! request path.
//!
//! Hashes here must be stable across processes and releases (a key must map to the same
//! backend after a restart), so this module never uses `std`'s randomly seeded hasher.

/// 64-bit FNV-1a over `bytes`, seeded, then a splitmix64 finaliser for avalanche.
pub fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

/// splitmix64's finaliser: a bijective mix of all 64 bits.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A Maglev lookup table: slot -> backend index.
#[derive(Debug, Clone)]
pub struct MaglevTable {
    slots: Vec<u32>,
}

impl MaglevTable {
    /// Builds the table for backends named `names` with integer `weights` (same length,
    /// weights >= 1) over `size` slots (raised to the next prime above the backend count
    /// if it is not such a prime already).
    ///
    /// Weighted Maglev: in each filling round a backend takes a slot only when its share
    /// `weight / max_weight` accumulates to a new whole unit, so backends fill slots in
    /// proportion to weight. With equal weights this is the classic algorithm.
    pub fn build(names: &[&str], weights: &[u32], size: u32) -> MaglevTable {
        assert_eq!(
            names.len(),
            weights.len(),
            "names and weights differ in length"
        );
        let n = names.len();
        if n == 0 {
            return MaglevTable { slots: Vec::new() };
        }
        // The permutation (offset + j * skip) mod m visits every slot only when m is prime;
        // a size that is not prime, or not above the backend count, is raised to one that is.
        let mut m = (size as u64).max(n as u64 + 1);
        while !crate::config::is_prime(m.min(u32::MAX as u64) as u32) {
            m += 1;
        }
        let perms: Vec<(u64, u64)> = names
            .iter()
            .map(|name| {
                let offset = hash_bytes(0x6d61_676c, name.as_bytes()) % m;
                let skip = hash_bytes(0x736b_6970, name.as_bytes()) % (m - 1) + 1;
                (offset, skip)
            })
            .collect();
        let max_w = weights.iter().copied().max().unwrap_or(1).max(1) as u64;
        let mut next = vec![0u64; n];
        let mut credit = vec![0u64; n];
        let mut slots = vec![u32::MAX; m as usize];
        let mut filled = 0u64;
        'outer: loop {
            for i in 0..n {
                credit[i] += weights[i].max(1) as u64;
                if credit[i] < max_w {
                    continue;
                }
                credit[i] -= max_w;
                let (offset, skip) = perms[i];
                let mut c = (offset + next[i] * skip) % m;
                while slots[c as usize] != u32::MAX {
                    next[i] += 1;
                    c = (offset + next[i] * skip) % m;
                }
                slots[c as usize] = i as u32;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    break 'outer;
                }
            }
        }
        MaglevTable { slots }
    }

    /// The backend index for a key hash, or `None` for an empty table.
    pub fn lookup(&self, key_hash: u64) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        Some(self.slots[(key_hash % self.slots.len() as u64) as usize] as usize)
    }

    /// The backend index in slot `slot` (modulo the size), for walking on from a slot.
    pub fn slot(&self, slot: u64) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        Some(self.slots[(slot % self.slots.len() as u64) as usize] as usize)
    }

    /// Number of slots (0 when empty).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the table has no slots (no backends).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests;
