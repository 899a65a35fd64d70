//! The demo's report: the figures of every act (report.json), a readable summary
//! (report.md and the terminal), and the charts (SVG).
//!
//! Every act records the envelope its instances ran in, the host's cores, the CPU the
//! generator and the balancer used, and what limited it.

use std::fmt::Write as _;
use std::path::Path;

use fleet::envelope::Envelope;
use serde::Serialize;

use crate::DemoError;
use crate::cpu::CpuUse;
use crate::limit::Limit;

/// One measured configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// What ran.
    pub label: String,
    /// Envelope units (act 2) or instances (act 3).
    pub n: usize,
    /// Each instance's envelope, if any.
    pub envelope: Option<Envelope>,
    /// Achieved throughput, req/s.
    pub throughput_rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Failed requests.
    pub errors: u64,
    /// CPU used by each part.
    pub cpu: CpuUse,
    /// What limited it.
    pub limit: Limit,
    /// The same, in words with the figures.
    pub limit_text: String,
}

/// One level of act 1's sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Act1Point {
    /// Closed-loop connections.
    pub concurrency: usize,
    /// Achieved throughput, req/s.
    pub throughput_rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Failed requests.
    pub errors: u64,
    /// App saturation: its cores over its envelope (or the cores the generator left it).
    pub app_cpu_share: f64,
    /// DB pool connections in use / pool size at the end of the level.
    pub db_pool_in_use_share: f64,
    /// Cache hit rate during the level.
    pub cache_hit_rate: Option<f64>,
    /// CPU used by each part.
    pub cpu: CpuUse,
    /// What limited it.
    pub limit: Limit,
    /// The same, in words.
    pub limit_text: String,
}

/// Act 1: the knee of one instance.
#[derive(Debug, Clone, Serialize)]
pub struct Act1 {
    /// The instance's envelope.
    pub envelope: Option<Envelope>,
    /// One instance's capacity: the sweep's highest throughput, req/s (act 7 sizes from it).
    pub capacity_rps: f64,
    /// The concurrency it was reached at.
    pub capacity_at_concurrency: usize,
    /// What limited that level.
    pub capacity_limit: String,
    /// The sweep.
    pub points: Vec<Act1Point>,
    /// The advisor's analysis.
    pub analysis: advisor::sweep::Analysis,
    /// Its text rendering.
    pub analysis_text: String,
}

/// Act 2: scale up.
#[derive(Debug, Clone, Serialize)]
pub struct Act2 {
    /// One per envelope size, smallest first.
    pub runs: Vec<Run>,
    /// Throughput ratio largest / smallest envelope.
    pub speedup: f64,
}

/// Where act 3's curve bent, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Bend {
    /// The first instance count below 80% of linear.
    pub instances: usize,
    /// Its efficiency against linear scaling from one instance.
    pub efficiency: f64,
    /// What limited that run.
    pub limit_text: String,
}

/// Scale up and scale out at the same total CPU.
#[derive(Debug, Clone, Serialize)]
pub struct EqualCpu {
    /// Total CPU of both, cores.
    pub cpu: f64,
    /// Act 2: one instance with all of it, req/s.
    pub scale_up_rps: f64,
    /// Act 3: `instances` instances sharing it, req/s.
    pub scale_out_rps: f64,
    /// Act 3's instance count at that CPU.
    pub instances: usize,
    /// (scale out − scale up) / scale up, %.
    pub diff_pct: f64,
}

/// Act 3: scale out.
#[derive(Debug, Clone, Serialize)]
pub struct Act3 {
    /// Each instance's envelope.
    pub envelope: Option<Envelope>,
    /// One per instance count.
    pub runs: Vec<Run>,
    /// The runs as an instance sweep (with tier readings) for the advisor.
    pub sweep: advisor::sweep::Sweep,
    /// The advisor's analysis of it.
    pub analysis: advisor::sweep::Analysis,
    /// Its text rendering.
    pub analysis_text: String,
    /// Where the curve fell below 80% of linear, and what limited it there.
    pub bend: Option<Bend>,
    /// Throughput at 4 instances over 1.
    pub speedup_at_4: Option<f64>,
    /// Act 2's largest envelope against the same CPU in act 3.
    pub equal_cpu: Option<EqualCpu>,
    /// A USL fit on 1..=4 instances checked against the counts measured beyond it.
    pub predictions: Vec<Prediction>,
    /// Cores on this machine.
    pub cores: usize,
}

