//! Act 7, spike: open-loop load steps from half of one instance's measured capacity to
//! [`SPIKE_SHARE`] of what the autoscaler's largest fleet can serve on this host, against
//! a fleet that starts with one instance in the unit envelope, with our default
//! autoscaling policy targeting the spike's share per instance at that largest fleet.
//! Every number comes from measurements (act 1's capacity of one instance, act 3's
//! throughput where the host still had room), never a constant, so the step overloads
//! one instance and the fleet the autoscaler can build serves it, on any host.
//!
//! Why the ceiling: a spike sized from one instance alone (3x its capacity) asked a
//! 2-core host for more than it can serve once the balancer and the generator take their
//! share: in issue 11's release run the autoscaler reached 6 instances of 0.25 cpu and
//! they served 4,100-5,700 of 6,728 req/s while p99 grew to 12.6 s; act 3 had shown the
//! host's cores running out past 4 such instances. The largest fleet is therefore the
//! largest act 3 count the host did not limit (see [`advisor::sweep::host_limited`]),
//! and without act 3 the envelopes that fill half the host's cores.
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
use crate::report::{Act1, Act3, Act7, SpikeRow};
use crate::scope::scoped;

/// The spike, as a share of what the largest fleet serves on this host.
pub const SPIKE_SHARE: f64 = 0.7;
/// Load before and after the step, as a multiple of one instance's capacity.
pub const BASE_FACTOR: f64 = 0.5;
/// The spike is at least this multiple of one instance's capacity.
pub const MIN_SPIKE_FACTOR: f64 = 1.5;
/// Without act 3: the share of the host's cores the envelopes of the largest fleet may
/// fill (the balancer, the generator and the fleet's own processes need the rest).
pub const ENVELOPE_SHARE_OF_HOST: f64 = 0.5;
/// p99 counts as recovered once it stays under the SLO for this many slices in a row.
pub const RECOVERED_SLICES: usize = 3;

/// How act 7 is sized, and from what.
#[derive(Debug, Clone, PartialEq)]
pub struct Sizing {
    /// One instance's capacity, req/s.
    pub capacity_rps: f64,
    /// The autoscaler's maximum: the largest fleet the host serves without running out.
    pub max_instances: u32,
    /// What that fleet serves, req/s: the lesser of `max_instances` x capacity and what
    /// act 3 measured at that count.
    pub ceiling_rps: f64,
    /// Where `max_instances` and `ceiling_rps` came from, in words.
    pub ceiling_source: String,
    /// Offered rate before and after the step, req/s.
    pub base_rps: f64,
    /// Offered rate during the spike, req/s.
    pub spike_rps: f64,
    /// The autoscaler's target per instance, req/s: the spike spread over the maximum.
    pub target_rps: f64,
}

/// Act 3's runs as (instances, req/s, host-limited), for [`size`].
pub fn act3_counts(a: &Act3) -> Vec<(u32, f64, bool)> {
    let limited: Vec<f64> = a
        .sweep
        .points
        .iter()
        .filter_map(advisor::sweep::host_limited)
        .map(|h| h.n)
        .collect();
    a.runs
        .iter()
        .map(|r| {
            (
                r.n as u32,
                r.throughput_rps,
                limited.contains(&(r.n as f64)),
            )
        })
        .collect()
}

/// Sizes act 7 from one instance's `capacity` and act 3's runs (pure; `act3` as
/// [`act3_counts`] gives them, empty when act 3 did not run).
pub fn size(
    capacity: f64,
    act3: &[(u32, f64, bool)],
    host_cores: usize,
    unit_cpu: Option<f64>,
) -> Sizing {
    let several = act3.iter().filter(|r| r.0 >= 2);
    // The largest count with room on the host; when the host limited every count (a
    // busy machine), the count that served the most.
    let pick = several
        .clone()
        .filter(|r| !r.2)
        .max_by_key(|r| r.0)
        .or_else(|| several.max_by(|x, y| x.1.total_cmp(&y.1)));
    let from_act3 = pick.map(|&(n, rps, limited)| {
        let ran_out: Vec<String> = act3
            .iter()
            .filter(|r| r.2)
            .map(|r| r.0.to_string())
            .collect();
        (
            n,
            rps,
            format!(
                "act 3: {n} instances served {rps:.0} req/s{}",
                if limited {
                    ", the most of any count, though the host's CPU limited every count".to_string()
                } else if ran_out.is_empty() {
                    " with room on the host".to_string()
                } else {
                    format!(
                        " with room on the host (its cores ran out at {} instances)",
                        ran_out.join(", ")
                    )
                }
            ),
        )
    });
    let (max_instances, measured, ceiling_source) = from_act3.unwrap_or_else(|| {
        let unit = unit_cpu.unwrap_or(host_cores as f64).max(1e-3);
        let m = ((host_cores as f64 * ENVELOPE_SHARE_OF_HOST / unit).floor() as u32).max(2);
        (
            m,
            f64::INFINITY,
            format!(
                "{m} envelopes fill {:.0}% of the host's {host_cores} cores (act 3 did not run, or every count of 2 or more was host-limited)",
                ENVELOPE_SHARE_OF_HOST * 100.0
            ),
        )
    });
    let ceiling_rps = (capacity * f64::from(max_instances)).min(measured);
    // At least half again one instance's capacity, so the step overloads the first
    // instance whatever the host left for the fleet.
    let spike_rps = (SPIKE_SHARE * ceiling_rps)
        .max(MIN_SPIKE_FACTOR * capacity)
        .round();
    Sizing {
        capacity_rps: capacity,
        max_instances,
        ceiling_rps,
        ceiling_source,
        base_rps: (BASE_FACTOR * capacity).round(),
        spike_rps,
        target_rps: (spike_rps / f64::from(max_instances)).ceil().max(1.0),
    }
}

