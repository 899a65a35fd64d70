//! End-to-end tests of `scaleout lb` with real `scaleout backend` processes on loopback:
//! SIGKILL under load (retries, passive and active ejection, re-admission), removal
//! through the admin API under load, bad input with bounded memory, SIGTERM drain, and
//! config validation before listening.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use testkit::{ChildGuard, free_addr, http_get, http_request, temp_dir, wait_http_ok, wait_tcp};

const BIN: &str = env!("CARGO_BIN_EXE_scaleout");
const TOKEN: &str = "test-admin-token";

fn spawn_backend(id: &str, addr: SocketAddr) -> ChildGuard {
    let g = ChildGuard::spawn(
        &format!("backend {id}"),
        Command::new(BIN).args(["backend", "--listen", &addr.to_string(), "--id", id]),
    );
    wait_http_ok(addr, "/healthz", Duration::from_secs(20));
    g
}

struct Lb {
    guard: ChildGuard,
    addr: SocketAddr,
    admin: SocketAddr,
    _dir: PathBuf,
}

/// Starts `scaleout lb` with `extra` TOML appended to a `[balancer]` section that sets
/// the listeners and the backends `(name, addr)`.
fn spawn_lb(backends: &[(&str, SocketAddr)], extra: &str) -> Lb {
    let addr = free_addr();
    let admin = free_addr();
    let dir = temp_dir("lb");
    let mut toml = format!(
        "[balancer]\nlisten = \"{addr}\"\nstrategy = \"round_robin\"\n[balancer.admin]\nlisten = \"{admin}\"\ntoken = \"{TOKEN}\"\n"
    );
    for (name, a) in backends {
        toml.push_str(&format!(
            "[[balancer.backends]]\nname = \"{name}\"\naddr = \"{a}\"\n"
        ));
    }
    toml.push_str(extra);
    let file = dir.join("lb.toml");
    std::fs::write(&file, toml).unwrap();
    let guard = ChildGuard::spawn(
        "lb",
        Command::new(BIN).args(["lb", "-c", file.to_str().unwrap()]),
    );
    wait_tcp(addr, Duration::from_secs(20));
    wait_http_ok(admin, "/healthz", Duration::from_secs(20));
    Lb {
        guard,
        addr,
        admin,
        _dir: dir,
    }
}

/// The admin API's view of one backend.
fn backend_status(lb: &Lb, name: &str) -> Option<serde_json::Value> {
    let auth = format!("Bearer {TOKEN}");
    let (status, body) = http_request(
        lb.admin,
        "GET",
        "/backends",
        &[("Authorization", &auth)],
        b"",
    )
    .ok()?;
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).ok()?;
    list.as_array()?.iter().find(|b| b["name"] == name).cloned()
}

fn wait_for(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A steady client load: `threads` loops of GETs (fresh connection each), bounded by a
/// hard cap of requests and by `stop`.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    handles: Vec<JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(addr: SocketAddr, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let handles = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                let ok = ok.clone();
                std::thread::spawn(move || {
                    let mut failures = Vec::new();
                    let deadline = Instant::now() + Duration::from_secs(60);
                    for _ in 0..200_000 {
                        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                            break;
                        }
                        match http_get(addr, "/") {
                            Ok((200, _)) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok((s, b)) => failures.push(format!("status {s}: {b}")),
                            Err(e) => failures.push(format!("io: {e}")),
                        }
                    }
                    failures
                })
            })
            .collect();
        Load { stop, ok, handles }
    }

    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self
            .handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

