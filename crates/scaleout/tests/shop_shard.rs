//! End-to-end: `scaleout shop reshard --from A --to B` over real SQLite shard files,
//! killed with SIGKILL mid-way and re-run: every row exists exactly once afterwards, on its
//! owner under the new map, and only the users whose shard changed moved.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shop::shard::{ShardMap, ShardPool, ShardSet, TableCounts, UserRows};
use testkit::ChildGuard;

const USERS: i64 = 2_000;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_scaleout")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn write_map(dir: &Path, file: &str, names: &[&str], router: &str) -> (PathBuf, ShardMap) {
    let urls: Vec<String> = names
        .iter()
        .map(|n| format!("sqlite:{}", dir.join(format!("{n}.db")).display()))
        .collect();
    write_map_urls(dir, file, names, &urls, router)
}

fn write_map_urls(
    dir: &Path,
    file: &str,
    names: &[&str],
    urls: &[String],
    router: &str,
) -> (PathBuf, ShardMap) {
    let mut text = String::new();
    for (n, url) in names.iter().zip(urls) {
        text.push_str(&format!("[[shards]]\nname = \"{n}\"\nurl = \"{url}\"\n"));
    }
    text.push_str(&format!("[router]\n{router}\n"));
    let path = dir.join(file);
    std::fs::write(&path, &text).unwrap();
    (path, ShardMap::from_toml(&text).unwrap())
}

/// Deterministic rows per user (no RNG needed): 1-3 cart items, 0-2 orders of 1-2 items.
fn rows_of(user: i64) -> UserRows {
    let mut r = UserRows::default();
    for k in 0..(user % 3 + 1) {
        r.cart.push((user, 10 + k, 1 + (user + k) % 4));
    }
    for o in 0..(user % 3) {
        let id = format!("{user:06}-order-{o}");
        let items = 1 + (user + o) % 2;
        let mut total = 0;
        for i in 0..items {
            let price = 100 + (user * 7 + i) % 900;
            total += price * (i + 1);
            r.items.push((id.clone(), user, 500 + i, i + 1, price));
        }
        r.orders.push((
            id,
            user,
            format!("idem-{o}"),
            total,
            1_700_000_000_000 + user,
        ));
    }
    r.orders.sort();
    r.items.sort();
    r
}

fn seed(map: &ShardMap) -> BTreeMap<i64, UserRows> {
    rt().block_on(async {
        let set = ShardSet::connect(map, Duration::from_secs(30))
            .await
            .unwrap();
        let mut all = BTreeMap::new();
        for user in 1..=USERS {
            let rows = rows_of(user);
            set.pool_for(user).copy_in(&rows).await.unwrap();
            all.insert(user, rows);
        }
        set.close().await;
        all
    })
}

fn counts(url: &str) -> TableCounts {
    rt().block_on(async {
        let p = ShardPool::connect(url, Duration::from_secs(10))
            .await
            .unwrap();
        let c = p.counts().await.unwrap();
        p.close().await;
        c
    })
}

fn total_rows(c: TableCounts) -> u64 {
    c.cart_items + c.orders + c.order_items
}

#[test]
fn reshard_killed_midway_and_rerun_loses_and_duplicates_nothing() {
    let dir = testkit::temp_dir("shop-shard");
    let (from_path, from) = write_map(&dir, "from.toml", &["s0", "s1"], "kind = \"hash\"");
    let (to_path, to) = write_map(&dir, "to.toml", &["s0", "s1", "s2"], "kind = \"hash\"");
    kill_and_rerun(&dir, (&from_path, &from), (&to_path, &to));
    let _ = std::fs::remove_dir_all(dir);
}

