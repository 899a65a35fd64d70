//! Unit tests of the routers and the shard map, and resharding against real SQLite files
//! and real PostgreSQL databases (127.0.0.1:5432, or `SCALEOUT_TEST_PG`; the test fails
//! when it is not there).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use super::*;

// ------------------------------------------------------------------ routers

fn counts(router: &dyn ShardRouter, users: std::ops::Range<i64>) -> Vec<usize> {
    let mut c = vec![0; router.shard_count()];
    for u in users {
        c[router.shard_for(u)] += 1;
    }
    c
}

#[test]
fn hash_spreads_sequential_ids_evenly() {
    let r = HashRouter::new(4);
    let c = counts(&r, 1..100_001);
    for n in &c {
        assert!((23_000..27_000).contains(n), "uneven: {c:?}");
    }
}

#[test]
fn hash_is_stable_across_instances_and_versions() {
    // Golden values: if the hash function changes, every deployed user would move. These
    // pin mix64 (SplitMix64's finalizer) and the modulo.
    assert_eq!(router::mix64(0), 0xe220_a839_7b1d_cdaf);
    assert_eq!(router::mix64(1), 0x910a_2dec_8902_5cc1);
    let a = HashRouter::new(7);
    let b = HashRouter::new(7);
    for u in [-5, 0, 1, 42, 1 << 40, i64::MAX, i64::MIN] {
        assert_eq!(a.shard_for(u), b.shard_for(u));
        assert!(a.shard_for(u) < 7);
    }
}

#[test]
fn hash_resize_moves_most_users() {
    // The reason consistent hashing exists: mod-N rehashes nearly everyone.
    let (a, b) = (HashRouter::new(3), HashRouter::new(4));
    let moved = (0..10_000)
        .filter(|u| a.shard_for(*u) != b.shard_for(*u))
        .count();
    assert!(moved > 6_000, "moved {moved}");
}

#[test]
fn range_routes_by_bounds() {
    let r = RangeRouter::new(vec![100, 200]);
    assert_eq!(r.shard_count(), 3);
    assert_eq!(r.shard_for(i64::MIN), 0);
    assert_eq!(r.shard_for(99), 0);
    assert_eq!(r.shard_for(100), 1);
    assert_eq!(r.shard_for(199), 1);
    assert_eq!(r.shard_for(200), 2);
    assert_eq!(r.shard_for(i64::MAX), 2);
    // Splitting the last range moves only the users of that range.
    let split = RangeRouter::new(vec![100, 200, 300]);
    for u in 0..400 {
        if u < 300 {
            assert_eq!(r.shard_for(u), split.shard_for(u), "user {u}");
        }
    }
}

#[test]
fn consistent_spreads_evenly_and_ignores_list_order() {
    let r = ConsistentRouter::new(&["a", "b", "c", "d"], 160);
    let c = counts(&r, 0..100_000);
    for n in &c {
        assert!((20_000..30_000).contains(n), "uneven: {c:?}");
    }
    // The same shards listed in another order: same owner *names*.
    let names = ["a", "b", "c", "d"];
    let rev = ["d", "c", "b", "a"];
    let r2 = ConsistentRouter::new(&rev, 160);
    for u in 0..5_000 {
        assert_eq!(names[r.shard_for(u)], rev[r2.shard_for(u)], "user {u}");
    }
}

#[test]
fn consistent_add_moves_about_one_over_n_all_to_the_new_shard() {
    let before = ConsistentRouter::new(&["s0", "s1", "s2"], 160);
    let after = ConsistentRouter::new(&["s0", "s1", "s2", "s3"], 160);
    let users = 0..40_000i64;
    let mut moved = 0;
    for u in users.clone() {
        let (a, b) = (before.shard_for(u), after.shard_for(u));
        if a != b {
            moved += 1;
            assert_eq!(b, 3, "user {u} moved between old shards");
        }
    }
    let frac = moved as f64 / users.count() as f64;
    assert!((0.18..0.32).contains(&frac), "moved fraction {frac}");
}