/// A USL prediction checked against a measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    /// Instance count.
    pub instances: usize,
    /// What the fit on 1..=4 instances predicted, req/s.
    pub predicted_rps: f64,
    /// What was measured, req/s.
    pub measured_rps: f64,
    /// (predicted − measured) / measured, %.
    pub error_pct: f64,
}

/// Act 4: one session store.
#[derive(Debug, Clone, Serialize)]
pub struct Act4Row {
    /// Session store.
    pub sessions: String,
    /// Users scripted.
    pub users: usize,
    /// Users who got a 401 after logging in.
    pub lost_login: usize,
    /// Users whose cart came back missing or empty.
    pub lost_cart: usize,
    /// Each instance's envelope.
    pub envelope: Option<Envelope>,
    /// CPU used by each part.
    pub cpu: CpuUse,
}

/// Act 4: stateless proof.
#[derive(Debug, Clone, Serialize)]
pub struct Act4 {
    /// Memory store, then the shared one.
    pub rows: Vec<Act4Row>,
    /// What limited it.
    pub limit_text: String,
}

/// Act 5: one cache setting.
#[derive(Debug, Clone, Serialize)]
pub struct Act5Row {
    /// `no cache` or `cache-aside`.
    pub label: String,
    /// Achieved throughput, req/s.
    pub throughput_rps: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Cache hit rate, when a cache ran.
    pub hit_rate: Option<f64>,
    /// Database queries per catalog request.
    pub db_queries_per_request: f64,
    /// The instance's envelope.
    pub envelope: Option<Envelope>,
    /// CPU used by each part.
    pub cpu: CpuUse,
    /// What limited it.
    pub limit_text: String,
}

/// Act 5: cache.
#[derive(Debug, Clone, Serialize)]
pub struct Act5 {
    /// Without, then with.
    pub rows: Vec<Act5Row>,
    /// Throughput with / without.
    pub throughput_ratio: f64,
}

/// Act 6: failure.
#[derive(Debug, Clone, Serialize)]
pub struct Act6 {
    /// Requests sent.
    pub requests: u64,
    /// Requests the client saw fail.
    pub failed: u64,
    /// Failures by kind.
    pub errors: load::ErrorCounts,
    /// Retries the balancer made.
    pub retries: u64,
    /// When the instance was killed, s from the start of the load.
    pub killed_at_s: f64,
    /// Time from the kill until the balancer stopped choosing it.
    pub ejected_after_ms: Option<f64>,
    /// Time from the restart until the balancer chose it again.
    pub readmitted_after_ms: Option<f64>,
    /// Active health-check interval.
    pub health_interval_ms: u64,
    /// p99 over the run, ms.
    pub p99_ms: f64,
    /// Per second: (t, rps, errors, p99 ms).
    pub slices: Vec<(f64, f64, f64, f64)>,
    /// Each instance's envelope.
    pub envelope: Option<Envelope>,
    /// Offered rate, req/s.
    pub offered_rps: f64,
    /// CPU used by each part.
    pub cpu: CpuUse,
    /// What limited it.
    pub limit_text: String,
}

/// One second of act 7.
#[derive(Debug, Clone, Serialize)]
pub struct SpikeRow {
    /// Start of the slice, s from the start of the load.
    pub t_s: f64,
    /// Instances ready during the slice (`None`: the fleet was not sampled then).
    pub instances: Option<f64>,
    /// Completed req/s.
    pub rps: f64,
    /// p99 of the responses completed in the slice, ms.
    pub p99_ms: f64,
    /// Failed requests in the slice.
    pub errors: u64,
}

