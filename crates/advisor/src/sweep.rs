//! A saved sweep (what `scaleout advise --report FILE` reads and the demo writes) and
//! the analysis that joins the fit, the knee and the diagnosis into one report.
//!
//! **Levels the host limited are set apart.** When a sweep runs on one machine (the
//! instances, the balancer and the load generator sharing its cores), the levels where
//! the host ran out of CPU measure the machine, not the service: on issue 11's 2-core
//! host, act 3 rose 6.6x from 1 to 4 envelopes and then flattened at 6 and 8 with the
//! host 87-92% busy, and a USL fit over every level put N* at 7 and blamed the app tier.
//! A level is *host-limited* when the host's CPU reading is at least [`HOST_FULL`] of
//! its cores, or at least [`HOST_BUSY`] while the instances got less than
//! [`APP_STARVED`] of the CPU allotted to them (they were runnable and the host did not
//! run them). Such levels are left out of the fit, the knee, the diagnosis and the
//! scaling verdict, and listed with their readings ([`Analysis::host_limited`]), as long
//! as at least two levels with room remain; when (nearly) every level is host-limited the
//! whole sweep is read as it is, and the diagnosis names the host.

use serde::{Deserialize, Serialize};

use crate::AdvisorError;
use crate::bottleneck::{self, Diagnosis, TierReadings};
use crate::knee::{self, Knee};
use crate::scaling::{self, Scaling, Shape};
use crate::usl::{self, Point, UslFit};

/// What the sweep varied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SweepKind {
    /// Client concurrency (closed loop).
    #[default]
    Concurrency,
    /// App instances behind the balancer.
    Instances,
    /// Worker threads / cores of one instance.
    Workers,
}

/// One measured level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepPoint {
    /// The level (concurrency, instances or workers).
    pub n: f64,
    /// Achieved throughput, req/s.
    pub throughput_rps: f64,
    /// p99 latency, ms.
    #[serde(default)]
    pub p99_ms: Option<f64>,
    /// Errors as a percentage of requests.
    #[serde(default)]
    pub errors_pct: Option<f64>,
    /// Per-tier readings at this level, when measured.
    #[serde(default)]
    pub tiers: Option<TierReadings>,
}

/// A sweep, as saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sweep {
    /// What was varied.
    #[serde(default)]
    pub kind: SweepKind,
    /// The measurements.
    pub points: Vec<SweepPoint>,
    /// The p99 bound used to read the knee, ms.
    #[serde(default)]
    pub p99_bound_ms: Option<f64>,
    /// The audit's verdict, when known.
    #[serde(default)]
    pub stateless: Option<bool>,
}

/// Checks one point's figures: `Err((field, why))` names the field that is out of range.
pub fn check_point(p: &SweepPoint) -> Result<(), (&'static str, String)> {
    if !(p.n > 0.0 && p.n <= usl::MAX_LEVEL) {
        return Err((
            "n",
            format!("must be > 0 and <= {:e}, got {}", usl::MAX_LEVEL, p.n),
        ));
    }
    if !(p.throughput_rps >= 0.0 && p.throughput_rps <= usl::MAX_THROUGHPUT) {
        return Err((
            "throughput_rps",
            format!(
                "must be >= 0 and <= {:e} req/s, got {}",
                usl::MAX_THROUGHPUT,
                p.throughput_rps
            ),
        ));
    }
    if let Some(v) = p.p99_ms
        && !(v.is_finite() && v >= 0.0)
    {
        return Err(("p99_ms", format!("must be >= 0, got {v}")));
    }
    if let Some(v) = p.errors_pct
        && !(0.0..=100.0).contains(&v)
    {
        return Err(("errors_pct", format!("must be within 0..=100, got {v}")));
    }
    Ok(())
}

impl Sweep {
    /// Parses a saved sweep (JSON), refusing out-of-range figures with the point named.
    pub fn from_json(text: &str) -> Result<Sweep, AdvisorError> {
        let s: Sweep = serde_json::from_str(text)
            .map_err(|e| AdvisorError::BadInput(format!("sweep report: {e}")))?;
        s.validate()?;
        Ok(s)
    }

