//! A tiny, fast fixed-response HTTP/1.1 + h2c server (`scaleout backend`) for tests,
//! benchmarks and the balancer demo.
//!
//! Every path answers a small fixed body with an `x-backend-id` header. A few reserved
//! paths make it useful in tests: `/healthz` (200, or 503 after `/__health/fail` until
//! `/__health/ok`), `/__echo` (the request as JSON, headers included), `/__status/{code}`,
//! `?delay_ms=N` on any path, and `/__ws` (accepts an upgrade and echoes bytes back). It is
//! a test fixture: it must never hold real state and never be used as a real service.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Options of the fixed-response backend.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// Sent as `x-backend-id` on every response.
    pub id: String,
    /// Body of ordinary responses.
    pub body: String,
    /// Delay added to every ordinary response, milliseconds.
    pub delay_ms: u64,
}

struct State {
    id: HeaderValue,
    body: Bytes,
    delay: Duration,
    healthy: AtomicBool,
    requests: AtomicU64,
}

/// Serves on `listener` until `shutdown` is cancelled, then lets open requests finish
/// (bounded to 5 s) and returns.
pub async fn serve(
    listener: TcpListener,
    opts: BackendOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let id = HeaderValue::from_str(&opts.id)
        .map_err(|_| std::io::Error::other("backend id is not a valid header value"))?;
    let state = Arc::new(State {
        id,
        body: Bytes::from(opts.body),
        delay: Duration::from_millis(opts.delay_ms),
        healthy: AtomicBool::new(true),
        requests: AtomicU64::new(0),
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let tracker = TaskTracker::new();
    loop {
        let (stream, _peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("backend accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let builder = builder.clone();
        let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        tracker.spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
    tracker.close();
    Ok(())
}

/// Binds `addr` and serves (see [`serve`]).
pub async fn bind_and_serve(
    addr: SocketAddr,
    opts: BackendOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    serve(listener, opts, shutdown).await
}

type Resp = Response<Full<Bytes>>;

fn with_id(state: &State, status: StatusCode, body: Bytes) -> Resp {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert("x-backend-id", state.id.clone());
    r
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    state.requests.fetch_add(1, Relaxed);
    let path = req.uri().path();
    if let Some(ms) = req.uri().query().and_then(query_delay_ms) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if !path.starts_with("/__") && path != "/healthz" {
        if !state.delay.is_zero() {
            tokio::time::sleep(state.delay).await;
        }
        if !hyper::body::Body::is_end_stream(req.body()) {
            // Read (and drop) the body so the connection stays usable.
            let _ = req.into_body().collect().await;
        }
        return Ok(with_id(&state, StatusCode::OK, state.body.clone()));
    }
    let resp = match path {
        "/healthz" => {
            if state.healthy.load(Relaxed) {
                with_id(&state, StatusCode::OK, Bytes::from_static(b"ok"))
            } else {
                with_id(
                    &state,
                    StatusCode::SERVICE_UNAVAILABLE,
                    Bytes::from_static(b"failing"),
                )
            }
        }
        "/__health/fail" => {
            state.healthy.store(false, Relaxed);
            with_id(
                &state,
                StatusCode::OK,
                Bytes::from_static(b"health: failing"),
            )
        }
        "/__health/ok" => {
            state.healthy.store(true, Relaxed);
            with_id(&state, StatusCode::OK, Bytes::from_static(b"health: ok"))
        }
        "/__echo" => echo(&state, req).await,
        "/__ws" => upgrade_echo(&state, req),
        p if p.starts_with("/__status/") => {
            let code = p["/__status/".len()..]
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::BAD_REQUEST);
            with_id(
                &state,
                code,
                Bytes::from(format!("status {}", code.as_u16())),
            )
        }
        _ => with_id(
            &state,
            StatusCode::NOT_FOUND,
            Bytes::from_static(b"unknown test path"),
        ),
    };
    Ok(resp)
}

fn query_delay_ms(query: &str) -> Option<u64> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("delay_ms="))
        .and_then(|v| v.parse().ok())
        .map(|ms: u64| ms.min(60_000))
}

async fn echo(state: &State, req: Request<Incoming>) -> Resp {
    let (parts, body) = req.into_parts();
    let body_len = match body.collect().await {
        Ok(b) => b.to_bytes().len(),
        Err(_) => {
            return with_id(
                state,
                StatusCode::BAD_REQUEST,
                Bytes::from_static(b"body error"),
            );
        }
    };
    let mut headers = serde_json::Map::new();
    for (k, v) in &parts.headers {
        let v = serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned());
        match headers.get_mut(k.as_str()) {
            Some(serde_json::Value::Array(a)) => a.push(v),
            Some(prev) => {
                let p = prev.take();
                *prev = serde_json::Value::Array(vec![p, v]);
            }
            None => {
                headers.insert(k.as_str().to_string(), v);
            }
        }
    }
    let doc = serde_json::json!({
        "id": state.id.to_str().unwrap_or(""),
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body_len": body_len,
    });
    let mut r = with_id(state, StatusCode::OK, Bytes::from(doc.to_string()));
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

fn upgrade_echo(state: &State, req: Request<Incoming>) -> Resp {
    if !crate::headers::is_upgrade_request(req.headers()) {
        return with_id(
            state,
            StatusCode::BAD_REQUEST,
            Bytes::from_static(b"upgrade required"),
        );
    }
    let proto = req.headers().get(http::header::UPGRADE).cloned();
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let io = TokioIo::new(upgraded);
        let (mut r, mut w) = tokio::io::split(io);
        // Bounded: the copy ends when the client closes or after 60 s.
        let _ =
            tokio::time::timeout(Duration::from_secs(60), tokio::io::copy(&mut r, &mut w)).await;
    });
    let mut r = with_id(state, StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    r.headers_mut().insert(
        http::header::CONNECTION,
        HeaderValue::from_static("upgrade"),
    );
    if let Some(p) = proto {
        r.headers_mut().insert(http::header::UPGRADE, p);
    }
    r
}
