//! The shop's security baseline, attacked through real `scaleout shop` processes on
//! loopback: the per-deployment JWT key file (created once, private, shared by every
//! instance; world-readable or short keys refused with the flag named), forged tokens,
//! admin only by `scaleout shop admin grant`, a flood of 200 concurrent wrong-password
//! logins (peak RSS and `/healthz` latency measured meanwhile), 50,000 requests with
//! made-up methods against the metric page size, and `/metrics` only on its own listener.
//! Figures are printed (run with `--nocapture`) and recorded in BENCHMARKS.md.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use testkit::{ChildGuard, free_addr, http_get, http_request, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_scaleout");
/// The key earlier releases published in `config.rs`: the attacker's key in these tests,
/// not a secret (tokens forged with it must be refused).
const FORMER_BUILT_IN_DEFAULT: &str = "scaleout-dev-secret-change-me";

/// A running shop: its guard, public and metrics addresses.
struct Shop {
    child: ChildGuard,
    addr: SocketAddr,
    metrics: SocketAddr,
}

/// Starts `scaleout shop` on `db` with `args` and no key flag unless `args` has one;
/// waits (bounded) for /readyz.
fn shop(name: &str, db: &str, args: &[&str]) -> Shop {
    let (addr, metrics) = (free_addr(), free_addr());
    let mut cmd = Command::new(BIN);
    cmd.arg("shop")
        .args(["--listen", &addr.to_string(), "--instance-id", name])
        .args(["--metrics-listen", &metrics.to_string()])
        .args(["--db", db, "--seed-products", "50"])
        .args(args)
        .env_remove("SCALEOUT_SHOP_JWT_SECRET")
        .env("RUST_LOG", "warn");
    let mut child = ChildGuard::spawn(name, &mut cmd);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, _)) = http_get(addr, "/readyz") {
            break;
        }
        assert!(child.is_running(), "{name} exited during start");
        assert!(Instant::now() < deadline, "{name} not ready after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    Shop {
        child,
        addr,
        metrics,
    }
}

/// Runs `scaleout shop` expecting it to refuse to start; returns what it wrote to stderr.
fn refused(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let log = dir.join(format!("refused-{}.log", testkit::free_port()));
    let mut cmd = Command::new(BIN);
    cmd.arg("shop")
        .args(["--listen", &free_addr().to_string()])
        .args(args)
        .env_remove("SCALEOUT_SHOP_JWT_SECRET")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = ChildGuard::spawn("refused shop", &mut cmd);
    let status = child
        .wait_exit(Duration::from_secs(30))
        .expect("a refused start exits");
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "started anyway: {err}");
    err
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

fn post(addr: SocketAddr, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut h = vec![("Content-Type", "application/json")];
    if let Some(b) = &bearer {
        h.push(("Authorization", b.as_str()));
    }
    http_request(addr, "POST", path, &h, body.as_bytes()).unwrap()
}

fn put(addr: SocketAddr, path: &str, token: &str, body: &str) -> (u16, String) {
    let bearer = format!("Bearer {token}");
    http_request(
        addr,
        "PUT",
        path,
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &bearer),
        ],
        body.as_bytes(),
    )
    .unwrap()
}

