//! Cache-aside over Redis (or the SQL `cache_entries` table), with TTLs per class and
//! stampede protection.
//!
//! Read: look the key up; on a miss, take a short lock (`SET key:lock NX PX`), load from
//! the primary, store with the class TTL, release. Requests that miss while another holds
//! the lock poll the key briefly instead of querying the database, so 200 simultaneous
//! misses on one key cost one query (a few at worst: if the lock holder is slower than the
//! wait budget, waiters load for themselves, which bounds latency).
//! Write: the caller commits, then deletes the affected keys ([`CacheAside::invalidate`]);
//! the TTL is the backstop for the rare race where a slow filler writes back a value read
//! before the commit. Cache failures never fail a request: they are logged and the
//! database answers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::CacheTtls;
use crate::db::Db;
use crate::error::{AppError, ShopError};
use crate::metrics::Metrics;
use crate::redis_conn::RedisConn;
use crate::{keys, write_tx};

/// The class of a cached value; decides its TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheClass {
    /// Catalog listings.
    Catalog,
    /// One product's description.
    Product,
    /// One product's stock.
    Stock,
    /// A user's profile.
    Profile,
}

impl CacheClass {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            CacheClass::Catalog => "catalog",
            CacheClass::Product => "product",
            CacheClass::Stock => "stock",
            CacheClass::Profile => "profile",
        }
    }

    fn ttl_ms(self, t: &CacheTtls) -> u64 {
        1000 * match self {
            CacheClass::Catalog | CacheClass::Product => t.catalog_s,
            CacheClass::Stock => t.stock_s,
            CacheClass::Profile => t.profile_s,
        }
    }
}

/// Where cached values live.
#[derive(Debug)]
pub enum CacheBackend {
    /// Redis (single node or cluster).
    Redis(RedisConn),
    /// The `cache_entries` table of the primary.
    Sql(Arc<Db>),
    /// No cache.
    None,
}

/// How long a stampede lock lives (the longest a crashed filler can block others).
pub const LOCK_TTL_MS: u64 = 2_000;
/// How long a waiter polls for the filler's value before loading by itself.
pub const WAIT_BUDGET_MS: u64 = 1_500;
/// Interval between a waiter's polls.
pub const WAIT_POLL_MS: u64 = 5;

