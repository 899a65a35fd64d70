//! Helpers shared by the shop's integration tests: a state on a fresh SQLite file (or
//! the real PostgreSQL / Redis named by SCALEOUT_TEST_* variables), and `oneshot` calls.
#![allow(dead_code)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use shop::{AppState, ShopConfig};
use tower::ServiceExt;

/// This test run's JWT key, generated per run (no key lives in the source).
pub static SECRET: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| shop::secret::generate_key().expect("OS random source"));

pub fn temp_db(tag: &str) -> String {
    let dir = std::env::temp_dir().join(format!(
        "shop-test-{tag}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    format!("sqlite:{}", dir.join("shop.db").display())
}

pub fn sqlite_config(tag: &str) -> ShopConfig {
    ShopConfig {
        db: temp_db(tag),
        seed_products: 100,
        jwt_secret: SECRET.clone(),
        instance_id: format!("test-{tag}"),
        ..ShopConfig::default()
    }
}

pub fn redis_url() -> String {
    std::env::var("SCALEOUT_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn redis_cluster_url() -> String {
    std::env::var("SCALEOUT_TEST_REDIS_CLUSTER").unwrap_or_else(|_| {
        "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002".into()
    })
}

pub fn unique_prefix(tag: &str) -> String {
    format!("t-{tag}-{}", uuid::Uuid::new_v4().simple())
}

pub async fn state(cfg: &ShopConfig) -> Arc<AppState> {
    shop::build_state(cfg).await.unwrap_or_else(|e| {
        panic!("building the shop state failed (is the server running? scripts/services up): {e}")
    })
}

/// One request through the router: (status, headers, body as JSON or Null).
pub async fn call(
    st: &Arc<AppState>,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
    extra: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    let req = b
        .body(
            body.map(|s| Body::from(s.to_string()))
                .unwrap_or(Body::empty()),
        )
        .unwrap();
    let resp = shop::app(st.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, headers, json)
}

/// Signs up and logs in `name`; returns the token.
pub async fn user(st: &Arc<AppState>, name: &str) -> String {
    let creds = format!(r#"{{"username":"{name}","password":"pw-{name}-123"}}"#);
    let (s, _, b) = call(st, "POST", "/signup", None, Some(&creds), &[]).await;
    assert_eq!(s, StatusCode::CREATED, "signup {name}: {b}");
    let (s, _, b) = call(st, "POST", "/login", None, Some(&creds), &[]).await;
    assert_eq!(s, StatusCode::OK, "login {name}: {b}");
    b["token"].as_str().unwrap().to_string()
}

/// Grants `name` the admin role the only way there is: the admin command's function.
pub async fn grant_admin(st: &Arc<AppState>, name: &str) {
    let c = shop::admin::set_admin_on(&st.db, name, true).await.unwrap();
    assert!(c.is_admin && c.changed, "{c:?}");
}

/// One request through the metrics router (the separate `--metrics-listen` listener).
pub async fn scrape(st: &Arc<AppState>) -> (StatusCode, String) {
    let req = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .unwrap();
    let resp = shop::metrics_app(st.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).to_string())
}

/// Counts rows of `sql` (a `SELECT COUNT(*) ...`) on the primary.
pub async fn count(st: &Arc<AppState>, sql: &'static str) -> i64 {
    shop::on_pool!(st.db.primary(), p => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await.unwrap())
}

pub fn pg_url() -> String {
    std::env::var("SCALEOUT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn pg_replica_url() -> String {
    std::env::var("SCALEOUT_TEST_PG_REPLICA")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5433/postgres".into())
}

/// `url` with its database name replaced by `db`.
pub fn with_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("postgres URL with a database");
    format!("{base}/{db}")
}

/// Creates a fresh database on the primary (it replicates to the standby) and waits until
/// the replica accepts connections to it. Fails loudly when PostgreSQL is missing.
pub async fn fresh_pg_database(tag: &str) -> (String, String) {
    use sqlx::Connection;
    let name = format!("shop_{tag}_{}", uuid::Uuid::new_v4().simple());
    let mut c = sqlx::PgConnection::connect(&pg_url())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL primary at {} is required (scripts/services up): {e}",
                pg_url()
            )
        });
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut c)
        .await
        .unwrap();
    let primary = with_db(&pg_url(), &name);
    let replica = with_db(&pg_replica_url(), &name);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match sqlx::PgConnection::connect(&replica).await {
            Ok(c) => {
                let _ = c.close().await;
                break;
            }
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "replica {replica} never showed database {name} (is the streaming replica on 5433 up?): {e}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    (primary, replica)
}
