//! The `[autoscale]` configuration: which policy, which target metric, min/max, and each
//! policy's knobs, parsed once and validated once with the offending field named.
//!
//! Defaults reproduce the reference systems: `hpa` is Kubernetes' HPA with its default
//! `behavior`, `kpa` is Knative's KPA with its default config map. This module never
//! decides anything; [`crate::build_policy`] turns a validated config into a policy.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::metrics::MetricKind;

/// An invalid or unreadable autoscale configuration.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// A field holds a value the policy cannot work with.
    #[error("invalid autoscale config: field `{field}`: {message}")]
    Invalid {
        /// Dotted path of the field inside the `[autoscale]` section, e.g.
        /// `hpa.scale_up.policies[0].period_s`.
        field: String,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// The TOML did not parse or named an unknown field (the message names it).
    #[error("invalid autoscale config: {0}")]
    Parse(String),
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Which reactive policy decides. Schedules and forecasts are floors applied on top of
/// any of them (see [`ScheduleConfig`], [`PredictiveConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// Ours: concurrency target tracking with a panic mode for spikes, a cap per step,
    /// HPA-style scale-down stabilisation and a cooldown (see [`TunedConfig`]).
    #[default]
    Default,
    /// A clone of Kubernetes' HorizontalPodAutoscaler (autoscaling/v2 behaviour).
    Hpa,
    /// A clone of Knative's KPA (stable and panic windows).
    Kpa,
    /// Step scaling with a cooldown (AWS-style step adjustments).
    Step,
}

impl PolicyKind {
    /// The name used in config and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Default => "default",
            PolicyKind::Hpa => "hpa",
            PolicyKind::Kpa => "kpa",
            PolicyKind::Step => "step",
        }
    }
}

/// The `[autoscale]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The reactive policy: "default", "hpa", "kpa" or "step".
    pub policy: PolicyKind,
    /// Never fewer instances than this (at least 1: there is no activator to scale from
    /// zero).
    pub min_instances: u32,
    /// Never more instances than this.
    pub max_instances: u32,
    /// Target in-flight requests per instance (concurrency). Set at least one `target_*`;
    /// with several, each proposes a count and the largest wins (as in the HPA).
    pub target_in_flight: Option<f64>,
    /// Target requests per second per instance.
    pub target_rps: Option<f64>,
    /// Target CPU utilisation per instance, percent of the instance's cores (1-100).
    pub target_cpu_pct: Option<f64>,
    /// Target p99 latency across the fleet, milliseconds.
    pub target_p99_ms: Option<f64>,
    /// How often the shell should call `decide`, milliseconds (policies keep their own,
    /// longer, cadence; the KPA needs samples every second).
    pub tick_ms: u64,
    /// HPA clone settings (used when `policy = "hpa"`).
    pub hpa: HpaConfig,
    /// KPA clone settings (used when `policy = "kpa"`).
    pub kpa: KpaConfig,
    /// Step scaling settings (used when `policy = "step"`).
    pub step: StepConfig,
    /// Our default policy's settings (used when `policy = "default"`).
    #[serde(rename = "default")]
    pub tuned: TunedConfig,
    /// Scheduled minimums, applied on top of any policy when `windows` is not empty.
    pub schedule: ScheduleConfig,
    /// Predictive pre-scaling, applied on top of any policy when `enabled`.
    pub predictive: PredictiveConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            policy: PolicyKind::Default,
            min_instances: 1,
            max_instances: 10,
            target_in_flight: Some(10.0),
            target_rps: None,
            target_cpu_pct: None,
            target_p99_ms: None,
            tick_ms: 1000,
            hpa: HpaConfig::default(),
            kpa: KpaConfig::default(),
            step: StepConfig::default(),
            tuned: TunedConfig::default(),
            schedule: ScheduleConfig::default(),
            predictive: PredictiveConfig::default(),
        }
    }
}

