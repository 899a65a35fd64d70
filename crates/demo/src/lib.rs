//! `scaleout demo`: the whole story, run for real on loopback.
//!
//! Start small and find what breaks first (act 1), scale up with a bigger envelope (2),
//! scale out with more envelopes of the same size behind the balancer (3), prove the
//! instances stateless (4), relieve the database with a cache (5), survive a SIGKILLed
//! instance (6), autoscale through a spike sized from act 1's measured capacity (7),
//! then advise with numbers. Every figure comes from real `scaleout shop` processes, the
//! real balancer (in-process, `proxy::Proxy`), and the real load generator (`load::run`).
//!
//! Instances run in CPU and memory envelopes (cgroups, via `fleet::envelope`), the way
//! containers with `resources.limits` do: without them every instance, the balancer and
//! the generator compete for the same cores, and the acts would measure that contention
//! instead of the system. The envelope sizes come from the host's cores
//! ([`fleet::envelope::Envelope::for_host`]), so the story holds on 2 cores and on 64.
//!
//! Must never: report a number it did not measure, run instances unlimited without
//! being told to (`--no-envelopes`), or leave a process running: every act owns what it
//! starts in a [`scope::Scope`] that stops and awaits it on every exit path.

pub mod acts;
mod charts;
pub mod cpu;
pub mod http;
pub mod limit;
pub mod procs;
pub mod report;
pub mod scope;

use std::path::PathBuf;
use std::sync::Arc;

use fleet::envelope::{Cgroups, DEFAULT_CGROUP_ROOT, Envelope, FleetScope};

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
    /// Run instances in cgroup envelopes (the default). `false` runs them unlimited,
    /// sharing every core, and the report says so.
    pub envelopes: bool,
    /// The unit envelope's CPU, cores; `None`: [`Envelope::for_host`].
    pub unit_cpu: Option<f64>,
    /// Memory per instance, MiB; `None`: [`Envelope::for_host`] (256).
    pub memory_mib: Option<u64>,
}

impl DemoConfig {
    /// A configuration with the defaults: every act, envelopes on, sizes from the host.
    pub fn new(exe: PathBuf, out_dir: PathBuf) -> DemoConfig {
        DemoConfig {
            exe,
            out_dir,
            quick: false,
            acts: Vec::new(),
            verbose: false,
            postgres: None,
            replicas: Vec::new(),
            envelopes: true,
            unit_cpu: None,
            memory_mib: None,
        }
    }

    /// Seconds per measurement.
    pub fn measure_s(&self) -> u64 {
        if self.quick { 1 } else { 4 }
    }

    /// Whether act `n` is selected.
    pub fn runs(&self, n: u8) -> bool {
        self.acts.is_empty() || self.acts.contains(&n)
    }

    /// Cores on this host.
    pub fn host_cores(&self) -> usize {
        cpu::host_cores()
    }

    /// The unit envelope (one instance in acts 1, 3, 6 and 7; the smallest in act 2):
    /// an eighth of the host by default, so act 3's eight instances fill it.
    pub fn unit_envelope(&self) -> Option<Envelope> {
        if !self.envelopes {
            return None;
        }
        let d = Envelope::for_host(self.host_cores());
        Some(Envelope {
            cpu: self.unit_cpu.unwrap_or(d.cpu),
            memory_mib: self.memory_mib.unwrap_or(d.memory_mib),
        })
    }

    /// Balancer worker threads: one per four cores (at least one), so the balancer
    /// grows with the host as the instances do.
    pub fn balancer_threads(&self) -> usize {
        (self.host_cores() / 4).max(1)
    }

    /// Load generator threads: one per four cores (at least one).
    pub fn generator_threads(&self) -> usize {
        (self.host_cores() / 4).max(1)
    }

    /// Checks the flags, naming the one at fault.
    pub fn validate(&self) -> Result<(), DemoError> {
        if let Some(bad) = self.acts.iter().find(|a| !(1..=8).contains(*a)) {
            return Err(DemoError::Config(format!(
                "--acts: {bad} is not an act (1-8)"
            )));
        }
        if let Some(e) = self.unit_envelope() {
            e.validate("demo envelope").map_err(|e| {
                DemoError::Config(
                    e.to_string()
                        .replace("demo envelope.cpu", "--envelope-cpu")
                        .replace("demo envelope.memory_mib", "--envelope-memory-mib"),
                )
            })?;
        }
        if !self.envelopes && (self.unit_cpu.is_some() || self.memory_mib.is_some()) {
            return Err(DemoError::Config(
                "--envelope-cpu and --envelope-memory-mib need envelopes: drop --no-envelopes"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// What can stop the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A flag is out of range (the message names it).
    #[error("{0}")]
    Config(String),
    /// Envelopes were asked for and cgroups are not usable.
    #[error("{0}")]
    Envelopes(#[from] fleet::envelope::EnvelopeError),
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

/// The cgroup parent of this run's envelopes (stale groups of dead runs removed first),
/// or `None` without envelopes. Refuses, naming `--no-envelopes`, when cgroups are not
/// writable.
fn envelope_groups(cfg: &DemoConfig) -> Result<Option<Arc<FleetScope>>, DemoError> {
    if !cfg.envelopes {
        return Ok(None);
    }
    let cg = Cgroups::detect(std::path::Path::new(DEFAULT_CGROUP_ROOT))?;
    cg.clean_stale();
    Ok(Some(Arc::new(cg.fleet_scope()?)))
}

/// Runs the selected acts and writes the report; returns it.
pub async fn run(cfg: DemoConfig) -> Result<DemoReport, DemoError> {
    cfg.validate()?;
    let groups = envelope_groups(&cfg)?;
    std::fs::create_dir_all(cfg.out_dir.join("logs"))
        .map_err(|e| DemoError::io("create report dir", e))?;
    let started = std::time::Instant::now();
    let mut r = DemoReport {
        cores: cfg.host_cores(),
        quick: cfg.quick,
        envelope: cfg.unit_envelope(),
        balancer_threads: cfg.balancer_threads(),
        generator_threads: cfg.generator_threads(),
        load_average_start: cpu::load_average(),
        ..Default::default()
    };
    let work = cfg.out_dir.join("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| DemoError::io("create work dir", e))?;
    let ctx = acts::Ctx {
        cfg: cfg.clone(),
        work,
        logs: cfg.out_dir.join("logs"),
        groups,
    };
    if cfg.runs(1) {
        r.act1 = Some(acts::knee::run(&ctx).await?);
    }
    if cfg.runs(2) {
        r.act2 = Some(acts::scale_up::run(&ctx).await?);
    }
    if cfg.runs(3) {
        r.act3 = Some(acts::scale_out::run(&ctx, r.act2.as_ref()).await?);
    }
    if cfg.runs(4) {
        r.act4 = Some(acts::stateless::run(&ctx).await?);
    }
    if cfg.runs(5) {
        r.act5 = Some(acts::cache::run(&ctx).await?);
    }
    if cfg.runs(6) {
        r.act6 = Some(acts::failure::run(&ctx).await?);
    }
    if cfg.runs(7) {
        r.act7 = Some(acts::spike::run(&ctx, r.act1.as_ref(), r.act3.as_ref()).await?);
    }
    if let Some(primary) = &cfg.postgres
        && cfg.runs(8)
    {
        r.act8 = Some(acts::replicas::run(&ctx, primary, &cfg.replicas).await?);
    }
    r.advice = acts::advice::advise(&r);
    r.elapsed_s = started.elapsed().as_secs_f64();
    r.load_average_end = cpu::load_average();
    report::write(&r, &cfg.out_dir)?;
    Ok(r)
}
