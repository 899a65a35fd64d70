//! The `[balancer]` configuration section: listeners, backends, timeouts, limits, and the
//! balancing core's settings (nested from `balance`), parsed and validated once at start.
//!
//! [`parse_toml`] is a pure function from text to a validated [`Config`] (a fuzz target
//! calls it): every error names the offending field by its full path, e.g.
//! `balancer.health.interval_ms`. Nothing here reads the environment, a file or the clock.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use balance::config::{
    AllDownPolicy, BalanceConfig, EwmaConfig, HashConfig, HealthConfig, OutlierConfig, RetryConfig,
    SlowStartConfig, StickyConfig, StrategyKind,
};
use serde::{Deserialize, Serialize};

/// An invalid configuration, naming the field by its full path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config: {field}: {message}")]
pub struct ConfigError {
    /// Full path of the field, e.g. `balancer.timeouts.connect_ms`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<balance::config::ConfigError> for ConfigError {
    fn from(e: balance::config::ConfigError) -> Self {
        ConfigError::new(e.field, e.message)
    }
}

/// Protocol spoken to the backends of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive connections.
    #[default]
    Http1,
    /// HTTP/2 over cleartext with prior knowledge (one multiplexed connection per backend
    /// and worker).
    H2c,
}

/// One backend given in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendConfig {
    /// Unique name (default: the address). Carried in the sticky cookie.
    pub name: String,
    /// `host:port` to connect to.
    pub addr: String,
    /// Relative weight, 1..=1000.
    pub weight: u32,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            name: String::new(),
            addr: String::new(),
            weight: 1,
        }
    }
}

/// The admin API listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener; absent: no admin API (the in-process handle still
    /// works).
    pub listen: Option<SocketAddr>,
    /// Bearer token every admin request must carry (`Authorization: Bearer <token>`);
    /// required when `listen` is set, at least 8 characters.
    pub token: Option<String>,
    /// Admin connections open at once (its own small pool; half of it at most for
    /// connections that have not sent a request yet, the oldest of which are evicted;
    /// idle keep-alive connections are closed to admit a new one when it is full).
    pub max_connections: u32,
    /// An admin connection must deliver its first request head within this time from
    /// accept.
    pub header_read_ms: u64,
    /// An admin connection with nothing in flight and no bytes for this long is closed.
    pub idle_ms: u64,
    /// Address ranges (CIDR, e.g. `10.0.0.0/8`, `::1/128`) that backends added through
    /// the admin API may use. Default: loopback and the private ranges. Link-local
    /// (169.254.0.0/16 with the cloud metadata address, fe80::/10) is not in it; the
    /// unspecified address, multicast and broadcast are refused whatever the list says.
    pub backend_ranges: Vec<String>,
    /// Whether backends added through the admin API may be given by host name (resolved
    /// at connect time, so the ranges above cannot be checked). Default false.
    pub allow_hostnames: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: None,
            token: None,
            max_connections: 64,
            header_read_ms: 2_000,
            idle_ms: 10_000,
            backend_ranges: [
                "127.0.0.0/8",
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "::1/128",
                "fc00::/7",
            ]
            .map(String::from)
            .to_vec(),
            allow_hostnames: false,
        }
    }
}

