//! Routers: which shard owns a user's carts and orders.
//!
//! Every router is a pure function of the user id and its own immutable state (no clock,
//! no I/O, no global RNG): the same map gives the same answer in every process and on every
//! machine, which is what lets any shop instance serve any user. Hashing uses fixed
//! functions written here (SplitMix64, FNV-1a), never std's `RandomState`, whose seed
//! differs per process.
//!
//! - [`HashRouter`]: `mix(user_id) mod N`. Even spread; changing N moves almost everyone
//!   (about `1 - 1/N'` of users).
//! - [`RangeRouter`]: contiguous user id ranges. Moves only the users of split ranges, but
//!   sequential ids make the newest range the hottest.
//! - [`ConsistentRouter`]: a hash ring with virtual nodes, the points placed by the shard's
//!   *name*. Adding a shard to N moves about `1/(N+1)` of users, all of them to the new
//!   shard; removing one moves only that shard's users.
//! - [`DirectoryRouter`]: an explicit user → shard table (loaded from a directory database
//!   by [`super::ShardSet`]), with a default router for users not in it. Moves are explicit
//!   edits of the table; adding a shard moves nobody.
//!
//! A router must never return an index outside `0..shard_count()`.

use std::collections::HashMap;
use std::fmt::Debug;

/// Index of a shard in its [`super::ShardMap`]'s `shards` list.
pub type ShardId = usize;

/// Chooses the shard that owns a user's per-user rows.
pub trait ShardRouter: Send + Sync + Debug {
    /// The shard owning `user_id`; always `< self.shard_count()`.
    fn shard_for(&self, user_id: i64) -> ShardId;
    /// How many shards this router spreads over.
    fn shard_count(&self) -> usize;
}

/// SplitMix64's finalizer: a fixed, well-mixing bijection on 64-bit values. Sequential user
/// ids come out spread over the whole range.
pub fn mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a (64-bit) of bytes, then [`mix64`] (FNV alone clusters on short similar strings).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

/// `mix64(user_id) mod shards`.
#[derive(Debug, Clone)]
pub struct HashRouter {
    /// Number of shards (at least 1).
    shards: usize,
}

impl HashRouter {
    /// A hash router over `shards` shards (at least 1; 0 is treated as 1).
    pub fn new(shards: usize) -> Self {
        Self {
            shards: shards.max(1),
        }
    }
}

impl ShardRouter for HashRouter {
    fn shard_for(&self, user_id: i64) -> ShardId {
        // Lossless reinterpretation of the id's bits; negative ids hash like any other.
        (mix64(user_id as u64) % self.shards as u64) as ShardId
    }
    fn shard_count(&self) -> usize {
        self.shards
    }
}

/// Contiguous ranges: shard `i` holds ids in `[upper_bounds[i-1], upper_bounds[i])`, shard
/// 0 everything below `upper_bounds[0]`, the last shard everything from the last bound up.
#[derive(Debug, Clone)]
pub struct RangeRouter {
    /// Strictly increasing exclusive upper bounds; `shards - 1` of them.
    upper_bounds: Vec<i64>,
}

impl RangeRouter {
    /// A range router; `upper_bounds` must be strictly increasing (checked by
    /// [`super::ShardMap::validate`]; here an unsorted list is sorted so lookups stay sound).
    pub fn new(mut upper_bounds: Vec<i64>) -> Self {
        upper_bounds.sort_unstable();
        upper_bounds.dedup();
        Self { upper_bounds }
    }
}

impl ShardRouter for RangeRouter {
    fn shard_for(&self, user_id: i64) -> ShardId {
        // Number of bounds <= user_id = index of the range that holds it.
        self.upper_bounds.partition_point(|b| *b <= user_id)
    }
    fn shard_count(&self) -> usize {
        self.upper_bounds.len() + 1
    }
}

/// A consistent-hash ring: each shard puts `virtual_nodes` points on a 64-bit ring at
/// `hash("name#i")`; a user belongs to the first point clockwise from `mix64(user_id)`.
///
/// Points depend on the shard's name, not its position in the list, so reordering the
/// list moves nobody and adding a shard takes over only the arcs before its own points.
/// With 160 virtual nodes the load of each shard is within a few percent of `1/N`.
#[derive(Debug, Clone)]
pub struct ConsistentRouter {
    /// Ring points sorted by position: (position, shard index).
    ring: Vec<(u64, ShardId)>,
    /// Number of shards.
    shards: usize,
}

/// Virtual nodes per shard when the config does not say.
pub const DEFAULT_VIRTUAL_NODES: u32 = 160;

impl ConsistentRouter {
    /// A ring over shards named `names` (index = position in `names`), `virtual_nodes`
    /// points each (at least 1).
    pub fn new<S: AsRef<str>>(names: &[S], virtual_nodes: u32) -> Self {
        let vnodes = virtual_nodes.max(1);
        let mut ring = Vec::with_capacity(names.len() * vnodes as usize);
        for (shard, name) in names.iter().enumerate() {
            for i in 0..vnodes {
                let point = hash_bytes(format!("{}#{i}", name.as_ref()).as_bytes());
                ring.push((point, shard));
            }
        }
        // Ties (astronomically rare) are broken by shard index so every process agrees.
        ring.sort_unstable();
        Self {
            ring,
            shards: names.len().max(1),
        }
    }
}

impl ShardRouter for ConsistentRouter {
    fn shard_for(&self, user_id: i64) -> ShardId {
        if self.ring.is_empty() {
            return 0;
        }
        let key = mix64(user_id as u64);
        let i = self.ring.partition_point(|(p, _)| *p < key);
        self.ring[i % self.ring.len()].1
    }
    fn shard_count(&self) -> usize {
        self.shards
    }
}

/// An explicit user → shard table with a default router for everyone else.
///
/// The table is a snapshot loaded from the directory database (see
/// [`super::ShardSet::connect`]); new assignments are written there with
/// [`super::ShardSet::assign`] and seen by routers loaded afterwards.
#[derive(Debug)]
pub struct DirectoryRouter {
    /// Pinned users.
    pinned: HashMap<i64, ShardId>,
    /// Router for users not in `pinned`.
    default: Box<dyn ShardRouter>,
}

impl DirectoryRouter {
    /// A directory over `default.shard_count()` shards. Entries pointing past the last
    /// shard are rejected by the loader, never here silently.
    pub fn new(pinned: HashMap<i64, ShardId>, default: Box<dyn ShardRouter>) -> Self {
        Self { pinned, default }
    }

    /// Whether `user_id` has an explicit entry.
    pub fn is_pinned(&self, user_id: i64) -> bool {
        self.pinned.contains_key(&user_id)
    }
}

impl ShardRouter for DirectoryRouter {
    fn shard_for(&self, user_id: i64) -> ShardId {
        match self.pinned.get(&user_id) {
            Some(s) if *s < self.default.shard_count() => *s,
            _ => self.default.shard_for(user_id),
        }
    }
    fn shard_count(&self) -> usize {
        self.default.shard_count()
    }
}
