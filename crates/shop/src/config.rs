//! The shop's configuration: one struct, parsed from flags or the `[service]` section of
//! the deployment file (the section `scaleout up` and `scaleout k8s` read; the old
//! `[shop]` section still works, with a deprecation note), validated once at start.
//!
//! Every field has a working default, so `scaleout shop` with no flags serves a seeded
//! SQLite shop. Validation names the offending field. Nothing here opens a connection or
//! reads the environment: the binary fills this in and the library trusts it afterwards.

use serde::Deserialize;

use crate::error::ShopError;

/// Where sessions live. Every choice except `Memory` keeps instances interchangeable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    /// Signed HS256 JWT carried by the client; nothing stored server side.
    Jwt,
    /// Opaque session id, session data in Redis with a TTL.
    Redis,
    /// Opaque session id, session data in the `sessions` table of the primary database.
    Sql,
    /// Opaque session id in this process's memory. The anti-pattern: a second instance
    /// does not know the session. Exists only to demonstrate that.
    Memory,
}

impl std::str::FromStr for SessionKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "jwt" => Ok(Self::Jwt),
            "redis" => Ok(Self::Redis),
            "sql" => Ok(Self::Sql),
            "memory" => Ok(Self::Memory),
            o => Err(format!(
                "unknown session store `{o}` (jwt|redis|sql|memory)"
            )),
        }
    }
}

/// Where the cache-aside values live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheKind {
    /// Redis (single node or cluster), shared by every instance.
    Redis,
    /// The `cache_entries` table of the primary database, shared by every instance.
    Sql,
    /// No cache: every read goes to the database.
    None,
}

impl std::str::FromStr for CacheKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "redis" => Ok(Self::Redis),
            "sql" => Ok(Self::Sql),
            "none" => Ok(Self::None),
            o => Err(format!("unknown cache `{o}` (redis|sql|none)")),
        }
    }
}

/// Cache TTLs per class of data, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheTtls {
    /// Catalog listings and product descriptions (name, price, category).
    pub catalog_s: u64,
    /// A user's profile (`GET /me`).
    pub profile_s: u64,
    /// A product's stock level.
    pub stock_s: u64,
}

impl Default for CacheTtls {
    fn default() -> Self {
        Self {
            catalog_s: 300,
            profile_s: 60,
            stock_s: 5,
        }
    }
}

/// Keys of the deployment file's `[service]` section that describe the deployment as a
/// whole (`scaleout up`'s and `scaleout k8s`'s `fleet::deployment::ServiceConfig`), not
/// one instance: a shop reading `[service]` skips them.
pub const DEPLOYMENT_ONLY_SERVICE_KEYS: &[&str] = &[
    "name",
    "args",
    "liveness_path",
    "image",
    "container_port",
    "service_port",
    "cpu_request_millis",
    "memory_request_mib",
    "secret",
    "metrics_port",
];

/// `[fleet] data_dir` when the file sets none (the fleet's default).
const DEFAULT_DATA_DIR: &str = "scaleout-data";

