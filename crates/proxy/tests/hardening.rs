//! The balancer against the attacks of the second hostile review (issue 10): idle
//! keep-alive connections filling every slot of the public and the admin listener, an
//! absolute-form request target with a different Host, the balancer added as its own
//! backend (directly, through a wildcard listener or a host name), a forwarding loop
//! through two balancers, and cloud metadata addresses inside the default ranges.
//!
//! Attackers are real sockets (a separate python process holds the connections, so this
//! process's descriptors go to the balancer); backends are nginx and a raw socket that
//! logs every byte. Figures are printed (`--nocapture`, `FIGURE` lines) for BENCHMARKS.md;
//! assertions are behavioural, with deadlines far above the configured timeouts.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::servers::{RawBackend, ServerProcess, free_port, raise_nofile};
use common::{client, send, start};
use proxy::Config;

fn config_with(backends: &[SocketAddr]) -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    c.backends = backends
        .iter()
        .enumerate()
        .map(|(i, a)| proxy::config::BackendConfig {
            name: format!("b{i}"),
            addr: a.to_string(),
            weight: 1,
        })
        .collect();
    c
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default()
}

/// `n` keep-alive connections to `addr` that each send `request` once, read the answer
/// and then sit idle, held by a separate python process until dropped.
struct IdleKeepAlive {
    child: std::process::Child,
    /// Connections whose request was answered with a 2xx.
    answered: u64,
}

