//! Resource envelopes: each instance runs inside a CPU and memory limit, the way a
//! Kubernetes pod with `resources.limits` or `docker run --cpus 0.25 --memory 256m` does.
//!
//! Enforcement is Linux cgroups. cgroup v2 is used when it is mounted, offers the `cpu`
//! and `memory` controllers to this process's group and is writable; otherwise the v1
//! `cpu` (`cpu.cfs_quota_us` / `cpu.cfs_period_us`), `cpuacct` and `memory`
//! (`memory.limit_in_bytes`, `memory.oom_control`) hierarchies. A hybrid mount whose
//! `unified` v2 tree carries no controllers (as on the development machines) is detected
//! as such and falls back to v1.
//!
//! Layout, per hierarchy, below the group this process already runs in (so the envelopes
//! nest inside whatever limits the host put on us, and never escape them):
//!
//! ```text
//! <own group>/scaleout/<pid>-<starttime>-<n>/<instance id>
//! ```
//!
//! `<pid>-<starttime>` names the owning `scaleout` process (start time in clock ticks
//! since boot, from `/proc/<pid>/stat`, so a recycled pid is not mistaken for the owner);
//! `<n>` tells apart several fleets in one process (the demo runs one per act). Groups are
//! removed when their instance stops and when the fleet stops; a fleet starting removes
//! every group whose owner is dead (a SIGKILLed `scaleout up`), killing any process left
//! in it first.
//!
//! Joining: the child must be inside its group *before* it runs the service, or its
//! first allocations are charged to the parent (v1 does not move charges on migration)
//! and its start-up runs unthrottled. The workspace forbids `unsafe`, which rules out a
//! `pre_exec` hook, so the child is started through `/bin/sh`: the shell writes its own
//! pid (`$$`) into each group's `cgroup.procs` and then `exec`s the service, which keeps
//! the pid. A failed write makes the shell exit with status 125 before the service runs
//! (reported as a crash, with the shell's message in the instance log).
//!
//! Where cgroups cannot be written (no root, no delegation, missing controllers) the
//! fleet refuses to start with the reason and the flag that runs without envelopes
//! (`--no-envelopes`, or `[fleet.resources] enforce = false`); it never runs silently
//! unlimited. This module never decides how large an envelope is beyond the host-based
//! default ([`Envelope::for_host`]), and never touches a group it did not create except
//! stale ones under its own `scaleout` parent.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::FleetError;

/// The smallest memory limit accepted, MiB (below it a runtime cannot even start).
pub const MIN_MEMORY_MIB: u64 = 16;
/// The largest memory limit accepted, MiB (16 TiB: a typo guard, not a policy).
pub const MAX_MEMORY_MIB: u64 = 16 * 1024 * 1024;
/// The largest CPU limit accepted, cores.
pub const MAX_CPU: f64 = 1024.0;
/// The CFS period used for the quota, microseconds (the kernel's default).
pub const CFS_PERIOD_US: u64 = 100_000;
/// The flag (and config key) that runs without envelopes, named in refusals.
pub const NO_ENVELOPES_HINT: &str = "run with --no-envelopes (or set [fleet.resources] enforce = false) to run instances without envelopes";

/// A CPU and memory limit for one instance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// CPU limit in cores (fractional: 0.25 = a quarter of one core), enforced as a CFS
    /// quota per [`CFS_PERIOD_US`].
    pub cpu: f64,
    /// Memory limit in MiB; exceeding it gets the instance OOM-killed by the kernel.
    pub memory_mib: u64,
}

impl Envelope {
    /// The default envelope on a host with `cores` cores: an eighth of the host per
    /// instance, at least a quarter core and at most four cores, in quarter-core steps
    /// (0.25 on 2 cores, 1.0 on 8, 4.0 on 64), with 256 MiB of memory.
    pub fn for_host(cores: usize) -> Envelope {
        let eighth = cores.max(1) as f64 / 8.0;
        let quarters = (eighth * 4.0).floor() / 4.0;
        Envelope {
            cpu: quarters.clamp(0.25, 4.0),
            memory_mib: 256,
        }
    }

