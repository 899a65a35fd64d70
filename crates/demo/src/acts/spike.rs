//! Act 7, spike: open-loop load steps from half of one instance's measured capacity to
//! [`SPIKE_FACTOR`] times it, against a fleet that starts with one instance in the unit
//! envelope, with our default autoscaling policy targeting [`TARGET_UTILISATION`] of that
//! capacity per instance. Both numbers come from act 1's measurement, never a constant,
//! so the step really overloads one instance on any host.
//!
//! The report shows p99 crossing the SLO after the step and coming back under it as
//! instances arrive, the time from the step to p99 back under the SLO, the requests that
//! failed, and the instance count over time (sampled only while the fleet runs: its
//! shutdown is not plotted as zero instances).

use std::time::{Duration, Instant};

use proxy::StrategyKind;
use tokio_util::sync::CancellationToken;

use super::{Ctx, SLO_P99_MS, closed, measure, product_reads, start_balancer};
use crate::DemoError;
use crate::cpu;
use crate::limit;
use crate::procs::Instance;
use crate::report::{Act1, Act7, SpikeRow};
use crate::scope::scoped;

/// The step, as a multiple of one instance's measured capacity.
pub const SPIKE_FACTOR: f64 = 3.0;
/// Load before and after the step, as a multiple of one instance's capacity.
pub const BASE_FACTOR: f64 = 0.5;
/// The autoscaler's target per instance, as a share of one instance's capacity.
pub const TARGET_UTILISATION: f64 = 0.6;
/// p99 counts as recovered once it stays under the SLO for this many slices in a row.
pub const RECOVERED_SLICES: usize = 3;