#[test]
fn sigkill_under_load_passive_ejection_no_failed_gets() {
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let mut a = spawn_backend("a", a_addr);
    let _b = spawn_backend("b", b_addr);
    // Passive detection only: active checks off.
    let lb = spawn_lb(
        &[("a", a_addr), ("b", b_addr)],
        "[balancer.health]\nenabled = false\n[balancer.outlier]\nconsecutive_failures = 3\nbase_ejection_ms = 500\nmax_ejection_ms = 1000\n",
    );
    let load = Load::start(lb.addr, 3);
    std::thread::sleep(Duration::from_millis(500));
    a.kill();
    let ejected_after = wait_for(Duration::from_secs(5), "a ejected", || {
        backend_status(&lb, "a").is_some_and(|s| s["ejected"] == true)
    });
    assert!(
        ejected_after <= Duration::from_secs(1),
        "passive ejection took {ejected_after:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    // The backend comes back on the same port: re-admitted once its ejection ends.
    let _a2 = spawn_backend("a", a_addr);
    let served_before = backend_status(&lb, "a").unwrap()["responses_by_class"][1]
        .as_u64()
        .unwrap();
    wait_for(Duration::from_secs(10), "a re-admitted and serving", || {
        backend_status(&lb, "a").is_some_and(|s| {
            s["eligible"] == true
                && s["responses_by_class"][1].as_u64().unwrap() > served_before + 10
        })
    });
    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} failed GETs (of {}): {:?}",
        failures.len(),
        ok,
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 100, "load too small to mean anything: {ok}");
}

#[test]
fn sigkill_under_load_active_health_checks_no_failed_gets() {
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let mut a = spawn_backend("a", a_addr);
    let _b = spawn_backend("b", b_addr);
    // Active checks only: passive ejection off. Down after fall=2 failed checks 200 ms
    // apart, up after rise=2. Until then half the requests hit the dead backend and need
    // a retry, so the retry budget is sized for that share (the default 20% is meant for
    // pools where passive ejection removes a dead backend after a few failures).
    let lb = spawn_lb(
        &[("a", a_addr), ("b", b_addr)],
        "[balancer.health]\ninterval_ms = 200\ntimeout_ms = 150\nrise = 2\nfall = 2\n[balancer.outlier]\nenabled = false\n[balancer.retry]\nbudget_ratio = 1.0\n",
    );
    let load = Load::start(lb.addr, 3);
    std::thread::sleep(Duration::from_millis(500));
    a.kill();
    let down_after = wait_for(Duration::from_secs(10), "a unhealthy", || {
        backend_status(&lb, "a").is_some_and(|s| s["health"] == "unhealthy")
    });
    // fall x interval + timeout = 550 ms expected; 3 s is the bar.
    assert!(
        down_after <= Duration::from_secs(3),
        "active checks took {down_after:?}"
    );
    let _a2 = spawn_backend("a", a_addr);
    wait_for(Duration::from_secs(10), "a healthy again", || {
        backend_status(&lb, "a").is_some_and(|s| s["health"] == "healthy" && s["eligible"] == true)
    });
    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} failed GETs (of {}): {:?}",
        failures.len(),
        ok,
        &failures[..failures.len().min(5)]
    );
    let metrics = http_request(
        lb.admin,
        "GET",
        "/metrics",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        b"",
    )
    .unwrap()
    .1;
    assert!(
        metrics
            .contains("scaleout_lb_backend_health_transitions_total{backend=\"a\",to=\"down\"} 1"),
        "{metrics}"
    );
}

