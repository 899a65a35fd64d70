//! The worker fleet of `scaleout up` (`[workers]`) on a real Redis queue, with real
//! `scaleout shop --role worker` processes: at zero on an empty queue; a backlog wakes it
//! and scales it out (more than one worker); the backlog drains with every job's effect
//! counted exactly once in the database; the fleet scales back to zero after the cooldown,
//! and a single new job wakes it again.

use std::time::{Duration, Instant};

use fleet::DeploymentConfig;
use fleet::workers::WorkersConfig;
use jobs::{AnyQueue, NewJob, Queue, QueueConfig};

const BIN: &str = env!("CARGO_BIN_EXE_scaleout");

fn redis_url() -> String {
    std::env::var("SCALEOUT_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Jobs enqueued in the burst.
const BURST: u64 = 240;
/// Simulated e-mail per job, ms (so a worker has a rate and a backlog lasts).
const EMAIL_MS: u64 = 100;

async fn wait_until(limit: Duration, what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    loop {
        if cond().await {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn confirmations(db: &str) -> i64 {
    let pool = sqlx::SqlitePool::connect(db).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM order_confirmations")
        .fetch_one(&pool)
        .await
        .unwrap_or(0);
    pool.close().await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_scale_on_the_backlog_to_zero_and_back() {
    let dir = testkit::temp_dir("workers");
    let queue = format!("wf{}", std::process::id());
    let mut cfg = DeploymentConfig::default();
    cfg.fleet.data_dir = dir.clone();
    cfg.fleet.resources.enforce = false;
    cfg.fleet.child_output = fleet::config::ChildOutput::Null;
    cfg.service.args = vec![
        "--jobs-email-delay-ms".into(),
        EMAIL_MS.to_string(),
        "--seed-products".into(),
        "10".into(),
    ];
    cfg.workers = WorkersConfig {
        enabled: true,
        queue_url: redis_url(),
        queue: queue.clone(),
        instances: 0,
        min_workers: 0,
        max_workers: 3,
        target_jobs_per_worker: 40,
        poll_ms: 200,
        scale_down_window_ms: 1_000,
        cooldown_ms: 2_000,
        concurrency: 2,
        stop_grace_ms: 5_000,
        ..WorkersConfig::default()
    };
    cfg.validate().unwrap();
    let db = format!("sqlite:{}/shop.db", dir.canonicalize().unwrap().display());
    let w = fleet::workers::start(&cfg, std::path::Path::new(BIN), None)
        .await
        .unwrap()
        .expect("enabled");
    let q = AnyQueue::connect(
        &redis_url(),
        QueueConfig {
            name: queue.clone(),
            ..QueueConfig::default()
        },
    )
    .await
    .unwrap();
    let poll = Duration::from_millis(cfg.workers.poll_ms);
    // An empty queue: the fleet stays at zero.
    tokio::time::sleep(poll * 5).await;
    assert_eq!(w.handle().status().active(), 0, "{:?}", w.status());
    assert_eq!(w.status().desired, 0);

    for n in 0..BURST {
        let id = format!("order:burst-{n}:confirm");
        q.enqueue(&NewJob::new(id, format!("burst-{n}").into_bytes()))
            .await
            .unwrap();
    }
    // 240 jobs / 40 per worker = 6, capped at 3: the fleet wakes and scales out.
    let mut most_ready = 0;
    let ready_limit = Duration::from_secs(60);
    wait_until(ready_limit, "more than one ready worker", async || {
        most_ready = most_ready.max(w.handle().status().ready());
        most_ready >= 2
    })
    .await;
    // 3 workers x 2 at a time x 10 jobs/s each: ~4 s; generous bound from the config.
    let drain_limit = Duration::from_millis(BURST * EMAIL_MS) + Duration::from_secs(60);
    wait_until(drain_limit, "the backlog to drain", async || {
        most_ready = most_ready.max(w.handle().status().ready());
        q.stats().await.unwrap().depth() == 0
    })
    .await;
    assert_eq!(
        confirmations(&db).await,
        BURST as i64,
        "each job's effect once"
    );
    assert!(most_ready >= 2, "scaled out: at most {most_ready} ready");
    // Back to zero after the cooldown (plus stop grace and polls).
    let idle_limit = Duration::from_millis(
        cfg.workers.cooldown_ms + cfg.workers.scale_down_window_ms + cfg.workers.stop_grace_ms,
    ) + Duration::from_secs(30);
    wait_until(idle_limit, "scale to zero", async || {
        w.handle().status().instances.is_empty()
    })
    .await;
    assert_eq!(w.status().desired, 0, "{:?}", w.status());
    // One job wakes it again.
    q.enqueue(&NewJob::new("order:late:confirm", b"late".to_vec()))
        .await
        .unwrap();
    wait_until(ready_limit, "a worker woken by one job", async || {
        confirmations(&db).await == BURST as i64 + 1
    })
    .await;
    let status = w.status();
    w.stop().await;
    assert!(status.changes >= 3, "{status:?}");
    assert_eq!(q.stats().await.unwrap().depth(), 0);
}
