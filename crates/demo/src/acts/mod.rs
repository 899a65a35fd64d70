//! The acts of the demo, one file each, each a real measurement with real processes.
//!
//! Every act runs inside [`crate::scope::scoped`]: instances, balancers, fleets and
//! autoscalers it starts are stopped and awaited when it ends, whatever the exit path.
//! Every throughput figure comes with the CPU each part used ([`crate::cpu`]) and the
//! resource that limited it ([`crate::limit`]), because on one host the instances, the
//! balancer and the load generator share the same cores.

pub mod advice;
pub mod cache;
pub mod failure;
pub mod knee;
pub mod replicas;
pub mod scale_out;
pub mod scale_up;
pub mod spike;
pub mod stateless;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleet::envelope::{Envelope, FleetScope};
use load::RequestSpec;
use proxy::{BackendSpec, ProxyHandle, StrategyKind};
use tokio_util::sync::CancellationToken;

use crate::cpu::{self, CpuUse};
use crate::limit::{self, Limit};
use crate::procs::{self, Instance, ShopSpec};
use crate::report::Run;
use crate::scope::Scope;
use crate::{DemoConfig, DemoError, http};

/// The demo's latency objective: p99 under this many milliseconds. Act 1 reads its knee
/// against it and act 7 measures the time to get back under it. A CFS quota throttles a
/// saturated envelope for most of each 100 ms period, so a p99 past this bound means
/// queueing behind an exhausted envelope, not a slow request.
pub const SLO_P99_MS: f64 = 100.0;

/// Shared by the acts.
#[derive(Debug)]
pub struct Ctx {
    /// The run's configuration.
    pub cfg: DemoConfig,
    /// Scratch space (SQLite files).
    pub work: PathBuf,
    /// Instance logs.
    pub logs: PathBuf,
    /// The cgroup parent of this run's envelopes; `None` without envelopes.
    pub groups: Option<Arc<FleetScope>>,
}

impl Ctx {
    pub(crate) fn say(&self, msg: &str) {
        if self.cfg.verbose {
            eprintln!("demo: {msg}");
        }
    }

    /// A shop instance on `db_file` in `envelope` (one Tokio worker per started core of
    /// the envelope; all cores without one).
    pub(crate) fn shop(
        &self,
        id: &str,
        db_file: &str,
        envelope: Option<Envelope>,
        extra: &[&str],
    ) -> ShopSpec {
        let workers = match envelope {
            Some(e) => (e.cpu.ceil() as usize).max(1),
            None => self.cfg.host_cores(),
        };
        ShopSpec {
            exe: self.cfg.exe.clone(),
            id: id.to_string(),
            db: format!("sqlite:{}", self.work.join(db_file).display()),
            workers,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            envelope,
        }
    }

    /// The unit envelope (acts 1, 3, 7; the smallest of act 2), or none.
    pub(crate) fn unit(&self) -> Option<Envelope> {
        self.cfg.unit_envelope()
    }

    pub(crate) fn secs(&self) -> Duration {
        Duration::from_secs(self.cfg.measure_s())
    }
}

/// The read mix most acts drive: product pages by Zipf popularity.
pub(crate) fn product_reads() -> Vec<RequestSpec> {
    vec![RequestSpec::get("/products/{product_id}")]
}

/// Catalog pages by category, the most popular categories most often.
pub(crate) fn catalog_reads() -> Vec<RequestSpec> {
    const CATS: [&str; 10] = [
        "books", "music", "garden", "toys", "kitchen", "sports", "tools", "games", "office", "pets",
    ];
    CATS.iter()
        .enumerate()
        .map(|(i, c)| RequestSpec {
            weight: (100 / (i as u32 + 1)).max(1),
            ..RequestSpec::get(&format!("/catalog?category={c}"))
        })
        .collect()
}

/// One closed-loop measurement against `addr`.
pub(crate) async fn closed(
    ctx: &Ctx,
    addr: SocketAddr,
    conns: usize,
    dur: Duration,
    reqs: Vec<RequestSpec>,
) -> Result<load::Report, DemoError> {
    let mut cfg = load::RunConfig::closed_loop(&format!("http://{addr}/"), conns, dur);
    cfg.requests = reqs;
    cfg.threads = ctx.cfg.generator_threads();
    cfg.timeout = Duration::from_secs(5);
    Ok(load::run(cfg, CancellationToken::new()).await?)
}