/// The cache-aside layer of one instance.
#[derive(Debug)]
pub struct CacheAside {
    backend: CacheBackend,
    ttls: CacheTtls,
    metrics: Arc<Metrics>,
    stampede_protection: bool,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl CacheAside {
    /// A cache over `backend`.
    pub fn new(backend: CacheBackend, ttls: CacheTtls, metrics: Arc<Metrics>) -> Self {
        Self {
            backend,
            ttls,
            metrics,
            stampede_protection: true,
        }
    }

    /// Turns stampede protection off (for the benchmark that shows what it saves).
    pub fn without_stampede_protection(mut self) -> Self {
        self.stampede_protection = false;
        self
    }

    /// Whether there is a cache at all.
    pub fn enabled(&self) -> bool {
        !matches!(self.backend, CacheBackend::None)
    }

    async fn raw_get(&self, key: &str) -> Result<Option<String>, ShopError> {
        match &self.backend {
            CacheBackend::Redis(c) => c.get(key).await,
            CacheBackend::Sql(db) => Ok(crate::on_pool!(db.primary(), p => {
                sqlx::query_scalar("SELECT value FROM cache_entries WHERE key = $1 AND expires_at > $2")
                    .bind(key)
                    .bind(now_ms() as i64)
                    .fetch_optional(p)
                    .await?
            })),
            CacheBackend::None => Ok(None),
        }
    }

    async fn raw_set(&self, key: &str, value: &str, ttl_ms: u64) -> Result<(), ShopError> {
        match &self.backend {
            CacheBackend::Redis(c) => c.set_px(key, value, ttl_ms).await,
            CacheBackend::Sql(db) => {
                let exp = (now_ms() + ttl_ms) as i64;
                write_tx!(db, tx => {
                    sqlx::query(
                        "INSERT INTO cache_entries (key, value, expires_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                    )
                    .bind(key)
                    .bind(value)
                    .bind(exp)
                    .execute(&mut *tx)
                    .await?;
                });
                Ok(())
            }
            CacheBackend::None => Ok(()),
        }
    }

    /// Takes the lock for `key`: true when this caller holds it now.
    async fn try_lock(&self, key: &str) -> Result<bool, ShopError> {
        let lock = keys::lock(key);
        match &self.backend {
            CacheBackend::Redis(c) => c.set_nx_px(&lock, "1", LOCK_TTL_MS).await,
            CacheBackend::Sql(db) => {
                let now = now_ms() as i64;
                let n = write_tx!(db, tx => {
                    sqlx::query(
                        "INSERT INTO cache_entries (key, value, expires_at) VALUES ($1, '', $2) \
                         ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at \
                         WHERE cache_entries.expires_at <= $3",
                    )
                    .bind(&lock)
                    .bind(now + LOCK_TTL_MS as i64)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                });
                Ok(n == 1)
            }
            CacheBackend::None => Ok(true),
        }
    }

    async fn raw_del(&self, key: &str) -> Result<(), ShopError> {
        match &self.backend {
            CacheBackend::Redis(c) => c.del(key).await,
            CacheBackend::Sql(db) => {
                write_tx!(db, tx => {
                    sqlx::query("DELETE FROM cache_entries WHERE key = $1")
                        .bind(key)
                        .execute(&mut *tx)
                        .await?;
                });
                Ok(())
            }
            CacheBackend::None => Ok(()),
        }
    }

    /// The cached value of `key`, or `load()`'s result (then cached with the class TTL).
    pub async fn get_or_load<T, F, Fut>(
        &self,
        class: CacheClass,
        key: &str,
        load: F,
    ) -> Result<T, AppError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, AppError>>,
    {
        if !self.enabled() {
            return load().await;
        }
        match self.raw_get(key).await {
            Ok(Some(v)) => {
                if let Ok(t) = serde_json::from_str(&v) {
                    self.metrics.cache_hit(class.label());
                    return Ok(t);
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cache read failed; reading the database");
                self.metrics.cache_miss(class.label());
                return load().await;
            }
        }
        self.metrics.cache_miss(class.label());
        let locked = if self.stampede_protection {
            match self.try_lock(key).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cache lock failed; loading without it");
                    true
                }
            }
        } else {
            true
        };
        if !locked {
            // Someone else is loading this key: wait for their value, bounded.
            let polls = WAIT_BUDGET_MS / WAIT_POLL_MS;
            for _ in 0..polls {
                tokio::time::sleep(Duration::from_millis(WAIT_POLL_MS)).await;
                if let Ok(Some(v)) = self.raw_get(key).await
                    && let Ok(t) = serde_json::from_str(&v)
                {
                    self.metrics.stampede_wait();
                    return Ok(t);
                }
            }
        }
        let result = load().await;
        if let Ok(value) = &result {
            match serde_json::to_string(value) {
                Ok(s) => {
                    if let Err(e) = self.raw_set(key, &s, class.ttl_ms(&self.ttls)).await {
                        tracing::warn!(error = %e, "cache fill failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cache value did not serialise"),
            }
        }
        if locked
            && self.stampede_protection
            && let Err(e) = self.raw_del(&keys::lock(key)).await
        {
            tracing::warn!(error = %e, "cache unlock failed; the lock expires by itself");
        }
        result
    }

    /// Deletes `keys` (call after the write's commit). Failures are logged: the TTL
    /// bounds how long a stale value can live.
    pub async fn invalidate(&self, keys: &[String]) {
        for k in keys {
            if let Err(e) = self.raw_del(k).await {
                tracing::warn!(error = %e, key = %k, "cache invalidation failed; TTL will expire it");
            }
        }
    }

    /// Whether the cache answers (for `/readyz`).
    pub async fn ping(&self) -> bool {
        match &self.backend {
            CacheBackend::Redis(c) => c.query::<String>(&redis::cmd("PING")).await.is_ok(),
            CacheBackend::Sql(_) => self.raw_get("__ping__").await.is_ok(),
            CacheBackend::None => true,
        }
    }
}
