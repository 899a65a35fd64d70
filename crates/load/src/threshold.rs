//! Pass/fail thresholds (`p99<250ms`, `p999<1s`, `errors<0.1%`, `rps>=1000`, `rate>=99%`)
//! parsed once at start and evaluated against a finished report. They set the exit code.
//!
//! Pure: parsing and evaluation only; this module must never print or read the clock.

use serde::Serialize;

use crate::LoadError;
use crate::report::Report;
use crate::units::parse_duration_with;

/// What a threshold measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Latency percentile, in milliseconds (p50, p90, p95, p99, p999, max, mean).
    LatencyMs(LatencyStat),
    /// Errors as a fraction of the requests sent (when the value has a `%`).
    ErrorRate,
    /// Errors as a count.
    ErrorCount,
    /// Completed responses per second over the run.
    Rps,
    /// Achieved rate over target rate, as a fraction (open loop only; 1.0 in closed loop).
    RateRatio,
    /// Late sends as a fraction of the requests sent.
    LateRate,
    /// Late sends as a count.
    LateCount,
}

/// Which latency statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LatencyStat {
    /// Median.
    P50,
    /// 90th percentile.
    P90,
    /// 95th percentile.
    P95,
    /// 99th percentile.
    P99,
    /// 99.9th percentile.
    P999,
    /// Maximum.
    Max,
    /// Mean.
    Mean,
}

/// Comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Op {
    /// `<`
    #[serde(rename = "<")]
    Lt,
    /// `<=`
    #[serde(rename = "<=")]
    Le,
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `>=`
    #[serde(rename = ">=")]
    Ge,
}

/// A parsed threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Threshold {
    /// The expression as written.
    pub expr: String,
    /// What is measured.
    pub metric: Metric,
    /// How it compares.
    pub op: Op,
    /// The bound, in the metric's unit (ms, fraction, count, req/s).
    pub value: f64,
}

/// The outcome of one threshold on one report.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ThresholdResult {
    /// The expression as written.
    pub expr: String,
    /// Whether it held.
    pub passed: bool,
    /// The measured value, in the threshold's unit.
    pub actual: f64,
    /// The bound.
    pub bound: f64,
    /// The unit of `actual` and `bound` (`ms`, `%`, `count`, `req/s`).
    pub unit: String,
}

