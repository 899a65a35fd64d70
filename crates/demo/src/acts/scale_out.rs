//! Act 3, scale out: N instances of the unit envelope behind the balancer, N = 1, 2, 3,
//! 4, 6, 8, so 4 instances hold the CPU of act 2's largest envelope: scale up and scale
//! out side by side at equal CPU. The curve rises nearly linearly while the envelopes fit
//! in the cores the balancer and the generator leave free, and bends where the host runs
//! out; the report names what bent it from the CPU each part used.

use advisor::bottleneck::TierReadings;
use advisor::sweep::{self, Sweep, SweepKind, SweepPoint};
use proxy::StrategyKind;

use super::scale_up::CONNECTIONS;
use super::{Ctx, admit, closed, measure, product_reads, start_balancer};
use crate::DemoError;
use crate::limit;
use crate::report::{Act2, Act3, Bend, EqualCpu, Prediction, Run};
use crate::scope::scoped;

/// Efficiency below which the curve counts as bent (80% of linear).
pub const BEND_FLOOR: f64 = 0.8;

/// Runs act 3; `act2` (when it ran) is the scale-up side of the equal-CPU comparison.
pub async fn run(ctx: &Ctx, act2: Option<&Act2>) -> Result<Act3, DemoError> {
    let unit = ctx.unit();
    ctx.say(&format!(
        "act 3: scale out behind the balancer: N × {}",
        unit.map_or("no envelope".into(), |e| e.to_string())
    ));
    let counts: &[usize] = if ctx.cfg.quick {
        &[1, 2, 4]
    } else {
        &[1, 2, 3, 4, 6, 8]
    };
    let mut runs = Vec::new();
    for &n in counts {
        let run = scoped(async |s| {
            let h = start_balancer(ctx, s, StrategyKind::LeastConnections, |_| {}).await?;
            let specs: Vec<_> = (0..n)
                .map(|i| ctx.shop(&format!("out-{n}-{i}"), "act3.db", unit, &[]))
                .collect();
            let insts = ctx.start_all(s, &specs).await?;
            let refs: Vec<_> = insts.iter().collect();
            admit(&h, &refs).await?;
            closed(ctx, h.listen_addr(), 4, ctx.secs() / 4, product_reads()).await?;
            let m = measure(
                ctx,
                &refs,
                true,
                closed(
                    ctx,
                    h.listen_addr(),
                    CONNECTIONS,
                    ctx.secs(),
                    product_reads(),
                ),
            )
            .await?;
            let label = match unit {
                Some(e) => format!("{n} × {} cpu", e.cpu),
                None => format!("{n} instance(s), no envelope"),
            };
            Ok(m.run(label, n, unit))
        })
        .await?;
        ctx.say(&format!(
            "  {}: {:.0} req/s, p99 {:.2} ms; {}",
            run.label, run.throughput_rps, run.p99_ms, run.limit_text
        ));
        runs.push(run);
    }
    let sweep = instance_sweep(&runs, ctx.cfg.generator_threads());
    let analysis = sweep::analyse(&sweep);
    let pts: Vec<(f64, f64)> = runs
        .iter()
        .map(|r| (r.n as f64, r.throughput_rps))
        .collect();
    let bend = limit::bend(&pts, BEND_FLOOR).map(|i| {
        let r = &runs[i];
        Bend {
            instances: r.n,
            efficiency: limit::efficiency(&pts, r.n as f64, r.throughput_rps),
            limit_text: r.limit_text.clone(),
        }
    });
    let x1 = runs.first().map_or(0.0, |r| r.throughput_rps);
    let speedup_at_4 = runs
        .iter()
        .find(|r| r.n == 4)
        .map(|r| r.throughput_rps / x1.max(1e-9));
    let equal_cpu = act2.and_then(|a| equal_cpu(a, &runs));
    Ok(Act3 {
        envelope: unit,
        predictions: predictions(&runs),
        analysis_text: sweep::render_text(&analysis),
        runs,
        sweep,
        analysis,
        bend,
        speedup_at_4,
        equal_cpu,
        cores: ctx.cfg.host_cores(),
    })
}

/// The runs as an instance sweep with per-tier readings, for the advisor.
pub fn instance_sweep(runs: &[Run], generator_threads: usize) -> Sweep {
    Sweep {
        kind: SweepKind::Instances,
        points: runs
            .iter()
            .map(|r| SweepPoint {
                n: r.n as f64,
                throughput_rps: r.throughput_rps,
                p99_ms: Some(r.p99_ms),
                errors_pct: None,
                tiers: Some(TierReadings {
                    load: r.n as f64,
                    app_cpu: r
                        .envelope
                        .map(|e| (r.cpu.instances / (e.cpu * r.n as f64)).min(1.0)),
                    host_cpu: r.cpu.host_busy.map(|h| h / r.cpu.host_cores.max(1) as f64),
                    load_generator_cpu: Some(r.cpu.generator / generator_threads.max(1) as f64),
                    ..Default::default()
                }),
            })
            .collect(),
        p99_bound_ms: None,
        stateless: None,
    }
}

/// Act 2's largest envelope against act 3 at the same total CPU.
fn equal_cpu(act2: &Act2, runs: &[Run]) -> Option<EqualCpu> {
    let up = act2.runs.last()?;
    let cpu = up.envelope?.cpu;
    let out = runs.iter().find(|r| {
        r.envelope
            .is_some_and(|e| (e.cpu * r.n as f64 - cpu).abs() < 1e-9)
    })?;
    Some(EqualCpu {
        cpu,
        scale_up_rps: up.throughput_rps,
        scale_out_rps: out.throughput_rps,
        instances: out.n,
        diff_pct: 100.0 * (out.throughput_rps - up.throughput_rps) / up.throughput_rps.max(1e-9),
    })
}

/// A USL fit on 1..=4 instances, checked against the counts measured beyond it.
fn predictions(runs: &[Run]) -> Vec<Prediction> {
    let pts: Vec<advisor::usl::Point> = runs
        .iter()
        .filter(|r| r.n <= 4)
        .map(|r| advisor::usl::Point {
            n: r.n as f64,
            x: r.throughput_rps,
        })
        .collect();
    let Ok(fit) = advisor::usl::fit(&pts) else {
        return Vec::new();
    };
    runs.iter()
        .filter(|r| r.n > 4)
        .map(|r| {
            let p = fit.predict(r.n as f64).x;
            Prediction {
                instances: r.n,
                predicted_rps: p,
                measured_rps: r.throughput_rps,
                error_pct: 100.0 * (p - r.throughput_rps) / r.throughput_rps.max(1e-9),
            }
        })
        .filter(|p| p.predicted_rps.is_finite())
        .collect()
}
