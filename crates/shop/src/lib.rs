//! The reference stateless shop service (axum) and its state tier: SQLite, PostgreSQL +
//! replicas, Redis, sharding.
//!
//! An instance keeps no state of its own between requests (except with the
//! demonstration-only `--sessions memory`): users, carts, orders, sessions, cache entries
//! and read-your-writes marks live in the database or Redis, so any instance serves any
//! user. Start-up is: validate the config, connect (refusing bad connection math),
//! migrate and seed, then serve until the shutdown token fires. See ARCHITECTURE.md.

pub mod admin;
pub mod cache;
pub mod catalog;
pub mod client_addr;
pub mod config;
pub mod db;
pub mod error;
pub mod hashing;
pub mod http;
pub mod jobs;
pub mod keys;
pub mod marks;
pub mod metrics;
pub mod reconcile;
pub mod redis_conn;
pub mod ryw;
pub mod schema;
pub mod secret;
pub mod serve;
pub mod sessions;
pub mod shard;
pub mod userdata;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use config::{CacheKind, SessionKind, ShopConfig};
pub use error::{AppError, ShopError};
pub use http::{AppState, app, metrics_app};

use cache::{CacheAside, CacheBackend};
use db::Db;
use marks::MarkStore;
use metrics::Metrics;
use redis_conn::RedisConn;
use sessions::SessionStore;

/// `hostname-pid`, the default instance id.
pub fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}-{}", std::process::id())
}

/// Connects every store and builds the shared state of one instance; spawns its
/// background tasks (stopped by `state.background`). Must run inside a tokio runtime.
pub async fn build_state(cfg: &ShopConfig) -> Result<Arc<AppState>, ShopError> {
    cfg.validate()?;
    // The key is checked (or created) before anything connects: a bad key file refuses
    // the start with the flag named.
    let secret = match secret::jwt_key(cfg)? {
        Some((key, source)) => {
            match &source {
                secret::KeySource::Configured => {
                    tracing::info!("JWT key from --jwt-secret / {}", secret::SECRET_ENV)
                }
                secret::KeySource::File(p) => {
                    tracing::info!(file = %p.display(), "JWT key from the deployment's key file")
                }
                secret::KeySource::Generated(p) => tracing::info!(
                    file = %p.display(),
                    "generated this deployment's JWT key (every instance reads this file)"
                ),
            }
            key
        }
        None => Vec::new(),
    };
    let hash_permits = match cfg.hash_concurrency {
        0 => hashing::permits_for(
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            cfg.hash_memory_budget_mib,
        ),
        n => n,
    };
    let hasher = hashing::Hasher::new(hash_permits)?;
    tracing::info!(
        permits = hash_permits,
        mib_each = hashing::HASH_MEMORY_MIB,
        "password hashing bounded"
    );
    if cfg.sessions == SessionKind::Memory {
        for _ in 0..3 {
            tracing::warn!(
                "!!! --sessions memory: sessions live in THIS PROCESS ONLY. Behind a load balancer \
                 users are logged out whenever another instance serves them, and every session is \
                 lost on restart. This mode exists only to demonstrate the anti-pattern. !!!"
            );
        }
    }
    let metrics = Arc::new(Metrics::default());
    let timeout = Duration::from_millis(cfg.store_timeout_ms);
    // Read and validate the shard map before touching any database.
    let shard_map = match &cfg.shard_map {
        Some(path) => Some(userdata::ShardedUserData::load_map(path)?),
        None => None,
    };
    let db = Db::connect(cfg, metrics.clone()).await?;
    jobs::ensure_tables(&db).await?;
    let shop_jobs = jobs::ShopJobs::connect(cfg).await?;
    let shards = match &shard_map {
        Some(map) => {
            let s = userdata::ShardedUserData::connect(map, cfg, &metrics).await?;
            tracing::info!(
                shards = map.shards.len(),
                "carts and orders are served from the shards of the shard map"
            );
            Some(s)
        }
        None => None,
    };
    let redis = match &cfg.redis {
        Some(url) => Some(RedisConn::connect(url, timeout).await?),
        None => None,
    };
    let backend = match cfg.cache_kind() {
        CacheKind::Redis => CacheBackend::Redis(
            redis
                .clone()
                .ok_or_else(|| ShopError::Config("cache: needs --redis".into()))?,
        ),
        CacheKind::Sql => CacheBackend::Sql(db.clone()),
        CacheKind::None => CacheBackend::None,
    };
    let cache = CacheAside::new(backend, cfg.cache_ttl, metrics.clone());
    let mark_ttl_ms = (cfg.max_replica_lag_ms * 2).max(10_000);
    let marks = if !db.has_replicas() {
        MarkStore::Off
    } else if let Some(r) = &redis {
        MarkStore::Redis {
            conn: r.clone(),
            prefix: cfg.key_prefix.clone(),
            ttl_ms: mark_ttl_ms,
        }
    } else {
        MarkStore::Sql {
            db: db.clone(),
            ttl_ms: mark_ttl_ms,
        }
    };
    let sessions = SessionStore::new(
        cfg.sessions,
        &secret,
        cfg.session_ttl_s,
        redis.clone(),
        &cfg.key_prefix,
        db.clone(),
    )?;
    let background = CancellationToken::new();
    tokio::spawn(db.clone().run_replica_poller(
        Duration::from_millis(cfg.replica_poll_ms),
        background.clone(),
    ));
    let instance_id = if cfg.instance_id.is_empty() {
        default_instance_id()
    } else {
        cfg.instance_id.clone()
    };
    let state = Arc::new(AppState {
        instance_id,
        db,
        shards,
        sessions,
        cache,
        marks,
        metrics,
        redis,
        hasher,
        trusted_proxies: client_addr::TrustedProxies::new(&cfg.trusted_proxies),
        key_prefix: cfg.key_prefix.clone(),
        max_body_bytes: cfg.max_body_bytes,
        background,
        jobs: shop_jobs,
    });
    // Sharded checkouts leave stock reservations to reconcile after a crash; with a queue
    // the workers schedule that, inline nobody else would.
    if state.shards.is_some() && matches!(state.jobs, jobs::ShopJobs::Inline { .. }) {
        tokio::spawn(reconcile::run_in_process(
            state.clone(),
            cfg.stock_lease_ms,
            Duration::from_millis(cfg.reconcile_interval_ms),
            state.background.clone(),
        ));
    }
    Ok(state)
}

