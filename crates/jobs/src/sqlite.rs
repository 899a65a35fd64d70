//! The SQLite backend, the embedded default: the same two tables and lease column as the
//! PostgreSQL backend (see `pg.rs`), with every write in a `BEGIN IMMEDIATE` transaction.
//!
//! SQLite has no `SKIP LOCKED`: a writer takes the database's write lock up front and
//! others wait on `busy_timeout`, so reserves are serialised. That is safe for several
//! workers in one process and for several processes on one machine (WAL mode), and it is
//! the throughput limit of this backend. Times are this machine's clock (there is only
//! one machine). This module must never delete a job row except by an ack carrying its
//! lease token or by moving it to the dead letters.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::AssertSqlSafe;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::{JobsError, bounded};
use crate::redis_queue::truncate;
use crate::{
    Acked, DeadJob, Delivery, Enqueued, NackDecision, Nacked, NewJob, Queue, QueueConfig,
    QueueStats, Receipt, unix_ms,
};

#[derive(Debug)]
struct Sql {
    migrate: Vec<String>,
    count: Arc<str>,
    exists: Arc<str>,
    insert: Arc<str>,
    expire_copy: Arc<str>,
    expire_delete: Arc<str>,
    reserve: Arc<str>,
    ack: Arc<str>,
    retry: Arc<str>,
    dead_copy: Arc<str>,
    dead_delete: Arc<str>,
    trim_dead: Arc<str>,
    stats: Arc<str>,
    dead_list: Arc<str>,
}

impl Sql {
    fn new(name: &str) -> Self {
        let t = format!("jobs_{name}");
        let d = format!("jobs_{name}_dead");
        let s = |x: String| Arc::<str>::from(x);
        let expired = "lease_token IS NOT NULL AND run_at_ms <= $1 AND attempts >= $2";
        Self {
            migrate: vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {t} (
                        id TEXT PRIMARY KEY,
                        payload BLOB NOT NULL,
                        attempts INTEGER NOT NULL DEFAULT 0,
                        run_at_ms INTEGER NOT NULL,
                        enqueued_at_ms INTEGER NOT NULL,
                        lease_token INTEGER,
                        consumer TEXT,
                        last_error TEXT)"
                ),
                format!("CREATE INDEX IF NOT EXISTS {t}_run_at ON {t} (run_at_ms)"),
                format!(
                    "CREATE INDEX IF NOT EXISTS {t}_leased ON {t} (run_at_ms)
                     WHERE lease_token IS NOT NULL"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {d} (
                        seq INTEGER PRIMARY KEY AUTOINCREMENT,
                        id TEXT NOT NULL,
                        payload BLOB NOT NULL,
                        attempts INTEGER NOT NULL,
                        enqueued_at_ms INTEGER NOT NULL,
                        dead_at_ms INTEGER NOT NULL,
                        last_error TEXT NOT NULL)"
                ),
            ],
            count: s(format!("SELECT count(*) FROM {t}")),
            exists: s(format!("SELECT count(*) FROM {t} WHERE id = $1")),
            insert: s(format!(
                "INSERT INTO {t} (id, payload, attempts, run_at_ms, enqueued_at_ms)
                 VALUES ($1, $2, 0, $3, $3)"
            )),
            expire_copy: s(format!(
                "INSERT INTO {d} (id, payload, attempts, enqueued_at_ms, dead_at_ms, last_error)
                 SELECT id, payload, attempts, enqueued_at_ms, $1,
                        'lease expired (worker died or hung)'
                 FROM {t} WHERE {expired}"
            )),
            expire_delete: s(format!("DELETE FROM {t} WHERE {expired}")),
            reserve: s(format!(
                "UPDATE {t} SET attempts = attempts + 1, run_at_ms = $1 + $2,
                                lease_token = $3, consumer = $5
                 WHERE id IN (SELECT id FROM {t} WHERE run_at_ms <= $1
                              ORDER BY run_at_ms, rowid LIMIT $4)
                 RETURNING id, payload, attempts, enqueued_at_ms"
            )),
            ack: s(format!(
                "DELETE FROM {t} WHERE id = $1 AND lease_token = $2"
            )),
            retry: s(format!(
                "UPDATE {t} SET lease_token = NULL, consumer = NULL, run_at_ms = $3,
                                last_error = $4
                 WHERE id = $1 AND lease_token = $2"
            )),
            dead_copy: s(format!(
                "INSERT INTO {d} (id, payload, attempts, enqueued_at_ms, dead_at_ms, last_error)
                 SELECT id, payload, attempts, enqueued_at_ms, $3, $4
                 FROM {t} WHERE id = $1 AND lease_token = $2"
            )),
            dead_delete: s(format!(
                "DELETE FROM {t} WHERE id = $1 AND lease_token = $2"
            )),
            trim_dead: s(format!(
                "DELETE FROM {d} WHERE seq <= (SELECT max(seq) FROM {d}) - $1"
            )),
            stats: s(format!(
                "SELECT
                    (SELECT count(*) FROM {t} WHERE run_at_ms <= $1),
                    (SELECT count(*) FROM {t} WHERE lease_token IS NULL AND run_at_ms > $1),
                    (SELECT count(*) FROM {t} WHERE lease_token IS NOT NULL AND run_at_ms > $1),
                    (SELECT count(*) FROM {d}),
                    (SELECT $1 - min(enqueued_at_ms) FROM {t}
                        WHERE run_at_ms <= $1 OR lease_token IS NOT NULL)"
            )),
            dead_list: s(format!(
                "SELECT id, payload, attempts, last_error FROM {d} ORDER BY seq LIMIT $1"
            )),
        }
    }
}

