//! Measuring a sweep for `scaleout advise --target`: a closed-loop run per concurrency
//! level with the load generator. Kept apart so `advise.rs` stays about the advice.

use advisor::sweep::{Sweep, SweepKind, SweepPoint};

/// Runs a closed-loop sweep against `url` at each concurrency level.
pub fn measure(url: &str, levels: &[u32], seconds_per_level: u64) -> anyhow::Result<Sweep> {
    let _ = (url, levels, seconds_per_level);
    anyhow::bail!("--target needs the load generator, which has not landed yet; use --report FILE")
}

#[allow(dead_code)]
fn point(n: u32, rps: f64, p99_ms: f64) -> SweepPoint {
    SweepPoint {
        n: n as f64,
        throughput_rps: rps,
        p99_ms: Some(p99_ms),
        errors_pct: None,
        tiers: None,
    }
}

#[allow(dead_code)]
fn sweep(points: Vec<SweepPoint>) -> Sweep {
    Sweep {
        kind: SweepKind::Concurrency,
        points,
        p99_bound_ms: None,
        stateless: None,
    }
}