    /// Checks the limits; `field` is the dotted path of the section (e.g.
    /// `fleet.resources`), used to name the bad field.
    pub fn validate(&self, field: &str) -> Result<(), FleetError> {
        if !(self.cpu.is_finite() && self.cpu > 0.0 && self.cpu <= MAX_CPU) {
            return Err(FleetError::Config {
                field: format!("{field}.cpu"),
                reason: format!("must be > 0 and <= {MAX_CPU} cores, got {}", self.cpu),
            });
        }
        if self.cfs_quota_us() < 1_000 {
            return Err(FleetError::Config {
                field: format!("{field}.cpu"),
                reason: format!(
                    "must be at least 0.01 cores (a 1 ms CFS quota), got {}",
                    self.cpu
                ),
            });
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(FleetError::Config {
                field: format!("{field}.memory_mib"),
                reason: format!(
                    "must be in {MIN_MEMORY_MIB}..={MAX_MEMORY_MIB} MiB, got {}",
                    self.memory_mib
                ),
            });
        }
        Ok(())
    }

    /// The CFS quota per [`CFS_PERIOD_US`], microseconds.
    pub fn cfs_quota_us(&self) -> u64 {
        (self.cpu * CFS_PERIOD_US as f64).round() as u64
    }

    /// The memory limit in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib * 1024 * 1024
    }

    /// The CPU as a Kubernetes quantity (`250m`, `2`).
    pub fn k8s_cpu(&self) -> String {
        let millis = (self.cpu * 1000.0).round() as u64;
        if millis.is_multiple_of(1000) {
            (millis / 1000).to_string()
        } else {
            format!("{millis}m")
        }
    }

    /// The memory as a Kubernetes quantity (`256Mi`).
    pub fn k8s_memory(&self) -> String {
        format!("{}Mi", self.memory_mib)
    }
}

impl std::fmt::Display for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} cpu, {} MiB", self.cpu, self.memory_mib)
    }
}

/// `[fleet.resources]`: the envelope of every instance, and whether it is enforced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Resources {
    /// CPU limit per instance, cores (fractional). Unset: [`Envelope::for_host`].
    pub cpu: Option<f64>,
    /// Memory limit per instance, MiB. Unset: [`Envelope::for_host`] (256).
    pub memory_mib: Option<u64>,
    /// Enforce the envelope with cgroups (the default). `false` (`--no-envelopes`) runs
    /// instances unlimited, and the status says so.
    pub enforce: bool,
    /// The cgroup filesystem root (default `/sys/fs/cgroup`). For tests and unusual
    /// mounts; it holds either a cgroup2 mount, or the v1 hierarchies as `cpu/`,
    /// `cpuacct/` and `memory/` (a `unified/` cgroup2 mount inside is tried first).
    pub cgroup_root: Option<PathBuf>,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            cpu: None,
            memory_mib: None,
            enforce: true,
            cgroup_root: None,
        }
    }
}

impl Resources {
    /// The envelope in force on a host with `cores` cores (whether or not enforced).
    pub fn envelope(&self, cores: usize) -> Envelope {
        let d = Envelope::for_host(cores);
        Envelope {
            cpu: self.cpu.unwrap_or(d.cpu),
            memory_mib: self.memory_mib.unwrap_or(d.memory_mib),
        }
    }

    /// Checks the configured limits, naming the field (`fleet.resources.cpu`, ...).
    pub fn validate(&self) -> Result<(), FleetError> {
        self.envelope(crate::process::available_cpus())
            .validate("fleet.resources")
    }

    /// The cgroup root in force.
    pub fn root(&self) -> PathBuf {
        self.cgroup_root
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CGROUP_ROOT))
    }
}