#[test]
fn admin_remove_under_load_drains_without_failures() {
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let _a = spawn_backend("a", a_addr);
    let _b = spawn_backend("b", b_addr);
    let lb = spawn_lb(&[("a", a_addr), ("b", b_addr)], "");
    let load = Load::start(lb.addr, 3);
    std::thread::sleep(Duration::from_millis(500));
    let auth = format!("Bearer {TOKEN}");
    let (status, body) = http_request(
        lb.admin,
        "DELETE",
        "/backends/a?grace_ms=5000",
        &[("Authorization", &auth)],
        b"",
    )
    .unwrap();
    assert_eq!(status, 202, "{body}");
    wait_for(Duration::from_secs(10), "a gone from the list", || {
        backend_status(&lb, "a").is_none()
    });
    std::thread::sleep(Duration::from_millis(300));
    let (ok, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 100, "{ok}");
    for _ in 0..5 {
        let (s, body) = http_get(lb.addr, "/").unwrap();
        assert_eq!(s, 200);
        assert!(body.contains("from b"), "{body}");
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Sends `bytes` on a fresh connection and returns what comes back before close/timeout.
fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

#[test]
fn bad_input_is_refused_and_everyone_else_is_served() {
    let b_addr = free_addr();
    let _b = spawn_backend("b", b_addr);
    let lb = spawn_lb(
        &[("b", b_addr)],
        "[balancer.timeouts]\nheader_read_ms = 2500\n[balancer.limits]\nmax_body_bytes = 100000\n",
    );
    // Warm up, then measure memory.
    for _ in 0..50 {
        assert_eq!(http_get(lb.addr, "/").unwrap().0, 200);
    }
    let pid = lb.guard.pid();
    let rss_before = rss_kib(pid);

    // Slowloris: a head trickled one byte a second is cut by the header-read timeout
    // (2.5 s here), while other clients keep being served.
    let addr = lb.addr;
    let slowloris = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut reader = s.try_clone().unwrap();
        reader
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let start = Instant::now();
        let writer = std::thread::spawn(move || {
            for b in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa".iter() {
                if s.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1000));
            }
        });
        // Returns when the balancer closes the connection (EOF, reset, or a final answer).
        let mut buf = [0u8; 256];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        let closed_after = start.elapsed();
        drop(writer);
        closed_after
    });
    for _ in 0..20 {
        assert_eq!(
            http_get(lb.addr, "/").unwrap().0,
            200,
            "served during slowloris"
        );
    }
    let closed_after = slowloris.join().unwrap();
    assert!(
        closed_after >= Duration::from_millis(2000) && closed_after < Duration::from_secs(10),
        "slowloris connection closed after {closed_after:?} (header_read_ms = 2500)"
    );

    for round in 0..100 {
        // Malformed request line: 400 or closed.
        let out = raw(lb.addr, b"BLAH\x00\x01 / HTTP/1.1\r\n\r\n");
        assert!(out.is_empty() || out.starts_with("HTTP/1.1 400"), "{out:?}");
        // Oversized headers: 431.
        let big = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(64 * 1024)
        );
        let out = raw(lb.addr, big.as_bytes());
        assert!(out.starts_with("HTTP/1.1 431"), "{out:.80}");
        // Declared body too large: 413.
        let out = raw(
            lb.addr,
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\nabc",
        );
        assert!(out.starts_with("HTTP/1.1 413"), "{out:.80}");
        // Client disconnects mid-body (buffered and streamed sizes).
        for len in [1000, 90_000] {
            let mut s = TcpStream::connect(lb.addr).unwrap();
            let _ = write!(
                s,
                "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n0123456789"
            );
            drop(s);
        }
        if round % 20 == 0 {
            assert_eq!(http_get(lb.addr, "/").unwrap().0, 200);
        }
    }
    // Everyone else is still served, and memory stayed bounded.
    for _ in 0..20 {
        assert_eq!(http_get(lb.addr, "/").unwrap().0, 200);
    }
    std::thread::sleep(Duration::from_millis(300));
    let rss_after = rss_kib(pid);
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );

    // The admin API without the token: 401, and nothing changes.
    let (s, _) = http_request(lb.admin, "DELETE", "/backends/b", &[], b"").unwrap();
    assert_eq!(s, 401);
    let (s, _) = http_request(
        lb.admin,
        "POST",
        "/backends/b/drain",
        &[("Authorization", "Bearer nope")],
        b"",
    )
    .unwrap();
    assert_eq!(s, 401);
    let b = backend_status(&lb, "b").unwrap();
    assert_eq!(b["admin"], "active");
    assert_eq!(b["eligible"], true);
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits() {
    let b_addr = free_addr();
    let _b = spawn_backend("b", b_addr);
    let mut lb = spawn_lb(
        &[("b", b_addr)],
        "[balancer.timeouts]\nshutdown_grace_ms = 5000\n",
    );
    let addr = lb.addr;
    let slow = std::thread::spawn(move || http_get(addr, "/?delay_ms=1500"));
    std::thread::sleep(Duration::from_millis(400));
    lb.guard.signal("TERM");
    let (status, body) = slow.join().unwrap().expect("in-flight request failed");
    assert_eq!(status, 200, "{body}");
    let exit = lb
        .guard
        .wait_exit(Duration::from_secs(10))
        .expect("lb did not exit after SIGTERM");
    assert!(exit.success(), "{exit:?}");
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err(),
        "still accepting"
    );
}

