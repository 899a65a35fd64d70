//! `scaleout advise`: read (or, with `--target`, measure) a sweep, fit the USL, find the
//! knee, name the bottleneck, and decide scale up / out / refactor with costs. Glue only:
//! the reading, the figures and the decision live in the `advisor` crate.

use std::path::PathBuf;
use std::process::ExitCode;

use advisor::{connections, cost::PriceTable, finite, plan, sweep};
use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use super::grammar::{Dur, deprecated};

/// What the sweep varied, for `--kind`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Kind {
    Concurrency,
    Instances,
    Workers,
}

impl From<Kind> for sweep::SweepKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Concurrency => sweep::SweepKind::Concurrency,
            Kind::Instances => sweep::SweepKind::Instances,
            Kind::Workers => sweep::SweepKind::Workers,
        }
    }
}

/// Arguments of `scaleout advise`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A saved sweep: JSON ({"kind": "concurrency"|"instances"|"workers", "points":
    /// [{"n", "throughput_rps", "p99_ms"?, "tiers"?}]}) or CSV with a header
    /// (`n,throughput[,p99_ms]`; the R usl package's and usl4j's column names such as
    /// load, concurrency, processors, instances, X, tput are accepted: see README).
    #[arg(long, conflicts_with = "target")]
    report: Option<PathBuf>,
    /// What the sweep varied; for CSV the level column's name decides (load/concurrency →
    /// concurrency, instances/nodes → instances, processors/workers → workers) unless given.
    #[arg(long, value_enum)]
    kind: Option<Kind>,
    /// Measure a concurrency sweep against this URL (loopback only) with the load generator.
    #[arg(long)]
    target: Option<String>,
    /// Concurrency levels for `--target`.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64")]
    levels: Vec<usize>,
    /// Length of each level's run for `--target` (1s..=10m).
    #[arg(long, default_value_t = Dur::secs(5))]
    level_duration: Dur,
    /// Deprecated spelling of --level-duration, in seconds.
    #[arg(
        long = "seconds-per-level",
        hide = true,
        conflicts_with = "level_duration"
    )]
    seconds_per_level: Option<u64>,
    /// Requests per second today. Default: what the sweep measured at today's instance
    /// count (`--instances`; interpolated between measured counts, or the USL prediction
    /// outside them, flagged); for a concurrency or workers sweep, its highest throughput.
    /// The report says which.
    #[arg(long)]
    current_rps: Option<f64>,
    /// Growth factor to plan for (projected = current × growth).
    #[arg(long, default_value_t = 3.0)]
    growth: f64,
    /// App instance size today (a name in the price table).
    #[arg(long, default_value = "app.large")]
    app_size: String,
    /// App instances running today.
    #[arg(long, visible_alias = "current-instances", default_value_t = 1)]
    instances: u32,
    /// The codebase is stateless (true) or keeps per-instance state (false); see `scaleout audit`.
    #[arg(long, conflicts_with = "audit")]
    stateless: Option<bool>,
    /// Audit this codebase and use its verdict (stateless or stateful) in the decision.
    #[arg(long)]
    audit: Option<PathBuf>,
    /// The p99 bound for reading the knee (e.g. 250ms); overrides the report's
    /// `p99_bound_ms`.
    #[arg(long)]
    p99_bound: Option<Dur>,
    /// Deprecated spelling of --p99-bound, in milliseconds.
    #[arg(long = "p99-bound-ms", hide = true, conflicts_with = "p99_bound")]
    p99_bound_ms: Option<f64>,
    /// A price table (TOML) instead of the bundled one.
    #[arg(long)]
    prices: Option<PathBuf>,
    /// Connection math: pool size per instance.
    #[arg(long)]
    pool_size: Option<u64>,
    /// Connection math: the database's max_connections.
    #[arg(long, default_value_t = 100)]
    max_connections: u64,
    /// Write the whole analysis as JSON here (`-`: to stdout, instead of the text).
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Reads a saved sweep, JSON or CSV by its first character; notes what a CSV reader chose.
fn read_report(path: &PathBuf, kind: Option<Kind>) -> anyhow::Result<(sweep::Sweep, String)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let kind = kind.map(sweep::SweepKind::from);
    if text.trim_start().starts_with('{') {
        let mut s = sweep::Sweep::from_json(&text)?;
        if let Some(k) = kind {
            s.kind = k;
        }
        return Ok((s, String::new()));
    }
    let c = advisor::csv::parse(&text, kind)?;
    let mut note = format!(
        "read {} CSV rows: level column `{}` ({}), throughput column `{}`",
        c.sweep.points.len(),
        c.level_column,
        sweep::unit(c.sweep.kind),
        c.throughput_column
    );
    if !c.ignored_columns.is_empty() {
        note.push_str(&format!(
            "; ignored columns: {}",
            c.ignored_columns.join(", ")
        ));
    }
    note.push('\n');
    Ok((c.sweep, note))
}

