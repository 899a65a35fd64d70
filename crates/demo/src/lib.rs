//! `scaleout demo`: the whole story, run for real on loopback.
//!
//! Start small and find what breaks first (act 1), scale up (2), scale out behind the
//! balancer (3), prove the instances stateless (4), relieve the database with a cache (5),
//! survive a SIGKILLed instance (6), autoscale through a spike (7), then advise with
//! numbers. Every figure comes from real `scaleout shop` processes, the real balancer
//! (in-process, `proxy::Proxy`), and the real load generator (`load::run`).
//!
//! Must never: report a number it did not measure, or leave a process running: every
//! child is killed when its guard drops, every wait is bounded.

pub mod acts;
mod charts;
pub mod http;
pub mod procs;
pub mod report;

use std::path::PathBuf;

pub use report::DemoReport;

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// The `scaleout` executable (to start `scaleout shop` instances).
    pub exe: PathBuf,
    /// Where report.md, report.json, the charts and instance logs go.
    pub out_dir: PathBuf,
    /// Short measurements (about 1 s each) for tests; the figures are noisier.
    pub quick: bool,
    /// Which acts to run (1..=8); empty means all (act 8 only with `postgres`).
    pub acts: Vec<u8>,
    /// Print progress lines to stderr.
    pub verbose: bool,
    /// PostgreSQL primary URL for the replica act (act 8), when available.
    pub postgres: Option<String>,
    /// Streaming replica URLs for act 8.
    pub replicas: Vec<String>,
}

impl DemoConfig {
    /// Seconds per measurement.
    pub fn measure_s(&self) -> u64 {
        if self.quick { 1 } else { 4 }
    }

    /// Whether act `n` is selected.
    pub fn runs(&self, n: u8) -> bool {
        self.acts.is_empty() || self.acts.contains(&n)
    }
}

/// What can stop the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// An I/O step failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A step of an act failed.
    #[error("{0}")]
    Step(String),
    /// The balancer refused its config or failed.
    #[error("balancer: {0}")]
    Proxy(#[from] proxy::ProxyError),
    /// The load generator failed.
    #[error("load generator: {0}")]
    Load(#[from] load::LoadError),
}

impl DemoError {
    pub(crate) fn io(what: &str, source: std::io::Error) -> DemoError {
        DemoError::Io {
            what: what.to_string(),
            source,
        }
    }
}

/// Runs the selected acts and writes the report; returns it.
pub async fn run(cfg: DemoConfig) -> Result<DemoReport, DemoError> {
    std::fs::create_dir_all(cfg.out_dir.join("logs"))
        .map_err(|e| DemoError::io("create report dir", e))?;
    let started = std::time::Instant::now();
    let mut r = DemoReport {
        cores: procs::cores(),
        quick: cfg.quick,
        ..Default::default()
    };
    let work = cfg.out_dir.join("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| DemoError::io("create work dir", e))?;
    let ctx = acts::Ctx {
        cfg: cfg.clone(),
        work,
        logs: cfg.out_dir.join("logs"),
    };
    if cfg.runs(1) {
        r.act1 = Some(acts::act1_knee(&ctx).await?);
    }
    if cfg.runs(2) {
        r.act2 = Some(acts::act2_scale_up(&ctx).await?);
    }
    if cfg.runs(3) {
        r.act3 = Some(acts::act3_scale_out(&ctx).await?);
    }
    if cfg.runs(4) {
        r.act4 = Some(acts::act4_stateless(&ctx).await?);
    }
    if cfg.runs(5) {
        r.act5 = Some(acts::act5_cache(&ctx).await?);
    }
    if cfg.runs(6) {
        r.act6 = Some(acts::act6_failure(&ctx).await?);
    }
    if cfg.runs(7) {
        r.act7 = Some(acts::act7_spike(&ctx).await?);
    }
    if let Some(primary) = &cfg.postgres
        && cfg.runs(8)
    {
        r.act8 = Some(acts::act8_replicas(&ctx, primary, &cfg.replicas).await?);
    }
    r.advice = acts::advise(&r);
    r.elapsed_s = started.elapsed().as_secs_f64();
    report::write(&r, &cfg.out_dir)?;
    Ok(r)
}
