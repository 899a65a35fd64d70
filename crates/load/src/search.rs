//! Search mode: raise the open-loop rate step by step until a latency or error bound
//! breaks (or the rate itself is missed), then bisect between the last passing and the
//! first failing rate; report the highest rate that held.
//!
//! Bounded in steps and in total time. The step decision ([`judge`], [`next_rate`]) is
//! pure; only [`find_max`] runs load.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::{Mode, RunConfig};
use crate::profile::RateProfile;
use crate::report::Report;
use crate::{LoadError, run};

/// How to search.
#[derive(Debug, Clone)]
pub struct SearchConfig {
    /// Targets, mix, timeouts, threads...; its mode is replaced at each step.
    pub base: RunConfig,
    /// First rate tried, requests/s.
    pub start_rps: f64,
    /// Each growth step multiplies the rate by this (> 1).
    pub factor: f64,
    /// Length of each step's run.
    pub step_duration: Duration,
    /// Most growth steps.
    pub max_steps: u32,
    /// Bisection steps after the first failure.
    pub refine_steps: u32,
    /// Latency bound: a step fails when its p99 exceeds this.
    pub max_p99: Duration,
    /// Error bound, as a fraction of requests sent.
    pub max_error_rate: f64,
    /// A step fails when achieved/target is below this.
    pub min_rate_ratio: f64,
    /// Stop searching after this much wall time.
    pub max_total: Duration,
}

impl SearchConfig {
    /// Defaults: start 100/s, x1.5 per step, 10 s steps, at most 20 steps + 4 bisections,
    /// errors < 0.1%, rate >= 99%, 10 minutes in all.
    pub fn new(base: RunConfig, max_p99: Duration) -> SearchConfig {
        SearchConfig {
            base,
            start_rps: 100.0,
            factor: 1.5,
            step_duration: Duration::from_secs(10),
            max_steps: 20,
            refine_steps: 4,
            max_p99,
            max_error_rate: 0.001,
            min_rate_ratio: 0.99,
            max_total: Duration::from_secs(600),
        }
    }
}

/// One step of the search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchStep {
    /// Rate asked for, requests/s.
    pub target_rps: f64,
    /// Rate achieved.
    pub achieved_rps: f64,
    /// p99 latency, ms (from intended send time).
    pub p99_ms: f64,
    /// Errors over sent.
    pub error_rate: f64,
    /// Late sends.
    pub late_sends: u64,
    /// Whether every bound held.
    pub passed: bool,
    /// Which bound broke (empty when passed).
    pub reason: String,
}

/// The search result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchReport {
    /// The highest rate at which every bound held (0 when none did).
    pub max_sustainable_rps: f64,
    /// The lowest rate at which a bound broke, if one did.
    pub first_failing_rps: Option<f64>,
    /// The bounds, as text.
    pub bounds: String,
    /// Every step in order.
    pub steps: Vec<SearchStep>,
    /// Why the search stopped.
    pub stopped_because: String,
    /// The report of the best passing step.
    pub best: Option<Report>,
}

impl SearchReport {
    /// The human report: the bounds, one line per step, the result.
    pub fn render_text(&self) -> String {
        let mut out = format!("search bounds: {}\n", self.bounds);
        for s in &self.steps {
            out.push_str(&format!(
                "  target {:>10.1}/s  achieved {:>10.1}/s  p99 {:>9.3} ms  errors {:>7.3}%  late {:>7}  {}\n",
                s.target_rps,
                s.achieved_rps,
                s.p99_ms,
                s.error_rate * 100.0,
                s.late_sends,
                if s.passed {
                    "ok".to_string()
                } else {
                    format!("FAILED: {}", s.reason)
                }
            ));
        }
        out.push_str(&format!(
            "max sustainable rate: {:.1}/s (first failing: {}); stopped: {}\n",
            self.max_sustainable_rps,
            self.first_failing_rps
                .map(|f| format!("{f:.1}/s"))
                .unwrap_or_else(|| "none".into()),
            self.stopped_because
        ));
        out
    }
}

/// Whether a step's report is within the bounds; the reason when not.
pub fn judge(r: &Report, cfg: &SearchConfig) -> (bool, String) {
    let max_p99_ms = cfg.max_p99.as_secs_f64() * 1e3;
    if r.rate_ratio() < cfg.min_rate_ratio {
        return (
            false,
            format!(
                "rate missed: achieved {:.1}/s of {:.1}/s",
                r.achieved_rps, r.target_rps
            ),
        );
    }
    if r.p99_ms > max_p99_ms {
        return (false, format!("p99 {:.2} ms > {max_p99_ms} ms", r.p99_ms));
    }
    if r.error_rate > cfg.max_error_rate {
        return (
            false,
            format!(
                "errors {:.3}% > {}%",
                r.error_rate * 100.0,
                cfg.max_error_rate * 100.0
            ),
        );
    }
    (true, String::new())
}