impl IdleKeepAlive {
    fn open(addr: SocketAddr, n: usize, batch: usize, request: &str) -> IdleKeepAlive {
        common::servers::ensure_installed("python3", "python3");
        // Batches (connect all, send all, read all) far below the pending share, so this
        // measures idle keep-alive connections, not silent ones.
        let script = format!(
            "import socket, sys, resource\n\
             s, h = resource.getrlimit(resource.RLIMIT_NOFILE)\n\
             resource.setrlimit(resource.RLIMIT_NOFILE, (h, h))\n\
             req = {request:?}.encode()\n\
             socks = []\n\
             ok = 0\n\
             for b in range(0, {n}, {batch}):\n\
             \x20   batch = []\n\
             \x20   for i in range(b, min(b + {batch}, {n})):\n\
             \x20       try:\n\
             \x20           c = socket.socket(); c.settimeout(10); c.connect(('{ip}', {port})); batch.append(c)\n\
             \x20       except OSError:\n\
             \x20           pass\n\
             \x20   for c in batch:\n\
             \x20       try: c.sendall(req)\n\
             \x20       except OSError: pass\n\
             \x20   for c in batch:\n\
             \x20       try:\n\
             \x20           if c.recv(65536).startswith(b'HTTP/1.1 2'): ok += 1\n\
             \x20       except OSError:\n\
             \x20           pass\n\
             \x20   socks.extend(batch)\n\
             print(ok, flush=True)\n\
             sys.stdin.read()\n",
            ip = addr.ip(),
            port = addr.port()
        );
        let mut child = std::process::Command::new("python3")
            .args(["-c", &script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut out = child.stdout.take().unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while out.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let answered = String::from_utf8_lossy(&line).trim().parse().unwrap_or(0);
        IdleKeepAlive { child, answered }
    }
}

impl Drop for IdleKeepAlive {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw request on a new connection; the response text up to its head's end, close or
/// 5 s.
fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return "connect failed".into();
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn exchange(addr: SocketAddr, req: &[u8]) -> String {
    let req = req.to_vec();
    tokio::task::spawn_blocking(move || raw_exchange(addr, &req))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_keep_alive_connections_do_not_lock_out_new_clients() {
    let nofile = raise_nofile();
    assert!(
        nofile >= 12_000,
        "open-file limit {nofile} is too low for this test"
    );
    let nginx = ServerProcess::nginx();
    // Default limits: 10,000 connections. hyper's header read timer also runs while a
    // keep-alive connection waits for its next request, so with the default
    // header_read_ms (10 s) the oldest idle connections start closing by themselves
    // before 10,000 are open on this machine (the review saw ~6 s of 503s until they
    // did); a longer one keeps every slot held, which is the case to defend.
    let mut cfg = config_with(&[nginx.addr]);
    cfg.timeouts.header_read_ms = 120_000;
    let p = start(cfg).await;
    let addr = p.addr();
    let n = p.handle.config().limits.max_connections as usize;
    let idle = tokio::task::spawn_blocking(move || {
        IdleKeepAlive::open(addr, n, 100, "GET / HTTP/1.1\r\nHost: lb\r\n\r\n")
    })
    .await
    .unwrap();
    let m = p.handle.metrics();
    assert_eq!(
        idle.answered, n as u64,
        "every attacker connection got its 200"
    );
    assert_eq!(
        m.connections_active, n as i64,
        "every slot holds an idle connection"
    );
    // Well-behaved clients on new connections, one after another, as in the review.
    let mut statuses = std::collections::BTreeMap::<String, u32>::new();
    let mut worst = Duration::ZERO;
    for _ in 0..50 {
        let t = Instant::now();
        let r = exchange(
            addr,
            b"GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n",
        )
        .await;
        worst = worst.max(t.elapsed());
        let status = r.lines().next().unwrap_or("").to_string();
        *statuses.entry(status).or_default() += 1;
    }
    let m = p.handle.metrics();
    eprintln!(
        "FIGURE idle keep-alive: {} idle keep-alive connections (limit {n}); 50 new clients: \
         {statuses:?}, worst {worst:?}; evicted {}; loadavg {}",
        idle.answered,
        m.connections_evicted_total,
        load_average().trim()
    );
    assert_eq!(
        statuses.get("HTTP/1.1 200 OK").copied().unwrap_or(0),
        50,
        "{statuses:?}"
    );
    assert!(
        worst < Duration::from_secs(1),
        "a good client waited {worst:?}"
    );
    assert!(m.connections_evicted_total >= 1, "{m:?}");
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_admin_connections_do_not_lock_out_the_operator() {
    let raw = RawBackend::start();
    let mut cfg = config_with(&[raw.addr]);
    cfg.health.enabled = false;
    cfg.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.admin.token = Some("admin-token-123".into());
    // As on the public listener, hyper's header timer closes idle keep-alive connections
    // after admin.header_read_ms (2 s by default: the review's 2.6 s stall); longer
    // timeouts keep every slot held.
    cfg.admin.header_read_ms = 60_000;
    cfg.admin.idle_ms = 60_000;
    let p = start(cfg).await;
    let admin = p.handle.admin_addr().unwrap();
    let n = p.handle.config().admin.max_connections as usize;
    let idle = tokio::task::spawn_blocking(move || {
        IdleKeepAlive::open(admin, n, 16, "GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
    })
    .await
    .unwrap();
    assert_eq!(idle.answered, n as u64);
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let t = Instant::now();
        let r = exchange(
            admin,
            b"GET /backends HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer admin-token-123\r\nConnection: close\r\n\r\n",
        )
        .await;
        worst = worst.max(t.elapsed());
        assert!(r.starts_with("HTTP/1.1 200"), "{r:?}");
    }
    eprintln!(
        "FIGURE admin idle keep-alive: {n} idle keep-alive admin connections; GET /backends \
         200 5 of 5, worst {worst:?}; loadavg {}",
        load_average().trim()
    );
    assert!(worst < Duration::from_secs(1), "{worst:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_targets_authority_wins_over_host() {
    let raw = RawBackend::start();
    let mut cfg = config_with(&[raw.addr]);
    cfg.health.enabled = false;
    let p = start(cfg).await;
    let r = exchange(
        p.addr(),
        b"GET http://a.example/x?q=1 HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r:?}");
    let r = exchange(
        p.addr(),
        b"GET http://user:pw@c.example:8080/y HTTP/1.1\r\nHost: d.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r:?}");
    let seen: Vec<String> = raw
        .connections()
        .iter()
        .map(|c| String::from_utf8_lossy(&c.bytes).to_ascii_lowercase())
        .collect();
    let all = seen.join("\n---\n");
    eprintln!("backend saw:\n{all}");
    assert!(
        all.contains("get /x?q=1 http/1.1\r\n"),
        "origin form: {all}"
    );
    assert!(all.contains("\r\nhost: a.example\r\n"), "{all}");
    assert!(all.contains("\r\nx-forwarded-host: a.example\r\n"), "{all}");
    assert!(all.contains("get /y http/1.1\r\n"), "{all}");
    assert!(all.contains("\r\nhost: c.example:8080\r\n"), "{all}");
    for wrong in ["b.example", "d.example", "user", "pw@"] {
        assert!(!all.contains(wrong), "{wrong} reached the backend: {all}");
    }
    assert_eq!(all.matches("\r\nhost:").count(), 2, "one Host each: {all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_balancer_cannot_be_its_own_backend_and_a_loop_is_answered_508() {
    // Through the config: refused at start, naming the field.
    let port = free_port();
    let mut cfg = config_with(&[SocketAddr::from(([127, 0, 0, 1], port))]);
    cfg.listen = SocketAddr::from(([127, 0, 0, 1], port));
    let e = proxy::Proxy::bind(cfg).await.unwrap_err();
    assert!(e.to_string().contains("balancer.backends[0].addr"), "{e}");

    // Through the admin API: the public and the admin listener, a host name, and every
    // local address of a wildcard listener.
    let mut cfg = config_with(&[]);
    cfg.listen = "0.0.0.0:0".parse().unwrap();
    cfg.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.admin.token = Some("admin-token-123".into());
    cfg.admin.allow_hostnames = true;
    let p = start(cfg).await;
    let port = p.addr().port();
    let admin = p.handle.admin_addr().unwrap();
    let c = client();
    let url = format!("http://{admin}/backends");
    let auth = [
        ("authorization", "Bearer admin-token-123"),
        ("content-type", "application/json"),
    ];
    for (i, own) in [
        format!("127.0.0.1:{port}"),
        format!("127.0.0.2:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
        format!("localhost:{port}"),
        admin.to_string(),
        format!("localhost:{}", admin.port()),
        "[fd00:ec2::254]:80".to_string(),
        "169.254.170.2:80".to_string(),
    ]
    .iter()
    .enumerate()
    {
        let body = serde_json::json!({ "name": format!("own{i}"), "addr": own }).to_string();
        let r = send(&c, "POST", &url, &auth, body.as_bytes()).await;
        assert_eq!(r.status, 400, "{own}: {}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["field"], "addr", "{v}");
        eprintln!("{own}: {}", v["error"]);
    }
    assert!(p.handle.backends().is_empty());
    // Another port on the same host is an ordinary backend.
    let raw = RawBackend::start();
    let body = serde_json::json!({ "name": "ok", "addr": raw.addr }).to_string();
    let r = send(&c, "POST", &url, &auth, body.as_bytes()).await;
    assert_eq!(r.status, 201, "{}", r.body);

    // A loop through two balancers (each a legitimate address for the other) is caught
    // at request time by the Via hop: 508 at once, not a storm until something times out.
    let mut cfg_a = config_with(&[]);
    cfg_a.health.enabled = false;
    let a = start(cfg_a).await;
    let mut cfg_b = config_with(&[a.addr()]);
    cfg_b.health.enabled = false;
    let b = start(cfg_b).await;
    a.handle
        .add_backend(proxy::BackendSpec {
            name: "b".into(),
            addr: b.addr().to_string(),
            weight: 1,
        })
        .unwrap();
    let t = Instant::now();
    let r = exchange(
        a.addr(),
        b"GET /x HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n",
    )
    .await;
    let took = t.elapsed();
    let (ma, mb) = (a.handle.metrics(), b.handle.metrics());
    eprintln!(
        "FIGURE loop: {:?} after {took:?}; requests at a {}, at b {}",
        r.lines().next(),
        ma.requests_total,
        mb.requests_total
    );
    assert!(r.starts_with("HTTP/1.1 508"), "{r:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(ma.requests_total, 2, "client -> a -> b -> a (508)");
    assert_eq!(mb.requests_total, 1);
    // Another balancer's hop in Via is passed on, with ours appended.
    let r = exchange(
        SocketAddr::from(([127, 0, 0, 1], port)),
        b"GET /v HTTP/1.1\r\nHost: lb\r\nVia: 1.1 scaleout-0000000000000000\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r:?}");
    let seen = raw
        .connections()
        .iter()
        .map(|c| String::from_utf8_lossy(&c.bytes).to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        seen.contains("via: 1.1 scaleout-0000000000000000\r\n"),
        "{seen}"
    );
    assert_eq!(seen.matches("\r\nvia: 1.1 scaleout-").count(), 2, "{seen}");
}

/// `rate` requests per second for `duration`, sent in bursts of `burst` (as a load
/// generator on a busy machine sends them when it falls behind), each on its own task
/// (open loop, so a slow answer does not slow the schedule); statuses by count (0 =
/// transport error or 10 s timeout) and the slowest answer.
async fn open_loop(
    url: String,
    rate: u32,
    burst: u32,
    duration: Duration,
) -> (std::collections::BTreeMap<u16, u64>, Duration) {
    let c = client();
    let mut tick = tokio::time::interval(Duration::from_secs(1) * burst / rate);
    let mut tasks = tokio::task::JoinSet::new();
    let end = Instant::now() + duration;
    while Instant::now() < end {
        tick.tick().await;
        for _ in 0..burst {
            let (c, url) = (c.clone(), url.clone());
            tasks.spawn(async move {
                let t = Instant::now();
                let req = http::Request::get(url)
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap();
                let status =
                    match tokio::time::timeout(Duration::from_secs(10), c.request(req)).await {
                        Ok(Ok(r)) => {
                            let s = r.status().as_u16();
                            let _ = http_body_util::BodyExt::collect(r.into_body()).await;
                            s
                        }
                        _ => 0,
                    };
                (status, t.elapsed())
            });
        }
    }
    let mut by_status = std::collections::BTreeMap::new();
    let mut worst = Duration::ZERO;
    while let Some(r) = tasks.join_next().await {
        let (s, took) = r.unwrap();
        *by_status.entry(s).or_default() += 1;
        worst = worst.max(took);
    }
    (by_status, worst)
}

/// Listen-queue overflows so far on this host (`TcpExtListenOverflows`), when readable.
fn listen_overflows() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if !names.starts_with("TcpExt:") {
            continue;
        }
        let i = names
            .split_whitespace()
            .position(|n| n == "ListenOverflows")?;
        return values.split_whitespace().nth(i)?.parse().ok();
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_http_server_behind_the_default_config_at_a_modest_rate_gets_no_errors() {
    let py = ServerProcess::python_http();
    let p = start(config_with(&[py.addr])).await;
    let overflows_before = listen_overflows();
    let (by_status, worst) = open_loop(p.url("/"), 100, 20, Duration::from_secs(15)).await;
    let overflows = listen_overflows().zip(overflows_before).map(|(a, b)| a - b);
    let m = p.handle.metrics();
    let b = &p.handle.backends()[0];
    eprintln!(
        "FIGURE python http.server, 100 req/s in bursts of 20 for 15 s, default config: \
         {by_status:?}, slowest {worst:?}; retries {}, ejections {}, listen overflows on \
         the host {overflows:?}; loadavg {}",
        m.retries_total,
        b.ejections_total,
        load_average().trim()
    );
    let total: u64 = by_status.values().sum();
    assert_eq!(
        by_status.get(&200).copied().unwrap_or(0),
        total,
        "{by_status:?}"
    );
}
