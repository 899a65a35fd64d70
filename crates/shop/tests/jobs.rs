//! Checkout's order confirmation on a real job queue (Redis Streams and SQLite): the
//! request enqueues after its transaction committed, a worker confirms the order exactly
//! once, and a worker SIGKILLed mid-job leaves the order to be confirmed, once, by another
//! worker after the visibility timeout. `--jobs inline` confirms in the request.
//!
//! The killed worker is a real child process: this test binary re-executed to run only
//! `child_worker` (which does nothing unless `SHOP_JOBS_CHILD=1`).

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::*;
use jobs::{AnyQueue, Queue};
use shop::ShopConfig;
use shop::jobs::JobsMode;
use tokio_util::sync::CancellationToken;

/// A queue name no other test run uses.
fn queue_name() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

fn queue_config(tag: &str, url: &str) -> ShopConfig {
    ShopConfig {
        jobs: JobsMode::Queue,
        jobs_url: Some(url.into()),
        jobs_queue: queue_name(),
        ..sqlite_config(tag)
    }
}

fn sqlite_queue_url(cfg: &ShopConfig) -> String {
    // Next to the shop's database file, so each test has its own.
    format!("{}.jobs", cfg.db)
}

/// Places one order for a new user; returns the order id.
async fn place_order(st: &Arc<shop::AppState>, name: &str, key: &str) -> String {
    let t = user(st, name).await;
    let (s, _, b) = call(
        st,
        "POST",
        "/cart",
        Some(&t),
        Some(r#"{"product_id":1,"quantity":2}"#),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _, o) = call(
        st,
        "POST",
        "/orders",
        Some(&t),
        None,
        &[("idempotency-key", key)],
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{o}");
    // The replay enqueues again (idempotent by the job id) and answers the same order.
    let (s, _, o2) = call(
        st,
        "POST",
        "/orders",
        Some(&t),
        None,
        &[("idempotency-key", key)],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{o2}");
    assert_eq!(o["id"], o2["id"]);
    o["id"].as_str().unwrap().to_string()
}

/// Polls until `order_id` has a confirmation, for at most `limit`.
async fn wait_confirmed(st: &Arc<shop::AppState>, order_id: &str, limit: Duration) -> i64 {
    let start = Instant::now();
    loop {
        let n = shop::jobs::confirmations(&st.db, order_id).await.unwrap();
        if n > 0 || start.elapsed() > limit {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn queue_then_worker(cfg: ShopConfig) {
    let st = state(&cfg).await;
    let order = place_order(&st, "qbuyer", "k-1").await;
    // Nothing confirms in the request with a queue.
    assert_eq!(shop::jobs::confirmations(&st.db, &order).await.unwrap(), 0);
    let cancel = CancellationToken::new();
    let worker = tokio::spawn(shop::jobs::run_worker(cfg.clone(), cancel.clone()));
    let n = wait_confirmed(&st, &order, Duration::from_secs(20)).await;
    // Give a duplicate delivery (the replay's enqueue) time to run too, then stop.
    let q = AnyQueue::connect(
        cfg.jobs_url.as_deref().unwrap(),
        shop::jobs::queue_config(&cfg),
    )
    .await
    .unwrap();
    let start = Instant::now();
    while q.stats().await.unwrap().depth() > 0 && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(q.stats().await.unwrap().depth(), 0, "the queue drained");
    cancel.cancel();
    worker.await.unwrap().unwrap();
    assert_eq!(n, 1, "confirmed by the worker");
    assert_eq!(shop::jobs::confirmations(&st.db, &order).await.unwrap(), 1);
    assert_eq!(
        count(&st, "SELECT COUNT(*) FROM order_confirmations").await,
        1,
        "exactly one confirmation in effect"
    );
}

#[tokio::test]
async fn checkout_enqueues_and_a_worker_confirms_on_redis() {
    queue_then_worker(queue_config("jobs-redis", &redis_url())).await;
}

#[tokio::test]
async fn checkout_enqueues_and_a_worker_confirms_on_sqlite() {
    let mut cfg = queue_config("jobs-sqlite", "sqlite:x");
    cfg.jobs_url = Some(sqlite_queue_url(&cfg));
    queue_then_worker(cfg).await;
}

#[tokio::test]
async fn inline_confirms_in_the_request() {
    let st = state(&sqlite_config("jobs-inline")).await;
    let order = place_order(&st, "ibuyer", "k-1").await;
    assert_eq!(shop::jobs::confirmations(&st.db, &order).await.unwrap(), 1);
    assert_eq!(
        count(&st, "SELECT COUNT(*) FROM shop_jobs_processed").await,
        1,
        "the replay's confirmation found the processed mark"
    );
}

/// Kills the child (SIGKILL) and reaps it when dropped.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill(); // SIGKILL on Unix
            let _ = c.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

const VISIBILITY_MS: u64 = 2_000;
const CHILD_EMAIL_DELAY_MS: u64 = 1_900;

/// The child: one shop worker whose "e-mail" stalls each job, until killed.
#[test]
fn child_worker() {
    if std::env::var("SHOP_JOBS_CHILD").as_deref() != Ok("1") {
        return;
    }
    let cfg = ShopConfig {
        db: std::env::var("SHOP_JOBS_DB").unwrap(),
        jobs_url: Some(std::env::var("SHOP_JOBS_URL").unwrap()),
        jobs_queue: std::env::var("SHOP_JOBS_QUEUE").unwrap(),
        jobs_visibility_timeout_ms: VISIBILITY_MS,
        jobs_email_delay_ms: CHILD_EMAIL_DELAY_MS,
        seed_products: 100,
        ..ShopConfig::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(shop::jobs::run_worker(cfg, CancellationToken::new()))
        .unwrap();
}

async fn sigkill_mid_job(mut cfg: ShopConfig) {
    cfg.jobs_visibility_timeout_ms = VISIBILITY_MS;
    let st = state(&cfg).await;
    let t = user(&st, "kbuyer").await;
    let (s, _, b) = call(
        &st,
        "POST",
        "/cart",
        Some(&t),
        Some(r#"{"product_id":1,"quantity":1}"#),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _, o) = call(
        &st,
        "POST",
        "/orders",
        Some(&t),
        None,
        &[("idempotency-key", "k")],
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{o}");
    let order = o["id"].as_str().unwrap().to_string();

    let exe = std::env::current_exe().unwrap();
    let mut child = ChildGuard(Some(
        Command::new(exe)
            .args(["--exact", "child_worker", "--nocapture", "--test-threads=1"])
            .env("SHOP_JOBS_CHILD", "1")
            .env("SHOP_JOBS_DB", &cfg.db)
            .env("SHOP_JOBS_URL", cfg.jobs_url.as_deref().unwrap())
            .env("SHOP_JOBS_QUEUE", &cfg.jobs_queue)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    // Wait until the child leased the job (it then stalls in its "e-mail"), then kill it.
    let q = AnyQueue::connect(
        cfg.jobs_url.as_deref().unwrap(),
        shop::jobs::queue_config(&cfg),
    )
    .await
    .unwrap();
    let start = Instant::now();
    loop {
        let s = q.stats().await.unwrap();
        if s.leased == 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the child never leased the job: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill();
    assert_eq!(
        shop::jobs::confirmations(&st.db, &order).await.unwrap(),
        0,
        "killed before its commit"
    );
    // Another worker takes the job over once the lease expired.
    let cancel = CancellationToken::new();
    let worker = tokio::spawn(shop::jobs::run_worker(cfg.clone(), cancel.clone()));
    let n = wait_confirmed(&st, &order, Duration::from_millis(VISIBILITY_MS * 10)).await;
    let start = Instant::now();
    while q.stats().await.unwrap().depth() > 0 && start.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    worker.await.unwrap().unwrap();
    assert_eq!(n, 1, "redelivered and confirmed");
    assert_eq!(
        count(&st, "SELECT COUNT(*) FROM order_confirmations").await,
        1
    );
    assert_eq!(
        count(&st, "SELECT COUNT(*) FROM shop_jobs_processed").await,
        1
    );
    assert_eq!(q.stats().await.unwrap().depth(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_of_a_worker_mid_job_confirms_once_on_redis() {
    sigkill_mid_job(queue_config("jobs-kill-redis", &redis_url())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_of_a_worker_mid_job_confirms_once_on_sqlite() {
    let mut cfg = queue_config("jobs-kill-sqlite", "sqlite:x");
    cfg.jobs_url = Some(sqlite_queue_url(&cfg));
    sigkill_mid_job(cfg).await;
}

/// A fresh PostgreSQL database for a queue (so its tables do not pile up in `postgres`).
async fn pg_queue_url(tag: &str) -> String {
    fresh_pg_database(tag).await.0
}

#[tokio::test]
async fn checkout_enqueues_and_a_worker_confirms_on_postgres() {
    let url = pg_queue_url("jobsq").await;
    queue_then_worker(queue_config("jobs-pg", &url)).await;
}

#[tokio::test]
async fn postgres_shop_and_queue_in_one_database() {
    // The shop's own database doubles as the queue: the job tables sit beside the orders.
    let url = pg_queue_url("jobsdb").await;
    let cfg = ShopConfig {
        db: url.clone(),
        pool_size: 4,
        ..queue_config("jobs-pg-db", &url)
    };
    queue_then_worker(cfg).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_of_a_worker_mid_job_confirms_once_on_postgres() {
    let url = pg_queue_url("jobsk").await;
    sigkill_mid_job(queue_config("jobs-kill-pg", &url)).await;
}