/// A queue in a SQLite table.
#[derive(Clone, Debug)]
pub struct SqliteQueue {
    pool: SqlitePool,
    cfg: QueueConfig,
    sql: Arc<Sql>,
}

impl SqliteQueue {
    /// Opens (creating if missing) the database at `url` (`sqlite:PATH`) in WAL mode with
    /// `synchronous=NORMAL` and a busy timeout, and creates the tables.
    pub async fn connect(url: &str, cfg: QueueConfig) -> Result<Self, JobsError> {
        cfg.validate()?;
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| JobsError::Invalid {
                field: "queue url",
                reason: e.to_string(),
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_millis(cfg.op_timeout_ms));
        let pool = bounded(
            "sqlite open",
            cfg.op_timeout_ms,
            SqlitePoolOptions::new()
                .max_connections(cfg.pool_size)
                .acquire_timeout(Duration::from_millis(cfg.op_timeout_ms))
                .connect_with(opts),
        )
        .await?;
        Self::from_pool(pool, cfg).await
    }

    /// Uses an existing pool and creates the tables.
    pub async fn from_pool(pool: SqlitePool, cfg: QueueConfig) -> Result<Self, JobsError> {
        cfg.validate()?;
        let me = Self {
            sql: Arc::new(Sql::new(&cfg.name)),
            pool,
            cfg,
        };
        let fut = async {
            let mut tx = me.pool.begin_with("BEGIN IMMEDIATE").await?;
            for stmt in &me.sql.migrate {
                sqlx::query(AssertSqlSafe(stmt.as_str()))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        };
        bounded("sqlite migrate", me.cfg.op_timeout_ms, fut).await?;
        Ok(me)
    }

    /// The pool (handlers may share it for their own transactions).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// What an enqueue transaction found.
enum EnqueueOutcome {
    Added,
    Duplicate,
    Full(i64),
}

impl Queue for SqliteQueue {
    fn config(&self) -> &QueueConfig {
        &self.cfg
    }

    async fn enqueue(&self, job: &NewJob) -> Result<Enqueued, JobsError> {
        crate::validate_job(job, &self.cfg)?;
        let max = i64::try_from(self.cfg.max_depth).unwrap_or(i64::MAX);
        let fut = async {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let exists: i64 = sqlx::query_scalar(AssertSqlSafe(self.sql.exists.clone()))
                .bind(&job.id)
                .fetch_one(&mut *tx)
                .await?;
            if exists > 0 {
                return Ok::<_, sqlx::Error>(EnqueueOutcome::Duplicate);
            }
            let depth: i64 = sqlx::query_scalar(AssertSqlSafe(self.sql.count.clone()))
                .fetch_one(&mut *tx)
                .await?;
            if depth >= max {
                return Ok(EnqueueOutcome::Full(depth));
            }
            sqlx::query(AssertSqlSafe(self.sql.insert.clone()))
                .bind(&job.id)
                .bind(&job.payload)
                .bind(unix_ms())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(EnqueueOutcome::Added)
        };
        match bounded("sqlite enqueue", self.cfg.op_timeout_ms, fut).await? {
            EnqueueOutcome::Added => Ok(Enqueued::Added),
            EnqueueOutcome::Duplicate => Ok(Enqueued::Duplicate),
            EnqueueOutcome::Full(depth) => Err(JobsError::Full {
                queue: self.cfg.name.clone(),
                depth: depth.max(0) as u64,
                max_depth: self.cfg.max_depth,
            }),
        }
    }

    async fn reserve(&self, consumer: &str, max: usize) -> Result<Vec<Delivery>, JobsError> {
        crate::validate_consumer(consumer)?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let token: i64 = rand::random();
        let attempts = i64::from(self.cfg.max_attempts);
        let fut = async {
            let now = unix_ms();
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query(AssertSqlSafe(self.sql.expire_copy.clone()))
                .bind(now)
                .bind(attempts)
                .execute(&mut *tx)
                .await?;
            sqlx::query(AssertSqlSafe(self.sql.expire_delete.clone()))
                .bind(now)
                .bind(attempts)
                .execute(&mut *tx)
                .await?;
            let rows: Vec<(String, Vec<u8>, i64, i64)> =
                sqlx::query_as(AssertSqlSafe(self.sql.reserve.clone()))
                    .bind(now)
                    .bind(self.cfg.visibility_timeout_ms as i64)
                    .bind(token)
                    .bind(max.min(1_000) as i64)
                    .bind(consumer)
                    .fetch_all(&mut *tx)
                    .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(rows)
        };
        let rows = bounded("sqlite reserve", self.cfg.op_timeout_ms, fut).await?;
        Ok(rows
            .into_iter()
            .map(|(id, payload, attempt, enq)| Delivery {
                id,
                payload,
                attempt: u32::try_from(attempt).unwrap_or(0),
                enqueued_at_ms: enq.max(0) as u64,
                consumer: consumer.to_string(),
                receipt: Receipt::Lease(token),
            })
            .collect())
    }

    async fn ack(&self, d: &Delivery) -> Result<Acked, JobsError> {
        let token = d.lease()?;
        let fut = async {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let r = sqlx::query(AssertSqlSafe(self.sql.ack.clone()))
                .bind(&d.id)
                .bind(token)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(r.rows_affected())
        };
        let n = bounded("sqlite ack", self.cfg.op_timeout_ms, fut).await?;
        Ok(if n == 1 { Acked::Done } else { Acked::Stale })
    }

    async fn nack(&self, d: &Delivery, error: &str) -> Result<Nacked, JobsError> {
        let token = d.lease()?;
        let err = truncate(error, 1024);
        let decision = self.cfg.retry().decide(d.attempt, rand::random());
        let fut = async {
            let now = unix_ms();
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let out = match decision {
                NackDecision::Retry(delay) => {
                    let r = sqlx::query(AssertSqlSafe(self.sql.retry.clone()))
                        .bind(&d.id)
                        .bind(token)
                        .bind(now + delay as i64)
                        .bind(err)
                        .execute(&mut *tx)
                        .await?;
                    if r.rows_affected() == 1 {
                        Nacked::Retry { delay_ms: delay }
                    } else {
                        Nacked::Stale
                    }
                }
                NackDecision::DeadLetter => {
                    sqlx::query(AssertSqlSafe(self.sql.dead_copy.clone()))
                        .bind(&d.id)
                        .bind(token)
                        .bind(now)
                        .bind(err)
                        .execute(&mut *tx)
                        .await?;
                    let r = sqlx::query(AssertSqlSafe(self.sql.dead_delete.clone()))
                        .bind(&d.id)
                        .bind(token)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(AssertSqlSafe(self.sql.trim_dead.clone()))
                        .bind(self.cfg.max_dead as i64)
                        .execute(&mut *tx)
                        .await?;
                    if r.rows_affected() == 1 {
                        Nacked::DeadLettered
                    } else {
                        Nacked::Stale
                    }
                }
            };
            tx.commit().await?;
            Ok::<_, sqlx::Error>(out)
        };
        bounded("sqlite nack", self.cfg.op_timeout_ms, fut).await
    }

    async fn stats(&self) -> Result<QueueStats, JobsError> {
        let row: crate::StatsRow = bounded(
            "sqlite stats",
            self.cfg.op_timeout_ms,
            sqlx::query_as(AssertSqlSafe(self.sql.stats.clone()))
                .bind(unix_ms())
                .fetch_one(&self.pool),
        )
        .await?;
        Ok(row.into())
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadJob>, JobsError> {
        let rows: Vec<(String, Vec<u8>, i64, String)> = bounded(
            "sqlite dead letters",
            self.cfg.op_timeout_ms,
            sqlx::query_as(AssertSqlSafe(self.sql.dead_list.clone()))
                .bind(limit.clamp(1, 10_000) as i64)
                .fetch_all(&self.pool),
        )
        .await?;
        Ok(rows.into_iter().map(crate::dead_job).collect())
    }
}
