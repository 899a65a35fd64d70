//! Sharding of per-user data (carts, orders, order items) by user id over several
//! databases (SQLite files or PostgreSQL databases), and resharding between two maps.
//!
//! - [`ShardMap`] (config): the shard list and the routing rule, validated once.
//! - [`ShardRouter`] and its four kinds ([`router`]): pure, stable across processes.
//! - [`ShardSet`]: a connected map — one pool per shard plus the router — which the shop
//!   asks `pool_for(user_id)`.
//! - [`reshard()`]: moves only the users whose owner changes; copy, verify, then delete;
//!   safe to re-run after a crash at any point ([`reshard`](mod@reshard) explains the
//!   protocol and what readers see meanwhile).
//!
//! Catalog tables (products, users, sessions) are not sharded: they stay on the primary.
//! This module must never route a user by anything but its id and the map (no clock, no
//! per-process randomness), and never delete a row whose copy is not committed and verified.

pub mod config;
pub mod reshard;
pub mod router;
pub mod store;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub use config::{RouterSpec, ShardMap, ShardSpec};
pub use reshard::{ReshardOptions, ReshardReport, reshard};
pub use router::{
    ConsistentRouter, DirectoryRouter, HashRouter, RangeRouter, ShardId, ShardRouter,
};
pub use store::{ShardPool, TableCounts, UserRows};