/// Opens the envelopes `resources` asks for, as a fleet does at start: detects a
/// writable cgroup interface (or refuses, saying why and naming `--no-envelopes`),
/// removes stale groups of dead owners, and creates this user's group. `None` when
/// `resources.enforce` is off. Use [`FleetScope::create`] and [`Group::command`] (or
/// [`Group::wrap`] for a `std::process::Command`) to run processes inside envelopes
/// outside a fleet, as the demo does for single instances.
pub fn open(resources: &Resources) -> Result<Option<FleetScope>, EnvelopeError> {
    if !resources.enforce {
        return Ok(None);
    }
    let cgroups = Cgroups::detect(&resources.root())?;
    cgroups.clean_stale();
    let scope = cgroups.fleet_scope()?;
    tracing::info!("resource envelopes: {}", cgroups.describe());
    Ok(Some(scope))
}

/// Where cgroup filesystems are normally mounted.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Usage read back from an instance's group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeStats {
    /// CPU time used by every process of the group, nanoseconds (cumulative).
    pub cpu_usage_ns: u64,
    /// CFS periods in which the group was runnable (cumulative).
    pub nr_periods: u64,
    /// CFS periods in which the group was throttled (cumulative).
    pub nr_throttled: u64,
    /// Total time the group was throttled, nanoseconds (cumulative).
    pub throttled_ns: u64,
    /// Memory charged to the group now, bytes.
    pub memory_bytes: u64,
    /// The highest memory charge since the group was created, bytes (peak usage).
    pub memory_max_bytes: u64,
    /// The memory limit in force, bytes.
    pub memory_limit_bytes: u64,
    /// Processes of the group killed by the kernel OOM killer (cumulative).
    pub oom_kills: u64,
}

/// Use of an envelope over an interval, from two readings of [`EnvelopeStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct EnvelopeUse {
    /// Cores used on average (0.25 = a quarter core).
    pub cpu_cores: f64,
    /// Share of the CFS periods in which the group was throttled (0..=1): the fraction
    /// Kubernetes dashboards show as "CPU throttling".
    pub throttled_share: f64,
    /// Memory charged at the later reading, MiB.
    pub memory_mib: f64,
    /// OOM kills between the readings.
    pub oom_kills: u64,
}

impl EnvelopeStats {
    /// What happened between `prev` and `self`, `elapsed` apart. Counters that went
    /// backwards (the group was recreated) count from zero.
    pub fn since(&self, prev: &EnvelopeStats, elapsed: Duration) -> EnvelopeUse {
        let d = |now: u64, then: u64| if now >= then { now - then } else { now };
        let periods = d(self.nr_periods, prev.nr_periods);
        let secs = elapsed.as_secs_f64();
        EnvelopeUse {
            cpu_cores: if secs > 0.0 {
                d(self.cpu_usage_ns, prev.cpu_usage_ns) as f64 / 1e9 / secs
            } else {
                0.0
            },
            throttled_share: if periods > 0 {
                (d(self.nr_throttled, prev.nr_throttled) as f64 / periods as f64).min(1.0)
            } else {
                0.0
            },
            memory_mib: self.memory_bytes as f64 / (1024.0 * 1024.0),
            oom_kills: d(self.oom_kills, prev.oom_kills),
        }
    }
}

/// Why envelopes cannot be used, or a group operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Cgroups are not usable here; the message says why and how to run without them.
    #[error("resource envelopes unavailable: {reason}; {NO_ENVELOPES_HINT}")]
    Unavailable {
        /// What was tried and what failed.
        reason: String,
    },
    /// A cgroup file or directory could not be written or read.
    #[error("cgroup {path}: {reason}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> EnvelopeError {
    EnvelopeError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Which cgroup interface is in use, with the `scaleout` parent directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v2: one tree; `parent` is `<own group>/scaleout`.
    V2 {
        /// The `scaleout` parent directory.
        parent: PathBuf,
    },
    /// cgroup v1: one `scaleout` parent in each of the three hierarchies.
    V1 {
        /// `scaleout` parent in the `cpu` hierarchy.
        cpu: PathBuf,
        /// `scaleout` parent in the `cpuacct` hierarchy (the same as `cpu` when
        /// co-mounted).
        cpuacct: PathBuf,
        /// `scaleout` parent in the `memory` hierarchy.
        memory: PathBuf,
    },
}

