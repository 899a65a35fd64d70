//! End-to-end tests of `scaleout shop` as real processes on loopback: several instances
//! on one SQLite file writing concurrently, sessions across two instances behind the
//! balancer (lost with `memory`, kept with jwt/redis/sql), cache invalidation seen through
//! a second instance, start-up refusals, and graceful shutdown on SIGTERM.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use testkit::{ChildGuard, free_addr, temp_dir, wait_http_ok};

const BIN: &str = env!("CARGO_BIN_EXE_scaleout");
/// One JWT key for this test run, generated (no key lives in the source).
static SECRET: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| shop::secret::generate_key().expect("OS random source"));

fn redis_url() -> String {
    std::env::var("SCALEOUT_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn pg_url() -> String {
    std::env::var("SCALEOUT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A response: status, lower-cased header lines, body.
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One HTTP/1.1 request over a fresh connection (Connection: close), with headers back.
fn req(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut s =
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        r.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r.push_str(body);
    s.write_all(r.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    // Chunked bodies: the shop answers with Content-Length, the balancer may not; keep it simple.
    Resp {
        status,
        headers,
        body: body.to_string(),
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The `--metrics-listen` address of each shop started by [`shop`], by public address:
/// `/metrics` is not served on the public listener.
static METRICS: std::sync::Mutex<Vec<(SocketAddr, SocketAddr)>> = std::sync::Mutex::new(Vec::new());

/// The metrics page of the shop listening on `addr`.
fn metrics_page(addr: SocketAddr) -> String {
    let m = METRICS
        .lock()
        .unwrap()
        .iter()
        .find(|(a, _)| *a == addr)
        .map(|(_, m)| *m)
        .expect("a shop started by shop()");
    req(m, "GET", "/metrics", &[], "").body
}

/// Starts `scaleout shop` with `args` on a free port and waits until /readyz says 200.
fn shop(name: &str, args: &[&str]) -> (ChildGuard, SocketAddr) {
    let addr = free_addr();
    let metrics = free_addr();
    METRICS.lock().unwrap().push((addr, metrics));
    let mut cmd = Command::new(BIN);
    cmd.arg("shop")
        .args([
            "--metrics-listen",
            &metrics.to_string(),
            "--listen",
            &addr.to_string(),
            "--instance-id",
            name,
            "--jwt-secret",
            SECRET.as_str(),
        ])
        .args(["--seed-products", "200"])
        .args(args)
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

fn signup_login(addr: SocketAddr, name: &str) -> Resp {
    let creds = format!(r#"{{"username":"{name}","password":"pw-{name}-123"}}"#);
    let r = req(addr, "POST", "/signup", &[], &creds);
    assert_eq!(r.status, 201, "signup {name}: {}", r.body);
    let r = req(addr, "POST", "/login", &[], &creds);
    assert_eq!(r.status, 200, "login {name}: {}", r.body);
    r
}

#[test]
fn four_processes_on_one_sqlite_file_write_concurrently_without_busy_errors_or_lost_items() {
    let dir = temp_dir("shop-sqlite4");
    let db = format!("sqlite:{}", dir.join("shop.db").display());
    // All four start at once: migrations and seeding serialise on BEGIN IMMEDIATE.
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let db = db.clone();
            std::thread::spawn(move || shop(&format!("sq{i}"), &["--db", &db, "--pool-size", "4"]))
        })
        .collect();
    let instances: Vec<(ChildGuard, SocketAddr)> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    let addrs: Vec<SocketAddr> = instances.iter().map(|(_, a)| *a).collect();

    // 8 users, each writing through all four instances from two threads at once.
    const USERS: usize = 8;
    const ADDS_PER_THREAD: usize = 25;
    let tokens: Vec<String> = (0..USERS)
        .map(|u| {
            signup_login(addrs[u % 4], &format!("w{u}")).json()["token"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut threads = Vec::new();
    for (u, token) in tokens.iter().enumerate() {
        for half in 0..2 {
            let token = token.clone();
            let addrs = addrs.clone();
            threads.push(std::thread::spawn(move || {
                let mut fails = Vec::new();
                for i in 0..ADDS_PER_THREAD {
                    // Distinct product per add: every add must appear as its own cart row.
                    let pid = 1 + half * ADDS_PER_THREAD + i;
                    let body = format!(r#"{{"product_id":{pid},"quantity":1}}"#);
                    let r = req(
                        addrs[(u + i + half) % 4],
                        "POST",
                        "/cart",
                        &[("Authorization", &bearer(&token))],
                        &body,
                    );
                    if r.status != 200 {
                        fails.push(format!("{} {}", r.status, r.body));
                    }
                }
                fails
            }));
        }
    }
    let fails: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(
        fails.is_empty(),
        "{} failed cart adds, e.g. {:?}",
        fails.len(),
        &fails[..fails.len().min(3)]
    );
    for (u, token) in tokens.iter().enumerate() {
        let r = req(
            addrs[(u + 1) % 4],
            "GET",
            "/cart",
            &[("Authorization", &bearer(token))],
            "",
        );
        assert_eq!(r.status, 200);
        let items = r.json()["items"].as_array().unwrap().len();
        assert_eq!(items, 2 * ADDS_PER_THREAD, "user w{u} lost cart items");
    }
    // No instance answered a 5xx (metrics count every response by status).
    for a in &addrs {
        let m = metrics_page(*a);
        let five = m
            .lines()
            .filter(|l| l.starts_with("shop_requests_total") && l.contains("status=\"5"))
            .count();
        assert_eq!(five, 0, "5xx on {a}:\n{m}");
    }
    drop(instances);
}

/// Logs in through `front`, adds to the cart, then reads the cart 8 times through
/// `front`: returns (instance that served login, [(instance, status, cart items)]).
fn session_round(
    front: SocketAddr,
    user: &str,
    use_cookie: bool,
) -> (String, Vec<(String, u16, usize)>) {
    let login = signup_login(front, user);
    let login_instance = login.header("x-instance-id").unwrap().to_string();
    let token = login.json()["token"].as_str().unwrap().to_string();
    let auth = if use_cookie {
        let cookie = login
            .header("set-cookie")
            .expect("cookie sessions set a cookie");
        ("Cookie", cookie.split(';').next().unwrap().to_string())
    } else {
        ("Authorization", bearer(&token))
    };
    // The cart add may itself land on the other instance; retry a few times.
    let mut added = false;
    for _ in 0..4 {
        let r = req(
            front,
            "POST",
            "/cart",
            &[(auth.0, &auth.1)],
            r#"{"product_id":7,"quantity":2}"#,
        );
        if r.status == 200 {
            added = true;
            break;
        }
    }
    assert!(added, "cart add never succeeded");
    let reads = (0..8)
        .map(|_| {
            let r = req(front, "GET", "/cart", &[(auth.0, &auth.1)], "");
            let items = r.json()["items"].as_array().map(|a| a.len()).unwrap_or(0);
            (
                r.header("x-instance-id").unwrap_or("?").to_string(),
                r.status,
                items,
            )
        })
        .collect();
    (login_instance, reads)
}

#[test]
fn sessions_survive_a_second_instance_except_in_memory() {
    // `redis-cluster`: Redis sessions and cache on the real 3-master cluster.
    for variant in ["memory", "jwt", "redis", "sql", "redis-cluster"] {
        let store = variant.trim_end_matches("-cluster");
        let dir = temp_dir(&format!("shop-sess-{variant}"));
        let db = format!("sqlite:{}", dir.join("shop.db").display());
        let prefix = format!("e2e-{variant}-{}", std::process::id());
        let mut args = vec![
            "--db",
            db.as_str(),
            "--sessions",
            store,
            "--key-prefix",
            prefix.as_str(),
        ];
        let redis = if variant == "redis-cluster" {
            std::env::var("SCALEOUT_TEST_REDIS_CLUSTER").unwrap_or_else(|_| {
                "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002".into()
            })
        } else {
            redis_url()
        };
        if store == "redis" {
            args.extend(["--redis", redis.as_str()]);
        }
        let (_a, a) = shop(&format!("{variant}-a"), &args);
        let (_b, b) = shop(&format!("{variant}-b"), &args);
        let lb_addr = free_addr();
        let mut lb = ChildGuard::spawn(
            "lb",
            Command::new(BIN).env("RUST_LOG", "warn").args([
                "lb",
                "--listen",
                &lb_addr.to_string(),
                "--backend",
                &format!("http://{a}"),
                "--backend",
                &format!("http://{b}"),
                "--strategy",
                "round_robin",
            ]),
        );
        wait_http_ok(lb_addr, "/healthz", Duration::from_secs(30));
        assert!(lb.is_running());
        let (login_at, reads) = session_round(lb_addr, &format!("u{store}"), store != "jwt");
        let served_by: std::collections::HashSet<&str> =
            reads.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(
            served_by.len(),
            2,
            "{variant}: both instances served through the balancer: {reads:?}"
        );
        if store == "memory" {
            // The instance that did not log the user in does not know the session.
            let lost: Vec<_> = reads.iter().filter(|r| r.0 != login_at).collect();
            assert!(!lost.is_empty());
            assert!(
                lost.iter().all(|r| r.1 == 401),
                "memory: other instance must not know the session: {reads:?}"
            );
            let kept: Vec<_> = reads.iter().filter(|r| r.0 == login_at).collect();
            assert!(kept.iter().all(|r| r.1 == 200 && r.2 == 1), "{reads:?}");
        } else {
            assert!(
                reads.iter().all(|r| r.1 == 200 && r.2 == 1),
                "{variant}: login and cart kept on every instance: {reads:?}"
            );
        }
    }
}

#[test]
fn a_price_change_on_one_instance_is_fresh_on_the_other() {
    let dir = temp_dir("shop-inval");
    let db = format!("sqlite:{}", dir.join("shop.db").display());
    let prefix = format!("e2e-inval-{}", std::process::id());
    let redis = redis_url();
    let args = [
        "--db",
        db.as_str(),
        "--redis",
        redis.as_str(),
        "--key-prefix",
        prefix.as_str(),
    ];
    let (_a, a) = shop("inval-a", &args);
    let (_b, b) = shop("inval-b", &args);
    let admin = signup_login(a, "admin").json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    // Admin only by the explicit command, never by the name.
    let out = Command::new(BIN)
        .args(["shop", "admin", "grant", "admin", "--db", db.as_str()])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = req(b, "GET", "/products/11", &[], "").json();
    let again = req(b, "GET", "/products/11", &[], "").json();
    assert_eq!(before, again);
    let metrics = metrics_page(b);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("shop_cache_hits_total") && !l.ends_with(" 0")),
        "B hit its cache"
    );
    let price = before["price"].as_i64().unwrap() + 500;
    let r = req(
        a,
        "PUT",
        "/products/11/price",
        &[("Authorization", &bearer(&admin))],
        &format!(r#"{{"price":{price}}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let after = req(b, "GET", "/products/11", &[], "").json();
    assert_eq!(after["price"], price);
    let catalog = req(b, "GET", "/catalog", &[], "").json();
    if let Some(p) = catalog["products"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == 11)
    {
        assert_eq!(p["price"], price);
    }
}

#[test]
fn start_is_refused_with_a_clear_message() {
    let run = |args: &[&str]| {
        let out = Command::new(BIN).arg("shop").args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let pg = pg_url();
    let key_dir = temp_dir("shop-refused-key");
    let key = key_dir.join("jwt-secret");
    let (ok, err) = run(&[
        "--db",
        &pg,
        "--jwt-secret-file",
        key.to_str().unwrap(),
        "--pool-size",
        "50",
        "--expected-instances",
        "1000",
        "--listen",
        &free_addr().to_string(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("(1000)") && err.contains("(50)") && err.contains("max_connections"),
        "{err}"
    );

    let dir = temp_dir("shop-badcfg");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[shop]\npool_sise = 4\n").unwrap();
    let (ok, err) = run(&["-c", file.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("pool_sise"), "{err}");
    std::fs::write(&file, "[shop]\nsessions = \"redis\"\n").unwrap();
    let (ok, err) = run(&["-c", file.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("sessions"), "{err}");
    let (ok, err) = run(&["--sessions", "cookies"]);
    assert!(!ok);
    assert!(err.contains("cookies"), "{err}");
}

#[test]
fn memory_sessions_warn_loudly_and_sigterm_exits_zero() {
    let dir = temp_dir("shop-term");
    let db = format!("sqlite:{}", dir.join("shop.db").display());
    let log = dir.join("stderr.log");
    let addr = free_addr();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "shop",
        "--listen",
        &addr.to_string(),
        "--db",
        &db,
        "--sessions",
        "memory",
        "--seed-products",
        "50",
    ])
    .env("RUST_LOG", "info")
    .stderr(std::fs::File::create(&log).unwrap());
    let mut child = ChildGuard::spawn("term", &mut cmd);
    wait_http_ok(addr, "/readyz", Duration::from_secs(60));
    // Requests in flight while the signal arrives still complete.
    let load = std::thread::spawn(move || {
        let mut codes = Vec::new();
        for _ in 0..200 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                Ok(_) => {}
                Err(_) => break, // stopped accepting
            }
            match testkit::http_get(addr, "/catalog") {
                Ok((code, _)) => codes.push(code),
                Err(_) => break,
            }
        }
        codes
    });
    std::thread::sleep(Duration::from_millis(100));
    child.signal("TERM");
    let status = child
        .wait_exit(Duration::from_secs(20))
        .expect("exited after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    let codes = load.join().unwrap();
    assert!(
        codes.iter().all(|c| *c == 200),
        "every answered request succeeded: {codes:?}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("--sessions memory") && text.contains("!!!"),
        "loud warning missing:\n{text}"
    );
}

fn pg_replica_url() -> String {
    std::env::var("SCALEOUT_TEST_PG_REPLICA")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5433/postgres".into())
}

fn with_db(url: &str, db: &str) -> String {
    format!(
        "{}/{db}",
        url.rsplit_once('/')
            .expect("postgres URL with a database")
            .0
    )
}

#[test]
fn postgres_primary_and_replica_through_the_binary() {
    // A dedicated database; CREATE DATABASE replicates to the standby.
    let name = format!("shop_e2e_{}_{}", std::process::id(), free_addr().port());
    let out = Command::new("psql")
        .args([
            pg_url().as_str(),
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            &format!("CREATE DATABASE {name}"),
        ])
        .output()
        .expect("psql is needed (scripts/services installs PostgreSQL)");
    assert!(
        out.status.success(),
        "PostgreSQL primary required: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let primary = with_db(&pg_url(), &name);
    let replica = with_db(&pg_replica_url(), &name);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !Command::new("psql")
        .args([replica.as_str(), "-c", "SELECT 1"])
        .output()
        .unwrap()
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "standby {replica} never got the database (is 5433 streaming?)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let redis = redis_url();
    let prefix = format!("e2e-pg-{}", std::process::id());
    let (_s, addr) = shop(
        "pg",
        &[
            "--db",
            &primary,
            "--replica",
            &replica,
            "--redis",
            &redis,
            "--cache",
            "none",
            "--key-prefix",
            &prefix,
            "--workers",
            "2",
            "--pool-size",
            "4",
            "--expected-instances",
            "4",
        ],
    );
    let token = signup_login(addr, "pguser").json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let auth = bearer(&token);
    let mut stale = 0;
    for i in 0..100 {
        let pid = 1 + i % 20;
        let w = req(
            addr,
            "POST",
            "/cart",
            &[("Authorization", &auth)],
            &format!(r#"{{"product_id":{pid},"quantity":1}}"#),
        );
        assert_eq!(w.status, 200, "{}", w.body);
        let want = w.json()["quantity"].as_i64().unwrap();
        let r = req(addr, "GET", "/cart", &[("Authorization", &auth)], "");
        let got = r.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["product_id"] == pid)
            .and_then(|l| l["quantity"].as_i64());
        if got != Some(want) {
            stale += 1;
        }
    }
    assert_eq!(stale, 0, "stale reads after write");
    for _ in 0..10 {
        assert_eq!(req(addr, "GET", "/catalog", &[], "").status, 200);
    }
    let m = metrics_page(addr);
    let replica_reads: f64 = m
        .lines()
        .find(|l| l.starts_with("shop_reads_routed_total") && l.contains("role=\"replica\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(
        replica_reads >= 10.0,
        "reads reached the replica: {replica_reads}\n{m}"
    );
}
