//! Universal Scalability Law fit: X(N) = λN / (1 + σ(N−1) + κN(N−1)).
//!
//! Fitted by Levenberg–Marquardt on the raw throughput residuals with an analytic
//! Jacobian and bounds σ, κ ≥ 0, λ > 0. We deliberately do not use Gunther's quadratic
//! transform (regressing N/C(N) − 1 on N−1): it divides every point by X(1), so a noisy
//! first measurement biases both coefficients.
//!
//! Must never: extrapolate silently. Every prediction outside the measured range is
//! marked low confidence, and a fit with fewer than six points or none near the peak
//! says so in `warnings`.

use serde::{Deserialize, Serialize};

use crate::AdvisorError;

/// One measurement: load level (concurrency or instance count) and throughput.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Load level N (concurrency, workers or instances); must be > 0.
    pub n: f64,
    /// Throughput X(N) in requests per second; must be ≥ 0.
    pub x: f64,
}

/// A two-sided 95% confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Lower bound.
    pub lo: f64,
    /// Upper bound.
    pub hi: f64,
}

/// The fitted law and how far to trust it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UslFit {
    /// Contention (serial fraction), ≥ 0.
    pub sigma: f64,
    /// Coherency (crosstalk) cost, ≥ 0.
    pub kappa: f64,
    /// Throughput of one unit of load with no contention, req/s.
    pub lambda: f64,
    /// 95% intervals for sigma, kappa, lambda (from the covariance at the optimum);
    /// `None` when there are too few points for degrees of freedom.
    pub sigma_ci: Option<Interval>,
    /// See `sigma_ci`.
    pub kappa_ci: Option<Interval>,
    /// See `sigma_ci`.
    pub lambda_ci: Option<Interval>,
    /// Load level of peak throughput over N ≥ 1: √((1−σ)/κ), or 1 when that is ≤ 1
    /// (σ + κ ≥ 1: throughput never rises above one unit's). Infinite only when the fit
    /// has no peak (κ = 0 and σ < 1); serialized as `null` then. `peak` says which case.
    #[serde(
        serialize_with = "finite_or_null",
        deserialize_with = "null_as_infinity"
    )]
    pub n_star: f64,
    /// Predicted throughput at `n_star`; the asymptote λ/σ when κ = 0 and σ > 0;
    /// infinite (serialized `null`) when σ = κ = 0.
    #[serde(
        serialize_with = "finite_or_null",
        deserialize_with = "null_as_infinity"
    )]
    pub x_max: f64,
    /// Where the fitted curve peaks, as a case a reader can act on (never NaN or ∞).
    #[serde(default)]
    pub peak: Peak,
    /// Coefficients that ended on a bound of the fit (σ ∈ [0, 1], κ ≥ 0). A coefficient
    /// at its bound is not an estimate: the data wanted a value outside the law's range.
    #[serde(default)]
    pub at_bound: Vec<BoundHit>,
    /// Coefficient of determination of the fit.
    pub r_squared: f64,
    /// Root-mean-square error, req/s.
    pub rmse: f64,
    /// Mean absolute percentage error over the points, %.
    pub mape_pct: f64,
    /// Number of points fitted.
    pub points: usize,
    /// Largest load level measured (predictions beyond it are extrapolations).
    pub n_max_measured: f64,
    /// Which limit dominates.
    pub limited_by: Limit,
    /// Honest caveats about this fit.
    pub warnings: Vec<String>,
}

/// Where the fitted curve peaks over N ≥ 1. Every figure in it is finite.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "case", rename_all = "snake_case")]
pub enum Peak {
    /// σ + κ ≥ 1: X(N) never exceeds X(1) = `x`; adding load units adds no throughput
    /// (it is flat, or falls from the first unit on).
    NoRise {
        /// Throughput of one unit (λ), req/s.
        x: f64,
    },
    /// A peak at `n` > 1 with throughput `x`.
    At {
        /// N*.
        n: f64,
        /// X(N*), req/s.
        x: f64,
        /// False when N* lies beyond the largest measured level (an extrapolation).
        within_measured: bool,
    },
    /// κ = 0 and 0 < σ < 1: throughput rises toward `x` = λ/σ without a peak.
    Asymptote {
        /// λ/σ, req/s.
        x: f64,
    },
    /// σ = κ = 0: linear over the measured range; no limit was found.
    #[default]
    Unbounded,
}