fn signup_login(addr: SocketAddr, name: &str) -> String {
    let creds = format!(r#"{{"username":"{name}","password":"pw-{name}-123"}}"#);
    let (s, b) = post(addr, "/signup", None, &creds);
    assert_eq!(s, 201, "signup {name}: {b}");
    let (s, b) = post(addr, "/login", None, &creds);
    assert_eq!(s, 200, "login {name}: {b}");
    json(&b)["token"].as_str().unwrap().to_string()
}

/// A JWT signed with `secret` (HS256), built by hand: no JWT library in this test.
fn forge(secret: &[u8], claims: &serde_json::Value) -> String {
    fn b64(data: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for c in data.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..(c.len() + 1) {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }
    let head = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = b64(claims.to_string().as_bytes());
    let signing_input = format!("{head}.{body}");
    format!(
        "{signing_input}.{}",
        b64(&hmac_sha256(secret, signing_input.as_bytes()))
    )
}

/// HMAC-SHA256 with `openssl` (a tool we did not write), so the forgery is independent
/// of the shop's own JWT code.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut child = Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-mac",
            "HMAC",
            "-macopt",
            &format!("hexkey:{hex}"),
            "-binary",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl is required for forging tokens (apt-get install -y openssl)");
    child.stdin.take().unwrap().write_all(msg).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn key_file_is_generated_private_shared_and_checked() {
    let dir = temp_dir("shop-key");
    let db = format!("sqlite:{}", dir.join("shop.db").display());
    let key_path = dir.join("shop.db.jwt-secret");
    // No key flag at all: the key file appears next to the database, private.
    let a = shop("key-a", &db, &[]);
    let mode = std::fs::metadata(&key_path)
        .expect("the key file was generated")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let key = std::fs::read_to_string(&key_path).unwrap();
    assert!(key.trim().len() >= 64, "32 random bytes, hex");
    assert!(!key.contains(FORMER_BUILT_IN_DEFAULT));
    // A second instance reads the same key: a token from A works on B.
    let b = shop("key-b", &db, &[]);
    assert_eq!(
        std::fs::read_to_string(&key_path).unwrap(),
        key,
        "not rewritten"
    );
    let token = signup_login(a.addr, "alice");
    let (s, body) = post(
        b.addr,
        "/cart",
        Some(&token),
        r#"{"product_id":2,"quantity":1}"#,
    );
    assert_eq!(s, 200, "{body}");
    // Forged with the old source secret, claiming admin: 401 for writes and prices.
    let alice_id = json(
        &http_request(
            a.addr,
            "GET",
            "/me",
            &[("Authorization", &format!("Bearer {token}"))],
            b"",
        )
        .unwrap()
        .1,
    )["id"]
        .as_i64()
        .unwrap();
    for sub in [alice_id, 1, 999_999] {
        let forged = forge(
            FORMER_BUILT_IN_DEFAULT.as_bytes(),
            &serde_json::json!({"sub": sub.to_string(), "name": "admin", "adm": true, "iat": now_s(), "exp": now_s() + 3600}),
        );
        let (s, body) = put(a.addr, "/products/2/price", &forged, r#"{"price":1}"#);
        assert_eq!(s, 401, "{body}");
        let (s, _) = post(
            b.addr,
            "/cart",
            Some(&forged),
            r#"{"product_id":2,"quantity":1}"#,
        );
        assert_eq!(s, 401);
    }
    // Signed with the real key (read from the file, as an insider could) for a user that
    // does not exist: no cart write.
    let ghost = forge(
        key.trim().as_bytes(),
        &serde_json::json!({"sub": "777777", "iat": now_s(), "exp": now_s() + 3600}),
    );
    let (s, body) = post(
        a.addr,
        "/cart",
        Some(&ghost),
        r#"{"product_id":2,"quantity":1}"#,
    );
    assert!(s == 401 || s == 403, "{s} {body}");
    // Self-check of the forging: the same construction for alice's id is accepted.
    let real = forge(
        key.trim().as_bytes(),
        &serde_json::json!({"sub": alice_id.to_string(), "iat": now_s(), "exp": now_s() + 3600}),
    );
    let (s, body) = post(
        a.addr,
        "/cart",
        Some(&real),
        r#"{"product_id":3,"quantity":1}"#,
    );
    assert_eq!(
        s, 200,
        "the forging code is right, so the 401s above are the shop's: {body}"
    );
    drop((a, b));

    // A world-readable key file: refused, naming the flag.
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = refused(&dir, &["--db", &db], &[]);
    assert!(
        err.contains("--jwt-secret-file") && err.contains("644"),
        "{err}"
    );
    // A short key: refused, naming the flag.
    let short = dir.join("short-key");
    std::fs::write(&short, "too-short\n").unwrap();
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = refused(
        &dir,
        &["--db", &db, "--jwt-secret-file", short.to_str().unwrap()],
        &[],
    );
    assert!(
        err.contains("--jwt-secret-file") && err.contains("shorter"),
        "{err}"
    );
    let err = refused(
        &dir,
        &["--db", &db],
        &[("SCALEOUT_SHOP_JWT_SECRET", "short")],
    );
    assert!(
        err.contains("jwt_secret") && err.contains("SCALEOUT_SHOP_JWT_SECRET"),
        "{err}"
    );
    // PostgreSQL with no key configured: refused before connecting, naming both ways.
    let err = refused(&dir, &["--db", "postgres://postgres@127.0.0.1:1/none"], &[]);
    assert!(
        err.contains("--jwt-secret-file") && err.contains("SCALEOUT_SHOP_JWT_SECRET"),
        "{err}"
    );
}

#[test]
fn admin_is_granted_by_the_command_never_by_the_name() {
    let dir = temp_dir("shop-admin");
    let db = format!("sqlite:{}", dir.join("shop.db").display());
    let s = shop("admin-a", &db, &[]);
    let admin = signup_login(s.addr, "admin");
    let (st, body) = put(s.addr, "/products/2/price", &admin, r#"{"price":4242}"#);
    assert_eq!(st, 403, "signing up as `admin` grants nothing: {body}");
    let grant = |verb: &str, user: &str| {
        Command::new(BIN)
            .args(["shop", "admin", verb, user, "--db", &db])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let out = grant("grant", "admin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(line["is_admin"], true, "{line}");
    assert_eq!(line["changed"], true, "{line}");
    // Same token, next write: allowed now.
    let (st, body) = put(s.addr, "/products/2/price", &admin, r#"{"price":4242}"#);
    assert_eq!(st, 200, "{body}");
    let out = grant("revoke", "admin");
    assert!(out.status.success());
    let (st, _) = put(s.addr, "/products/2/price", &admin, r#"{"price":4343}"#);
    assert_eq!(st, 403);
    let out = grant("grant", "nobody");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody"));
}

/// Resident and peak resident memory of `pid`, in KiB, from /proc.
fn rss_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
fn login_flood_keeps_memory_bounded_and_healthz_fast() {
    const CLIENTS: usize = 200;
    const FLOOD: Duration = Duration::from_secs(8);
    let dir = temp_dir("shop-flood");
    let db = format!("sqlite:{}", dir.join("shop.db").display());
    let s = shop("flood", &db, &[]);
    signup_login(s.addr, "victim");
    let pid = s.child.pid();
    let (rss0, _) = rss_kib(pid);
    let stop = Arc::new(AtomicBool::new(false));
    // /healthz every 20 ms on a fresh connection, timed end to end.
    let prober = {
        let (stop, addr) = (stop.clone(), s.addr);
        std::thread::spawn(move || {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) && lat.len() < 10_000 {
                let t0 = Instant::now();
                let (st, _) = http_get(addr, "/healthz").expect("/healthz answered");
                assert_eq!(st, 200);
                lat.push(t0.elapsed());
                std::thread::sleep(Duration::from_millis(20));
            }
            lat
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let deadline = Instant::now() + FLOOD;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let addr = s.addr;
            std::thread::spawn(move || {
                let body = format!(r#"{{"username":"victim","password":"wrong-{i}"}}"#);
                let (mut unauthorized, mut shed, mut other) = (0u32, 0u32, Vec::new());
                // Each client keeps one login in flight until the flood ends (bounded).
                for _ in 0..10_000 {
                    if Instant::now() >= deadline {
                        break;
                    }
                    match post(addr, "/login", None, &body) {
                        (401, _) => unauthorized += 1,
                        // 503: every hash permit taken; 429: this client's share of them
                        // (per address and per username) taken. Both are shedding.
                        (503 | 429, b) => {
                            assert!(json(&b)["error"].is_string(), "{b}");
                            shed += 1;
                            // Honour Retry-After only partly, to keep the pressure on.
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        (st, b) => other.push(format!("{st} {b}")),
                    }
                }
                (unauthorized, shed, other)
            })
        })
        .collect();
    let mut peak_rss = 0;
    while Instant::now() < deadline {
        peak_rss = peak_rss.max(rss_kib(pid).0);
        std::thread::sleep(Duration::from_millis(100));
    }
    let (mut unauthorized, mut shed) = (0, 0);
    for c in clients {
        let (u, sh, other) = c.join().expect("client thread");
        assert!(other.is_empty(), "unexpected answers: {other:?}");
        unauthorized += u;
        shed += sh;
    }
    stop.store(true, Ordering::Relaxed);
    let mut lat = prober.join().expect("prober");
    let (rss_end, hwm) = rss_kib(pid);
    lat.sort();
    let p50 = lat[lat.len() / 2];
    let max = *lat.last().unwrap();
    let page = http_get(s.metrics, "/metrics").unwrap().1;
    eprintln!(
        "login flood: {CLIENTS} clients for {FLOOD:?}: {unauthorized} x 401 (hashed), {shed} x 503 (shed); \
         RSS {} MiB before, peak sampled {} MiB, VmHWM {} MiB, after {} MiB; \
         /healthz n={} p50 {p50:?} p90 {:?} max {max:?}",
        rss0 / 1024,
        peak_rss / 1024,
        hwm / 1024,
        rss_end / 1024,
        lat.len(),
        lat[lat.len() * 9 / 10],
    );
    assert!(unauthorized > 0, "some logins were really hashed");
    assert!(shed > 0, "the bound refused the excess");
    assert!(page.contains("shop_password_hash_shed_total"), "{page}");
    // The issue's bounds: RSS under 500 MB (the whole process lifetime's peak) and
    // /healthz under 100 ms (the median, so one scheduler hiccup on this shared 2-core
    // machine, busy with other builds, is not a failure; the 90th percentile gets 10x).
    assert!(hwm * 1024 < 500_000_000, "peak RSS {} MiB", hwm / 1024);
    assert!(p50 < Duration::from_millis(100), "/healthz p50 {p50:?}");
    let p90 = lat[lat.len() * 9 / 10];
    assert!(p90 < Duration::from_secs(1), "/healthz p90 {p90:?}");
}

/// Sends `n` requests with made-up methods over one keep-alive connection; returns how
/// many got a 4xx with a JSON body.
fn method_flood(addr: SocketAddr, start: usize, n: usize) -> usize {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // One write per request and no Nagle: else each request waits for a delayed ACK.
    s.set_nodelay(true).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut ok = 0;
    for i in start..start + n {
        let path = if i % 2 == 0 {
            "/catalog"
        } else {
            "/products/3"
        };
        let request = format!("M{i:08X} {path} HTTP/1.1\r\nHost: shop\r\n\r\n");
        w.write_all(request.as_bytes()).unwrap();
        let mut status = String::new();
        r.read_line(&mut status).unwrap();
        let mut len = 0usize;
        loop {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            if l == "\r\n" || l.is_empty() {
                break;
            }
            if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        if status
            .split_whitespace()
            .nth(1)
            .is_some_and(|c| c.starts_with('4'))
            && body.starts_with(b"{\"error\"")
        {
            ok += 1;
        }
    }
    ok
}

#[test]
fn made_up_methods_do_not_grow_metrics_and_metrics_are_not_public() {
    const REQUESTS: usize = 50_000;
    let dir = temp_dir("shop-methods");
    let db = format!("sqlite:{}", dir.join("shop.db").display());
    let s = shop("methods", &db, &[]);
    let (st, body) = http_get(s.addr, "/metrics").unwrap();
    assert_eq!(st, 404, "/metrics is not on the public listener: {body}");
    assert!(json(&body)["error"].is_string(), "{body}");
    let (st, page0) = http_get(s.metrics, "/metrics").unwrap();
    assert_eq!(st, 200);
    let (rss0, _) = rss_kib(s.child.pid());
    let t0 = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|k| {
            let addr = s.addr;
            std::thread::spawn(move || method_flood(addr, k * REQUESTS / 4, REQUESTS / 4))
        })
        .collect();
    let ok: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let took = t0.elapsed();
    assert_eq!(
        ok, REQUESTS,
        "every made-up method got a 4xx with a JSON body"
    );
    let (_, page1) = http_get(s.metrics, "/metrics").unwrap();
    let (rss1, _) = rss_kib(s.child.pid());
    let series = |p: &str| p.lines().filter(|l| !l.starts_with('#')).count();
    eprintln!(
        "{REQUESTS} made-up methods in {took:?}: /metrics {} -> {} bytes, {} -> {} series; RSS {} -> {} MiB",
        page0.len(),
        page1.len(),
        series(&page0),
        series(&page1),
        rss0 / 1024,
        rss1 / 1024
    );
    // Two new label sets at most (method `other` on the two routes), 17 lines each.
    assert!(series(&page1) <= series(&page0) + 2 * 17, "{page1}");
    assert!(page1.contains("method=\"other\""), "{page1}");
    assert!(!page1.contains("M0000"), "no made-up method became a label");
}
