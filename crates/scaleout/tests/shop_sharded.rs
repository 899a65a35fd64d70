//! End-to-end: `scaleout shop --shard-map` serving carts and orders from 2 SQLite shards;
//! the shop stopped, `scaleout shop reshard` to 3 shards, the shop restarted on the new
//! map, and every user's cart and order still served through HTTP (resharding and serving
//! agree on where a user lives). Also: a bad shard map refuses the start, naming the field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use shop::shard::{ShardMap, ShardSet};
use testkit::{ChildGuard, free_addr, http_request, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_scaleout");
/// One JWT key for this test run, generated (no key lives in the source).
static SECRET: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| shop::secret::generate_key().expect("OS random source"));
const USERS: usize = 24;

fn write_map(dir: &Path, file: &str, names: &[&str]) -> PathBuf {
    let mut text = String::new();
    for n in names {
        let url = format!("sqlite:{}", dir.join(format!("{n}.db")).display());
        text.push_str(&format!("[[shards]]\nname = \"{n}\"\nurl = \"{url}\"\n"));
    }
    text.push_str("[router]\nkind = \"hash\"\n");
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

/// The `--metrics-listen` address of each shop started by [`start_shop`], by public
/// address (`/metrics` is not served on the public listener).
static METRICS: std::sync::Mutex<Vec<(SocketAddr, SocketAddr)>> = std::sync::Mutex::new(Vec::new());

fn metrics_addr(addr: SocketAddr) -> SocketAddr {
    METRICS
        .lock()
        .unwrap()
        .iter()
        .find(|(a, _)| *a == addr)
        .map(|(_, m)| *m)
        .expect("a shop started by start_shop()")
}

/// Starts `scaleout shop` on `db` with `map` and waits for /readyz 200.
fn start_shop(name: &str, db: &str, map: &Path) -> (ChildGuard, SocketAddr) {
    let addr = free_addr();
    let metrics = free_addr();
    METRICS.lock().unwrap().push((addr, metrics));
    let mut cmd = Command::new(BIN);
    cmd.arg("shop")
        .args(["--listen", &addr.to_string(), "--instance-id", name])
        .args(["--metrics-listen", &metrics.to_string()])
        .args(["--jwt-secret", SECRET.as_str(), "--seed-products", "100"])
        .args(["--db", db])
        .arg("--shard-map")
        .arg(map)
        .env("RUST_LOG", "warn");
    let mut child = ChildGuard::spawn(name, &mut cmd);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) = testkit::http_get(addr, "/readyz") {
            break;
        }
        assert!(child.is_running(), "{name} exited during start");
        assert!(Instant::now() < deadline, "{name} not ready after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, addr)
}

/// A JSON request; returns (status, body as JSON or Null).
fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
    body: &str,
) -> (u16, serde_json::Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    let (status, text) = http_request(addr, method, path, &headers, body.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

/// Stops the shop with SIGTERM (writers paused, as `reshard` requires) and waits for exit 0.
fn stop(mut shop: ChildGuard) {
    shop.signal("TERM");
    let st = shop
        .wait_exit(Duration::from_secs(30))
        .expect("shop did not exit within 30 s of SIGTERM");
    assert!(st.success(), "shop exit status {st}");
}

struct User {
    id: i64,
    token: String,
    cart: serde_json::Value,
    order: Option<serde_json::Value>,
}

#[test]
fn carts_and_orders_survive_a_reshard_from_two_to_three_shards() {
    let dir = temp_dir("shop-sharded");
    let db = format!("sqlite:{}", dir.join("main.db").display());
    let map_a = write_map(&dir, "a.toml", &["s0", "s1"]);
    let map_b = write_map(&dir, "b.toml", &["s0", "s1", "s2"]);

    // 1. Serve on 2 shards: every user fills a cart; every other user checks out first.
    let (shop, addr) = start_shop("sharded-a", &db, &map_a);
    let mut users = Vec::new();
    for n in 0..USERS {
        let name = format!("u{n}");
        let creds = format!(r#"{{"username":"{name}","password":"pw-{name}-123"}}"#);
        let (s, b) = call(addr, "POST", "/signup", None, &[], &creds);
        assert_eq!(s, 201, "{b}");
        let (s, b) = call(addr, "POST", "/login", None, &[], &creds);
        assert_eq!(s, 200, "{b}");
        let token = b["token"].as_str().unwrap().to_string();
        let id = b["user_id"].as_i64().unwrap();
        let mut order = None;
        if n % 2 == 0 {
            let line = format!(r#"{{"product_id":{},"quantity":2}}"#, 20 + n);
            let (s, b) = call(addr, "POST", "/cart", Some(&token), &[], &line);
            assert_eq!(s, 200, "{b}");
            let key = format!("order-{n}");
            let (s, b) = call(
                addr,
                "POST",
                "/orders",
                Some(&token),
                &[("Idempotency-Key", &key)],
                "",
            );
            assert_eq!(s, 201, "{b}");
            order = Some(b);
        }
        for k in 0..(1 + n % 3) {
            let line = format!(
                r#"{{"product_id":{},"quantity":{}}}"#,
                1 + (n + k) % 50,
                1 + k
            );
            let (s, b) = call(addr, "POST", "/cart", Some(&token), &[], &line);
            assert_eq!(s, 200, "{b}");
        }
        let (s, cart) = call(addr, "GET", "/cart", Some(&token), &[], "");
        assert_eq!(s, 200, "{cart}");
        assert!(!cart["items"].as_array().unwrap().is_empty(), "{cart}");
        users.push(User {
            id,
            token,
            cart,
            order,
        });
    }
    let (s, ready) = call(addr, "GET", "/readyz", None, &[], "");
    assert_eq!(s, 200, "{ready}");
    assert_eq!(ready["shards"]["s0"], true, "{ready}");
    assert_eq!(ready["shards"]["s1"], true, "{ready}");
    stop(shop);

    // 2. Reshard to 3 shards (the shop is stopped: writers paused).
    let out = Command::new(BIN)
        .args(["shop", "reshard", "--from"])
        .arg(&map_a)
        .arg("--to")
        .arg(&map_b)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run reshard");
    assert!(
        out.status.success(),
        "reshard failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert!(report["users_moved"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["stopped_early"], false, "{report}");

    // Every user's rows are on exactly its owner under the new map; s2 received users.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let on_s2 = rt.block_on(async {
        let map = ShardMap::from_file(&map_b).unwrap();
        let set = ShardSet::connect(&map, Duration::from_secs(10))
            .await
            .unwrap();
        let mut on_s2 = 0;
        for u in &users {
            let owner = set.shard_for(u.id);
            for (i, pool) in set.pools().iter().enumerate() {
                let rows = pool.read_user(u.id).await.unwrap();
                assert_eq!(
                    rows.is_empty(),
                    i != owner,
                    "user {} on shard {i} (owner {owner}): {rows:?}",
                    u.id
                );
            }
            on_s2 += usize::from(owner == 2);
        }
        set.close().await;
        on_s2
    });
    assert!(on_s2 > 0, "no user is owned by the new shard s2");

    // 3. Serve on the new map: every cart and order is still served, reads and writes work.
    let (shop, addr) = start_shop("sharded-b", &db, &map_b);
    let (s, ready) = call(addr, "GET", "/readyz", None, &[], "");
    assert_eq!(s, 200, "{ready}");
    assert_eq!(ready["shards"]["s2"], true, "{ready}");
    for (n, u) in users.iter().enumerate() {
        let (s, cart) = call(addr, "GET", "/cart", Some(&u.token), &[], "");
        assert_eq!(s, 200, "{cart}");
        assert_eq!(cart, u.cart, "user {} cart after the reshard", u.id);
        if let Some(order) = &u.order {
            // The same key answers the same order (found on the user's new shard).
            let key = format!("order-{n}");
            let (s, again) = call(
                addr,
                "POST",
                "/orders",
                Some(&u.token),
                &[("Idempotency-Key", &key)],
                "",
            );
            assert_eq!(s, 200, "user {} replay: {again}", u.id);
            assert_eq!(again["id"], order["id"], "user {}", u.id);
        }
    }
    // A checkout on the new map empties the cart and creates an order.
    let u = &users[1];
    let (s, o) = call(
        addr,
        "POST",
        "/orders",
        Some(&u.token),
        &[("Idempotency-Key", "after-reshard")],
        "",
    );
    assert_eq!(s, 201, "{o}");
    assert_eq!(o["total"], u.cart["total"], "{o}");
    let (s, cart) = call(addr, "GET", "/cart", Some(&u.token), &[], "");
    assert_eq!((s, cart["items"].as_array().unwrap().len()), (200, 0));
    let (s, page) = testkit::http_get(metrics_addr(addr), "/metrics").unwrap();
    assert_eq!(s, 200);
    assert!(
        page.contains("shop_shard_queries_total{") && page.contains("shard=\"s2\""),
        "{page}"
    );
    stop(shop);
}

#[test]
fn an_invalid_shard_map_refuses_the_start_naming_the_field() {
    let dir = temp_dir("shop-badmap");
    let map = dir.join("bad.toml");
    std::fs::write(
        &map,
        format!(
            "[[shards]]\nname = \"s0\"\nurl = \"sqlite:{}\"\n[[shards]]\nname = \"s1\"\nurl = \"mysql://nope\"\n\
             [router]\nkind = \"hash\"\n",
            dir.join("s0.db").display()
        ),
    )
    .unwrap();
    let err_path = dir.join("stderr.txt");
    let addr = free_addr();
    let mut cmd = Command::new(BIN);
    cmd.arg("shop")
        .args([
            "--listen",
            &addr.to_string(),
            "--jwt-secret",
            SECRET.as_str(),
        ])
        .arg("--db")
        .arg(format!("sqlite:{}", dir.join("main.db").display()))
        .arg("--shard-map")
        .arg(&map)
        .stderr(std::fs::File::create(&err_path).unwrap());
    let mut child = ChildGuard::spawn("bad-map", &mut cmd);
    let st = child
        .wait_exit(Duration::from_secs(30))
        .expect("the shop kept running with an invalid shard map");
    assert!(!st.success(), "{st}");
    let err = std::fs::read_to_string(&err_path).unwrap();
    assert!(
        err.contains("shard_map") && err.contains("shards[1].url"),
        "{err}"
    );
    assert!(
        testkit::http_get(addr, "/healthz").is_err(),
        "nothing must listen"
    );
}

#[test]
fn two_instances_write_carts_on_shared_sqlite_shards_concurrently_without_errors() {
    let dir = temp_dir("shop-sharded-busy");
    let db = format!("sqlite:{}", dir.join("main.db").display());
    let map = write_map(&dir, "map.toml", &["s0", "s1"]);
    let (a, addr_a) = start_shop("busy-a", &db, &map);
    let (b, addr_b) = start_shop("busy-b", &db, &map);
    const WRITERS: usize = 8;
    const ADDS: usize = 25;
    let mut tokens = Vec::new();
    for n in 0..WRITERS {
        let creds = format!(r#"{{"username":"w{n}","password":"pw-w{n}-123"}}"#);
        let (s, r) = call(addr_a, "POST", "/signup", None, &[], &creds);
        assert_eq!(s, 201, "{r}");
        let (s, r) = call(addr_b, "POST", "/login", None, &[], &creds);
        assert_eq!(s, 200, "{r}");
        tokens.push(r["token"].as_str().unwrap().to_string());
    }
    // Every writer alternates between the two processes; all run at once.
    let threads: Vec<_> = tokens
        .iter()
        .cloned()
        .enumerate()
        .map(|(n, token)| {
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                for k in 0..ADDS {
                    let addr = if (n + k) % 2 == 0 { addr_a } else { addr_b };
                    let line = format!(r#"{{"product_id":{},"quantity":1}}"#, 1 + k % 5);
                    let (s, r) = call(addr, "POST", "/cart", Some(&token), &[], &line);
                    if s != 200 {
                        failures.push(format!("{s}: {r}"));
                    }
                }
                failures
            })
        })
        .collect();
    let failures: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(failures.is_empty(), "cart adds failed: {failures:?}");
    for token in &tokens {
        let (s, cart) = call(addr_b, "GET", "/cart", Some(token), &[], "");
        assert_eq!(s, 200, "{cart}");
        let units: i64 = cart["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["quantity"].as_i64().unwrap())
            .sum();
        assert_eq!(units, ADDS as i64, "no cart item lost: {cart}");
    }
    stop(a);
    stop(b);
}
