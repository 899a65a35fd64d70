//! Helpers for the proxy's in-process integration tests: real backends and a real proxy on
//! loopback ports, in one process.
#![allow(dead_code)]

pub mod servers;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use proxy::testing_backend::{BackendOptions, serve};
use proxy::{Config, Proxy, ProxyHandle};
use tokio_util::sync::CancellationToken;

/// A running in-process test backend.
pub struct TestBackend {
    pub addr: SocketAddr,
    pub stop: CancellationToken,
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub async fn backend(id: &str) -> TestBackend {
    backend_with_delay(id, 0).await
}

pub async fn backend_with_delay(id: &str, delay_ms: u64) -> TestBackend {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let opts = BackendOptions {
        id: id.to_string(),
        body: format!("hello from {id}"),
        delay_ms,
    };
    tokio::spawn(serve(listener, opts, stop.clone()));
    TestBackend { addr, stop }
}

/// A running in-process proxy.
pub struct TestProxy {
    pub handle: ProxyHandle,
    pub stop: CancellationToken,
    pub task: Option<tokio::task::JoinHandle<Result<(), proxy::ProxyError>>>,
}

impl TestProxy {
    pub fn addr(&self) -> SocketAddr {
        self.handle.listen_addr()
    }
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr(), path)
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A config on an ephemeral port with fast health checks, named backends `(name, addr)`.
pub fn config(backends: &[(&str, SocketAddr)]) -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    c.health.interval_ms = 100;
    c.health.timeout_ms = 100;
    c.slow_start.window_ms = 0;
    c.backends = backends
        .iter()
        .map(|(n, a)| proxy::config::BackendConfig {
            name: n.to_string(),
            addr: a.to_string(),
            weight: 1,
        })
        .collect();
    c
}

pub async fn start(config: Config) -> TestProxy {
    let proxy = Proxy::bind(config).await.expect("bind proxy");
    let handle = proxy.handle();
    let stop = CancellationToken::new();
    let task = tokio::spawn(proxy.run(stop.clone()));
    TestProxy {
        handle,
        stop,
        task: Some(task),
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn backend_id(&self) -> String {
        self.headers
            .get("x-backend-id")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
}

pub async fn send(
    c: &Client<HttpConnector, Full<Bytes>>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), c.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub async fn get(c: &Client<HttpConnector, Full<Bytes>>, url: &str) -> Reply {
    send(c, "GET", url, &[], b"").await
}

/// Polls `cond` every 20 ms until true, or panics after `timeout` with `what`.
pub async fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