/// Timeouts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutConfig {
    /// Connecting to a backend (one attempt). Default 5000, as HAProxy's and Envoy's
    /// usual 5 s: above the kernel's SYN retransmits at 1 s and 3 s, so a SYN dropped by
    /// a backend's full listen queue costs a second, not a failed request (1000 timed
    /// out exactly when the retransmitted SYN would have been answered).
    pub connect_ms: u64,
    /// Reading a client's request head (slowloris defence), counted from accept for the
    /// first request (first byte and whole head) and from the first byte for later ones
    /// on a keep-alive connection; the connection is closed when the head is not complete
    /// in time.
    pub header_read_ms: u64,
    /// Receiving a request body that is buffered (small, known length) before forwarding;
    /// a client that is slower gets 408.
    pub body_read_ms: u64,
    /// From sending the request to a backend to its response head.
    pub upstream_response_ms: u64,
    /// A client connection with no request in flight and no bytes read for this long is
    /// closed.
    pub client_idle_ms: u64,
    /// An idle pooled connection to a backend is closed after this long.
    pub upstream_idle_ms: u64,
    /// On shutdown, how long in-flight requests may take to finish.
    pub shutdown_grace_ms: u64,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        TimeoutConfig {
            connect_ms: 5_000,
            header_read_ms: 10_000,
            body_read_ms: 30_000,
            upstream_response_ms: 30_000,
            client_idle_ms: 60_000,
            upstream_idle_ms: 90_000,
            shutdown_grace_ms: 10_000,
        }
    }
}

/// Limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Client connections open at once (all workers). A new connection that finds no
    /// slot evicts the oldest connection that has not sent a complete request head yet,
    /// or else closes the least recently active idle keep-alive connections (up to 32, as
    /// nginx does); only when every slot holds a connection with a request in flight is it
    /// answered 503 with Retry-After.
    pub max_connections: u32,
    /// Share of `max_connections`, in percent (1..=100), that connections which have not
    /// sent a complete request head may hold; the rest is kept for clients that make
    /// progress. Past it, the oldest such connection is evicted.
    pub pending_connections_percent: u32,
    /// Requests in flight to one backend at once (this bounds its HTTP/1.1 connections);
    /// 0 = unlimited. A request that finds every eligible backend full is shed (503).
    pub max_in_flight_per_backend: u32,
    /// Largest request head (request line + headers) in bytes; larger gets 431.
    /// At least 8192 (hyper's smallest read buffer). Default 32768, nginx's
    /// `large_client_header_buffers 4 8k` (HAProxy's `tune.bufsize` is 16384).
    pub max_header_bytes: u32,
    /// Most header fields in a request head; more gets 431. Default 256: nginx counts
    /// none (only bytes), HAProxy allows 101 (`tune.http.maxhdr`), which real clients with
    /// many cookies exceed; 256 ordinary headers still fit in `max_header_bytes`.
    pub max_headers: u32,
    /// Longest request method in bytes; longer gets 501 (the longest registered method,
    /// `UPDATEREDIRECTREF`, has 17).
    pub max_method_bytes: u32,
    /// Largest request body in bytes; larger gets 413.
    pub max_body_bytes: u64,
    /// Request bodies up to this size (with a known length) are buffered so the request can
    /// be retried; larger or streaming bodies are forwarded as they come and never retried.
    pub retry_buffer_bytes: u64,
    /// `Retry-After` seconds sent with 503 when shedding.
    pub retry_after_s: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 10_000,
            pending_connections_percent: 50,
            max_in_flight_per_backend: 0,
            max_header_bytes: 32_768,
            max_headers: 256,
            max_method_bytes: 32,
            max_body_bytes: 10 * 1024 * 1024,
            retry_buffer_bytes: 64 * 1024,
            retry_after_s: 1,
        }
    }
}