/// Measures a concurrency sweep against `url` with the load generator's sweep (the same
/// code as act 1 of the demo), printing each level as it completes.
fn measure(
    url: &str,
    levels: &[usize],
    per_level: std::time::Duration,
) -> anyhow::Result<sweep::Sweep> {
    let plan = load::ConcurrencySweep::new(url, levels, per_level)
        .map_err(|e| anyhow::anyhow!("--levels/--level-duration: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let cancel = CancellationToken::new();
    let levels = rt.block_on(async {
        super::signal::cancel_on_shutdown_signal(cancel.clone());
        plan.run(&cancel, |c, r| {
            eprintln!(
                "advise: concurrency {c:>4}: {:>9.0} req/s  p99 {:>8.2} ms  errors {:.2}%",
                r.achieved_rps,
                r.p99_ms,
                100.0 * r.error_rate
            )
        })
        .await
    })?;
    Ok(sweep::Sweep {
        kind: sweep::SweepKind::Concurrency,
        points: levels
            .iter()
            .map(|(c, r)| sweep::SweepPoint {
                n: *c as f64,
                throughput_rps: r.achieved_rps,
                p99_ms: Some(r.p99_ms),
                errors_pct: Some(100.0 * r.error_rate),
                tiers: None,
            })
            .collect(),
        p99_bound_ms: None,
        stateless: None,
    })
}

/// Runs `scaleout advise`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (mut sweep, mut out) = match (&args.report, &args.target) {
        (Some(path), None) => read_report(path, args.kind)?,
        (None, Some(url)) => {
            let per_level = match args.seconds_per_level {
                Some(s) => {
                    deprecated(
                        &format!("`--seconds-per-level {s}`"),
                        &format!("`--level-duration {s}s`"),
                    );
                    std::time::Duration::from_secs(s)
                }
                None => args.level_duration.0,
            };
            (measure(url, &args.levels, per_level)?, String::new())
        }
        _ => bail!("give either --report FILE or --target URL"),
    };
    let p99_bound_ms = match (args.p99_bound, args.p99_bound_ms) {
        (_, Some(ms)) => {
            deprecated(
                &format!("`--p99-bound-ms {ms}`"),
                &format!("`--p99-bound {ms}ms`"),
            );
            Some(ms)
        }
        (Some(d), None) => Some(d.0.as_secs_f64() * 1e3),
        (None, None) => None,
    };
    if let Some(b) = p99_bound_ms {
        if !(b.is_finite() && b > 0.0) {
            bail!("--p99-bound must be > 0");
        }
        sweep.p99_bound_ms = Some(b);
    }
    let prices = match &args.prices {
        Some(p) => PriceTable::parse(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )?,
        None => PriceTable::bundled(),
    };
    if let Some(path) = &args.audit {
        let report = audit::audit_path(path, &audit::Options::default())
            .with_context(|| format!("auditing {}", path.display()))?;
        let verdict = report.verdict();
        out.push_str(&format!("audit of {}: {verdict}\n", path.display()));
        sweep.stateless = Some(!verdict.stateful);
    } else if sweep.stateless.is_none() {
        sweep.stateless = args.stateless;
    }
    let opts = plan::PlanOptions {
        current_rps: args.current_rps,
        current_instances: args.instances,
        growth: args.growth,
        app_size: args.app_size.clone(),
        ..Default::default()
    };
    let analysis = sweep::analyse(&sweep);
    let plan = plan::plan(&sweep, &analysis, &opts, &prices).map_err(|e| {
        // Name the flag, not the library's field.
        anyhow::anyhow!(
            "--{}",
            e.to_string()
                .replacen("current_instances", "instances (--current-instances)", 1)
                .replace('_', "-")
        )
    })?;
    out.push_str(&sweep::render_text(&analysis));
    out.push_str(&plan::render_text(&plan));
    let conn = args.pool_size.map(|pool| {
        let instances = plan
            .recommendation
            .as_ref()
            .ok()
            .and_then(|r| {
                r.options
                    .iter()
                    .find(|o| o.name == "scale out" && o.feasible)
            })
            .map(|o| o.instances)
            .unwrap_or(args.instances);
        connections::check(instances as u64, pool, args.max_connections, 3)
    });
    if let Some(c) = &conn {
        out.push_str(&format!("connections: {}\n", c.message));
    }
    if !super::report::is_stdout(args.json.as_deref()) {
        print!("{out}");
    }
    // Every figure written is finite: serde_json would turn a NaN into a silent null.
    finite::check(&(&sweep, &analysis, &plan))
        .map_err(|e| anyhow::anyhow!("internal error: a non-finite figure in the advice: {e}"))?;
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "sweep": sweep,
            "analysis": analysis,
            "plan": plan,
            "decision": plan.recommendation.as_ref().ok(),
            "connections": conn,
        });
        super::report::write_json(path, &doc)?;
    }
    Ok(ExitCode::SUCCESS)
}
