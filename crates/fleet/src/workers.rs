//! The worker fleet of `scaleout up` (`[workers]`): `shop --role worker` processes beside
//! the web fleet, in their own envelope, scaled on the job queue's backlog (KEDA's model,
//! [`policy`]) instead of on request metrics.
//!
//! [`start`] connects the queue (a bad URL fails before any worker starts), starts a
//! [`Fleet`] with no balancer (workers serve no traffic; their `/readyz` on
//! `--metrics-listen {addr}` says the queue answers) and a loop that reads the queue's
//! depth and oldest-job age every `poll_ms`, asks the policy, and sets the fleet's count
//! (zero included when `min_workers = 0`). [`WorkerFleet::stop`] stops the loop, then the
//! workers (SIGTERM: each drains its in-flight jobs; jobs it cannot finish are
//! redelivered after the visibility timeout).
//!
//! This module never touches the web fleet or the balancer, and never scales on missing
//! data (an unreadable queue holds the count).

pub mod policy;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jobs::Queue;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::FleetError;
use crate::deployment::DeploymentConfig;
use crate::envelope::Resources;
use crate::registry::NoBalancer;
use crate::supervisor::{Fleet, FleetHandle};
use policy::{BacklogPolicy, BacklogRules, BacklogSample};

/// `[workers]`: the worker fleet and its backlog autoscaler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkersConfig {
    /// Run the worker fleet (off by default: the shop confirms orders inline unless
    /// `service.args` has `--jobs queue --jobs-url URL`, which needs workers).
    pub enabled: bool,
    /// The shared queue web instances enqueue on and workers process: `redis://...`,
    /// `postgres://...` or `sqlite:PATH` (`{data_dir}` allowed). The same URL as the
    /// web instances' `--jobs-url`. Required when enabled.
    pub queue_url: String,
    /// The queue's name (the shop's `--jobs-queue`), `[a-z0-9_]`.
    pub queue: String,
    /// Workers at start (within `min_workers..=max_workers`; 0 starts none).
    pub instances: u32,
    /// Fewest workers; 0 lets the fleet scale to zero on an empty queue.
    pub min_workers: u32,
    /// Most workers.
    pub max_workers: u32,
    /// Backlog one worker is sized for: desired = ceil(jobs not done / this) (KEDA
    /// redis-streams `pendingEntriesCount`).
    pub target_jobs_per_worker: u64,
    /// At or below this backlog the trigger is inactive (KEDA `activationLagCount`):
    /// a fleet at zero stays there.
    pub activation_jobs: u64,
    /// An oldest job older than this, and still ageing, adds one worker beyond the
    /// backlog's count (0: off).
    pub max_oldest_age_ms: u64,
    /// How often the queue is read (KEDA `pollingInterval`).
    pub poll_ms: u64,
    /// Scale-down stabilisation: going down takes the highest count recommended
    /// within this window.
    pub scale_down_window_ms: u64,
    /// Inactive time before scaling to zero (KEDA `cooldownPeriod`).
    pub cooldown_ms: u64,
    /// Workers added per decision at most (0: no cap).
    pub max_step_up: u32,
    /// Jobs each worker handles at once (`--jobs-concurrency`).
    pub concurrency: usize,
    /// SIGTERM to SIGKILL: a worker drains its in-flight jobs within this.
    pub stop_grace_ms: u64,
    /// The worker command (placeholders as in `fleet.command`; must pass `{addr}` for the
    /// readiness probe). Empty: `{exe} shop --role worker --metrics-listen {addr}` with
    /// `service.db`, the queue above and `service.args`.
    pub command: Vec<String>,
    /// `[workers.resources]`: each worker's envelope (cgroups), apart from the web
    /// instances'. `--no-envelopes` turns both off.
    pub resources: Resources,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            queue_url: String::new(),
            queue: "shop".into(),
            instances: 1,
            min_workers: 0,
            max_workers: 8,
            target_jobs_per_worker: 100,
            activation_jobs: 0,
            max_oldest_age_ms: 0,
            poll_ms: 1_000,
            scale_down_window_ms: 30_000,
            cooldown_ms: 30_000,
            max_step_up: 0,
            concurrency: 8,
            stop_grace_ms: 15_000,
            command: Vec::new(),
            resources: Resources::default(),
        }
    }
}

