//! The PostgreSQL backend: one table of unfinished jobs with a lease column, claimed with
//! `SELECT … FOR UPDATE SKIP LOCKED`, and one table of dead letters.
//!
//! `jobs_<name>` rows: `run_at_ms` is when the row may next be reserved. Reserving sets
//! it to `now + visibility_timeout` and writes a fresh random `lease_token`, so "ready"
//! is just `run_at_ms <= now` (a never-leased job, a retry whose back-off passed, or a
//! lease that expired) and one index serves the claim. Ack deletes the row only if the
//! token is still ours; nack clears the token and pushes `run_at_ms` out by the back-off,
//! or moves the row to `jobs_<name>_dead`.
//!
//! Times come from the server's clock (`clock_timestamp()`), so workers on different
//! machines agree on leases. Every statement is bounded by `op_timeout_ms`. This module
//! must never delete a job row except by an ack carrying its lease token or by moving it
//! to the dead letters.

use std::str::FromStr;
use std::sync::Arc;

use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::error::{JobsError, bounded};
use crate::redis_queue::truncate;
use crate::{
    Acked, DeadJob, Delivery, Enqueued, NackDecision, Nacked, NewJob, Queue, QueueConfig,
    QueueStats, Receipt,
};

/// The server's clock in ms, as a CTE.
const NOW: &str = "now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms)";

/// The statements for one queue, built once from its (validated) name.
#[derive(Debug)]
struct Sql {
    migrate: Vec<String>,
    enqueue: Arc<str>,
    enqueue_check: Arc<str>,
    expire: Arc<str>,
    reserve: Arc<str>,
    ack: Arc<str>,
    retry: Arc<str>,
    dead: Arc<str>,
    trim_dead: Arc<str>,
    stats: Arc<str>,
    dead_list: Arc<str>,
}

impl Sql {
    fn new(name: &str) -> Self {
        let t = format!("jobs_{name}");
        let d = format!("jobs_{name}_dead");
        let s = |x: String| Arc::<str>::from(x);
        Self {
            migrate: vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {t} (
                        id TEXT PRIMARY KEY,
                        seq BIGSERIAL NOT NULL,
                        payload BYTEA NOT NULL,
                        attempts INTEGER NOT NULL DEFAULT 0,
                        run_at_ms BIGINT NOT NULL,
                        enqueued_at_ms BIGINT NOT NULL,
                        lease_token BIGINT,
                        consumer TEXT,
                        last_error TEXT)"
                ),
                format!("CREATE INDEX IF NOT EXISTS {t}_run_at ON {t} (run_at_ms, seq)"),
                format!(
                    "CREATE INDEX IF NOT EXISTS {t}_leased ON {t} (run_at_ms)
                     WHERE lease_token IS NOT NULL"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {d} (
                        seq BIGSERIAL PRIMARY KEY,
                        id TEXT NOT NULL,
                        payload BYTEA NOT NULL,
                        attempts INTEGER NOT NULL,
                        enqueued_at_ms BIGINT NOT NULL,
                        dead_at_ms BIGINT NOT NULL,
                        last_error TEXT NOT NULL)"
                ),
            ],
            enqueue: s(format!(
                "WITH {NOW} INSERT INTO {t} (id, payload, attempts, run_at_ms, enqueued_at_ms)
                 SELECT $1, $2, 0, now.ms, now.ms FROM now
                 WHERE (SELECT count(*) FROM {t}) < $3
                 ON CONFLICT (id) DO NOTHING"
            )),
            enqueue_check: s(format!(
                "SELECT count(*), coalesce(bool_or(id = $1), false) FROM {t}"
            )),
            expire: s(format!(
                "WITH {NOW}, gone AS (
                    DELETE FROM {t} j USING now
                    WHERE j.lease_token IS NOT NULL AND j.run_at_ms <= now.ms
                      AND j.attempts >= $1
                    RETURNING j.id, j.payload, j.attempts, j.enqueued_at_ms)
                 INSERT INTO {d} (id, payload, attempts, enqueued_at_ms, dead_at_ms, last_error)
                 SELECT id, payload, attempts, enqueued_at_ms, (SELECT ms FROM now),
                        'lease expired (worker died or hung)'
                 FROM gone"
            )),
            reserve: s(format!(
                "WITH {NOW}, c AS (
                    SELECT j.id FROM {t} j, now
                    WHERE j.run_at_ms <= now.ms
                      AND NOT (j.lease_token IS NOT NULL AND j.attempts >= $4)
                    ORDER BY j.run_at_ms, j.seq
                    LIMIT $1
                    FOR UPDATE OF j SKIP LOCKED)
                 UPDATE {t} j SET attempts = j.attempts + 1, run_at_ms = now.ms + $2,
                                  lease_token = $3, consumer = $5
                 FROM c, now WHERE j.id = c.id
                 RETURNING j.id, j.payload, j.attempts, j.enqueued_at_ms"
            )),
            ack: s(format!(
                "DELETE FROM {t} WHERE id = $1 AND lease_token = $2"
            )),
            retry: s(format!(
                "WITH {NOW} UPDATE {t} SET lease_token = NULL, consumer = NULL,
                        run_at_ms = now.ms + $3, last_error = $4
                 FROM now WHERE id = $1 AND lease_token = $2"
            )),
            dead: s(format!(
                "WITH {NOW}, gone AS (
                    DELETE FROM {t} WHERE id = $1 AND lease_token = $2
                    RETURNING id, payload, attempts, enqueued_at_ms)
                 INSERT INTO {d} (id, payload, attempts, enqueued_at_ms, dead_at_ms, last_error)
                 SELECT id, payload, attempts, enqueued_at_ms, (SELECT ms FROM now), $3
                 FROM gone"
            )),
            trim_dead: s(format!(
                "DELETE FROM {d} WHERE seq <= (SELECT max(seq) FROM {d}) - $1"
            )),
            stats: s(format!(
                "WITH {NOW} SELECT
                    (SELECT count(*) FROM {t}, now WHERE run_at_ms <= now.ms),
                    (SELECT count(*) FROM {t}, now
                        WHERE lease_token IS NULL AND run_at_ms > now.ms),
                    (SELECT count(*) FROM {t}, now
                        WHERE lease_token IS NOT NULL AND run_at_ms > now.ms),
                    (SELECT count(*) FROM {d}),
                    (SELECT (SELECT ms FROM now) - min(enqueued_at_ms) FROM {t}, now
                        WHERE run_at_ms <= now.ms OR lease_token IS NOT NULL)
                 FROM now"
            )),
            dead_list: s(format!(
                "SELECT id, payload, attempts, last_error FROM {d} ORDER BY seq LIMIT $1"
            )),
        }
    }
}

