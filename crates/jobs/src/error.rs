//! The crate's errors: invalid input (naming the field), a full queue, store failures
//! and timeouts. Handlers report failure with [`JobFailed`].

use std::fmt;

/// Errors from queues and workers.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// Bad configuration or input; `field` names it.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field or argument at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The queue holds `max_depth` jobs; shed the work or retry later.
    #[error("queue {queue} is full: {depth} jobs (max_depth {max_depth})")]
    Full {
        /// Queue name.
        queue: String,
        /// Jobs queued when the enqueue was refused.
        depth: u64,
        /// The configured bound.
        max_depth: u64,
    },
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// PostgreSQL or SQLite failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A store call did not finish within `op_timeout_ms`.
    #[error("{op} timed out after {ms} ms")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// The timeout.
        ms: u64,
    },
    /// The store answered something this crate did not expect.
    #[error("unexpected reply from the store: {0}")]
    Protocol(String),
}

/// A handler's failure; the job is retried or dead-lettered and `reason` is kept with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailed {
    /// Why the job failed (kept with the dead letter; do not put secrets here).
    pub reason: String,
}

impl JobFailed {
    /// A failure with `reason`.
    pub fn new(reason: impl fmt::Display) -> Self {
        Self {
            reason: reason.to_string(),
        }
    }
}

impl fmt::Display for JobFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl From<sqlx::Error> for JobFailed {
    fn from(e: sqlx::Error) -> Self {
        Self::new(e)
    }
}

impl From<redis::RedisError> for JobFailed {
    fn from(e: redis::RedisError) -> Self {
        Self::new(e)
    }
}

impl From<JobsError> for JobFailed {
    fn from(e: JobsError) -> Self {
        Self::new(e)
    }
}

/// Runs `fut` under `ms`, mapping elapse to [`JobsError::Timeout`].
pub(crate) async fn bounded<T, E>(
    op: &'static str,
    ms: u64,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, JobsError>
where
    JobsError: From<E>,
{
    match tokio::time::timeout(std::time::Duration::from_millis(ms), fut).await {
        Ok(r) => r.map_err(JobsError::from),
        Err(_) => Err(JobsError::Timeout { op, ms }),
    }
}