impl Threshold {
    /// Parses `metric op value`.
    pub fn parse(expr: &str) -> Result<Threshold, LoadError> {
        let err = |reason: &str| LoadError::Threshold {
            expr: expr.to_string(),
            reason: reason.to_string(),
        };
        let compact: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
        let (pos, op, len) = ["<=", ">=", "<", ">"]
            .iter()
            .find_map(|o| {
                compact.find(o).map(|p| {
                    let op = match *o {
                        "<=" => Op::Le,
                        ">=" => Op::Ge,
                        "<" => Op::Lt,
                        _ => Op::Gt,
                    };
                    (p, op, o.len())
                })
            })
            .ok_or_else(|| err("no comparison (<, <=, >, >=)"))?;
        let name = compact[..pos].to_ascii_lowercase();
        let raw = &compact[pos + len..];
        if raw.is_empty() {
            return Err(err("no value after the comparison"));
        }
        let percent = raw.strip_suffix('%');
        let number = |s: &str| -> Result<f64, LoadError> {
            s.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| err(&format!("{s:?} is not a non-negative number")))
        };
        let latency = |stat: LatencyStat| -> Result<(Metric, f64), LoadError> {
            let d = parse_duration_with(raw, "ms").map_err(|e| err(&e))?;
            Ok((Metric::LatencyMs(stat), d.as_secs_f64() * 1e3))
        };
        let (metric, value) = match name.as_str() {
            "p50" | "median" => latency(LatencyStat::P50)?,
            "p90" => latency(LatencyStat::P90)?,
            "p95" => latency(LatencyStat::P95)?,
            "p99" => latency(LatencyStat::P99)?,
            "p999" | "p99.9" => latency(LatencyStat::P999)?,
            "max" => latency(LatencyStat::Max)?,
            "mean" | "avg" => latency(LatencyStat::Mean)?,
            "errors" | "error_rate" => match percent {
                Some(p) => (Metric::ErrorRate, number(p)? / 100.0),
                None => (Metric::ErrorCount, number(raw)?),
            },
            "late" | "late_sends" => match percent {
                Some(p) => (Metric::LateRate, number(p)? / 100.0),
                None => (Metric::LateCount, number(raw)?),
            },
            "rps" => {
                if percent.is_some() {
                    return Err(err("rps takes requests per second, not a percentage"));
                }
                (Metric::Rps, number(raw.trim_end_matches("/s"))?)
            }
            "rate" => match percent {
                Some(p) => (Metric::RateRatio, number(p)? / 100.0),
                None => return Err(err("rate takes a percentage of the target (rate>=99%)")),
            },
            "" => return Err(err("no metric before the comparison")),
            other => {
                return Err(err(&format!(
                    "unknown metric {other:?} (p50, p90, p95, p99, p999, max, mean, errors, late, rps, rate)"
                )));
            }
        };
        Ok(Threshold {
            expr: expr.trim().to_string(),
            metric,
            op,
            value,
        })
    }

    /// The measured value on `report`, in this threshold's unit, and the display unit.
    pub fn actual(&self, report: &Report) -> (f64, &'static str) {
        let sent = report.sent.max(1) as f64;
        match self.metric {
            Metric::LatencyMs(s) => (
                match s {
                    LatencyStat::P50 => report.p50_ms,
                    LatencyStat::P90 => report.p90_ms,
                    LatencyStat::P95 => report.p95_ms,
                    LatencyStat::P99 => report.p99_ms,
                    LatencyStat::P999 => report.p999_ms,
                    LatencyStat::Max => report.max_ms,
                    LatencyStat::Mean => report.mean_ms,
                },
                "ms",
            ),
            Metric::ErrorRate => (report.errors.total as f64 / sent, "%"),
            Metric::ErrorCount => (report.errors.total as f64, "count"),
            Metric::Rps => (report.achieved_rps, "req/s"),
            Metric::RateRatio => (report.rate_ratio(), "%"),
            Metric::LateRate => (report.late_sends as f64 / sent, "%"),
            Metric::LateCount => (report.late_sends as f64, "count"),
        }
    }

    /// Evaluates the threshold on `report`.
    pub fn check(&self, report: &Report) -> ThresholdResult {
        let (actual, unit) = self.actual(report);
        let passed = match self.op {
            Op::Lt => actual < self.value,
            Op::Le => actual <= self.value,
            Op::Gt => actual > self.value,
            Op::Ge => actual >= self.value,
        };
        let scale = if unit == "%" { 100.0 } else { 1.0 };
        ThresholdResult {
            expr: self.expr.clone(),
            passed,
            actual: actual * scale,
            bound: self.value * scale,
            unit: unit.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let t = Threshold::parse("p99<250ms").unwrap();
        assert_eq!(
            (t.metric, t.op, t.value),
            (Metric::LatencyMs(LatencyStat::P99), Op::Lt, 250.0)
        );
        let t = Threshold::parse("p999 < 1s").unwrap();
        assert_eq!(t.value, 1000.0);
        let t = Threshold::parse("errors<0.1%").unwrap();
        assert_eq!(t.metric, Metric::ErrorRate);
        assert!((t.value - 0.001).abs() < 1e-12);
        let t = Threshold::parse("rps>=1000").unwrap();
        assert_eq!((t.metric, t.op, t.value), (Metric::Rps, Op::Ge, 1000.0));
        let t = Threshold::parse("rate>=99%").unwrap();
        assert_eq!(t.metric, Metric::RateRatio);
        assert_eq!(
            Threshold::parse("errors<5").unwrap().metric,
            Metric::ErrorCount
        );
    }

    #[test]
    fn rejects_bad_syntax_with_a_reason() {
        for bad in [
            "p99", "p98<1s", "p99<fast", "<1s", "rps>=10%", "rate>=99", "p99<",
        ] {
            let e = Threshold::parse(bad).unwrap_err().to_string();
            assert!(e.contains("bad threshold"), "{bad}: {e}");
        }
    }

    #[test]
    fn checks_against_a_report() {
        let mut r = Report::empty_for_tests();
        r.p99_ms = 300.0;
        r.sent = 1000;
        r.errors.total = 2;
        assert!(!Threshold::parse("p99<250ms").unwrap().check(&r).passed);
        assert!(Threshold::parse("p99<1s").unwrap().check(&r).passed);
        assert!(!Threshold::parse("errors<0.1%").unwrap().check(&r).passed);
        assert!(Threshold::parse("errors<=0.2%").unwrap().check(&r).passed);
    }
}
