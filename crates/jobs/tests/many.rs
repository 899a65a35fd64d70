//! 10,000 jobs through 4 workers (each its own consumer and connections) on each backend:
//! every job has exactly one effect, counted in the database, and nothing is left queued.

mod support;

use std::sync::Arc;
use std::time::Duration;

use jobs::{Enqueued, NewJob, Queue, QueueConfig, Worker, WorkerConfig};
use support::{Backend, EffectHandler, Place, wait_for};
use tokio_util::sync::CancellationToken;

const JOBS: usize = 10_000;
const WORKERS: usize = 4;

async fn ten_thousand_jobs(backend: Backend) {
    let place = Place::new(backend);
    let cfg = QueueConfig {
        max_depth: 20_000,
        visibility_timeout_ms: 30_000,
        ..place.queue_config()
    };
    let q = Arc::new(place.queue(cfg.clone(), "jobs-many").await);

    // Enqueue from 8 tasks at once, as several web instances would.
    let mut set = tokio::task::JoinSet::new();
    for part in 0..8 {
        let q = q.clone();
        set.spawn(async move {
            for i in (part..JOBS).step_by(8) {
                let r = q
                    .enqueue(&NewJob::new(format!("job-{i}"), i.to_string()))
                    .await
                    .unwrap();
                assert_eq!(r, Enqueued::Added);
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    // Enqueueing again while queued changes nothing.
    assert_eq!(
        q.enqueue(&NewJob::new("job-17", "17")).await.unwrap(),
        Enqueued::Duplicate
    );
    assert_eq!(q.stats().await.unwrap().depth(), JOBS as u64);

    let effects = place.effects("jobs-many-effects").await;
    let cancel = CancellationToken::new();
    let mut runs = Vec::new();
    let mut handlers = Vec::new();
    for w in 0..WORKERS {
        let name = format!("w{w}");
        // Each worker has its own queue connection, as separate processes would.
        let wq = Arc::new(place.queue(cfg.clone(), &format!("jobs-many-{w}")).await);
        let handler = EffectHandler::new(effects.clone(), &name);
        handlers.push(handler.clone());
        let worker = Worker::new(
            wq,
            handler,
            WorkerConfig {
                consumer: name,
                concurrency: 8,
                batch: 8,
                poll_interval_ms: 20,
                ..WorkerConfig::default()
            },
        )
        .unwrap();
        runs.push(tokio::spawn(worker.run(cancel.clone())));
    }
    wait_for("the queue drained", Duration::from_secs(600), || {
        let q = q.clone();
        async move { (q.stats().await.unwrap().depth() == 0).then_some(()) }
    })
    .await;
    cancel.cancel();
    let mut processed = 0;
    for r in runs {
        let rep = r.await.unwrap();
        assert_eq!(rep.abandoned, 0);
        assert_eq!(rep.counters.failed, 0, "{rep:?}");
        processed += rep.counters.processed;
    }
    let (rows, distinct, most) = effects.counts().await;
    assert_eq!(distinct, JOBS as i64, "jobs lost");
    assert_eq!(rows, JOBS as i64, "double effects");
    assert_eq!(most, 1);
    assert!(processed >= JOBS as u64);
    // Every worker took part (the queue is shared, not partitioned by accident).
    for h in &handlers {
        assert!(
            !h.seen.lock().unwrap().is_empty(),
            "{} did nothing",
            h.worker
        );
    }
    let s = q.stats().await.unwrap();
    assert_eq!((s.depth(), s.dead), (0, 0), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_jobs_redis() {
    ten_thousand_jobs(Backend::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_jobs_postgres() {
    ten_thousand_jobs(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_jobs_sqlite() {
    ten_thousand_jobs(Backend::Sqlite).await;
}
