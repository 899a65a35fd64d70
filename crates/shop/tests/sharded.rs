//! `--shard-map` in process: carts, orders and order items of each user live on the shard
//! the router names and nowhere else (not on another shard, not on `--db`); products and
//! stock stay on `--db`; readiness and metrics cover every shard; a bad map is refused.

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use common::{call, count, scrape, sqlite_config, temp_db, user};
use shop::shard::{HashRouter, ShardRouter};
use shop::{AppState, ShopConfig};

/// Writes a two-shard SQLite hash map next to fresh files; returns (map path, shard urls).
fn two_shard_map(tag: &str) -> (String, Vec<String>) {
    let urls = vec![temp_db(&format!("{tag}-s0")), temp_db(&format!("{tag}-s1"))];
    let text = format!(
        "[[shards]]\nname = \"s0\"\nurl = \"{}\"\n[[shards]]\nname = \"s1\"\nurl = \"{}\"\n\
         [router]\nkind = \"hash\"\n",
        urls[0], urls[1]
    );
    let dir = std::path::PathBuf::from(urls[0].trim_start_matches("sqlite:"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = dir.join("shards.toml");
    std::fs::write(&path, text).unwrap();
    (path.display().to_string(), urls)
}

fn sharded_config(tag: &str) -> (ShopConfig, Vec<String>) {
    let (map, urls) = two_shard_map(tag);
    let cfg = ShopConfig {
        shard_map: Some(map),
        ..sqlite_config(tag)
    };
    (cfg, urls)
}

/// Rows of `user_id` in (cart_items, orders, order_items) of the SQLite database `url`.
async fn rows_of(url: &str, user_id: i64) -> (i64, i64, i64) {
    let pool = sqlx::SqlitePool::connect(url).await.unwrap();
    let mut out = [0i64; 3];
    for (i, sql) in [
        "SELECT COUNT(*) FROM cart_items WHERE user_id = $1",
        "SELECT COUNT(*) FROM orders WHERE user_id = $1",
        "SELECT COUNT(*) FROM order_items WHERE user_id = $1",
    ]
    .iter()
    .enumerate()
    {
        out[i] = sqlx::query_scalar(*sql)
            .bind(user_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    (out[0], out[1], out[2])
}

async fn login_id(st: &Arc<AppState>, name: &str) -> (String, i64) {
    let token = user(st, name).await;
    let creds = format!(r#"{{"username":"{name}","password":"pw-{name}-123"}}"#);
    let (_, _, b) = call(st, "POST", "/login", None, Some(&creds), &[]).await;
    (token, b["user_id"].as_i64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_users_land_on_exactly_their_shard() {
    let (cfg, urls) = sharded_config("forty");
    let st = common::state(&cfg).await;
    let router = HashRouter::new(2);
    let stock_before: i64 = count(&st, "SELECT SUM(stock) FROM products").await;
    let mut users = Vec::new();
    let mut ordered_units = 0i64;
    for n in 0..40 {
        let (token, id) = login_id(&st, &format!("shard-user-{n}")).await;
        // Two lines, quantities depending on the user, then check out.
        for (product, qty) in [(1 + n % 7, 1 + n % 3), (10 + n % 5, 2)] {
            let body = format!(r#"{{"product_id":{product},"quantity":{qty}}}"#);
            let (s, _, b) = call(&st, "POST", "/cart", Some(&token), Some(&body), &[]).await;
            assert_eq!(s, StatusCode::OK, "{b}");
            ordered_units += qty;
        }
        let (s, _, cart) = call(&st, "GET", "/cart", Some(&token), None, &[]).await;
        assert_eq!(s, StatusCode::OK, "{cart}");
        assert_eq!(cart["items"].as_array().unwrap().len(), 2, "{cart}");
        assert!(cart["total"].as_i64().unwrap() > 0, "{cart}");
        let key = format!("key-{n}");
        let (s, _, order) = call(
            &st,
            "POST",
            "/orders",
            Some(&token),
            None,
            &[("idempotency-key", &key)],
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{order}");
        assert_eq!(order["total"], cart["total"], "order total = cart total");
        // Same key again: the same order, no second one.
        let (s, _, again) = call(
            &st,
            "POST",
            "/orders",
            Some(&token),
            None,
            &[("idempotency-key", &key)],
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{again}");
        assert_eq!(again["id"], order["id"]);
        // Leave one line in the cart so cart rows are checked too.
        let body = r#"{"product_id":3,"quantity":1}"#;
        let (s, _, b) = call(&st, "POST", "/cart", Some(&token), Some(body), &[]).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        users.push(id);
    }
    let mut per_shard = [0usize; 2];
    for &id in &users {
        let owner = router.shard_for(id);
        per_shard[owner] += 1;
        for (i, url) in urls.iter().enumerate() {
            let rows = rows_of(url, id).await;
            if i == owner {
                assert_eq!(rows, (1, 1, 2), "user {id} on its owner s{i}");
            } else {
                assert_eq!(rows, (0, 0, 0), "user {id} must not be on s{i}");
            }
        }
        let main = rows_of(&cfg.db, id).await;
        assert_eq!(main, (0, 0, 0), "user {id} must not be on --db");
    }
    assert!(
        per_shard[0] > 0 && per_shard[1] > 0,
        "both shards got users: {per_shard:?}"
    );
    // Stock is decremented on --db by exactly the ordered units.
    let stock_after: i64 = count(&st, "SELECT SUM(stock) FROM products").await;
    assert_eq!(stock_before - stock_after, ordered_units);
    // Readiness names both shards; metrics count operations on both.
    let (s, _, ready) = call(&st, "GET", "/readyz", None, None, &[]).await;
    assert_eq!(s, StatusCode::OK, "{ready}");
    assert_eq!(ready["shards"]["s0"], true, "{ready}");
    assert_eq!(ready["shards"]["s1"], true, "{ready}");
    let (s, _) = scrape(&st).await;
    assert_eq!(s, StatusCode::OK);
    let page = st.metrics.render("x", &st.db.pool_usage());
    for shard in ["s0", "s1"] {
        let n = shop::metrics::scrape_value(
            &page,
            &["shop_shard_queries_total", &format!("shard=\"{shard}\"")],
        )
        .unwrap_or(0.0);
        assert!(n > 0.0, "no queries counted on {shard}:\n{page}");
    }
}

#[tokio::test]
async fn out_of_stock_refuses_and_writes_nothing_on_the_shard() {
    let (cfg, urls) = sharded_config("stock");
    let st = common::state(&cfg).await;
    let (token, id) = login_id(&st, "stocky").await;
    shop::on_pool!(st.db.primary(), p => sqlx::query("UPDATE products SET stock = 1 WHERE id = 5")
        .execute(p).await.map(|_| ()).unwrap());
    let stock_2: i64 = count(&st, "SELECT stock FROM products WHERE id = 2").await;
    for body in [
        r#"{"product_id":2,"quantity":1}"#,
        r#"{"product_id":5,"quantity":3}"#,
    ] {
        let (s, _, b) = call(&st, "POST", "/cart", Some(&token), Some(body), &[]).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let (s, _, b) = call(
        &st,
        "POST",
        "/orders",
        Some(&token),
        None,
        &[("idempotency-key", "k1")],
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert!(b["error"].as_str().unwrap().contains("product 5"), "{b}");
    // The reservation of product 2 rolled back; no order, cart intact on the owner.
    assert_eq!(
        count(&st, "SELECT stock FROM products WHERE id = 2").await,
        stock_2
    );
    let owner = HashRouter::new(2).shard_for(id);
    assert_eq!(rows_of(&urls[owner], id).await, (2, 0, 0));
    // Unknown products are refused before the shard is written.
    let (s, _, b) = call(
        &st,
        "POST",
        "/cart",
        Some(&token),
        Some(r#"{"product_id":99999,"quantity":1}"#),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    // Removing a line works on the shard.
    let (s, _, _) = call(&st, "DELETE", "/cart/5", Some(&token), None, &[]).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(rows_of(&urls[owner], id).await, (1, 0, 0));
    let (s, _, b) = call(&st, "DELETE", "/cart/5", Some(&token), None, &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checkouts_with_one_key_make_one_order() {
    let (cfg, urls) = sharded_config("idem");
    let st = common::state(&cfg).await;
    let (token, id) = login_id(&st, "idem").await;
    let (s, _, b) = call(
        &st,
        "POST",
        "/cart",
        Some(&token),
        Some(r#"{"product_id":4,"quantity":2}"#),
        &[],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let stock_4: i64 = count(&st, "SELECT stock FROM products WHERE id = 4").await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (st, token) = (st.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            call(
                &st,
                "POST",
                "/orders",
                Some(&token),
                None,
                &[("idempotency-key", "same")],
            )
            .await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for t in tasks {
        let (s, _, b) = t.await.unwrap();
        assert!(s == StatusCode::CREATED || s == StatusCode::OK, "{s}: {b}");
        created += usize::from(s == StatusCode::CREATED);
        ids.insert(b["id"].as_str().unwrap().to_string());
    }
    assert_eq!((created, ids.len()), (1, 1));
    let owner = HashRouter::new(2).shard_for(id);
    assert_eq!(rows_of(&urls[owner], id).await, (0, 1, 1));
    // Stock went down once; every losing reservation was given back.
    assert_eq!(
        count(&st, "SELECT stock FROM products WHERE id = 4").await,
        stock_4 - 2
    );
}

#[tokio::test]
async fn invalid_shard_map_is_refused_naming_the_field() {
    let dir = std::env::temp_dir().join(format!("shop-badmap-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[[shards]]\nname = \"a\"\nurl = \"sqlite:/tmp/x.db\"\n[[shards]]\nname = \"b\"\nurl = \"sqlite:/tmp/y.db\"\n\
         [router]\nkind = \"range\"\nupper_bounds = []\n",
    )
    .unwrap();
    let cfg = ShopConfig {
        shard_map: Some(path.display().to_string()),
        ..sqlite_config("badmap")
    };
    let e = shop::build_state(&cfg).await.unwrap_err().to_string();
    assert!(
        e.contains("shard_map") && e.contains("router.upper_bounds"),
        "{e}"
    );
    // The main database was not even created: the map is checked first.
    let db_file = cfg.db.trim_start_matches("sqlite:");
    assert!(!std::path::Path::new(db_file).exists(), "{db_file}");
    let cfg = ShopConfig {
        shard_map: Some(dir.join("missing.toml").display().to_string()),
        ..sqlite_config("nomap")
    };
    let e = shop::build_state(&cfg).await.unwrap_err().to_string();
    assert!(e.contains("shard_map") && e.contains("missing.toml"), "{e}");
}

/// Two fresh PostgreSQL databases on the real server (fails loudly when it is missing).
async fn pg_shard_map(tag: &str) -> (String, Vec<String>) {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&common::pg_url())
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {} is required: {e}", common::pg_url()));
    let mut urls = Vec::new();
    for i in 0..2 {
        let name = format!("shop_shard_{tag}_{i}_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut c)
            .await
            .unwrap();
        urls.push(common::with_db(&common::pg_url(), &name));
    }
    let text = format!(
        "[[shards]]\nname = \"p0\"\nurl = \"{}\"\n[[shards]]\nname = \"p1\"\nurl = \"{}\"\n\
         [router]\nkind = \"hash\"\n",
        urls[0], urls[1]
    );
    let dir = std::env::temp_dir().join(format!("shop-pgmap-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shards.toml");
    std::fs::write(&path, text).unwrap();
    (path.display().to_string(), urls)
}

/// Rows of `user_id` in (cart_items, orders, order_items) of the PostgreSQL database `url`.
async fn pg_rows_of(url: &str, user_id: i64) -> (i64, i64, i64) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let (c, o, i): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM cart_items WHERE user_id = $1),
                (SELECT COUNT(*) FROM orders WHERE user_id = $1),
                (SELECT COUNT(*) FROM order_items WHERE user_id = $1)",
    )
    .bind(user_id)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    (c, o, i)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_shards_serve_checkout_with_one_order_per_key() {
    let (map, urls) = pg_shard_map("serve").await;
    let cfg = ShopConfig {
        shard_map: Some(map),
        pool_size: 4,
        ..sqlite_config("pgshards")
    };
    let st = common::state(&cfg).await;
    let router = HashRouter::new(2);
    let mut per_shard = [0usize; 2];
    for n in 0..8 {
        let (token, id) = login_id(&st, &format!("pg-user-{n}")).await;
        let body = format!(r#"{{"product_id":{},"quantity":2}}"#, 1 + n);
        let (s, _, b) = call(&st, "POST", "/cart", Some(&token), Some(&body), &[]).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let stock_sql = "SELECT SUM(stock) FROM products";
        let stock_before = count(&st, stock_sql).await;
        // Six concurrent checkouts with one key: one order, the rest replay it.
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let (st, token) = (st.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                call(
                    &st,
                    "POST",
                    "/orders",
                    Some(&token),
                    None,
                    &[("idempotency-key", "pg-key")],
                )
                .await
            }));
        }
        let mut ids = std::collections::HashSet::new();
        let mut created = 0;
        for t in tasks {
            let (s, _, b) = t.await.unwrap();
            assert!(s == StatusCode::CREATED || s == StatusCode::OK, "{s}: {b}");
            created += usize::from(s == StatusCode::CREATED);
            ids.insert(b["id"].as_str().unwrap().to_string());
        }
        assert_eq!((created, ids.len()), (1, 1), "user {id}");
        // Stock went down once; every losing reservation was given back.
        assert_eq!(count(&st, stock_sql).await, stock_before - 2, "user {id}");
        let owner = router.shard_for(id);
        per_shard[owner] += 1;
        for (i, url) in urls.iter().enumerate() {
            let want = if i == owner { (0, 1, 1) } else { (0, 0, 0) };
            assert_eq!(pg_rows_of(url, id).await, want, "user {id} on p{i}");
        }
    }
    assert!(per_shard[0] > 0 && per_shard[1] > 0, "{per_shard:?}");
    let (s, _, ready) = call(&st, "GET", "/readyz", None, None, &[]).await;
    assert_eq!(s, StatusCode::OK, "{ready}");
    assert_eq!(ready["shards"]["p1"], true, "{ready}");
}

#[tokio::test]
async fn postgres_shards_refuse_connection_math_that_does_not_fit() {
    let (map, _) = pg_shard_map("math").await;
    let cfg = ShopConfig {
        shard_map: Some(map),
        pool_size: 1000,
        expected_instances: 1000,
        ..sqlite_config("pgmath")
    };
    let e = shop::build_state(&cfg).await.unwrap_err().to_string();
    assert!(
        e.contains("max_connections") && e.contains("shard server") && e.contains("2000000"),
        "{e}"
    );
}
