//! The worker loop: reserve jobs while a slot is free, run the handler, ack after it
//! succeeded, nack when it failed; stop reserving on cancellation and let in-flight jobs
//! finish within a grace period.
//!
//! Concurrency is bounded by a semaphore: the loop reserves only as many jobs as it has
//! free permits, and each job task holds its permit until it acked or nacked. Store errors
//! back off (up to 1 s) instead of spinning. This module must never ack a job whose
//! handler did not return `Ok`, and never reserve after the token was cancelled.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{Acked, Delivery, JobFailed, JobsError, Nacked, Queue, QueueStats, WorkerConfig};

/// The work done for one job. Make it idempotent by job id: record `job.id` in a
/// processed-ids table in the same transaction as the effect ([`crate::processed`]), and
/// return `Ok` only after that transaction committed.
pub trait Handler: Send + Sync + 'static {
    /// Handles one delivery; `Err` retries it (with back-off) or dead-letters it.
    fn handle(&self, job: &Delivery) -> impl Future<Output = Result<(), JobFailed>> + Send;
}

/// Counters of one worker (monotonic except `in_flight`).
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    in_flight: AtomicU64,
    processed: AtomicU64,
    failed: AtomicU64,
    dead_lettered: AtomicU64,
    stale: AtomicU64,
    store_errors: AtomicU64,
}

/// A snapshot of [`WorkerMetrics`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerCounters {
    /// Jobs being handled now.
    pub in_flight: u64,
    /// Jobs whose handler succeeded and whose ack was sent (acked or found stale).
    pub processed: u64,
    /// Handler failures (each nack, including those that dead-lettered).
    pub failed: u64,
    /// Jobs this worker moved to the dead letters.
    pub dead_lettered: u64,
    /// Acks or nacks that found the lease gone (the job was redelivered meanwhile).
    pub stale: u64,
    /// Store calls that failed (reserve, ack, nack); the jobs concerned are redelivered
    /// after their lease expires.
    pub store_errors: u64,
}

