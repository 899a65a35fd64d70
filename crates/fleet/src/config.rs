//! The `[fleet]` section: how instances are started, probed, pinned, drained and stopped.
//!
//! Parsed once at start and validated by [`Config::validate`], which names the offending
//! field. Nothing here spawns or reads the environment; the shell reads only checked values.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::FleetError;
use crate::envelope::Resources;

/// The hard ceiling on instances one fleet may run, whatever the config says.
pub const MAX_INSTANCES: u32 = 64;

/// Where an instance's stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildOutput {
    /// Appended to `{data_dir}/logs/{id}.log` (the default: `up` keeps its terminal clean
    /// for the status line, and a crashed instance leaves its last words on disk).
    File,
    /// Inherited from the supervisor (useful in tests and when debugging).
    Inherit,
    /// Discarded.
    Null,
}

/// Fleet configuration (`[fleet]` in `scaleout.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Instances to start with; the autoscaler moves the count afterwards within its
    /// own `min`/`max`.
    pub instances: u32,
    /// The command template, one argv word per entry. Placeholders: `{exe}` (this
    /// executable), `{addr}` (`host:port`), `{host}`, `{port}`, `{id}` (the instance id),
    /// `{data_dir}`. Empty means the shop on SQLite (see [`default_command`]).
    pub command: Vec<String>,
    /// Extra environment variables for every instance (values may use the placeholders).
    pub env: BTreeMap<String, String>,
    /// Directory for instance data and logs (`{data_dir}`); created at start.
    pub data_dir: PathBuf,
    /// Loopback address instances listen on; ports are picked free per instance.
    pub host: IpAddr,
    /// Readiness path polled before an instance is admitted to the balancer.
    pub readiness_path: String,
    /// How long an instance may take to become ready before it is killed and counted.
    pub ready_timeout_ms: u64,
    /// Interval between readiness polls while an instance starts.
    pub ready_poll_ms: u64,
    /// How long the balancer may take to drain an instance's in-flight requests.
    pub drain_grace_ms: u64,
    /// Time between SIGTERM and SIGKILL when stopping an instance.
    pub stop_grace_ms: u64,
    /// First restart delay after a crash; doubles per consecutive crash.
    pub restart_backoff_initial_ms: u64,
    /// Cap of the restart delay.
    pub restart_backoff_max_ms: u64,
    /// Balancer weight given to each instance (the balancer applies slow start).
    pub weight: u32,
    /// Cores pinned per instance (0 = no pinning). Instance slot `s` gets cores
    /// `[s*k, s*k+k)` modulo the cores available, so "1 instance x 2 cores" and
    /// "2 instances x 1 core" are both expressible.
    pub cpus_per_instance: u32,
    /// Explicit core lists per instance slot; overrides `cpus_per_instance` when set.
    pub cpu_sets: Vec<Vec<usize>>,
    /// Period of the reconcile loop (it also wakes on every instance event, at most every
    /// 100 ms for back-off deadlines). The autoscaler keeps its own `autoscale.tick_ms`.
    pub sync_period_ms: u64,
    /// Ask the kernel to SIGKILL each instance if the supervisor dies (via
    /// `setpriv --pdeathsig`, when `setpriv` is installed).
    pub parent_death_signal: bool,
    /// Where instance output goes.
    pub child_output: ChildOutput,
    /// `[fleet.resources]`: the CPU and memory envelope of every instance (cgroups).
    pub resources: Resources,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            instances: 2,
            command: Vec::new(),
            env: BTreeMap::new(),
            data_dir: PathBuf::from("scaleout-data"),
            host: IpAddr::from([127, 0, 0, 1]),
            readiness_path: "/readyz".into(),
            ready_timeout_ms: 30_000,
            ready_poll_ms: 100,
            drain_grace_ms: 10_000,
            stop_grace_ms: 5_000,
            restart_backoff_initial_ms: 500,
            restart_backoff_max_ms: 30_000,
            weight: 100,
            cpus_per_instance: 0,
            cpu_sets: Vec::new(),
            sync_period_ms: 1_000,
            parent_death_signal: true,
            child_output: ChildOutput::File,
            resources: Resources::default(),
        }
    }
}

