//! The fleet shell: applies the planner's actions to real processes and the balancer.
//!
//! [`Fleet::run`] is the control loop: each turn it folds instance events (started, ready,
//! failed, stopped) into its observed state, asks [`crate::plan::plan`] what to do, and
//! applies the actions. Each instance lives in its own task (spawn, pin, wait ready,
//! register, serve, drain, stop). The loop never decides policy itself and never blocks:
//! every wait is bounded and every instance task ends when its retire token fires.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::FleetError;
use crate::config::{ChildOutput, Config};
use crate::envelope::{Envelope, EnvelopeStats, FleetScope, Group};
use crate::plan::{self, Action, Desired, InstanceView, Phase};
use crate::process::{self, SpawnSpec, TemplateVars};
use crate::registry::Registry;

/// Lines of a failed instance's log shown on the console with the failure.
const CRASH_LOG_LINES: usize = 6;

/// One instance as reported to operators and to the autoscaler.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceStatus {
    /// Stable id (kept across restarts).
    pub id: String,
    /// Creation order.
    pub seq: u64,
    /// Slot (used for CPU pinning).
    pub slot: usize,
    /// Template generation.
    pub generation: u64,
    /// Phase.
    pub phase: Phase,
    /// Current process id, if running.
    pub pid: Option<u32>,
    /// Current listen address.
    pub addr: Option<SocketAddr>,
    /// Cores it is pinned to.
    pub cpus: Option<Vec<usize>>,
    /// How many times it was restarted.
    pub restarts: u32,
    /// Why it last failed, if it did.
    pub last_failure: Option<String>,
    /// How many of its processes the kernel OOM-killed at the envelope's memory limit.
    pub oom_kills: u32,
}

/// A snapshot of the whole fleet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetStatus {
    /// Instances wanted.
    pub desired: u32,
    /// Template generation in force.
    pub generation: u64,
    /// Every instance the fleet knows, including retiring ones.
    pub instances: Vec<InstanceStatus>,
    /// Processes spawned since start.
    pub spawned_total: u64,
    /// Instances that exited while they should have been running.
    pub crashes_total: u64,
    /// Instances killed because they did not become ready in time.
    pub ready_timeouts_total: u64,
    /// Instances stopped after retirement.
    pub stopped_total: u64,
    /// Of those, how many needed SIGKILL.
    pub killed_total: u64,
    /// Of the crashes, how many were OOM kills at the envelope's memory limit.
    pub oom_kills_total: u64,
    /// The envelope every instance runs in; `None` when envelopes are not enforced
    /// (`--no-envelopes`): instances then run unlimited.
    pub envelope: Option<Envelope>,
    /// The last measured start-up time (spawn until ready), seconds.
    pub startup_s: Option<f64>,
    /// True once the fleet has shut down (every child stopped).
    pub shut_down: bool,
}

impl FleetStatus {
    /// Instances ready and registered.
    pub fn ready(&self) -> usize {
        self.instances
            .iter()
            .filter(|i| i.phase == Phase::Ready)
            .count()
    }
    /// Instances counting towards the desired count (not retiring).
    pub fn active(&self) -> usize {
        self.instances
            .iter()
            .filter(|i| i.phase != Phase::Retiring)
            .count()
    }
    /// Pids of every running child.
    pub fn pids(&self) -> Vec<u32> {
        self.instances.iter().filter_map(|i| i.pid).collect()
    }
}

/// The live instance groups, shared by the loop (which adds and removes them) and the
/// handle (which reads their counters).
type Groups = Arc<Mutex<BTreeMap<String, Arc<Group>>>>;

/// Controls a running fleet from outside its loop.
#[derive(Debug, Clone)]
pub struct FleetHandle {
    desired: watch::Sender<Desired>,
    status: watch::Receiver<FleetStatus>,
    /// The fewest instances `set_count` allows: 1, or 0 for a fleet that may scale to
    /// zero (the worker fleet, see [`FleetHandle::with_min`]).
    min: u32,
    max: u32,
    groups: Groups,
    envelope: Option<Envelope>,
}