impl Hierarchy {
    /// Every distinct parent directory.
    fn parents(&self) -> Vec<PathBuf> {
        match self {
            Hierarchy::V2 { parent } => vec![parent.clone()],
            Hierarchy::V1 {
                cpu,
                cpuacct,
                memory,
            } => {
                let mut v = vec![cpu.clone(), cpuacct.clone(), memory.clone()];
                v.dedup();
                v
            }
        }
    }
}

/// Usable cgroups: the result of [`Cgroups::detect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroups {
    hierarchy: Hierarchy,
}

/// Fleets created in this process, to name each one's group uniquely.
static NEXT_FLEET: AtomicU64 = AtomicU64::new(0);

impl Cgroups {
    /// Finds a writable cgroup interface under `root` (normally `/sys/fs/cgroup`) and
    /// creates the `scaleout` parent in it, or says why there is none.
    pub fn detect(root: &Path) -> Result<Cgroups, EnvelopeError> {
        detect::detect(root)
    }

    /// The interface and parent directories in use.
    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// A one-line description for logs and status (`cgroup v1 (cpu, cpuacct, memory)`).
    pub fn describe(&self) -> String {
        match &self.hierarchy {
            Hierarchy::V2 { parent } => format!("cgroup v2 under {}", parent.display()),
            Hierarchy::V1 { cpu, memory, .. } => format!(
                "cgroup v1 (cpu, cpuacct, memory) under {} and {}",
                cpu.display(),
                memory.display()
            ),
        }
    }

    /// Removes every fleet group whose owning process is dead (killing processes left in
    /// it first). Returns the directories removed.
    pub fn clean_stale(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        for parent in self.hierarchy.parents() {
            let Ok(rd) = std::fs::read_dir(&parent) else {
                continue;
            };
            for entry in rd.flatten() {
                let path = entry.path();
                if !path.is_dir() {
                    continue;
                }
                let name = entry.file_name();
                let Some(owner) = name.to_str().and_then(Owner::parse) else {
                    continue;
                };
                if owner.alive() {
                    continue;
                }
                match remove_tree(&path) {
                    Ok(()) => removed.push(path),
                    Err(e) => tracing::warn!("stale cgroup {}: {e}", path.display()),
                }
            }
        }
        if !removed.is_empty() {
            tracing::info!(count = removed.len(), "removed stale scaleout cgroups");
        }
        removed
    }

    /// Creates the group of one fleet (`scaleout/<pid>-<starttime>-<n>`), removed when
    /// the returned scope is dropped.
    pub fn fleet_scope(&self) -> Result<FleetScope, EnvelopeError> {
        let owner = Owner::me().ok_or_else(|| EnvelopeError::Unavailable {
            reason: "cannot read this process's start time from /proc/self/stat".into(),
        })?;
        let n = NEXT_FLEET.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{}-{n}", owner.pid, owner.start);
        let hierarchy = match &self.hierarchy {
            Hierarchy::V2 { parent } => Hierarchy::V2 {
                parent: parent.join(&name),
            },
            Hierarchy::V1 {
                cpu,
                cpuacct,
                memory,
            } => Hierarchy::V1 {
                cpu: cpu.join(&name),
                cpuacct: cpuacct.join(&name),
                memory: memory.join(&name),
            },
        };
        for dir in hierarchy.parents() {
            // Another fleet ending may remove an empty `scaleout` parent between our
            // checks: recreate it and retry once.
            if let Err(e) = mkdir(&dir) {
                match dir.parent() {
                    Some(p) if !p.exists() => {
                        mkdir(p)?;
                        if let Hierarchy::V2 { .. } = &self.hierarchy {
                            write(&p.join("cgroup.subtree_control"), "+cpu +memory")?;
                        }
                        mkdir(&dir)?;
                    }
                    _ => return Err(e),
                }
            }
        }
        if let Hierarchy::V2 { parent } = &hierarchy {
            write(&parent.join("cgroup.subtree_control"), "+cpu +memory")?;
        }
        Ok(FleetScope { hierarchy })
    }
}

