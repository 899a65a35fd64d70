//! Active HTTP health checks: one task per backend that requests the configured path every
//! interval (with a timeout) and feeds the result to the pool's rise/fall state machine.
//!
//! A checker ends when its backend is removed or the proxy stops. It takes the control
//! lock only to record a result (no await while holding it) and republishes the snapshot
//! on a transition. It must never run on a worker thread (it would compete with requests).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use balance::{HealthStatus, PoolError};
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

async fn run_checker(shared: Arc<Shared>, rt: Arc<BackendRt>) {
    let cfg = shared.balance.health.clone();
    let uri: Uri = match format!("http://{}{}", rt.addr, cfg.path).parse() {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(backend = %rt.name, "health check URI: {e}");
            return;
        }
    };
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(cfg.timeout()));
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(1)
        .build(http);
    let mut interval = tokio::time::interval(cfg.interval());
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = rt.health_stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let mut req = Request::new(Empty::new());
        *req.uri_mut() = uri.clone();
        req.headers_mut().insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static("scaleout-lb-health"),
        );
        let ok = tokio::time::timeout(cfg.timeout(), async {
            let resp = client.request(req).await.ok()?;
            let good = (200..400).contains(&resp.status().as_u16());
            resp.into_body().collect().await.ok()?;
            Some(good)
        })
        .await
        .ok()
        .flatten()
        .unwrap_or(false);
        let now = Instant::now();
        let result = {
            let mut c = shared.control();
            let r = c.pool.observe_health(rt.id, ok, now);
            if let Ok(Some(_)) = r {
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
                    tracing::warn!(backend = %rt.name, "health check: backend is down");
                }
            }
            Ok(None) => {}
            Err(PoolError::UnknownBackend(_)) => return,
            Err(e) => tracing::warn!(backend = %rt.name, "health check: {e}"),
        }
    }
}
