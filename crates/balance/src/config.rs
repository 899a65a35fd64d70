//! Configuration types for the balancing core, parsed with serde and validated once.
//!
//! Every struct is `#[serde(default, deny_unknown_fields)]` so a TOML section may name only
//! the fields it changes and a typo is refused. Units are in field names (`_ms`, `_per_s`,
//! `_percent`). `validate_at(path)` names the offending field with its full path (the proxy
//! passes `"balancer.health"` and so on); `validate()` uses the default `balancer.*` path.
//!
//! This module must never read the environment or the clock: it only describes settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A configuration value that is out of range, naming the field by its full path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {message}")]
pub struct ConfigError {
    /// Full path of the field, e.g. `balancer.health.rise`.
    pub field: String,
    /// What is wrong with it, e.g. `must be >= 1`.
    pub message: String,
}

impl ConfigError {
    /// An error for `path.name` with `message`.
    pub fn new(path: &str, name: &str, message: impl Into<String>) -> Self {
        let field = if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        };
        ConfigError {
            field,
            message: message.into(),
        }
    }
}

fn check(ok: bool, path: &str, name: &str, message: &str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(path, name, message))
    }
}

/// Which algorithm picks the backend for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyKind {
    /// Each eligible backend in turn, ignoring weights.
    RoundRobin,
    /// nginx's smooth weighted round robin: proportional to weight, without bursts.
    WeightedRoundRobin,
    /// The backend with the fewest in-flight requests per unit of weight; ties at random.
    LeastConnections,
    /// Power of two random choices, comparing peak-EWMA latency x (in-flight + 1).
    #[default]
    P2cPeakEwma,
    /// Weighted random.
    Random,
    /// Consistent hash (Maglev) of the client IP address.
    IpHash,
    /// Pin a client to a backend by name (carried in a cookie); the fallback strategy
    /// picks when there is no pin or the pinned backend is not eligible.
    Sticky,
    /// Consistent hash (Maglev) of a request key (see [`HashConfig::key`]).
    ConsistentHash,
}

impl StrategyKind {
    /// Every strategy, for benches and tests.
    pub const ALL: [StrategyKind; 8] = [
        StrategyKind::RoundRobin,
        StrategyKind::WeightedRoundRobin,
        StrategyKind::LeastConnections,
        StrategyKind::P2cPeakEwma,
        StrategyKind::Random,
        StrategyKind::IpHash,
        StrategyKind::Sticky,
        StrategyKind::ConsistentHash,
    ];

    /// The snake_case name used in config files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::RoundRobin => "round_robin",
            StrategyKind::WeightedRoundRobin => "weighted_round_robin",
            StrategyKind::LeastConnections => "least_connections",
            StrategyKind::P2cPeakEwma => "p2c_peak_ewma",
            StrategyKind::Random => "random",
            StrategyKind::IpHash => "ip_hash",
            StrategyKind::Sticky => "sticky",
            StrategyKind::ConsistentHash => "consistent_hash",
        }
    }
}

impl std::str::FromStr for StrategyKind {
    type Err = String;

    /// Parses the snake_case name (also accepting `-` for `_`, and `p2c`/`ewma` aliases).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        let alias = match norm.as_str() {
            "p2c" | "ewma" | "peak_ewma" => Some(StrategyKind::P2cPeakEwma),
            "wrr" | "smooth_weighted_round_robin" => Some(StrategyKind::WeightedRoundRobin),
            "least_conn" | "leastconn" => Some(StrategyKind::LeastConnections),
            "maglev" | "hash" => Some(StrategyKind::ConsistentHash),
            "rr" => Some(StrategyKind::RoundRobin),
            _ => None,
        };
        if let Some(kind) = alias {
            return Ok(kind);
        }
        StrategyKind::ALL
            .into_iter()
            .find(|k| k.name() == norm)
            .ok_or_else(|| {
                let names: Vec<&str> = StrategyKind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown strategy {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

impl std::fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What to do when no backend is eligible (all unhealthy, ejected or draining).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllDownPolicy {
    /// Ignore health and ejection and pick among all active (non-draining) backends:
    /// a health checker that is wrong about everyone should not take the site down.
    #[default]
    FailOpen,
    /// Pick nothing; the proxy answers 503 with Retry-After.
    Reject503,
}

/// Where the consistent-hash key comes from. The proxy extracts it; the core hashes bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKeySource {
    /// The value of a request header (`header:x-user-id`).
    Header(String),
    /// The value of a cookie (`cookie:session`).
    Cookie(String),
    /// The value of a query parameter (`query:user`).
    Query(String),
    /// The request path (`path`).
    Path,
    /// The client IP address (`client_ip`).
    ClientIp,
}

impl std::str::FromStr for HashKeySource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let named = |prefix: &str| {
            s.strip_prefix(prefix)
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
        };
        if s == "path" {
            Ok(HashKeySource::Path)
        } else if s == "client_ip" {
            Ok(HashKeySource::ClientIp)
        } else if let Some(n) = named("header:") {
            Ok(HashKeySource::Header(n.to_ascii_lowercase()))
        } else if let Some(n) = named("cookie:") {
            Ok(HashKeySource::Cookie(n))
        } else if let Some(n) = named("query:") {
            Ok(HashKeySource::Query(n))
        } else {
            Err(format!(
                "unknown hash key {s:?}; expected header:NAME, cookie:NAME, query:NAME, path or client_ip"
            ))
        }
    }
}