/// The group of one fleet; its instance groups live below it. Removed (with anything
/// left in it) on drop.
#[derive(Debug)]
pub struct FleetScope {
    hierarchy: Hierarchy,
}

impl FleetScope {
    /// The fleet's directories (one per distinct hierarchy).
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.hierarchy.parents()
    }

    /// Creates (or reuses) the group `name` (an instance id) with `envelope` applied.
    pub fn create(&self, name: &str, envelope: &Envelope) -> Result<Group, EnvelopeError> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(EnvelopeError::Io {
                path: PathBuf::from(name),
                reason: "invalid group name".into(),
            });
        }
        let group = match &self.hierarchy {
            Hierarchy::V2 { parent } => Group {
                hierarchy: Hierarchy::V2 {
                    parent: parent.join(name),
                },
                envelope: *envelope,
            },
            Hierarchy::V1 {
                cpu,
                cpuacct,
                memory,
            } => Group {
                hierarchy: Hierarchy::V1 {
                    cpu: cpu.join(name),
                    cpuacct: cpuacct.join(name),
                    memory: memory.join(name),
                },
                envelope: *envelope,
            },
        };
        for dir in group.hierarchy.parents() {
            mkdir(&dir)?;
        }
        group.apply()?;
        Ok(group)
    }
}

impl Drop for FleetScope {
    fn drop(&mut self) {
        for dir in self.hierarchy.parents() {
            if let Err(e) = remove_tree(&dir) {
                tracing::warn!("cannot remove fleet cgroup {}: {e}", dir.display());
            }
            // The `scaleout` parent too, once no fleet uses it (rmdir fails while any
            // other fleet's group is in it), so nothing is left in the host's tree.
            if let Some(parent) = dir.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

/// One instance's group. Removed (after killing anything left in it) on drop.
#[derive(Debug)]
pub struct Group {
    hierarchy: Hierarchy,
    envelope: Envelope,
}

impl Group {
    /// The envelope applied.
    pub fn envelope(&self) -> Envelope {
        self.envelope
    }

    /// The group's directories (one per distinct hierarchy).
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.hierarchy.parents()
    }

    fn apply(&self) -> Result<(), EnvelopeError> {
        let e = &self.envelope;
        match &self.hierarchy {
            Hierarchy::V2 { parent } => {
                write(
                    &parent.join("cpu.max"),
                    &format!("{} {CFS_PERIOD_US}", e.cfs_quota_us()),
                )?;
                write(&parent.join("memory.max"), &e.memory_bytes().to_string())?;
                // No swap: the limit is the limit, as in a pod without swap.
                let swap = parent.join("memory.swap.max");
                if swap.exists() {
                    write(&swap, "0")?;
                }
            }
            Hierarchy::V1 { cpu, memory, .. } => {
                write(&cpu.join("cpu.cfs_period_us"), &CFS_PERIOD_US.to_string())?;
                write(&cpu.join("cpu.cfs_quota_us"), &e.cfs_quota_us().to_string())?;
                let bytes = e.memory_bytes().to_string();
                write(&memory.join("memory.limit_in_bytes"), &bytes)?;
                // memsw >= limit must hold, so it is set after the limit; it exists only
                // with swap accounting.
                let memsw = memory.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, &bytes)?;
                }
            }
        }
        Ok(())
    }

    /// The `cgroup.procs` files a child writes its pid into to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.hierarchy
            .parents()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// Wraps `argv` (program first) so the process joins this group before the program
    /// runs: `/bin/sh -c '<join>; exec "$@"' scaleout-envelope <files...> -- argv`.
    /// The pid is unchanged by the `exec`.
    pub fn wrap(&self, argv: &[OsString]) -> Vec<OsString> {
        join_wrapper(&self.procs_files(), argv)
    }

