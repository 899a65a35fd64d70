//! Where a user's carts, orders and order items are served from when `--shard-map` is set:
//! the shard that owns the user under the map ([`ShardSet::pool_for`]).
//!
//! Built once at start from a validated [`ShardMap`]: one pool per shard, sized like the
//! primary pool, with the same SQLite discipline as the main database (WAL,
//! synchronous=NORMAL, busy timeout, `BEGIN IMMEDIATE` writers via [`crate::pool_tx!`]).
//! Users, products, sessions and cache entries never come here: they stay on `--db`.
//! This module must never route a user by anything but its id and the map, and never
//! change the map while serving (resharding runs with the shop stopped).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use crate::config::ShopConfig;
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

    /// Connects every shard of `map` (creating the per-user tables where missing), checks
    /// the connection math of PostgreSQL shards, and names the shards in `metrics`.
    pub async fn connect(
        map: &ShardMap,
        cfg: &ShopConfig,
        metrics: &Metrics,
    ) -> Result<Self, ShopError> {
        let pool_size = cfg.pool_size;
        let timeout = Duration::from_millis(cfg.store_timeout_ms);
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
        check_connection_math(map, &set, cfg).await?;
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

    /// Every shard's pool, in map order.
    pub fn pools(&self) -> &[AnyPool] {
        &self.pools
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

/// `host:port` of a PostgreSQL URL (None for SQLite or an unparsable URL).
fn pg_server(url: &str) -> Option<String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return None;
    }
    let o = sqlx::postgres::PgConnectOptions::from_str(url).ok()?;
    Some(format!("{}:{}", o.get_host(), o.get_port()))
}

/// Refuses to start when, on any PostgreSQL server holding shards, `expected_instances x
/// pool_size x (shard pools on it, plus the primary pool when `--db` is on it too)` exceeds
/// its `max_connections`: the same rule as for `--db`, summed per server because several
/// shards are often databases of one server.
async fn check_connection_math(
    map: &ShardMap,
    set: &ShardSet,
    cfg: &ShopConfig,
) -> Result<(), ShopError> {
    let main = pg_server(&cfg.db);
    let mut servers: BTreeMap<String, (u64, usize)> = BTreeMap::new();
    for (i, s) in map.shards.iter().enumerate() {
        if let Some(server) = pg_server(&s.url) {
            let e = servers.entry(server).or_insert((0, i));
            e.0 += 1;
        }
    }
    for (server, (shard_pools, first)) in servers {
        let ShardPool::Postgres(pool) = &set.pools()[first] else {
            continue;
        };
        let max: String = sqlx::query_scalar("SHOW max_connections")
            .fetch_one(pool)
            .await?;
        let max_connections: u64 = max
            .parse()
            .map_err(|_| ShopError::Internal(format!("max_connections is `{max}`")))?;
        let pools = shard_pools + u64::from(main.as_deref() == Some(server.as_str()));
        let per_instance = u64::from(cfg.pool_size) * pools;
        let needed = u64::from(cfg.expected_instances) * per_instance;
        if needed > max_connections {
            return Err(ShopError::TooManyConnections {
                instances: cfg.expected_instances,
                pool_size: cfg.pool_size,
                needed,
                max_connections,
                server: format!("shard server {server} ({pools} pools per instance)"),
            });
        }
    }
    Ok(())
}