/// Runs act 7, sized from `act1` (or from a short measurement when act 1 did not run).
pub async fn run(ctx: &Ctx, act1: Option<&Act1>) -> Result<Act7, DemoError> {
    let unit = ctx.unit();
    let (capacity, capacity_source) = match act1 {
        Some(a) => (
            a.capacity_rps,
            format!(
                "act 1: one instance's highest throughput, at concurrency {}",
                a.capacity_at_concurrency
            ),
        ),
        None => (
            measure_capacity(ctx).await?,
            "a short closed-loop measurement of one instance (act 1 did not run)".to_string(),
        ),
    };
    if !(capacity.is_finite() && capacity > 1.0) {
        return Err(DemoError::Step(format!(
            "act 7: one instance's capacity measured {capacity:.1} req/s: nothing to size a spike from"
        )));
    }
    let target_rps = (TARGET_UTILISATION * capacity).round().max(1.0);
    let (base, spike) = (
        (BASE_FACTOR * capacity).round(),
        (SPIKE_FACTOR * capacity).round(),
    );
    let needed = (spike / target_rps).ceil() as u32;
    ctx.say(&format!(
        "act 7: spike {base:.0} -> {spike:.0} req/s ({SPIKE_FACTOR}x one instance's {capacity:.0} req/s); autoscaler target {target_rps:.0} req/s per instance, {needed} needed"
    ));
    let (before, hold, after) = if ctx.cfg.quick {
        (3, 12, 3)
    } else {
        (8, 30, 8)
    };
    scoped(async |s| {
        let h = start_balancer(ctx, s, StrategyKind::LeastConnections, |c| {
            c.health.interval_ms = 500;
            c.health.path = "/readyz".into();
        })
        .await?;
        let mut command = fleet::config::default_command();
        command.extend(["--workers".to_string(), "1".to_string()]);
        let fcfg = fleet::Config {
            instances: 1,
            command,
            data_dir: ctx.work.join("act7"),
            resources: fleet::envelope::Resources {
                cpu: unit.map(|u| u.cpu),
                memory_mib: unit.map(|u| u.memory_mib),
                enforce: unit.is_some(),
                cgroup_root: None,
            },
            ..fleet::Config::default()
        };
        let (fl, fh) = fleet::Fleet::new(fcfg, ctx.cfg.exe.clone(), h.clone())
            .map_err(|e| DemoError::Step(format!("fleet: {e}")))?;
        let fstop = CancellationToken::new();
        s.spawn("fleet", fstop.clone(), fl.run(fstop));
        fh.wait_for(Duration::from_secs(30), |st| st.ready() == 1)
            .await
            .map_err(|st| DemoError::Step(format!("fleet: first instance not ready: {st:?}")))?;
        let max_instances = needed + 1;
        let acfg: autoscale::Config = toml::from_str(&format!(
            "policy = \"default\"\nmin_instances = 1\nmax_instances = {max_instances}\ntarget_rps = {target_rps:.1}\ntick_ms = 250\n"
        ))
        .map_err(|e| DemoError::Step(format!("autoscale config: {e}")))?;
        // The policy keeps its own default in-flight target beside act 1's req/s target:
        // completed req/s is capped by a saturated instance, a queue is not. (Act 1's
        // closed-loop concurrency as the in-flight target was tried: it scaled out before
        // the step, since open-loop in-flight under CFS throttling is higher.)
        let target_in_flight = acfg.target_in_flight;
        let (scaler, status) = fleet::Autoscaler::new(acfg, fh.clone(), h.clone())
            .map_err(|e| DemoError::Step(format!("autoscaler: {e}")))?;
        let sstop = CancellationToken::new();
        s.spawn("autoscaler", sstop.clone(), scaler.run(sstop));

        let profile = load::RateProfile::spike(
            base,
            spike,
            Duration::from_secs(before),
            Duration::from_secs(hold),
            Duration::from_secs(after),
        )
        .map_err(|e| DemoError::Step(format!("profile: {e}")))?;
        let mut cfg = load::RunConfig::with_profile(&format!("http://{}/", h.listen_addr()), profile);
        cfg.requests = product_reads();
        cfg.min_rate_ratio = None;
        cfg.threads = ctx.cfg.generator_threads();
        let total = cfg.duration();
        let step_at = Duration::from_secs(before);
        let instances = |st: &fleet::FleetStatus| -> Vec<Instance> {
            st.instances
                .iter()
                .filter_map(|i| Some(Instance::external(&i.id, i.addr?, i.pid?, unit)))
                .collect()
        };
        let cpu0 = cpu::sample(&instances(&fh.status()).iter().collect::<Vec<_>>());
        let t0 = Instant::now();
        let mut samples: Vec<(f64, f64)> = Vec::new();
        let mut decisions = Vec::new();
        let mut time_to_capacity = None;
        let watch = async {
            let mut last_desired = 1;
            while t0.elapsed() < total {
                let t = t0.elapsed();
                let ready = fh.status().ready();
                samples.push((t.as_secs_f64(), ready as f64));
                if time_to_capacity.is_none() && t >= step_at && ready as u32 >= needed {
                    time_to_capacity = Some((t - step_at).as_secs_f64());
                }
                if let Some(d) = status.borrow().decision.clone()
                    && d.desired != last_desired
                {
                    decisions.push(format!(
                        "t={:.1}s desired {} -> {}: {}",
                        t.as_secs_f64(),
                        last_desired,
                        d.desired,
                        d.reason
                    ));
                    last_desired = d.desired;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        };
        let (rep, ()) = tokio::join!(load::run(cfg, CancellationToken::new()), watch);
        let rep = rep?;
        let end = instances(&fh.status());
        let cpu_use = cpu::sample(&end.iter().collect::<Vec<_>>()).since(&cpu0, ctx.cfg.host_cores());
        let mean_ready = if samples.is_empty() {
            1.0
        } else {
            samples.iter().map(|x| x.1).sum::<f64>() / samples.len() as f64
        };
        let lim = limit::limit(
            &cpu_use,
            unit.map(|u| u.cpu * mean_ready),
            ctx.cfg.balancer_threads(),
            ctx.cfg.generator_threads(),
        );
        let timeline = timeline(&rep, &samples, total.as_secs_f64());
        let slo = slo_story(&timeline, step_at.as_secs_f64(), (before + hold) as f64);
        ctx.say(&format!(
            "  p99 over the SLO ({SLO_P99_MS} ms) after the step: {}; back under it {} after the step; {} instances ready after {}; {} of {} requests failed",
            slo.crossed_at_s.map_or("no".into(), |t| format!("at {t:.0} s")),
            slo.recovered_after_s.map_or("never".into(), |t| format!("{t:.1} s")),
            needed,
            time_to_capacity.map_or("never".into(), |t| format!("{t:.1} s")),
            rep.errors.total,
            rep.sent
        ));
        Ok(Act7 {
            envelope: unit,
            capacity_rps: capacity,
            capacity_source,
            target_rps,
            target_in_flight,
            slo_p99_ms: SLO_P99_MS,
            step_at_s: step_at.as_secs_f64(),
            spike_until_s: (before + hold) as f64,
            base_rps: base,
            spike_rps: spike,
            needed_instances: needed,
            max_instances,
            time_to_capacity_s: time_to_capacity,
            p99_crossed_slo_at_s: slo.crossed_at_s,
            p99_peak_ms: slo.peak_ms,
            p99_recovered_at_s: slo.recovered_at_s,
            recovery_s: slo.recovered_after_s,
            failed: rep.errors.total,
            requests: rep.sent,
            timeline,
            decisions,
            limit_text: format!(
                "by design one instance's envelope right after the step ({SPIKE_FACTOR}x its capacity), then the autoscaler's pace; over the whole run: {}",
                lim.text(&cpu_use)
            ),
            cpu: cpu_use,
        })
    })
    .await
}

/// One instance's capacity from a short closed-loop run (when act 1 did not run).
async fn measure_capacity(ctx: &Ctx) -> Result<f64, DemoError> {
    let unit = ctx.unit();
    scoped(async |s| {
        let inst = ctx
            .start(s, &ctx.shop("cap", "act7-cap.db", unit, &[]), None)
            .await?;
        closed(ctx, inst.addr, 4, ctx.secs() / 4, product_reads()).await?;
        let m = measure(
            ctx,
            &[&inst],
            false,
            closed(ctx, inst.addr, 32, ctx.secs(), product_reads()),
        )
        .await?;
        Ok(m.report.achieved_rps)
    })
    .await
}

/// One row per load slice within the run, with the instances ready in that slice (the
/// most seen); slices with no sample of the fleet have no count rather than zero.
pub fn timeline(rep: &load::Report, samples: &[(f64, f64)], total_s: f64) -> Vec<SpikeRow> {
    let slice_s = (rep.slice_ms as f64 / 1000.0).max(1e-3);
    rep.slices
        .iter()
        .filter(|s| s.t_s < total_s)
        .map(|s| {
            let ready = samples
                .iter()
                .filter(|(t, _)| *t >= s.t_s && *t < s.t_s + slice_s)
                .map(|(_, r)| *r)
                .reduce(f64::max);
            SpikeRow {
                t_s: s.t_s,
                instances: ready,
                rps: s.rps,
                p99_ms: s.p99_ms,
                errors: s.errors,
            }
        })
        .collect()
}

/// When p99 went over the SLO after the step and when it came back.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SloStory {
    /// First slice at or after the step with p99 over the SLO (s from the start).
    pub crossed_at_s: Option<f64>,
    /// Highest p99 of a slice during the spike, ms.
    pub peak_ms: f64,
    /// First slice after the crossing from which p99 stays under the SLO for
    /// [`RECOVERED_SLICES`] slices (or until the end of the spike).
    pub recovered_at_s: Option<f64>,
    /// From the step to `recovered_at_s`, s.
    pub recovered_after_s: Option<f64>,
}

/// Reads the SLO story off the timeline (pure).
pub fn slo_story(rows: &[SpikeRow], step_at_s: f64, spike_until_s: f64) -> SloStory {
    let in_spike: Vec<&SpikeRow> = rows
        .iter()
        .filter(|r| r.t_s >= step_at_s && r.t_s < spike_until_s)
        .collect();
    let peak_ms = in_spike.iter().map(|r| r.p99_ms).fold(0.0, f64::max);
    let Some(cross) = in_spike.iter().position(|r| r.p99_ms > SLO_P99_MS) else {
        return SloStory {
            peak_ms,
            ..Default::default()
        };
    };
    let after = &in_spike[cross + 1..];
    let recovered = (0..after.len()).find(|&i| {
        let run = &after[i..(i + RECOVERED_SLICES).min(after.len())];
        run.iter().all(|r| r.p99_ms <= SLO_P99_MS && r.rps > 0.0)
    });
    let recovered_at_s = recovered.map(|i| after[i].t_s);
    SloStory {
        crossed_at_s: Some(in_spike[cross].t_s),
        peak_ms,
        recovered_at_s,
        recovered_after_s: recovered_at_s.map(|t| t - step_at_s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(t: f64, p99: f64) -> SpikeRow {
        SpikeRow {
            t_s: t,
            instances: Some(1.0),
            rps: 100.0,
            p99_ms: p99,
            errors: 0,
        }
    }

    #[test]
    fn crossing_and_recovery_are_read_after_the_step() {
        // Over the SLO before the step does not count; over at 5..7, back from 8.
        let p = [
            150.0, 10.0, 10.0, 10.0, 10.0, 400.0, 900.0, 300.0, 40.0, 30.0, 20.0, 25.0,
        ];
        let rows: Vec<SpikeRow> = p
            .iter()
            .enumerate()
            .map(|(i, &v)| row(i as f64, v))
            .collect();
        let s = slo_story(&rows, 4.0, 12.0);
        assert_eq!(s.crossed_at_s, Some(5.0));
        assert_eq!(s.peak_ms, 900.0);
        assert_eq!(s.recovered_at_s, Some(8.0));
        assert_eq!(s.recovered_after_s, Some(4.0));
    }

    #[test]
    fn a_blip_under_the_slo_is_not_recovery() {
        let p = [10.0, 400.0, 50.0, 400.0, 40.0, 30.0, 20.0];
        let rows: Vec<SpikeRow> = p
            .iter()
            .enumerate()
            .map(|(i, &v)| row(i as f64, v))
            .collect();
        let s = slo_story(&rows, 1.0, 7.0);
        assert_eq!(s.recovered_at_s, Some(4.0));
    }

    #[test]
    fn never_crossed_or_never_recovered_say_so() {
        let calm: Vec<SpikeRow> = (0..6).map(|i| row(i as f64, 20.0)).collect();
        assert_eq!(slo_story(&calm, 2.0, 6.0).crossed_at_s, None);
        let stuck: Vec<SpikeRow> = (0..6).map(|i| row(i as f64, 500.0)).collect();
        let s = slo_story(&stuck, 2.0, 6.0);
        assert_eq!((s.crossed_at_s, s.recovered_at_s), (Some(2.0), None));
    }
}
