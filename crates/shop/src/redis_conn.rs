//! One Redis handle for a single node or a cluster, with a timeout on every call.
//!
//! `--redis redis://host:port` opens a multiplexed `ConnectionManager` (reconnects by
//! itself); a comma-separated list of seeds opens a cluster connection (redis-rs
//! cluster-async), which follows MOVED/ASK redirects. Callers build keys with
//! [`crate::keys`] so that one user's keys share a hash tag and land in one slot. This
//! module must never block: every call is bounded by the store timeout.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue};

use crate::error::{ShopError, redact_url};

#[derive(Clone)]
enum Inner {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// A cloneable Redis connection (single node or cluster).
#[derive(Clone)]
pub struct RedisConn {
    inner: Inner,
    timeout: Duration,
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner {
            Inner::Single(_) => "single",
            Inner::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisConn").field("kind", &kind).finish()
    }
}

/// The error of a store that did not answer within `timeout`.
fn no_answer(what: &str, url: &str, timeout: Duration) -> ShopError {
    ShopError::Connect {
        what: what.into(),
        url: redact_url(url),
        reason: format!("no answer within {} ms", timeout.as_millis()),
    }
}

impl RedisConn {
    /// Connects to `url` (a comma-separated list means a cluster), bounded by `timeout`.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self, ShopError> {
        let seeds: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let inner = if seeds.len() > 1 {
            let client =
                redis::cluster::ClusterClient::builder(seeds.iter().map(|s| s.to_string()))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .build()?;
            let conn = match tokio::time::timeout(timeout, client.get_async_connection()).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return Err(ShopError::connect("Redis Cluster", url, &e)),
                Err(_) => return Err(no_answer("Redis Cluster", url, timeout)),
            };
            Inner::Cluster(conn)
        } else {
            let client = redis::Client::open(seeds.first().copied().unwrap_or(url))
                .map_err(|e| ShopError::Config(format!("redis: {}: {e}", redact_url(url))))?;
            // One plain connection first: the connection manager retries a refused
            // port with back-off until the timeout, which would hide the reason.
            match tokio::time::timeout(timeout, client.get_multiplexed_async_connection()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(ShopError::connect("Redis", url, &e)),
                Err(_) => return Err(no_answer("Redis", url, timeout)),
            }
            let conn = match tokio::time::timeout(timeout, ConnectionManager::new(client)).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return Err(ShopError::connect("Redis", url, &e)),
                Err(_) => return Err(no_answer("Redis", url, timeout)),
            };
            Inner::Single(conn)
        };
        let me = Self { inner, timeout };
        let _: String = me.query(&redis::cmd("PING")).await?;
        Ok(me)
    }

    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner, Inner::Cluster(_))
    }

    /// Runs one command, bounded by the store timeout.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, ShopError> {
        let fut = async {
            match &self.inner {
                Inner::Single(c) => cmd.query_async::<T>(&mut c.clone()).await,
                Inner::Cluster(c) => cmd.query_async::<T>(&mut c.clone()).await,
            }
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| ShopError::Timeout("redis call"))?
            .map_err(ShopError::Redis)
    }

    /// `GET key`.
    pub async fn get(&self, key: &str) -> Result<Option<String>, ShopError> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    /// `SET key value PX ttl_ms`.
    pub async fn set_px(&self, key: &str, value: &str, ttl_ms: u64) -> Result<(), ShopError> {
        self.query::<()>(redis::cmd("SET").arg(key).arg(value).arg("PX").arg(ttl_ms))
            .await
    }

    /// `SET key value NX PX ttl_ms`: true when this call created the key.
    pub async fn set_nx_px(&self, key: &str, value: &str, ttl_ms: u64) -> Result<bool, ShopError> {
        let r: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms),
            )
            .await?;
        Ok(r.is_some())
    }

    /// `DEL key` (one key per call, so it works across cluster slots).
    pub async fn del(&self, key: &str) -> Result<(), ShopError> {
        self.query::<i64>(redis::cmd("DEL").arg(key))
            .await
            .map(|_| ())
    }
}
