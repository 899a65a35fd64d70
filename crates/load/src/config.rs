//! What a run is asked to do: [`RunConfig`] and its parts, plus target URL parsing and
//! the loopback check.
//!
//! Built by the CLI from flags, by [`crate::scenario`] from a TOML file, or directly by
//! other crates through the constructors. Validated once by [`RunConfig::validate`]
//! before any connection is opened. This module must never open sockets (name
//! resolution lives in `run`).

use std::time::Duration;

use crate::LoadError;
use crate::profile::RateProfile;
use crate::threshold::Threshold;

/// How requests are paced.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Requests are due at the times the profile says, whatever earlier ones do; latency
    /// is measured from the due time.
    OpenLoop {
        /// The rate over time; its length is the run's length.
        profile: RateProfile,
    },
    /// `connections` connections each send the next request as soon as the previous
    /// response ends (like wrk); latency is measured from the actual send, so it hides
    /// server stalls (coordinated omission). For saturation throughput only.
    ClosedLoop {
        /// Concurrent connections (all threads together).
        connections: usize,
        /// Length of the run.
        duration: Duration,
    },
}

/// How live progress is shown on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Nothing (library default).
    Off,
    /// An indicatif line redrawn in place (stderr is a terminal).
    Bar,
    /// A plain line per second (stderr is a file or pipe).
    Lines,
}

/// One entry of a weighted request mix.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestSpec {
    /// Name in reports (defaults to `METHOD path`).
    pub name: String,
    /// Relative weight (> 0).
    pub weight: u32,
    /// HTTP method.
    pub method: http::Method,
    /// Path and query, possibly with `{product_id}`, `{quantity}`, `{username}`, `{n}`.
    pub path: String,
    /// Extra headers (`Host` is set from the target).
    pub headers: Vec<(String, String)>,
    /// Body, possibly with the same placeholders; sent with its length.
    pub body: Option<String>,
    /// Needs a logged-in user: sent with `Authorization: Bearer <token>`.
    pub auth: bool,
}

impl RequestSpec {
    /// `GET path`, weight 1, no auth.
    pub fn get(path: &str) -> RequestSpec {
        RequestSpec {
            name: format!("GET {path}"),
            weight: 1,
            method: http::Method::GET,
            path: path.to_string(),
            headers: Vec::new(),
            body: None,
            auth: false,
        }
    }
}

/// User sessions: each virtual user signs up, logs in, then sends `requests_per_session`
/// requests of the mix with its token, then starts over as a new user.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSpec {
    /// `POST` path that creates a user from `{"username","password"}`.
    pub signup_path: String,
    /// `POST` path that returns `{"token"}` for `{"username","password"}`.
    pub login_path: String,
    /// Mix requests per login before the user is replaced.
    pub requests_per_session: u32,
    /// Most users alive at once per run (users are created when all are busy).
    pub max_users: usize,
    /// Password every virtual user uses.
    pub password: String,
}

impl Default for SessionSpec {
    fn default() -> Self {
        SessionSpec {
            signup_path: "/signup".into(),
            login_path: "/login".into(),
            requests_per_session: 20,
            max_users: 10_000,
            password: "load-test-password".into(),
        }
    }
}

/// The product catalogue `{product_id}` draws from: ids `1..=products`, Zipf popularity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Catalog {
    /// Number of products (ids 1..=products).
    pub products: u32,
    /// Zipf exponent (1.0: the classic long tail).
    pub zipf_s: f64,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            products: 1000,
            zipf_s: 1.0,
        }
    }
}

