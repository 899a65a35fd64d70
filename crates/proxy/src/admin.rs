//! The admin API on its own listener, behind a bearer token: list backends with state and
//! stats, add, drain, activate, re-weight and remove backends at run time, and Prometheus
//! metrics.
//!
//! The listener has its own small limits (`admin.max_connections`, at most half of them
//! for connections that have not sent a request, the oldest evicted first; idle keep-alive
//! connections are closed, least recently active first, when every slot is taken) and
//! timeouts (`admin.header_read_ms` from accept, `admin.idle_ms`), so neither silent nor
//! idle keep-alive connections can make it unreachable (see `admission`). Backends added here must have addresses inside
//! `admin.backend_ranges` (see `addr_policy`); a refused one gets 400 with a JSON reason.
//!
//! Every route except `GET /healthz` requires `Authorization: Bearer <token>`; without it
//! the answer is 401 and nothing changes. Request bodies are bounded (64 KiB). Handlers
//! never hold the control lock across an `.await`, and never leak internal errors.
//!
//! Routes:
//! - `GET /backends`: JSON list of backends (state and counters)
//! - `POST /backends` `{"name": "...", "addr": "host:port", "weight": 1}`: add (slow start)
//! - `GET /backends/{name}`: one backend
//! - `PUT /backends/{name}/weight` `{"weight": 3}`: re-weight
//! - `POST /backends/{name}/drain`: stop new requests (stays listed)
//! - `POST /backends/{name}/activate`: undo a drain
//! - `DELETE /backends/{name}?grace_ms=N`: drain, then remove once idle or after N ms
//!   (default `timeouts.shutdown_grace_ms`); answers 202 at once
//! - `GET /metrics`: Prometheus text; `GET /stats`: proxy-wide metrics as JSON

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::addr_policy::{Accepted, BackendAddrPolicy};
use crate::admission::Admission;
use crate::metrics::{BackendMetricsView, render_prometheus};
use crate::server::IdleIo;
use crate::shared::Shared;
use crate::{BackendSpec, ProxyError, ProxyHandle};

const MAX_ADMIN_BODY: usize = 64 * 1024;

/// Serves the admin API until `shutdown`.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    public: std::net::SocketAddr,
    shutdown: CancellationToken,
) {
    let local = listener.local_addr().ok();
    let handle = ProxyHandle {
        shared: shared.clone(),
        listen_addr: public,
        admin_addr: local,
    };
    let cfg = &shared.config.admin;
    let head = Duration::from_millis(cfg.header_read_ms);
    let idle = Duration::from_millis(cfg.idle_ms);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(head)
        .max_buf_size(16 * 1024);
    let builder = Arc::new(builder);
    let tracker = TaskTracker::new();
    // Its own small pool: at most half of it for connections that have sent nothing yet,
    // the oldest of which make room for new ones, and idle keep-alive connections are
    // closed (least recently active first) when every slot is taken, so neither silent
    // nor idle keep-alive clients can lock the operator out.
    let admission = Admission::new(cfg.max_connections as usize, 50);
    loop {
        let (stream, _) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("admin accept: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let Some(slot) = admission.admit().slot else {
            // Every slot holds a connection with a request in flight: drop this one.
            continue;
        };
        let handle = handle.clone();
        let builder = builder.clone();
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let conn_state = slot.conn().clone();
            let active = conn_state.active.clone();
            let started = Arc::new(AtomicBool::new(false));
            let io = IdleIo::new(stream, idle, head, conn_state, started.clone());
            let evict = slot.evict().clone();
            let slot = Arc::new(slot);
            let svc = hyper::service::service_fn(move |req| {
                let handle = handle.clone();
                let active = active.clone();
                let started = started.clone();
                let slot = slot.clone();
                async move {
                    // In flight before established: never evicted as idle mid-request.
                    active.fetch_add(1, Ordering::Relaxed);
                    started.store(true, Ordering::Relaxed);
                    slot.establish();
                    let r = route(&handle, req).await;
                    active.fetch_sub(1, Ordering::Relaxed);
                    Ok::<_, Infallible>(r)
                }
            });
            let conn = builder.serve_connection(TokioIo::new(io), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = evict.cancelled() => {}
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                }
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(3), tracker.wait()).await;
}

/// Prometheus text for the whole proxy.
pub(crate) fn render_metrics(shared: &Shared) -> String {
    let snap = shared.snapshot.load_full();
    let views: Vec<BackendMetricsView<'_>> = snap
        .selector
        .candidates()
        .iter()
        .zip(snap.rts.iter())
        .map(|(c, rt)| BackendMetricsView {
            name: &rt.name,
            counters: &rt.counters,
            weight: c.weight.round() as u32,
            eligible: c.eligibility == balance::Eligibility::Eligible,
        })
        .collect();
    render_prometheus(&shared.counters, &views)
}

type Resp = Response<Full<Bytes>>;

fn json(status: StatusCode, value: &impl serde::Serialize) -> Resp {
    let body = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, message: &str) -> Resp {
    json(status, &serde_json::json!({ "error": message }))
}