/// The default template: this executable running the shop on SQLite.
pub fn default_command() -> Vec<String> {
    [
        "{exe}",
        "shop",
        "--listen",
        "{addr}",
        "--instance-id",
        "{id}",
        "--db",
        "sqlite:{data_dir}/shop.db",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn bad(field: &str, why: impl Into<String>) -> FleetError {
    FleetError::Config {
        field: format!("fleet.{field}"),
        reason: why.into(),
    }
}

impl Config {
    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), FleetError> {
        if self.instances == 0 || self.instances > MAX_INSTANCES {
            return Err(bad(
                "instances",
                format!("must be in 1..={MAX_INSTANCES}, got {}", self.instances),
            ));
        }
        if let Some(first) = self.command.first()
            && first.trim().is_empty()
        {
            return Err(bad("command", "the program (first word) is empty"));
        }
        let passes_addr = |w: &String| w.contains("{port}") || w.contains("{addr}");
        if !self.command.is_empty()
            && !self.command.iter().any(passes_addr)
            && !self.env.values().any(passes_addr)
        {
            return Err(bad(
                "command",
                "must pass the instance its address ({addr} or {port}, in an argument or in env)",
            ));
        }
        if !self.host.is_loopback() {
            return Err(bad(
                "host",
                format!("must be a loopback address, got {}", self.host),
            ));
        }
        if !self.readiness_path.starts_with('/') {
            return Err(bad("readiness_path", "must start with '/'"));
        }
        let positive = [
            ("ready_timeout_ms", self.ready_timeout_ms),
            ("ready_poll_ms", self.ready_poll_ms),
            (
                "restart_backoff_initial_ms",
                self.restart_backoff_initial_ms,
            ),
            ("restart_backoff_max_ms", self.restart_backoff_max_ms),
            ("sync_period_ms", self.sync_period_ms),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(bad(name, "must be > 0"));
            }
        }
        let capped = [
            ("ready_timeout_ms", self.ready_timeout_ms, 600_000),
            ("drain_grace_ms", self.drain_grace_ms, 600_000),
            ("stop_grace_ms", self.stop_grace_ms, 600_000),
            (
                "restart_backoff_max_ms",
                self.restart_backoff_max_ms,
                3_600_000,
            ),
            ("sync_period_ms", self.sync_period_ms, 3_600_000),
        ];
        for (name, v, max) in capped {
            if v > max {
                return Err(bad(name, format!("must be <= {max}, got {v}")));
            }
        }
        if self.restart_backoff_initial_ms > self.restart_backoff_max_ms {
            return Err(bad(
                "restart_backoff_initial_ms",
                "must be <= restart_backoff_max_ms",
            ));
        }
        if self.weight == 0 {
            return Err(bad("weight", "must be > 0"));
        }
        if self.cpus_per_instance > 1024 {
            return Err(bad("cpus_per_instance", "must be <= 1024"));
        }
        for (i, set) in self.cpu_sets.iter().enumerate() {
            if set.is_empty() {
                return Err(bad(&format!("cpu_sets[{i}]"), "is empty"));
            }
            if let Some(c) = set.iter().find(|&&c| c >= 1024) {
                return Err(bad(
                    &format!("cpu_sets[{i}]"),
                    format!("core {c} is out of range"),
                ));
            }
        }
        self.resources.validate()?;
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') {
                return Err(bad("env", format!("invalid variable name {key:?}")));
            }
        }
        Ok(())
    }

    /// The command template in force (the configured one, or the shop default).
    pub fn command_template(&self) -> Vec<String> {
        if self.command.is_empty() {
            default_command()
        } else {
            self.command.clone()
        }
    }

    /// The cores instance slot `slot` is pinned to, if pinning is configured.
    /// `allowed` is the cores this process may use (its affinity mask, in order): slots
    /// map onto those, so pinning works under taskset or a cpuset that excludes core 0.
    pub fn cpus_for_slot(&self, slot: usize, allowed: &[usize]) -> Option<Vec<usize>> {
        let fallback = [0usize];
        let allowed = if allowed.is_empty() {
            &fallback[..]
        } else {
            allowed
        };
        if !self.cpu_sets.is_empty() {
            return Some(self.cpu_sets[slot % self.cpu_sets.len()].clone());
        }
        if self.cpus_per_instance == 0 {
            return None;
        }
        let k = self.cpus_per_instance as usize;
        let mut cpus: Vec<usize> = (0..k)
            .map(|j| allowed[(slot * k + j) % allowed.len()])
            .collect();
        cpus.sort_unstable();
        cpus.dedup();
        Some(cpus)
    }

    /// Readiness timeout as a duration.
    pub fn ready_timeout(&self) -> Duration {
        Duration::from_millis(self.ready_timeout_ms)
    }
    /// Readiness poll interval as a duration.
    pub fn ready_poll(&self) -> Duration {
        Duration::from_millis(self.ready_poll_ms)
    }
    /// Drain grace as a duration.
    pub fn drain_grace(&self) -> Duration {
        Duration::from_millis(self.drain_grace_ms)
    }
    /// SIGTERM-to-SIGKILL grace as a duration.
    pub fn stop_grace(&self) -> Duration {
        Duration::from_millis(self.stop_grace_ms)
    }
    /// Control-loop period as a duration.
    pub fn sync_period(&self) -> Duration {
        Duration::from_millis(self.sync_period_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_run_the_shop() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.command_template()[1], "shop");
    }

    #[test]
    fn unknown_field_is_refused() {
        let err = toml::from_str::<Config>("instancez = 3").unwrap_err();
        assert!(err.to_string().contains("instancez"), "{err}");
    }

    #[test]
    fn bad_fields_are_named() {
        let cases: Vec<(&str, Config)> = vec![
            (
                "fleet.instances",
                Config {
                    instances: 0,
                    ..Config::default()
                },
            ),
            (
                "fleet.host",
                Config {
                    host: "10.0.0.1".parse().unwrap(),
                    ..Config::default()
                },
            ),
            (
                "fleet.readiness_path",
                Config {
                    readiness_path: "readyz".into(),
                    ..Config::default()
                },
            ),
            (
                "fleet.ready_timeout_ms",
                Config {
                    ready_timeout_ms: 0,
                    ..Config::default()
                },
            ),
            (
                "fleet.command",
                Config {
                    command: vec!["/bin/true".into()],
                    ..Config::default()
                },
            ),
            (
                "fleet.restart_backoff_initial_ms",
                Config {
                    restart_backoff_initial_ms: 10,
                    restart_backoff_max_ms: 5,
                    ..Config::default()
                },
            ),
            (
                "fleet.cpu_sets[1]",
                Config {
                    cpu_sets: vec![vec![0], vec![]],
                    ..Config::default()
                },
            ),
        ];
        for (field, c) in cases {
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(field), "expected {field} in {err}");
        }
    }

    #[test]
    fn cpu_slots_spread_over_cores() {
        let one_big = Config {
            cpus_per_instance: 2,
            ..Config::default()
        };
        assert_eq!(one_big.cpus_for_slot(0, &[0, 1]), Some(vec![0, 1]));
        let two_small = Config {
            cpus_per_instance: 1,
            ..Config::default()
        };
        assert_eq!(two_small.cpus_for_slot(0, &[0, 1]), Some(vec![0]));
        assert_eq!(two_small.cpus_for_slot(1, &[0, 1]), Some(vec![1]));
        assert_eq!(two_small.cpus_for_slot(2, &[0, 1]), Some(vec![0]));
        assert_eq!(Config::default().cpus_for_slot(0, &[0, 1]), None);
        // Under a mask that excludes core 0 (taskset -c 2,3), slots map onto 2 and 3.
        assert_eq!(two_small.cpus_for_slot(0, &[2, 3]), Some(vec![2]));
        assert_eq!(two_small.cpus_for_slot(1, &[2, 3]), Some(vec![3]));
        let explicit = Config {
            cpu_sets: vec![vec![1], vec![0]],
            ..Config::default()
        };
        assert_eq!(explicit.cpus_for_slot(0, &[0, 1]), Some(vec![1]));
        assert_eq!(explicit.cpus_for_slot(3, &[0, 1]), Some(vec![0]));
    }
}