/// HorizontalPodAutoscaler settings; defaults are Kubernetes' (autoscaling/v2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HpaConfig {
    /// Controller sync period, seconds (kube-controller-manager
    /// `--horizontal-pod-autoscaler-sync-period`, default 15).
    pub sync_period_s: u64,
    /// Ratios within `1 ± tolerance` of the target cause no change (default 0.1).
    pub tolerance: f64,
    /// `behavior.scaleUp`: window 0 s, Pods 4 and Percent 100 per 15 s, select Max.
    pub scale_up: ScalingRules,
    /// `behavior.scaleDown`: window 300 s, Percent 100 per 15 s, select Max.
    pub scale_down: ScalingRules,
}

impl Default for HpaConfig {
    fn default() -> Self {
        Self {
            sync_period_s: 15,
            tolerance: 0.1,
            scale_up: ScalingRules::hpa_scale_up(),
            scale_down: ScalingRules::hpa_scale_down(),
        }
    }
}

/// One direction of an HPA `behavior` (`HPAScalingRules`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScalingRules {
    /// Stabilisation window, seconds (0-3600): scale-up uses the minimum recommendation
    /// over it, scale-down the maximum.
    pub stabilization_window_s: u64,
    /// How to combine the rate policies: "max" (most permissive), "min", "disabled".
    pub select_policy: SelectPolicy,
    /// Rate policies: at most this change per period.
    pub policies: Vec<RatePolicy>,
}

impl Default for ScalingRules {
    fn default() -> Self {
        Self::hpa_scale_up()
    }
}

impl ScalingRules {
    /// Kubernetes' default `scaleUp`.
    pub fn hpa_scale_up() -> Self {
        Self {
            stabilization_window_s: 0,
            select_policy: SelectPolicy::Max,
            policies: vec![
                RatePolicy {
                    kind: RatePolicyKind::Pods,
                    value: 4,
                    period_s: 15,
                },
                RatePolicy {
                    kind: RatePolicyKind::Percent,
                    value: 100,
                    period_s: 15,
                },
            ],
        }
    }

    /// Kubernetes' default `scaleDown`.
    pub fn hpa_scale_down() -> Self {
        Self {
            stabilization_window_s: 300,
            select_policy: SelectPolicy::Max,
            policies: vec![RatePolicy {
                kind: RatePolicyKind::Percent,
                value: 100,
                period_s: 15,
            }],
        }
    }

    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.stabilization_window_s > 3600 {
            return Err(invalid(
                format!("{field}.stabilization_window_s"),
                "must be 0..=3600 seconds",
            ));
        }
        if self.policies.is_empty() && self.select_policy != SelectPolicy::Disabled {
            return Err(invalid(
                format!("{field}.policies"),
                "at least one rate policy is needed unless select_policy = \"disabled\"",
            ));
        }
        for (i, p) in self.policies.iter().enumerate() {
            if p.value == 0 {
                return Err(invalid(
                    format!("{field}.policies[{i}].value"),
                    "must be greater than 0",
                ));
            }
            if p.period_s == 0 || p.period_s > 1800 {
                return Err(invalid(
                    format!("{field}.policies[{i}].period_s"),
                    "must be 1..=1800 seconds",
                ));
            }
        }
        Ok(())
    }
}

/// `selectPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectPolicy {
    /// The policy allowing the largest change.
    #[default]
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// One `HPAScalingPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatePolicy {
    /// "pods" (instances) or "percent".
    pub kind: RatePolicyKind,
    /// Instances or percent allowed per period (> 0).
    pub value: u32,
    /// The period, seconds (1-1800).
    pub period_s: u64,
}

/// `HPAScalingPolicyType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RatePolicyKind {
    /// A number of instances per period.
    Pods,
    /// A percentage of the instance count at the start of the period.
    Percent,
}