#[test]
fn consistent_remove_moves_only_the_removed_shards_users() {
    let before = ConsistentRouter::new(&["s0", "s1", "s2"], 160);
    let after = ConsistentRouter::new(&["s0", "s2"], 160);
    let names_b = ["s0", "s1", "s2"];
    let names_a = ["s0", "s2"];
    for u in 0..20_000 {
        let old = names_b[before.shard_for(u)];
        if old != "s1" {
            assert_eq!(old, names_a[after.shard_for(u)], "user {u}");
        }
    }
}

#[test]
fn directory_pins_and_defaults() {
    let mut pinned = HashMap::new();
    pinned.insert(7, 2);
    pinned.insert(8, 9); // out of range: ignored, default used
    let d = DirectoryRouter::new(pinned, Box::new(HashRouter::new(3)));
    assert_eq!(d.shard_for(7), 2);
    assert!(d.is_pinned(7));
    let h = HashRouter::new(3);
    assert_eq!(d.shard_for(8), h.shard_for(8));
    for u in 100..200 {
        assert_eq!(d.shard_for(u), h.shard_for(u));
    }
}

// ------------------------------------------------------------------ shard map

#[test]
fn map_parses_every_router_kind() {
    let m = ShardMap::from_toml(
        r#"
        shards = [{ name = "a", url = "sqlite:a.db" }, { name = "b", url = "sqlite:b.db" }]
        router = { kind = "range", upper_bounds = [1000] }
        "#,
    )
    .unwrap();
    assert_eq!(m.static_router().unwrap().shard_for(1000), 1);
    let m = ShardMap::from_toml(
        r#"
        [[shards]]
        name = "a"
        url = "postgres://postgres@127.0.0.1:5432/a"
        [router]
        kind = "directory"
        url = "sqlite:dir.db"
        default = { kind = "consistent", virtual_nodes = 10 }
        "#,
    )
    .unwrap();
    assert!(matches!(m.router, RouterSpec::Directory { .. }));
    assert!(m.static_router().is_err(), "a directory needs its database");
}