/// Consistent hashing settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HashConfig {
    /// Key to hash: `header:NAME`, `cookie:NAME`, `query:NAME`, `path` or `client_ip`.
    /// Requests without the key are spread by weighted random.
    pub key: String,
    /// Maglev lookup table size; must be a prime well above 100 x the backend count so
    /// peak/mean load stays near 1. 65537 serves up to a few hundred backends.
    pub table_size: u32,
}

impl Default for HashConfig {
    fn default() -> Self {
        HashConfig {
            key: "header:x-hash-key".to_string(),
            table_size: 65537,
        }
    }
}

impl HashConfig {
    /// The parsed key source (validated by [`HashConfig::validate_at`]).
    pub fn key_source(&self) -> Result<HashKeySource, String> {
        self.key.parse()
    }

    /// Checks the fields, naming them under `path`.
    pub fn validate_at(&self, path: &str) -> Result<(), ConfigError> {
        self.key_source()
            .map_err(|e| ConfigError::new(path, "key", format!("is invalid: {e}")))?;
        check(
            is_prime(self.table_size) && (251..=1_000_003).contains(&self.table_size),
            path,
            "table_size",
            "must be a prime between 251 and 1000003",
        )
    }
}

/// Whether `n` is prime (trial division; `n` is a config value, small).
pub(crate) fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while (d as u64) * (d as u64) <= n as u64 {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// Cookie stickiness settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StickyConfig {
    /// Cookie that carries the pinned backend's name.
    pub cookie: String,
    /// Strategy used when the request has no pin or the pinned backend is not eligible.
    pub fallback: StrategyKind,
}

impl Default for StickyConfig {
    fn default() -> Self {
        StickyConfig {
            cookie: "scaleout_backend".to_string(),
            fallback: StrategyKind::P2cPeakEwma,
        }
    }
}

impl StickyConfig {
    /// Checks the fields, naming them under `path`.
    pub fn validate_at(&self, path: &str) -> Result<(), ConfigError> {
        check(
            !self.cookie.is_empty()
                && self
                    .cookie
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            path,
            "cookie",
            "must be a non-empty cookie name of letters, digits, '-', '_' or '.'",
        )?;
        check(
            self.fallback != StrategyKind::Sticky,
            path,
            "fallback",
            "must not be sticky itself",
        )
    }
}

/// Peak-EWMA latency estimator settings (for `p2c_peak_ewma`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EwmaConfig {
    /// Decay time constant: a sample this old weighs 1/e of a fresh one.
    pub decay_ms: u64,
    /// Latency assumed for a backend that has not answered yet.
    pub default_rtt_ms: u64,
}

impl Default for EwmaConfig {
    fn default() -> Self {
        EwmaConfig {
            decay_ms: 10_000,
            default_rtt_ms: 30,
        }
    }
}

impl EwmaConfig {
    /// Checks the fields, naming them under `path`.
    pub fn validate_at(&self, path: &str) -> Result<(), ConfigError> {
        check(
            (1..=3_600_000).contains(&self.decay_ms),
            path,
            "decay_ms",
            "must be between 1 and 3600000",
        )?;
        check(
            self.default_rtt_ms <= 600_000,
            path,
            "default_rtt_ms",
            "must be <= 600000",
        )
    }
}

