//! The rule table: every rule's id, severity, category, why it breaks scale-out and the
//! stateless fix. Detection lives in `scan::*`; this module is data only and must never
//! look at code.
//!
//! One severity scale, applied the same way to every rule in every language: a rule's
//! severity is its category's (`Category::severity`, enforced by a test), and a finding
//! moves off it only through one shared adjustment made in `scan`: a global-state store
//! whose name says it holds per-user data (sessions, carts, users, tokens...) is raised
//! to high.
//!
//! | severity | what a second instance does to it | categories |
//! |---|---|---|
//! | high | users lose or split data or messages | sessions, local-files, database, queues, pubsub, locks |
//! | medium | instances disagree or repeat work | global-state, caches, jobs, rate-limits, search-index, flags |
//! | low | duplicated but harmless | none at present (kept for `--min-severity`) |
//!
//! Confidence is separate: how sure the audit is that the state exists as deployed
//! (high: said explicitly; medium: follows from a default; low: a commented default in
//! an example file, or a default that only matters if a feature is used).

use serde::Serialize;

/// How much a finding matters when a second instance starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Duplicated per instance but harmless to correctness. Does not make the verdict
    /// stateful.
    Low,
    /// Inconsistent across instances (stale caches, limits multiplied by N, jobs run N times).
    Medium,
    /// Breaks users outright behind a balancer (lost sessions, carts, uploads, queued work).
    High,
}

impl Severity {
    /// Lowercase name, as used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }

    /// Parses `low`, `medium` or `high`.
    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "low" => Some(Severity::Low),
            "medium" => Some(Severity::Medium),
            "high" => Some(Severity::High),
            _ => None,
        }
    }

    /// The SARIF `level` for this severity.
    pub fn sarif_level(self) -> &'static str {
        match self {
            Severity::Low => "note",
            Severity::Medium => "warning",
            Severity::High => "error",
        }
    }
}

/// How sure the audit is that the state exists in the deployed application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    /// A commented-out default in an example config file, or a guess from names. Does
    /// not make the verdict stateful.
    Low,
    /// Follows from a default: an option left out (no `store` given), a key absent so the
    /// code's fallback applies.
    Medium,
    /// Said explicitly by the code or the config.
    High,
}

impl Confidence {
    /// Lowercase name, as used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }
}

/// What kind of per-instance state a rule finds; the verdict counts findings by category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// Session stores in process memory or on local disk.
    Sessions,
    /// Module-level, global or static mutable collections used as stores.
    GlobalState,
    /// In-process caches (cache libraries, framework cache backends).
    Caches,
    /// User data written to the local file system.
    LocalFiles,
    /// Embedded databases (SQLite, H2) holding the application's data in a local file or
    /// in memory.
    Database,
    /// Timers and schedulers doing shared work in every instance.
    Jobs,
    /// In-process queues of work that die with the process.
    Queues,
    /// In-memory rate limiters and counters.
    RateLimits,
    /// Pub/sub and fan-out kept in process: WebSocket rooms, SSE listeners, broadcast
    /// channels, channel layers.
    PubSub,
    /// Lock tables and global locks that exclude only within one process.
    Locks,
    /// Search indexes on local disk or in memory.
    SearchIndex,
    /// Operational flags (maintenance mode) kept in a local file.
    Flags,
}

impl Category {
    /// Kebab-case name, as printed in the verdict.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Sessions => "sessions",
            Category::GlobalState => "global-state",
            Category::Caches => "caches",
            Category::LocalFiles => "local-files",
            Category::Database => "database",
            Category::Jobs => "jobs",
            Category::Queues => "queues",
            Category::RateLimits => "rate-limits",
            Category::PubSub => "pubsub",
            Category::Locks => "locks",
            Category::SearchIndex => "search-index",
            Category::Flags => "flags",
        }
    }

    /// The severity of every rule in this category (the one scale in the module docs).
    pub const fn severity(self) -> Severity {
        match self {
            Category::Sessions
            | Category::LocalFiles
            | Category::Database
            | Category::Queues
            | Category::PubSub
            | Category::Locks => Severity::High,
            Category::GlobalState
            | Category::Caches
            | Category::Jobs
            | Category::RateLimits
            | Category::SearchIndex
            | Category::Flags => Severity::Medium,
        }
    }
}