/// Act 7: spike.
#[derive(Debug, Clone, Serialize)]
pub struct Act7 {
    /// Each instance's envelope.
    pub envelope: Option<Envelope>,
    /// One instance's measured capacity, req/s.
    pub capacity_rps: f64,
    /// Where that figure came from.
    pub capacity_source: String,
    /// What the autoscaler's largest fleet serves on this host, req/s (the spike is a
    /// share of it).
    pub ceiling_rps: f64,
    /// Where that figure and the maximum came from.
    pub ceiling_source: String,
    /// The policy's warm-up after its first sample, s (queue signals capped meanwhile).
    pub warmup_s: u64,
    /// The autoscaler's target per instance, req/s (the spike over the maximum).
    pub target_rps: f64,
    /// The policy's own in-flight target per instance (its default), beside `target_rps`.
    pub target_in_flight: Option<f64>,
    /// The p99 objective, ms.
    pub slo_p99_ms: f64,
    /// When the step happened, s from the start of the load.
    pub step_at_s: f64,
    /// When the spike ended.
    pub spike_until_s: f64,
    /// Offered rate before the step, req/s.
    pub base_rps: f64,
    /// Offered rate after the step, req/s.
    pub spike_rps: f64,
    /// Instances needed for the spike at the target.
    pub needed_instances: u32,
    /// The autoscaler's maximum.
    pub max_instances: u32,
    /// Seconds from the step until enough instances were ready.
    pub time_to_capacity_s: Option<f64>,
    /// When p99 first went over the SLO after the step.
    pub p99_crossed_slo_at_s: Option<f64>,
    /// Highest per-second p99 during the spike, ms.
    pub p99_peak_ms: f64,
    /// When p99 came back under the SLO to stay.
    pub p99_recovered_at_s: Option<f64>,
    /// From the step to p99 back under the SLO, s.
    pub recovery_s: Option<f64>,
    /// Requests the client saw fail.
    pub failed: u64,
    /// Requests sent.
    pub requests: u64,
    /// Per second.
    pub timeline: Vec<SpikeRow>,
    /// The autoscaler's decisions with reasons.
    pub decisions: Vec<String>,
    /// CPU used by each part over the run.
    pub cpu: CpuUse,
    /// What limited it.
    pub limit_text: String,
}

/// Act 8: one database setting.
#[derive(Debug, Clone, Serialize)]
pub struct Act8Row {
    /// `primary only` or `primary + replicas`.
    pub label: String,
    /// Achieved throughput, req/s.
    pub throughput_rps: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Share of database queries served by replicas.
    pub replica_query_share: f64,
    /// The instance's envelope.
    pub envelope: Option<Envelope>,
    /// CPU used by each part.
    pub cpu: CpuUse,
    /// What limited it.
    pub limit_text: String,
}

/// Act 8: read replicas and read-your-writes (PostgreSQL only).
#[derive(Debug, Clone, Serialize)]
pub struct Act8 {
    /// Without, then with replicas.
    pub rows: Vec<Act8Row>,
    /// Throughput with / without.
    pub throughput_ratio: f64,
    /// Users who wrote then read at once.
    pub ryw_users: usize,
    /// Of them, reads that missed their own write.
    pub ryw_stale: usize,
    /// Reads the shop sent to the primary because the replica had not caught up.
    pub ryw_primary_fallbacks: u64,
}

/// The closing advice.
#[derive(Debug, Clone, Serialize)]
pub struct Advice {
    /// Which sweep it reads.
    pub sweep_from: String,
    /// Growth factor planned for.
    pub growth: f64,
    /// Instances today.
    pub current_instances: u32,
    /// Whether more instances add capacity, in words.
    pub scaling_text: String,
    /// The USL peak in words (no NaN).
    pub peak_text: String,
    /// The plan: today's load and where it came from, capacities, the decision.
    pub plan: advisor::plan::Plan,
    /// Its text rendering.
    pub plan_text: String,
}

