//! PostgreSQL connections are killed (`pg_terminate_backend`) while workers run: jobs whose
//! store calls fail are redelivered, and no job is lost or done twice.

mod support;

use std::sync::Arc;
use std::time::Duration;

use jobs::{NewJob, Queue, QueueConfig, Worker, WorkerConfig};
use sqlx::Connection;
use support::{Backend, EffectHandler, PG_URL, Place, unique, wait_for};
use tokio_util::sync::CancellationToken;

const JOBS: usize = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_mid_run_lose_nothing() {
    let place = Place::new(Backend::Postgres);
    let app = unique("jobs_kill");
    let cfg = QueueConfig {
        visibility_timeout_ms: 2_000,
        max_attempts: 50,
        backoff_base_ms: 20,
        backoff_max_ms: 200,
        ..place.queue_config()
    };
    let q = Arc::new(place.queue(cfg.clone(), &app).await);
    for i in 0..JOBS {
        q.enqueue(&NewJob::new(format!("job-{i}"), *b""))
            .await
            .unwrap();
    }
    let effects = place.effects(&app).await;
    let cancel = CancellationToken::new();
    let mut runs = Vec::new();
    for w in 0..3 {
        let name = format!("w{w}");
        let wq = Arc::new(place.queue(cfg.clone(), &app).await);
        let worker = Worker::new(
            wq,
            EffectHandler::new(effects.clone(), &name),
            WorkerConfig {
                consumer: name,
                concurrency: 4,
                batch: 4,
                poll_interval_ms: 20,
                ..WorkerConfig::default()
            },
        )
        .unwrap();
        runs.push(tokio::spawn(worker.run(cancel.clone())));
    }

    // Kill every connection of this test's application_name, 5 rounds while work remains.
    let mut admin = sqlx::PgConnection::connect(PG_URL).await.expect("pg admin");
    let mut killed_total = 0i64;
    let mut rounds = 0;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if q.stats().await.map(|s| s.depth()).unwrap_or(1) == 0 {
            break;
        }
        let n: i64 = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&app)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        killed_total += n;
        rounds += 1;
    }
    assert!(
        rounds > 0 && killed_total > 0,
        "no connection was killed: the test proved nothing"
    );

    let q2 = q.clone();
    wait_for(
        "the queue drained after the kills",
        Duration::from_secs(300),
        move || {
            let q = q2.clone();
            async move { q.stats().await.ok().filter(|s| s.depth() == 0).map(|_| ()) }
        },
    )
    .await;
    cancel.cancel();
    let mut store_errors = 0;
    for r in runs {
        let rep = r.await.unwrap();
        store_errors += rep.counters.store_errors + rep.counters.failed;
    }
    let (rows, distinct, most) = effects.counts().await;
    assert_eq!(distinct, JOBS as i64, "jobs lost");
    assert_eq!(rows, JOBS as i64, "double effects");
    assert_eq!(most, 1);
    let s = q.stats().await.unwrap();
    assert_eq!(s.dead, 0, "{s:?}");
    eprintln!(
        "killed {killed_total} connections in {rounds} rounds; {store_errors} failed store/handler calls recovered"
    );
}
