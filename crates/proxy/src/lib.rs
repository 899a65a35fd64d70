//! The HTTP load balancer: the async shell around the pure `balance` core.
//!
//! [`Proxy::bind`] validates the [`Config`] and binds the listeners; [`Proxy::run`] serves
//! until the shutdown token is cancelled, then drains in-flight requests within the grace
//! period. A [`ProxyHandle`] changes the backend set at run time (the admin API and the
//! fleet supervisor use it) and reads metrics.
//!
//! Architecture invariants: the request path reads an immutable selector snapshot published
//! through `ArcSwap` and never holds a lock across `.await`; snapshots are rebuilt off the
//! request path whenever the pool changes. Each worker thread has its own single-threaded
//! runtime, listener (`SO_REUSEPORT`) and backend connection pool.
//!
//! ```no_run
//! # async fn demo() -> Result<(), proxy::ProxyError> {
//! let mut config = proxy::Config::default();
//! config.listen = "127.0.0.1:0".parse().unwrap();
//! let proxy = proxy::Proxy::bind(config).await?;
//! let handle = proxy.handle();
//! handle.add_backend(proxy::BackendSpec { name: "a".into(), addr: "127.0.0.1:9001".into(), weight: 1 })?;
//! let stop = tokio_util::sync::CancellationToken::new();
//! proxy.run(stop).await
//! # }
//! ```

mod addr_policy;
mod admin;
mod admission;
mod body;
pub mod config;
pub mod error;
mod forward;
pub mod h1;
pub mod headers;
mod health;
pub mod metrics;
mod server;
mod shared;
pub mod testing_backend;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use balance::{AdminState, BackendSpec, HealthStatus, StrategyKind};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use config::{Config, ConfigError, UpstreamProtocol, parse_toml};
pub use error::{ForwardError, ProxyError, Side};
pub use metrics::{LatencyHistogram, ProxyMetrics};

use shared::Shared;

/// Extra admin content from the process that embeds the balancer (in `scaleout up`, the
/// fleet: per-instance resource envelopes). Called on admin requests only, never on the
/// request path; implementations must be cheap and bounded (a few files read per live
/// instance).
pub trait AdminExtension: Send + Sync + 'static {
    /// Prometheus text appended to `GET /metrics` (labels must be bounded).
    fn prometheus(&self) -> String;
    /// The JSON document served at `GET /fleet`.
    fn json(&self) -> serde_json::Value;
}

/// A bound, not yet running balancer.
pub struct Proxy {
    shared: Arc<Shared>,
    listeners: Vec<std::net::TcpListener>,
    admin: Option<tokio::net::TcpListener>,
    listen_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("listen_addr", &self.listen_addr)
            .field("admin_addr", &self.admin_addr)
            .finish()
    }
}