fn authorized(handle: &ProxyHandle, req: &Request<Incoming>) -> bool {
    let Some(token) = handle.shared.config.admin.token.as_deref() else {
        return false;
    };
    let Some(given) = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
    else {
        return false;
    };
    constant_time_eq(given.as_bytes(), token.as_bytes())
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is matched without
/// regard to case, as RFC 9110 11.1 requires.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod bearer_tests {
    use super::bearer;

    #[test]
    fn the_scheme_is_case_insensitive_and_others_are_refused() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearerabc"), None);
    }
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn proxy_error(e: ProxyError) -> Resp {
    match e {
        ProxyError::UnknownBackend(n) => {
            error(StatusCode::NOT_FOUND, &format!("no backend named {n:?}"))
        }
        ProxyError::Backend(m) if m.contains("already exists") => error(StatusCode::CONFLICT, &m),
        ProxyError::Backend(m) => error(StatusCode::BAD_REQUEST, &m),
        other => {
            tracing::error!("admin: {other}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

async fn read_json<T: for<'de> Deserialize<'de>>(req: Request<Incoming>) -> Result<T, Resp> {
    let bytes = Limited::new(req.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
        .map_err(|_| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body too large or incomplete",
            )
        })?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    name: Option<String>,
    addr: String,
    #[serde(default = "one")]
    weight: u32,
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightBody {
    weight: u32,
}

/// The address policy, with a host name resolved (bounded by 2 s) and every address it
/// resolves to checked against the balancer's own listeners and metadata endpoints.
async fn check_backend_addr(policy: &BackendAddrPolicy, addr: &str) -> Result<(), String> {
    match policy.check(addr)? {
        Accepted::Ip(_) => Ok(()),
        Accepted::HostName => {
            let resolved = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::lookup_host(addr.to_string()),
            )
            .await
            .map_err(|_| format!("{addr:?} did not resolve within 2 s"))?
            .map_err(|e| format!("{addr:?} does not resolve: {e}"))?;
            for sa in resolved.take(64) {
                policy.check_resolved(sa)?;
            }
            Ok(())
        }
    }
}

async fn route(handle: &ProxyHandle, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    if path == "/healthz" && req.method() == Method::GET {
        return error(StatusCode::OK, "ok");
    }
    if !authorized(handle, &req) {
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    match (&method, segs.as_slice()) {
        (&Method::GET, ["metrics"]) => {
            let mut r = Response::new(Full::new(Bytes::from(handle.prometheus())));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        (&Method::GET, ["stats"]) => json(StatusCode::OK, &handle.metrics()),
        (&Method::GET, ["fleet"]) => match handle.admin_extension() {
            Some(ext) => json(StatusCode::OK, &ext.json()),
            None => error(StatusCode::NOT_FOUND, "no fleet behind this balancer"),
        },
        (&Method::GET, ["backends"]) => json(StatusCode::OK, &handle.backends()),
        (&Method::POST, ["backends"]) => {
            let body: AddBody = match read_json(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let admin = &handle.shared.config.admin;
            let own: Vec<_> = std::iter::once(handle.listen_addr)
                .chain(handle.admin_addr)
                .collect();
            let policy = BackendAddrPolicy::new(&admin.backend_ranges, admin.allow_hostnames)
                .with_own_listeners(&own);
            if let Err(reason) = check_backend_addr(&policy, &body.addr).await {
                return json(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({ "error": reason, "field": "addr" }),
                );
            }
            let spec = BackendSpec {
                name: body.name.unwrap_or_else(|| body.addr.clone()),
                addr: body.addr,
                weight: body.weight,
            };
            let name = spec.name.clone();
            match handle.add_backend(spec) {
                Ok(()) => json(StatusCode::CREATED, &serde_json::json!({ "added": name })),
                Err(e) => proxy_error(e),
            }
        }
        (&Method::GET, ["backends", name]) => {
            match handle.backends().into_iter().find(|b| b.name == *name) {
                Some(b) => json(StatusCode::OK, &b),
                None => error(StatusCode::NOT_FOUND, "no such backend"),
            }
        }
        (&Method::PUT, ["backends", name, "weight"]) => {
            let name = name.to_string();
            let body: WeightBody = match read_json(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            match handle.set_weight(&name, body.weight) {
                Ok(()) => json(
                    StatusCode::OK,
                    &serde_json::json!({ "name": name, "weight": body.weight }),
                ),
                Err(e) => proxy_error(e),
            }
        }
        (&Method::POST, ["backends", name, "drain"]) => match handle.drain_only(name) {
            Ok(()) => json(StatusCode::OK, &serde_json::json!({ "draining": name })),
            Err(e) => proxy_error(e),
        },
        (&Method::POST, ["backends", name, "activate"]) => match handle.activate_backend(name) {
            Ok(()) => json(StatusCode::OK, &serde_json::json!({ "active": name })),
            Err(e) => proxy_error(e),
        },
        (&Method::DELETE, ["backends", name]) => {
            let grace_ms = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("grace_ms=")))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(handle.shared.config.timeouts.shutdown_grace_ms)
                .min(3_600_000);
            let name = name.to_string();
            if let Err(e) = handle.drain_only(&name) {
                return proxy_error(e);
            }
            let h = handle.clone();
            let n = name.clone();
            tokio::spawn(async move {
                match h.drain_backend(&n, Duration::from_millis(grace_ms)).await {
                    Ok(left) => {
                        tracing::info!(backend = %n, still_in_flight = left, "removed after drain")
                    }
                    Err(e) => tracing::warn!(backend = %n, "remove after drain: {e}"),
                }
            });
            json(
                StatusCode::ACCEPTED,
                &serde_json::json!({ "removing": name, "grace_ms": grace_ms }),
            )
        }
        _ => error(StatusCode::NOT_FOUND, "no such route"),
    }
}
