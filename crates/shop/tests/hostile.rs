//! The shop's public listener against hostile clients on real sockets (second hostile
//! review, issue 10): a wrong-password flood from one loopback address while a real user
//! logs in from another (127.0.0.2), and requests hyper cannot parse (a garbage request
//! line, a 1 MB header), whose answers must carry a JSON body like every other error.
//!
//! The shop runs in this process (`shop::run`) on a real TCP listener; attackers are OS
//! threads with blocking sockets. Figures are printed (`--nocapture`, `FIGURE` lines);
//! assertions are behavioural, never speeds.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::sqlite_config;
use shop::ShopConfig;
use tokio_util::sync::CancellationToken;

/// A shop on a free loopback port, stopped on drop.
struct Running {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn run_shop(mut cfg: ShopConfig) -> Running {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    cfg.listen = addr.to_string();
    let stop = CancellationToken::new();
    tokio::spawn(shop::run(cfg, stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "shop did not start listening");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Running { addr, stop }
}

/// One request on a new connection from `from` (a loopback address), `Connection:
/// close`; the status and the body. Bounded by 30 s.
fn request_from(
    from: [u8; 4],
    to: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    sock.connect_timeout(&to.into(), Duration::from_secs(5))
        .unwrap();
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_flood_from_one_address_does_not_starve_another() {
    let cfg = ShopConfig {
        hash_concurrency: 4,
        ..sqlite_config("fair")
    };
    let shop = run_shop(cfg).await;
    let addr = shop.addr;
    let (good, attackers) = tokio::task::spawn_blocking(move || {
        for name in ["alice", "bob"] {
            let creds = format!(r#"{{"username":"{name}","password":"pw-{name}-123"}}"#);
            let (s, b) = request_from([127, 0, 0, 2], addr, "POST", "/signup", &creds);
            assert_eq!(s, 201, "{b}");
        }
        // 8 attacker threads from 127.0.0.1 guess alice's password, back to back.
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut by_status = std::collections::BTreeMap::<u16, u32>::new();
                    let body = format!(r#"{{"username":"alice","password":"guess-{i}"}}"#);
                    for _ in 0..100_000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let (s, _) = request_from([127, 0, 0, 1], addr, "POST", "/login", &body);
                        *by_status.entry(s).or_default() += 1;
                    }
                    by_status
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        // The real users log in from 127.0.0.2, alice too (the attacked account).
        let mut good = std::collections::BTreeMap::<u16, u32>::new();
        for i in 0..20 {
            let name = if i % 2 == 0 { "alice" } else { "bob" };
            let creds = format!(r#"{{"username":"{name}","password":"pw-{name}-123"}}"#);
            let (s, b) = request_from([127, 0, 0, 2], addr, "POST", "/login", &creds);
            if s == 200 {
                assert!(b.contains("token"), "{b}");
            }
            *good.entry(s).or_default() += 1;
        }
        stop.store(true, Ordering::Relaxed);
        let mut attackers = std::collections::BTreeMap::<u16, u32>::new();
        for t in threads {
            for (s, n) in t.join().unwrap() {
                *attackers.entry(s).or_default() += n;
            }
        }
        (good, attackers)
    })
    .await
    .unwrap();
    eprintln!(
        "FIGURE login fairness: 4 permits, 8 attacker threads on 127.0.0.1 (alice, wrong \
         passwords): {attackers:?}; real logins from 127.0.0.2: {good:?}"
    );
    assert_eq!(good.get(&200).copied().unwrap_or(0), 20, "{good:?}");
    assert!(
        attackers.get(&401).copied().unwrap_or(0) > 0,
        "{attackers:?}"
    );
    assert!(
        attackers.get(&429).copied().unwrap_or(0) > 0,
        "the attacker ran into its share: {attackers:?}"
    );
}

/// Sends `head` on a new connection (written by a separate thread, since the shop may stop
/// reading) and returns the answer read meanwhile.
fn answer_to(addr: SocketAddr, head: Vec<u8>) -> String {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&head);
    });
    let mut r = s;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    drop(r);
    let _ = writer.join();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_hyper_cannot_parse_get_a_json_error_body() {
    let shop = run_shop(sqlite_config("unparsable")).await;
    let addr = shop.addr;
    let big_header = {
        let mut h = b"GET /catalog HTTP/1.1\r\nHost: shop\r\nX-Big: ".to_vec();
        h.extend(std::iter::repeat_n(b'a', 1 << 20));
        h.extend_from_slice(b"\r\n\r\n");
        h
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("garbage request line", b"GARBAGE\r\n\r\n".to_vec(), 400),
        (
            "space in a header name",
            b"GET / HTTP/1.1\r\nHost: shop\r\nBad Header: x\r\n\r\n".to_vec(),
            400,
        ),
        ("1 MB header", big_header, 431),
    ];
    for (what, head, status) in cases {
        let a = tokio::task::spawn_blocking(move || answer_to(addr, head))
            .await
            .unwrap();
        let (h, body) = a.split_once("\r\n\r\n").unwrap_or((&a, ""));
        eprintln!("{what}: {h:?} {body}");
        assert!(
            h.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what}: {a:?}"
        );
        let lower = h.to_ascii_lowercase();
        assert!(
            lower.contains("content-type: application/json"),
            "{what}: {h}"
        );
        let v: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: {e}: {body:?}"));
        assert!(v["error"].is_string(), "{what}: {v}");
    }
    // Ordinary requests on the same listener are unchanged, errors and successes alike.
    let ok = tokio::task::spawn_blocking(move || {
        answer_to(
            addr,
            b"GET /healthz HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n".to_vec(),
        )
    })
    .await
    .unwrap();
    assert!(ok.starts_with("HTTP/1.1 200 "), "{ok}");
    let nf = tokio::task::spawn_blocking(move || {
        answer_to(
            addr,
            b"GET /nowhere HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n".to_vec(),
        )
    })
    .await
    .unwrap();
    assert!(nf.starts_with("HTTP/1.1 404 "), "{nf}");
    assert!(nf.contains("\"error\""), "{nf}");
}
