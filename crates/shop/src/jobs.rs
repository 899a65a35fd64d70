//! Work moved out of the checkout request: order confirmation as a background job on a
//! shared queue (`crates/jobs`), processed by `scaleout shop --role worker`.
//!
//! After a checkout's transaction committed, [`after_checkout`] either confirms the order
//! in the request (`--jobs inline`, the old behaviour, for comparison) or enqueues the job
//! `order:<id>:confirm` (`--jobs queue`, on `--jobs-url`). The job id is the order's, so
//! an enqueue retried by a replayed checkout finds the queued job and adds nothing.
//!
//! Both modes run the same effect, [`confirm_order`]: one write transaction that records
//! the job id in `shop_jobs_processed` and inserts the `order_confirmations` row, so a
//! redelivered job (its worker was killed after the commit, before the ack) changes
//! nothing twice. The optional `jobs_email_delay_ms` stands for the slow confirmation
//! e-mail, spent before the transaction (a worker killed during it leaves nothing behind
//! and the redelivery does the work).
//!
//! This module must never ack (return `Ok` from the handler) before the confirmation's
//! transaction committed, and never enqueue before the order's transaction committed.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use ::jobs::{AnyQueue, Delivery, Handler, JobFailed, NewJob, Queue, QueueConfig, WorkerConfig};

use crate::config::ShopConfig;
use crate::db::{AnyPool, Db};
use crate::error::{AppError, ShopError};
use crate::metrics::Metrics;
use crate::userdata::ShardedUserData;
use crate::write_tx;

/// The default queue name (tables `jobs_shop`, Redis keys `jobs:{shop}:...`).
pub const QUEUE_NAME: &str = "shop";
/// Processed-ids table of the shop's handlers.
pub const PROCESSED_TABLE: &str = "shop_jobs_processed";

/// Where checkout's after-commit work runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobsMode {
    /// In the request, before the response (the old behaviour; needs no worker).
    #[default]
    Inline,
    /// Enqueued on `jobs_url`; `scaleout shop --role worker` processes it.
    Queue,
}

impl std::str::FromStr for JobsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "inline" => Ok(Self::Inline),
            "queue" => Ok(Self::Queue),
            o => Err(format!("unknown jobs mode `{o}` (inline|queue)")),
        }
    }
}

/// Checks the jobs fields of `cfg`; the message names the field.
pub fn validate(cfg: &ShopConfig) -> Result<(), ShopError> {
    if let Some(url) = &cfg.jobs_url
        && !(url.starts_with("redis://")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://")
            || url.starts_with("sqlite:"))
    {
        return Err(ShopError::Config(
            "jobs_url: expected redis://, postgres:// or sqlite:".into(),
        ));
    }
    ::jobs::validate_ident("jobs_queue", &cfg.jobs_queue, 40)
        .map_err(|e| ShopError::Config(e.to_string()))?;
    if cfg.jobs == JobsMode::Queue && cfg.jobs_url.is_none() {
        return Err(ShopError::Config(
            "jobs_url: required with jobs = queue (the shared queue every instance and worker uses)".into(),
        ));
    }
    if cfg.jobs_visibility_timeout_ms == 0 || cfg.jobs_visibility_timeout_ms > 86_400_000 {
        return Err(ShopError::Config(
            "jobs_visibility_timeout_ms: must be in 1..=86400000".into(),
        ));
    }
    if cfg.jobs_email_delay_ms >= cfg.jobs_visibility_timeout_ms {
        return Err(ShopError::Config(
            "jobs_email_delay_ms: must be shorter than jobs_visibility_timeout_ms (a job is redelivered after it)".into(),
        ));
    }
    Ok(())
}

/// The queue settings the shop uses (shared by web instances and workers).
pub fn queue_config(cfg: &ShopConfig) -> QueueConfig {
    QueueConfig {
        name: cfg.jobs_queue.clone(),
        visibility_timeout_ms: cfg.jobs_visibility_timeout_ms,
        op_timeout_ms: cfg.store_timeout_ms,
        ..QueueConfig::default()
    }
}

/// The job id of an order's confirmation (the idempotency key of the job).
pub fn confirm_job_id(order_id: &str) -> String {
    format!("order:{order_id}:confirm")
}

/// The order id in a confirmation job's id, if it is one.
pub fn order_of_job(job_id: &str) -> Option<&str> {
    job_id
        .strip_prefix("order:")
        .and_then(|r| r.strip_suffix(":confirm"))
        .filter(|id| !id.is_empty())
}

/// Checkout's after-commit work of one instance.
#[derive(Debug, Clone)]
pub enum ShopJobs {
    /// Confirm in the request.
    Inline {
        /// Simulated e-mail delay, spent in the request.
        email_delay: Duration,
    },
    /// Enqueue on the shared queue.
    Queue(Arc<AnyQueue>),
}