/// Configuration of one shop instance (`scaleout shop` flags or the `[service]` section).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShopConfig {
    /// Address to listen on.
    pub listen: String,
    /// Name of this instance, sent in the `x-instance-id` header of every response.
    /// Empty means `hostname-pid`.
    pub instance_id: String,
    /// Primary database: `sqlite:PATH` or `postgres://...`.
    pub db: String,
    /// PostgreSQL streaming replicas for stale-tolerant reads (PostgreSQL only).
    pub replica: Vec<String>,
    /// Redis URL; a comma-separated list of `redis://` seeds means Redis Cluster.
    pub redis: Option<String>,
    /// Session store.
    pub sessions: SessionKind,
    /// Cache backend; `None` means `redis` when `redis` is set, else `sql`.
    pub cache: Option<CacheKind>,
    /// Tokio worker threads; 0 means one per core.
    pub workers: usize,
    /// Connections per pool (the primary pool and each replica pool) in this instance.
    pub pool_size: u32,
    /// How many instances will share the database: start is refused when
    /// `expected_instances x pool_size` exceeds the server's `max_connections`.
    pub expected_instances: u32,
    /// HS256 key for JWT sessions (at least 32 bytes), e.g. from the
    /// `SCALEOUT_SHOP_JWT_SECRET` environment variable (a Kubernetes Secret). Empty means
    /// the key lives in `jwt_secret_file`. There is no built-in key.
    pub jwt_secret: String,
    /// The deployment's JWT key file, shared by every instance: read when it exists
    /// (mode 0600 or stricter, at least 32 bytes, trailing whitespace trimmed), created
    /// atomically with 32 random bytes from the OS when it does not. `None` means
    /// `<sqlite db path>.jwt-secret`, next to the database the instances share (a
    /// PostgreSQL deployment must name the file or give `jwt_secret`).
    pub jwt_secret_file: Option<String>,
    /// Lifetime of a JWT or a stored session, in seconds.
    pub session_ttl_s: u64,
    /// Products generated into a fresh (empty) database.
    pub seed_products: u64,
    /// Seed of the catalog generator.
    pub catalog_seed: u64,
    /// Replicas whose replay lags the primary by more than this are skipped.
    pub max_replica_lag_ms: u64,
    /// How often each replica's replay position is sampled.
    pub replica_poll_ms: u64,
    /// Address of the separate `/metrics` listener; `None` serves no metrics. The public
    /// listener never serves `/metrics` (so a balancer in front cannot expose it).
    pub metrics_listen: Option<String>,
    /// Password hashes (signup, login) allowed to run at once; 0 means
    /// `min(2 x cores, hash_memory_budget_mib / 19)`. Excess requests get 503 with
    /// `Retry-After` at once instead of queueing (each argon2id hash holds 19 MiB).
    pub hash_concurrency: usize,
    /// Memory all concurrent password hashes together may use, in MiB (sizes the
    /// default `hash_concurrency`).
    pub hash_memory_budget_mib: u64,
    /// Proxies (CIDR ranges, e.g. the balancer's `127.0.0.1/32`) whose
    /// `X-Forwarded-For` names the client for the per-client password-hash shares.
    /// Empty (default): the TCP peer is the client and the header is ignored.
    pub trusted_proxies: Vec<String>,
    /// Cache TTLs per class.
    pub cache_ttl: CacheTtls,
    /// Prefix of every Redis key and SQL cache key of this shop (lets several shops share
    /// one Redis). Must not contain `{` or `}`.
    pub key_prefix: String,
    /// Largest accepted request body, in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Timeout of every database and Redis call, in milliseconds.
    pub store_timeout_ms: u64,
    /// Grace period for in-flight requests at shutdown, in milliseconds.
    pub shutdown_grace_ms: u64,
    /// Shard map file (TOML, see `shop::shard::config`). When set, each user's carts,
    /// orders and order items live on the shard that owns the user; users, products,
    /// sessions and cache entries stay on `db`. Unset: everything lives on `db`.
    pub shard_map: Option<String>,
    /// Where checkout's after-commit work (order confirmation) runs: `inline` in the
    /// request (default: needs no worker, so no order waits on a worker nobody started)
    /// or `queue`, enqueued on `jobs_url` for `--role worker` processes.
    pub jobs: crate::jobs::JobsMode,
    /// The shared job queue: `redis://...`, `postgres://...` or `sqlite:PATH`. Required
    /// with `jobs = queue` and for `--role worker`.
    pub jobs_url: Option<String>,
    /// A job not acknowledged within this many ms is redelivered to another worker.
    pub jobs_visibility_timeout_ms: u64,
    /// Simulated confirmation e-mail, in ms, spent by whoever confirms (the request
    /// inline, the worker with a queue); must be below `jobs_visibility_timeout_ms`.
    pub jobs_email_delay_ms: u64,
    /// Jobs one worker handles at once.
    pub jobs_concurrency: usize,
    /// The queue's name, `[a-z0-9_]` (tables `jobs_<name>`, Redis keys `jobs:{<name>}:…`):
    /// web instances and workers of one shop must agree on it.
    pub jobs_queue: String,
    /// With `shard_map`: a stock reservation whose order has not committed on its shard
    /// after this many ms is resolved by the reconciliation job (stock given back, the
    /// late order refused). Longer than any checkout takes; a shorter one only turns slow
    /// checkouts into 409s, never loses or over-sells stock.
    pub stock_lease_ms: u64,
    /// With `shard_map`: how often the reconciliation runs (in each `--role worker` as a
    /// job on the queue; in web instances with `jobs = inline`, in process).
    pub reconcile_interval_ms: u64,
}

