//! Background jobs on a shared queue, so any instance can enqueue and any worker can
//! process.
//!
//! Three backends implement one [`Queue`] trait:
//! - [`RedisQueue`]: Redis Streams with a consumer group (`XREADGROUP`, `XACK`,
//!   `XAUTOCLAIM`), a delayed set for back-off and a dead-letter stream (the default on
//!   the state tier);
//! - [`PgQueue`]: one PostgreSQL table, `SELECT … FOR UPDATE SKIP LOCKED` with a lease
//!   column (when Redis is absent);
//! - [`SqliteQueue`]: one SQLite table with a lease column, writers serialised by
//!   `BEGIN IMMEDIATE` (the embedded default).
//!
//! The contract, the same on every backend:
//! - **At-least-once.** [`Queue::reserve`] leases a job for the visibility timeout; it is
//!   removed only by [`Queue::ack`], which a worker calls after the handler's work has
//!   committed. A job whose lease expires (its worker died or hung) is handed to the next
//!   consumer that reserves, with its attempt count raised.
//! - **Idempotency by job id.** Enqueueing an id that is still queued is a no-op
//!   ([`Enqueued::Duplicate`]); handlers record the id in a processed-ids table in the same
//!   transaction as their effect ([`processed`]), so a redelivered job changes nothing twice.
//! - **Bounded.** The queue refuses new jobs past `max_depth` ([`JobsError::Full`]),
//!   payloads past `max_payload_bytes`, and keeps at most `max_dead` dead letters.
//! - **Retries with back-off, then dead letter.** [`Queue::nack`] schedules the job again
//!   after [`RetryPolicy::decide`]'s delay, or moves it to the dead letters after
//!   `max_attempts` deliveries (expired leases count as deliveries, so a job that kills its
//!   worker every time is dead-lettered too).
//!
//! [`Worker`] drives a queue with bounded concurrency, one cancellation token and a
//! graceful drain, and reports backlog metrics for scaling on queue depth and age.
//!
//! This crate must never drop a job that was not acked, and never ack before the handler
//! returned success.

mod config;
mod error;
mod metrics;
mod pg;
pub mod processed;
mod redis_queue;
mod retry;
mod sqlite;
mod worker;

use std::future::Future;

pub use config::{QueueConfig, WorkerConfig, validate_ident};
pub use error::{JobFailed, JobsError};
pub use metrics::render_prometheus;
pub use pg::PgQueue;
pub use redis_queue::RedisQueue;
pub use retry::{NackDecision, RetryPolicy};
pub use sqlite::SqliteQueue;
pub use worker::{Handler, Worker, WorkerCounters, WorkerMetrics, WorkerReport};

/// A job to enqueue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewJob {
    /// Caller-chosen id (1..=128 bytes of `[A-Za-z0-9._:-]`): the idempotency key. Use the
    /// business key (`order:42:confirm`) so a retried enqueue finds the queued job.
    pub id: String,
    /// Opaque payload (at most `max_payload_bytes`).
    pub payload: Vec<u8>,
}

impl NewJob {
    /// A job with `id` and `payload`.
    pub fn new(id: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            id: id.into(),
            payload: payload.into(),
        }
    }
}

/// What [`Queue::enqueue`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// The job was added.
    Added,
    /// A job with this id is already queued (ready, leased, waiting for a retry or dead):
    /// nothing changed.
    Duplicate,
}

/// Which lease a delivery holds; only the holder's ack or nack counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Receipt {
    /// The stream entry id (Redis).
    Entry(String),
    /// The lease token written with the lease (SQL).
    Lease(i64),
}

/// A job handed to a consumer by [`Queue::reserve`].
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The job id (the idempotency key).
    pub id: String,
    /// The payload as enqueued.
    pub payload: Vec<u8>,
    /// Which delivery this is: 1 the first time, 2 after one nack or expired lease, ...
    pub attempt: u32,
    /// When the job was first enqueued, in ms since the Unix epoch (the store's clock).
    pub enqueued_at_ms: u64,
    /// The consumer that holds the lease.
    pub consumer: String,
    pub(crate) receipt: Receipt,
}

/// What [`Queue::ack`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acked {
    /// The job is gone from the queue.
    Done,
    /// The lease was no longer ours (it expired and another consumer took the job, or the
    /// job was already acked). Harmless when the handler is idempotent by job id.
    Stale,
}

/// What [`Queue::nack`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nacked {
    /// The job runs again after `delay_ms`.
    Retry {
        /// Back-off before the next delivery.
        delay_ms: u64,
    },
    /// The job reached `max_attempts` and is now a dead letter.
    DeadLettered,
    /// The lease was no longer ours; nothing changed.
    Stale,
}

/// A snapshot of one queue, for metrics and scaling on the backlog.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Jobs a consumer could reserve now (including those whose lease expired).
    pub ready: u64,
    /// Jobs waiting for their retry back-off to pass.
    pub delayed: u64,
    /// Jobs leased to a consumer whose lease has not expired (in flight). On Redis this
    /// counts every pending entry, expired or not.
    pub leased: u64,
    /// Dead letters kept (at most `max_dead`).
    pub dead: u64,
    /// Age of the oldest job that is ready or leased, in ms (None when there is none).
    pub oldest_age_ms: Option<u64>,
}