/// Active health check settings (the proxy performs the HTTP checks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Whether active checks run at all.
    pub enabled: bool,
    /// Empty (the default): the check is a TCP connect, which works in front of any
    /// server. A path such as `/healthz`: the check is `GET <path>` and passes on a
    /// 2xx or 3xx answer (use it when the backends serve such a path).
    pub path: String,
    /// Time between two checks of one backend.
    pub interval_ms: u64,
    /// A check that takes longer than this fails.
    pub timeout_ms: u64,
    /// Consecutive successes that mark an unhealthy backend healthy.
    pub rise: u32,
    /// Consecutive failures that mark a healthy backend unhealthy.
    pub fall: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            enabled: true,
            path: String::new(),
            interval_ms: 1000,
            timeout_ms: 500,
            rise: 2,
            fall: 2,
        }
    }
}

impl HealthConfig {
    /// The HTTP path to check, or `None` for a TCP connect check.
    pub fn http_path(&self) -> Option<&str> {
        (!self.path.is_empty()).then_some(self.path.as_str())
    }

    /// The interval as a duration.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// The timeout as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Checks the fields, naming them under `path`.
    pub fn validate_at(&self, path: &str) -> Result<(), ConfigError> {
        check(
            self.path.is_empty()
                || (self.path.starts_with('/')
                    && self.path.len() <= 1024
                    && self.path.bytes().all(|b| b.is_ascii_graphic())),
            path,
            "path",
            "must be empty (TCP connect check) or start with '/' (HTTP check), printable ASCII, at most 1024 bytes",
        )?;
        check(
            (10..=3_600_000).contains(&self.interval_ms),
            path,
            "interval_ms",
            "must be between 10 and 3600000",
        )?;
        check(self.timeout_ms >= 1, path, "timeout_ms", "must be >= 1")?;
        check(
            self.timeout_ms <= self.interval_ms,
            path,
            "timeout_ms",
            "must be <= interval_ms",
        )?;
        check(
            (1..=100).contains(&self.rise),
            path,
            "rise",
            "must be >= 1 and <= 100",
        )?;
        check(
            (1..=100).contains(&self.fall),
            path,
            "fall",
            "must be >= 1 and <= 100",
        )
    }
}

/// Passive outlier detection settings (ejection on consecutive failures).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutlierConfig {
    /// Whether passive ejection is on.
    pub enabled: bool,
    /// Consecutive 5xx or connect failures that eject a backend.
    pub consecutive_failures: u32,
    /// Ejection time for the first ejection; doubled for each further one.
    pub base_ejection_ms: u64,
    /// Upper bound on one ejection's length.
    pub max_ejection_ms: u64,
    /// Most of the pool that may be ejected at once, in percent. As in Envoy, one
    /// backend may always be ejected even when this share of the pool is below one.
    pub max_ejection_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            enabled: true,
            consecutive_failures: 5,
            base_ejection_ms: 5_000,
            max_ejection_ms: 300_000,
            max_ejection_percent: 50,
        }
    }
}

impl OutlierConfig {
    /// Checks the fields, naming them under `path`.
    pub fn validate_at(&self, path: &str) -> Result<(), ConfigError> {
        check(
            (1..=10_000).contains(&self.consecutive_failures),
            path,
            "consecutive_failures",
            "must be between 1 and 10000",
        )?;
        check(
            self.base_ejection_ms >= 1,
            path,
            "base_ejection_ms",
            "must be >= 1",
        )?;
        check(
            self.max_ejection_ms >= self.base_ejection_ms,
            path,
            "max_ejection_ms",
            "must be >= base_ejection_ms",
        )?;
        check(
            self.max_ejection_percent <= 100,
            path,
            "max_ejection_percent",
            "must be <= 100",
        )
    }
}

/// Retry policy and budget settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Most attempts per request, the first one included (1 disables retries).
    pub max_attempts: u32,
    /// Retries allowed as a share of requests over the window (0.2 = 20%).
    pub budget_ratio: f64,
    /// Retries allowed per second regardless of traffic, so a quiet pool can retry.
    pub min_retries_per_s: u32,
    /// Window over which requests and retries are counted.
    pub ttl_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 3,
            budget_ratio: 0.2,
            min_retries_per_s: 10,
            ttl_ms: 10_000,
        }
    }
}