impl Default for ShopConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            instance_id: String::new(),
            db: "sqlite:scaleout-shop.db".into(),
            replica: Vec::new(),
            redis: None,
            sessions: SessionKind::Jwt,
            cache: None,
            workers: 0,
            pool_size: 8,
            expected_instances: 1,
            jwt_secret: String::new(),
            jwt_secret_file: None,
            session_ttl_s: 3600,
            seed_products: 1000,
            catalog_seed: 42,
            max_replica_lag_ms: 1000,
            replica_poll_ms: 50,
            metrics_listen: None,
            hash_concurrency: 0,
            hash_memory_budget_mib: 128,
            trusted_proxies: Vec::new(),
            cache_ttl: CacheTtls::default(),
            key_prefix: "shop".into(),
            max_body_bytes: 64 * 1024,
            store_timeout_ms: 5000,
            shutdown_grace_ms: 10_000,
            shard_map: None,
            jobs: crate::jobs::JobsMode::Inline,
            jobs_url: None,
            jobs_visibility_timeout_ms: 30_000,
            jobs_email_delay_ms: 0,
            jobs_concurrency: 8,
            jobs_queue: crate::jobs::QUEUE_NAME.into(),
            stock_lease_ms: 60_000,
            reconcile_interval_ms: 30_000,
        }
    }
}

/// The database kind named by a `--db` URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// `sqlite:PATH`
    Sqlite,
    /// `postgres://...` or `postgresql://...`
    Postgres,
}

impl ShopConfig {
    /// Parses the service section of a TOML document (see [`ShopConfig::from_toml_noting`]),
    /// dropping the deprecation notes.
    pub fn from_toml(text: &str) -> Result<Self, ShopError> {
        Self::from_toml_noting(text).map(|(c, _)| c)
    }

    /// Parses the `[service]` section of a deployment file, the one `scaleout up` reads
    /// (other sections belong to other crates), or the deprecated `[shop]` section, which
    /// yields a note saying so. In `[service]`, the keys that describe the deployment
    /// rather than one instance ([`DEPLOYMENT_ONLY_SERVICE_KEYS`]) are skipped, an empty
    /// `sessions` means the default, and `{data_dir}` in `db` is `[fleet] data_dir`
    /// (default `scaleout-data`), as `up` fills it in. Unknown keys are refused by name.
    pub fn from_toml_noting(text: &str) -> Result<(Self, Vec<String>), ShopError> {
        let mut doc: toml::Table =
            toml::from_str(text).map_err(|e| ShopError::Config(format!("config file: {e}")))?;
        let parse = |section: &str, v: toml::Value| -> Result<Self, ShopError> {
            v.try_into()
                .map_err(|e| ShopError::Config(format!("[{section}]: {e}")))
        };
        match (doc.remove("service"), doc.remove("shop")) {
            (Some(_), Some(_)) => Err(ShopError::Config(
                "config file: both [service] and [shop]; move the [shop] keys into [service] \
                 (the section `scaleout up` reads; [shop] is deprecated)"
                    .into(),
            )),
            (None, Some(shop)) => Ok((
                parse("shop", shop)?,
                vec![
                    "the [shop] config section is deprecated and will be removed in the next \
                     release; rename it [service] (the section `scaleout up` and `scaleout k8s` \
                     read)"
                        .into(),
                ],
            )),
            (Some(toml::Value::Table(mut service)), None) => {
                for key in DEPLOYMENT_ONLY_SERVICE_KEYS {
                    service.remove(*key);
                }
                if service.get("sessions").and_then(|v| v.as_str()) == Some("") {
                    service.remove("sessions");
                }
                if let Some(toml::Value::String(db)) = service.get_mut("db")
                    && db.contains("{data_dir}")
                {
                    let data_dir = doc
                        .get("fleet")
                        .and_then(|f| f.get("data_dir"))
                        .and_then(|d| d.as_str())
                        .unwrap_or(DEFAULT_DATA_DIR);
                    *db = db.replace("{data_dir}", data_dir);
                }
                Ok((parse("service", toml::Value::Table(service))?, Vec::new()))
            }
            (Some(_), None) => Err(ShopError::Config(
                "config file: `service` must be a table ([service])".into(),
            )),
            (None, None) => Ok((Self::default(), Vec::new())),
        }
    }

    /// The cache backend after defaults.
    pub fn cache_kind(&self) -> CacheKind {
        self.cache.unwrap_or(if self.redis.is_some() {
            CacheKind::Redis
        } else {
            CacheKind::Sql
        })
    }

    /// The kind of the primary database.
    pub fn db_kind(&self) -> Result<DbKind, ShopError> {
        db_kind(&self.db).ok_or_else(|| {
            ShopError::Config(format!(
                "db: `{}` is neither sqlite:PATH nor postgres://...",
                self.db
            ))
        })
    }