fn bad(field: &str, why: impl Into<String>) -> FleetError {
    FleetError::Config {
        field: format!("workers.{field}"),
        reason: why.into(),
    }
}

impl WorkersConfig {
    /// Checks every field, naming the first bad one (`workers.max_workers`, ...).
    pub fn validate(&self) -> Result<(), FleetError> {
        if self.enabled && self.queue_url.trim().is_empty() {
            return Err(bad(
                "queue_url",
                "required when workers are enabled (the web instances' --jobs-url)",
            ));
        }
        if !self.queue_url.is_empty()
            && !["redis://", "postgres://", "postgresql://", "sqlite:"]
                .iter()
                .any(|p| self.queue_url.starts_with(p))
        {
            return Err(bad(
                "queue_url",
                "expected redis://, postgres:// or sqlite:",
            ));
        }
        jobs::validate_ident("queue", &self.queue, 40).map_err(|e| bad("queue", e.to_string()))?;
        let max = crate::config::MAX_INSTANCES;
        if self.max_workers == 0 || self.max_workers > max {
            return Err(bad("max_workers", format!("must be in 1..={max}")));
        }
        if self.min_workers > self.max_workers {
            return Err(bad("min_workers", "must be <= max_workers"));
        }
        if self.instances < self.min_workers || self.instances > self.max_workers {
            return Err(bad("instances", "must be within min_workers..=max_workers"));
        }
        if self.target_jobs_per_worker == 0 {
            return Err(bad("target_jobs_per_worker", "must be > 0"));
        }
        if !(100..=600_000).contains(&self.poll_ms) {
            return Err(bad("poll_ms", "must be in 100..=600000"));
        }
        for (field, v) in [
            ("scale_down_window_ms", self.scale_down_window_ms),
            ("cooldown_ms", self.cooldown_ms),
            ("max_oldest_age_ms", self.max_oldest_age_ms),
        ] {
            if v > 86_400_000 {
                return Err(bad(field, "must be <= 86400000 (1 day)"));
            }
        }
        if self.concurrency == 0 || self.concurrency > 10_000 {
            return Err(bad("concurrency", "must be in 1..=10000"));
        }
        if self.stop_grace_ms > 600_000 {
            return Err(bad("stop_grace_ms", "must be <= 600000"));
        }
        if let Some(first) = self.command.first()
            && first.trim().is_empty()
        {
            return Err(bad("command", "the program (first word) is empty"));
        }
        if !self.command.is_empty()
            && !self
                .command
                .iter()
                .any(|w| w.contains("{addr}") || w.contains("{port}"))
        {
            return Err(bad(
                "command",
                "must pass the worker its address ({addr} or {port}) for the readiness probe",
            ));
        }
        self.resources
            .envelope(crate::process::available_cpus())
            .validate("workers.resources")
    }

    /// The policy's rules.
    pub fn rules(&self) -> BacklogRules {
        BacklogRules {
            min_workers: self.min_workers,
            max_workers: self.max_workers,
            target_jobs_per_worker: self.target_jobs_per_worker,
            activation_jobs: self.activation_jobs,
            max_oldest_age_ms: self.max_oldest_age_ms,
            scale_down_window: Duration::from_millis(self.scale_down_window_ms),
            cooldown: Duration::from_millis(self.cooldown_ms),
            max_step_up: self.max_step_up,
        }
    }