    /// A command that runs `program args` inside this group (see [`Group::wrap`]).
    pub fn command(
        &self,
        program: impl Into<OsString>,
        args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> tokio::process::Command {
        let mut argv = vec![program.into()];
        argv.extend(args.into_iter().map(Into::into));
        let wrapped = self.wrap(&argv);
        let mut cmd = tokio::process::Command::new(&wrapped[0]);
        cmd.args(&wrapped[1..]);
        cmd
    }

    /// Pids currently in the group.
    pub fn pids(&self) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::new();
        for f in self.procs_files() {
            for p in read_pids(&f) {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        out
    }

    /// Reads the usage counters (zeros for any file that cannot be read).
    pub fn stats(&self) -> EnvelopeStats {
        stats::read_stats(&self.hierarchy)
    }

    /// Kills anything left in the group and removes it (bounded retries while the
    /// kernel finishes reaping).
    pub fn remove(&self) -> Result<(), EnvelopeError> {
        for dir in self.hierarchy.parents() {
            remove_tree(&dir)?;
        }
        Ok(())
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            tracing::warn!("cannot remove instance cgroup: {e}");
        }
    }
}

/// The `sh` wrapper that writes its pid into each of `procs` and then execs `argv`.
pub fn join_wrapper(procs: &[PathBuf], argv: &[OsString]) -> Vec<OsString> {
    // $1 is the number of files; then the files; then the program and its arguments.
    const SCRIPT: &str = r#"n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@""#;
    let mut out: Vec<OsString> = vec![
        "/bin/sh".into(),
        "-c".into(),
        SCRIPT.into(),
        "scaleout-envelope".into(),
        procs.len().to_string().into(),
    ];
    out.extend(procs.iter().map(|p| p.as_os_str().to_owned()));
    out.extend(argv.iter().cloned());
    out
}

/// The owner of a fleet group: a process id and its start time (clock ticks after boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owner {
    pid: u32,
    start: u64,
}

impl Owner {
    fn me() -> Option<Owner> {
        let pid = std::process::id();
        Some(Owner {
            pid,
            start: start_time(pid)?,
        })
    }
    /// Parses `<pid>-<start>-<n>`.
    fn parse(name: &str) -> Option<Owner> {
        let mut it = name.split('-');
        let pid = it.next()?.parse().ok()?;
        let start = it.next()?.parse().ok()?;
        let _n: u64 = it.next()?.parse().ok()?;
        it.next().is_none().then_some(Owner { pid, start })
    }
    fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest starts at field 3; field 22 is the 20th from there.
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn mkdir(dir: &Path) -> Result<(), EnvelopeError> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err(dir, e)),
    }
}

fn write(path: &Path, value: &str) -> Result<(), EnvelopeError> {
    std::fs::write(path, value).map_err(|e| io_err(path, e))
}

fn read_pids(procs: &Path) -> Vec<u32> {
    std::fs::read_to_string(procs)
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Removes a cgroup directory and its sub-groups, deepest first. Processes still in a
/// group are SIGKILLed first; `rmdir` is retried for up to ~1 s while they are reaped.
fn remove_tree(dir: &Path) -> Result<(), EnvelopeError> {
    if !dir.exists() {
        return Ok(());
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for entry in rd.flatten() {
            let p = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&p)?;
            }
        }
    }
    let procs = dir.join("cgroup.procs");
    let mut last = None;
    for attempt in 0..50 {
        for pid in read_pids(&procs) {
            crate::process::signal(pid, nix::sys::signal::Signal::SIGKILL);
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Some(e),
        }
        if attempt < 49 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Err(io_err(
        dir,
        last.map_or_else(|| "busy".to_string(), |e| e.to_string()),
    ))
}

mod detect;
mod stats;

#[cfg(test)]
mod tests;