impl Proxy {
    /// Validates `config`, binds the public listener(s) and the admin listener, and adds the
    /// configured backends (at full weight). Must be called inside a tokio runtime: health
    /// checkers, the control loop and the admin API run on it.
    pub async fn bind(config: Config) -> Result<Proxy, ProxyError> {
        config.validate()?;
        let listeners =
            server::bind_listeners(config.listen, config.workers as usize).map_err(|source| {
                ProxyError::Bind {
                    what: "public",
                    addr: config.listen,
                    source,
                }
            })?;
        let listen_addr = listeners[0]
            .local_addr()
            .map_err(|source| ProxyError::Bind {
                what: "public",
                addr: config.listen,
                source,
            })?;
        let admin =
            match config.admin.listen {
                Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(
                    |source| ProxyError::Bind {
                        what: "admin",
                        addr,
                        source,
                    },
                )?),
                None => None,
            };
        let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
        // A configured backend that is this balancer would make every request loop.
        for (i, b) in config.backends.iter().enumerate() {
            let Ok(target) = b.addr.parse::<SocketAddr>() else {
                continue;
            };
            let own = std::iter::once(listen_addr).chain(admin_addr);
            if let Some(own) = own.into_iter().find(|&o| addr_policy::reaches(o, target)) {
                return Err(ConfigError {
                    field: format!("balancer.backends[{i}].addr"),
                    message: format!(
                        "{target} is this balancer's own listener ({own}): requests would loop"
                    ),
                }
                .into());
            }
        }
        let specs = config.backend_specs();
        let shared = Shared::new(config, tokio::runtime::Handle::current());
        for spec in specs {
            shared.add_backend(spec, false)?;
        }
        Ok(Proxy {
            shared,
            listeners,
            admin,
            listen_addr,
            admin_addr,
        })
    }

    /// A handle for run-time changes and metrics; valid before and during `run`.
    pub fn handle(&self) -> ProxyHandle {
        ProxyHandle {
            shared: self.shared.clone(),
            listen_addr: self.listen_addr,
            admin_addr: self.admin_addr,
        }
    }

    /// Serves until `shutdown` is cancelled: then stops accepting, lets in-flight requests
    /// finish within `timeouts.shutdown_grace_ms`, and returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ProxyError> {
        let shared = self.shared;
        let control = tokio::spawn(shared.clone().control_loop());
        let admin = self.admin.map(|l| {
            tokio::spawn(admin::serve(
                shared.clone(),
                l,
                self.listen_addr,
                shutdown.clone(),
            ))
        });
        let mut done = Vec::new();
        for (i, listener) in self.listeners.into_iter().enumerate() {
            let (tx, rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
            let shared = shared.clone();
            let worker_shutdown = shutdown.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("lb-worker-{i}"))
                .spawn(move || {
                    let result = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())
                        .and_then(|rt| {
                            rt.block_on(server::run_worker(shared, listener, worker_shutdown))
                                .map_err(|e| e.to_string())
                        });
                    let _ = tx.send(result);
                });
            if let Err(e) = spawned {
                shutdown.cancel();
                return Err(ProxyError::Worker(e.to_string()));
            }
            done.push(rx);
        }
        match self.admin_addr {
            Some(admin) => {
                tracing::info!(listen = %self.listen_addr, %admin, workers = done.len(), "balancer running")
            }
            None => {
                tracing::info!(listen = %self.listen_addr, admin = "off", workers = done.len(), "balancer running")
            }
        }
        let mut first_err = None;
        for rx in done {
            match rx.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => first_err = first_err.or(Some(e)),
                Err(_) => first_err = first_err.or(Some("worker thread panicked".to_string())),
            }
        }
        shared.stop.cancel();
        if let Some(a) = admin {
            let _ = a.await;
        }
        let _ = control.await;
        tracing::info!("balancer stopped");
        match first_err {
            Some(e) => Err(ProxyError::Worker(e)),
            None => Ok(()),
        }
    }
}

/// One backend as listed by [`ProxyHandle::backends`] and the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct BackendStatus {
    /// Unique name.
    pub name: String,
    /// `host:port`.
    pub addr: String,
    /// Configured weight.
    pub weight: u32,
    /// Weight after slow start.
    pub effective_weight: f64,
    /// Operator intent: active, draining, removed (leaving once idle).
    pub admin: AdminState,
    /// Active health-check status.
    pub health: HealthStatus,
    /// Whether passive outlier detection has it ejected now.
    pub ejected: bool,
    /// Whether new requests may go to it now.
    pub eligible: bool,
    /// Whether its weight is still ramping up.
    pub slow_start: bool,
    /// Requests in flight.
    pub in_flight: u64,
    /// Attempts sent to it since it was added.
    pub requests_total: u64,
    /// Failed attempts (transport errors, timeouts, 5xx).
    pub errors_total: u64,
    /// Responses by class `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub responses_by_class: [u64; 5],
    /// Passive ejections so far.
    pub ejections_total: u64,
    /// Health transitions to unhealthy so far.
    pub health_down_total: u64,
    /// Peak-EWMA latency estimate, milliseconds.
    pub latency_ewma_ms: f64,
}

