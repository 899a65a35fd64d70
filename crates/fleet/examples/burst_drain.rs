//! Time from a burst of jobs to an empty queue: the worker fleet scaled on the backlog vs a
//! fixed worker count (bench/jobs.sh, part "burst"). Real `scaleout shop --role worker`
//! processes on a real Redis queue; each job spends `EMAIL_MS` of simulated e-mail, so a
//! worker handles `concurrency x 1000 / EMAIL_MS` jobs/s and the backlog, not the CPU,
//! decides how many workers help. Runs alternate between the two fleets.
//!
//! usage: burst_drain SCALEOUT_BIN REDIS_URL JOBS EMAIL_MS ROUNDS
//! Prints one JSON line per run: fleet, jobs, seconds to drain, most workers ready.

use std::path::Path;
use std::time::{Duration, Instant};

use fleet::DeploymentConfig;
use fleet::workers::WorkersConfig;
use jobs::{AnyQueue, NewJob, Queue, QueueConfig};

const CONCURRENCY: usize = 2;

async fn run(exe: &Path, redis: &str, jobs: u64, email_ms: u64, autoscaled: bool, tag: &str) {
    let dir = std::env::temp_dir().join(format!("burst-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let queue = format!("burst{}{}", tag, std::process::id());
    let mut cfg = DeploymentConfig::default();
    cfg.fleet.data_dir = dir.clone();
    cfg.fleet.resources.enforce = false;
    cfg.fleet.child_output = fleet::config::ChildOutput::Null;
    cfg.service.args = vec![
        "--jobs-email-delay-ms".into(),
        email_ms.to_string(),
        "--seed-products".into(),
        "10".into(),
    ];
    let (min, max, start) = if autoscaled { (1, 4, 1) } else { (1, 1, 1) };
    cfg.workers = WorkersConfig {
        enabled: true,
        queue_url: redis.into(),
        queue: queue.clone(),
        instances: start,
        min_workers: min,
        max_workers: max,
        target_jobs_per_worker: 50,
        poll_ms: 250,
        scale_down_window_ms: 5_000,
        concurrency: CONCURRENCY,
        stop_grace_ms: 5_000,
        ..WorkersConfig::default()
    };
    cfg.validate().unwrap();
    let q = AnyQueue::connect(
        redis,
        QueueConfig {
            name: queue.clone(),
            ..QueueConfig::default()
        },
    )
    .await
    .unwrap();
    let w = fleet::workers::start(&cfg, exe, None)
        .await
        .unwrap()
        .unwrap();
    // Warm: the starting worker is ready before the burst.
    let warm = Instant::now();
    while w.handle().status().ready() < start as usize {
        assert!(warm.elapsed() < Duration::from_secs(60), "no worker ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t0 = Instant::now();
    for n in 0..jobs {
        q.enqueue(&NewJob::new(
            format!("order:b{n}:confirm"),
            format!("b{n}").into_bytes(),
        ))
        .await
        .unwrap();
    }
    let mut most = 0;
    let limit = Duration::from_millis(jobs * email_ms) + Duration::from_secs(120);
    loop {
        most = most.max(w.handle().status().ready());
        if q.stats().await.unwrap().depth() == 0 {
            break;
        }
        assert!(t0.elapsed() < limit, "not drained within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    w.stop().await;
    println!(
        "{}",
        serde_json::json!({
            "fleet": if autoscaled { "backlog autoscaler 1..=4, 50 jobs/worker" } else { "fixed 1 worker" },
            "jobs": jobs, "email_ms": email_ms, "concurrency": CONCURRENCY,
            "drain_s": (secs * 100.0).round() / 100.0, "most_ready": most,
        })
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 6 {
        eprintln!("usage: burst_drain SCALEOUT_BIN REDIS_URL JOBS EMAIL_MS ROUNDS");
        std::process::exit(2);
    }
    let exe = Path::new(&a[1]);
    let (jobs, email_ms, rounds): (u64, u64, usize) = (
        a[3].parse().unwrap(),
        a[4].parse().unwrap(),
        a[5].parse().unwrap(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for r in 0..rounds {
            run(exe, &a[2], jobs, email_ms, true, &format!("a{r}")).await;
            run(exe, &a[2], jobs, email_ms, false, &format!("f{r}")).await;
        }
    });
}