/// A queue in a PostgreSQL table.
#[derive(Clone, Debug)]
pub struct PgQueue {
    pool: PgPool,
    cfg: QueueConfig,
    sql: Arc<Sql>,
}

impl PgQueue {
    /// Connects to `url` with `pool_size` connections and creates the tables.
    pub async fn connect(url: &str, cfg: QueueConfig) -> Result<Self, JobsError> {
        let opts = PgConnectOptions::from_str(url).map_err(|e| JobsError::Invalid {
            field: "queue url",
            reason: e.to_string(),
        })?;
        Self::connect_with(opts, cfg).await
    }

    /// Connects with explicit options (a schema in `search_path`, an `application_name`).
    pub async fn connect_with(opts: PgConnectOptions, cfg: QueueConfig) -> Result<Self, JobsError> {
        cfg.validate()?;
        let timeout = std::time::Duration::from_millis(cfg.op_timeout_ms);
        let pool = bounded(
            "postgres connect",
            cfg.op_timeout_ms,
            PgPoolOptions::new()
                .max_connections(cfg.pool_size)
                .acquire_timeout(timeout)
                .connect_with(opts),
        )
        .await?;
        Self::from_pool(pool, cfg).await
    }

    /// Uses an existing pool (the service's own) and creates the tables.
    pub async fn from_pool(pool: PgPool, cfg: QueueConfig) -> Result<Self, JobsError> {
        cfg.validate()?;
        let me = Self {
            sql: Arc::new(Sql::new(&cfg.name)),
            pool,
            cfg,
        };
        me.migrate().await?;
        Ok(me)
    }

    /// The pool (handlers may share it for their own transactions).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the tables, serialised across processes by an advisory lock (concurrent
    /// `CREATE TABLE IF NOT EXISTS` can otherwise fail on the catalog's unique index).
    async fn migrate(&self) -> Result<(), JobsError> {
        let ms = self.cfg.op_timeout_ms;
        let fut = async {
            let mut tx = self.pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(format!("jobs_{}", self.cfg.name))
                .execute(&mut *tx)
                .await?;
            for stmt in &self.sql.migrate {
                sqlx::query(AssertSqlSafe(stmt.as_str()))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        };
        bounded("postgres migrate", ms, fut).await
    }
}

impl Queue for PgQueue {
    fn config(&self) -> &QueueConfig {
        &self.cfg
    }