/// The next rate to try: grow while nothing failed, then bisect.
pub fn next_rate(best: Option<f64>, fail: Option<f64>, start: f64, factor: f64) -> f64 {
    match (best, fail) {
        (None, None) => start,
        (Some(b), None) => b * factor,
        (Some(b), Some(f)) => (b + f) / 2.0,
        // The first rate failed: try lower.
        (None, Some(f)) => f / factor,
    }
}

/// Raises the rate until a bound breaks; returns the maximum sustainable rate.
pub async fn find_max(
    cfg: SearchConfig,
    cancel: CancellationToken,
) -> Result<SearchReport, LoadError> {
    if !(cfg.factor > 1.0 && cfg.factor <= 100.0) {
        return Err(LoadError::config("factor", "must be > 1 and <= 100"));
    }
    if !(cfg.start_rps > 0.0 && cfg.start_rps.is_finite()) {
        return Err(LoadError::config("start-rate", "must be > 0"));
    }
    if cfg.max_steps == 0 || cfg.max_steps > 100 || cfg.refine_steps > 20 {
        return Err(LoadError::config(
            "max-steps",
            "must be 1..=100 (refine 0..=20)",
        ));
    }
    let began = Instant::now();
    let (mut best, mut fail): (Option<f64>, Option<f64>) = (None, None);
    let mut best_report = None;
    let mut steps = Vec::new();
    let mut refined = 0;
    let stopped_because = loop {
        if cancel.is_cancelled() {
            break "cancelled".to_string();
        }
        if began.elapsed() + cfg.step_duration > cfg.max_total {
            break format!("time budget {:?} used", cfg.max_total);
        }
        if fail.is_none() && steps.len() as u32 >= cfg.max_steps {
            break format!("{} growth steps without a failure", cfg.max_steps);
        }
        if fail.is_some() && refined >= cfg.refine_steps {
            break "bisection done".to_string();
        }
        if let (None, Some(f)) = (best, fail)
            && f / cfg.factor < 1.0
        {
            break "even the lowest rate failed".to_string();
        }
        let rate = next_rate(best, fail, cfg.start_rps, cfg.factor);
        let mut run_cfg = cfg.base.clone();
        run_cfg.mode = Mode::OpenLoop {
            profile: RateProfile::constant(rate, cfg.step_duration)
                .map_err(|e| LoadError::config("start-rate", e))?,
        };
        run_cfg.thresholds.clear();
        let report = run(run_cfg, cancel.clone()).await?;
        let (passed, reason) = judge(&report, &cfg);
        steps.push(SearchStep {
            target_rps: rate,
            achieved_rps: report.achieved_rps,
            p99_ms: report.p99_ms,
            error_rate: report.error_rate,
            late_sends: report.late_sends,
            passed,
            reason,
        });
        if fail.is_some() {
            refined += 1;
        }
        if passed {
            best = Some(rate);
            best_report = Some(report);
        } else {
            fail = Some(fail.map_or(rate, |f: f64| f.min(rate)));
        }
        // Let connections close and the target settle between steps.
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = cancel.cancelled() => {}
        }
    };
    Ok(SearchReport {
        max_sustainable_rps: best.unwrap_or(0.0),
        first_failing_rps: fail,
        bounds: format!(
            "p99 <= {:?}, errors <= {}%, achieved >= {}% of target",
            cfg.max_p99,
            cfg.max_error_rate * 100.0,
            cfg.min_rate_ratio * 100.0
        ),
        steps,
        stopped_because,
        best: best_report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_bisects() {
        assert_eq!(next_rate(None, None, 100.0, 2.0), 100.0);
        assert_eq!(next_rate(Some(100.0), None, 100.0, 2.0), 200.0);
        assert_eq!(next_rate(Some(200.0), Some(400.0), 100.0, 2.0), 300.0);
        assert_eq!(next_rate(None, Some(100.0), 100.0, 2.0), 50.0);
    }

    #[test]
    fn judge_names_the_broken_bound() {
        let base =
            RunConfig::open_loop("http://127.0.0.1:1/", 1.0, Duration::from_secs(1)).unwrap();
        let cfg = SearchConfig::new(base, Duration::from_millis(250));
        let mut r = Report::empty_for_tests();
        r.target_rps = 100.0;
        r.achieved_rps = 100.0;
        r.p99_ms = 10.0;
        assert!(judge(&r, &cfg).0);
        r.p99_ms = 300.0;
        assert!(judge(&r, &cfg).1.contains("p99"));
        r.p99_ms = 10.0;
        r.achieved_rps = 90.0;
        assert!(judge(&r, &cfg).1.contains("rate missed"));
        r.achieved_rps = 100.0;
        r.error_rate = 0.01;
        assert!(judge(&r, &cfg).1.contains("errors"));
    }
}