/// Knative KPA settings; defaults are Knative's `config-autoscaler`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KpaConfig {
    /// Decision interval, seconds (Knative's tick, 2).
    pub tick_s: u64,
    /// Stable window, seconds (6-3600, default 60).
    pub stable_window_s: u64,
    /// Panic window as a percentage of the stable window (1-100, default 10 = 6 s).
    pub panic_window_pct: f64,
    /// Panic when panic-window desired / ready reaches this percentage (default 200).
    pub panic_threshold_pct: f64,
    /// Share of the target the KPA aims at (`container-concurrency-target-percentage`,
    /// default 0.7).
    pub target_utilisation: f64,
    /// Max scale-up rate: at most `ceil(rate x ready)` instances (default 1000).
    pub max_scale_up_rate: f64,
    /// Max scale-down rate: at least `floor(ready / rate)` instances (default 2).
    pub max_scale_down_rate: f64,
    /// Scale-down delay, seconds: hold the max decision over this window (default 0).
    pub scale_down_delay_s: u64,
}

impl Default for KpaConfig {
    fn default() -> Self {
        Self {
            tick_s: 2,
            stable_window_s: 60,
            panic_window_pct: 10.0,
            panic_threshold_pct: 200.0,
            target_utilisation: 0.7,
            max_scale_up_rate: 1000.0,
            max_scale_down_rate: 2.0,
            scale_down_delay_s: 0,
        }
    }
}

/// Step scaling: the breach of the target metric, in percent above (or below) the
/// target, selects a step that adds or removes instances; a cooldown follows each change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StepConfig {
    /// Which `target_*` metric the steps read (must have its target set).
    pub metric: MetricKind,
    /// Evaluation interval, seconds.
    pub evaluate_every_s: u64,
    /// No further change for this long after a change, seconds.
    pub cooldown_s: u64,
    /// Steps; the first whose `[lower_pct, upper_pct)` holds the breach applies.
    pub steps: Vec<StepRule>,
}

impl Default for StepConfig {
    fn default() -> Self {
        let rule = |lower: Option<f64>, upper: Option<f64>, adjust: i32| StepRule {
            lower_pct: lower,
            upper_pct: upper,
            adjust_instances: adjust,
        };
        Self {
            metric: MetricKind::InFlight,
            evaluate_every_s: 10,
            cooldown_s: 60,
            steps: vec![
                rule(Some(10.0), Some(50.0), 1),
                rule(Some(50.0), Some(100.0), 2),
                rule(Some(100.0), None, 4),
                rule(None, Some(-30.0), -1),
            ],
        }
    }
}

/// One step adjustment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRule {
    /// Lower bound of the breach, percent of target above it (inclusive); absent means
    /// unbounded below.
    #[serde(default)]
    pub lower_pct: Option<f64>,
    /// Upper bound of the breach, percent (exclusive); absent means unbounded above.
    #[serde(default)]
    pub upper_pct: Option<f64>,
    /// Instances to add (positive) or remove (negative).
    pub adjust_instances: i32,
}

/// Our default policy (see `tuned.rs` for the algorithm and why each knob exists).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TunedConfig {
    /// Decision interval, seconds.
    pub decide_every_s: u64,
    /// Window the stable (scale-down) average is taken over, seconds.
    pub stable_window_s: u64,
    /// Window the panic-mode trigger average is taken over, seconds.
    pub panic_window_s: u64,
    /// Window the scale-up need is averaged over, seconds (short: react within seconds).
    pub up_window_s: u64,
    /// A queue seen while saturated should drain within this many seconds of the new
    /// capacity arriving: it adds queue x latency / backlog_drain_s to the concurrency
    /// needed.
    pub backlog_drain_s: u64,
    /// While panicking, the rising trend is extrapolated over the instance start-up time
    /// (measured by the shell, else this many seconds).
    pub default_startup_s: f64,
    /// The extrapolated need is at most this multiple of the current short-window need.
    pub max_trend_factor: f64,
    /// Enter panic mode when panic-window demand / ready capacity reaches this ratio.
    pub panic_threshold: f64,
    /// Ratios within `1 ± tolerance` of the target cause no change.
    pub tolerance: f64,
    /// Scale-up stabilisation and cap per step (HPA semantics).
    pub scale_up: ScalingRules,
    /// Scale-down stabilisation and rate (HPA semantics).
    pub scale_down: ScalingRules,
    /// No scale-down for this long after the last scale-up, seconds.
    pub scale_down_cooldown_s: u64,
    /// Static headroom: every need is multiplied by at least this (1 = aim exactly at
    /// the target; 1.2 = keep 20% spare).
    pub headroom: f64,
    /// Headroom that follows burstiness: `headroom + burst_headroom x cv`, where cv is
    /// the coefficient of variation of the per-second arrival need over the stable
    /// window (0 = off).
    pub burst_headroom: f64,
    /// Upper bound of the combined headroom.
    pub max_headroom: f64,
    /// Warm-up after the policy's first sample, seconds: until it ends, the queue signals
    /// (in-flight, CPU, p99) count only as far as the arrival rate explains them, since
    /// a fleet that has just started serves its first requests cold (0 = off).
    pub warmup_s: u64,
}

