//! The rule table: every rule's id, severity, category, why it breaks scale-out and the
//! stateless fix. Detection lives in `scan::*`; this module is data only and must never
//! look at code.

use serde::Serialize;

/// How much a finding matters when a second instance starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Duplicated per instance but harmless to correctness (e.g. a read-mostly cache of
    /// reference data). Does not make the verdict stateful.
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
    /// In-process queues, timers and schedulers doing shared work.
    Jobs,
    /// In-memory rate limiters and counters.
    RateLimits,
    /// WebSocket rooms and channel layers kept in process.
    Websockets,
}

impl Category {
    /// Kebab-case name, as printed in the verdict.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Sessions => "sessions",
            Category::GlobalState => "global-state",
            Category::Caches => "caches",
            Category::LocalFiles => "local-files",
            Category::Jobs => "jobs",
            Category::RateLimits => "rate-limits",
            Category::Websockets => "websockets",
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
use Severity::*;

const WHY_SESSION: &str = "Sessions live in one process (or on one disk): behind a balancer the next request lands on another instance that has never seen the session, so users are logged out or lose their cart, and every restart or deploy drops all sessions.";
const WHY_GLOBAL: &str = "Each instance holds its own copy: writes on one instance are invisible to the others, so reads disagree depending on which instance answers, and everything is lost on restart.";
const WHY_CACHE: &str = "An in-process cache is per instance: after a write on one instance the others serve stale data until expiry, hit rates drop by N with N instances, and invalidation cannot reach the other copies.";
const WHY_FILE: &str = "Files written to local disk exist on one instance only: the next request (a download, a resize job) lands elsewhere and finds nothing, and the disk is lost when the instance is replaced.";
const WHY_JOB: &str = "Every instance runs its own copy of the job or queue: with N instances the work runs N times (duplicate e-mails, double charges), and queued items die with the process.";
const WHY_RATE: &str = "Each instance counts separately: with N instances a client gets N times the limit, and counters reset on every deploy.";
const WHY_WS: &str = "Rooms and subscriptions live in one process: a message published on one instance never reaches clients connected to another.";

const FIX_SESSION: &str = "Keep sessions in a shared store (Redis, the database) or make them stateless (signed cookies / JWT with server-side revocation).";
const FIX_GLOBAL: &str = "Move the data to a shared store (Redis, the database); keep only immutable data loaded at start-up in process memory.";
const FIX_CACHE: &str = "Use a shared cache (Redis/Memcached) with cache-aside and invalidate on write, or keep the local cache only for immutable reference data with a short TTL.";
const FIX_FILE: &str = "Write user files to object storage (S3, GCS, MinIO) or a shared volume, and store only the key in the database.";
const FIX_JOB: &str = "Run scheduled work in one place (a dedicated worker, a cron job, a leader-elected scheduler) and put queued work on a durable shared queue (Redis, SQS, the database).";
const FIX_RATE: &str = "Back the limiter with a shared store (Redis) so all instances count together, or enforce limits at the balancer.";
const FIX_WS: &str = "Use a shared pub/sub adapter (Redis adapter for socket.io, Redis channel layer, Redis/PostgreSQL Action Cable adapter).";

/// Every rule the audit knows. Fixture tests assert each has a positive and a negative.
pub static RULES: &[Rule] = &[
    // ---- JavaScript / TypeScript ----
    Rule {
        id: "JS-SESSION-MEMORY",
        language: "javascript",
        category: Sessions,
        severity: High,
        title: "express-session with the in-memory store",
        why: WHY_SESSION,
        fix: "Pass a shared `store` to express-session (connect-redis, connect-pg-simple); the default MemoryStore also leaks memory.",
    },
    Rule {
        id: "JS-GLOBAL-MUTABLE",
        language: "javascript",
        category: GlobalState,
        severity: Medium,
        title: "module-scope Map/object/array written from functions",
        why: WHY_GLOBAL,
        fix: FIX_GLOBAL,
    },
    Rule {
        id: "JS-QUEUE-ARRAY",
        language: "javascript",
        category: Jobs,
        severity: High,
        title: "module-scope array used as a work queue",
        why: WHY_JOB,
        fix: FIX_JOB,
    },
    Rule {
        id: "JS-TIMER-JOB",
        language: "javascript",
        category: Jobs,
        severity: Medium,
        title: "setInterval / cron job in the web process",
        why: WHY_JOB,
        fix: FIX_JOB,
    },
    Rule {
        id: "JS-UPLOAD-DISK",
        language: "javascript",
        category: LocalFiles,
        severity: High,
        title: "multer stores uploads on local disk",
        why: WHY_FILE,
        fix: "Use multer memoryStorage and stream to object storage (multer-s3), or upload straight from the client with a pre-signed URL.",
    },
    Rule {
        id: "JS-LOCAL-WRITE",
        language: "javascript",
        category: LocalFiles,
        severity: High,
        title: "file written to local disk in a request handler",
        why: WHY_FILE,
        fix: FIX_FILE,
    },
    Rule {
        id: "JS-RATELIMIT-MEMORY",
        language: "javascript",
        category: RateLimits,
        severity: Medium,
        title: "express-rate-limit with its default in-memory store",
        why: WHY_RATE,
        fix: "Pass `store: new RedisStore(...)` (rate-limit-redis) to express-rate-limit.",
    },
    Rule {
        id: "JS-WS-MEMORY",
        language: "javascript",
        category: Websockets,
        severity: High,
        title: "socket.io server with the default in-memory adapter",
        why: WHY_WS,
        fix: "Install @socket.io/redis-adapter and call `io.adapter(createAdapter(pub, sub))`, and enable sticky sessions for the polling transport.",
    },
    // ---- Python ----
    Rule {
        id: "PY-SESSION-LOCAL",
        language: "python",
        category: Sessions,
        severity: High,
        title: "Flask-Session filesystem or Django file/locmem session backend",
        why: WHY_SESSION,
        fix: FIX_SESSION,
    },
    Rule {
        id: "PY-GLOBAL-MUTABLE",
        language: "python",
        category: GlobalState,
        severity: Medium,
        title: "module-level dict/list/set written from functions",
        why: WHY_GLOBAL,
        fix: FIX_GLOBAL,
    },
    Rule {
        id: "PY-LRU-REQUEST",
        language: "python",
        category: Caches,
        severity: Medium,
        title: "functools.lru_cache/cache keyed by per-user or per-request data",
        why: WHY_CACHE,
        fix: FIX_CACHE,
    },
    Rule {
        id: "PY-CACHE-LOCAL",
        language: "python",
        category: Caches,
        severity: Medium,
        title: "in-process cache backend (Django LocMemCache/FileBasedCache, Flask-Caching SimpleCache/FileSystemCache)",
        why: WHY_CACHE,
        fix: "Configure a shared backend: Django `django.core.cache.backends.redis.RedisCache`, Flask-Caching `CACHE_TYPE = \"RedisCache\"`.",
    },
    Rule {
        id: "PY-LOCAL-WRITE",
        language: "python",
        category: LocalFiles,
        severity: High,
        title: "file written to local disk in a request handler",
        why: WHY_FILE,
        fix: FIX_FILE,
    },
    Rule {
        id: "PY-INPROC-JOB",
        language: "python",
        category: Jobs,
        severity: Medium,
        title: "background thread / sched / APScheduler in the web process",
        why: WHY_JOB,
        fix: FIX_JOB,
    },
    Rule {
        id: "PY-RATELIMIT-MEMORY",
        language: "python",
        category: RateLimits,
        severity: Medium,
        title: "Flask-Limiter with in-memory storage",
        why: WHY_RATE,
        fix: "Pass `storage_uri=\"redis://...\"` to Limiter (or set RATELIMIT_STORAGE_URI).",
    },
    Rule {
        id: "PY-WS-MEMORY",
        language: "python",
        category: Websockets,
        severity: High,
        title: "Django Channels InMemoryChannelLayer",
        why: WHY_WS,
        fix: "Use `channels_redis.core.RedisChannelLayer` in CHANNEL_LAYERS.",
    },
    // ---- Go ----
    Rule {
        id: "GO-SESSION-LOCAL",
        language: "go",
        category: Sessions,
        severity: High,
        title: "gorilla/sessions FilesystemStore or an in-memory session store",
        why: WHY_SESSION,
        fix: "Use a shared store (redistore, pgstore) or sessions.NewCookieStore with keys shared by all instances.",
    },
    Rule {
        id: "GO-GLOBAL-MAP",
        language: "go",
        category: GlobalState,
        severity: Medium,
        title: "package-level map (with or without a mutex) written from functions",
        why: WHY_GLOBAL,
        fix: FIX_GLOBAL,
    },
    Rule {
        id: "GO-TICKER-JOB",
        language: "go",
        category: Jobs,
        severity: Medium,
        title: "time.Ticker / cron loop in the server process",
        why: WHY_JOB,
        fix: FIX_JOB,
    },
    Rule {
        id: "GO-LOCAL-WRITE",
        language: "go",
        category: LocalFiles,
        severity: High,
        title: "file created on local disk in an HTTP handler",
        why: WHY_FILE,
        fix: FIX_FILE,
    },
    Rule {
        id: "GO-RATELIMIT-MEMORY",
        language: "go",
        category: RateLimits,
        severity: Medium,
        title: "per-client rate limiters kept in process memory",
        why: WHY_RATE,
        fix: FIX_RATE,
    },
    // ---- Java ----
    Rule {
        id: "JAVA-SESSION-MEMORY",
        language: "java",
        category: Sessions,
        severity: High,
        title: "HttpSession without Spring Session (servlet container keeps sessions in memory)",
        why: WHY_SESSION,
        fix: "Add Spring Session with a shared store (spring-session-data-redis or spring-session-jdbc), or keep no server-side session.",
    },
    Rule {
        id: "JAVA-STATIC-MAP",
        language: "java",
        category: GlobalState,
        severity: Medium,
        title: "static mutable Map/List written at run time",
        why: WHY_GLOBAL,
        fix: FIX_GLOBAL,
    },
    Rule {
        id: "JAVA-LOCAL-CACHE",
        language: "java",
        category: Caches,
        severity: Medium,
        title: "Guava/Caffeine in-process cache",
        why: WHY_CACHE,
        fix: FIX_CACHE,
    },
    Rule {
        id: "JAVA-LOCAL-WRITE",
        language: "java",
        category: LocalFiles,
        severity: High,
        title: "uploaded file written to local disk",
        why: WHY_FILE,
        fix: FIX_FILE,
    },
    Rule {
        id: "JAVA-SCHEDULED",
        language: "java",
        category: Jobs,
        severity: Medium,
        title: "@Scheduled / ScheduledExecutorService / Timer in the service",
        why: WHY_JOB,
        fix: "Run the job in one place, or guard it with a distributed lock (ShedLock) so only one instance runs it.",
    },
    Rule {
        id: "JAVA-RATELIMIT-MEMORY",
        language: "java",
        category: RateLimits,
        severity: Medium,
        title: "Bucket4j local bucket or Guava RateLimiter",
        why: WHY_RATE,
        fix: "Use Bucket4j's distributed proxy manager (Redis/JCache) or rate-limit at the balancer.",
    },
    // ---- Rust ----
    Rule {
        id: "RS-SESSION-MEMORY",
        language: "rust",
        category: Sessions,
        severity: High,
        title: "tower-sessions / actix MemoryStore",
        why: WHY_SESSION,
        fix: FIX_SESSION,
    },
    Rule {
        id: "RS-STATIC-MAP",
        language: "rust",
        category: GlobalState,
        severity: Medium,
        title: "static / lazy_static / OnceLock / Lazy mutable collection",
        why: WHY_GLOBAL,
        fix: FIX_GLOBAL,
    },
    Rule {
        id: "RS-STATE-MAP",
        language: "rust",
        category: GlobalState,
        severity: Medium,
        title: "Arc<Mutex<HashMap>> (or DashMap) held in web application state",
        why: WHY_GLOBAL,
        fix: FIX_GLOBAL,
    },
    Rule {
        id: "RS-INTERVAL-JOB",
        language: "rust",
        category: Jobs,
        severity: Medium,
        title: "tokio::spawn interval loop in the server process",
        why: WHY_JOB,
        fix: FIX_JOB,
    },
    Rule {
        id: "RS-LOCAL-WRITE",
        language: "rust",
        category: LocalFiles,
        severity: High,
        title: "uploaded file written to local disk in a handler",
        why: WHY_FILE,
        fix: FIX_FILE,
    },
    Rule {
        id: "RS-RATELIMIT-MEMORY",
        language: "rust",
        category: RateLimits,
        severity: Medium,
        title: "governor / tower_governor in-memory rate limiter",
        why: WHY_RATE,
        fix: FIX_RATE,
    },
    // ---- PHP ----
    Rule {
        id: "PHP-SESSION-FILES",
        language: "php",
        category: Sessions,
        severity: High,
        title: "native PHP sessions with the default files handler",
        why: WHY_SESSION,
        fix: "Set session.save_handler = redis (phpredis) or register a shared handler with session_set_save_handler.",
    },
    Rule {
        id: "PHP-STATIC-ARRAY",
        language: "php",
        category: GlobalState,
        severity: Medium,
        title: "static array written at run time (long-running workers)",
        why: WHY_GLOBAL,
        fix: FIX_GLOBAL,
    },
    Rule {
        id: "PHP-APCU",
        language: "php",
        category: Caches,
        severity: Medium,
        title: "APCu shared-memory cache written",
        why: WHY_CACHE,
        fix: FIX_CACHE,
    },
    Rule {
        id: "PHP-LOCAL-UPLOAD",
        language: "php",
        category: LocalFiles,
        severity: High,
        title: "move_uploaded_file to a local path",
        why: WHY_FILE,
        fix: FIX_FILE,
    },
    // ---- Ruby ----
    Rule {
        id: "RB-GLOBAL-MUTABLE",
        language: "ruby",
        category: GlobalState,
        severity: Medium,
        title: "class variable, global or constant collection mutated at run time",
        why: WHY_GLOBAL,
        fix: FIX_GLOBAL,
    },
    Rule {
        id: "RB-CACHE-LOCAL",
        language: "ruby",
        category: Caches,
        severity: Medium,
        title: "Rails cache_store :memory_store / :file_store",
        why: WHY_CACHE,
        fix: "Use `config.cache_store = :redis_cache_store` (or :mem_cache_store / Solid Cache).",
    },
    Rule {
        id: "RB-INPROC-JOB",
        language: "ruby",
        category: Jobs,
        severity: Medium,
        title: "ActiveJob :async adapter, Thread loops or rufus-scheduler in the web process",
        why: WHY_JOB,
        fix: "Use a durable backend (Sidekiq, GoodJob, Solid Queue) and run schedulers in one process.",
    },
    Rule {
        id: "RB-LOCAL-STORAGE",
        language: "ruby",
        category: LocalFiles,
        severity: High,
        title: "Active Storage :local service or files written in controllers",
        why: WHY_FILE,
        fix: "Use an object-storage service (`config.active_storage.service = :amazon`).",
    },
    Rule {
        id: "RB-RATELIMIT-MEMORY",
        language: "ruby",
        category: RateLimits,
        severity: Medium,
        title: "rack-attack with an in-memory cache store",
        why: WHY_RATE,
        fix: "Set `Rack::Attack.cache.store` to a Redis cache store.",
    },
    // ---- config files ----
    Rule {
        id: "CFG-SESSION-LOCAL",
        language: "config",
        category: Sessions,
        severity: High,
        title: "session store configured as memory or local files",
        why: WHY_SESSION,
        fix: FIX_SESSION,
    },
    Rule {
        id: "CFG-CACHE-LOCAL",
        language: "config",
        category: Caches,
        severity: Medium,
        title: "cache configured in process or on local files",
        why: WHY_CACHE,
        fix: FIX_CACHE,
    },
    Rule {
        id: "CFG-LOCAL-DISK",
        language: "config",
        category: LocalFiles,
        severity: High,
        title: "default file storage disk is local",
        why: WHY_FILE,
        fix: "Set the default disk to object storage (FILESYSTEM_DISK=s3).",
    },
    Rule {
        id: "CFG-WS-MEMORY",
        language: "config",
        category: Websockets,
        severity: High,
        title: "Action Cable async adapter",
        why: WHY_WS,
        fix: FIX_WS,
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