impl ShopJobs {
    /// Connects the queue (queue mode) or returns the inline mode.
    pub async fn connect(cfg: &ShopConfig) -> Result<Self, ShopError> {
        match (cfg.jobs, &cfg.jobs_url) {
            (JobsMode::Queue, Some(url)) => {
                let q = AnyQueue::connect(url, queue_config(cfg))
                    .await
                    .map_err(|e| ShopError::Config(format!("jobs_url: {e}")))?;
                tracing::info!(
                    backend = q.backend(),
                    "checkout enqueues order confirmations"
                );
                Ok(Self::Queue(Arc::new(q)))
            }
            (JobsMode::Queue, None) => Err(ShopError::Config(
                "jobs_url: required with jobs = queue".into(),
            )),
            (JobsMode::Inline, _) => Ok(Self::Inline {
                email_delay: Duration::from_millis(cfg.jobs_email_delay_ms),
            }),
        }
    }
}

/// Creates `order_confirmations` and the processed-ids table if missing.
pub async fn ensure_tables(db: &Db) -> Result<(), ShopError> {
    let ddl = "CREATE TABLE IF NOT EXISTS order_confirmations (
        order_id TEXT PRIMARY KEY, job_id TEXT NOT NULL, confirmed_at BIGINT NOT NULL)";
    match db.primary() {
        AnyPool::Sqlite(p) => {
            let mut c = p.acquire().await?;
            sqlx::query(ddl).execute(&mut *c).await?;
            ::jobs::processed::ensure_sqlite(&mut c, PROCESSED_TABLE)
                .await
                .map_err(jobs_err)?;
        }
        AnyPool::Pg(p) => {
            let mut tx = p.begin().await?;
            // ensure_pg takes an advisory lock for the transaction; the DDL runs under it.
            ::jobs::processed::ensure_pg(&mut tx, PROCESSED_TABLE)
                .await
                .map_err(jobs_err)?;
            sqlx::query(ddl).execute(&mut *tx).await?;
            tx.commit().await?;
        }
    }
    Ok(())
}

fn jobs_err(e: ::jobs::JobsError) -> ShopError {
    ShopError::Internal(format!("jobs: {e}"))
}