/// What one measured configuration used and what limited it.
#[derive(Debug, Clone)]
pub(crate) struct Measured {
    pub report: load::Report,
    pub cpu: CpuUse,
    pub limit: Limit,
}

impl Measured {
    /// As a report row.
    pub(crate) fn run(&self, label: String, n: usize, envelope: Option<Envelope>) -> Run {
        Run {
            label,
            n,
            envelope,
            throughput_rps: self.report.achieved_rps,
            p50_ms: self.report.p50_ms,
            p99_ms: self.report.p99_ms,
            errors: self.report.errors.total,
            limit_text: self.limit.text(&self.cpu),
            cpu: self.cpu.clone(),
            limit: self.limit.clone(),
        }
    }
}

/// Runs `load` while watching the CPU of `insts`, the balancer and the generator.
pub(crate) async fn measure<F>(
    ctx: &Ctx,
    insts: &[&Instance],
    balancer: bool,
    load: F,
) -> Result<Measured, DemoError>
where
    F: std::future::Future<Output = Result<load::Report, DemoError>>,
{
    let allotted: Option<f64> = insts
        .iter()
        .map(|i| i.envelope.map(|e| e.cpu))
        .sum::<Option<f64>>();
    let before = cpu::sample(insts);
    let report = load.await?;
    let cpu = cpu::sample(insts).since(&before, ctx.cfg.host_cores());
    let limit = limit::limit(
        &cpu,
        allotted,
        if balancer {
            ctx.cfg.balancer_threads()
        } else {
            0
        },
        ctx.cfg.generator_threads(),
    );
    Ok(Measured { report, cpu, limit })
}

pub(crate) async fn metrics(addr: SocketAddr) -> String {
    http::request(addr, "GET", "/metrics", &[], None)
        .await
        .map(|r| r.body)
        .unwrap_or_default()
}

/// Starts the in-process balancer with `tweak` applied to its config, owned by `scope`.
pub(crate) async fn start_balancer(
    ctx: &Ctx,
    scope: &mut Scope,
    strategy: StrategyKind,
    tweak: impl FnOnce(&mut proxy::Config),
) -> Result<ProxyHandle, DemoError> {
    let mut c = proxy::Config {
        listen: "127.0.0.1:0".parse().expect("literal"),
        workers: ctx.cfg.balancer_threads() as u32,
        strategy,
        ..Default::default()
    };
    c.slow_start.window_ms = 0;
    tweak(&mut c);
    let p = proxy::Proxy::bind(c).await?;
    let h = p.handle();
    let stop = CancellationToken::new();
    let run = p.run(stop.clone());
    scope.spawn("balancer", stop, async move {
        if let Err(e) = run.await {
            tracing::warn!("balancer: {e}");
        }
    });
    Ok(h)
}

/// Adds `insts` to the balancer and waits (bounded) until every one is eligible.
pub(crate) async fn admit(h: &ProxyHandle, insts: &[&Instance]) -> Result<(), DemoError> {
    for i in insts {
        h.add_backend(BackendSpec {
            name: i.id.clone(),
            addr: i.addr.to_string(),
            weight: 1,
        })?;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let b = h.backends();
        if insts
            .iter()
            .all(|i| b.iter().any(|s| s.name == i.id && s.eligible))
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(DemoError::Step(
                "instances not admitted by the balancer within 15 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Ctx {
    /// Starts one instance owned by `scope` (on `addr`, else a free port).
    pub(crate) async fn start(
        &self,
        scope: &mut Scope,
        spec: &ShopSpec,
        addr: Option<SocketAddr>,
    ) -> Result<Instance, DemoError> {
        procs::start_shop(scope, self.groups.as_deref(), spec, addr, &self.logs).await
    }

    /// Starts every instance of `specs`, owned by `scope`.
    pub(crate) async fn start_all(
        &self,
        scope: &mut Scope,
        specs: &[ShopSpec],
    ) -> Result<Vec<Instance>, DemoError> {
        let mut out = Vec::with_capacity(specs.len());
        for s in specs {
            out.push(self.start(scope, s, None).await?);
        }
        Ok(out)
    }
}
