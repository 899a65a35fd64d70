//! Queue and worker configuration: serde with defaults, unknown fields refused, and one
//! `validate` that names the offending field.

use serde::{Deserialize, Serialize};

use crate::error::JobsError;

/// One queue's settings (the same for every backend).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Queue name, `[a-z0-9_]`, 1..=40 bytes: part of the table name (`jobs_<name>`) and of
    /// the Redis keys (`jobs:{<name>}:...`).
    pub name: String,
    /// How long a reserved job stays invisible to other consumers; a job not acked within
    /// it is redelivered. Longer than the slowest handler.
    pub visibility_timeout_ms: u64,
    /// Deliveries before a job is dead-lettered (expired leases count).
    pub max_attempts: u32,
    /// First retry back-off; doubles per attempt, with jitter.
    pub backoff_base_ms: u64,
    /// Back-off cap.
    pub backoff_max_ms: u64,
    /// Jobs the queue holds at most (ready + delayed + leased); enqueue past it fails.
    pub max_depth: u64,
    /// Largest payload accepted.
    pub max_payload_bytes: usize,
    /// Dead letters kept at most; the oldest go first.
    pub max_dead: u64,
    /// Timeout on every call to the store.
    pub op_timeout_ms: u64,
    /// Connections to the store (SQL backends).
    pub pool_size: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            name: "jobs".into(),
            visibility_timeout_ms: 30_000,
            max_attempts: 5,
            backoff_base_ms: 1_000,
            backoff_max_ms: 60_000,
            max_depth: 100_000,
            max_payload_bytes: 64 * 1024,
            max_dead: 10_000,
            op_timeout_ms: 5_000,
            pool_size: 4,
        }
    }
}

impl QueueConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), JobsError> {
        validate_ident("name", &self.name, 40)?;
        let positive = [
            ("visibility_timeout_ms", self.visibility_timeout_ms),
            ("max_attempts", u64::from(self.max_attempts)),
            ("backoff_base_ms", self.backoff_base_ms),
            ("max_depth", self.max_depth),
            ("max_payload_bytes", self.max_payload_bytes as u64),
            ("max_dead", self.max_dead),
            ("op_timeout_ms", self.op_timeout_ms),
            ("pool_size", u64::from(self.pool_size)),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(invalid(field, "must be > 0"));
            }
        }
        if self.backoff_max_ms < self.backoff_base_ms {
            return Err(invalid("backoff_max_ms", "must be >= backoff_base_ms"));
        }
        // Bounds that keep the arithmetic and the stores' integer columns safe.
        if self.visibility_timeout_ms > 86_400_000 {
            return Err(invalid("visibility_timeout_ms", "must be <= 1 day"));
        }
        if self.backoff_max_ms > 86_400_000 {
            return Err(invalid("backoff_max_ms", "must be <= 1 day"));
        }
        if self.max_attempts > 1_000 {
            return Err(invalid("max_attempts", "must be <= 1000"));
        }
        if self.max_payload_bytes > 16 * 1024 * 1024 {
            return Err(invalid("max_payload_bytes", "must be <= 16 MiB"));
        }
        Ok(())
    }

    /// The retry policy these settings describe.
    pub fn retry(&self) -> crate::RetryPolicy {
        crate::RetryPolicy {
            max_attempts: self.max_attempts,
            base_ms: self.backoff_base_ms,
            max_ms: self.backoff_max_ms,
        }
    }
}

