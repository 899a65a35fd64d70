//! Measuring a sweep for `scaleout advise --target`: a closed-loop run per concurrency
//! level with the load generator. Kept apart so `advise.rs` stays about the advice.

use std::time::Duration;

use advisor::sweep::{Sweep, SweepKind, SweepPoint};
use tokio_util::sync::CancellationToken;

/// Runs a closed-loop sweep against `url` at each concurrency level (ascending), printing
/// each level as it completes.
pub fn measure(url: &str, levels: &[u32], seconds_per_level: u64) -> anyhow::Result<Sweep> {
    anyhow::ensure!(
        !levels.is_empty(),
        "--levels must name at least one concurrency level"
    );
    anyhow::ensure!(
        (1..=600).contains(&seconds_per_level),
        "--seconds-per-level must be 1..=600"
    );
    let mut levels = levels.to_vec();
    levels.sort_unstable();
    levels.dedup();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut points = Vec::new();
    for &c in &levels {
        anyhow::ensure!(c >= 1, "--levels must be >= 1");
        let mut cfg =
            load::RunConfig::closed_loop(url, c as usize, Duration::from_secs(seconds_per_level));
        cfg.threads = 1;
        let report = rt.block_on(load::run(cfg, CancellationToken::new()))?;
        let errors_pct = if report.sent > 0 {
            100.0 * report.errors.total as f64 / report.sent as f64
        } else {
            0.0
        };
        eprintln!(
            "advise: concurrency {c:>4}: {:>9.0} req/s  p99 {:>8.2} ms  errors {errors_pct:.2}%",
            report.achieved_rps, report.p99_ms
        );
        points.push(SweepPoint {
            n: c as f64,
            throughput_rps: report.achieved_rps,
            p99_ms: Some(report.p99_ms),
            errors_pct: Some(errors_pct),
            tiers: None,
        });
    }
    Ok(Sweep {
        kind: SweepKind::Concurrency,
        points,
        p99_bound_ms: None,
        stateless: None,
    })
}