/// One rule: what it finds and what to do about it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rule {
    /// Stable id, e.g. `JS-SESSION-MEMORY`; used in suppressions and SARIF.
    pub id: &'static str,
    /// The language it applies to (`config` for key/value config files).
    pub language: &'static str,
    /// Kind of state.
    pub category: Category,
    /// Default severity; a finding may lower or raise it from context.
    pub severity: Severity,
    /// One-line summary.
    pub title: &'static str,
    /// Why this breaks when a second instance runs.
    pub why: &'static str,
    /// The stateless fix.
    pub fix: &'static str,
}

use Category::*;

const WHY_SESSION: &str = "Sessions live in one process (or on one disk): behind a balancer the next request lands on another instance that has never seen the session, so users are logged out or lose their cart, and every restart or deploy drops all sessions.";
const WHY_GLOBAL: &str = "Each instance holds its own copy: writes on one instance are invisible to the others, so reads disagree depending on which instance answers, and everything is lost on restart.";
const WHY_CACHE: &str = "An in-process cache is per instance: after a write on one instance the others serve stale data until expiry, hit rates drop by N with N instances, and invalidation cannot reach the other copies.";
const WHY_FILE: &str = "Files written to local disk exist on one instance only: the next request (a download, a resize job) lands elsewhere and finds nothing, and the disk is lost when the instance is replaced.";
const WHY_JOB: &str = "Every instance runs its own copy of the job: with N instances the work runs N times (duplicate e-mails, double charges, N times the load on the database).";
const WHY_RATE: &str = "Each instance counts separately: with N instances a client gets N times the limit, and counters reset on every deploy.";
const WHY_WS: &str = "Rooms and subscriptions live in one process: a message published on one instance never reaches clients connected to another.";

const FIX_SESSION: &str = "Keep sessions in a shared store (Redis, the database) or make them stateless (signed cookies / JWT with server-side revocation).";
const FIX_GLOBAL: &str = "Move the data to a shared store (Redis, the database); keep only immutable data loaded at start-up in process memory.";
const FIX_CACHE: &str = "Use a shared cache (Redis/Memcached) with cache-aside and invalidate on write, or keep the local cache only for immutable reference data with a short TTL.";
const FIX_FILE: &str = "Write user files to object storage (S3, GCS, MinIO) or a shared volume, and store only the key in the database.";
const FIX_JOB: &str = "Run scheduled work in one place (a dedicated worker, a cron job, a leader-elected scheduler), or guard each run with a shared lock (pg_advisory_lock, a Redis lock) so one instance runs it.";
const FIX_RATE: &str = "Back the limiter with a shared store (Redis) so all instances count together, or enforce limits at the balancer.";
const FIX_WS: &str = "Use a shared pub/sub adapter (Redis adapter for socket.io, Redis channel layer, Redis/PostgreSQL Action Cable adapter).";
const WHY_QUEUE: &str = "Queued work lives in this process: it is lost when the instance stops or is replaced, and work queued on one instance cannot be picked up by the others.";
const FIX_QUEUE: &str = "Move jobs to a shared, durable queue consumed by workers on any instance: Redis Streams (XADD / XREADGROUP with acknowledgements) or a PostgreSQL jobs table polled with SELECT ... FOR UPDATE SKIP LOCKED.";
const WHY_DB: &str = "An embedded database (SQLite file, H2) is a file or memory region of one instance: each instance gets its own data, writes on one are invisible to the others, and the data dies with the disk.";
const FIX_DB: &str = "Point the application at a shared database server (PostgreSQL, MySQL) through configuration in every deployed environment; keep SQLite/H2 for tests and single-machine setups.";
const WHY_PUBSUB: &str = "Subscribers live in one process: a message published on one instance (a broadcast, a server-sent event, a notification) never reaches clients connected to another.";
const FIX_PUBSUB: &str = "Publish through a shared broker (Redis pub/sub or Streams, PostgreSQL LISTEN/NOTIFY, NATS) and let every instance fan out to its own connected clients.";
const WHY_LOCK: &str = "The lock excludes only within one process: two instances take the \"same\" lock at once, so the work it guards runs twice or corrupts shared data.";
const FIX_LOCK: &str = "Use a lock every instance sees: a database advisory lock (pg_advisory_lock) or row lock, or a Redis lock with a TTL and fencing token.";
const WHY_SEARCH: &str = "The search index is on this instance's disk or memory: documents indexed by one instance are missing from the others' results, and each instance rebuilds its own copy.";
const FIX_SEARCH: &str = "Use a shared search service (Elasticsearch/OpenSearch, Meilisearch, PostgreSQL full-text search) that every instance writes to and queries.";
const WHY_FLAG: &str = "The flag is a file on one instance: turning maintenance mode on or off there leaves the other instances in the old mode.";
const FIX_FLAG: &str = "Keep the flag in a shared store (the cache store or database every instance reads), e.g. Laravel's `APP_MAINTENANCE_DRIVER=cache` with a shared cache store.";