impl QueueStats {
    /// Jobs not yet done: ready + delayed + leased (the backlog a scaler targets).
    pub fn depth(&self) -> u64 {
        self.ready + self.delayed + self.leased
    }
}

/// A job that exhausted its attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadJob {
    /// The job id.
    pub id: String,
    /// The payload as enqueued.
    pub payload: Vec<u8>,
    /// Deliveries made.
    pub attempts: u32,
    /// The last failure reported by a handler (or the expired-lease note).
    pub last_error: String,
}

/// A shared job queue. Every method is bounded by the queue's `op_timeout_ms`.
///
/// Implementations keep the contract in the crate docs: a job leaves the queue only by an
/// ack from its current lease holder or by dead-lettering.
pub trait Queue: Send + Sync + 'static {
    /// The queue's validated configuration.
    fn config(&self) -> &QueueConfig;

    /// Adds `job` unless a job with its id is queued; fails with [`JobsError::Full`] at
    /// `max_depth` (the bound may be overshot by the number of concurrent enqueuers).
    fn enqueue(&self, job: &NewJob) -> impl Future<Output = Result<Enqueued, JobsError>> + Send;

    /// Leases up to `max` jobs to `consumer` for the visibility timeout: ready jobs first,
    /// or jobs whose lease expired (their attempt count rises). Jobs past `max_attempts`
    /// found with an expired lease are dead-lettered instead of delivered.
    fn reserve(
        &self,
        consumer: &str,
        max: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>, JobsError>> + Send;

    /// Removes a delivered job; call only after the handler's work committed.
    fn ack(&self, delivery: &Delivery) -> impl Future<Output = Result<Acked, JobsError>> + Send;

    /// Reports a failed delivery: the job is retried after a back-off or dead-lettered.
    fn nack(
        &self,
        delivery: &Delivery,
        error: &str,
    ) -> impl Future<Output = Result<Nacked, JobsError>> + Send;

    /// Depth, in-flight, dead letters and the oldest job's age.
    fn stats(&self) -> impl Future<Output = Result<QueueStats, JobsError>> + Send;

    /// Up to `limit` dead letters, oldest first.
    fn dead_letters(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DeadJob>, JobsError>> + Send;

    /// Forgets `consumer` after a graceful drain (Redis removes it from the group when it
    /// holds no pending entry; SQL backends keep no per-consumer state).
    fn leave(&self, consumer: &str) -> impl Future<Output = Result<(), JobsError>> + Send {
        let _ = consumer;
        async { Ok(()) }
    }
}

/// Any of the three backends, chosen at start from a URL.
#[derive(Clone, Debug)]
pub enum AnyQueue {
    /// Redis Streams.
    Redis(RedisQueue),
    /// PostgreSQL.
    Postgres(PgQueue),
    /// SQLite.
    Sqlite(SqliteQueue),
}

impl AnyQueue {
    /// Connects by URL scheme: `redis://`, `postgres://` (or `postgresql://`), `sqlite:`.
    pub async fn connect(url: &str, cfg: QueueConfig) -> Result<Self, JobsError> {
        if url.starts_with("redis://") {
            Ok(Self::Redis(RedisQueue::connect(url, cfg).await?))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(PgQueue::connect(url, cfg).await?))
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite(SqliteQueue::connect(url, cfg).await?))
        } else {
            Err(JobsError::Invalid {
                field: "queue url",
                reason: "expected redis://, postgres:// or sqlite:".into(),
            })
        }
    }

    /// The backend's name: `redis`, `postgres` or `sqlite`.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Redis(_) => "redis",
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }
}

impl Queue for AnyQueue {
    fn config(&self) -> &QueueConfig {
        match self {
            Self::Redis(q) => q.config(),
            Self::Postgres(q) => q.config(),
            Self::Sqlite(q) => q.config(),
        }
    }

    async fn enqueue(&self, job: &NewJob) -> Result<Enqueued, JobsError> {
        match self {
            Self::Redis(q) => q.enqueue(job).await,
            Self::Postgres(q) => q.enqueue(job).await,
            Self::Sqlite(q) => q.enqueue(job).await,
        }
    }

    async fn reserve(&self, consumer: &str, max: usize) -> Result<Vec<Delivery>, JobsError> {
        match self {
            Self::Redis(q) => q.reserve(consumer, max).await,
            Self::Postgres(q) => q.reserve(consumer, max).await,
            Self::Sqlite(q) => q.reserve(consumer, max).await,
        }
    }

    async fn ack(&self, delivery: &Delivery) -> Result<Acked, JobsError> {
        match self {
            Self::Redis(q) => q.ack(delivery).await,
            Self::Postgres(q) => q.ack(delivery).await,
            Self::Sqlite(q) => q.ack(delivery).await,
        }
    }