/// Which side of its range a coefficient ended on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoundSide {
    /// The lower bound (0 for σ and κ).
    Lower,
    /// The upper bound (1 for σ).
    Upper,
}

/// A coefficient that ended on a bound of the fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BoundHit {
    /// `sigma` or `kappa`.
    pub parameter: String,
    /// The bound's value.
    pub bound: f64,
    /// Lower or upper.
    pub side: BoundSide,
}

/// Largest load level and throughput accepted: beyond these the sums of squares of the
/// fit leave f64's range, and no real sweep comes near them.
pub const MAX_LEVEL: f64 = 1e7;
/// See `MAX_LEVEL`.
pub const MAX_THROUGHPUT: f64 = 1e12;

fn finite_or_null<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        s.serialize_none()
    }
}

fn null_as_infinity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

/// What limits scalability, by the larger coefficient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// σ > κ: queueing for a shared resource (locks, a single DB, a hot row).
    Contention,
    /// κ ≥ σ (and κ > 0): pairwise coordination (cache coherency, chatty consensus).
    Coherency,
    /// σ = κ = 0: linear within the measured range.
    None,
}

/// A prediction and whether it lies inside the measured range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Load level.
    pub n: f64,
    /// Predicted throughput, req/s.
    pub x: f64,
    /// False when `n` is beyond the largest measured level (or below the smallest).
    pub confident: bool,
}

/// X(N) for given coefficients.
pub fn model(n: f64, lambda: f64, sigma: f64, kappa: f64) -> f64 {
    lambda * n / (1.0 + sigma * (n - 1.0) + kappa * n * (n - 1.0))
}

impl UslFit {
    /// Predicted throughput at `n`, marked low-confidence outside the measured range.
    pub fn predict(&self, n: f64) -> Prediction {
        Prediction {
            n,
            x: model(n, self.lambda, self.sigma, self.kappa),
            confident: n <= self.n_max_measured * 1.000_001,
        }
    }

    /// Smallest integer N whose predicted throughput reaches `x`, if any N ≤ `limit` does.
    pub fn n_for_throughput(&self, x: f64, limit: u32) -> Option<u32> {
        (1..=limit).find(|&n| model(n as f64, self.lambda, self.sigma, self.kappa) >= x)
    }
}

/// Fits the USL to `points` (at least 3 distinct load levels).
pub fn fit(points: &[Point]) -> Result<UslFit, AdvisorError> {
    validate(points)?;
    let n_max = points.iter().map(|p| p.n).fold(0.0, f64::max);
    let lambda0 = points
        .iter()
        .map(|p| p.x / p.n)
        .fold(0.0, f64::max)
        .max(1e-9);
    // The documented start (σ 0.1, κ 0.01, λ = max X/N) plus two others; the best wins.
    // Several starts make the result independent of a poor first guess.
    let starts = [
        [lambda0, 0.1, 0.01],
        [lambda0, 0.01, 0.0001],
        [lambda0, 0.0, 0.0],
    ];
    let mut best: Option<([f64; 3], f64)> = None;
    for s in starts {
        let (p, sse) = levenberg_marquardt(points, s);
        if best.as_ref().is_none_or(|(_, b)| sse < *b) {
            best = Some((p, sse));
        }
    }
    let ([lambda, sigma, kappa], _) = best.expect("at least one start");
    // A coefficient whose effect over the measured range is below rounding sits on its
    // bound: the solver stops a hair inside a bound it would cross (σ 0.9999999999999999
    // on data that fall from the first point, κ 1e-17 on linear data, which would put a
    // "peak" at N = 10⁸). Snap it, so the bound is reported and the peak is read right.
    let sigma = if sigma >= 1.0 - 1e-9 {
        1.0
    } else if sigma * n_max <= 1e-9 {
        0.0
    } else {
        sigma
    };
    let kappa = if kappa * n_max * n_max <= 1e-9 {
        0.0
    } else {
        kappa
    };
    let sse = sse(points, &[lambda, sigma, kappa]);
    Ok(summarise(points, lambda, sigma, kappa, sse, n_max))
}