    /// The worker command template: `command`, or the shop worker on `db`, with
    /// `{data_dir}` in `db` and the queue URL already replaced by `data_dir` (the web
    /// fleet's, which holds the shop's files; workers keep logs in a directory of their
    /// own).
    pub fn worker_command(
        &self,
        db: &str,
        shop_options: &[String],
        data_dir: &Path,
    ) -> Vec<String> {
        if !self.command.is_empty() {
            return self.command.clone();
        }
        let dir = data_dir.display().to_string();
        let mut argv: Vec<String> = [
            "{exe}",
            "shop",
            "--role",
            "worker",
            "--metrics-listen",
            "{addr}",
            "--instance-id",
            "worker-{id}",
            "--db",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        argv.push(db.replace("{data_dir}", &dir));
        argv.extend([
            "--jobs-url".to_string(),
            self.queue_url.replace("{data_dir}", &dir),
            "--jobs-queue".to_string(),
            self.queue.clone(),
            "--jobs-concurrency".to_string(),
            self.concurrency.to_string(),
        ]);
        argv.extend(shop_options.iter().cloned());
        argv
    }
}

/// What the worker autoscaler last saw and did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkersStatus {
    /// The last backlog read (None until the first read, or while the queue is down).
    pub backlog: Option<BacklogSample>,
    /// The count last set.
    pub desired: u32,
    /// Why.
    pub reason: String,
    /// Decisions that changed the count.
    pub changes: u64,
    /// Polls on which the queue could not be read.
    pub unavailable: u64,
}

/// One status line of the worker fleet.
pub fn status_line(ready: usize, active: usize, s: &WorkersStatus) -> String {
    let backlog = match s.backlog {
        Some(b) => format!(
            "backlog {} | oldest {}",
            b.depth,
            b.oldest_age_ms
                .map_or("-".to_string(), |ms| format!("{:.1} s", ms as f64 / 1000.0))
        ),
        None => "backlog -".to_string(),
    };
    format!(
        "[workers] {ready}/{active} ready (desired {}) | {backlog} | decision {}: {}",
        s.desired, s.desired, s.reason
    )
}

/// A running worker fleet with its autoscaler; stop it with [`WorkerFleet::stop`].
#[derive(Debug)]
pub struct WorkerFleet {
    handle: FleetHandle,
    status: watch::Receiver<WorkersStatus>,
    scaler_stop: CancellationToken,
    fleet_stop: CancellationToken,
    scaler: JoinHandle<()>,
    fleet: JoinHandle<()>,
}

impl WorkerFleet {
    /// The fleet's handle.
    pub fn handle(&self) -> &FleetHandle {
        &self.handle
    }

    /// The autoscaler's latest status.
    pub fn status(&self) -> WorkersStatus {
        self.status.borrow().clone()
    }

    /// Stops the autoscaler, then every worker (SIGTERM; SIGKILL after `stop_grace_ms`).
    pub async fn stop(self) {
        self.scaler_stop.cancel();
        let _ = self.scaler.await;
        self.fleet_stop.cancel();
        let _ = self.fleet.await;
    }
}

/// The worker fleet's supervisor settings: the web fleet's, with the worker command, its
/// own data directory, envelope, count and stop grace, and no CPU pinning.
pub fn worker_fleet_config(cfg: &DeploymentConfig, main_data_dir: &Path) -> crate::config::Config {
    let w = &cfg.workers;
    let mut f = cfg.resolved_fleet();
    f.command = w.worker_command(&cfg.service.db, &cfg.service.shop_options(), main_data_dir);
    f.data_dir = main_data_dir.join("workers");
    // The supervisor starts with at least one; `start` sets the real count (maybe 0).
    f.instances = w.instances.max(1);
    f.readiness_path = "/readyz".into();
    f.drain_grace_ms = 0;
    f.stop_grace_ms = w.stop_grace_ms;
    f.cpus_per_instance = 0;
    f.cpu_sets = Vec::new();
    let enforce = w.resources.enforce && cfg.fleet.resources.enforce;
    f.resources = Resources {
        enforce,
        ..w.resources.clone()
    };
    f
}

