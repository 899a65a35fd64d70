//! Queue throughput: enqueue N jobs, then drain them with W workers (each its own consumer
//! and store connections) running a handler that does nothing, so the figure is the
//! queue's own cost (reserve + ack round trips). Prints one JSON line per run.
//!
//! With a fifth argument (a PostgreSQL URL) the handler does real work instead: one
//! transaction that marks the job id processed and inserts an effect row, as an
//! idempotent handler would, so the figure is jobs per second with a handler.
//!
//! usage: jobs_bench <queue url> <jobs> <workers> [queue name] [effects postgres url]
//!   e.g. jobs_bench redis://127.0.0.1:6379 20000 4
//!        jobs_bench postgres://postgres@127.0.0.1:5432/postgres 20000 2
//!        jobs_bench sqlite:/tmp/jobs-bench.db 20000 1
//! The queue (Redis keys / tables named after the queue) is emptied of earlier runs'
//! leftovers by draining before the run starts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jobs::{
    AnyQueue, Delivery, Handler, JobFailed, NewJob, Queue, QueueConfig, Worker, WorkerConfig,
};
use tokio_util::sync::CancellationToken;

/// The benchmark's handler: nothing, or the idempotent effect in PostgreSQL.
#[derive(Debug, Clone)]
enum Work {
    Noop,
    Effect {
        pool: sqlx::PgPool,
        processed: String,
        effects: String,
    },
}

impl Handler for Work {
    async fn handle(&self, job: &Delivery) -> Result<(), JobFailed> {
        let Work::Effect {
            pool,
            processed,
            effects,
        } = self
        else {
            return Ok(());
        };
        let mut tx = pool.begin().await?;
        if jobs::processed::mark_pg(&mut tx, processed, &job.id).await? {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {effects} (job_id) VALUES ($1)"
            )))
            .bind(&job.id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Connects the effects pool and creates its tables (`<name>_done`, `<name>_effects`).
async fn effect_work(url: &str, name: &str) -> Work {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .connect(url)
        .await
        .expect("effects postgres");
    let processed = format!("{name}_done");
    let effects = format!("{name}_effects");
    let mut tx = pool.begin().await.expect("tx");
    jobs::processed::ensure_pg(&mut tx, &processed)
        .await
        .expect("processed table");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {effects} (job_id TEXT NOT NULL)"
    )))
    .execute(&mut *tx)
    .await
    .expect("effects table");
    tx.commit().await.expect("commit");
    Work::Effect {
        pool,
        processed,
        effects,
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: jobs_bench <queue url> <jobs> <workers> [queue name]");
        std::process::exit(2);
    }
    let url = &args[1];
    let jobs: usize = args[2].parse().expect("jobs: a number");
    let workers: usize = args[3].parse().expect("workers: a number");
    let name = args.get(4).cloned().unwrap_or_else(|| "bench".into());
    let work = match args.get(5) {
        Some(url) => effect_work(url, &name).await,
        None => Work::Noop,
    };
    let cfg = QueueConfig {
        name,
        max_depth: (jobs as u64) * 2 + 1_000,
        pool_size: 4,
        ..QueueConfig::default()
    };
    let q = Arc::new(AnyQueue::connect(url, cfg.clone()).await.expect("connect"));
    let backend = q.backend();

    // Leftovers from an interrupted run would skew the count: drain them first.
    drain(&q, workers.max(1), &cfg, url, &work).await;

    let run_id: u32 = rand::random();
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for part in 0..8 {
        let q = q.clone();
        set.spawn(async move {
            for i in (part..jobs).step_by(8) {
                q.enqueue(&NewJob::new(format!("b{run_id}-{i}"), *b"{}"))
                    .await
                    .expect("enqueue");
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("enqueue task");
    }
    let enqueue_s = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let processed = drain(&q, workers, &cfg, url, &work).await;
    let drain_s = t1.elapsed().as_secs_f64();
    println!(
        "{{\"backend\":\"{backend}\",\"handler\":\"{}\",\"workers\":{workers},\"jobs\":{jobs},\"processed\":{processed},\
         \"enqueue_per_s\":{:.0},\"drain_s\":{drain_s:.3},\"jobs_per_s\":{:.0}}}",
        if matches!(work, Work::Noop) {
            "noop"
        } else {
            "pg-effect"
        },
        jobs as f64 / enqueue_s,
        processed as f64 / drain_s
    );
}

/// Runs `workers` workers until the queue is empty; returns the jobs they processed.
async fn drain(
    q: &Arc<AnyQueue>,
    workers: usize,
    cfg: &QueueConfig,
    url: &str,
    work: &Work,
) -> u64 {
    let cancel = CancellationToken::new();
    let mut runs = Vec::new();
    for w in 0..workers {
        let wq = Arc::new(AnyQueue::connect(url, cfg.clone()).await.expect("connect"));
        let worker = Worker::new(
            wq,
            Arc::new(work.clone()),
            WorkerConfig {
                consumer: format!("bench-{}-{w}", std::process::id()),
                concurrency: 16,
                batch: 16,
                poll_interval_ms: 5,
                ..WorkerConfig::default()
            },
        )
        .expect("worker");
        runs.push(tokio::spawn(worker.run(cancel.clone())));
    }
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let s = q.stats().await.expect("stats");
        if s.depth() == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "not drained in 900 s: {s:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cancel.cancel();
    let mut processed = 0;
    for r in runs {
        processed += r.await.expect("worker").counters.processed;
    }
    processed
}