    /// Checks every field once; the error names the field.
    pub fn validate(&self) -> Result<(), ShopError> {
        let bad = |field: &str, why: String| Err(ShopError::Config(format!("{field}: {why}")));
        crate::jobs::validate(self)?;
        crate::reconcile::validate(self)?;
        if self.jobs_concurrency == 0 || self.jobs_concurrency > 10_000 {
            return bad("jobs_concurrency", "must be in 1..=10000".into());
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(
                "listen",
                format!("`{}` is not an IP:port address", self.listen),
            );
        }
        if let Some(m) = &self.metrics_listen
            && m.parse::<std::net::SocketAddr>().is_err()
        {
            return bad("metrics_listen", format!("`{m}` is not an IP:port address"));
        }
        if self.hash_concurrency > 1024 {
            return bad(
                "hash_concurrency",
                "must be within 0..=1024 (0: sized from memory)".into(),
            );
        }
        for (i, r) in self.trusted_proxies.iter().enumerate() {
            if let Err(why) = crate::client_addr::Cidr::parse(r) {
                return bad(&format!("trusted_proxies[{i}]"), why);
            }
        }
        if self.hash_memory_budget_mib < crate::hashing::HASH_MEMORY_MIB {
            return bad(
                "hash_memory_budget_mib",
                format!(
                    "must be at least {} (one hash)",
                    crate::hashing::HASH_MEMORY_MIB
                ),
            );
        }
        if !self.jwt_secret.is_empty()
            && self.jwt_secret.trim_end().len() < crate::secret::MIN_KEY_BYTES
        {
            return bad(
                "jwt_secret",
                format!(
                    "shorter than {} bytes (--jwt-secret / SCALEOUT_SHOP_JWT_SECRET)",
                    crate::secret::MIN_KEY_BYTES
                ),
            );
        }
        let kind = self.db_kind()?;
        for r in &self.replica {
            if db_kind(r) != Some(DbKind::Postgres) {
                return bad("replica", format!("`{r}` is not a postgres:// URL"));
            }
        }
        if !self.replica.is_empty() && kind != DbKind::Postgres {
            return bad(
                "replica",
                "replicas need a PostgreSQL primary (--db postgres://...)".into(),
            );
        }
        if let Some(r) = &self.redis
            && r.split(',')
                .any(|u| !(u.trim().starts_with("redis://") || u.trim().starts_with("rediss://")))
        {
            return bad(
                "redis",
                format!("`{r}` is not redis://HOST:PORT (comma list for a cluster)"),
            );
        }
        if self.sessions == SessionKind::Redis && self.redis.is_none() {
            return bad("sessions", "`redis` sessions need --redis".into());
        }
        if self.cache_kind() == CacheKind::Redis && self.redis.is_none() {
            return bad("cache", "`redis` cache needs --redis".into());
        }
        if self.pool_size == 0 || self.pool_size > 1000 {
            return bad(
                "pool_size",
                format!("{} is outside 1..=1000", self.pool_size),
            );
        }
        if self.expected_instances == 0 {
            return bad("expected_instances", "must be at least 1".into());
        }
        if self.workers > 1024 {
            return bad("workers", format!("{} is more than 1024", self.workers));
        }
        // Upper bounds keep expiry arithmetic (now + ttl) far from overflow and reject
        // values no production user means (a session for more than a year).
        if self.session_ttl_s == 0 || self.session_ttl_s > 366 * 86_400 {
            return bad(
                "session_ttl_s",
                "must be within 1..=31622400 (a year)".into(),
            );
        }
        if self.replica_poll_ms == 0 || self.replica_poll_ms > 60_000 {
            return bad("replica_poll_ms", "must be within 1..=60000".into());
        }
        if self.max_body_bytes < 256 {
            return bad("max_body_bytes", "must be at least 256".into());
        }
        if self.store_timeout_ms == 0 {
            return bad("store_timeout_ms", "must be at least 1".into());
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}']) {
            return bad(
                "key_prefix",
                "must be non-empty and contain no `{` or `}`".into(),
            );
        }
        if let Some(path) = &self.shard_map
            && path.trim().is_empty()
        {
            return bad("shard_map", "must be a file path".into());
        }
        let t = self.cache_ttl;
        for (name, v) in [
            ("catalog_s", t.catalog_s),
            ("profile_s", t.profile_s),
            ("stock_s", t.stock_s),
        ] {
            if v == 0 || v > 30 * 86_400 {
                return bad(
                    &format!("cache_ttl.{name}"),
                    "must be within 1..=2592000 (30 days)".into(),
                );
            }
        }
        Ok(())
    }
}