/// Starts the worker fleet and its autoscaler when `[workers] enabled`; `None` otherwise.
/// `status_every` prints a status line to stderr that often.
pub async fn start(
    cfg: &DeploymentConfig,
    exe: &Path,
    status_every: Option<Duration>,
) -> Result<Option<WorkerFleet>, FleetError> {
    let w = &cfg.workers;
    if !w.enabled {
        return Ok(None);
    }
    w.validate()?;
    let main_dir = absolute_dir(&cfg.fleet.data_dir)?;
    let url = w
        .queue_url
        .replace("{data_dir}", &main_dir.display().to_string());
    let queue = jobs::AnyQueue::connect(
        &url,
        jobs::QueueConfig {
            name: w.queue.clone(),
            pool_size: 1,
            ..jobs::QueueConfig::default()
        },
    )
    .await
    .map_err(|e| bad("queue_url", e.to_string()))?;
    let fcfg = worker_fleet_config(cfg, &main_dir);
    let (fleet, handle) = Fleet::new(fcfg.clone(), exe.to_path_buf(), NoBalancer)?;
    let handle = handle.with_min(w.min_workers.min(1));
    handle.set_count(w.instances);
    eprintln!(
        "scaleout up: worker fleet of `{}` on the {} queue `{}`: {} worker(s) ({}..={}, {} jobs per worker){}",
        fcfg.command_template().join(" "),
        queue.backend(),
        w.queue,
        w.instances,
        w.min_workers,
        w.max_workers,
        w.target_jobs_per_worker,
        match handle.envelope() {
            Some(e) => format!(", envelope {e} each"),
            None => ", no envelopes".to_string(),
        }
    );
    let fleet_stop = CancellationToken::new();
    let scaler_stop = CancellationToken::new();
    let fleet_task = tokio::spawn(fleet.run(fleet_stop.clone()));
    let (tx, rx) = watch::channel(WorkersStatus {
        desired: w.instances,
        reason: "initial count".into(),
        ..WorkersStatus::default()
    });
    let scaler = tokio::spawn(run_scaler(
        queue,
        handle.clone(),
        BacklogPolicy::new(w.rules()),
        Duration::from_millis(w.poll_ms),
        status_every,
        tx,
        scaler_stop.clone(),
    ));
    Ok(Some(WorkerFleet {
        handle,
        status: rx,
        scaler_stop,
        fleet_stop,
        scaler,
        fleet: fleet_task,
    }))
}

fn absolute_dir(dir: &Path) -> Result<PathBuf, FleetError> {
    std::fs::create_dir_all(dir)
        .and_then(|()| dir.canonicalize())
        .map_err(|e| FleetError::Config {
            field: "fleet.data_dir".into(),
            reason: format!("{}: {e}", dir.display()),
        })
}

