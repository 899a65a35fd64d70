//! Shared helpers for the jobs integration tests: real Redis (127.0.0.1:6379) and
//! PostgreSQL (127.0.0.1:5432), each test in its own keys / schema, SQLite in a temp dir.
//! A missing server fails the test with the command that starts it; nothing is skipped.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jobs::{AnyQueue, Delivery, Handler, JobFailed, PgQueue, QueueConfig, RedisQueue, SqliteQueue};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Which backend a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Redis,
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn parse(s: &str) -> Backend {
        match s {
            "redis" => Backend::Redis,
            "postgres" => Backend::Postgres,
            "sqlite" => Backend::Sqlite,
            other => panic!("unknown backend {other}"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Redis => "redis",
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// A name unique to this process and call: `<prefix>_<pid>_<n>_<random>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    )
}

/// Everything one test uses, removed on drop: the queue's keys or schema, the temp dir.
#[derive(Debug)]
pub struct Place {
    pub backend: Backend,
    /// Queue name (also the Redis key tag).
    pub name: String,
    /// PostgreSQL schema holding the effects (and the queue on the Postgres backend).
    pub schema: String,
    /// SQLite file (Sqlite backend).
    pub sqlite_path: PathBuf,
    dir: PathBuf,
}

impl Place {
    /// A fresh place for `backend`; panics loudly when a server is missing.
    pub fn new(backend: Backend) -> Place {
        let name = unique("q");
        let dir = std::env::temp_dir().join(unique("jobs-test"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let schema = unique("jobs_t");
        let p = Place {
            backend,
            sqlite_path: dir.join("jobs.db"),
            name,
            schema,
            dir,
        };
        if backend != Backend::Sqlite {
            psql(&format!("CREATE SCHEMA {}", p.schema));
        }
        p
    }

    /// Reopens an existing place (in a child process) from its parts.
    pub fn from_env() -> Place {
        let get = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
        let sqlite_path = PathBuf::from(get("JOBS_SQLITE_PATH"));
        Place {
            backend: Backend::parse(&get("JOBS_BACKEND")),
            name: get("JOBS_QUEUE_NAME"),
            schema: get("JOBS_PG_SCHEMA"),
            dir: PathBuf::new(), // the parent owns and removes it
            sqlite_path,
        }
    }

    /// The environment a child needs to reopen this place.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("JOBS_BACKEND", self.backend.name().to_string()),
            ("JOBS_QUEUE_NAME", self.name.clone()),
            ("JOBS_PG_SCHEMA", self.schema.clone()),
            (
                "JOBS_SQLITE_PATH",
                self.sqlite_path.to_string_lossy().into_owned(),
            ),
        ]
    }

    pub fn queue_config(&self) -> QueueConfig {
        QueueConfig {
            name: self.name.clone(),
            ..QueueConfig::default()
        }
    }

    pub fn pg_options(&self, app: &str) -> PgConnectOptions {
        PG_URL
            .parse::<PgConnectOptions>()
            .expect("pg url")
            .application_name(app)
            .options([("search_path", self.schema.as_str())])
    }

    pub fn sqlite_url(&self) -> String {
        format!("sqlite:{}", self.sqlite_path.display())
    }

    /// Opens the queue with `cfg` (its `name` must be this place's).
    pub async fn queue(&self, cfg: QueueConfig, app: &str) -> AnyQueue {
        let r = match self.backend {
            Backend::Redis => RedisQueue::connect(REDIS_URL, cfg)
                .await
                .map(AnyQueue::Redis),
            Backend::Postgres => PgQueue::connect_with(self.pg_options(app), cfg)
                .await
                .map(AnyQueue::Postgres),
            Backend::Sqlite => SqliteQueue::connect(&self.sqlite_url(), cfg)
                .await
                .map(AnyQueue::Sqlite),
        };
        r.unwrap_or_else(|e| {
            panic!(
                "{} queue: {e} — start the state tier with `scripts/services up`",
                self.backend.name()
            )
        })
    }

    /// The store for handlers' effects: PostgreSQL for Redis and Postgres, the same SQLite
    /// file for Sqlite.
    pub async fn effects(&self, app: &str) -> Effects {
        let e = match self.backend {
            Backend::Redis | Backend::Postgres => {
                let pool = PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with(self.pg_options(app))
                    .await
                    .unwrap_or_else(|e| {
                        panic!("PostgreSQL 127.0.0.1:5432: {e} — run `scripts/services up`")
                    });
                Effects::Pg(pool)
            }
            Backend::Sqlite => {
                let opts = SqliteConnectOptions::new()
                    .filename(&self.sqlite_path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(10));
                Effects::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(4)
                        .connect_with(opts)
                        .await
                        .expect("sqlite effects"),
                )
            }
        };
        e.migrate().await;
        e
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if self.dir.as_os_str().is_empty() {
            return; // a child's view; the parent cleans up
        }
        if self.backend != Backend::Sqlite {
            psql(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
        }
        if self.backend == Backend::Redis {
            let keys = ["stream", "ids", "delayed", "held", "meta", "dead"]
                .map(|k| format!("jobs:{{{}}}:{k}", self.name));
            let _ = Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", "6379", "DEL"])
                .args(keys)
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs SQL on the local PostgreSQL with psql; panics loudly when it fails.
pub fn psql(sql: &str) {
    let out = Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
            "-w",
        ])
        .args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-Atqc", sql])
        .output()
        .expect("psql not installed: run `scripts/services up`");
    assert!(
        out.status.success(),
        "psql {sql:?} failed (is PostgreSQL on 127.0.0.1:5432? run `scripts/services up`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where handlers write their effect: an `effects` row per application (no unique key, so
/// a double effect would show), guarded by the `jobs_processed` ids table.
#[derive(Clone, Debug)]
pub enum Effects {
    Pg(PgPool),
    Sqlite(SqlitePool),
}

/// What happens inside a handler's transaction (for the crash tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stall {
    /// Nothing: commit and return.
    No,
    /// Announce, then hang with the transaction open (killed before commit).
    BeforeCommit,
    /// Commit, announce, then hang without returning (killed before the ack).
    AfterCommit,
}

impl Effects {
    async fn migrate(&self) {
        match self {
            Effects::Pg(p) => {
                let mut c = p.acquire().await.expect("pg acquire");
                sqlx::query("CREATE TABLE IF NOT EXISTS effects (job_id TEXT NOT NULL, worker TEXT NOT NULL, attempt INTEGER NOT NULL)")
                    .execute(&mut *c)
                    .await
                    .expect("effects table");
                let mut tx = p.begin().await.expect("tx");
                jobs::processed::ensure_pg(&mut tx, "jobs_processed")
                    .await
                    .expect("processed table");
                tx.commit().await.expect("commit");
            }
            Effects::Sqlite(p) => {
                let mut c = p.acquire().await.expect("sqlite acquire");
                sqlx::query("CREATE TABLE IF NOT EXISTS effects (job_id TEXT NOT NULL, worker TEXT NOT NULL, attempt INTEGER NOT NULL)")
                    .execute(&mut *c)
                    .await
                    .expect("effects table");
                jobs::processed::ensure_sqlite(&mut c, "jobs_processed")
                    .await
                    .expect("processed table");
            }
        }
    }

    /// The handler's work: mark + effect in one transaction. Returns whether the effect
    /// was applied (false: already processed).
    pub async fn apply(
        &self,
        job: &Delivery,
        worker: &str,
        stall: Stall,
    ) -> Result<bool, JobFailed> {
        match self {
            Effects::Pg(p) => {
                let mut tx = p.begin().await?;
                let fresh = jobs::processed::mark_pg(&mut tx, "jobs_processed", &job.id).await?;
                if fresh {
                    sqlx::query(
                        "INSERT INTO effects (job_id, worker, attempt) VALUES ($1, $2, $3)",
                    )
                    .bind(&job.id)
                    .bind(worker)
                    .bind(job.attempt as i32)
                    .execute(&mut *tx)
                    .await?;
                }
                stall_before(stall, &job.id).await;
                tx.commit().await?;
                stall_after(stall, &job.id).await;
                Ok(fresh)
            }
            Effects::Sqlite(p) => {
                let mut tx = p.begin_with("BEGIN IMMEDIATE").await?;
                let fresh =
                    jobs::processed::mark_sqlite(&mut tx, "jobs_processed", &job.id).await?;
                if fresh {
                    sqlx::query(
                        "INSERT INTO effects (job_id, worker, attempt) VALUES ($1, $2, $3)",
                    )
                    .bind(&job.id)
                    .bind(worker)
                    .bind(job.attempt as i64)
                    .execute(&mut *tx)
                    .await?;
                }
                stall_before(stall, &job.id).await;
                tx.commit().await?;
                stall_after(stall, &job.id).await;
                Ok(fresh)
            }
        }
    }

    /// (effect rows, distinct job ids with an effect, most effects of one job).
    pub async fn counts(&self) -> (i64, i64, i64) {
        let sql = "SELECT count(*), count(DISTINCT job_id),
                          coalesce((SELECT max(c) FROM (SELECT count(*) AS c FROM effects GROUP BY job_id) x), 0)
                   FROM effects";
        match self {
            Effects::Pg(p) => sqlx::query_as(sql).fetch_one(p).await.expect("counts"),
            Effects::Sqlite(p) => sqlx::query_as(sql).fetch_one(p).await.expect("counts"),
        }
    }

    /// Effect rows of one job: (worker, attempt).
    pub async fn of(&self, job_id: &str) -> Vec<(String, i64)> {
        let sql = "SELECT worker, CAST(attempt AS BIGINT) FROM effects WHERE job_id = $1";
        match self {
            Effects::Pg(p) => sqlx::query_as(sql)
                .bind(job_id)
                .fetch_all(p)
                .await
                .expect("of"),
            Effects::Sqlite(p) => sqlx::query_as(sql)
                .bind(job_id)
                .fetch_all(p)
                .await
                .expect("of"),
        }
    }
}

async fn stall_before(stall: Stall, id: &str) {
    if stall == Stall::BeforeCommit {
        println!("JOB_STARTED {id}");
        hang().await;
    }
}

async fn stall_after(stall: Stall, id: &str) {
    if stall == Stall::AfterCommit {
        println!("JOB_COMMITTED {id}");
        hang().await;
    }
}

/// Waits until killed (bounded: a child nobody kills gives up after 120 s).
async fn hang() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tokio::time::sleep(Duration::from_secs(120)).await;
    panic!("nobody killed this worker within 120 s");
}

/// A handler that applies the effect, optionally failing some ids, and records every
/// delivery it saw: (job id, attempt, when).
#[derive(Debug)]
pub struct EffectHandler {
    pub effects: Effects,
    pub worker: String,
    pub stall: Stall,
    /// Ids whose handler always fails.
    pub poison: Vec<String>,
    pub seen: Mutex<Vec<(String, u32, Instant)>>,
}

impl EffectHandler {
    pub fn new(effects: Effects, worker: &str) -> Arc<EffectHandler> {
        Arc::new(EffectHandler {
            effects,
            worker: worker.into(),
            stall: Stall::No,
            poison: Vec::new(),
            seen: Mutex::new(Vec::new()),
        })
    }

    pub fn seen_of(&self, id: &str) -> Vec<(u32, Instant)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(j, _, _)| j == id)
            .map(|(_, a, t)| (*a, *t))
            .collect()
    }
}

impl Handler for EffectHandler {
    async fn handle(&self, job: &Delivery) -> Result<(), JobFailed> {
        self.seen
            .lock()
            .unwrap()
            .push((job.id.clone(), job.attempt, Instant::now()));
        if self.poison.contains(&job.id) {
            return Err(JobFailed::new(format!("poison job {} refused", job.id)));
        }
        self.effects.apply(job, &self.worker, self.stall).await?;
        Ok(())
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what` at `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
