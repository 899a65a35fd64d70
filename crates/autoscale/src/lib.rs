//! Pure autoscaling: policies (HPA clone, KPA clone, step, scheduled, predictive and our
//! `default`), HPA-style stabilisation and rate limits, a seeded trace simulator and the
//! SPEC elasticity metrics.
//!
//! The crate is a pure core in the sozu / linkerd2-proxy sense: every decision takes `now`
//! (a [`Duration`] since an epoch the caller chooses) and a [`ScalingInput`] and returns a
//! [`ScalingDecision`] with a human-readable reason. It never reads the clock, opens a
//! socket, spawns a task or draws from a global random source (the simulator takes its
//! seed as an argument). The async shell that runs instances (`crates/fleet`) drives it.
//!
//! # How a shell drives a policy
//! ```
//! use std::time::Duration;
//! use autoscale::{Config, InstanceSample, ScalingInput, build_policy};
//!
//! let cfg: Config = toml::from_str("policy = \"hpa\"\ntarget_in_flight = 4.0").unwrap();
//! let mut policy = build_policy(&cfg).unwrap();
//! let input = ScalingInput {
//!     current: 2,
//!     ready: 2,
//!     instances: vec![InstanceSample::ready_with_in_flight(8.0); 2],
//!     ..ScalingInput::default()
//! };
//! // Call every `cfg.tick()`; the policy decides on its own cadence (HPA: 15 s).
//! let d = policy.decide(Duration::from_secs(0), &input);
//! assert_eq!(d.desired, 4); // ratio 2.0 x 2 ready instances
//! println!("{}", d.reason);
//! ```
//!
//! Architecture invariant: no tokio, no hyper, no `std::time::Instant::now`, no
//! `SystemTime::now`, no thread-local RNG anywhere in this crate.

pub mod behavior;
pub mod config;
pub mod elasticity;
pub mod evaluate;
pub mod families;
pub mod forecast;
pub mod hpa;
pub mod kpa;
pub mod metrics;
pub mod predictive;
pub mod render;
pub mod rng;
pub mod schedule;
pub mod sim;
pub mod step;
pub mod throttle;
pub mod trace;
pub mod tuned;

use std::time::Duration;

pub use config::{
    Config, ConfigError, HpaConfig, KpaConfig, PolicyKind, PredictiveConfig, RatePolicy,
    RatePolicyKind, ScalingRules, ScheduleConfig, ScheduleWindow, SelectPolicy, StepConfig,
    StepRule, TunedConfig,
};
pub use metrics::{AggregateSample, InstanceSample, MetricKind};
pub use sim::{CapacityModel, SimError, SimReport, SimRun, simulate};
pub use trace::{Trace, TraceError};

/// Everything a policy may look at in one decision: the fleet's size and the latest
/// metrics from the balancer and the instances.
///
/// The fleet builds one per tick from what it observes; the simulator builds the same
/// shape from its capacity model, so a policy cannot tell them apart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScalingInput {
    /// Instances the fleet currently maintains, starting ones included: the HPA's
    /// `spec.replicas`. Rate limits and the returned `desired` are relative to this.
    pub current: u32,
    /// Instances that passed readiness and are admitted to the balancer.
    pub ready: u32,
    /// One sample per instance the fleet maintains (ready or starting), in any order.
    /// May be empty when only balancer aggregates are known.
    pub instances: Vec<InstanceSample>,
    /// Totals seen at the balancer across all instances over the last sample interval.
    pub aggregate: AggregateSample,
    /// Measured instance start-up time (spawn until ready), seconds, when the fleet has
    /// measured one. Predictive scaling pre-launches this far ahead.
    pub startup_s: Option<f64>,
}

/// What a policy wants, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingDecision {
    /// The instance count the fleet should converge to (always within min..=max).
    pub desired: u32,
    /// The policy's raw recommendation before stabilisation, rate limits, floors and
    /// min/max; equal to `desired` when nothing limited it.
    pub recommended: u32,
    /// Human-readable: which metric and ratio drove it, which window, rate policy,
    /// cooldown, schedule or forecast limited it. One line, no trailing newline.
    pub reason: String,
    /// True while a panic mode (KPA-style) is active: the policy is not scaling down.
    pub panic: bool,
    /// False when the policy did not re-evaluate on this call (between two of its sync
    /// periods) and repeated its previous decision.
    pub evaluated: bool,
}

impl ScalingDecision {
    /// A decision that keeps `current` (clamped into `min..=max`) for `reason`.
    pub fn hold(current: u32, reason: impl Into<String>) -> Self {
        Self {
            desired: current,
            recommended: current,
            reason: reason.into(),
            panic: false,
            evaluated: true,
        }
    }
}

/// An autoscaling policy: pure, stateful (windows, events, forecasts), driven by the
/// caller's clock.
///
/// Call [`Policy::decide`] every [`Config::tick`] (1 s by default) with non-decreasing
/// `now`; the policy keeps its own cadence (HPA every 15 s, KPA every 2 s) and between
/// evaluations repeats its last decision with `evaluated = false`, while still recording
/// the samples it needs (the KPA's 1 s buckets, the forecast's history).
pub trait Policy: Send {
    /// Decides the desired instance count at `now` from `input`. Never panics on any
    /// input; with no usable metric it holds `input.current` and says so in the reason.
    fn decide(&mut self, now: Duration, input: &ScalingInput) -> ScalingDecision;
    /// Short name for logs and reports ("hpa", "kpa", "default", ...).
    fn name(&self) -> &str;
}

/// Builds the policy `cfg` describes, after validating it (see [`Config::validate`]).
///
/// The reactive policy is chosen by `cfg.policy`; when `cfg.schedule.windows` is not
/// empty a scheduled floor is applied on top, and when `cfg.predictive.enabled` a
/// forecast floor (scale-out only) is applied on top of that.
pub fn build_policy(cfg: &Config) -> Result<Box<dyn Policy>, ConfigError> {
    cfg.validate()?;
    let reactive: Box<dyn Policy> = match cfg.policy {
        PolicyKind::Hpa => Box::new(hpa::Hpa::new(cfg)),
        PolicyKind::Kpa => Box::new(kpa::Kpa::new(cfg)),
        PolicyKind::Step => Box::new(step::StepScaling::new(cfg)),
        PolicyKind::Default => Box::new(tuned::Tuned::new(cfg)),
    };
    let with_schedule: Box<dyn Policy> = if cfg.schedule.windows.is_empty() {
        reactive
    } else {
        Box::new(schedule::Scheduled::new(reactive, cfg))
    };
    Ok(if cfg.predictive.enabled {
        Box::new(predictive::Predictive::new(with_schedule, cfg))
    } else {
        with_schedule
    })
}