/// The `[balancer]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Public listener (HTTP/1.1 and h2c with prior knowledge).
    pub listen: SocketAddr,
    /// Worker threads, each with its own single-threaded runtime, `SO_REUSEPORT`
    /// listener and backend connection pool (1..=64).
    pub workers: u32,
    /// Protocol spoken to the backends.
    pub upstream_protocol: UpstreamProtocol,
    /// Serve HTTP/1.1 clients with the balancer's own strict codec (`proxy::h1`) instead
    /// of hyper's. Off by default for now: the fast path does not yet take part in the
    /// idle keep-alive admission accounting or the `connection: close` of a graceful stop,
    /// and its speed has not been measured on a quiet machine (BENCHMARKS.md, issue 12).
    pub fast_path: bool,
    /// Backends present at start (more can be added at run time).
    pub backends: Vec<BackendConfig>,
    /// The admin API.
    pub admin: AdminConfig,
    /// Timeouts.
    pub timeouts: TimeoutConfig,
    /// Limits.
    pub limits: LimitsConfig,
    /// Selection strategy (`round_robin`, `weighted_round_robin`, `least_connections`,
    /// `p2c_peak_ewma`, `random`, `ip_hash`, `sticky`, `consistent_hash`).
    pub strategy: StrategyKind,
    /// When no backend is eligible: `fail_open` (use all active ones) or `reject503`.
    pub all_down: AllDownPolicy,
    /// Peak-EWMA estimator.
    pub ewma: EwmaConfig,
    /// Consistent hashing (`consistent_hash`, `ip_hash`).
    pub hash: HashConfig,
    /// Cookie stickiness (`sticky`).
    pub sticky: StickyConfig,
    /// Active health checks.
    pub health: HealthConfig,
    /// Passive outlier ejection.
    pub outlier: OutlierConfig,
    /// Retries and the retry budget.
    pub retry: RetryConfig,
    /// Slow start of newly added backends.
    pub slow_start: SlowStartConfig,
}

impl Default for Config {
    fn default() -> Self {
        let b = BalanceConfig::default();
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 1,
            upstream_protocol: UpstreamProtocol::default(),
            fast_path: false,
            backends: Vec::new(),
            admin: AdminConfig::default(),
            timeouts: TimeoutConfig::default(),
            limits: LimitsConfig::default(),
            strategy: b.strategy,
            all_down: b.all_down,
            ewma: b.ewma,
            hash: b.hash,
            sticky: b.sticky,
            health: b.health,
            outlier: b.outlier,
            retry: b.retry,
            slow_start: b.slow_start,
        }
    }
}

/// The whole file: only `[balancer]` is read here. The other sections of a scaleout
/// deployment file belong to other crates and are left to them; any other top-level key
/// is refused by name (a misspelt `[balancr]` must not silently run on defaults).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    balancer: Config,
    #[serde(default, rename = "fleet")]
    _fleet: Option<toml::Value>,
    #[serde(default, rename = "autoscale")]
    _autoscale: Option<toml::Value>,
    #[serde(default, rename = "service")]
    _service: Option<toml::Value>,
    #[serde(default, rename = "shop")]
    _shop: Option<toml::Value>,
}

/// Parses a TOML document and validates its `[balancer]` section (other top-level sections
/// are left to their owners). Errors name the field, e.g. `balancer.health.interval_ms`.
pub fn parse_toml(text: &str) -> Result<Config, ConfigError> {
    let de = toml::Deserializer::parse(text)
        .map_err(|e| ConfigError::new("balancer", e.message().to_string()))?;
    let file: File = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path.is_empty() || path == "." {
            "balancer".to_string()
        } else {
            path
        };
        ConfigError::new(field, e.into_inner().message().to_string())
    })?;
    file.balancer.validate()?;
    Ok(file.balancer)
}