fn validate(points: &[Point]) -> Result<(), AdvisorError> {
    for (i, p) in points.iter().enumerate() {
        if !(p.n.is_finite() && p.n > 0.0 && p.n <= MAX_LEVEL) {
            return Err(AdvisorError::BadInput(format!(
                "points[{i}].n must be > 0 and <= {MAX_LEVEL:e}, got {}",
                p.n
            )));
        }
        if !(p.x.is_finite() && p.x >= 0.0 && p.x <= MAX_THROUGHPUT) {
            return Err(AdvisorError::BadInput(format!(
                "points[{i}].x must be >= 0 and <= {MAX_THROUGHPUT:e}, got {}",
                p.x
            )));
        }
    }
    if points.iter().all(|p| p.x == 0.0) {
        return Err(AdvisorError::BadInput(
            "every point has zero throughput: there is nothing to fit".into(),
        ));
    }
    let mut levels: Vec<f64> = points.iter().map(|p| p.n).collect();
    levels.sort_by(f64::total_cmp);
    levels.dedup();
    if levels.len() < 3 {
        return Err(AdvisorError::BadInput(format!(
            "a USL fit needs at least 3 distinct load levels, got {}",
            levels.len()
        )));
    }
    Ok(())
}

fn sse(points: &[Point], p: &[f64; 3]) -> f64 {
    points
        .iter()
        .map(|q| (q.x - model(q.n, p[0], p[1], p[2])).powi(2))
        .sum()
}

/// Jacobian row ∂X/∂(λ, σ, κ) at one point.
fn gradient(n: f64, p: &[f64; 3]) -> [f64; 3] {
    let [lambda, sigma, kappa] = *p;
    let d = 1.0 + sigma * (n - 1.0) + kappa * n * (n - 1.0);
    let d2 = d * d;
    [
        n / d,
        -lambda * n * (n - 1.0) / d2,
        -lambda * n * n * (n - 1.0) / d2,
    ]
}

/// Bounded Levenberg–Marquardt (Marquardt's diagonal scaling; bounds by projection).
fn levenberg_marquardt(points: &[Point], start: [f64; 3]) -> ([f64; 3], f64) {
    let project = |p: [f64; 3]| [p[0].max(1e-12), p[1].clamp(0.0, 1.0), p[2].max(0.0)];
    let mut p = project(start);
    let mut cost = sse(points, &p);
    let mut mu = 1e-3;
    for _ in 0..2000 {
        let mut jtj = [[0.0; 3]; 3];
        let mut jtr = [0.0; 3];
        for q in points {
            let g = gradient(q.n, &p);
            let r = q.x - model(q.n, p[0], p[1], p[2]);
            for i in 0..3 {
                jtr[i] += g[i] * r;
                for j in 0..3 {
                    jtj[i][j] += g[i] * g[j];
                }
            }
        }
        let mut improved = false;
        while mu < 1e16 {
            let mut a = jtj;
            for (i, row) in a.iter_mut().enumerate() {
                row[i] += mu * jtj[i][i].max(1e-300);
            }
            let Some(step) = solve3(a, jtr) else {
                mu *= 10.0;
                continue;
            };
            let cand = project([p[0] + step[0], p[1] + step[1], p[2] + step[2]]);
            let c = sse(points, &cand);
            if c < cost {
                let rel = (cost - c) / cost.max(1e-300);
                p = cand;
                cost = c;
                mu = (mu / 10.0).max(1e-12);
                improved = rel > 1e-15;
                break;
            }
            mu *= 10.0;
        }
        if !improved {
            break;
        }
    }
    (p, cost)
}