impl FleetHandle {
    /// The envelope every instance runs in (`None`: not enforced).
    pub fn envelope(&self) -> Option<Envelope> {
        self.envelope
    }
    /// Reads each live instance's envelope counters (CPU used and throttled, memory,
    /// OOM kills), by instance id. Empty when envelopes are not enforced.
    pub fn envelope_stats(&self) -> BTreeMap<String, EnvelopeStats> {
        let groups: Vec<(String, Arc<Group>)> = lock(&self.groups)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // The files are read outside the lock.
        groups.into_iter().map(|(k, g)| (k, g.stats())).collect()
    }
    /// The cgroup directories of each live instance, by id (for operators and tests).
    pub fn group_dirs(&self) -> BTreeMap<String, Vec<PathBuf>> {
        lock(&self.groups)
            .iter()
            .map(|(k, g)| (k.clone(), g.dirs()))
            .collect()
    }
    /// This handle with `min` (0 or 1) as the fewest instances `set_count` allows. A
    /// fleet serving traffic keeps the default 1; a queue's worker fleet may go to 0.
    pub fn with_min(mut self, min: u32) -> Self {
        self.min = min.min(1);
        self
    }
    /// Sets the desired instance count (clamped to the handle's minimum (1 unless
    /// [`FleetHandle::with_min`]) ..= the hard maximum).
    pub fn set_count(&self, count: u32) {
        let count = count.clamp(self.min, self.max);
        self.desired.send_modify(|d| d.count = count);
    }
    /// The desired count in force.
    pub fn desired(&self) -> Desired {
        *self.desired.borrow()
    }
    /// Replaces every instance, one at a time with a surge of one.
    pub fn rolling_restart(&self) {
        self.desired.send_modify(|d| d.generation += 1);
    }
    /// The latest status.
    pub fn status(&self) -> FleetStatus {
        self.status.borrow().clone()
    }
    /// A receiver that wakes on every status change.
    pub fn subscribe(&self) -> watch::Receiver<FleetStatus> {
        self.status.clone()
    }
    /// Waits until `pred` holds for the status, or `timeout` passes.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&FleetStatus) -> bool,
    ) -> Result<FleetStatus, FleetStatus> {
        let mut rx = self.status.clone();
        let res = tokio::time::timeout(timeout, rx.wait_for(|s| pred(s))).await;
        match res {
            Ok(Ok(s)) => Ok(s.clone()),
            _ => Err(self.status()),
        }
    }
    /// True when every instance of the current generation is ready and no old one is
    /// left (a rollout is complete).
    pub fn rolled_out(status: &FleetStatus) -> bool {
        status
            .instances
            .iter()
            .all(|i| i.generation == status.generation && i.phase == Phase::Ready)
            && status.instances.len() == status.desired as usize
    }
}

/// Why an instance run ended badly.
#[derive(Debug, Clone)]
enum Failure {
    Spawn(String),
    Exited(String),
    /// Killed by the kernel at the envelope's memory limit (the exit status says SIGKILL).
    OomKilled {
        status: String,
        limit_mib: u64,
    },
    ReadyTimeout,
    Register(String),
}

/// What instance tasks tell the loop. `run` identifies the incarnation, so events of a
/// process that was already replaced are ignored.
#[derive(Debug)]
enum Event {
    Started {
        id: String,
        run: u64,
        pid: u32,
    },
    Ready {
        id: String,
        run: u64,
    },
    Failed {
        id: String,
        run: u64,
        failure: Failure,
    },
    Stopped {
        id: String,
        run: u64,
        killed: bool,
    },
}

struct Instance {
    id: String,
    seq: u64,
    slot: usize,
    generation: u64,
    phase: Phase,
    run: u64,
    pid: Option<u32>,
    addr: Option<SocketAddr>,
    cpus: Option<Vec<usize>>,
    failures: u32,
    restarts: u32,
    ready_since: Option<Instant>,
    started_at: Instant,
    last_failure: Option<String>,
    oom_kills: u32,
    retire: CancellationToken,
}