    /// Parses a sweep kept as CSV with a header (see [`crate::csv`] for the accepted
    /// column names); `kind` overrides the kind the level column's name implies.
    pub fn from_csv(text: &str, kind: Option<SweepKind>) -> Result<Sweep, AdvisorError> {
        Ok(crate::csv::parse(text, kind)?.sweep)
    }

    /// The (level, throughput) pairs the fit and the verdict read.
    pub fn usl_points(&self) -> Vec<Point> {
        self.points
            .iter()
            .map(|p| Point {
                n: p.n,
                x: p.throughput_rps,
            })
            .collect()
    }

    /// Checks every figure: `points[i].field` names the first one out of range.
    pub fn validate(&self) -> Result<(), AdvisorError> {
        if self.points.is_empty() {
            return Err(AdvisorError::BadInput(
                "sweep report: points is empty".into(),
            ));
        }
        for (i, p) in self.points.iter().enumerate() {
            check_point(p).map_err(|(field, why)| {
                AdvisorError::BadInput(format!("sweep report: points[{i}].{field} {why}"))
            })?;
        }
        if let Some(b) = self.p99_bound_ms
            && !(b.is_finite() && b > 0.0)
        {
            return Err(AdvisorError::BadInput(format!(
                "sweep report: p99_bound_ms must be > 0, got {b}"
            )));
        }
        Ok(())
    }
}

/// Host CPU share (of all its cores) at or above which a level measured the host.
pub const HOST_FULL: f64 = 0.85;
/// Host CPU share at or above which starved instances mark a level as host-limited.
pub const HOST_BUSY: f64 = 0.75;
/// Share of their allotted CPU below which instances count as starved by the host.
pub const APP_STARVED: f64 = 0.85;

/// A level whose throughput the host's CPU limited (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostLimited {
    /// The level.
    pub n: f64,
    /// Its throughput, req/s.
    pub throughput_rps: f64,
    /// Share of the host's cores busy there, 0..1.
    pub host_cpu: f64,
    /// Share of their allotted CPU the instances got there, when known.
    pub app_cpu: Option<f64>,
}

/// Whether `p`'s readings show the host's CPU limiting it (see the module docs).
pub fn host_limited(p: &SweepPoint) -> Option<HostLimited> {
    let t = p.tiers.as_ref()?;
    let host = t.host_cpu.filter(|h| h.is_finite())?;
    let app = t.app_cpu.filter(|a| a.is_finite());
    let starved = app.is_some_and(|a| a < APP_STARVED);
    (host >= HOST_FULL || (host >= HOST_BUSY && starved)).then_some(HostLimited {
        n: p.n,
        throughput_rps: p.throughput_rps,
        host_cpu: host,
        app_cpu: app,
    })
}

/// The sweep's points split into those with room on the host and the host-limited ones;
/// all points (and nothing set apart) when fewer than two levels would keep room.
pub fn split_host_limited(sweep: &Sweep) -> (Vec<SweepPoint>, Vec<HostLimited>) {
    let mut kept = Vec::new();
    let mut limited = Vec::new();
    for p in &sweep.points {
        match host_limited(p) {
            Some(h) => limited.push(h),
            None => kept.push(p.clone()),
        }
    }
    let mut levels: Vec<f64> = kept.iter().map(|p| p.n).collect();
    levels.sort_by(f64::total_cmp);
    levels.dedup();
    if limited.is_empty() || levels.len() < 2 {
        return (sweep.points.clone(), Vec::new());
    }
    limited.sort_by(|a, b| a.n.total_cmp(&b.n));
    (kept, limited)
}

/// Everything the advisor concludes from a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// What was varied.
    pub kind: SweepKind,
    /// The USL fit, or why there is none.
    pub usl: Result<UslFit, String>,
    /// Where throughput bends.
    pub knee: Knee,
    /// The tier that saturates first.
    pub diagnosis: Diagnosis,
    /// Whether adding load units adds capacity, in words (flat and falling sweeps say so).
    #[serde(default)]
    pub scaling: Scaling,
    /// Levels the host's CPU limited, left out of everything above (see the module docs).
    #[serde(default)]
    pub host_limited: Vec<HostLimited>,
}