/// Solves a 3×3 system by Gaussian elimination with partial pivoting.
fn solve3(mut a: [[f64; 3]; 3], mut b: [f64; 3]) -> Option<[f64; 3]> {
    for c in 0..3 {
        let piv = (c..3).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        if a[piv][c].abs() < 1e-300 {
            return None;
        }
        a.swap(c, piv);
        b.swap(c, piv);
        for r in c + 1..3 {
            let f = a[r][c] / a[c][c];
            let pivot_row = a[c];
            for (dst, src) in a[r].iter_mut().zip(pivot_row).skip(c) {
                *dst -= f * src;
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = [0.0; 3];
    for r in (0..3).rev() {
        let s: f64 = (r + 1..3).map(|k| a[r][k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

fn invert3(m: [[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let mut inv = [[0.0; 3]; 3];
    for (c, col) in [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
        .into_iter()
        .enumerate()
    {
        let x = solve3(m, col)?;
        for r in 0..3 {
            inv[r][c] = x[r];
        }
    }
    Some(inv)
}

/// Two-sided 97.5% quantile of Student's t for `df` degrees of freedom.
fn t_975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    if df == 0 {
        f64::INFINITY
    } else if df <= 30 {
        T[df - 1]
    } else {
        1.96
    }
}

fn summarise(
    points: &[Point],
    lambda: f64,
    sigma: f64,
    kappa: f64,
    sse: f64,
    n_max: f64,
) -> UslFit {
    let n = points.len();
    let p = [lambda, sigma, kappa];
    let mean = points.iter().map(|q| q.x).sum::<f64>() / n as f64;
    let sst: f64 = points.iter().map(|q| (q.x - mean).powi(2)).sum();
    // A flat sweep has no variance to explain: R² says nothing then, and 1 − SSE/0 is
    // undefined. Report 1 for an exact fit and 0 otherwise rather than NaN.
    let r_squared = if sst > 0.0 {
        1.0 - sse / sst
    } else if sse <= 0.0 {
        1.0
    } else {
        0.0
    };
    let rmse = (sse / n as f64).sqrt();
    let mape_pct = 100.0
        * points
            .iter()
            .filter(|q| q.x > 0.0)
            .map(|q| ((q.x - model(q.n, lambda, sigma, kappa)) / q.x).abs())
            .sum::<f64>()
        / points.iter().filter(|q| q.x > 0.0).count().max(1) as f64;

    let (mut sigma_ci, mut kappa_ci, mut lambda_ci) = (None, None, None);
    if n > 3 {
        let mut jtj = [[0.0; 3]; 3];
        for q in points {
            let g = gradient(q.n, &p);
            for i in 0..3 {
                for j in 0..3 {
                    jtj[i][j] += g[i] * g[j];
                }
            }
        }
        if let Some(cov) = invert3(jtj) {
            let s2 = sse / (n - 3) as f64;
            let t = t_975(n - 3);
            // Intervals are clipped to each coefficient's range (σ ∈ [0, 1], κ, λ ≥ 0);
            // one that overflows (a near-singular covariance) is reported as absent.
            let ci = |i: usize, lo_bound: f64, hi_bound: f64| {
                let se = (s2 * cov[i][i]).max(0.0).sqrt();
                let iv = Interval {
                    lo: (p[i] - t * se).max(lo_bound),
                    hi: (p[i] + t * se).min(hi_bound),
                };
                (iv.lo.is_finite() && iv.hi.is_finite()).then_some(iv)
            };
            lambda_ci = ci(0, 0.0, f64::MAX);
            sigma_ci = ci(1, 0.0, 1.0);
            kappa_ci = ci(2, 0.0, f64::MAX);
        }
    }

    let mut at_bound = Vec::new();
    let mut hit = |parameter: &str, bound: f64, side: BoundSide| {
        at_bound.push(BoundHit {
            parameter: parameter.into(),
            bound,
            side,
        })
    };
    // `fit` snapped coefficients within rounding of a bound onto it.
    if sigma >= 1.0 {
        hit("sigma", 1.0, BoundSide::Upper);
    } else if sigma <= 0.0 {
        hit("sigma", 0.0, BoundSide::Lower);
    }
    if kappa <= 0.0 {
        hit("kappa", 0.0, BoundSide::Lower);
    }

    // The peak over N ≥ 1. X(N) rises above X(1) somewhere iff σ + κ < 1 (then
    // √((1−σ)/κ) > 1); otherwise one unit is as good as it gets.
    let peak = if sigma + kappa >= 1.0 {
        Peak::NoRise { x: lambda }
    } else if kappa > 0.0 {
        let ns = ((1.0 - sigma) / kappa).sqrt();
        Peak::At {
            n: ns,
            x: model(ns, lambda, sigma, kappa),
            within_measured: ns <= n_max * 1.000_001,
        }
    } else if sigma > 0.0 {
        Peak::Asymptote { x: lambda / sigma }
    } else {
        Peak::Unbounded
    };
    let (n_star, x_max) = match peak {
        Peak::NoRise { x } => (1.0, x),
        Peak::At { n, x, .. } => (n, x),
        Peak::Asymptote { x } => (f64::INFINITY, x),
        Peak::Unbounded => (f64::INFINITY, f64::INFINITY),
    };
    let limited_by = if sigma == 0.0 && kappa == 0.0 {
        Limit::None
    } else if sigma > kappa {
        Limit::Contention
    } else {
        Limit::Coherency
    };

    let mut warnings = Vec::new();
    if n < 6 {
        warnings.push(format!(
            "only {n} points: with fewer than 6 the peak N* can be wildly off; measure more load levels"
        ));
    }
    for b in &at_bound {
        match (b.parameter.as_str(), b.side) {
            ("sigma", BoundSide::Upper) => warnings.push(format!(
                "fit at a parameter bound: sigma = 1 (its upper bound); throughput does not rise above one unit's {lambda:.0} req/s, so sigma and kappa bound the curve rather than estimate it"
            )),
            ("sigma", BoundSide::Lower) if kappa > 0.0 => warnings.push(
                "fit at a parameter bound: sigma = 0 (its lower bound); no contention is measurable, all the bend is coherency".into(),
            ),
            _ => {}
        }
    }
    match peak {
        Peak::NoRise { .. } if sigma < 1.0 => warnings.push(format!(
            "the fitted peak lies at or below one unit (sigma + kappa = {:.3} >= 1): adding load units does not add throughput",
            sigma + kappa
        )),
        Peak::Asymptote { .. } | Peak::Unbounded => warnings.push(
            "fit at a parameter bound: kappa = 0 (its lower bound); no retrograde region measured, so the peak is beyond the data and cannot be located"
                .to_string(),
        ),
        Peak::At {
            within_measured: false,
            n: ns,
            ..
        } if n_max < 0.5 * ns => warnings.push(format!(
            "no points near the peak (largest N measured {n_max}, fitted N* {ns:.1}): N* and X_max are extrapolations, low confidence"
        )),
        _ => {}
    }
    if let Some(ci) = kappa_ci
        && kappa > 0.0
        && ci.lo <= 0.0
    {
        warnings.push(
            "kappa's 95% interval includes 0: the coherency term is not established by this data"
                .to_string(),
        );
    }
    if r_squared < 0.9 && sst > 0.0 {
        warnings.push(format!(
            "poor fit (R² = {r_squared:.3}): the USL may not describe this system"
        ));
    }
    UslFit {
        sigma,
        kappa,
        lambda,
        sigma_ci,
        kappa_ci,
        lambda_ci,
        n_star,
        x_max,
        peak,
        at_bound,
        r_squared,
        rmse,
        mape_pct,
        points: n,
        n_max_measured: n_max,
        limited_by,
        warnings,
    }
}

impl UslFit {
    /// True when a coefficient ended on a bound of the fit.
    pub fn is_at_bound(&self) -> bool {
        !self.at_bound.is_empty()
    }

    /// One sentence on the peak, in `unit`s (e.g. "instances"), with no NaN or ∞.
    pub fn peak_text(&self, unit: &str) -> String {
        match self.peak {
            Peak::NoRise { x } => format!(
                "no peak above one unit: throughput never rises above {x:.0} req/s as {unit} are added"
            ),
            Peak::At {
                n,
                x,
                within_measured,
            } => format!(
                "peak at N* = {n:.1} {unit}, predicted max {x:.0} req/s{}",
                if within_measured {
                    ""
                } else {
                    " (beyond the measured range: low confidence)"
                }
            ),
            Peak::Asymptote { x } => {
                format!("no peak within reach (kappa = 0); asymptote {x:.0} req/s")
            }
            Peak::Unbounded => {
                "no limit found: throughput grows linearly over the measured range".into()
            }
        }
    }
}

#[cfg(test)]
mod tests;