/// The fleet supervisor. Build with [`Fleet::new`], drive with [`Fleet::run`].
pub struct Fleet<R: Registry> {
    config: Config,
    exe: PathBuf,
    registry: R,
    desired: watch::Receiver<Desired>,
    status: watch::Sender<FleetStatus>,
    instances: BTreeMap<String, Instance>,
    events_tx: mpsc::Sender<Event>,
    events_rx: mpsc::Receiver<Event>,
    tracker: TaskTracker,
    next_seq: u64,
    /// The cores this process may run on (its affinity mask), which slots map onto.
    cores: Vec<usize>,
    counters: FleetStatus,
    /// The fleet's cgroup and the envelope applied, when envelopes are enforced. Dropped
    /// (group removed) when the fleet is.
    scope: Option<(FleetScope, Envelope)>,
    groups: Groups,
}

impl<R: Registry> std::fmt::Debug for Fleet<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("instances", &self.instances.len())
            .finish()
    }
}

impl<R: Registry> Fleet<R> {
    /// Checks `config` and prepares a fleet that will run `exe` for `{exe}` and register
    /// ready instances with `registry`. Nothing starts until [`Fleet::run`].
    pub fn new(
        config: Config,
        exe: PathBuf,
        registry: R,
    ) -> Result<(Fleet<R>, FleetHandle), FleetError> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir).map_err(|e| FleetError::Config {
            field: "fleet.data_dir".into(),
            reason: format!("cannot create {}: {e}", config.data_dir.display()),
        })?;
        let data_dir = config
            .data_dir
            .canonicalize()
            .map_err(|e| FleetError::Config {
                field: "fleet.data_dir".into(),
                reason: format!("{}: {e}", config.data_dir.display()),
            })?;
        let config = Config { data_dir, ..config };
        let envelope = config.resources.envelope(process::available_cpus());
        let scope = match crate::envelope::open(&config.resources)? {
            Some(scope) => {
                tracing::info!(%envelope, "each instance runs in an envelope");
                Some((scope, envelope))
            }
            None => {
                tracing::warn!(
                    "resource envelopes disabled: instances run without CPU or memory limits"
                );
                None
            }
        };
        let envelope = scope.as_ref().map(|(_, e)| *e);
        let groups: Groups = Arc::default();
        let desired = Desired {
            count: config.instances,
            generation: 0,
        };
        let (desired_tx, desired_rx) = watch::channel(desired);
        let (status_tx, status_rx) = watch::channel(FleetStatus {
            desired: desired.count,
            envelope,
            ..FleetStatus::default()
        });
        // Bounded: at most four events per incarnation are in flight, and the loop drains
        // the channel every turn.
        let (events_tx, events_rx) = mpsc::channel(1024);
        let fleet = Fleet {
            config,
            exe,
            registry,
            desired: desired_rx,
            status: status_tx,
            instances: BTreeMap::new(),
            events_tx,
            events_rx,
            tracker: TaskTracker::new(),
            next_seq: 0,
            cores: process::own_cpus(),
            counters: FleetStatus {
                envelope,
                ..FleetStatus::default()
            },
            scope,
            groups: groups.clone(),
        };
        let handle = FleetHandle {
            desired: desired_tx,
            status: status_rx,
            min: 1,
            max: crate::config::MAX_INSTANCES,
            groups,
            envelope,
        };
        Ok((fleet, handle))
    }

    /// Runs the control loop until `shutdown` fires, then drains and stops every instance
    /// (bounded by the drain and stop graces) and returns.
    pub async fn run(mut self, shutdown: CancellationToken) {
        // Fast enough for back-off deadlines; the plan itself is a few comparisons.
        let tick = self.config.sync_period().min(Duration::from_millis(100));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(ev) = self.events_rx.recv() => self.on_event(ev, Instant::now()),
                Ok(()) = self.desired.changed() => {}
                _ = ticker.tick() => {}
            }
            while let Ok(ev) = self.events_rx.try_recv() {
                self.on_event(ev, Instant::now());
            }
            self.reconcile(Instant::now());
            self.publish(false);
        }
        self.shut_down().await;
    }

    async fn shut_down(&mut self) {
        tracing::info!(
            instances = self.instances.len(),
            "fleet stopping every instance"
        );
        let ids: Vec<String> = self.instances.keys().cloned().collect();
        for id in ids {
            self.retire(&id);
        }
        self.publish(false);
        self.tracker.close();
        let bound = self.config.drain_grace() + self.config.stop_grace() + Duration::from_secs(10);
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            tokio::select! {
                _ = self.tracker.wait() => break,
                Some(ev) = self.events_rx.recv() => {
                    self.on_event(ev, Instant::now());
                    self.publish(false);
                }
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::error!("instances still stopping after {bound:?}; killing");
                    for pid in self.status.borrow().pids() {
                        process::signal(pid, nix::sys::signal::Signal::SIGKILL);
                    }
                    break;
                }
            }
        }
        while let Ok(ev) = self.events_rx.try_recv() {
            self.on_event(ev, Instant::now());
        }
        // Every instance task has ended (or was given up on and its processes killed):
        // remove the groups; the fleet's own group goes when `scope` drops.
        lock(&self.groups).clear();
        self.scope = None;
        self.publish(true);
    }

    /// Removes instance `id` from the books, and its group with it (the group's last
    /// reference is held by the instance task, which ends after its process did).
    fn forget(&mut self, id: &str) {
        self.instances.remove(id);
        lock(&self.groups).remove(id);
    }

    /// The group of instance `id`, created on its first start and kept across restarts
    /// (so counters such as OOM kills accumulate per instance).
    fn group_for(&mut self, id: &str) -> Result<Option<Arc<Group>>, FleetError> {
        let Some((scope, envelope)) = &self.scope else {
            return Ok(None);
        };
        let mut groups = lock(&self.groups);
        if let Some(g) = groups.get(id) {
            return Ok(Some(g.clone()));
        }
        let g = Arc::new(scope.create(id, envelope)?);
        groups.insert(id.to_string(), g.clone());
        Ok(Some(g))
    }

    fn views(&self) -> Vec<InstanceView> {
        self.instances
            .values()
            .map(|i| InstanceView {
                id: i.id.clone(),
                seq: i.seq,
                generation: i.generation,
                phase: i.phase,
            })
            .collect()
    }

    fn reconcile(&mut self, now: Instant) {
        let desired = *self.desired.borrow_and_update();
        for action in plan::plan(now, desired, &self.views()) {
            tracing::debug!(?action, "fleet action");
            match action {
                Action::Spawn { generation } => self.spawn_new(generation),
                Action::Restart { id } => self.start(&id, true),
                Action::Retire { id } => self.retire(&id),
                Action::Forget { id } => self.forget(&id),
            }
        }
    }

    fn spawn_new(&mut self, generation: u64) {
        self.next_seq += 1;
        let seq = self.next_seq;
        let used: Vec<usize> = self.instances.values().map(|i| i.slot).collect();
        let slot = (0..).find(|s| !used.contains(s)).unwrap_or(0);
        let id = format!("i-{seq}");
        let cpus = self.config.cpus_for_slot(slot, &self.cores);
        self.instances.insert(
            id.clone(),
            Instance {
                id: id.clone(),
                seq,
                slot,
                generation,
                phase: Phase::Starting,
                run: 0,
                pid: None,
                addr: None,
                cpus,
                failures: 0,
                restarts: 0,
                ready_since: None,
                started_at: Instant::now(),
                last_failure: None,
                oom_kills: 0,
                retire: CancellationToken::new(),
            },
        );
        self.start(&id, false);
    }

    /// Starts (or restarts) the process of instance `id` in its own task.
    fn start(&mut self, id: &str, restart: bool) {
        let group = match self.group_for(id) {
            Ok(g) => g,
            Err(e) => {
                let run = self.instances.get(id).map_or(0, |i| i.run + 1);
                if let Some(inst) = self.instances.get_mut(id) {
                    inst.run = run;
                    inst.phase = Phase::Starting;
                }
                let ev = Event::Failed {
                    id: id.to_string(),
                    run,
                    failure: Failure::Spawn(e.to_string()),
                };
                self.on_event(ev, Instant::now());
                return;
            }
        };
        let Some(inst) = self.instances.get_mut(id) else {
            return;
        };
        inst.run += 1;
        if restart {
            inst.restarts += 1;
            tracing::info!(id, restarts = inst.restarts, "restarting instance");
        }
        inst.phase = Phase::Starting;
        inst.pid = None;
        inst.ready_since = None;
        inst.started_at = Instant::now();
        inst.retire = CancellationToken::new();
        let run = inst.run;
        let addr = match process::free_addr(self.config.host) {
            Ok(a) => a,
            Err(e) => {
                let ev = Event::Failed {
                    id: id.to_string(),
                    run,
                    failure: Failure::Spawn(e.to_string()),
                };
                self.on_event(ev, Instant::now());
                return;
            }
        };
        inst.addr = Some(addr);
        let vars = TemplateVars {
            exe: self.exe.clone(),
            addr,
            id: id.to_string(),
            data_dir: self.config.data_dir.clone(),
        };
        let spec = SpawnSpec {
            argv: self
                .config
                .command_template()
                .iter()
                .map(|w| process::expand(w, &vars))
                .collect(),
            env: self
                .config
                .env
                .iter()
                .map(|(k, v)| (k.clone(), process::expand(v, &vars)))
                .collect(),
            output: self.config.child_output,
            log_file: process::log_file(&self.config.data_dir, id),
            parent_death_signal: self.config.parent_death_signal,
            cpus: inst.cpus.clone(),
            join_cgroups: group.as_ref().map(|g| g.procs_files()).unwrap_or_default(),
        };
        let task = InstanceTask {
            id: id.to_string(),
            run,
            addr,
            spec,
            readiness_path: self.config.readiness_path.clone(),
            ready_timeout: self.config.ready_timeout(),
            ready_poll: self.config.ready_poll(),
            drain_grace: self.config.drain_grace(),
            stop_grace: self.config.stop_grace(),
            weight: self.config.weight,
            retire: inst.retire.clone(),
            events: self.events_tx.clone(),
            group,
        };
        self.counters.spawned_total += 1;
        self.tracker.spawn(task.run(self.registry.clone()));
    }

    fn retire(&mut self, id: &str) {
        if let Some(inst) = self.instances.get_mut(id) {
            match inst.phase {
                Phase::Retiring => {}
                // No process: nothing to drain or stop.
                Phase::Backoff { .. } => self.forget(id),
                Phase::Starting | Phase::Ready => {
                    tracing::info!(id, "retiring instance");
                    inst.phase = Phase::Retiring;
                    inst.retire.cancel();
                }
            }
        }
    }

    fn on_event(&mut self, ev: Event, now: Instant) {
        let (id, run) = match &ev {
            Event::Started { id, run, .. }
            | Event::Ready { id, run }
            | Event::Failed { id, run, .. }
            | Event::Stopped { id, run, .. } => (id.clone(), *run),
        };
        let Some(inst) = self.instances.get_mut(&id) else {
            return;
        };
        if inst.run != run {
            return;
        }
        match ev {
            Event::Started { pid, .. } => inst.pid = Some(pid),
            Event::Ready { .. } => {
                if inst.phase == Phase::Starting {
                    inst.phase = Phase::Ready;
                    inst.ready_since = Some(now);
                    self.counters.startup_s =
                        Some(now.duration_since(inst.started_at).as_secs_f64());
                    // Ready implies started: pid and addr are known (0 / "-" only if not).
                    tracing::info!(
                        id,
                        addr = %inst.addr.map_or("-".to_string(), |a| a.to_string()),
                        pid = inst.pid.unwrap_or(0),
                        "instance ready"
                    );
                }
            }
            Event::Stopped { killed, .. } => {
                self.counters.stopped_total += 1;
                if killed {
                    self.counters.killed_total += 1;
                }
                self.forget(&id);
            }
            Event::Failed { failure, .. } => {
                inst.pid = None;
                let text = match &failure {
                    Failure::Spawn(e) => format!("spawn failed: {e}"),
                    Failure::Exited(st) => format!("exited: {st}"),
                    Failure::OomKilled { status, limit_mib } => {
                        format!("OOM-killed at its memory limit ({limit_mib} MiB): {status}")
                    }
                    Failure::ReadyTimeout => "not ready in time; killed".to_string(),
                    Failure::Register(e) => format!("balancer refused it: {e}"),
                };
                match failure {
                    Failure::ReadyTimeout => self.counters.ready_timeouts_total += 1,
                    // Restarted like any crash, and counted apart as well.
                    Failure::OomKilled { .. } => {
                        self.counters.crashes_total += 1;
                        self.counters.oom_kills_total += 1;
                        inst.oom_kills += 1;
                    }
                    _ => self.counters.crashes_total += 1,
                }
                if inst.phase == Phase::Retiring {
                    // It was on its way out anyway.
                    self.forget(&id);
                    return;
                }
                let long_lived = inst.ready_since.is_some_and(|t| {
                    now.duration_since(t)
                        >= Duration::from_millis(self.config.restart_backoff_max_ms)
                });
                inst.failures = if long_lived { 1 } else { inst.failures + 1 };
                let delay = plan::restart_delay(
                    inst.failures,
                    Duration::from_millis(self.config.restart_backoff_initial_ms),
                    Duration::from_millis(self.config.restart_backoff_max_ms),
                );
                let tail = match (self.config.child_output, &failure) {
                    (
                        ChildOutput::File,
                        Failure::Exited(_) | Failure::OomKilled { .. } | Failure::ReadyTimeout,
                    ) => {
                        let log = process::log_file(&self.config.data_dir, &id);
                        let lines = process::log_tail(&log, CRASH_LOG_LINES);
                        if lines.is_empty() {
                            String::new()
                        } else {
                            format!(
                                "; its last log lines ({}):\n    {}",
                                log.display(),
                                lines.join("\n    ")
                            )
                        }
                    }
                    _ => String::new(),
                };
                tracing::warn!(
                    "instance {id} failed ({text}; failure {} in a row); restarting in {:.1} s{tail}",
                    inst.failures,
                    delay.as_secs_f64()
                );
                inst.last_failure = Some(text);
                inst.ready_since = None;
                inst.phase = Phase::Backoff {
                    restart_at: now + delay,
                };
            }
        }
    }

    fn publish(&self, shut_down: bool) {
        let desired = *self.desired.borrow();
        let mut s = FleetStatus {
            desired: desired.count,
            generation: desired.generation,
            instances: self
                .instances
                .values()
                .map(|i| InstanceStatus {
                    id: i.id.clone(),
                    seq: i.seq,
                    slot: i.slot,
                    generation: i.generation,
                    phase: i.phase,
                    pid: i.pid,
                    addr: i.addr,
                    cpus: i.cpus.clone(),
                    restarts: i.restarts,
                    last_failure: i.last_failure.clone(),
                    oom_kills: i.oom_kills,
                })
                .collect(),
            shut_down,
            ..self.counters.clone()
        };
        s.instances.sort_by_key(|i| i.seq);
        self.status.send_if_modified(|old| {
            if *old != s {
                *old = s;
                true
            } else {
                false
            }
        });
    }
}