/// Fits, finds the knee and diagnoses, on the levels where the host had room.
pub fn analyse(sweep: &Sweep) -> Analysis {
    let (points, host_limited) = split_host_limited(sweep);
    let pts: Vec<Point> = points
        .iter()
        .map(|p| Point {
            n: p.n,
            x: p.throughput_rps,
        })
        .collect();
    let usl = usl::fit(&pts).map_err(|e| e.to_string());
    let curve: Vec<(f64, f64, f64)> = points
        .iter()
        .map(|p| (p.n, p.throughput_rps, p.p99_ms.unwrap_or(f64::INFINITY)))
        .collect();
    let knee = knee::find(&curve, sweep.p99_bound_ms);
    let readings: Vec<TierReadings> = points
        .iter()
        .filter_map(|p| {
            p.tiers.clone().map(|mut t| {
                t.load = p.n;
                t
            })
        })
        .collect();
    let diagnosis = bottleneck::diagnose(&readings, 0.8, sweep.stateless);
    let mut scaling = scaling::assess(sweep.kind, &pts, usl.as_ref().ok(), &diagnosis);
    if !host_limited.is_empty() {
        let verdict = scaling.text.trim_end_matches('.').to_string();
        scaling.text = format!("{verdict}{}", host_sentence(sweep.kind, &host_limited));
    }
    Analysis {
        kind: sweep.kind,
        usl,
        knee,
        diagnosis,
        scaling,
        host_limited,
    }
}

/// "; at 6 instances (host CPU 87%, instances at 83% of their CPU) ...": the sentence
/// the verdict ends with when levels were set apart.
fn host_sentence(kind: SweepKind, limited: &[HostLimited]) -> String {
    let each: Vec<String> = limited
        .iter()
        .map(|h| {
            format!(
                "{} ({:.0} req/s, host CPU {:.0}%{})",
                level_words(kind, h.n),
                h.throughput_rps,
                h.host_cpu * 100.0,
                h.app_cpu.map_or(String::new(), |a| format!(
                    ", instances at {:.0}% of their CPU",
                    a * 100.0
                ))
            )
        })
        .collect();
    format!(
        ". The host ran out of cores at {}: a limit of the machine the sweep ran on (instances, balancer and load generator share its cores), not of the service, so {} left out of the fit and of this verdict.",
        each.join(", "),
        if limited.len() == 1 {
            "that level is"
        } else {
            "those levels are"
        }
    )
}

/// The swept unit as a noun ("instances").
pub fn unit(kind: SweepKind) -> &'static str {
    match kind {
        SweepKind::Concurrency => "concurrency",
        SweepKind::Instances => "instances",
        SweepKind::Workers => "workers",
    }
}

/// One level in words: "1 instance", "4 instances", "2 workers", "concurrency 8".
pub fn level_words(kind: SweepKind, n: f64) -> String {
    match kind {
        SweepKind::Concurrency => format!("concurrency {n}"),
        SweepKind::Instances if n == 1.0 => "1 instance".into(),
        SweepKind::Workers if n == 1.0 => "1 worker".into(),
        _ => format!("{n} {}", unit(kind)),
    }
}