/// Runs act 7, sized from `act1` (or from a short measurement when act 1 did not run) and
/// `act3` (see [`size`]).
pub async fn run(ctx: &Ctx, act1: Option<&Act1>, act3: Option<&Act3>) -> Result<Act7, DemoError> {
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
    let counts = act3.map(act3_counts).unwrap_or_default();
    let sizing = size(capacity, &counts, ctx.cfg.host_cores(), unit.map(|u| u.cpu));
    let (base, spike, target_rps, max_instances) = (
        sizing.base_rps,
        sizing.spike_rps,
        sizing.target_rps,
        sizing.max_instances,
    );
    let needed = ((spike / target_rps).ceil() as u32).min(max_instances);
    ctx.say(&format!(
        "act 7: spike {base:.0} -> {spike:.0} req/s ({:.1}x one instance's {capacity:.0} req/s; {:.0}% of the {:.0} req/s {max_instances} instances serve here: {}); autoscaler target {target_rps:.0} req/s per instance, {needed} needed",
        spike / capacity,
        SPIKE_SHARE * 100.0,
        sizing.ceiling_rps,
        sizing.ceiling_source
    ));
    // The step comes after the policy's warm-up (`default.warmup_s`), so the autoscaler
    // meets it with its queue signals on.
    let (before, hold, after) = if ctx.cfg.quick {
        (6, 14, 3)
    } else {
        (10, 30, 8)
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
        let acfg: autoscale::Config = toml::from_str(&format!(
            "policy = \"default\"\nmin_instances = 1\nmax_instances = {max_instances}\ntarget_rps = {target_rps:.1}\ntick_ms = 250\n"
        ))
        .map_err(|e| DemoError::Step(format!("autoscale config: {e}")))?;
        // The policy keeps its own default in-flight target beside the req/s target:
        // completed req/s is capped by a saturated instance, a queue is not. (Act 1's
        // closed-loop concurrency as the in-flight target was tried: it scaled out before
        // the step, since open-loop in-flight under CFS throttling is higher.) Its
        // warm-up guard keeps the cold start's queue from counting (issue 11's release
        // run went to the maximum 0.5 s into the load without it).
        let target_in_flight = acfg.target_in_flight;
        let warmup_s = acfg.tuned.warmup_s;
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
            ceiling_rps: sizing.ceiling_rps,
            ceiling_source: sizing.ceiling_source.clone(),
            warmup_s,
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
                "by design one instance's envelope right after the step ({:.1}x its capacity), then the autoscaler's pace; over the whole run: {}",
                spike / capacity,
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
    fn the_spike_fits_the_largest_fleet_the_host_had_room_for() {
        // Issue 11's release run: act 1 measured 2,243 req/s; act 3 rose to 4
        // instances and the host ran out of cores at 6 and 8.
        let act3 = [
            (1, 1578.0, false),
            (2, 3802.0, false),
            (3, 6984.0, false),
            (4, 10397.0, false),
            (6, 9535.0, true),
            (8, 9688.0, true),
        ];
        let s = size(2243.0, &act3, 2, Some(0.25));
        assert_eq!(s.max_instances, 4);
        // Four instances of act 1's capacity (8,972) is less than act 3 measured.
        assert_eq!(s.ceiling_rps, 4.0 * 2243.0);
        assert_eq!(s.spike_rps, (0.7 * 4.0 * 2243.0_f64).round());
        assert!(s.spike_rps > 2.0 * 2243.0, "overloads one instance: {s:?}");
        assert!(
            s.target_rps * 4.0 >= s.spike_rps && s.target_rps < 2243.0,
            "{s:?}"
        );
        assert_eq!(s.base_rps, (0.5 * 2243.0_f64).round());
        assert!(s.ceiling_source.contains("ran out at 6, 8"), "{s:?}");
        // Act 3 measuring less than four capacities caps the ceiling at its figure.
        let slow = [(1, 1000.0, false), (2, 1500.0, false), (4, 2600.0, false)];
        let s = size(1000.0, &slow, 2, Some(0.25));
        assert_eq!((s.max_instances, s.ceiling_rps), (4, 2600.0));
    }

    #[test]
    fn a_busy_or_missing_act_3_still_sizes_a_spike_that_overloads_one_instance() {
        // Every count host-limited: the one that served the most.
        let busy = [(1, 900.0, true), (2, 1300.0, true), (4, 1200.0, true)];
        let s = size(1000.0, &busy, 2, Some(0.25));
        assert_eq!(s.max_instances, 2);
        assert_eq!(s.spike_rps, 1500.0, "at least 1.5x one instance: {s:?}");
        assert!(s.ceiling_source.contains("limited every count"), "{s:?}");
        // No act 3: envelopes filling half the host's cores.
        let s = size(1000.0, &[], 2, Some(0.25));
        assert_eq!((s.max_instances, s.ceiling_rps), (4, 4000.0));
        let s = size(1000.0, &[], 64, Some(8.0));
        assert_eq!(s.max_instances, 4);
        // No envelopes: two instances, the least that can scale.
        assert_eq!(size(1000.0, &[], 2, None).max_instances, 2);
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
