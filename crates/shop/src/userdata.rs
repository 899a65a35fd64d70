//! Where a user's carts, orders and order items are served from when `--shard-map` is set:
//! the shard that owns the user under the map ([`ShardSet::pool_for`]).
//!
//! Built once at start from a validated [`ShardMap`]: one pool per shard, sized like the
//! primary pool, with the same SQLite discipline as the main database (WAL,
//! synchronous=NORMAL, busy timeout, `BEGIN IMMEDIATE` writers via [`crate::pool_tx!`]).
//! Users, products, sessions and cache entries never come here: they stay on `--db`.
//! This module must never route a user by anything but its id and the map, and never
//! change the map while serving (resharding runs with the shop stopped).

use std::time::Duration;

use crate::db::AnyPool;
use crate::error::ShopError;
use crate::metrics::{Metrics, PoolUsage};
use crate::shard::{ShardMap, ShardPool, ShardSet};

/// The shards holding per-user data, connected.
#[derive(Debug)]
pub struct ShardedUserData {
    /// The connected map (router + shard pools).
    set: ShardSet,
    /// The same pools as [`AnyPool`]s, in map order, so handlers reuse `on_pool!`.
    pools: Vec<AnyPool>,
    /// Connections per shard pool.
    pool_size: u32,
    /// Timeout of a readiness ping.
    timeout: Duration,
}

impl ShardedUserData {
    /// Reads and validates the map file at `path`; the error names the file and field.
    pub fn load_map(path: &str) -> Result<ShardMap, ShopError> {
        ShardMap::from_file(std::path::Path::new(path))
            .map_err(|e| ShopError::Config(format!("shard_map: {e}")))
    }

    /// Connects every shard of `map` (creating the per-user tables where missing) and
    /// names the shards in `metrics`.
    pub async fn connect(
        map: &ShardMap,
        pool_size: u32,
        timeout: Duration,
        metrics: &Metrics,
    ) -> Result<Self, ShopError> {
        let set = ShardSet::connect_sized(map, timeout, pool_size)
            .await
            .map_err(|e| match e {
                crate::shard::ShardError::Config { .. } => {
                    ShopError::Config(format!("shard_map: {e}"))
                }
                other => ShopError::Internal(format!("connecting the shards: {other}")),
            })?;
        let pools = set
            .pools()
            .iter()
            .map(|p| match p {
                ShardPool::Sqlite(p) => AnyPool::Sqlite(p.clone()),
                ShardPool::Postgres(p) => AnyPool::Pg(p.clone()),
            })
            .collect();
        let names: Vec<String> = map.shards.iter().map(|s| s.name.clone()).collect();
        metrics.init_shards(&names);
        Ok(Self {
            set,
            pools,
            pool_size,
            timeout,
        })
    }

    /// The owner of `user_id`: (shard index, its pool).
    pub fn home(&self, user_id: i64) -> (usize, &AnyPool) {
        let i = self.set.shard_for(user_id);
        (i, &self.pools[i])
    }

    /// The connected map.
    pub fn set(&self) -> &ShardSet {
        &self.set
    }

    /// Whether each shard answers `SELECT 1` within the timeout: (name, answered).
    pub async fn ping_all(&self) -> Vec<(String, bool)> {
        let pings = self.set.pools().iter().map(|p| p.ping(self.timeout));
        let answers = futures_util::future::join_all(pings).await;
        self.set
            .map()
            .shards
            .iter()
            .zip(answers)
            .map(|(s, ok)| (s.name.clone(), ok))
            .collect()
    }

    /// Pool usage of every shard pool (`shard:NAME`), for `/metrics`.
    pub fn pool_usage(&self) -> Vec<PoolUsage> {
        self.set
            .map()
            .shards
            .iter()
            .zip(self.set.pools())
            .map(|(s, p)| {
                let (size, idle) = p.usage();
                PoolUsage {
                    name: format!("shard:{}", s.name),
                    max: self.pool_size,
                    size,
                    idle,
                }
            })
            .collect()
    }

    /// Closes every shard pool.
    pub async fn close(&self) {
        self.set.close().await;
    }
}