/// Errors of sharding and resharding.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// A shard map field is invalid.
    #[error("invalid shard map: {field}: {reason}")]
    Config {
        /// The offending field (`shards[2].url`, `router.upper_bounds`, ...).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A database call failed.
    #[error("shard database: {0}")]
    Db(#[from] sqlx::Error),
    /// A database call took longer than the configured timeout.
    #[error("shard database: {0} timed out")]
    Timeout(&'static str),
    /// The copy of a user's rows did not read back identical; nothing was deleted.
    #[error("verification of user {user_id} failed, source kept: {reason}")]
    Verify {
        /// The user being moved.
        user_id: i64,
        /// Which row is missing or different.
        reason: String,
    },
}

/// A connected shard map: one pool per shard and the router.
#[derive(Debug, Clone)]
pub struct ShardSet {
    /// The map it was built from.
    map: Arc<ShardMap>,
    /// Routes user ids to indices of `pools`.
    router: Arc<dyn ShardRouter>,
    /// One pool per shard, in map order.
    pools: Vec<ShardPool>,
    /// The directory database, for `directory` maps.
    directory: Option<ShardPool>,
}

impl ShardSet {
    /// Validates `map`, connects to every shard (creating the per-user tables if missing)
    /// and builds the router (loading the directory for `directory` maps). Each call is
    /// bounded by `timeout`.
    pub async fn connect(map: &ShardMap, timeout: Duration) -> Result<Self, ShardError> {
        Self::connect_sized(map, timeout, store::DEFAULT_POOL_SIZE).await
    }

    /// [`ShardSet::connect`] with `pool_size` connections per shard pool.
    pub async fn connect_sized(
        map: &ShardMap,
        timeout: Duration,
        pool_size: u32,
    ) -> Result<Self, ShardError> {
        map.validate()?;
        let mut pools = Vec::with_capacity(map.shards.len());
        for s in &map.shards {
            let pool = tokio::time::timeout(
                timeout,
                ShardPool::connect_sized(&s.url, timeout, pool_size),
            )
            .await
            .map_err(|_| ShardError::Timeout("connect"))??;
            tokio::time::timeout(timeout, pool.ensure_tables())
                .await
                .map_err(|_| ShardError::Timeout("create tables"))??;
            pools.push(pool);
        }
        let directory = match &map.router {
            RouterSpec::Directory { url, .. } => Some(open_directory(url, timeout).await?),
            _ => None,
        };
        let router = Self::router_with(map, directory.as_ref()).await?;
        Ok(Self {
            map: Arc::new(map.clone()),
            router: Arc::from(router),
            pools,
            directory,
        })
    }

    /// The router of `map` alone, without shard pools (a `directory` map opens its
    /// directory database to load it).
    pub async fn router_for(
        map: &ShardMap,
        timeout: Duration,
    ) -> Result<Box<dyn ShardRouter>, ShardError> {
        map.validate()?;
        match &map.router {
            RouterSpec::Directory { url, .. } => {
                let dir = open_directory(url, timeout).await?;
                let router = Self::router_with(map, Some(&dir)).await;
                dir.close().await;
                router
            }
            _ => map.static_router(),
        }
    }

    async fn router_with(
        map: &ShardMap,
        directory: Option<&ShardPool>,
    ) -> Result<Box<dyn ShardRouter>, ShardError> {
        let (RouterSpec::Directory { default, .. }, Some(dir)) = (&map.router, directory) else {
            return map.static_router();
        };
        let default = config::build_static(default, &map.shards)?;
        let mut pinned = HashMap::new();
        for (user_id, shard) in dir.directory_entries().await? {
            let Some(i) = map.index_of(&shard) else {
                return Err(ShardError::Config {
                    field: format!("router.url (directory entry of user {user_id})"),
                    reason: format!("names shard `{shard}`, which is not in `shards`"),
                });
            };
            pinned.insert(user_id, i);
        }
        Ok(Box::new(DirectoryRouter::new(pinned, default)))
    }

    /// The shard owning `user_id`.
    pub fn shard_for(&self, user_id: i64) -> ShardId {
        self.router.shard_for(user_id)
    }

    /// The pool of the shard owning `user_id`.
    pub fn pool_for(&self, user_id: i64) -> &ShardPool {
        &self.pools[self.router.shard_for(user_id)]
    }

    /// Every shard pool, in map order.
    pub fn pools(&self) -> &[ShardPool] {
        &self.pools
    }

    /// The map this set was built from.
    pub fn map(&self) -> &ShardMap {
        &self.map
    }

    /// Directory maps only: pins `user_id` to the shard named `shard` in the directory
    /// database (takes effect for routers loaded afterwards, e.g. the next `connect`; moving
    /// the user's existing rows is `reshard`'s job with the old map as `from`).
    pub async fn assign(&self, user_id: i64, shard: &str) -> Result<(), ShardError> {
        let Some(dir) = &self.directory else {
            return Err(ShardError::Config {
                field: "router.kind".into(),
                reason: "assign needs a directory router".into(),
            });
        };
        if self.map.index_of(shard).is_none() {
            return Err(ShardError::Config {
                field: "shard".into(),
                reason: format!("no shard named `{shard}`"),
            });
        }
        dir.directory_assign(user_id, shard).await
    }

    /// During a reshard from `from` (this set's map is irrelevant): the shard urls to read
    /// `user_id`'s rows from, in order — the `to` owner first, then the `from` owner if
    /// different. Use the first that has any row of the user (see [`reshard`](mod@reshard)).
    pub fn read_order_during_reshard<'m>(
        from: (&'m ShardMap, &dyn ShardRouter),
        to: (&'m ShardMap, &dyn ShardRouter),
        user_id: i64,
    ) -> Vec<&'m str> {
        let new = to.0.shards[to.1.shard_for(user_id)].url.as_str();
        let old = from.0.shards[from.1.shard_for(user_id)].url.as_str();
        if new == old {
            vec![new]
        } else {
            vec![new, old]
        }
    }

    /// Closes every pool.
    pub async fn close(&self) {
        for p in &self.pools {
            p.close().await;
        }
        if let Some(d) = &self.directory {
            d.close().await;
        }
    }
}

async fn open_directory(url: &str, timeout: Duration) -> Result<ShardPool, ShardError> {
    let dir = tokio::time::timeout(timeout, ShardPool::connect(url, timeout))
        .await
        .map_err(|_| ShardError::Timeout("connect to the directory"))??;
    dir.ensure_directory().await?;
    Ok(dir)
}
