//! Against real Redis (6379) and the real 3-master Redis Cluster (7000-7002): cache-aside
//! stampede protection, TTL expiry, invalidation across instances, and Redis sessions and
//! cache on the cluster with per-user hash tags.

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use common::*;
use shop::metrics::DbRole;
use shop::{CacheKind, SessionKind, ShopConfig};

fn redis_config(tag: &str, redis: String) -> ShopConfig {
    ShopConfig {
        redis: Some(redis),
        key_prefix: unique_prefix(tag),
        ..sqlite_config(tag)
    }
}

async fn stampede(st: Arc<shop::AppState>) -> u64 {
    let before = st.metrics.db_queries(DbRole::Primary);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let st = st.clone();
        tasks.push(tokio::spawn(async move {
            let (s, _, b) = call(&st, "GET", "/products/17", None, None, &[]).await;
            assert_eq!(s, StatusCode::OK, "{b}");
            b["price"].as_i64().unwrap()
        }));
    }
    let mut prices = std::collections::HashSet::new();
    for t in tasks {
        prices.insert(t.await.unwrap());
    }
    assert_eq!(prices.len(), 1, "every request saw the same product");
    st.metrics.db_queries(DbRole::Primary) - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_misses_cost_a_handful_of_queries() {
    let st = state(&redis_config("stampede", redis_url())).await;
    let queries = stampede(st.clone()).await;
    // Two keys per request (product description and stock): unprotected, that is up to
    // 400 queries; protected, one per key plus the rare waiter that outlived its budget.
    println!("200 concurrent misses -> {queries} DB queries");
    assert!(
        queries <= 6,
        "{queries} DB queries for 200 concurrent misses"
    );
    let (hits, misses) = st.metrics.cache_totals();
    assert_eq!(hits + misses, 400);
    // The next 200 are all hits and cost nothing.
    let queries = stampede(st.clone()).await;
    assert_eq!(queries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_lock_the_same_misses_hit_the_database_much_harder() {
    // The comparison that shows what the lock buys (and that the test above can fail).
    let cfg = redis_config("nolock", redis_url());
    let mut st = shop::build_state(&cfg).await.unwrap();
    let inner = Arc::get_mut(&mut st).expect("sole owner");
    let ttls = cfg.cache_ttl;
    let conn =
        shop::redis_conn::RedisConn::connect(&redis_url(), std::time::Duration::from_secs(5))
            .await
            .unwrap();
    inner.cache = shop::cache::CacheAside::new(
        shop::cache::CacheBackend::Redis(conn),
        ttls,
        inner.metrics.clone(),
    )
    .without_stampede_protection();
    let queries = stampede(st).await;
    println!("unprotected: 200 concurrent misses -> {queries} DB queries");
    assert!(
        queries > 6,
        "unprotected misses cost only {queries} queries: the comparison proves nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_expires_by_ttl_and_price_update_is_seen_by_a_second_instance() {
    let db = temp_db("twoinst");
    let prefix = unique_prefix("twoinst");
    let mk = |id: &str| ShopConfig {
        db: db.clone(),
        redis: Some(redis_url()),
        key_prefix: prefix.clone(),
        instance_id: id.into(),
        cache_ttl: shop::config::CacheTtls {
            stock_s: 1,
            ..Default::default()
        },
        ..sqlite_config("twoinst")
    };
    let a = state(&mk("a")).await;
    let b = state(&mk("b")).await;
    let admin = user(&a, "admin").await;
    grant_admin(&a, "admin").await;
    let (_, _, p_b) = call(&b, "GET", "/products/3", None, None, &[]).await; // B caches it
    let (_, _, p_b2) = call(&b, "GET", "/products/3", None, None, &[]).await;
    assert_eq!(p_b, p_b2);
    let hits_b = b.metrics.cache_totals().0;
    assert!(hits_b >= 2, "B served from cache");
    let price = p_b["price"].as_i64().unwrap() + 77;
    let (s, _, _) = call(
        &a,
        "PUT",
        "/products/3/price",
        Some(&admin),
        Some(&format!(r#"{{"price":{price}}}"#)),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, _, p_b3) = call(&b, "GET", "/products/3", None, None, &[]).await;
    assert_eq!(
        p_b3["price"], price,
        "B sees A's write at once: A deleted the key after commit"
    );

    // Stock changes behind the cache's back: visible after its 1 s TTL, not before.
    shop::on_pool!(a.db.primary(), p => sqlx::query("UPDATE products SET stock = 4242 WHERE id = 3").execute(p).await.map(|_| ()).unwrap());
    let (_, _, cached) = call(&b, "GET", "/products/3", None, None, &[]).await;
    assert_ne!(cached["stock"], 4242, "stock still cached");
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let (_, _, fresh) = call(&b, "GET", "/products/3", None, None, &[]).await;
    assert_eq!(fresh["stock"], 4242, "stock TTL expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_cache_work_on_the_redis_cluster() {
    let cluster = redis_cluster_url();
    let db = temp_db("cluster");
    let prefix = unique_prefix("cluster");
    let mk = |id: &str| ShopConfig {
        db: db.clone(),
        redis: Some(cluster.clone()),
        sessions: SessionKind::Redis,
        cache: Some(CacheKind::Redis),
        key_prefix: prefix.clone(),
        instance_id: id.into(),
        ..sqlite_config("cluster")
    };
    let a = state(&mk("a")).await;
    let b = state(&mk("b")).await;
    assert!(a.redis.as_ref().unwrap().is_cluster());
    // Many users, so their keys spread over all three masters' slots.
    for i in 0..12 {
        let name = format!("cu{i}");
        let t = user(&a, &name).await;
        let (s, _, me) = call(&b, "GET", "/me", Some(&t), None, &[]).await;
        assert_eq!(
            (s, me["username"].as_str()),
            (StatusCode::OK, Some(name.as_str())),
            "session from A works on B"
        );
        let (s, _, _) = call(&a, "GET", "/me", Some(&t), None, &[]).await;
        assert_eq!(s, StatusCode::OK);
        let (s, _, _) = call(
            &b,
            "POST",
            "/cart",
            Some(&t),
            Some(r#"{"product_id":2,"quantity":1}"#),
            &[],
        )
        .await;
        assert_eq!(s, StatusCode::OK);
    }
    let (hits, _) = a.metrics.cache_totals();
    assert!(
        hits >= 12,
        "profiles came from the cluster cache ({hits} hits)"
    );
    // The users' keys really landed on different masters.
    let slots: std::collections::HashSet<u16> = (1..=12)
        .map(|uid| shop::keys::cluster_slot(&shop::keys::profile(&prefix, uid)) / 5462)
        .collect();
    assert!(slots.len() >= 2, "keys spread over masters");
    let (s, _, cat) = call(&b, "GET", "/catalog", None, None, &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(!cat["products"].as_array().unwrap().is_empty());
    let (s, _, ready) = call(&a, "GET", "/readyz", None, None, &[]).await;
    assert_eq!(s, StatusCode::OK, "{ready}");
}

/// A throwaway real redis-server on a free port, killed on drop.
struct OwnRedis(std::process::Child);
impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_when_redis_goes_away() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server is needed (scripts/services installs it)");
    let mut own = OwnRedis(child);
    let url = format!("redis://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "own redis-server did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let cfg = ShopConfig {
        sessions: SessionKind::Redis,
        store_timeout_ms: 500,
        ..redis_config("ready", url)
    };
    let st = state(&cfg).await;
    let (s, _, b) = call(&st, "GET", "/readyz", None, None, &[]).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let t = user(&st, "readyuser").await;
    let _ = own.0.kill();
    let _ = own.0.wait();
    let (s, _, b) = call(&st, "GET", "/readyz", None, None, &[]).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert_eq!(b["redis"], false);
    // A request that needs the session store gets a 503 with no internals.
    let (s, _, b) = call(&st, "GET", "/cart", Some(&t), None, &[]).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert!(!b["error"].as_str().unwrap().contains("127.0.0.1"), "{b}");
    // The database alone still answers.
    let (s, _, _) = call(&st, "GET", "/healthz", None, None, &[]).await;
    assert_eq!(s, StatusCode::OK);
}
