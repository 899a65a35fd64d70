//! The shape of a sweep in words: does adding load units (instances, workers,
//! concurrency) add throughput at all, and if not, what the measurement can say about why.
//!
//! Read from the measured points first and the fit second, so a sweep too short to fit
//! (one or two levels) still gets a verdict, and a fit pinned at a bound cannot turn a
//! falling sweep into "peaks at 0 instances".
//!
//! Must never: print NaN or ∞, or name a bottleneck tier that no reading showed.

use serde::{Deserialize, Serialize};

use crate::bottleneck::{self, Diagnosis};
use crate::sweep::{SweepKind, level_words};
use crate::usl::{Peak, Point, UslFit};

/// Relative change below which two throughputs count as the same (measurement noise).
pub const NOISE: f64 = 0.05;

/// The shape of throughput against the swept level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// Throughput rises with the level over the measured range.
    Rising,
    /// Rises, then falls past a measured peak.
    Peaked,
    /// Stays within the noise band of the first level's throughput.
    Flat,
    /// Falls from the first level on: no later level beats the first beyond noise.
    Falling,
    /// Too little data to tell (fewer than two usable levels, or no throughput at all).
    #[default]
    Unknown,
}

/// The verdict on a sweep's scaling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Scaling {
    /// The shape.
    pub shape: Shape,
    /// True when adding load units adds no capacity (flat, falling, or a fit with no rise).
    pub adds_capacity: bool,
    /// Lowest measured level and its throughput (mean of repeats), req/s.
    pub first: Option<(f64, f64)>,
    /// Level with the highest measured throughput and that throughput, req/s.
    pub best: Option<(f64, f64)>,
    /// Highest measured level and its throughput, req/s.
    pub last: Option<(f64, f64)>,
    /// What limits it, when the diagnosis can tell; else why it cannot.
    pub bottleneck: String,
    /// The verdict in one or two sentences.
    pub text: String,
    /// Points left out of the verdict because they are not usable measurements.
    pub skipped_points: usize,
}

/// Usable points, sorted by level, repeats at one level averaged.
pub fn levels(points: &[Point]) -> (Vec<(f64, f64)>, usize) {
    let mut ok: Vec<Point> = points
        .iter()
        .copied()
        .filter(|p| p.n.is_finite() && p.n > 0.0 && p.x.is_finite() && p.x >= 0.0)
        .collect();
    let skipped = points.len() - ok.len();
    ok.sort_by(|a, b| a.n.total_cmp(&b.n));
    let mut out: Vec<(f64, f64, usize)> = Vec::new();
    for p in ok {
        match out.last_mut() {
            Some(last) if last.0 == p.n => {
                last.1 += p.x;
                last.2 += 1;
            }
            _ => out.push((p.n, p.x, 1)),
        }
    }
    (
        out.into_iter()
            .map(|(n, sum, k)| (n, sum / k as f64))
            .collect(),
        skipped,
    )
}

/// The phrase for adding one more of the swept unit.
fn words(kind: SweepKind) -> &'static str {
    match kind {
        SweepKind::Instances => "scaling out this way",
        SweepKind::Workers => "adding workers (scaling up this way)",
        SweepKind::Concurrency => "adding concurrency",
    }
}

/// The bottleneck clause: the diagnosed tier, or why the measurement cannot name one.
pub fn bottleneck_clause(diagnosis: &Diagnosis) -> String {
    match diagnosis.bottleneck {
        Some(t) => format!(
            "{} is the bottleneck ({:.0}% saturated at load {})",
            t.label(),
            diagnosis.saturation.unwrap_or(0.0) * 100.0,
            diagnosis.at_load.unwrap_or(0.0)
        ),
        None if diagnosis.reason == bottleneck::NO_READINGS => {
            "the measurement cannot tell which resource is the bottleneck: the sweep has no per-tier readings (app CPU, DB, cache, host CPU, load generator)".into()
        }
        None => format!(
            "the measurement cannot tell which resource is the bottleneck: {}",
            diagnosis.reason
        ),
    }
}

