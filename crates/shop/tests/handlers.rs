//! Handler tests through `oneshot` (no socket) on a fresh SQLite file per test: the
//! endpoints, input validation that writes nothing, JWT forgery, idempotent checkout,
//! admin-only price changes with cache invalidation, and the SQLite pragmas.

mod common;

use axum::http::StatusCode;
use base64::Engine;
use common::*;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test]
async fn shopping_flow_and_idempotent_checkout() {
    let st = state(&sqlite_config("flow")).await;
    let t = user(&st, "alice").await;

    let (s, h, cat) = call(&st, "GET", "/catalog", None, None, &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["x-instance-id"], "test-flow");
    let products = cat["products"].as_array().unwrap();
    assert!(!products.is_empty() && products.len() <= 50);
    let first = &products[0];
    let cat_name = first["category"].as_str().unwrap();
    let (s, _, by_cat) = call(
        &st,
        "GET",
        &format!("/catalog?category={cat_name}"),
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        by_cat["products"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["category"] == cat_name)
    );

    let pid = first["id"].as_i64().unwrap();
    let price = first["price"].as_i64().unwrap();
    let (s, _, p) = call(&st, "GET", &format!("/products/{pid}"), None, None, &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(p["price"], price);
    let stock_before = p["stock"].as_i64().unwrap();

    let body = format!(r#"{{"product_id":{pid},"quantity":2}}"#);
    let (s, _, b) = call(&st, "POST", "/cart", Some(&t), Some(&body), &[]).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _, b) = call(&st, "POST", "/cart", Some(&t), Some(&body), &[]).await;
    assert_eq!((s, b["quantity"].as_i64()), (StatusCode::OK, Some(4)));
    let (s, _, cart) = call(&st, "GET", "/cart", Some(&t), None, &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(cart["items"][0]["quantity"], 4);
    assert_eq!(cart["total"], price * 4);

    // Checkout without a key: 400, nothing written.
    let (s, _, _) = call(&st, "POST", "/orders", Some(&t), None, &[]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(count(&st, "SELECT COUNT(*) FROM orders").await, 0);

    let key = [("idempotency-key", "order-1")];
    let (s, _, o1) = call(&st, "POST", "/orders", Some(&t), None, &key).await;
    assert_eq!(s, StatusCode::CREATED, "{o1}");
    assert_eq!(o1["total"], price * 4);
    let (s, _, o2) = call(&st, "POST", "/orders", Some(&t), None, &key).await;
    assert_eq!(s, StatusCode::OK, "{o2}");
    assert_eq!(o1["id"], o2["id"]);
    assert_eq!(o1["items"], o2["items"]);
    assert_eq!(count(&st, "SELECT COUNT(*) FROM orders").await, 1);
    assert_eq!(count(&st, "SELECT COUNT(*) FROM order_items").await, 1);
    assert_eq!(count(&st, "SELECT COUNT(*) FROM cart_items").await, 0);
    // Stock went down by exactly one order's worth.
    let stock_after: i64 = count(
        &st,
        "SELECT stock FROM products WHERE id = (SELECT product_id FROM order_items)",
    )
    .await;
    assert_eq!(stock_after, stock_before - 4);
    // A new key with an empty cart: 409, nothing written.
    let (s, _, _) = call(
        &st,
        "POST",
        "/orders",
        Some(&t),
        None,
        &[("idempotency-key", "order-2")],
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(count(&st, "SELECT COUNT(*) FROM orders").await, 1);

    // Remove from cart.
    call(&st, "POST", "/cart", Some(&t), Some(&body), &[]).await;
    let (s, _, _) = call(&st, "DELETE", &format!("/cart/{pid}"), Some(&t), None, &[]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = call(&st, "DELETE", &format!("/cart/{pid}"), Some(&t), None, &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Profile.
    let (s, _, me) = call(&st, "GET", "/me", Some(&t), None, &[]).await;
    assert_eq!(
        (s, me["username"].as_str()),
        (StatusCode::OK, Some("alice"))
    );
}

#[tokio::test]
async fn bad_inputs_get_clear_4xx_and_write_nothing() {
    let st = state(&sqlite_config("bad")).await;
    let t = user(&st, "bob").await;
    // A query string the extractor rejects still gets a JSON error, not plain text.
    let (s, _, body) = call(
        &st,
        "GET",
        "/catalog?category=a&category=b",
        None,
        None,
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body["error"].is_string(), "{body}");
    let cases: Vec<(&str, Option<&str>, Option<String>, StatusCode)> = vec![
        (
            "unknown product",
            Some(t.as_str()),
            Some(r#"{"product_id":999999,"quantity":1}"#.into()),
            StatusCode::NOT_FOUND,
        ),
        (
            "zero quantity",
            Some(&t),
            Some(r#"{"product_id":1,"quantity":0}"#.into()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "negative quantity",
            Some(&t),
            Some(r#"{"product_id":1,"quantity":-3}"#.into()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "malformed json",
            Some(&t),
            Some(r#"{"product_id":1,"quantity":"#.into()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "wrong shape",
            Some(&t),
            Some(r#"{"product":1}"#.into()),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "oversized body",
            Some(&t),
            Some(format!(
                r#"{{"product_id":1,"quantity":1,"pad":"{}"}}"#,
                "x".repeat(100_000)
            )),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "no token",
            None,
            Some(r#"{"product_id":1,"quantity":1}"#.into()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "garbage token",
            Some("not-a-token"),
            Some(r#"{"product_id":1,"quantity":1}"#.into()),
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (what, tok, body, want) in cases {
        let (s, h, b) = call(&st, "POST", "/cart", tok, body.as_deref(), &[]).await;
        assert_eq!(s, want, "{what}: {b}");
        assert!(
            b["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: JSON error body, got {b}"
        );
        assert!(h.contains_key("x-instance-id"), "{what}");
    }

    // Forged JWTs: alg none, wrong key, tampered claims, expired.
    let claims = r#"{"sub":"1","name":"bob","adm":true,"iat":1,"exp":99999999999}"#;
    let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), b64(claims));
    let wrong_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::from_str::<serde_json::Value>(claims).unwrap(),
        &jsonwebtoken::EncodingKey::from_secret(b"some-other-secret-xxxxxx"),
    )
    .unwrap();
    let parts: Vec<&str> = t.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], b64(claims), parts[2]);
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub":"1","name":"bob","adm":false,"iat":1,"exp":2}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    for (what, tok) in [
        ("alg none", none),
        ("wrong key", wrong_key),
        ("tampered", tampered),
        ("expired", expired),
    ] {
        let (s, _, b) = call(
            &st,
            "POST",
            "/cart",
            Some(&tok),
            Some(r#"{"product_id":1,"quantity":1}"#),
            &[],
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{what}: {b}");
        let (s, _, _) = call(
            &st,
            "PUT",
            "/products/1/price",
            Some(&tok),
            Some(r#"{"price":1}"#),
            &[],
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{what} on price");
    }
    assert_eq!(
        count(&st, "SELECT COUNT(*) FROM cart_items").await,
        0,
        "nothing written"
    );

    // Other endpoints.
    let (s, _, _) = call(&st, "GET", "/products/999999", None, None, &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = call(&st, "GET", "/products/abc", None, None, &[]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _, _) = call(&st, "GET", "/nope", None, None, &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = call(
        &st,
        "POST",
        "/login",
        None,
        Some(r#"{"username":"bob","password":"wrong-password"}"#),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = call(
        &st,
        "POST",
        "/signup",
        None,
        Some(r#"{"username":"bob","password":"pw-bob-123"}"#),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _, _) = call(
        &st,
        "POST",
        "/signup",
        None,
        Some(r#"{"username":"bad name!","password":"pw-123456"}"#),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(count(&st, "SELECT COUNT(*) FROM users").await, 1);
}

#[tokio::test]
async fn price_change_is_admin_only_and_invalidates_the_cache() {
    // SQL cache (no Redis configured): the default.
    let st = state(&sqlite_config("price")).await;
    let admin = user(&st, "admin").await;
    let carol = user(&st, "carol").await;
    // The name `admin` alone grants nothing.
    let (s, _, b) = call(
        &st,
        "PUT",
        "/products/5/price",
        Some(&admin),
        Some(r#"{"price":1}"#),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    // Granted by the admin command, it takes effect with the same token.
    grant_admin(&st, "admin").await;
    // Warm the cache.
    let (_, _, before) = call(&st, "GET", "/products/5", None, None, &[]).await;
    let (_, _, cat) = call(&st, "GET", "/catalog", None, None, &[]).await;
    let (_, _, _) = call(&st, "GET", "/products/5", None, None, &[]).await;
    let page = st.metrics.render("x", &[]);
    assert!(
        shop::metrics::scrape_sum(&page, &["shop_cache_hits_total"]) >= 1.0,
        "{page}"
    );

    let new_price = before["price"].as_i64().unwrap() + 1234;
    let body = format!(r#"{{"price":{new_price}}}"#);
    let (s, _, _) = call(
        &st,
        "PUT",
        "/products/5/price",
        Some(&carol),
        Some(&body),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = call(
        &st,
        "PUT",
        "/products/5/price",
        Some(&admin),
        Some(r#"{"price":-1}"#),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _, _) = call(
        &st,
        "PUT",
        "/products/999999/price",
        Some(&admin),
        Some(&body),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, _, still) = call(&st, "GET", "/products/5", None, None, &[]).await;
    assert_eq!(
        still["price"], before["price"],
        "refused updates changed nothing"
    );

    let (s, _, b) = call(
        &st,
        "PUT",
        "/products/5/price",
        Some(&admin),
        Some(&body),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, _, after) = call(&st, "GET", "/products/5", None, None, &[]).await;
    assert_eq!(
        after["price"], new_price,
        "cache was invalidated after commit"
    );
    // The catalog listing that showed product 5 is fresh too.
    if cat["products"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["id"] == 5)
    {
        let (_, _, cat2) = call(&st, "GET", "/catalog", None, None, &[]).await;
        let p5 = cat2["products"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == 5)
            .unwrap();
        assert_eq!(p5["price"], new_price);
    }
}

#[tokio::test]
async fn health_ready_metrics_and_sqlite_pragmas() {
    let st = state(&sqlite_config("ops")).await;
    let (s, h, _) = call(&st, "GET", "/healthz", None, None, &[]).await;
    assert_eq!(
        (s, h["x-instance-id"].to_str().unwrap()),
        (StatusCode::OK, "test-ops")
    );
    let (s, _, b) = call(&st, "GET", "/readyz", None, None, &[]).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    call(&st, "GET", "/catalog", None, None, &[]).await;
    let page = shop::app(st.clone());
    drop(page);
    let text = st.metrics.render("x", &st.db.pool_usage());
    assert!(
        shop::metrics::scrape_sum(&text, &["shop_requests_total", "route=\"/catalog\""]) >= 1.0,
        "{text}"
    );
    assert!(text.contains("shop_db_pool_connections"));
    assert!(
        shop::metrics::scrape_value(&text, &["shop_db_queries_total", "primary"]).unwrap() >= 1.0
    );

    // WAL, synchronous=NORMAL (1), busy timeout and foreign keys on pooled connections.
    shop::on_pool!(st.db.primary(), p => {
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(p).await.unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(p).await.unwrap();
        assert_eq!(sync, 1);
        let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout").fetch_one(p).await.unwrap();
        assert!(busy >= 5000, "busy_timeout {busy}");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(p).await.unwrap();
        assert_eq!(fk, 1);
    });
    assert_eq!(count(&st, "SELECT COUNT(*) FROM products").await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sql_cache_stampede_is_also_bounded() {
    // No Redis: the cache and its stampede locks live in the SQLite `cache_entries` table.
    let st = state(&sqlite_config("sqlstampede")).await;
    let before = st.metrics.db_queries(shop::metrics::DbRole::Primary);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let st = st.clone();
        tasks.push(tokio::spawn(async move {
            call(&st, "GET", "/catalog?category=books", None, None, &[])
                .await
                .0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    let queries = st.metrics.db_queries(shop::metrics::DbRole::Primary) - before;
    println!("SQL cache: 200 concurrent misses -> {queries} DB queries");
    assert!(
        queries <= 5,
        "{queries} catalog queries for 200 concurrent misses"
    );
    assert!(
        count(
            &st,
            "SELECT COUNT(*) FROM cache_entries WHERE key LIKE '%catalog:cat:books'"
        )
        .await
            == 1
    );
}

#[tokio::test]
async fn sql_sessions_use_a_cookie_and_expire() {
    let cfg = shop::ShopConfig {
        sessions: shop::SessionKind::Sql,
        session_ttl_s: 1,
        ..sqlite_config("sqlsess")
    };
    let st = state(&cfg).await;
    let creds = r#"{"username":"dana","password":"pw-dana-123"}"#;
    call(&st, "POST", "/signup", None, Some(creds), &[]).await;
    let (s, h, b) = call(&st, "POST", "/login", None, Some(creds), &[]).await;
    assert_eq!(s, StatusCode::OK);
    let cookie = h["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(cookie, format!("sid={}", b["token"].as_str().unwrap()));
    assert_eq!(count(&st, "SELECT COUNT(*) FROM sessions").await, 1);
    let (s, _, _) = call(&st, "GET", "/cart", None, None, &[("cookie", &cookie)]).await;
    assert_eq!(s, StatusCode::OK, "the cookie alone authenticates");
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let (s, _, _) = call(&st, "GET", "/cart", None, None, &[("cookie", &cookie)]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "expired session");
}