    async fn nack(&self, delivery: &Delivery, error: &str) -> Result<Nacked, JobsError> {
        match self {
            Self::Redis(q) => q.nack(delivery, error).await,
            Self::Postgres(q) => q.nack(delivery, error).await,
            Self::Sqlite(q) => q.nack(delivery, error).await,
        }
    }

    async fn stats(&self) -> Result<QueueStats, JobsError> {
        match self {
            Self::Redis(q) => q.stats().await,
            Self::Postgres(q) => q.stats().await,
            Self::Sqlite(q) => q.stats().await,
        }
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadJob>, JobsError> {
        match self {
            Self::Redis(q) => q.dead_letters(limit).await,
            Self::Postgres(q) => q.dead_letters(limit).await,
            Self::Sqlite(q) => q.dead_letters(limit).await,
        }
    }

    async fn leave(&self, consumer: &str) -> Result<(), JobsError> {
        match self {
            Self::Redis(q) => q.leave(consumer).await,
            Self::Postgres(q) => q.leave(consumer).await,
            Self::Sqlite(q) => q.leave(consumer).await,
        }
    }
}

impl Delivery {
    /// The lease token of a delivery from a SQL queue.
    pub(crate) fn lease(&self) -> Result<i64, JobsError> {
        match self.receipt {
            Receipt::Lease(t) => Ok(t),
            Receipt::Entry(_) => Err(JobsError::Invalid {
                field: "delivery",
                reason: "not from a SQL queue".into(),
            }),
        }
    }
}

/// The SQL backends' stats row: ready, delayed, leased, dead, oldest age (ms).
pub(crate) type StatsRow = (i64, i64, i64, i64, Option<i64>);

impl From<StatsRow> for QueueStats {
    fn from((ready, delayed, leased, dead, age): StatsRow) -> Self {
        let n = |v: i64| v.max(0) as u64;
        QueueStats {
            ready: n(ready),
            delayed: n(delayed),
            leased: n(leased),
            dead: n(dead),
            oldest_age_ms: age.map(n),
        }
    }
}

/// A SQL backend's dead-letter row (attempts as the driver decodes it).
pub(crate) fn dead_job<A: TryInto<u32>>(
    (id, payload, attempts, last_error): (String, Vec<u8>, A, String),
) -> DeadJob {
    DeadJob {
        id,
        payload,
        attempts: attempts.try_into().unwrap_or(0),
        last_error,
    }
}

/// Checks a job id: 1..=128 bytes of `[A-Za-z0-9._:-]`.
pub fn validate_job_id(id: &str) -> Result<(), JobsError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(JobsError::Invalid {
            field: "job id",
            reason: format!("{id:?}: expected 1..=128 bytes of [A-Za-z0-9._:-]"),
        })
    }
}

/// Checks a job before it is sent to a store.
pub(crate) fn validate_job(job: &NewJob, cfg: &QueueConfig) -> Result<(), JobsError> {
    validate_job_id(&job.id)?;
    if job.payload.len() > cfg.max_payload_bytes {
        return Err(JobsError::Invalid {
            field: "payload",
            reason: format!(
                "{} bytes exceeds max_payload_bytes {}",
                job.payload.len(),
                cfg.max_payload_bytes
            ),
        });
    }
    Ok(())
}

/// Checks a consumer name: 1..=64 bytes of `[A-Za-z0-9._:-]`.
pub(crate) fn validate_consumer(consumer: &str) -> Result<(), JobsError> {
    let ok = !consumer.is_empty()
        && consumer.len() <= 64
        && consumer
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(JobsError::Invalid {
            field: "consumer",
            reason: format!("{consumer:?}: expected 1..=64 bytes of [A-Za-z0-9._:-]"),
        })
    }
}

/// Milliseconds since the Unix epoch by this process's clock (SQLite only: the other
/// backends use the store's clock so that leases agree across machines).
pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_checked_and_named() {
        assert!(validate_job_id("order:42:confirm").is_ok());
        assert!(validate_job_id(&"a".repeat(128)).is_ok());
        for bad in ["", "a b", "x\n", "é", &"a".repeat(129)] {
            let e = validate_job_id(bad).unwrap_err().to_string();
            assert!(e.contains("job id"), "{e}");
        }
    }

    #[test]
    fn payload_bound_is_enforced() {
        let cfg = QueueConfig {
            max_payload_bytes: 4,
            ..QueueConfig::default()
        };
        assert!(validate_job(&NewJob::new("a", *b"1234"), &cfg).is_ok());
        let e = validate_job(&NewJob::new("a", *b"12345"), &cfg).unwrap_err();
        assert!(e.to_string().contains("payload"), "{e}");
    }

    #[test]
    fn depth_sums_the_unfinished() {
        let s = QueueStats {
            ready: 3,
            delayed: 2,
            leased: 1,
            dead: 9,
            oldest_age_ms: Some(5),
        };
        assert_eq!(s.depth(), 6);
    }
}
