//! The parser against canned byte streams from a real socket, split at awkward places.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use super::*;

/// Serves one connection: for each script entry, reads one request head and writes the
/// entry's pieces with a pause between them (so reads see them split); closes at the end.
fn serve(script: Vec<Vec<&'static [u8]>>) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_nodelay(true).unwrap();
        for pieces in script {
            let mut got = Vec::new();
            let mut b = [0u8; 1024];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut b).unwrap();
                if n == 0 {
                    return;
                }
                got.extend_from_slice(&b[..n]);
            }
            for p in pieces {
                s.write_all(p).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    addr
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";

async fn conn(addr: std::net::SocketAddr) -> Conn {
    Conn::new(TcpStream::connect(addr).await.unwrap())
}

#[test]
fn content_length_keeps_the_connection_for_the_next_request() {
    let addr = serve(vec![
        vec![
            b"HTTP/1.1 200 OK\r\nContent-Le",
            b"ngth: 5\r\n\r\nhel",
            b"lo",
        ],
        vec![b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"],
    ]);
    rt().block_on(async {
        let mut c = conn(addr).await;
        let a = c.exchange(GET, false, Some(100)).await.unwrap();
        assert_eq!((a.status, a.keep_alive), (200, true));
        assert_eq!(a.body.as_deref(), Some(&b"hello"[..]));
        let b = c.exchange(GET, false, None).await.unwrap();
        assert_eq!((b.status, b.keep_alive, b.body), (404, true, None));
    });
}

#[test]
fn chunked_body_split_across_reads_with_trailers() {
    let addr = serve(vec![vec![
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4\r",
        b"\nwiki\r\n5;ext=1\r\npedia\r",
        b"\n0\r\nx-trailer: 1\r\n",
        b"\r\n",
    ]]);
    rt().block_on(async {
        let mut c = conn(addr).await;
        let a = c.exchange(GET, false, Some(6)).await.unwrap();
        assert_eq!((a.status, a.keep_alive), (200, true));
        assert_eq!(
            a.body.as_deref(),
            Some(&b"wikipe"[..]),
            "kept up to the cap"
        );
        assert_eq!(c.start, c.end, "everything consumed");
    });
}

#[test]
fn connection_close_and_http10_end_the_connection() {
    let cases: [(&'static [u8], bool); 4] = [
        (
            b"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, x\r\nContent-Length: 2\r\n\r\nok",
            true,
        ),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
        (
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
            true,
        ),
    ];
    for (resp, keep) in cases {
        let addr = serve(vec![vec![resp]]);
        let a = rt().block_on(async { conn(addr).await.exchange(GET, false, None).await });
        assert_eq!(
            a.unwrap().keep_alive,
            keep,
            "{}",
            String::from_utf8_lossy(resp)
        );
    }
}

#[test]
fn body_without_length_runs_until_close() {
    // python3 -m http.server style: HTTP/1.0, no length for some responses.
    let addr = serve(vec![vec![b"HTTP/1.0 200 OK\r\n\r\nsome ", b"body"]]);
    let a = rt()
        .block_on(async { conn(addr).await.exchange(GET, false, Some(64)).await })
        .unwrap();
    assert_eq!((a.status, a.keep_alive), (200, false));
    assert_eq!(a.body.as_deref(), Some(&b"some body"[..]));
}

#[test]
fn no_body_for_head_204_304_and_interim_responses_are_skipped() {
    let addr = serve(vec![
        vec![b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"],
        vec![b"HTTP/1.1 204 No Content\r\n\r\n"],
        vec![
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
        ],
    ]);
    rt().block_on(async {
        let mut c = conn(addr).await;
        assert_eq!(c.exchange(GET, true, None).await.unwrap().status, 200);
        assert_eq!(c.exchange(GET, false, None).await.unwrap().status, 204);
        let a = c.exchange(GET, false, None).await.unwrap();
        assert_eq!((a.status, a.keep_alive), (201, true));
    });
}

#[test]
fn a_close_or_garbage_before_the_response_is_an_error() {
    let addr = serve(vec![vec![
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    ]]);
    let e = rt().block_on(async { conn(addr).await.exchange(GET, false, None).await });
    assert!(matches!(e, Err(H1Error::Closed(n)) if n > 0), "{e:?}");
    let addr = serve(vec![vec![]]);
    let e = rt().block_on(async { conn(addr).await.exchange(GET, false, None).await });
    assert!(matches!(e, Err(H1Error::Closed(0))), "{e:?}");
    let addr = serve(vec![vec![b"SSH-2.0-OpenSSH\r\n\r\n"]]);
    let e = rt().block_on(async { conn(addr).await.exchange(GET, false, None).await });
    assert!(matches!(e, Err(H1Error::Protocol(_))), "{e:?}");
    let addr = serve(vec![vec![
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
    ]]);
    let e = rt().block_on(async { conn(addr).await.exchange(GET, false, None).await });
    assert!(matches!(e, Err(H1Error::Protocol(_))), "{e:?}");
}

#[test]
fn requests_are_encoded_with_host_length_and_auth() {
    let mut out = Vec::new();
    let host = HeaderValue::from_static("127.0.0.1:8080");
    let headers = vec![
        (
            HeaderName::from_static("content-type"),
            HeaderValue::from_static("application/json"),
        ),
        (
            HeaderName::from_static("content-length"),
            HeaderValue::from_static("999"),
        ),
    ];
    let auth = HeaderValue::from_static("Bearer t");
    encode_request(
        &mut out,
        &http::Method::POST,
        "/a?b=1",
        &host,
        &headers,
        Some(&auth),
        b"{}",
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "POST /a?b=1 HTTP/1.1\r\nhost: 127.0.0.1:8080\r\ncontent-type: application/json\r\n\
         authorization: Bearer t\r\ncontent-length: 2\r\n\r\n{}"
    );
    let mut out = Vec::new();
    let own_host = vec![(
        HeaderName::from_static("host"),
        HeaderValue::from_static("shop"),
    )];
    encode_request(
        &mut out,
        &http::Method::GET,
        "/",
        &host,
        &own_host,
        None,
        b"",
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "GET / HTTP/1.1\r\nhost: shop\r\n\r\n"
    );
}