impl Default for TunedConfig {
    fn default() -> Self {
        Self {
            decide_every_s: 1,
            stable_window_s: 60,
            panic_window_s: 6,
            up_window_s: 2,
            backlog_drain_s: 5,
            default_startup_s: 30.0,
            max_trend_factor: 2.0,
            panic_threshold: 2.0,
            tolerance: 0.1,
            scale_up: ScalingRules {
                stabilization_window_s: 0,
                select_policy: SelectPolicy::Max,
                policies: vec![
                    RatePolicy {
                        kind: RatePolicyKind::Pods,
                        value: 4,
                        period_s: 10,
                    },
                    RatePolicy {
                        kind: RatePolicyKind::Percent,
                        value: 900,
                        period_s: 10,
                    },
                ],
            },
            scale_down: ScalingRules {
                stabilization_window_s: 300,
                select_policy: SelectPolicy::Max,
                policies: vec![RatePolicy {
                    kind: RatePolicyKind::Percent,
                    value: 50,
                    period_s: 30,
                }],
            },
            scale_down_cooldown_s: 120,
            headroom: 1.2,
            burst_headroom: 1.0,
            max_headroom: 1.5,
            warmup_s: 5,
        }
    }
}

/// Scheduled minimums.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Windows; while `now` is inside one, at least its `min_instances` run (the largest
    /// of overlapping windows wins).
    pub windows: Vec<ScheduleWindow>,
}

/// A repeating window: inside `[start_s, end_s)` of every period of `period_s` seconds,
/// counted from the epoch of `now` (with `now` = time since the Unix epoch and the default
/// 86 400 s period, `start_s = 8 * 3600` is 08:00 UTC every day).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleWindow {
    /// Length of the repeating period, seconds (default 86 400: daily).
    #[serde(default = "default_day_s")]
    pub period_s: u64,
    /// Start of the window within the period, seconds.
    pub start_s: u64,
    /// End of the window within the period, seconds (exclusive, > start_s, <= period_s).
    pub end_s: u64,
    /// Minimum instances inside the window.
    pub min_instances: u32,
}

fn default_day_s() -> u64 {
    86_400
}

/// Predictive pre-scaling: an additive Holt-Winters forecast of demand, scale-out only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PredictiveConfig {
    /// Apply the forecast floor on top of the reactive policy.
    pub enabled: bool,
    /// Which metric's fleet total is forecast ("rps" or "in_flight"; its target must be
    /// set): forecast instances = ceil(forecast total / target).
    pub metric: MetricKind,
    /// Seasonal period, seconds (a multiple of `bucket_s`).
    pub season_period_s: u64,
    /// Demand is averaged into buckets of this many seconds before fitting.
    pub bucket_s: u64,
    /// Level smoothing, 0 < alpha < 1.
    pub alpha: f64,
    /// Trend smoothing, 0 <= beta < 1.
    pub beta: f64,
    /// Seasonal smoothing, 0 <= gamma < 1.
    pub gamma: f64,
    /// Start-up time used until the shell reports a measured one, seconds.
    pub default_startup_s: f64,
    /// Extra lead on top of the start-up time, seconds.
    pub extra_lead_s: f64,
    /// Forecast only after this many full seasons of history.
    pub min_seasons: u32,
}

impl Default for PredictiveConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            metric: MetricKind::Rps,
            season_period_s: 86_400,
            bucket_s: 60,
            alpha: 0.3,
            beta: 0.01,
            gamma: 0.3,
            default_startup_s: 30.0,
            extra_lead_s: 30.0,
            min_seasons: 1,
        }
    }
}

