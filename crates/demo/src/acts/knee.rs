//! Act 1: one instance in the unit envelope, a closed-loop concurrency sweep to its knee,
//! with per-tier readings. Its highest throughput is the per-instance capacity act 7
//! sizes its spike and its autoscaler target from.

use std::time::Duration;

use advisor::bottleneck::TierReadings;
use advisor::sweep::{self, Sweep, SweepKind, SweepPoint};

use tokio_util::sync::CancellationToken;

use super::{Ctx, measure, metrics, product_reads};
use crate::report::{Act1, Act1Point};
use crate::scope::scoped;
use crate::{DemoError, http};

/// The p99 bound act 1 reads its knee against: the demo's SLO, ms.
pub const P99_BOUND_MS: f64 = super::SLO_P99_MS;

/// Runs act 1.
pub async fn run(ctx: &Ctx) -> Result<Act1, DemoError> {
    let envelope = ctx.unit();
    ctx.say(&format!(
        "act 1: one instance ({}), sweeping concurrency to the knee",
        envelope.map_or("no envelope".to_string(), |e| e.to_string())
    ));
    let levels: &[usize] = if ctx.cfg.quick {
        &[1, 2, 4, 8, 16, 32]
    } else {
        &[1, 2, 4, 8, 16, 32, 64, 128]
    };
    let points = scoped(async |s| {
        let inst = ctx
            .start(s, &ctx.shop("one", "act1.db", envelope, &[]), None)
            .await?;
        // The same sweep as `scaleout advise --target` (load::ConcurrencySweep): a
        // warm-up of the cache and the connection pool (the sweep measures steady
        // state), then one closed-loop run per level; each level is wrapped here with
        // the instance's CPU and metrics readings.
        let mut plan = load::ConcurrencySweep::new(
            &format!("http://{}/", inst.addr),
            levels,
            ctx.secs(),
        )?;
        plan.warmup = Duration::from_millis(if ctx.cfg.quick { 500 } else { 2000 });
        plan.requests = product_reads();
        plan.threads = ctx.cfg.generator_threads();
        let points = plan
            .run_with(async |c, cfg| {
                let m0 = metrics(inst.metrics_addr).await;
                let m = measure(ctx, &[&inst], false, async {
                    Ok(load::run(cfg, CancellationToken::new()).await?)
                })
                .await?;
                let m1 = metrics(inst.metrics_addr).await;
                let d = |needles: &[&str]| {
                    http::scrape_sum(&m1, needles) - http::scrape_sum(&m0, needles)
                };
                let (hits, misses) = (
                    d(&["shop_cache_hits_total"]),
                    d(&["shop_cache_misses_total"]),
                );
                let in_use = http::scrape_sum(&m1, &["shop_db_pool_connections", "in_use"]);
                let max = http::scrape_sum(&m1, &["shop_db_pool_connections", "max"]).max(1.0);
                // Saturation of the app: its cores over its envelope, or (without one)
                // over the cores the generator leaves it.
                let room = match envelope {
                    Some(e) => e.cpu,
                    None => (m.cpu.host_cores as f64 - m.cpu.generator).max(0.25),
                };
                let rep = &m.report;
                ctx.say(&format!(
                    "  concurrency {c:>3}: {:>8.0} req/s, p99 {:>7.2} ms, instance {:.2} cores (throttled {:.0}%), generator {:.2}",
                    rep.achieved_rps,
                    rep.p99_ms,
                    m.cpu.instances,
                    100.0 * m.cpu.throttled.first().copied().unwrap_or(0.0),
                    m.cpu.generator
                ));
                Ok::<_, DemoError>(Act1Point {
                    concurrency: c,
                    throughput_rps: rep.achieved_rps,
                    p50_ms: rep.p50_ms,
                    p99_ms: rep.p99_ms,
                    errors: rep.errors.total,
                    app_cpu_share: (m.cpu.instances / room).min(1.0),
                    db_pool_in_use_share: in_use / max,
                    cache_hit_rate: if hits + misses > 0.0 {
                        Some(hits / (hits + misses))
                    } else {
                        None
                    },
                    limit_text: m.limit.text(&m.cpu),
                    limit: m.limit,
                    cpu: m.cpu,
                })
            })
            .await?;
        Ok(points)
    })
    .await?;
    let sweep = sweep_of_points(&points, ctx.cfg.generator_threads());
    let analysis = sweep::analyse(&sweep);
    let best = points
        .iter()
        .max_by(|a, b| a.throughput_rps.total_cmp(&b.throughput_rps))
        .ok_or_else(|| DemoError::Step("act 1 measured no level".into()))?;
    Ok(Act1 {
        envelope,
        capacity_rps: best.throughput_rps,
        capacity_at_concurrency: best.concurrency,
        capacity_limit: best.limit_text.clone(),
        analysis_text: sweep::render_text(&analysis),
        points,
        analysis,
    })
}

/// Act 1's sweep as the advisor reads it (per-tier readings included).
pub fn sweep_of(a: &Act1, generator_threads: usize) -> Sweep {
    sweep_of_points(&a.points, generator_threads)
}

fn sweep_of_points(points: &[Act1Point], generator_threads: usize) -> Sweep {
    let threads = generator_threads.max(1) as f64;
    Sweep {
        kind: SweepKind::Concurrency,
        points: points
            .iter()
            .map(|p| SweepPoint {
                n: p.concurrency as f64,
                throughput_rps: p.throughput_rps,
                p99_ms: Some(p.p99_ms),
                errors_pct: None,
                tiers: Some(TierReadings {
                    load: p.concurrency as f64,
                    app_cpu: Some(p.app_cpu_share),
                    db_connections: Some(p.db_pool_in_use_share),
                    cache_hit_rate: p.cache_hit_rate,
                    host_cpu: p.cpu.host_busy.map(|h| h / p.cpu.host_cores.max(1) as f64),
                    load_generator_cpu: Some(p.cpu.generator / threads),
                    ..Default::default()
                }),
            })
            .collect(),
        p99_bound_ms: Some(P99_BOUND_MS),
        // Act 1 knows nothing about per-instance state; act 4 and `scaleout audit` do.
        stateless: None,
    }
}
