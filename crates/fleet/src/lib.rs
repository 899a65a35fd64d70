//! Async fleet supervisor: spawns service instances as local processes, admits them to
//! the balancer only once ready, drains them on the way out, restarts crashed ones with
//! back-off, rolls them one at a time, and applies the autoscaler's decisions.
//!
//! The decisions are pure ([`plan`]); the rest is the shell that applies them. Nothing in
//! this crate decides how many instances there should be: that is `autoscale`'s job.

pub mod admin;
pub mod config;
pub mod cpu;
pub mod deployment;
pub mod envelope;
pub mod k8s;
pub mod k8s_workers;
pub mod plan;
pub mod process;
pub mod registry;
pub mod scaler;
pub mod supervisor;
pub mod up;
pub mod workers;

pub use config::Config;
pub use deployment::{DeploymentConfig, ServiceConfig};
pub use envelope::{Envelope, EnvelopeError, EnvelopeStats, Resources};
pub use plan::{Action, Desired, Phase};
pub use registry::{NoBalancer, Registry};
pub use scaler::{Autoscaler, BackendSample, BalancerSample, MetricsSource, ScalerStatus};
pub use supervisor::{Fleet, FleetHandle, FleetStatus, InstanceStatus};

/// Everything that can go wrong in the fleet.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A configuration field is invalid; `field` is its dotted path.
    #[error("invalid config: {field}: {reason}")]
    Config {
        /// Dotted path of the field, e.g. `fleet.instances`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A process could not be started.
    #[error("spawn: {0}")]
    Spawn(String),
    /// CPU pinning failed.
    #[error("cpu pinning: {0}")]
    Pin(String),
    /// The balancer refused an operation.
    #[error("balancer: {0}")]
    Balancer(String),
    /// Resource envelopes (cgroups) are unavailable or a group operation failed.
    #[error(transparent)]
    Envelope(#[from] envelope::EnvelopeError),
}