/// Everything one incarnation of an instance needs, moved into its task.
struct InstanceTask {
    id: String,
    run: u64,
    addr: SocketAddr,
    spec: SpawnSpec,
    readiness_path: String,
    ready_timeout: Duration,
    ready_poll: Duration,
    drain_grace: Duration,
    stop_grace: Duration,
    weight: u32,
    retire: CancellationToken,
    events: mpsc::Sender<Event>,
    /// The instance's cgroup, when envelopes are enforced (read for OOM kills).
    group: Option<Arc<Group>>,
}

impl InstanceTask {
    /// Why the process ended: an OOM kill when the group's counter moved past
    /// `oom_before` (the kernel counts the kill before the process is reaped), else the
    /// exit status.
    fn exit_failure(
        &self,
        st: std::io::Result<std::process::ExitStatus>,
        oom_before: u64,
    ) -> Failure {
        let status = describe(st);
        match &self.group {
            Some(g) if g.stats().oom_kills > oom_before => Failure::OomKilled {
                status,
                limit_mib: g.envelope().memory_mib,
            },
            _ => Failure::Exited(status),
        }
    }

    async fn send(&self, ev: Event) {
        // The loop outlives every instance task (it waits for the tracker), so a send
        // can only fail during a bounded shutdown; nothing to do then.
        let _ = self.events.send(ev).await;
    }

