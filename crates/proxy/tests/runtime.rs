//! Run-time behaviour through a real proxy and real backends on loopback, in one process:
//! retries and their budget, passive ejection, slow start, drain, the admin API, WebSocket
//! upgrades, h2c on both sides, idle timeouts and metrics.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use proxy::{BackendSpec, StrategyKind};

/// A loopback address where nothing listens (connections are refused).
fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_are_retried_on_another_backend() {
    let good = backend("good").await;
    let mut cfg = config(&[("dead", dead_addr()), ("good", good.addr)]);
    cfg.strategy = StrategyKind::RoundRobin;
    cfg.health.enabled = false;
    cfg.outlier.enabled = false;
    let p = start(cfg).await;
    let c = client();
    for _ in 0..20 {
        let r = get(&c, &p.url("/")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.backend_id(), "good");
    }
    // A POST (not idempotent) is retried too: a refused connection never sent it.
    let r = send(&c, "POST", &p.url("/"), &[], b"payload").await;
    assert_eq!(r.status, 200);
    let m = p.handle.metrics();
    assert!(m.retries_total >= 10, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ejection_removes_a_failing_backend() {
    let good = backend("good").await;
    let mut cfg = config(&[("dead", dead_addr()), ("good", good.addr)]);
    cfg.strategy = StrategyKind::RoundRobin;
    cfg.health.enabled = false;
    cfg.outlier.consecutive_failures = 3;
    cfg.outlier.base_ejection_ms = 60_000;
    cfg.outlier.max_ejection_ms = 60_000;
    let p = start(cfg).await;
    let c = client();
    for _ in 0..10 {
        assert_eq!(get(&c, &p.url("/")).await.status, 200);
    }
    let h = p.handle.clone();
    wait_until(Duration::from_secs(2), "dead backend ejected", || {
        h.backends()
            .iter()
            .any(|b| b.name == "dead" && b.ejected && !b.eligible)
    })
    .await;
    let dead = p
        .handle
        .backends()
        .into_iter()
        .find(|b| b.name == "dead")
        .unwrap();
    let before = dead.requests_total;
    for _ in 0..10 {
        assert_eq!(get(&c, &p.url("/")).await.status, 200);
    }
    let dead = p
        .handle
        .backends()
        .into_iter()
        .find(|b| b.name == "dead")
        .unwrap();
    assert_eq!(
        dead.requests_total, before,
        "an ejected backend got requests"
    );
    assert_eq!(dead.ejections_total, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_when_the_budget_is_spent() {
    let a = backend("a").await;
    let b = backend("b").await;
    let mut cfg = config(&[("a", a.addr), ("b", b.addr)]);
    cfg.strategy = StrategyKind::RoundRobin;
    cfg.outlier.enabled = false;
    cfg.health.enabled = false;
    cfg.retry.budget_ratio = 0.1;
    cfg.retry.min_retries_per_s = 0;
    cfg.retry.ttl_ms = 60_000;
    let p = start(cfg).await;
    let c = client();
    for _ in 0..100 {
        // Both backends answer 503 here: every request wants one retry.
        assert_eq!(get(&c, &p.url("/__status/503")).await.status, 503);
    }
    let m = p.handle.metrics();
    // 10% of 100 requests (+1 for the deposit made before the first withdrawal).
    assert!(m.retries_total >= 5 && m.retries_total <= 11, "{m:?}");
    assert!(m.retry_budget_exhausted_total >= 89, "{m:?}");
    // Non-idempotent requests are not retried on a 503.
    let before = p.handle.metrics().retries_total + p.handle.metrics().retry_budget_exhausted_total;
    send(&c, "POST", &p.url("/__status/503"), &[], b"x").await;
    let after = p.handle.metrics().retries_total + p.handle.metrics().retry_budget_exhausted_total;
    assert_eq!(before, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_ramps_a_new_backend() {
    let a = backend("a").await;
    let b = backend("b").await;
    let mut cfg = config(&[("a", a.addr)]);
    cfg.strategy = StrategyKind::WeightedRoundRobin;
    cfg.slow_start.window_ms = 1500;
    cfg.slow_start.min_weight_percent = 10;
    let p = start(cfg).await;
    p.handle
        .add_backend(BackendSpec {
            name: "b".into(),
            addr: b.addr.to_string(),
            weight: 1,
        })
        .unwrap();
    assert!(
        p.handle
            .backends()
            .iter()
            .any(|s| s.name == "b" && s.slow_start)
    );
    let c = client();
    // Count only requests sent while b is still ramping, so a slow machine that needs
    // longer than the window for 40 requests cannot turn the ramp into a failure.
    let in_slow_start =
        |h: &proxy::ProxyHandle| h.backends().iter().any(|s| s.name == "b" && s.slow_start);
    let mut early = HashMap::new();
    let mut sampled = 0;
    while sampled < 40 && in_slow_start(&p.handle) {
        *early
            .entry(get(&c, &p.url("/")).await.backend_id())
            .or_insert(0) += 1;
        sampled += 1;
    }
    assert!(
        sampled >= 10,
        "only {sampled} requests fitted in the slow-start window"
    );
    let h = p.handle.clone();
    wait_until(Duration::from_secs(5), "slow start over", || {
        h.backends().iter().all(|s| !s.slow_start)
    })
    .await;
    // Let the control loop publish the final weights.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut late = HashMap::new();
    for _ in 0..40 {
        *late
            .entry(get(&c, &p.url("/")).await.backend_id())
            .or_insert(0) += 1;
    }
    let early_b = early.get("b").copied().unwrap_or(0);
    let late_b = late.get("b").copied().unwrap_or(0);
    // Equal weights would give b half; during the ramp it gets well under that.
    assert!(
        early_b * 10 <= sampled * 3,
        "a new backend got {early_b}/{sampled} at once: {early:?}"
    );
    assert_eq!(late_b, 20, "after the ramp the weights are equal: {late:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_lets_in_flight_requests_finish() {
    let slow = backend_with_delay("slow", 600).await;
    let fast = backend("fast").await;
    let mut cfg = config(&[("slow", slow.addr), ("fast", fast.addr)]);
    cfg.strategy = StrategyKind::RoundRobin;
    let p = start(cfg).await;
    let c = client();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let c = c.clone();
        let url = p.url("/");
        tasks.push(tokio::spawn(async move { get(&c, &url).await }));
    }
    let h = p.handle.clone();
    wait_until(Duration::from_secs(2), "requests in flight on slow", || {
        h.backends()
            .iter()
            .any(|b| b.name == "slow" && b.in_flight > 0)
    })
    .await;
    let left = p
        .handle
        .drain_backend("slow", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(left, 0, "drain returned with requests in flight");
    for t in tasks {
        assert_eq!(t.await.unwrap().status, 200);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        p.handle.backends().iter().all(|b| b.name != "slow"),
        "slow was not removed"
    );
    for _ in 0..5 {
        assert_eq!(get(&c, &p.url("/")).await.backend_id(), "fast");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_requires_the_token_and_changes_backends() {
    let a = backend("a").await;
    let b = backend("b").await;
    let mut cfg = config(&[("a", a.addr)]);
    cfg.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    cfg.admin.token = Some("admin-secret-token".into());
    let p = start(cfg).await;
    let admin = format!("http://{}", p.handle.admin_addr().unwrap());
    let c = client();
    let add = format!(r#"{{"name":"b","addr":"{}","weight":2}}"#, b.addr);
    // Without the token, or with a wrong one: 401 and nothing changes.
    for auth in [
        None,
        Some("Bearer wrong-token-xx"),
        Some("admin-secret-token"),
    ] {
        let headers: Vec<(&str, &str)> =
            auth.map(|v| vec![("authorization", v)]).unwrap_or_default();
        let r = send(
            &c,
            "POST",
            &format!("{admin}/backends"),
            &headers,
            add.as_bytes(),
        )
        .await;
        assert_eq!(r.status, 401, "{auth:?}");
        assert!(r.headers.contains_key("www-authenticate"));
        let r = send(&c, "DELETE", &format!("{admin}/backends/a"), &headers, b"").await;
        assert_eq!(r.status, 401);
        let r = send(&c, "GET", &format!("{admin}/backends"), &headers, b"").await;
        assert_eq!(r.status, 401);
        let r = send(&c, "GET", &format!("{admin}/metrics"), &headers, b"").await;
        assert_eq!(r.status, 401);
    }
    assert_eq!(p.handle.backends().len(), 1);
    assert!(p.handle.backends()[0].eligible);

    let auth = [("authorization", "Bearer admin-secret-token")];
    let r = send(
        &c,
        "POST",
        &format!("{admin}/backends"),
        &auth,
        add.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = send(
        &c,
        "POST",
        &format!("{admin}/backends"),
        &auth,
        add.as_bytes(),
    )
    .await;
    assert_eq!(r.status, 409, "duplicate name: {}", r.body);
    let r = send(
        &c,
        "POST",
        &format!("{admin}/backends"),
        &auth,
        br#"{"addr":"no port"}"#,
    )
    .await;
    assert_eq!(r.status, 400);
    let r = send(
        &c,
        "PUT",
        &format!("{admin}/backends/b/weight"),
        &auth,
        br#"{"weight":5}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    let r = send(&c, "GET", &format!("{admin}/backends"), &auth, b"").await;
    let list: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let bj = list
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "b")
        .unwrap();
    assert_eq!(bj["weight"], 5);
    assert_eq!(bj["admin"], "active");
    let r = send(&c, "POST", &format!("{admin}/backends/a/drain"), &auth, b"").await;
    assert_eq!(r.status, 200);
    for _ in 0..5 {
        assert_eq!(get(&c, &p.url("/")).await.backend_id(), "b");
    }
    let r = send(
        &c,
        "DELETE",
        &format!("{admin}/backends/a?grace_ms=1000"),
        &auth,
        b"",
    )
    .await;
    assert_eq!(r.status, 202);
    let h = p.handle.clone();
    wait_until(Duration::from_secs(3), "a removed", || {
        h.backends().iter().all(|b| b.name != "a")
    })
    .await;
    let r = send(&c, "DELETE", &format!("{admin}/backends/nope"), &auth, b"").await;
    assert_eq!(r.status, 404);
    let r = send(&c, "GET", &format!("{admin}/metrics"), &auth, b"").await;
    assert_eq!(r.status, 200);
    assert!(
        r.body
            .contains("scaleout_lb_backend_responses_total{backend=\"b\",class=\"2xx\"} 5"),
        "{}",
        r.body
    );
    assert!(
        r.body
            .contains("scaleout_lb_request_duration_seconds_bucket")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_round_trips() {
    let b = backend("a").await;
    let p = start(config(&[("a", b.addr)])).await;
    let addr = p.addr();
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(
            b"GET /__ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).unwrap(), 1, "closed during the 101 head");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        assert!(head.contains("upgrade: websocket"), "{head}");
        for msg in [&b"hello"[..], b"second frame", &[0u8, 1, 2, 255]] {
            s.write_all(msg).unwrap();
            let mut buf = vec![0u8; msg.len()];
            s.read_exact(&mut buf).unwrap();
            assert_eq!(buf, msg);
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_on_both_sides() {
    let b = backend("a").await;
    let mut cfg = config(&[("a", b.addr)]);
    cfg.upstream_protocol = proxy::UpstreamProtocol::H2c;
    let p = start(cfg).await;
    let h2: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    for _ in 0..3 {
        let r = get(&h2, &p.url("/__echo")).await;
        assert_eq!(r.status, 200);
        let echo: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(echo["version"], "HTTP/2.0", "backend saw {echo}");
        assert_eq!(echo["headers"]["x-forwarded-host"], p.addr().to_string());
    }
    // HTTP/1.1 clients are served by the same listener, still h2c upstream.
    let r = get(&client(), &p.url("/__echo")).await;
    let echo: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(echo["version"], "HTTP/2.0");
    // And with the default upstream protocol the backend sees HTTP/1.1.
    let p1 = start(config(&[("a", b.addr)])).await;
    let r = get(&h2, &p1.url("/__echo")).await;
    let echo: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(echo["version"], "HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_client_connections_are_closed() {
    let b = backend("a").await;
    let mut cfg = config(&[("a", b.addr)]);
    cfg.timeouts.client_idle_ms = 300;
    let p = start(cfg).await;
    let addr = p.addr();
    let elapsed = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        let t = std::time::Instant::now();
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "expected the idle connection to be closed");
        t.elapsed()
    })
    .await
    .unwrap();
    assert!(elapsed < Duration::from_secs(3), "closed after {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_requests() {
    let slow = backend_with_delay("slow", 500).await;
    let p = start(config(&[("slow", slow.addr)])).await;
    let c = client();
    let url = p.url("/");
    let req = tokio::spawn({
        let c = c.clone();
        async move { get(&c, &url).await }
    });
    let h = p.handle.clone();
    wait_until(Duration::from_secs(2), "request in flight", || {
        h.metrics().in_flight > 0
    })
    .await;
    p.stop.cancel();
    assert_eq!(
        req.await.unwrap().status,
        200,
        "in-flight request cut by shutdown"
    );
    let task = {
        let mut p = p;
        p.task.take().unwrap()
    };
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("run returned")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_body_is_not_blamed_on_the_backend() {
    let b = backend("a").await;
    let mut cfg = config(&[("a", b.addr)]);
    cfg.limits.retry_buffer_bytes = 1024;
    cfg.outlier.consecutive_failures = 2;
    let p = start(cfg).await;
    let addr = p.addr();
    tokio::task::spawn_blocking(move || {
        for _ in 0..10 {
            // Streamed (larger than the retry buffer) body cut short by the client.
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n")
                .unwrap();
            s.write_all(&[b'x'; 4000]).unwrap();
            std::thread::sleep(Duration::from_millis(30));
            drop(s);
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let st = &p.handle.backends()[0];
    assert!(
        !st.ejected,
        "the backend was ejected for client failures: {st:?}"
    );
    assert_eq!(st.errors_total, 0, "{st:?}");
    assert_eq!(get(&client(), &p.url("/")).await.status, 200);
}
