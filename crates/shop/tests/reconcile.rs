//! The stock reconciliation job closes the sharded checkout's "crash between reserve and
//! order" gap, on SQLite and on PostgreSQL:
//! - a real crash: a child shop process runs concurrent sharded checkouts and is
//!   SIGKILLed at a random moment, repeatedly, until at least one reservation was left
//!   without its order. After every kill the ledger accounts for every unit (initial
//!   stock = stock + units ordered + units of ledger rows without an order); after reconciliation the ledger
//!   is empty and initial stock = stock + units ordered, exactly;
//! - the states a crash leaves, built by hand: reserved without an order (given back),
//!   ordered but not settled (kept sold), a checkout still within its lease (untouched);
//!   a second run changes nothing; the voided id is claimed on its shard;
//! - the job path: a `--role worker` with the shard map schedules the reconciliation on
//!   its queue and gives a leaked reservation back.
//!
//! The killed shop is this test binary re-executed to run only `child_checkouts` (which
//! does nothing unless `SHOP_RECON_CHILD=1`).

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::*;
use shop::db::AnyPool;
use shop::{AppState, ShopConfig};
use tokio_util::sync::CancellationToken;

/// Writes a two-shard map over `urls`; returns its path.
fn write_map(urls: &[String]) -> String {
    let text = format!(
        "[[shards]]\nname = \"s0\"\nurl = \"{}\"\n[[shards]]\nname = \"s1\"\nurl = \"{}\"\n\
         [router]\nkind = \"hash\"\n",
        urls[0], urls[1]
    );
    let dir = std::env::temp_dir().join(format!("shop-recon-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shards.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A sharded SQLite shop config: main db and two shard files, fresh.
fn sqlite_sharded(tag: &str) -> ShopConfig {
    let urls = vec![temp_db(&format!("{tag}-s0")), temp_db(&format!("{tag}-s1"))];
    ShopConfig {
        shard_map: Some(write_map(&urls)),
        // The tests run the reconciliation themselves; the in-process one (first run at
        // start, when the ledger is empty) must not race them.
        reconcile_interval_ms: 86_400_000,
        ..sqlite_config(tag)
    }
}

/// Fresh PostgreSQL databases on the real server (fails loudly when it is missing).
async fn pg_databases(tag: &str, n: usize) -> Vec<String> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&pg_url())
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {} is required: {e}", pg_url()));
    let mut urls = Vec::new();
    for i in 0..n {
        let name = format!("shop_recon_{tag}_{i}_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut c)
            .await
            .unwrap();
        urls.push(with_db(&pg_url(), &name));
    }
    urls
}

/// A shop on PostgreSQL: main db and two shards, fresh databases.
async fn pg_sharded(tag: &str) -> ShopConfig {
    let urls = pg_databases(tag, 3).await;
    ShopConfig {
        db: urls[0].clone(),
        shard_map: Some(write_map(&urls[1..])),
        pool_size: 4,
        reconcile_interval_ms: 86_400_000,
        ..sqlite_config(tag)
    }
}

async fn scalar(pool: &AnyPool, sql: &'static str) -> i64 {
    shop::on_pool!(pool, p => sqlx::query_scalar::<_, Option<i64>>(sql).fetch_one(p).await.unwrap())
        .unwrap_or(0)
}

/// (stock on --db, units in orders on every shard, units of ledger rows without their
/// order, ledger rows).
async fn accounts(st: &AppState) -> (i64, i64, i64, i64) {
    let main = st.db.primary();
    // SUM over BIGINT is NUMERIC on PostgreSQL: cast back.
    let stock = scalar(main, "SELECT CAST(SUM(stock) AS BIGINT) FROM products").await;
    let mut ordered = 0;
    for pool in st.shards.as_ref().unwrap().pools() {
        ordered += scalar(
            pool,
            "SELECT CAST(SUM(quantity) AS BIGINT) FROM order_items",
        )
        .await;
    }
    let rows: Vec<(String, String)> = shop::on_pool!(main, p => {
        sqlx::query_as("SELECT order_id, lines FROM stock_reservations").fetch_all(p).await.unwrap()
    });
    // A ledger row whose order committed (killed before the settle) is already counted
    // in `ordered`: only rows without their order hold stock of their own.
    let mut reserved = 0;
    for (id, text) in &rows {
        if order_exists(st, id).await {
            continue;
        }
        let lines: Vec<(i64, i64)> = serde_json::from_str(text).unwrap();
        reserved += lines.iter().map(|l| l.1).sum::<i64>();
    }
    (stock, ordered, reserved, rows.len() as i64)
}

async fn order_exists(st: &AppState, id: &str) -> bool {
    for pool in st.shards.as_ref().unwrap().pools() {
        let c: i64 = shop::on_pool!(pool, p => {
            sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE id = $1")
                .bind(id).fetch_one(p).await.unwrap()
        });
        if c > 0 {
            return true;
        }
    }
    false
}

/// Ledger rows whose order exists on no shard (left by a crash between reserve and order).
async fn leaked(st: &AppState) -> usize {
    let ids: Vec<String> = shop::on_pool!(st.db.primary(), p => {
        sqlx::query_scalar("SELECT order_id FROM stock_reservations").fetch_all(p).await.unwrap()
    });
    let mut n = 0;
    for id in ids {
        let mut found = false;
        for pool in st.shards.as_ref().unwrap().pools() {
            let c: i64 = shop::on_pool!(pool, p => {
                sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE id = $1")
                    .bind(&id).fetch_one(p).await.unwrap()
            });
            found |= c > 0;
        }
        n += usize::from(!found);
    }
    n
}

async fn orders_total(st: &AppState) -> i64 {
    let mut n = 0;
    for pool in st.shards.as_ref().unwrap().pools() {
        n += scalar(pool, "SELECT COUNT(*) FROM orders").await;
    }
    n
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

/// Concurrent checkout loops in the child.
const CHILD_LOOPS: usize = 8;

/// The child: a shop instance (in process, through its router) running checkouts for the
/// users whose tokens the parent wrote, in a loop, until it is killed.
#[test]
fn child_checkouts() {
    if std::env::var("SHOP_RECON_CHILD").as_deref() != Ok("1") {
        return;
    }
    let cfg = ShopConfig {
        db: std::env::var("SHOP_RECON_DB").unwrap(),
        shard_map: Some(std::env::var("SHOP_RECON_MAP").unwrap()),
        jwt_secret: std::env::var("SHOP_RECON_SECRET").unwrap(),
        pool_size: 4,
        seed_products: 100,
        // The parent reconciles; the child's own start-up run must not.
        stock_lease_ms: 86_400_000,
        ..ShopConfig::default()
    };
    let tokens: Vec<String> = std::fs::read_to_string(std::env::var("SHOP_RECON_TOKENS").unwrap())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let st = shop::build_state(&cfg).await.unwrap();
        let mut tasks = Vec::new();
        for (n, token) in tokens.into_iter().enumerate() {
            let st = st.clone();
            tasks.push(tokio::spawn(async move {
                // Bounded: the parent kills the child long before this ends.
                for k in 0..100_000u64 {
                    let product = 1 + (n as u64 * 7 + k) % 100;
                    let body = format!(r#"{{"product_id":{product},"quantity":{}}}"#, 1 + k % 3);
                    let _ = call(&st, "POST", "/cart", Some(&token), Some(&body), &[]).await;
                    let key = format!("child-{}-{n}-{k}", std::process::id());
                    let _ = call(
                        &st,
                        "POST",
                        "/orders",
                        Some(&token),
                        None,
                        &[("idempotency-key", &key)],
                    )
                    .await;
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

async fn sigkill_mid_checkout(cfg: ShopConfig) {
    let st = state(&cfg).await;
    let mut tokens = Vec::new();
    for n in 0..CHILD_LOOPS {
        tokens.push(user(&st, &format!("crash-{n}")).await);
    }
    let dir =
        std::env::temp_dir().join(format!("shop-recon-tok-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("tokens");
    std::fs::write(&token_file, tokens.join("\n")).unwrap();
    let (stock0, ordered0, reserved0, _) = accounts(&st).await;
    assert_eq!((ordered0, reserved0), (0, 0));
    let initial = stock0;

    let exe = std::env::current_exe().unwrap();
    let mut kills = 0;
    let mut seen_leaks = 0;
    // Bounded: a kill lands between reserve and order with high probability (8 loops,
    // each spending a good share of its time there); 12 tries make a miss negligible.
    for attempt in 0..12u64 {
        let mut child = ChildGuard(Some(
            Command::new(&exe)
                .args([
                    "--exact",
                    "child_checkouts",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("SHOP_RECON_CHILD", "1")
                .env("SHOP_RECON_DB", &cfg.db)
                .env("SHOP_RECON_MAP", cfg.shard_map.as_deref().unwrap())
                .env("SHOP_RECON_SECRET", SECRET.as_str())
                .env("SHOP_RECON_TOKENS", &token_file)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        ));
        // Wait until the child is placing orders, then kill it at a varying moment.
        let before = orders_total(&st).await;
        let start = Instant::now();
        while orders_total(&st).await < before + 5 {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the child placed no orders"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(attempt * 7 % 40)).await;
        child.kill();
        kills += 1;
        // Whatever the kill interrupted, every unit is accounted for.
        let (stock, ordered, reserved, _) = accounts(&st).await;
        assert_eq!(
            stock + ordered + reserved,
            initial,
            "after kill {kills}: stock {stock} + ordered {ordered} + reserved {reserved}"
        );
        seen_leaks = leaked(&st).await;
        if seen_leaks > 0 {
            break;
        }
    }
    assert!(
        seen_leaks > 0,
        "no kill in {kills} landed between reserve and order; the test proved nothing"
    );
    let (stock, ordered, reserved, rows) = accounts(&st).await;
    assert!(reserved > 0 && rows > 0);
    assert!(
        stock + ordered < initial,
        "stock is under-counted before reconciling"
    );
    // Every checkout process is dead: a lease of 0 resolves every row now.
    let report = shop::reconcile::reconcile_stock(
        &st.db,
        st.shards.as_ref().unwrap(),
        0,
        shop::http::now_ms() as i64,
        10_000,
    )
    .await
    .unwrap();
    assert_eq!(report.examined, rows as u64, "{report:?}");
    assert_eq!(report.released as usize, seen_leaks, "{report:?}");
    assert_eq!(
        report.settled + report.released,
        report.examined,
        "{report:?}"
    );
    let (stock, ordered, reserved, rows) = accounts(&st).await;
    assert_eq!((reserved, rows), (0, 0), "the ledger is empty");
    assert_eq!(
        stock + ordered,
        initial,
        "no unit lost, none given back twice"
    );
    // Idempotent: a second run finds nothing.
    let again = shop::reconcile::reconcile_stock(
        &st.db,
        st.shards.as_ref().unwrap(),
        0,
        shop::http::now_ms() as i64,
        10_000,
    )
    .await
    .unwrap();
    assert_eq!(again.examined, 0, "{again:?}");
    assert_eq!(accounts(&st).await.0, stock);
    eprintln!(
        "sigkill_mid_checkout: {kills} kill(s), {seen_leaks} leaked reservation(s) given back ({} units), {} settled",
        report.units_returned, report.settled
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_checkout_is_reconciled_on_sqlite() {
    sigkill_mid_checkout(sqlite_sharded("recon-kill")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_checkout_is_reconciled_on_postgres() {
    sigkill_mid_checkout(pg_sharded("kill").await).await;
}

/// Places an order for a new user with `product` x `qty`; returns (user id, order id).
async fn order(st: &Arc<AppState>, name: &str, product: i64, qty: i64) -> (i64, String) {
    let t = user(st, name).await;
    let body = format!(r#"{{"product_id":{product},"quantity":{qty}}}"#);
    let (s, _, b) = call(st, "POST", "/cart", Some(&t), Some(&body), &[]).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _, o) = call(
        st,
        "POST",
        "/orders",
        Some(&t),
        None,
        &[("idempotency-key", "k")],
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{o}");
    let creds = format!(r#"{{"username":"{name}","password":"pw-{name}-123"}}"#);
    let (_, _, l) = call(st, "POST", "/login", None, Some(&creds), &[]).await;
    (
        l["user_id"].as_i64().unwrap(),
        o["id"].as_str().unwrap().to_string(),
    )
}

async fn exec(pool: &AnyPool, sql: &'static str, order_id: &str, a: i64, b: String, t: i64) {
    shop::on_pool!(pool, p => {
        sqlx::query(sql).bind(order_id).bind(a).bind(b).bind(t).execute(p).await.unwrap();
    });
}

async fn stock_of(st: &AppState, id: i64) -> i64 {
    shop::on_pool!(st.db.primary(), p => {
        sqlx::query_scalar::<_, i64>("SELECT stock FROM products WHERE id = $1").bind(id).fetch_one(p).await.unwrap()
    })
}

const LEDGER: &str =
    "INSERT INTO stock_reservations (order_id, user_id, lines, created_at) VALUES ($1, $2, $3, $4)";

async fn crash_states(cfg: ShopConfig) {
    let st = state(&cfg).await;
    let shards = st.shards.as_ref().unwrap();
    let now = shop::http::now_ms() as i64;
    let lease = 60_000u64;
    let old = now - 2 * lease as i64;
    // A normal checkout settles its reservation: nothing left in the ledger.
    order(&st, "normal", 3, 2).await;
    assert_eq!(
        accounts(&st).await.3,
        0,
        "a completed checkout leaves no ledger row"
    );
    // State A: the crash after the reserve (stock taken, ledger row, no order).
    let stock_7 = stock_of(&st, 7).await;
    shop::on_pool!(st.db.primary(), p => {
        sqlx::query("UPDATE products SET stock = stock - 4 WHERE id = 7").execute(p).await.unwrap();
    });
    let (ua, _) = order(&st, "crashed", 1, 1).await;
    exec(
        st.db.primary(),
        LEDGER,
        "lost-order-a",
        ua,
        "[[7,4]]".into(),
        old,
    )
    .await;
    // State B: the crash after the shard commit, before the settle.
    let (ub, order_b) = order(&st, "unsettled", 9, 3).await;
    let stock_9 = stock_of(&st, 9).await;
    exec(st.db.primary(), LEDGER, &order_b, ub, "[[9,3]]".into(), old).await;
    // State C: a checkout still within its lease (it may yet commit).
    exec(
        st.db.primary(),
        LEDGER,
        "in-flight-c",
        ua,
        "[[11,5]]".into(),
        now,
    )
    .await;

    let r = shop::reconcile::reconcile_stock(&st.db, shards, lease, now, 500)
        .await
        .unwrap();
    assert_eq!(
        (r.examined, r.released, r.settled, r.units_returned),
        (2, 1, 1, 4),
        "{r:?}"
    );
    assert_eq!(stock_of(&st, 7).await, stock_7, "A's stock came back");
    assert_eq!(
        stock_of(&st, 9).await,
        stock_9,
        "B's order keeps its stock sold"
    );
    let left: Vec<String> = shop::on_pool!(st.db.primary(), p => {
        sqlx::query_scalar("SELECT order_id FROM stock_reservations").fetch_all(p).await.unwrap()
    });
    assert_eq!(left, vec!["in-flight-c".to_string()]);
    // The voided id is claimed on its owner's shard, so a late checkout cannot commit it;
    // committed orders carry their own claim.
    let (_, owner_a) = shards.home(ua);
    let a_claim: Option<String> = shop::on_pool!(owner_a, p => {
        sqlx::query_scalar("SELECT outcome FROM order_claims WHERE order_id = $1")
            .bind("lost-order-a").fetch_optional(p).await.unwrap()
    });
    assert_eq!(a_claim.as_deref(), Some("void"));
    let (_, owner_b) = shards.home(ub);
    let b_claim: Option<String> = shop::on_pool!(owner_b, p => {
        sqlx::query_scalar("SELECT outcome FROM order_claims WHERE order_id = $1")
            .bind(&order_b).fetch_optional(p).await.unwrap()
    });
    assert_eq!(b_claim.as_deref(), Some("order"));
    // Idempotent.
    let again = shop::reconcile::reconcile_stock(&st.db, shards, lease, now, 500)
        .await
        .unwrap();
    assert_eq!(again.examined, 0, "{again:?}");
    assert_eq!(stock_of(&st, 7).await, stock_7);
}

#[tokio::test]
async fn crash_states_are_resolved_on_sqlite() {
    crash_states(sqlite_sharded("recon-states")).await;
}

#[tokio::test]
async fn crash_states_are_resolved_on_postgres() {
    crash_states(pg_sharded("states").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_schedules_the_reconciliation_on_its_queue() {
    let mut cfg = sqlite_sharded("recon-worker");
    cfg.jobs = shop::jobs::JobsMode::Queue;
    cfg.jobs_url = Some(redis_url());
    cfg.jobs_queue = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    cfg.store_timeout_ms = 500;
    cfg.stock_lease_ms = 1_000;
    cfg.reconcile_interval_ms = 200;
    let st = state(&cfg).await;
    let (u, _) = order(&st, "wleak", 2, 1).await;
    let stock_5 = stock_of(&st, 5).await;
    shop::on_pool!(st.db.primary(), p => {
        sqlx::query("UPDATE products SET stock = stock - 6 WHERE id = 5").execute(p).await.unwrap();
    });
    exec(
        st.db.primary(),
        LEDGER,
        "lost-order-w",
        u,
        "[[5,6]]".into(),
        shop::http::now_ms() as i64,
    )
    .await;
    let cancel = CancellationToken::new();
    let worker = tokio::spawn(shop::jobs::run_worker(cfg.clone(), cancel.clone()));
    // The row becomes due after the lease; the worker's next scheduled run gives it back.
    let limit = Duration::from_millis(cfg.stock_lease_ms + 20 * cfg.reconcile_interval_ms + 10_000);
    let start = Instant::now();
    while accounts(&st).await.3 > 0 && start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    worker.await.unwrap().unwrap();
    assert_eq!(
        accounts(&st).await.3,
        0,
        "the worker's job resolved the ledger row"
    );
    assert_eq!(stock_of(&st, 5).await, stock_5);
}
