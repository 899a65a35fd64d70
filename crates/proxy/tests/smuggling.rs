//! The HTTP/1.1 fast path's parser against a raw-socket client and a backend that logs
//! every byte it receives (issue 12): every request-smuggling vector RFC 9112 names is
//! refused with its status and the connection closed, and not one byte of it reaches the
//! backend; what is forwarded has exactly one framing, one `Host`, and the forwarded
//! headers.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use common::servers::RawBackend;
use common::start;
use proxy::Config;

fn raw_config(backend: SocketAddr) -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        // These rules are the fast path's own codec (hyper's is the default).
        fast_path: true,
        ..Config::default()
    };
    c.health.enabled = false;
    c.backends = vec![proxy::config::BackendConfig {
        name: "raw".into(),
        addr: backend.to_string(),
        weight: 1,
    }];
    c
}

/// Sends `request` on a new connection and reads until the proxy closes it (or 5 s).
/// Returns the bytes and whether the proxy closed the connection.
fn send_raw(addr: SocketAddr, request: &[u8]) -> (String, bool) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

async fn exchange(addr: SocketAddr, req: &[u8]) -> (String, bool) {
    let req = req.to_vec();
    tokio::task::spawn_blocking(move || send_raw(addr, &req))
        .await
        .unwrap()
}