/// Checks that `addr` looks like `host:port` with a valid port.
pub fn check_backend_addr(addr: &str) -> Result<(), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("{addr:?} is not host:port"))?;
    if host.is_empty() || host.contains('/') || host.chars().any(char::is_whitespace) {
        return Err(format!("{addr:?} has no valid host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("{addr:?} has no valid port")),
    }
}

impl Config {
    /// The balancing core's settings.
    pub fn balance(&self) -> BalanceConfig {
        BalanceConfig {
            strategy: self.strategy,
            all_down: self.all_down,
            ewma: self.ewma.clone(),
            hash: self.hash.clone(),
            sticky: self.sticky.clone(),
            health: self.health.clone(),
            outlier: self.outlier.clone(),
            retry: self.retry.clone(),
            slow_start: self.slow_start.clone(),
            max_in_flight_per_backend: self.limits.max_in_flight_per_backend,
        }
    }

    /// Checks every field; the error names it as `balancer.<...>`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |f: &str, m: &str| Err(ConfigError::new(format!("balancer.{f}"), m));
        if !(1..=64).contains(&self.workers) {
            return err("workers", "must be between 1 and 64");
        }
        let mut names = HashSet::new();
        for (i, b) in self.backends.iter().enumerate() {
            if let Err(m) = check_backend_addr(&b.addr) {
                return err(&format!("backends[{i}].addr"), &m);
            }
            if !(1..=balance::MAX_WEIGHT).contains(&b.weight) {
                return err(
                    &format!("backends[{i}].weight"),
                    "must be between 1 and 1000",
                );
            }
            let name = if b.name.is_empty() { &b.addr } else { &b.name };
            if !names.insert(name.clone()) {
                return err(
                    &format!("backends[{i}].name"),
                    &format!("{name:?} is used twice"),
                );
            }
        }
        if self.admin.listen.is_some() {
            match &self.admin.token {
                Some(t) if t.len() >= 8 && !t.chars().any(char::is_whitespace) => {}
                Some(_) => return err("admin.token", "must be at least 8 characters, no spaces"),
                None => return err("admin.token", "is required when admin.listen is set"),
            }
        }
        let t = &self.timeouts;
        for (name, v, max) in [
            ("connect_ms", t.connect_ms, 600_000),
            ("header_read_ms", t.header_read_ms, 600_000),
            ("body_read_ms", t.body_read_ms, 3_600_000),
            ("upstream_response_ms", t.upstream_response_ms, 3_600_000),
            ("client_idle_ms", t.client_idle_ms, 3_600_000),
            ("upstream_idle_ms", t.upstream_idle_ms, 3_600_000),
            ("shutdown_grace_ms", t.shutdown_grace_ms, 3_600_000),
        ] {
            if !(1..=max).contains(&v) {
                return err(
                    &format!("timeouts.{name}"),
                    &format!("must be between 1 and {max}"),
                );
            }
        }
        let a = &self.admin;
        if !(1..=10_000).contains(&a.max_connections) {
            return err("admin.max_connections", "must be between 1 and 10000");
        }
        if !(1..=600_000).contains(&a.header_read_ms) {
            return err("admin.header_read_ms", "must be between 1 and 600000");
        }
        if !(1..=3_600_000).contains(&a.idle_ms) {
            return err("admin.idle_ms", "must be between 1 and 3600000");
        }
        for (i, r) in a.backend_ranges.iter().enumerate() {
            if let Err(m) = crate::addr_policy::Cidr::parse(r) {
                return err(&format!("admin.backend_ranges[{i}]"), &m);
            }
        }
        let l = &self.limits;
        if l.max_connections == 0 {
            return err("limits.max_connections", "must be >= 1");
        }
        if !(1..=100).contains(&l.pending_connections_percent) {
            return err(
                "limits.pending_connections_percent",
                "must be between 1 and 100",
            );
        }
        if !(1..=10_000).contains(&l.max_headers) {
            return err("limits.max_headers", "must be between 1 and 10000");
        }
        if !(3..=8192).contains(&l.max_method_bytes) {
            return err("limits.max_method_bytes", "must be between 3 and 8192");
        }
        if !(8192..=1 << 20).contains(&l.max_header_bytes) {
            return err(
                "limits.max_header_bytes",
                "must be between 8192 and 1048576",
            );
        }
        if l.retry_buffer_bytes > l.max_body_bytes {
            return err(
                "limits.retry_buffer_bytes",
                "must be <= limits.max_body_bytes",
            );
        }
        if l.retry_after_s > 3600 {
            return err("limits.retry_after_s", "must be <= 3600");
        }
        self.balance().validate_at("balancer")?;
        Ok(())
    }

    /// `timeouts.connect_ms` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.timeouts.connect_ms)
    }

    /// The backends of the file as specs (names default to the address).
    pub fn backend_specs(&self) -> Vec<balance::BackendSpec> {
        self.backends
            .iter()
            .map(|b| balance::BackendSpec {
                name: if b.name.is_empty() {
                    b.addr.clone()
                } else {
                    b.name.clone()
                },
                addr: b.addr.clone(),
                weight: b.weight,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_gives_defaults() {
        let c = parse_toml("").unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn full_section_parses() {
        let c = parse_toml(
            r#"
            [fleet]
            other = "ignored here"
            [balancer]
            listen = "127.0.0.1:9000"
            workers = 2
            strategy = "least_connections"
            upstream_protocol = "h2c"
            [balancer.admin]
            listen = "127.0.0.1:9001"
            token = "secret-token"
            [[balancer.backends]]
            addr = "127.0.0.1:7001"
            weight = 3
            [balancer.health]
            interval_ms = 200
            timeout_ms = 100
            "#,
        )
        .unwrap();
        assert_eq!(c.workers, 2);
        assert_eq!(c.strategy, StrategyKind::LeastConnections);
        assert_eq!(c.upstream_protocol, UpstreamProtocol::H2c);
        assert_eq!(c.backend_specs()[0].name, "127.0.0.1:7001");
        assert_eq!(c.health.interval_ms, 200);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "[balancer.health]\ninterval_ms = 0",
                "balancer.health.interval_ms",
            ),
            (
                "[balancer.health]\ninterval_ms = \"x\"",
                "balancer.health.interval_ms",
            ),
            ("[balancer]\nworkers = 0", "balancer.workers"),
            ("[balancer]\nlisten = \"nope\"", "balancer.listen"),
            ("[balancer]\nstrategy = \"fastest\"", "balancer.strategy"),
            (
                "[balancer.timeouts]\nconnect_ms = 0",
                "balancer.timeouts.connect_ms",
            ),
            (
                "[balancer.limits]\nmax_header_bytes = 100",
                "balancer.limits.max_header_bytes",
            ),
            (
                "[balancer.admin]\nlisten = \"127.0.0.1:1\"",
                "balancer.admin.token",
            ),
            (
                "[[balancer.backends]]\naddr = \"nohost\"",
                "balancer.backends[0].addr",
            ),
            (
                "[balancer.retry]\nmax_attempts = 0",
                "balancer.retry.max_attempts",
            ),
            (
                "[balancer.admin]\nbackend_ranges = [\"10.0.0.0/99\"]",
                "balancer.admin.backend_ranges[0]",
            ),
            (
                "[balancer.admin]\nmax_connections = 0",
                "balancer.admin.max_connections",
            ),
            (
                "[balancer.limits]\npending_connections_percent = 0",
                "balancer.limits.pending_connections_percent",
            ),
            (
                "[balancer.limits]\nmax_method_bytes = 1",
                "balancer.limits.max_method_bytes",
            ),
            (
                "[balancer.health]\npath = \"healthz\"",
                "balancer.health.path",
            ),
        ];
        for (text, field) in cases {
            let e = parse_toml(text).unwrap_err();
            assert_eq!(e.field, field, "{text}: {e}");
        }
        // An unknown key is refused and named.
        let e = parse_toml("[balancer.health]\nintervall_ms = 5").unwrap_err();
        assert!(e.field.starts_with("balancer.health"), "{e}");
        assert!(e.message.contains("intervall_ms"), "{e}");
        // A misspelt section is refused by name; the deployment file's other sections pass.
        let e = parse_toml("[balancr]\nworkers = 2").unwrap_err();
        assert!(e.message.contains("balancr"), "{e}");
        let c = parse_toml("[balancer]\nworkers = 2\n[fleet]\ninstances = 3\n[autoscale]\npolicy = \"hpa\"\n[service]\n[shop]\n").unwrap();
        assert_eq!(c.workers, 2);
    }

    #[test]
    fn garbage_never_panics() {
        for text in [
            "[",
            "balancer = 3",
            "[balancer]\nbackends = 1",
            "\u{0}",
            "[[balancer]]",
        ] {
            assert!(parse_toml(text).is_err(), "{text:?}");
        }
    }
}
