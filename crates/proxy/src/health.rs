//! Active health checks: one task per backend that checks it every interval (with a
//! timeout) and feeds the result to the pool's rise/fall state machine.
//!
//! The default check is a TCP connect: it works in front of any server (nginx's default
//! site, `python3 -m http.server`, HAProxy) because it asks nothing of the backend but to
//! accept connections, which is exactly what a killed or stopped backend stops doing.
//! An HTTP check (`GET <health.path>`, passing on 2xx/3xx) is used when `health.path` is
//! set (`--health-path`): it also catches a backend that accepts but cannot serve, at the
//! price of requiring that path to exist. Each result also says whether the backend was
//! reachable at all, so fail-open can avoid backends that refuse connections.
//!
//! A checker ends when its backend is removed or the proxy stops. It takes the control
//! lock only to record a result (no await while holding it) and republishes the snapshot
//! on a transition. It must never run on a worker thread (it would compete with requests).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use balance::{CheckOutcome, HealthStatus, PoolError};
use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::shared::{BackendRt, Shared};

/// Starts the checker of `rt` on the control runtime.
pub(crate) fn spawn_checker(shared: Arc<Shared>, rt: Arc<BackendRt>) {
    let handle = shared.runtime.clone();
    handle.spawn(run_checker(shared, rt));
}

/// How one backend is checked.
enum Probe {
    /// A TCP connect, closed at once.
    Tcp,
    /// `GET uri` through a one-connection client.
    Http {
        uri: Uri,
        client: Box<Client<HttpConnector, Empty<Bytes>>>,
    },
}

impl Probe {
    fn new(shared: &Shared, rt: &BackendRt) -> Result<Probe, String> {
        let cfg = &shared.balance.health;
        let Some(path) = cfg.http_path() else {
            return Ok(Probe::Tcp);
        };
        let uri: Uri = format!("http://{}{}", rt.addr, path)
            .parse()
            .map_err(|e| format!("health check URI: {e}"))?;
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.timeout()));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(1)
            .build(http);
        Ok(Probe::Http {
            uri,
            client: Box::new(client),
        })
    }

    /// One check, bounded by `health.timeout_ms`.
    async fn check(&self, shared: &Shared, rt: &BackendRt) -> CheckOutcome {
        let timeout = shared.balance.health.timeout();
        match self {
            Probe::Tcp => {
                let connect = async {
                    match rt.socket_addr {
                        Some(a) => tokio::net::TcpStream::connect(a).await,
                        None => tokio::net::TcpStream::connect(rt.addr.as_str()).await,
                    }
                };
                match tokio::time::timeout(timeout, connect).await {
                    Ok(Ok(_stream)) => CheckOutcome::Pass,
                    _ => CheckOutcome::Unreachable,
                }
            }
            Probe::Http { uri, client } => {
                let mut req = Request::new(Empty::new());
                *req.uri_mut() = uri.clone();
                req.headers_mut().insert(
                    http::header::USER_AGENT,
                    http::HeaderValue::from_static("scaleout-lb-health"),
                );
                let r = tokio::time::timeout(timeout, async {
                    let resp = match client.request(req).await {
                        Ok(r) => r,
                        Err(e) if e.is_connect() => return CheckOutcome::Unreachable,
                        Err(_) => return CheckOutcome::Fail,
                    };
                    let good = (200..400).contains(&resp.status().as_u16());
                    if resp.into_body().collect().await.is_err() || !good {
                        return CheckOutcome::Fail;
                    }
                    CheckOutcome::Pass
                })
                .await;
                // A check that timed out may not even have connected: unknown, so it
                // counts as answered (only a definite refusal marks it unreachable).
                r.unwrap_or(CheckOutcome::Fail)
            }
        }
    }
}

async fn run_checker(shared: Arc<Shared>, rt: Arc<BackendRt>) {
    let probe = match Probe::new(&shared, &rt) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(backend = %rt.name, "{e}");
            return;
        }
    };
    let mut interval = tokio::time::interval(shared.balance.health.interval());
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = rt.health_stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let outcome = probe.check(&shared, &rt).await;
        let now = Instant::now();
        let result = {
            let mut c = shared.control();
            let was_reachable = c.pool.reachable(rt.id).unwrap_or(true);
            let r = c.pool.observe_check(rt.id, outcome, now);
            let reach_changed = was_reachable != (outcome != CheckOutcome::Unreachable);
            if matches!(r, Ok(Some(_))) || (r.is_ok() && reach_changed) {
                shared.publish(&c, now);
            }
            r
        };
        match result {
            Ok(Some(t)) => {
                if t.to == HealthStatus::Healthy {
                    rt.counters.health_up_total.fetch_add(1, Relaxed);
                    tracing::info!(backend = %rt.name, "health check: backend is up");
                } else {
                    rt.counters.health_down_total.fetch_add(1, Relaxed);
                    tracing::warn!(backend = %rt.name, ?outcome, "health check: backend is down");
                }
            }
            Ok(None) => {}
            Err(PoolError::UnknownBackend(_)) => return,
            Err(e) => tracing::warn!(backend = %rt.name, "health check: {e}"),
        }
    }
}