/// A cloneable handle on a bound or running [`Proxy`].
#[derive(Clone)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
    listen_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for ProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyHandle")
            .field("listen_addr", &self.listen_addr)
            .finish()
    }
}

impl ProxyHandle {
    /// The public listener's address (port resolved when 0 was asked).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// The admin listener's address, if configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Adds a backend; its weight ramps up over the slow-start window.
    pub fn add_backend(&self, spec: BackendSpec) -> Result<(), ProxyError> {
        self.shared.add_backend(spec, true).map(|_| ())
    }

    /// Stops new requests to `name`, waits until its in-flight requests finish or `grace`
    /// passes, then removes it. Returns how many requests were still in flight at removal.
    pub async fn drain_backend(&self, name: &str, grace: Duration) -> Result<u64, ProxyError> {
        let load = self.shared.drain(name)?;
        let deadline = Instant::now() + grace;
        while load.in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let left = load.in_flight();
        self.shared.remove(name)?;
        Ok(left)
    }

    /// Marks `name` draining (no new requests) without removing it.
    pub fn drain_only(&self, name: &str) -> Result<(), ProxyError> {
        self.shared.drain(name).map(|_| ())
    }

    /// Makes a draining backend active again (with a fresh slow start).
    pub fn activate_backend(&self, name: &str) -> Result<(), ProxyError> {
        self.shared.activate(name)
    }

    /// Removes `name` now: no new requests; it leaves once its in-flight requests end.
    pub fn remove_backend(&self, name: &str) -> Result<(), ProxyError> {
        self.shared.remove(name)
    }

    /// Changes `name`'s weight (1..=1000).
    pub fn set_weight(&self, name: &str, weight: u32) -> Result<(), ProxyError> {
        self.shared.set_weight(name, weight)
    }

    /// Every listed backend with its state and counters.
    pub fn backends(&self) -> Vec<BackendStatus> {
        let now = Instant::now();
        let c = self.shared.control();
        c.pool
            .statuses(now)
            .into_iter()
            .map(|s| {
                let rt = c.rts.get(&s.id);
                BackendStatus {
                    responses_by_class: rt
                        .map(|r| r.counters.responses.snapshot())
                        .unwrap_or_default(),
                    ejections_total: rt
                        .map(|r| {
                            r.counters
                                .ejections_total
                                .load(std::sync::atomic::Ordering::Relaxed)
                        })
                        .unwrap_or(0),
                    health_down_total: rt
                        .map(|r| {
                            r.counters
                                .health_down_total
                                .load(std::sync::atomic::Ordering::Relaxed)
                        })
                        .unwrap_or(0),
                    name: s.name,
                    addr: s.addr,
                    weight: s.weight,
                    effective_weight: s.effective_weight,
                    admin: s.admin,
                    health: s.health,
                    ejected: s.ejected,
                    eligible: s.eligible,
                    slow_start: s.slow_start,
                    in_flight: s.in_flight,
                    requests_total: s.requests_total,
                    errors_total: s.failures_total,
                    latency_ewma_ms: s.latency_ewma_ms,
                }
            })
            .collect()
    }

    /// Cumulative proxy-wide metrics (diff two snapshots for rates and quantiles).
    pub fn metrics(&self) -> ProxyMetrics {
        self.shared.counters.snapshot()
    }

    /// Metrics in the Prometheus text format (what `GET /metrics` on the admin API serves),
    /// followed by the admin extension's, if one is set.
    pub fn prometheus(&self) -> String {
        let mut text = admin::render_metrics(&self.shared);
        if let Some(ext) = self.admin_extension() {
            text.push_str(&ext.prometheus());
        }
        text
    }

    /// Sets the extra admin content (`GET /fleet`, more `/metrics`); replaces any earlier.
    pub fn set_admin_extension(&self, ext: Arc<dyn AdminExtension>) {
        *self
            .shared
            .admin_ext
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(ext);
    }

    /// The extra admin content, if set.
    pub fn admin_extension(&self) -> Option<Arc<dyn AdminExtension>> {
        self.shared
            .admin_ext
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
