//! The demo's report: the figures of every act (report.json), a readable summary
//! (report.md and the terminal), and the charts (SVG).

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::DemoError;

/// One measured configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// What ran.
    pub label: String,
    /// Workers or instances.
    pub n: usize,
    /// Achieved throughput, req/s.
    pub throughput_rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Failed requests.
    pub errors: u64,
    /// Cores the instances used on average.
    pub app_cores: f64,
    /// Cores this process (load generator and balancer) used on average.
    pub generator_cores: f64,
}

impl Run {
    /// A run from a load report and the CPU (instances, generator) measured around it.
    pub fn measured(
        label: String,
        n: usize,
        rep: &load::Report,
        (app_cores, generator_cores): (f64, f64),
    ) -> Run {
        Run {
            label,
            n,
            throughput_rps: rep.achieved_rps,
            p50_ms: rep.p50_ms,
            p99_ms: rep.p99_ms,
            errors: rep.errors.total,
            app_cores,
            generator_cores,
        }
    }
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
    /// Cores the instance used.
    pub app_cores: f64,
    /// Cores the generator used.
    pub generator_cores: f64,
    /// App saturation: its cores over the cores the generator left it.
    pub app_cpu_share: f64,
    /// DB pool connections in use / pool size at the end of the level.
    pub db_pool_in_use_share: f64,
    /// Cache hit rate during the level.
    pub cache_hit_rate: Option<f64>,
}

/// Act 1: the knee of one instance.
#[derive(Debug, Clone, Serialize)]
pub struct Act1 {
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
    /// 1 core, then all cores.
    pub runs: Vec<Run>,
    /// Throughput ratio all cores / one core.
    pub speedup: f64,
}

/// Act 3: scale out.
#[derive(Debug, Clone, Serialize)]
pub struct Act3 {
    /// One per instance count.
    pub runs: Vec<Run>,
    /// USL fit over 1..=4 instances, or why not.
    pub usl: Result<advisor::usl::UslFit, String>,
    /// The fit's predictions for the counts measured beyond its range.
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
}

/// Act 4: stateless proof.
#[derive(Debug, Clone, Serialize)]
pub struct Act4 {
    /// Memory store, then the shared one.
    pub rows: Vec<Act4Row>,
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
}

/// Act 7: spike.
#[derive(Debug, Clone, Serialize)]
pub struct Act7 {
    /// When the step happened, s from the start of the load.
    pub step_at_s: f64,
    /// Offered rate before the step, req/s.
    pub base_rps: f64,
    /// Offered rate after the step, req/s.
    pub spike_rps: f64,
    /// Instances needed for the spike at the target.
    pub needed_instances: u32,
    /// Seconds from the step until enough instances were ready.
    pub time_to_capacity_s: Option<f64>,
    /// Requests the client saw fail.
    pub failed: u64,
    /// Per second: (t, instances ready, rps, p99 ms).
    pub timeline: Vec<(f64, f64, f64, f64)>,
    /// The autoscaler's decisions with reasons.
    pub decisions: Vec<String>,
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
    /// Growth factor planned for.
    pub growth: f64,
    /// Today's load assumed (half of one instance's measured capacity).
    pub current_rps: f64,
    /// The advisor's recommendation.
    pub recommendation: advisor::decision::Recommendation,
}

/// Everything the demo measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DemoReport {
    /// Cores on this machine.
    pub cores: usize,
    /// Quick (short) measurements.
    pub quick: bool,
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
    pub advice: Option<crate::report::Advice>,
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0} ms"))
        .unwrap_or_else(|| "not observed".into())
}