fn db_kind(url: &str) -> Option<DbKind> {
    if url.starts_with("sqlite:") {
        Some(DbKind::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Some(DbKind::Postgres)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_section_is_read_and_shop_is_deprecated() {
        // The deployment file `scaleout up` reads: deployment-only keys skipped, the
        // `{data_dir}` placeholder filled the way `up` fills it.
        let (c, notes) = ShopConfig::from_toml_noting(
            "[fleet]\ndata_dir = \"/srv/x\"\n[service]\nname = \"shop\"\nimage = \"i:1\"\n\
             db = \"sqlite:{data_dir}/shop.db\"\nsessions = \"\"\nworkers = 2\n\
             container_port = 8080\nservice_port = 80\npool_size = 3\n",
        )
        .unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(c.db, "sqlite:/srv/x/shop.db");
        assert_eq!(c.sessions, SessionKind::Jwt);
        assert_eq!((c.workers, c.pool_size), (2, 3));
        let (c, _) =
            ShopConfig::from_toml_noting("[service]\ndb = \"sqlite:{data_dir}/a.db\"\n").unwrap();
        assert_eq!(c.db, "sqlite:scaleout-data/a.db");
        // A typo in [service] is still named.
        let e = ShopConfig::from_toml("[service]\npool_sise = 3\n").unwrap_err();
        assert!(e.to_string().contains("pool_sise"), "{e}");
        // The old section works, with a note.
        let (c, notes) = ShopConfig::from_toml_noting("[shop]\npool_size = 4\n").unwrap();
        assert_eq!(c.pool_size, 4);
        assert!(notes[0].contains("deprecated"), "{notes:?}");
        // Both at once is ambiguous.
        let e = ShopConfig::from_toml("[service]\n[shop]\n").unwrap_err();
        assert!(e.to_string().contains("both [service] and [shop]"), "{e}");
    }

    #[test]
    fn toml_unknown_field_is_named() {
        let e = ShopConfig::from_toml("[shop]\npool_sise = 3\n").unwrap_err();
        assert!(e.to_string().contains("pool_sise"), "{e}");
    }

    #[test]
    fn toml_fields_parse_and_default() {
        let c = ShopConfig::from_toml(
            "[shop]\npool_size = 3\nsessions = \"sql\"\n[shop.cache_ttl]\nstock_s = 2\n",
        )
        .unwrap();
        assert_eq!(c.pool_size, 3);
        assert_eq!(c.sessions, SessionKind::Sql);
        assert_eq!(c.cache_ttl.stock_s, 2);
        assert_eq!(c.cache_ttl.catalog_s, 300);
        c.validate().unwrap();
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = ShopConfig {
            sessions: SessionKind::Redis,
            ..ShopConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("invalid config: sessions")
        );
        c.sessions = SessionKind::Jwt;
        c.replica = vec!["postgres://x/y".into()];
        assert!(c.validate().unwrap_err().to_string().contains("replica"));
        c.replica.clear();
        c.pool_size = 0;
        assert!(c.validate().unwrap_err().to_string().contains("pool_size"));
        // TTLs are bounded above too: expiry arithmetic must never overflow.
        let c = ShopConfig {
            session_ttl_s: u64::MAX,
            ..ShopConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("session_ttl_s")
        );
        let mut c = ShopConfig::default();
        c.cache_ttl.stock_s = u64::MAX / 1000;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("cache_ttl.stock_s")
        );
    }

    #[test]
    fn shard_map_key_parses_and_an_empty_path_is_named() {
        let c = ShopConfig::from_toml("[shop]\nshard_map = \"/etc/shop/shards.toml\"\n").unwrap();
        assert_eq!(c.shard_map.as_deref(), Some("/etc/shop/shards.toml"));
        c.validate().unwrap();
        let c = ShopConfig::from_toml("[shop]\nshard_map = \" \"\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("shard_map"));
        assert_eq!(ShopConfig::default().shard_map, None);
    }

    #[test]
    fn cache_defaults_follow_redis() {
        let mut c = ShopConfig::default();
        assert_eq!(c.cache_kind(), CacheKind::Sql);
        c.redis = Some("redis://127.0.0.1:6379".into());
        assert_eq!(c.cache_kind(), CacheKind::Redis);
    }
}