/// The PostgreSQL server of the tests (`SCALEOUT_TEST_PG`, else the local default).
fn pg_admin_url() -> String {
    std::env::var("SCALEOUT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn psql(sql: &str) {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            &pg_admin_url(),
            "-c",
            sql,
        ])
        .output()
        .expect("psql (run scripts/services up)");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn reshard_postgres_killed_midway_and_rerun_loses_and_duplicates_nothing() {
    let dir = testkit::temp_dir("shop-shard-pg");
    let base = pg_admin_url();
    let prefix = &base[..base.rfind('/').unwrap()];
    let names = ["s0", "s1", "s2"];
    let dbs: Vec<String> = names
        .iter()
        .map(|n| format!("scaleout_e2e_shard_{}_{n}", std::process::id()))
        .collect();
    for db in &dbs {
        psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
        psql(&format!("CREATE DATABASE {db}"));
    }
    let urls: Vec<String> = dbs.iter().map(|d| format!("{prefix}/{d}")).collect();
    let router = "kind = \"consistent\"";
    let (from_path, from) = write_map_urls(&dir, "from.toml", &names[..2], &urls[..2], router);
    let (to_path, to) = write_map_urls(&dir, "to.toml", &names, &urls, router);
    kill_and_rerun(&dir, (&from_path, &from), (&to_path, &to));
    for db in &dbs {
        psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Seeds `from`, runs `scaleout shop reshard` to `to`, SIGKILLs it once about a quarter of
/// the moves reached the third shard, re-runs it to the end and checks every row exists
/// exactly once, on its owner; a third run moves nobody.
fn kill_and_rerun(dir: &Path, from: (&Path, &ShardMap), to: (&Path, &ShardMap)) {
    let (from_path, from) = from;
    let (to_path, to) = to;
    let data = seed(from);
    // Create the new shard's file and tables now, so the watcher below can read it.
    rt().block_on(async {
        let set = ShardSet::connect(to, Duration::from_secs(30))
            .await
            .unwrap();
        set.close().await;
    });
    let seeded: u64 = data.values().map(|r| r.len() as u64).sum();
    let (fr, tr) = (from.static_router().unwrap(), to.static_router().unwrap());
    let moving: Vec<i64> = (1..=USERS)
        .filter(|u| from.shards[fr.shard_for(*u)].url != to.shards[tr.shard_for(*u)].url)
        .collect();
    let moving_rows: u64 = moving.iter().map(|u| data[u].len() as u64).sum();

    // Run 1: SIGKILL once about a quarter of the moves reached the new shard s2.
    let s2 = &to.shards[2].url;
    let mut child = ChildGuard::spawn(
        "scaleout shop reshard",
        Command::new(bin())
            .args(["shop", "reshard", "--from"])
            .arg(from_path)
            .arg("--to")
            .arg(to_path)
            .stdout(Stdio::null()),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "no user reached s2 within 120 s");
        assert!(
            child.is_running(),
            "reshard finished before it could be killed mid-way (too few users for this machine?)"
        );
        // A quarter of the way or so (s2 ends with about half of the moving rows).
        if total_rows(counts(s2)) >= moving_rows / 8 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill();
    // It really stopped mid-way: some rows still wait on their old shard.
    let s2_rows = total_rows(counts(s2));
    eprintln!("killed with {s2_rows} of {moving_rows} moving rows on s2");
    let after_kill: u64 = to.shards.iter().map(|s| total_rows(counts(&s.url))).sum();
    assert!(
        after_kill >= seeded,
        "rows lost by the kill: {after_kill} < {seeded}"
    );

    // Run 2: to the end, its report on stdout.
    let out_path = dir.join("report.json");
    let mut child = ChildGuard::spawn(
        "scaleout shop reshard (re-run)",
        Command::new(bin())
            .args(["shop", "reshard", "--from"])
            .arg(from_path)
            .arg("--to")
            .arg(to_path)
            .stdout(std::fs::File::create(&out_path).unwrap()),
    );
    let status = child
        .wait_exit(Duration::from_secs(300))
        .expect("re-run finished within 300 s");
    assert!(status.success(), "re-run failed: {status}");
    let out = std::fs::read_to_string(&out_path).unwrap();
    let report: serde_json::Value = serde_json::from_str(
        out.lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .unwrap_or_else(|| panic!("no JSON report in {out:?}")),
    )
    .unwrap();
    assert_eq!(report["stopped_early"], false, "{report}");
    let moved = report["users_moved"].as_u64().unwrap();
    assert!(moved > 0 && moved <= moving.len() as u64, "{report}");

    // Exactly once, on the owner, and nothing else anywhere.
    let total: u64 = to.shards.iter().map(|s| total_rows(counts(&s.url))).sum();
    assert_eq!(total, seeded, "rows over all shards after the re-run");
    let s2_final = total_rows(counts(s2));
    assert!(
        s2_rows < s2_final,
        "the kill came after the end ({s2_rows} of {s2_final} rows on s2)"
    );
    rt().block_on(async {
        let set = ShardSet::connect(to, Duration::from_secs(30))
            .await
            .unwrap();
        for (user, rows) in &data {
            assert_eq!(
                &set.pool_for(*user).read_user(*user).await.unwrap(),
                rows,
                "user {user} on its owner"
            );
        }
        set.close().await;
    });

    // A third run has nothing to do.
    let out = Command::new(bin())
        .args(["shop", "reshard", "--from"])
        .arg(from_path)
        .arg("--to")
        .arg(to_path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with('{')).unwrap();
    let report: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(report["users_moved"], 0, "{report}");
}

#[test]
fn reshard_rejects_an_invalid_map_naming_the_field() {
    let dir = testkit::temp_dir("shop-shard-bad");
    let (from_path, _) = write_map(&dir, "from.toml", &["s0", "s1"], "kind = \"hash\"");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "[[shards]]\nname = \"s0\"\nurl = \"sqlite:{0}/s0.db\"\n[[shards]]\nname = \"s1\"\nurl = \"sqlite:{0}/s1.db\"\n[router]\nkind = \"range\"\nupper_bounds = [10, 5]\n",
            dir.display()
        ),
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["shop", "reshard", "--from"])
        .arg(&from_path)
        .arg("--to")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("router.upper_bounds"), "stderr: {err}");
    let _ = std::fs::remove_dir_all(dir);
}
