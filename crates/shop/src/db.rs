//! The database tier: the primary pool (SQLite or PostgreSQL), PostgreSQL replica pools,
//! read routing with read-your-writes, start-up checks, migrations and seeding.
//!
//! Rules kept here:
//! - every SQLite write transaction starts with `BEGIN IMMEDIATE` (see [`write_tx!`]), so a
//!   writer takes the write lock up front and waits on `busy_timeout` instead of failing
//!   with SQLITE_BUSY when it would have to upgrade a read lock;
//! - writes and read-your-writes go to the primary; stale-tolerant reads go to a replica
//!   chosen by [`crate::ryw::route_read`] from a snapshot the poller publishes;
//! - start is refused when `expected_instances x pool_size` exceeds a server's
//!   `max_connections`.
//!
//! This module must never hold a lock across an `.await` on the request path, and never
//! send a write to a replica.

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};

use tokio_util::sync::CancellationToken;

use crate::config::{DbKind, ShopConfig};
use crate::error::ShopError;
use crate::metrics::{DbRole, Metrics, PoolUsage};
use crate::ryw::{LagTracker, ReadRoute, ReplicaStatus, parse_lsn, route_read};

/// A pool of either backend. Queries are written once with `$N` placeholders, which both
/// SQLite and PostgreSQL accept, and run on either through [`on_pool!`].
#[derive(Clone, Debug)]
pub enum AnyPool {
    /// SQLite (one file shared by every instance on the machine).
    Sqlite(SqlitePool),
    /// PostgreSQL (primary or replica).
    Pg(PgPool),
}

/// Runs `$body` with `$p` bound to the concrete pool of `$pool`.
#[macro_export]
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            $crate::db::AnyPool::Sqlite($p) => $body,
            $crate::db::AnyPool::Pg($p) => $body,
        }
    };
}

