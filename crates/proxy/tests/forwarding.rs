//! Forwarding, header rewriting, limits and strategies through a real proxy and real
//! backends on loopback, in one process.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use proxy::StrategyKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_with_forwarded_headers_and_strips_hop_by_hop() {
    let b = backend("a").await;
    let p = start(config(&[("a", b.addr)])).await;
    let c = client();
    let r = send(
        &c,
        "GET",
        &p.url("/__echo?x=1"),
        &[
            ("x-forwarded-for", "9.9.9.9"),
            ("connection", "x-private"),
            ("x-private", "secret"),
            ("proxy-authorization", "Basic abc"),
            ("te", "trailers"),
            ("x-keep", "kept"),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.backend_id(), "a");
    let echo: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let h = &echo["headers"];
    assert_eq!(h["x-forwarded-for"], "9.9.9.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], p.addr().to_string());
    assert_eq!(h["host"], p.addr().to_string());
    assert_eq!(h["x-keep"], "kept");
    assert_eq!(h["x-request-id"].as_str().unwrap().len(), 36);
    for gone in ["x-private", "proxy-authorization", "te", "keep-alive"] {
        assert!(h.get(gone).is_none(), "{gone} reached the backend: {h}");
    }
    // An incoming request id is kept.
    let r = send(
        &c,
        "GET",
        &p.url("/__echo"),
        &[("x-request-id", "req-42")],
        b"",
    )
    .await;
    let echo: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(echo["headers"]["x-request-id"], "req-42");
    // The request id reaches the backend, and POST bodies arrive intact.
    let r = send(&c, "POST", &p.url("/__echo"), &[], &vec![b'x'; 100_000]).await;
    let echo: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(echo["body_len"], 100_000);
    assert_eq!(echo["method"], "POST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_alternates() {
    let a = backend("a").await;
    let b = backend("b").await;
    let mut cfg = config(&[("a", a.addr), ("b", b.addr)]);
    cfg.strategy = StrategyKind::RoundRobin;
    let p = start(cfg).await;
    let c = client();
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(get(&c, &p.url("/")).await.backend_id());
    }
    for w in ids.windows(2) {
        assert_ne!(w[0], w[1], "round robin must alternate: {ids:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_follows_weights() {
    let a = backend("a").await;
    let b = backend("b").await;
    let mut cfg = config(&[("a", a.addr), ("b", b.addr)]);
    cfg.backends[0].weight = 3;
    cfg.strategy = StrategyKind::WeightedRoundRobin;
    let p = start(cfg).await;
    let c = client();
    let mut n = HashMap::new();
    for _ in 0..40 {
        *n.entry(get(&c, &p.url("/")).await.backend_id())
            .or_insert(0) += 1;
    }
    assert_eq!(n["a"], 30, "{n:?}");
    assert_eq!(n["b"], 10, "{n:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_avoids_a_slow_backend() {
    let fast = backend("fast").await;
    let slow = backend_with_delay("slow", 400).await;
    let mut cfg = config(&[("fast", fast.addr), ("slow", slow.addr)]);
    cfg.strategy = StrategyKind::LeastConnections;
    let p = start(cfg).await;
    let c = client();
    // Keep 4 requests in flight for a while: the slow backend holds its requests, so
    // least-connections sends most new ones to the fast one.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let c = c.clone();
        let url = p.url("/");
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..15 {
                ids.push(get(&c, &url).await.backend_id());
            }
            ids
        }));
    }
    let mut n = HashMap::new();
    for t in tasks {
        for id in t.await.unwrap() {
            *n.entry(id).or_insert(0) += 1;
        }
    }
    let slow_n = n.get("slow").copied().unwrap_or(0);
    let total: usize = n.values().sum();
    // Round robin or random would send about half to the slow backend.
    assert!(
        slow_n * 3 < total,
        "least connections should avoid the slow backend: {n:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_cookie_pins_and_falls_back() {
    let a = backend("a").await;
    let b = backend("b").await;
    let mut cfg = config(&[("a", a.addr), ("b", b.addr)]);
    cfg.strategy = StrategyKind::Sticky;
    cfg.sticky.fallback = StrategyKind::RoundRobin;
    let p = start(cfg).await;
    let c = client();
    let first = get(&c, &p.url("/")).await;
    let cookie = first
        .headers
        .get("set-cookie")
        .expect("sticky sets a cookie")
        .to_str()
        .unwrap()
        .to_string();
    let pair = cookie.split(';').next().unwrap().to_string();
    let pinned = first.backend_id();
    for _ in 0..10 {
        let r = send(&c, "GET", &p.url("/"), &[("cookie", &pair)], b"").await;
        assert_eq!(r.backend_id(), pinned, "pinned client moved");
        assert!(
            r.headers.get("set-cookie").is_none(),
            "no re-pin while the pin holds"
        );
    }
    // The pinned backend leaves: the client falls back to the other and is re-pinned.
    p.handle.drain_only(&pinned).unwrap();
    let r = send(&c, "GET", &p.url("/"), &[("cookie", &pair)], b"").await;
    assert_ne!(r.backend_id(), pinned);
    assert!(
        r.headers
            .get("set-cookie")
            .unwrap()
            .to_str()
            .unwrap()
            .contains(&r.backend_id())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_sends_a_key_to_one_backend() {
    let bs = [backend("a").await, backend("b").await, backend("c").await];
    let mut cfg = config(&[("a", bs[0].addr), ("b", bs[1].addr), ("c", bs[2].addr)]);
    cfg.strategy = StrategyKind::ConsistentHash;
    cfg.hash.key = "header:x-user".to_string();
    let p = start(cfg).await;
    let c = client();
    let mut owners = HashMap::new();
    for user in 0..30 {
        let u = format!("user-{user}");
        let first = send(&c, "GET", &p.url("/"), &[("x-user", &u)], b"")
            .await
            .backend_id();
        for _ in 0..3 {
            let again = send(&c, "GET", &p.url("/"), &[("x-user", &u)], b"")
                .await
                .backend_id();
            assert_eq!(again, first, "key {u} moved");
        }
        *owners.entry(first).or_insert(0) += 1;
    }
    assert!(owners.len() >= 2, "30 keys all on one backend: {owners:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limit_gives_413_and_headers_limit_431() {
    let b = backend("a").await;
    let mut cfg = config(&[("a", b.addr)]);
    cfg.limits.max_body_bytes = 1000;
    cfg.limits.retry_buffer_bytes = 100;
    let p = start(cfg).await;
    let c = client();
    let r = send(&c, "POST", &p.url("/"), &[], &[b'x'; 1001]).await;
    assert_eq!(r.status, 413);
    let r = send(&c, "POST", &p.url("/"), &[], &[b'x'; 1000]).await;
    assert_eq!(r.status, 200);
    // Oversized header block: 431 from the parser, and the proxy keeps serving.
    let addr = p.addr();
    let status = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let big = "a".repeat(40_000);
        let _ = write!(s, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).to_string()
    })
    .await
    .unwrap();
    assert!(status.starts_with("HTTP/1.1 431"), "{status:?}");
    assert_eq!(get(&c, &p.url("/")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_line_gets_400() {
    let b = backend("a").await;
    let p = start(config(&[("a", b.addr)])).await;
    let addr = p.addr();
    let out = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"G@T /\x01 HTTP/9.9\r\n\r\n").unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).to_string()
    })
    .await
    .unwrap();
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 400"), "{out:?}");
    assert_eq!(get(&client(), &p.url("/")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shedding_answers_503_with_retry_after() {
    let slow = backend_with_delay("slow", 500).await;
    let mut cfg = config(&[("slow", slow.addr)]);
    cfg.limits.max_in_flight_per_backend = 2;
    cfg.limits.retry_after_s = 7;
    let p = start(cfg).await;
    let c = client();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let c = c.clone();
        let url = p.url("/");
        tasks.push(tokio::spawn(async move { get(&c, &url).await }));
    }
    let mut ok = 0;
    let mut shed = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status.as_u16() {
            200 => ok += 1,
            503 => {
                assert_eq!(r.headers.get("retry-after").unwrap(), "7");
                shed += 1;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!(ok, 2, "only the per-backend limit gets through");
    assert_eq!(shed, 4);
    assert_eq!(p.handle.metrics().shed_total, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_sheds_new_connections() {
    // A backend slow enough that the first request is still in flight when the second
    // connection arrives: a busy connection is never evicted (an idle keep-alive one
    // would be, see tests/hardening.rs).
    let b = backend_with_delay("a", 2_000).await;
    let mut cfg = config(&[("a", b.addr)]);
    cfg.limits.max_connections = 1;
    let p = start(cfg).await;
    let addr = p.addr();
    let out = tokio::task::spawn_blocking(move || {
        // The first connection holds the only slot with a request in flight.
        let mut first = std::net::TcpStream::connect(addr).unwrap();
        first
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let mut second = std::net::TcpStream::connect(addr).unwrap();
        second
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut out = Vec::new();
        let _ = second.read_to_end(&mut out);
        String::from_utf8_lossy(&out).to_string()
    })
    .await
    .unwrap();
    assert!(out.starts_with("HTTP/1.1 503"), "{out:?}");
    assert!(
        out.to_ascii_lowercase().contains("retry-after: 1"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_down_reject_or_fail_open() {
    let a = backend("a").await;
    for (policy, expect) in [
        (balance::AllDownPolicy::Reject503, 503u16),
        (balance::AllDownPolicy::FailOpen, 200),
    ] {
        let mut cfg = config(&[("a", a.addr)]);
        cfg.all_down = policy;
        cfg.health.path = "/__status/500".to_string();
        cfg.health.fall = 1;
        let p = start(cfg).await;
        let h = p.handle.clone();
        wait_until(Duration::from_secs(5), "backend marked down", || {
            h.backends()[0].health == proxy::HealthStatus::Unhealthy
        })
        .await;
        let r = get(&client(), &p.url("/")).await;
        assert_eq!(r.status.as_u16(), expect, "{policy:?}");
        if expect == 503 {
            assert!(r.headers.contains_key("retry-after"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_gets_408_and_others_are_served() {
    let b = backend("a").await;
    let mut cfg = config(&[("a", b.addr)]);
    cfg.timeouts.body_read_ms = 300;
    let p = start(cfg).await;
    let addr = p.addr();
    let out = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // Declares 100 bytes, sends 10 and stalls.
        s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
            .unwrap();
        let mut buf = [0u8; 128];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).to_string()
    })
    .await
    .unwrap();
    assert!(out.starts_with("HTTP/1.1 408"), "{out:?}");
    assert_eq!(get(&client(), &p.url("/")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_peak_ewma_avoids_a_slow_backend() {
    let fast = backend("fast").await;
    let slow = backend_with_delay("slow", 150).await;
    let mut cfg = config(&[("fast", fast.addr), ("slow", slow.addr)]);
    cfg.strategy = StrategyKind::P2cPeakEwma;
    let p = start(cfg).await;
    let c = client();
    let mut n = HashMap::new();
    for _ in 0..40 {
        *n.entry(get(&c, &p.url("/")).await.backend_id())
            .or_insert(0) += 1;
    }
    // Once the slow backend's latency is seen, P2C prefers the fast one (random or round
    // robin would give it half).
    let slow_n = n.get("slow").copied().unwrap_or(0);
    assert!(slow_n <= 8, "p2c kept choosing the slow backend: {n:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_hash_pins_a_client_address_and_random_spreads() {
    let bs = [backend("a").await, backend("b").await, backend("c").await];
    let named = [("a", bs[0].addr), ("b", bs[1].addr), ("c", bs[2].addr)];
    let mut cfg = config(&named);
    cfg.strategy = StrategyKind::IpHash;
    let p = start(cfg).await;
    let c = client();
    let first = get(&c, &p.url("/")).await.backend_id();
    for _ in 0..20 {
        assert_eq!(
            get(&c, &p.url("/")).await.backend_id(),
            first,
            "one client IP, one backend"
        );
    }
    let mut cfg = config(&named);
    cfg.strategy = StrategyKind::Random;
    cfg.backends[0].weight = 4;
    let p = start(cfg).await;
    let mut n = HashMap::new();
    for _ in 0..120 {
        *n.entry(get(&c, &p.url("/")).await.backend_id())
            .or_insert(0) += 1;
    }
    assert_eq!(n.len(), 3, "random should reach every backend: {n:?}");
    // Weight 4 of 6: expected 80 of 120.
    assert!(n["a"] > 55 && n["a"] < 105, "weighted random off: {n:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_timeout_gives_504() {
    let b = backend("a").await;
    let mut cfg = config(&[("a", b.addr)]);
    cfg.timeouts.upstream_response_ms = 300;
    cfg.outlier.enabled = false;
    let p = start(cfg).await;
    let c = client();
    let t = std::time::Instant::now();
    let r = get(&c, &p.url("/slow?delay_ms=3000")).await;
    assert_eq!(r.status, 504);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(get(&c, &p.url("/")).await.status, 200);
    let b = &p.handle.backends()[0];
    assert!(b.errors_total >= 1, "{b:?}");
}