fn config_error(text: &str) -> String {
    match ShardMap::from_toml(text) {
        Err(ShardError::Config { field, reason }) => format!("{field}: {reason}"),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn map_errors_name_the_field() {
    let two =
        r#"shards = [{ name = "a", url = "sqlite:a.db" }, { name = "b", url = "sqlite:b.db" }]"#;
    let e = config_error(&format!("{two}\nrouter = {{ kind = \"hash\", extra = 1 }}"));
    assert!(e.contains("extra"), "{e}");
    let e = config_error(&format!(
        "{two}\nrouter = {{ kind = \"range\", upper_bounds = [] }}"
    ));
    assert!(e.starts_with("router.upper_bounds"), "{e}");
    let e = config_error(&format!(
        "{two}\nrouter = {{ kind = \"range\", upper_bounds = [5, 5] }}"
    ));
    assert!(e.starts_with("router.upper_bounds"), "{e}");
    let e = config_error(
        r#"shards = [{ name = "a", url = "sqlite:a.db" }, { name = "b", url = "sqlite:a.db" }]
        router = { kind = "hash" }"#,
    );
    assert!(e.starts_with("shards[1].url"), "{e}");
    let e = config_error(
        r#"shards = [{ name = "a", url = "mysql://x" }]
        router = { kind = "hash" }"#,
    );
    assert!(e.starts_with("shards[0].url"), "{e}");
    let e = config_error(&format!(
        "{two}\nrouter = {{ kind = \"directory\", url = \"sqlite:d.db\", default = {{ kind = \"directory\", url = \"sqlite:e.db\", default = {{ kind = \"hash\" }} }} }}"
    ));
    assert!(e.starts_with("router.default.kind"), "{e}");
    let e = config_error(&format!(
        "{two}\nrouter = {{ kind = \"consistent\", virtual_nodes = 0 }}"
    ));
    assert!(e.starts_with("router.virtual_nodes"), "{e}");
    let e = config_error(r#"router = { kind = "hash" }"#);
    assert!(e.contains("shards"), "{e}");
}

// ------------------------------------------------------------------ resharding

/// A fresh directory for this test's SQLite files.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "scaleout-shard-{tag}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sqlite_map(dir: &std::path::Path, names: &[&str], router: &str) -> ShardMap {
    let shards: Vec<String> = names
        .iter()
        .map(|n| {
            format!(
                "{{ name = \"{n}\", url = \"sqlite:{}\" }}",
                dir.join(format!("{n}.db")).display()
            )
        })
        .collect();
    ShardMap::from_toml(&format!(
        "shards = [{}]\nrouter = {router}",
        shards.join(", ")
    ))
    .unwrap()
}

/// Seeded per-user data: for each user 1..=users, 1-3 cart items and 0-2 orders of 1-3
/// items each. Written to the user's owner under `map`. Returns every row, by user.
async fn seed(map: &ShardMap, users: i64, seed: u64) -> BTreeMap<i64, UserRows> {
    let set = ShardSet::connect(map, Duration::from_secs(30))
        .await
        .unwrap();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut all = BTreeMap::new();
    for user in 1..=users {
        let mut rows = UserRows::default();
        let mut products: Vec<i64> = (0..rng.random_range(1..=3))
            .map(|_| rng.random_range(1..1000))
            .collect();
        products.sort_unstable();
        products.dedup();
        for p in products {
            rows.cart.push((user, p, rng.random_range(1..5)));
        }
        for o in 0..rng.random_range(0..=2) {
            let id = format!("{user:08}-{o}-{:08x}", rng.random::<u32>());
            let mut total = 0;
            for _ in 0..rng.random_range(1..=3) {
                let (p, q, price) = (
                    rng.random_range(1..1000),
                    rng.random_range(1..4),
                    rng.random_range(100..10_000),
                );
                total += q * price;
                rows.items.push((id.clone(), user, p, q, price));
            }
            rows.orders.push((
                id,
                user,
                format!("key-{o}"),
                total,
                1_700_000_000_000 + user,
            ));
        }
        rows.orders.sort();
        rows.items.sort();
        set.pool_for(user).copy_in(&rows).await.unwrap();
        all.insert(user, rows);
    }
    set.close().await;
    all
}

/// Asserts every seeded row exists exactly once over all databases of `map`, on the
/// user's owner under `map`, and nothing else exists.
async fn assert_placed_exactly_once(map: &ShardMap, expected: &BTreeMap<i64, UserRows>) {
    let set = ShardSet::connect(map, Duration::from_secs(30))
        .await
        .unwrap();
    let mut total = TableCounts::default();
    for p in set.pools() {
        let c = p.counts().await.unwrap();
        total.cart_items += c.cart_items;
        total.orders += c.orders;
        total.order_items += c.order_items;
    }
    let want = TableCounts {
        cart_items: expected.values().map(|r| r.cart.len() as u64).sum(),
        orders: expected.values().map(|r| r.orders.len() as u64).sum(),
        order_items: expected.values().map(|r| r.items.len() as u64).sum(),
    };
    assert_eq!(total, want, "row counts over all shards");
    for (user, rows) in expected {
        let owner = set.pool_for(*user);
        assert_eq!(
            &owner.read_user(*user).await.unwrap(),
            rows,
            "user {user} on its owner"
        );
    }
    set.close().await;
}

async fn run(from: &ShardMap, to: &ShardMap, opts: ReshardOptions) -> ReshardReport {
    reshard(from, to, &opts, &CancellationToken::new())
        .await
        .unwrap()
}

fn changed_owner(from: &ShardMap, to: &ShardMap, users: i64) -> u64 {
    let (f, t) = (from.static_router().unwrap(), to.static_router().unwrap());
    (1..=users)
        .filter(|u| from.shards[f.shard_for(*u)].url != to.shards[t.shard_for(*u)].url)
        .count() as u64
}

#[tokio::test]
async fn reshard_hash_two_to_three_sqlite_moves_only_changed_users() {
    let dir = temp_dir("hash23");
    let from = sqlite_map(&dir, &["s0", "s1"], r#"{ kind = "hash" }"#);
    let to = sqlite_map(&dir, &["s0", "s1", "s2"], r#"{ kind = "hash" }"#);
    let data = seed(&from, 1000, 7).await;
    let rows: u64 = data.values().map(|r| r.len() as u64).sum();
    let report = run(&from, &to, ReshardOptions::default()).await;
    let expected_moves = changed_owner(&from, &to, 1000);
    assert!(
        expected_moves > 300,
        "hash 2->3 should move many: {expected_moves}"
    );
    assert_eq!(report.users_moved, expected_moves);
    let moved_rows: u64 = data
        .iter()
        .filter(|(u, _)| changed_owner_one(&from, &to, **u))
        .map(|(_, r)| r.len() as u64)
        .sum();
    assert_eq!(report.rows_copied, moved_rows);
    assert_eq!(report.rows_deleted, moved_rows);
    assert!(moved_rows < rows);
    assert_placed_exactly_once(&to, &data).await;
    // A second run finds nothing to do.
    let again = run(&from, &to, ReshardOptions::default()).await;
    assert_eq!(
        (again.users_moved, again.rows_copied, again.rows_deleted),
        (0, 0, 0)
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn changed_owner_one(from: &ShardMap, to: &ShardMap, u: i64) -> bool {
    let (f, t) = (from.static_router().unwrap(), to.static_router().unwrap());
    from.shards[f.shard_for(u)].url != to.shards[t.shard_for(u)].url
}

#[tokio::test]
async fn reshard_consistent_moves_about_a_third_only_to_the_new_shard() {
    let dir = temp_dir("cons23");
    let from = sqlite_map(&dir, &["s0", "s1"], r#"{ kind = "consistent" }"#);
    let to = sqlite_map(&dir, &["s0", "s1", "s2"], r#"{ kind = "consistent" }"#);
    let data = seed(&from, 600, 11).await;
    let before: Vec<TableCounts> = {
        let set = ShardSet::connect(&to, Duration::from_secs(30))
            .await
            .unwrap();
        let mut v = Vec::new();
        for p in set.pools() {
            v.push(p.counts().await.unwrap());
        }
        set.close().await;
        v
    };
    assert_eq!(before[2], TableCounts::default());
    let report = run(&from, &to, ReshardOptions::default()).await;
    assert_eq!(report.users_moved, changed_owner(&from, &to, 600));
    let frac = report.users_moved as f64 / 600.0;
    assert!((0.2..0.47).contains(&frac), "moved fraction {frac}");
    // Every moved user went to s2: s0 and s1 only lost rows.
    let set = ShardSet::connect(&to, Duration::from_secs(30))
        .await
        .unwrap();
    for user in 1..=600 {
        if changed_owner_one(&from, &to, user) {
            assert_eq!(set.shard_for(user), 2, "user {user}");
        }
    }
    set.close().await;
    assert_placed_exactly_once(&to, &data).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn reshard_interrupted_between_copy_and_delete_then_rerun_loses_and_duplicates_nothing() {
    let dir = temp_dir("crash");
    let from = sqlite_map(&dir, &["s0", "s1"], r#"{ kind = "hash" }"#);
    let to = sqlite_map(&dir, &["s0", "s1", "s2"], r#"{ kind = "hash" }"#);
    let data = seed(&from, 1000, 3).await;
    let total: u64 = data.values().map(|r| r.len() as u64).sum();
    // "Crash" right after the 50th user's copy committed, before its delete.
    let first = run(
        &from,
        &to,
        ReshardOptions {
            stop_after_copy_of: Some(50),
            ..Default::default()
        },
    )
    .await;
    assert!(first.stopped_early);
    assert_eq!(first.users_moved, 49);
    // The 50th user is now on two shards: more rows exist than were seeded.
    let set = ShardSet::connect(&to, Duration::from_secs(30))
        .await
        .unwrap();
    let mut rows_now = 0;
    for p in set.pools() {
        let c = p.counts().await.unwrap();
        rows_now += c.cart_items + c.orders + c.order_items;
    }
    set.close().await;
    assert!(
        rows_now > total,
        "expected the duplicate of the interrupted user"
    );
    // Another interruption after some complete moves, then a full run.
    let second = run(
        &from,
        &to,
        ReshardOptions {
            stop_after_users: Some(100),
            ..Default::default()
        },
    )
    .await;
    assert!(second.stopped_early);
    assert_eq!(second.users_moved, 100);
    let last = run(&from, &to, ReshardOptions::default()).await;
    assert!(!last.stopped_early);
    assert_eq!(
        first.users_moved + second.users_moved + last.users_moved,
        changed_owner(&from, &to, 1000)
    );
    assert_placed_exactly_once(&to, &data).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn reshard_cancelled_stops_between_users() {
    let dir = temp_dir("cancel");
    let from = sqlite_map(&dir, &["s0"], r#"{ kind = "hash" }"#);
    let to = sqlite_map(&dir, &["s0", "s1"], r#"{ kind = "hash" }"#);
    let data = seed(&from, 50, 5).await;
    let cancel = CancellationToken::new();
    cancel.cancel();
    let r = reshard(&from, &to, &ReshardOptions::default(), &cancel)
        .await
        .unwrap();
    assert!(r.stopped_early);
    assert_eq!(r.users_moved, 0);
    assert_placed_exactly_once(&from, &data).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn reshard_directory_moves_only_reassigned_users() {
    let dir = temp_dir("dir");
    let dir_url = format!("sqlite:{}", dir.join("directory.db").display());
    let router =
        format!(r#"{{ kind = "directory", url = "{dir_url}", default = {{ kind = "hash" }} }}"#);
    let from = sqlite_map(&dir, &["s0", "s1"], &router);
    let to = sqlite_map(&dir, &["s0", "s1", "s2"], &router);
    // Pin user 1..=5 to s0 before seeding.
    let set = ShardSet::connect(&from, Duration::from_secs(30))
        .await
        .unwrap();
    for u in 1..=5 {
        set.assign(u, "s0").await.unwrap();
    }
    set.close().await;
    let data = seed(&from, 200, 9).await;
    // Adding a shard under a hash default moves the unpinned users whose hash changed,
    // never the pinned ones.
    let f = ShardSet::router_for(&from, Duration::from_secs(5))
        .await
        .unwrap();
    let t = ShardSet::router_for(&to, Duration::from_secs(5))
        .await
        .unwrap();
    let expected = (1..=200)
        .filter(|u| from.shards[f.shard_for(*u)].url != to.shards[t.shard_for(*u)].url)
        .count();
    let r = run(&from, &to, ReshardOptions::default()).await;
    assert_eq!(r.users_moved as usize, expected);
    let set = ShardSet::connect(&to, Duration::from_secs(30))
        .await
        .unwrap();
    for u in 1..=5 {
        assert_eq!(set.shard_for(u), 0, "pinned user {u}");
    }
    // Reassign user 1 to s2, reshard between the same map (old router snapshot vs new).
    set.assign(1, "s2").await.unwrap();
    set.close().await;
    let r = run(&to, &to, ReshardOptions::default()).await;
    assert_eq!(r.users_moved, 1);
    assert_placed_exactly_once(&to, &data).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn reads_during_reshard_try_the_new_owner_first() {
    let from = ShardMap::from_toml(
        r#"shards = [{ name = "a", url = "sqlite:a.db" }]
        router = { kind = "hash" }"#,
    )
    .unwrap();
    let to = ShardMap::from_toml(
        r#"shards = [{ name = "a", url = "sqlite:a.db" }, { name = "b", url = "sqlite:b.db" }]
        router = { kind = "hash" }"#,
    )
    .unwrap();
    let (f, t) = (from.static_router().unwrap(), to.static_router().unwrap());
    let moving = (0..100).find(|u| t.shard_for(*u) == 1).unwrap();
    let staying = (0..100).find(|u| t.shard_for(*u) == 0).unwrap();
    assert_eq!(
        ShardSet::read_order_during_reshard((&from, &*f), (&to, &*t), moving),
        vec!["sqlite:b.db", "sqlite:a.db"]
    );
    assert_eq!(
        ShardSet::read_order_during_reshard((&from, &*f), (&to, &*t), staying),
        vec!["sqlite:a.db"]
    );
}

// ------------------------------------------------------------------ PostgreSQL

fn pg_url() -> String {
    std::env::var("SCALEOUT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Creates fresh databases on the test server; returns their urls. Fails loudly when the
/// server is not there.
async fn pg_databases(tag: &str, n: usize) -> Vec<String> {
    let admin = sqlx::PgPool::connect(&pg_url())
        .await
        .expect("PostgreSQL for the shard tests (run scripts/services up)");
    let base = pg_url();
    let prefix = &base[..base.rfind('/').unwrap()];
    let mut urls = Vec::new();
    for i in 0..n {
        let name = format!("scaleout_shard_{tag}_{}_{i}", std::process::id());
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name}"
        )))
        .execute(&admin)
        .await
        .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .unwrap();
        urls.push(format!("{prefix}/{name}"));
    }
    admin.close().await;
    urls
}

async fn pg_drop(urls: &[String]) {
    let admin = sqlx::PgPool::connect(&pg_url()).await.unwrap();
    for u in urls {
        let name = &u[u.rfind('/').unwrap() + 1..];
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&admin)
        .await;
    }
    admin.close().await;
}

fn pg_map(urls: &[String], router: &str) -> ShardMap {
    let shards: Vec<String> = urls
        .iter()
        .enumerate()
        .map(|(i, u)| format!("{{ name = \"s{i}\", url = \"{u}\" }}"))
        .collect();
    ShardMap::from_toml(&format!(
        "shards = [{}]\nrouter = {router}",
        shards.join(", ")
    ))
    .unwrap()
}

#[tokio::test]
async fn reshard_postgres_two_to_three_with_interruption() {
    let urls = pg_databases("pg23", 3).await;
    let from = pg_map(&urls[..2], r#"{ kind = "consistent" }"#);
    let to = pg_map(&urls, r#"{ kind = "consistent" }"#);
    let data = seed(&from, 300, 13).await;
    let first = run(
        &from,
        &to,
        ReshardOptions {
            stop_after_copy_of: Some(20),
            ..Default::default()
        },
    )
    .await;
    assert!(first.stopped_early);
    let rest = run(&from, &to, ReshardOptions::default()).await;
    assert_eq!(
        first.users_moved + rest.users_moved,
        changed_owner(&from, &to, 300)
    );
    assert_placed_exactly_once(&to, &data).await;
    pg_drop(&urls).await;
}

#[test]
fn sharded_tables_match_the_shop_schema() {
    // The shard module carries its own copy of the per-user tables' DDL (so it can create
    // them on a fresh shard); it must stay identical to crate::schema, the one definition.
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    for ddl in store::SHARDED_TABLES_DDL
        .iter()
        .filter(|d| d.contains("TABLE"))
    {
        for (name, schema) in [
            ("SQLITE", crate::schema::SQLITE),
            ("POSTGRES", crate::schema::POSTGRES),
        ] {
            assert!(
                schema.iter().any(|s| norm(s) == norm(ddl)),
                "schema::{name} has no statement equal to {ddl}"
            );
        }
    }
}