/// Runs `$body` inside a write transaction on the primary, with `$tx` bound to it, and
/// commits when `$body` finishes without `?`-returning early (an early return rolls back).
/// SQLite transactions start with `BEGIN IMMEDIATE`.
#[macro_export]
macro_rules! write_tx {
    ($db:expr, $tx:ident => $body:expr) => {
        match $db.primary() {
            $crate::db::AnyPool::Sqlite(p) => {
                let mut $tx = p.begin_with("BEGIN IMMEDIATE").await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
            $crate::db::AnyPool::Pg(p) => {
                let mut $tx = p.begin().await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    };
}

/// Runs `$body` inside a write transaction on the [`AnyPool`] `$pool` (a shard, say),
/// with `$tx` bound to it; commits when `$body` finishes without `?`-returning early.
/// SQLite transactions start with `BEGIN IMMEDIATE`, as in [`write_tx!`].
#[macro_export]
macro_rules! pool_tx {
    ($pool:expr, $tx:ident => $body:expr) => {
        match $pool {
            $crate::db::AnyPool::Sqlite(p) => {
                let mut $tx = p.begin_with("BEGIN IMMEDIATE").await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
            $crate::db::AnyPool::Pg(p) => {
                let mut $tx = p.begin().await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    };
}

/// One PostgreSQL streaming replica.
#[derive(Debug)]
pub struct Replica {
    /// `replica0`, `replica1`, ... (URLs are not logged: they may carry passwords).
    pub name: String,
    /// Its pool.
    pub pool: PgPool,
    /// Reads in flight on it, for least-outstanding-requests selection.
    outstanding: AtomicUsize,
}

/// Where one read runs. Dropping it releases the replica's outstanding count.
#[derive(Debug)]
pub struct Reader<'a> {
    /// The pool to query.
    pub pool: AnyPool,
    /// Which server role that is (for metrics).
    pub role: DbRole,
    replica: Option<&'a Replica>,
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.replica {
            r.outstanding.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The database tier of one instance.
#[derive(Debug)]
pub struct Db {
    primary: AnyPool,
    replicas: Vec<Replica>,
    statuses: ArcSwap<Vec<ReplicaStatus>>,
    lag: Mutex<LagTracker>,
    started: Instant,
    max_lag_ms: u64,
    pool_size: u32,
    timeout: Duration,
    metrics: Arc<Metrics>,
    /// The primary's WAL position right after this instance migrated and seeded: no
    /// replica serves any read until it has replayed past it, so a replica that has not
    /// yet received the schema (a new database, a fresh migration) never answers with
    /// "relation does not exist". 0 without replicas.
    schema_lsn: u64,
}

/// Opens the SQLite pool. Several instances may open a brand-new file at the same moment:
/// switching it to WAL takes an exclusive lock that SQLite does not wait for, so the
/// loser sees SQLITE_BUSY once. That one case is retried (bounded: 50 tries, 5 s).
async fn sqlite_pool(
    opts: SqliteConnectOptions,
    pool_size: u32,
    timeout: Duration,
) -> Result<sqlx::SqlitePool, ShopError> {
    let mut tries = 0;
    loop {
        let r = SqlitePoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(timeout)
            .connect_with(opts.clone())
            .await;
        match r {
            Ok(pool) => return Ok(pool),
            Err(e) if tries < 50 && is_busy(&e) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// SQLITE_BUSY (5) or SQLITE_LOCKED (6), with or without extended codes.
fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|c| matches!(c & 0xff, 5 | 6)),
        _ => false,
    }
}

/// `SELECT pg_current_wal_lsn()` and friends return text we parse into numbers.
async fn lsn_query(pool: &PgPool, sql: &'static str) -> Result<Option<u64>, sqlx::Error> {
    let s: Option<String> = sqlx::query_scalar(sql).fetch_one(pool).await?;
    Ok(s.as_deref().and_then(parse_lsn))
}

impl Db {
    /// Connects the primary and replicas, checks the connection math, migrates and seeds.
    pub async fn connect(cfg: &ShopConfig, metrics: Arc<Metrics>) -> Result<Arc<Db>, ShopError> {
        let timeout = Duration::from_millis(cfg.store_timeout_ms);
        let primary = match cfg.db_kind()? {
            DbKind::Sqlite => {
                let opts = SqliteConnectOptions::from_str(&cfg.db)
                    .map_err(|e| ShopError::Config(format!("db: {e}")))?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(timeout.max(Duration::from_secs(10)))
                    .foreign_keys(true);
                AnyPool::Sqlite(sqlite_pool(opts, cfg.pool_size, timeout).await.map_err(
                    |e| match e {
                        ShopError::Db(e) => ShopError::connect("SQLite database", &cfg.db, &e),
                        other => other,
                    },
                )?)
            }
            DbKind::Postgres => AnyPool::Pg(pg_pool(&cfg.db, "primary", cfg, timeout).await?),
        };
        let mut replicas = Vec::new();
        for (i, url) in cfg.replica.iter().enumerate() {
            let name = format!("replica{i}");
            let pool = pg_pool(url, &name, cfg, timeout).await?;
            replicas.push(Replica {
                name,
                pool,
                outstanding: AtomicUsize::new(0),
            });
        }
        let mut db = Db {
            primary,
            statuses: ArcSwap::from_pointee(vec![ReplicaStatus::default(); replicas.len()]),
            replicas,
            lag: Mutex::new(LagTracker::default()),
            started: Instant::now(),
            max_lag_ms: cfg.max_replica_lag_ms,
            pool_size: cfg.pool_size,
            timeout,
            metrics,
            schema_lsn: 0,
        };
        db.migrate_and_seed(cfg.seed_products, cfg.catalog_seed)
            .await?;
        if !db.replicas.is_empty() {
            db.schema_lsn = db.primary_lsn().await?.unwrap_or(0);
            db.poll_replicas_once().await;
        }
        Ok(Arc::new(db))
    }

    /// The primary pool (all writes).
    pub fn primary(&self) -> &AnyPool {
        &self.primary
    }

    /// Whether the primary is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.primary, AnyPool::Pg(_))
    }

    /// Whether read routing to replicas is active.
    pub fn has_replicas(&self) -> bool {
        !self.replicas.is_empty()
    }

    /// The metrics this tier reports into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// A reader on the primary (read-your-writes, cache fills, logins).
    pub fn primary_reader(&self) -> Reader<'_> {
        Reader {
            pool: self.primary.clone(),
            role: DbRole::Primary,
            replica: None,
        }
    }

    /// A reader for a stale-tolerant read. With `mark` (the user's last-write WAL
    /// position), only a replica that has replayed it may serve; otherwise the primary.
    pub async fn reader(&self, mark: Option<u64>) -> Reader<'_> {
        let r = self.route(mark).await;
        self.metrics.read_routed(r.role);
        r
    }

    async fn route(&self, mark: Option<u64>) -> Reader<'_> {
        if self.replicas.is_empty() {
            return self.primary_reader();
        }
        let statuses = self.statuses.load();
        let outstanding: Vec<usize> = self
            .replicas
            .iter()
            .map(|r| r.outstanding.load(Ordering::Relaxed))
            .collect();
        // Every read needs the schema on the replica; a user's read also needs their own
        // last write. Both are WAL positions, so the larger one is the bar.
        let bar = match mark {
            Some(m) => Some(m.max(self.schema_lsn)),
            None if self.schema_lsn > 0 => Some(self.schema_lsn),
            None => None,
        };
        let chosen = match route_read(&statuses, &outstanding, bar, self.max_lag_ms) {
            ReadRoute::Replica(i) => Some(i),
            ReadRoute::CheckReplica(i) => {
                // The snapshot is older than the user's write; ask the replica itself.
                let r = &self.replicas[i];
                self.metrics.db_query(DbRole::Replica);
                let live = tokio::time::timeout(
                    self.timeout,
                    lsn_query(&r.pool, "SELECT pg_last_wal_replay_lsn()::text"),
                )
                .await;
                match (live, bar) {
                    (Ok(Ok(Some(lsn))), Some(m)) if lsn >= m => Some(i),
                    _ => None,
                }
            }
            ReadRoute::Primary => None,
        };
        match chosen {
            Some(i) => {
                let r = &self.replicas[i];
                r.outstanding.fetch_add(1, Ordering::Relaxed);
                Reader {
                    pool: AnyPool::Pg(r.pool.clone()),
                    role: DbRole::Replica,
                    replica: Some(r),
                }
            }
            None => {
                if mark.is_some() {
                    self.metrics.ryw_fallback();
                }
                self.primary_reader()
            }
        }
    }

    /// The primary's current WAL position (PostgreSQL only): the read-your-writes mark to
    /// keep for a user right after their commit.
    pub async fn primary_lsn(&self) -> Result<Option<u64>, ShopError> {
        match &self.primary {
            AnyPool::Pg(p) => {
                self.metrics.db_query(DbRole::Primary);
                Ok(lsn_query(p, "SELECT pg_current_wal_lsn()::text").await?)
            }
            AnyPool::Sqlite(_) => Ok(None),
        }
    }

    /// Samples the primary's WAL position and every replica's replay position, and
    /// publishes the new replica statuses.
    pub async fn poll_replicas_once(&self) {
        let AnyPool::Pg(primary) = &self.primary else {
            return;
        };
        let now_ms = self.started.elapsed().as_millis() as u64;
        let primary_lsn = tokio::time::timeout(
            self.timeout,
            lsn_query(primary, "SELECT pg_current_wal_lsn()::text"),
        )
        .await;
        if let Ok(Ok(Some(lsn))) = primary_lsn {
            self.lag
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .observe_primary(now_ms, lsn);
        }
        let mut statuses = Vec::with_capacity(self.replicas.len());
        for r in &self.replicas {
            let q = sqlx::query_as::<_, (bool, Option<String>)>(
                "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text",
            )
            .fetch_one(&r.pool);
            let status = match tokio::time::timeout(self.timeout, q).await {
                Ok(Ok((true, Some(lsn)))) => match parse_lsn(&lsn) {
                    Some(replay_lsn) => ReplicaStatus {
                        healthy: true,
                        replay_lsn,
                        lag_ms: self
                            .lag
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .lag_ms(now_ms, replay_lsn),
                    },
                    None => ReplicaStatus::default(),
                },
                Ok(Ok(_)) => {
                    tracing::warn!(replica = %r.name, "not in recovery: not a streaming replica; skipped");
                    ReplicaStatus::default()
                }
                Ok(Err(e)) => {
                    tracing::warn!(replica = %r.name, error = %e, "replica poll failed; skipped");
                    ReplicaStatus::default()
                }
                Err(_) => {
                    tracing::warn!(replica = %r.name, "replica poll timed out; skipped");
                    ReplicaStatus::default()
                }
            };
            statuses.push(status);
        }
        self.statuses.store(Arc::new(statuses));
    }

    /// The last published replica statuses.
    pub fn replica_statuses(&self) -> Vec<ReplicaStatus> {
        self.statuses.load().as_ref().clone()
    }

    /// Polls replicas every `every` until `cancel`.
    pub async fn run_replica_poller(self: Arc<Self>, every: Duration, cancel: CancellationToken) {
        if self.replicas.is_empty() {
            return;
        }
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => self.poll_replicas_once().await,
            }
        }
    }

    /// Pool usage of the primary and every replica, for `/metrics`.
    pub fn pool_usage(&self) -> Vec<PoolUsage> {
        let mut out = Vec::new();
        let (size, idle) = on_pool!(&self.primary, p => (p.size(), p.num_idle() as u32));
        out.push(PoolUsage {
            name: "primary".into(),
            max: self.pool_size,
            size,
            idle,
        });
        for r in &self.replicas {
            out.push(PoolUsage {
                name: r.name.clone(),
                max: self.pool_size,
                size: r.pool.size(),
                idle: r.pool.num_idle() as u32,
            });
        }
        out
    }

    /// Whether the primary answers `SELECT 1` within the timeout.
    pub async fn ping(&self) -> bool {
        let q = async {
            on_pool!(&self.primary, p => sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(p).await)
        };
        matches!(tokio::time::timeout(self.timeout, q).await, Ok(Ok(1)))
    }

    /// Creates the tables (idempotent) and seeds the catalog when `products` is empty.
    /// Safe when several instances start at once: SQLite serialises on `BEGIN IMMEDIATE`,
    /// PostgreSQL on a transaction-scoped advisory lock.
    async fn migrate_and_seed(&self, seed_products: u64, seed: u64) -> Result<(), ShopError> {
        let products = crate::catalog::generate(seed_products, seed);
        let is_pg = self.is_postgres();
        let ddl = if is_pg {
            crate::schema::POSTGRES
        } else {
            crate::schema::SQLITE
        };
        write_tx!(self, tx => {
            if is_pg {
                sqlx::query("SELECT pg_advisory_xact_lock(73840011)").execute(&mut *tx).await?;
            }
            for stmt in ddl {
                sqlx::query(*stmt).execute(&mut *tx).await?;
            }
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products").fetch_one(&mut *tx).await?;
            if n == 0 {
                for p in &products {
                    sqlx::query(
                        "INSERT INTO products (id, name, category, price_cents, stock, popularity) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(p.id)
                    .bind(&p.name)
                    .bind(&p.category)
                    .bind(p.price_cents)
                    .bind(p.stock)
                    .bind(p.popularity)
                    .execute(&mut *tx)
                    .await?;
                }
                tracing::info!(products = products.len(), "seeded an empty catalog");
            }
        });
        Ok(())
    }
}

/// Opens a PostgreSQL pool after checking the connection math against the server.
async fn pg_pool(
    url: &str,
    server: &str,
    cfg: &ShopConfig,
    timeout: Duration,
) -> Result<PgPool, ShopError> {
    let opts = PgConnectOptions::from_str(url)
        .map_err(|e| {
            ShopError::Config(format!(
                "{}: {e}",
                if server == "primary" { "db" } else { "replica" }
            ))
        })?
        .options([("statement_timeout", format!("{}", cfg.store_timeout_ms))]);
    let what = if server == "primary" {
        "PostgreSQL primary".to_string()
    } else {
        format!("PostgreSQL {server}")
    };
    let mut probe = match tokio::time::timeout(timeout, opts.connect()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(ShopError::connect(what, url, &e)),
        Err(_) => {
            return Err(ShopError::Connect {
                what,
                url: crate::error::redact_url(url),
                reason: format!("no answer within {} ms", timeout.as_millis()),
            });
        }
    };
    let max: String = sqlx::query_scalar("SHOW max_connections")
        .fetch_one(&mut probe)
        .await?;
    probe.close().await?;
    let max_connections: u64 = max
        .parse()
        .map_err(|_| ShopError::Internal(format!("max_connections is `{max}`")))?;
    let needed = cfg.expected_instances as u64 * cfg.pool_size as u64;
    if needed > max_connections {
        return Err(ShopError::TooManyConnections {
            instances: cfg.expected_instances,
            pool_size: cfg.pool_size,
            needed,
            max_connections,
            server: server.to_string(),
        });
    }
    PgPoolOptions::new()
        .max_connections(cfg.pool_size)
        .acquire_timeout(timeout)
        .connect_with(opts)
        .await
        .map_err(|e| ShopError::connect(what, url, &e))
}