/// Everything one run needs. Build with [`RunConfig::open_loop`] or
/// [`RunConfig::closed_loop`] and adjust fields.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// Target URLs (`http://host:port/path`); connections are spread over them in turn.
    pub targets: Vec<String>,
    /// Pacing.
    pub mode: Mode,
    /// Generator threads, each with its own single-threaded runtime.
    pub threads: usize,
    /// Per-request timeout (connect + send + response to last byte).
    pub timeout: Duration,
    /// Open loop: connection cap for the whole run (the pool grows up to it).
    pub max_connections: usize,
    /// Open loop: connection slots started at once (the pool's initial size, spread over
    /// the targets in turn; each connects on its first request).
    pub min_connections: usize,
    /// The request mix; empty means `GET` of each target URL's path.
    pub requests: Vec<RequestSpec>,
    /// User sessions (sign up, log in, then the mix with the token).
    pub session: Option<SessionSpec>,
    /// Catalogue for `{product_id}`.
    pub catalog: Catalog,
    /// Thresholds that decide `Report::passed`.
    pub thresholds: Vec<Threshold>,
    /// Open loop: fail when achieved/target rate is below this fraction (built-in check,
    /// `None` to disable). Default 0.99.
    pub min_rate_ratio: Option<f64>,
    /// Time slice of the per-slice report.
    pub slice: Duration,
    /// A send this far behind schedule counts as late.
    pub late_threshold: Duration,
    /// Most requests waiting for a connection per thread; beyond it they are dropped.
    pub max_queue: usize,
    /// Allow targets outside loopback.
    pub allow_remote: bool,
    /// Speak HTTP/2 without TLS (prior knowledge) instead of HTTP/1.1.
    pub h2c: bool,
    /// Seed of the request-mix and Zipf draws.
    pub seed: u64,
    /// Live progress on stderr.
    pub progress: Progress,
}

impl RunConfig {
    fn base(target: &str, mode: Mode) -> RunConfig {
        RunConfig {
            targets: vec![target.to_string()],
            mode,
            threads: 1,
            timeout: Duration::from_secs(5),
            max_connections: 512,
            min_connections: 1,
            requests: Vec::new(),
            session: None,
            catalog: Catalog::default(),
            thresholds: Vec::new(),
            min_rate_ratio: Some(0.99),
            slice: Duration::from_secs(1),
            late_threshold: Duration::from_millis(10),
            max_queue: 1_000_000,
            allow_remote: false,
            h2c: false,
            seed: 1,
            progress: Progress::Off,
        }
    }

    /// Open loop at a constant `rate_per_s` for `duration`.
    pub fn open_loop(
        target: &str,
        rate_per_s: f64,
        duration: Duration,
    ) -> Result<RunConfig, LoadError> {
        let profile = RateProfile::constant(rate_per_s, duration)
            .map_err(|e| LoadError::config("rate", e))?;
        Ok(Self::base(target, Mode::OpenLoop { profile }))
    }

    /// Open loop following `profile`.
    pub fn with_profile(target: &str, profile: RateProfile) -> RunConfig {
        Self::base(target, Mode::OpenLoop { profile })
    }

    /// Closed loop with `connections` connections for `duration`.
    pub fn closed_loop(target: &str, connections: usize, duration: Duration) -> RunConfig {
        Self::base(
            target,
            Mode::ClosedLoop {
                connections,
                duration,
            },
        )
    }

    /// Scheduled length of the run.
    pub fn duration(&self) -> Duration {
        match &self.mode {
            Mode::OpenLoop { profile } => profile.duration(),
            Mode::ClosedLoop { duration, .. } => *duration,
        }
    }