/// One worker's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// This worker's consumer name, unique per worker (a dead consumer's jobs are claimed
    /// by others after the visibility timeout). `[A-Za-z0-9._:-]`, 1..=64 bytes. Default:
    /// `worker-<pid>-<random>`.
    pub consumer: String,
    /// Jobs handled at once at most.
    pub concurrency: usize,
    /// Jobs reserved per round trip at most (never more than the free slots).
    pub batch: usize,
    /// Pause before polling again when the queue was empty.
    pub poll_interval_ms: u64,
    /// On cancellation: how long in-flight jobs may take to finish; jobs still running
    /// then are abandoned and redelivered after their lease expires.
    pub drain_grace_ms: u64,
    /// A handler running longer than this is cancelled and its job nacked (0: the queue's
    /// visibility timeout).
    pub handler_timeout_ms: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            // pid alone can repeat across machines; two workers sharing a name would
            // share one pending list.
            consumer: format!(
                "worker-{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ),
            concurrency: 8,
            batch: 8,
            poll_interval_ms: 100,
            drain_grace_ms: 10_000,
            handler_timeout_ms: 0,
        }
    }
}

impl WorkerConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), JobsError> {
        crate::validate_consumer(&self.consumer)?;
        if self.concurrency == 0 || self.concurrency > 10_000 {
            return Err(invalid("concurrency", "must be in 1..=10000"));
        }
        if self.batch == 0 || self.batch > 1_000 {
            return Err(invalid("batch", "must be in 1..=1000"));
        }
        if self.poll_interval_ms == 0 || self.poll_interval_ms > 60_000 {
            return Err(invalid("poll_interval_ms", "must be in 1..=60000"));
        }
        Ok(())
    }
}

fn invalid(field: &'static str, reason: &str) -> JobsError {
    JobsError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Checks a name used inside SQL identifiers and Redis keys: `[a-z0-9_]`, 1..=`max` bytes,
/// not starting with a digit.
pub fn validate_ident(field: &'static str, s: &str, max: usize) -> Result<(), JobsError> {
    let ok = !s.is_empty()
        && s.len() <= max
        && !s.as_bytes()[0].is_ascii_digit()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(JobsError::Invalid {
            field,
            reason: format!(
                "{s:?}: expected 1..={max} bytes of [a-z0-9_], not starting with a digit"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        QueueConfig::default().validate().unwrap();
        WorkerConfig::default().validate().unwrap();
    }

    #[test]
    fn bad_fields_are_named() {
        let cases: Vec<(QueueConfig, &str)> = vec![
            (
                QueueConfig {
                    name: "Jobs".into(),
                    ..Default::default()
                },
                "name",
            ),
            (
                QueueConfig {
                    name: "a;drop".into(),
                    ..Default::default()
                },
                "name",
            ),
            (
                QueueConfig {
                    max_attempts: 0,
                    ..Default::default()
                },
                "max_attempts",
            ),
            (
                QueueConfig {
                    max_depth: 0,
                    ..Default::default()
                },
                "max_depth",
            ),
            (
                QueueConfig {
                    backoff_base_ms: 10,
                    backoff_max_ms: 5,
                    ..Default::default()
                },
                "backoff_max_ms",
            ),
        ];
        for (cfg, field) in cases {
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
        let w = WorkerConfig {
            concurrency: 0,
            ..Default::default()
        };
        assert!(
            w.validate()
                .unwrap_err()
                .to_string()
                .contains("concurrency")
        );
        let w = WorkerConfig {
            consumer: "a b".into(),
            ..Default::default()
        };
        assert!(w.validate().unwrap_err().to_string().contains("consumer"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = toml_like("visibility_timeout_ms = 5\nvisibilty = 3").unwrap_err();
        assert!(e.contains("visibilty"), "{e}");
    }

    /// Minimal `key = int` parser through serde's value model, to avoid a toml dependency.
    fn toml_like(s: &str) -> Result<QueueConfig, String> {
        use serde::de::IntoDeserializer;
        use serde::de::value::{Error, MapDeserializer};
        let pairs: Vec<(String, u64)> = s
            .lines()
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap();
                (k.trim().to_string(), v.trim().parse().unwrap())
            })
            .collect();
        let de: MapDeserializer<'_, _, Error> = MapDeserializer::new(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into_deserializer(), v.into_deserializer())),
        );
        QueueConfig::deserialize(de).map_err(|e| e.to_string())
    }
}