/// The effect of a confirmation job, idempotent by `job_id`: one transaction records the
/// job as processed and confirms `order_id`. `true` when this call confirmed it, `false`
/// when the job had been processed before (nothing changed).
pub async fn confirm_order(
    db: &Db,
    job_id: &str,
    order_id: &str,
    now_ms: i64,
) -> Result<bool, ShopError> {
    let done = write_tx!(db, tx => {
        let first = mark_any(&mut *tx, job_id).await?;
        if first {
            sqlx::query(
                "INSERT INTO order_confirmations (order_id, job_id, confirmed_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (order_id) DO NOTHING",
            )
            .bind(order_id)
            .bind(job_id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        first
    });
    Ok(done)
}

/// Records `job_id` in the processed-ids table inside the caller's transaction.
trait MarkProcessed {
    async fn mark(&mut self, job_id: &str) -> Result<bool, ShopError>;
}

impl MarkProcessed for sqlx::SqliteConnection {
    async fn mark(&mut self, job_id: &str) -> Result<bool, ShopError> {
        ::jobs::processed::mark_sqlite(self, PROCESSED_TABLE, job_id)
            .await
            .map_err(jobs_err)
    }
}

impl MarkProcessed for sqlx::PgConnection {
    async fn mark(&mut self, job_id: &str) -> Result<bool, ShopError> {
        ::jobs::processed::mark_pg(self, PROCESSED_TABLE, job_id)
            .await
            .map_err(jobs_err)
    }
}

async fn mark_any<C: MarkProcessed>(conn: &mut C, job_id: &str) -> Result<bool, ShopError> {
    conn.mark(job_id).await
}

/// Confirmations recorded for `order_id` (0 or 1), for tests and the demo.
pub async fn confirmations(db: &Db, order_id: &str) -> Result<i64, ShopError> {
    let n = crate::on_pool!(db.primary(), p => {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM order_confirmations WHERE order_id = $1")
            .bind(order_id)
            .fetch_one(p)
            .await?
    });
    Ok(n)
}

/// Checkout's after-commit hook: confirm `order_id` now (inline) or enqueue its
/// confirmation. Called for created and for replayed orders, so a client retrying with
/// the same key after a failed enqueue gets the job queued (the id makes it idempotent).
pub async fn after_checkout(
    jobs: &ShopJobs,
    db: &Db,
    order_id: &str,
    now_ms: i64,
) -> Result<(), AppError> {
    let job_id = confirm_job_id(order_id);
    match jobs {
        ShopJobs::Inline { email_delay } => {
            if !email_delay.is_zero() {
                tokio::time::sleep(*email_delay).await;
            }
            confirm_order(db, &job_id, order_id, now_ms).await?;
        }
        ShopJobs::Queue(q) => {
            let job = NewJob::new(job_id, order_id.as_bytes().to_vec());
            q.enqueue(&job).await.map_err(|e| {
                tracing::warn!(error = %e, "enqueueing an order confirmation failed; the client's retry with its key re-enqueues");
                AppError::Store(ShopError::Internal(format!("jobs: {e}")))
            })?;
        }
    }
    Ok(())
}

/// The worker's handler: confirms the order a job names.
#[derive(Debug)]
pub struct ConfirmHandler {
    db: Arc<Db>,
    email_delay: Duration,
}

impl ConfirmHandler {
    /// A handler writing to `db`, spending `email_delay` before each confirmation.
    pub fn new(db: Arc<Db>, email_delay: Duration) -> Self {
        Self { db, email_delay }
    }
}

impl Handler for ConfirmHandler {
    async fn handle(&self, job: &Delivery) -> Result<(), JobFailed> {
        let Some(order_id) = order_of_job(&job.id) else {
            // Retrying cannot help; it goes to the dead letters after max_attempts.
            return Err(JobFailed::new(format!("not a shop job id: {}", job.id)));
        };
        if job.payload != order_id.as_bytes() {
            return Err(JobFailed::new("payload does not match the job id"));
        }
        if !self.email_delay.is_zero() {
            tokio::time::sleep(self.email_delay).await;
        }
        let now = crate::http::now_ms() as i64;
        match confirm_order(&self.db, &job.id, order_id, now).await {
            Ok(true) => tracing::debug!(order = order_id, "order confirmed"),
            Ok(false) => tracing::info!(order = order_id, "confirmation redelivered; already done"),
            Err(e) => return Err(JobFailed::new(e)),
        }
        Ok(())
    }
}

/// The stock reconciliation as a job (see `crate::reconcile`).
#[derive(Debug)]
struct ReconcileJob {
    db: Arc<Db>,
    shards: Arc<ShardedUserData>,
    lease_ms: u64,
}

/// The worker's handler: order confirmations and stock reconciliation runs, by job id.
#[derive(Debug)]
pub struct ShopHandler {
    confirm: ConfirmHandler,
    reconcile: Option<ReconcileJob>,
}

impl Handler for ShopHandler {
    async fn handle(&self, job: &Delivery) -> Result<(), JobFailed> {
        if !crate::reconcile::is_job(&job.id) {
            return self.confirm.handle(job).await;
        }
        let Some(r) = &self.reconcile else {
            // A worker without the shard map has no reservations to look at; a worker
            // with it will enqueue its own run.
            tracing::debug!(job = %job.id, "stock reconciliation needs --shard-map; nothing to do here");
            return Ok(());
        };
        let now = crate::http::now_ms() as i64;
        let report = crate::reconcile::reconcile_stock(
            &r.db,
            &r.shards,
            r.lease_ms,
            now,
            crate::reconcile::RECONCILE_BATCH,
        )
        .await
        .map_err(JobFailed::new)?;
        if report.released + report.settled > 0 {
            tracing::info!(?report, "stock reconciliation");
        }
        Ok(())
    }
}

/// Enqueues a stock reconciliation run every `interval` until `cancel` (the job id names
/// the interval's slot, so the enqueues of several workers in one slot make one job while
/// it is queued).
async fn schedule_reconciliation(
    queue: Arc<AnyQueue>,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let id = crate::reconcile::job_id(crate::http::now_ms(), interval.as_millis() as u64);
        if let Err(e) = queue.enqueue(&NewJob::new(id, Vec::<u8>::new())).await {
            tracing::warn!(error = %e, "enqueueing the stock reconciliation failed; next interval retries");
        }
    }
}

/// `scaleout shop --role worker`: processes the shop's jobs from `jobs_url` until
/// `shutdown` fires, then drains (in-flight jobs get their grace; the rest are
/// redelivered to other workers after the visibility timeout). With `shard_map` it also
/// schedules the stock reconciliation; with `metrics_listen` it serves `/healthz`,
/// `/readyz` (the queue answers) and `/metrics` (backlog and this worker's counters)
/// there, which is what `scaleout up`'s worker fleet probes.
pub async fn run_worker(cfg: ShopConfig, shutdown: CancellationToken) -> Result<(), ShopError> {
    cfg.validate()?;
    let Some(url) = cfg.jobs_url.clone() else {
        return Err(ShopError::Config(
            "jobs_url: required for --role worker".into(),
        ));
    };
    let metrics = Arc::new(Metrics::default());
    let shards = match &cfg.shard_map {
        Some(path) => {
            let map = ShardedUserData::load_map(path)?;
            Some(Arc::new(
                ShardedUserData::connect(&map, &cfg, &metrics).await?,
            ))
        }
        None => None,
    };
    let db = Db::connect(&cfg, metrics).await?;
    ensure_tables(&db).await?;
    let queue = Arc::new(
        AnyQueue::connect(&url, queue_config(&cfg))
            .await
            .map_err(|e| ShopError::Config(format!("jobs_url: {e}")))?,
    );
    let handler = ShopHandler {
        confirm: ConfirmHandler::new(db.clone(), Duration::from_millis(cfg.jobs_email_delay_ms)),
        reconcile: shards.clone().map(|shards| ReconcileJob {
            db: db.clone(),
            shards,
            lease_ms: cfg.stock_lease_ms,
        }),
    };
    let wcfg = WorkerConfig {
        concurrency: cfg.jobs_concurrency,
        batch: cfg.jobs_concurrency.min(32),
        ..WorkerConfig::default()
    };
    tracing::info!(backend = queue.backend(), consumer = %wcfg.consumer, "shop worker started");
    let worker = ::jobs::Worker::new(queue.clone(), Arc::new(handler), wcfg)
        .map_err(|e| ShopError::Config(format!("jobs worker: {e}")))?;
    let side = CancellationToken::new();
    if shards.is_some() {
        tokio::spawn(schedule_reconciliation(
            queue.clone(),
            Duration::from_millis(cfg.reconcile_interval_ms),
            side.clone(),
        ));
    }
    if let Some(addr) = &cfg.metrics_listen {
        let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            ShopError::Config(format!("metrics_listen: cannot listen on {addr}: {e}"))
        })?;
        tracing::info!(listen = %l.local_addr()?, "worker health and metrics served");
        let app = worker_app(queue.clone(), worker.metrics(), cfg.jobs_queue.clone());
        let stop = side.clone();
        tokio::spawn(
            axum::serve(l, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .into_future(),
        );
    }
    let report = worker.run(shutdown).await;
    side.cancel();
    tracing::info!(
        processed = report.counters.processed,
        failed = report.counters.failed,
        abandoned = report.abandoned,
        "shop worker stopped"
    );
    Ok(())
}