/// Runs one instance until `shutdown` fires: stops accepting, lets in-flight requests
/// finish (bounded by `shutdown_grace_ms`), then returns. With `metrics_listen`, serves
/// `/metrics` on that second listener (stopped with the first).
pub async fn run(cfg: ShopConfig, shutdown: CancellationToken) -> Result<(), ShopError> {
    let state = build_state(&cfg).await?;
    let listener = tokio::net::TcpListener::bind(&cfg.listen).await?;
    let metrics_server = match &cfg.metrics_listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                ShopError::Config(format!("metrics_listen: cannot listen on {addr}: {e}"))
            })?;
            tracing::info!(metrics_listen = %l.local_addr()?, "metrics served on their own listener");
            let token = shutdown.clone();
            Some(tokio::spawn(
                axum::serve(l, metrics_app(state.clone()))
                    .with_graceful_shutdown(async move { token.cancelled().await })
                    .into_future(),
            ))
        }
        None => None,
    };
    tracing::info!(
        listen = %listener.local_addr()?,
        instance = %state.instance_id,
        db = if state.db.is_postgres() { "postgres" } else { "sqlite" },
        replicas = cfg.replica.len(),
        sessions = ?cfg.sessions,
        cache = ?cfg.cache_kind(),
        "shop serving"
    );
    let server = serve::serve(
        listener,
        app(state.clone()),
        &state.instance_id,
        shutdown.clone(),
    );
    let grace = Duration::from_millis(cfg.shutdown_grace_ms);
    let mut server = std::pin::pin!(server);
    tokio::select! {
        r = &mut server => r?,
        _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_ms = cfg.shutdown_grace_ms, "in-flight requests outlived the shutdown grace period");
        }
    }
    shutdown.cancel();
    if let Some(m) = metrics_server {
        m.abort();
    }
    state.background.cancel();
    tracing::info!("shop stopped");
    Ok(())
}