/// Reads the backlog every `poll`, decides, applies; prints a status line every
/// `status_every`.
async fn run_scaler(
    queue: jobs::AnyQueue,
    fleet: FleetHandle,
    mut policy: BacklogPolicy,
    poll: Duration,
    status_every: Option<Duration>,
    status: watch::Sender<WorkersStatus>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_print: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Bounded by the queue's op_timeout_ms.
        let sample = match queue.stats().await {
            Ok(s) => Some(BacklogSample {
                depth: s.depth(),
                oldest_age_ms: s.oldest_age_ms,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "reading the job queue failed; holding the worker count");
                None
            }
        };
        let current = fleet.desired().count;
        let now = Instant::now();
        let d = policy.decide(now, current, sample);
        if d.desired != current {
            fleet.set_count(d.desired);
            tracing::info!(from = current, to = d.desired, reason = %d.reason, "worker fleet scaled");
        }
        let applied = fleet.desired().count;
        status.send_modify(|s| {
            if sample.is_some() {
                s.backlog = sample;
            } else {
                s.backlog = None;
                s.unavailable += 1;
            }
            if applied != s.desired {
                s.changes += 1;
            }
            s.desired = applied;
            s.reason = d.reason.clone();
        });
        if let Some(every) = status_every
            && last_print.is_none_or(|t| now.duration_since(t) >= every)
        {
            last_print = Some(now);
            let f = fleet.status();
            eprintln!("{}", status_line(f.ready(), f.active(), &status.borrow()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_disabled() {
        let w = WorkersConfig::default();
        w.validate().unwrap();
        assert!(!w.enabled);
    }

    #[test]
    fn bad_fields_are_named() {
        let cases: Vec<(WorkersConfig, &str)> = vec![
            (
                WorkersConfig {
                    enabled: true,
                    ..Default::default()
                },
                "workers.queue_url",
            ),
            (
                WorkersConfig {
                    queue_url: "amqp://x".into(),
                    ..Default::default()
                },
                "workers.queue_url",
            ),
            (
                WorkersConfig {
                    queue: "Bad Name".into(),
                    ..Default::default()
                },
                "workers.queue",
            ),
            (
                WorkersConfig {
                    min_workers: 3,
                    max_workers: 2,
                    instances: 2,
                    ..Default::default()
                },
                "workers.min_workers",
            ),
            (
                WorkersConfig {
                    instances: 9,
                    ..Default::default()
                },
                "workers.instances",
            ),
            (
                WorkersConfig {
                    target_jobs_per_worker: 0,
                    ..Default::default()
                },
                "workers.target_jobs_per_worker",
            ),
            (
                WorkersConfig {
                    command: vec!["/bin/worker".into()],
                    ..Default::default()
                },
                "workers.command",
            ),
            (
                WorkersConfig {
                    resources: Resources {
                        cpu: Some(0.0),
                        ..Resources::default()
                    },
                    ..Default::default()
                },
                "workers.resources.cpu",
            ),
        ];
        for (w, field) in cases {
            let e = w.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn worker_command_runs_the_shop_worker_on_the_queue() {
        let w = WorkersConfig {
            enabled: true,
            queue_url: "sqlite:{data_dir}/jobs.db".into(),
            queue: "orders".into(),
            concurrency: 4,
            ..Default::default()
        };
        let argv = w.worker_command(
            "sqlite:{data_dir}/shop.db",
            &["--shard-map".into(), "/etc/shards.toml".into()],
            Path::new("/srv/data"),
        );
        let s = argv.join(" ");
        assert!(
            s.starts_with("{exe} shop --role worker --metrics-listen {addr}"),
            "{s}"
        );
        for part in [
            "--db sqlite:/srv/data/shop.db",
            "--jobs-url sqlite:/srv/data/jobs.db",
            "--jobs-queue orders",
            "--jobs-concurrency 4",
            "--shard-map /etc/shards.toml",
        ] {
            assert!(s.contains(part), "{part} in {s}");
        }
    }

    #[test]
    fn worker_fleet_keeps_its_own_dir_envelope_and_no_pinning() {
        let mut cfg = DeploymentConfig::default();
        cfg.fleet.cpus_per_instance = 1;
        cfg.fleet.resources.enforce = false;
        cfg.workers = WorkersConfig {
            enabled: true,
            queue_url: "redis://127.0.0.1:6379".into(),
            instances: 0,
            resources: Resources {
                cpu: Some(0.5),
                memory_mib: Some(128),
                ..Resources::default()
            },
            ..Default::default()
        };
        let f = worker_fleet_config(&cfg, Path::new("/srv/d"));
        assert_eq!(f.data_dir, Path::new("/srv/d/workers"));
        assert_eq!(
            f.instances, 1,
            "the supervisor starts from one; start() sets zero"
        );
        assert_eq!(f.cpus_per_instance, 0);
        assert_eq!(f.resources.cpu, Some(0.5));
        assert!(
            !f.resources.enforce,
            "--no-envelopes turns both fleets' off"
        );
        assert_eq!(
            f.command[2..4],
            ["--role".to_string(), "worker".to_string()]
        );
    }

    #[test]
    fn status_line_shows_backlog_and_reason() {
        let s = WorkersStatus {
            backlog: Some(BacklogSample {
                depth: 420,
                oldest_age_ms: Some(1_500),
            }),
            desired: 5,
            reason: "backlog 420 / 100 per worker = 5".into(),
            changes: 2,
            unavailable: 0,
        };
        let line = status_line(3, 5, &s);
        assert!(
            line.contains("[workers] 3/5 ready (desired 5) | backlog 420 | oldest 1.5 s"),
            "{line}"
        );
        assert!(line.contains("decision 5: backlog 420"), "{line}");
    }
}