#[test]
fn ctrl_c_stops_the_balancer() {
    let b_addr = free_addr();
    let _b = spawn_backend("b", b_addr);
    let mut lb = spawn_lb(&[("b", b_addr)], "");
    assert_eq!(http_get(lb.addr, "/").unwrap().0, 200);
    lb.guard.signal("INT");
    let exit = lb
        .guard
        .wait_exit(Duration::from_secs(10))
        .expect("lb did not exit after SIGINT");
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn invalid_config_is_refused_before_listening() {
    let dir = temp_dir("lb-bad");
    let listen = free_addr();
    let cases = [
        (
            "[balancer.health]\ninterval_ms = 0\n",
            "balancer.health.interval_ms",
        ),
        (
            "[balancer.limits]\nmax_header_bytes = 10\n",
            "balancer.limits.max_header_bytes",
        ),
        ("[balancer]\nstrategy = \"fastest\"\n", "balancer.strategy"),
        ("[balancer.health]\nintervall_ms = 5\n", "intervall_ms"),
    ];
    for (i, (text, field)) in cases.iter().enumerate() {
        let file = dir.join(format!("bad{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let out = Command::new(BIN)
            .args([
                "lb",
                "-c",
                file.to_str().unwrap(),
                "--listen",
                &listen.to_string(),
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(
            stderr.contains(field),
            "{text}: error does not name {field}: {stderr}"
        );
        assert!(TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_err());
    }
    // Flags are validated too.
    let out = Command::new(BIN)
        .args(["lb", "--listen", &listen.to_string(), "--workers", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("balancer.workers"));
    let out = Command::new(BIN)
        .args([
            "lb",
            "--listen",
            &listen.to_string(),
            "--health-path",
            "healthz",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("balancer.health.path"));
    let out = Command::new(BIN)
        .args(["lb", "--backend", "http://nohost", "--strategy", "rr"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nohost"),
        "the error names the bad backend: {err}"
    );
}

#[test]
fn flags_alone_run_a_balancer_with_several_workers() {
    let (a_addr, b_addr) = (free_addr(), free_addr());
    let _a = spawn_backend("a", a_addr);
    let _b = spawn_backend("b", b_addr);
    let listen = free_addr();
    let _lb = ChildGuard::spawn(
        "lb",
        Command::new(BIN).args([
            "lb",
            "--listen",
            &listen.to_string(),
            "--backend",
            &format!("http://{a_addr}"),
            "--backend",
            &format!("b={b_addr}*2"),
            "--strategy",
            "weighted_round_robin",
            "--workers",
            "2",
        ]),
    );
    wait_tcp(listen, Duration::from_secs(20));
    let mut a = 0;
    let mut b = 0;
    for _ in 0..60 {
        let (s, body) = http_get(listen, "/").unwrap();
        assert_eq!(s, 200);
        if body.contains("from a") {
            a += 1;
        } else if body.contains("from b") {
            b += 1;
        }
    }
    assert_eq!(a + b, 60);
    // Two workers each run the weighted sequence: b gets about twice a's share.
    assert!(b > a && a >= 10, "a={a} b={b}");
}
