//! Checkout latency with the order confirmation done inline vs enqueued (bench/jobs.sh,
//! part "checkout"). Each mode gets its own shop state on a fresh SQLite file (the same
//! checkout work), driven through the router in process (no HTTP, no balancer: what is
//! compared is the work inside the request). `CONC` users check out in parallel, each
//! `POST /cart` then `POST /orders`; only `POST /orders` is timed. Rounds interleave the
//! modes so a noisy machine hurts each alike. No worker runs: the queue only grows.
//!
//! usage: checkout_p99 ROUNDS CHECKOUTS_PER_ROUND CONC EMAIL_MS MODE...
//!   MODE: inline | redis | postgres | sqlite (the queue backend of `--jobs queue`)
//! Prints one JSON line per mode with p50/p99/mean in ms over all rounds.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use shop::ShopConfig;
use shop::jobs::JobsMode;
use tower::ServiceExt;

async fn call(
    st: &Arc<shop::AppState>,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
    key: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    if let Some(k) = key {
        b = b.header("idempotency-key", k);
    }
    let req = b
        .body(body.map(Body::from).unwrap_or(Body::empty()))
        .unwrap();
    let resp = shop::app(st.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

struct Mode {
    name: String,
    st: Arc<shop::AppState>,
    tokens: Vec<String>,
    samples_us: Vec<u64>,
}

async fn setup(name: &str, conc: usize, email_ms: u64, dir: &std::path::Path) -> Mode {
    let db = format!("sqlite:{}", dir.join(format!("{name}.db")).display());
    let queue = queue_name();
    let (jobs, jobs_url) = match name {
        "inline" => (JobsMode::Inline, None),
        "redis" => (JobsMode::Queue, Some("redis://127.0.0.1:6379".to_string())),
        "postgres" => (
            JobsMode::Queue,
            Some("postgres://postgres@127.0.0.1:5432/postgres".to_string()),
        ),
        "sqlite" => (
            JobsMode::Queue,
            Some(format!("sqlite:{}", dir.join("queue.db").display())),
        ),
        other => panic!("unknown mode {other}"),
    };
    let cfg = ShopConfig {
        db,
        jobs,
        jobs_url,
        jobs_queue: queue,
        jobs_email_delay_ms: email_ms,
        seed_products: 1000,
        jwt_secret: shop::secret::generate_key().unwrap(),
        hash_concurrency: 2,
        pool_size: 8,
        ..ShopConfig::default()
    };
    let st = shop::build_state(&cfg).await.unwrap();
    let mut tokens = Vec::new();
    for n in 0..conc {
        let creds = format!(r#"{{"username":"u{n}","password":"pw-bench-{n}-123"}}"#);
        let (s, b) = call(&st, "POST", "/signup", None, Some(creds.clone()), None).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let (s, b) = call(&st, "POST", "/login", None, Some(creds), None).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        tokens.push(b["token"].as_str().unwrap().to_string());
    }
    Mode {
        name: name.to_string(),
        st,
        tokens,
        samples_us: Vec::new(),
    }
}

async fn round(m: &mut Mode, checkouts: usize, round: usize) {
    let per_user = checkouts.div_ceil(m.tokens.len());
    let mut tasks = Vec::new();
    for (u, token) in m.tokens.iter().enumerate() {
        let (st, token) = (m.st.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(per_user);
            for k in 0..per_user {
                let product = 1 + (u * 31 + k * 7) % 1000;
                let body = format!(r#"{{"product_id":{product},"quantity":1}}"#);
                let (s, b) = call(&st, "POST", "/cart", Some(&token), Some(body), None).await;
                assert_eq!(s, StatusCode::OK, "{b}");
                let key = format!("r{round}-u{u}-k{k}");
                let t = Instant::now();
                let (s, b) = call(&st, "POST", "/orders", Some(&token), None, Some(&key)).await;
                let us = t.elapsed().as_micros() as u64;
                assert_eq!(s, StatusCode::CREATED, "{b}");
                out.push(us);
            }
            out
        }));
    }
    for t in tasks {
        m.samples_us.extend(t.await.unwrap());
    }
}

fn queue_name() -> String {
    format!("ckbench{}", std::process::id())
}

/// Leaves no queue keys or tables behind (the queue only grew: no worker ran).
async fn cleanup() {
    let q = queue_name();
    if let Ok(c) = redis::Client::open("redis://127.0.0.1:6379")
        && let Ok(mut c) = c.get_multiplexed_async_connection().await
    {
        let mut cmd = redis::cmd("DEL");
        for k in ["stream", "ids", "delayed", "held", "meta", "dead", "prune"] {
            cmd.arg(format!("jobs:{{{q}}}:{k}"));
        }
        let _: Result<i64, _> = cmd.query_async(&mut c).await;
    }
    if let Ok(pool) = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/postgres").await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS jobs_{q}, jobs_{q}_dead"
        )))
        .execute(&pool)
        .await;
    }
}

fn quantile(sorted: &[u64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 6 {
        eprintln!("usage: checkout_p99 ROUNDS CHECKOUTS_PER_ROUND CONC EMAIL_MS MODE...");
        std::process::exit(2);
    }
    let rounds: usize = args[1].parse().unwrap();
    let checkouts: usize = args[2].parse().unwrap();
    let conc: usize = args[3].parse().unwrap();
    let email_ms: u64 = args[4].parse().unwrap();
    let names = &args[5..];
    let dir = std::env::temp_dir().join(format!("checkout-p99-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut modes = Vec::new();
        for n in names {
            modes.push(setup(n, conc, email_ms, &dir).await);
        }
        // One unmeasured warm-up round each.
        for m in &mut modes {
            round(m, conc, usize::MAX).await;
            m.samples_us.clear();
        }
        for r in 0..rounds {
            for m in &mut modes {
                round(m, checkouts, r).await;
            }
        }
        for m in &mut modes {
            m.samples_us.sort_unstable();
            let s = &m.samples_us;
            let mean = s.iter().sum::<u64>() as f64 / s.len() as f64 / 1000.0;
            println!(
                "{}",
                serde_json::json!({
                    "mode": m.name, "email_ms": email_ms, "checkouts": s.len(), "conc": conc,
                    "p50_ms": quantile(s, 0.5), "p99_ms": quantile(s, 0.99),
                    "mean_ms": (mean * 100.0).round() / 100.0,
                })
            );
        }
        cleanup().await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}