impl WorkerMetrics {
    /// The current values.
    pub fn snapshot(&self) -> WorkerCounters {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WorkerCounters {
            in_flight: g(&self.in_flight),
            processed: g(&self.processed),
            failed: g(&self.failed),
            dead_lettered: g(&self.dead_lettered),
            stale: g(&self.stale),
            store_errors: g(&self.store_errors),
        }
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerReport {
    /// The counters at the end.
    pub counters: WorkerCounters,
    /// Jobs still running when the drain grace ran out (they are redelivered later).
    pub abandoned: u64,
}

/// A worker: one consumer of one queue.
#[derive(Debug)]
pub struct Worker<Q: Queue, H: Handler> {
    queue: Arc<Q>,
    handler: Arc<H>,
    cfg: WorkerConfig,
    metrics: Arc<WorkerMetrics>,
}

impl<Q: Queue, H: Handler> Worker<Q, H> {
    /// A worker for `queue` running `handler`; `cfg` is validated here.
    pub fn new(queue: Arc<Q>, handler: Arc<H>, cfg: WorkerConfig) -> Result<Self, JobsError> {
        cfg.validate()?;
        Ok(Self {
            queue,
            handler,
            cfg,
            metrics: Arc::new(WorkerMetrics::default()),
        })
    }

    /// The worker's counters (shared; read them while it runs).
    pub fn metrics(&self) -> Arc<WorkerMetrics> {
        self.metrics.clone()
    }

    /// The queue's backlog and this worker's counters: what an autoscaler reads.
    pub async fn backlog(&self) -> Result<(QueueStats, WorkerCounters), JobsError> {
        Ok((self.queue.stats().await?, self.metrics.snapshot()))
    }

    /// Runs until `cancel` fires, then drains: no new reservation, in-flight jobs get
    /// `drain_grace_ms` to finish.
    pub async fn run(self, cancel: CancellationToken) -> WorkerReport {
        let slots = Arc::new(Semaphore::new(self.cfg.concurrency));
        let tasks = TaskTracker::new();
        let poll = Duration::from_millis(self.cfg.poll_interval_ms);
        let handler_timeout = Duration::from_millis(if self.cfg.handler_timeout_ms == 0 {
            self.queue.config().visibility_timeout_ms
        } else {
            self.cfg.handler_timeout_ms
        });
        let mut error_backoff = poll;
        loop {
            let first = tokio::select! {
                _ = cancel.cancelled() => break,
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break, // never closed; treated as shutdown
                },
            };
            let mut permits = vec![first];
            while permits.len() < self.cfg.batch {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            if cancel.is_cancelled() {
                break;
            }
            // Not raced against `cancel`: a reserve cut short could lease jobs nobody
            // sees until their lease expires. It is bounded by `op_timeout_ms`.
            let batch = match self.queue.reserve(&self.cfg.consumer, permits.len()).await {
                Ok(b) => {
                    error_backoff = poll;
                    b
                }
                Err(e) => {
                    self.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "reserve failed; backing off");
                    drop(permits);
                    sleep_or_cancel(error_backoff, &cancel).await;
                    error_backoff = (error_backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            if batch.is_empty() {
                drop(permits);
                sleep_or_cancel(poll, &cancel).await;
                continue;
            }
            for job in batch {
                // A backend never returns more than asked; if one did, the job would be
                // redelivered after its lease, never lost.
                let Some(permit) = permits.pop() else { break };
                let queue = self.queue.clone();
                let handler = self.handler.clone();
                let metrics = self.metrics.clone();
                tasks.spawn(async move {
                    // Released on drop, so a handler that panics frees its slot and its
                    // in-flight count; its job, never acked, is redelivered after the lease.
                    let _slot = InFlight::enter(metrics.clone(), permit);
                    process(&*queue, &*handler, &metrics, job, handler_timeout).await;
                });
            }
        }
        tasks.close();
        let grace = Duration::from_millis(self.cfg.drain_grace_ms);
        let abandoned = match tokio::time::timeout(grace, tasks.wait()).await {
            Ok(()) => 0,
            Err(_) => self.metrics.in_flight.load(Ordering::Relaxed),
        };
        if abandoned == 0
            && let Err(e) = self.queue.leave(&self.cfg.consumer).await
        {
            tracing::warn!(error = %e, "leaving the consumer group failed");
        }
        WorkerReport {
            counters: self.metrics.snapshot(),
            abandoned,
        }
    }
}

/// One job's hold on a concurrency slot and on the in-flight count.
struct InFlight {
    metrics: Arc<WorkerMetrics>,
    _permit: OwnedSemaphorePermit,
}

impl InFlight {
    fn enter(metrics: Arc<WorkerMetrics>, permit: OwnedSemaphorePermit) -> Self {
        metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        Self {
            metrics,
            _permit: permit,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Handles one job and acks or nacks it.
async fn process<Q: Queue, H: Handler>(
    queue: &Q,
    handler: &H,
    metrics: &WorkerMetrics,
    job: Delivery,
    timeout: Duration,
) {
    let outcome = match tokio::time::timeout(timeout, handler.handle(&job)).await {
        Ok(r) => r,
        Err(_) => Err(JobFailed::new(format!(
            "handler timed out after {} ms",
            timeout.as_millis()
        ))),
    };
    match outcome {
        Ok(()) => {
            metrics.processed.fetch_add(1, Ordering::Relaxed);
            match queue.ack(&job).await {
                Ok(Acked::Done) => {}
                Ok(Acked::Stale) => {
                    metrics.stale.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(job = %job.id, error = %e, "ack failed; job will be redelivered");
                }
            }
        }
        Err(failure) => {
            metrics.failed.fetch_add(1, Ordering::Relaxed);
            match queue.nack(&job, &failure.reason).await {
                Ok(Nacked::Retry { .. }) => {}
                Ok(Nacked::DeadLettered) => {
                    metrics.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(job = %job.id, attempt = job.attempt, "job dead-lettered");
                }
                Ok(Nacked::Stale) => {
                    metrics.stale.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(job = %job.id, error = %e, "nack failed; job will be redelivered");
                }
            }
        }
    }
}

async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}