    async fn failed(&self, failure: Failure) {
        self.send(Event::Failed {
            id: self.id.clone(),
            run: self.run,
            failure,
        })
        .await;
    }

    async fn stopped(&self, killed: bool) {
        self.send(Event::Stopped {
            id: self.id.clone(),
            run: self.run,
            killed,
        })
        .await;
    }

    async fn run<R: Registry>(self, registry: R) {
        let oom_before = self.group.as_ref().map_or(0, |g| g.stats().oom_kills);
        let (mut child, pid) = match process::spawn(&self.spec) {
            Ok(c) => c,
            Err(e) => return self.failed(Failure::Spawn(e.to_string())).await,
        };
        if let Some(cpus) = &self.spec.cpus
            && let Err(e) = process::pin(pid, cpus)
        {
            tracing::warn!(id = self.id, "CPU pinning failed: {e}");
        }
        self.send(Event::Started {
            id: self.id.clone(),
            run: self.run,
            pid,
        })
        .await;

        // Readiness: poll until 2xx, the child exits, we are retired, or time runs out.
        let deadline = tokio::time::Instant::now() + self.ready_timeout;
        let probe_timeout = self
            .ready_poll
            .max(Duration::from_millis(500))
            .min(self.ready_timeout);
        loop {
            tokio::select! {
                st = child.wait() => {
                    return self.failed(self.exit_failure(st, oom_before)).await;
                }
                _ = self.retire.cancelled() => {
                    let (_, killed) = process::stop(&mut child, pid, self.stop_grace).await;
                    return self.stopped(killed).await;
                }
                ready = async {
                    tokio::time::sleep(self.ready_poll).await;
                    process::probe(self.addr, &self.readiness_path, probe_timeout).await
                } => {
                    if ready {
                        break;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        tracing::warn!(id = self.id, timeout = ?self.ready_timeout, "instance not ready in time; killing it");
                        let _ = child.start_kill();
                        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                        return self.failed(Failure::ReadyTimeout).await;
                    }
                }
            }
        }
        if let Some(cpus) = &self.spec.cpus {
            // Threads started while it booted inherited the mask from the main thread,
            // but pin again in case the runtime started some before the first call.
            let _ = process::pin(pid, cpus);
        }
        if let Err(e) = registry.add(&self.id, self.addr, self.weight) {
            let _ = process::stop(&mut child, pid, self.stop_grace).await;
            return self.failed(Failure::Register(e.to_string())).await;
        }
        self.send(Event::Ready {
            id: self.id.clone(),
            run: self.run,
        })
        .await;

        tokio::select! {
            st = child.wait() => {
                let _ = registry.remove(&self.id);
                return self.failed(self.exit_failure(st, oom_before)).await;
            }
            _ = self.retire.cancelled() => {}
        }
        // Retired: no new requests, let in-flight ones finish, then stop the process.
        tokio::select! {
            res = registry.drain(&self.id, self.drain_grace) => {
                if let Err(e) = res {
                    tracing::warn!(id = self.id, "drain failed: {e}; removing");
                    let _ = registry.remove(&self.id);
                }
            }
            _ = child.wait() => {
                let _ = registry.remove(&self.id);
            }
        }
        let (_, killed) = process::stop(&mut child, pid, self.stop_grace).await;
        self.stopped(killed).await;
    }
}

/// Locks the group map; a panic while it was held cannot leave it inconsistent (every
/// critical section is a single map operation), so poisoning is ignored.
fn lock(groups: &Groups) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Group>>> {
    groups.lock().unwrap_or_else(|p| p.into_inner())
}

fn describe(st: std::io::Result<std::process::ExitStatus>) -> String {
    match st {
        Ok(s) => s.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}