/// A plain-text rendering for terminals and report.md. Never prints NaN or ∞.
pub fn render_text(a: &Analysis) -> String {
    let mut s = String::new();
    let unit = unit(a.kind);
    s.push_str(&format!(
        "scaling: {}
",
        a.scaling.text
    ));
    match &a.usl {
        Ok(f) => {
            s.push_str(&format!(
                "USL fit over {} points ({unit}): sigma {:.4}, kappa {:.6}, lambda {:.1} req/s{}\n",
                f.points,
                f.sigma,
                f.kappa,
                f.lambda,
                if f.is_at_bound() {
                    let b: Vec<String> = f
                        .at_bound
                        .iter()
                        .map(|b| format!("{} = {}", b.parameter, b.bound))
                        .collect();
                    format!(" [at bound: {}]", b.join(", "))
                } else {
                    String::new()
                }
            ));
            if let (Some(sc), Some(kc)) = (f.sigma_ci, f.kappa_ci) {
                s.push_str(&format!(
                    "  95% CI: sigma [{:.4}, {:.4}], kappa [{:.6}, {:.6}]{}\n",
                    sc.lo,
                    sc.hi,
                    kc.lo,
                    kc.hi,
                    if f.is_at_bound() {
                        " (clipped to the bounds; not meaningful for a coefficient at its bound)"
                    } else {
                        ""
                    }
                ));
            }
            s.push_str(&format!("  {}\n", f.peak_text(unit)));
            s.push_str(&format!(
                "  fit error: R² {:.4}, RMSE {:.1} req/s, MAPE {:.1}%; limited by {:?}\n",
                f.r_squared, f.rmse, f.mape_pct, f.limited_by
            ));
            for w in &f.warnings {
                s.push_str(&format!("  warning: {w}\n"));
            }
        }
        Err(e) => s.push_str(&format!("USL fit: not possible: {e}\n")),
    }
    match (a.knee.kneedle_load, a.knee.kneedle_throughput) {
        (Some(l), Some(t)) => s.push_str(&format!("knee: {unit} {l} at {t:.0} req/s (Kneedle)\n")),
        _ if matches!(a.scaling.shape, Shape::Flat | Shape::Falling) => {
            s.push_str("knee: none (throughput never rose above the first level)\n")
        }
        _ if a.scaling.shape == Shape::Unknown => {
            s.push_str("knee: none (no curve to read: too few levels or no throughput)\n")
        }
        _ => s.push_str("knee: none found (throughput still rising linearly)\n"),
    }
    if let Some(l) = a.knee.p99_load {
        s.push_str(&format!("  highest {unit} within the p99 bound: {l}\n"));
    }
    if !a.host_limited.is_empty() {
        let levels: Vec<String> = a
            .host_limited
            .iter()
            .map(|h| {
                format!(
                    "{} (host CPU {:.0}%)",
                    level_words(a.kind, h.n),
                    h.host_cpu * 100.0
                )
            })
            .collect();
        s.push_str(&format!(
            "host-limited, left out of the fit, the knee and the diagnosis: {}\n",
            levels.join(", ")
        ));
    }
    s.push_str(&format!("bottleneck: {}\n", a.diagnosis.reason));
    for f in &a.diagnosis.fixes {
        s.push_str(&format!("  - {f}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_sweep_is_analysed_end_to_end() {
        let json = r#"{"kind":"concurrency","p99_bound_ms":100,"points":[
            {"n":1,"throughput_rps":1000,"p99_ms":2,"tiers":{"app_cpu":0.1,"db_cpu":0.05}},
            {"n":2,"throughput_rps":1900,"p99_ms":3,"tiers":{"app_cpu":0.3,"db_cpu":0.1}},
            {"n":4,"throughput_rps":3400,"p99_ms":4,"tiers":{"app_cpu":0.6,"db_cpu":0.2}},
            {"n":8,"throughput_rps":4500,"p99_ms":8,"tiers":{"app_cpu":0.9,"db_cpu":0.3}},
            {"n":16,"throughput_rps":4700,"p99_ms":40,"tiers":{"app_cpu":0.99,"db_cpu":0.3}},
            {"n":32,"throughput_rps":4300,"p99_ms":200,"tiers":{"app_cpu":1.0,"db_cpu":0.3}}]}"#;
        let a = analyse(&Sweep::from_json(json).unwrap());
        let f = a.usl.as_ref().unwrap();
        assert!(f.n_star > 8.0 && f.n_star < 32.0, "{}", f.n_star);
        assert_eq!(a.knee.p99_load, Some(16.0));
        assert_eq!(a.diagnosis.bottleneck, Some(crate::bottleneck::Tier::App));
        let text = render_text(&a);
        assert!(
            text.contains("sigma") && text.contains("bottleneck"),
            "{text}"
        );
    }

    #[test]
    fn bad_reports_are_refused_with_the_field_named() {
        let e = Sweep::from_json(r#"{"points":[{"n":1,"throughput":5}]}"#).unwrap_err();
        assert!(e.to_string().contains("throughput"), "{e}");
        assert!(
            Sweep::from_json(r#"{"points":[]}"#)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
    }
}