    async fn enqueue(&self, job: &NewJob) -> Result<Enqueued, JobsError> {
        crate::validate_job(job, &self.cfg)?;
        let ms = self.cfg.op_timeout_ms;
        let max = i64::try_from(self.cfg.max_depth).unwrap_or(i64::MAX);
        let r = bounded(
            "postgres enqueue",
            ms,
            sqlx::query(AssertSqlSafe(self.sql.enqueue.clone()))
                .bind(&job.id)
                .bind(&job.payload)
                .bind(max)
                .execute(&self.pool),
        )
        .await?;
        if r.rows_affected() == 1 {
            return Ok(Enqueued::Added);
        }
        let (depth, exists): (i64, bool) = bounded(
            "postgres enqueue check",
            ms,
            sqlx::query_as(AssertSqlSafe(self.sql.enqueue_check.clone()))
                .bind(&job.id)
                .fetch_one(&self.pool),
        )
        .await?;
        if exists {
            Ok(Enqueued::Duplicate)
        } else {
            Err(JobsError::Full {
                queue: self.cfg.name.clone(),
                depth: depth.max(0) as u64,
                max_depth: self.cfg.max_depth,
            })
        }
    }

    async fn reserve(&self, consumer: &str, max: usize) -> Result<Vec<Delivery>, JobsError> {
        crate::validate_consumer(consumer)?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let ms = self.cfg.op_timeout_ms;
        let attempts = i32::try_from(self.cfg.max_attempts).unwrap_or(i32::MAX);
        bounded(
            "postgres expire",
            ms,
            sqlx::query(AssertSqlSafe(self.sql.expire.clone()))
                .bind(attempts)
                .execute(&self.pool),
        )
        .await?;
        let token: i64 = rand::random();
        let rows: Vec<(String, Vec<u8>, i32, i64)> = bounded(
            "postgres reserve",
            ms,
            sqlx::query_as(AssertSqlSafe(self.sql.reserve.clone()))
                .bind(max.min(1_000) as i64)
                .bind(self.cfg.visibility_timeout_ms as i64)
                .bind(token)
                .bind(attempts)
                .bind(consumer)
                .fetch_all(&self.pool),
        )
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, payload, attempt, enq)| Delivery {
                id,
                payload,
                attempt: attempt.max(0) as u32,
                enqueued_at_ms: enq.max(0) as u64,
                consumer: consumer.to_string(),
                receipt: Receipt::Lease(token),
            })
            .collect())
    }

    async fn ack(&self, d: &Delivery) -> Result<Acked, JobsError> {
        let token = d.lease()?;
        let r = bounded(
            "postgres ack",
            self.cfg.op_timeout_ms,
            sqlx::query(AssertSqlSafe(self.sql.ack.clone()))
                .bind(&d.id)
                .bind(token)
                .execute(&self.pool),
        )
        .await?;
        Ok(if r.rows_affected() == 1 {
            Acked::Done
        } else {
            Acked::Stale
        })
    }

    async fn nack(&self, d: &Delivery, error: &str) -> Result<Nacked, JobsError> {
        let token = d.lease()?;
        let ms = self.cfg.op_timeout_ms;
        let err = truncate(error, 1024);
        match self.cfg.retry().decide(d.attempt, rand::random()) {
            NackDecision::Retry(delay) => {
                let r = bounded(
                    "postgres nack",
                    ms,
                    sqlx::query(AssertSqlSafe(self.sql.retry.clone()))
                        .bind(&d.id)
                        .bind(token)
                        .bind(delay as i64)
                        .bind(err)
                        .execute(&self.pool),
                )
                .await?;
                Ok(if r.rows_affected() == 1 {
                    Nacked::Retry { delay_ms: delay }
                } else {
                    Nacked::Stale
                })
            }
            NackDecision::DeadLetter => {
                let r = bounded(
                    "postgres dead-letter",
                    ms,
                    sqlx::query(AssertSqlSafe(self.sql.dead.clone()))
                        .bind(&d.id)
                        .bind(token)
                        .bind(err)
                        .execute(&self.pool),
                )
                .await?;
                if r.rows_affected() == 0 {
                    return Ok(Nacked::Stale);
                }
                bounded(
                    "postgres trim dead",
                    ms,
                    sqlx::query(AssertSqlSafe(self.sql.trim_dead.clone()))
                        .bind(self.cfg.max_dead as i64)
                        .execute(&self.pool),
                )
                .await?;
                Ok(Nacked::DeadLettered)
            }
        }
    }

    async fn stats(&self) -> Result<QueueStats, JobsError> {
        let row: crate::StatsRow = bounded(
            "postgres stats",
            self.cfg.op_timeout_ms,
            sqlx::query_as(AssertSqlSafe(self.sql.stats.clone())).fetch_one(&self.pool),
        )
        .await?;
        Ok(row.into())
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadJob>, JobsError> {
        let rows: Vec<(String, Vec<u8>, i32, String)> = bounded(
            "postgres dead letters",
            self.cfg.op_timeout_ms,
            sqlx::query_as(AssertSqlSafe(self.sql.dead_list.clone()))
                .bind(limit.clamp(1, 10_000) as i64)
                .fetch_all(&self.pool),
        )
        .await?;
        Ok(rows.into_iter().map(crate::dead_job).collect())
    }
}