/// Everything the demo measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DemoReport {
    /// Cores on this machine.
    pub cores: usize,
    /// Quick (short) measurements.
    pub quick: bool,
    /// The unit envelope (`None`: the demo ran without envelopes).
    pub envelope: Option<Envelope>,
    /// Balancer worker threads.
    pub balancer_threads: usize,
    /// Load generator threads.
    pub generator_threads: usize,
    /// 1-minute load average when the demo started.
    pub load_average_start: Option<f64>,
    /// And when it ended.
    pub load_average_end: Option<f64>,
    /// Wall time, s.
    pub elapsed_s: f64,
    /// See each act.
    pub act1: Option<Act1>,
    /// See each act.
    pub act2: Option<Act2>,
    /// See each act.
    pub act3: Option<Act3>,
    /// See each act.
    pub act4: Option<Act4>,
    /// See each act.
    pub act5: Option<Act5>,
    /// See each act.
    pub act6: Option<Act6>,
    /// See each act.
    pub act7: Option<Act7>,
    /// See each act.
    pub act8: Option<Act8>,
    /// What to do next.
    pub advice: Option<Advice>,
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0} ms"))
        .unwrap_or_else(|| "not observed".into())
}

fn secs(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1} s"))
        .unwrap_or_else(|| "never within the run".into())
}

fn env_text(e: Option<Envelope>) -> String {
    e.map_or("no envelope (instances share every core)".into(), |e| {
        format!("{} cpu, {} MiB", e.cpu, e.memory_mib)
    })
}

fn throttled(cpu: &CpuUse) -> String {
    if cpu.throttled.is_empty() {
        return "-".into();
    }
    let mean = cpu.throttled.iter().sum::<f64>() / cpu.throttled.len() as f64;
    format!("{:.0}%", mean * 100.0)
}

fn run_table(s: &mut String, runs: &[Run]) {
    let _ = writeln!(
        s,
        "| run | req/s | p50 ms | p99 ms | instances cores | throttled | balancer cores | generator cores | host busy | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in runs {
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.2} | {:.2} | {} | {} |",
            r.label,
            r.throughput_rps,
            r.p50_ms,
            r.p99_ms,
            r.cpu.instances,
            throttled(&r.cpu),
            r.cpu.balancer,
            r.cpu.generator,
            r.cpu
                .host_busy
                .map_or("-".into(), |h| format!("{h:.2}/{}", r.cpu.host_cores)),
            r.errors
        );
    }
    let _ = writeln!(s);
    for r in runs {
        let _ = writeln!(s, "- {}: {}", r.label, r.limit_text);
    }
    let _ = writeln!(s);
}

