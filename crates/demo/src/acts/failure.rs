//! Act 6: SIGKILL one of three instances under open-loop load, then bring it back on its
//! old address: what the client saw, how fast the balancer ejected it, and how fast it
//! was re-admitted.

use std::time::{Duration, Instant};

use proxy::{ProxyHandle, StrategyKind};

use super::{Ctx, admit, measure, product_reads, start_balancer};
use crate::DemoError;
use crate::report::Act6;
use crate::scope::scoped;

/// Offered rate, req/s: far below three instances' capacity, so every failure is the kill's.
pub const RATE_RPS: f64 = 300.0;

/// Runs act 6.
pub async fn run(ctx: &Ctx) -> Result<Act6, DemoError> {
    ctx.say("act 6: SIGKILL one of three instances under load");
    let health_interval_ms = 500;
    let unit = ctx.unit();
    scoped(async |s| {
        let h = start_balancer(ctx, s, StrategyKind::RoundRobin, |c| {
            c.health.interval_ms = health_interval_ms;
            c.health.timeout_ms = 250;
            c.health.fall = 2;
            c.health.rise = 2;
            c.health.path = "/readyz".into();
            c.outlier.consecutive_failures = 3;
            c.outlier.base_ejection_ms = 2_000;
        })
        .await?;
        let specs: Vec<_> = (0..3)
            .map(|i| ctx.shop(&format!("f-{i}"), "act6.db", unit, &[]))
            .collect();
        let insts = ctx.start_all(s, &specs).await?;
        let refs: Vec<_> = insts.iter().collect();
        admit(&h, &refs).await?;
        let total = Duration::from_secs(if ctx.cfg.quick { 6 } else { 12 });
        let mut cfg =
            load::RunConfig::open_loop(&format!("http://{}/", h.listen_addr()), RATE_RPS, total)?;
        cfg.requests = product_reads();
        cfg.min_rate_ratio = None;
        cfg.threads = ctx.cfg.generator_threads();
        let victim = insts[1].clone();
        let t0 = Instant::now();
        let mut timing = (Duration::ZERO, None, None);
        let m = measure(ctx, &refs, true, async {
            let script = async {
                tokio::time::sleep(total / 3).await;
                s.stop(&victim.id).await?;
                let killed_at = t0.elapsed();
                ctx.say(&format!(
                    "  killed {} at {:.1} s",
                    victim.id,
                    killed_at.as_secs_f64()
                ));
                let eligible = |h: &ProxyHandle| {
                    h.backends()
                        .iter()
                        .any(|b| b.name == victim.id && b.eligible)
                };
                let mut ejected_after = None;
                while t0.elapsed() < total * 2 / 3 {
                    if ejected_after.is_none() && !eligible(&h) {
                        ejected_after = Some(t0.elapsed() - killed_at);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                ctx.start(s, &specs[1], Some(victim.addr)).await?;
                let restarted_at = t0.elapsed();
                let mut readmitted_after = None;
                let deadline = Instant::now() + Duration::from_secs(20);
                while Instant::now() < deadline {
                    if eligible(&h) {
                        readmitted_after = Some(t0.elapsed() - restarted_at);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                timing = (killed_at, ejected_after, readmitted_after);
                Ok::<(), DemoError>(())
            };
            let (rep, scripted) = tokio::join!(load::run(cfg, Default::default()), script);
            scripted?;
            Ok(rep?)
        })
        .await?;
        let (killed_at, ejected_after, readmitted_after) = timing;
        let rep = &m.report;
        let metrics = h.metrics();
        let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
        ctx.say(&format!(
            "  {} of {} requests failed; {}, {}",
            rep.errors.total,
            rep.sent,
            ejected_after.map_or("never ejected".to_string(), |d| format!(
                "ejected after {}",
                ms(d)
            )),
            readmitted_after.map_or("not re-admitted within the run".to_string(), |d| {
                format!("re-admitted {} after restart", ms(d))
            }),
        ));
        Ok(Act6 {
            requests: rep.sent,
            failed: rep.errors.total,
            errors: rep.errors.clone(),
            retries: metrics.retries_total,
            killed_at_s: killed_at.as_secs_f64(),
            ejected_after_ms: ejected_after.map(|d| d.as_secs_f64() * 1000.0),
            readmitted_after_ms: readmitted_after.map(|d| d.as_secs_f64() * 1000.0),
            health_interval_ms,
            p99_ms: rep.p99_ms,
            // Slices past the schedule hold only the drain of the last requests: left out.
            slices: rep
                .slices
                .iter()
                .filter(|s| s.t_s < total.as_secs_f64())
                .map(|s| (s.t_s, s.rps, s.errors as f64, s.p99_ms))
                .collect(),
            envelope: unit,
            offered_rps: RATE_RPS,
            limit_text: m.limit.text(&m.cpu),
            cpu: m.cpu,
        })
    })
    .await
}