/// Reads the shape of `points` (any order), with the fit when there is one.
pub fn assess(
    kind: SweepKind,
    points: &[Point],
    fit: Option<&UslFit>,
    diagnosis: &Diagnosis,
) -> Scaling {
    let (lv, skipped) = levels(points);
    let adding = words(kind);
    let bottleneck = bottleneck_clause(diagnosis);
    let level = |n: f64| level_words(kind, n);
    let mut s = Scaling {
        bottleneck: bottleneck.clone(),
        skipped_points: skipped,
        ..Default::default()
    };
    let (Some(&first), Some(&last)) = (lv.first(), lv.last()) else {
        s.text = "no usable measurement: nothing can be said about scaling".into();
        return s;
    };
    let best = lv
        .iter()
        .copied()
        .fold(first, |b, p| if p.1 > b.1 { p } else { b });
    s.first = Some(first);
    s.best = Some(best);
    s.last = Some(last);
    if lv.len() < 2 {
        s.text = format!(
            "one level measured ({} at {:.0} req/s): nothing can be said about scaling; measure at least 3 levels (6 for a trustworthy fit)",
            level(first.0),
            first.1
        );
        return s;
    }
    if best.1 <= 0.0 {
        s.text = "no level measured any throughput: nothing can be said about scaling".into();
        return s;
    }
    let pct = |a: f64, b: f64| {
        if a > 0.0 {
            format!("{:+.0}%", 100.0 * (b - a) / a)
        } else {
            "from zero".into()
        }
    };
    let no_rise_in_fit = fit.is_some_and(|f| matches!(f.peak, Peak::NoRise { .. }));
    let gain = if first.1 > 0.0 {
        best.1 / first.1
    } else {
        f64::MAX
    };
    let min_after = lv[1..].iter().map(|p| p.1).fold(f64::MAX, f64::min);
    if gain <= 1.0 + NOISE {
        let falling = min_after < first.1 * (1.0 - NOISE);
        s.shape = if falling { Shape::Falling } else { Shape::Flat };
        s.adds_capacity = false;
        let what = if falling {
            format!(
                "throughput falls from {:.0} req/s at {} to {:.0} req/s at {} ({})",
                first.1,
                level(first.0),
                last.1,
                level(last.0),
                pct(first.1, last.1)
            )
        } else {
            format!(
                "throughput stays within {:.0}% of {:.0} req/s from {} to {}",
                NOISE * 100.0,
                first.1,
                level(first.0),
                level(last.0)
            )
        };
        s.text = format!("{adding} does not add capacity: {bottleneck}. Measured: {what}.");
        if no_rise_in_fit {
            s.text
                .push_str(" The USL fit agrees: its curve never rises above the first unit.");
        }
        return s;
    }
    s.adds_capacity = true;
    if best.0 < last.0 && last.1 < best.1 * (1.0 - NOISE) {
        s.shape = Shape::Peaked;
        s.text = format!(
            "throughput rises from {:.0} req/s at {} to a measured peak of {:.0} req/s at {} ({}), then falls to {:.0} req/s at {}: past {} {adding} loses capacity; {bottleneck}",
            first.1,
            level(first.0),
            best.1,
            level(best.0),
            pct(first.1, best.1),
            last.1,
            level(last.0),
            level(best.0),
        );
    } else {
        s.shape = Shape::Rising;
        let linear = first.1 * last.0 / first.0;
        let efficiency = if linear > 0.0 { last.1 / linear } else { 0.0 };
        s.text = format!(
            "throughput rises from {:.0} req/s at {} to {:.0} req/s at {} ({}; {:.0}% of linear)",
            first.1,
            level(first.0),
            best.1,
            level(best.0),
            pct(first.1, best.1),
            100.0 * efficiency.min(99.0)
        );
    }
    if no_rise_in_fit {
        s.text.push_str(
            "; the USL fit disagrees (its curve never rises above one unit): the data are too noisy for the law, trust the measured points",
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bottleneck::TierReadings;

    fn pts(d: &[(f64, f64)]) -> Vec<Point> {
        d.iter().map(|&(n, x)| Point { n, x }).collect()
    }

    fn no_readings() -> Diagnosis {
        bottleneck::diagnose(&[], 0.8, None)
    }

    #[test]
    fn falling_sweep_says_scaling_out_adds_nothing_and_cannot_name_the_tier() {
        let d = pts(&[(1.0, 100.0), (2.0, 80.0), (4.0, 60.0)]);
        let s = assess(SweepKind::Instances, &d, None, &no_readings());
        assert_eq!(s.shape, Shape::Falling);
        assert!(!s.adds_capacity);
        assert!(
            s.text.starts_with(
                "scaling out this way does not add capacity: the measurement cannot tell"
            ),
            "{}",
            s.text
        );
        assert!(s.text.contains("-40%"), "{}", s.text);
    }

    #[test]
    fn falling_sweep_names_the_tier_that_saturated() {
        let readings = [TierReadings {
            load: 1.0,
            host_cpu: Some(0.97),
            app_cpu: Some(0.4),
            ..Default::default()
        }];
        let diag = bottleneck::diagnose(&readings, 0.8, None);
        let d = pts(&[(1.0, 100.0), (2.0, 80.0)]);
        let s = assess(SweepKind::Instances, &d, None, &diag);
        assert!(
            s.text.starts_with(
                "scaling out this way does not add capacity: the host's CPU is the bottleneck"
            ),
            "{}",
            s.text
        );
    }

    #[test]
    fn flat_single_and_empty_sweeps() {
        let flat = pts(&[(1.0, 100.0), (2.0, 102.0), (3.0, 98.0), (4.0, 101.0)]);
        let s = assess(SweepKind::Concurrency, &flat, None, &no_readings());
        assert_eq!(s.shape, Shape::Flat);
        assert!(
            s.text
                .starts_with("adding concurrency does not add capacity")
        );
        let one = assess(
            SweepKind::Instances,
            &pts(&[(2.0, 5.0)]),
            None,
            &no_readings(),
        );
        assert_eq!(one.shape, Shape::Unknown);
        assert!(one.text.contains("one level measured"), "{}", one.text);
        let none = assess(SweepKind::Instances, &[], None, &no_readings());
        assert_eq!(none.shape, Shape::Unknown);
        let zeros = pts(&[(1.0, 0.0), (2.0, 0.0)]);
        let z = assess(SweepKind::Instances, &zeros, None, &no_readings());
        assert!(
            z.text.contains("no level measured any throughput"),
            "{}",
            z.text
        );
    }

    #[test]
    fn rising_and_peaked_sweeps() {
        let rising = pts(&[(1.0, 100.0), (2.0, 190.0), (4.0, 350.0)]);
        let s = assess(SweepKind::Instances, &rising, None, &no_readings());
        assert_eq!(s.shape, Shape::Rising);
        assert!(s.adds_capacity);
        assert!(s.text.contains("88% of linear"), "{}", s.text);
        let peaked = pts(&[(1.0, 100.0), (2.0, 190.0), (4.0, 250.0), (8.0, 150.0)]);
        let s = assess(SweepKind::Instances, &peaked, None, &no_readings());
        assert_eq!(s.shape, Shape::Peaked);
        assert!(
            s.text.contains("peak of 250 req/s at 4 instances"),
            "{}",
            s.text
        );
    }

    #[test]
    fn repeats_are_averaged_and_bad_points_skipped() {
        let d = pts(&[(2.0, 90.0), (1.0, 100.0), (2.0, 70.0), (3.0, f64::NAN)]);
        let (lv, skipped) = levels(&d);
        assert_eq!(lv, vec![(1.0, 100.0), (2.0, 80.0)]);
        assert_eq!(skipped, 1);
    }
}
