//! Against the real PostgreSQL primary (5432) and its streaming replica (5433, started by
//! scripts/services with pg_basebackup -R): read-your-writes over 1,000 writes, reads
//! really served by the replica, lagging replicas skipped, and the connection math.
//! Each test uses its own database (CREATE DATABASE on the primary replicates).

mod common;

use axum::http::StatusCode;
use common::*;
use shop::metrics::DbRole;
use shop::{CacheKind, ShopConfig, ShopError};

fn pg_config(primary: &str, replica: &str, tag: &str) -> ShopConfig {
    ShopConfig {
        db: primary.into(),
        replica: vec![replica.into()],
        seed_products: 50,
        jwt_secret: SECRET.clone(),
        instance_id: format!("pg-{tag}"),
        cache: Some(CacheKind::None),
        pool_size: 4,
        ..ShopConfig::default()
    }
}

async fn ryw_run(cfg: ShopConfig, writes: i64) {
    let st = state(&cfg).await;
    assert!(st.db.has_replicas());
    let t = user(&st, "rywuser").await;
    let mut stale = 0;
    for i in 1..=writes {
        let pid = (i % 50) + 1;
        let (s, _, b) = call(
            &st,
            "POST",
            "/cart",
            Some(&t),
            Some(&format!(r#"{{"product_id":{pid},"quantity":1}}"#)),
            &[],
        )
        .await;
        assert_eq!(s, StatusCode::OK, "write {i}: {b}");
        let want = b["quantity"].as_i64().unwrap();
        let (s, _, cart) = call(&st, "GET", "/cart", Some(&t), None, &[]).await;
        assert_eq!(s, StatusCode::OK);
        let got = cart["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["product_id"] == pid)
            .and_then(|l| l["quantity"].as_i64())
            .unwrap_or(0);
        if got != want {
            stale += 1;
        }
    }
    let m = &st.metrics;
    let (replica_reads, primary_reads) = (
        m.reads_routed(DbRole::Replica),
        m.reads_routed(DbRole::Primary),
    );
    println!(
        "{writes} writes: stale={stale} reads via replica={replica_reads} via primary={primary_reads} ryw fallbacks={}",
        m.ryw_fallbacks()
    );
    assert_eq!(stale, 0, "stale reads after write");
    assert_eq!(replica_reads + primary_reads, writes as u64);

    // Anonymous-free check that the replica really serves: reads with an old mark (the
    // replica catches up within the poll interval) go to the replica.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let before = m.reads_routed(DbRole::Replica);
    for _ in 0..20 {
        let (s, _, _) = call(&st, "GET", "/cart", Some(&t), None, &[]).await;
        assert_eq!(s, StatusCode::OK);
    }
    assert_eq!(
        m.reads_routed(DbRole::Replica) - before,
        20,
        "caught-up replica serves every read"
    );
    assert!(m.db_queries(DbRole::Replica) >= 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_over_1000_writes_with_marks_in_redis() {
    let (primary, replica) = fresh_pg_database("ryw_redis").await;
    let cfg = ShopConfig {
        redis: Some(redis_url()),
        key_prefix: unique_prefix("ryw"),
        ..pg_config(&primary, &replica, "ryw-redis")
    };
    ryw_run(cfg, 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_with_marks_in_sql() {
    let (primary, replica) = fresh_pg_database("ryw_sql").await;
    ryw_run(pg_config(&primary, &replica, "ryw-sql"), 300).await;
}

fn second_replica_url() -> String {
    std::env::var("SCALEOUT_TEST_PG_REPLICA2")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5434/postgres".into())
}

/// Resumes WAL replay on the replica when dropped, so a failing test leaves it replaying.
struct ResumeReplay(String);
impl Drop for ResumeReplay {
    fn drop(&mut self) {
        let url = self.0.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    use sqlx::Connection;
                    if let Ok(mut c) = sqlx::PgConnection::connect(&url).await {
                        let _ = sqlx::query("SELECT pg_wal_replay_resume()")
                            .execute(&mut c)
                            .await;
                    }
                })
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_reads_go_to_the_replica_and_a_lagging_replica_is_skipped() {
    use sqlx::Connection;
    // The second standby (5434), so pausing its replay for a moment disturbs nobody's
    // read-your-writes test on 5433.
    let (primary, _) = fresh_pg_database("lag").await;
    let replica = with_db(&second_replica_url(), primary.rsplit('/').next().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while sqlx::PgConnection::connect(&replica).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "second replica {replica} missing (scripts/services up)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let cfg = ShopConfig {
        max_replica_lag_ms: 300,
        ..pg_config(&primary, &replica, "lag")
    };
    let st = state(&cfg).await;
    let t = user(&st, "lagger").await;
    for _ in 0..10 {
        let (s, _, _) = call(&st, "GET", "/catalog", None, None, &[]).await;
        assert_eq!(s, StatusCode::OK);
    }
    assert_eq!(
        st.metrics.reads_routed(DbRole::Replica),
        10,
        "a healthy replica serves catalog reads"
    );

    // Pause replay on the standby, keep writing on the primary: its lag grows past 300 ms.
    let mut admin = sqlx::PgConnection::connect(&with_db(&second_replica_url(), "postgres"))
        .await
        .unwrap();
    let _resume = ResumeReplay(with_db(&second_replica_url(), "postgres"));
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&mut admin)
        .await
        .unwrap();
    for i in 0..10 {
        let body = format!(r#"{{"product_id":{},"quantity":1}}"#, i + 1);
        let (s, _, _) = call(&st, "POST", "/cart", Some(&t), Some(&body), &[]).await;
        assert_eq!(s, StatusCode::OK);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let lag = st.db.replica_statuses()[0].lag_ms;
    assert!(lag > 300, "paused replica shows lag {lag} ms");
    let before = st.metrics.reads_routed(DbRole::Replica);
    for _ in 0..10 {
        let (s, _, _) = call(&st, "GET", "/catalog", None, None, &[]).await;
        assert_eq!(s, StatusCode::OK);
    }
    assert_eq!(
        st.metrics.reads_routed(DbRole::Replica),
        before,
        "a lagging replica is skipped"
    );

    // Resume: it catches up and serves again.
    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&mut admin)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (s, _, _) = call(&st, "GET", "/catalog", None, None, &[]).await;
        assert_eq!(s, StatusCode::OK);
        if st.metrics.reads_routed(DbRole::Replica) > before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica never served again after resume"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn refuses_to_start_when_connection_math_exceeds_max_connections() {
    let cfg = ShopConfig {
        db: pg_url(),
        pool_size: 50,
        expected_instances: 1000,
        jwt_secret: SECRET.clone(),
        ..ShopConfig::default()
    };
    match shop::build_state(&cfg).await {
        Err(e @ ShopError::TooManyConnections { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("(1000)") && msg.contains("(50)") && msg.contains("max_connections"),
                "{msg}"
            );
        }
        Err(e) => panic!("wrong error (is PostgreSQL up?): {e}"),
        Ok(_) => panic!("started despite 1000 x 50 connections"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_checkouts_with_one_idempotency_key_create_one_order() {
    let (primary, replica) = fresh_pg_database("idem").await;
    let st = state(&pg_config(&primary, &replica, "idem")).await;
    let t = user(&st, "idem").await;
    for pid in [3, 4] {
        let (s, _, _) = call(
            &st,
            "POST",
            "/cart",
            Some(&t),
            Some(&format!(r#"{{"product_id":{pid},"quantity":2}}"#)),
            &[],
        )
        .await;
        assert_eq!(s, StatusCode::OK);
    }
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (st, t) = (st.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            call(
                &st,
                "POST",
                "/orders",
                Some(&t),
                None,
                &[("idempotency-key", "same-key")],
            )
            .await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for task in tasks {
        let (s, _, b) = task.await.unwrap();
        assert!(s == StatusCode::CREATED || s == StatusCode::OK, "{s} {b}");
        created += usize::from(s == StatusCode::CREATED);
        ids.insert(b["id"].as_str().unwrap().to_string());
    }
    assert_eq!(
        (created, ids.len()),
        (1, 1),
        "one order, the same one for every retry"
    );
    assert_eq!(count(&st, "SELECT COUNT(*) FROM orders").await, 1);
    assert_eq!(count(&st, "SELECT COUNT(*) FROM order_items").await, 2);
}