/// Each vector, the status it must get. Labelled from RFC 9112 before running the proxy.
const VECTORS: &[(&str, &[u8], u16)] = &[
    ("CL.TE", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", 400),
    ("TE.CL", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n", 400),
    ("CL.CL different", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 5\r\n\r\nGPOST", 400),
    ("CL list", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 5\r\n\r\nGPOST", 400),
    ("CL sign", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nGPOST", 400),
    ("TE obfuscated value", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 501),
    ("TE identity,chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n", 501),
    ("TE twice", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n", 501),
    ("TE space before colon", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    ("TE obs-fold", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400),
    ("TE on HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\tfolded\r\n\r\n", 400),
    ("invalid header name", b"GET / HTTP/1.1\r\nHost: a\r\nX\x01A: 1\r\n\r\n", 400),
    ("header name with slash", b"GET / HTTP/1.1\r\nHost: a\r\nX/A: 1\r\n\r\n", 400),
    ("NUL in value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n", 400),
    ("bare LF", b"GET / HTTP/1.1\nHost: a\n\n", 400),
    ("bare LF in one header", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\nContent-Length: 5\r\n\r\nGPOST", 400),
    ("bare CR", b"GET / HTTP/1.1\r\nHost: a\rContent-Length: 5\r\n\r\nGPOST", 400),
    ("no Host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("empty Host", b"GET / HTTP/1.1\r\nHost: \r\n\r\n", 400),
    ("Host with path", b"GET / HTTP/1.1\r\nHost: a/../b\r\n\r\n", 400),
    ("Host with userinfo", b"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", 400),
    ("absolute-form without Host", b"GET http://a/ HTTP/1.1\r\n\r\n", 400),
    ("absolute-form, other scheme", b"GET gopher://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("relative target", b"GET x HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("two spaces", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 400),
    ("CONNECT", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 405),
    ("unknown expectation", b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", 417),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_vectors_are_refused_and_nothing_reaches_the_backend() {
    let raw = RawBackend::start();
    let p = start(raw_config(raw.addr)).await;
    for (name, req, status) in VECTORS {
        let (resp, closed) = exchange(p.addr(), req).await;
        let want = format!("HTTP/1.1 {status} ");
        assert!(
            resp.starts_with(&want),
            "{name}: wanted {status}, got {resp:?}"
        );
        assert!(closed, "{name}: the connection stayed open after a refusal");
        assert_eq!(raw.total_bytes(), 0, "{name}: bytes reached the backend");
    }
    // The same vectors after a valid request in the same write: only the valid one is
    // forwarded.
    for (name, req, status) in VECTORS {
        let mut both = b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
        both.extend_from_slice(req);
        let before = raw.total_bytes();
        let (resp, closed) = exchange(p.addr(), &both).await;
        assert!(resp.starts_with("HTTP/1.1 200 "), "{name}: {resp:?}");
        let second = format!("HTTP/1.1 {status} ");
        assert!(
            resp.contains(&second),
            "{name}: second answer missing: {resp:?}"
        );
        assert!(closed, "{name}");
        let seen: Vec<u8> = raw
            .connections()
            .iter()
            .flat_map(|c| c.bytes.clone())
            .skip(before)
            .collect();
        let seen = String::from_utf8_lossy(&seen).to_string();
        assert_eq!(seen.matches(" HTTP/1.1\r\n").count(), 1, "{name}: {seen:?}");
        assert!(
            seen.starts_with("GET /first HTTP/1.1\r\n"),
            "{name}: {seen:?}"
        );
    }
    eprintln!(
        "FIGURE smuggling: {} vectors refused alone and after a valid request; 0 bytes of them reached the backend",
        VECTORS.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_heads_have_one_framing_one_host_and_the_forwarded_headers() {
    let raw = RawBackend::start();
    let p = start(raw_config(raw.addr)).await;
    // Pipelined: three requests in one write, one of them with a body.
    let (resp, closed) = exchange(
        p.addr(),
        b"GET /a HTTP/1.1\r\nHost: shop\r\nX-Forwarded-For: 1.2.3.4\r\nConnection: X-Hop\r\nX-Hop: h\r\n\r\n\
          POST /b HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello\
          GET http://other:81/c?q HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(resp.matches("HTTP/1.1 200 OK").count(), 3, "{resp:?}");
    assert!(closed);
    let seen: String = raw
        .connections()
        .iter()
        .map(|c| String::from_utf8_lossy(&c.bytes).into_owned())
        .collect();
    let heads: Vec<&str> = seen
        .split("\r\n\r\n")
        .filter(|h| h.contains(" HTTP/1.1"))
        .collect();
    assert_eq!(heads.len(), 3, "{seen:?}");
    for h in &heads {
        let lower = h.to_ascii_lowercase();
        assert_eq!(lower.matches("\r\nhost: ").count(), 1, "{h:?}");
        assert!(lower.contains("\r\nx-forwarded-for: "), "{h:?}");
        assert!(lower.contains("\r\nx-request-id: "), "{h:?}");
        assert!(!lower.contains("x-hop"), "{h:?}");
        assert!(!lower.contains("transfer-encoding"), "{h:?}");
    }
    assert!(
        heads[0].contains("x-forwarded-for: 1.2.3.4, 127.0.0.1"),
        "{}",
        heads[0]
    );
    assert_eq!(
        heads[1]
            .to_ascii_lowercase()
            .matches("content-length: 5")
            .count(),
        1
    );
    assert!(seen.contains("\r\n\r\nhello"), "{seen:?}");
    // Absolute form: origin form upstream, the target's authority as Host.
    assert!(
        seen.contains("\r\n\r\nhelloGET /c?q HTTP/1.1\r\nhost: other:81\r\n"),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_goes_through_hyper_once_and_the_connection_closes() {
    let raw = RawBackend::start();
    let p = start(raw_config(raw.addr)).await;
    let (resp, closed) = exchange(
        p.addr(),
        b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
          GET /after HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp:?}");
    assert!(
        closed,
        "the connection must close after a request hyper served"
    );
    let seen: String = raw
        .connections()
        .iter()
        .map(|c| String::from_utf8_lossy(&c.bytes).into_owned())
        .collect();
    assert!(seen.contains("hello"), "{seen:?}");
    assert!(
        !seen.contains("/after"),
        "a request after the hand-over was forwarded: {seen:?}"
    );
    // The next connection is served by the fast path again.
    let (resp, _) = exchange(
        p.addr(),
        b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_gets_the_interim_answer_before_the_body_is_sent() {
    let raw = RawBackend::start();
    let p = start(raw_config(raw.addr)).await;
    let addr = p.addr();
    let out = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut first = [0u8; 25];
        s.read_exact(&mut first).unwrap();
        s.write_all(b"body").unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        (String::from_utf8_lossy(&first).into_owned(), String::from_utf8_lossy(&rest).into_owned())
    })
    .await
    .unwrap();
    assert_eq!(out.0, "HTTP/1.1 100 Continue\r\n\r\n");
    assert!(out.1.starts_with("HTTP/1.1 200 OK"), "{:?}", out.1);
    let seen: String = raw
        .connections()
        .iter()
        .map(|c| String::from_utf8_lossy(&c.bytes).into_owned())
        .collect();
    assert!(seen.ends_with("\r\n\r\nbody"), "{seen:?}");
    assert!(!seen.to_ascii_lowercase().contains("expect"), "{seen:?}");
}