fn positive_finite(field: &str, v: f64) -> Result<(), ConfigError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(invalid(field, "must be a finite number greater than 0"))
    }
}

impl Config {
    /// Parses a policy file or `[autoscale]` section from TOML and validates it.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// How often the shell should call [`crate::Policy::decide`].
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms)
    }

    /// The configured targets, in [`MetricKind::ALL`] order.
    pub fn targets(&self) -> Vec<(MetricKind, f64)> {
        MetricKind::ALL
            .into_iter()
            .filter_map(|m| self.target(m).map(|t| (m, t)))
            .collect()
    }

    /// The target set for `metric`, if any.
    pub fn target(&self, metric: MetricKind) -> Option<f64> {
        match metric {
            MetricKind::InFlight => self.target_in_flight,
            MetricKind::Rps => self.target_rps,
            MetricKind::Cpu => self.target_cpu_pct,
            MetricKind::P99Ms => self.target_p99_ms,
        }
    }

    /// Checks every field; the error names the first invalid one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.min_instances < 1 {
            return Err(invalid("min_instances", "must be at least 1"));
        }
        if self.max_instances < self.min_instances {
            return Err(invalid(
                "max_instances",
                format!("must be >= min_instances ({})", self.min_instances),
            ));
        }
        if self.max_instances > 10_000 {
            return Err(invalid("max_instances", "must be at most 10000"));
        }
        for (name, v) in [
            ("target_in_flight", self.target_in_flight),
            ("target_rps", self.target_rps),
            ("target_cpu_pct", self.target_cpu_pct),
            ("target_p99_ms", self.target_p99_ms),
        ] {
            if let Some(v) = v {
                positive_finite(name, v)?;
            }
        }
        if self.target_cpu_pct.is_some_and(|v| v > 100.0) {
            return Err(invalid("target_cpu_pct", "must be 1..=100 percent"));
        }
        if self.targets().is_empty() {
            return Err(invalid(
                "target_in_flight",
                "set at least one of target_in_flight, target_rps, target_cpu_pct, target_p99_ms",
            ));
        }
        if self.tick_ms == 0 || self.tick_ms > 60_000 {
            return Err(invalid("tick_ms", "must be 1..=60000 milliseconds"));
        }
        // HPA
        let h = &self.hpa;
        if h.sync_period_s == 0 || h.sync_period_s > 3600 {
            return Err(invalid("hpa.sync_period_s", "must be 1..=3600 seconds"));
        }
        if !(0.0..1.0).contains(&h.tolerance) {
            return Err(invalid("hpa.tolerance", "must be 0 <= tolerance < 1"));
        }
        h.scale_up.validate("hpa.scale_up")?;
        h.scale_down.validate("hpa.scale_down")?;
        // KPA
        let k = &self.kpa;
        if self.policy == PolicyKind::Kpa
            && self.target_in_flight.is_none()
            && self.target_rps.is_none()
        {
            return Err(invalid(
                "target_in_flight",
                "policy \"kpa\" scales on concurrency or RPS: set target_in_flight or target_rps",
            ));
        }
        if k.tick_s == 0 || k.tick_s > 60 {
            return Err(invalid("kpa.tick_s", "must be 1..=60 seconds"));
        }
        if k.stable_window_s < 6 || k.stable_window_s > 3600 {
            return Err(invalid("kpa.stable_window_s", "must be 6..=3600 seconds"));
        }
        if !(k.panic_window_pct >= 1.0 && k.panic_window_pct <= 100.0) {
            return Err(invalid("kpa.panic_window_pct", "must be 1..=100 percent"));
        }
        if !(k.panic_threshold_pct >= 110.0 && k.panic_threshold_pct <= 1000.0) {
            return Err(invalid(
                "kpa.panic_threshold_pct",
                "must be 110..=1000 percent",
            ));
        }
        if !(k.target_utilisation > 0.0 && k.target_utilisation <= 1.0) {
            return Err(invalid("kpa.target_utilisation", "must be in (0, 1]"));
        }
        if !(k.max_scale_up_rate.is_finite() && k.max_scale_up_rate > 1.0) {
            return Err(invalid(
                "kpa.max_scale_up_rate",
                "must be a finite number > 1",
            ));
        }
        if !(k.max_scale_down_rate.is_finite() && k.max_scale_down_rate > 1.0) {
            return Err(invalid(
                "kpa.max_scale_down_rate",
                "must be a finite number > 1",
            ));
        }
        if k.scale_down_delay_s > 3600 {
            return Err(invalid(
                "kpa.scale_down_delay_s",
                "must be 0..=3600 seconds",
            ));
        }
        // Step
        let s = &self.step;
        if self.policy == PolicyKind::Step && self.target(s.metric).is_none() {
            return Err(invalid(
                "step.metric",
                format!("target_{} is not set", s.metric.as_str()),
            ));
        }
        if s.evaluate_every_s == 0 || s.evaluate_every_s > 3600 {
            return Err(invalid("step.evaluate_every_s", "must be 1..=3600 seconds"));
        }
        if s.cooldown_s > 86_400 {
            return Err(invalid("step.cooldown_s", "must be 0..=86400 seconds"));
        }
        if s.steps.is_empty() {
            return Err(invalid("step.steps", "at least one step is needed"));
        }
        for (i, r) in s.steps.iter().enumerate() {
            for (name, v) in [("lower_pct", r.lower_pct), ("upper_pct", r.upper_pct)] {
                if v.is_some_and(|v| !v.is_finite()) {
                    return Err(invalid(format!("step.steps[{i}].{name}"), "must be finite"));
                }
            }
            if let (Some(lo), Some(hi)) = (r.lower_pct, r.upper_pct)
                && lo >= hi
            {
                return Err(invalid(
                    format!("step.steps[{i}].upper_pct"),
                    "must be greater than lower_pct",
                ));
            }
            if r.adjust_instances == 0 {
                return Err(invalid(
                    format!("step.steps[{i}].adjust_instances"),
                    "must not be 0",
                ));
            }
            for (j, other) in s.steps.iter().enumerate().take(i) {
                let lo = |r: &StepRule| r.lower_pct.unwrap_or(f64::NEG_INFINITY);
                let hi = |r: &StepRule| r.upper_pct.unwrap_or(f64::INFINITY);
                if lo(r) < hi(other) && lo(other) < hi(r) {
                    return Err(invalid(
                        format!("step.steps[{i}]"),
                        format!("overlaps step.steps[{j}]"),
                    ));
                }
            }
        }
        // Tuned (default)
        let t = &self.tuned;
        if t.decide_every_s == 0 || t.decide_every_s > 3600 {
            return Err(invalid(
                "default.decide_every_s",
                "must be 1..=3600 seconds",
            ));
        }
        if t.stable_window_s == 0 || t.stable_window_s > 3600 {
            return Err(invalid(
                "default.stable_window_s",
                "must be 1..=3600 seconds",
            ));
        }
        if t.up_window_s == 0 || t.up_window_s > t.stable_window_s {
            return Err(invalid(
                "default.up_window_s",
                "must be 1..=stable_window_s seconds",
            ));
        }
        if !(t.default_startup_s.is_finite() && (0.0..=3600.0).contains(&t.default_startup_s)) {
            return Err(invalid(
                "default.default_startup_s",
                "must be 0..=3600 seconds",
            ));
        }
        if !(t.max_trend_factor.is_finite() && (1.0..=10.0).contains(&t.max_trend_factor)) {
            return Err(invalid("default.max_trend_factor", "must be 1..=10"));
        }
        if !(t.headroom.is_finite() && (1.0..=3.0).contains(&t.headroom)) {
            return Err(invalid("default.headroom", "must be 1..=3"));
        }
        if !(t.burst_headroom.is_finite() && (0.0..=5.0).contains(&t.burst_headroom)) {
            return Err(invalid("default.burst_headroom", "must be 0..=5"));
        }
        if !(t.max_headroom.is_finite() && (t.headroom..=3.0).contains(&t.max_headroom)) {
            return Err(invalid(
                "default.max_headroom",
                "must be between default.headroom and 3",
            ));
        }
        if t.backlog_drain_s == 0 || t.backlog_drain_s > 3600 {
            return Err(invalid(
                "default.backlog_drain_s",
                "must be 1..=3600 seconds",
            ));
        }
        if t.panic_window_s == 0 || t.panic_window_s > t.stable_window_s {
            return Err(invalid(
                "default.panic_window_s",
                "must be 1..=stable_window_s seconds",
            ));
        }
        if !(t.panic_threshold.is_finite() && t.panic_threshold > 1.0) {
            return Err(invalid(
                "default.panic_threshold",
                "must be a finite number > 1",
            ));
        }
        if !(0.0..1.0).contains(&t.tolerance) {
            return Err(invalid("default.tolerance", "must be 0 <= tolerance < 1"));
        }
        t.scale_up.validate("default.scale_up")?;
        t.scale_down.validate("default.scale_down")?;
        if t.scale_down_cooldown_s > 3600 {
            return Err(invalid(
                "default.scale_down_cooldown_s",
                "must be 0..=3600 seconds",
            ));
        }
        if t.warmup_s > t.stable_window_s {
            return Err(invalid(
                "default.warmup_s",
                "must be 0..=stable_window_s seconds",
            ));
        }
        // Schedule
        for (i, w) in self.schedule.windows.iter().enumerate() {
            let f = |n: &str| format!("schedule.windows[{i}].{n}");
            if w.period_s == 0 {
                return Err(invalid(f("period_s"), "must be greater than 0"));
            }
            if w.end_s <= w.start_s {
                return Err(invalid(f("end_s"), "must be greater than start_s"));
            }
            if w.end_s > w.period_s {
                return Err(invalid(f("end_s"), "must be <= period_s"));
            }
            if w.min_instances > self.max_instances {
                return Err(invalid(f("min_instances"), "must be <= max_instances"));
            }
        }
        // Predictive
        let p = &self.predictive;
        if p.enabled {
            if !matches!(p.metric, MetricKind::Rps | MetricKind::InFlight) {
                return Err(invalid(
                    "predictive.metric",
                    "must be \"rps\" or \"in_flight\"",
                ));
            }
            if self.target(p.metric).is_none() {
                return Err(invalid(
                    "predictive.metric",
                    format!("target_{} is not set", p.metric.as_str()),
                ));
            }
        }
        if p.bucket_s == 0 || p.bucket_s > 86_400 {
            return Err(invalid("predictive.bucket_s", "must be 1..=86400 seconds"));
        }
        if p.season_period_s < 2 * p.bucket_s || !p.season_period_s.is_multiple_of(p.bucket_s) {
            return Err(invalid(
                "predictive.season_period_s",
                "must be a multiple of bucket_s and at least 2 buckets",
            ));
        }
        if p.season_period_s / p.bucket_s > 10_000 {
            return Err(invalid(
                "predictive.season_period_s",
                "at most 10000 buckets per season",
            ));
        }
        if !(p.alpha > 0.0 && p.alpha < 1.0) {
            return Err(invalid("predictive.alpha", "must be 0 < alpha < 1"));
        }
        if !(0.0..1.0).contains(&p.beta) {
            return Err(invalid("predictive.beta", "must be 0 <= beta < 1"));
        }
        if !(0.0..1.0).contains(&p.gamma) {
            return Err(invalid("predictive.gamma", "must be 0 <= gamma < 1"));
        }
        for (name, v) in [
            ("predictive.default_startup_s", p.default_startup_s),
            ("predictive.extra_lead_s", p.extra_lead_s),
        ] {
            if !(v.is_finite() && (0.0..=3600.0).contains(&v)) {
                return Err(invalid(name, "must be 0..=3600 seconds"));
            }
        }
        if p.min_seasons == 0 || p.min_seasons > 100 {
            return Err(invalid("predictive.min_seasons", "must be 1..=100"));
        }
        Ok(())
    }
}