/// Every rule the audit knows. Fixture tests assert each has a positive and a negative.
pub static RULES: &[Rule] = &[
    // ---- JavaScript / TypeScript ----
    Rule {
        id: "JS-SESSION-MEMORY",
        language: "javascript",
        category: Sessions,
        severity: Sessions.severity(),
        title: "express-session with the in-memory store",
        why: WHY_SESSION,
        fix: "Pass a shared `store` to express-session (connect-redis, connect-pg-simple); the default MemoryStore also leaks memory.",
    },
    Rule {
        id: "JS-GLOBAL-MUTABLE",
        language: "javascript",
        category: GlobalState,
        severity: GlobalState.severity(),
        title: "module-scope Map/object/array written from functions",
        why: WHY_GLOBAL,
        fix: FIX_GLOBAL,
    },
    Rule {
        id: "JS-QUEUE-ARRAY",
        language: "javascript",
        category: Queues,
        severity: Queues.severity(),
        title: "module-scope array used as a work queue",
        why: WHY_QUEUE,
        fix: FIX_QUEUE,
    },
    Rule {
        id: "JS-TIMER-JOB",
        language: "javascript",
        category: Jobs,
        severity: Jobs.severity(),
        title: "setInterval / cron job in the web process",
        why: WHY_JOB,
        fix: FIX_JOB,
    },
    Rule {
        id: "JS-UPLOAD-DISK",
        language: "javascript",
        category: LocalFiles,
        severity: LocalFiles.severity(),
        title: "multer stores uploads on local disk",
        why: WHY_FILE,
        fix: "Use multer memoryStorage and stream to object storage (multer-s3), or upload straight from the client with a pre-signed URL.",
    },
    Rule {
        id: "JS-LOCAL-WRITE",
        language: "javascript",
        category: LocalFiles,
        severity: LocalFiles.severity(),
        title: "file written to local disk in a request handler",
        why: WHY_FILE,
        fix: FIX_FILE,
    },
    Rule {
        id: "JS-RATELIMIT-MEMORY",
        language: "javascript",
        category: RateLimits,
        severity: RateLimits.severity(),
        title: "express-rate-limit with its default in-memory store",
        why: WHY_RATE,
        fix: "Pass `store: new RedisStore(...)` (rate-limit-redis) to express-rate-limit.",
    },
    Rule {
        id: "JS-WS-MEMORY",
        language: "javascript",
        category: PubSub,
        severity: PubSub.severity(),
        title: "socket.io server with the default in-memory adapter",
        why: WHY_WS,
        fix: "Install @socket.io/redis-adapter and call `io.adapter(createAdapter(pub, sub))`, and enable sticky sessions for the polling transport.",
    },
    Rule {
        id: "JS-EMBEDDED-DB",
        language: "javascript",
        category: Database,
        severity: Database.severity(),
        title: "SQLite / file database (sqlite3, better-sqlite3, lowdb, NeDB, Sequelize/TypeORM sqlite) as the app database",
        why: WHY_DB,
        fix: FIX_DB,
    },
    Rule {
        id: "JS-PUBSUB-MEMORY",
        language: "javascript",
        category: PubSub,
        severity: PubSub.severity(),
        title: "module-scope EventEmitter or subscriber list fanning out events (SSE, notifications) in process",
        why: WHY_PUBSUB,
        fix: FIX_PUBSUB,
    },
    Rule {
        id: "JS-LOCK-MEMORY",
        language: "javascript",
        category: Locks,
        severity: Locks.severity(),
        title: "lock table in a module-scope object/Map, or an in-process mutex guarding shared work",
        why: WHY_LOCK,
        fix: FIX_LOCK,
    },
    // ---- Python ----
    Rule {
        id: "PY-SESSION-LOCAL",
        language: "python",
        category: Sessions,
        severity: Sessions.severity(),
        title: "Flask-Session filesystem or Django file/locmem session backend",
        why: WHY_SESSION,
        fix: FIX_SESSION,
    },
    Rule {
        id: "PY-GLOBAL-MUTABLE",
        language: "python",
        category: GlobalState,
        severity: GlobalState.severity(),
        title: "module-level dict/list/set written from functions",
        why: WHY_GLOBAL,
        fix: FIX_GLOBAL,
    },
    Rule {
        id: "PY-LRU-REQUEST",
        language: "python",
        category: Caches,
        severity: Caches.severity(),
        title: "functools.lru_cache/cache keyed by per-user or per-request data",
        why: WHY_CACHE,
        fix: FIX_CACHE,
    },
    Rule {
        id: "PY-CACHE-LOCAL",
        language: "python",
        category: Caches,
        severity: Caches.severity(),
        title: "in-process cache backend (Django LocMemCache/FileBasedCache, Flask-Caching SimpleCache/FileSystemCache)",
        why: WHY_CACHE,
        fix: "Configure a shared backend: Django `django.core.cache.backends.redis.RedisCache`, Flask-Caching `CACHE_TYPE = \"RedisCache\"`.",
    },
    Rule {
        id: "PY-LOCAL-WRITE",
        language: "python",
        category: LocalFiles,
        severity: LocalFiles.severity(),
        title: "file written to local disk in a request handler",
        why: WHY_FILE,
        fix: FIX_FILE,
    },
    Rule {
        id: "PY-INPROC-JOB",
        language: "python",
        category: Jobs,
        severity: Jobs.severity(),
        title: "background thread / sched / APScheduler / Flask-APScheduler / schedule in the web process",
        why: WHY_JOB,
        fix: FIX_JOB,
    },
    Rule {
        id: "PY-RATELIMIT-MEMORY",
        language: "python",
        category: RateLimits,
        severity: RateLimits.severity(),
        title: "Flask-Limiter with in-memory storage",
        why: WHY_RATE,
        fix: "Pass `storage_uri=\"redis://...\"` to Limiter (or set RATELIMIT_STORAGE_URI).",
    },
    Rule {
        id: "PY-WS-MEMORY",
        language: "python",
        category: PubSub,
        severity: PubSub.severity(),
        title: "Django Channels InMemoryChannelLayer",
        why: WHY_PUBSUB,
        fix: "Use `channels_redis.core.RedisChannelLayer` in CHANNEL_LAYERS.",
    },
    Rule {
        id: "PY-EMBEDDED-DB",
        language: "python",
        category: Database,
        severity: Database.severity(),
        title: "SQLite as the configured or fallback database (SQLALCHEMY_DATABASE_URI, DATABASES, sqlite3.connect)",
        why: WHY_DB,
        fix: FIX_DB,
    },
    Rule {
        id: "PY-PUBSUB-MEMORY",
        language: "python",
        category: PubSub,
        severity: PubSub.severity(),
        title: "queue-per-listener announcer or subscriber list for SSE/WebSocket fan-out in process",
        why: WHY_PUBSUB,
        fix: FIX_PUBSUB,
    },
    Rule {
        id: "PY-LOCK-MEMORY",
        language: "python",
        category: Locks,
        severity: Locks.severity(),
        title: "lock table (dict of threading/asyncio locks) or module-level lock guarding shared work",
        why: WHY_LOCK,
        fix: FIX_LOCK,
    },
    Rule {
        id: "PY-SEARCH-LOCAL",
        language: "python",
        category: SearchIndex,
        severity: SearchIndex.severity(),
        title: "local search index (Whoosh, Haystack whoosh/simple backend, tantivy)",
        why: WHY_SEARCH,
        fix: FIX_SEARCH,
    },
    Rule {
        id: "PY-QUEUE-MEMORY",
        language: "python",
        category: Queues,
        severity: Queues.severity(),
        title: "module-level queue.Queue/deque/list used as a work queue",
        why: WHY_QUEUE,
        fix: FIX_QUEUE,
    },
    // ---- Go ----
    Rule {
        id: "GO-SESSION-LOCAL",
        language: "go",
        category: Sessions,
        severity: Sessions.severity(),
        title: "gorilla/sessions FilesystemStore or an in-memory session store",
        why: WHY_SESSION,
        fix: "Use a shared store (redistore, pgstore) or sessions.NewCookieStore with keys shared by all instances.",
    },
    Rule {
        id: "GO-GLOBAL-MAP",
        language: "go",
        category: GlobalState,
        severity: GlobalState.severity(),
        title: "package-level map (with or without a mutex) written from functions",
        why: WHY_GLOBAL,
        fix: FIX_GLOBAL,
    },
    Rule {
        id: "GO-TICKER-JOB",
        language: "go",
        category: Jobs,
        severity: Jobs.severity(),
        title: "time.Ticker / cron loop in the server process",
        why: WHY_JOB,
        fix: FIX_JOB,
    },
    Rule {
        id: "GO-LOCAL-WRITE",
        language: "go",
        category: LocalFiles,
        severity: LocalFiles.severity(),
        title: "file created on local disk in an HTTP handler",
        why: WHY_FILE,
        fix: FIX_FILE,
    },
    Rule {
        id: "GO-RATELIMIT-MEMORY",
        language: "go",
        category: RateLimits,
        severity: RateLimits.severity(),
        title: "per-client rate limiters kept in process memory",
        why: WHY_RATE,
        fix: FIX_RATE,
    },
    Rule {
        id: "GO-EMBEDDED-DB",
        language: "go",
        category: Database,
        severity: Database.severity(),
        title: "SQLite as the configured or fallback database (gorm sqlite, database/sql sqlite3)",
        why: WHY_DB,
        fix: FIX_DB,
    },
    Rule {
        id: "GO-PUBSUB-MEMORY",
        language: "go",
        category: PubSub,
        severity: PubSub.severity(),
        title: "hub of subscribers (map of clients plus a broadcast channel) fanning out in process",
        why: WHY_PUBSUB,
        fix: FIX_PUBSUB,
    },
    Rule {
        id: "GO-LOCK-MEMORY",
        language: "go",
        category: Locks,
        severity: Locks.severity(),
        title: "lock table (map of mutexes) or in-memory global locker guarding shared work",
        why: WHY_LOCK,
        fix: FIX_LOCK,
    },
    Rule {
        id: "GO-SEARCH-LOCAL",
        language: "go",
        category: SearchIndex,
        severity: SearchIndex.severity(),
        title: "local search index (bleve) on this instance's disk",
        why: WHY_SEARCH,
        fix: FIX_SEARCH,
    },
    Rule {
        id: "GO-QUEUE-MEMORY",
        language: "go",
        category: Queues,
        severity: Queues.severity(),
        title: "package-level buffered channel or queue fed by functions and drained by a goroutine",
        why: WHY_QUEUE,
        fix: FIX_QUEUE,
    },
    Rule {
        id: "GO-CACHE-LOCAL",
        language: "go",
        category: Caches,
        severity: Caches.severity(),
        title: "in-process cache library (go-cache, ristretto, bigcache, freecache, golang-lru)",
        why: WHY_CACHE,
        fix: FIX_CACHE,
    },
    // ---- Java ----
    Rule {
        id: "JAVA-SESSION-MEMORY",
        language: "java",
        category: Sessions,
        severity: Sessions.severity(),
        title: "HttpSession without Spring Session (servlet container keeps sessions in memory)",
        why: WHY_SESSION,
        fix: "Add Spring Session with a shared store (spring-session-data-redis or spring-session-jdbc), or keep no server-side session.",
    },
    Rule {
        id: "JAVA-STATIC-MAP",
        language: "java",
        category: GlobalState,
        severity: GlobalState.severity(),
        title: "static mutable Map/List written at run time",
        why: WHY_GLOBAL,
        fix: FIX_GLOBAL,
    },
    Rule {
        id: "JAVA-LOCAL-CACHE",
        language: "java",
        category: Caches,
        severity: Caches.severity(),
        title: "Guava/Caffeine in-process cache",
        why: WHY_CACHE,
        fix: FIX_CACHE,
    },
    Rule {
        id: "JAVA-LOCAL-WRITE",
        language: "java",
        category: LocalFiles,
        severity: LocalFiles.severity(),
        title: "uploaded file written to local disk",
        why: WHY_FILE,
        fix: FIX_FILE,
    },
    Rule {
        id: "JAVA-SCHEDULED",
        language: "java",
        category: Jobs,
        severity: Jobs.severity(),
        title: "@Scheduled / ScheduledExecutorService / Timer in the service",
        why: WHY_JOB,
        fix: "Run the job in one place, or guard it with a distributed lock (ShedLock) so only one instance runs it.",
    },
    Rule {
        id: "JAVA-RATELIMIT-MEMORY",
        language: "java",
        category: RateLimits,
        severity: RateLimits.severity(),
        title: "Bucket4j local bucket or Guava RateLimiter",
        why: WHY_RATE,
        fix: "Use Bucket4j's distributed proxy manager (Redis/JCache) or rate-limit at the balancer.",
    },
    Rule {
        id: "JAVA-EMBEDDED-DB",
        language: "java",
        category: Database,
        severity: Database.severity(),
        title: "H2/HSQLDB/Derby/SQLite as the configured or fallback database",
        why: WHY_DB,
        fix: FIX_DB,
    },
    Rule {
        id: "JAVA-SEARCH-LOCAL",
        language: "java",
        category: SearchIndex,
        severity: SearchIndex.severity(),
        title: "Lucene index in a local directory (FSDirectory)",
        why: WHY_SEARCH,
        fix: FIX_SEARCH,
    },
    Rule {
        id: "JAVA-PUBSUB-MEMORY",
        language: "java",
        category: PubSub,
        severity: PubSub.severity(),
        title: "Spring simple (in-memory) STOMP broker or a singleton list of SseEmitters",
        why: WHY_PUBSUB,
        fix: FIX_PUBSUB,
    },
    // ---- Rust ----
    Rule {
        id: "RS-SESSION-MEMORY",
        language: "rust",
        category: Sessions,
        severity: Sessions.severity(),
        title: "tower-sessions / actix MemoryStore",
        why: WHY_SESSION,
        fix: FIX_SESSION,
    },
    Rule {
        id: "RS-STATIC-MAP",
        language: "rust",
        category: GlobalState,
        severity: GlobalState.severity(),
        title: "static / lazy_static / OnceLock / Lazy mutable collection",
        why: WHY_GLOBAL,
        fix: FIX_GLOBAL,
    },
    Rule {
        id: "RS-STATE-MAP",
        language: "rust",
        category: GlobalState,
        severity: GlobalState.severity(),
        title: "Arc<Mutex<HashMap>> (or DashMap) held in web application state",
        why: WHY_GLOBAL,
        fix: FIX_GLOBAL,
    },
    Rule {
        id: "RS-INTERVAL-JOB",
        language: "rust",
        category: Jobs,
        severity: Jobs.severity(),
        title: "interval loop in a spawned task, or an in-process scheduler (clokwerk, tokio-cron-scheduler, job_scheduler)",
        why: WHY_JOB,
        fix: FIX_JOB,
    },
    Rule {
        id: "RS-LOCAL-WRITE",
        language: "rust",
        category: LocalFiles,
        severity: LocalFiles.severity(),
        title: "uploaded file written to local disk in a handler",
        why: WHY_FILE,
        fix: FIX_FILE,
    },
    Rule {
        id: "RS-RATELIMIT-MEMORY",
        language: "rust",
        category: RateLimits,
        severity: RateLimits.severity(),
        title: "governor / tower_governor in-memory rate limiter",
        why: WHY_RATE,
        fix: FIX_RATE,
    },
    Rule {
        id: "RS-EMBEDDED-DB",
        language: "rust",
        category: Database,
        severity: Database.severity(),
        title: "SQLite as the configured or fallback database (sqlx/diesel/rusqlite/sea-orm)",
        why: WHY_DB,
        fix: FIX_DB,
    },
    Rule {
        id: "RS-PUBSUB-MEMORY",
        language: "rust",
        category: PubSub,
        severity: PubSub.severity(),
        title: "tokio broadcast channel shared through application state (in-process fan-out)",
        why: WHY_PUBSUB,
        fix: FIX_PUBSUB,
    },
    Rule {
        id: "RS-CACHE-LOCAL",
        language: "rust",
        category: Caches,
        severity: Caches.severity(),
        title: "in-process cache (moka, cached, lru, quick_cache, mini-moka)",
        why: WHY_CACHE,
        fix: FIX_CACHE,
    },
    // ---- PHP ----
    Rule {
        id: "PHP-SESSION-FILES",
        language: "php",
        category: Sessions,
        severity: Sessions.severity(),
        title: "native PHP sessions with the default files handler",
        why: WHY_SESSION,
        fix: "Set session.save_handler = redis (phpredis) or register a shared handler with session_set_save_handler.",
    },
    Rule {
        id: "PHP-STATIC-ARRAY",
        language: "php",
        category: GlobalState,
        severity: GlobalState.severity(),
        title: "static array written at run time (long-running workers)",
        why: WHY_GLOBAL,
        fix: FIX_GLOBAL,
    },
    Rule {
        id: "PHP-APCU",
        language: "php",
        category: Caches,
        severity: Caches.severity(),
        title: "APCu shared-memory cache written",
        why: WHY_CACHE,
        fix: FIX_CACHE,
    },
    Rule {
        id: "PHP-LOCAL-UPLOAD",
        language: "php",
        category: LocalFiles,
        severity: LocalFiles.severity(),
        title: "move_uploaded_file to a local path",
        why: WHY_FILE,
        fix: FIX_FILE,
    },
    Rule {
        id: "PHP-EMBEDDED-DB",
        language: "php",
        category: Database,
        severity: Database.severity(),
        title: "SQLite as the application database (PDO sqlite, Laravel sqlite connection default)",
        why: WHY_DB,
        fix: FIX_DB,
    },
    // ---- Ruby ----
    Rule {
        id: "RB-GLOBAL-MUTABLE",
        language: "ruby",
        category: GlobalState,
        severity: GlobalState.severity(),
        title: "class variable, global or constant collection mutated at run time",
        why: WHY_GLOBAL,
        fix: FIX_GLOBAL,
    },
    Rule {
        id: "RB-CACHE-LOCAL",
        language: "ruby",
        category: Caches,
        severity: Caches.severity(),
        title: "Rails cache_store :memory_store / :file_store",
        why: WHY_CACHE,
        fix: "Use `config.cache_store = :redis_cache_store` (or :mem_cache_store / Solid Cache).",
    },
    Rule {
        id: "RB-INPROC-JOB",
        language: "ruby",
        category: Jobs,
        severity: Jobs.severity(),
        title: "Thread loops, rufus-scheduler or Concurrent::TimerTask in the web process",
        why: WHY_JOB,
        fix: "Run schedulers in one process (a dedicated clock process, sidekiq-cron with its uniqueness lock, Solid Queue recurring tasks).",
    },
    Rule {
        id: "RB-QUEUE-MEMORY",
        language: "ruby",
        category: Queues,
        severity: Queues.severity(),
        title: "ActiveJob :async adapter (jobs queued in process memory)",
        why: WHY_QUEUE,
        fix: "Use a durable backend shared by all instances: Sidekiq (Redis), GoodJob or Solid Queue (PostgreSQL, FOR UPDATE SKIP LOCKED).",
    },
    Rule {
        id: "RB-LOCAL-STORAGE",
        language: "ruby",
        category: LocalFiles,
        severity: LocalFiles.severity(),
        title: "Active Storage :local service or files written in controllers",
        why: WHY_FILE,
        fix: "Use an object-storage service (`config.active_storage.service = :amazon`).",
    },
    Rule {
        id: "RB-RATELIMIT-MEMORY",
        language: "ruby",
        category: RateLimits,
        severity: RateLimits.severity(),
        title: "rack-attack with an in-memory cache store",
        why: WHY_RATE,
        fix: "Set `Rack::Attack.cache.store` to a Redis cache store.",
    },
    // ---- config files ----
    Rule {
        id: "CFG-SESSION-LOCAL",
        language: "config",
        category: Sessions,
        severity: Sessions.severity(),
        title: "session store configured as memory or local files",
        why: WHY_SESSION,
        fix: FIX_SESSION,
    },
    Rule {
        id: "CFG-CACHE-LOCAL",
        language: "config",
        category: Caches,
        severity: Caches.severity(),
        title: "cache configured in process or on local files",
        why: WHY_CACHE,
        fix: FIX_CACHE,
    },
    Rule {
        id: "CFG-LOCAL-DISK",
        language: "config",
        category: LocalFiles,
        severity: LocalFiles.severity(),
        title: "default file storage disk is local",
        why: WHY_FILE,
        fix: "Set the default disk to object storage (FILESYSTEM_DISK=s3).",
    },
    Rule {
        id: "CFG-WS-MEMORY",
        language: "config",
        category: PubSub,
        severity: PubSub.severity(),
        title: "Action Cable async adapter",
        why: WHY_WS,
        fix: FIX_WS,
    },
    Rule {
        id: "CFG-EMBEDDED-DB",
        language: "config",
        category: Database,
        severity: Database.severity(),
        title: "SQLite/H2 configured as the database (DB_CONNECTION=sqlite, DB_TYPE=sqlite3, jdbc:h2:, adapter: sqlite3)",
        why: WHY_DB,
        fix: FIX_DB,
    },
    Rule {
        id: "CFG-QUEUE-LOCAL",
        language: "config",
        category: Queues,
        severity: Queues.severity(),
        title: "queue configured in process, in an embedded store, or on a database that is local (QUEUE_CONNECTION=database on SQLite, queue TYPE=level/channel)",
        why: WHY_QUEUE,
        fix: FIX_QUEUE,
    },
    Rule {
        id: "CFG-MAINTENANCE-FILE",
        language: "config",
        category: Flags,
        severity: Flags.severity(),
        title: "maintenance mode kept in a local file (APP_MAINTENANCE_DRIVER=file)",
        why: WHY_FLAG,
        fix: FIX_FLAG,
    },
    Rule {
        id: "CFG-SEARCH-LOCAL",
        language: "config",
        category: SearchIndex,
        severity: SearchIndex.severity(),
        title: "search indexer configured on local disk (bleve, whoosh, local-filesystem Lucene directory)",
        why: WHY_SEARCH,
        fix: FIX_SEARCH,
    },
    Rule {
        id: "CFG-LOCK-MEMORY",
        language: "config",
        category: Locks,
        severity: Locks.severity(),
        title: "global lock service configured in memory",
        why: WHY_LOCK,
        fix: FIX_LOCK,
    },
];

/// The rule with `id`, if any.
pub fn rule(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_shaped() {
        let mut seen = std::collections::HashSet::new();
        for r in RULES {
            assert!(seen.insert(r.id), "duplicate rule id {}", r.id);
            assert!(
                r.id.chars()
                    .all(|c| c.is_ascii_uppercase() || c == '-' || c.is_ascii_digit())
            );
            assert!(!r.why.is_empty() && !r.fix.is_empty());
            assert_eq!(
                r.severity,
                r.category.severity(),
                "{}: a rule's severity is its category's (one scale)",
                r.id
            );
        }
        let langs: std::collections::HashSet<_> = RULES.iter().map(|r| r.language).collect();
        for l in [
            "javascript",
            "python",
            "go",
            "java",
            "rust",
            "php",
            "ruby",
            "config",
        ] {
            assert!(langs.contains(l), "no rule for {l}");
        }
    }
}