    /// Checks ranges; names the field at fault.
    pub fn validate(&self) -> Result<(), LoadError> {
        let bad = LoadError::config;
        if self.targets.is_empty() {
            return Err(bad("url", "at least one target URL is needed"));
        }
        for t in &self.targets {
            Target::parse(t)?;
        }
        if !(1..=64).contains(&self.threads) {
            return Err(bad("threads", "must be 1..=64"));
        }
        let d = self.duration();
        if d.is_zero() || d > Duration::from_secs(24 * 3600) {
            return Err(bad("duration", "must be > 0 and at most 24h"));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(600) {
            return Err(bad("timeout", "must be > 0 and at most 10m"));
        }
        if !(1..=100_000).contains(&self.max_connections) {
            return Err(bad("max-connections", "must be 1..=100000"));
        }
        if self.min_connections > self.max_connections {
            return Err(bad(
                "connections",
                "the initial pool exceeds --max-connections",
            ));
        }
        if let Mode::ClosedLoop { connections, .. } = self.mode
            && (connections < self.threads || connections > 100_000)
        {
            return Err(bad(
                "connections",
                "must be at least the thread count and at most 100000",
            ));
        }
        if self.slice < Duration::from_millis(10) || self.slice > Duration::from_secs(3600) {
            return Err(bad("slice", "must be 10ms..=1h"));
        }
        if self.max_queue == 0 {
            return Err(bad("max-queue", "must be > 0"));
        }
        for r in &self.requests {
            if r.weight == 0 {
                return Err(bad(&format!("request {:?} weight", r.name), "must be > 0"));
            }
            if !r.path.starts_with('/') {
                return Err(bad(
                    &format!("request {:?} path", r.name),
                    "must start with /",
                ));
            }
            if r.auth && self.session.is_none() {
                return Err(bad(
                    &format!("request {:?} auth", r.name),
                    "auth = true needs a [session] section",
                ));
            }
        }
        if let Some(s) = &self.session {
            if s.requests_per_session == 0 {
                return Err(bad("session.requests_per_session", "must be > 0"));
            }
            if !(1..=1_000_000).contains(&s.max_users) {
                return Err(bad("session.max_users", "must be 1..=1000000"));
            }
            if self.requests.is_empty() {
                return Err(bad("request", "a session needs at least one [[request]]"));
            }
        }
        if self.catalog.products == 0 || self.catalog.products > 10_000_000 {
            return Err(bad("catalog.products", "must be 1..=10000000"));
        }
        if !(self.catalog.zipf_s.is_finite() && self.catalog.zipf_s >= 0.0) {
            return Err(bad("catalog.zipf_s", "must be a non-negative number"));
        }
        if let Some(r) = self.min_rate_ratio
            && !(0.0..=1.0).contains(&r)
        {
            return Err(bad("min-rate", "must be within 0..=100%"));
        }
        Ok(())
    }
}

/// A parsed `http://host:port/path` target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// Host as written (brackets removed for IPv6).
    pub host: String,
    /// Port (80 when absent).
    pub port: u16,
    /// `host:port` for the `Host` header.
    pub authority: String,
    /// Path and query (`/` when absent).
    pub path: String,
}

impl Target {
    /// Parses an `http://` URL. `https` is refused (no TLS in the generator).
    pub fn parse(url: &str) -> Result<Target, LoadError> {
        let bad = |reason: &str| LoadError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(bad("https is not supported (plain http or h2c only)")),
            Some(other) => return Err(bad(&format!("unsupported scheme {other:?}"))),
            None => return Err(bad("missing scheme (write http://host:port/path)")),
        }
        let auth = uri.authority().ok_or_else(|| bad("missing host"))?;
        let host = auth.host().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let port = auth.port_u16().unwrap_or(80);
        Ok(Target {
            url: url.to_string(),
            host: host.to_string(),
            port,
            authority: auth.as_str().to_string(),
            path: uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "/".to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_bad_ones_are_named() {
        let t = Target::parse("http://127.0.0.1:8080/a?b=1").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 8080, "/a?b=1")
        );
        assert_eq!(t.authority, "127.0.0.1:8080");
        let t = Target::parse("http://[::1]:9/").unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(Target::parse("http://localhost").unwrap().port, 80);
        for bad in [
            "127.0.0.1:80",
            "https://x/",
            "ftp://x/",
            "http://",
            "not a url",
        ] {
            let e = Target::parse(bad).unwrap_err().to_string();
            assert!(e.contains("bad URL"), "{bad}: {e}");
        }
    }

    #[test]
    fn validation_names_the_field() {
        let mut c =
            RunConfig::open_loop("http://127.0.0.1:1/", 10.0, Duration::from_secs(1)).unwrap();
        c.threads = 0;
        assert!(c.validate().unwrap_err().to_string().contains("threads"));
        let mut c = RunConfig::closed_loop("http://127.0.0.1:1/", 1, Duration::from_secs(1));
        c.threads = 2;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("connections")
        );
    }
}