/// The summary, as Markdown (also printed on the terminal).
pub fn render_markdown(r: &DemoReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# scaleout demo report\n");
    let _ = writeln!(
        s,
        "Machine: {} cores, shared by the load generator, the balancer and the instances. {}Wall time {:.0} s.\n",
        r.cores,
        if r.quick {
            "Quick mode (1 s measurements: noisy). "
        } else {
            ""
        },
        r.elapsed_s
    );
    if let Some(a) = &r.act1 {
        let _ = writeln!(s, "## 1. One instance: where is the knee?\n");
        let _ = writeln!(
            s,
            "| concurrency | req/s | p50 ms | p99 ms | app cores | generator cores | errors |\n|---:|---:|---:|---:|---:|---:|---:|"
        );
        for p in &a.points {
            let _ = writeln!(
                s,
                "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
                p.concurrency,
                p.throughput_rps,
                p.p50_ms,
                p.p99_ms,
                p.app_cores,
                p.generator_cores,
                p.errors
            );
        }
        let _ = writeln!(
            s,
            "\n```\n{}```\n\n![act 1](act1-knee.svg)\n",
            a.analysis_text
        );
    }
    if let Some(a) = &r.act2 {
        let _ = writeln!(s, "## 2. Scale up\n");
        for run in &a.runs {
            let _ = writeln!(
                s,
                "- {}: {:.0} req/s, p99 {:.2} ms",
                run.label, run.throughput_rps, run.p99_ms
            );
        }
        let _ = writeln!(s, "- speed-up: {:.2}x\n", a.speedup);
    }
    if let Some(a) = &r.act3 {
        let _ = writeln!(
            s,
            "## 3. Scale out behind the balancer ({} cores)\n",
            a.cores
        );
        for run in &a.runs {
            let _ = writeln!(
                s,
                "- {}: {:.0} req/s, p99 {:.2} ms, instances used {:.2} cores, generator + balancer {:.2} cores",
                run.label, run.throughput_rps, run.p99_ms, run.app_cores, run.generator_cores
            );
        }
        match &a.usl {
            Ok(f) => {
                let _ = writeln!(
                    s,
                    "- USL: sigma {:.4}, kappa {:.5}, lambda {:.0} req/s, N* {:.1}, predicted max {:.0} req/s, R² {:.3}",
                    f.sigma, f.kappa, f.lambda, f.n_star, f.x_max, f.r_squared
                );
                for w in &f.warnings {
                    let _ = writeln!(s, "  - warning: {w}");
                }
            }
            Err(e) => {
                let _ = writeln!(s, "- USL: {e}");
            }
        }
        for p in &a.predictions {
            let _ = writeln!(
                s,
                "- the fit on 1..4 instances predicts {:.0} req/s at {} instances; measured {:.0} ({:+.1}%)",
                p.predicted_rps, p.instances, p.measured_rps, p.error_pct
            );
        }
        let _ = writeln!(s, "\n![act 3](act3-scale-out.svg)\n");
    }
    if let Some(a) = &r.act4 {
        let _ = writeln!(s, "## 4. Stateless proof (2 instances, round robin)\n");
        for row in &a.rows {
            let _ = writeln!(
                s,
                "- sessions {}: {}/{} users lost their login, {}/{} lost their cart",
                row.sessions, row.lost_login, row.users, row.lost_cart, row.users
            );
        }
        let _ = writeln!(s);
    }
    if let Some(a) = &r.act5 {
        let _ = writeln!(s, "## 5. Cache-aside on catalog reads\n");
        for row in &a.rows {
            let _ = writeln!(
                s,
                "- {}: {:.0} req/s, p99 {:.2} ms, hit rate {}, {:.3} DB queries/request",
                row.label,
                row.throughput_rps,
                row.p99_ms,
                row.hit_rate
                    .map(|h| format!("{:.1}%", h * 100.0))
                    .unwrap_or_else(|| "n/a".into()),
                row.db_queries_per_request
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
            "- {} of {} requests failed as seen by the client ({} retries by the balancer)\n- ejected {} after the kill (health checks every {} ms)\n- re-admitted {} after the restart\n\n![act 6](act6-failure.svg)\n",
            a.failed,
            a.requests,
            a.retries,
            ms(a.ejected_after_ms),
            a.health_interval_ms,
            ms(a.readmitted_after_ms)
        );
    }
    if let Some(a) = &r.act7 {
        let _ = writeln!(s, "## 7. A 10x spike with the autoscaler on\n");
        let _ = writeln!(
            s,
            "- {:.0} → {:.0} req/s; {} instances needed; enough capacity after {}; {} failed requests\n\n![act 7](act7-spike.svg)\n",
            a.base_rps,
            a.spike_rps,
            a.needed_instances,
            a.time_to_capacity_s
                .map(|t| format!("{t:.1} s"))
                .unwrap_or_else(|| "never within the run".into()),
            a.failed
        );
        for d in &a.decisions {
            let _ = writeln!(s, "  - {d}");
        }
    }
    if let Some(a) = &r.act8 {
        let _ = writeln!(s, "## 8. Read replicas and read-your-writes (PostgreSQL)\n");
        for row in &a.rows {
            let _ = writeln!(
                s,
                "- {}: {:.0} req/s, p99 {:.2} ms, {:.0}% of queries on replicas",
                row.label,
                row.throughput_rps,
                row.p99_ms,
                row.replica_query_share * 100.0
            );
        }
        let _ = writeln!(
            s,
            "- throughput with / without replicas: {:.2}x\n- read-your-writes: {} stale reads of {} (the shop sent {} reads to the primary because a replica had not replayed the user's write yet)\n",
            a.throughput_ratio, a.ryw_stale, a.ryw_users, a.ryw_primary_fallbacks
        );
    }
    if let Some(adv) = &r.advice {
        let rec = &adv.recommendation;
        let _ = writeln!(s, "## What to do next\n");
        let _ = writeln!(
            s,
            "Planning for {}x growth from {:.0} req/s: **{:?}**. {}\n",
            adv.growth, adv.current_rps, rec.action, rec.reason
        );
        for o in &rec.options {
            let _ = writeln!(
                s,
                "- {}: {:.0} {}/month, capacity {:.0} req/s, {}{}",
                o.name,
                o.monthly,
                rec.currency,
                o.capacity_rps,
                o.detail,
                if o.feasible { "" } else { " (not enough)" }
            );
        }
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
