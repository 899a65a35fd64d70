//! Knee of throughput vs offered load (Kneedle: maximum distance of the normalised
//! curve from the diagonal), cross-checked by a p99 bound.
//!
//! Must never: invent a knee on a curve that is still straight; it returns `None`.

use serde::{Deserialize, Serialize};

/// Where the curve bends, by two independent readings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Knee {
    /// Offered load at the Kneedle knee, if the curve bends at all.
    pub kneedle_load: Option<f64>,
    /// Throughput there.
    pub kneedle_throughput: Option<f64>,
    /// Highest offered load whose p99 is within the bound, if a bound was given.
    pub p99_load: Option<f64>,
}

/// Kneedle on a concave increasing curve: points (offered load, throughput), any order.
///
/// Only the rising part counts: points past the last highest throughput are dropped (a
/// retrograde tail is not a knee), and a curve whose highest point is not at least 5%
/// above its first has no knee (a flat or falling sweep never bent, it never rose).
/// Both axes are then normalised to [0, 1]; the knee is the point farthest above the
/// diagonal, provided it is meaningfully above it (`min_bend`, 0.05 by default in
/// `find`). Non-finite points are ignored.
pub fn kneedle(points: &[(f64, f64)], min_bend: f64) -> Option<(f64, f64)> {
    let mut p: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|q| q.0.is_finite() && q.1.is_finite())
        .collect();
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    let top = p
        .iter()
        .enumerate()
        .fold(None, |m: Option<(usize, f64)>, (i, q)| match m {
            Some((_, y)) if y > q.1 => m,
            _ => Some((i, q.1)),
        })?;
    p.truncate(top.0 + 1);
    if p.len() < 3 || top.1 < p[0].1 * 1.05 {
        return None;
    }
    let (x0, x1) = (p[0].0, p[p.len() - 1].0);
    let y0 = p.iter().map(|q| q.1).fold(f64::INFINITY, f64::min);
    let y1 = top.1;
    if x1 <= x0 || y1 <= y0 {
        return None;
    }
    let (i, d) = p
        .iter()
        .enumerate()
        .map(|(i, q)| (i, (q.1 - y0) / (y1 - y0) - (q.0 - x0) / (x1 - x0)))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    (d >= min_bend).then_some(p[i])
}

/// The knee from a sweep of (offered load, throughput, p99 ms) and an optional p99 bound.
pub fn find(points: &[(f64, f64, f64)], p99_bound_ms: Option<f64>) -> Knee {
    let curve: Vec<(f64, f64)> = points.iter().map(|p| (p.0, p.1)).collect();
    let k = kneedle(&curve, 0.05);
    let p99_load = p99_bound_ms.and_then(|b| {
        points
            .iter()
            .filter(|p| p.2 <= b)
            .map(|p| p.0)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
    });
    Knee {
        kneedle_load: k.map(|k| k.0),
        kneedle_throughput: k.map(|k| k.1),
        p99_load,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_bend_of_a_saturating_curve() {
        // Throughput rises linearly to 1000 req/s at load 10, then flattens.
        let pts: Vec<(f64, f64)> = (1..=30)
            .map(|n| (n as f64, (n as f64 * 100.0).min(1000.0)))
            .collect();
        let (x, y) = kneedle(&pts, 0.05).unwrap();
        assert_eq!(x, 10.0);
        assert_eq!(y, 1000.0);
    }

    #[test]
    fn falling_or_flat_curves_have_no_knee() {
        let falling = [(1.0, 13447.0), (2.0, 10180.0), (3.0, 9905.0), (4.0, 9164.0)];
        assert_eq!(kneedle(&falling, 0.05), None);
        let flat = [(1.0, 100.0), (2.0, 101.0), (3.0, 99.0), (4.0, 102.0)];
        assert_eq!(kneedle(&flat, 0.05), None);
        // A retrograde tail is cut: the knee is read on the rising part only.
        let peaked = [
            (1.0, 100.0),
            (2.0, 200.0),
            (3.0, 280.0),
            (4.0, 300.0),
            (5.0, 310.0),
            (6.0, 150.0),
            (7.0, 50.0),
        ];
        assert_eq!(kneedle(&peaked, 0.05), Some((3.0, 280.0)));
    }

    #[test]
    fn a_straight_line_has_no_knee() {
        let pts: Vec<(f64, f64)> = (1..=10).map(|n| (n as f64, n as f64 * 3.0)).collect();
        assert_eq!(kneedle(&pts, 0.05), None);
    }

    #[test]
    fn p99_bound_picks_the_last_load_within_it() {
        let pts = [
            (100.0, 100.0, 5.0),
            (200.0, 200.0, 8.0),
            (300.0, 280.0, 40.0),
            (400.0, 290.0, 900.0),
        ];
        let k = find(&pts, Some(50.0));
        assert_eq!(k.p99_load, Some(300.0));
        assert_eq!(find(&pts, Some(1.0)).p99_load, None);
    }
}