impl RetryConfig {
    /// Checks the fields, naming them under `path`.
    pub fn validate_at(&self, path: &str) -> Result<(), ConfigError> {
        check(
            (1..=10).contains(&self.max_attempts),
            path,
            "max_attempts",
            "must be between 1 and 10",
        )?;
        check(
            self.budget_ratio.is_finite() && (0.0..=1000.0).contains(&self.budget_ratio),
            path,
            "budget_ratio",
            "must be between 0 and 1000",
        )?;
        check(
            self.min_retries_per_s <= 1_000_000,
            path,
            "min_retries_per_s",
            "must be <= 1000000",
        )?;
        check(
            (1000..=600_000).contains(&self.ttl_ms),
            path,
            "ttl_ms",
            "must be between 1000 and 600000",
        )
    }
}

/// Slow start: a newly added backend's weight ramps up over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlowStartConfig {
    /// Length of the ramp; 0 turns slow start off.
    pub window_ms: u64,
    /// Share of its weight a backend gets at the start of the ramp, in percent.
    pub min_weight_percent: u32,
    /// Curve shape as in Envoy: factor = (elapsed / window)^(1 / aggression);
    /// 1.0 is linear, larger values ramp faster at first.
    pub aggression: f64,
}

impl Default for SlowStartConfig {
    fn default() -> Self {
        SlowStartConfig {
            window_ms: 10_000,
            min_weight_percent: 10,
            aggression: 1.0,
        }
    }
}

impl SlowStartConfig {
    /// Checks the fields, naming them under `path`.
    pub fn validate_at(&self, path: &str) -> Result<(), ConfigError> {
        check(
            self.window_ms <= 3_600_000,
            path,
            "window_ms",
            "must be <= 3600000",
        )?;
        check(
            (1..=100).contains(&self.min_weight_percent),
            path,
            "min_weight_percent",
            "must be between 1 and 100",
        )?;
        check(
            self.aggression.is_finite() && self.aggression > 0.0 && self.aggression <= 100.0,
            path,
            "aggression",
            "must be > 0 and <= 100",
        )
    }
}

/// Everything the balancing core needs, as one section (`[balancer]` in the proxy's file
/// nests these fields; see the proxy's config for the listener and backend fields).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BalanceConfig {
    /// Selection strategy.
    pub strategy: StrategyKind,
    /// What to do when no backend is eligible.
    pub all_down: AllDownPolicy,
    /// Peak-EWMA estimator settings.
    pub ewma: EwmaConfig,
    /// Consistent hash settings (`consistent_hash` and `ip_hash`).
    pub hash: HashConfig,
    /// Cookie stickiness settings (`sticky`).
    pub sticky: StickyConfig,
    /// Active health checks.
    pub health: HealthConfig,
    /// Passive outlier ejection.
    pub outlier: OutlierConfig,
    /// Retry policy and budget.
    pub retry: RetryConfig,
    /// Slow start of new backends.
    pub slow_start: SlowStartConfig,
    /// Requests in flight to one backend at once; a pick skips a backend at the cap
    /// (0 = unlimited). The proxy sets it from `limits.max_in_flight_per_backend`.
    pub max_in_flight_per_backend: u32,
}

impl BalanceConfig {
    /// Checks every field, naming it as `balancer.<section>.<field>`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_at("balancer")
    }

    /// Checks every field, naming it as `<path>.<section>.<field>`.
    pub fn validate_at(&self, path: &str) -> Result<(), ConfigError> {
        let sub = |name: &str| {
            if path.is_empty() {
                name.to_string()
            } else {
                format!("{path}.{name}")
            }
        };
        self.ewma.validate_at(&sub("ewma"))?;
        self.hash.validate_at(&sub("hash"))?;
        self.sticky.validate_at(&sub("sticky"))?;
        self.health.validate_at(&sub("health"))?;
        self.outlier.validate_at(&sub("outlier"))?;
        self.retry.validate_at(&sub("retry"))?;
        self.slow_start.validate_at(&sub("slow_start"))
    }
}

#[cfg(test)]
mod tests;
