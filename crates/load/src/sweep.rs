//! A closed-loop concurrency sweep: a warm-up, then one closed-loop run per concurrency
//! level, ascending. The one implementation behind `scaleout advise --target` and act 1
//! of the demo (which wraps each level with its CPU and metrics readings), so the figures
//! the advisor fits are measured the same way in both.
//!
//! This module plans and drives the runs; it knows nothing of the advisor's types (the
//! caller turns the per-level reports into sweep points).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{RequestSpec, RunConfig};
use crate::error::LoadError;
use crate::report::Report;

/// What to sweep and how.
#[derive(Debug, Clone)]
pub struct ConcurrencySweep {
    /// The target URL (`http://host:port/path`).
    pub url: String,
    /// Concurrency levels, ascending and distinct (see [`ConcurrencySweep::new`]).
    pub levels: Vec<usize>,
    /// Length of each level's run.
    pub per_level: Duration,
    /// Warm-up before the first level (caches, connection pools): steady state is what
    /// the sweep measures. Zero skips it.
    pub warmup: Duration,
    /// Connections of the warm-up run.
    pub warmup_connections: usize,
    /// The request mix; empty means `GET` of the URL's path.
    pub requests: Vec<RequestSpec>,
    /// Generator threads.
    pub threads: usize,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl ConcurrencySweep {
    /// A sweep of `levels` (sorted and deduplicated here) at `per_level` each, with a
    /// 2-second warm-up at 4 connections, one generator thread and a 5-second timeout.
    /// Refuses no levels, a level of 0 and a per-level time outside 1 s..=10 min.
    pub fn new(url: &str, levels: &[usize], per_level: Duration) -> Result<Self, LoadError> {
        if levels.is_empty() {
            return Err(LoadError::config(
                "levels",
                "name at least one concurrency level",
            ));
        }
        if levels.contains(&0) {
            return Err(LoadError::config("levels", "every level must be >= 1"));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(600)).contains(&per_level) {
            return Err(LoadError::config(
                "level duration",
                "must be within 1s..=10m",
            ));
        }
        let mut levels = levels.to_vec();
        levels.sort_unstable();
        levels.dedup();
        Ok(ConcurrencySweep {
            url: url.to_string(),
            levels,
            per_level,
            warmup: Duration::from_secs(2),
            warmup_connections: 4,
            requests: Vec::new(),
            threads: 1,
            timeout: Duration::from_secs(5),
        })
    }

    /// The closed-loop run of one level (also used for the warm-up).
    pub fn run_config(&self, connections: usize, duration: Duration) -> RunConfig {
        let mut cfg = RunConfig::closed_loop(&self.url, connections, duration);
        if !self.requests.is_empty() {
            cfg.requests = self.requests.clone();
        }
        cfg.threads = self.threads.max(1);
        cfg.timeout = self.timeout;
        cfg
    }

    /// Runs the warm-up, then each level through `measure(level, config)`, which runs the
    /// config (with [`crate::run`], possibly wrapped in the caller's own readings) and
    /// returns what the caller keeps of it. Stops at the first error.
    pub async fn run_with<T, E>(
        &self,
        mut measure: impl AsyncFnMut(usize, RunConfig) -> Result<T, E>,
    ) -> Result<Vec<T>, E>
    where
        E: From<LoadError>,
    {
        if !self.warmup.is_zero() {
            crate::run(
                self.run_config(self.warmup_connections, self.warmup),
                CancellationToken::new(),
            )
            .await?;
        }
        let mut out = Vec::with_capacity(self.levels.len());
        for &c in &self.levels {
            out.push(measure(c, self.run_config(c, self.per_level)).await?);
        }
        Ok(out)
    }

    /// Runs the sweep with plain [`crate::run`] per level, calling `on_level` as each
    /// level completes (for progress lines), and returns `(level, report)` pairs.
    pub async fn run(
        &self,
        cancel: &CancellationToken,
        mut on_level: impl FnMut(usize, &Report),
    ) -> Result<Vec<(usize, Report)>, LoadError> {
        self.run_with(async |c, cfg| {
            let report = crate::run(cfg, cancel.clone()).await?;
            on_level(c, &report);
            Ok::<_, LoadError>((c, report))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_checked_sorted_and_distinct() {
        let s = ConcurrencySweep::new("http://127.0.0.1:1/", &[8, 1, 4, 4], Duration::from_secs(1))
            .unwrap();
        assert_eq!(s.levels, vec![1, 4, 8]);
        assert!(ConcurrencySweep::new("http://127.0.0.1:1/", &[], Duration::from_secs(1)).is_err());
        assert!(
            ConcurrencySweep::new("http://127.0.0.1:1/", &[0], Duration::from_secs(1)).is_err()
        );
        assert!(
            ConcurrencySweep::new("http://127.0.0.1:1/", &[1], Duration::from_millis(10)).is_err()
        );
        let cfg = s.run_config(8, Duration::from_secs(1));
        assert_eq!(cfg.threads, 1);
        assert_eq!(cfg.timeout, Duration::from_secs(5));
    }
}