/// The summary, as Markdown (also printed on the terminal).
pub fn render_markdown(r: &DemoReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# scaleout demo report\n");
    let _ = writeln!(
        s,
        "Host: {} cores, shared by the load generator ({} thread{}), the balancer ({} worker thread{}) and the instances. Unit envelope: {}. Load average {} at the start, {} at the end. {}Wall time {:.0} s.\n",
        r.cores,
        r.generator_threads,
        if r.generator_threads == 1 { "" } else { "s" },
        r.balancer_threads,
        if r.balancer_threads == 1 { "" } else { "s" },
        env_text(r.envelope),
        r.load_average_start
            .map_or("?".into(), |l| format!("{l:.2}")),
        r.load_average_end.map_or("?".into(), |l| format!("{l:.2}")),
        if r.quick {
            "Quick mode (1 s measurements: noisy). "
        } else {
            ""
        },
        r.elapsed_s
    );
    if let Some(a) = &r.act1 {
        let _ = writeln!(s, "## 1. One instance: where is the knee?\n");
        let _ = writeln!(s, "Envelope: {}.\n", env_text(a.envelope));
        let _ = writeln!(
            s,
            "| concurrency | req/s | p50 ms | p99 ms | instance cores | throttled | generator cores | host busy | errors |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for p in &a.points {
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.2} | {} | {} |",
                p.concurrency,
                p.throughput_rps,
                p.p50_ms,
                p.p99_ms,
                p.cpu.instances,
                throttled(&p.cpu),
                p.cpu.generator,
                p.cpu
                    .host_busy
                    .map_or("-".into(), |h| format!("{h:.2}/{}", p.cpu.host_cores)),
                p.errors
            );
        }
        let _ = writeln!(
            s,
            "\nOne instance's capacity: **{:.0} req/s** (at concurrency {}; {}).\n\n```\n{}```\n\n![act 1](act1-knee.svg)\n",
            a.capacity_rps, a.capacity_at_concurrency, a.capacity_limit, a.analysis_text
        );
    }
    if let Some(a) = &r.act2 {
        let _ = writeln!(s, "## 2. Scale up: one instance, a bigger envelope\n");
        run_table(&mut s, &a.runs);
        let _ = writeln!(s, "Largest over smallest envelope: {:.2}x.\n", a.speedup);
    }
    if let Some(a) = &r.act3 {
        let _ = writeln!(
            s,
            "## 3. Scale out: more envelopes behind the balancer ({} cores)\n",
            a.cores
        );
        let _ = writeln!(s, "Each instance: {}.\n", env_text(a.envelope));
        run_table(&mut s, &a.runs);
        if let Some(x) = a.speedup_at_4 {
            let _ = writeln!(s, "- 4 instances over 1: **{x:.2}x**");
        }
        if let Some(e) = &a.equal_cpu {
            let _ = writeln!(
                s,
                "- at equal CPU ({} cores): scale up (1 instance) {:.0} req/s, scale out ({} instances) {:.0} req/s: {:+.1}%",
                e.cpu, e.scale_up_rps, e.instances, e.scale_out_rps, e.diff_pct
            );
        }
        match &a.bend {
            Some(b) => {
                let _ = writeln!(
                    s,
                    "- the curve bends at {} instances ({:.0}% of linear): {}",
                    b.instances,
                    b.efficiency * 100.0,
                    b.limit_text
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "- the curve stays above 80% of linear over every measured count"
                );
            }
        }
        for p in &a.predictions {
            let _ = writeln!(
                s,
                "- the USL fit on 1..4 instances predicts {:.0} req/s at {} instances; measured {:.0} ({:+.1}%)",
                p.predicted_rps, p.instances, p.measured_rps, p.error_pct
            );
        }
        let _ = writeln!(
            s,
            "\n```\n{}```\n\n![act 3](act3-scale-out.svg)\n",
            a.analysis_text
        );
    }
    if let Some(a) = &r.act4 {
        let _ = writeln!(s, "## 4. Stateless proof (2 instances, round robin)\n");
        for row in &a.rows {
            let _ = writeln!(
                s,
                "- sessions {}: {}/{} users lost their login, {}/{} lost their cart (envelopes {}; balancer {:.2}, generator {:.2} cores)",
                row.sessions,
                row.lost_login,
                row.users,
                row.lost_cart,
                row.users,
                env_text(row.envelope),
                row.cpu.balancer,
                row.cpu.generator
            );
        }
        let _ = writeln!(s, "- {}\n", a.limit_text);
    }
    if let Some(a) = &r.act5 {
        let _ = writeln!(s, "## 5. Cache-aside on catalog reads\n");
        for row in &a.rows {
            let _ = writeln!(
                s,
                "- {} ({}): {:.0} req/s, p99 {:.2} ms, hit rate {}, {:.3} DB queries/request; {}",
                row.label,
                env_text(row.envelope),
                row.throughput_rps,
                row.p99_ms,
                row.hit_rate
                    .map(|h| format!("{:.1}%", h * 100.0))
                    .unwrap_or_else(|| "n/a".into()),
                row.db_queries_per_request,
                row.limit_text
            );
        }
        let _ = writeln!(
            s,
            "- throughput with / without: {:.2}x\n",
            a.throughput_ratio
        );
    }
    if let Some(a) = &r.act6 {
        let _ = writeln!(s, "## 6. SIGKILL one of three instances under load\n");
        let _ = writeln!(
            s,
            "- {:.0} req/s offered to 3 instances ({})\n- {} of {} requests failed as seen by the client ({} retries by the balancer)\n- ejected {} after the kill (health checks every {} ms)\n- re-admitted {} after the restart\n- {}\n\n![act 6](act6-failure.svg)\n",
            a.offered_rps,
            env_text(a.envelope),
            a.failed,
            a.requests,
            a.retries,
            ms(a.ejected_after_ms),
            a.health_interval_ms,
            ms(a.readmitted_after_ms),
            a.limit_text
        );
    }
    if let Some(a) = &r.act7 {
        let _ = writeln!(
            s,
            "## 7. A spike of {:.1}x one instance's capacity, autoscaler on\n",
            a.spike_rps / a.capacity_rps.max(1e-9)
        );
        let _ = writeln!(
            s,
            "- one instance ({}) serves {:.0} req/s ({}); the autoscaler targets {:.0} req/s{} per instance, with a {} s warm-up in which the cold start's queue does not count\n- the largest fleet here: {} instances serving {:.0} req/s ({}); the spike is {:.0}% of that\n- offered {:.0} → {:.0} req/s at t={:.0} s until t={:.0} s: {} instances needed (max {})\n- p99 over the {:.0} ms SLO after the step: {} (peak {:.0} ms); **back under it {} after the step**\n- enough instances ready {} after the step; {} of {} requests failed\n- {}\n\n![act 7](act7-spike.svg)\n",
            env_text(a.envelope),
            a.capacity_rps,
            a.capacity_source,
            a.target_rps,
            a.target_in_flight.map_or(String::new(), |c| format!(
                " and {c:.0} requests in flight (the policy's default)"
            )),
            a.warmup_s,
            a.max_instances,
            a.ceiling_rps,
            a.ceiling_source,
            100.0 * a.spike_rps / a.ceiling_rps.max(1e-9),
            a.base_rps,
            a.spike_rps,
            a.step_at_s,
            a.spike_until_s,
            a.needed_instances,
            a.max_instances,
            a.slo_p99_ms,
            a.p99_crossed_slo_at_s
                .map_or("never".into(), |t| format!("yes, at t={t:.0} s")),
            a.p99_peak_ms,
            secs(a.recovery_s),
            secs(a.time_to_capacity_s),
            a.failed,
            a.requests,
            a.limit_text
        );
        for d in &a.decisions {
            let _ = writeln!(s, "  - {d}");
        }
        let _ = writeln!(s);
    }
    if let Some(a) = &r.act8 {
        let _ = writeln!(s, "## 8. Read replicas and read-your-writes (PostgreSQL)\n");
        for row in &a.rows {
            let _ = writeln!(
                s,
                "- {}: {:.0} req/s, p99 {:.2} ms, {:.0}% of queries on replicas; {}",
                row.label,
                row.throughput_rps,
                row.p99_ms,
                row.replica_query_share * 100.0,
                row.limit_text
            );
        }
        let _ = writeln!(
            s,
            "- throughput with / without replicas: {:.2}x\n- read-your-writes: {} stale reads of {} (the shop sent {} reads to the primary because a replica had not replayed the user's write yet)\n",
            a.throughput_ratio, a.ryw_stale, a.ryw_users, a.ryw_primary_fallbacks
        );
    }
    if let Some(adv) = &r.advice {
        let _ = writeln!(s, "## What to do next\n");
        let _ = writeln!(
            s,
            "From {}, today {} instance{}, planning for {}x growth.\n\n- scaling: {}\n- {}\n\n```\n{}```",
            adv.sweep_from,
            adv.current_instances,
            if adv.current_instances == 1 { "" } else { "s" },
            adv.growth,
            adv.scaling_text,
            adv.peak_text,
            adv.plan_text
        );
    }
    s
}

/// Writes report.json, report.md and the charts into `dir`.
pub fn write(r: &DemoReport, dir: &Path) -> Result<(), DemoError> {
    let json = serde_json::to_string_pretty(r)
        .map_err(|e| DemoError::Step(format!("report.json: {e}")))?;
    std::fs::write(dir.join("report.json"), json)
        .map_err(|e| DemoError::io("write report.json", e))?;
    std::fs::write(dir.join("report.md"), render_markdown(r))
        .map_err(|e| DemoError::io("write report.md", e))?;
    crate::charts::write_all(r, dir)
}