/// A worker's small HTTP face: `/healthz` (alive), `/readyz` (the queue answers: 200, else
/// 503) and `/metrics` (the queue's backlog and this worker's counters, Prometheus text).
pub fn worker_app(
    queue: Arc<AnyQueue>,
    metrics: Arc<::jobs::WorkerMetrics>,
    queue_name: String,
) -> axum::Router {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;
    let ready_q = queue.clone();
    axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let q = ready_q.clone();
                async move {
                    match q.stats().await {
                        Ok(_) => (StatusCode::OK, "ready").into_response(),
                        Err(e) => {
                            tracing::warn!(error = %e, "queue unreachable");
                            (StatusCode::SERVICE_UNAVAILABLE, "queue unreachable").into_response()
                        }
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let (q, m, name) = (queue.clone(), metrics.clone(), queue_name.clone());
                async move {
                    match q.stats().await {
                        Ok(stats) => (
                            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                            ::jobs::render_prometheus(&name, &stats, &m.snapshot()),
                        )
                            .into_response(),
                        Err(e) => {
                            tracing::warn!(error = %e, "queue unreachable");
                            StatusCode::SERVICE_UNAVAILABLE.into_response()
                        }
                    }
                }
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_round_trip() {
        let id = confirm_job_id("0193-abc");
        assert_eq!(id, "order:0193-abc:confirm");
        assert_eq!(order_of_job(&id), Some("0193-abc"));
        assert_eq!(order_of_job("order::confirm"), None);
        assert_eq!(order_of_job("other:1"), None);
        ::jobs::validate_job_id(&confirm_job_id(&uuid::Uuid::now_v7().to_string())).unwrap();
    }

    #[test]
    fn queue_mode_needs_a_url_and_fields_are_named() {
        let mut c = ShopConfig {
            jobs: JobsMode::Queue,
            ..ShopConfig::default()
        };
        let e = validate(&c).unwrap_err().to_string();
        assert!(e.contains("jobs_url"), "{e}");
        c.jobs_url = Some("amqp://x".into());
        let e = validate(&c).unwrap_err().to_string();
        assert!(e.contains("jobs_url"), "{e}");
        c.jobs_url = Some("redis://127.0.0.1:6379".into());
        validate(&c).unwrap();
        c.jobs_email_delay_ms = c.jobs_visibility_timeout_ms;
        let e = validate(&c).unwrap_err().to_string();
        assert!(e.contains("jobs_email_delay_ms"), "{e}");
        assert_eq!("queue".parse::<JobsMode>(), Ok(JobsMode::Queue));
        assert!("later".parse::<JobsMode>().is_err());
    }
}
